"""Tiled (flash) attention, ops/flash_attention.py: the standard attention's function, by tiles.

Checked against the standard attention (ops/attention.py: forward and dQ, dK, dV) over
hypothesis-chosen shapes, tile sizes, masks, T != S and dropout with a fixed seed; against
finite differences in float64; by the edge cases (rows that see no key, causal tiles above
the diagonal never computed, ragged tiles); and by its memory: the extra memory of a forward
and backward grows as T, not T^2.
"""
import tracemalloc

import numpy as np
import pytest
from conftest import to_np
from helper_op import tiers_agree
from hypothesis import given
from hypothesis import strategies as st
from strategies import with_fixtures

import tinygrad_llm.nn.functional as F
from tinygrad_llm import GPT, GPTConfig, Llama, LlamaConfig, Tensor, gradcheck, manual_seed
from tinygrad_llm.ops import flash_attention as FA
from tinygrad_llm.ops.attention import attention_backward, attention_forward, causal_mask
from tinygrad_llm.ops.dropout import replay_keep, replay_seed

# ----------------------------------------------------------------------------- cases


@st.composite
def cases(draw, max_side=9):
    """q, k, v (leading dims broadcasting), a mask, is_causal, scale and tile sizes."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    T, S = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    D, Dv = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    k_lead = lead[:-1] + (1,) if lead and draw(st.booleans()) else lead     # keys shared by the heads
    kind = draw(st.sampled_from(["none", "causal", "bool", "bool+causal", "float", "float+causal"]))
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rs.standard_normal(lead + (T, D)) * draw(st.sampled_from([1.0, 20.0]))   # 20: scores far apart
    k, v = rs.standard_normal(k_lead + (S, D)), rs.standard_normal(k_lead + (S, Dv))
    mask = None
    if kind.startswith("bool"):
        mask = rs.random((T, S)) < 0.7
        mask[rs.integers(T)] = False                  # a row that sees no key
    elif kind.startswith("float"):
        mask = np.where(rs.random((T, S)) < 0.3, -np.inf, rs.standard_normal((T, S)))
        mask[rs.integers(T)] = -np.inf
    blocks = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    scale = draw(st.one_of(st.none(), st.floats(0.2, 2.0)))
    return q, k, v, mask, kind.endswith("causal"), scale, blocks


def _run(impl, q, k, v, mask, causal, scale, blocks=None, dropout_p=0.0, seed=0, device="cpu", dtype=None,
         gqa=False):
    """(O, dQ, dK, dV) as float64 NumPy arrays, one backward of a fixed random cotangent."""
    ts = [Tensor(a if dtype is None else a.astype(dtype), requires_grad=True, device=device) for a in (q, k, v)]
    m = None if mask is None or mask.dtype == bool or dtype is None else mask.astype(dtype)
    m = mask if m is None else m
    manual_seed(seed)
    out = F.scaled_dot_product_attention(*ts, attn_mask=m, is_causal=causal, scale=scale, dropout_p=dropout_p,
                                         impl=impl, block_size=blocks, enable_gqa=gqa)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    out.backward(Tensor(g, device=device))
    return [to_np(a).astype(np.float64) for a in (out, ts[0].grad, ts[1].grad, ts[2].grad)]


# ----------------------------------------------------------------------------- agreement


@with_fixtures
@given(case=cases(), dtype=st.sampled_from([np.float64, np.float32]))
def test_equals_standard_attention(device, tier, case, dtype):
    """Forward and dQ, dK, dV equal the standard attention's to the dtype's rounding, on any
    shapes, tiles, masks (rows without keys included) and T != S (causal: bottom-right)."""
    q, k, v, mask, causal, scale, blocks = case
    flash = _run("flash", q, k, v, mask, causal, scale, blocks, device=device, dtype=dtype)
    standard = _run("standard", q, k, v, mask, causal, scale, device=device, dtype=dtype)
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 2e-5)
    for a, b in zip(flash, standard):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * max(1.0, np.abs(b).max()))


@with_fixtures
@given(case=cases(), p=st.sampled_from([0.1, 0.5]), seed=st.integers(0, 1000))
def test_dropout_equals_standard_attention_with_the_replayed_mask(device, case, p, seed):
    """With dropout, flash equals the standard core run on the mask that replay_keep gives for
    the node's seed over the whole (..., T, S) array: the backward rebuilt the forward's tiles."""
    q, k, v, mask, causal, scale, blocks = case
    batch = tuple(np.broadcast_shapes(q.shape[:-2], k.shape[:-2]))
    k, v = (np.broadcast_to(a, batch + a.shape[-2:]).copy() for a in (k, v))    # one key set per head
    out, dq, dk, dv = _run("flash", q, k, v, mask, causal, scale, blocks, dropout_p=p, seed=seed, device=device)
    manual_seed(seed)
    node_seed = replay_seed()                         # the draw the node made
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    counter = np.arange(int(np.prod(batch)) * T * S, dtype=np.uint64).reshape(batch + (T, S))
    keep = replay_keep(np, node_seed, counter, p)
    s = 1.0 / np.sqrt(D) if scale is None else scale
    allowed, bias = (mask, None) if mask is not None and mask.dtype == bool else (None, mask)
    if causal:
        allowed = causal_mask(T, S) if allowed is None else allowed & causal_mask(T, S)
    P, O = attention_forward(np, q * s, k, v, allowed, bias, keep, 1 / (1 - p))
    g = np.random.default_rng(1).standard_normal(O.shape)
    for ours, ref in zip((out, dq, dk, dv), (O,) + attention_backward(g, P, O, q * s, k, v, s, keep, 1 / (1 - p))):
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(ref).max()))


@with_fixtures
@given(case=cases(max_side=6), p=st.sampled_from([0.0, 0.3]))
def test_gradcheck_float64(device, tier, case, p):
    q, k, v, mask, causal, scale, blocks = case
    ts = [Tensor(a, requires_grad=True, device=device) for a in (q, k, v)]

    def fn(a, b, c):
        manual_seed(7)                                # the same dropout seed on every call
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mask, is_causal=causal, scale=scale, dropout_p=p,
                                              impl="flash", block_size=blocks)
    gradcheck(fn, ts)


@given(case=cases(), dtype=st.sampled_from([np.float64, np.float32, np.float16]), p=st.sampled_from([0.0, 0.4]))
def test_fast_tier_equals_reference(case, dtype, p):
    """The fast core runs the reference's tile loops on chunks of the batch (on BLAS-ready
    copies; float16 in float32): the same numbers, dropout included (the counters of each
    chunk start at its first problem)."""
    q, k, v, mask, causal, scale, blocks = case
    if dtype == np.float16:          # scores of a few units: float16's rounding of large ones differs between tiers
        q = np.clip(q, -2.0, 2.0)
    m = mask.astype(dtype) if mask is not None and mask.dtype != bool else mask

    def fn(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, attn_mask=m, is_causal=causal, scale=scale, dropout_p=p,
                                              impl="flash", block_size=blocks)
    tiers_agree(fn, [a.astype(dtype) for a in (q, k, v)], scaled_atol=True)


@with_fixtures
@given(T=st.integers(1, 9), p=st.sampled_from([0.0, 0.3]), dtype=st.sampled_from([np.float32, np.float16]))
def test_fast_tier_equals_reference_for_the_gpt_node(T, p, dtype):
    qkv = np.random.default_rng(T).standard_normal((3, T, 12)).astype(dtype)
    tiers_agree(lambda x: F.causal_self_attention(x, 2, dropout_p=p, impl="flash", block_size=(2, 3)), [qkv],
                scaled_atol=True)


# ----------------------------------------------------------------------------- grouped-query heads


@st.composite
def gqa_cases(draw, max_side=7):
    """q (B, H, T, D) and k, v (B, KV, S, D) with H = KV * G, a mask shared by the heads or one
    per query head, is_causal, and tile sizes."""
    B, KV, G = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    T, S, D = draw(st.integers(1, max_side)), draw(st.integers(1, max_side)), draw(st.integers(1, 4))
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rs.standard_normal((B, KV * G, T, D))
    k, v = rs.standard_normal((B, KV, S, D)), rs.standard_normal((B, KV, S, D))
    kind = draw(st.sampled_from(["none", "bool", "bool per head", "float per head"]))
    shape = (T, S) if kind == "bool" else (KV * G, T, S)
    mask = None if kind == "none" else rs.random(shape) < 0.7
    if kind == "float per head":
        mask = np.where(mask, rs.standard_normal(shape), -np.inf)
    blocks = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return q, k, v, mask, draw(st.booleans()), blocks


@with_fixtures
@given(case=gqa_cases())
def test_grouped_query_heads_equal_the_standard_attention(device, tier, case):
    """enable_gqa: flash's output and dQ, dK, dV (each key/value head's summed over its group
    of query heads) equal the standard attention's, masks shared or per query head, causal."""
    q, k, v, mask, causal, blocks = case
    flash = _run("flash", q, k, v, mask, causal, None, blocks, device=device, gqa=True)
    standard = _run("standard", q, k, v, mask, causal, None, device=device, gqa=True)
    assert flash[2].shape == k.shape and flash[0].shape == q.shape
    for a, b in zip(flash, standard):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(b).max()))


