"""Policy checkpoints: ``model.safetensors`` (weights) + ``config.json`` (config + statistics).

Never pickle: weights go through ``safetensors`` (a flat map of named tensors that cannot run code
on load), everything else is JSON. ``config.json``::

    {"format": "vla_mpc.policy/1", "config": {PolicyConfig fields}, "stats": {dataset stats},
     "parameters": {"system2": n, "system1": n, "total": n}, "extra": {...}}

:func:`load_policy` checks everything before building the model and raises
:class:`CheckpointError` (a ``ValueError``) naming the file and the mismatch: a missing directory or
file, JSON that does not parse, a wrong format tag, bad config fields or statistics, a corrupt
safetensors file, and missing, unexpected or wrongly shaped tensors. No rclpy here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig

__all__ = ["FORMAT", "WEIGHTS_FILE", "CONFIG_FILE", "CheckpointError", "save_policy", "load_policy",
           "read_checkpoint_config", "resolve_checkpoint_dir"]

FORMAT = "vla_mpc.policy/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A missing, corrupt or mismatched checkpoint; the message names the file and the problem."""


def save_policy(policy: DualSystemPolicy, path: Path | str, extra: dict[str, Any] | None = None) -> None:
    """Write ``path/model.safetensors`` and ``path/config.json`` (creates ``path``).

    Files are written to temporary names and renamed, so a reader never sees half a checkpoint.

    Args:
        policy: the model.
        path: checkpoint directory.
        extra: JSON-serialisable provenance (dataset, steps, losses) stored under ``"extra"``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    tmp_w = path / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT})
    doc = {"format": FORMAT, "config": policy.config.to_dict(), "stats": policy.stats,
           "parameters": policy.num_parameters(), "extra": extra or {}}
    tmp_c = path / (CONFIG_FILE + ".tmp")
    tmp_c.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp_w, path / WEIGHTS_FILE)
    os.replace(tmp_c, path / CONFIG_FILE)


def resolve_checkpoint_dir(path: Path | str) -> Path:
    """``path`` itself, or ``path/best`` when ``path`` is a training output directory (``python -m
    vla_mpc.train policy --out path``: no ``config.json`` at its top, one in ``best/``)."""
    path = Path(path)
    if not (path / CONFIG_FILE).exists() and (path / "best" / CONFIG_FILE).is_file():
        return path / "best"
    return path


def read_checkpoint_config(path: Path | str) -> tuple[PolicyConfig, dict, dict]:
    """Parse ``path/config.json`` -> (config, stats, the whole document); a training output
    directory is read from its ``best/`` (:func:`resolve_checkpoint_dir`).

    Raises:
        CheckpointError: missing directory/file, bad JSON, wrong format, bad config.
    """
    path = resolve_checkpoint_dir(path)
    if not path.is_dir():
        raise CheckpointError(f"policy checkpoint directory {path} does not exist")
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: missing (a checkpoint needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        doc = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{cfg_file}: format {got!r}, expected {FORMAT!r}")
    for key in ("config", "stats"):
        if not isinstance(doc.get(key), dict):
            raise CheckpointError(f"{cfg_file}: missing or invalid {key!r} object")
    try:
        config = PolicyConfig.from_dict(doc["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_file}: bad config: {exc}") from exc
    return config, doc["stats"], doc


def load_policy(path: Path | str, expected_joint_names: tuple[str, ...] | list[str] | None = None) -> DualSystemPolicy:
    """Load a checkpoint written by :func:`save_policy` (eval mode, CPU).

    Args:
        path: checkpoint directory.
        expected_joint_names: if given, the checkpoint's ``joint_names`` must equal them (the
            robot the policy will drive).

    Raises:
        CheckpointError: see the module docstring; the message names the file and the mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolve_checkpoint_dir(path)
    config, stats, _doc = read_checkpoint_config(path)
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if expected_joint_names is not None and tuple(expected_joint_names) != config.joint_names:
        raise CheckpointError(
            f"{cfg_file}: joint_names {list(config.joint_names)} (robot {config.robot!r}) do not match the "
            f"robot's {list(expected_joint_names)}"
        )
    try:
        policy = DualSystemPolicy(config, stats)
    except ValueError as exc:
        raise CheckpointError(f"{cfg_file}: {exc}") from exc
    if not w_file.is_file():
        raise CheckpointError(f"{w_file}: missing")
    try:
        tensors = load_file(str(w_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{w_file}: corrupt or unreadable safetensors file ({exc})") from exc
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}")
        raise CheckpointError(f"{w_file}: does not match {cfg_file.name}: " + "; ".join(parts))
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{w_file}: non-finite values in {bad[:5]}")
    policy.load_state_dict(tensors, strict=True)
    return policy.eval()
