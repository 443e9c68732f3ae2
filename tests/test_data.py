"""Tests for tinygrad_llm.data: download, cache, split, batches, errors. Never touches the network."""
import hashlib
import os
import shutil
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from conftest import to_np

from tinygrad_llm import backend, manual_seed
from tinygrad_llm import data
from tinygrad_llm.data import (DataError, DownloadError, build_tokenizer, cache_dir, get_batch,
                               load_text_dataset, read_text, shakespeare_path, split_ids)
from tinygrad_llm.tokenizer import BPETokenizer, CharTokenizer

REAL_FETCH = data._fetch  # saved before the autouse fixture replaces it
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n") * 6


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own cache dir, and any network access fails loudly."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))

    def no_network(url, timeout=None):
        raise AssertionError(f"test tried to reach the network: {url}")
    monkeypatch.setattr(data, "_fetch", no_network)
    yield


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def count_calls(monkeypatch, owner, name):
    """Wrap owner.name so that calls are counted; returns the list the calls are appended to."""
    calls = []
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return calls


def cache_files(sub="ids"):
    d = cache_dir() / sub
    return sorted(d.iterdir()) if d.is_dir() else []


# ----------------------------------------------------------------------------- cache dir

def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


def test_cache_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cachefile"))
    with pytest.raises(DataError, match=r"cache folder .*cachefile' is a file \(set by \$TINYGRAD_LLM_CACHE\)"):
        cache_dir()


def test_cache_dir_default_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv(data.CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "tinygrad_llm"


# ----------------------------------------------------------------------------- download

FAKE = b"To be, or not to be, that is the question.\n" * 10


@pytest.fixture
def fake_shakespeare(monkeypatch):
    """Point the expected hash at FAKE; returns the list of URLs fetched."""
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(FAKE).hexdigest())
    fetched = []

    def fetch(url, timeout=None):
        fetched.append(url)
        return FAKE
    monkeypatch.setattr(data, "_fetch", fetch)
    return fetched


def test_download_success_caches_file(fake_shakespeare):
    p = shakespeare_path()
    assert p == cache_dir() / data.SHAKESPEARE_FILENAME
    assert p.read_bytes() == FAKE
    assert fake_shakespeare == [data.SHAKESPEARE_URL]
    assert [q.name for q in cache_dir().iterdir()] == [p.name]  # no temp file left behind
    assert shakespeare_path() == p                            # second call: from cache
    assert len(fake_shakespeare) == 1


def test_download_hash_mismatch_names_both_hashes_and_saves_nothing(monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda url, timeout=None: b"not shakespeare")
    with pytest.raises(DownloadError) as e:
        shakespeare_path()
    msg = str(e.value)
    assert hashlib.sha256(b"not shakespeare").hexdigest() in msg and data.SHAKESPEARE_SHA256 in msg
    assert not cache_dir().exists() or list(cache_dir().iterdir()) == []


@pytest.mark.parametrize("error", [urllib.error.URLError("Name or service not known"),
                                   socket.timeout("timed out"), ConnectionResetError("reset")])
def test_offline_error_says_how_to_pass_data(monkeypatch, error):
    def fetch(url, timeout=None):
        raise error
    monkeypatch.setattr(data, "_fetch", fetch)
    with pytest.raises(DownloadError) as e:
        shakespeare_path()
    msg = str(e.value)
    assert "--data" in msg and str(cache_dir() / data.SHAKESPEARE_FILENAME) in msg
    assert data.CACHE_ENV in msg


def test_no_copy_and_download_false_says_how_to_pass_data():
    with pytest.raises(DownloadError, match="--data"):
        shakespeare_path(download=False)
    with pytest.raises(DownloadError, match="--data"):
        load_text_dataset(None, download=False)


def test_bad_cached_copy_is_downloaded_again(fake_shakespeare):
    p = cache_dir() / data.SHAKESPEARE_FILENAME
    p.parent.mkdir(parents=True)
    p.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="downloading it again"):
        assert shakespeare_path() == p
    assert p.read_bytes() == FAKE and len(fake_shakespeare) == 1


def test_bad_cached_copy_without_download_is_reported(fake_shakespeare):
    p = cache_dir() / data.SHAKESPEARE_FILENAME
    p.parent.mkdir(parents=True)
    p.write_bytes(b"truncated")
    with pytest.raises(DownloadError) as e:
        shakespeare_path(download=False)
    assert hashlib.sha256(b"truncated").hexdigest() in str(e.value)
    assert data.SHAKESPEARE_SHA256 in str(e.value) and fake_shakespeare == []


def test_real_fetch_reads_a_file_url(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"abc\n")
    assert REAL_FETCH(p.as_uri(), timeout=5) == b"abc\n"


