"""scaled_dot_product_attention (ops/attention.py, the attention core; fast core in
kernels/cpu.py): one graph node with a hand-written backward.

Checked on both tiers against finite differences (hypothesis, float64), a plain NumPy
reference, PyTorch's F.scaled_dot_product_attention (when installed), and by the edge
cases the docstring promises: bottom-right causal alignment, fully masked rows (zeros,
never NaN), exactly-zero gradients at masked entries, a float mask combined with the causal
one (no NaN even for +inf at a forbidden entry), reproducible inverted dropout; and the
fast core against the reference core.
"""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from strategies import with_fixtures

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck, manual_seed
from tinygrad_llm import no_grad as tg_no_grad
from tinygrad_llm.backend import get_rng_state
from tinygrad_llm.kernels import tuning
from tinygrad_llm.nn.functional import scaled_dot_product_attention as sdpa
from tinygrad_llm.ops import attention as A
from helper_op import helper_test_op, tiers_agree

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- reference

def ref_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """Plain float64 NumPy attention, written independently of the op."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    T, D = q.shape[-2:]
    S = k.shape[-2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    s = scale * (q @ np.swapaxes(k, -1, -2))
    allowed = np.ones(s.shape, dtype=bool)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            allowed = allowed & mask
        else:
            s = s + mask
    if is_causal:
        i, j = np.arange(T)[:, None], np.arange(S)[None, :]
        allowed = allowed & (j <= i + (S - T))           # bottom-right aligned
    s = np.where(allowed, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(np.isfinite(s), np.exp(s - m), 0.0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    return p @ v


def _lead_variant(form, lead):
    """Leading dims that broadcast against ``lead``: the same, size-1 heads, or no batch."""
    if form == "ones" and lead:
        return lead[:-1] + (1,)
    if form == "drop":
        return lead[1:]
    return lead


def _mask_shape(form, lead, T, S):
    if form == "full":
        return lead + (T, S)
    if form == "pad":                   # a key-padding mask: per batch row, per key
        return (lead[0], 1, 1, S) if len(lead) == 2 else (1, S)
    if form == "query":                 # per query: attend all keys or none
        return (T, 1)
    return (T, S)


@st.composite
def cases(draw, dtype=np.float64):
    """q, k, v arrays, a mask, is_causal and scale, over all the op's features."""
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))  # batch, heads
    T, S = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    D, Dv = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    q_lead, k_lead, v_lead = (_lead_variant(draw(st.sampled_from(["same", "ones", "drop"])), lead)
                              for _ in range(3))
    kind = draw(st.sampled_from(["none", "bool", "float", "causal", "bool+causal", "float+causal"]))
    batch = tuple(np.broadcast_shapes(q_lead, k_lead, v_lead))
    mshape = _mask_shape(draw(st.sampled_from(["TS", "full", "pad", "query"])), batch, T, S)
    empty_row = draw(st.booleans())     # force one fully masked query row
    scale = draw(st.one_of(st.none(), st.floats(0.1, 3.0)))
    big = draw(st.booleans())      # scores beyond the limit where the row max must be subtracted
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rs.standard_normal(q_lead + (T, D)) * (30.0 if big else 1.0)
    k = rs.standard_normal(k_lead + (S, D))
    v = rs.standard_normal(v_lead + (S, Dv))
    mask = None
    if kind.startswith("bool"):
        mask = rs.random(mshape) < 0.7
        if empty_row and mshape[-2] == T:
            mask[..., rs.integers(T), :] = False
    elif kind.startswith("float"):
        mask = rs.standard_normal(mshape)
        mask[rs.random(mshape) < 0.3] = -np.inf
        if empty_row and mshape[-2] == T:
            mask[..., rs.integers(T), :] = -np.inf
    return (q.astype(dtype), k.astype(dtype), v.astype(dtype), mask, kind.endswith("causal"), scale)


def _tensors(*arrays, device="cpu", requires_grad=True):
    return [Tensor(a, requires_grad=requires_grad, device=device) for a in arrays]


# ----------------------------------------------------------------------------- gradients

@with_fixtures
@given(cases())
def test_against_numpy_and_gradcheck(tier, case):
    q, k, v, mask, is_causal, scale = case
    out, _ = helper_test_op([q, k, v], lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=is_causal, scale=scale),
                            lambda a, b, c: ref_attention(a, b, c, mask, is_causal, scale))
    assert out.shape == ref_attention(q, k, v, mask, is_causal, scale).shape


@with_fixtures
@given(cases(), st.sampled_from([0.2, 0.5]), st.integers(0, 1000))
def test_gradcheck_with_dropout(tier, case, p, seed):
    q, k, v, mask, is_causal, scale = case
    Q, K, V = _tensors(q, k, v)

    def fn(a, b, c):
        manual_seed(seed)        # the same dropout mask on every call
        return sdpa(a, b, c, attn_mask=mask, is_causal=is_causal, dropout_p=p, scale=scale)
    gradcheck(fn, [Q, K, V])


