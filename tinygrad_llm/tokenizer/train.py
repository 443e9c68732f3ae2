"""Byte-level BPE training.

The text is cut into chunks by the split pattern, and identical chunks are
counted once with their frequency. Each chunk is a list of token ids (bytes at
first). A merge step takes the most frequent adjacent pair, gives it a token
and rewrites only the chunks that hold that pair; pair counts are updated from
those chunks alone, never recounted over the whole corpus.

Tie-break: among pairs with the same count, the smallest pair (a, b) as a tuple
of token ids wins (compare a first, then b). A max-heap with lazy deletion
finds the winner.

If a merge would create bytes that are already a token (two different pairs can
spell the same bytes), the chunks are rewritten with that existing token and no
new token is added, so no two tokens ever share the same bytes.
"""
from __future__ import annotations

import gc
import heapq
import warnings
from collections import Counter, defaultdict

import regex

from .patterns import iter_blocks
from .progress import ProgressBar


def count_chunks(text: str, split_re: regex.Pattern, special_tokens=()) -> Counter:
    """Count the chunks of `text` cut by `split_re`; special tokens are cut out first."""
    if special_tokens:
        special_re = regex.compile("|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)))
        pieces = special_re.split(text)
    else:
        pieces = [text]
    counts: Counter = Counter()
    for piece in pieces:
        for block in iter_blocks(piece, split_re.pattern):
            counts.update(split_re.findall(block))
    return counts


def train_bpe(chunk_counts: Counter, n_tokens: int, progress: bool | None = None):
    """Learn merges until there are `n_tokens` tokens (256 bytes included).

    Returns (vocab, merges): vocab is a list of bytes where vocab[i] is token
    i; merges is a list of (a, b, new_id), one per merge step, in order.
    Stops early with a warning when no adjacent pair is left.
    """
    # The loop makes many small objects and no cycles; the cyclic GC would
    # only rescan them again and again.
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        vocab, merges = _train(chunk_counts, n_tokens, progress)
    finally:
        if gc_was_on:
            gc.enable()
    if len(vocab) < n_tokens:
        warnings.warn(f"BPE training stopped at {len(vocab)} tokens, short of the "
                      f"{n_tokens} asked for: the text has no adjacent pair left to merge",
                      stacklevel=3)
    return vocab, merges


def _train(chunk_counts: Counter, n_tokens: int, progress: bool | None):
    """The merge loop of train_bpe."""
    vocab = [bytes([i]) for i in range(256)]
    token_of = {b: i for i, b in enumerate(vocab)}
    merges = []

    # Unique chunks as lists of ids, with their frequencies. Chunks of one
    # byte hold no pair and are left out.
    words = []
    freqs = []
    for chunk, freq in chunk_counts.items():
        b = chunk.encode("utf-8")
        if len(b) > 1:
            words.append(list(b))
            freqs.append(freq)

    # pair -> total count, and pair -> indices of chunks that held it at
    # some point (may be stale; checked on use).
    counts: dict = defaultdict(int)
    where: dict = defaultdict(set)
    for wi, w in enumerate(words):
        f = freqs[wi]
        for p in zip(w, w[1:]):
            counts[p] += f
            where[p].add(wi)

    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)

    bar = ProgressBar(n_tokens - 256, desc="BPE merges", enabled=progress)
    while len(vocab) < n_tokens:
        # Pop the best pair; skip entries whose count is out of date.
        while heap:
            negc, pair = heapq.heappop(heap)
            c = counts.get(pair, 0)
            if c == -negc:
                break
            if c > 0:
                heapq.heappush(heap, (-c, pair))
        else:
            break
        a, b = pair
        new_bytes = vocab[a] + vocab[b]
        z = token_of.get(new_bytes)
        if z is None:
            z = len(vocab)
            vocab.append(new_bytes)
            token_of[new_bytes] = z
        merges.append((a, b, z))

        touched = set()
        for wi in where.pop(pair, ()):
            w = words[wi]
            n = len(w)
            f = freqs[wi]
            out = []
            start = 0
            merged = False
            # Merge (a, b) left to right; only the pairs next to each merge change.
            while True:
                try:
                    i = w.index(a, start)
                except ValueError:
                    break
                if i + 1 < n and w[i + 1] == b:
                    out += w[start:i]
                    if out:
                        prev = out[-1]
                        counts[prev, a] -= f
                        p = (prev, z)
                        counts[p] += f
                        touched.add(p)
                        where[p].add(wi)
                    if i + 2 < n:
                        nxt = w[i + 2]
                        counts[b, nxt] -= f
                        p = (z, nxt)
                        counts[p] += f
                        touched.add(p)
                        where[p].add(wi)
                    out.append(z)
                    start = i + 2
                    merged = True
                else:
                    out += w[start:i + 1]
                    start = i + 1
            if merged:  # else a stale index entry: the pair is no longer in this chunk
                out += w[start:]
                words[wi] = out
        counts.pop(pair, None)
        # Only pairs holding the new token can have grown: push them.
        for p in touched:
            c = counts[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
        bar.update(len(vocab) - 256)
    bar.close()
    return vocab, merges
