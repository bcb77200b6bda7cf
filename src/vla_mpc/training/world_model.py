"""Train the JEPA world model (``vla_mpc.models.jepa``) on a contract-B dataset.

    python -m vla_mpc.train world_model --dataset D --out O [--minutes M] [--steps N] [--seed S]
        [--resume] [--horizon T] [--batch-size B] [--latent-dim D]

Batches (``make_world_model_batch``): ``B`` windows of ``T + 1`` consecutive frames of one
episode (10 Hz rows), drawn uniformly from the split's windows: ``"frames"`` uint8
``(B, T+1, S, S, 3)``, ``"proprio"`` float32 ``(B, T+1, 2n)`` (raw joint positions then
velocities), ``"actions"`` float32 ``(B, T, n)`` = measured joint position deltas between
consecutive frames (contract F; the world model integrates them exactly, so the predictor learns
the image consequence of a known joint motion). Windows never cross an episode boundary.

Training: ``vla_mpc.training.loop.train`` (AdamW, warm-up + cosine, validation on the ``val``
split, ``best/`` and ``last/`` checkpoints written by ``save_world_model``: ``model.safetensors`` +
``config.json``). Two stages (V-JEPA 2-AC trains its predictor on a frozen encoder): stage one
trains everything (``JepaNet.loss``); stage two, ``--init O1/best --freeze-encoder``, trains the
predictor alone on the frozen encoder's latents. ``--scenes DIR...`` (scene sets with
``joint_positions``, ``python -m vla_mpc.train scenes``) adds ``--pose-batch-size`` single rendered
frames per step to the proprio term of stage one: many more arm poses than the episodes hold, so the
image -> joints read-out that the ``decoded`` goal route uses generalises. At the end, ``O/prediction_report.json`` holds the multi-step prediction error
of the best checkpoint against the copy-last-latent baseline on validation windows
(``prediction_error_report``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

DEFAULT_HORIZON = 3


def window_starts(dataset: Any, split: str, horizon: int) -> np.ndarray:
    """Row indices ``r`` of ``split`` whose window ``r .. r + horizon`` lies in one episode.

    Cached on the dataset object per ``(split, horizon)``.

    Raises:
        ValueError: ``horizon < 1`` or no window fits (episodes shorter than ``horizon + 1`` rows).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
    cache = dataset.__dict__.setdefault("_wm_windows", {})
    key = (split, horizon)
    if key not in cache:
        rows = np.asarray(dataset.rows(split), dtype=np.int64)
        ep = np.asarray(dataset.episode_index)
        rows = rows[rows + horizon < len(ep)]
        ok = ep[rows + horizon] == ep[rows]
        starts = rows[ok]
        if starts.size == 0:
            raise ValueError(f"split {split!r} has no window of {horizon + 1} consecutive frames in one episode")
        cache[key] = starts
    return cache[key]


