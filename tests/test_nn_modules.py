"""nn.Module mechanics, the layers, and the containers."""
import math
from collections import OrderedDict

import numpy as np
import pytest
from conftest import to_np
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_llm as tg
import tinygrad_llm.nn as nn
from tinygrad_llm import Tensor, gradcheck
from tinygrad_llm.nn import functional as F
from tinygrad_llm.nn import Module, Parameter


def needs_f(*names):
    """Skip a layer test while nn.functional lacks a function it calls (named in the reason)."""
    missing = [n for n in names if not hasattr(F, n)]
    return pytest.mark.skipif(bool(missing), reason=f"tinygrad_llm.nn.functional has no {', '.join(missing)}")


# ---------------------------------------------------------------------------- modules for the tests

class Affine(Module):
    """y = x * scale + shift, built from Tensor ops only (no nn.functional)."""

    def __init__(self, n):
        super().__init__()
        self.scale = Parameter(np.ones(n, np.float32))
        self.shift = Parameter(np.zeros(n, np.float32))
        self.register_buffer("calls", Tensor(np.zeros((), np.int64)))
        self.register_buffer("scratch", Tensor(np.zeros(n, np.float32)), persistent=False)
        self.note = "a plain attribute"
        self.cache = Tensor(np.ones(2, np.float32))  # a plain Tensor attribute: not state

    def forward(self, x):
        return x * self.scale + self.shift


class Net(Module):
    def __init__(self):
        super().__init__()
        self.w = Parameter(np.arange(6, dtype=np.float32).reshape(2, 3))
        self.a = Affine(3)
        self.b = Affine(3)

    def forward(self, x):
        return self.b(self.a(x @ self.w))


class Tied(Module):
    """Two sub-modules sharing one Parameter, as GPT's lm_head.weight is wte.weight."""

    def __init__(self):
        super().__init__()
        self.wte = Affine(4)
        self.head = Affine(4)
        self.head.scale = self.wte.scale


# ---------------------------------------------------------------------------- Parameter

def test_parameter_requires_grad_and_shares_tensor_data():
    t = Tensor(np.arange(3, dtype=np.float32))
    p = Parameter(t)
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert p.data is t.data
    assert not Parameter(np.zeros(2, np.float32), requires_grad=False).requires_grad
    assert Parameter(np.zeros(2), dtype="float32").dtype == np.float32
    assert "Parameter containing" in repr(p)


def test_parameter_from_non_float_data_is_an_error():
    with pytest.raises(TypeError, match="floating-point"):
        Parameter(np.arange(3))


def test_ops_on_parameters_give_plain_tensors():
    p = Parameter(np.ones(2, np.float32))
    assert type(p * 2) is Tensor and type(p.detach()) is Tensor


# ---------------------------------------------------------------------------- registration, traversal

def test_named_parameters_order_and_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["w", "a.scale", "a.shift", "b.scale", "b.shift"]
    assert [n for n, _ in net.named_parameters(prefix="model")][0] == "model.w"
    assert len(list(net.parameters())) == 5
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["w"]
    assert net.num_parameters() == 6 + 4 * 3


def test_plain_attributes_are_not_registered():
    m = Affine(2)
    assert m.note == "a plain attribute"
    assert "cache" not in m.state_dict() and "note" not in m.state_dict()
    assert all(t is not m.cache for t in m.parameters())


def test_children_and_modules():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["a", "b"]
    assert list(net.children()) == [net.a, net.b]
    assert [n for n, _ in net.named_modules()] == ["", "a", "b"]
    assert net.get_submodule("a") is net.a and net.get_submodule("") is net
    with pytest.raises(AttributeError, match="'c'"):
        net.get_submodule("c")


def test_shared_submodule_is_listed_once():
    net = Net()
    net.b = net.a
    assert [n for n, _ in net.named_modules()] == ["", "a"]
    assert [n for n, _ in net.named_parameters()] == ["w", "a.scale", "a.shift"]


