"""rotary_embedding (ops/rope.py) and the tables of nn.RotaryEmbedding: one graph node whose
backward is the inverse rotation.

Checked against a plain NumPy rotation written pair by pair, against finite differences
(float64, hypothesis), against Hugging Face's apply_rotary_pos_emb and rope frequencies
(when transformers is installed), and by the properties the derivation promises: the
backward of y is x (a rotation's transpose is its inverse), norms are kept, offset
positions are a slice of the tables, Llama 3 scaling keeps short wavelengths and stretches
long ones; plus shapes, dtypes, devices and bad input.
"""
import math

import numpy as np
import pytest
from conftest import to_np
from helper_op import helper_test_op, leaf
from hypothesis import given
from hypothesis import strategies as st
from strategies import with_fixtures

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, no_grad
from tinygrad_llm.nn import RotaryEmbedding
from tinygrad_llm.ops.rope import inv_frequencies, rope_tables

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def np_rope(x, positions, theta=10000.0):
    """Each pair (x[i], x[i + D/2]) rotated by positions * theta ** (-2i / D), in float64."""
    D = x.shape[-1]
    h = D // 2
    angle = np.asarray(positions, dtype=np.float64)[:, None] * theta ** (-2.0 * np.arange(h) / D)   # (T, h)
    c, s = np.cos(angle), np.sin(angle)
    x1, x2 = x[..., :h], x[..., h:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def tables(T, D, start=0, theta=10000.0, dtype=np.float64):
    """cos, sin (T, D) computed in float64 (for the float64 checks)."""
    angle = np.arange(start, start + T, dtype=np.float64)[:, None] * theta ** (-2.0 * np.arange(D // 2) / D)
    angle = np.concatenate([angle, angle], axis=-1)
    return np.cos(angle).astype(dtype), np.sin(angle).astype(dtype)


@with_fixtures
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple), T=st.integers(1, 5),
       half=st.integers(1, 3), start=st.integers(0, 50), seed=st.integers(0, 2**32 - 1))
def test_against_numpy_and_gradcheck(device, lead, T, half, start, seed):
    D = 2 * half
    x = np.random.default_rng(seed).standard_normal(lead + (T, D))
    cos, sin = tables(T, D, start)
    helper_test_op([x], lambda t: F.rotary_embedding(t, cos, sin),
                   lambda a: np_rope(a, np.arange(start, start + T)), device=device)


def test_heads_after_positions_layout(device):
    """x (B, T, H, D) with tables (T, 1, D): the same rotation per head as the (B, H, T, D) layout."""
    rs = np.random.default_rng(0)
    x = rs.standard_normal((2, 5, 3, 4))
    cos, sin = tables(5, 4, start=7)
    y = F.rotary_embedding(Tensor(x, device=device), cos[:, None], sin[:, None])
    want = np_rope(x.transpose(0, 2, 1, 3), np.arange(7, 12)).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(to_np(y), want, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backward_is_the_inverse_rotation(device, dtype):
    """dx = R^T g, and R^T = R^-1: backpropagating y itself returns x; the norm of each
    head's vector is unchanged by the rotation."""
    rs = np.random.default_rng(1)
    x = rs.standard_normal((2, 3, 6, 8)).astype(dtype)
    cos, sin = tables(6, 8, start=5, dtype=dtype)
    t = leaf(x, device)
    y = F.rotary_embedding(t, cos, sin)
    y.backward(Tensor(to_np(y), device=device))
    tol = 1e-13 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(to_np(t.grad), x, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.linalg.norm(to_np(y), axis=-1), np.linalg.norm(x, axis=-1), rtol=tol)
    assert y.dtype == dtype and t.grad.dtype == dtype


def test_matches_hugging_face_apply_rotary_pos_emb():
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rs = np.random.default_rng(2)
    q = rs.standard_normal((2, 4, 7, 16))
    cos, sin = RotaryEmbedding(16, theta=500.0)(3, 7, dtype=np.float64)
    c, s = torch.tensor(cos.numpy())[None], torch.tensor(sin.numpy())[None]
    helper_test_op([q], lambda t: F.rotary_embedding(t, cos, sin),
                   torch_fn=lambda t: llama.apply_rotary_pos_emb(t, t, c, s)[0])


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
def test_tables_match_hugging_face(scaling):
    """inv_freq and the float32 tables as transformers computes them."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    if int(transformers.__version__.split(".")[0]) >= 5:      # transformers 5 keeps both in rope_parameters
        rope = {"rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": 10000.0}}
    else:
        rope = {"rope_theta": 10000.0, "rope_scaling": scaling}
    cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, max_position_embeddings=128, **rope)
    hf = LlamaRotaryEmbedding(cfg)
    ours = RotaryEmbedding(32, theta=10000.0, scaling=scaling)
    np.testing.assert_allclose(ours.inv_freq.numpy(), hf.inv_freq.numpy(), rtol=2e-7)
    x = torch.zeros(1, 40, 32)
    hc, hs = hf(x, torch.arange(10, 50)[None])
    cos, sin = ours(10, 40)
    assert cos.dtype == np.float32
    np.testing.assert_allclose(cos.numpy(), hc[0].numpy(), atol=2e-6)
    np.testing.assert_allclose(sin.numpy(), hs[0].numpy(), atol=2e-6)


def test_inv_frequencies_and_llama3_scaling():
    D, theta = 32, 10000.0
    plain = inv_frequencies(np, D, theta)
    assert plain.dtype == np.float32 and plain.shape == (D // 2,)
    np.testing.assert_allclose(plain, theta ** (-np.arange(0, D, 2) / D), rtol=1e-6)
    scaled = inv_frequencies(np, D, theta, LLAMA3)
    wavelen = 2 * math.pi / plain.astype(np.float64)
    L = LLAMA3["original_max_position_embeddings"]
    short, long_ = wavelen < L / LLAMA3["high_freq_factor"], wavelen > L / LLAMA3["low_freq_factor"]
    assert short.any() and long_.any() and (~short & ~long_).any()      # all three regimes occur
    np.testing.assert_array_equal(scaled[short], plain[short])          # short wavelengths kept
    np.testing.assert_allclose(scaled[long_], plain[long_] / LLAMA3["factor"], rtol=1e-6)   # long ones stretched
    mid = ~short & ~long_
    assert ((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / LLAMA3["factor"])).all()
    assert inv_frequencies(np, D, theta, {"rope_type": "default"}).tolist() == plain.tolist()


def test_tables_at_an_offset_are_a_slice():
    """The KV cache's positions: tables of start .. start + T - 1 are rows of the tables from 0."""
    inv = inv_frequencies(np, 8, 10000.0)
    full_cos, full_sin = rope_tables(np, inv, 0, 20, np.float32)
    cos, sin = rope_tables(np, inv, 13, 7, np.float32)
    np.testing.assert_array_equal(cos, full_cos[13:])
    np.testing.assert_array_equal(sin, full_sin[13:])
    np.testing.assert_array_equal(full_cos[0], np.ones(8, np.float32))     # position 0: no rotation
    np.testing.assert_array_equal(full_sin[0], np.zeros(8, np.float32))


def test_dtype_and_empty(device):
    for dtype in (np.float16, np.float32, np.float64):
        cos, sin = RotaryEmbedding(4, device=device)(0, 3, dtype=dtype)
        assert cos.device == sin.device == Tensor(0.0, device=device).device and cos.dtype == dtype
        y = F.rotary_embedding(Tensor(np.ones((2, 3, 4), dtype=dtype), device=device), cos, sin)
        assert y.dtype == dtype
    x = leaf(np.zeros((2, 0, 4)), device)                 # no positions
    cos, sin = RotaryEmbedding(4, device=device)(0, 0, dtype=np.float64)
    y = F.rotary_embedding(x, cos, sin)
    y.sum().backward()
    assert y.shape == (2, 0, 4) and x.grad.shape == (2, 0, 4)


def test_is_one_graph_node_and_tables_get_no_gradient():
    x = leaf(np.ones((1, 2, 4)))
    cos, sin = tables(2, 4)
    y = F.rotary_embedding(x, Tensor(cos), Tensor(sin))
    assert y.grad_fn.name == "RoPE" and len(y.grad_fn.inputs) == 1


def test_bad_input():
    x = Tensor(np.zeros((2, 3, 4)))
    cos, sin = tables(3, 4)
    with pytest.raises(ValueError, match="last dim of input must be even"):
        F.rotary_embedding(Tensor(np.zeros((3, 5))), cos, sin)
    with pytest.raises(ValueError, match=r"cos of shape \(3, 6\) does not broadcast"):
        F.rotary_embedding(x, np.zeros((3, 6)), sin)
    with pytest.raises(ValueError, match=r"sin of shape \(4, 4\) does not broadcast"):
        F.rotary_embedding(x, cos, np.zeros((4, 4)))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        F.rotary_embedding(Tensor(np.zeros((3, 4), dtype=np.int64)), cos, sin)
    with pytest.raises(TypeError, match="cos must be floating point"):
        F.rotary_embedding(x, np.zeros((3, 4), dtype=np.int64), sin)
    with pytest.raises(ValueError, match="constant table"):
        F.rotary_embedding(x, Tensor(cos, requires_grad=True), sin)
    with no_grad():                                    # no gradient recorded: a table may require grad
        F.rotary_embedding(x, Tensor(cos, requires_grad=True), sin)
    with pytest.raises(ValueError, match="head_dim must be even"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match="theta must be a finite number > 0"):
        RotaryEmbedding(4, theta=0.0)
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        RotaryEmbedding(4, scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['high_freq_factor'"):
        RotaryEmbedding(4, scaling={"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0})
    with pytest.raises(ValueError, match="high_freq_factor .* must exceed low_freq_factor"):
        RotaryEmbedding(4, scaling={**LLAMA3, "high_freq_factor": 1.0})
    assert RotaryEmbedding(4, scaling={"rope_type": "default"}).scaling is None
    assert list(RotaryEmbedding(4).state_dict()) == []            # inv_freq is not saved