@given(cases(), st.sampled_from([np.float64, np.float32]), st.sampled_from([0.0, 0.3]))
def test_fast_tier_equals_reference(case, dtype, p):
    """The fast core (in place, pieces, BLAS row sums, the no-shift softmax) against the
    reference core: equal to float rounding, 1e-10 (float64) or 1e-5 (float32) relative,
    and absolutely to that rounding times the size of the terms that cancel in
    dS = P (dP - delta): the largest possible score (Cauchy-Schwarz) times the largest value."""
    q, k, v, mask, is_causal, scale = case
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(dtype)
    s = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    bound = s * np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max()
    terms = max(1.0, bound) * max(1.0, np.abs(v).max())
    tiers_agree(lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=is_causal, dropout_p=p, scale=scale),
                [q.astype(dtype), k.astype(dtype), v.astype(dtype)],
                atol=(1e-12 if dtype == np.float64 else 3e-6) * terms)


def test_forward_and_grads_float32_on_device(device, tier):
    rs = np.random.default_rng(0)
    q, k, v = (rs.standard_normal((2, 3, 5, 4)) for _ in range(3))
    mask = rs.random((5, 5)) < 0.6
    mask[2] = False
    g = rs.standard_normal((2, 3, 5, 4))
    results = {}
    for dev, dt in ((device, np.float32), ("cpu", np.float64)):
        Q, K, V = _tensors(q.astype(dt), k.astype(dt), v.astype(dt), device=dev)
        out = sdpa(Q, K, V, attn_mask=Tensor(mask, device=dev), is_causal=True)
        out.backward(Tensor(g.astype(dt), device=dev))
        assert out.dtype == dt and Q.grad.dtype == dt and K.grad.dtype == dt and V.grad.dtype == dt
        results[dt] = [to_np(x) for x in (out, Q.grad, K.grad, V.grad)]
    np.testing.assert_allclose(results[np.float64][0], ref_attention(q, k, v, mask, True), atol=1e-12)
    for a, b in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_both_softmax_paths_agree(monkeypatch):
    """The fast core's row-max subtraction on or off (its Cauchy-Schwarz shortcut) gives the same numbers."""
    rs = np.random.default_rng(1)
    q, k, v, g = (rs.standard_normal((3, 6, 8)).astype(np.float32) for _ in range(4))
    mask = rs.random((6, 6)) < 0.5
    mask[0] = False
    runs = []
    for limit in (np.inf, 0.0):     # inf: never subtract the row max; 0: always subtract it
        monkeypatch.setattr(tuning, "NO_SHIFT_LIMIT", limit)
        Q, K, V = _tensors(q, k, v)
        out = sdpa(Q, K, V, attn_mask=mask)
        out.backward(Tensor(g))
        runs.append([out.numpy(), Q.grad, K.grad, V.grad])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(runs[0][0], ref_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


def test_huge_scores_do_not_overflow(device, tier):
    rs = np.random.default_rng(2)
    q, k, v = (rs.standard_normal((2, 4, 5, 3)).astype(np.float32) for _ in range(3))
    Q, K, V = _tensors(q * 100, k * 100, v, device=device)
    out = sdpa(Q, K, V, is_causal=True)
    out.sum().backward()
    for a in (out, Q.grad, K.grad, V.grad):
        assert np.isfinite(to_np(a)).all()
    np.testing.assert_allclose(to_np(out), ref_attention(q * 100, k * 100, v, None, True), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- masks

def test_causal_is_bottom_right_aligned(device, tier):
    """With v = identity the output IS P: check which keys each query sees."""
    rs = np.random.default_rng(3)
    for T, S in ((3, 3), (2, 5), (5, 2)):
        q, k = rs.standard_normal((T, 4)), rs.standard_normal((S, 4))
        P = to_np(sdpa(*_tensors(q, k, np.eye(S), device=device, requires_grad=False), is_causal=True))
        for i in range(T):
            for j in range(S):
                if j <= i + S - T:
                    assert P[i, j] > 0, (T, S, i, j)
                else:
                    assert P[i, j] == 0, (T, S, i, j)
        np.testing.assert_allclose(P.sum(axis=-1), [1.0 if i >= T - S else 0.0 for i in range(T)])


def test_causal_combines_with_masks(tier):
    """is_causal with a bool mask: allowed where BOTH allow; with a float mask: added."""
    rs = np.random.default_rng(4)
    q, k, v = rs.standard_normal((2, 4, 3)), rs.standard_normal((2, 4, 3)), rs.standard_normal((2, 4, 2))
    tril = np.tril(np.ones((4, 4), dtype=bool))
    bmask = rs.random((4, 4)) < 0.6
    got = sdpa(*_tensors(q, k, v, requires_grad=False), attn_mask=bmask, is_causal=True).numpy()
    np.testing.assert_allclose(got, ref_attention(q, k, v, bmask & tril), atol=1e-12)
    fmask = rs.standard_normal((4, 4))
    got = sdpa(*_tensors(q, k, v, requires_grad=False), attn_mask=fmask, is_causal=True).numpy()
    np.testing.assert_allclose(got, ref_attention(q, k, v, np.where(tril, fmask, -np.inf)), atol=1e-12)


@pytest.mark.parametrize("how", ["bool", "float", "causal"])
def test_fully_masked_rows_give_zeros_not_nan(device, tier, how):
    rs = np.random.default_rng(5)
    T, S = 4, 3
    q, k, v = rs.standard_normal((2, T, 3)), rs.standard_normal((2, S, 3)), rs.standard_normal((2, S, 2))
    mask, causal = None, False
    if how == "bool":
        mask = np.ones((T, S), dtype=bool)
        mask[0] = False
    elif how == "float":
        mask = np.zeros((T, S))
        mask[0] = -np.inf
    else:
        causal = True        # T > S: query 0 sees no key (j <= 0 + S - T = -1)
    Q, K, V = _tensors(q, k, v, device=device)
    out = sdpa(Q, K, V, attn_mask=None if mask is None else Tensor(mask, device=device), is_causal=causal)
    out.backward(Tensor(rs.standard_normal(out.shape), device=device))
    o, dq = to_np(out), to_np(Q.grad)
    assert np.isfinite(o).all() and np.isfinite(dq).all()
    assert np.isfinite(to_np(K.grad)).all() and np.isfinite(to_np(V.grad)).all()
    assert (o[:, 0] == 0).all() and (dq[:, 0] == 0).all()
    assert (o[:, 1:] != 0).all()


@pytest.mark.parametrize("how", ["bool", "float"])
def test_masked_entries_get_exactly_zero_gradient(device, tier, how):
    """Key 2 is masked for every query: dK and dV there are exactly 0, and moving it
    changes nothing."""
    rs = np.random.default_rng(6)
    q, k, v = rs.standard_normal((3, 4, 5, 3)), rs.standard_normal((3, 4, 6, 3)), rs.standard_normal((3, 4, 6, 2))
    allowed = rs.random((5, 6)) < 0.8
    allowed[:, 2] = False
    allowed[:, 0] = True
    mask = allowed if how == "bool" else np.where(allowed, rs.standard_normal((5, 6)), -np.inf)
    Q, K, V = _tensors(q, k, v, device=device)
    out = sdpa(Q, K, V, attn_mask=mask)
    out.backward(Tensor(rs.standard_normal(out.shape), device=device))
    dk, dv = to_np(K.grad), to_np(V.grad)
    assert (dk[..., 2, :] == 0).all() and (dv[..., 2, :] == 0).all()
    assert (np.abs(dk[..., 0, :]) > 0).all()
    k2, v2 = k.copy(), v.copy()
    k2[..., 2, :] += 5.0
    v2[..., 2, :] -= 7.0
    out2 = sdpa(*_tensors(q, k2, v2, device=device, requires_grad=False), attn_mask=mask)
    np.testing.assert_array_equal(to_np(out2), to_np(out))


def test_mask_forms_are_equivalent(tier):
    """Every spelling of one mask gives the same output; a float mask that requires grad also
    gets a gradient (zero at its -inf entries: those scores never reach the output)."""
    rs = np.random.default_rng(7)
    q, k, v = (rs.standard_normal((2, 3, 4, 5)) for _ in range(3))
    allowed = rs.random((3, 4, 4)) < 0.7
    outs = []
    for mask in (allowed, allowed.tolist(), Tensor(allowed), np.where(allowed, 0.0, -np.inf),
                 Tensor(np.where(allowed, 0.0, -np.inf), requires_grad=True)):
        Q, K, V = _tensors(q, k, v)
        out = sdpa(Q, K, V, attn_mask=mask)
        out.sum().backward()
        outs.append(out.numpy())
        if isinstance(mask, Tensor) and mask.requires_grad:
            assert mask.grad.shape == allowed.shape and (mask.grad[~allowed] == 0).all()
            assert np.abs(mask.grad[allowed]).max() > 0
        elif isinstance(mask, Tensor):
            assert mask.grad is None
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-12, atol=1e-14)


def test_float_mask_with_causal_never_gives_nan(device, tier):
    """A float mask is added first, then causally forbidden scores are SET to -inf: even +inf
    (or NaN) in the mask at a forbidden entry cannot leak into the result."""
    rs = np.random.default_rng(14)
    q, k, v = rs.standard_normal((2, 4, 3)), rs.standard_normal((2, 4, 3)), rs.standard_normal((2, 4, 2))
    fmask = rs.standard_normal((4, 4))
    bad = fmask.copy()
    bad[np.triu_indices(4, 1)] = np.inf                  # every causally forbidden entry
    bad[0, 3] = np.nan
    Q, K, V = _tensors(q, k, v, device=device)
    out = sdpa(Q, K, V, attn_mask=Tensor(bad, device=device), is_causal=True)
    out.sum().backward()
    for a in (out, Q.grad, K.grad, V.grad):
        assert np.isfinite(to_np(a)).all()
    tril = np.tril(np.ones((4, 4), dtype=bool))
    np.testing.assert_allclose(to_np(out), ref_attention(q, k, v, np.where(tril, fmask, -np.inf)), atol=1e-12)


def test_float64_mask_does_not_upcast_float32_inputs(tier):
    q = Tensor(np.ones((2, 3, 4), dtype=np.float32), requires_grad=True)
    out = sdpa(q, q, q, attn_mask=np.zeros((3, 3), dtype=np.float64), is_causal=True)
    out.sum().backward()
    assert out.dtype == np.float32 and q.grad.dtype == np.float32


# ----------------------------------------------------------------------------- shapes, broadcast

def test_broadcast_leading_dims(tier):
    """q (T, D) against k, v (B, H, S, .): the output broadcasts, q's gradient is summed."""
    rs = np.random.default_rng(8)
    q, k, v = rs.standard_normal((3, 4)), rs.standard_normal((2, 1, 5, 4)), rs.standard_normal((1, 3, 5, 2))
    Q, K, V = _tensors(q, k, v)
    out = sdpa(Q, K, V)
    assert out.shape == (2, 3, 3, 2)
    np.testing.assert_allclose(out.numpy(), ref_attention(q, k, v), atol=1e-12)
    out.sum().backward()
    assert Q.grad.shape == q.shape and K.grad.shape == k.shape and V.grad.shape == v.shape
    gradcheck(lambda a, b, c: sdpa(a, b, c), [Q, K, V])


def test_2d_and_empty_key_set(tier):
    rs = np.random.default_rng(9)
    q, k, v = rs.standard_normal((3, 2)), rs.standard_normal((4, 2)), rs.standard_normal((4, 5))
    out = sdpa(*_tensors(q, k, v, requires_grad=False), scale=0.7)
    np.testing.assert_allclose(out.numpy(), ref_attention(q, k, v, scale=0.7), atol=1e-12)
    Q, K, V = _tensors(q, np.zeros((0, 2)), np.zeros((0, 5)))
    out = sdpa(Q, K, V)
    out.sum().backward()
    assert out.shape == (3, 5) and (out.numpy() == 0).all() and (Q.grad == 0).all()


def test_is_one_graph_node():
    rs = np.random.default_rng(10)
    Q, K, V = _tensors(*(rs.standard_normal((2, 3, 4, 5)) for _ in range(3)))
    mask = Tensor(rs.random((4, 4)) < 0.5, requires_grad=False)
    out = sdpa(Q, K, V, attn_mask=mask, is_causal=True, dropout_p=0.1)
    node = out.grad_fn
    assert isinstance(node, A.ScaledDotProductAttention) and node.name == "ScaledDotProductAttention"
    assert len(node.inputs) == 3 and all(a is b for a, b in zip(node.inputs, (Q, K, V)))
    assert all(t.grad_fn is None for t in node.inputs)     # nothing else in the graph


def test_exported_from_functional():
    assert "scaled_dot_product_attention" in F.__all__ and "causal_self_attention" in F.__all__


# ----------------------------------------------------------------------------- dropout

def test_dropout_is_reproducible_and_only_drawn_when_p_positive(tier):
    rs = np.random.default_rng(11)
    Q, K, V = _tensors(*(rs.standard_normal((2, 2, 6, 4)) for _ in range(3)), requires_grad=False)
    manual_seed(5)
    a = sdpa(Q, K, V, dropout_p=0.4).numpy()
    b = sdpa(Q, K, V, dropout_p=0.4).numpy()
    manual_seed(5)
    c = sdpa(Q, K, V, dropout_p=0.4).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)
    before = get_rng_state()
    d = sdpa(Q, K, V, dropout_p=0.0).numpy()
    assert get_rng_state() == before
    np.testing.assert_allclose(d, ref_attention(Q.data, K.data, V.data), atol=1e-12)