@with_fixtures
@given(case=gqa_cases(max_side=5), p=st.sampled_from([0.0, 0.3]))
def test_grouped_query_heads_gradcheck_float64(device, tier, case, p):
    q, k, v, mask, causal, blocks = case
    ts = [Tensor(a, requires_grad=True, device=device) for a in (q, k, v)]

    def fn(a, b, c):
        manual_seed(7)
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mask, is_causal=causal, dropout_p=p,
                                              impl="flash", block_size=blocks, enable_gqa=True)
    gradcheck(fn, ts)


@given(case=gqa_cases(), p=st.sampled_from([0.0, 0.4]))
def test_grouped_query_heads_with_dropout_are_the_heads_repeated(case, p):
    """Grouped heads are the same problems as k and v repeated to every query head: the same
    dropout counters, so bitwise the same output and dQ, and dK, dV the group sums."""
    q, k, v, mask, causal, blocks = case
    G = q.shape[1] // k.shape[1]
    grouped = _run("flash", q, k, v, mask, causal, None, blocks, dropout_p=p, seed=5, gqa=True)
    out, dq, dk, dv = _run("flash", q, np.repeat(k, G, axis=1), np.repeat(v, G, axis=1), mask, causal, None, blocks,
                           dropout_p=p, seed=5)
    np.testing.assert_array_equal(grouped[0], out)
    np.testing.assert_array_equal(grouped[1], dq)
    for ours, per_head in zip(grouped[2:], (dk, dv)):
        np.testing.assert_allclose(ours, per_head.reshape(k.shape[:2] + (G,) + k.shape[2:]).sum(axis=2),
                                   rtol=1e-12, atol=1e-12)


