"""Activation checkpointing: nn.utils.checkpoint and GPTConfig(recompute=...).

The gradients are bitwise those of the same computation without checkpointing (the
recomputation runs the same arithmetic on the same values, and dropout replays its masks),
also under gradient accumulation; misuse (in-place changes, a captured tensor that needs a
gradient) is a clear error; and what a checkpointed GPT keeps between its forward and
backward passes drops to the blocks' inputs.
"""
import gc
import tracemalloc

import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import GPT, GPTConfig, Llama, LlamaConfig, Tensor, backend, nn, no_grad
from tinygrad_llm.nn.recompute import Checkpoint
from tinygrad_llm.nn.utils import checkpoint


def mlp(device, dropout=0.3):
    tg.manual_seed(0)
    fc, proj, drop = nn.Linear(6, 12).to(device), nn.Linear(12, 6).to(device), nn.Dropout(dropout)

    def fn(x):
        return drop(proj(F.gelu(fc(x), approximate="tanh")))
    return fn, [fc.weight, fc.bias, proj.weight, proj.bias]


def same_draws_as_checkpoint(device):
    """Take the generator snapshots checkpoint() takes. On the CPU that draws nothing; on a GPU
    (CuPy's generators cannot be snapshotted) it reseeds the GPU's generator as checkpoint()
    does, so that a plain run draws the masks a checkpointed one draws."""
    for d in sorted({"cpu", device}, key=lambda d: (d == "cpu", d)):    # checkpoint()'s order
        backend.rng_replayer(d)


def grads_of(fn, params, x, use_checkpoint, passes=1, seed=3):
    """d sum(fn(x)^2) / d (x, params) after ``passes`` backward passes (accumulated)."""
    device = params[0].device
    x = Tensor(x, requires_grad=True, device=device)
    for p in params:
        p.grad = None
    tg.manual_seed(seed)
    for _ in range(passes):
        if not use_checkpoint:
            same_draws_as_checkpoint(device)
        y = checkpoint(fn, x) if use_checkpoint else fn(x)
        (y * y).sum().backward()
    return [to_np(x.grad)] + [to_np(p.grad) for p in params]


def test_gradients_are_bitwise_equal_with_dropout(device):
    fn, params = mlp(device)
    x = np.random.default_rng(0).standard_normal((4, 5, 6)).astype(np.float32)
    for passes in (1, 2):                              # 2: gradient accumulation over two micro-batches
        plain, ckpt = grads_of(fn, params, x, False, passes), grads_of(fn, params, x, True, passes)
        for a, b in zip(plain, ckpt):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("groups", [1, 2])
def test_tiled_attention_dropout_replays_its_masks(device, groups):
    """Tiled attention draws its dropout seed from the CPU generator (also on a GPU): the
    recomputation must see that draw again, and the gradients are those of the masks the
    forward used, bitwise."""
    rs = np.random.default_rng(1)
    k = Tensor(rs.standard_normal((1, 2, 9, 4)).astype(np.float32), device=device, requires_grad=True)

    def fn(q):
        kv = k if groups == 1 else k[:, :1]
        return F.scaled_dot_product_attention(q, kv, kv, dropout_p=0.4, is_causal=True, impl="flash",
                                              block_size=4, enable_gqa=groups > 1)
    x = rs.standard_normal((1, 2, 9, 4)).astype(np.float32)
    plain, ckpt = grads_of(fn, [k], x, False), grads_of(fn, [k], x, True)
    for a, b in zip(plain, ckpt):
        np.testing.assert_array_equal(a, b)


def test_the_generators_continue_as_without_checkpointing(device):
    """The recomputation replays the masks without drawing from the package's streams."""
    fn, params = mlp(device)
    x = np.ones((3, 6), dtype=np.float32)
    draws = []
    for use in (False, True):
        grads_of(fn, params, x, use)
        draws.append(to_np(backend.rng(params[0].device).random(4)))
    np.testing.assert_array_equal(*draws)


def test_without_preserve_rng_state_the_masks_differ():
    fn, params = mlp("cpu", dropout=0.5)
    x = np.ones((8, 6), dtype=np.float32)
    plain = grads_of(fn, params, x, False)
    tg.manual_seed(3)
    xt = Tensor(x, requires_grad=True)
    y = checkpoint(fn, xt, preserve_rng_state=False)
    (y * y).sum().backward()
    assert not np.array_equal(xt.grad, plain[0])


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_model_recompute_gives_bitwise_the_same_gradients(device, arch):
    """Every block (GPT) or decoder layer (Llama, whose rotary tables pass through as constant
    inputs; grouped-query heads) recomputed, or only each MLP: bitwise the gradients without,
    both attention implementations, two accumulated passes, with dropout on the CPU (on a GPU
    without: its checkpoints reseed the GPU's generator)."""
    rs = np.random.default_rng(0)
    x, y = rs.integers(0, 13, (2, 12)), rs.integers(0, 13, (2, 12))
    dropout = 0.2 if device == "cpu" else 0.0
    for attention in ("standard", "flash"):
        runs = []
        for recompute in ("none", "mlp", "block"):
            tg.manual_seed(0)
            sizes = dict(vocab_size=13, block_size=12, n_layer=2, dropout=dropout, attention=attention,
                         recompute=recompute)
            model = (GPT(GPTConfig(n_head=2, n_embd=16, **sizes)) if arch == "gpt" else
                     Llama(LlamaConfig(n_head=4, n_kv_head=2, n_embd=16, **sizes))).to(device)
            tg.manual_seed(5)
            for _ in range(2):                         # accumulate two passes
                _, loss = model(Tensor(x, device=device), Tensor(y, device=device))
                loss.backward()
            runs.append([loss.item()] + [to_np(p.grad) for p in model.parameters()])
        for other in runs[1:]:
            assert other[0] == runs[0][0]
            for a, b in zip(runs[0][1:], other[1:]):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Config.recompute must be one of"):
        (GPTConfig if arch == "gpt" else LlamaConfig)(recompute="all")


