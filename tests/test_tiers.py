"""The two tiers: the switch (function, context manager, environment variable), the registry of
fast kernels, and the whole GPT trained on each tier giving the same loss curve."""
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import GPT, GPTConfig, Tensor, tiers
from tinygrad_llm.function import Function
from tinygrad_llm.ops.norm import LayerNorm
from tinygrad_llm.optim import clip_grad_norm_


@pytest.fixture(autouse=True)
def restore_setting():
    before = tiers.reference_tier_forced()
    yield
    tiers.use_reference_tier(before)


def _layer_norm_node():
    return F.layer_norm(Tensor(np.ones((2, 4)), requires_grad=True), 4).grad_fn


def test_every_fused_op_has_fast_kernels_named_as_its_op():
    fast = tiers.fast_kernels("cpu")
    names = {ref.__name__ for ref in fast}
    assert names == {"Linear", "Embedding", "LayerNorm", "RMSNorm", "GELU", "SiLU", "SwiGLU", "CrossEntropy",
                     "ScaledDotProductAttention", "CausalSelfAttention", "FlashAttention", "FlashCausalSelfAttention"}
    for ref, kernel in fast.items():
        assert issubclass(kernel, ref) and kernel.__name__ == ref.__name__
        assert kernel.__module__ == "tinygrad_llm.kernels.cpu" and ref.__module__.startswith("tinygrad_llm.ops.")
    cuda = tiers.fast_kernels("cuda")
    assert {ref.__name__ for ref in cuda} == {"Linear", "Embedding", "LayerNorm", "GELU", "Dropout", "CrossEntropy",
                                              "CausalSelfAttention"}
    for ref, kernel in cuda.items():
        assert issubclass(kernel, ref) and kernel.__name__ == ref.__name__
        assert kernel.__module__ == "tinygrad_llm.kernels.cuda"
    assert tiers.kernel_for(LayerNorm, "cuda:0") is cuda[LayerNorm]


def test_use_reference_tier_and_the_context_manager():
    tiers.use_reference_tier(False)
    assert type(_layer_norm_node()) is not LayerNorm
    tg.use_reference_tier(True)
    assert tg.reference_tier_forced() and type(_layer_norm_node()) is LayerNorm
    tg.use_reference_tier(False)
    with tg.reference_tier():
        assert type(_layer_norm_node()) is LayerNorm
        with tg.reference_tier(False):                       # nested: the inner one wins, then is undone
            assert type(_layer_norm_node()) is not LayerNorm
        assert type(_layer_norm_node()) is LayerNorm
    assert not tg.reference_tier_forced()

    @tg.reference_tier()
    def decorated():
        return type(_layer_norm_node())
    assert decorated() is LayerNorm and not tg.reference_tier_forced()
    with pytest.raises(TypeError, match="expected True or False"):
        tg.use_reference_tier("yes")
    with pytest.raises(TypeError, match="expected True or False"):
        tg.reference_tier(1)


def test_a_node_keeps_the_tier_of_its_forward():
    """The setting is read when a node is made: switching before backward changes nothing."""
    x = Tensor(np.random.default_rng(0).standard_normal((3, 5)), requires_grad=True)
    with tg.reference_tier(False):
        y = F.layer_norm(x, 5)
    node = y.grad_fn
    with tg.reference_tier(True):
        y.sum().backward()
    assert type(node).__module__ == "tinygrad_llm.kernels.cpu"
    np.testing.assert_allclose(x.grad, np.zeros((3, 5)), atol=1e-12)   # d sum(LayerNorm) / dx = 0


def test_environment_variable_forces_the_reference_tier():
    code = ("import numpy as np, tinygrad_llm as tg, tinygrad_llm.nn.functional as F\n"
            "y = F.gelu(tg.Tensor(np.ones(3), requires_grad=True))\n"
            "print(tg.reference_tier_forced(), type(y.grad_fn).__module__)")
    env = {k: v for k, v in os.environ.items() if k != tiers.ENV_VAR}
    for value, expect in (("1", "True tinygrad_llm.ops.activation"), ("0", "False tinygrad_llm.kernels.cpu"),
                          ("", "False tinygrad_llm.kernels.cpu")):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**env, tiers.ENV_VAR: value})
        assert r.returncode == 0 and r.stdout.strip() == expect, r.stdout + r.stderr
    # a bad value: the import works (no traceback in every script), the first op says what is wrong
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**env, tiers.ENV_VAR: "yes"})
    assert r.returncode != 0 and "ValueError: TINYGRAD_LLM_REFERENCE must be 1" in r.stderr and "'yes'" in r.stderr
    # ... and a script says it in one line, exit code 2, before doing anything
    script = Path(__file__).resolve().parents[1] / "examples" / "sample.py"
    r = subprocess.run([sys.executable, str(script), "--ckpt", "no-such-folder"], capture_output=True, text=True,
                       timeout=60, env={**env, tiers.ENV_VAR: "2"})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "error: TINYGRAD_LLM_REFERENCE must be 1 (run every op on the reference tier) or 0 / unset "
        "(use the fast kernels), got '2'"]


def test_register_refuses_what_would_break_the_contract():
    class Op(Function):
        def forward(self, x):
            return x

    class Other(Function):
        pass

    with pytest.raises(TypeError, match="must be a subclass of Op"):
        tiers.register(Op)(Other)
    with pytest.raises(TypeError, match="keep the op's name 'Op'"):
        tiers.register(Op)(type("FastOp", (Op,), {}))
    with pytest.raises(ValueError, match="device kind must be one of"):
        tiers.register(Op, "tpu")
    with pytest.raises(ValueError, match="already registered"):
        tiers.register(LayerNorm)(type("LayerNorm", (LayerNorm,), {}))


# ---------------------------------------------------------------- the whole GPT on each tier

def _loss_curve(reference, steps=15):
    """Losses of a small GPT (dropout on, every fused op of the training step) trained with
    AdamW and gradient clipping, on one tier, from the same seed and batches."""
    with tg.reference_tier(reference):
        tg.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1))
        opt = model.configure_optimizers(0.1, 1e-2)
        rs = np.random.default_rng(1)
        losses = []
        for _ in range(steps):
            x = (np.arange(16) + rs.integers(0, 13, (4, 1))) % 13     # learnable: the next token is x + 1
            _, loss = model(Tensor(x), Tensor((x + 1) % 13))
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    return np.array(losses)


def test_gpt_training_gives_the_same_loss_curve_on_both_tiers():
    """Fifteen AdamW steps: the fast kernels and the reference math differ only in float32
    rounding (summation order), about 1e-7 of the loss, which training does not amplify much."""
    fast, reference = _loss_curve(False), _loss_curve(True)
    assert fast[-1] < fast[0] - 0.3                     # it does learn
    np.testing.assert_allclose(fast, reference, rtol=1e-5)
