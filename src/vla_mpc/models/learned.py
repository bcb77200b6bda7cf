"""Learned System 2 / System 1 backends (the :mod:`vla_mpc.models.base` interfaces) over a
:class:`~vla_mpc.models.policy.DualSystemPolicy` checkpoint.

* :class:`LearnedSystem2`: {camera: (H, W, 3) uint8} + instruction -> ``z`` (latent_tokens,
  latent_dim) float32. Frames go through :func:`~vla_mpc.models.vision.resize_frame` (the dataset's
  preprocessing), and ``z`` is averaged over small shifts of them (test-time augmentation,
  :data:`SHIFT_AVERAGE_PX`); the instruction through the frozen MiniLM encoder (cached per string).
* :class:`LearnedSystem1`: ``z`` + measured positions/velocities (+ the committed prefix for
  real-time chunking) -> (chunk_size, action_dim) float64 absolute targets.

Either may be built alone (``role`` system2 / system1 of the policy node); both share one loaded
policy when built together (:func:`load_learned_backends`). Inference holds a per-backend lock, so
the System 2 and System 1 threads never run the same module at once. No rclpy here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vla_mpc.models.base import joint_vector
from vla_mpc.models.checkpoint import CheckpointError, load_policy
from vla_mpc.models.policy import DualSystemPolicy
from vla_mpc.models.text import TextEncoder
from vla_mpc.models.vision import resize_frame, shifted_views
from vla_mpc.sim.tasks import TASK_KINDS

__all__ = ["CheckpointError", "GOAL_READINGS", "LearnedSystem2", "LearnedSystem1", "RTC_PREFIX_STEPS", "SHIFT_AVERAGE_PX", "limit_threads",
           "load_learned_backends"]

#: Default test-time shift radius of :class:`LearnedSystem2` [px of the model frame]. Measured on
#: the Franka checkpoint of session 10 (96 px frames, trained with 4 px random shifts), first frames of
#: the 50 evaluation reach layouts: the error of the read top-face keypoint in the table plane had
#: a median of 2.0 cm from one view, 1.55 cm averaged over the 9 views at 2 px (1.49 cm over 25
#: views at 2 and 4 px); errors above 3 cm fell from 12 to 8 of 50. ROS-free reach, safety filter on,
#: two System 1 noise seeds: 45/50 -> 46/50 and 33/50 -> 35/50. System 2 then encodes 9 frames
#: (about 20 ms at 2 Hz). Those are session 10's release; with feature points (session 11's, median
#: 0.8 cm) the 9 views still help a little: push object 1.07 -> 0.93 cm median, reach top face
#: 0.84 -> 0.77 cm.
SHIFT_AVERAGE_PX = 2
#: Default for :class:`LearnedSystem1`'s ``prefix_steps``: how many steps of the executing chunk a
#: new chunk inpaints (real-time chunking, Black et al. 2025: the first ``rtc_frozen_steps`` exactly,
#: later ones with soft weights that decay to 0). The node hands over the whole remaining overlap
#: (10 of 16 steps at 3.33 Hz). Measured in session 13 (ROS-free, safety filter on, 20 evaluation
#: push layouts, a System 1 trained on the re-aimed push expert's DART rows): with the soft region,
#: System 1 kept following a plan that had stopped at a waypoint and stalled. True keypoints:
#: 9/20 with the whole overlap, 17/20 with 4 steps, 16/20 with 2; System 2's keypoints: 7/20, 9/20
#: (CC 19.6 per episode), 11/20 (CC 4.4). So only the frozen steps (the ones executed while System 1
#: infers) are inpainted (README, "Session 13").
RTC_PREFIX_STEPS = 2
#: Default for :class:`LearnedSystem2`'s ``goal_readings`` (``role_points`` policies): the goal
#: keypoint published for an instruction is the median of System 2's first this-many readings of it,
#: then held. Every task's goal is a place fixed in ``base_link`` when the instruction comes (the
#: pad, the cube's top face, the push goal ``push_travel`` from where the cube *was*): later frames
#: show the arm over the pad or the cube already moved, and a push's goal cannot be read from them
#: at all. Measured on the session-15 Franka checkpoint (ROS-free ``sim.rollout``, safety filter,
#: System 1 noise seed 0): pick_place 16/40 layouts held against 10/40 read every time (the same
#: layouts; held won every layout where the two differed on 100020-100039), push 15/20 against
#: 17/20 (within the noise of 20 layouts).
GOAL_READINGS = 3


def limit_threads(n: int) -> dict[str, int]:
    """Run torch's intra-op pool and every BLAS library of the process (OpenBLAS under numpy,
    through ``threadpoolctl``) with ``n`` threads; process-wide, for a node's lifetime.

    Why BLAS too: System 1's end-effector chunks go through damped least-squares IK, one 6 x 6
    ``numpy.linalg.solve`` per iteration (48 a chunk). With OpenBLAS's default pool (one thread
    per core) beside torch's, each solve cost 20-100 µs idle and 1.5 ms with the CPU loaded,
    against 5 µs on one thread; a System 1 chunk took 79 ms (median) with the machine busy,
    10 ms with one BLAS thread (measured here, 2 cores, the shipped Franka checkpoint). In the
    graph that starved the chunk stream (chunks every 162 ms median, 815 ms at the 99th
    percentile, against the 100 ms asked for).

    Args:
        n: threads, >= 1.

    Returns:
        ``{"torch": threads, "blas": the largest thread count of any BLAS library now}`` (0 when
        no BLAS library is loaded).

    Raises:
        ValueError: ``n`` < 1.
    """
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n!r}")
    from threadpoolctl import threadpool_info, threadpool_limits

    torch.set_num_threads(int(n))
    threadpool_limits(limits=int(n), user_api="blas")
    blas = [int(lib.get("num_threads", 0)) for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return {"torch": torch.get_num_threads(), "blas": max(blas, default=0)}


class LearnedSystem2:
    """Built-in compact VLM as a System 2 backend.

    Args:
        policy: a loaded :class:`DualSystemPolicy` (eval mode).
        text_encoder: sentence encoder (default :class:`~vla_mpc.models.text.TextEncoder`);
            anything with ``encode_instruction(str, tokens) -> (tokens, 384) float32``.
        shift_average_px: average ``z`` over the 9 views of :func:`~vla_mpc.models.vision.
            shifted_views` at this radius [px of the model frame] (test-time augmentation; the
            keypoint head is linear, so the read keypoints are the views' mean); 0: one view.
            None: :data:`SHIFT_AVERAGE_PX`, capped at the policy's training ``augment_shift``
            (a policy trained without shifts gets one view).
        goal_readings: hold the goal keypoint: for each instruction (until :meth:`reset` or
            another instruction), the goal in ``z`` and :attr:`keypoints` is the per-axis median
            of System 2's first ``goal_readings`` goal readings (so far, until there are that
            many), then fixed; 0: every reading as read. Needs a ``role_points`` policy (its ``z``
            carries the keypoints, :meth:`DualSystemPolicy.with_keypoints`). None:
            :data:`GOAL_READINGS` for ``role_points`` policies, else 0.

    Raises:
        ValueError: a negative ``shift_average_px`` or one not below the model frame size; a
            negative ``goal_readings``, or a positive one for a policy without ``role_points``.
    """

    def __init__(self, policy: DualSystemPolicy, text_encoder: TextEncoder | None = None,
                 shift_average_px: int | None = None, goal_readings: int | None = None) -> None:
        self.policy = policy
        self.text_encoder = text_encoder or TextEncoder()
        c = policy.config
        r = min(SHIFT_AVERAGE_PX, int(c.augment_shift)) if shift_average_px is None else int(shift_average_px)
        if not 0 <= r < c.image_size:
            raise ValueError(f"shift_average_px must be in [0, {c.image_size}), got {shift_average_px}")
        self.shift_average_px = r
        if goal_readings is None:
            goal_readings = GOAL_READINGS if c.role_points else 0
        if isinstance(goal_readings, bool) or int(goal_readings) != goal_readings or goal_readings < 0:
            raise ValueError(f"goal_readings must be an int >= 0, got {goal_readings!r}")
        if goal_readings and not c.role_points:
            raise ValueError("goal_readings > 0 needs a role_points policy (its z carries the keypoints)")
        self.goal_readings = int(goal_readings)
        self._goal_instruction: str | None = None
        self._goal_samples: list[np.ndarray] = []
        self.latent_shape = (policy.config.latent_tokens, policy.config.latent_dim)
        self.status = "not run"
        #: (2, 3) float64 [m, base_link] task keypoints read from the last latent (policies with a
        #: keypoint head), else None.
        self.keypoints: np.ndarray | None = None
        #: the task kind (:data:`~vla_mpc.sim.tasks.TASK_KINDS`) read from the last latent
        #: (policies with a task head), else None.
        self.task_kind: str | None = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.status = "not run"
        self.keypoints = None
        self.task_kind = None
        self._goal_instruction, self._goal_samples = None, []

    def warmup(self) -> None:
        """Load the sentence model and run one forward pass (configure time, not the first tick)."""
        s = self.policy.config.image_size
        self.infer({c: np.zeros((s, s, 3), np.uint8) for c in self.policy.config.cameras}, "warm up")
        self.reset()

    def infer(
        self,
        images: Mapping[str, np.ndarray],
        instruction: str,
        objects: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Latent ``z`` (latent_tokens, latent_dim) float32; ``objects`` is ignored (not privileged).

        Raises:
            ValueError: a configured camera is missing from ``images``, or a frame is not
                (H, W, 3) uint8.
        """
        cams = self.policy.config.cameras
        missing = [c for c in cams if c not in images]
        if missing:
            raise ValueError(f"learned System 2 needs camera(s) {missing} (has {sorted(images)})")
        s = self.policy.config.image_size
        frames = shifted_views(np.stack([resize_frame(images[c], s) for c in cams]), self.shift_average_px)
        emb = self.text_encoder.encode_instruction(instruction, self.policy.config.text_tokens)[None]
        emb = np.repeat(emb, frames.shape[0], axis=0)  # frames: [K views, N cameras, S, S, 3]
        with self._lock, torch.inference_mode():
            z = self.policy.encode(torch.from_numpy(frames), torch.from_numpy(emb)).mean(0, keepdim=True)
            if self.policy.config.keypoint_head:
                kp = self.policy.predict_keypoints(z)
                if self.goal_readings:  # role_points: the held goal goes back into z
                    kp = self._hold_goal(kp, instruction)
                    z = self.policy.with_keypoints(z, kp)
                self.keypoints = kp[0].numpy().astype(np.float64)
            if self.policy.config.task_head:
                self.task_kind = TASK_KINDS[int(self.policy.predict_task_kind(z)[0])]
            z = z[0]
        self.status = "ok" if instruction.strip() else "ok (empty instruction)"
        if self.task_kind is not None:  # what System 1 will be told (diagnostics)
            self.status += f"; reads {self.task_kind} at {np.round(self.keypoints, 3).tolist()} m"
        return z.numpy().astype(np.float32, copy=True)

    def _hold_goal(self, kp: torch.Tensor, instruction: str) -> torch.Tensor:
        """``kp`` (1, 2, 3) [m] with its goal row replaced by the median of this instruction's
        first ``goal_readings`` goal readings (``goal_readings`` docstring); modifies ``kp``."""
        if instruction != self._goal_instruction:
            self._goal_instruction, self._goal_samples = instruction, []
        if len(self._goal_samples) < self.goal_readings:
            self._goal_samples.append(kp[0, 1].numpy().copy())
        kp[0, 1] = torch.from_numpy(np.median(np.stack(self._goal_samples), axis=0))
        return kp


