"""GPT model: config validation, shapes, GPT-2 names and init, devices, the KV cache. (The fused
attention node's own tests are in tests/ops/test_self_attention.py.)"""
import copy
import math

import numpy as np
import pytest

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, Tensor, gradcheck
from tinygrad_llm.generate import generate
from tinygrad_llm.nn import KVCache

TINY = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def tiny(**kw):
    tg.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw}))


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("bad, match", [
    (dict(n_embd=10, n_head=4), "divisible"),
    (dict(n_layer=0), "n_layer"),
    (dict(vocab_size=-1), "vocab_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(norm="batchnorm"), "norm"),
    (dict(activation="swish"), "activation"),
    (dict(pos="rotary"), "pos"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **bad})


def test_config_unknown_key_is_named():
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.from_dict({**TINY, "n_layers": 3})
    assert GPTConfig.from_dict(GPTConfig(**TINY).to_dict()) == GPTConfig(**TINY)


# ---------------------------------------------------------------- structure

def test_gpt2_parameter_names_and_shapes():
    m = tiny()
    names = dict(m.named_parameters())
    C, V, T = 8, 11, 8
    expect = {
        "transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C),
        "transformer.h.0.ln_1.weight": (C,), "transformer.h.0.ln_1.bias": (C,),
        "transformer.h.0.attn.c_attn.weight": (3 * C, C), "transformer.h.0.attn.c_attn.bias": (3 * C,),
        "transformer.h.0.attn.c_proj.weight": (C, C), "transformer.h.1.ln_2.weight": (C,),
        "transformer.h.1.mlp.c_fc.weight": (4 * C, C), "transformer.h.1.mlp.c_proj.weight": (C, 4 * C),
        "transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,),
    }
    for k, shape in expect.items():
        assert names[k].shape == shape, k
    # tied: lm_head.weight is wte.weight, listed once among parameters, present in state_dict
    assert m.lm_head.weight is m.transformer.wte.weight
    assert "lm_head.weight" in m.state_dict()
    assert m.num_params() == sum(p.size for p in names.values())


def test_untied_and_options_change_parameters():
    assert tiny(tie_weights=False).lm_head.weight is not tiny(tie_weights=False).transformer.wte.weight
    m = tiny(pos="sinusoidal", norm="rmsnorm", bias=False)
    names = dict(m.named_parameters())
    assert "transformer.wpe.weight" not in names
    assert not any(k.endswith(".bias") for k in names)
    assert "transformer.h.0.ln_1.weight" in names


def test_gpt2_init_statistics():
    tg.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=4, n_head=4, n_embd=64))
    p = dict(m.named_parameters())
    assert abs(p["transformer.wte.weight"].numpy().std() - 0.02) < 0.002
    assert abs(p["transformer.h.0.mlp.c_fc.weight"].numpy().std() - 0.02) < 0.002
    proj = p["transformer.h.0.mlp.c_proj.weight"].numpy().std()
    assert abs(proj - 0.02 / math.sqrt(2 * 4)) < 0.001
    assert np.all(p["transformer.h.0.attn.c_attn.bias"].numpy() == 0)
    assert np.all(p["transformer.ln_f.weight"].numpy() == 1)