def test_dropout_scales_kept_probabilities(device, tier):
    """v = identity makes the output the dropped probabilities: each is 0 or P / (1 - p)."""
    rs = np.random.default_rng(12)
    T, S, p = 8, 8, 0.3
    q, k = rs.standard_normal((50, T, 4)), rs.standard_normal((50, S, 4))
    P = ref_attention(q, k, np.eye(S), is_causal=True)
    manual_seed(0)
    out = to_np(sdpa(*_tensors(q, k, np.eye(S), device=device, requires_grad=False),
                     is_causal=True, dropout_p=p))
    kept = out != 0
    np.testing.assert_allclose(out[kept], P[kept] / (1 - p), rtol=1e-12)
    frac = 1 - kept[P > 0].mean()
    assert abs(frac - p) < 0.03, frac


def test_dropout_in_float16(tier):
    """The one dropout-mask helper draws float32 numbers for float16 data (CuPy has no float16 draws)."""
    rs = np.random.default_rng(15)
    Q, K, V = _tensors(*(rs.standard_normal((2, 3, 5, 4)).astype(np.float16) for _ in range(3)))
    manual_seed(2)
    out = sdpa(Q, K, V, is_causal=True, dropout_p=0.3)
    out.sum().backward()
    assert out.dtype == np.float16 and np.isfinite(out.numpy()).all() and np.isfinite(Q.grad).all()


