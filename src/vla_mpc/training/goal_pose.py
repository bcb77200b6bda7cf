"""Train the goal-pose estimator (:mod:`vla_mpc.models.goal_pose`).

    python -m vla_mpc.train goal_pose --scenes output/poses0 output/poses1 [--dataset output/wm_data] \\
        --out output/goal_pose [--minutes 10] [--steps 3000] [--batch-size 64] [--lr 1e-3] [--seed 0]

Frames: the scene sets' (with ``joint_positions``) and, optionally, every row of contract-B datasets
(e.g. the world-model data, whose camera renders at 96 px natively). Labels: the end-effector
position of the frame's joint positions by forward kinematics (``RobotModel.fk_positions``,
``config/<robot>.yaml``'s ``ee_link``) [m, ``base_link``]. Validation: every 20th scene frame (never
trained on). The loop is :func:`vla_mpc.training.loop.train` (AdamW, warm-up + cosine over
``--steps``, ``best``/``last``, ``train_summary.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["load_frames_and_labels", "main"]

VAL_EVERY = 20


def load_frames_and_labels(scenes: Sequence[Path | str], datasets: Sequence[Path | str] = ()
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Frames (M, S, S, 3) uint8, end-effector labels (M, 3) float32 [m], a validation mask (M,)
    and a summary dict.

    Raises:
        ValueError: no frames, a scene set without joint positions, or sources that disagree on
            robot, joints or image size (named).
    """
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec
    from vla_mpc.training.dataset import Dataset
    from vla_mpc.training.scenes import SceneSet

    frames, qs, val, robot, size, names = [], [], [], None, None, None
    sources = [("scenes", p) for p in scenes] + [("dataset", p) for p in datasets]
    for kind, p in sources:
        if kind == "scenes":
            sc = SceneSet.load(p)
            if sc.joint_positions is None:
                raise ValueError(f"scenes {p}: no joint_positions.npy (regenerate with python -m vla_mpc.train scenes)")
            f, q, r, s, j = sc.frames, sc.joint_positions, sc.meta["robot"], sc.meta["image_size"], sc.meta.get("joint_names")
            v = np.arange(len(f)) % VAL_EVERY == VAL_EVERY - 1
        else:
            ds = Dataset.load(p)
            f, r, s, j = ds.frames, ds.meta["robot"], ds.meta["image_size"], ds.meta["joint_names"]
            q = np.asarray(ds.proprio)[:, : len(j)]
            v = np.zeros(len(f), bool)
        robot, size, names = (r, int(s), j) if robot is None else (robot, size, names)
        if (r, int(s), list(j or [])) != (robot, size, list(names or [])):
            raise ValueError(f"{kind} {p}: robot {r!r}, image size {s}, joints {j} differ from the first source's "
                             f"{robot!r}, {size}, {names}")
        frames.append(np.asarray(f))
        qs.append(np.asarray(q, dtype=np.float64))
        val.append(v)
    if not frames:
        raise ValueError("goal_pose: no frames (give --scenes and/or --dataset)")
    model = RobotModel(load_robot_spec(robot))
    q_all = np.concatenate(qs)
    ee = model.fk_positions(q_all[:, : len(model.spec.joint_names)]).astype(np.float32)
    info = {"robot": robot, "image_size": size, "frames": int(len(q_all)), "val_frames": int(np.concatenate(val).sum())}
    return np.concatenate(frames), ee, np.concatenate(val), info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.train goal_pose", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", nargs="*", default=[], help="scene sets with joint_positions")
    ap.add_argument("--dataset", nargs="*", default=[], help="contract-B datasets (every row is used for training)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps (the cosine schedule's length)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; prints a JSON summary (exit 2 on bad input)."""
    from vla_mpc.models.goal_pose import GoalPoseConfig, GoalPoseEstimator, save_goal_pose
    from vla_mpc.training.loop import TrainConfig, train

    a = parse_args(argv)
    try:
        frames, ee, val, info = load_frames_and_labels(a.scenes, a.dataset)
    except (ValueError, FileNotFoundError) as exc:
        print(f"goal_pose: {exc}", file=__import__("sys").stderr)
        return 2
    train_idx, val_idx = np.nonzero(~val)[0], np.nonzero(val)[0]
    if len(val_idx) == 0:
        val_idx = train_idx
    torch.manual_seed(a.seed)
    mean, std = ee[train_idx].mean(0), np.maximum(ee[train_idx].std(0), 1e-3)
    model = GoalPoseEstimator(GoalPoseConfig(robot=info["robot"], image_size=info["image_size"],
                                             ee_mean=tuple(mean.tolist()), ee_std=tuple(std.tolist())))

    def make_batch(split: str, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        pick = np.sort(rng.choice(train_idx if split == "train" else val_idx, size=batch_size))
        return {"frames": torch.from_numpy(np.ascontiguousarray(frames[pick])), "ee": torch.from_numpy(ee[pick])}

    cfg = TrainConfig(max_steps=a.steps, max_minutes=a.minutes, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                      num_threads=a.threads, warmup_steps=min(100, max(1, a.steps // 10)), val_every=250, val_batches=8)
    result = train(model, make_batch, a.out, cfg, save_goal_pose, resume=a.resume,
                   summary_extra={"sources": {"scenes": [str(p) for p in a.scenes],
                                              "datasets": [str(p) for p in a.dataset]}, **info})
    print(json.dumps({"steps": result.steps, "minutes": round(result.minutes, 2), "val_loss": result.val_loss,
                      "out": str(a.out), **info}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
