"""tinygrad_llm.kernels.parallel (the fast tier's threads): chunking covers every row exactly
once, threaded results of the fast kernels equal the inline ones (bitwise for row-independent
math, float32 rounding where chunk sums are added), TINYGRAD_LLM_NUM_THREADS=1 turns threads
off, odd sizes, errors; and tune_allocator."""
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor
from tinygrad_llm.kernels import parallel, tuning
from tinygrad_llm.nn.functional import causal_self_attention
from tinygrad_llm.optim import AdamW


@pytest.fixture
def threads(monkeypatch):
    """Set the thread count and make even small work use the pool (MIN_WORK = 1 element)."""
    def set_threads(n):
        monkeypatch.setenv(parallel.ENV_VAR, str(n))
        monkeypatch.setattr(tuning, "MIN_WORK", 1)
        monkeypatch.setattr(tuning, "MIN_PIECE_WORK", 1)
    return set_threads


def _record(n_items, **kwargs):
    """Run parallel_for with a recording fn: the (start, stop, thread id) of every call."""
    calls, lock = [], threading.Lock()

    def fn(a, b):
        with lock:
            calls.append((a, b, threading.get_ident()))

    parallel.parallel_for(fn, n_items, **kwargs)
    return calls


@given(n=st.integers(0, 1000), k=st.integers(1, 40))
def test_chunk_bounds_cover_each_item_once(n, k):
    bounds = parallel.chunk_bounds(n, k)
    covered = [i for a, b in bounds for i in range(a, b)]
    assert covered == list(range(n))
    assert len(bounds) == max(1, min(k, n))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1


@given(n=st.integers(1, 300), threads_n=st.integers(1, 5), block=st.one_of(st.none(), st.integers(1, 50)))
def test_parallel_for_covers_each_item_once(n, threads_n, block):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(parallel.ENV_VAR, str(threads_n))
        mp.setattr(tuning, "MIN_WORK", 1)
        mp.setattr(tuning, "MIN_PIECE_WORK", 1)
        calls = _record(n, block=block)
    covered = sorted(i for a, b, _ in calls for i in range(a, b))
    assert covered == list(range(n))
    if block is not None:
        assert all(b - a <= block for a, b, _ in calls)
    assert len({t for *_, t in calls}) <= threads_n


def test_work_is_shared_among_threads(threads):
    threads(3)
    barrier, calls, lock = threading.Barrier(3, timeout=10), [], threading.Lock()

    def fn(a, b):
        barrier.wait()                     # passes only when all three chunks run at once
        with lock:
            calls.append((a, b, threading.get_ident()))

    parallel.parallel_for(fn, 7)
    assert sorted((a, b) for a, b, _ in calls) == [(0, 2), (2, 4), (4, 7)]  # odd sizes: within 1
    assert len({t for *_, t in calls}) == 3
    assert (0, 2, threading.get_ident()) in calls                          # the caller runs the first


def test_threaded_pieces_are_enlarged_to_min_piece_work(threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(tuning, "MIN_PIECE_WORK", 8)
    pieces = sorted((a, b) for a, b, _ in _record(40, block=1, work_per_item=2))
    assert pieces == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 24), (24, 28), (28, 32), (32, 36), (36, 40)]
    monkeypatch.setenv(parallel.ENV_VAR, "1")                 # inline: the block as given
    assert len(_record(40, block=1, work_per_item=2)) == 40


def test_env_var_1_runs_everything_inline(monkeypatch):
    monkeypatch.setenv(parallel.ENV_VAR, "1")
    assert parallel.num_threads() == 1
    assert _record(10**6) == [(0, 10**6, threading.get_ident())]


def test_small_work_runs_inline(monkeypatch):
    monkeypatch.setenv(parallel.ENV_VAR, "4")
    assert _record(2 * tuning.MIN_WORK - 1) == [(0, 2 * tuning.MIN_WORK - 1, threading.get_ident())]
    assert len(_record(100, work_per_item=tuning.MIN_WORK)) == 4


def test_threaded_false_runs_inline(threads):
    threads(4)
    assert len(_record(100, block=10, threaded=False)) == 10
    assert {t for *_, t in _record(100, block=10, threaded=False)} == {threading.get_ident()}


def test_non_numpy_backend_runs_one_inline_call(threads):
    threads(4)
    assert _record(1000, xp=object(), block=3) == [(0, 1000, threading.get_ident())]


def test_nested_calls_run_inline(threads):
    threads(2)
    inner = []

    def outer(a, b):
        inner.append(_record(b - a))

    parallel.parallel_for(outer, 10)
    assert len(inner) == 2 and all(len(calls) == 1 for calls in inner)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_env_value_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(parallel.ENV_VAR, value)
    with pytest.raises(ValueError, match=parallel.ENV_VAR):
        parallel.num_threads()


def test_an_error_in_a_chunk_is_raised_after_all_chunks_end(threads):
    threads(3)
    done = []

    def fn(a, b):
        if a > 0:
            raise RuntimeError(f"chunk {a}")
        done.append(a)

    with pytest.raises(RuntimeError, match="chunk"):
        parallel.parallel_for(fn, 9)
    assert done == [0]


