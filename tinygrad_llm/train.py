"""A small, readable training loop for the GPT (not a framework).

Per iteration: set the learning rate from the schedule; every ``eval_interval``
iterations estimate train/val loss and save checkpoints; run ``grad_accum_steps``
forward/backward passes on random batches; clip the gradient norm; take an AdamW step.

On a GPU an iteration waits for the device only on log iterations (to read the loss),
before evaluations and saves, and at the end: the loss, the gradient norm and the check
that both are finite stay on the device in between (``_StepWatch``), and a step whose loss
or norm is NaN or inf is skipped there (``optimizer.step(found_inf=...)``). Matrix products
use TF32 on GPUs unless ``tf32`` is false.

``dtype="float16"`` trains in mixed precision (amp.py): the forward passes run under
``autocast`` and the loss is scaled by a ``GradScaler``, whose skipped steps (a gradient
overflowed float16) are logged, not errors; there an inf or NaN gradient norm is the
scaler's business, and only a non-finite loss stops the run. The scaler reads its overflow
flag from the device once per step (PyTorch's ``GradScaler`` does too).

Resuming (``resume=True``) restores weights, optimizer, RNG, iteration and the loss scale,
so the run continues exactly as if it had never stopped (on a GPU the dropout generator is
reseeded from the saved CPU generator every step, ``backend.reseed_from_cpu``). Evaluation
draws its batches from its own fixed-seed generator, so it neither disturbs the training
stream nor varies between evals.

The output folder is locked while the loop runs (a second run into it is refused), and a
new run refuses a folder that holds a previous one unless ``overwrite=True``. Ctrl-C or
SIGTERM finishes the current iteration (or stops an evaluation), saves ``latest`` and
returns; a second one stops at once, without saving (KeyboardInterrupt). A loss or gradient
that is NaN or inf stops the run with NonFiniteLossError naming that iteration; its step is
not taken, and nothing from it is saved (on the CPU the run stops at once; on a GPU at the
next read, the steps in between skipped on the device).

Data-parallel training (``comm``, from ``distributed.init()``, docs/distributed.md): every rank
runs this loop on its slice of each batch, the gradients are averaged across the ranks by
one allreduce per step, the losses are averaged, a stop asked of any rank stops all of them
at the same iteration, and only rank 0 takes the folder's lock, logs and writes files. The
losses are then read and averaged on the host every step (the ranks must agree on them).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import signal
import time
import warnings
from pathlib import Path

import numpy as np

from . import backend, distributed, hardware
from .amp import GradScaler, autocast, check_amp_dtype
from .atomic import atomic_open
from .checkpoint import CheckpointError, clean_stale, load_checkpoint, save_checkpoint
from .config import config_from_dict
from .data import get_batch
from .function import no_grad
from .optim import clip_grad_norm_, get_lr
from .rundir import check_fresh, lock_run_dir

__all__ = ["TrainConfig", "train", "estimate_loss", "NonFiniteLossError", "training_memory"]


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings (nanoGPT's names).

    The learning rate warms up linearly for ``warmup_iters``, then follows a cosine from
    ``learning_rate`` down to ``min_lr`` at ``lr_decay_iters`` (then stays there). Left as
    None, ``lr_decay_iters`` is ``max_iters`` (the schedule follows the run) and
    ``warmup_iters`` is 100, but at most a tenth of the run (and of ``lr_decay_iters``); the values are
    filled in when the config is made, so a checkpoint stores the schedule it ran.
    """

    batch_size: int = 12
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int | None = None
    lr_decay_iters: int | None = None
    decay_lr: bool = True
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    always_save_checkpoint: bool = True
    seed: int = 1337
    peak_flops: float | None = None
    dtype: str = "float32"
    tf32: bool = True

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        def bad(name, want):
            raise ValueError(f"TrainConfig.{name} must be {want}, got {getattr(self, name)!r}")

        for name in ("batch_size", "grad_accum_steps", "eval_interval", "eval_iters", "log_interval"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "a positive integer")
        for name in ("max_iters", "warmup_iters"):
            v = getattr(self, name)
            if not (v is None and name == "warmup_iters") and (not is_int(v) or v < 0):
                bad(name, "an integer >= 0")
        if self.lr_decay_iters is not None and (not is_int(self.lr_decay_iters) or self.lr_decay_iters < 1):
            bad("lr_decay_iters", "a positive integer (or None: max_iters)")
        if not is_int(self.seed) or self.seed < 0:
            bad("seed", "an integer >= 0")
        check_amp_dtype(self.dtype, "TrainConfig.dtype")
        for name in ("decay_lr", "always_save_checkpoint", "tf32"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                bad(name, "true or false")
        ranges = {"learning_rate": (0.0, None), "min_lr": (0.0, None), "weight_decay": (0.0, None),
                  "grad_clip": (0.0, None), "beta1": (0.0, 1.0), "beta2": (0.0, 1.0)}
        for name, (lo, hi) in ranges.items():
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or not math.isfinite(v) \
                    or v < lo or (hi is not None and v >= hi):
                bad(name, f"a finite number >= {lo:g}" + (f" and < {hi:g}" if hi is not None else "")
                    + (" (0 turns clipping off)" if name == "grad_clip" else ""))
        if self.peak_flops is not None and (not isinstance(self.peak_flops, (int, float)) or isinstance(
                self.peak_flops, bool) or not math.isfinite(self.peak_flops) or self.peak_flops <= 0):
            bad("peak_flops", "a finite number > 0 in FLOP/s (or None: from the machine, when known)")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr:g}) must not exceed learning_rate "
                             f"({self.learning_rate:g})")
        # the schedule follows the run unless given, and the warmup never outlasts it
        if self.lr_decay_iters is None:
            self.lr_decay_iters = max(self.max_iters, 1)
        if self.warmup_iters is None:
            self.warmup_iters = min(100, min(self.lr_decay_iters, self.max_iters) // 10)
        elif self.decay_lr:
            if self.warmup_iters > self.lr_decay_iters:
                raise ValueError(f"TrainConfig.warmup_iters ({self.warmup_iters}) must not exceed "
                                 f"lr_decay_iters ({self.lr_decay_iters}): the warmup would outlast the decay")
            if self.warmup_iters > self.max_iters:
                raise ValueError(f"TrainConfig.warmup_iters ({self.warmup_iters}) must not exceed max_iters "
                                 f"({self.max_iters}): the warmup would outlast the run")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return config_from_dict(cls, d)


def training_memory(config, batch_size: int, dtype: str = "float32") -> dict:
    """A lower bound of the memory one training step needs, in bytes, without building the
    model (``config``: a GPTConfig or LlamaConfig): ``params`` (float32 weights, gradients and
    AdamW's two moments: 16 bytes per parameter), ``activations`` (kept for the backward pass:
    about 16 * n_embd values per token and layer and the attention scores; 4 * n_embd and the
    scores with ``recompute="mlp"``; n_embd, plus one block's worth while it is recomputed,
    with ``recompute="block"``; no scores with ``attention="flash"``; 2 bytes a value for
    ``dtype="float16"``; and the float32 logits with their gradient), ``total``; and
    ``n_params``. Measured peaks are 1.15-1.7 times this (docs/nn.md)."""
    C, T, V, L, H = config.n_embd, config.block_size, config.vocab_size, config.n_layer, config.n_head
    n_params = config.num_params()
    params = 16 * n_params
    scores = 0 if config.attention == "flash" else H * T        # values per token and layer
    block = 16 * C + scores
    kept = {"none": L * block, "mlp": L * (4 * C + scores), "block": L * C + block}[config.recompute]
    activations = (2 if dtype == "float16" else 4) * batch_size * T * kept + 4 * 2 * batch_size * T * V
    return {"n_params": n_params, "params": params, "activations": activations, "total": params + activations}


@no_grad()
def estimate_loss(model, data, batch_size: int, eval_iters: int, seed: int, should_stop=None,
                  progress=None, comm=None) -> dict | None:
    """Mean loss over ``eval_iters`` batches of each split, from a generator seeded with ``seed``.

    ``should_stop()`` is asked before each batch: True ends the evaluation and returns None.
    ``progress(done, total)`` is called after each batch. The losses are summed on the model's
    device and read once per split. With a communicator of several ranks, each rank evaluates
    its slice of batches of ``batch_size * world_size`` rows and the means are averaged over the
    ranks (``should_stop`` must then agree across them)."""
    comm = comm or distributed.SINGLE
    was_training = model.training
    model.eval()
    out = {}
    try:
        for k, (split, ids) in enumerate((("train", data.train), ("val", data.val))):
            rng = np.random.default_rng(seed)
            total = None
            for i in range(eval_iters):
                if should_stop is not None and should_stop():
                    return None
                x, y = get_batch(ids, batch_size, model.config.block_size, model.device, rng=rng,
                                 rank=comm.rank, world_size=comm.world_size)
                loss = model(x, y)[1].data.astype(np.float64)
                total = loss if total is None else total + loss
                if progress is not None:
                    progress(k * eval_iters + i + 1, 2 * eval_iters)
            out[split] = comm.mean(float(backend.to_numpy(total)) / eval_iters,
                                   what="averaging the evaluation loss")
    finally:
        model.train(was_training)
    return out


class NonFiniteLossError(RuntimeError):
    """The loss (or the gradient norm) became NaN or inf; the run stopped before the step."""


class _StopFlag:
    """First Ctrl-C or SIGTERM: ask the loop to stop (it saves first). Second: stop now."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)

    def __init__(self, log=print):
        self.stop = False
        self.log = log
        self.prev = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self.prev[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"\n{name}: stopping after this iteration and saving a checkpoint (Ctrl-C again to stop "
                 "at once, without saving)")

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            signal.signal(sig, prev)
        return False


def _write_history(path: Path, rows: list[dict]):
    fields = ["iter", "train_loss", "val_loss", "val_ppl", "lr", "time_s"]
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, rows: list[dict]):
    try:
        import matplotlib  # noqa: PLC0415 (optional dependency: the plot is skipped without it)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return
    its = [r["iter"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(its, [r["train_loss"] for r in rows], label="train")
    ax.plot(its, [r["val_loss"] for r in rows], label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


#: seconds between progress lines of one evaluation
EVAL_PROGRESS_S = 2.0
_now = time.perf_counter     # the loop's clock (tests replace it)


@contextlib.contextmanager
def _overflows_expected():
    """float16 with loss scaling: a gradient that overflows now and then is expected (the step is
    skipped, and logged), so NumPy's warnings about it (from any thread) are silenced meanwhile."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(overflow|invalid value) encountered", RuntimeWarning)
        yield


def _finite_or_none(v):
    return v if v is not None and math.isfinite(v) else None


def _quiet(*args, **kwargs):
    """The log of the ranks other than rank 0."""


def _state_arrays(model, optimizer) -> list:
    """The weights and the optimizer's state (step counts, moments) as arrays, in a fixed order."""
    arrays = [p.data for p in model.parameters()]
    state = optimizer.state_dict()["state"]
    for k in sorted(state):
        arrays.append(np.asarray(state[k]["step"]))
        arrays += [state[k][name] for name in sorted(state[k]) if name != "step"]
    return arrays


class _StepWatch:
    """Each step's loss and gradient norm, and whether they were finite, kept on the model's
    device so that a step waits for nothing; :meth:`read` fetches them in one transfer.

    ``stopped`` is a 0-d flag, set from the first step whose loss or norm is NaN or inf on:
    the optimizer skips every step while it is set (``found_inf``). ``good`` counts the steps
    before that one since the last read, so the read knows which iteration it was, and
    ``bad`` keeps its (loss, norm)."""

    def __init__(self, xp, dtype, read_at: int):
        self.xp, self.read_at = xp, read_at
        self.stopped = xp.zeros((), dtype=bool)
        self.good = xp.zeros((), dtype=dtype)
        self.bad = xp.zeros(2, dtype=dtype)
        self.loss = self.norm = None

    def record(self, loss, norm):
        """``loss``, ``norm`` (or None): this step's 0-d arrays. Returns the skip flag for the step."""
        xp = self.xp
        pair = xp.stack([loss, loss if norm is None else norm.astype(loss.dtype)])
        finite = xp.isfinite(pair).all()
        self.bad = xp.where(finite | self.stopped, self.bad, pair)     # kept from the first bad step
        self.stopped = self.stopped | ~finite
        self.good = self.good + ~self.stopped                          # steps before the first bad one
        self.loss, self.norm = loss, norm
        return self.stopped

    def read(self, it: int):
        """(the last step's loss, None or (iteration, "loss" or "gradient norm", value) of the first
        step since the previous read that was not finite); one transfer from the device."""
        xp = self.xp
        v = backend.to_numpy(xp.concatenate([xp.stack([self.loss, self.good, self.stopped.astype(self.loss.dtype)]),
                                             self.bad]))
        last_read, self.read_at = self.read_at, it
        self.good = xp.zeros_like(self.good)
        if not v[2]:
            return float(v[0]), None
        loss, norm = float(v[3]), float(v[4])
        what = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
        return float(v[0]), (last_read + int(v[1]) + 1, *what)


def train(model, data, cfg: TrainConfig, out_dir, tokenizer=None, resume: bool = False,
          log=print, extra_config: dict | None = None, overwrite: bool = False, comm=None) -> dict:
    """Train ``model`` on ``data`` (``.train``/``.val`` id arrays).

    Returns a summary dict: ``iter``; ``best_val_loss`` and ``best_iter`` of the ``best``
    checkpoint written (None if none was); ``history`` (eval rows); ``interrupted``;
    ``latest`` (its path). Raises RunExistsError (a new run into a folder that holds one,
    without ``overwrite``), RunDirError (the folder is in use or unusable),
    NonFiniteLossError, CheckpointError (a checkpoint cannot be written or read).

    ``comm``: the ranks of a data-parallel run (``distributed.init()``), each with batches of
    ``cfg.batch_size`` rows; None: this process alone. With several ranks, what this raises is
    raised on every rank alike, and a failure of one rank alone ends the whole job
    (``distributed.guard``)."""
    comm = comm or distributed.SINGLE
    out_dir = Path(out_dir)
    T = model.config.block_size
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n <= T:
            raise ValueError(f"the {split} split has {n} tokens; it needs more than block_size={T} "
                             "for even one batch: use more data or a smaller block_size")
    with distributed.guard(comm), contextlib.ExitStack() as held:
        def open_folder():                    # rank 0 holds the lock for all ranks
            held.enter_context(lock_run_dir(out_dir))
            clean_stale(out_dir)
            if not resume:
                check_fresh(out_dir, overwrite)
        distributed.on_rank0(comm, open_folder, what="waiting for rank 0 to open the run folder")
        return _train_locked(model, data, cfg, out_dir, tokenizer, resume, log, extra_config, comm)


def _train_locked(model, data, cfg, out_dir, tokenizer, resume, log, extra_config, comm) -> dict:
    T = model.config.block_size
    if comm.rank != 0:                   # only rank 0 logs
        log = _quiet
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2))
    iter_num, best_val, best_iter, history, elapsed0 = 0, None, None, [], 0.0
    if resume:
        ckpt = error = None
        try:                             # every rank loads the same checkpoint
            ckpt = load_checkpoint(out_dir / "latest", device=model.device, model=model)
            st = ckpt.trainer_state
            if not isinstance(st.get("iter"), int) or "rng" not in st:
                raise CheckpointError(f"{ckpt.path} cannot be resumed: its trainer_state.json has no iteration "
                                      "or RNG state")
            ckpt.load_optimizer(optimizer)
        except Exception as e:  # noqa: BLE001 - shared with the other ranks, then raised
            error = e
        comm.raise_together(error, what="loading the checkpoint")
        if comm.world_size > 1:
            distributed.check_in_sync(comm, _state_arrays(model, optimizer),
                                      f"weights and optimizer state after loading {ckpt.path}")
        iter_num = st["iter"]
        best_val, best_iter = _finite_or_none(st.get("best_val_loss")), st.get("best_iter")
        backend.set_rng_state(st["rng"])
        history = list(st.get("history", []))
        elapsed0 = float(st.get("elapsed_s", history[-1]["time_s"] if history else 0.0))
        best = "" if best_val is None else f" (best val loss {best_val:.4f}" + \
            ("" if best_iter is None else f" at iteration {best_iter}") + ")"
        log(f"resumed from {ckpt.path} at iteration {iter_num}{best}")
    else:
        backend.manual_seed(cfg.seed)
        distributed.broadcast_model(comm, model)             # every rank starts from rank 0's
        distributed.broadcast_optimizer(comm, optimizer)
    train_config = dataclasses.asdict(cfg) | (extra_config or {})
    tokens_per_iter = cfg.batch_size * T * cfg.grad_accum_steps * comm.world_size    # of all ranks
    eval_seed = cfg.seed + 1_000_003
    on_gpu = model.device != "cpu"
    read_each_step = not on_gpu or comm.world_size > 1     # else: one read per log line (_StepWatch)
    tf32_on = cfg.tf32 and on_gpu
    peak = cfg.peak_flops or hardware.peak_flops(model.device, tf32=tf32_on)
    t_start = _now()
    saved = {}                                   # checkpoint name -> iteration written this run
    precision = autocast(cfg.dtype)              # float32: changes nothing
    scaler = GradScaler(enabled=cfg.dtype == "float16")
    overflows = _overflows_expected if scaler.is_enabled() else contextlib.nullcontext
    if resume and scaler.is_enabled() and st.get("scaler"):      # (a float32 run resumed in float16: none)
        try:
            scaler.load_state_dict(st["scaler"])
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"{out_dir / 'latest'}: its loss-scaler state cannot be used: {e}") from None

    def elapsed():
        return elapsed0 + (_now() - t_start)

    def state(it):
        return {"iter": it, "best_val_loss": best_val, "best_iter": best_iter, "rng": backend.get_rng_state(),
                "history": history, "elapsed_s": round(elapsed(), 3), "scaler": scaler.state_dict()}

    def save(name, it):
        distributed.on_rank0(comm, lambda: save_checkpoint(out_dir, name, model, optimizer, state(it),
                                                        train_config, tokenizer),
                             what=f"waiting for rank 0 to write {name}/")
        saved[name] = it

    def write_run_files():
        for name, write in (("history.csv", _write_history), ("loss.png", _plot)):
            try:
                write(out_dir / name, history)
            except OSError as e:
                raise CheckpointError(f"cannot write {out_dir / name}: {e.strerror or e}; the "
                                      f"checkpoints in {out_dir} are as they were") from None

    def stop_asked():                     # by any rank: all stop at the same point
        return comm.any(flag.stop, what="agreeing whether to stop")

    def lr_at(it):
        if not cfg.decay_lr:
            return cfg.learning_rate
        return get_lr(it, lr=cfg.learning_rate, min_lr=cfg.min_lr, warmup_iters=cfg.warmup_iters,
                      lr_decay_iters=cfg.lr_decay_iters)

    def stopped_by_nonfinite(what, value, it):
        last = saved.get("latest", iter_num if resume else None)
        where = (f"the last checkpoint, {out_dir / 'latest'} (iteration {last}), is kept" if last is not None
                 else "no checkpoint was written")
        return distributed.together(NonFiniteLossError(      # (the values are the same on every rank)
            f"training stopped: the {what} is {value} at iteration {it}; nothing from that step was saved "
            f"and {where}. Try a lower learning_rate (now {cfg.learning_rate:g})"
            + (" or grad_clip > 0 (now 0: off)" if cfg.grad_clip == 0 else f" or a lower grad_clip (now {cfg.grad_clip:g})")))

    model.train()
    window_s, window_steps, timed = 0.0, 0, False
    interrupted = False
    watch = _StepWatch(backend.xp_for(model.device), model.dtype, iter_num)
    with _StopFlag(log) as flag, (backend.tf32(True) if tf32_on else contextlib.nullcontext()):
        it = iter_num
        while True:
            lr = lr_at(it)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if it % cfg.eval_interval == 0 or it == cfg.max_iters:
                if not (history and history[-1]["iter"] == it):  # (a resumed run already has it)
                    t_eval = [_now()]

                    def progress(done, total, t_eval=t_eval, it=it):
                        if _now() - t_eval[0] >= EVAL_PROGRESS_S:
                            t_eval[0] = _now()
                            log(f"  evaluating step {it}: {done}/{total} batches")
                    if comm.world_size > 1:
                        distributed.check_in_sync(comm, [p.data for p in model.parameters()], "weights")
                    with precision:
                        losses = estimate_loss(model, data, cfg.batch_size, cfg.eval_iters, eval_seed,
                                               should_stop=stop_asked, progress=progress, comm=comm)
                    if losses is None:               # Ctrl-C during the evaluation
                        interrupted = True
                        break
                    for split in ("train", "val"):
                        if not math.isfinite(losses[split]):
                            raise stopped_by_nonfinite(f"{split} loss", losses[split], it)
                    history.append({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                                    "val_ppl": math.exp(min(losses["val"], 50.0)), "lr": lr,
                                    "time_s": round(elapsed(), 3)})
                    log(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                        f"val ppl {math.exp(min(losses['val'], 50.0)):.2f}")
                    distributed.on_rank0(comm, write_run_files, what="waiting for rank 0 to write history.csv")
                    if it > 0 and (best_val is None or losses["val"] < best_val):
                        best_val, best_iter = losses["val"], it
                        save("best", it)
                    if it > 0 and cfg.always_save_checkpoint:
                        save("latest", it)
            stop = stop_asked()
            if it >= cfg.max_iters or stop:
                interrupted = stop and it < cfg.max_iters
                break
            # ---- one optimisation step
            t_step = _now()
            backend.reseed_from_cpu(model.device)    # a GPU's dropout seed, from the saved CPU generator
            loss_sum = None
            for _ in range(cfg.grad_accum_steps):
                x, y = get_batch(data.train, cfg.batch_size, T, model.device, rank=comm.rank,
                                 world_size=comm.world_size)
                with precision:
                    _, loss = model(x, y)
                if cfg.grad_accum_steps > 1:
                    loss = loss * (1.0 / cfg.grad_accum_steps)
                with overflows():
                    scaler.scale(loss).backward()    # (float32: the loss itself)
                loss_sum = loss.data if loss_sum is None else loss_sum + loss.data
            distributed.allreduce_grads(comm, optimizer)          # one call: the mean over the ranks
            with overflows():
                scaler.unscale_(optimizer)           # float16: the true gradients, before clipping
                norm = clip_grad_norm_(model.parameters(), cfg.grad_clip).data if cfg.grad_clip > 0 else None
            # float16: an inf/NaN gradient is the loss scale's overflow, which the scaler skips; only the loss counts
            skip = watch.record(loss_sum, None if scaler.is_enabled() else norm)
            if read_each_step:                        # free on the CPU; needed to average over ranks
                loss_value, bad = watch.read(it + 1)
                loss_value = comm.mean(loss_value, what="averaging the loss")
                if not math.isfinite(loss_value):
                    raise stopped_by_nonfinite("loss", loss_value, it + 1)
                if bad is not None:                   # the gradient norm: the same on every rank
                    raise stopped_by_nonfinite(bad[1], bad[2], bad[0])
            if scaler.is_enabled():
                scale = scaler.get_scale()
                scaler.step(optimizer)               # skipped if a gradient overflowed float16
                scaler.update()
                if scaler.get_scale() < scale:
                    log(f"iter {it + 1}: a gradient overflowed float16, the step was skipped; loss scale "
                        f"{scale:g} -> {scaler.get_scale():g}")
            elif read_each_step:
                optimizer.step()
            else:
                optimizer.step(found_inf=skip)        # skipped on the device if the step was not finite
            optimizer.zero_grad()   # the next backward writes into the optimizer's flat buffer
            it += 1
            if not read_each_step and (it % cfg.log_interval == 0 or it % cfg.eval_interval == 0
                                       or it >= cfg.max_iters or flag.stop):
                # the GPU's one wait: before a log line, an evaluation, a save
                loss_value, bad = watch.read(it)
                if bad is not None:
                    raise stopped_by_nonfinite(bad[1], bad[2], bad[0])
            if timed:                     # the first step after a (re)start warms up: not timed
                window_s += _now() - t_step
                window_steps += 1
            timed = True
            if it % cfg.log_interval == 0:
                line = f"iter {it}: loss {loss_value:.4f}, lr {lr:.2e}" + \
                    (f", loss scale {scaler.get_scale():g}" if scaler.is_enabled() else "")
                if window_steps:
                    dt = window_s / window_steps
                    mfu = "n/a" if peak is None else \
                        f"{model.estimate_mfu(tokens_per_iter // comm.world_size, dt, peak_flops=peak) * 100:.2f}%"
                    line += (f", {dt * 1000:.1f} ms/iter, {tokens_per_iter / dt:,.0f} tok/s, mfu {mfu}, "
                             f"eta {_fmt_eta(dt * (cfg.max_iters - it))}")
                log(line)
                window_s, window_steps = 0.0, 0
        if not read_each_step and watch.loss is not None:    # steps since the last read (a stop came between)
            bad = watch.read(it)[1]
            if bad is not None:
                raise stopped_by_nonfinite(bad[1], bad[2], bad[0])
    if saved.get("latest") != it and not (resume and it == iter_num and not saved):
        save("latest", it)
    if interrupted:
        log(f"stopped at iteration {it}; continue with --resume")
    return {"iter": it, "best_val_loss": best_val, "best_iter": best_iter, "history": history,
            "interrupted": interrupted, "latest": out_dir / "latest"}
