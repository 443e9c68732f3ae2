"""DPO: the loss node (ops/dpo.py, F.dpo_loss) against finite differences and a direct PyTorch
computation of the same formula; sequence log-probabilities; DPO training on generated
preference pairs (margin and accuracy rise, the reference stays bitwise the same)."""
import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st
from strategies import seeds, shapes, with_fixtures

import tinygrad_llm.nn.functional as F
from tinygrad_llm import GPT, GPTConfig, Tensor, gradcheck, manual_seed, no_grad
from finetune_data import pairs, template_tokenizer, words
from tinygrad_llm.finetune import (DPO_FIELDS, END_OF_TEXT, IGNORE_INDEX, DPOConfig, encode_records, evaluate_dpo,
                                   frozen_copy, sequence_logprobs, train_dpo)
from tinygrad_llm.ops.dpo import DPOLoss


def leaves(rs, shape, device, scale=3.0, n=4):
    return [Tensor(rs.standard_normal(shape) * scale, requires_grad=True, device=device) for _ in range(n)]


def np_dpo(pc, pr, rc, rr, beta, reduction="mean"):
    z = beta * ((pc - rc) - (pr - rr))
    losses = np.logaddexp(0.0, -z)
    return {"mean": losses.mean() if losses.size else 0.0, "sum": losses.sum(), "none": losses}[reduction]


# ---------------------------------------------------------------------------- the node

@with_fixtures
@given(shape=shapes(max_dims=2), beta=st.sampled_from([0.01, 0.1, 1.0, 5.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]), seed=seeds())
def test_dpo_loss_gradcheck(device, shape, beta, reduction, seed):
    """d loss / d each of the four log-probabilities, every shape (0-d included), float64."""
    xs = leaves(np.random.default_rng(seed), shape, device)
    gradcheck(lambda *a: F.dpo_loss(*a, beta=beta, reduction=reduction), xs)


def test_dpo_loss_is_one_node_with_the_derived_gradient(device):
    rs = np.random.default_rng(0)
    pc, pr, rc, rr = leaves(rs, (5,), device)
    beta = 0.3
    loss = F.dpo_loss(pc, pr, rc, rr, beta=beta)
    assert isinstance(loss.grad_fn, DPOLoss)
    assert [t is s for t, s in zip(loss.grad_fn.inputs, (pc, pr, rc, rr))] == [True] * 4
    loss.backward()
    z = beta * ((to_np(pc) - to_np(rc)) - (to_np(pr) - to_np(rr)))
    s = 1.0 / (1.0 + np.exp(z))                          # sigmoid(-z)
    want = -beta * s / 5                                 # docs/backprop.md: d loss / d pi_c
    np.testing.assert_allclose(to_np(pc.grad), want, rtol=1e-12)
    np.testing.assert_allclose(to_np(pr.grad), -want, rtol=1e-12)
    np.testing.assert_allclose(to_np(rc.grad), -want, rtol=1e-12)
    np.testing.assert_allclose(to_np(rr.grad), want, rtol=1e-12)
    np.testing.assert_allclose(to_np(loss), np_dpo(*(to_np(t) for t in (pc, pr, rc, rr)), beta), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dpo_loss_matches_pytorch(reduction, dtype):
    """The loss and all four gradients equal PyTorch's autograd of the same formula."""
    torch = pytest.importorskip("torch")
    rs = np.random.default_rng(1)
    arrays = [(rs.standard_normal(7) * 20).astype(dtype) for _ in range(4)]
    beta = 0.1
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    ps = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
    loss = F.dpo_loss(*ts, beta=beta, reduction=reduction)
    logits = beta * ((ps[0] - ps[2]) - (ps[1] - ps[3]))
    ref = -torch.nn.functional.logsigmoid(logits)
    ref = {"mean": ref.mean(), "sum": ref.sum(), "none": ref}[reduction]
    cot = rs.standard_normal(loss.shape)
    loss.backward(Tensor(cot.astype(dtype)))
    ref.backward(torch.tensor(cot))
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-7)
    assert loss.dtype == dtype
    np.testing.assert_allclose(loss.numpy(), ref.detach().numpy(), **tol)
    for t, p in zip(ts, ps):
        assert t.grad.dtype == dtype
        np.testing.assert_allclose(t.grad, p.grad.numpy(), **tol)


