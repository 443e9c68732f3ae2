"""multinomial (ops/sampling.py): the draws follow the weights (frequencies within a few
standard errors, seeded so never flaky), without replacement every row's draws are distinct
and the first draw follows the weights, zero weights are never drawn, shapes, dtype,
reproducibility, PyTorch's errors."""
import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
from tinygrad_llm import Tensor


def _within(counts, probs, n, sigmas=5.0):
    """Each frequency within ``sigmas`` binomial standard errors of its probability."""
    expected = probs * n
    spread = np.sqrt(n * probs * (1 - probs)) + 1e-9
    assert (np.abs(counts - expected) <= sigmas * spread).all(), (counts, expected)


def test_with_replacement_follows_the_weights(device):
    tg.manual_seed(0)
    w = np.array([[1.0, 0.0, 3.0, 6.0], [0.0, 0.0, 5.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    n = 20000
    idx = Tensor(w, device=device).multinomial(n, replacement=True)
    assert idx.shape == (3, n) and idx.dtype == np.int64 and idx.grad_fn is None
    idx = to_np(idx)
    for row, weights in zip(idx, w):
        counts = np.bincount(row, minlength=4)
        assert counts[weights == 0].sum() == 0                      # a zero weight is never drawn
        _within(counts, weights / weights.sum(), n)


def test_without_replacement_draws_distinct_categories(device):
    tg.manual_seed(1)
    w = np.array([0.5, 0.0, 2.0, 1.0, 0.25, 4.0])
    firsts = []
    for _ in range(40):
        rows = to_np(Tensor(np.tile(w, (100, 1)), device=device).multinomial(5))
        assert all(len(set(r)) == 5 and 1 not in r for r in rows)   # distinct, never the zero weight
        firsts.append(rows[:, 0])
    _within(np.bincount(np.concatenate(firsts), minlength=6), w / w.sum(), 4000)    # the first draw: by weight
    every = to_np(Tensor(w[w > 0], device=device).multinomial(5))
    assert sorted(every.tolist()) == [0, 1, 2, 3, 4]                 # all of them, in some order


def test_shapes_dtypes_and_reproducibility(device):
    w = Tensor(np.array([1, 2, 3]), device=device)                    # integer weights are fine
    tg.manual_seed(5)
    a = w.multinomial(4, True)
    tg.manual_seed(5)
    b = tg.multinomial(w, 4, replacement=True)
    assert a.shape == (4,) and a.dtype == np.int64
    np.testing.assert_array_equal(to_np(a), to_np(b))
    assert Tensor(np.ones((2, 3), np.float16), device=device).multinomial(1).shape == (2, 1)
    assert to_np(Tensor(np.array([0.0, 0.0, 1.0]), device=device).multinomial(3, True)).tolist() == [2, 2, 2]


def test_many_rows_never_leave_their_row(device):
    """One sorted search serves all rows (each shifted by its index): a draw always lands in
    its own row, on a category of positive weight, even for the last rows."""
    tg.manual_seed(2)
    w = np.zeros((3000, 3))
    w[:, 2] = 1.0
    w[::2, 0] = 1e-300                                                # tiny, but positive
    idx = to_np(Tensor(w, device=device).multinomial(3, replacement=True))
    assert ((idx == 2) | ((idx == 0) & (np.arange(3000)[:, None] % 2 == 0))).all()


def test_bad_weights_raise_as_pytorch():
    for w, match in [([1.0, -1.0], "finite and >= 0"), ([0.0, 0.0], "positive sum"), ([1.0, np.nan], "finite"),
                     ([1.0, np.inf], "finite")]:
        with pytest.raises(RuntimeError, match=match):              # PyTorch's class (and a ValueError)
            Tensor(w).multinomial(1)
    with pytest.raises(ValueError, match="without replacement"):
        Tensor([1.0, 0.0, 1.0]).multinomial(3)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        Tensor(np.ones((2, 2, 2))).multinomial(1)
    with pytest.raises(ValueError, match="num_samples"):
        Tensor([1.0]).multinomial(0)
    torch = pytest.importorskip("torch")
    for w in ([1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.tensor(w), 1)
