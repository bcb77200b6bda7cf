"""The generic training loop shared by the policy and world-model trainers (contract D).

    result = train(module, make_batch, out_dir, TrainConfig(max_steps=5000, max_minutes=25), save)

What it does, in order, per step: draw a batch ``make_batch("train", rng, batch_size)``, call
``module.loss(batch) -> (loss, metrics)`` in train mode, back-propagate, clip the gradient norm,
step AdamW at the scheduled learning rate. Every ``val_every`` steps it averages ``module.loss`` over
``val_batches`` validation batches (eval mode, ``torch.no_grad``, a fixed validation RNG so successive
validations see the same batches), appends one JSON line to ``out_dir/log.jsonl`` and saves
``out_dir/best`` when the validation loss improved. Every ``checkpoint_every`` steps and at the end it
saves ``out_dir/last`` (the caller's checkpoint plus the trainer state) and ``out_dir/train_summary.json``.

Optimiser: AdamW (Loshchilov & Hutter 2019), weight decay only on tensors with ``ndim >= 2`` (matrices
and convolution kernels; biases and norm scales are not decayed, as in minGPT / nanoGPT). Learning
rate: linear warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` steps, then cosine
decay to 0 at ``max_steps`` (SGDR, Loshchilov & Hutter 2017, one cycle). The schedule depends on the
step only, so a resumed run follows the uninterrupted run's schedule exactly.

Trainer state (no pickle anywhere): ``last/trainer_state.safetensors`` holds the module's
``state_dict`` (prefix ``model.``), AdamW's per-parameter tensors (``optim.<param index>.<name>``)
and the torch CPU RNG state (``rng.torch``); ``last/trainer_state.json`` holds the step, elapsed
minutes, best validation loss, AdamW's param-group hyper-parameters, the numpy ``Generator`` state
of the training batches and the config. ``resume=True`` restores all of it from ``out_dir/last``;
the caller's own checkpoint files there are left to the caller's loader (the weights are restored
from the trainer state, so ``save`` may write any format).

``max_minutes`` bounds the *total* training time over all resumed runs (the elapsed minutes are part
of the trainer state), so ``train_summary.json``'s ``minutes`` is the whole cost of the model.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "train_summary.json"

MakeBatch = Callable[[str, np.random.Generator, int], dict[str, torch.Tensor]]
SaveFn = Callable[[torch.nn.Module, Path], None]


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`.

    Attributes:
        max_steps: optimiser steps (also the length of the cosine schedule).
        max_minutes: wall-clock budget [min] over all resumed runs; training stops at the first
            step boundary past it.
        batch_size: rows per batch, passed to ``make_batch``.
        lr: peak learning rate (after warm-up).
        weight_decay: AdamW decoupled weight decay, on tensors with ``ndim >= 2`` only.
        warmup_steps: linear warm-up length [steps]; 0 disables warm-up.
        val_every: validation (and log line) period [steps].
        val_batches: validation batches per validation; 0 disables validation (then ``best`` is
            chosen on the training loss of the logging window).
        checkpoint_every: period [steps] of ``out_dir/last`` saves (also saved at the end).
        seed: seeds torch and the numpy generators of the batches.
        num_threads: ``torch.set_num_threads`` during training.
        grad_clip: max global gradient L2 norm; <= 0 disables clipping.
    """

    max_steps: int = 20000
    max_minutes: float = 25.0
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    val_every: int = 250
    val_batches: int = 8
    checkpoint_every: int = 1000
    seed: int = 0
    num_threads: int = 2
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size, "val_every": self.val_every,
                    "checkpoint_every": self.checkpoint_every, "num_threads": self.num_threads}
        for name, value in positive.items():
            if int(value) != value or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not (self.max_minutes > 0):
            raise ValueError(f"TrainConfig.max_minutes must be > 0, got {self.max_minutes!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        for name in ("weight_decay", "warmup_steps", "val_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        steps: optimiser steps done in total (including resumed runs).
        minutes: training wall time [min] in total (including resumed runs).
        train_loss: mean training loss over the last logging window.
        val_loss: last validation loss (nan if validation is off or never ran).
        history: this run's log lines (the dicts written to ``log.jsonl``).
        out_dir: the output directory.
    """

    steps: int
    minutes: float
    train_loss: float
    val_loss: float
    history: list[dict] = field(default_factory=list)
    out_dir: Path = Path(".")


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for ``step < warmup_steps``, then
    ``lr * 0.5 * (1 + cos(pi * p))`` with ``p = (step - warmup_steps) / (max_steps - warmup_steps)``
    clipped to [0, 1].
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.max_steps - config.warmup_steps)
    p = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * p))


def make_optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: decayed (``ndim >= 2``) and not decayed (the rest).

    Only parameters with ``requires_grad`` are optimised; their order is ``module.parameters()``'s,
    which is what makes the saved optimiser state line up on resume.
    """
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    if not decay and not no_decay:
        raise ValueError("train: the module has no trainable parameters")
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr)