@given(case=gqa_cases(), dtype=st.sampled_from([np.float32, np.float16]), p=st.sampled_from([0.0, 0.3]))
def test_grouped_query_heads_fast_tier_equals_reference(case, dtype, p):
    q, k, v, mask, causal, blocks = case
    m = mask.astype(dtype) if mask is not None and mask.dtype != bool else mask

    def fn(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, attn_mask=m, is_causal=causal, dropout_p=p, impl="flash",
                                              block_size=blocks, enable_gqa=True)
    tiers_agree(fn, [np.clip(a, -2.0, 2.0).astype(dtype) for a in (q, k, v)], scaled_atol=True)


def test_a_float_mask_that_requires_grad_is_refused():
    """The standard attention differentiates a float attn_mask (a (..., T, S) gradient); the
    tiled one never holds such an array: it says so, and takes the mask detached."""
    q = Tensor(np.zeros((2, 3, 4)), requires_grad=True)
    bias = Tensor(np.zeros((3, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="impl='flash' does not differentiate attn_mask"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=bias, impl="flash")
    out = F.scaled_dot_product_attention(q, q, q, attn_mask=bias.detach(), impl="flash")
    np.testing.assert_allclose(out.numpy(), 0.0)


# ----------------------------------------------------------------------------- edge cases


def test_rows_without_keys_give_zeros_and_zero_gradients(device, tier):
    """Causal with T > S: the first T - S queries see no key; an all-False bool row too."""
    rs = np.random.default_rng(0)
    q, k, v = rs.standard_normal((2, 7, 3)), rs.standard_normal((2, 4, 3)), rs.standard_normal((2, 4, 2))
    mask = np.ones((7, 4), dtype=bool)
    mask[5] = False
    out, dq, dk, dv = _run("flash", q, k, v, mask, True, None, (2, 3), dropout_p=0.2, device=device)
    assert np.isfinite(out).all() and all(np.isfinite(a).all() for a in (dq, dk, dv))
    np.testing.assert_array_equal(out[:, [0, 1, 2, 5]], 0.0)
    np.testing.assert_array_equal(dq[:, [0, 1, 2, 5]], 0.0)


def test_causal_tiles_above_the_diagonal_are_never_computed(monkeypatch):
    """T = S = 8 in tiles of 2: of the 4 x 4 tiles only the 10 on or below the diagonal are
    computed, in the forward and again in the backward; with T != S the diagonal moves right."""
    computed = []
    real = FA.tile_scores

    def counting(*args):
        S = real(*args)
        if S is not None:
            computed.append(args[3:5])
        return S
    monkeypatch.setattr(FA, "tile_scores", counting)
    rs = np.random.default_rng(0)
    for T, S, expected in ((8, 8, 10), (4, 8, 3 + 4)):
        computed.clear()
        _run("flash", rs.standard_normal((T, 2)), rs.standard_normal((S, 2)), rs.standard_normal((S, 2)), None, True,
             None, (2, 2))
        tiles = set(computed)
        assert len(tiles) == expected and len(computed) == 2 * expected       # forward + backward
        assert all(j0 <= i1 - 1 + S - T for (i0, i1), (j0, j1) in tiles)


def test_zero_size_inputs():
    q = Tensor(np.zeros((2, 0, 3)), requires_grad=True)
    k = Tensor(np.ones((2, 4, 3)), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, k, impl="flash")
    assert out.shape == (2, 0, 3)
    out.sum().backward()
    np.testing.assert_array_equal(k.grad, 0.0)
    empty = Tensor(np.zeros((2, 0, 3)), requires_grad=True)            # no keys: every row sees nothing
    out = F.scaled_dot_product_attention(k, empty, empty, impl="flash")
    np.testing.assert_array_equal(out.numpy(), 0.0)


def test_float16_keeps_its_dtype_and_float32_statistics(tier):
    """float16 inputs: float16 output and gradients, close to the float64 result (the softmax
    statistics are float32: no overflow of exp or of the row sums for long rows)."""
    rs = np.random.default_rng(0)
    q, k, v = (rs.standard_normal((2, 300, 8)) for _ in range(3))
    half = _run("flash", q, k, v, None, True, None, (64, 64), dtype=np.float16)
    exact = _run("standard", q, k, v, None, True, None)
    for a, b in zip(half, exact):
        np.testing.assert_allclose(a, b, atol=2e-2 * max(1.0, np.abs(b).max()))


def test_bad_arguments():
    q = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="impl must be one of"):
        F.scaled_dot_product_attention(q, q, q, impl="fast")
    with pytest.raises(ValueError, match="block_size applies to impl='flash' only"):
        F.scaled_dot_product_attention(q, q, q, block_size=8)
    for bad in (0, -1, (4,), (4, 0), 2.5, True, "8"):
        with pytest.raises(ValueError, match="block_size must be a positive integer"):
            F.scaled_dot_product_attention(q, q, q, impl="flash", block_size=bad)
    with pytest.raises(ValueError, match="impl must be one of"):
        F.causal_self_attention(Tensor(np.zeros((1, 2, 6))), 1, impl="tiled")
    with pytest.raises(ValueError, match="GPTConfig.attention must be one of"):
        GPTConfig(attention="tiled")


# ----------------------------------------------------------------------------- the GPT's node


@with_fixtures
@given(T=st.integers(1, 9), blocks=st.tuples(st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 100))
def test_causal_self_attention_node_equals_the_standard_one(device, tier, T, blocks, seed):
    rs = np.random.default_rng(seed)
    qkv = rs.standard_normal((2, T, 12))
    grads = []
    for impl in ("standard", "flash"):
        x = Tensor(qkv, requires_grad=True, device=device)
        y = F.causal_self_attention(x, 2, impl=impl, block_size=blocks if impl == "flash" else None)
        y.backward(Tensor(np.cos(np.arange(y.size)).reshape(y.shape), device=device))
        grads.append((to_np(y), to_np(x.grad)))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_gpt_with_flash_attention_equals_standard(device):
    """Without dropout the GPT's loss and every gradient agree (float32 noise); with dropout
    both train (the masks are other draws) and flash reproduces itself under manual_seed."""
    rs = np.random.default_rng(0)
    x, y = rs.integers(0, 11, (2, 10)), rs.integers(0, 11, (2, 10))
    runs = {}
    for impl, dropout in (("standard", 0.0), ("flash", 0.0), ("flash", 0.2), ("flash", 0.2)):
        manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=10, n_layer=2, n_head=2, n_embd=16, dropout=dropout,
                              attention=impl)).to(device)
        manual_seed(3)
        _, loss = model(Tensor(x, device=device), Tensor(y, device=device))
        loss.backward()
        run = (loss.item(), [to_np(p.grad) for p in model.parameters()])
        if (impl, dropout) in runs:                   # the second flash run with dropout: bitwise the same
            assert run[0] == runs[impl, dropout][0]
            assert all(np.array_equal(a, b) for a, b in zip(run[1], runs[impl, dropout][1]))
        runs[impl, dropout] = run
    (ls, gs), (lf, gf) = runs["standard", 0.0], runs["flash", 0.0]
    assert abs(ls - lf) < 1e-6
    for a, b in zip(gs, gf):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gpt_with_flash_attention_generates_as_standard():
    """Cached generation: one new query against all cached keys (T = 1 < S, bottom-right)."""
    from tinygrad_llm.generate import generate
    outs = []
    for impl in ("standard", "flash"):
        manual_seed(0)
        model = GPT(GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16, attention=impl))
        model.eval()
        outs.append(generate(model, [[1, 2, 3]], 12, temperature=0.0))
    np.testing.assert_array_equal(*outs)