def test_no_data_uses_cached_shakespeare(fake_shakespeare):
    ds = load_text_dataset(None)
    assert ds.path == cache_dir() / data.SHAKESPEARE_FILENAME
    assert ds.tokenizer.decode(ds.train[:13].tolist()) == FAKE[:13].decode()


def test_preseeded_cache_with_real_shakespeare(shakespeare_path):
    (cache_dir()).mkdir(parents=True)
    shutil.copy(shakespeare_path, cache_dir() / data.SHAKESPEARE_FILENAME)
    assert data.shakespeare_path() == cache_dir() / data.SHAKESPEARE_FILENAME  # hash ok, no fetch


# ----------------------------------------------------------------------------- caching

def test_second_load_reads_cache(text_file, monkeypatch):
    calls = count_calls(monkeypatch, CharTokenizer, "encode")
    a = load_text_dataset(text_file)
    assert len(calls) == 1 and not a.from_cache and a.cache_path.is_file()
    b = load_text_dataset(text_file)
    assert len(calls) == 1 and b.from_cache and b.cache_path == a.cache_path
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    assert b.tokenizer.decode(np.concatenate([b.train, b.val]).tolist()) == TEXT


def test_changed_file_gets_new_key(text_file):
    a = load_text_dataset(text_file)
    text_file.write_text(TEXT.replace("speak", "SPEAK"), encoding="utf-8")
    b = load_text_dataset(text_file)
    assert not b.from_cache and b.cache_path != a.cache_path and b.sha256 != a.sha256
    assert b.tokenizer.decode(np.concatenate([b.train, b.val]).tolist()) == TEXT.replace("speak", "SPEAK")
    assert len(cache_files()) == 2


def test_different_tokenizer_gets_new_key(text_file):
    a = load_text_dataset(text_file, CharTokenizer.train(TEXT))
    b = load_text_dataset(text_file, CharTokenizer.train(TEXT + "Z"))
    assert not b.from_cache and b.cache_path != a.cache_path
    assert not np.array_equal(a.train, b.train)  # "Z" sorts into the vocabulary and shifts ids


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "garbage", "wrong_header"])
def test_corrupt_cache_is_rebuilt(text_file, monkeypatch, damage):
    a = load_text_dataset(text_file)
    raw = a.cache_path.read_bytes()
    if damage == "flip_payload":
        raw = raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]
    elif damage == "truncate":
        raw = raw[:-10]
    elif damage == "garbage":
        raw = b"\x00\xff garbage"
    else:
        raw = raw.replace(b'"version": 1', b'"version": 99')
    a.cache_path.write_bytes(raw)
    calls = count_calls(monkeypatch, CharTokenizer, "encode")
    with pytest.warns(UserWarning, match="corrupt token cache"):
        b = load_text_dataset(text_file)
    assert not b.from_cache and len(calls) == 1
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    assert load_text_dataset(text_file).from_cache  # the rebuilt file is good


def test_cache_false_writes_nothing(text_file):
    ds = load_text_dataset(text_file, cache=False)
    assert ds.cache_path is None and not ds.from_cache
    assert not cache_dir().exists()


def test_ids_dtype_follows_vocab_size(text_file):
    assert load_text_dataset(text_file).train.dtype == np.uint16

    class BigVocab:  # any object with vocab_size / encode / decode / fingerprint works
        vocab_size = 70_000

        def encode(self, text):
            return [65_600 + ord(c) % 100 for c in text]

        def decode(self, ids):
            raise NotImplementedError

        def fingerprint(self):
            return "big-vocab-test"
    ds = load_text_dataset(text_file, BigVocab())
    assert ds.train.dtype == np.uint32 and ds.vocab_size == 70_000
    assert int(ds.train.max()) >= 65_600          # not wrapped around by a 16-bit cast
    assert load_text_dataset(text_file, BigVocab()).from_cache


def test_tokenizer_with_out_of_range_ids_is_rejected(text_file):
    class Bad:
        vocab_size = 10

        def encode(self, text):
            return [11] * len(text)

        def fingerprint(self):
            return "bad"
    with pytest.raises(DataError, match="outside 0..9"):
        load_text_dataset(text_file, Bad())


# ----------------------------------------------------------------------------- split

@pytest.mark.parametrize("n", [2, 10, 999, 1000, 1001, 12345])
def test_split_is_nanogpt_90_10(n):
    ids = np.arange(n)
    train, val = split_ids(ids)
    np.testing.assert_array_equal(train, ids[:int(n * 0.9)])
    np.testing.assert_array_equal(val, ids[int(n * 0.9):])


def test_split_other_fraction_and_bad_fraction():
    train, val = split_ids(np.arange(100), 0.25)
    assert len(train) == 75 and len(val) == 25
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(DataError, match="val_fraction"):
            split_ids(np.arange(100), bad)