def test_forward_shapes_loss_and_errors():
    m = tiny()
    idx = np.random.default_rng(0).integers(0, 11, (3, 8))
    logits, loss = m(idx)
    assert logits.shape == (3, 8, 11) and loss is None
    logits, loss = m(idx, idx)
    assert loss.shape == () and loss.dtype == np.float32
    # an untrained model predicts roughly uniformly
    assert abs(loss.item() - math.log(11)) < 0.5
    with pytest.raises(ValueError, match="block_size 8"):
        m(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        m(np.zeros(5, dtype=np.int64))
    with pytest.raises(TypeError, match="integer"):
        m(np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="targets"):
        m(idx, idx[:, :4])


def test_loss_matches_numpy_cross_entropy():
    m = tiny()
    idx = np.random.default_rng(1).integers(0, 11, (2, 8))
    tgt = np.random.default_rng(2).integers(0, 11, (2, 8))
    logits, loss = m(idx, tgt)
    z = logits.numpy().astype(np.float64).reshape(-1, 11)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    ref = np.mean(lse - z[np.arange(16), tgt.reshape(-1)])
    assert abs(loss.item() - ref) < 1e-5


@pytest.mark.parametrize("kw", [{}, dict(prenorm=False), dict(norm="rmsnorm"), dict(activation="relu"),
                                dict(pos="sinusoidal"), dict(tie_weights=False, bias=False)])
def test_every_parameter_gets_a_gradient(kw):
    m = tiny(**kw)
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    _, loss = m(idx, idx)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert np.isfinite(p.grad).all(), name
    assert np.abs(m.transformer.h[0].attn.c_attn.weight.grad).sum() > 0


def test_whole_model_gradients_match_finite_differences_float64():
    """Backprop through the whole GPT against central differences on sampled weights."""
    m = tiny(n_layer=1)
    m.to(np.float64)
    idx = np.random.default_rng(0).integers(0, 11, (1, 5))
    _, loss = m(idx, idx)
    loss.backward()
    params = dict(m.named_parameters())
    rs = np.random.default_rng(0)
    for name in ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.bias",
                 "transformer.wpe.weight", "transformer.wte.weight", "transformer.ln_f.bias"]:
        flat, g = params[name].data.reshape(-1), params[name].grad.reshape(-1)
        for e in rs.choice(flat.size, 4, replace=False):
            old = flat[e]
            flat[e] = old + 1e-6
            plus = m(idx, idx)[1].item()
            flat[e] = old - 1e-6
            minus = m(idx, idx)[1].item()
            flat[e] = old
            assert abs((plus - minus) / 2e-6 - g[e]) < 1e-7, (name, e)


# ---------------------------------------------------------------- the KV cache with gradients

def _grads(m):
    return {n: p.grad.copy() for n, p in m.named_parameters()}