def test_tied_parameter_once_in_named_parameters_twice_in_state_dict():
    m = Tied()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["wte.scale", "wte.shift", "head.shift"]
    sd = m.state_dict()
    assert "wte.scale" in sd and "head.scale" in sd
    assert sd["head.scale"].data is m.wte.scale.data
    assert m.num_parameters() == 12


def test_deepcopy_keeps_ties_and_copies_data():
    import copy
    m = Tied()
    c = copy.deepcopy(m)
    assert c.head.scale is c.wte.scale and c.wte.scale is not m.wte.scale
    assert isinstance(c.wte.scale, Parameter) and c.wte.scale.requires_grad
    assert not np.shares_memory(c.wte.scale.data, m.wte.scale.data)


def test_buffers_persistent_and_not():
    m = Affine(3)
    assert [n for n, _ in m.named_buffers()] == ["calls", "scratch"]
    assert list(m.state_dict()) == ["scale", "shift", "calls"]
    m.calls = Tensor(np.ones((), np.int64))  # re-assigning a buffer keeps it a buffer
    assert m.state_dict()["calls"].item() == 1
    with pytest.raises(TypeError, match="buffer 'calls'"):
        m.calls = 3


def test_assigning_a_tensor_to_a_parameter_name_is_an_error():
    m = Affine(2)
    with pytest.raises(TypeError, match="parameter 'scale'"):
        m.scale = Tensor(np.ones(2, np.float32))
    m.scale = None  # allowed: a declared but absent parameter
    assert [n for n, _ in m.named_parameters()] == ["shift"]


def test_reassigning_a_name_moves_it_between_kinds():
    m = Affine(2)
    m.shift = Affine(2)  # parameter name -> sub-module
    assert [n for n, _ in m.named_parameters()] == ["scale", "shift.scale", "shift.shift"]
    del m.shift
    assert [n for n, _ in m.named_parameters()] == ["scale"]
    with pytest.raises(AttributeError):
        m.shift  # noqa: B018


def test_setattr_before_init_is_a_clear_error():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(np.ones(1, np.float32))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_register_errors():
    m = Affine(2)
    with pytest.raises(TypeError, match="Tensor"):
        m.register_buffer("x", np.zeros(2))
    with pytest.raises(KeyError, match="'a.b'"):
        m.register_buffer("a.b", Tensor(np.zeros(2)))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("note", Tensor(np.zeros(2)))
    with pytest.raises(TypeError, match="Parameter"):
        m.register_parameter("p", Tensor(np.zeros(2, np.float32)))
    with pytest.raises(TypeError, match="Module"):
        m.add_module("sub", 3)


def test_missing_attribute_message():
    with pytest.raises(AttributeError, match="'Affine' object has no attribute 'nope'"):
        Affine(2).nope  # noqa: B018


def test_call_runs_forward_and_gradients_reach_parameters():
    net = Net()
    x = Tensor(np.ones((4, 2), np.float32))
    net(x).sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in net.parameters())
    # d sum(x @ w) / dw = x.T @ ones
    np.testing.assert_allclose(net.w.grad, np.full((2, 3), 4.0))


def test_module_without_forward():
    with pytest.raises(NotImplementedError, match="forward"):
        Module()(1)


def test_train_eval_recursive():
    net = Net()
    assert net.training and net.a.training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(TypeError):
        net.train("no")


def test_zero_grad():
    net = Net()
    net(Tensor(np.ones((1, 2), np.float32))).sum().backward()
    g = net.w.grad
    net.zero_grad(set_to_none=False)
    assert net.w.grad is g and not g.any()
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_apply_visits_children_first():
    seen = []
    net = Net()
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Affine", "Affine", "Net"]


def test_repr_is_a_tree():
    r = repr(Net())
    assert r == "Net(\n  (a): Affine()\n  (b): Affine()\n)"