def test_dataset_split_sizes(text_file):
    ds = load_text_dataset(text_file)
    n = len(TEXT)
    assert len(ds.train) == int(n * 0.9) and len(ds.val) == n - int(n * 0.9)
    assert ds.sha256 == hashlib.sha256(TEXT.encode()).hexdigest()
    with pytest.raises(ValueError, match="'train' or 'val'"):
        ds.split("test")


# ----------------------------------------------------------------------------- tokenizers

def test_build_tokenizer_kinds():
    char = build_tokenizer("char", TEXT)
    assert isinstance(char, CharTokenizer) and char.vocab_size == len(set(TEXT))
    bpe = build_tokenizer("bpe", TEXT, vocab_size=270)
    assert isinstance(bpe, BPETokenizer) and bpe.vocab_size == 270
    assert bpe.decode(bpe.encode(TEXT)) == TEXT


def test_build_tokenizer_errors():
    with pytest.raises(DataError, match="'wordpiece'.*char, bpe"):
        build_tokenizer("wordpiece", TEXT)
    with pytest.raises(DataError, match="applies to .bpe. only"):
        build_tokenizer("char", TEXT, vocab_size=100)


def test_bpe_dataset_caches_trained_tokenizer(text_file, monkeypatch):
    trains = count_calls(monkeypatch, BPETokenizer, "train")
    a = load_text_dataset(text_file, "bpe", vocab_size=270)
    b = load_text_dataset(text_file, "bpe", vocab_size=270)
    assert len(trains) == 1 and b.from_cache
    assert a.tokenizer.fingerprint() == b.tokenizer.fingerprint()
    np.testing.assert_array_equal(a.train, b.train)
    assert b.tokenizer.decode(np.concatenate([b.train, b.val]).tolist()) == TEXT
    load_text_dataset(text_file, "bpe", vocab_size=280)  # another vocab size: another tokenizer
    assert len(trains) == 2
    tok_file, = [p for p in cache_files("tokenizers") if p.name.startswith("bpe270")]
    tok_file.write_text("garbage")
    with pytest.warns(UserWarning, match="training it again"):
        c = load_text_dataset(text_file, "bpe", vocab_size=270)
    assert len(trains) == 3 and c.tokenizer.fingerprint() == a.tokenizer.fingerprint()


def test_vocab_size_with_tokenizer_object_is_an_error(text_file):
    with pytest.raises(DataError, match="vocab_size"):
        load_text_dataset(text_file, CharTokenizer.train(TEXT), vocab_size=100)


def test_text_the_tokenizer_cannot_encode(text_file):
    with pytest.raises(DataError, match="cannot be encoded") as e:
        load_text_dataset(text_file, CharTokenizer.train("abc"))
    assert str(text_file) in str(e.value)


# ----------------------------------------------------------------------------- file errors

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt.*does not exist"):
        load_text_dataset(tmp_path / "nope.txt")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_text_dataset(tmp_path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_not_read(tmp_path):
    with pytest.raises(DataError, match="'/dev/zero' is not a regular file"):    # it would never end
        load_text_dataset("/dev/zero")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt.*is empty"):
        load_text_dataset(p)


def test_not_utf8_names_byte_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"hello \xe9t\xe9 world")
    with pytest.raises(DataError, match=r"latin1.txt.*not valid UTF-8: byte 0xe9 at byte offset 6"):
        read_text(p)


