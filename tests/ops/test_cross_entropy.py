"""cross_entropy (ops/cross_entropy.py, fast kernel for class indices in kernels/cpu.py):
forward and gradients against NumPy, PyTorch and finite differences on both tiers, the tiers
against each other, class weights, probability targets, label smoothing, ignore_index, the
"mean" over nothing, huge logits, bad input."""
import numpy as np
import pytest
from conftest import to_np
from helper_op import fixture_ok, helper_test_op, leaf, np_log_softmax, np_softmax, seeds, tiers_agree
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, gradcheck, no_grad


def np_cross_entropy(x, t, ignore_index=-100, reduction="mean", eps=0.0):
    C = x.shape[-1]
    x2, t2 = x.reshape(-1, C), t.reshape(-1)
    logp = np_log_softmax(x2, -1)
    valid = t2 != ignore_index
    safe = np.where(valid, t2, 0)
    nll = -logp[np.arange(len(t2)), safe]
    smooth = -logp.mean(-1)
    loss = np.where(valid, (1 - eps) * nll + eps * smooth, 0.0)
    if reduction == "none":
        return loss.reshape(t.shape)
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(valid.sum(), 1)


def _targets(rs, shape, C, ignore_frac):
    t = rs.integers(0, C, shape)
    t[rs.random(shape) < ignore_frac] = -100
    return t


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), scale=st.sampled_from([1.0, 20.0]), seed=seeds)
def test_cross_entropy_against_numpy_and_gradcheck(device, tier, lead, C, ignore_frac, reduction, eps, scale, seed):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal(lead + (C,)) * scale
    t = _targets(rs, lead, C, ignore_frac)
    helper_test_op([x, t], lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=eps),
                   lambda x, t: np_cross_entropy(x, t, reduction=reduction, eps=eps), device=device)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_forward_and_grad_match_numpy(device, tier, reduction, eps):
    rs = np.random.default_rng(7)
    x, t = rs.standard_normal((3, 4, 6)), _targets(rs, (3, 4), 6, 0.25)
    t[0, 0] = -100
    tx = leaf(x, device)
    loss = F.cross_entropy(tx, t, reduction=reduction, label_smoothing=eps)
    np.testing.assert_allclose(to_np(loss), np_cross_entropy(x, t, reduction=reduction, eps=eps), rtol=1e-12)
    loss.sum().backward()
    # the documented backward: (softmax - onehot_smoothed) * scale, zero on ignored rows
    p = np_softmax(x, -1)
    target = np.full_like(p, eps / 6)
    valid = t != -100
    target[valid, t[valid]] += 1 - eps
    scale = 1.0 / valid.sum() if reduction == "mean" else 1.0
    expect = np.where(valid[..., None], (p - target) * scale, 0.0)
    np.testing.assert_allclose(to_np(tx.grad), expect, rtol=1e-10, atol=1e-14)


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), seed=seeds)
def test_cross_entropy_class_weights_gradcheck(device, tier, lead, C, ignore_frac, reduction, eps, seed):
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (C,)) * 3, device)
    t = Tensor(_targets(rs, lead, C, ignore_frac), device=device)
    w = Tensor(rs.uniform(0.1, 3.0, C), device=device)
    gradcheck(lambda x: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=eps), [x])


@fixture_ok
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       reduction=st.sampled_from(["mean", "sum", "none"]), eps=st.sampled_from([0.0, 0.2]),
       weighted=st.booleans(), seed=seeds)
def test_cross_entropy_probability_targets_gradcheck(device, tier, lead, C, reduction, eps, weighted, seed):
    """Gradients with respect to both the logits and the (soft) targets."""
    rs = np.random.default_rng(seed)
    x = leaf(rs.standard_normal(lead + (C,)) * 3, device)
    y = leaf(rs.random(lead + (C,)), device)         # any non-negative weights; need not sum to 1
    w = Tensor(rs.uniform(0.1, 3.0, C), device=device) if weighted else None
    gradcheck(lambda x, y: F.cross_entropy(x, y, w, reduction=reduction, label_smoothing=eps), [x, y])


