"""LoRA adapters (tinygrad_llm.nn.lora): the adapter path's gradients, merge/unmerge, training
only the adapters, saving and loading (and, when PEFT is installed, PEFT reading ours and
ours reading PEFT's), and the errors."""
import json

import numpy as np
import pytest
from conftest import to_np
from finetune_data import records, template_tokenizer, words

from tinygrad_llm import GPT, GPTConfig, Tensor, gradcheck, manual_seed, no_grad
from tinygrad_llm.finetune import END_OF_TEXT, SFTConfig, encode_records, train_sft
from tinygrad_llm.nn import Linear
from tinygrad_llm.nn import lora
from tinygrad_llm.nn.lora import LoRAError, LoRALinear

CFG = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)


def small_gpt(seed=0, **kw):
    manual_seed(seed)
    return GPT(GPTConfig(**{**CFG, **kw}))


def randomize_adapters(model, seed=1, scale=0.3):
    """B starts at zero (the adapter adds nothing): give it values so the tests see the adapter."""
    rs = np.random.default_rng(seed)
    with no_grad():
        for m in lora.lora_layers(model).values():
            w = m.lora_B.weight
            w.copy_(Tensor((rs.standard_normal(w.shape) * scale).astype(w.dtype), device=w.device))


def logits(model, idx):
    with no_grad():
        return to_np(model(idx)[0])


IDX = np.random.default_rng(0).integers(0, CFG["vocab_size"], (3, 16))


# ---------------------------------------------------------------------------- the layer

def test_adapter_path_gradcheck(device):
    """y = x W^T + b + (alpha/r) x A^T B^T: gradients to x, A and B (float64); W and b frozen."""
    manual_seed(0)
    base = Linear(5, 4, device=device, dtype="float64")
    layer = LoRALinear(base, r=3, lora_alpha=6.0)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    rs = np.random.default_rng(2)
    x = Tensor(rs.standard_normal((2, 3, 5)), requires_grad=True, device=device)
    A = Tensor(rs.standard_normal((3, 5)), requires_grad=True, device=device)
    B = Tensor(rs.standard_normal((4, 3)), requires_grad=True, device=device)

    def adapted(x, a, b):   # the layer's forward with gradcheck's copies of A and B in it
        layer.lora_A._parameters["weight"], layer.lora_B._parameters["weight"] = a, b
        return layer(x)

    gradcheck(adapted, [x, A, B])
    y = adapted(x, A, B)
    want = to_np(x) @ to_np(base.weight).T + to_np(base.bias) + 2.0 * (to_np(x) @ to_np(A).T) @ to_np(B).T
    np.testing.assert_allclose(to_np(y), want, rtol=1e-12)
    y.sum().backward()
    assert base.weight.grad is None and base.bias.grad is None
    assert A.grad is not None and B.grad is not None and x.grad is not None


def test_fresh_adapter_changes_nothing_and_shares_the_base_parameters():
    model = small_gpt()
    before = logits(model, IDX)
    w = model.transformer.h[0].attn.c_attn.weight
    names = lora.apply_lora(model, ["c_attn", "c_fc"], r=4, lora_alpha=8)
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc",
                     "transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_fc"]
    assert model.transformer.h[0].attn.c_attn.weight is w
    np.testing.assert_array_equal(logits(model, IDX), before)        # B = 0: exactly the base model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    a = model.transformer.h[0].attn.c_attn.lora_A.weight
    assert a.shape == (4, 16) and float(np.abs(to_np(a)).max()) <= 1 / 4 and float(np.abs(to_np(a)).max()) > 0
    # the module order (and so the state dict order) is kept
    assert list(model.transformer.h[0].attn._modules) == ["c_attn", "c_proj", "resid_dropout"]


