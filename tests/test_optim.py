"""AdamW, SGD, clip_grad_norm_ and the learning-rate schedule."""
import math
import pickle

import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
import tinygrad_llm.optim.optimizer as optimizer_mod
from tinygrad_llm import Tensor, backend
from tinygrad_llm.nn import Module, Parameter
from tinygrad_llm.nn.utils import clip_grad_norm_ as clip_from_nn
from tinygrad_llm.optim import SGD, AdamW, CosineWithWarmup, clip_grad_norm_, get_lr

SHAPES = [(3, 4), (5,), (), (2, 3, 2), (0, 3)]


def _arrays(seed, shapes=SHAPES, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _params(arrays, device="cpu"):
    return [Parameter(a.copy(), device=device) for a in arrays]


# ---------------------------------------------------------------------------- AdamW by hand

def test_adamw_matches_the_formulas_written_out():
    lr, b1, b2, eps, wd = 0.05, 0.8, 0.95, 1e-6, 0.1
    p0 = _arrays(0, [(4, 3)], np.float64)[0]
    grads = [_arrays(s, [(4, 3)], np.float64)[0] for s in range(1, 4)]
    p = Parameter(p0.copy())
    opt = AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        p.grad = g.copy()
        opt.step()
        ref = ref - lr * wd * ref                      # decoupled weight decay
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        ref = ref - lr * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(p.numpy(), ref, rtol=1e-12, atol=1e-14)
    state = opt.state_dict()["state"][0]
    assert state["step"] == 3
    np.testing.assert_allclose(state["exp_avg"], m, rtol=1e-12)
    np.testing.assert_allclose(state["exp_avg_sq"], v, rtol=1e-12)


# ---------------------------------------------------------------------------- against torch

def _torch_run(torch_opt_cls, groups_spec, defaults, inits, grad_seq):
    torch = pytest.importorskip("torch")
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in inits]
    groups = [dict(spec, params=[tparams[i] for i in spec["params"]]) for spec in groups_spec]
    topt = torch_opt_cls(groups, **defaults)
    for grads in grad_seq:
        for t, g in zip(tparams, grads):
            t.grad = None if g is None else torch.tensor(g)
        topt.step()
    return [t.detach().numpy() for t in tparams]


def _our_run(opt_cls, groups_spec, defaults, inits, grad_seq, flat=True):
    params = _params(inits)
    groups = [dict(spec, params=[params[i] for i in spec["params"]]) for spec in groups_spec]
    opt = opt_cls(groups, flat=flat, **defaults)
    for grads in grad_seq:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.copy()
        opt.step()
    return [p.numpy() for p in params]


GROUPS = [
    [{"params": [0, 1, 2, 3, 4]}],
    [{"params": [0, 3]}, {"params": [1, 2, 4], "lr": 0.003, "weight_decay": 0.0}],
]


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adamw_vs_torch(flat, groups, wd):
    torch = pytest.importorskip("torch")
    inits = _arrays(0)
    grad_seq = [_arrays(10 + i) for i in range(10)]
    defaults = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
    ours = _our_run(AdamW, groups, defaults, inits, grad_seq, flat)
    theirs = _torch_run(torch.optim.AdamW, groups, defaults, inits, grad_seq)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)


def test_adamw_group_overrides_vs_torch():
    torch = pytest.importorskip("torch")
    groups = [{"params": [0, 1]}, {"params": [2, 3], "betas": (0.5, 0.9), "eps": 1e-3, "lr": 0.1},
              {"params": [4], "weight_decay": 0.5}]
    inits, grad_seq = _arrays(1), [_arrays(20 + i) for i in range(10)]
    defaults = dict(lr=0.01, weight_decay=0.01)
    for a, b in zip(_our_run(AdamW, groups, defaults, inits, grad_seq),
                    _torch_run(torch.optim.AdamW, groups, defaults, inits, grad_seq)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)


