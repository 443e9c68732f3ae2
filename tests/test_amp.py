"""Mixed precision (amp.py): autocast's casting policy, GradScaler against PyTorch's semantics,
and float16 training (the float32 loss within a margin, exact resume with the scaler's state)."""
import json

import numpy as np
import pytest
from conftest import to_np

import tinygrad_llm as tg
import tinygrad_llm.nn.functional as F
from tinygrad_llm import GPT, GPTConfig, Llama, LlamaConfig, Tensor, amp, nn
from tinygrad_llm.amp import GradScaler, autocast
from tinygrad_llm.checkpoint import load_checkpoint
from tinygrad_llm.optim import AdamW
from tinygrad_llm.train import TrainConfig, train

# ----------------------------------------------------------------------------- autocast


def test_autocast_policy():
    rs = np.random.default_rng(0)
    x = Tensor(rs.standard_normal((2, 3, 8)).astype(np.float32), requires_grad=True)
    lin = nn.Linear(8, 8)
    with autocast("float16"):
        h = lin(x)
        assert h.dtype == np.float16                                       # linear: float16
        assert F.layer_norm(h, 8).dtype == np.float16                      # float16 in, float16 out
        assert F.softmax(h, axis=-1).dtype == np.float32                   # softmax family: float32
        assert F.log_softmax(h, axis=-1).dtype == np.float32
        assert F.scaled_dot_product_attention(x, x, x, impl="flash").dtype == np.float16
        assert F.causal_self_attention(Tensor(np.ones((1, 2, 6), dtype=np.float32)), 1).dtype == np.float16
        assert F.embedding(np.array([1, 2]), lin.weight).dtype == np.float16
        loss = F.cross_entropy(h.reshape(6, 8), np.arange(6) % 8)
        assert loss.dtype == np.float32                                    # the loss: float32
        x64 = Tensor(np.ones((2, 8)), requires_grad=False)
        assert F.linear(x64, Tensor(np.ones((3, 8)))).dtype == np.float64  # float64 is left alone
        with autocast("float32"):                                          # off inside
            assert lin(x).dtype == np.float32
    assert lin(x).dtype == np.float32                                      # and off after
    loss.backward()
    assert lin.weight.grad.dtype == np.float32 and x.grad.dtype == np.float32


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_autocast_forward_is_float16_and_close_to_float32(device, arch):
    """The presets' model shape (the Llama: 2 key/value heads): float16 activations (the
    logits), the float32 loss within 1%, float32 gradients close to float32's; nothing overflows."""
    tg.manual_seed(0)
    sizes = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64)
    model = (GPT(GPTConfig(**sizes)) if arch == "gpt" else Llama(LlamaConfig(n_kv_head=2, **sizes))).to(device)
    x = Tensor(np.random.default_rng(0).integers(0, 65, (4, 64)), device=device)
    _, loss32 = model(x, x)
    loss32.backward()
    g32 = [to_np(p.grad).copy() for p in model.parameters()]
    model.zero_grad()
    with autocast("float16"):
        logits, loss16 = model(x, x)
    assert logits.dtype == np.float16 and loss16.dtype == np.float32
    assert abs(loss16.item() - loss32.item()) < 1e-2 * loss32.item()
    loss16.backward()
    for a, p in zip(g32, model.parameters()):
        assert p.grad.dtype == np.float32 and np.isfinite(to_np(p.grad)).all()
        np.testing.assert_allclose(to_np(p.grad), a, atol=2e-2 * np.abs(a).max() + 1e-6)


def test_presets_forward_does_not_overflow_in_float16():
    """The 'gpu' preset's model (6 layers, 384 wide, block 256) on one sequence, float16: every
    logit finite and the loss that of float32 within 1%."""
    from tinygrad_llm.presets import preset
    fields, _ = preset("gpu")
    tg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, **{**fields, "dropout": 0.0}))
    x = np.random.default_rng(0).integers(0, 65, (1, fields["block_size"]))
    with tg.no_grad():
        _, l32 = model(x, x)
        with autocast("float16"):
            logits, l16 = model(x, x)
    assert np.isfinite(logits.numpy()).all() and abs(l16.item() - l32.item()) < 1e-2 * l32.item()


def test_bfloat16_and_bad_dtypes_are_clear_errors():
    for make in (lambda d: autocast(d), lambda d: TrainConfig(dtype=d)):
        with pytest.raises(ValueError, match="bfloat16 is not available: neither NumPy nor CuPy"):
            make("bfloat16")
        with pytest.raises(ValueError, match=r"must be one of \('float32', 'float16'\), got 'float8'"):
            make("float8")
    assert autocast(np.float16).dtype == np.float16


# ----------------------------------------------------------------------------- GradScaler


def _one_param_step(scaler, opt, p, inject_inf=False):
    opt.zero_grad()
    scaler.scale((p * p).sum()).backward()
    if inject_inf:
        p.grad[0] = np.inf
    out = scaler.step(opt)
    scaler.update()
    return out


