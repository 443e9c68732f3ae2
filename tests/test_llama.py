"""The Llama model (tinygrad_llm/llama.py) without Hugging Face: its config, its parameter names,
its gradients by finite differences, the KV cache (grouped heads, rotary positions offset by the
cache's length), generation, the attention read-out, and everything else the GPT has: training
and resuming, checkpoints, LoRA, fine-tuning, the training script with --arch llama, the demo.
The comparison with transformers is in test_llama_hf.py."""
import importlib.util

import numpy as np
import pytest
from conftest import REPO, to_np

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig, Llama, LlamaConfig, no_grad
from tinygrad_llm.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_llm.generate import generate
from tinygrad_llm.nn import KVCache, lora

LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


def tiny(**kw):
    fields = dict(vocab_size=37, block_size=24, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, intermediate_size=24)
    return LlamaConfig(**{**fields, **kw})


def model_of(cfg, seed=0, device="cpu", dtype=None):
    tg.manual_seed(seed)
    m = Llama(cfg).to(device)
    return m.to(dtype=dtype) if dtype is not None else m


def ids(shape, vocab=37, seed=1):
    return np.random.default_rng(seed).integers(0, vocab, shape)


# ----------------------------------------------------------------------------- config

def test_config_defaults_and_errors():
    cfg = LlamaConfig(n_embd=576, n_head=9)
    assert cfg.n_kv_head == 9 and cfg.intermediate_size == 1536 and cfg.head_dim == 64   # SmolLM-135M's MLP
    assert LlamaConfig(n_embd=128).intermediate_size == 352
    assert LlamaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"n_kv_head \(3\) must divide n_head \(4\)"):
        LlamaConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="head size n_embd / n_head = 3 must be even"):
        LlamaConfig(n_embd=12, n_head=4)
    with pytest.raises(ValueError, match=r"LlamaConfig: n_embd \(130\) must be divisible by n_head \(4\)"):
        LlamaConfig(n_embd=130, n_head=4)
    with pytest.raises(ValueError, match="LlamaConfig.n_kv_head must be a positive integer"):
        LlamaConfig(n_kv_head=0)
    with pytest.raises(ValueError, match="LlamaConfig.dropout must be in"):
        LlamaConfig(dropout=1.0)
    with pytest.raises(ValueError, match="LlamaConfig.rope_theta must be a finite number > 0"):
        LlamaConfig(rope_theta=0)
    with pytest.raises(ValueError, match="LlamaConfig.rope_scaling: rope_type 'linear' is not supported"):
        LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0})
    with pytest.raises(ValueError, match="LlamaConfig.bias must be true or false"):
        LlamaConfig(bias="no")
    with pytest.raises(ValueError, match=r"unknown LlamaConfig key\(s\) \['norm'\]"):
        LlamaConfig.from_dict({"norm": "layernorm"})


@pytest.mark.parametrize("cfg", [tiny(), tiny(bias=True), tiny(tie_weights=True, n_kv_head=1), tiny(n_kv_head=4),
                                 GPTConfig(vocab_size=11, n_embd=8, n_head=2, n_layer=2),
                                 GPTConfig(vocab_size=11, n_embd=8, n_head=2, n_layer=1, bias=False, tie_weights=False),
                                 GPTConfig(vocab_size=11, n_embd=8, n_head=2, n_layer=1, norm="rmsnorm",
                                           pos="sinusoidal")], ids=lambda c: str(c)[:60])
def test_config_counts_its_models_parameters(cfg):
    model = (Llama if isinstance(cfg, LlamaConfig) else GPT)(cfg)
    assert cfg.num_params() == model.num_params()


