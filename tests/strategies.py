"""Reusable hypothesis strategies for the op tests.

Shapes come from hypothesis (so they shrink to small, readable failures); the values in
an array come from a NumPy generator seeded by hypothesis. That keeps values continuous
and distinct (no accidental ties for max/min, no values exactly on a kink such as 0 for
relu/abs) while staying reproducible under the derandomized "ci" profile.

    @given(shape=shapes(), data=st.data())
    def test_something(shape, data):
        x = data.draw(arrays(shape, -2, 2))
"""
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: for @given tests that also take the ``device`` fixture (a plain string, safe to share
#: between examples); everything else comes from the loaded profile ("ci" by default)
with_fixtures = settings(suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])

MAX_DIMS = 4
MAX_SIDE = 4


def shapes(min_dims=0, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE):
    """Array shapes: 0-d up to 4-D, sides 1..4 (size-1 dims included)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_pairs(min_dims=0, max_dims=MAX_DIMS, max_side=MAX_SIDE):
    """Two shapes that broadcast together (size-1 dims, missing leading dims, 0-d)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side
    ).map(lambda b: b.input_shapes)


@st.composite
def shape_broadcasting_to(draw, shape):
    """A shape that broadcasts to ``shape`` exactly: some dims set to 1, some leading dims dropped."""
    drop = draw(st.integers(0, len(shape)))
    return tuple(1 if draw(st.booleans()) else n for n in shape[drop:])


def seeds():
    return st.integers(0, 2**32 - 1)


@st.composite
def arrays(draw, shape, low=-2.0, high=2.0, away_from=(), margin=0.05, dtype=np.float64):
    """Uniform values in [low, high) of the given shape, at least ``margin`` away from each
    point in ``away_from`` (kinks such as 0 for relu/abs or the bounds of clip)."""
    rs = np.random.default_rng(draw(seeds()))
    x = rs.uniform(low, high, size=shape)
    for p in away_from:
        near = np.abs(x - p) < margin
        x = np.where(near, p + np.where(x >= p, margin, -margin) * 2, x)
    return np.asarray(x, dtype=dtype)


@st.composite
def signed_magnitudes(draw, shape, low=0.2, high=2.0, dtype=np.float64):
    """Values with |x| in [low, high] and a random sign: never near 0 (for division, abs...)."""
    rs = np.random.default_rng(draw(seeds()))
    x = rs.uniform(low, high, size=shape) * rs.choice([-1.0, 1.0], size=shape)
    return np.asarray(x, dtype=dtype)


@st.composite
def axis_args(draw, ndim):
    """An ``axis=`` argument for an ndim-dimensional tensor: None, an int (maybe negative),
    or a tuple of distinct ints (maybe negative, in any order, maybe empty-free)."""
    if ndim == 0:
        return draw(st.sampled_from([None, 0, -1]))
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def np_axis(axis, ndim):
    """The axis argument NumPy wants for a 0-d array is None; otherwise the same."""
    return None if ndim == 0 else axis


@st.composite
def matmul_shapes(draw, max_batch_dims=2, max_side=MAX_SIDE):
    """Operand shapes for ``a @ b`` with NumPy's rules: 1-D, 2-D and batched N-D operands,
    with batch dims that broadcast (size 1 or missing on one side)."""
    n, k, m = (draw(st.integers(1, max_side)) for _ in range(3))
    a_vec, b_vec = draw(st.booleans()), draw(st.booleans())
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(
        num_shapes=2, min_dims=0, max_dims=max_batch_dims, max_side=3)).input_shapes
    a = (k,) if a_vec and draw(st.booleans()) else batch_a + (n, k)
    b = (k,) if b_vec and draw(st.booleans()) else batch_b + (k, m)
    return a, b