def test_merge_and_unmerge(device):
    model = small_gpt().to(device)
    lora.apply_lora(model, r=4, lora_alpha=8)
    randomize_adapters(model)
    base_w = {n: to_np(m.weight).copy() for n, m in lora.lora_layers(model).items()}
    unmerged = logits(model, IDX)
    assert np.abs(unmerged - logits(small_gpt().to(device), IDX)).max() > 1e-2   # the adapters do something
    lora.merge_lora(model)
    assert all(m.merged for m in lora.lora_layers(model).values())
    merged = logits(model, IDX)
    np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-5)               # float32 noise
    for n, m in lora.lora_layers(model).items():
        np.testing.assert_allclose(to_np(m.weight), base_w[n] + to_np(m.delta_weight()), rtol=1e-6, atol=1e-7)
    lora.merge_lora(model)                                                        # a second merge: no-op
    np.testing.assert_array_equal(logits(model, IDX), merged)
    lora.unmerge_lora(model)
    for n, m in lora.lora_layers(model).items():
        np.testing.assert_allclose(to_np(m.weight), base_w[n], rtol=0, atol=1e-6)
    np.testing.assert_allclose(logits(model, IDX), unmerged, rtol=0, atol=1e-5)


def test_merged_state_dict_and_unload_give_a_plain_model():
    model = small_gpt()
    lora.apply_lora(model, r=2, lora_alpha=4)
    randomize_adapters(model)
    want = logits(model, IDX)
    plain = small_gpt(seed=5)
    plain.load_state_dict(lora.merged_state_dict(model))        # strict: exactly the plain keys
    np.testing.assert_allclose(logits(plain, IDX), want, atol=1e-5)
    assert not any(m.merged for m in lora.lora_layers(model).values())   # the model is left as it was
    lora.unload_lora(model)
    assert not lora.lora_layers(model) and type(model.transformer.h[0].mlp.c_fc) is Linear
    assert set(model.state_dict()) == set(small_gpt().state_dict())
    np.testing.assert_allclose(logits(model, IDX), want, atol=1e-5)


def test_only_adapter_parameters_change_during_lora_training():
    tok = template_tokenizer()
    eos = tok.special_tokens[END_OF_TEXT]
    examples = encode_records(records(words()[:32]), tok, eos)
    model = small_gpt(vocab_size=tok.vocab_size, block_size=32)
    lora.apply_lora(model, r=4, lora_alpha=8)
    before = {k: to_np(v).copy() for k, v in model.state_dict().items()}
    train_sft(model, examples, [], SFTConfig(epochs=1, lr=1e-2, batch_size=16, log_interval=0), eos,
              log=lambda s: None)
    changed = {k for k, v in model.state_dict().items() if not np.array_equal(to_np(v), before[k])}
    adapters = {k for k in before if ".lora_A." in k or ".lora_B." in k}
    assert changed == adapters


# ---------------------------------------------------------------------------- files

def test_save_and_load_onto_a_fresh_base_model(tmp_path):
    model = small_gpt()
    lora.apply_lora(model, ["c_attn", "mlp.c_proj"], r=3, lora_alpha=5.0, lora_dropout=0.1)
    randomize_adapters(model)
    model.eval()
    want = logits(model, IDX)
    path = lora.save_lora(model, tmp_path / "adapter", base_model="some/base")
    cfg = json.loads((path / lora.ADAPTER_CONFIG).read_text())
    assert cfg["r"] == 3 and cfg["lora_alpha"] == 5.0 and cfg["lora_dropout"] == 0.1
    assert cfg["target_modules"] == ["c_attn", "mlp.c_proj"] and cfg["peft_type"] == "LORA"
    from tinygrad_llm.safetensors import load_file
    keys = set(load_file(path / lora.ADAPTER_WEIGHTS))
    assert "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight" in keys and len(keys) == 8
    fresh = small_gpt()                                    # same base weights (same seed), no adapters
    names = lora.load_lora(fresh, path)
    assert len(names) == 4
    fresh.eval()
    np.testing.assert_array_equal(logits(fresh, IDX), want)
    with pytest.raises(FileExistsError, match="already exists"):
        lora.save_lora(model, path)
    lora.save_lora(model, path, overwrite=True)


