"""Instruction fine-tuning (tinygrad_llm.finetune): the Alpaca template, records, prompt masking
token by token, the end-of-text token, and a tiny model that actually learns from SFT."""
import json
import time

import numpy as np
import pytest
from finetune_data import records, template_tokenizer, words

from tinygrad_llm import GPT, GPTConfig, Tensor, manual_seed, no_grad
from tinygrad_llm.checkpoint import load_for_sampling, save_checkpoint
from tinygrad_llm.data import DataError
from tinygrad_llm.finetune import (END_OF_TEXT, IGNORE_INDEX, SFTConfig, check_lengths, encode_records,
                                   evaluate_loss, exact_match, format_prompt, generate_responses, load_records,
                                   sft_batch, split_records, train_sft, with_end_of_text)
from tinygrad_llm.nn import functional as F
from tinygrad_llm.kernels.parallel import set_blas_threads
from tinygrad_llm.tokenizer import CharTokenizer


# ---------------------------------------------------------------------------- template and records

def test_alpaca_template_exactly():
    assert format_prompt("Add 2 and 3.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n")
    assert format_prompt("Translate.", "bonjour") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n"
        "### Input:\nbonjour\n\n### Response:\n")
    assert format_prompt("Translate.", "") == format_prompt("Translate.")


def test_records_from_json_and_jsonl(tmp_path):
    recs = [{"instruction": "a", "input": "b", "output": "c"}, {"instruction": "d", "output": "e"}]
    (tmp_path / "r.json").write_text(json.dumps(recs))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n\n")
    want = [recs[0], {"instruction": "d", "input": "", "output": "e"}]
    assert load_records(tmp_path / "r.json") == want
    assert load_records(tmp_path / "r.jsonl") == want


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("[]", "holds no records"),
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c"}', r"record 1 lacks the key\(s\) \['output'\]"),
    ('[{"instruction": "a", "output": 3}]', "record 0: 'output' must be a string"),
    ('[["a", "b"]]', "record 0 is a list"),
    ('{"instruction": "a", "output": "b"}\n{oops', "line 2: not valid JSON"),
    ('[{"instruction": " ", "output": "b"}]', "record 0 has an empty instruction"),
    ('{"a": 1}', r"record 0 lacks the key\(s\) \['instruction', 'output'\]"),
])
def test_bad_records(tmp_path, text, match):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(DataError, match=match):
        load_records(f)


def test_preference_records_need_chosen_and_rejected(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([{"instruction": "a", "chosen": "b"}]))
    with pytest.raises(DataError, match=r"lacks the key\(s\) \['rejected'\]"):
        load_records(f, ("chosen", "rejected"))


def test_split_records():
    train, val = split_records(10, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2 and sorted([*train, *val]) == list(range(10))
    assert len(split_records(10, 0.01, 0)[1]) == 1 and len(split_records(10, 0.0, 0)[1]) == 0
    with pytest.raises(DataError, match="cannot be split"):
        split_records(1, 0.5, 0)


# ---------------------------------------------------------------------------- masking, token by token

def test_batch_targets_and_prompt_masking_token_by_token():
    """x = ids[:-1] padded; y = ids[1:] with IGNORE_INDEX on padding and (masked) wherever the
    next token is still the prompt's; the first response token is predicted from the prompt's last."""
    P = IGNORE_INDEX
    ex = [{"prompt": [10, 11, 12], "output": [20, 21, 99]},       # 99: end of text
          {"prompt": [13, 14], "output": [22, 99]}]
    x, y = sft_batch(ex, pad_id=0, mask_prompt=True)
    np.testing.assert_array_equal(x, [[10, 11, 12, 20, 21], [13, 14, 22, 0, 0]])
    np.testing.assert_array_equal(y, [[P, P, 20, 21, 99], [P, 22, 99, P, P]])
    x2, y2 = sft_batch(ex, pad_id=0, mask_prompt=False)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, [[11, 12, 20, 21, 99], [14, 22, 99, P, P]])


def test_masking_decides_which_tokens_carry_loss():
    """The batch loss is the mean over exactly the unmasked targets: changing the logits at a masked
    position changes nothing, at a response position it does."""
    ex = [{"prompt": [1, 2, 3, 4], "output": [5, 6, 7]}]
    x, y = sft_batch(ex, pad_id=0)
    rs = np.random.default_rng(0)
    logits = rs.standard_normal((1, x.shape[1], 8))

    def loss(lg):
        return F.cross_entropy(Tensor(lg).reshape(-1, 8), y.reshape(-1)).item()

    full = loss(logits)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.mean([lp[0, t, y[0, t]] for t in range(x.shape[1]) if y[0, t] != IGNORE_INDEX])
    np.testing.assert_allclose(full, want, rtol=1e-12)
    assert [t for t in range(x.shape[1]) if y[0, t] != IGNORE_INDEX] == [3, 4, 5]
    for t in range(3):                   # prompt positions (predicting prompt tokens 2, 3, 4)
        changed = logits.copy()
        changed[0, t] += 5 * rs.standard_normal(8)
        assert loss(changed) == full
    changed = logits.copy()
    changed[0, 3] += 5 * rs.standard_normal(8)
    assert loss(changed) != full


