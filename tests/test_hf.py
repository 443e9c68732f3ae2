"""Hugging Face GPT-2 interop: ours vs transformers' GPT2LMHeadModel on the same weights.

A small random GPT-2 (2 layers, 4 heads, width 64, vocabulary 300, context 32) is made by
transformers and saved with ``save_pretrained``; ours loads it and must give the same
logits, loss and gradient of every parameter (float32 and float64). Ours saved with
``save_gpt2`` must load in transformers with the same logits. Then the tokenizer files and
the error cases. Run with ``-s`` to see the measured worst errors (docs/verification.md).
"""
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tinygrad_llm as tg  # noqa: E402
from conftest import write_tiny_tokenizer  # noqa: E402
from tinygrad_llm import manual_seed, no_grad  # noqa: E402
from tinygrad_llm.backend import canonical_device  # noqa: E402
from tinygrad_llm.hf import (CONV1D_WEIGHTS, GPT2FormatError, load_gpt2,  # noqa: E402
                             load_gpt2_tokenizer, save_gpt2)
from tinygrad_llm.model import GPT, GPTConfig  # noqa: E402
from tinygrad_llm.safetensors import load_file, save_file  # noqa: E402

SMALL = dict(vocab_size=300, n_positions=32, n_embd=64, n_layer=2, n_head=4)
ATTN = dict(attn_implementation="eager")   # no SDPA: the plain softmax(q k^T / sqrt(d)) v path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hf_config(**kw):
    return transformers.GPT2Config(**{**SMALL, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                                      "bos_token_id": None, "eos_token_id": None, **ATTN, **kw})


def make_hf_model(seed=0, **kw):
    """A seeded random GPT2LMHeadModel; every parameter (biases and LayerNorm weights too)
    is perturbed so that a mixed-up mapping cannot go unnoticed."""
    torch.manual_seed(seed)
    m = transformers.GPT2LMHeadModel(hf_config(**kw)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """(folder written by save_pretrained, the torch model)."""
    d = tmp_path_factory.mktemp("hf_gpt2")
    m = make_hf_model()
    m.save_pretrained(d)
    return d, m


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, SMALL["vocab_size"], size=(4, 32))


def copy_ckpt(src, dst, config=None):
    """A copy of checkpoint folder ``src`` in ``dst`` (config.json edited by ``config``)."""
    dst.mkdir(exist_ok=True)
    shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    if config:
        cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def hf_logits(m, idx):
    with torch.no_grad():
        return m(torch.from_numpy(idx)).logits.double().numpy()


def ours_logits(model, idx):
    with no_grad():
        return model(idx)[0].numpy().astype(np.float64)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---------------------------------------------------------------------------- load: forward, loss, grads
def test_load_matches_transformers_logits_and_loss(hf_dir, tokens):
    d, m = hf_dir
    model = load_gpt2(d)
    assert model.config == GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=4, n_embd=64,
                                     dropout=0.0, tie_weights=True)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert not model.training
    err = np.max(np.abs(ours_logits(model, tokens) - hf_logits(m, tokens)))
    print(f"\n[hf] float32 logits, max abs error: {err:.2e}")
    assert err < 1e-5

    # transformers shifts `labels` inside: its loss on idx is ours on idx[:, :-1] -> idx[:, 1:]
    with torch.no_grad():
        t_loss = m(torch.from_numpy(tokens), labels=torch.from_numpy(tokens)).loss.item()
    with no_grad():
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
    print(f"[hf] float32 loss {loss.item():.6f}, abs error: {abs(loss.item() - t_loss):.2e}")
    assert abs(loss.item() - t_loss) < 1e-5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_match_transformers(hf_dir, tokens, dtype):
    d, _ = hf_dir
    m = transformers.GPT2LMHeadModel.from_pretrained(d, **ATTN)
    model = load_gpt2(d)
    if dtype == "float64":
        m, model = m.double(), model.to(np.float64)
    # (transformers' own `labels` loss casts logits to float32, so compute it here)
    t_logits = m(torch.from_numpy(tokens)).logits
    t_loss = torch.nn.functional.cross_entropy(t_logits[:, :-1].flatten(0, 1), torch.from_numpy(tokens[:, 1:]).flatten())
    t_loss.backward()
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    assert loss.dtype == np.dtype(dtype)
    tol_loss, tol_grad = (1e-5, 1e-4) if dtype == "float32" else (1e-12, 1e-10)
    assert abs(loss.item() - t_loss.item()) < tol_loss

    theirs = dict(m.named_parameters())                 # tied lm_head appears once, as wte
    ours = dict(model.named_parameters())
    assert set(ours) == set(theirs)
    worst = (0.0, "")
    for name, p in ours.items():
        g = theirs[name].grad.numpy()
        if name.endswith(CONV1D_WEIGHTS):
            g = g.T                                     # Conv1D (in, out) -> Linear (out, in)
        assert p.grad is not None and p.grad.shape == g.shape, name
        err = rel_err(p.grad, g)
        assert err < tol_grad, f"{name}: relative gradient error {err:.2e}"
        worst = max(worst, (err, name))
    print(f"\n[hf] {dtype} loss abs error {abs(loss.item() - t_loss.item()):.2e}; "
          f"worst gradient relative error {worst[0]:.2e} ({worst[1]})")