def test_adamw_skips_params_without_grad_like_torch():
    """A None grad skips the parameter (no decay, no moments, no step count), as torch does."""
    torch = pytest.importorskip("torch")
    inits = _arrays(2)
    grad_seq = []
    for i in range(8):
        gs = _arrays(30 + i)
        gs[i % 3] = None          # a different parameter sits out each step
        if i < 2:
            gs[3] = None          # this one first gets a gradient at step 3
        grad_seq.append(gs)
    defaults = dict(lr=0.02, weight_decay=0.1)
    for flat in (True, False):
        for a, b in zip(_our_run(AdamW, GROUPS[0], defaults, inits, grad_seq, flat),
                        _torch_run(torch.optim.AdamW, GROUPS[0], defaults, inits, grad_seq)):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)


def test_adamw_chunked_update_vs_torch(monkeypatch):
    """Chunk boundaries inside and across parameters change nothing."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(optimizer_mod, "CPU_CHUNK", 5)
    inits, grad_seq = _arrays(3), [_arrays(40 + i) for i in range(4)]
    grad_seq[1][0] = None  # also the per-parameter path
    defaults = dict(lr=0.01, weight_decay=0.1)
    for a, b in zip(_our_run(AdamW, GROUPS[1], defaults, inits, grad_seq),
                    _torch_run(torch.optim.AdamW, GROUPS[1], defaults, inits, grad_seq)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
]


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("cfg", SGD_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_vs_torch(cfg, flat):
    torch = pytest.importorskip("torch")
    inits, grad_seq = _arrays(4), [_arrays(50 + i) for i in range(10)]
    grad_seq[3][1] = None
    groups = [{"params": [0, 1, 2]}, {"params": [3, 4], "lr": 0.01}]
    for a, b in zip(_our_run(SGD, groups, cfg, inits, grad_seq, flat),
                    _torch_run(torch.optim.SGD, groups, cfg, inits, grad_seq)):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)


# ---------------------------------------------------------------------------- flat buffers

class Quad(Module):
    """loss = sum((x @ w + b)**2), from Tensor ops only."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(_arrays(5, [(3, 2)])[0])
        self.b = Parameter(np.zeros(2, np.float32))
        self.unused = Parameter(np.ones(4, np.float32))

    def forward(self, x):
        return ((x @ self.w + self.b) ** 2).sum()


def _train(model, opt, set_to_none, steps=5):
    x = Tensor(_arrays(6, [(4, 3)])[0])
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        model(x).backward()
        opt.step()
    return [p.numpy() for p in model.parameters()]


def test_flat_buffer_keeps_parameter_identity_and_views():
    m = Quad()
    params = list(m.parameters())
    before = [p.numpy() for p in params]
    opt = AdamW(m.parameters(), lr=0.1)
    assert all(a is b for a, b in zip(m.parameters(), params))
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(params, before))
    assert np.shares_memory(m.w.data, opt._buckets[0][0].data)
    assert np.shares_memory(m.b.data, opt._buckets[0][0].data)


def test_fast_path_zero_grad_accumulates_into_the_flat_buffer():
    m = Quad()
    opt = AdamW(m.parameters(), lr=0.1)
    _train(m, opt, set_to_none=False, steps=2)
    flat_grad = opt._buckets[0][0].grad
    assert np.shares_memory(m.w.grad, flat_grad) and np.shares_memory(m.b.grad, flat_grad)
    assert m.unused.grad is None  # never got a gradient: stays None, as in PyTorch
    opt.zero_grad(set_to_none=False)
    assert not m.w.grad.any() and np.shares_memory(m.w.grad, flat_grad)