# ----------------------------------------------------------------------------- trainer state I/O


def _json_safe(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def save_trainer_state(directory: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       info: dict) -> None:
    """Write ``trainer_state.safetensors`` + ``trainer_state.json`` into ``directory`` (no pickle).

    Args:
        info: JSON-serialisable fields (step, minutes, rng states, ...), stored under ``"info"``.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in module.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().clone().contiguous()
    sd = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state().clone()
    groups = [{k: _json_safe(v) for k, v in g.items()} for g in sd["param_groups"]]
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / STATE_TENSORS))
    (directory / STATE_JSON).write_text(json.dumps(
        {"format": "vla_mpc.trainer_state/1", "param_groups": groups, "optim_scalars": scalars, "info": info},
        indent=1))


def load_trainer_state(directory: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore the module weights, the optimiser state and the torch RNG from ``directory``.

    Returns:
        The ``info`` dict given to :func:`save_trainer_state`.

    Raises:
        FileNotFoundError: a trainer-state file is missing (named).
        ValueError: the state does not fit this module / optimiser (file and mismatch named).
    """
    from safetensors.torch import load_file

    tpath, jpath = directory / STATE_TENSORS, directory / STATE_JSON
    for p in (tpath, jpath):
        if not p.is_file():
            raise FileNotFoundError(f"resume: {p} is missing (was {directory} written by vla_mpc.training.loop?)")
    meta = json.loads(jpath.read_text())
    tensors = load_file(str(tpath))
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        module.load_state_dict(model_sd, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"resume: {tpath} does not match the module: {exc}") from exc
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, scal in meta.get("optim_scalars", {}).items():
        state.setdefault(int(idx), {}).update(scal)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise ValueError(f"resume: optimiser state in {jpath} does not fit this module: {exc}") from exc
    torch.set_rng_state(tensors["rng.torch"])
    return meta["info"]


def _save_checkpoint(out_dir: Path, name: str, module: torch.nn.Module, save: SaveFn,
                     optimizer: torch.optim.Optimizer | None, info: dict | None) -> Path:
    """Write ``out_dir/name`` via a temporary directory, so an interrupted save never leaves a
    half-written checkpoint in place of a good one."""
    final = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    old = out_dir / f".{name}.old"
    for d in (tmp, old):
        if d.exists():
            shutil.rmtree(d)
    tmp.mkdir(parents=True)
    save(module, tmp)
    if optimizer is not None and info is not None:
        save_trainer_state(tmp, module, optimizer, info)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run starts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
    path.write_text("".join(k + "\n" for k in keep))


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _validate(module: torch.nn.Module, make_batch: MakeBatch, config: TrainConfig) -> tuple[float, dict]:
    """Mean loss and metrics over ``val_batches`` batches drawn with a fixed generator."""
    rng = np.random.default_rng(config.seed + 1_000_003)
    losses: list[float] = []
    metrics: dict[str, list[float]] = {}
    module.eval()
    with torch.no_grad():
        for _ in range(config.val_batches):
            loss, m = module.loss(make_batch("val", rng, config.batch_size))
            losses.append(float(loss))
            for k, v in m.items():
                metrics.setdefault(k, []).append(float(v))
    module.train()
    return _mean(losses), {k: _mean(v) for k, v in metrics.items()}


def train(module: torch.nn.Module, make_batch: MakeBatch, out_dir: Path, config: TrainConfig,
          save: SaveFn, resume: bool = False, progress: bool = True,
          summary_extra: dict | None = None) -> TrainResult:
    """Train ``module`` (see the module docstring for what happens when).

    Args:
        module: has ``loss(batch) -> (scalar Tensor, dict[str, float])``.
        make_batch: ``(split, rng, batch_size) -> batch`` with split ``"train"`` or ``"val"``.
        out_dir: created if missing; holds ``log.jsonl``, ``last/``, ``best/``, ``train_summary.json``.
        config: hyper-parameters.
        save: writes a complete checkpoint of ``module`` into the (existing, empty) directory given.
        resume: continue from ``out_dir/last`` (FileNotFoundError if it is missing).
        progress: show a tqdm bar (stderr).
        summary_extra: JSON-serialisable fields added to ``train_summary.json`` (e.g. ``init``: the
            checkpoint a staged run started from, whose minutes count towards this model's cost).

    Returns:
        TrainResult for the whole training (steps and minutes include resumed runs).

    Raises:
        FloatingPointError: the training loss is not finite (the step and last finite loss named).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = make_optimizer(module, config)
    step, minutes_before, best_val = 0, 0.0, float("inf")
    best_step = -1
    if resume:
        info = load_trainer_state(out_dir / "last", module, optimizer)
        step = int(info["step"])
        minutes_before = float(info["minutes"])
        best_val = float(info["best_val"])
        best_step = int(info.get("best_step", -1))
        rng.bit_generator.state = info["rng_numpy"]
        _truncate_log(out_dir / LOG_FILE, step)
    module.train()
    t_start = time.monotonic()
    history: list[dict] = []
    window_losses: list[float] = []
    window_metrics: dict[str, list[float]] = {}
    last_train, last_val = float("nan"), float("nan")

    def minutes() -> float:
        return minutes_before + (time.monotonic() - t_start) / 60.0

    def info_now() -> dict:
        return {"step": step, "minutes": minutes(), "best_val": best_val, "best_step": best_step,
                "rng_numpy": rng.bit_generator.state, "config": asdict(config)}

    def write_summary(stop_reason: str) -> None:
        summary = {"steps": step, "minutes": minutes(), "train_loss": last_train, "val_loss": last_val,
                   "best_val_loss": best_val if math.isfinite(best_val) else None, "best_step": best_step,
                   "stop_reason": stop_reason, "config": asdict(config), **(summary_extra or {})}
        text = json.dumps(summary, indent=1)
        (out_dir / SUMMARY_FILE).write_text(text)
        for name in ("last", "best"):
            if (out_dir / name).is_dir():
                (out_dir / name / SUMMARY_FILE).write_text(text)

    bar = tqdm(total=config.max_steps, initial=step, disable=not progress, desc=out_dir.name, dynamic_ncols=True)
    stop_reason = "max_steps"
    try:
        with open(out_dir / LOG_FILE, "a") as log:
            while step < config.max_steps:
                if minutes() >= config.max_minutes:
                    stop_reason = "max_minutes"
                    break
                lr = lr_at(step, config)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                batch = make_batch("train", rng, config.batch_size)
                loss, metrics = module.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"train: loss is {float(loss.detach())} at step {step} (last logged train loss {last_train})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
                optimizer.step()
                step += 1
                window_losses.append(float(loss.detach()))
                for k, v in metrics.items():
                    window_metrics.setdefault(k, []).append(float(v))
                bar.update(1)
                if step % config.val_every == 0 or step == config.max_steps:
                    last_train = _mean(window_losses)
                    row = {"step": step, "minutes": round(minutes(), 4), "lr": lr, "train_loss": last_train}
                    row.update({f"train/{k}": _mean(v) for k, v in window_metrics.items()})
                    window_losses, window_metrics = [], {}
                    score = last_train
                    if config.val_batches > 0:
                        last_val, vm = _validate(module, make_batch, config)
                        row["val_loss"] = last_val
                        row.update({f"val/{k}": v for k, v in vm.items()})
                        score = last_val
                    if math.isfinite(score) and score < best_val:
                        best_val, best_step = score, step
                        _save_checkpoint(out_dir, "best", module, save, None, None)
                        row["best"] = True
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    history.append(row)
                    bar.set_postfix(loss=f"{last_train:.4g}", val=f"{last_val:.4g}")
                if step % config.checkpoint_every == 0 and step < config.max_steps:
                    _save_checkpoint(out_dir, "last", module, save, optimizer, info_now())
        if window_losses:
            last_train = _mean(window_losses)
        _save_checkpoint(out_dir, "last", module, save, optimizer, info_now())
        if best_step < 0:  # never validated (stopped early): the final weights are the best known
            _save_checkpoint(out_dir, "best", module, save, None, None)
            best_step = step
        write_summary(stop_reason)
    finally:
        bar.close()
        torch.set_num_threads(prev_threads)
    return TrainResult(steps=step, minutes=minutes(), train_loss=last_train, val_loss=last_val,
                       history=history, out_dir=out_dir)
