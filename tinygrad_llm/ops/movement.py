"""Ops that move or select elements without arithmetic. Their backward passes route
``g`` back to where each element came from (and sum where one element went to many).
"""
from __future__ import annotations

from .. import backend
from ..function import Function, unbroadcast


class Reshape(Function):
    """out = x with a new shape (same elements, C order).   dx = g reshaped back."""

    def forward(self, x, shape=None):
        self.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise backend.ShapeError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
                             f"into shape {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.in_shape)


class Permute(Function):
    """out = x with its axes reordered.   dx = g with the inverse order."""

    def forward(self, x, axes=None):
        if any(not -x.ndim <= a < x.ndim for a in axes):
            raise IndexError(f"permute: axes {tuple(axes)} are out of range for shape {x.shape}")
        axes = tuple(a % x.ndim for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise backend.ShapeError(f"permute: {axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
        self.inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return x.transpose(axes)

    def backward(self, g):
        return g.transpose(self.inverse)


class Expand(Function):
    """out = x broadcast to ``shape`` (a view).   dx = g summed over the broadcast axes."""

    def forward(self, x, shape=None):
        self.in_shape = x.shape
        try:
            return self.xp.broadcast_to(x, shape)
        except ValueError:
            raise backend.ShapeError(f"cannot expand a tensor of shape {x.shape} to shape {tuple(shape)}") from None

    def backward(self, g):
        return unbroadcast(self.xp, g, self.in_shape)


def _has_array(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class GetItem(Function):
    """out = x[index]: ints, slices (with steps), None, Ellipsis, integer or boolean arrays.

    ``then``, when given, is a second index applied to that result, ``x[index][then]``: the
    Tensor's PyTorch-rule indexing splits an index that mixes ints with arrays into its basic
    part and its advanced part this way (``_index_arg`` in tensor.py).

    dx = zeros like x, with g added at the selected places. With integer arrays one element
    may be selected several times; its gradient is the sum (an unbuffered scatter-add).
    """

    def forward(self, x, index=None, then=None):
        self.in_shape, self.index, self.then = x.shape, index, then
        self.advanced = _has_array(index)
        out = x[index]
        if then is not None:
            self.mid_shape = out.shape
            out = out[then]
        return out

    def backward(self, g):
        xp = self.xp
        if self.then is not None:            # back through the second index first
            dmid = xp.zeros(self.mid_shape, dtype=g.dtype)
            backend.scatter_add(xp, dmid, self.then, g)
            g = dmid
        dx = xp.zeros(self.in_shape, dtype=g.dtype)
        if self.advanced:
            backend.scatter_add(xp, dx, self.index, g)
        else:
            dx[self.index] = g
        return dx


class Cat(Function):
    """out = concatenate(xs, axis).   dx_i = the slice of g that x_i filled."""

    def forward(self, *xs, axis=0):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return self.xp.concatenate(xs, axis=axis)

    def backward(self, g):
        out, start = [], 0
        for n in self.sizes:
            idx = [slice(None)] * g.ndim
            idx[self.axis] = slice(start, start + n)
            out.append(g[tuple(idx)])
            start += n
        return tuple(out)


class Stack(Function):
    """out = stack(xs, axis) (a new axis).   dx_i = g taken at position i of that axis."""

    def forward(self, *xs, axis=0):
        self.axis = axis
        return self.xp.stack(xs, axis=axis)

    def backward(self, g):
        moved = self.xp.moveaxis(g, self.axis, 0)
        return tuple(moved[i] for i in range(moved.shape[0]))


class Flip(Function):
    """out = x reversed along ``axes`` (a copy, as PyTorch's flip).   dx = g reversed along them."""

    def forward(self, x, axes=()):
        self.axes = axes
        return self.xp.flip(x, axes).copy()

    def backward(self, g):
        return self.xp.flip(g, self.axes)


class Repeat(Function):
    """out = x tiled ``reps[d]`` times along each axis d (PyTorch's repeat, NumPy's tile);
    ``reps`` may be longer than x.ndim (x then gets leading axes of size 1).

    Tile t along axis d holds a copy of x, so dx is the sum of g over the tiles: g reshaped
    to (r0, n0, r1, n1, ...), summed over the r axes.
    """

    def forward(self, x, reps=()):
        self.x_shape, self.reps = x.shape, reps
        self.sizes = (1,) * (len(reps) - x.ndim) + x.shape     # x's shape with the leading 1s
        return self.xp.tile(x, reps)

    def backward(self, g):
        split = [n for r, size in zip(self.reps, self.sizes) for n in (r, size)]
        tiles = tuple(range(0, 2 * len(self.reps), 2))
        return g.reshape(split).sum(axis=tiles).reshape(self.x_shape)


class Tril(Function):
    """out = x on and below diagonal ``diagonal`` of its last two axes (entry (i, j) kept when
    j - i <= diagonal), 0 above.   dx = g with the same entries kept."""

    def forward(self, x, diagonal=0):
        n, m = x.shape[-2:]
        self.keep = self.xp.tri(n, m, k=diagonal, dtype=bool)
        return self.xp.where(self.keep, x, x.dtype.type(0))

    def backward(self, g):
        return self.xp.where(self.keep, g, g.dtype.type(0))


class Triu(Tril):
    """out = x on and above diagonal ``diagonal`` of its last two axes (entry (i, j) kept when
    j - i >= diagonal), 0 below.   dx = g with the same entries kept."""

    def forward(self, x, diagonal=0):
        n, m = x.shape[-2:]
        self.keep = ~self.xp.tri(n, m, k=diagonal - 1, dtype=bool)
        return self.xp.where(self.keep, x, x.dtype.type(0))


class Pad(Function):
    """out = x with ``widths[d] = (before, after)`` entries of ``value`` added on each side of
    axis d; a negative width removes that many entries instead (PyTorch's constant pad).

    The part of x that survives (``src``) lands in one window of out (``dst``); everything
    else in out is the constant. So dx is g read back from that window, and 0 for the
    entries of x that were cut off.
    """

    def forward(self, x, widths=(), value=0.0):
        xp = self.xp
        self.in_shape = x.shape
        self.src = tuple(slice(max(-b, 0), n - max(-a, 0)) for n, (b, a) in zip(x.shape, widths))
        self.dst = tuple(slice(max(b, 0), max(b, 0) + max(n - max(-b, 0) - max(-a, 0), 0))
                         for n, (b, a) in zip(x.shape, widths))
        out = xp.full(tuple(n + b + a for n, (b, a) in zip(x.shape, widths)), value, dtype=x.dtype)
        out[self.dst] = x[self.src]
        return out

    def backward(self, g):
        dx = self.xp.zeros(self.in_shape, dtype=g.dtype)
        dx[self.src] = g[self.dst]
        return dx


def along(xp, index, axis):
    """The NumPy index that reads element (i0, ..., index[i0, ..., ik], ..., ik) for every
    position (i0, ..., ik) of ``index``: ``index`` on ``axis``, each position's own
    coordinate (a broadcast arange) on every other axis. Gather and scatter address this way."""
    where = []
    for d, n in enumerate(index.shape):
        if d == axis:
            where.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            where.append(xp.arange(n).reshape(shape))
    return tuple(where)


class Gather(Function):
    """out[i][j][k] = x[i][index[i][j][k]][k] (axis 1; the same on any axis); out has index's shape.

    Each out element is one x element, so dx is zeros with every g[i][j][k] added at the x
    place it was read from; a place read twice gets the sum (a scatter-add). index gets no
    gradient.
    """

    def forward(self, x, index, axis=0):
        self.in_shape, self.where = x.shape, along(self.xp, index, axis)
        return x[self.where]

    def backward(self, g):
        dx = self.xp.zeros(self.in_shape, dtype=g.dtype)
        backend.scatter_add(self.xp, dx, self.where, g)
        return dx, None


class ScatterAdd(Function):
    """out = x, then out[i][index[i][j][k]][k] += src[i][j][k] (axis 1; the same on any axis)
    for every position of index (src may be larger than index: its other entries are unused).

    out is x plus terms that do not depend on x, so dx = g. src[i][j][k] is added to one out
    element, so dsrc[i][j][k] is g at that element (a gather), and 0 for unused entries.
    index gets no gradient.
    """

    def forward(self, x, index, src, axis=0):
        self.where, self.src_shape = along(self.xp, index, axis), src.shape
        self.used = tuple(slice(0, n) for n in index.shape)      # the entries of src that index addresses
        out = x.copy()
        backend.scatter_add(self.xp, out, self.where, src[self.used])
        return out

    def backward(self, g):
        dsrc = None
        if self.needs_input_grad[2]:
            dsrc = self.xp.zeros(self.src_shape, dtype=g.dtype)
            dsrc[self.used] = g[self.where]
        return g, None, dsrc