def test_cross_entropy_one_hot_probabilities_equal_class_indices(tier):
    rs = np.random.default_rng(14)
    x, t = rs.standard_normal((5, 4)), rs.integers(0, 4, 5)
    w = rs.uniform(0.5, 2.0, 4)
    for eps in (0.0, 0.3):
        for reduction in ("sum", "none"):      # "mean" divides differently: by weights vs by rows
            a = F.cross_entropy(Tensor(x), t, w, reduction=reduction, label_smoothing=eps).numpy()
            b = F.cross_entropy(Tensor(x), np.eye(4)[t], w, reduction=reduction, label_smoothing=eps).numpy()
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_cross_entropy_weighted_mean_divides_by_the_target_weights(tier):
    x, t, w = np.zeros((3, 2)), np.array([0, 1, 1]), np.array([1.0, 3.0])
    # every row's loss is log 2, weighted by w[t]: (1 + 3 + 3) log 2 / (1 + 3 + 3)
    np.testing.assert_allclose(F.cross_entropy(Tensor(x), t, w).item(), np.log(2.0))
    np.testing.assert_allclose(F.cross_entropy(Tensor(x), t, w, reduction="sum").item(), 7 * np.log(2.0))
    zero = F.cross_entropy(Tensor(x), t, np.zeros(2))       # summed weights 0: loss 0, not NaN
    assert zero.item() == 0.0


@pytest.mark.parametrize("weight, targets, eps", [([0.0, 1.0, 1.0], [0, 0], 0.2),     # smoothing adds mass
                                                  ([1.0, -1.0, 1.0], [0, 1], 0.0)])   # weights cancel
def test_cross_entropy_mean_over_zero_total_weight_is_zero_with_zero_gradient(tier, weight, targets, eps):
    x = leaf(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]]))
    loss = F.cross_entropy(x, np.array(targets), np.array(weight), label_smoothing=eps)
    assert loss.item() == 0.0
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    assert F.cross_entropy(x, np.array(targets), np.array(weight), label_smoothing=eps,
                           reduction="sum").item() != 0.0     # the rows themselves do have a loss


def test_cross_entropy_probability_targets_edge_cases(tier):
    x = leaf(np.zeros((0, 3)))
    loss = F.cross_entropy(x, np.zeros((0, 3)))                # no rows: 0, not NaN
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == (0, 3)
    with pytest.raises(ValueError, match="ignore_index=1 is not supported with class-probability"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.full((2, 3), 1 / 3), ignore_index=1)
    # Python float lists keep the logits' precision (float64 here), not float32
    x64 = np.random.default_rng(15).standard_normal((2, 3))
    y = [[0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]
    w = [0.3, 1.7, 1.1]
    a = F.cross_entropy(Tensor(x64), y, w).item()
    b = F.cross_entropy(Tensor(x64), np.array(y), np.array(w)).item()
    assert a == b


def test_cross_entropy_all_ignored_is_zero_not_nan(tier):
    x = leaf(np.random.default_rng(8).standard_normal((4, 5)))
    for reduction in ("mean", "sum", "none"):
        x.grad = None
        loss = F.cross_entropy(x, np.full(4, -100), reduction=reduction)
        np.testing.assert_array_equal(loss.numpy(), 0.0)
        loss.sum().backward()
        np.testing.assert_array_equal(x.grad, np.zeros((4, 5)))


def test_cross_entropy_custom_ignore_index_and_target_kinds(tier):
    rs = np.random.default_rng(9)
    x = rs.standard_normal((5, 3)).astype(np.float32)
    t = np.array([0, 2, 1, 2, 0])
    ref = np_cross_entropy(x.astype(np.float64), t, ignore_index=2)
    for targets in (t, t.astype(np.int32), t.astype(np.uint8), t.tolist(), Tensor(t)):
        loss = F.cross_entropy(Tensor(x), targets, ignore_index=2)
        assert loss.dtype == np.float32 and loss.shape == ()
        np.testing.assert_allclose(loss.item(), ref, rtol=1e-6)


def test_cross_entropy_single_row_and_huge_logits(tier):
    x = leaf(np.array([1e4, -1e4, 0.0]))
    loss = F.cross_entropy(x, 1)                      # logits (C,), target ()
    np.testing.assert_allclose(loss.item(), 2e4)
    loss.backward()
    np.testing.assert_allclose(x.grad, [1.0, -1.0, 0.0])
    x32 = leaf(np.array([[1e4, -1e4, 1e4]], dtype=np.float32))
    loss = F.cross_entropy(x32, np.array([0]))
    np.testing.assert_allclose(loss.item(), np.log(2.0), rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(x32.grad, [[-0.5, 0.0, 0.5]], atol=1e-7)


def test_cross_entropy_bad_inputs():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"target 4 is out of range.*\[0, 3\]"):
        F.cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        F.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"probability targets must have the logits' shape \(3, 4\)"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(TypeError, match="integer class indices or floating-point"):
        F.cross_entropy(x, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"need targets of shape \(3,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"need targets of shape \(3,\)"):
        F.cross_entropy(x, np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        F.cross_entropy(Tensor(np.zeros((3, 4), dtype=np.int64)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"weight must have one value per class, shape \(4,\)"):
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(3)))
    with pytest.raises(TypeError, match="weight must be floating point"):
        F.cross_entropy(x, np.array([0, 1, 2]), np.ones(4, dtype=np.int64))
    with pytest.raises(ValueError, match="weight is a constant"):
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(4), requires_grad=True))
    with no_grad():   # no gradient asked for: a weight that requires grad is fine
        F.cross_entropy(x, np.array([0, 1, 2]), Tensor(np.ones(4), requires_grad=True))