def test_load_on_device(hf_dir, tokens, device):
    # the same weights on every device (GPU: each tensor is copied and transposed there)
    d, m = hf_dir
    model = load_gpt2(d, device=device)
    assert model.transformer.h[0].attn.c_attn.weight.device == model.device == canonical_device(device)
    err = np.max(np.abs(ours_logits(model, tokens) - hf_logits(m, tokens)))
    assert err < 1e-5


def test_tied_wte_gradient_is_the_sum_of_both_uses(hf_dir, tmp_path, tokens):
    # the same weights untied: wte.grad (embedding use) + lm_head.grad (output use) = the tied grad
    d, _ = hf_dir
    u = copy_ckpt(d, tmp_path / "untied", {"tie_word_embeddings": False})
    _rewrite(u, lambda t: t.update({"lm_head.weight": t["transformer.wte.weight"].copy()}))
    grads = []
    for path in (d, u):
        model = load_gpt2(path).to(np.float64)
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        grads.append((model.transformer.wte.weight.grad, model.lm_head.weight.grad))
    (tied, _), (emb, out) = grads
    np.testing.assert_allclose(tied, emb + out, rtol=1e-12, atol=1e-15)
    assert np.abs(emb).max() > 0 and np.abs(out).max() > 0


def test_hub_layout_without_prefix_with_buffers_and_lm_head(hf_dir, tmp_path, tokens):
    # the hub's gpt2 file: keys without 'transformer.', attn.bias/masked_bias buffers, maybe lm_head
    d, m = hf_dir
    src = load_file(d / "model.safetensors", mmap=False)
    hub = {k.removeprefix("transformer."): v for k, v in src.items()}
    for i in range(SMALL["n_layer"]):
        hub[f"h.{i}.attn.bias"] = np.tril(np.ones((32, 32), np.float32))[None, None]
        hub[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    hub["lm_head.weight"] = hub["wte.weight"].copy()
    out = copy_ckpt(d, tmp_path / "hub")
    save_file(hub, out / "model.safetensors", metadata={"format": "pt"})
    a, b = ours_logits(load_gpt2(out), tokens), ours_logits(load_gpt2(d), tokens)
    np.testing.assert_array_equal(a, b)


def test_float16_file_is_cast_to_float32(hf_dir, tmp_path, tokens):
    d, m = hf_dir
    half = {k: v.astype(np.float16) for k, v in load_file(d / "model.safetensors", mmap=False).items()}
    out = copy_ckpt(d, tmp_path / "half")
    save_file(half, out / "model.safetensors", metadata={"format": "pt"})
    model = load_gpt2(out)
    assert model.transformer.wte.weight.dtype == np.float32
    np.testing.assert_array_equal(model.transformer.wte.weight.numpy(),
                                  half["transformer.wte.weight"].astype(np.float32))


# ---------------------------------------------------------------------------- save: transformers reads ours
def perturbed_model(**kw):
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=4, n_embd=64, **kw))
    rng = np.random.default_rng(1)
    with no_grad():
        for p in model.parameters():
            p.add_(rng.normal(0.0, 0.05, p.shape).astype(np.float32))
    return model.eval()


