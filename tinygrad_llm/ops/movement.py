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
            raise ValueError(f"cannot reshape a tensor of shape {x.shape} ({x.size} elements) "
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
            raise ValueError(f"permute: {axes} is not a permutation of the {x.ndim} axes of shape {x.shape}")
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
            raise ValueError(f"cannot expand a tensor of shape {x.shape} to shape {tuple(shape)}") from None

    def backward(self, g):
        return unbroadcast(self.xp, g, self.in_shape)


def _has_array(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class GetItem(Function):
    """out = x[index]: ints, slices (with steps), None, Ellipsis, integer or boolean arrays.

    dx = zeros like x, with g added at the selected places. With integer arrays one element
    may be selected several times; its gradient is the sum (an unbuffered scatter-add).
    """

    def forward(self, x, index=None):
        self.in_shape, self.in_dtype, self.index = x.shape, x.dtype, index
        self.advanced = _has_array(index)
        return x[index]

    def backward(self, g):
        dx = self.xp.zeros(self.in_shape, dtype=g.dtype)
        if self.advanced:
            backend.scatter_add(self.xp, dx, self.index, g)
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