def test_dropout_expected_value_is_the_plain_output():
    rs = np.random.default_rng(13)
    B, p = 20000, 0.5
    q, k, v = rs.standard_normal((1, 4, 3)), rs.standard_normal((1, 5, 3)), rs.standard_normal((1, 5, 2))
    manual_seed(1)
    out = sdpa(Tensor(np.broadcast_to(q, (B, 4, 3))), Tensor(k), Tensor(v), dropout_p=p).numpy()
    se = out.std(axis=0) / np.sqrt(B)
    assert (np.abs(out.mean(axis=0) - ref_attention(q, k, v)[0]) < 5 * se + 1e-12).all()


# ----------------------------------------------------------------------------- grouped-query attention

@st.composite
def gqa_cases(draw):
    """q (B, KV * G, T, D), k and v (B, KV, S, D), a mask over (B, H, T, S) or (T, S), is_causal."""
    B, KV, G = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 3))
    T, S, D = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    rs = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = rs.standard_normal((B, KV * G, T, D))
    k, v = rs.standard_normal((B, KV, S, D)), rs.standard_normal((B, KV, S, D))
    mask = draw(st.sampled_from([None, (T, S), (B, KV * G, T, S), (B, 1, T, S), (B, 1, 1, S), (KV * G, 1, S)]))
    if mask is not None:
        mask = rs.random(mask) < 0.7
    return q, k, v, mask, draw(st.booleans())