@pytest.mark.parametrize("kw", [{}, {"activation": "relu"}, {"tie_weights": False}],
                         ids=["gpt2", "relu", "untied"])
def test_save_then_transformers_loads_same_logits(tmp_path, tokens, kw):
    model = perturbed_model(**kw)
    tg.save_gpt2(model, tmp_path)                              # the package's top-level names
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    m = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, **ATTN).eval()
    assert m.config.activation_function == ("relu" if kw.get("activation") == "relu" else "gelu_new")
    tied = m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    assert tied == kw.get("tie_weights", True)
    err = np.max(np.abs(ours_logits(model, tokens) - hf_logits(m, tokens)))
    print(f"\n[hf] save_gpt2 {kw or 'gpt2'} -> transformers, float32 logits max abs error: {err:.2e}")
    assert err < 1e-5

    back = tg.load_gpt2(tmp_path)                              # and back into ours, bit for bit
    assert back.config == model.config
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.numpy(), p2.numpy())


def test_saved_file_has_gpt2_keys_and_conv1d_layout(tmp_path):
    model = perturbed_model()
    save_gpt2(model, tmp_path)
    t = load_file(tmp_path / "model.safetensors", mmap=False)
    assert "lm_head.weight" not in t                           # tied: stored once, as wte
    assert all(k.startswith("transformer.") for k in t)
    np.testing.assert_array_equal(t["transformer.h.0.mlp.c_fc.weight"],
                                  model.transformer.h[0].mlp.c_fc.weight.numpy().T)
    assert t["transformer.h.0.mlp.c_fc.weight"].shape == (64, 256)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kw,named", [({"norm": "rmsnorm"}, "norm='rmsnorm'"), ({"prenorm": False}, "prenorm"),
                                      ({"pos": "sinusoidal"}, "pos='sinusoidal'"), ({"bias": False}, "bias")])
def test_save_rejects_options_gpt2_lacks(tmp_path, kw, named):
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, **kw))
    with pytest.raises(GPT2FormatError, match=named):
        save_gpt2(model, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()


# ---------------------------------------------------------------------------- tokenizer
def test_tokenizer_matches_transformers(tmp_path):
    write_tiny_tokenizer(tmp_path)
    tok = load_gpt2_tokenizer(tmp_path)
    ref = transformers.GPT2Tokenizer.from_pretrained(tmp_path)
    for text in ["hello world", "Hello, world! héllo  wor 123", "hellohello\n\nworld", ""]:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("hello world") == [262, 261, 108, 100]
    assert tok.encode("a<|endoftext|>b", allowed_special="all") == [97, 263, 98]


def test_tokenizer_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_gpt2_tokenizer(tmp_path / "nope")
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        load_gpt2_tokenizer(tmp_path)


# ---------------------------------------------------------------------------- errors
def test_missing_folder_and_files(hf_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_gpt2(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path)
    shutil.copy(hf_dir[0] / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2(tmp_path)


def test_pytorch_bin_only_explains_conversion(hf_dir, tmp_path):
    shutil.copy(hf_dir[0] / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(GPT2FormatError) as e:
        load_gpt2(tmp_path)
    msg = str(e.value)
    assert "pytorch_model.bin" in msg and "save_pretrained" in msg and "safe_serialization=True" in msg
    assert str(tmp_path) in msg


@pytest.mark.parametrize("key,value", [
    ("n_inner", 128), ("activation_function", "gelu"), ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True), ("add_cross_attention", True), ("layer_norm_epsilon", 1e-6),
    ("scale_attn_weights", False), ("model_type", "gpt_neo"), ("n_ctx", 16), ("n_head", 5),
    ("resid_pdrop", 0.2),
])
def test_unsupported_config_is_named(hf_dir, tmp_path, key, value):
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt", {key: value})
    with pytest.raises(GPT2FormatError, match=key):
        load_gpt2(d)


def test_supported_config_variants(hf_dir, tmp_path, tokens):
    # gelu_pytorch_tanh is the same function as gelu_new; n_inner = 4 * n_embd is the default;
    # differing dropout rates are fine once dropout= chooses ours
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt", {"activation_function": "gelu_pytorch_tanh", "n_inner": 256,
                                                 "n_ctx": 32, "resid_pdrop": 0.1})
    model = load_gpt2(d, dropout=0.05)
    assert model.config.activation == "gelu" and model.config.dropout == 0.05
    np.testing.assert_array_equal(ours_logits(model, tokens), ours_logits(load_gpt2(hf_dir[0]), tokens))


def test_several_problems_named_together(hf_dir, tmp_path):
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt", {"n_inner": 100, "layer_norm_epsilon": 1e-6})
    with pytest.raises(GPT2FormatError, match="(?s)n_inner.*layer_norm_epsilon"):
        load_gpt2(d)


def test_bad_json_config(hf_dir, tmp_path):
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt")
    (d / "config.json").write_text("{not json")
    with pytest.raises(GPT2FormatError, match="not valid JSON"):
        load_gpt2(d)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_safetensors(hf_dir, tmp_path, damage):
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) - 1000], "garbage": b"\xff" * 64 + data[64:],
                   "empty": b""}[damage])
    with pytest.raises(GPT2FormatError, match="model.safetensors"):
        load_gpt2(d)