def test_grad_scaler_defaults_are_pytorchs():
    s = GradScaler()
    assert (s.get_scale(), s.get_growth_factor(), s.get_backoff_factor(), s.get_growth_interval()) == \
        (2.0**16, 2.0, 0.5, 2000)
    assert s.state_dict() == {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2000, "_growth_tracker": 0}


def test_an_overflow_skips_the_step_and_halves_the_scale():
    p = nn.Parameter(Tensor(np.linspace(-1, 1, 5).astype(np.float32)))
    opt = AdamW([p], lr=0.1)
    scaler = GradScaler()
    _one_param_step(scaler, opt, p)                    # one real step: the moments are not zero
    before, state = p.numpy().copy(), opt.state_dict()
    assert _one_param_step(scaler, opt, p, inject_inf=True) is None
    np.testing.assert_array_equal(p.numpy(), before)
    after = opt.state_dict()
    assert after["state"][0]["step"] == state["state"][0]["step"] == 1
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(after["state"][0][name], state["state"][0][name])
    assert scaler.get_scale() == 2.0**15


def test_the_scale_grows_after_the_interval_as_pytorchs():
    """The same sequence of clean and overflowing steps gives PyTorch's scales step by step."""
    torch = pytest.importorskip("torch")
    pattern = [0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    p = nn.Parameter(Tensor(np.ones(3, dtype=np.float32)))
    opt = AdamW([p], lr=0.01)
    ours = GradScaler(growth_interval=3)
    tp = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.AdamW([tp], lr=0.01)
    theirs = torch.amp.GradScaler("cpu", growth_interval=3)
    scales = []
    for bad in pattern:
        _one_param_step(ours, opt, p, inject_inf=bad)
        topt.zero_grad()
        theirs.scale((tp * tp).sum()).backward()
        if bad:
            with torch.no_grad():
                tp.grad[0] = float("inf")
        theirs.step(topt)
        theirs.update()
        scales.append((ours.get_scale(), theirs.get_scale()))
        assert ours.state_dict() == theirs.state_dict()
    assert [a for a, _ in scales] == [b for _, b in scales]
    assert scales[2][0] == 2.0**17                       # grown after 3 clean steps
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-6)


def test_unscale_divides_once_before_clipping():
    p = nn.Parameter(Tensor(np.array([1.0, -2.0], dtype=np.float32)))
    opt = AdamW([p], lr=0.1)
    scaler = GradScaler(init_scale=1024.0)
    scaler.scale((p * p).sum()).backward()
    np.testing.assert_array_equal(p.grad, 1024.0 * np.array([2.0, -4.0]))
    scaler.unscale_(opt)
    np.testing.assert_array_equal(p.grad, [2.0, -4.0])                     # a power of two: exact
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)                                     # does not divide again
    scaler.update()
    with pytest.raises(RuntimeError, match="no inf checks were recorded"):
        scaler.update()


def test_disabled_scaler_passes_through_and_bad_arguments():
    s = GradScaler(enabled=False)
    t = Tensor(np.ones(2, dtype=np.float32))
    assert s.scale(t) is t and s.get_scale() == 1.0 and s.state_dict() == {}
    for kw, match in (({"init_scale": 0}, "init_scale"), ({"growth_factor": 1.0}, "growth_factor"),
                      ({"backoff_factor": 1.0}, "backoff_factor"), ({"growth_interval": 0}, "growth_interval")):
        with pytest.raises(ValueError, match=match):
            GradScaler(**kw)
    with pytest.raises(TypeError, match="expected a Tensor"):
        GradScaler().scale(3.0)
    s = GradScaler()
    with pytest.raises(ValueError, match="expected the keys"):
        s.load_state_dict({"scale": 2.0})
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        s.load_state_dict({**s.state_dict(), "scale": float("inf")})
    other = GradScaler(init_scale=8.0, growth_interval=5)
    other.load_state_dict(GradScaler(init_scale=4.0, growth_interval=7).state_dict())
    assert other.get_scale() == 4.0 and other.get_growth_interval() == 7


# ----------------------------------------------------------------------------- training


def _model(vocab, **kw):
    tg.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=2, n_head=2, n_embd=32, **kw))


def _cfg(**kw):
    base = dict(batch_size=8, max_iters=30, learning_rate=3e-3, min_lr=3e-4, warmup_iters=3, lr_decay_iters=30,
                eval_interval=30, eval_iters=4, log_interval=10, seed=1)
    return TrainConfig(**{**base, **kw})


def test_float16_training_reaches_the_float32_loss(fox_data, tmp_path):
    """30 steps of a tiny GPT: the float16 run's validation loss is within 0.05 of float32's
    (the runs start at about 3.3 and end near 1.9)."""
    runs = {}
    for dtype in ("float32", "float16"):
        out = train(_model(fox_data.vocab_size), fox_data, _cfg(dtype=dtype), tmp_path / dtype, log=lambda s: None)
        runs[dtype] = out["history"][-1]["val_loss"]
    assert runs["float32"] < 2.2
    assert abs(runs["float16"] - runs["float32"]) < 0.05, runs