def test_default_zero_grad_drops_grads_and_backward_writes_into_the_flat_buffer():
    m, ref = Quad(), Quad()
    opt = AdamW(m.parameters(), lr=0.1)
    flat_grad = opt._buckets[0][0].grad
    x = Tensor(_arrays(6, [(4, 3)])[0])
    for _ in range(3):
        opt.zero_grad()
        assert all(p.grad is None for p in m.parameters())          # PyTorch's semantics
        m(x).backward()
        for p in (m.w, m.b):                                         # the optimizer's memory, no copy
            assert p.grad is p.grad_storage and np.shares_memory(p.grad, flat_grad)
        ref.load_state_dict(m.state_dict())                          # the same weights, no optimizer
        ref.zero_grad()
        ref(x).backward()
        np.testing.assert_array_equal(m.w.grad, ref.w.grad)          # nothing stale from the last step
        np.testing.assert_array_equal(m.b.grad, ref.b.grad)
        opt.step()
    assert m.unused.grad is None                                     # never got a gradient


def test_fast_and_default_zero_grad_give_the_same_training():
    a, b, c = Quad(), Quad(), Quad()
    ra = _train(a, AdamW(a.parameters(), lr=0.1), set_to_none=False)
    rb = _train(b, AdamW(b.parameters(), lr=0.1), set_to_none=True)
    rc = _train(c, AdamW(c.parameters(), lr=0.1, flat=False), set_to_none=True)
    for x, y, z in zip(ra, rb, rc):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    np.testing.assert_array_equal(ra[2], np.ones(4))  # the unused parameter never moved


def test_module_zero_grad_and_clip_work_with_flat_grads():
    m = Quad()
    opt = AdamW(m.parameters(), lr=0.1)
    _train(m, opt, set_to_none=False, steps=1)
    m.zero_grad(set_to_none=False)
    assert not opt._buckets[0][0].grad.any()
    m(Tensor(np.ones((1, 3), np.float32))).backward()
    g = opt._buckets[0][0].grad.copy()
    total = clip_grad_norm_(m.parameters(), 1e-3)
    np.testing.assert_allclose(np.linalg.norm(opt._buckets[0][0].grad), 1e-3, rtol=1e-4)
    np.testing.assert_allclose(float(total), np.linalg.norm(g), rtol=1e-5)


@pytest.mark.parametrize("drop", [None, 0, 2])
def test_clip_works_on_the_flat_buffer_only_where_it_holds_exactly_the_gradients(device, drop):
    """clip_grad_norm_ reduces and scales an optimizer's flat gradient buffer as one array when
    the parameters' gradients are the views that tile it; when one of them has no gradient
    (its slice of the buffer still holds an old one), only the gradients that exist count."""
    tg.manual_seed(0)
    m = tg.nn.Sequential(tg.nn.Linear(3, 4, device=device), tg.nn.Linear(4, 2, device=device))
    AdamW(m.parameters())
    (m(tg.randn(5, 3, device=device)) ** 2).sum().backward()
    params = list(m.parameters())
    if drop is not None:
        params[drop].grad = None
    expected = [None if p.grad is None else to_np(p.grad).copy() for p in params]
    norm = np.sqrt(sum((e.astype(np.float64) ** 2).sum() for e in expected if e is not None))
    total = clip_grad_norm_(params, 0.5)
    assert total.device == backend.canonical_device(device) and total.shape == ()
    np.testing.assert_allclose(float(total), norm, rtol=1e-5)
    for p, e in zip(params, expected):
        if e is None:
            assert p.grad is None
        else:
            np.testing.assert_allclose(to_np(p.grad), e * 0.5 / (norm + 1e-6), rtol=1e-5)
    assert tg.optim.grad_norm(params) == pytest.approx(0.5, rel=1e-5)


def test_replaced_data_is_taken_back_but_moved_dtype_is_an_error():
    m = Quad()
    opt = AdamW(m.parameters(), lr=0.1)
    m.w.data = np.full((3, 2), 2.0, np.float32)  # same dtype/shape: copied back into the buffer
    m.w.grad = np.zeros((3, 2), np.float32)
    opt.step()
    assert np.shares_memory(m.w.data, opt._buckets[0][0].data)
    np.testing.assert_allclose(m.w.numpy(), 2.0 * (1 - 0.1 * 0.01))
    m.to(tg.float64)
    assert m.w.grad_storage is None          # the optimizer's float32 buffer stays behind
    m.w.grad = np.zeros((3, 2))
    with pytest.raises(RuntimeError, match="create the optimizer after model.to"):
        opt.step()