def _rewrite(d, edit):
    t = load_file(d / "model.safetensors", mmap=False)
    edit(t)
    save_file(t, d / "model.safetensors", metadata={"format": "pt"})


def test_unknown_missing_and_misshaped_tensors(hf_dir, tmp_path):
    d = copy_ckpt(hf_dir[0], tmp_path / "extra")
    _rewrite(d, lambda t: t.update({"transformer.h.0.attn.rotary.weight": np.zeros(4, np.float32)}))
    with pytest.raises(GPT2FormatError, match="unexpected tensor 'transformer.h.0.attn.rotary.weight'"):
        load_gpt2(d)

    d = copy_ckpt(hf_dir[0], tmp_path / "missing")
    _rewrite(d, lambda t: t.pop("transformer.h.1.ln_2.bias"))
    with pytest.raises(GPT2FormatError, match="missing tensors: 'transformer.h.1.ln_2.bias'"):
        load_gpt2(d)

    d = copy_ckpt(hf_dir[0], tmp_path / "shape", {"vocab_size": 301})
    with pytest.raises(GPT2FormatError, match="transformer.wte.weight' has shape"):
        load_gpt2(d)

    d = copy_ckpt(hf_dir[0], tmp_path / "dup")
    _rewrite(d, lambda t: t.update({"wte.weight": t["transformer.wte.weight"]}))
    with pytest.raises(GPT2FormatError, match="same tensor"):
        load_gpt2(d)


def test_tied_config_with_different_lm_head(hf_dir, tmp_path, tokens):
    d = copy_ckpt(hf_dir[0], tmp_path / "ckpt")
    _rewrite(d, lambda t: t.update({"lm_head.weight": t["transformer.wte.weight"] + 1.0}))
    with pytest.raises(GPT2FormatError, match="tie_word_embeddings"):
        load_gpt2(d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    model = load_gpt2(d)                                # untied: lm_head loaded on its own
    assert model.lm_head.weight is not model.transformer.wte.weight
    np.testing.assert_array_equal(model.lm_head.weight.numpy(),
                                  model.transformer.wte.weight.numpy() + np.float32(1.0))


def test_sample_script_hf_greedy_matches_transformers(tmp_path):
    """examples/sample.py --hf: KV-cached greedy decoding gives transformers' greedy tokens."""
    import subprocess
    import sys
    from pathlib import Path
    write_tiny_tokenizer(tmp_path)
    tok = load_gpt2_tokenizer(tmp_path)
    m = make_hf_model(seed=3, vocab_size=tok.vocab_size)
    m.save_pretrained(tmp_path)
    prompt = "hello world"
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        ref = m.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=0)[0, ids.shape[1]:].tolist()
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "examples/sample.py", "--hf", str(tmp_path), "--prompt", prompt,
                        "--max-new-tokens", "12", "--temperature", "0"],
                       cwd=repo, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prompt + tok.decode(ref)), (r.stdout, tok.decode(ref))