def repeat_heads(a, G):
    """(..., KV, S, D) -> (..., KV * G, S, D): key/value head kv serves query heads kv * G .. kv * G + G - 1."""
    return np.repeat(a, G, axis=-3)


@with_fixtures
@given(gqa_cases())
def test_gqa_against_repeated_heads_and_gradcheck(tier, case):
    """enable_gqa is attention with each K/V head repeated for its group; gradients by finite differences."""
    q, k, v, mask, causal = case
    G = q.shape[1] // k.shape[1]
    helper_test_op([q, k, v], lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=causal, enable_gqa=True),
                   lambda a, b, c: ref_attention(a, repeat_heads(b, G), repeat_heads(c, G), mask, causal))


def test_gqa_gradient_of_a_shared_head_is_the_group_sum(device, tier):
    rs = np.random.default_rng(7)
    B, KV, G, T, D = 2, 2, 3, 5, 4
    q, k, v = rs.standard_normal((B, KV * G, T, D)), rs.standard_normal((B, KV, T, D)), rs.standard_normal((B, KV, T, D))
    g = rs.standard_normal((B, KV * G, T, D))
    Q, K, V = _tensors(q, k, v, device=device)
    out = sdpa(Q, K, V, is_causal=True, enable_gqa=True)
    out.backward(Tensor(g, device=device))
    Qr, Kr, Vr = _tensors(q, repeat_heads(k, G), repeat_heads(v, G), device=device)
    ref = sdpa(Qr, Kr, Vr, is_causal=True)
    ref.backward(Tensor(g, device=device))
    np.testing.assert_allclose(to_np(out), to_np(ref), atol=1e-12)
    np.testing.assert_allclose(to_np(Q.grad), to_np(Qr.grad), atol=1e-12)
    for ours, repeated in ((K.grad, Kr.grad), (V.grad, Vr.grad)):
        np.testing.assert_allclose(to_np(ours), to_np(repeated).reshape(B, KV, G, T, D).sum(axis=2), atol=1e-12)
    assert out.shape == (B, KV * G, T, D) and K.grad.shape == (B, KV, T, D)