def test_step_bumps_versions_so_stale_graphs_raise():
    p = Parameter(np.ones(3, np.float32))
    opt = SGD([p], lr=0.1)
    y = (p * p).sum()
    p.grad = np.ones(3, np.float32)
    opt.step()
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


def test_mixed_dtypes_in_one_group_get_separate_buffers():
    torch = pytest.importorskip("torch")
    a, b = Parameter(np.ones(3, np.float32)), Parameter(np.ones(2, np.float64))
    opt = AdamW([a, b], lr=0.1)
    assert len(opt._buckets[0]) == 2
    a.grad, b.grad = np.full(3, 0.5, np.float32), np.full(2, -0.5)
    opt.step()
    assert a.dtype == np.float32 and b.dtype == np.float64
    ta = torch.ones(3, requires_grad=True)
    ta.grad = torch.full((3,), 0.5)
    torch.optim.AdamW([ta], lr=0.1).step()
    np.testing.assert_allclose(a.numpy(), ta.detach().numpy(), rtol=1e-6)


def _all_grads_in(buffer, params):
    """Every parameter's .grad is a view of ``buffer``, end to end in group order."""
    off = 0
    for p in params:
        assert np.shares_memory(p.grad, buffer)
        np.testing.assert_array_equal(buffer[off:off + p.size], p.grad.reshape(-1))
        off += p.size
    assert off == buffer.size


def test_groups_share_one_gradient_buffer_per_device_and_dtype():
    inits = _arrays(40, [(3, 4), (4,), (2, 2), (5,)])
    ps = _params(inits)
    half = Parameter(np.ones(3, np.float64))
    opt = AdamW([{"params": [ps[0], ps[2]]}, {"params": [ps[1], half, ps[3]], "weight_decay": 0.0}], lr=0.1)
    for p, g in zip(ps + [half], _arrays(41, [(3, 4), (4,), (2, 2), (5,), (3,)])):
        p.grad = g.astype(p.dtype)
    bufs = opt.grad_buffers()
    assert [b.dtype for b in bufs] == [np.float32, np.float64]      # one array per dtype, all groups
    _all_grads_in(bufs[0], [ps[0], ps[2], ps[1], ps[3]])
    _all_grads_in(bufs[1], [half])
    bufs[0] *= 0.5                                                   # what an allreduce does in place
    ref = _params(inits)
    ref_opt = AdamW([{"params": [ref[0], ref[2]]}, {"params": [ref[1], ref[3]], "weight_decay": 0.0}], lr=0.1)
    for p, g in zip(ref, _arrays(41, [(3, 4), (4,), (2, 2), (5,)])):
        p.grad = g * 0.5
    opt.step()
    ref_opt.step()
    for p, r in zip(ps, ref):
        np.testing.assert_array_equal(p.numpy(), r.numpy())


def test_a_group_added_later_joins_the_gradient_buffer_and_keeps_the_gradients():
    m = Quad()
    opt = AdamW([m.w], lr=0.1)
    x = Tensor(_arrays(6, [(4, 3)])[0])
    m(x).backward()
    w_grad = m.w.grad.copy()
    opt.add_param_group({"params": [m.b], "weight_decay": 0.0})
    (buf,) = opt.grad_buffers()
    _all_grads_in(buf, [m.w, m.b])
    np.testing.assert_array_equal(m.w.grad, w_grad)                # carried over, not lost
    assert m.w.grad_storage is m.w.grad                             # backward now fills the new array
    opt.zero_grad()
    m(x).backward()
    assert np.shares_memory(m.w.grad, buf) and np.shares_memory(m.b.grad, buf)