def make_world_model_batch(dataset: Any, split: str, rng: np.random.Generator, batch_size: int,
                           horizon: int = DEFAULT_HORIZON) -> dict[str, torch.Tensor]:
    """A batch of ``batch_size`` windows (module docstring).

    Args:
        dataset: a ``vla_mpc.training.dataset.Dataset`` (uses ``frames``, ``proprio``,
            ``episode_index``, ``rows(split)``, ``meta["joint_names"]``).
        split: ``"train"`` or ``"val"``.
        rng: draws the windows.
        batch_size: ``B`` >= 1.
        horizon: ``T`` >= 1 predicted steps per window.

    Returns:
        ``{"frames": uint8 (B, T+1, S, S, 3), "proprio": float32 (B, T+1, 2n),
        "actions": float32 (B, T, n)}``.

    Raises:
        ValueError: as ``window_starts``; ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = window_starts(dataset, split, horizon)
    r = np.sort(rng.choice(starts, size=batch_size, replace=starts.size < batch_size))
    idx = r[:, None] + np.arange(horizon + 1)[None]  # [B, T+1]
    n = len(dataset.meta["joint_names"])
    frames = np.asarray(dataset.frames[idx.reshape(-1)]).reshape(batch_size, horizon + 1, *dataset.frames.shape[1:])
    proprio = np.asarray(dataset.proprio[idx.reshape(-1)], dtype=np.float32).reshape(batch_size, horizon + 1, -1)
    actions = np.diff(proprio[..., :n], axis=1)  # [B, T, n] measured position deltas
    return {"frames": torch.from_numpy(np.ascontiguousarray(frames)),
            "proprio": torch.from_numpy(proprio),
            "actions": torch.from_numpy(np.ascontiguousarray(actions))}


def load_pose_sets(paths: Sequence[str | Path], dataset: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """Frames (M, S, S, 3) uint8 and joint positions (M, n) float32 of scene sets, concatenated
    (loaded into memory), or None for no paths.

    Raises:
        ValueError: a set without ``joint_positions``, or whose joints / image size differ from
            the dataset's.
    """
    from vla_mpc.training.scenes import SceneSet

    frames, qs = [], []
    for p in paths:
        sc = SceneSet.load(p)
        if sc.joint_positions is None:
            raise ValueError(f"scenes {p}: no joint_positions.npy (regenerate with python -m vla_mpc.train scenes)")
        if list(sc.meta.get("joint_names", [])) != list(dataset.meta["joint_names"]) \
                or int(sc.meta["image_size"]) != int(dataset.meta["image_size"]):
            raise ValueError(f"scenes {p}: joints {sc.meta.get('joint_names')} / image size {sc.meta['image_size']} "
                             f"differ from the dataset's {dataset.meta['joint_names']} / {dataset.meta['image_size']}")
        frames.append(np.asarray(sc.frames))
        qs.append(np.asarray(sc.joint_positions, dtype=np.float32))
    return (np.concatenate(frames), np.concatenate(qs)) if frames else None


def build_net(dataset: Any, latent_dim: int = 32, **kwargs: Any) -> Any:
    """A fresh ``JepaNet`` for ``dataset``: joints from ``meta["joint_names"]`` (checked against
    the robot config ``meta["robot"]``), limits from the robot config, ``dt`` = 1 /
    ``frame_rate_hz``, ``image_size`` from the meta.

    Raises:
        ValueError: the dataset's joints differ from the robot config's.
    """
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.jepa import JepaConfig, JepaNet

    meta = dataset.meta
    spec = load_robot_spec(meta["robot"])
    if list(meta["joint_names"]) != list(spec.joint_names):
        raise ValueError(f"dataset joint_names {meta['joint_names']} != robot {spec.name} joint_names "
                         f"{list(spec.joint_names)}")
    cfg = JepaConfig.from_robot_spec(spec, dt=1.0 / float(meta["frame_rate_hz"]),
                                     image_size=int(meta["image_size"]), latent_dim=latent_dim, **kwargs)
    return JepaNet(cfg)


def parse_args(args: Sequence[str] | argparse.Namespace | None) -> argparse.Namespace:
    """Command line of ``python -m vla_mpc.train world_model`` (module docstring)."""
    if isinstance(args, argparse.Namespace):
        return args
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.train world_model",
                                 description="train the JEPA world model on a vla_mpc dataset")
    ap.add_argument("--dataset", required=True, help="dataset directory (meta.json, frames.npy, ...)")
    ap.add_argument("--out", required=True, help="output directory (log.jsonl, best/, last/)")
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget [min]")
    ap.add_argument("--steps", type=int, default=20000, help="optimiser steps (cosine schedule length)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last")
    ap.add_argument("--horizon", type=int, default=DEFAULT_HORIZON, help="predicted steps per window T")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--ema-decay", type=float, default=0.95, help="target encoder EMA decay per step")
    ap.add_argument("--variance-weight", type=float, default=1.0, help="VICReg variance term weight")
    ap.add_argument("--variance-target", type=float, default=0.5, help="VICReg gamma (per-dimension std)")
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--init", default=None, help="start from this checkpoint directory (weights and config)")
    ap.add_argument("--scenes", nargs="*", default=[],
                    help="scene sets (with joint_positions) whose frames join the proprio term (stage one)")
    ap.add_argument("--pose-batch-size", type=int, default=64, help="scene frames per step with --scenes")
    ap.add_argument("--proprio-head-hidden", type=int, default=0,
                    help="hidden width of the proprio head (0: linear, the original head)")
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="stage two: train the predictor only, on the frozen encoder's latents (use with --init)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(list(args) if args is not None else None)


def train_world_model(dataset: Any, out: Path, args: argparse.Namespace, progress: bool = True) -> dict:
    """Build, train and report (used by ``main`` and the tests).

    Returns:
        ``{"train": TrainResult fields, "report": prediction_error_report of out/best}``.
    """
    from vla_mpc.models.jepa import load_world_model, prediction_error_report, save_world_model
    from vla_mpc.training.loop import TrainConfig, train

    if getattr(args, "init", None):
        net = load_world_model(args.init).train()
        if list(net.config.joint_names) != list(dataset.meta["joint_names"]):
            raise ValueError(f"--init {args.init}: joints {list(net.config.joint_names)} != dataset joints "
                             f"{dataset.meta['joint_names']}")
    else:
        net = build_net(dataset, latent_dim=args.latent_dim, ema_decay=getattr(args, "ema_decay", 0.95),
                        variance_weight=getattr(args, "variance_weight", 1.0),
                        variance_target=getattr(args, "variance_target", 0.5),
                        proprio_head_hidden=getattr(args, "proprio_head_hidden", 0))
    if getattr(args, "freeze_encoder", False):
        net.freeze_encoder()
    horizon = args.horizon
    window_starts(dataset, "train", horizon)  # fail early, naming the split
    window_starts(dataset, "val", horizon)

    poses = load_pose_sets(getattr(args, "scenes", None) or [], dataset)
    pose_batch = int(getattr(args, "pose_batch_size", 64))

    def make_batch(split: str, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        batch = make_world_model_batch(dataset, split, rng, batch_size, horizon)
        if split == "train" and poses is not None:
            pick = np.sort(rng.integers(0, len(poses[0]), size=pose_batch))
            batch["pose_frames"] = torch.from_numpy(np.ascontiguousarray(poses[0][pick]))
            batch["pose_q"] = torch.from_numpy(np.ascontiguousarray(poses[1][pick]))
        return batch

    cfg = TrainConfig(max_steps=args.steps, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                      warmup_steps=min(100, max(1, args.steps // 10)), val_every=args.val_every, val_batches=4,
                      checkpoint_every=max(args.val_every, 500), seed=args.seed, num_threads=args.threads)
    extra = {"init": str(Path(args.init).resolve())} if getattr(args, "init", None) else None
    result = train(net, make_batch, out, cfg, save_world_model, resume=args.resume, progress=progress,
                   summary_extra=extra)
    best = out / "best" if (out / "best" / "config.json").is_file() else out / "last"
    trained = load_world_model(best)
    rng = np.random.default_rng(12345)
    report = prediction_error_report(trained, make_world_model_batch(dataset, "val", rng, 64, horizon))
    report["checkpoint"] = str(best)
    (out / "prediction_report.json").write_text(json.dumps(report, indent=1))
    return {"train": {"steps": result.steps, "minutes": result.minutes, "train_loss": result.train_loss,
                      "val_loss": result.val_loss}, "report": report}


def main(args: Sequence[str] | argparse.Namespace | None = None) -> int:
    """Entry point of ``python -m vla_mpc.train world_model``; prints a JSON summary."""
    from vla_mpc.training.dataset import Dataset

    a = parse_args(args)
    dataset = Dataset.load(a.dataset)
    summary = train_world_model(dataset, Path(a.out), a)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