def test_gqa_with_dropout_draws_the_mask_of_the_repeated_heads(tier):
    rs = np.random.default_rng(8)
    q, k, v = rs.standard_normal((2, 6, 4, 3)), rs.standard_normal((2, 3, 4, 3)), rs.standard_normal((2, 3, 4, 3))
    outs = []
    for kk, vv, gqa in ((k, v, True), (repeat_heads(k, 2), repeat_heads(v, 2), False)):
        manual_seed(3)
        outs.append(sdpa(Tensor(q), Tensor(kk), Tensor(vv), dropout_p=0.4, is_causal=True, enable_gqa=gqa).numpy())
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-12)
    Q, K, V = _tensors(q, k, v)

    def fn(a, b, c):
        manual_seed(5)
        return sdpa(a, b, c, dropout_p=0.3, enable_gqa=True)
    gradcheck(fn, [Q, K, V])


@given(gqa_cases(), st.sampled_from([np.float64, np.float32]))
def test_gqa_fast_tier_equals_reference(case, dtype):
    q, k, v, mask, causal = case
    tiers_agree(lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=causal, enable_gqa=True),
                [q.astype(dtype), k.astype(dtype), v.astype(dtype)], scaled_atol=True)


@given(cases(), st.sampled_from([0.0, 0.3]), st.booleans())
def test_fast_tier_float16_runs_in_float32(case, p, gqa):
    """float16: the fast core widens to float32, runs there and rounds P and O (NumPy has no
    float16 GEMM); the reference runs NumPy's float16 products with float32 softmax sums:
    the same to float16 rounding. The output and gradients stay float16."""
    q, k, v, mask, is_causal, scale = case
    if gqa:                                          # two query heads per key/value head
        q = np.concatenate([q[..., None, :, :]] * 2, axis=-3).reshape(q.shape[:-2] + (2,) + q.shape[-2:])
        k, v = k[..., None, :, :], v[..., None, :, :]
        mask = None if mask is None or mask.ndim < 3 else mask[..., None, :, :]
    if mask is not None and mask.dtype != bool:
        mask = mask.astype(np.float16)
    q, k, v = (np.clip(a, -2.0, 2.0).astype(np.float16) for a in (q, k, v))
    tiers_agree(lambda a, b, c: sdpa(a, b, c, attn_mask=mask, is_causal=is_causal, dropout_p=p, scale=scale,
                                     enable_gqa=gqa), [q, k, v], scaled_atol=True)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_gqa_matches_torch(tier, dtype, tol):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(9)
    q = rs.standard_normal((2, 6, 5, 4)).astype(dtype)
    k, v = rs.standard_normal((2, 2, 5, 4)).astype(dtype), rs.standard_normal((2, 2, 5, 4)).astype(dtype)
    helper_test_op([q, k, v], lambda a, b, c: sdpa(a, b, c, is_causal=True, enable_gqa=True),
                   torch_fn=lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(
                       a, b, c, is_causal=True, enable_gqa=True), rtol=tol, atol=tol)


def test_gqa_bad_input():
    q, k = Tensor(np.zeros((1, 6, 3, 4))), Tensor(np.zeros((1, 4, 3, 4)))
    with pytest.raises(ValueError, match=r"key/value heads \(4\) to divide the query heads \(6\)"):
        sdpa(q, k, k, enable_gqa=True)
    with pytest.raises(ValueError, match="key and value need the same number of heads"):
        sdpa(q, Tensor(np.zeros((1, 2, 3, 4))), Tensor(np.zeros((1, 3, 3, 4))), enable_gqa=True)
    with pytest.raises(ValueError, match="needs a heads dim"):
        sdpa(Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 4))), enable_gqa=True)
    with pytest.raises(TypeError, match="enable_gqa must be a bool"):
        sdpa(q, q, q, enable_gqa=1)
    with pytest.raises(ValueError, match="do not broadcast"):            # without enable_gqa: as before
        sdpa(q, Tensor(np.zeros((1, 2, 3, 4))), Tensor(np.zeros((1, 2, 3, 4))))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(1, 2, 3, 3\) does not broadcast"):
        sdpa(q, Tensor(np.zeros((1, 2, 3, 4))), Tensor(np.zeros((1, 2, 3, 4))), enable_gqa=True,
             attn_mask=np.ones((1, 2, 3, 3), dtype=bool))             # a mask over the K/V heads, not H


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("shapes, match", [
    (((2, 3, 4), (2, 5, 3), (2, 5, 4)), "same last dim"),
    (((2, 3, 4), (2, 5, 4), (2, 6, 4)), "same number of keys"),
    (((2, 3, 4), (3, 5, 4), (3, 5, 4)), "do not broadcast"),
    (((4,), (5, 4), (5, 4)), "at least 2 dims"),
])
def test_bad_shapes(shapes, match):
    q, k, v = (Tensor(np.zeros(s)) for s in shapes)
    with pytest.raises(ValueError, match=match):
        sdpa(q, k, v)


