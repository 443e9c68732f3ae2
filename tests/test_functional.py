"""nn.functional as a whole: every op is one graph node (on both tiers), no node under
no_grad, float32 stays float32 through every op and gradient, and the in-place forms
(``inplace=True``). Each op's own tests are in tests/ops/test_<op>.py."""
import numpy as np
import pytest

import tinygrad_llm.nn.functional as F
from tinygrad_llm import Tensor, no_grad, tiers
from tinygrad_llm.ops.activation import ELU, GELU, LeakyReLU, SiLU, Softplus
from tinygrad_llm.ops.attention import ScaledDotProductAttention
from tinygrad_llm.ops.binary_cross_entropy import BinaryCrossEntropy, BinaryCrossEntropyWithLogits
from tinygrad_llm.ops.cross_entropy import CrossEntropy
from tinygrad_llm.ops.dropout import Dropout
from tinygrad_llm.ops.elementwise import ReLU
from tinygrad_llm.ops.embedding import Embedding
from tinygrad_llm.ops.linear import Linear
from tinygrad_llm.ops.movement import Pad
from tinygrad_llm.ops.norm import LayerNorm, RMSNorm
from tinygrad_llm.ops.self_attention import CausalSelfAttention
from tinygrad_llm.ops.softmax import LogSoftmax, Softmax


def leaf(a, device="cpu"):
    return Tensor(np.asarray(a), requires_grad=True, device=device)


# ============================================================================ one graph node each

def test_each_op_is_one_graph_node(tier):
    """One node per call, named after its op on both tiers (the fast kernel is a subclass of
    the reference class of the same name), whose inputs are the call's tensors."""
    rs = np.random.default_rng(10)
    x, w, b = leaf(rs.standard_normal((2, 3, 4))), leaf(rs.standard_normal((5, 4))), leaf(rs.standard_normal(5))
    w4, b4 = leaf(rs.standard_normal(4)), leaf(rs.standard_normal(4))
    t = Tensor(rs.integers(0, 4, (2, 3)))
    qkv = leaf(rs.standard_normal((2, 3, 12)))
    ids = Tensor(np.array([1, 2]))
    cases = [
        (F.linear(x, w, b), Linear, (x, w, b)),
        (F.linear(x, w), Linear, (x, w)),
        (F.softmax(x, 1), Softmax, (x,)),
        (F.log_softmax(x), LogSoftmax, (x,)),
        (F.cross_entropy(x, t), CrossEntropy, (x, t)),
        (F.layer_norm(x, 4, w4, b4), LayerNorm, (x, w4, b4)),
        (F.layer_norm(x, 4, None, b4), LayerNorm, (x, b4)),
        (F.layer_norm(x, 4), LayerNorm, (x,)),
        (F.rms_norm(x, 4, w4), RMSNorm, (x, w4)),
        (F.rms_norm(x, 4), RMSNorm, (x,)),
        (F.gelu(x), GELU, (x,)),
        (F.gelu(x, approximate="tanh"), GELU, (x,)),
        (F.relu(x), ReLU, (x,)),
        (F.silu(x), SiLU, (x,)),
        (F.embedding(ids, w), Embedding, (ids, w)),
        (F.dropout(x, 0.5), Dropout, (x,)),
        (F.scaled_dot_product_attention(x, x, x, is_causal=True), ScaledDotProductAttention, (x, x, x)),
        (F.causal_self_attention(qkv, 2), CausalSelfAttention, (qkv,)),
        (F.leaky_relu(x), LeakyReLU, (x,)),
        (F.elu(x), ELU, (x,)),
        (F.softplus(x), Softplus, (x,)),
        (F.pad(x, (1, 1)), Pad, (x,)),
        (F.binary_cross_entropy(x.sigmoid().detach().requires_grad_(), x.sigmoid()), BinaryCrossEntropy, None),
        (F.binary_cross_entropy_with_logits(x, x.detach()), BinaryCrossEntropyWithLogits, None),
    ]
    fast = tiers.fast_kernels("cpu")
    for out, cls, inputs in cases:
        node = out.grad_fn
        assert isinstance(node, cls) and node.name == cls.__name__
        assert type(node) is (cls if tier == "reference" else fast.get(cls, cls))
        if inputs is None:
            continue
        assert len(node.inputs) == len(inputs)
        assert all(a is e for a, e in zip(node.inputs, inputs))
        # the node's inputs are leaves: no primitive ops were recorded in between
        assert all(i.grad_fn is None for i in node.inputs)


def test_no_node_is_recorded_under_no_grad():
    x = leaf(np.ones((2, 3)))
    with no_grad():
        assert F.softmax(x).grad_fn is None
        assert F.cross_entropy(x, [0, 1]).grad_fn is None


