"""Drawing category indices from weights (``Tensor.multinomial``): no graph node, no gradient.

Both draws use the package's generator (``backend.rng``), so ``manual_seed`` reproduces
them, and neither reads anything back to the host.
"""
from __future__ import annotations

import numpy as np

from .. import backend


def multinomial(device: str, w, num_samples: int, replacement: bool):
    """Indices (R, num_samples) int64: row r's draws from the categories 0..C-1 of ``w[r]``,
    each with probability w[r, c] / sum(w[r]). ``w`` (R, C) holds weights >= 0 with a
    positive sum per row (and, without replacement, at least num_samples positive ones).

    With replacement, by inverse CDF: u uniform in [0, 1) picks the first category whose
    normalised cumulative weight exceeds u. One sorted search serves all rows: row r's
    cumulative weights and draws are shifted by r, so they fall in [r, r + 1].

    Without replacement, by the Gumbel-top-k trick: the num_samples categories with the
    largest log w + Gumbel noise are a draw without replacement, in order of being drawn.
    """
    xp, gen = backend.xp_for(device), backend.rng(device)
    w = w.astype(np.float64)
    R, C = w.shape
    if replacement:
        cdf = xp.cumsum(w, axis=1)
        cdf = cdf / cdf[:, -1:]                                     # the last entry is exactly 1
        u = gen.random((R, num_samples), dtype=np.float64)
        shift = xp.arange(R, dtype=np.float64)[:, None]
        found = xp.searchsorted((cdf + shift).reshape(-1), (u + shift).reshape(-1), side="right")
        idx = found.reshape(R, num_samples) - xp.arange(R)[:, None] * C
        # u + r may round up to r + 1 (r >= 1): stay on the row's last category of positive weight
        last = C - 1 - xp.argmax(w[:, ::-1] > 0, axis=1)
        return xp.minimum(idx, last[:, None]).astype(np.int64)
    u = 1.0 - gen.random((R, C), dtype=np.float64)                 # in (0, 1]
    with backend.quiet(xp, divide="ignore"):                       # log 0 = -inf: weight 0, or u = 1
        keys = xp.log(w) - xp.log(-xp.log(u))                       # log w + Gumbel noise
    keys = xp.where(w > 0, keys, -np.inf)
    return xp.argsort(-keys, axis=1)[:, :num_samples].astype(np.int64)
