"""The GPT's fused causal attention node (ops/self_attention.py: a thin adapter over the
attention core of ops/attention.py): against a NumPy reference and finite differences on
both tiers, against scaled_dot_product_attention on the split heads, dropout (also float16),
the fast core's two softmax paths, huge scores, the tiers against each other, bad input."""
import numpy as np
import pytest
from helper_op import helper_test_op, tiers_agree
from hypothesis import given
from hypothesis import strategies as st
from strategies import with_fixtures

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck
from tinygrad_llm.kernels import tuning
from tinygrad_llm.nn.functional import causal_self_attention
from tinygrad_llm.ops.self_attention import CausalSelfAttention


def _reference_attention(qkv, H):
    B, T, C3 = qkv.shape
    C, hd = C3 // 3, C3 // 3 // H
    q, k, v = (a.reshape(B, T, H, hd).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, -1))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)


@with_fixtures
@given(B=st.integers(1, 3), T=st.integers(1, 6), H=st.integers(1, 3), hd=st.integers(1, 4),
       seed=st.integers(0, 2 ** 16))
def test_causal_self_attention_against_numpy_and_gradcheck(tier, B, T, H, hd, seed):
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * H * hd))
    helper_test_op([qkv], lambda x: causal_self_attention(x, H), lambda a: _reference_attention(a, H))


def test_causal_self_attention_dropout_gradcheck_and_single_node(tier):
    qkv = Tensor(np.random.default_rng(0).standard_normal((2, 5, 12)), requires_grad=True)

    def f(x):
        tg.manual_seed(7)  # the same dropout mask on every call
        return causal_self_attention(x, 2, dropout_p=0.4)
    gradcheck(f, [qkv])
    y = f(qkv)
    assert isinstance(y.grad_fn, CausalSelfAttention) and y.grad_fn.inputs == (qkv,)
    assert y.grad_fn.name == "CausalSelfAttention"
    with pytest.raises(ValueError, match="dropout_p"):
        causal_self_attention(qkv, 2, dropout_p=1.0)
    with pytest.raises(ValueError, match="n_head"):
        causal_self_attention(qkv, 5)


def test_fused_attention_equals_sdpa_composition(tier):
    rs = np.random.default_rng(3)
    B, T, H, hd = 2, 6, 3, 4
    qkv = rs.standard_normal((B, T, 3 * H * hd))
    q, k, v = (Tensor(a.reshape(B, T, H, hd).transpose(0, 2, 1, 3).copy()) for a in np.split(qkv, 3, -1))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).permute(0, 2, 1, 3).reshape(B, T, H * hd)
    np.testing.assert_allclose(causal_self_attention(Tensor(qkv), H).numpy(), y.numpy(), atol=1e-12)


@pytest.mark.parametrize("limit", [np.inf, 0.0])   # inf: never subtract the row max; 0: always
def test_causal_self_attention_both_softmax_paths(monkeypatch, limit):
    """The fast core with its row-max shortcut forced on and off."""
    monkeypatch.setattr(tuning, "NO_SHIFT_LIMIT", limit)
    rs = np.random.default_rng(5)
    B, T, H, hd = 2, 7, 2, 3
    qkv = rs.standard_normal((B, T, 3 * H * hd))
    np.testing.assert_allclose(causal_self_attention(Tensor(qkv), H).numpy(), _reference_attention(qkv, H),
                               atol=1e-12)
    gradcheck(lambda x: causal_self_attention(x, H), [Tensor(qkv, requires_grad=True)])


def test_causal_self_attention_huge_scores_stay_finite(tier):
    """Scores of ~1e4 overflow exp unless the row max is subtracted: the bound check must see that."""
    qkv = np.random.default_rng(6).standard_normal((2, 5, 12)).astype(np.float32) * 100
    x = Tensor(qkv, requires_grad=True)
    y = causal_self_attention(x, 2)
    y.sum().backward()
    assert np.isfinite(y.numpy()).all() and np.isfinite(x.grad).all()
    np.testing.assert_allclose(y.numpy(), _reference_attention(qkv.astype(np.float64), 2), rtol=1e-4, atol=1e-4)