def test_bad_mask_and_args():
    q = Tensor(np.zeros((2, 3, 4)))
    k = Tensor(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 4\) does not broadcast"):
        sdpa(q, k, k, attn_mask=np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="does not broadcast"):
        sdpa(q, k, k, attn_mask=np.ones((7, 2, 3, 5), dtype=bool))   # would grow the output
    with pytest.raises(TypeError, match="must be bool .* or floating point"):
        sdpa(q, k, k, attn_mask=np.ones((3, 5), dtype=np.int64))
    for p in (-0.1, 1.0, 1.5, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="dropout_p must be a number in"):
            sdpa(q, k, k, dropout_p=p)
    with pytest.raises(TypeError, match="share one dtype"):
        sdpa(q, k.to(dtype="float32"), k)
    with pytest.raises(TypeError, match="must be a Tensor"):
        sdpa(np.zeros((3, 4)), k, k)


# ----------------------------------------------------------------------------- PyTorch

def _torch_case(rs, T, S, mask_kind, dtype):
    q = rs.standard_normal((2, 3, T, 4)).astype(dtype)
    k = rs.standard_normal((2, 1, S, 4)).astype(dtype)       # shared over heads
    v = rs.standard_normal((2, 3, S, 5)).astype(dtype)
    mask = None
    if mask_kind == "bool":
        mask = rs.random((2, 3, T, S)) < 0.6
        mask[0, 1, 0] = False                                   # a fully masked row
    elif mask_kind == "float":
        mask = rs.standard_normal((T, S)).astype(dtype)
        mask[0, 0] = -np.inf
    return q, k, v, mask


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("T, S, mask_kind, causal", [
    (5, 5, None, False), (5, 5, "bool", False), (4, 6, "float", False), (6, 6, None, True),
    (6, 6, "bool", True), (3, 6, None, True), (6, 3, None, True), (4, 7, "bool", True)])
def test_matches_torch(tier, dtype, tol, T, S, mask_kind, causal):
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rs = np.random.default_rng(T * 10 + S)
    q, k, v, mask = _torch_case(rs, T, S, mask_kind, dtype)
    g = rs.standard_normal((2, 3, T, 5)).astype(dtype)
    Q, K, V = _tensors(q, k, v)
    out = sdpa(Q, K, V, attn_mask=mask, is_causal=causal, scale=0.6)
    out.backward(Tensor(g))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tmask = None if mask is None else torch.tensor(mask)
    t_causal = causal
    if causal and T != S:        # PyTorch aligns top-left: pass our bottom-right mask explicitly
        tri = torch.tensor(np.tril(np.ones((T, S), dtype=bool), k=S - T))
        tmask = tri if tmask is None else tmask & tri
        t_causal = False
    elif causal and mask is not None:   # torch's math path refuses both: AND them here
        tmask = tmask & torch.tensor(np.tril(np.ones((T, S), dtype=bool)))
        t_causal = False
    tout = TF.scaled_dot_product_attention(tq, tk.expand(2, 3, S, 4), tv, attn_mask=tmask,
                                           is_causal=t_causal, scale=0.6)
    tout.backward(torch.tensor(g))
    for ours, theirs in ((out.numpy(), tout), (Q.grad, tq.grad), (K.grad, tk.grad), (V.grad, tv.grad)):
        theirs = theirs.detach().numpy()
        assert np.isfinite(theirs).all()
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    if mask_kind is None:                   # the shared helper: PyTorch in float64, its gradients too
        helper_test_op([q, k, v], lambda a, b, c: sdpa(a, b, c, is_causal=causal, scale=0.6),
                       torch_fn=lambda a, b, c: TF.scaled_dot_product_attention(
                           a, b.expand(2, 3, S, 4), c, attn_mask=None if T == S or not causal else torch.tensor(
                               np.tril(np.ones((T, S), dtype=bool), k=S - T)), is_causal=causal and T == S, scale=0.6))


# ----------------------------------------------------------------------------- a float mask's gradient

@with_fixtures
@given(cases(), st.sampled_from([0.0, 0.3]), st.integers(0, 1000))
def test_float_mask_gradient_gradcheck(tier, case, p, seed):
    """A float attn_mask that requires grad is a fourth input: its gradient is dS summed over
    the dims it was broadcast along; exactly 0 where the mask is -inf or the causal mask
    forbids (those scores never reach the output)."""
    q, k, v, mask, is_causal, scale = case
    if mask is None or mask.dtype == bool:
        return
    def fn(a, b, c, m):
        manual_seed(seed)                    # the same dropout mask on every call
        return sdpa(a, b, c, attn_mask=m, is_causal=is_causal, dropout_p=p, scale=scale)
    out, grads = helper_test_op([q, k, v, mask], fn, None if p else (
        lambda a, b, c, m: ref_attention(a, b, c, m, is_causal, scale)))
    dmask = grads[3]
    assert dmask.shape == mask.shape and (dmask[np.isneginf(mask)] == 0).all()


