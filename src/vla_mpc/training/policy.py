"""Train the dual-system policy: ``python -m vla_mpc.train policy --dataset D --out O [--minutes M]
[--steps N] [--seed S] [--resume] [--sampler flow|ddim] [--batch-size B] [--lr LR]``.

Batches (:func:`make_policy_batch`) pair each row's proprioception and action chunk (contract B)
with the camera frame of a slightly *older* row of the same episode: System 2 runs at ~2 Hz, so at
run time System 1 sees a latent computed from a frame 0-0.5 s old. Training on
``z(frame[t - lag])`` with ``lag`` uniform in [0, ``max_latent_lag``] frames (0-0.4 s at the
dataset's 10 Hz) matches that asynchrony (GR00T N1 / Helix run the two systems at different rates;
here it is handled by the data, not the architecture). Instruction embeddings are computed once per
distinct instruction with the frozen MiniLM encoder. The loop is :func:`vla_mpc.training.loop.train`
(AdamW, warm-up + cosine, ``best`` / ``last`` checkpoints written by
:func:`vla_mpc.models.checkpoint.save_policy`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vla_mpc.models.action_expert import SAMPLERS
from vla_mpc.models.checkpoint import save_policy
from vla_mpc.models.policy import (
    ACTION_MODES,
    SYSTEM1_CONDITIONS,
    SYSTEM1_STATES,
    DualSystemPolicy,
    PolicyConfig,
    delta_action_stats,
    isotropic_xy_stats,
)
from vla_mpc.sim.tasks import TASK_KINDS

__all__ = ["PixelProjector", "make_policy_batch", "make_system1_batch", "action_pose_table", "rows_starting_at_their_state",
           "rows_of_kinds", "parse_dataset_kinds", "task_kind_indices", "perturb_proprio", "build_policy",
           "with_new_system1", "parse_args", "main"]

DEFAULT_MAX_LATENT_LAG = 4  # frames (0.4 s at 10 Hz: System 2's period is 0.5 s)
#: Per-axis std of the noise on System 1's training keypoints [m]: System 2 reads the keypoints of
#: unseen layouts to 1-2 cm (README, "Measured"), about 1 cm per axis.
DEFAULT_KEYPOINT_NOISE = 0.01
#: ``--max-start-gap`` [rad, m for fingers]: a recorded chunk's first target is the controller's
#: committed target at the row's instant, within tracking lag of the measured positions (Franka
#: demonstrations: 0.03 rad median, 0.08 rad at the 90th percentile, largest joint).
DEFAULT_MAX_START_GAP = 0.3


class PixelProjector:
    """Where task keypoints appear in a fixed sim camera's model frames: the pixel targets of
    ``PolicyConfig.keypoint_pixel_weight``.

    The camera is the robot's sim camera (``pos`` / ``lookat`` / ``fovy``,
    :func:`vla_mpc.pictures.sim_camera_definitions`; the frames are square renders resized to
    ``image_size``, :func:`~vla_mpc.models.vision.resize_frame`). Only for data rendered by that
    camera: a real camera would need its calibration.

    Args:
        robot: robot name (its config's ``sim.cameras``).
        camera: camera name, a fixed camera (``front``).
        image_size: the model's frame side S [px].

    Raises:
        ValueError: the camera is not a fixed sim camera with a field of view.
    """

    def __init__(self, robot: str, camera: str, image_size: int) -> None:
        from vla_mpc.pictures import camera_pose_in_base, sim_camera_intrinsics

        pose = camera_pose_in_base(robot, camera)
        intrinsics = sim_camera_intrinsics(robot, camera, image_size)
        if pose is None or intrinsics is None:
            raise ValueError(f"pixel targets need a fixed sim camera with pos, lookat and fovy; {camera!r} of "
                             f"{robot!r} is not one")
        self.rotation, self.position = pose
        self.intrinsics, self.size = intrinsics, int(image_size)
        self._push = TASK_KINDS.index("push")

    def __call__(self, keypoints: np.ndarray | torch.Tensor, kinds: np.ndarray | torch.Tensor | None) -> torch.Tensor:
        """(B, 2, 3) keypoints [m, base_link] and (B,) task kind indices -> (B, 2, 2) float32 in
        [-1, 1] (x right, y down; the centre of pixel i is (i + 0.5) / S x 2 - 1), NaN where the
        keypoint is NaN, behind the camera or outside the frame, and for a push goal (a spot on
        the bare table that no image feature marks)."""
        from vla_mpc.pictures import project

        kp = np.asarray(keypoints, dtype=np.float64)
        uv, ok = project(kp.reshape(-1, 3), self.rotation, self.position, self.intrinsics)
        out = (uv + 0.5) / self.size * 2.0 - 1.0
        out[~(ok & np.isfinite(uv).all(axis=1))] = np.nan
        out = out.reshape(kp.shape[0], kp.shape[1], 2)
        if kinds is not None:
            out[np.asarray(kinds) == self._push, 1] = np.nan
        return torch.from_numpy(out.astype(np.float32))


def task_kind_indices(instructions: Sequence[str]) -> dict[str, int]:
    """{instruction: index into :data:`~vla_mpc.sim.tasks.TASK_KINDS`} (the task head's labels).

    Raises:
        ValueError: an instruction that does not parse (:func:`~vla_mpc.sim.tasks.parse_instruction`).
    """
    from vla_mpc.sim.tasks import TASK_KINDS, parse_instruction

    return {text: TASK_KINDS.index(parse_instruction(text).kind) for text in set(instructions)}


def _instruction_of_rows(dataset) -> np.ndarray:
    """(N,) object array: each row's instruction (episode_index -> meta["episodes"][...]["instruction"])."""
    by_index = {int(e["index"]): e["instruction"] for e in dataset.meta["episodes"]}
    ep = np.asarray(dataset.episode_index)
    missing = sorted(set(np.unique(ep).tolist()) - set(by_index))
    if missing:
        raise ValueError(f"episode_index values {missing[:5]} have no entry in meta.json 'episodes'")
    return np.array([by_index[int(i)] for i in ep], dtype=object)


def parse_dataset_kinds(entries: Sequence[str] | None, n_datasets: int) -> list[frozenset[str]] | None:
    """``--dataset-kinds``: one entry per ``--dataset``, ``"all"`` or comma-separated task kinds.

    Returns:
        None (every kind from every dataset) for ``entries=None``, else one set of kinds per dataset.

    Raises:
        ValueError: a count other than ``n_datasets``, an empty entry or an unknown kind (named).
    """
    from vla_mpc.sim.tasks import TASK_KINDS

    if entries is None:
        return None
    if len(entries) != n_datasets:
        raise ValueError(f"--dataset-kinds needs one entry per --dataset ({n_datasets}), got {len(entries)}")
    out = []
    for entry in entries:
        kinds = frozenset(TASK_KINDS) if entry == "all" else frozenset(k for k in entry.split(",") if k)
        if not kinds or not kinds <= set(TASK_KINDS):
            raise ValueError(f"--dataset-kinds entry {entry!r}: give 'all' or kinds from {TASK_KINDS}")
        out.append(kinds)
    return out


def rows_of_kinds(rows: np.ndarray, instructions: np.ndarray, dataset_sizes: Sequence[int],
                  kinds: Sequence[frozenset[str]]) -> np.ndarray:
    """The ``rows`` of a concatenation of datasets whose task kind is one their dataset may give.

    For a dataset recorded before a change to one task's expert, e.g. session 13's re-aimed push:
    its other tasks' rows stay valid, its push rows teach the old behaviour.

    Args:
        rows: (R,) int row indices into the concatenation.
        instructions: (N,) each row's instruction (:func:`_instruction_of_rows`).
        dataset_sizes: rows of each concatenated dataset, in order (sum N).
        kinds: allowed task kinds per dataset (:func:`parse_dataset_kinds`).

    Returns:
        (R',) the kept rows, in order.

    Raises:
        ValueError: sizes that do not add up to ``len(instructions)``; an instruction that does
            not parse.
    """
    from vla_mpc.sim.tasks import TASK_KINDS

    if sum(dataset_sizes) != len(instructions) or len(dataset_sizes) != len(kinds):
        raise ValueError(f"dataset sizes {list(dataset_sizes)} / kinds do not match {len(instructions)} rows")
    rows = np.asarray(rows)
    source = np.repeat(np.arange(len(dataset_sizes)), dataset_sizes)[rows]
    index_of = task_kind_indices(instructions[rows].tolist())
    row_kind = np.array([index_of[t] for t in instructions[rows]], dtype=np.int64)
    allowed = np.array([[k in ks for k in TASK_KINDS] for ks in kinds], dtype=bool)  # [dataset, kind]
    return rows[allowed[source, row_kind]]


def rows_starting_at_their_state(dataset, rows: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into those whose action chunk starts at the row's measured positions and the rest.

    Behaviour cloning pairs a state with the chunk commanded from it. A row whose chunk's first
    target is more than ``max_gap`` from the measured positions in some joint pairs the state with
    a chunk of another instant, which cannot be imitated: 634 of the 19,632 Franka demonstration
    rows of session 3 did (gaps of 0.3-10 rad), 601 of them in failed episodes and 33 in
    successful ones.

    Args:
        dataset: with ``actions`` (N, H, A) absolute targets and ``proprio`` (N, >= A) positions first.
        rows: (M,) row indices.
        max_gap: [rad, m for fingers], > 0.

    Returns:
        (kept rows, dropped rows), each a subset of ``rows`` in its order (int64).

    Raises:
        ValueError: ``max_gap`` not > 0.
    """
    if not (math.isfinite(max_gap) and max_gap > 0.0):
        raise ValueError(f"max_gap must be > 0, got {max_gap!r}")
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return rows, rows
    a = dataset.actions.shape[2]
    start = np.asarray(dataset.actions[rows, 0], dtype=np.float64)
    measured = np.asarray(dataset.proprio[rows, :a], dtype=np.float64)
    gap = np.abs(start - measured).max(axis=1)
    ok = gap <= max_gap  # NaN gaps count as inconsistent
    return rows[ok], rows[~ok]


def _rows_and_older(dataset, rows: np.ndarray, rng: np.random.Generator, batch_size: int,
                    max_latent_lag: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` sorted rows drawn from ``rows`` (with probabilities ``weights``, summing to 1,
    or uniformly) and, for each, the row ``lag ~ U{0..max_latent_lag}`` earlier in the same
    episode (the row itself where that would cross into the previous episode): where System 2's
    latent comes from at run time."""
    pick = np.sort(rng.choice(rows, size=batch_size, replace=weights is not None or len(rows) < batch_size,
                              p=weights))
    lag = rng.integers(0, max_latent_lag + 1, size=batch_size)
    ep = np.asarray(dataset.episode_index)
    older = np.maximum(pick - lag, 0)
    return pick, np.where(ep[older] == ep[pick], older, pick)


def make_policy_batch(
    dataset,
    text_emb: dict[str, np.ndarray],
    split: str,
    rng: np.random.Generator,
    batch_size: int,
    *,
    max_latent_lag: int = DEFAULT_MAX_LATENT_LAG,
    rows: np.ndarray | None = None,
    instructions: np.ndarray | None = None,
    task_kinds: np.ndarray | None = None,
    action_poses: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """A random training batch (contract E).

    Args:
        dataset: a contract-B dataset (``training.dataset.Dataset``: ``meta``, ``frames``,
            ``proprio``, ``actions``, ``episode_index``, ``rows(split)``).
        text_emb: {instruction: (384,) or (text_tokens, 384) float32} (``TextEncoder.encode_many``).
        split: ``"train"`` or ``"val"``.
        rng: numpy generator (the loop's, so batches are reproducible).
        batch_size: B.
        max_latent_lag: the frame is drawn ``lag ~ U{0..max_latent_lag}`` rows earlier in the same
            episode (lag 0 at an episode's first rows).
        rows / instructions: precomputed ``dataset.rows(split)`` and per-row instructions (speed).
        task_kinds: (N,) int64 per-row task kind indices (:func:`task_kind_indices`), or None.
        action_poses: (N, H, 6) per-row target poses (:func:`action_pose_table`), or None.

    Returns:
        ``images`` uint8 (B, S, S, 3), ``text_emb`` float32 (B, [text_tokens,] 384), ``proprio`` float32 (B, 2A),
        ``actions`` float32 (B, H, A); when the dataset has keypoints also ``keypoints`` float32
        (B, 2, 3) [m] of the (older) frame's row, NaN where unknown; with ``task_kinds`` also
        ``task_kind`` int64 (B,); with ``action_poses`` also ``action_poses`` float32 (B, H, 6).

    Raises:
        ValueError: an empty split or an instruction without an embedding.
    """
    rows = dataset.rows(split) if rows is None else rows
    if len(rows) == 0:
        raise ValueError(f"dataset split {split!r} has no rows")
    instructions = _instruction_of_rows(dataset) if instructions is None else instructions
    pick, older = _rows_and_older(dataset, rows, rng, batch_size, max_latent_lag)
    try:
        emb = np.stack([text_emb[instructions[r]] for r in pick]).astype(np.float32)
    except KeyError as exc:
        raise ValueError(f"no text embedding for instruction {exc.args[0]!r}") from exc
    batch = {
        "images": torch.from_numpy(np.ascontiguousarray(dataset.frames[older])),
        "text_emb": torch.from_numpy(emb),
        "proprio": torch.from_numpy(np.asarray(dataset.proprio[pick], dtype=np.float32)),
        "actions": torch.from_numpy(np.asarray(dataset.actions[pick], dtype=np.float32)),
    }
    if getattr(dataset, "keypoints", None) is not None:
        batch["keypoints"] = torch.from_numpy(np.asarray(dataset.keypoints[older], dtype=np.float32))
    if task_kinds is not None:
        batch["task_kind"] = torch.from_numpy(np.asarray(task_kinds[pick], dtype=np.int64))
    if action_poses is not None:
        batch["action_poses"] = torch.from_numpy(np.asarray(action_poses[pick], dtype=np.float32))
    return batch


def make_system1_batch(dataset, rows: np.ndarray, task_kinds: np.ndarray, rng: np.random.Generator,
                       batch_size: int, *, max_latent_lag: int = DEFAULT_MAX_LATENT_LAG,
                       keypoint_noise: float = DEFAULT_KEYPOINT_NOISE,
                       action_poses: np.ndarray | None = None, yaw_augment: bool = False,
                       balance_kinds: bool = False) -> dict[str, torch.Tensor]:
    """Rows for System 1 alone (``system1_condition = "keypoints"``): no frame is read.

    System 1 then sees the dataset's task keypoints as System 2 would give them at run time: from a
    frame ``lag ~ U{0..max_latent_lag}`` rows older (same episode), plus N(0, ``keypoint_noise``^2)
    per axis [m], the same offset for both keypoints of a row plus an independent one for each
    (System 2's errors are partly shared: the same image). The labels stay the demonstrated
    chunk; System 1 so learns to act on keypoints that are slightly stale and slightly wrong.

    Args:
        dataset: a contract-B dataset with ``keypoints``.
        rows: the rows to draw from (finite keypoints only).
        task_kinds: (N,) int64 per-row task kind indices.
        action_poses: (N, H, 6) per-row target poses (:func:`action_pose_table`), or None.
        yaw_augment: also draw ``s1_yaw`` float32 (B,) uniform in [-pi, pi) [rad]: the loss
            turns each row's scene by it about ``base_link``'s z (``PolicyConfig.system1_state =
            "cartesian"``).
        balance_kinds: draw each task kind equally often (each row with probability 1 / (kinds
            x its kind's rows), with replacement) instead of each row equally often, so a kind
            with long or many episodes (push after extra push sets) does not crowd out the
            others' rows in System 1's batches.

    Returns:
        ``s1_proprio`` float32 (B, 2A), ``s1_actions`` float32 (B, H, A), ``s1_keypoints`` float32
        (B, 2, 3) [m], ``s1_task_kind`` int64 (B,); with ``action_poses`` also
        ``s1_action_poses`` float32 (B, H, 6); with ``yaw_augment`` ``s1_yaw``.

    Raises:
        ValueError: no rows, or a dataset without keypoints.
    """
    if len(rows) == 0 or getattr(dataset, "keypoints", None) is None:
        raise ValueError("System 1 rows need a dataset with keypoints and at least one row")
    weights = None
    if balance_kinds:
        kinds = np.asarray(task_kinds)[rows]
        _, inverse, counts = np.unique(kinds, return_inverse=True, return_counts=True)
        weights = 1.0 / (len(counts) * counts[inverse])
    pick, older = _rows_and_older(dataset, rows, rng, batch_size, max_latent_lag, weights)
    kp = np.asarray(dataset.keypoints[older], dtype=np.float32)
    kp = np.where(np.isfinite(kp), kp, np.asarray(dataset.keypoints[pick], dtype=np.float32))
    if keypoint_noise > 0.0:
        shared = rng.normal(0.0, keypoint_noise / np.sqrt(2.0), size=(batch_size, 1, 3))
        own = rng.normal(0.0, keypoint_noise / np.sqrt(2.0), size=kp.shape)
        kp = kp + (shared + own).astype(np.float32)
    batch = {"s1_proprio": torch.from_numpy(np.asarray(dataset.proprio[pick], dtype=np.float32)),
             "s1_actions": torch.from_numpy(np.asarray(dataset.actions[pick], dtype=np.float32)),
             "s1_keypoints": torch.from_numpy(kp),
             "s1_task_kind": torch.from_numpy(np.asarray(task_kinds[pick], dtype=np.int64))}
    if action_poses is not None:
        batch["s1_action_poses"] = torch.from_numpy(np.asarray(action_poses[pick], dtype=np.float32))
    if yaw_augment:
        batch["s1_yaw"] = torch.from_numpy(rng.uniform(-math.pi, math.pi, size=batch_size).astype(np.float32))
    return batch


def action_pose_table(ee, actions: np.ndarray, rows: np.ndarray, block: int = 4096) -> np.ndarray:
    """The end-effector poses of every target of the given rows' chunks, computed once.

    ``action_mode = "ee"`` labels are the tool's motion from the measured position to each target
    (:mod:`vla_mpc.models.ee_actions`). The targets' forward kinematics (H per row, ~15 µs each)
    cost three quarters of a System 1 training step when done per batch (measured: 63 of 85 ms,
    256 rows x 16 targets); it does not depend on the state noise training adds to the measured
    positions, so it is a per-row constant.

    Args:
        ee: an :class:`~vla_mpc.models.ee_actions.EndEffectorActions`.
        actions: (N, H, n) absolute joint targets [rad, m] (the dataset's ``actions``).
        rows: indices of the rows to compute (others stay NaN).
        block: rows per forward-kinematics call.

    Returns:
        (N, H, 6) float32: position [m] and rotation vector [rad] per target
        (:meth:`~vla_mpc.models.ee_actions.EndEffectorActions.target_poses`), NaN outside ``rows``.

    Raises:
        ValueError: non-finite targets in ``rows``.
    """
    table = np.full((actions.shape[0], actions.shape[1], 6), np.nan, dtype=np.float32)
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    for i in range(0, len(rows), block):
        idx = rows[i:i + block]
        table[idx] = ee.target_poses(np.asarray(actions[idx], dtype=np.float64)).astype(np.float32)
    return table


def make_scene_batch(scenes: Sequence[Any], sizes: np.ndarray, text_emb: dict[str, np.ndarray],
                     rng: np.random.Generator, batch_size: int,
                     kind_of: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """``batch_size`` random frames drawn uniformly over all ``scenes`` (:class:`~vla_mpc.training.
    scenes.SceneSet`; ``sizes`` their lengths): ``scene_images`` uint8 (B2, S, S, 3),
    ``scene_text_emb`` float32 (B2, [text_tokens,] 384), ``scene_keypoints`` float32 (B2, 2, 3) [m]; with
    ``kind_of`` ({instruction: task kind index}) also ``scene_task_kind`` int64 (B2,)."""
    flat = np.sort(rng.integers(0, int(sizes.sum()), size=batch_size))
    which = np.searchsorted(np.cumsum(sizes), flat, side="right")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    images, kps, texts = [], [], []
    for k in np.unique(which):
        idx = flat[which == k] - starts[k]
        sc = scenes[k]
        images.append(np.asarray(sc.frames[idx]))
        kps.append(np.asarray(sc.keypoints[idx], dtype=np.float32))
        texts.extend(sc.instructions[idx])
    out = {"scene_images": torch.from_numpy(np.concatenate(images)),
           "scene_text_emb": torch.from_numpy(np.stack([text_emb[t] for t in texts]).astype(np.float32)),
           "scene_keypoints": torch.from_numpy(np.concatenate(kps))}
    if kind_of is not None:
        out["scene_task_kind"] = torch.tensor([kind_of[t] for t in texts], dtype=torch.int64)
    return out


def perturb_proprio(batch: dict[str, torch.Tensor], rng: np.random.Generator, std: float, joints: int) -> None:
    """State-noise augmentation (in place): add N(0, ``std``^2) [rad] to the first ``joints``
    measured positions of ``batch["proprio"]`` and keep the action chunk's absolute targets.

    The chunk's delta / end-effector labels are taken relative to the measured state inside the
    loss, so a perturbed row teaches "from this slightly wrong state, return to the demonstrated
    targets": the corrective labels DART (Laskey et al., CoRL 2017) collects by injecting noise
    while the expert acts, here drawn around the recorded states. The camera frame is not
    re-rendered, so keep ``std`` to what the image cannot tell apart (about 0.01-0.03 rad).
    """
    if std <= 0.0:
        return
    for key in ("proprio", "s1_proprio"):  # the System 1 rows too (system1_condition "keypoints")
        p = batch.get(key)
        if p is not None:
            p[:, :joints] += torch.from_numpy(rng.normal(0.0, std, size=(p.shape[0], joints)).astype(np.float32))


def build_policy(meta: dict, proprio: np.ndarray, actions: np.ndarray, keypoints: np.ndarray | None = None,
                 *, stats_rows: np.ndarray | None = None, **overrides: Any) -> DualSystemPolicy:
    """A fresh policy for a dataset: config from ``meta.json`` (robot, joints, camera, image size,
    chunk size / dt) plus ``overrides``; stats = ``meta["stats"]`` + ``action_delta`` (+
    ``action_ee`` for ``action_mode="ee"``, over ``stats_rows`` (default all rows): give the rows
    behaviour cloning learns from, so failed episodes' commands do not widen them) (+ ``keypoints``
    over the finite rows of ``keypoints`` (N, 2, 3), which also turns ``keypoint_head`` on unless an
    override says otherwise).

    Raises:
        ValueError: ``keypoint_head`` requested but ``keypoints`` has no finite row.
    """
    finite = None
    if keypoints is not None:
        flat = np.asarray(keypoints, dtype=np.float64).reshape(len(keypoints), -1)
        finite = flat[np.isfinite(flat).all(axis=1)]
        if len(finite) == 0:
            finite = None
    overrides.setdefault("keypoint_head", finite is not None)
    if overrides["keypoint_head"] and finite is None:
        raise ValueError("keypoint_head needs a dataset with keypoints (convert bags that recorded "
                         "/vla_mpc/sim/object_poses)")
    config = PolicyConfig(
        robot=meta["robot"], joint_names=tuple(meta["joint_names"]), cameras=(meta.get("camera", "front"),),
        image_size=int(meta["image_size"]), chunk_size=int(meta["chunk_size"]), chunk_dt=float(meta["chunk_dt"]),
        **overrides,
    )
    stats = dict(meta["stats"])
    stats["action_delta"] = delta_action_stats(proprio, actions)
    if config.action_mode == "ee":
        from vla_mpc.core.robot_model import RobotModel, load_robot_spec
        from vla_mpc.models.ee_actions import EndEffectorActions

        sel = np.sort(np.asarray(stats_rows)) if stats_rows is not None else slice(None)
        ee = EndEffectorActions(RobotModel(load_robot_spec(config.robot)))
        stats["action_ee"] = ee.stats(np.asarray(proprio[sel]), np.asarray(actions[sel]))
    if config.keypoint_head:
        stats["keypoints"] = {"mean": finite.mean(0).tolist(), "std": np.maximum(finite.std(0), 1e-3).tolist()}
    return DualSystemPolicy(config, stats)


#: PolicyConfig fields :func:`with_new_system1` may change.
SYSTEM1_FIELDS = ("expert_width", "expert_blocks", "cond_dim", "system1_state")


def with_new_system1(policy: DualSystemPolicy, stats: dict | None = None, **fields: Any) -> DualSystemPolicy:
    """``policy`` with a freshly initialised System 1 built with the :data:`SYSTEM1_FIELDS`
    ``fields`` changed (its size, or ``system1_state``): System 2, its heads and the statistics
    (or ``stats``, e.g. :func:`~vla_mpc.models.policy.isotropic_xy_stats` for yaw augmentation)
    are kept, so ``train policy --system1-only`` can train another action expert on a trained
    System 2.

    Raises:
        ValueError: a field that is not a System 1 field, or a value ``PolicyConfig`` refuses.
    """
    bad = sorted(set(fields) - set(SYSTEM1_FIELDS))
    if bad:
        raise ValueError(f"not System 1 fields: {bad} (allowed {SYSTEM1_FIELDS})")
    return _rebuilt(policy, fields, keep_system1=False, stats=stats)


def _rebuilt(policy: DualSystemPolicy, fields: dict[str, Any], keep_system1: bool,
             stats: dict | None = None) -> DualSystemPolicy:
    """A new policy with ``fields`` of the config changed and the statistics kept (or ``stats``),
    carrying over System 1's weights (``keep_system1``) or everything else's (System 2 and its
    heads); the other part starts fresh. Raises ValueError when the kept part's layout does not
    match."""
    fresh = DualSystemPolicy(dataclasses.replace(policy.config, **fields), policy.stats if stats is None else stats)
    in_kept = lambda k: k.startswith("system1.") == keep_system1  # noqa: E731
    missing, unexpected = fresh.load_state_dict({k: v for k, v in policy.state_dict().items() if in_kept(k)},
                                                strict=False)
    if unexpected or any(in_kept(k) for k in missing):  # a layout this code does not know
        raise ValueError(f"cannot carry System {1 if keep_system1 else 2} over: unexpected {unexpected}, missing "
                         f"{[k for k in missing if in_kept(k)]}")
    return fresh.train(policy.training)


def with_new_system2(policy: DualSystemPolicy, **fields: Any) -> DualSystemPolicy:
    """``policy`` with a freshly initialised System 2 and heads (``system2``, ``keypoint_head``,
    ``task_head``) built with the System 2 ``fields`` changed (e.g. ``feature_points``): System 1
    and the statistics are kept, so ``train policy --system2-only`` can train another System 2
    for a trained System 1 that reads only the heads' read-outs (``system1_condition =
    "keypoints"``, where System 1 never saw System 2's latent).

    Raises:
        ValueError: a field outside :data:`SYSTEM2_FIELDS`, a value ``PolicyConfig`` refuses, or a
            policy whose System 1 reads ``z`` (``system1_condition = "latent"``).
    """
    bad = sorted(set(fields) - set(SYSTEM2_FIELDS))
    if bad:
        raise ValueError(f"not System 2 fields: {bad} (allowed {SYSTEM2_FIELDS})")
    if not policy.config.task_head:
        raise ValueError("a fresh System 2 needs a System 1 that reads only its read-outs (system1_condition "
                         "'keypoints'); a 'latent' System 1 was trained on the old System 2's z")
    return _rebuilt(policy, fields, keep_system1=True)


#: The two systems, as ``train_summary.json``'s ``trained`` / ``fresh`` name them.
SYSTEMS = ("system1", "system2")

#: PolicyConfig fields :func:`with_new_system2` may change.
SYSTEM2_FIELDS = ("feature_points", "augment_shift", "vision_width", "d_model", "vlm_layers", "vlm_heads",
                  "latent_tokens", "latent_dim", "text_tokens", "keypoint_weight", "role_points",
                  "keypoint_pixel_weight")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.train policy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, nargs="+",
                    help="dataset directories (contract B), e.g. demonstrations and DAgger rollouts (train dagger)")
    ap.add_argument("--dataset-kinds", nargs="+", default=None, metavar="KINDS",
                    help="one entry per --dataset: 'all' or comma-separated task kinds to train on from it "
                         "(e.g. 'reach,pick_place' for a set recorded before the push expert changed)")
    ap.add_argument("--out", required=True, type=Path, help="output directory (best/, last/, log.jsonl)")
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget [min] (default 25)")
    ap.add_argument("--steps", type=int, default=20000, help="optimiser steps (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this policy checkpoint (its weights, config and statistics; a new optimiser "
                         "and schedule), e.g. to fine-tune on added DAgger rollouts")
    ap.add_argument("--sampler", choices=SAMPLERS, default="flow", help="flow matching or DDPM/DDIM")
    ap.add_argument("--action-mode", choices=ACTION_MODES, default="delta",
                    help="System 1's action space: 'delta' (default: joint targets minus the measured positions), "
                         "'ee' (tool position from the measured one, tool orientation and gripper; joint targets "
                         "by IK; needs config/<robot>.yaml) or 'absolute' (joint targets)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--scenes", type=Path, nargs="*", default=[],
                    help="scene set directories (python -m vla_mpc.train scenes) whose rendered layouts join "
                         "System 2's keypoint loss")
    ap.add_argument("--scene-batch-size", type=int, default=32, help="scene frames per training batch (default 32)")
    ap.add_argument("--no-keypoint-condition", dest="keypoint_condition", action="store_false",
                    help="do not give System 1 the end-effector-relative keypoints (default: given whenever "
                         "the dataset has keypoints)")
    ap.add_argument("--keypoint-weight", type=float, default=None,
                    help="weight of System 2's auxiliary task-keypoint loss (default: the PolicyConfig's, 1.0; "
                         "the head is on whenever the dataset has keypoints; 0 trains it without effect on z)")
    ap.add_argument("--proprio-noise", type=float, default=0.02,
                    help="std [rad] of the state noise added to the arm joints' measured positions of training "
                         "rows, labels kept on the demonstrated targets (DART-style corrections; default 0.02, 0 = off)")
    ap.add_argument("--max-latent-lag", type=int, default=DEFAULT_MAX_LATENT_LAG,
                    help="frames the System 2 input may lag the proprio/actions (default 4 = 0.4 s at 10 Hz)")
    ap.add_argument("--system1-condition", choices=SYSTEM1_CONDITIONS, default="latent",
                    help="what System 1 reads: 'latent' (default: all of z) or 'keypoints' (only System 2's "
                         "read-outs of z: the task keypoints and kind; System 1 then trains on the dataset's "
                         "keypoints, no frames; needs a dataset with keypoints)")
    ap.add_argument("--text-tokens", type=int, choices=(1, 3), default=None,
                    help="System 2's text input: 1 (default: the instruction's sentence embedding) or 3 (also its "
                         "object and goal phrases' embeddings, which bind colours to roles; not yet measured better, "
                         "README). With --init and --system2-only: a fresh System 2 with this input")
    ap.add_argument("--system1-batch-size", type=int, default=256,
                    help="System 1 rows per step with --system1-condition keypoints (default 256)")
    ap.add_argument("--balance-kinds", action="store_true",
                    help="System 1's rows drawn so that each task kind fills an equal share of a batch (default: "
                         "each row equally often, so a kind with more or longer episodes fills more)")
    ap.add_argument("--system1-only", action="store_true",
                    help="with --system1-condition keypoints (or --init of such a checkpoint): train System 1 alone "
                         "on the datasets' rows (System 2 and its heads frozen, no frame read; minutes, e.g. after a "
                         "DAgger round)")
    ap.add_argument("--system2-only", action="store_true",
                    help="with --system1-condition keypoints: train System 2 and its keypoint and task heads "
                         "alone (System 1 untouched, no action rows); then --system1-only --init trains System 1, "
                         "so the two stages share the time budget")
    ap.add_argument("--expert-width", type=int, default=None,
                    help="System 1's denoiser width (default: the PolicyConfig's, 256; with --system1-only --init "
                         "a fresh System 1 of this size on the checkpoint's System 2)")
    ap.add_argument("--expert-blocks", type=int, default=None,
                    help="System 1's residual blocks (default: the PolicyConfig's, 2; as --expert-width)")
    ap.add_argument("--augment-shift", type=int, default=None,
                    help="System 2's random-shift augmentation range [px] (DrQ; 0 = off; default: the --init "
                         "checkpoint's, else the PolicyConfig's 4); saved in the checkpoint's config, where it also "
                         "caps the test-time shift averaging (LearnedSystem2)")
    ap.add_argument("--feature-points", type=int, default=None,
                    help="System 2's instruction-conditioned spatial soft-argmax points read into z's last token "
                         "(PolicyConfig.feature_points; default 0 = none; 8 in the shipped Franka policy, README). "
                         "With --init and --system2-only: a fresh System 2 with this many points for the "
                         "checkpoint's System 1")
    ap.add_argument("--role-points", action="store_true", default=None,
                    help="split the feature points by role (PolicyConfig.role_points): half queried by the object "
                         "phrase, half by the goal phrase, each keypoint read from its own role's points; needs "
                         "--text-tokens 3 and --feature-points (even). With --init and --system2-only: a fresh "
                         "System 2 of that kind")
    ap.add_argument("--keypoint-pixel-weight", type=float, default=None,
                    help="with --role-points: weight of the role maps' pixel targets (PolicyConfig."
                         "keypoint_pixel_weight; where the keypoints project into the sim camera's frames; default 0 = "
                         "off). With --init and --system2-only: a fresh System 2 trained so")
    ap.add_argument("--system1-state", choices=SYSTEM1_STATES, default=None,
                    help="how System 1 sees the robot: 'joints' (default: joint positions and velocities) or "
                         "'cartesian' (the tool's velocity and orientation, the gripper, no arm joint position; "
                         "needs --system1-condition keypoints and --action-mode ee). With --init and "
                         "--system1-only: a fresh System 1 of that kind on the checkpoint's System 2")
    ap.add_argument("--yaw-augment", action="store_true",
                    help="turn each System 1 training row's scene by a random angle about base_link's z (its "
                         "relative keypoints, tool velocity and the action's positions alike), so one push "
                         "direction teaches the others; needs a 'cartesian' System 1 (PolicyConfig.system1_state)")
    ap.add_argument("--max-start-gap", type=float, default=DEFAULT_MAX_START_GAP,
                    help=f"drop rows whose action chunk starts more than this [rad] from the row's measured "
                         f"positions (a chunk paired with another instant's state; default {DEFAULT_MAX_START_GAP}, "
                         f"0 = keep every row)")
    ap.add_argument("--keypoint-noise", type=float, default=DEFAULT_KEYPOINT_NOISE,
                    help=f"per-axis std [m] of the noise on System 1's training keypoints with --system1-condition "
                         f"keypoints (default {DEFAULT_KEYPOINT_NOISE}: System 2's error on unseen layouts)")
    return ap.parse_args(argv)


def main(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Entry point for ``python -m vla_mpc.train policy``; ``args`` is a parsed namespace or argv."""
    from vla_mpc.models.text import TextEncoder
    from vla_mpc.training.dataset import Dataset
    from vla_mpc.training.scenes import SceneSet
    from vla_mpc.training.loop import TrainConfig, train

    if not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    defaults = vars(parse_args(["--dataset", "-", "--out", "-"]))
    opt = {k: getattr(args, k, v) for k, v in defaults.items()}
    paths = opt["dataset"] if isinstance(opt["dataset"], (list, tuple)) else [opt["dataset"]]
    dataset_kinds = parse_dataset_kinds(opt.get("dataset_kinds"), len(paths))
    loaded = [Dataset.load(p) for p in paths]
    ds = Dataset.concatenate(loaded)
    torch.manual_seed(opt["seed"])
    # Behaviour cloning learns from the successful demonstrations (failed ones stay in the dataset
    # for the world model and for inspection) and from expert-labelled DAgger rollouts, whatever
    # the learner's outcome there.
    rows = {s: ds.rows(s, success_only=True, expert_labels=True) for s in ("train", "val")}
    instructions = _instruction_of_rows(ds)
    if dataset_kinds is not None:
        rows = {s: rows_of_kinds(r, instructions, [len(d) for d in loaded], dataset_kinds) for s, r in rows.items()}
        if len(rows["train"]) == 0:
            raise ValueError("--dataset-kinds leaves no training row")
    dropped = 0
    if opt["max_start_gap"] > 0:
        for split in rows:
            rows[split], bad = rows_starting_at_their_state(ds, rows[split], opt["max_start_gap"])
            dropped += len(bad)
        if dropped:
            print(f"policy: dropped {dropped} rows whose chunk starts more than {opt['max_start_gap']} from the "
                  f"measured positions (--max-start-gap)", flush=True)
        if len(rows["train"]) == 0:
            raise ValueError("no training row's chunk starts at its measured positions (see --max-start-gap)")
    sizes: dict[str, Any] = {k: int(opt[k]) for k in ("expert_width", "expert_blocks") if opt.get(k) is not None}
    if opt.get("system1_state") is not None:
        sizes["system1_state"] = str(opt["system1_state"])
    fresh = set(SYSTEMS) if opt["init"] is None else set()  # systems this run starts from scratch
    if opt["init"] is not None:
        from vla_mpc.models.checkpoint import load_policy

        policy = load_policy(opt["init"], expected_joint_names=tuple(ds.meta["joint_names"])).train()
        if sizes and not opt["system1_only"]:
            raise ValueError("--expert-width / --expert-blocks / --system1-state with --init need --system1-only "
                             "(a fresh System 1 on the checkpoint's System 2)")
        if sizes:
            stats = None
            if opt.get("yaw_augment") and policy.config.action_mode == "ee":
                stats = {**policy.stats, "action_ee": isotropic_xy_stats(policy.stats["action_ee"])}
            policy = with_new_system1(policy, stats=stats, **sizes)
            fresh.add("system1")
        new_system2 = {k: int(opt[k]) for k in ("feature_points", "text_tokens") if opt.get(k) is not None}
        if opt.get("role_points"):
            new_system2["role_points"] = True
        if opt.get("keypoint_pixel_weight") is not None:
            new_system2["keypoint_pixel_weight"] = float(opt["keypoint_pixel_weight"])
        if new_system2:
            if not opt["system2_only"]:
                raise ValueError("--feature-points / --text-tokens / --role-points with --init need --system2-only (a "
                                 "fresh System 2 on the checkpoint's System 1)")
            policy = with_new_system2(policy, **new_system2)
            fresh.add("system2")
        if opt.get("augment_shift") is not None:
            policy.config = dataclasses.replace(policy.config, augment_shift=int(opt["augment_shift"]))
    else:
        policy = build_policy(ds.meta, ds.proprio, ds.actions, ds.keypoints, sampler=opt["sampler"],
                              action_mode=opt["action_mode"], stats_rows=rows["train"],
                              keypoint_condition=bool(opt["keypoint_condition"] and ds.keypoints is not None),
                              system1_condition=opt["system1_condition"], text_tokens=opt["text_tokens"] or 1, **sizes,
                              **({} if opt.get("augment_shift") is None else {"augment_shift": int(opt["augment_shift"])}),
                              **({} if opt.get("feature_points") is None else {"feature_points": int(opt["feature_points"])}),
                              **({"role_points": True} if opt.get("role_points") else {}),
                              **({} if opt.get("keypoint_pixel_weight") is None
                                 else {"keypoint_pixel_weight": float(opt["keypoint_pixel_weight"])}),
                              **({} if opt["keypoint_weight"] is None else {"keypoint_weight": opt["keypoint_weight"]}))
    if opt["system1_only"] and opt["system2_only"]:
        raise ValueError("--system1-only and --system2-only exclude each other")
    if opt.get("yaw_augment"):
        if policy.config.system1_state != "cartesian":
            raise ValueError("--yaw-augment needs a 'cartesian' System 1 (--system1-state cartesian): joint positions "
                             "do not turn with the scene")
        if "system1" in fresh and opt["init"] is None:  # a fresh policy: its x / y statistics must not depend on the axis
            policy = DualSystemPolicy(policy.config, {**policy.stats,
                                                      "action_ee": isotropic_xy_stats(policy.stats["action_ee"])})
        ee = policy.stats["action_ee"]
        if ee["mean"][0] != 0.0 or ee["mean"][1] != 0.0 or ee["std"][0] != ee["std"][1]:
            raise ValueError("--yaw-augment needs end-effector statistics that do not depend on the axis in x / y "
                             "(a System 1 started with --yaw-augment; isotropic_xy_stats)")
    if opt["system1_only"] and not policy.config.task_head:
        raise ValueError("--system1-only needs --system1-condition keypoints (or --init of a policy trained with "
                         "it): System 1 then learns from the rows' keypoints, without System 2")
    if opt["system2_only"] and not policy.config.task_head:
        raise ValueError("--system2-only needs --system1-condition keypoints (System 1 then reads only the "
                         "heads' read-outs)")
    if opt["system1_only"] or opt["system2_only"]:  # train one system, freeze the other
        for name, param in policy.named_parameters():
            param.requires_grad_(name.startswith("system1.") == bool(opt["system1_only"]))
    scenes = [] if opt["system1_only"] else [SceneSet.load(p) for p in opt["scenes"]]
    for sc in scenes:
        if sc.meta["robot"] != ds.meta["robot"] or int(sc.meta["image_size"]) != int(ds.meta["image_size"]):
            raise ValueError(f"scenes {sc.path}: robot {sc.meta['robot']!r} / image_size {sc.meta['image_size']} "
                             f"do not match the dataset's {ds.meta['robot']!r} / {ds.meta['image_size']}")
    scene_instr = [sc.instructions for sc in scenes]
    all_instr = set(instructions.tolist()).union(*[set(i.tolist()) for i in scene_instr])
    text_emb = {} if opt["system1_only"] else TextEncoder().encode_many(sorted(all_instr),
                                                                         tokens=policy.config.text_tokens)
    if len(rows["val"]) == 0:
        rows["val"] = rows["train"]  # tiny datasets: validate on training rows (noted in the summary)
    kind_of = row_kinds = s1_rows = None
    if policy.config.task_head:
        kind_of = task_kind_indices(sorted(all_instr))
        row_kinds = np.array([kind_of[t] for t in instructions], dtype=np.int64)
        finite = np.isfinite(np.asarray(ds.keypoints)).reshape(len(ds.keypoints), -1).all(axis=1)
        s1_rows = {k: v[finite[v]] for k, v in rows.items()}
        if len(s1_rows["train"]) == 0:
            raise ValueError("--system1-condition keypoints: no training row has keypoints")
        if len(s1_rows["val"]) == 0:
            s1_rows["val"] = s1_rows["train"]

    poses = None
    if policy.ee_actions is not None and not opt["system2_only"]:  # once per row (action_pose_table)
        used = [s1_rows[k] for k in ("train", "val")] if s1_rows is not None else []
        if not opt["system1_only"]:
            used += [rows["train"], rows["val"]]
        t0 = time.monotonic()
        poses = action_pose_table(policy.ee_actions, ds.actions, np.concatenate(used))
        print(f"policy: target poses of {int(np.isfinite(poses[:, 0, 0]).sum())} rows in "
              f"{time.monotonic() - t0:.1f} s", flush=True)

    scene_sizes = np.array([len(sc) for sc in scenes], dtype=np.int64)
    n_arm = 0
    if opt["proprio_noise"] > 0:  # the arm joints, from config/<robot>.yaml (ConfigError if it is missing)
        from vla_mpc.core.robot_model import load_robot_spec

        n_arm = load_robot_spec(policy.config.robot).n_arm

    projector = None
    if policy.config.keypoint_pixel_weight > 0 and not opt["system1_only"]:
        cameras = {ds.meta.get("camera")} | {sc.meta.get("camera") for sc in scenes}
        if len(cameras) != 1 or len(policy.config.cameras) != 1:
            raise ValueError(f"--keypoint-pixel-weight needs one camera for every dataset and scene set, got "
                             f"{sorted(map(str, cameras))} (policy cameras {list(policy.config.cameras)})")
        projector = PixelProjector(policy.config.robot, cameras.pop(), policy.config.image_size)

    def make_batch(split: str, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        if opt["system1_only"]:
            batch = make_system1_batch(ds, s1_rows[split], row_kinds, rng, opt["system1_batch_size"],
                                       max_latent_lag=opt["max_latent_lag"],
                                       keypoint_noise=opt["keypoint_noise"] if split == "train" else 0.0,
                                       action_poses=poses, yaw_augment=bool(opt["yaw_augment"]) and split == "train",
                                       balance_kinds=bool(opt.get("balance_kinds")) and split == "train")
            if split == "train":
                perturb_proprio(batch, rng, opt["proprio_noise"], n_arm)
            return batch
        batch = make_policy_batch(ds, text_emb, split, rng, batch_size, max_latent_lag=opt["max_latent_lag"],
                                  rows=rows[split], instructions=instructions, task_kinds=row_kinds,
                                  action_poses=poses)
        if split == "train" and scenes and policy.config.keypoint_head:
            batch.update(make_scene_batch(scenes, scene_sizes, text_emb, rng, opt["scene_batch_size"], kind_of))
        if projector is not None and batch.get("keypoints") is not None:
            batch["keypoint_uv"] = projector(batch["keypoints"], batch.get("task_kind"))
            if batch.get("scene_keypoints") is not None:
                batch["scene_keypoint_uv"] = projector(batch["scene_keypoints"], batch.get("scene_task_kind"))
        if opt["system2_only"]:  # frames, keypoints and task kinds only: the loss leaves System 1 out
            return {k: v for k, v in batch.items() if k not in ("proprio", "actions", "action_poses")}
        if s1_rows is not None:  # validation: the same rows, without the keypoint noise
            batch.update(make_system1_batch(ds, s1_rows[split], row_kinds, rng, opt["system1_batch_size"],
                                            max_latent_lag=opt["max_latent_lag"],
                                            keypoint_noise=opt["keypoint_noise"] if split == "train" else 0.0,
                                            action_poses=poses,
                                            yaw_augment=bool(opt["yaw_augment"]) and split == "train",
                                            balance_kinds=bool(opt.get("balance_kinds")) and split == "train"))
        if split == "train":
            perturb_proprio(batch, rng, opt["proprio_noise"], n_arm)
        return batch

    extra = {"dataset": [str(Path(p).resolve()) for p in paths], "episodes": len(ds.meta["episodes"]),
             "dataset_kinds": opt.get("dataset_kinds"),
             "scenes": [str(Path(p).resolve()) for p in opt["scenes"]], "scene_frames": int(scene_sizes.sum()),
             "rows": {k: int(len(v)) for k, v in rows.items()}, "max_latent_lag": opt["max_latent_lag"],
             "proprio_noise": opt["proprio_noise"], "max_start_gap": opt["max_start_gap"], "dropped_rows": dropped}
    if s1_rows is not None:
        extra.update(system1_batch_size=opt["system1_batch_size"], keypoint_noise=opt["keypoint_noise"],
                     yaw_augment=bool(opt["yaw_augment"]), balance_kinds=bool(opt.get("balance_kinds")),
                     system1_only=bool(opt["system1_only"]), system2_only=bool(opt["system2_only"]))
    config = TrainConfig(max_steps=opt["steps"], max_minutes=opt["minutes"], batch_size=opt["batch_size"],
                         lr=opt["lr"], seed=opt["seed"], num_threads=opt["threads"])
    counts = policy.num_parameters()
    print(f"policy: {counts['total']:,} parameters (System 2 {counts['system2']:,}, System 1 {counts['system1']:,}); "
          f"sampler {policy.config.sampler}; {len(rows['train'])} train rows", flush=True)
    # what this run trained and what it started afresh: bench learning counts a stage's minutes
    # only while the model still holds its work (bench.learning.staged_cost)
    trained = ["system1"] if opt["system1_only"] else ["system2"] if opt["system2_only"] else list(SYSTEMS)
    summary_extra = {"trained": trained, "fresh": sorted(fresh)}
    if opt["init"] is not None:
        summary_extra["init"] = str(Path(opt["init"]).resolve())
    result = train(policy, make_batch, Path(opt["out"]), config,
                   save=lambda m, p: save_policy(m, p, extra=extra), resume=bool(opt["resume"]),
                   summary_extra=summary_extra)
    print(json.dumps({"steps": result.steps, "minutes": round(result.minutes, 2), "train_loss": result.train_loss,
                      "val_loss": result.val_loss, "out": str(result.out_dir)}), flush=True)
    return 0
