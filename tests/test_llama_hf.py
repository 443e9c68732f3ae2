"""Our Llama against transformers' LlamaForCausalLM (the 'ref' extra; models made randomly here,
nothing downloaded): logits within 1e-5 in float32, every parameter's gradient within 1e-4
relative, for grouped and plain multi-head attention, tied and untied embeddings, with and
without Llama 3's rope scaling; greedy generation through our KV cache equal to
transformers' generate; folders we save (one file or shards) loading in transformers with
the same logits; and every unsupported config key, tokenizer or file layout named in one error.
"""
import json

import numpy as np
import pytest

import tinygrad_llm as tg
from tinygrad_llm import Llama, load_llama, save_llama
from tinygrad_llm.checkpoint import load_for_sampling
from tinygrad_llm.generate import generate
from tinygrad_llm.hf_llama import LlamaFormatError, config_from_llama, load_llama_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 67
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32}


def rope_kwargs(theta, scaling):
    """LlamaConfig's rope arguments: transformers 5's rope_parameters, or 4's rope_theta and rope_scaling."""
    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": theta}}
    return {"rope_theta": theta, "rope_scaling": None if scaling is None else dict(scaling)}


def hf_model(kv_heads=2, tied=False, scaled=False, seed=0, **kw):
    """A random float32 transformers LlamaForCausalLM: 2 layers, 4 heads of 8, rope theta 500
    (head_dim 8 with these wavelengths puts every llama3 regime to use)."""
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None,
                                   pad_token_id=None, **rope_kwargs(500.0, LLAMA3 if scaled else None), **kw)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():                     # norms away from 1 and biases, if any, away from 0
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def ids(shape, seed=1):
    return np.random.default_rng(seed).integers(0, VOCAB, shape)


CASES = [dict(kv_heads=kv, tied=tied, scaled=scaled) for kv in (2, 4) for tied in (False, True)
         for scaled in (False, True)]


def _case_id(c):
    return f"{'gqa' if c['kv_heads'] < 4 else 'mha'}-{'tied' if c['tied'] else 'untied'}-" \
           f"{'llama3' if c['scaled'] else 'plain'}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_logits_and_every_gradient_match_transformers(tmp_path, case):
    theirs = hf_model(**case)
    theirs.save_pretrained(tmp_path)
    ours = load_llama(tmp_path)
    assert ours.config.n_kv_head == case["kv_heads"] and ours.config.tie_weights == case["tied"]
    x, y = ids((2, 13)), ids((2, 13), seed=2)
    logits, loss = ours.train()(x, y)
    t_logits = theirs(torch.tensor(x)).logits
    t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, VOCAB), torch.tensor(y).reshape(-1))
    assert np.abs(logits.numpy() - t_logits.detach().numpy()).max() <= 1e-5
    loss.backward()
    t_loss.backward()
    ours_params = dict(ours.named_parameters())
    theirs_params = dict(theirs.named_parameters())
    assert set(ours_params) == set(theirs_params)
    for name, p in theirs_params.items():
        want = p.grad.numpy()
        got = ours_params[name].grad
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), name


def test_greedy_generation_through_our_cache_equals_transformers_generate(tmp_path):
    theirs = hf_model(kv_heads=2, scaled=True, seed=3)
    theirs.save_pretrained(tmp_path)
    ours = load_llama(tmp_path)
    prompt = ids((2, 6), seed=4)
    want = theirs.generate(torch.tensor(prompt), max_new_tokens=20, do_sample=False, eos_token_id=None,
                           pad_token_id=0).numpy()
    np.testing.assert_array_equal(generate(ours, prompt, 20, temperature=0), want)


@pytest.mark.parametrize("shard", [None, 6000], ids=["one-file", "sharded"])
def test_a_model_we_save_loads_in_transformers_with_the_same_logits(tmp_path, shard):
    tg.manual_seed(5)
    cfg = tg.LlamaConfig(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                         intermediate_size=40, rms_norm_eps=1e-5, rope_theta=500.0, rope_scaling=LLAMA3,
                         tie_weights=True)
    ours = Llama(cfg).eval()
    written = save_llama(ours, tmp_path, max_shard_size=shard)
    assert ("model.safetensors.index.json" in written) == (shard is not None)
    if shard is not None:
        assert len([w for w in written if w.startswith("model-")]) > 1
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).float().eval()
    x = ids((2, 11), seed=6)
    with torch.no_grad():
        want = theirs(torch.tensor(x)).logits.numpy()
    with tg.no_grad():
        got = ours(x)[0].numpy()
    assert np.abs(got - want).max() <= 1e-5
    back = load_llama(tmp_path)                                  # and it loads here again
    assert back.config == cfg
    np.testing.assert_array_equal(back(x)[0].numpy(), got)