def test_float32_in_float32_out_for_every_op(tier):
    """No silent float64 up-casts: outputs and every gradient stay float32."""
    rs = np.random.default_rng(11)

    def f32(*shape):
        return leaf(rs.standard_normal(shape).astype(np.float32))
    x, w, b, g4, b4 = f32(2, 3, 4), f32(5, 4), f32(5), f32(4), f32(4)
    runs = [
        (lambda: F.linear(x, w, b), [x, w, b]),
        (lambda: F.softmax(x), [x]),
        (lambda: F.log_softmax(x, 0), [x]),
        (lambda: F.cross_entropy(x, np.array([[0, 1, -100], [3, 2, 1]]), label_smoothing=0.1), [x]),
        (lambda: F.layer_norm(x, 4, g4, b4), [x, g4, b4]),
        (lambda: F.rms_norm(x, 4, g4), [x, g4]),
        (lambda: F.gelu(x), [x]),
        (lambda: F.gelu(x, approximate="tanh"), [x]),
        (lambda: F.relu(x), [x]),
        (lambda: F.silu(x), [x]),
        (lambda: F.embedding(np.array([[0, 4], [4, 1]]), w), [w]),
        (lambda: F.dropout(x, 0.5), [x]),
        (lambda: F.scaled_dot_product_attention(x, x, x, is_causal=True, dropout_p=0.2), [x, x, x]),
        (lambda: F.causal_self_attention(x.reshape(2, 2, 6), 2, dropout_p=0.2), [x]),
        (lambda: F.scaled_dot_product_attention(x, x, x, attn_mask=f32(3, 3)), [x, x, x, x]),
        (lambda: F.leaky_relu(x), [x]),
        (lambda: F.elu(x), [x]),
        (lambda: F.softplus(x), [x]),
        (lambda: F.pad(x, (1, 2, -1, 0)), [x]),
        (lambda: F.binary_cross_entropy(x.sigmoid(), x.sigmoid()), [x, x]),
        (lambda: F.binary_cross_entropy_with_logits(x, x.sigmoid(), pos_weight=np.ones(4)), [x, x]),
    ]
    for run, params in runs:
        y = run()
        assert y.dtype == np.float32, y.grad_fn.name
        # ask the node itself: run_backward would cast a float64 gradient back and hide it
        grads = y.grad_fn.backward(np.ones(y.shape, np.float32))
        grads = [gr for gr in (grads if isinstance(grads, tuple) else (grads,)) if gr is not None]
        assert len(grads) == len(params), y.grad_fn.name
        assert all(gr.dtype == np.float32 for gr in grads), y.grad_fn.name


# ============================================================================ in-place forms

@pytest.mark.parametrize("name", ["relu", "silu", "dropout"])
def test_inplace_activations_overwrite_the_input(name):
    import tinygrad_llm as tg
    rs = np.random.default_rng(16)
    a = rs.standard_normal((4, 5))

    def call(t, inplace):
        tg.manual_seed(3)                                  # the same dropout mask both times
        if name == "dropout":
            return F.dropout(t, 0.4, inplace=inplace)
        return getattr(F, name)(t, inplace=inplace)
    expect = call(Tensor(a), False).numpy()
    x = Tensor(a.copy())
    version = x._version
    out = call(x, True)
    assert out is x and x._version == version + 1
    np.testing.assert_array_equal(x.numpy(), expect)
    # a tensor that requires grad: fine inside no_grad(), refused while recording
    w = Tensor(a.copy(), requires_grad=True)
    with no_grad():
        call(w, True)
    np.testing.assert_array_equal(w.numpy(), expect)
    with pytest.raises(RuntimeError, match="in-place ops are not recorded"):
        call(Tensor(a.copy(), requires_grad=True), True)


def test_inplace_on_a_tensor_a_recorded_node_saved_stops_its_backward():
    w = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    x = Tensor(np.array([-1.0, 2.0, -3.0]))              # requires no grad itself
    y = (w * x).sum()                                    # the Mul node saved x
    F.relu(x, inplace=True)
    with pytest.raises(RuntimeError, match="modified"):
        y.backward()


def test_inplace_modules():
    from tinygrad_llm import nn
    x = Tensor(np.array([-1.0, 2.0]))
    assert nn.ReLU(inplace=True)(x) is x and x.numpy().tolist() == [0.0, 2.0]
    assert "inplace=True" in repr(nn.ReLU(inplace=True)) and "inplace" not in repr(nn.SiLU())
    x = Tensor(np.ones(1000))
    assert nn.Dropout(0.5, inplace=True)(x) is x and set(np.unique(x.numpy())) <= {0.0, 2.0}


# ============================================================================ one_hot

def test_one_hot():
    out = F.one_hot(Tensor(np.array([[0, 2], [3, 2]])), 5)
    assert out.dtype == np.int64 and out.shape == (2, 2, 5) and out.grad_fn is None
    np.testing.assert_array_equal(out.numpy(), np.eye(5, dtype=np.int64)[[[0, 2], [3, 2]]])
    assert F.one_hot(Tensor(np.array([1, 4]))).shape == (2, 5)           # -1: the largest index + 1
    assert F.one_hot([0, 1], num_classes=2).tolist() == [[1, 0], [0, 1]]
    assert F.one_hot(Tensor(np.array(2)), 3).tolist() == [0, 0, 1]
    assert F.one_hot(Tensor(np.zeros((0,), np.int64)), 3).shape == (0, 3)
    for bad, match in [((np.array([0, 3]), 3), "smaller than num_classes"), ((np.array([-1]), 3), "non-negative"),
                       ((np.zeros(0, np.int64), -1), "cannot infer")]:
        with pytest.raises(RuntimeError, match=match):                # PyTorch's class, and a ValueError
            F.one_hot(Tensor(bad[0]), bad[1])
    with pytest.raises(TypeError, match="integers"):
        F.one_hot(Tensor(np.array([0.0])), 2)
    torch = pytest.importorskip("torch")
    ids = np.random.default_rng(0).integers(0, 6, (3, 4))
    np.testing.assert_array_equal(F.one_hot(Tensor(ids)).numpy(), torch.nn.functional.one_hot(torch.tensor(ids)).numpy())