def test_dir_lists_registered_names():
    assert {"scale", "shift", "calls"} <= set(dir(Affine(2)))


# ---------------------------------------------------------------------------- state_dict

def test_state_dict_values_are_detached_and_share_memory():
    m = Affine(3)
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict)
    assert type(sd["scale"]) is Tensor and not sd["scale"].requires_grad
    with tg.no_grad():
        m.scale.data[0] = 7.0
    assert sd["scale"].numpy()[0] == 7.0
    assert m.state_dict(keep_vars=True)["scale"] is m.scale


def test_load_state_dict_round_trip_keeps_parameter_objects():
    src, dst = Net(), Net()
    with tg.no_grad():
        for p in src.parameters():
            p.data[...] = np.random.default_rng(0).standard_normal(p.shape)
    params = list(dst.parameters())
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert list(dst.parameters()) == params and all(a is b for a, b in zip(dst.parameters(), params))
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=n)
    # the copy is a copy: changing the source does not change the destination
    with tg.no_grad():
        src.w.data[...] = 0
    assert dst.w.numpy().any()


def test_load_state_dict_from_numpy_casts_to_parameter_dtype():
    m = Affine(3)
    m.load_state_dict({"scale": np.array([1, 2, 3], np.float64), "shift": [0.5, 0.5, 0.5],
                       "calls": np.array(5)})
    assert m.scale.dtype == np.float32 and m.scale.numpy().tolist() == [1, 2, 3]
    assert m.shift.numpy().tolist() == [0.5] * 3
    assert m.calls.item() == 5 and m.calls.dtype == np.int64


def test_load_state_dict_strict_lists_every_problem_in_one_message():
    m = Affine(3)
    bad = {"scale": np.ones(3), "extra": np.ones(1), "other": np.ones(1)}
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    for key in ("'shift'", "'calls'", "'extra'", "'other'"):
        assert key in msg
    assert "missing" in msg and "unexpected" in msg


def test_load_state_dict_non_strict_returns_the_keys():
    m = Affine(3)
    result = m.load_state_dict({"scale": np.full(3, 2.0), "extra": np.ones(1)}, strict=False)
    assert result.missing_keys == ["shift", "calls"] and result.unexpected_keys == ["extra"]
    assert result == (["shift", "calls"], ["extra"])
    assert m.scale.numpy().tolist() == [2, 2, 2]


def test_load_state_dict_shape_mismatch_names_key_and_both_shapes_and_changes_nothing():
    m = Affine(3)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"'shift': checkpoint has shape \(4,\), the model has \(3,\)"):
            m.load_state_dict({"scale": np.full(3, 9.0), "shift": np.ones(4), "calls": np.array(0)},
                              strict=strict)
    assert m.scale.numpy().tolist() == [1, 1, 1]  # validated before anything was copied