def test_encode_records_appends_end_of_text_and_checks_lengths():
    tok = template_tokenizer()
    eos = tok.special_tokens[END_OF_TEXT]
    [ex] = encode_records([{"instruction": "Reverse the word.", "input": "CDE", "output": "EDC"}], tok, eos)
    assert tok.decode(ex["prompt"]) == format_prompt("Reverse the word.", "CDE")
    assert ex["output"][-1] == eos and tok.decode(ex["output"][:-1]) == "EDC"
    n = len(ex["prompt"]) + len(ex["output"])
    check_lengths([ex], block_size=n - 1)
    with pytest.raises(DataError, match=rf"record 0 \({n} tokens\).*longer than the model's context"):
        check_lengths([ex], block_size=n - 2)
    with pytest.raises(DataError, match="record 0's 'output'"):
        encode_records([{"instruction": "x", "input": "", "output": "a<|endoftext|>"}], tok, eos)


# ---------------------------------------------------------------------------- the end-of-text token

def test_end_of_text_is_added_to_our_bpe_and_the_model_grows(tmp_path):
    tok = template_tokenizer(eos=False)
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path, "latest", model, tokenizer=tok)
    m, t, _ = load_for_sampling(ckpt=tmp_path)
    m2, t2, eos = with_end_of_text(m, t)
    assert eos == tok.vocab_size and t2.special_tokens[END_OF_TEXT] == eos
    assert m2.config.vocab_size == tok.vocab_size + 1
    w_old, w_new = m.transformer.wte.weight.numpy(), m2.transformer.wte.weight.numpy()
    np.testing.assert_array_equal(w_new[:-1], w_old)
    np.testing.assert_allclose(w_new[-1], w_old.mean(0), rtol=1e-6)
    assert m2.lm_head.weight is m2.transformer.wte.weight
    idx = np.arange(8)[None]
    with no_grad():                      # the old tokens' logits are unchanged
        np.testing.assert_allclose(m2(idx)[0].numpy()[..., :-1], m(idx)[0].numpy(), rtol=1e-6, atol=1e-7)
    assert with_end_of_text(m2, t2)[2] == eos and with_end_of_text(m2, t2)[0] is m2   # found, not added again


def test_a_char_tokenizer_cannot_take_an_end_of_text_token():
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="char tokenizer has no end-of-text token"):
        with_end_of_text(model, CharTokenizer.from_text("abc"))


# ---------------------------------------------------------------------------- SFT actually teaches

@pytest.fixture
def one_blas_thread():
    """Tiny GEMMs run fastest on one BLAS thread (and several only spin on a busy machine:
    this test took 4 s alone and 40-80 s beside other test runs with two threads)."""
    before = set_blas_threads(1)
    yield
    if before is not None:
        set_blas_threads(before)


def test_sft_teaches_a_tiny_model_held_out_instructions(one_blas_thread):
    """On "Reverse the word." / "Repeat the word twice." for 3-letter words, a 2-layer 64-wide GPT
    goes from 0 to at least 75% exact-match accuracy on 48 held-out instructions (words it never
    saw) in 500 steps of batch 16 (a few seconds on a laptop CPU; 83-98% over four seeds)."""
    tok = template_tokenizer()
    eos = tok.special_tokens[END_OF_TEXT]
    ws = words()
    held_out, train = records(ws[:24]), records(ws[24:224])          # 48 and 400 records
    examples = encode_records(train, tok, eos)
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64))
    before = exact_match(model, tok, held_out, eos, max_new_tokens=10)
    val_before = evaluate_loss(model, encode_records(held_out, tok, eos), 64, eos)
    t0 = time.perf_counter()
    history = train_sft(model, examples, encode_records(held_out, tok, eos),
                        SFTConfig(epochs=20, lr=3e-3, batch_size=16, log_interval=0, seed=0), eos, log=lambda s: None)
    after = exact_match(model, tok, held_out, eos, max_new_tokens=10)
    print(f"\n[sft] held-out exact match {before:.2f} -> {after:.2f}, val loss {val_before:.3f} -> "
          f"{history[-1]['val_loss']:.3f}, {time.perf_counter() - t0:.1f} s")
    assert before <= 0.05
    assert after >= 0.75
    assert history[-1]["val_loss"] < 0.2 * val_before
    responses = generate_responses(model, tok, held_out[:4], eos, max_new_tokens=10)
    assert sum(r == rec["output"] for r, rec in zip(responses, held_out[:4])) >= 2, responses


@pytest.mark.parametrize("kw, match", [(dict(seed=-1), "seed must be an integer >= 0, got -1"),
                                       (dict(seed=2.0), "seed must be an integer >= 0, got 2.0"),
                                       (dict(log_interval=-1), "log_interval must be an integer >= 0, got -1")])
def test_bad_config_values(kw, match):
    with pytest.raises(ValueError, match=match):
        SFTConfig(**kw)