class LearnedSystem1:
    """Flow-matching / DDIM action expert as a System 1 backend.

    Args:
        policy: a loaded :class:`DualSystemPolicy` (eval mode).
        seed: seeds the sampling noise (reproducible chunks for the same inputs and call order).
        prefix_steps: at most this many steps of a given ``prefix`` are inpainted, >= 1
            (:data:`RTC_PREFIX_STEPS`; ``chunk_size`` or more: all of it).

    Raises:
        ValueError: ``prefix_steps`` < 1.
    """

    def __init__(self, policy: DualSystemPolicy, seed: int = 0, prefix_steps: int = RTC_PREFIX_STEPS) -> None:
        self.policy = policy
        c = policy.config
        self.chunk_size, self.action_dim, self.dt = c.chunk_size, c.action_dim, float(c.chunk_dt)
        if isinstance(prefix_steps, bool) or not isinstance(prefix_steps, (int, np.integer)) or prefix_steps < 1:
            raise ValueError(f"prefix_steps must be an integer >= 1, got {prefix_steps!r}")
        self.prefix_steps = int(prefix_steps)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)
        self._lock = threading.Lock()
        self.status = "not run"

    def reset(self) -> None:
        self._generator.manual_seed(self.seed)
        self.status = "not run"

    def infer(
        self,
        z: np.ndarray,
        proprio: np.ndarray,
        prefix: np.ndarray | None = None,
        velocity: np.ndarray | None = None,
        keypoints: np.ndarray | None = None,
        task_kind: str | None = None,
    ) -> np.ndarray:
        """Next chunk (chunk_size, action_dim) float64 [rad or m]; ``chunk[k]`` for ``t_start + k dt``.

        Args:
            z: (latent_tokens, latent_dim) latent.
            proprio: (action_dim,) measured positions over ``joint_names``.
            prefix: (P, action_dim) committed targets of the chunk's first P steps (the first
                ``prefix_steps`` of them inpainted, the first ``rtc_frozen_steps`` exactly), or None.
            velocity: (action_dim,) measured velocities, or None (zeros).
            keypoints: (2, 3) task keypoints [m, ``base_link``] to condition on instead of those
                System 2's head reads from ``z`` (``sim.tasks.task_keypoints``), or None.
            task_kind: a ``sim.tasks.TASK_KINDS`` name instead of the task head's reading, or None.

        Raises:
            ValueError: wrong shapes or non-finite inputs; read-outs given to a policy that does
                not condition on them (``keypoint_condition``; ``task_head`` for ``task_kind``),
                or an unknown ``task_kind``.
        """
        c = self.policy.config
        z = np.asarray(z, dtype=np.float32)
        if z.shape != (c.latent_tokens, c.latent_dim) or not np.all(np.isfinite(z)):
            raise ValueError(f"z must be finite ({c.latent_tokens}, {c.latent_dim}), got {z.shape}")
        q = joint_vector(proprio, self.action_dim, "proprio")
        v = joint_vector(velocity, self.action_dim, "velocity", zeros_if_none=True)
        pre = None
        if prefix is not None:
            pre = np.asarray(prefix, dtype=np.float64)
            if pre.ndim != 2 or pre.shape[1] != self.action_dim or not np.all(np.isfinite(pre)):
                raise ValueError(f"prefix must be finite (P, {self.action_dim}), got {pre.shape}")
            pre = torch.from_numpy(pre[None, : min(self.chunk_size, self.prefix_steps)].astype(np.float32))
        kp = kind = None
        if keypoints is not None:
            kp = np.asarray(keypoints, dtype=np.float32)
            if not c.keypoint_condition or kp.shape != (2, 3) or not np.all(np.isfinite(kp)):
                raise ValueError(f"keypoints must be finite (2, 3) for a keypoint-conditioned policy, got {kp.shape}"
                                 f" (keypoint_condition={c.keypoint_condition})")
            kp = torch.from_numpy(kp)[None]
        if task_kind is not None:
            if not c.task_head or task_kind not in TASK_KINDS:
                raise ValueError(f"task_kind must be one of {TASK_KINDS} for a policy with a task head, "
                                 f"got {task_kind!r} (task_head={c.task_head})")
            kind = torch.tensor([TASK_KINDS.index(task_kind)])
        p = torch.from_numpy(np.concatenate([q, v]).astype(np.float32))[None]
        with self._lock:
            chunk = self.policy.sample_chunk(torch.from_numpy(z)[None], p, pre, generator=self._generator,
                                             keypoints=kp, task_kind=kind)[0]
        out = chunk.numpy().astype(np.float64)
        if pre is not None:  # frozen steps exactly as committed (float32 round-off aside)
            k = min(c.rtc_frozen_steps, pre.shape[1])
            out[:k] = np.asarray(prefix, dtype=np.float64)[:k]
        self.status = "ok"
        return out


def load_learned_backends(
    checkpoint: Path | str,
    joint_names: tuple[str, ...] | list[str],
    need_system2: bool = True,
    seed: int = 0,
    prefix_steps: int = RTC_PREFIX_STEPS,
    goal_readings: int | None = None,
) -> tuple[DualSystemPolicy, LearnedSystem2 | None, Callable[[], LearnedSystem1]]:
    """Load a checkpoint for the robot with ``joint_names``; ``seed`` and ``prefix_steps`` go to
    every :class:`LearnedSystem1` the factory builds, ``goal_readings`` to System 2.

    Returns:
        (policy, System 2 backend or None when ``need_system2`` is False, System 1 factory; every
        System 1 built shares the policy's weights).

    Raises:
        CheckpointError: missing/corrupt checkpoint or joint names that do not match the robot.
        ValueError: ``goal_readings`` that :class:`LearnedSystem2` refuses. The factory raises
        ValueError for ``prefix_steps`` < 1.
    """
    policy = load_policy(checkpoint, expected_joint_names=tuple(joint_names))
    s2 = LearnedSystem2(policy, goal_readings=goal_readings) if need_system2 else None
    return policy, s2, lambda: LearnedSystem1(policy, seed, prefix_steps)