def test_sharded_folders_transformers_writes_and_a_resave_leaves_one_model(tmp_path):
    theirs = hf_model(kv_heads=1, seed=7)
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load_llama(tmp_path)
    x = ids((1, 9))
    with torch.no_grad():
        want = theirs(torch.tensor(x)).logits.numpy()
    assert np.abs(ours(x)[0].numpy() - want).max() <= 1e-5
    save_llama(ours, tmp_path)                                   # one file now: the shards are gone
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    np.testing.assert_array_equal(load_llama(tmp_path)(x)[0].numpy(), ours(x)[0].numpy())


# ----------------------------------------------------------------------------- configs of real models

SMOLLM_135M = {  # HuggingFaceTB/SmolLM-135M's config.json
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0,
    "eos_token_id": 0, "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.02,
    "intermediate_size": 1536, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 9,
    "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": True, "torch_dtype": "float32",
    "transformers_version": "4.40.1", "use_cache": True, "vocab_size": 49152}
TINYLLAMA = {  # TinyLlama/TinyLlama-1.1B-Chat-v1.0's config.json
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632,
    "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22,
    "num_key_value_heads": 4, "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.35.0",
    "use_cache": True, "vocab_size": 32000}


def test_configs_of_smollm_and_tinyllama():
    s = config_from_llama(SMOLLM_135M)
    assert (s.n_layer, s.n_head, s.n_kv_head, s.n_embd, s.intermediate_size, s.block_size, s.tie_weights) == \
        (30, 9, 3, 576, 1536, 2048, True)
    assert 134e6 < s.num_params() < 135e6                       # SmolLM-135M's 134.5M parameters
    smollm2 = {**SMOLLM_135M, "rope_interleaved": False, "is_llama_config": True, "head_dim": 64,
               "rope_theta": 100000, "max_position_embeddings": 8192}     # SmolLM2's additions
    assert config_from_llama(smollm2).rope_theta == 100000
    t = config_from_llama(TINYLLAMA)
    assert (t.n_layer, t.n_kv_head, t.tie_weights) == (22, 4, False) and 1.09e9 < t.num_params() < 1.11e9
    v5 = {**SMOLLM_135M, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, **{
        k: v for k, v in LLAMA3.items() if k != "rope_type"}}}            # transformers 5's layout
    del v5["rope_theta"], v5["rope_scaling"]
    c = config_from_llama(v5)
    assert c.rope_theta == 5e5 and c.rope_scaling == LLAMA3