def test_tune_allocator_returns_a_bool():
    assert isinstance(parallel.tune_allocator(), bool)


# ---------------------------------------------------------------- the ops: threaded == inline

def _run(fn, monkeypatch, n_threads):
    monkeypatch.setenv(parallel.ENV_VAR, str(n_threads))
    return fn()


def _fwd_bwd(op, *arrays, seed=0):
    """Forward of op on Tensors made from arrays, backward of a fixed random cotangent:
    (output, gradient of each input) as numpy arrays."""
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    tg.manual_seed(seed)
    y = op(*ts)
    g = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    y.backward(Tensor(g))
    return [y.numpy()] + [t.grad.copy() for t in ts]


def _compare(fn, monkeypatch, exact=True):
    """The fast kernels (whatever TINYGRAD_LLM_REFERENCE says) on one thread and on 2 and 3."""
    monkeypatch.setattr(tuning, "MIN_WORK", 1)
    monkeypatch.setattr(tuning, "MIN_PIECE_WORK", 1)
    with tg.reference_tier(False):
        inline = _run(fn, monkeypatch, 1)
        threaded_runs = [_run(fn, monkeypatch, n) for n in (2, 3)]
    for threaded in threaded_runs:
        for a, b in zip(inline, threaded):
            if exact:
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_threaded_equals_inline(monkeypatch, approximate):
    x = _randn(7, 5, 3) * 4
    _compare(lambda: _fwd_bwd(lambda t: F.gelu(t, approximate=approximate), x), monkeypatch)


def test_silu_threaded_equals_inline(monkeypatch):
    x = _randn(3, 11) * 4
    _compare(lambda: _fwd_bwd(F.silu, x), monkeypatch)


def test_layer_norm_threaded_equals_inline(monkeypatch):
    x, w, b = _randn(5, 3, 8), _randn(8, seed=1), _randn(8, seed=2)
    # x and its gradient row by row: bitwise; weight and bias sum chunk results: rounding
    _compare(lambda: _fwd_bwd(lambda *t: F.layer_norm(t[0], (8,), t[1], t[2]), x, w, b), monkeypatch,
             exact=False)
    _compare(lambda: _fwd_bwd(lambda t: F.layer_norm(t, (8,)), x)[:2], monkeypatch)


def test_rms_norm_threaded_equals_inline(monkeypatch):
    x, w = _randn(7, 6), _randn(6, seed=1)
    _compare(lambda: _fwd_bwd(lambda *t: F.rms_norm(t[0], (6,), t[1]), x, w), monkeypatch, exact=False)
    _compare(lambda: _fwd_bwd(lambda t: F.rms_norm(t, (6,)), x)[:2], monkeypatch)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_causal_self_attention_threaded_equals_inline(monkeypatch, dropout_p):
    qkv = _randn(5, 6, 3 * 8)
    _compare(lambda: _fwd_bwd(lambda t: causal_self_attention(t, 2, dropout_p=dropout_p), qkv), monkeypatch)


@pytest.mark.parametrize("kind", ["causal", "bool_mask", "float_mask", "dropout"])
def test_sdpa_threaded_equals_inline(monkeypatch, kind):
    q, k, v = _randn(3, 2, 5, 4), _randn(3, 1, 6, 4, seed=1), _randn(6, 3, seed=2)
    rs = np.random.default_rng(3)
    kwargs = {"causal": dict(is_causal=True), "dropout": dict(dropout_p=0.25),
              "bool_mask": dict(attn_mask=rs.random((3, 1, 5, 6)) < 0.7),
              "float_mask": dict(attn_mask=rs.standard_normal((5, 6)).astype(np.float32), is_causal=True)}[kind]
    # dK sums over the broadcast head dim after the chunks: the same adds in the same order
    _compare(lambda: _fwd_bwd(lambda *t: F.scaled_dot_product_attention(*t, **kwargs), q, k, v), monkeypatch)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_threaded_equals_inline(monkeypatch, label_smoothing):
    logits = _randn(9, 7) * 3
    targets = np.random.default_rng(1).integers(0, 7, 9)
    targets[2] = -100

    def run():
        return _fwd_bwd(lambda t: F.cross_entropy(t, Tensor(targets), label_smoothing=label_smoothing), logits)
    _compare(run, monkeypatch)


def test_adamw_threaded_equals_inline(monkeypatch):
    import tinygrad_llm.optim.optimizer as optimizer_mod
    monkeypatch.setattr(optimizer_mod, "CPU_CHUNK", 4)  # several pieces per thread

    def run():
        params = [Tensor(_randn(5, 3), requires_grad=True), Tensor(_randn(7, seed=1), requires_grad=True)]
        opt = AdamW(params, lr=0.01, weight_decay=0.1)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = _randn(*p.shape, seed=10 * step + i + 2)
            opt.step()
        return [p.numpy() for p in params]
    _compare(run, monkeypatch)
