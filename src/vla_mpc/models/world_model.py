"""World-model API for the latent MPC planner, and its first model: joint-space kinematics.

The API follows TD-MPC2's ``common/world_model.py`` (``encode``, ``next``, a cost/reward head) and
V-JEPA 2-AC's planning loop (encode the current and the goal observation, roll action sequences
through an action-conditioned predictor, score the final latent against the goal latent):

* ``encode(image, proprio) -> z``: one observation to a latent of shape ``latent_shape``;
* ``next(z [B, *Z], a [B, A]) -> z' [B, *Z]``: one predicted step of ``dt`` seconds;
* ``rollout(z0 [*Z], actions [S, H, A]) -> latents [S, H, *Z]``: the predicted latent after each
  action (the ``rollout`` callable of ``vla_mpc.planning``);
* ``make_goal(...) -> Goal`` and ``cost(latents, actions, goal) -> [S]`` (``objective(goal)`` binds
  the goal and is the planner's ``cost`` callable). Lower is better.

``KinematicWorldModel`` is the proprioceptive world model: the latent is the joint position vector
over the robot's command joints (``RobotSpec.joint_names``: arm + gripper) [rad or m], an action is
a joint position delta per planning step ``dt`` [rad or m], clipped to ``velocity * dt``. For a
position-controlled arm that tracks its targets this prediction is exact, so the planner is useful
before a learned model exists. The learned JEPA predictor (goal images) implements the same API
with ``supports_image_goals = True``.

Cost terms of ``KinematicWorldModel`` (``KinematicCostConfig``), summed per sample:

* goal: ``goal_weight * ||q_H - q_goal||`` [rad] and/or ``ee_goal_weight * ||p_H - p_goal||`` [m]
  on the final predicted state (``p`` = end-effector position in ``base_link`` by forward
  kinematics), plus ``running_goal_weight`` times the same distances averaged over all H steps
  (it makes "get there early" better than "get there at the end", so the first actions, the
  ones executed, point at the goal);
* effort: ``action_weight * sum_h ||a_h||^2``;
* proposal: ``reference_weight * sum_h ||a_h - a_ref_h||^2`` when the goal carries
  ``reference_actions`` (hybrid mode);
* joint-limit soft barrier: ``joint_limit_weight * sum_h sum_j (relu(m_j - (q - lower)) / m_j)^2``
  and the same at the upper limit, ``m_j = min(joint_limit_margin, range_j / 4)``: 0 outside the
  margin band, 1 at the limit, growing quadratically beyond. Joints excluded by ``barrier_mask``
  (grippers, which are commanded to their limits on purpose) carry no barrier;
* Cartesian: the table plane ``z >= table_height`` and axis-aligned keep-out boxes (``base_link``)
  for the end-effector point, ``cartesian_weight * (relu(clearance - d) / clearance)^2`` per step,
  ``d`` = height above the table or signed distance to a box. Only the end-effector point is
  checked (link volumes are the safety monitor's job).

Nothing here imports rclpy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

# ------------------------------------------------------------------------------------ batched FK

_AXES = {"X": (1.0, 0.0, 0.0), "Y": (0.0, 1.0, 0.0), "Z": (0.0, 0.0, 1.0)}


def _skew(axis: torch.Tensor) -> torch.Tensor:
    x, y, z = (float(v) for v in axis)
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)


class TorchFK:
    """Batched forward kinematics of one frame, in torch, from a pinocchio model.

    Pinocchio (the maintained library) parses the URDF; this class reads the kinematic chain from
    the root to ``frame`` (``model.parents``, ``model.jointPlacements``, joint types and axes,
    ``model.frames[...].placement``) and evaluates it for a whole batch of configurations at once
    with torch matrix products, which pinocchio's per-configuration Python calls cannot do fast
    enough for thousands of sampled sequences per planning step.

    Args:
        model: ``pinocchio.Model`` (e.g. ``pinocchio.buildModelFromUrdf(path)``); its root frame
            is the URDF root (``base_link``).
        frame: name of the frame to evaluate (e.g. ``spec.ee_link``).
        joint_names: order of the input vector ``q`` (e.g. ``spec.joint_names``). Chain joints not
            listed follow ``mimic`` or are held at ``fixed_positions.get(name, 0.0)``; listed
            joints off the chain (e.g. fingers) are ignored.
        fixed_positions: values [rad or m] for chain joints not in ``joint_names``.
        mimic: URDF ``<mimic>`` joints, ``name -> (master, multiplier, offset)``: the joint is at
            ``multiplier * q[master] + offset`` (pinocchio 2.7 does not model mimic joints).
        dtype: of the computation and result (float32 default; error ~1e-6 m).

    Raises:
        ValueError: unknown frame or joint names, or a joint type on the chain that is not a
            1-DoF revolute or prismatic joint (continuous joints, spherical, free-flyer ...).
    """

    def __init__(
        self,
        model: Any,
        frame: str,
        joint_names: Sequence[str],
        fixed_positions: dict[str, float] | None = None,
        mimic: dict[str, tuple[str, float, float]] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not model.existFrame(frame):
            raise ValueError(f"frame {frame!r} is not in the kinematic model")
        names = list(model.names)
        unknown = [n for n in joint_names if n not in names]
        if unknown:
            raise ValueError(f"joints {unknown} are not in the kinematic model")
        fixed_positions = dict(fixed_positions or {})
        fr = model.frames[model.getFrameId(frame)]
        parent = int(getattr(fr, "parentJoint", getattr(fr, "parent", 0)))
        chain: list[int] = []
        j = parent
        while j > 0:
            chain.append(j)
            j = int(model.parents[j])
        chain.reverse()
        self.frame = frame
        self.joint_names = tuple(joint_names)
        self.dtype = dtype
        index = {n: i for i, n in enumerate(joint_names)}
        mimic = dict(mimic or {})
        # per chain joint: placement rotation (3, 3), translation (3,), kind, axis (3,), skew(axis)
        # (3, 3), input index (-1: held), multiplier, offset
        self._steps: list[tuple[torch.Tensor, torch.Tensor, str, torch.Tensor, torch.Tensor, int, float, float]] = []
        for jid in chain:
            jm = model.joints[jid]
            short = jm.shortname()
            if short in ("JointModelRX", "JointModelRY", "JointModelRZ"):
                kind, axis = "revolute", torch.tensor(_AXES[short[-1]], dtype=torch.float64)
            elif short in ("JointModelPX", "JointModelPY", "JointModelPZ"):
                kind, axis = "prismatic", torch.tensor(_AXES[short[-1]], dtype=torch.float64)
            elif short == "JointModelRevoluteUnaligned":
                kind, axis = "revolute", torch.tensor(np.asarray(jm.extract().axis), dtype=torch.float64)
            elif short == "JointModelPrismaticUnaligned":
                kind, axis = "prismatic", torch.tensor(np.asarray(jm.extract().axis), dtype=torch.float64)
            else:
                raise ValueError(f"joint {names[jid]!r} has type {short}; TorchFK supports 1-DoF revolute/prismatic")
            axis = axis / axis.norm()
            placement = model.jointPlacements[jid]
            rot = torch.tensor(np.asarray(placement.rotation), dtype=torch.float64)
            trans = torch.tensor(np.asarray(placement.translation), dtype=torch.float64)
            name = names[jid]
            if name in index:  # q = 1 * q[idx] + 0
                idx, mul, off = index[name], 1.0, 0.0
            elif name in mimic and mimic[name][0] in index:
                idx, mul, off = index[mimic[name][0]], float(mimic[name][1]), float(mimic[name][2])
            else:  # held still
                idx, mul, off = -1, 0.0, float(fixed_positions.get(name, 0.0))
            self._steps.append((rot.to(dtype), trans.to(dtype), kind, axis.to(dtype), _skew(axis).to(dtype),
                                idx, mul, off))
        self._frame_rot = torch.tensor(np.asarray(fr.placement.rotation), dtype=dtype)
        self._frame_trans = torch.tensor(np.asarray(fr.placement.translation), dtype=dtype)
        self.chain_joints = tuple(names[j] for j in chain)

    def _joint_value(self, qf: torch.Tensor, idx: int, mul: float, off: float) -> torch.Tensor:
        """``[B]`` position of one chain joint from ``qf [B, n]``."""
        if idx < 0:
            return torch.full((qf.shape[0],), off, dtype=self.dtype)
        if mul == 1.0 and off == 0.0:
            return qf[:, idx]
        return mul * qf[:, idx] + off

    def transforms(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pose of ``frame`` in the root frame.

        Args:
            q: ``(..., n)`` joint positions over ``joint_names`` [rad or m].

        Returns:
            ``(R (..., 3, 3), p (..., 3) [m])`` in the model's root frame (``base_link``).

        Raises:
            ValueError: if the last dimension of ``q`` is not ``len(joint_names)``.
        """
        q = torch.as_tensor(q, dtype=self.dtype)
        if q.shape[-1] != len(self.joint_names):
            raise ValueError(f"q has {q.shape[-1]} values in its last dimension, expected {len(self.joint_names)}")
        batch = q.shape[:-1]
        qf = q.reshape(-1, q.shape[-1])  # [B, n]
        b = qf.shape[0]
        rot = torch.eye(3, dtype=self.dtype).expand(b, 3, 3)  # [B, 3, 3]
        pos = torch.zeros(b, 3, dtype=self.dtype)  # [B, 3]
        eye = torch.eye(3, dtype=self.dtype)
        for prot, ptrans, kind, axis, k, idx, mul, off in self._steps:
            pos = pos + rot @ ptrans  # placement of the joint in its parent
            rot = rot @ prot
            theta = self._joint_value(qf, idx, mul, off)  # [B]
            if kind == "revolute":
                s, c = torch.sin(theta).view(b, 1, 1), torch.cos(theta).view(b, 1, 1)
                rj = eye + s * k + (1.0 - c) * (k @ k)  # Rodrigues, [B, 3, 3]
                rot = rot @ rj
            else:
                pos = pos + (rot @ (theta.view(b, 1) * axis).unsqueeze(-1)).squeeze(-1)  # slide along axis
        pos = pos + rot @ self._frame_trans
        rot = rot @ self._frame_rot
        return rot.reshape(*batch, 3, 3), pos.reshape(*batch, 3)

    def positions(self, q: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` joint positions [rad or m] -> ``(..., 3)`` frame positions [m] in the root
        frame.

        Evaluated from the frame back to the root on points only (``v <- M_j J_j(q_j) v``, rotations
        by Rodrigues' formula on vectors), about 5x cheaper than composing rotation matrices.

        Raises:
            ValueError: if the last dimension of ``q`` is not ``len(joint_names)``.
        """
        q = torch.as_tensor(q, dtype=self.dtype)
        if q.shape[-1] != len(self.joint_names):
            raise ValueError(f"q has {q.shape[-1]} values in its last dimension, expected {len(self.joint_names)}")
        batch = q.shape[:-1]
        qf = q.reshape(-1, q.shape[-1])  # [B, n]
        b = qf.shape[0]
        v = self._frame_trans.expand(b, 3)  # [B, 3] the frame's origin in its parent joint's frame
        for prot, ptrans, kind, axis, k, idx, mul, off in reversed(self._steps):
            theta = self._joint_value(qf, idx, mul, off).unsqueeze(-1)  # [B, 1]
            if kind == "revolute":
                s, c = torch.sin(theta), torch.cos(theta)
                v = v * c + (v @ k.T) * s + (v @ axis).unsqueeze(-1) * axis * (1.0 - c)  # Rodrigues
            else:
                v = v + theta * axis
            v = v @ prot.T + ptrans  # joint placement in its parent
        return v.reshape(*batch, 3)

    __call__ = positions


# -------------------------------------------------------------------------------------- the API


@dataclass(frozen=True)
class Goal:
    """What the objective drives toward. Either or both of:

    Attributes:
        latent: goal latent, shape ``Z`` (a goal joint configuration [rad or m] for the kinematic
            model; the encoded goal image for a learned model), or None.
        ee_position: ``(3,)`` goal end-effector position [m] in ``base_link``, or None.
        reference_actions: ``(H, A)`` a proposal to stay close to (System 1's chunk in ``hybrid``
            mode: the VLA proposes, the world model checks and refines), or None.
    """

    latent: torch.Tensor | None = None
    ee_position: torch.Tensor | None = None
    reference_actions: torch.Tensor | None = None


class WorldModel(ABC):
    """An action-conditioned predictor plus its planning objective (see module docstring).

    Subclasses set ``latent_shape`` (``Z``), ``action_dim`` (``A``), ``dt`` [s per step] and
    ``supports_image_goals``.
    """

    latent_shape: tuple[int, ...]
    action_dim: int
    dt: float
    supports_image_goals: bool = False

    @abstractmethod
    def encode(self, image: np.ndarray | None, proprio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One observation -> latent ``Z``. ``image``: (H, W, 3) uint8 RGB or None;
        ``proprio``: joint positions over the command joints [rad or m]."""

    @abstractmethod
    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``z [B, *Z]``, ``a [B, A]`` -> ``z' [B, *Z]`` one step (``dt``) later."""

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``z0 [*Z]``, ``actions [S, H, A]`` -> ``latents [S, H, *Z]`` (latent after each action).
        The default applies ``next`` H times; subclasses may vectorise."""
        s, h = actions.shape[:2]
        z = z0.unsqueeze(0).expand(s, *z0.shape)
        out = []
        for t in range(h):
            z = self.next(z, actions[:, t])
            out.append(z)
        return torch.stack(out, dim=1)

    @abstractmethod
    def make_goal(
        self,
        image: np.ndarray | None = None,
        joint_positions: np.ndarray | Sequence[float] | None = None,
        ee_position: np.ndarray | Sequence[float] | None = None,
    ) -> Goal:
        """Build a ``Goal`` from a goal image and/or a goal joint configuration [rad or m, over
        the command joints] and/or a goal end-effector position [m, ``base_link``].

        Raises:
            ValueError: a goal kind the model cannot use, or malformed values.
        """

    @abstractmethod
    def cost(self, latents: torch.Tensor, actions: torch.Tensor, goal: Goal | None) -> torch.Tensor:
        """``latents [S, H, *Z]``, ``actions [S, H, A]`` -> ``[S]`` cost (lower is better);
        ``goal=None`` scores constraints and effort only (used to imagine System 1's chunk)."""

    def objective(self, goal: Goal | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The planner's ``cost`` callable with ``goal`` bound."""
        return lambda latents, actions: self.cost(latents, actions, goal)


# ------------------------------------------------------------------------- kinematic world model


@dataclass(frozen=True)
class KinematicCostConfig:
    """Weights and constraint geometry of ``KinematicWorldModel.cost`` (see module docstring).

    Attributes:
        goal_weight: per rad (or m) of final joint-space distance to the goal configuration.
        ee_goal_weight: per m of final end-effector distance to the goal position.
        running_goal_weight: multiplies the goal terms averaged over all steps (0: final only).
        action_weight: per (rad per step)^2 of summed squared actions.
        reference_weight: per (rad per step)^2 of summed squared deviation from the goal's
            ``reference_actions``.
        joint_limit_margin: width of the barrier band inside each position limit [rad or m], > 0.
        joint_limit_weight: barrier weight (value at the limit, per joint and step).
        table_height: table plane height in ``base_link`` [m], or None for no table.
        keep_out_boxes: ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` per box, ``base_link`` [m].
        cartesian_clearance: width of the Cartesian penalty band [m], > 0.
        cartesian_weight: Cartesian penalty weight (value at contact, per step).

    Raises:
        ValueError: naming the first invalid field.
    """

    goal_weight: float = 1.0
    ee_goal_weight: float = 1.0
    running_goal_weight: float = 0.0
    action_weight: float = 0.0
    reference_weight: float = 10.0
    joint_limit_margin: float = 0.05
    joint_limit_weight: float = 10.0
    table_height: float | None = None
    keep_out_boxes: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = field(default=())
    cartesian_clearance: float = 0.03
    cartesian_weight: float = 10.0

    def __post_init__(self) -> None:
        for name in ("goal_weight", "ee_goal_weight", "running_goal_weight", "action_weight", "reference_weight", "joint_limit_weight",
                     "cartesian_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("joint_limit_margin", "cartesian_clearance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if self.table_height is not None and not math.isfinite(self.table_height):
            raise ValueError(f"table_height must be finite or None, got {self.table_height!r}")
        for i, box in enumerate(self.keep_out_boxes):
            lo, hi = np.asarray(box[0], dtype=float), np.asarray(box[1], dtype=float)
            if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                raise ValueError(f"keep_out_boxes[{i}] must be ((x, y, z) min, (x, y, z) max), got {box!r}")
            if np.any(lo >= hi):
                raise ValueError(f"keep_out_boxes[{i}]: min {lo.tolist()} must be < max {hi.tolist()}")

    @staticmethod
    def boxes_from_flat(values: Sequence[float]) -> tuple:
        """``[xmin, ymin, zmin, xmax, ymax, zmax, ...]`` (6 per box, the ROS parameter form) ->
        the ``keep_out_boxes`` tuple.

        Raises:
            ValueError: if the length is not a multiple of 6.
        """
        v = [float(x) for x in values]
        if len(v) % 6:
            raise ValueError(f"keep-out boxes need 6 values each (min xyz, max xyz), got {len(v)} values")
        return tuple((tuple(v[i:i + 3]), tuple(v[i + 3:i + 6])) for i in range(0, len(v), 6))


class KinematicWorldModel(WorldModel):
    """Proprioceptive world model: latent = joint positions, action = clipped position delta.

    Args:
        joint_names: the command joints (``RobotSpec.joint_names``), order of latents and actions.
        lower, upper: ``(n,)`` position limits [rad or m].
        velocity: ``(n,)`` velocity limits [rad/s or m/s], > 0.
        dt: planning step [s], > 0.
        fk: ``TorchFK`` of the end-effector over ``joint_names``; None disables end-effector goals
            and Cartesian constraints.
        cost_config: ``KinematicCostConfig``.
        barrier_mask: ``(n,)`` bools, joints that get the joint-limit barrier (default: all).

    Raises:
        ValueError: mismatched lengths, non-finite or inverted limits, non-positive ``dt`` or
            velocity, or an ``fk`` over other joints.
    """

    supports_image_goals = False

    def __init__(
        self,
        joint_names: Sequence[str],
        lower: Sequence[float] | np.ndarray,
        upper: Sequence[float] | np.ndarray,
        velocity: Sequence[float] | np.ndarray,
        dt: float,
        fk: TorchFK | None = None,
        cost_config: KinematicCostConfig | None = None,
        barrier_mask: Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        n = len(joint_names)
        arrs = {}
        for name, v in (("lower", lower), ("upper", upper), ("velocity", velocity)):
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (n,) or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be {n} finite values (one per joint), got {a.tolist()}")
            arrs[name] = a
        bad = [joint_names[i] for i in np.flatnonzero(arrs["lower"] >= arrs["upper"])]
        if bad:
            raise ValueError(f"lower >= upper for joints {bad}")
        bad = [joint_names[i] for i in np.flatnonzero(arrs["velocity"] <= 0)]
        if bad:
            raise ValueError(f"velocity limit must be > 0 for joints {bad}")
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt must be a finite number > 0 [s], got {dt!r}")
        if fk is not None and tuple(fk.joint_names) != tuple(joint_names):
            raise ValueError(f"fk is over joints {list(fk.joint_names)}, expected {list(joint_names)}")
        self.joint_names = tuple(joint_names)
        self.latent_shape = (n,)
        self.action_dim = n
        self.dt = float(dt)
        self.fk = fk
        self.cost_config = cost_config or KinematicCostConfig()
        self.lower = torch.tensor(arrs["lower"], dtype=torch.float32)
        self.upper = torch.tensor(arrs["upper"], dtype=torch.float32)
        self.max_step = torch.tensor(arrs["velocity"] * self.dt, dtype=torch.float32)  # [n] per step
        c = self.cost_config
        mask = np.ones(n, dtype=bool) if barrier_mask is None else np.asarray(barrier_mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"barrier_mask must have {n} entries, got {mask.shape}")
        margin = np.minimum(c.joint_limit_margin, (arrs["upper"] - arrs["lower"]) / 4.0)
        self.barrier_margin = torch.tensor(margin, dtype=torch.float32)  # [n]
        self.barrier_mask = torch.tensor(mask, dtype=torch.float32)  # [n]
        self._boxes = torch.tensor([list(b[0]) + list(b[1]) for b in c.keep_out_boxes], dtype=torch.float32).view(-1, 6)

    @classmethod
    def from_robot_model(
        cls,
        robot: Any,
        dt: float,
        cost_config: KinematicCostConfig | None = None,
    ) -> "KinematicWorldModel":
        """Build from a ``vla_mpc.core.robot_model.RobotModel``: joints, limits and ``ee_link`` from
        its ``spec``, the kinematic chain from its pinocchio ``model``, mimic joints from the URDF;
        the joint-limit barrier covers the arm joints (not the gripper).

        Raises:
            ValueError: as the constructor and ``TorchFK``.
        """
        from vla_mpc.core.robot_model import parse_urdf_joints

        spec = robot.spec
        mimic = {name: j.mimic for name, j in parse_urdf_joints(spec.urdf_path).items() if j.mimic is not None}
        fk = TorchFK(robot.model, spec.ee_link, spec.joint_names, mimic=mimic)
        lim = spec.limits
        mask = np.zeros(len(spec.joint_names), dtype=bool)
        mask[np.asarray(spec.arm_indices, dtype=int)] = True
        return cls(spec.joint_names, lim.lower, lim.upper, lim.velocity, dt, fk, cost_config, barrier_mask=mask)

    # -- API --------------------------------------------------------------------------------

    def action_bounds(self, velocity_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step action bounds ``(n,)``: ``-/+ velocity_scale * velocity * dt`` [rad or m].

        Raises:
            ValueError: unless ``0 < velocity_scale <= 1``.
        """
        if not 0.0 < velocity_scale <= 1.0:
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale!r}")
        hi = self.max_step * float(velocity_scale)
        return -hi, hi

    def encode(self, image: np.ndarray | None, proprio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The latent is ``proprio`` itself, ``(n,)`` float32 [rad or m]; the image is not used.

        Raises:
            ValueError: wrong length or non-finite values.
        """
        z = torch.as_tensor(np.asarray(proprio, dtype=np.float32))
        if z.shape != self.latent_shape or not torch.isfinite(z).all():
            raise ValueError(f"proprio must be {self.latent_shape[0]} finite joint positions, got {z.tolist()}")
        return z

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``z [B, n] + clip(a [B, n], -velocity * dt, velocity * dt)``."""
        return z + torch.maximum(torch.minimum(a, self.max_step), -self.max_step)

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Exact vectorised rollout: ``z0 [n] + cumsum(clip(actions [S, H, n]))`` -> ``[S, H, n]``."""
        steps = torch.maximum(torch.minimum(actions, self.max_step), -self.max_step)
        return z0.view(1, 1, -1) + torch.cumsum(steps, dim=1)

    def make_goal(
        self,
        image: np.ndarray | None = None,
        joint_positions: np.ndarray | Sequence[float] | None = None,
        ee_position: np.ndarray | Sequence[float] | None = None,
    ) -> Goal:
        """A joint-configuration and/or end-effector-position goal (images are not supported).

        Raises:
            ValueError: an image goal, no goal at all, wrong lengths, non-finite values, or an
                end-effector goal without ``fk``.
        """
        if image is not None:
            raise ValueError(
                "KinematicWorldModel cannot encode goal images: give goal joint positions or a goal "
                "end-effector position (a learned world model encodes images)"
            )
        latent = ee = None
        if joint_positions is not None:
            latent = self.encode(None, joint_positions)
        if ee_position is not None:
            if self.fk is None:
                raise ValueError("an end-effector goal needs forward kinematics (fk=None)")
            ee = torch.as_tensor(np.asarray(ee_position, dtype=np.float32))
            if ee.shape != (3,) or not torch.isfinite(ee).all():
                raise ValueError(f"ee_position must be 3 finite values [m], got {ee.tolist()}")
        if latent is None and ee is None:
            raise ValueError("a goal needs joint_positions or ee_position")
        return Goal(latent=latent, ee_position=ee)

    def ee_positions(self, latents: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` joint positions -> ``(..., 3)`` end-effector positions [m], ``base_link``.

        Raises:
            ValueError: if the model has no ``fk``.
        """
        if self.fk is None:
            raise ValueError("no forward kinematics (fk=None)")
        return self.fk.positions(latents)

    def cost(self, latents: torch.Tensor, actions: torch.Tensor, goal: Goal | None) -> torch.Tensor:
        """``latents [S, H, n]``, ``actions [S, H, n]`` -> ``[S]`` (terms in the module docstring)."""
        c = self.cost_config
        total = torch.zeros(latents.shape[0], dtype=latents.dtype)
        if goal is not None and goal.latent is not None and c.goal_weight > 0:
            dist = (latents - goal.latent).norm(dim=-1)  # [S, H]
            total = total + c.goal_weight * (dist[:, -1] + c.running_goal_weight * dist.mean(dim=1))
        if c.action_weight > 0:
            total = total + c.action_weight * actions.pow(2).sum(dim=(1, 2))
        if goal is not None and goal.reference_actions is not None and c.reference_weight > 0:
            total = total + c.reference_weight * (actions - goal.reference_actions).pow(2).sum(dim=(1, 2))
        if c.joint_limit_weight > 0:
            m = self.barrier_margin
            below = torch.relu(m - (latents - self.lower)) / m  # [S, H, n]
            above = torch.relu(m - (self.upper - latents)) / m
            barrier = (below.pow(2) + above.pow(2)) * self.barrier_mask
            total = total + c.joint_limit_weight * barrier.sum(dim=(1, 2))
        need_ee = goal is not None and goal.ee_position is not None and c.ee_goal_weight > 0
        need_cart = c.cartesian_weight > 0 and (c.table_height is not None or self._boxes.shape[0] > 0)
        if self.fk is not None and (need_ee or need_cart):
            ee = self.fk.positions(latents)  # [S, H, 3]
            if need_ee:
                dist = (ee - goal.ee_position).norm(dim=-1)  # [S, H]
                total = total + c.ee_goal_weight * (dist[:, -1] + c.running_goal_weight * dist.mean(dim=1))
            if need_cart:
                total = total + c.cartesian_weight * self._cartesian_penalty(ee)
        return total

    def _cartesian_penalty(self, ee: torch.Tensor) -> torch.Tensor:
        """``ee [S, H, 3]`` -> ``[S]``: sum over steps of the table and keep-out band penalties."""
        c = self.cost_config
        clr = c.cartesian_clearance
        pen = torch.zeros(ee.shape[:2], dtype=ee.dtype)  # [S, H]
        if c.table_height is not None:
            pen = pen + (torch.relu(clr - (ee[..., 2] - c.table_height)) / clr).pow(2)
        for box in self._boxes:
            centre, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2
            d = (ee - centre).abs() - half  # [S, H, 3]
            signed = torch.relu(d).norm(dim=-1) + torch.clamp(d.max(dim=-1).values, max=0.0)  # <0 inside
            pen = pen + (torch.relu(clr - signed) / clr).pow(2)
        return pen.sum(dim=1)


# ------------------------------------------------------------------ joint targets <-> kinematic actions


def targets_to_actions(
    times: np.ndarray,
    positions: np.ndarray,
    q0: np.ndarray,
    dt: float,
    horizon: int,
    start: float = 0.0,
) -> np.ndarray:
    """Joint-target trajectory (System 1's chunk) -> kinematic actions (per-step deltas).

    The trajectory is sampled by linear interpolation at ``start + (k + 1) * dt`` for
    ``k = 0 .. horizon - 1`` (held at its first / last point outside its time span), and the
    actions are the differences between consecutive samples, starting from ``q0``.

    Args:
        times: ``(T,)`` non-decreasing ``time_from_start`` [s].
        positions: ``(T, n)`` joint targets [rad or m] over the same joints as ``q0``.
        q0: ``(n,)`` current joint positions.
        dt: planning step [s], > 0.
        horizon: ``H`` >= 1.
        start: time into the trajectory that corresponds to "now" [s] (e.g. now - header.stamp).

    Returns:
        ``(H, n)`` float32 deltas [rad or m per step].

    Raises:
        ValueError: mismatched shapes, an empty trajectory, or non-positive ``dt`` / ``horizon``.
    """
    t = np.asarray(times, dtype=np.float64)
    p = np.asarray(positions, dtype=np.float64)
    q0 = np.asarray(q0, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or t.shape != (p.shape[0],) or q0.shape != (p.shape[1],):
        raise ValueError(f"times {t.shape} / positions {p.shape} / q0 {q0.shape} do not fit together")
    if not dt > 0 or horizon < 1:
        raise ValueError(f"dt must be > 0 and horizon >= 1, got dt={dt!r}, horizon={horizon!r}")
    tq = start + dt * np.arange(1, horizon + 1)  # [H]
    samples = np.stack([np.interp(tq, t, p[:, j]) for j in range(p.shape[1])], axis=1)  # [H, n]
    return np.diff(np.vstack([q0[None], samples]), axis=0).astype(np.float32)


def actions_to_targets(q0: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``q0 (n,)`` + kinematic actions ``(H, n)`` -> joint targets ``(H, n)`` (cumulative sum;
    no velocity clipping: pass actions already inside the model's bounds)."""
    return np.asarray(q0, dtype=np.float64)[None] + np.cumsum(np.asarray(actions, dtype=np.float64), axis=0)
