"""Scene sets: many rendered task layouts with their keypoints, for System 2's keypoint head.

    python -m vla_mpc.train scenes --robot panda --count 12000 --out data/scenes \\
        [--kinds reach,push,pick_place] [--seed-start 200] [--arm-poses DATASET] [--image-size 96]

Why. Behaviour cloning sees only as many table layouts as there are demonstrations (a few hundred
here), and a vision encoder trained on them memorises those layouts instead of learning to find
"the red cube": on held-out demonstrations the keypoint error stayed at ~0.6 of the variance while
it fell to 0.04 on the training ones. A layout, unlike a demonstration, costs one render. So this
command draws many episodes with :func:`vla_mpc.sim.tasks.sample_episode` (the same distribution of
objects, colours and instructions as the tasks), poses the arm as in a demonstration (a random row
of ``--arm-poses``' proprioception, or home), renders the ``front`` camera at the sim node's 224 px and
applies :func:`vla_mpc.models.vision.resize_frame` (the dataset's preprocessing), and stores the two
task keypoints of :func:`vla_mpc.sim.tasks.task_keypoints`. Training mixes these frames into System 2's
keypoint loss (``python -m vla_mpc.train policy --scenes DIR``); they carry no actions. This is
domain randomisation of the perception input (Tobin et al. 2017) restricted to the task's own
distribution, plus auxiliary pose targets (Levine et al. 2016, Sec. 4.2).

Output directory: ``frames.npy`` (M, S, S, 3) uint8, ``keypoints.npy`` (M, 2, 3) float32 [m,
``base_link``], ``joint_positions.npy`` (M, n) float32 [rad, m] over the robot's ``joint_names``
(measured after posing: the world model's proprio head learns from these,
``python -m vla_mpc.train world_model --scenes DIR``), ``instruction_index.npy`` (M,) int32 into
``meta.json``'s ``instructions``;
``meta.json`` = ``{"format": "vla_mpc.scenes/1", "robot", "camera", "image_size", "count", "kinds",
"seed_start", "instructions": [...], "arm_poses": source, "seconds"}``. Seeds ``seed_start ..
seed_start + count - 1`` must stay below ``EVAL_SEED_OFFSET`` (training seeds).
No rclpy here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["FORMAT", "SceneSet", "generate", "main"]

FORMAT = "vla_mpc.scenes/1"


class SceneSet:
    """A generated scene set (module docstring), arrays memory-mapped read-only.

    Attributes:
        meta: ``meta.json``; frames (M, S, S, 3) uint8; keypoints (M, 2, 3) float32 [m];
        instructions: (M,) object array of instruction strings; joint_positions: (M, n) float32
        [rad, m] or None (sets generated before they were stored).
    """

    def __init__(self, path: Path, meta: dict, frames: np.ndarray, keypoints: np.ndarray,
                 instruction_index: np.ndarray, joint_positions: np.ndarray | None = None) -> None:
        self.path, self.meta = Path(path), meta
        self.frames, self.keypoints, self.joint_positions = frames, keypoints, joint_positions
        self.instructions = np.asarray(meta["instructions"], dtype=object)[np.asarray(instruction_index)]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @classmethod
    def load(cls, path: Path | str) -> "SceneSet":
        """Open a scene set directory.

        Raises:
            FileNotFoundError: ``meta.json`` or an array is missing (named).
            ValueError: wrong format, unreadable JSON / arrays, or shapes that disagree (named).
        """
        from vla_mpc.core.config import read_format_json
        from vla_mpc.training.dataset import load_npy

        path = Path(path)
        meta = read_format_json(path / "meta.json", FORMAT, "scenes", "python -m vla_mpc.train scenes ...")
        arrays = {name: load_npy(path / f"{name}.npy", "scenes") for name in ("frames", "keypoints", "instruction_index")}
        m, s = arrays["frames"].shape[0], int(meta["image_size"])
        expected = {"frames": ((m, s, s, 3), np.uint8), "keypoints": ((m, 2, 3), np.float32),
                    "instruction_index": ((m,), np.int32)}
        for name, (shape, dtype) in expected.items():
            a = arrays[name]
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"scenes: {path / (name + '.npy')} is {a.shape} {a.dtype}, expected {shape} "
                                 f"{np.dtype(dtype)}")
        q = None
        if (path / "joint_positions.npy").is_file():
            q = load_npy(path / "joint_positions.npy", "scenes")
            if q.ndim != 2 or q.shape[0] != m or q.dtype != np.float32:
                raise ValueError(f"scenes: {path / 'joint_positions.npy'} is {q.shape} {q.dtype}, expected ({m}, n) float32")
        idx = np.asarray(arrays["instruction_index"])
        if m and (idx.min() < 0 or idx.max() >= len(meta.get("instructions", []))):
            raise ValueError(f"scenes: instruction_index out of range of meta.json's {len(meta.get('instructions', []))} "
                             "instructions")
        return cls(path, meta, arrays["frames"], arrays["keypoints"], idx, q)


def generate(robot: str, count: int, out: Path, kinds: Sequence[str] = ("reach", "push", "pick_place"),
             seed_start: int = 200, arm_poses: np.ndarray | None = None, arm_poses_source: str | None = None,
             image_size: int = 96, render_size: int = 224, camera: str = "front", seed: int = 0,
             progress: bool = False) -> dict:
    """Render ``count`` scenes into ``out`` (module docstring).

    Args:
        robot: robot name (``config/<robot>.yaml``).
        count: scenes, >= 1; kinds go round-robin.
        kinds: task kinds to draw from (``TASK_KINDS``).
        seed_start: first episode seed; ``seed_start + count`` must be <= ``EVAL_SEED_OFFSET``.
        arm_poses: (P, >= n_arm) joint positions to pose the arm with (a random row per scene), or
            None (home).
        image_size: stored frame side [px]; render_size: rendered side [px] (the sim node's).
        seed: seeds the choice of arm poses.

    Returns:
        The meta dict (also ``out/meta.json``).

    Raises:
        ValueError: bad count, kinds or seed range, or arm poses of the wrong width.
    """
    from tqdm import tqdm

    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.vision import resize_frame
    from vla_mpc.sim.sim_robot import SimRobot
    from vla_mpc.sim.tasks import EVAL_SEED_OFFSET, TASK_KINDS, sample_episode, task_keypoints

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {TASK_KINDS}, got {list(kinds)}")
    if seed_start < 0 or seed_start + count > EVAL_SEED_OFFSET:
        raise ValueError(f"seeds {seed_start}..{seed_start + count - 1} leave the training range [0, {EVAL_SEED_OFFSET})")
    spec = load_robot_spec(robot)
    t0 = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sim = SimRobot(spec, cameras=(camera,), image_size=(render_size, render_size))
    n_arm = sim._n_arm
    if arm_poses is not None:
        arm_poses = np.asarray(arm_poses, dtype=np.float64)
        if arm_poses.ndim != 2 or arm_poses.shape[1] < n_arm or not len(arm_poses):
            raise ValueError(f"arm_poses must be (P, >= {n_arm}), got {arm_poses.shape}")
    rng = np.random.default_rng(seed)
    frames = np.lib.format.open_memmap(out / "frames.npy", mode="w+", dtype=np.uint8,
                                       shape=(count, image_size, image_size, 3))
    keypoints = np.zeros((count, 2, 3), np.float32)
    joints = np.zeros((count, len(spec.joint_names)), np.float32)
    instr_index = np.zeros(count, np.int32)
    instructions: dict[str, int] = {}
    try:
        for i in tqdm(range(count), desc="scenes", disable=not progress):
            episode = sample_episode(robot, kinds[i % len(kinds)], seed_start + i)
            sim.reset(episode=episode)
            if arm_poses is not None:
                sim.teleport_arm(arm_poses[rng.integers(len(arm_poses)), :n_arm])
            frames[i] = resize_frame(sim.render(camera), image_size)
            joints[i] = sim.joint_state()[1][: len(spec.joint_names)]
            keypoints[i] = task_keypoints(episode.task, sim.object_poses())
            instr_index[i] = instructions.setdefault(episode.instruction, len(instructions))
    finally:
        sim.close()
    frames.flush()
    del frames
    np.save(out / "keypoints.npy", keypoints)
    np.save(out / "instruction_index.npy", instr_index)
    np.save(out / "joint_positions.npy", joints)
    meta = {"format": FORMAT, "robot": robot, "joint_names": list(spec.joint_names), "camera": camera, "image_size": image_size, "render_size": render_size,
            "count": count, "kinds": list(kinds), "seed_start": seed_start, "instructions": list(instructions),
            "arm_poses": arm_poses_source, "seconds": round(time.monotonic() - t0, 2)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--robot", default="panda")
    ap.add_argument("--count", type=int, required=True, help="scenes to render")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kinds", default="reach,push,pick_place", help="comma-separated task kinds")
    ap.add_argument("--seed-start", type=int, default=200,
                    help="first episode seed (default 200; must stay below the evaluation seeds)")
    ap.add_argument("--arm-poses", type=Path, default=None,
                    help="dataset directory whose proprio rows pose the arm (default: home pose)")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0, help="seeds the choice of arm poses")


def run_cli(a: argparse.Namespace) -> int:
    """Generate from parsed arguments; prints a one-line JSON summary (exit 2 on bad input)."""
    poses = None
    if a.arm_poses is not None:
        from vla_mpc.training.dataset import Dataset

        try:
            poses = np.asarray(Dataset.load(a.arm_poses).proprio)
        except (FileNotFoundError, ValueError) as exc:
            print(f"scenes: {exc}", file=sys.stderr)
            return 2
    try:
        meta = generate(a.robot, a.count, a.out, [k for k in a.kinds.split(",") if k], a.seed_start, poses,
                        str(a.arm_poses) if a.arm_poses else None, a.image_size, seed=a.seed, progress=True)
    except ValueError as exc:
        print(f"scenes: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: meta[k] for k in ("count", "kinds", "seed_start", "seconds")} | {"out": str(a.out)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.training.scenes`` (same as ``python -m vla_mpc.train scenes``)."""
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.train scenes", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