def test_llama_with_flash_attention_equals_standard(device):
    """The Llama's grouped-query attention (4 query heads on 2 key/value heads) by tiles: the
    same loss and gradients (float32 noise), and greedy generation through the KV cache agrees."""
    from tinygrad_llm.generate import generate
    rs = np.random.default_rng(0)
    x, y = rs.integers(0, 11, (2, 10)), rs.integers(0, 11, (2, 10))
    runs, outs = [], []
    for impl in ("standard", "flash"):
        manual_seed(0)
        model = Llama(LlamaConfig(vocab_size=11, block_size=24, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                                  attention=impl)).to(device)
        _, loss = model(Tensor(x, device=device), Tensor(y, device=device))
        loss.backward()
        runs.append((loss.item(), [to_np(p.grad) for p in model.parameters()]))
        model.eval()
        outs.append(to_np(generate(model, [[1, 2, 3]], 12, temperature=0.0)))
    assert abs(runs[0][0] - runs[1][0]) < 1e-6
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(*outs)
    with pytest.raises(ValueError, match="LlamaConfig.attention must be one of"):
        LlamaConfig(attention="tiled")


# ----------------------------------------------------------------------------- memory


def _peak_extra_bytes(impl, T, BH=2, D=16):
    """tracemalloc's peak over a forward and backward, minus the inputs and their gradients."""
    rs = np.random.default_rng(0)
    q, k, v = (Tensor(rs.standard_normal((BH, T, D)).astype(np.float32), requires_grad=True) for _ in range(3))
    g = Tensor(np.ones((BH, T, D), dtype=np.float32))
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, impl=impl, block_size=64 if impl == "flash" else None)
    out.backward(g)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak - 4 * BH * T * D * 4                  # out, dq, dk, dv: the arrays any implementation returns


def test_extra_memory_grows_as_T_not_T_squared():
    """Quadrupling T multiplies the standard attention's extra memory by about 16 (P is T x T)
    and the tiled one's by about 4 (O, L, the scaled queries: T rows each; one tile at a time)."""
    flash = [_peak_extra_bytes("flash", T) for T in (256, 1024)]
    standard = [_peak_extra_bytes("standard", T) for T in (256, 1024)]
    assert standard[1] / standard[0] > 10                 # the quadratic one, measured the same way
    assert flash[1] / flash[0] < 5
    assert flash[1] < 2 * 4 * 1024 * 1024                  # less than two float32 T x T matrices of one head
