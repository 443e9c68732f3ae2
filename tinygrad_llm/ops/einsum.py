"""Einstein summation as one graph node, any number of operands (``tinygrad_llm.einsum``).

The node receives the equation already spelled out by the wrapper (tensor.py): one string
of letters per operand (``terms``, ellipses replaced by letters of their own, every letter
one axis) and the output's letters (``out``). A letter's size is the same in every operand,
or 1 where it broadcasts. The derivation is in docs/backprop.md, section "Einsum":

    forward   out = einsum(terms -> out, X_1, ..., X_n)   (operands broadcast to full size first)
    backward  dX_i = einsum(the other terms and out -> the letters of term i, X_j (j != i) and g)

with three repairs for what einsum cannot write directly: a letter of term i found in no
other term and not in the output (summed away by the forward) gets g broadcast along it;
a letter repeated in term i (a diagonal, "ii->i") is put back on the diagonal with identity
matrices; and an axis of size 1 that was broadcast is summed back to size 1.
"""
from __future__ import annotations

from ..function import Function

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def full_sizes(terms, shapes) -> dict:
    """letter -> its size over all operands (the largest: 1 broadcasts)."""
    sizes = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            if sizes.get(c, 1) == 1:
                sizes[c] = n
    return sizes


class Einsum(Function):
    """out = einsum(",".join(terms) + "->" + out, *xs); ``terms`` and ``out`` are letters only."""

    def forward(self, *xs, terms=(), out=""):
        xp = self.xp
        self.terms, self.out_term = terms, out
        self.sizes = full_sizes(terms, [x.shape for x in xs])
        self.shapes = [x.shape for x in xs]
        self.xs = [xp.broadcast_to(x, tuple(self.sizes[c] for c in t)) for x, t in zip(xs, terms)]
        return xp.einsum(",".join(terms) + "->" + out, *self.xs, optimize=True)

    def backward(self, g):
        return tuple(self.grad_of(i, g) if need else None for i, need in enumerate(self.needs_input_grad))

    def grad_of(self, i, g):
        xp, term, sizes = self.xp, self.terms[i], self.sizes
        other_terms = [t for j, t in enumerate(self.terms) if j != i] + [self.out_term]
        others = [x for j, x in enumerate(self.xs) if j != i] + [g]
        letters = "".join(dict.fromkeys(term))                  # term i's letters, once each, in order
        seen = set("".join(other_terms))
        kept = "".join(c for c in letters if c in seen)
        d = xp.asarray(xp.einsum(",".join(other_terms) + "->" + kept, *others, optimize=True))
        # letters only term i had were summed by the forward: each of their entries got all of g
        d = xp.broadcast_to(d.reshape([sizes[c] if c in seen else 1 for c in letters]),
                            tuple(sizes[c] for c in letters))
        if len(letters) < len(term):                            # a repeated letter: a diagonal
            spare = iter(c for c in LETTERS if c not in sizes)
            written, eyes, eye_terms = "", [], []
            for c in term:
                if c in written:
                    f = next(spare)
                    eyes.append(xp.eye(sizes[c], dtype=g.dtype))
                    eye_terms.append(c + f)
                    c = f
                written += c
            d = xp.einsum(",".join([letters] + eye_terms) + "->" + written, d, *eyes, optimize=True)
        shape = self.shapes[i]
        broadcast = tuple(a for a, (n, c) in enumerate(zip(shape, term)) if n == 1 and sizes[c] != 1)
        return d.sum(axis=broadcast, keepdims=True) if broadcast else d
