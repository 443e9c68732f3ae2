"""The attention read-out, ``model(idx, return_attention=True)``: it equals softmax(Q K^T /
sqrt(hd) + causal mask) computed by hand from each layer's own Q and K, the weights are the
ones the layer applies to V, and asking for them changes nothing else."""
import numpy as np
import pytest

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, Tensor, no_grad
from tinygrad_llm.nn import KVCache

CFG = dict(vocab_size=13, block_size=8, n_layer=3, n_head=2, n_embd=8)


def tiny(**kw):
    tg.manual_seed(0)
    m = GPT(GPTConfig(**{**CFG, **kw}))
    m.eval()
    return m


def ids(B=2, T=7, seed=0):
    return np.random.default_rng(seed).integers(0, CFG["vocab_size"], (B, T))


def layer_inputs(model, idx):
    """What each block's attention reads: the residual stream before block i, through the
    model's own modules, then ln_1 for Pre-LN (Post-LN attends over the stream itself)."""
    tr = model.transformer
    T = idx.shape[1]
    x = tr.wte(Tensor(idx)) + tr.wpe(Tensor(np.arange(T)))
    out = []
    for block in tr.h:
        out.append((block.ln_1(x) if model.config.prenorm else x).numpy().astype(np.float64))
        x = block(x)
    return out


def by_hand(model, layer, a):
    """Q and K from c_attn's weights in float64, then the textbook masked softmax."""
    attn = model.transformer.h[layer].attn
    W = attn.c_attn.weight.numpy().astype(np.float64)
    b = 0.0 if attn.c_attn.bias is None else attn.c_attn.bias.numpy().astype(np.float64)
    B, T, C = a.shape
    H, hd = attn.n_head, C // attn.n_head
    qkv = a @ W.T + b                                            # (B, T, 3C): Q | K | V
    Q = qkv[..., :C].reshape(B, T, H, hd).transpose(0, 2, 1, 3)  # (B, H, T, hd)
    K = qkv[..., C:2 * C].reshape(B, T, H, hd).transpose(0, 2, 1, 3)
    S = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(hd)
    S[..., np.triu(np.ones((T, T), bool), k=1)] = -np.inf        # key after query
    P = np.exp(S - S.max(-1, keepdims=True))
    return P / P.sum(-1, keepdims=True), qkv[..., 2 * C:].reshape(B, T, H, hd).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("kw", [{}, {"prenorm": False}, {"norm": "rmsnorm", "bias": False}],
                         ids=["pre-ln", "post-ln", "rmsnorm"])
def test_readout_equals_by_hand_softmax_of_q_k(kw):
    model, idx = tiny(**kw), ids()
    with no_grad():
        _, _, att = model(idx, return_attention=True)
        inputs = layer_inputs(model, idx)
    assert len(att) == CFG["n_layer"]
    for i, a in enumerate(inputs):
        P, _ = by_hand(model, i, a)
        assert att[i].shape == (2, CFG["n_head"], 7, 7) and att[i].dtype == np.float32
        np.testing.assert_allclose(att[i].numpy(), P, rtol=1e-5, atol=1e-6)


def test_rows_sum_to_one_and_future_keys_get_exactly_zero():
    model = tiny()
    with no_grad():
        _, _, att = model(ids(T=8), return_attention=True)
    for w in att:
        w = w.numpy()
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
        assert (w[..., np.triu(np.ones((8, 8), bool), k=1)] == 0).all()
        assert (w[..., np.tril(np.ones((8, 8), bool))] > 0).all()


def test_readout_is_what_the_layer_applies_to_v():
    """P @ V with heads merged, through c_proj, gives the attention module's own output."""
    model, idx = tiny(), ids()
    with no_grad():
        _, _, att = model(idx, return_attention=True)
        a = layer_inputs(model, idx)[1]
        block = model.transformer.h[1]
        expect = block.attn(Tensor(a.astype(np.float32))).numpy()
    _, V = by_hand(model, 1, a)
    y = (att[1].numpy().astype(np.float64) @ V).transpose(0, 2, 1, 3).reshape(a.shape)
    got = y @ block.attn.c_proj.weight.numpy().T + block.attn.c_proj.bias.numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_asking_changes_nothing_else():
    model, idx = tiny(), ids()
    targets = ids(seed=1)
    with no_grad():
        plain = model(idx, targets)
        logits, loss, att = model(idx, targets, return_attention=True)
    assert len(plain) == 2
    assert np.array_equal(plain[0].numpy(), logits.numpy()) and plain[1].item() == loss.item()


def test_readout_with_a_kv_cache_continues_the_full_rows():
    """Cached steps: query rows of the new positions over all keys so far, equal to the
    matching rows of one forward over the whole sequence."""
    model, idx = tiny(), ids(T=8)
    with no_grad():
        _, _, full = model(idx, return_attention=True)
        cache = KVCache(model.config, 2, "cpu", np.float32)
        _, _, first = model(idx[:, :5], cache=cache, return_attention=True)
        _, _, step = model(idx[:, 5:6], cache=cache, return_attention=True)
        _, _, rest = model(idx[:, 6:], cache=cache, return_attention=True)
    for i in range(CFG["n_layer"]):
        assert first[i].shape == (2, 2, 5, 5) and step[i].shape == (2, 2, 1, 6) and rest[i].shape == (2, 2, 2, 8)
        f = full[i].numpy()
        np.testing.assert_allclose(first[i].numpy(), f[:, :, :5, :5], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(step[i].numpy(), f[:, :, 5:6, :6], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rest[i].numpy(), f[:, :, 6:, :], rtol=1e-5, atol=1e-6)


def test_readout_on_device(device):
    model = tiny().to(device)
    with no_grad():
        _, _, att = model(Tensor(ids(), device=device), return_attention=True)
    assert all(w.device == model.device for w in att)
    ref = tiny()
    with no_grad():
        _, _, want = ref(ids(), return_attention=True)
    for w, r in zip(att, want):
        np.testing.assert_allclose(w.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)