def test_parameter_names_are_hugging_faces():
    m = Llama(tiny(n_layer=1, tie_weights=True))
    layer = "model.layers.0."
    assert list(m.state_dict()) == [
        "model.embed_tokens.weight", layer + "input_layernorm.weight", layer + "self_attn.q_proj.weight",
        layer + "self_attn.k_proj.weight", layer + "self_attn.v_proj.weight", layer + "self_attn.o_proj.weight",
        layer + "post_attention_layernorm.weight", layer + "mlp.gate_proj.weight", layer + "mlp.up_proj.weight",
        layer + "mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]
    assert m.lm_head.weight is m.model.embed_tokens.weight
    assert m.model.layers[0].self_attn.k_proj.weight.shape == (8, 16)          # 2 key/value heads of 4
    assert m.model.layers[0].self_attn.q_proj.bias is None


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("cfg", [tiny(), tiny(n_kv_head=1, tie_weights=True, rope_scaling=LLAMA3, bias=True)],
                         ids=["gqa", "mqa-tied-scaled-bias"])
def test_every_parameter_gradient_against_finite_differences(tier, cfg):
    """float64: the gradient of the loss at two entries of every parameter, against central
    differences (the rotary, SwiGLU and grouped-attention backwards composed in a model)."""
    m = model_of(cfg, dtype=np.float64)
    x, y = ids((2, 9)), ids((2, 9), seed=2)
    _, loss = m(x, y)
    loss.backward()
    rs = np.random.default_rng(3)
    for name, p in m.named_parameters():
        for i in rs.integers(0, p.size, 2):
            at = np.unravel_index(i, p.shape)
            old = p.data[at]
            with no_grad():
                p.data[at] = old + 1e-6
                up = m(x, y)[1].item()
                p.data[at] = old - 1e-6
                down = m(x, y)[1].item()
                p.data[at] = old
            numeric = (up - down) / 2e-6
            assert abs(p.grad[at] - numeric) <= 1e-6 + 1e-5 * abs(numeric), (name, at, p.grad[at], numeric)


# ----------------------------------------------------------------------------- cache and generation

def test_cache_gives_the_logits_of_the_whole_sequence(device):
    """Rotary positions continue from the cache's length; the cache holds n_kv_head heads."""
    m = model_of(tiny(rope_scaling=LLAMA3), device=device, dtype=np.float64).eval()
    x = ids((2, 11))
    with no_grad():
        whole = to_np(m(x)[0])
        cache = KVCache(m.config, 2, device, m.dtype)
        assert cache.k[0].shape == (2, 2, 24, 4)
        parts = [to_np(m(x[:, :6], cache=cache)[0])]
        parts += [to_np(m(x[:, t:t + 1], cache=cache)[0]) for t in range(6, 11)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, atol=1e-11)


def test_generation_with_and_without_cache_agree_past_the_context():
    """Greedy generation through the cache equals recomputing the context each token, also once
    the context is cropped (the cache is refilled at the new positions)."""
    m = model_of(tiny(block_size=8))
    prompt = ids((2, 5))
    cached = generate(m, prompt, 10, temperature=0)
    plain = generate(m, prompt, 10, temperature=0, use_cache=False)
    assert cached.shape == (2, 15)
    np.testing.assert_array_equal(cached, plain)


def test_attention_read_out_per_query_head():
    m = model_of(tiny()).eval()
    x = ids((1, 7))
    with no_grad():
        logits, _, att = m(x, return_attention=True)
        plain, _ = m(x)
    np.testing.assert_array_equal(logits.numpy(), plain.numpy())
    assert len(att) == 2 and att[0].shape == (1, 4, 7, 7)                    # the 4 query heads
    a = att[1].numpy()
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-6)
    assert (a[..., np.triu_indices(7, 1)[0], np.triu_indices(7, 1)[1]] == 0).all()


# ----------------------------------------------------------------------------- what the GPT has

def test_trains_saves_and_resumes(tmp_path, fox_data):
    """The GPT's training loop on a Llama: the loss falls, the checkpoint records the
    architecture, and loading it gives a Llama with the same outputs."""
    from tinygrad_llm.train import TrainConfig, train
    cfg = LlamaConfig(vocab_size=fox_data.vocab_size, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)
    model = model_of(cfg)
    tcfg = TrainConfig(batch_size=8, max_iters=30, learning_rate=1e-2, eval_interval=30, eval_iters=2,
                       log_interval=100, warmup_iters=0)
    summary = train(model, fox_data, tcfg, tmp_path / "run", tokenizer=fox_data.tokenizer, log=lambda *a: None)
    first, last = summary["history"][0], summary["history"][-1]
    assert last["train_loss"] < first["train_loss"] - 0.5
    ck = load_checkpoint(tmp_path / "run" / "latest")
    assert type(ck.model) is Llama and ck.config == cfg and ck.meta["arch"] == "llama"
    x = ids((1, 16), vocab=cfg.vocab_size)
    with no_grad():
        np.testing.assert_array_equal(ck.model.eval()(x)[0].numpy(), model.eval()(x)[0].numpy())
    with pytest.raises(Exception, match="was saved for Llama config"):
        load_checkpoint(tmp_path / "run" / "latest", model=Llama(tiny(vocab_size=cfg.vocab_size)))


def test_tied_checkpoint_stores_the_embedding_once(tmp_path):
    m = model_of(tiny(tie_weights=True))
    save_checkpoint(tmp_path, "latest", m)
    back = load_checkpoint(tmp_path / "latest").model
    assert back.lm_head.weight is back.model.embed_tokens.weight
    np.testing.assert_array_equal(back.lm_head.weight.numpy(), m.lm_head.weight.numpy())