def test_grad_buffers_zero_the_slices_of_parameters_without_a_gradient():
    m = Quad()
    opt = AdamW(m.parameters(), lr=0.1)
    x = Tensor(_arrays(6, [(4, 3)])[0])
    opt.grad_buffers()[0].fill(7.0)                                  # stale values from "an earlier step"
    m(x).backward()
    m.b.grad = np.full(2, 3.0, np.float32)                           # set by hand: not the view
    (buf,) = opt.grad_buffers()
    assert m.unused.grad is None and not buf[-4:].any()             # no gradient: zeros, still None
    np.testing.assert_array_equal(buf[6:8], [3.0, 3.0])             # copied in
    assert np.shares_memory(m.b.grad, buf)


def test_flat_false_hands_out_one_gradient_array_per_parameter():
    ps = _params(_arrays(42, [(3,), (2, 2)]))
    opt = AdamW(ps, lr=0.1, flat=False)
    for p in ps:
        p.grad = np.ones(p.shape, np.float32)
    bufs = opt.grad_buffers()
    assert [b.size for b in bufs] == [3, 4] and all(np.shares_memory(b, p.grad) for b, p in zip(bufs, ps))


def test_adamw_on_device_matches_cpu(device):
    inits, grad_seq = _arrays(7), [_arrays(60 + i) for i in range(3)]
    results = []
    for dev in ("cpu", device):
        params = _params(inits, dev)
        opt = AdamW(params, lr=0.01, weight_decay=0.1)
        for grads in grad_seq:
            for p, g in zip(params, grads):
                p.grad = Tensor(g, device=dev).data
            opt.step()
        results.append([to_np(p) for p in params])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- state_dict

def test_state_dict_round_trip_continues_identically():
    inits, grad_seq = _arrays(8), [_arrays(70 + i) for i in range(10)]
    grad_seq[2][4] = None

    def run(params, opt, seq):
        for grads in seq:
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.copy()
            opt.step()

    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.003}]  # noqa: E731
    pa = _params(inits)
    oa = AdamW(groups(pa), lr=0.01, weight_decay=0.1)
    run(pa, oa, grad_seq[:5])
    sd = pickle.loads(pickle.dumps(oa.state_dict()))  # plain Python + numpy: serialisable
    assert sd["param_groups"][1]["lr"] == 0.003 and sd["param_groups"][1]["params"] == [2, 3, 4]
    assert set(sd["state"]) == {0, 1, 2, 3, 4}

    pb = [Parameter(p.numpy()) for p in pa]
    ob = AdamW(groups(pb), lr=0.5, weight_decay=0.0)  # hyperparameters come from the state_dict
    ob.load_state_dict(sd)
    assert ob.param_groups[0]["lr"] == 0.01 and ob.param_groups[0]["betas"] == (0.9, 0.999)
    run(pa, oa, grad_seq[5:])
    run(pb, ob, grad_seq[5:])
    for a, b in zip(pa, pb):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_dict_omits_never_updated_params_and_load_resets_them():
    a, b = Parameter(np.ones(2, np.float32)), Parameter(np.ones(3, np.float32))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = np.ones(2, np.float32)
    opt.step()
    sd = opt.state_dict()
    assert list(sd["state"]) == [0] and sd["state"][0]["step"] == 1
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"], np.ones(2))
    opt.load_state_dict({"state": {}, "param_groups": sd["param_groups"]})
    assert opt.state_dict()["state"] == {}


