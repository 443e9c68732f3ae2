"""einsum (ops/einsum.py): random equations of one to three operands (repeated letters,
letters summed away, broadcast size-1 dims, ellipses, implicit outputs) against NumPy's
einsum and finite differences; PyTorch's answers and gradients; bad equations. No fast kernel."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import helper_test_op
from hypothesis import given
from hypothesis import strategies as st
from strategies import with_fixtures

import tinygrad_llm as tg
from tinygrad_llm import Tensor


@st.composite
def equations(draw):
    """(equation, operand shapes): 1-3 operands over the letters a-d (and sometimes '...')."""
    sizes = {c: draw(st.integers(1, 3)) for c in "abcd"}
    n = draw(st.integers(1, 3))
    ellipsis = draw(st.booleans())
    dots = tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))) if ellipsis else ()
    terms, shapes = [], []
    for _ in range(n):
        term = "".join(draw(st.lists(st.sampled_from("abcd"), min_size=0, max_size=3)))
        shape = [sizes[c] if not draw(st.integers(0, 5)) == 0 else 1 for c in term]   # sometimes broadcast
        for c in set(term):                                   # a repeated letter: one size in the term
            shape = [shape[term.index(c)] if t == c else s for t, s in zip(term, shape)]
        if ellipsis and draw(st.booleans()):
            k = draw(st.integers(0, len(dots)))
            d = tuple(1 if draw(st.booleans()) else s for s in dots[len(dots) - k:])
            term, shape = "..." + term, list(d) + shape
        terms.append(term)
        shapes.append(tuple(shape))
    used = sorted(set("".join(terms).replace(".", "")))
    if draw(st.booleans()):
        out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
        if any("..." in t for t in terms):         # NumPy requires it (PyTorch would sum those dims)
            out = "..." + out
        return ",".join(terms) + "->" + out, shapes
    return ",".join(terms), shapes


@with_fixtures
@given(case=equations(), data=st.data())
def test_einsum_against_numpy_and_gradcheck(device, case, data):
    equation, shapes = case
    rs = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    arrays = [rs.standard_normal(s) for s in shapes]
    out, grads = helper_test_op(arrays, lambda *ts: tg.einsum(equation, *ts),
                                lambda *xs: np.einsum(equation, *xs), device=device)
    assert [g.shape for g in grads] == list(shapes)


EXAMPLES = ["ij,jk->ik", "bij,bjk->bik", "ij,kj", "i,i->", "i,j->ij", "ii->i", "ii", "ij->ji", "ij->",
            "...ij,...jk->...ik", "b...d,b...d->b...", "bhqd,bhkd->bhqk", "iij,jk->ik", "Ab,bC", "i,i,i->", "...i->i"]


def _operands(equation, rs):
    shapes = {"ij,jk->ik": [(3, 4), (4, 5)], "bij,bjk->bik": [(2, 3, 4), (2, 4, 2)], "ij,kj": [(3, 4), (5, 4)],
              "i,i->": [(4,), (4,)], "i,j->ij": [(3,), (2,)], "ii->i": [(3, 3)], "ii": [(3, 3)], "ij->ji": [(2, 3)],
              "ij->": [(2, 3)], "...ij,...jk->...ik": [(2, 1, 3, 4), (5, 4, 2)],
              "b...d,b...d->b...": [(2, 3, 4), (2, 3, 4)], "bhqd,bhkd->bhqk": [(2, 2, 3, 4), (2, 2, 5, 4)],
              "iij,jk->ik": [(3, 3, 2), (2, 4)], "Ab,bC": [(2, 3), (3, 4)], "i,i,i->": [(3,), (3,), (3,)],
              "...i->i": [(2, 3, 4)]}
    return [rs.standard_normal(s) for s in shapes[equation]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("equation", EXAMPLES)
def test_einsum_matches_torch(equation, dtype):
    torch = pytest.importorskip("torch")
    arrays = [a.astype(dtype) for a in _operands(equation, np.random.default_rng(len(equation)))]
    helper_test_op(arrays, lambda *ts: tg.einsum(equation, *ts), torch_fn=lambda *ts: torch.einsum(equation, *ts))


def test_einsum_is_one_node_and_takes_pytorchs_forms(device):
    rs = np.random.default_rng(0)
    a, b = (Tensor(rs.standard_normal(s), device=device, requires_grad=True) for s in ((2, 3), (3, 4)))
    out = tg.einsum("i j , j k -> i k", a, b)
    assert out.grad_fn.name == "Einsum" and out.grad_fn.inputs[0] is a
    np.testing.assert_allclose(to_np(out), to_np(a) @ to_np(b), rtol=1e-12)
    np.testing.assert_allclose(to_np(tg.einsum("ij,jk", [a, b])), to_np(out), rtol=1e-12)   # a list of operands
    i = Tensor(np.arange(6).reshape(2, 3), device=device)                                     # integers: no gradient
    assert tg.einsum("ij->j", i).dtype == np.int64 and tg.einsum("ij->j", i).tolist() == [3, 5, 7]
    z = Tensor(np.zeros((0, 3)), device=device, requires_grad=True)
    y = tg.einsum("ij,jk->ik", z, b)
    y.sum().backward()
    assert y.shape == (0, 4) and z.grad.shape == (0, 3) and (to_np(b.grad) == 0).all()
    h = Tensor(np.ones((2, 2), dtype=np.float16), device=device, requires_grad=True)
    assert tg.einsum("ij,jk", h, h).dtype == np.float16


def test_einsum_nan_and_inf_propagate(device):
    a = Tensor(np.array([[1.0, np.nan], [np.inf, 2.0]]), device=device)
    out = to_np(tg.einsum("ij->i", a))
    assert np.isnan(out[0]) and out[1] == np.inf


def test_einsum_bad_equations():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((3, 4)))
    for equation, operands, match in [
            ("ij,jk->ik", (a,), "2 operand"), ("ijk,jk->ik", (a, b), "has 2 dims"), ("ij,ik->jk", (a, b), "size 3"),
            ("ij,jk->iz", (a, b), "appears in no operand"), ("ij,jk->ii", (a, b), "more than once"),
            ("i1,jk", (a, b), "letters"), ("ij,jk->ik", (a, Tensor(np.ones((3, 4), np.float32))), "one dtype"),
            ("ii", (a,), "repeated")]:
        with pytest.raises((ValueError, TypeError), match=match):
            tg.einsum(equation, *operands)
    with pytest.raises(RuntimeError):              # the class PyTorch raises for a bad equation
        tg.einsum("ij,ik->jk", a, b)
    with pytest.raises(TypeError, match="must be a Tensor"):
        tg.einsum("ij", np.ones((2, 3)))