def test_resume_with_a_scaler_is_exact(fox_data, tmp_path, monkeypatch):
    """A first scale of 2^24 overflows float16 in the first steps, so the scale the checkpoint
    holds (below 2^24) decides which later steps are skipped: the resumed run must restore it."""
    import tinygrad_llm.train as train_module
    monkeypatch.setattr(train_module, "GradScaler", lambda enabled: GradScaler(init_scale=2.0**24, enabled=enabled))
    logs = []
    cfg = _cfg(dtype="float16", max_iters=16, eval_interval=8, lr_decay_iters=16, eval_iters=1)
    train(_model(fox_data.vocab_size, dropout=0.1), fox_data, cfg, tmp_path / "a", log=logs.append)
    assert any("overflowed float16, the step was skipped" in line for line in logs)
    half = _cfg(dtype="float16", max_iters=8, eval_interval=8, lr_decay_iters=16, eval_iters=1)
    train(_model(fox_data.vocab_size, dropout=0.1), fox_data, half, tmp_path / "b", log=lambda s: None)
    saved = json.loads((tmp_path / "b" / "latest" / "trainer_state.json").read_text())["scaler"]
    assert saved["scale"] < 2.0**24
    tg.manual_seed(999)
    train(_model(fox_data.vocab_size, dropout=0.1), fox_data, cfg, tmp_path / "b", resume=True, log=lambda s: None)
    a, b = (load_checkpoint(tmp_path / run / "latest") for run in ("a", "b"))
    assert a.trainer_state["scaler"] == b.trainer_state["scaler"]
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)


def test_overflowed_steps_are_skipped_not_errors(device, fox_data, tmp_path, monkeypatch):
    """A scale of 2^24 overflows float16's gradients in the first steps: the training loop skips
    them and halves the scale (logged), and the run goes on to its end with finite weights; on
    a GPU too, where the loop otherwise reads the device only at log lines (the step watch
    then checks the loss alone: an inf gradient norm is the scaler's business)."""
    import tinygrad_llm.train as train_module
    monkeypatch.setattr(train_module, "GradScaler", lambda enabled: GradScaler(init_scale=2.0**24, enabled=enabled))
    logs = []
    cfg = _cfg(dtype="float16", max_iters=6, eval_interval=6, lr_decay_iters=6, eval_iters=1, log_interval=3)
    out = train(_model(fox_data.vocab_size).to(device), fox_data, cfg, tmp_path / "run", log=logs.append)
    assert out["iter"] == 6 and any("overflowed float16, the step was skipped" in line for line in logs)
    ckpt = load_checkpoint(tmp_path / "run" / "latest")
    assert ckpt.trainer_state["scaler"]["scale"] < 2.0**24
    assert all(np.isfinite(p.numpy()).all() for p in ckpt.model.parameters())


def test_amp_is_importable_from_the_package():
    assert tg.amp is amp and amp.GradScaler is GradScaler


@pytest.mark.parametrize("arch", ["gpt", "llama"])
def test_train_script_flags(tmp_path, arch):
    """examples/train_shakespeare.py takes --dtype float16, --attention flash and --recompute,
    for the GPT and for the Llama (grouped-query heads); --dtype bfloat16 is refused in one line
    before any work."""
    from test_train import TINY_FLAGS, run_script
    data = tmp_path / "fox.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    llama = ["--arch", "llama", "--n_kv_head", "1"] if arch == "llama" else []
    r = run_script(["examples/train_shakespeare.py", "--data", str(data), "--out", str(tmp_path / "run"),
                    "--max_iters", "4", "--sample-tokens", "0", *TINY_FLAGS, "--eval_iters", "1", *llama,
                    "--dtype", "float16", "--attention", "flash", "--recompute", "block"], tmp_path)
    assert r.returncode == 0, r.stderr
    state = json.loads((tmp_path / "run" / "latest" / "trainer_state.json").read_text())
    config = json.loads((tmp_path / "run" / "latest" / "config.json").read_text())
    assert state["scaler"]["scale"] > 0 and config["train"]["dtype"] == "float16" and config["arch"] == arch
    assert config["model"]["attention"] == "flash" and config["model"]["recompute"] == "block"
    if arch == "llama":
        assert config["model"]["n_kv_head"] == 1 and config["model"]["n_head"] == 2
        return
    r = run_script(["examples/train_shakespeare.py", "--data", str(data), "--out", str(tmp_path / "bf"),
                    "--dtype", "bfloat16"], tmp_path)
    assert r.returncode == 2 and "bfloat16 is not available" in r.stderr and "Traceback" not in r.stderr