@given(cases(), st.sampled_from([np.float64, np.float32]))
def test_float_mask_gradient_fast_tier_equals_reference(case, dtype):
    q, k, v, mask, is_causal, scale = case
    if mask is None or mask.dtype == bool:
        return
    s = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    terms = max(1.0, s * np.linalg.norm(q, axis=-1).max() * np.linalg.norm(k, axis=-1).max()) * max(1.0, np.abs(v).max())
    tiers_agree(lambda a, b, c, m: sdpa(a, b, c, attn_mask=m, is_causal=is_causal, scale=scale),
                [a.astype(dtype) for a in (q, k, v, mask)], atol=(1e-12 if dtype == np.float64 else 3e-6) * terms)


def test_float_mask_gradient_on_device_and_in_float32(device, tier):
    """A float64 mask on float32 inputs: the node sees a float32 mask (a recorded cast), the
    mask's gradient comes back float64; no gradient when grad mode is off or not required."""
    rs = np.random.default_rng(3)
    q, k, v = (Tensor(rs.standard_normal((2, 3, 4)).astype(np.float32), device=device, requires_grad=True)
               for _ in range(3))
    m = Tensor(rs.standard_normal((3, 3)), device=device, requires_grad=True)
    out = sdpa(q, k, v, attn_mask=m)
    assert out.dtype == np.float32 and len(out.grad_fn.inputs) == 4
    out.backward(Tensor(rs.standard_normal((2, 3, 4)).astype(np.float32), device=device))
    assert m.grad.dtype == np.float64 and m.grad.shape == (3, 3) and np.abs(to_np(m.grad)).max() > 0
    with tg_no_grad():
        assert sdpa(q, k, v, attn_mask=m).grad_fn is None
    assert len(sdpa(q, k, v, attn_mask=m.detach()).grad_fn.inputs) == 3


@pytest.mark.parametrize("mshape", [(3, 5), (1, 3, 5), (4, 3, 5), (2, 1, 1, 5), (2, 4, 3, 5)])
def test_float_mask_gradient_with_grouped_query_attention(tier, mshape):
    """enable_gqa stacks each K/V head's query heads as rows, the mask's rows too: the mask's
    gradient is unstacked again and summed back to its shape (shared by all heads, or per head)."""
    rs = np.random.default_rng(len(mshape) + mshape[0])
    q, k, v = rs.standard_normal((2, 4, 3, 2)), rs.standard_normal((2, 2, 5, 2)), rs.standard_normal((2, 2, 5, 3))
    mask = rs.standard_normal(mshape)
    mask[..., 0, 1] = -np.inf
    out, grads = helper_test_op([q, k, v, mask], lambda a, b, c, m: sdpa(a, b, c, attn_mask=m, enable_gqa=True))
    assert grads[3].shape == mshape and (grads[3][..., 0, 1] == 0).all()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("mshape", [(4, 6), (1, 1, 4, 6), (2, 1, 1, 6), (2, 3, 4, 6), (3, 1, 6)])
def test_float_mask_gradient_matches_torch(tier, dtype, tol, mshape):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(len(mshape) * 7 + mshape[-2])
    q, k, v, _ = _torch_case(rs, 4, 6, None, dtype)
    mask = rs.standard_normal(mshape).astype(dtype)
    mask[..., 0, 1] = -np.inf
    g = rs.standard_normal((2, 3, 4, 5)).astype(dtype)
    Q, K, V, M = _tensors(q, k, v, mask)
    out = sdpa(Q, K, V, attn_mask=M, scale=0.7)
    out.backward(Tensor(g))
    tq, tk, tv, tm = (torch.tensor(a, requires_grad=True) for a in (q, k, v, mask))
    tout = torch.nn.functional.scaled_dot_product_attention(tq, tk.expand(2, 3, 6, 4), tv, attn_mask=tm, scale=0.7)
    tout.backward(torch.tensor(g))
    for ours, theirs in ((out.numpy(), tout), (Q.grad, tq.grad), (K.grad, tk.grad), (V.grad, tv.grad),
                         (M.grad, tm.grad)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- the example

def test_by_hand_example_runs_and_agrees():
    script = REPO / "examples" / "attention_backprop_by_hand.py"
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    diffs = re.findall(r"max \|[^|]+\|\s*=\s*([0-9.eE+-]+)", r.stdout)
    assert len(diffs) == 9, r.stdout                     # dQ, dK, dV: three pairs each
    assert all(float(d) < 1e-8 for d in diffs), diffs
    assert "all three agree" in r.stdout
    r = subprocess.run([sys.executable, str(script), "--bogus"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ") and "--bogus" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
