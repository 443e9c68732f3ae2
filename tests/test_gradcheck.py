"""gradcheck itself: it passes on correct ops and fails, informatively, on a wrong backward,
on both of its paths (full Jacobian for small problems, sampled elements plus random
directions for large ones)."""
import importlib

import numpy as np
import pytest

from tinygrad_llm import Function, GradcheckError, Tensor, gradcheck

gc_module = importlib.import_module("tinygrad_llm.gradcheck")   # the package re-exports the function


class WrongSquare(Function):
    """out = x**2, with a backward that is wrong in one element (``bad``) by a factor 3."""

    def forward(self, x, bad=0):
        self.x, self.bad = x, bad
        return x * x

    def backward(self, g):
        dx = 2 * self.x * g
        dx.reshape(-1)[self.bad] *= 3
        return dx


class RightSquare(Function):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return 2 * self.x * g


class WrongSecondInput(Function):
    """out = a * b with db missing a factor: the error is in input 1, not input 0."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, g * self.a * 0.5


@pytest.fixture
def paths(monkeypatch):
    """Counts which of gradcheck's two paths ran."""
    calls = {"full": 0, "sampled": 0}
    full, sampled = gc_module._full_jacobian, gc_module._sampled

    def spy_full(*a, **k):
        calls["full"] += 1
        return full(*a, **k)

    def spy_sampled(*a, **k):
        calls["sampled"] += 1
        return sampled(*a, **k)
    monkeypatch.setattr(gc_module, "_full_jacobian", spy_full)
    monkeypatch.setattr(gc_module, "_sampled", spy_sampled)
    return calls


def leaf(a, device):
    return Tensor(a, device=device, requires_grad=True)


def test_passes_on_correct_ops_on_both_paths(device, paths):
    rs = np.random.default_rng(0)
    small = leaf(rs.standard_normal((3, 4)), device)
    assert gradcheck(lambda x: RightSquare.apply(x).sum(axis=1), [small]) is True
    assert paths == {"full": 1, "sampled": 0}
    large = leaf(rs.standard_normal((20, 30)), device)
    assert gradcheck(lambda x: (RightSquare.apply(x) * x.tanh()).sum(axis=0), [large]) is True
    assert paths == {"full": 1, "sampled": 1}


def test_full_jacobian_path_reports_input_element_and_both_values(device, paths):
    x = leaf(np.array([[1.0, 2.0], [3.0, 4.0]]), device)
    with pytest.raises(GradcheckError) as err:
        gradcheck(lambda t: WrongSquare.apply(t, bad=3), [x])
    assert paths["full"] == 1 and paths["sampled"] == 0
    msg = str(err.value)
    assert "input 0" in msg and "element (1, 1)" in msg and "output (1, 1)" in msg
    assert "analytic 24.0" in msg and "numeric 8.0" in msg   # 3 * 2 * 4 vs 2 * 4


def test_sampled_path_catches_a_wrong_element(device, paths):
    """200 elements > max_full: the sampled path, with every element sampled (n_samples)."""
    rs = np.random.default_rng(1)
    x = leaf(rs.uniform(0.5, 1.5, size=(10, 20)), device)
    with pytest.raises(GradcheckError, match=r"input 0 element \(6, 17\): analytic .* vs numeric"):
        gradcheck(lambda t: WrongSquare.apply(t, bad=137), [x], n_samples=200)
    assert paths == {"full": 0, "sampled": 1}


def test_sampled_path_random_directions_catch_what_sampling_missed(device):
    """With only 4 sampled elements the bad one is (almost surely) not sampled; the random
    directions through all elements still see it."""
    rs = np.random.default_rng(2)
    x = leaf(rs.uniform(0.5, 1.5, size=(10, 20)), device)
    with pytest.raises(GradcheckError, match="random direction"):
        gradcheck(lambda t: WrongSquare.apply(t, bad=137), [x], n_samples=4, seed=3)


def test_names_the_input_that_is_wrong(device):
    a = leaf(np.array([1.0, 2.0]), device)
    b = leaf(np.array([3.0, 4.0]), device)
    with pytest.raises(GradcheckError, match="input 1 "):
        gradcheck(WrongSecondInput.apply, [a, b])
    # an input that does not require grad is not checked (and is passed through)
    b.requires_grad_(False)
    assert gradcheck(WrongSecondInput.apply, [a, b])


def test_raise_exception_false_returns_false(device):
    x = leaf(np.array([1.0, 2.0, 3.0]), device)
    assert gradcheck(lambda t: WrongSquare.apply(t, bad=0), [x], raise_exception=False) is False
    assert gradcheck(lambda t: RightSquare.apply(t), [x], raise_exception=False) is True


def test_inputs_are_copied_to_float64_and_left_unchanged(device):
    x = leaf(np.array([0.1, 0.2, 0.3], dtype=np.float32), device)
    before = x.numpy().copy()
    seen = []

    def fn(t):
        seen.append(t.dtype)
        return t.exp()
    assert gradcheck(fn, [x])
    assert set(seen) == {np.dtype(np.float64)}
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None and x.dtype == np.float32


def test_bad_uses(device):
    x = leaf(np.array([1.0, 2.0]), device)
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(lambda t: t * 2, [Tensor([1.0, 2.0], device=device)])
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda t: 3.0, [x])
    with pytest.raises(TypeError, match="float64 all the way through"):
        gradcheck(lambda t: t.float() * 2, [x])
    assert gradcheck(lambda t: Tensor([1.0], dtype="float64", device=device), [x])  # ignores its input


def test_a_single_tensor_and_a_constant_output(device):
    x = leaf(np.array(0.5), device)
    assert gradcheck(lambda t: t.sigmoid(), x)