# ============================================================================ PyTorch

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("ignore_frac", [0.0, 0.4])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_torch(tier, dtype, reduction, eps, ignore_frac, weighted):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(2)
    x = (rs.standard_normal((24, 11)) * 3.0).astype(dtype)
    t = rs.integers(0, 11, 24)
    t[rs.random(24) < ignore_frac] = -100
    w = rs.uniform(0.1, 3.0, 11) if weighted else None
    ours_w = None if w is None else w.astype(dtype)
    theirs_w = None if w is None else torch.tensor(w)
    helper_test_op([x, t], lambda x, t: F.cross_entropy(x, t, ours_w, reduction=reduction, label_smoothing=eps),
                   torch_fn=lambda x, t: torch.nn.functional.cross_entropy(x, t, theirs_w, reduction=reduction,
                                                                           label_smoothing=eps))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_probability_targets_and_their_gradient_match_torch(tier, dtype, reduction, eps, weighted):
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(13)
    x = (rs.standard_normal((9, 6)) * 3.0).astype(dtype)
    y = rs.random((9, 6))
    y = (y / y.sum(-1, keepdims=True)).astype(dtype)
    w = rs.uniform(0.1, 3.0, 6) if weighted else None
    ours_w = None if w is None else w.astype(dtype)
    theirs_w = None if w is None else torch.tensor(w)
    helper_test_op([x, y], lambda x, y: F.cross_entropy(x, y, ours_w, reduction=reduction, label_smoothing=eps),
                   torch_fn=lambda x, y: torch.nn.functional.cross_entropy(x, y, theirs_w, reduction=reduction,
                                                                           label_smoothing=eps))


def test_cross_entropy_3d_logits_match_flattened_torch(tier):
    # our classes are on the last axis, (B, T, V) as GPT has them; PyTorch wants (B*T, V)
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(3)
    x, t = rs.standard_normal((2, 5, 7)), rs.integers(0, 7, (2, 5))
    helper_test_op([x, t], lambda x, t: F.cross_entropy(x, t, ignore_index=3),
                   torch_fn=lambda x, t: torch.nn.functional.cross_entropy(x.reshape(10, 7), t.reshape(10),
                                                                           ignore_index=3))


# ============================================================================ fast tier == reference tier

@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2).map(tuple), C=st.integers(1, 6),
       ignore_frac=st.sampled_from([0.0, 0.3, 1.0]), reduction=st.sampled_from(["mean", "sum", "none"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=seeds)
def test_cross_entropy_fast_tier_equals_reference(lead, C, ignore_frac, reduction, eps, weighted, dtype, seed):
    """Different summation orders (the fast forward sums exp(z) by rows in place, its backward
    folds 1 / s into one factor): equal to float rounding (float64 1e-10, float32 1e-5)."""
    rs = np.random.default_rng(seed)
    x = (rs.standard_normal(lead + (C,)) * 3).astype(dtype)
    t = _targets(rs, lead, C, ignore_frac)
    w = rs.uniform(0.1, 3.0, C).astype(dtype) if weighted else None
    tiers_agree(lambda x, t: F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=eps), [x, t])