def test_too_short_for_block_size(text_file):
    with pytest.raises(DataError) as e:
        load_text_dataset(text_file, block_size=len(TEXT) // 10 + 5)
    msg = str(e.value)
    assert str(text_file) in msg and "validation split" in msg and f"block_size={len(TEXT) // 10 + 5}" in msg
    load_text_dataset(text_file, block_size=len(TEXT) - int(len(TEXT) * 0.9) - 1)  # just fits


def test_too_short_without_block_size(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("ab")
    with pytest.raises(DataError, match="tiny.txt.*too short: 2 tokens"):
        load_text_dataset(p)


# ----------------------------------------------------------------------------- batches

def test_batch_shapes_dtype_device_and_shift(device):
    ids = np.random.default_rng(0).integers(0, 65, size=500).astype(np.uint16)
    x, y = get_batch(ids, 6, 16, device=device, rng=np.random.default_rng(1))
    assert x.shape == y.shape == (6, 16)
    assert x.dtype == y.dtype == np.int64
    assert x.device == y.device == backend.canonical_device(device)
    assert not x.requires_grad and x.grad_fn is None
    xn, yn = to_np(x), to_np(y)
    np.testing.assert_array_equal(xn[:, 1:], yn[:, :-1])
    # each row is a window of ids; recover its offset with the same generator and compare
    offsets = np.random.default_rng(1).integers(0, len(ids) - 16, size=6)
    for b, o in enumerate(offsets):
        np.testing.assert_array_equal(xn[b], ids[o:o + 16])
        np.testing.assert_array_equal(yn[b], ids[o + 1:o + 17])


def test_batch_reproducible_with_manual_seed():
    ids = np.arange(10_000, dtype=np.uint16)
    manual_seed(123)
    a = get_batch(ids, 4, 8)
    manual_seed(123)
    b = get_batch(ids, 4, 8)
    manual_seed(124)
    c = get_batch(ids, 4, 8)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_batch_resumes_from_rng_state():
    ids = np.arange(10_000, dtype=np.uint16)
    manual_seed(7)
    get_batch(ids, 4, 8)
    state = backend.get_rng_state()
    want = [get_batch(ids, 4, 8)[0].numpy() for _ in range(3)]
    backend.set_rng_state(state)
    got = [get_batch(ids, 4, 8)[0].numpy() for _ in range(3)]
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


def test_every_offset_reachable_and_no_overrun():
    ids = np.arange(10, dtype=np.uint16)
    x, y = get_batch(ids, 2000, 3, rng=np.random.default_rng(0))
    assert set(x.numpy()[:, 0].tolist()) == set(range(7))   # offsets 0 .. len - block_size - 1
    assert y.numpy().max() == 9
    x, y = get_batch(ids, 3, 9, rng=np.random.default_rng(0))  # exactly one block: offset 0 only
    np.testing.assert_array_equal(x.numpy(), np.tile(ids[:-1], (3, 1)))
    np.testing.assert_array_equal(y.numpy(), np.tile(ids[1:], (3, 1)))


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_of_the_ranks_make_up_the_big_batch(world_size):
    """Each rank draws the whole batch from its own generator (all in the same state) and
    keeps its slice: side by side the shards are the batch of one process with world_size * B,
    and every generator ends where that process's does."""
    ids = np.arange(10_000, dtype=np.uint16)
    big = np.random.default_rng(5)
    want_x, want_y = get_batch(ids, 4 * world_size, 8, rng=big)
    shards = []
    for rank in range(world_size):
        g = np.random.default_rng(5)
        shards.append(get_batch(ids, 4, 8, rng=g, rank=rank, world_size=world_size))
        assert g.bit_generator.state == big.bit_generator.state          # still in step
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in shards]), want_x.numpy())
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in shards]), want_y.numpy())
    assert len({x.numpy().tobytes() for x, _ in shards}) == world_size   # different rows per rank


def test_shard_errors():
    ids = np.arange(100, dtype=np.uint16)
    for rank, world in ((2, 2), (-1, 2), (0.0, 1), (True, 2)):
        with pytest.raises(ValueError, match=r"rank must be an integer in \[0, world_size"):
            get_batch(ids, 2, 4, rank=rank, world_size=world)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="world_size must be a positive integer"):
            get_batch(ids, 2, 4, world_size=bad)


def test_batch_errors():
    ids = np.arange(8, dtype=np.uint16)
    with pytest.raises(ValueError, match=r"8 tokens.*block_size=8"):
        get_batch(ids, 2, 8)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            get_batch(ids, bad, 4)
        with pytest.raises(ValueError, match="block_size must be a positive integer"):
            get_batch(ids, 2, bad)
    with pytest.raises(ValueError, match="1-D integer array"):
        get_batch(ids.reshape(2, 4), 2, 2)
    with pytest.raises(ValueError, match="1-D integer array"):
        get_batch(ids.astype(np.float32), 2, 2)


def test_dataset_get_batch(text_file):
    ds = load_text_dataset(text_file, block_size=8)
    manual_seed(0)
    x, y = ds.get_batch("val", 5, 8)
    text = ds.tokenizer.decode(ds.val.tolist())
    for row in x.numpy():
        assert ds.tokenizer.decode(row.tolist()) in text


# ----------------------------------------------------------------------------- end to end

def test_tiny_shakespeare_end_to_end(shakespeare_path):
    ds = load_text_dataset(shakespeare_path, "char", block_size=256)
    assert ds.sha256 == data.SHAKESPEARE_SHA256
    assert ds.vocab_size == 65
    n = len(ds.train) + len(ds.val)
    assert n == 1_115_394 and len(ds.train) == int(n * 0.9)
    assert ds.tokenizer.decode(ds.train[:21].tolist()) == "First Citizen:\nBefore"
    manual_seed(0)
    x, y = ds.get_batch("train", 4, 32)
    text = Path(shakespeare_path).read_text(encoding="utf-8")
    for xr, yr in zip(x.numpy(), y.numpy()):
        np.testing.assert_array_equal(xr[1:], yr[:-1])
        assert ds.tokenizer.decode(xr.tolist() + yr[-1:].tolist()) in text
    assert load_text_dataset(shakespeare_path, "char").from_cache