@pytest.mark.parametrize("kw", [{}, dict(prenorm=False, pos="sinusoidal")])
def test_cached_forward_from_empty_gives_the_uncached_gradients(kw):
    """An empty cache changes nothing: the same loss and the same gradient for every weight
    (c_attn's key and value rows included, which a detached cache would miss)."""
    m = tiny(**kw)
    m.to(np.float64)
    idx = np.random.default_rng(3).integers(0, 11, (2, 6))
    _, plain = m(idx, idx)
    plain.backward()
    want = _grads(m)
    m.zero_grad()
    _, cached = m(idx, idx, cache=KVCache(m.config, 2, dtype=np.float64))
    cached.backward()
    np.testing.assert_allclose(cached.item(), plain.item(), rtol=1e-12)
    for name, g in _grads(m).items():
        np.testing.assert_allclose(g, want[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_cached_forward_gradients_match_finite_differences_with_the_prefix_held():
    """After a cached prefix, the continuation's loss is differentiated through the new
    positions (their queries, keys and values); the cached keys and values are constants."""
    m = tiny(n_layer=2)
    m.to(np.float64)
    ids = np.random.default_rng(4).integers(0, 11, (1, 7))
    prefix = KVCache(m.config, 1, dtype=np.float64)
    with tg.no_grad():
        m(ids[:, :4], cache=prefix)

    def loss():
        return m(ids[:, 4:], ids[:, 4:], cache=copy.deepcopy(prefix))[1]

    loss().backward()
    C = m.config.n_embd
    rs = np.random.default_rng(0)
    for layer in range(2):
        w = m.transformer.h[layer].attn.c_attn.weight
        flat, g = w.data.reshape(-1), w.grad.reshape(-1)
        for part in range(3):                       # rows of q, of k and of v
            for e in rs.choice(np.arange(part * C * C, (part + 1) * C * C), 3, replace=False):
                old = flat[e]
                flat[e] = old + 1e-6
                plus = loss().item()
                flat[e] = old - 1e-6
                minus = loss().item()
                flat[e] = old
                assert abs((plus - minus) / 2e-6 - g[e]) < 1e-7, (layer, part, e)


def test_two_cached_chunks_backpropagate_together():
    """The second chunk's writes into the cache leave the first chunk's graph valid."""
    m = tiny()
    ids = np.random.default_rng(5).integers(0, 11, (2, 8))
    cache = KVCache(m.config, 2)
    _, first = m(ids[:, :5], ids[:, :5], cache=cache)
    _, second = m(ids[:, 5:], ids[:, 5:], cache=cache)
    (first + second).backward()
    g = m.transformer.h[0].attn.c_attn.weight.grad
    assert cache.length == 8 and np.isfinite(g).all() and np.abs(g).sum() > 0


def test_kv_cache_rejects_what_does_not_fit():
    m = tiny()
    cache = KVCache(m.config, 1)
    k = Tensor(np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"k has shape \(1, 2, 3, 4\), dtype float64"):
        cache.update(0, k.double(), k)
    with pytest.raises(ValueError, match=r"\(B, H, positions, hd\) = \(1, 2, 8, 4\)"):
        cache.update(0, Tensor(np.zeros((1, 3, 3, 4), np.float32)), k)
    cache.length = 6
    with pytest.raises(ValueError, match="3 new positions .* after 6 do not fit the cache's 8"):
        cache.update(0, k, k)


def test_flops_and_mfu():
    m = tiny()
    n = m.num_params(non_embedding=True)
    assert m.flops_per_token(8) == 6 * n + 12 * 2 * 8 * 8
    mfu = m.estimate_mfu(tokens_per_iter=100, dt=1.0, peak_flops=1e9)
    assert mfu == pytest.approx(m.flops_per_token() * 100 / 1e9)


def test_configure_optimizers_decays_only_matrices():
    m = tiny()
    opt = m.configure_optimizers(weight_decay=0.1, learning_rate=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


# ---------------------------------------------------------------- devices

def test_model_on_gpu_matches_cpu(device):
    if device == "cpu":
        pytest.skip("compares a GPU run with the CPU")
    m = tiny()
    idx = np.random.default_rng(0).integers(0, 11, (2, 8))
    ref = m(idx, idx)[1].item()
    m.to(device)
    assert abs(m(idx, idx)[1].item() - ref) < 1e-5


def test_token_ids_may_be_device_arrays(device):
    """GPT.forward and generate take ids as lists, NumPy arrays, Tensors or arrays of the model's
    device (CuPy on a GPU), with the same results."""
    m = tiny().to(device)
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))
    on_device = tg.Tensor(ids, device=device).data
    ref_logits, ref_loss = m(ids, ids)
    for form in (ids.tolist(), on_device, tg.Tensor(ids, device=device)):
        logits, loss = m(form, form)
        np.testing.assert_array_equal(logits.numpy(), ref_logits.numpy())
        assert loss.item() == ref_loss.item()
    np.testing.assert_array_equal(generate(m, on_device, 4, temperature=0), generate(m, ids, 4, temperature=0))


def test_out_of_range_ids_and_targets_raise_on_every_device(device):
    m = tiny().to(device)
    ids = np.random.default_rng(1).integers(0, 11, (2, 8))
    bad = ids.copy()
    bad[1, 3] = 11
    with pytest.raises(IndexError, match=r"embedding: id 11 is out of range .* of 11 rows"):
        m(bad)
    with pytest.raises(ValueError, match=r"cross_entropy: target 11 is out of range"):
        m(ids, bad)
    with pytest.raises(IndexError, match=r"id 11 is out of range"):   # the bounds a tensor carries are checked too
        m(tg.Tensor(bad, device=device).set_value_bounds(0, 11))