@pytest.mark.parametrize("edit, named", [
    ({"sliding_window": 4096, "partial_rotary_factor": 0.5}, r"unsupported key\(s\) \['partial_rotary_factor', "
                                                              r"'sliding_window'\]"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' .only 'silu'"),
    ({"model_type": "mistral"}, "model_type='mistral'"),
    ({"head_dim": 32}, "head_dim=32 .ours is hidden_size / num_attention_heads = 64"),
    ({"attention_bias": True}, "attention_bias=True and mlp_bias=False differ"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn' is not supported"),
    ({"rope_interleaved": True}, "rope_interleaved=True"),
    ({"num_key_value_heads": 4}, r"n_kv_head \(4\) must divide n_head \(9\)"),
])
def test_config_keys_we_cannot_represent_are_named(edit, named):
    with pytest.raises(LlamaFormatError, match=named):
        config_from_llama({**SMOLLM_135M, **edit})


def test_every_problem_at_once():
    with pytest.raises(LlamaFormatError) as e:
        config_from_llama({**SMOLLM_135M, "foo": 1, "hidden_act": "relu", "head_dim": 7})
    assert "'foo'" in str(e.value) and "hidden_act='relu'" in str(e.value) and "head_dim=7" in str(e.value)


# ----------------------------------------------------------------------------- weights that do not fit

def _saved(tmp_path, **kw):
    hf_model(**kw).save_pretrained(tmp_path)
    return tmp_path


def test_missing_unexpected_and_misshaped_tensors_are_listed(tmp_path):
    from tinygrad_llm.safetensors import load_file, save_file
    d = _saved(tmp_path)
    w = dict(load_file(d / "model.safetensors", mmap=False))
    del w["model.layers.1.mlp.up_proj.weight"]
    w["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)      # old files: skipped
    w["model.layers.0.self_attn.q_norm.weight"] = np.ones(8, np.float32)
    w["model.norm.weight"] = np.ones(31, np.float32)
    save_file(w, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlamaFormatError) as e:
        load_llama(d)
    msg = str(e.value)
    assert "unexpected tensor 'model.layers.0.self_attn.q_norm.weight'" in msg
    assert "'model.norm.weight' has shape (31,), the config implies (32,)" in msg
    assert "missing tensors: 'model.layers.1.mlp.up_proj.weight'" in msg and "inv_freq" not in msg


def test_a_tied_config_with_a_different_lm_head_is_refused(tmp_path):
    from tinygrad_llm.safetensors import load_file, save_file
    d = _saved(tmp_path, tied=True)
    w = dict(load_file(d / "model.safetensors", mmap=False))
    w["lm_head.weight"] = w["model.embed_tokens.weight"] + 1
    save_file(w, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlamaFormatError, match="tie_word_embeddings=true but lm_head.weight differs"):
        load_llama(d)


def test_layouts_we_do_not_read(tmp_path):
    d = _saved(tmp_path / "a")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(LlamaFormatError, match="pytorch_model.bin .PyTorch pickle. but no model.safetensors"):
        load_llama(d)
    d = tmp_path / "b"
    hf_model().save_pretrained(d, max_shard_size="20KB")
    next(d.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(LlamaFormatError, match="lists shard.s. that are not in the folder"):
        load_llama(d)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llama(tmp_path)


# ----------------------------------------------------------------------------- tokenizers

def _byte_level_tokenizer_json(path, digits=True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    t = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) \
        if digits else byte_level
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(["the quick brown fox jumps over the lazy dog 1234 " * 20], trainers.BpeTrainer(
        vocab_size=VOCAB + 256 - 60, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    t.save(str(path))
    return t


def test_a_folder_with_smollms_kind_of_tokenizer_samples(tmp_path):
    """load_for_sampling (sample.py, the demo and the fine-tuning scripts' --hf) on a Llama folder."""
    theirs = _byte_level_tokenizer_json(tmp_path / "tokenizer.json")
    n = theirs.get_vocab_size()
    tg.manual_seed(0)
    save_llama(Llama(tg.LlamaConfig(vocab_size=n, block_size=32, n_layer=1, n_head=2, n_embd=16)), tmp_path)
    model, tok, ckpt = load_for_sampling(hf=tmp_path)
    assert type(model) is Llama and ckpt is None
    assert tok.encode("the fox 42") == theirs.encode("the fox 42").ids
    assert generate(model, [tok.encode("the")], 3, temperature=0).shape == (1, 4)


def test_sentencepiece_tokenizers_are_refused_by_name(tmp_path):
    from tokenizers import Tokenizer, decoders, models, normalizers
    d = _saved(tmp_path)
    (d / "tokenizer.model").write_bytes(b"\x0a\x0bsentencepiece")
    with pytest.raises(LlamaFormatError, match="SentencePiece tokenizer.model but no tokenizer.json: SentencePiece "
                                               "tokenizers are not supported"):
        load_llama_tokenizer(d)
    vocab = {"<unk>": 0, "\u2581the": 1, **{f"<0x{b:02X}>": 2 + b for b in range(256)}}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))   # TinyLlama's kind
    t.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    t.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback()])
    t.save(str(d / "tokenizer.json"))
    with pytest.raises(LlamaFormatError, match=r"SentencePiece-style tokenizer \(byte_fallback, '\u2581' "
                                               r"\(Metaspace\) for spaces\), which is not supported"):
        load_llama_tokenizer(d)
    with pytest.raises(LlamaFormatError, match="SentencePiece-style"):
        load_for_sampling(hf=d)


def test_save_with_tokenizer_and_token_ids(tmp_path):
    theirs = _byte_level_tokenizer_json(tmp_path / "src.json", digits=False)
    tok = tg.tokenizer.load_tokenizer(tmp_path / "src.json")
    model = Llama(tg.LlamaConfig(vocab_size=theirs.get_vocab_size(), n_layer=1, n_head=2, n_embd=16))
    written = save_llama(model, tmp_path / "out", tokenizer=tok, eos_token_id=tok.special_tokens["<|endoftext|>"])
    assert written == ["model.safetensors", "config.json", "tokenizer.json"]
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["eos_token_id"] == theirs.token_to_id("<|endoftext|>") and cfg["bos_token_id"] is None
    assert load_llama_tokenizer(tmp_path / "out").encode("lazy dog") == theirs.encode("lazy dog").ids
    with pytest.raises(TypeError, match="save_llama needs a Llama, got GPT"):
        save_llama(tg.GPT(tg.GPTConfig(n_layer=1)), tmp_path / "gpt")
    with pytest.raises(ValueError, match="max_shard_size must be a positive number of bytes"):
        save_llama(model, tmp_path / "x", max_shard_size=0)