@given(B=st.integers(1, 4), T=st.integers(1, 9), H=st.integers(1, 3), hd=st.integers(1, 5),
       p=st.sampled_from([0.0, 0.3]), dtype=st.sampled_from([np.float64, np.float32]),
       scale=st.sampled_from([1.0, 30.0]), seed=st.integers(0, 2 ** 16))
def test_causal_self_attention_fast_tier_equals_reference(B, T, H, hd, p, dtype, scale, seed):
    """The fast core against the reference core through the adapter: equal to float rounding
    (float64 1e-10, float32 1e-5, relative to each element and to the array's largest one)."""
    if dtype == np.float32:
        scale = 1.0   # with big inputs dS = P * (dP - delta) cancels terms of ~1e3: float32 noise ~1e-4 there
    qkv = (np.random.default_rng(seed).standard_normal((B, T, 3 * H * hd)) * scale).astype(dtype)
    tiers_agree(lambda x: causal_self_attention(x, H, dropout_p=p), [qkv],
                scaled_atol=True)


@given(B=st.integers(1, 3), T=st.integers(1, 9), H=st.integers(1, 3), hd=st.integers(1, 5),
       p=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2 ** 16))
def test_causal_self_attention_fast_tier_float16(B, T, H, hd, p, seed):
    """float16 qkv: the fast core in float32, rounded; the reference in float16 with float32
    softmax sums: equal to float16 rounding."""
    qkv = np.random.default_rng(seed).standard_normal((B, T, 3 * H * hd)).astype(np.float16)
    tiers_agree(lambda x: causal_self_attention(x, H, dropout_p=p), [qkv], scaled_atol=True)


def test_causal_self_attention_pieces_and_threads_equal_the_reference(monkeypatch):
    """Work cut into several pieces per chunk and several chunks (threads) still gives the
    reference's numbers."""
    from tinygrad_llm.kernels import parallel
    monkeypatch.setenv(parallel.ENV_VAR, "2")
    monkeypatch.setattr(tuning, "MIN_WORK", 1)
    monkeypatch.setattr(tuning, "MIN_PIECE_WORK", 1)
    monkeypatch.setattr(tuning, "ATTENTION_PIECE_BYTES", 1)
    qkv = np.random.default_rng(4).standard_normal((5, 6, 3 * 2 * 4)).astype(np.float32)
    tiers_agree(lambda x: causal_self_attention(x, 2, dropout_p=0.2), [qkv], scaled_atol=True)


def test_causal_self_attention_float16_with_dropout(tier):
    """The one dropout-mask helper draws float32 numbers for float16 data (this path used to
    raise "Unsupported dtype float16")."""
    qkv = Tensor(np.random.default_rng(8).standard_normal((2, 5, 12)).astype(np.float16), requires_grad=True)
    tg.manual_seed(1)
    y = causal_self_attention(qkv, 2, dropout_p=0.3)
    y.sum().backward()
    assert y.dtype == qkv.grad.dtype == np.float16
    assert np.isfinite(y.numpy()).all() and np.isfinite(qkv.grad).all()


def test_causal_self_attention_bad_input():
    qkv = Tensor(np.zeros((2, 5, 12)))
    with pytest.raises(ValueError, match=r"qkv of shape \(B, T, 3C\)"):
        causal_self_attention(Tensor(np.zeros((5, 12))), 2)
    with pytest.raises(ValueError, match="n_head must be a positive integer"):
        causal_self_attention(qkv, 0)
    with pytest.raises(TypeError, match="qkv must be a floating-point tensor"):
        causal_self_attention(Tensor(np.zeros((2, 5, 12), dtype=np.int64)), 2)
    with pytest.raises(ValueError, match=r"dropout_p must be a number in \[0, 1\)"):
        causal_self_attention(qkv, 2, dropout_p=-0.1)