def test_load_state_dict_into_tied_model():
    m = Tied()
    sd = {k: np.full(v.shape, 3.0) for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    assert m.head.scale is m.wte.scale and m.wte.scale.numpy().tolist() == [3.0] * 4


def test_load_state_dict_rejects_non_mappings():
    with pytest.raises(TypeError, match="mapping"):
        Affine(2).load_state_dict([1, 2])


def test_load_state_dict_bumps_version_so_stale_graphs_raise():
    m = Affine(2)
    y = (Tensor(np.ones(2, np.float32)) * m.scale).sum()
    m.load_state_dict(m.state_dict())
    with pytest.raises(RuntimeError, match="modified in place"):
        y.backward()


# ---------------------------------------------------------------------------- to(device / dtype)

def test_to_dtype_keeps_parameter_identity_and_ties():
    m = Tied()
    params = list(m.parameters())
    assert m.to(tg.float64) is m
    assert [p for p in m.parameters()] == params
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m.head.scale is m.wte.scale
    assert m.wte.calls.dtype == np.int64  # integer buffers are not cast
    assert m.wte.scratch.dtype == np.float64  # float buffers are
    m.float()
    assert m.wte.shift.dtype == np.float32


def test_to_dtype_casts_existing_grads():
    m = Affine(2)
    (m(Tensor(np.ones(2, np.float32)))).sum().backward()
    m.to("float64")
    assert m.scale.grad.dtype == np.float64


def test_to_device(device):
    m = Net()
    params = list(m.parameters())
    m.to(device)
    assert all(a is b for a, b in zip(m.parameters(), params))
    dev = tg.backend.canonical_device(device)
    assert all(p.device == dev for p in m.parameters()) and m.a.calls.device == dev
    x = Tensor(np.ones((1, 2), np.float32), device=device)
    out = m(x)
    assert out.device == dev
    np.testing.assert_allclose(to_np(out), [[3, 5, 7]])
    m.cpu()
    assert isinstance(m.w.data, np.ndarray)


def test_to_bad_device():
    with pytest.raises(ValueError, match="unknown device"):
        Net().to("tpu")


# ---------------------------------------------------------------------------- containers

def test_sequential():
    s = nn.Sequential(Affine(2), Affine(2))
    assert len(s) == 2 and s[-1] is s[1] and list(s) == [s[0], s[1]]
    assert [n for n, _ in s.named_parameters()] == ["0.scale", "0.shift", "1.scale", "1.shift"]
    with tg.no_grad():
        s[0].scale.fill_(2.0)
        s[1].shift.fill_(1.0)
    np.testing.assert_allclose(s(Tensor(np.ones(2, np.float32))).numpy(), [3, 3])
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and len(sub) == 1 and sub[0] is s[1]
    with pytest.raises(IndexError, match="index 2"):
        s[2]  # noqa: B018
    s.append(Affine(2))
    del s[0]
    assert [n for n, _ in s.named_children()] == ["0", "1"]


def test_sequential_from_ordered_dict():
    a, b = Affine(2), Affine(2)
    s = nn.Sequential(OrderedDict([("first", a), ("second", b)]))
    assert [n for n, _ in s.named_children()] == ["first", "second"] and s[1] is b


def test_module_list():
    ml = nn.ModuleList([Affine(1)])
    ml.append(Affine(1))
    ml.extend([Affine(1), Affine(1)])
    assert len(ml) == 4 and [n for n, _ in ml.named_children()] == ["0", "1", "2", "3"]
    first = ml[0]
    ml.insert(0, Affine(1))
    assert ml[1] is first and len(ml) == 5
    del ml[0]
    assert ml[0] is first and [n for n, _ in ml.named_children()] == ["0", "1", "2", "3"]
    assert len(ml[1:3]) == 2 and isinstance(ml[1:3], nn.ModuleList)
    ml[0] = Affine(1)
    assert ml[0] is not first
    with pytest.raises(TypeError, match="Module"):
        ml.append(3)
    with pytest.raises(NotImplementedError):
        ml(1)


def test_module_list_inside_a_module_names_parameters():
    class Stack(Module):
        def __init__(self):
            super().__init__()
            self.h = nn.ModuleList([Affine(2) for _ in range(2)])

    assert [n for n, _ in Stack().named_parameters()] == ["h.0.scale", "h.0.shift", "h.1.scale", "h.1.shift"]


def test_module_dict():
    md = nn.ModuleDict({"x": Affine(1)})
    md["y"] = Affine(1)
    assert list(md) == ["x", "y"] and "x" in md and len(md) == 2
    assert [k for k, _ in md.items()] == ["x", "y"]
    assert [n for n, _ in md.named_parameters()][:2] == ["x.scale", "x.shift"]
    with pytest.raises(KeyError, match="'z'"):
        md["z"]  # noqa: B018
    md.pop("x")
    assert list(md.keys()) == ["y"]
    with pytest.raises(TypeError, match="Module"):
        md["w"] = 1


# ---------------------------------------------------------------------------- layers

def _np64(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@needs_f("linear")
def test_linear_init_shapes_bounds_and_seed():
    tg.manual_seed(3)
    lin = nn.Linear(100, 300)
    assert lin.weight.shape == (300, 100) and lin.bias.shape == (300,)
    assert lin.weight.dtype == np.float32 and lin.weight.requires_grad
    w = lin.weight.numpy()
    assert np.abs(w).max() <= 0.1 and np.abs(lin.bias.numpy()).max() <= 0.1
    assert abs(w.std() - 0.1 / math.sqrt(3)) < 0.002  # U(-b, b) has std b / sqrt(3)
    assert abs(w.mean()) < 0.002
    tg.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(100, 300).weight.numpy(), w)
    assert nn.Linear(2, 3, bias=False).bias is None
    assert [n for n, _ in nn.Linear(2, 3, bias=False).named_parameters()] == ["weight"]


@needs_f("linear")
@given(st.integers(0, 2), st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_linear_forward_and_backward_vs_numpy(lead, nin, nout, bias):
    lin = nn.Linear(nin, nout, bias=bias, dtype=tg.float64)
    shape = (2, 3)[:lead] + (nin,)
    x = Tensor(_np64(shape), requires_grad=True)
    y = lin(x)
    ref = x.numpy() @ lin.weight.numpy().T + (lin.bias.numpy() if bias else 0)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    g = _np64(y.shape, 1)
    y.backward(g)
    x2, g2 = x.numpy().reshape(-1, nin), g.reshape(-1, nout)
    np.testing.assert_allclose(lin.weight.grad, g2.T @ x2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, g @ lin.weight.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(lin.bias.grad, g2.sum(0), rtol=1e-10, atol=1e-12)


@needs_f("linear")
def test_linear_gradcheck_input():
    lin = nn.Linear(3, 2, dtype=tg.float64)
    gradcheck(lambda x: lin(x), [Tensor(_np64((4, 3)), requires_grad=True)])


@needs_f("linear")
def test_linear_wrong_input_dim_names_in_features():
    with pytest.raises(ValueError, match=r"in_features=4.*\(2, 3\)"):
        nn.Linear(4, 2)(Tensor(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 2)


@needs_f("linear")
def test_linear_vs_torch():
    torch = pytest.importorskip("torch")
    lin = nn.Linear(5, 4)
    tl = torch.nn.Linear(5, 4)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin.weight.numpy()))
        tl.bias.copy_(torch.from_numpy(lin.bias.numpy()))
    x = _np64((3, 5)).astype(np.float32)
    y, ty = lin(Tensor(x)), tl(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(lin.weight.grad, tl.weight.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert repr(lin) == repr(tl)


@needs_f("linear")
def test_linear_on_device(device):
    lin = nn.Linear(3, 2, device=device)
    assert lin.weight.device == tg.backend.canonical_device(device)
    x = np.ones((2, 3), np.float32)
    out = lin(Tensor(x, device=device))
    np.testing.assert_allclose(to_np(out), x @ to_np(lin.weight).T + to_np(lin.bias), rtol=1e-6)


@needs_f("embedding")
def test_embedding():
    tg.manual_seed(0)
    emb = nn.Embedding(50, 200)
    w = emb.weight.numpy()
    assert w.shape == (50, 200) and abs(w.std() - 1) < 0.02 and abs(w.mean()) < 0.02
    ids = np.array([[1, 2, 1], [49, 0, 1]])
    out = emb(Tensor(ids))
    np.testing.assert_array_equal(out.numpy(), w[ids])
    out.sum().backward()
    ref = np.zeros_like(w)
    np.add.at(ref, ids, 1.0)
    np.testing.assert_array_equal(emb.weight.grad, ref)
    assert repr(emb) == "Embedding(50, 200)"
    with pytest.raises(ValueError, match="num_embeddings"):
        nn.Embedding(0, 3)


def _layer_norm_ref(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


@needs_f("layer_norm")
def test_layer_norm():
    ln = nn.LayerNorm(6, dtype=tg.float64)
    assert ln.normalized_shape == (6,) and ln.eps == 1e-5
    np.testing.assert_array_equal(ln.weight.numpy(), np.ones(6))
    np.testing.assert_array_equal(ln.bias.numpy(), np.zeros(6))
    with tg.no_grad():
        ln.weight.data[...] = _np64(6, 1)
        ln.bias.data[...] = _np64(6, 2)
    x = _np64((2, 3, 6))
    np.testing.assert_allclose(ln(Tensor(x)).numpy(), _layer_norm_ref(x, ln.weight.numpy(), ln.bias.numpy(), 1e-5),
                               rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: ln(t), [Tensor(x[:1, :2], requires_grad=True)])
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]
    plain = nn.LayerNorm(6, elementwise_affine=False, dtype=tg.float64)
    assert list(plain.parameters()) == []
    np.testing.assert_allclose(plain(Tensor(x)).numpy(), _layer_norm_ref(x, None, None, 1e-5), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(0)


@needs_f("layer_norm")
def test_layer_norm_vs_torch():
    torch = pytest.importorskip("torch")
    x = _np64((4, 8)).astype(np.float32)
    ours, theirs = nn.LayerNorm(8), torch.nn.LayerNorm(8)
    np.testing.assert_allclose(ours(Tensor(x)).numpy(), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    assert repr(ours) == repr(theirs)


@needs_f("rms_norm")
def test_rms_norm():
    rn = nn.RMSNorm(5, dtype=tg.float64)
    assert rn.eps == 1e-6
    with tg.no_grad():
        rn.weight.data[...] = _np64(5, 3)
    x = _np64((3, 5))
    ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * rn.weight.numpy()
    np.testing.assert_allclose(rn(Tensor(x)).numpy(), ref, rtol=1e-10, atol=1e-12)
    gradcheck(lambda t: rn(t), [Tensor(x, requires_grad=True)])
    assert list(nn.RMSNorm(5, elementwise_affine=False).parameters()) == []


@needs_f("dropout")
def test_dropout_train_and_eval():
    tg.manual_seed(0)
    d = nn.Dropout(0.25)
    x = Tensor(np.ones((200, 200), np.float32))
    y = d(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    d.eval()
    assert d(x) is x
    assert nn.Dropout(0.0)(x) is x
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(bad)


@needs_f("gelu")
def test_gelu():
    x = _np64((3, 4))
    from math import erf
    exact = x * 0.5 * (1 + np.vectorize(erf)(x / math.sqrt(2)))
    tanh = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(nn.GELU()(Tensor(x)).numpy(), exact, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(nn.GELU("tanh")(Tensor(x)).numpy(), tanh, rtol=1e-7, atol=1e-10)
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


@needs_f("relu", "silu")
def test_relu_silu_identity():
    x = _np64((2, 5))
    np.testing.assert_allclose(nn.ReLU()(Tensor(x)).numpy(), np.maximum(x, 0))
    np.testing.assert_allclose(nn.SiLU()(Tensor(x)).numpy(), x / (1 + np.exp(-x)), rtol=1e-10)
    t = Tensor(x)
    assert nn.Identity(3, foo=1)(t) is t
    assert repr(nn.ReLU()) == "ReLU()"


@needs_f("linear", "gelu", "layer_norm", "embedding")
def test_small_model_state_dict_round_trip_gives_same_outputs():
    def make():
        return nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU("tanh"),
                             nn.Linear(16, 10))
    tg.manual_seed(1)
    a = make()
    tg.manual_seed(2)
    b = make()
    ids = Tensor(np.array([[1, 2, 3]]))
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    assert [n for n, _ in a.named_parameters()] == [
        "0.weight", "1.weight", "1.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
