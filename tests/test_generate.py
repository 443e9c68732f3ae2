"""Sampling: each filter's rule, seeds, the KV cache, cropping, stop strings, streaming."""
import numpy as np
import pytest

import tinygrad_llm as tg
from tinygrad_llm import GPT, GPTConfig
from tinygrad_llm.generate import generate, generate_text, sample_next
from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer


def model(**kw):
    tg.manual_seed(0)
    cfg = dict(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    return GPT(GPTConfig(**{**cfg, **kw}))


def test_greedy_picks_argmax():
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert sample_next(logits, np.random.default_rng(0), temperature=0).tolist() == [1, 0]


def test_top_k_only_draws_from_the_k_best():
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    draws = {int(sample_next(logits, np.random.default_rng(s), top_k=2)[0]) for s in range(200)}
    assert draws == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = {int(sample_next(logits, np.random.default_rng(s), top_p=0.75)[0]) for s in range(300)}
    assert draws == {0, 1}           # 0.5 < 0.75 <= 0.5 + 0.3
    draws = {int(sample_next(logits, np.random.default_rng(s), top_p=0.5)[0]) for s in range(100)}
    assert draws == {0}


def test_low_temperature_sharpens_and_frequencies_follow_probs():
    p = np.array([[0.6, 0.3, 0.1]])
    rng = np.random.default_rng(0)
    n = 4000
    counts = np.bincount([int(sample_next(np.log(p), rng)[0]) for _ in range(n)], minlength=3) / n
    np.testing.assert_allclose(counts, p[0], atol=0.03)
    cold = [int(sample_next(np.log(p), rng, temperature=0.05)[0]) for _ in range(200)]
    assert cold.count(0) == 200


def test_repetition_penalty_rule():
    logits = np.array([[2.0, -2.0, 1.9]])
    seen = np.array([[0, 1]])
    # token 0 (positive) is divided: 2.0/2 = 1.0 < 1.9, so greedy moves to token 2
    assert int(sample_next(logits, None, temperature=0, repetition_penalty=2.0, seen=seen)[0]) == 2
    assert int(sample_next(logits, None, temperature=0, repetition_penalty=1.0, seen=seen)[0]) == 0


def test_seed_makes_generation_reproducible():
    m = model()
    a = generate(m, [[1, 2, 3]], 10, seed=5)
    b = generate(m, [[1, 2, 3]], 10, seed=5)
    c = generate(m, [[1, 2, 3]], 10, seed=6)
    assert a.shape == (1, 13) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[:, :3].tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("kw", [{}, dict(pos="sinusoidal", norm="rmsnorm", prenorm=False)])
def test_kv_cache_gives_identical_tokens(kw):
    m = model(**kw)
    prompt = np.random.default_rng(0).integers(0, 13, (2, 3))
    # 20 new tokens: past block_size 8, so cropping and cache refills are exercised too
    for sampling in (dict(temperature=0), dict(temperature=1.0, top_k=5, seed=3)):
        cached = generate(m, prompt, 20, use_cache=True, **sampling)
        plain = generate(m, prompt, 20, use_cache=False, **sampling)
        assert np.array_equal(cached, plain), sampling


def test_cached_logits_match_full_forward():
    m = model()
    from tinygrad_llm.nn import KVCache
    idx = np.random.default_rng(1).integers(0, 13, (1, 6))
    with tg.no_grad():
        full, _ = m(idx)
        cache = KVCache(m.config, 1, "cpu", np.float32)
        first, _ = m(idx[:, :4], cache=cache)
        rest = [m(idx[:, i:i + 1], cache=cache)[0] for i in (4, 5)]
    np.testing.assert_allclose(first.numpy(), full.numpy()[:, :4], atol=1e-5)
    for i, r in zip((4, 5), rest):
        np.testing.assert_allclose(r.numpy()[:, 0], full.numpy()[:, i], atol=1e-5)


def test_long_prompt_is_cropped_from_the_left():
    m = model()
    prompt = np.random.default_rng(2).integers(0, 13, (1, 20))
    out = generate(m, prompt, 1, temperature=0)
    last8 = generate(m, prompt[:, -8:], 1, temperature=0)
    assert out.shape == (1, 21) and out[0, -1] == last8[0, -1]


def test_generate_text_stop_and_stream():
    text = "abcdefgh"
    tok = CharTokenizer.train(text)
    m = model(vocab_size=tok.vocab_size)
    full = generate_text(m, tok, "ab", max_new_tokens=30, temperature=0)
    assert len(full) == 30
    stop = full[5:7]
    pieces = []
    out = generate_text(m, tok, "ab", max_new_tokens=30, temperature=0, stop=stop, stream=pieces.append)
    assert out == full[:full.index(stop)]
    assert "".join(pieces) == out


class _CountingBPE:
    """A byte-level BPE tokenizer that counts how many ids it was asked to decode."""

    def __init__(self, tok):
        self.tok, self.decoded = tok, 0

    def encode(self, text):
        return self.tok.encode(text)

    def decode_bytes(self, ids):
        self.decoded += len(ids)
        return self.tok.decode_bytes(ids)


@pytest.mark.parametrize("seed", range(4))
def test_generate_text_bpe_stream_splits_characters_safely_and_decodes_each_token_once(seed):
    """Byte-level tokens can split a UTF-8 character: the stream must never show U+FFFD
    for a character that completes later, the pieces add up to the returned text, the text
    equals decoding all ids at once, and each token is decoded once (linear, not quadratic)."""
    base = BPETokenizer.train("é☃ab " * 10, vocab_size=258)
    tok = _CountingBPE(base)
    m = model(vocab_size=258, block_size=16)
    pieces = []
    n = 60
    out = generate_text(m, tok, "a", max_new_tokens=n, temperature=1.0, seed=seed, stream=pieces.append)
    assert "".join(pieces) == out
    assert tok.decoded <= n
    ids = generate(m, np.asarray([base.encode("a")]), n, temperature=1.0, seed=seed)
    whole = base.decode(ids[0, 1:].tolist())
    assert out == whole                 # so no piece showed U+FFFD for a character completed later
    assert any(ord(c) > 127 for c in whole)   # the draw did produce multi-byte characters


def test_generate_text_stop_string_across_tokens_is_never_streamed():
    text = "abcdefgh"
    tok = CharTokenizer.train(text)
    m = model(vocab_size=tok.vocab_size)
    full = generate_text(m, tok, "ab", max_new_tokens=30, temperature=0)
    for a, b in [(3, 6), (0, 4), (10, 11)]:
        stop = full[a:b]
        pieces = []
        out = generate_text(m, tok, "ab", max_new_tokens=30, temperature=0, stop=stop, stream=pieces.append)
        assert out == full[:full.index(stop)] and "".join(pieces) == out
        assert all(stop not in "".join(pieces[:i + 1]) for i in range(len(pieces)))


def test_bad_arguments():
    m = model()
    nan, inf = float("nan"), float("inf")
    for kw, match in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"),
                      (dict(top_p=0.0), "top_p"), (dict(repetition_penalty=0), "repetition_penalty"),
                      (dict(temperature=nan), "temperature must be a finite number"),
                      (dict(temperature=inf), "temperature must be a finite number"),
                      (dict(top_p=nan), "top_p"),
                      (dict(repetition_penalty=nan), "repetition_penalty must be a finite number"),
                      (dict(seed=-1), "seed must be an integer >= 0 or None, got -1"),
                      (dict(seed=1.5), "seed must be an integer >= 0 or None, got 1.5")]:
        with pytest.raises(ValueError, match=match):
            generate(m, [[1]], 3, **kw)
    with pytest.raises(ValueError, match="non-empty"):
        generate(m, np.zeros((1, 0), dtype=np.int64), 3)
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        generate(m, [[13]], 3)