def test_dpo_loss_is_finite_at_huge_margins(device):
    """-log sigmoid(z) for z = +-1e4 (float32): 0 and 1e4, with gradients 0 and -beta; no NaN or inf."""
    pc = Tensor(np.array([1e5, -1e5], dtype=np.float32), requires_grad=True, device=device)
    zeros = [Tensor(np.zeros(2, dtype=np.float32), device=device) for _ in range(3)]
    loss = F.dpo_loss(pc, *zeros, beta=0.1, reduction="none")
    np.testing.assert_allclose(to_np(loss), [0.0, 1e4], rtol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(to_np(pc.grad), [0.0, -0.1], rtol=1e-6)


def test_dpo_loss_without_pairs_is_zero_with_zero_gradient(device):
    pc = Tensor(np.zeros(0), requires_grad=True, device=device)
    loss = F.dpo_loss(pc, Tensor(np.zeros(0), device=device), np.zeros(0), np.zeros(0))
    assert loss.item() == 0.0
    loss.backward()
    assert to_np(pc.grad).shape == (0,)


def test_dpo_loss_reference_may_be_arrays_or_lists():
    pc, pr = Tensor([1.0, 2.0], requires_grad=True), Tensor([0.5, 3.0], requires_grad=True)
    a = F.dpo_loss(pc, pr, [0.2, 0.1], np.array([0.3, 0.4]), beta=0.5)
    b = F.dpo_loss(pc, pr, Tensor([0.2, 0.1]), Tensor([0.3, 0.4]), beta=0.5)
    assert a.item() == b.item()


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=0.0), "beta must be a finite number > 0"),
    (dict(beta=-0.1), "beta must be a finite number > 0"),
    (dict(beta=float("nan")), "beta must be a finite number > 0"),
    (dict(beta=True), "beta must be a finite number > 0"),
    (dict(reduction="avg"), "reduction must be one of"),
])
def test_dpo_loss_bad_arguments(kwargs, match):
    x = [Tensor([1.0, 2.0], requires_grad=True) for _ in range(4)]
    with pytest.raises(ValueError, match=match):
        F.dpo_loss(*x, **kwargs)


def test_dpo_loss_bad_shapes_and_types():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match=r"reference_rejected_logps has shape \(3,\)"):
        F.dpo_loss(x, x, [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="policy_rejected_logps must be a Tensor"):
        F.dpo_loss(x, [1.0, 2.0], x, x)
    with pytest.raises(TypeError, match="must be floating point"):
        F.dpo_loss(x, x, Tensor([1, 2]), x)


# ---------------------------------------------------------------------------- sequence log-probabilities

def test_sequence_logprobs_match_a_direct_computation_and_gradcheck():
    """Sum (and mean) of log softmax at the targets over the counted positions only."""
    rs = np.random.default_rng(2)
    B, T, V = 3, 5, 7
    logits = rs.standard_normal((B, T, V)) * 2
    targets = rs.integers(0, V, (B, T))
    targets[0, :2] = IGNORE_INDEX
    targets[2, 3:] = IGNORE_INDEX
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    counted = targets != IGNORE_INDEX
    picked = np.take_along_axis(logp, np.where(counted, targets, 0)[..., None], -1)[..., 0]
    want = (picked * counted).sum(1)
    x = Tensor(logits, requires_grad=True)
    np.testing.assert_allclose(sequence_logprobs(x, targets).numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(sequence_logprobs(x, targets, average=True).numpy(), want / counted.sum(1),
                               rtol=1e-12)
    gradcheck(lambda x: sequence_logprobs(x, targets), [x])
    gradcheck(lambda x: sequence_logprobs(x, targets, average=True), [x])


# ---------------------------------------------------------------------------- training

def test_dpo_raises_margin_and_accuracy_and_leaves_the_reference_untouched():
    tok = template_tokenizer()
    eos = tok.special_tokens[END_OF_TEXT]
    ws = words()
    train = encode_records(pairs(ws[:96]), tok, eos, DPO_FIELDS)
    val = encode_records(pairs(ws[96:128]), tok, eos, DPO_FIELDS)
    manual_seed(0)
    policy = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32))
    reference = frozen_copy(policy)
    ref_before = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    cfg = DPOConfig(epochs=3, lr=3e-3, batch_size=16, beta=0.1, log_interval=0)
    start = evaluate_dpo(policy, reference, val, cfg, eos)
    assert start["margin"] == 0.0 and start["accuracy"] == 0.0    # the policy is the reference
    np.testing.assert_allclose(start["loss"], np.log(2.0), rtol=1e-6)
    history = train_dpo(policy, reference, train, val, cfg, eos, log=lambda s: None)
    margins = [h["val"]["margin"] for h in history]
    assert margins[0] > 0 and margins[-1] > margins[0] and margins[-1] > 1.0, margins
    assert history[-1]["val"]["accuracy"] >= 0.9 and history[-1]["val"]["loss"] < 0.5, history[-1]
    assert history[-1]["train"]["margin"] > history[0]["train"]["margin"]
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ref_before[k], err_msg=k)   # bitwise
        assert not reference.get_submodule(k.rpartition(".")[0])._parameters[k.rpartition(".")[2]].requires_grad
    with no_grad():                                          # and the policy did move
        assert any(not np.array_equal(p.numpy(), ref_before[k]) for k, p in policy.state_dict().items())


def test_dpo_config_rejects_bad_beta():
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        DPOConfig(beta=-1.0)