def test_lora_adapts_every_projection_and_merges():
    m = model_of(tiny())
    names = lora.apply_lora(m, r=2)
    assert len(names) == 2 * 7 and "model.layers.1.mlp.down_proj" in names
    with no_grad():
        for layer in lora.lora_layers(m).values():
            layer.lora_B.weight.data[...] = np.random.default_rng(0).standard_normal(layer.lora_B.weight.shape)
    plain = Llama(m.config)
    plain.load_state_dict(lora.merged_state_dict(m))
    x = ids((1, 6))
    with no_grad():
        np.testing.assert_allclose(plain.eval()(x)[0].numpy(), m.eval()(x)[0].numpy(), atol=1e-5)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_script_with_arch_llama(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYGRAD_LLM_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "fox.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    train = _script("train_shakespeare")
    out = tmp_path / "run"
    args = ["--arch", "llama", "--data", data, "--out", out, "--max_iters", "4", "--n_layer", "1", "--n_head", "2",
            "--n_kv_head", "1", "--n_embd", "16", "--block_size", "16", "--batch_size", "4", "--eval_interval", "4",
            "--eval_iters", "1", "--sample-tokens", "5"]
    assert train.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    assert "model: Llama, 1 layers, 2 heads (1 key/value)" in printed and "--- sample ---" in printed
    ck = load_checkpoint(out / "latest")
    assert type(ck.model) is Llama and ck.config.n_kv_head == 1
    with pytest.raises(SystemExit):          # a resumed run keeps its architecture
        train.main([str(a) for a in ["--arch", "gpt", "--out", out, "--resume", "--max_iters", "8"]])
    assert "--arch gpt differs from the checkpoint's architecture (llama)" in capsys.readouterr().err
    # without --arch, --resume takes the run's: its Llama flags are known (the same value is accepted,
    # another is refused as a change of model), and --help lists the Llama's fields
    assert train.main([str(a) for a in ["--out", out, "--resume", "--n_kv_head", "1", "--max_iters", "6",
                                        "--sample-tokens", "0"]]) == 0
    assert load_checkpoint(out / "latest").trainer_state["iter"] == 6
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train.main([str(a) for a in ["--out", out, "--resume", "--n_kv_head", "2", "--max_iters", "8"]])
    assert "--n_kv_head 2 differs from the checkpoint's n_kv_head=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main([str(a) for a in ["--out", out, "--resume", "--help"]])
    assert "LlamaConfig" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(["--arch", "llama", "--norm", "layernorm", "--out", str(tmp_path / "other")])
    assert "unknown option --norm" in capsys.readouterr().err


def test_sft_and_dpo_with_lora_on_a_llama_checkpoint(tmp_path, capsys):
    """examples/finetune_instructions.py on a Llama: LoRA on its seven projections by default,
    and the result samples with examples/sample.py; then examples/dpo.py on that."""
    from finetune_data import pairs, records, template_tokenizer, words
    import json
    tok = template_tokenizer(eos=False)
    save_checkpoint(tmp_path / "base", "latest", model_of(LlamaConfig(
        vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=16)), tokenizer=tok)
    (tmp_path / "sft.json").write_text(json.dumps(records(words()[:8])))
    out = tmp_path / "sft"
    code = _script("finetune_instructions").main([str(a) for a in [
        "--ckpt", tmp_path / "base", "--data", tmp_path / "sft.json", "--out", out, "--lora-rank", "2",
        "--epochs", "1", "--batch-size", "4", "--log-interval", "0", "--max-new-tokens", "4", "--show", "1"]])
    printed = capsys.readouterr().out
    assert code == 0 and "LoRA r=2, alpha=4 on 7 layers" in printed
    ck = load_checkpoint(out / "latest")
    assert type(ck.model) is Llama and ck.config.vocab_size == tok.vocab_size + 1      # <|endoftext|> added
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["target_modules"] == \
        list(Llama.lora_targets)
    assert _script("sample").main([str(a) for a in ["--ckpt", out, "--instruction", "Say it.",
                                                    "--max-new-tokens", "3", "--seed", "0"]]) == 0
    (tmp_path / "dpo.jsonl").write_text("\n".join(json.dumps(r) for r in pairs(words()[:8])))
    code = _script("dpo").main([str(a) for a in [
        "--ckpt", out, "--data", tmp_path / "dpo.jsonl", "--out", tmp_path / "dpo", "--lora-rank", "2",
        "--epochs", "1", "--batch-size", "4", "--log-interval", "0", "--max-new-tokens", "4", "--show", "1"]])
    printed = capsys.readouterr().out
    assert code == 0 and "margin" in printed
    ck = load_checkpoint(tmp_path / "dpo" / "latest")
    assert type(ck.model) is Llama and ck.train_config["finetune"] == "dpo"


def test_demo_describes_and_looks_inside_a_llama():
    from finetune_data import template_tokenizer
    demo = _script("demo")
    tok = template_tokenizer(eos=True)
    m = model_of(LlamaConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_kv_head=2,
                             n_embd=16))
    d = demo.Demo(m, tok, {"source": "test"})
    a = d.analyse("the cat")
    assert a.attention.shape == (2, 4, len(a.ids), len(a.ids))
    text = d.describe()
    assert "**LlamaConfig**" in text and "| n_kv_head | 2 |" in text and "float32" in text