def test_recomputation_runs_under_the_forwards_autocast():
    """Checkpointed under amp.autocast("float16"), the backward (outside autocast, as a training
    loop runs it) recomputes in float16 too: bitwise the gradients of the plain float16 run."""
    fn, params = mlp("cpu")
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    grads = []
    for use in (False, True):
        xt = Tensor(x, requires_grad=True)
        for p in params:
            p.grad = None
        tg.manual_seed(3)
        with tg.amp.autocast("float16"):
            y = checkpoint(fn, xt) if use else fn(xt)
        assert y.dtype == np.float16
        (y.float() * y.float()).sum().backward()
        grads.append([xt.grad] + [p.grad for p in params])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_the_node_and_its_inputs():
    fn, params = mlp("cpu")
    x = Tensor(np.ones((2, 6), dtype=np.float32), requires_grad=True)
    y = checkpoint(fn, x)
    assert isinstance(y.grad_fn, Checkpoint)
    assert y.grad_fn.inputs[0] is x and {id(t) for t in y.grad_fn.inputs[1:]} == {id(p) for p in params}
    with no_grad():                                    # nothing to save: just fn(x)
        assert checkpoint(fn, x).grad_fn is None


def test_frozen_inputs_still_give_the_parameters_their_gradients():
    """No input requires grad (a frozen embedding before it): the parameters fn uses still get theirs."""
    fn, params = mlp("cpu", dropout=0.0)
    x = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)
    y = checkpoint(fn, Tensor(x))
    y.sum().backward()
    ckpt = [p.grad.copy() for p in params]
    for p in params:
        p.grad = None
    fn(Tensor(x)).sum().backward()
    for a, p in zip(ckpt, params):
        np.testing.assert_array_equal(a, p.grad)


def test_backward_twice_with_retain_graph_replays_the_same_masks():
    fn, params = mlp("cpu", dropout=0.5)
    x = Tensor(np.ones((4, 6), dtype=np.float32), requires_grad=True)
    y = checkpoint(fn, x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    x.grad = None
    y.backward()
    np.testing.assert_array_equal(first, x.grad)


def test_non_tensor_arguments_pass_through():
    w = Tensor(np.full((3,), 2.0, dtype=np.float32), requires_grad=True)
    x = Tensor(np.arange(3.0, dtype=np.float32), requires_grad=True)
    y = checkpoint(lambda a, power, b: (a ** power) * b, x, 2, w)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * 2 * np.arange(3.0))
    np.testing.assert_array_equal(w.grad, np.arange(3.0) ** 2)


def test_in_place_misuse_is_an_error():
    fn, params = mlp("cpu", dropout=0.0)
    x = Tensor(np.ones((2, 6), dtype=np.float32))
    y = checkpoint(fn, x)
    with no_grad():
        x.add_(1.0)                                    # the saved input changed before the backward
    with pytest.raises(RuntimeError, match="an input of Checkpoint .* was modified in place"):
        y.sum().backward()
    y = checkpoint(fn, Tensor(np.ones((2, 6), dtype=np.float32)))
    with no_grad():
        params[0].mul_(0.5)                            # e.g. an optimizer step before the backward
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()
    with pytest.raises(RuntimeError, match="fn changed its tensor input 0 .* in place"):
        checkpoint(lambda a: a.mul_(2.0), Tensor(np.ones(3, dtype=np.float32)))


def test_other_errors():
    w = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    h = w * 2.0                                        # computed outside fn, needs a gradient
    with pytest.raises(RuntimeError, match="computed outside it and requires grad; pass it to checkpoint"):
        checkpoint(lambda a: a + h, Tensor(np.ones(3, dtype=np.float32)))
    with pytest.raises(TypeError, match="fn must return one Tensor"):
        checkpoint(lambda a: (a, a), w)
    with pytest.raises(TypeError, match="fn must be callable"):
        checkpoint(3, w)
    with pytest.raises(ValueError, match="GPTConfig.recompute must be one of"):
        GPTConfig(recompute="all")


def _held_after_forward(recompute, n_layer=4, B=4, T=32, C=64):
    """Bytes still allocated after a training forward pass (what the graph keeps for the backward)."""
    tg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=T, n_layer=n_layer, n_head=4, n_embd=C, recompute=recompute))
    x = np.random.default_rng(0).integers(0, 32, (B, T))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _, loss = model(x, x)
    held = tracemalloc.get_traced_memory()[0] - base
    loss.backward()
    tracemalloc.stop()
    return held


def test_checkpointed_blocks_keep_only_their_inputs():
    """What each extra layer adds to the memory held between the passes: without recompute
    its activations (~16 C + H T values per token); with recompute="block" only the block's
    input, B T C values (plus the node's bookkeeping); "mlp" drops the MLP's 4C-wide ones."""
    B, T, C = 4, 32, 64
    per_layer = {r: (_held_after_forward(r, 4, B, T, C) - _held_after_forward(r, 2, B, T, C)) / 2
                 for r in ("none", "mlp", "block")}
    block_input = B * T * C * 4
    assert block_input <= per_layer["block"] < 1.25 * block_input, per_layer
    assert per_layer["none"] > 10 * block_input and per_layer["mlp"] < 0.7 * per_layer["none"], per_layer