def test_load_state_dict_errors():
    ps = _params(_arrays(9))
    opt = AdamW([{"params": ps[:2]}, {"params": ps[2:]}])
    for p in ps:
        p.grad = np.ones(p.shape, np.float32)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="1 parameter groups, this optimizer has 2"):
        opt.load_state_dict({"state": {}, "param_groups": sd["param_groups"][:1]})
    other = AdamW([{"params": ps[:3]}, {"params": ps[3:]}])
    with pytest.raises(ValueError, match="parameter group 0: the state_dict has 2 parameters"):
        other.load_state_dict(sd)
    bad = pickle.loads(pickle.dumps(sd))
    bad["state"][0]["exp_avg"] = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"'exp_avg' for parameter 0 has shape \(4, 3\).*\(3, 4\)"):
        opt.load_state_dict(bad)
    bad = pickle.loads(pickle.dumps(sd))
    del bad["state"][1]["exp_avg_sq"]
    with pytest.raises(ValueError, match="expected"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"param_groups": []})


# ---------------------------------------------------------------------------- options and errors

def test_group_lr_is_settable():
    p = Parameter(np.ones(2, np.float32))
    opt = AdamW([p], lr=0.1, weight_decay=0.0)
    opt.param_groups[0]["lr"] = 0.0
    p.grad = np.ones(2, np.float32)
    opt.step()
    np.testing.assert_array_equal(p.numpy(), [1, 1])
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="learning rate"):
        opt.step()


def test_defaults_filled_into_groups_and_repr():
    ps = _params(_arrays(0))
    opt = AdamW([{"params": ps[:2], "lr": 0.5}, {"params": ps[2:]}], lr=0.1, betas=(0.8, 0.9))
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[0]["betas"] == (0.8, 0.9) and opt.param_groups[1]["weight_decay"] == 0.01
    assert "Parameter Group 1" in repr(opt) and "lr: 0.5" in repr(opt)


def test_closure_is_called():
    p = Parameter(np.ones(1, np.float32))
    p.grad = np.ones(1, np.float32)
    assert SGD([p], lr=0.1).step(lambda: 42) == 42


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1.0), "learning rate"),
    (dict(betas=(1.0, 0.999)), "beta1"),
    (dict(betas=(0.9, -0.1)), "beta2"),
    (dict(betas=(0.9,)), "pair"),
    (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_adamw_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([Parameter(np.ones(1, np.float32))], **kwargs)
    with pytest.raises(ValueError, match=match):  # also as a group override
        AdamW([{"params": [Parameter(np.ones(1, np.float32))], **kwargs}])


def test_sgd_bad_hyperparameters():
    p = [Parameter(np.ones(1, np.float32))]
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="learning rate"):
        SGD(p, lr=-0.1)


def test_bad_params():
    p = Parameter(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW(iter([]))
    with pytest.raises(ValueError, match=r"parameter 1 \(shape \(3,\)\) does not require grad"):
        AdamW([p, Tensor(np.ones(3, np.float32))])
    with pytest.raises(ValueError, match="not a leaf"):
        AdamW([p * 2])
    with pytest.raises(ValueError, match="appears twice"):
        AdamW([p, p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="single Tensor"):
        AdamW(p)
    with pytest.raises(TypeError, match="not a set"):
        AdamW({p})
    with pytest.raises(TypeError, match="only optimise Tensors"):
        AdamW([p, np.ones(2)])
    with pytest.raises(ValueError, match="'params'"):
        AdamW([{"lr": 0.1}])


def test_wrong_grad_shape_is_an_error():
    p = Parameter(np.ones(2, np.float32))
    opt = AdamW([p])
    p.grad = np.ones(3, np.float32)
    with pytest.raises(RuntimeError, match=r"shape \(2,\) has a gradient of shape \(3,\)"):
        opt.step()


# ---------------------------------------------------------------------------- clip_grad_norm_

@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [1e-2, 1e3])
def test_clip_grad_norm_vs_torch(norm_type, max_norm):
    torch = pytest.importorskip("torch")
    shapes = SHAPES[:-1]  # torch's inf-norm refuses empty tensors (ours counts them as 0)
    grads = _arrays(11, shapes)
    ps = _params(_arrays(0, shapes))
    for p, g in zip(ps, grads):
        p.grad = g.copy()
    ps[1].grad = None
    tps = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tps, grads):
        t.grad = torch.tensor(g)
    tps[1].grad = None
    total = clip_grad_norm_(ps, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
    assert isinstance(total, tg.Tensor) and total.shape == () and total.dtype == np.float32   # as PyTorch's
    np.testing.assert_allclose(float(total), ttotal.item(), rtol=1e-5)
    for p, t in zip(ps, tps):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert ps[1].grad is None


def test_clip_grad_norm_edge_cases():
    assert clip_from_nn is clip_grad_norm_
    assert float(clip_grad_norm_([Parameter(np.ones(2, np.float32))], 1.0)) == 0.0  # no grads
    p = Parameter(np.ones(2, np.float32))
    p.grad = np.array([3.0, 4.0], np.float32)
    assert float(clip_grad_norm_(p, 10.0)) == pytest.approx(5.0)  # a single tensor is fine
    np.testing.assert_array_equal(p.grad, [3, 4])
    p.grad = np.array([np.inf, 1.0], np.float32)
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], -1.0)
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_([p], 1.0, norm_type=-2)