def test_load_rejects_an_adapter_for_another_model(tmp_path):
    model = small_gpt()
    lora.apply_lora(model, r=2)
    lora.save_lora(model, tmp_path / "a")
    other = small_gpt(n_embd=32)
    with pytest.raises(LoRAError, match="does not fit this model"):
        lora.load_lora(other, tmp_path / "a")
    assert not lora.lora_layers(other)                       # nothing was changed
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lora.load_lora(small_gpt(), tmp_path / "missing")
    (tmp_path / "a" / lora.ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(LoRAError, match="not valid JSON"):
        lora.load_lora(small_gpt(), tmp_path / "a")


@pytest.mark.parametrize("kwargs, match", [
    (dict(r=0), "rank r must be a positive integer"),
    (dict(r=-2), "rank r must be a positive integer"),
    (dict(r=2.5), "rank r must be a positive integer"),
    (dict(lora_alpha=0), "lora_alpha must be a finite number > 0"),
    (dict(lora_dropout=1.0), r"lora_dropout must be in \[0, 1\)"),
    (dict(target_modules=["c_atn"]), "target 'c_atn' matches no Linear layer"),
    (dict(target_modules=["lm_head"]), "lm_head.weight is tied to"),
    (dict(target_modules=[]), "target_modules must be non-empty"),
])
def test_apply_errors(kwargs, match):
    model = small_gpt()
    with pytest.raises(LoRAError, match=match):
        lora.apply_lora(model, **kwargs)
    assert not lora.lora_layers(model) and all(p.requires_grad for p in model.parameters())


def test_apply_twice_is_an_error_and_an_untied_lm_head_can_be_adapted(tmp_path):
    model = small_gpt()
    lora.apply_lora(model, ["c_fc"])
    with pytest.raises(LoRAError, match="already has a LoRA adapter"):
        lora.apply_lora(model, ["c_fc"])
    lora.apply_lora(model, ["c_attn"])             # a second call adds layers; all adapters stay trainable
    assert all(m.lora_A.weight.requires_grad and m.lora_B.weight.requires_grad
               for m in lora.lora_layers(model).values()) and len(lora.lora_layers(model)) == 4
    lora.save_lora(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / lora.ADAPTER_CONFIG).read_text())["target_modules"] == ["c_fc", "c_attn"]
    lora.apply_lora(model, ["c_proj"], r=2)        # other settings: one file cannot hold both
    with pytest.raises(LoRAError, match="differing settings"):
        lora.save_lora(model, tmp_path / "b")
    untied = small_gpt(tie_weights=False)
    assert lora.apply_lora(untied, ["lm_head"], r=2) == ["lm_head"]


# ---------------------------------------------------------------------------- PEFT interop

def test_peft_reads_ours_and_we_read_peft(tmp_path):
    """Same logits as PEFT on a GPT-2 from transformers, both ways (skipped without peft)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from tinygrad_llm.hf import load_gpt2
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None))
    hf.save_pretrained(tmp_path / "base")
    ours = load_gpt2(tmp_path / "base")
    lora.apply_lora(ours, r=4, lora_alpha=8)
    randomize_adapters(ours)
    lora.save_lora(ours, tmp_path / "ours")
    ref = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base"),
                                         tmp_path / "ours").eval()
    with torch.no_grad():
        theirs = ref(torch.from_numpy(IDX)).logits.numpy()
    np.testing.assert_allclose(logits(ours, IDX), theirs, atol=1e-5)

    cfg = peft.LoraConfig(r=2, lora_alpha=6, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                          init_lora_weights=False)                 # random B: a non-trivial adapter
    pm = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base"), cfg).eval()
    pm.save_pretrained(tmp_path / "theirs")
    with torch.no_grad():
        theirs = pm(torch.from_numpy(IDX)).logits.numpy()
    fresh = load_gpt2(tmp_path / "base")
    lora.load_lora(fresh, tmp_path / "theirs")
    np.testing.assert_allclose(logits(fresh, IDX), theirs, atol=1e-5)