# ---------------------------------------------------------------------------- schedule

def _nanogpt_lr(it, lr, min_lr, warmup, decay):
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def test_get_lr_key_points():
    kw = dict(lr=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000)
    assert get_lr(0, **kw) == pytest.approx(1e-3 / 101)
    assert get_lr(99, **kw) == pytest.approx(1e-3 * 100 / 101)
    assert get_lr(100, **kw) == pytest.approx(1e-3)
    assert get_lr(2550, **kw) == pytest.approx(5.5e-4)  # half way: the mean of lr and min_lr
    assert get_lr(5000, **kw) == pytest.approx(1e-4)
    assert get_lr(10 ** 6, **kw) == 1e-4
    for it in range(0, 6000, 37):
        assert get_lr(it, **kw) == pytest.approx(_nanogpt_lr(it, 1e-3, 1e-4, 100, 5000))
    lrs = [get_lr(it, **kw) for it in range(100, 5001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # decays monotonically


def test_get_lr_no_warmup_and_no_decay():
    assert get_lr(0, lr=1.0, min_lr=0.1, warmup_iters=0, lr_decay_iters=10) == 1.0
    assert get_lr(5, lr=1.0, min_lr=0.1, warmup_iters=5, lr_decay_iters=5) == 0.1


def test_get_lr_bad_arguments():
    with pytest.raises(ValueError, match="warmup_iters"):
        get_lr(0, lr=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=5)
    with pytest.raises(ValueError, match="iteration"):
        get_lr(-1, lr=1.0, min_lr=0.1, warmup_iters=1, lr_decay_iters=5)
    with pytest.raises(ValueError, match="lr"):
        get_lr(0, lr=-1.0, min_lr=0.1, warmup_iters=1, lr_decay_iters=5)


def test_cosine_with_warmup_scales_each_group():
    ps = _params(_arrays(0))
    opt = AdamW([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.5e-3}], lr=1e-3)
    sched = CosineWithWarmup(opt, warmup_iters=10, lr_decay_iters=100, min_lr=1e-4)
    assert sched.step(0) == pytest.approx(1e-3 / 11)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5e-3 / 11)
    sched.step(100)
    assert sched.get_last_lr() == pytest.approx([1e-4, 0.5e-4])
    sched.step(10)
    assert sched.get_last_lr() == pytest.approx([1e-3, 0.5e-3])
    again = CosineWithWarmup(opt, warmup_iters=10, lr_decay_iters=100, min_lr_ratio=0.1)
    assert again.base_lrs == pytest.approx([1e-3, 0.5e-3])  # base lrs survive a changed lr
    with pytest.raises(ValueError, match="exactly one"):
        CosineWithWarmup(opt, warmup_iters=1, lr_decay_iters=2)
