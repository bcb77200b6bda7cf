"""Per-joint limits enforced by the safety filter (:class:`vla_mpc.core.safety.SafetyFilter`).

Units (REP 103): positions [rad] (or [m] for prismatic joints), velocities [rad/s], accelerations
[rad/s^2], jerks [rad/s^3]. Arrays are ``(n,)`` float64 over ``joint_names``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SafetyLimits"]


@dataclass(frozen=True, eq=False)
class SafetyLimits:
    """Per-joint limits the filter enforces, over ``joint_names`` (all arrays ``(n,)`` float64).

    Attributes:
        joint_names: the command order (``RobotSpec.joint_names``).
        lower, upper: position limits after the margin [rad or m].
        velocity: [rad/s], acceleration: [rad/s^2], jerk: [rad/s^3]; all > 0 and finite.
        max_joint_step: largest accepted distance of a target from the last output [rad or m].
        margin: the margin applied on each side [rad or m].

    Raises:
        ValueError: (``__post_init__``) on wrong shapes, non-finite values, non-positive
            rates, or ``lower >= upper``; the message names the joint.
    """

    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    max_joint_step: np.ndarray
    margin: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        if n == 0:
            raise ValueError("SafetyLimits: no joints")
        if len(set(self.joint_names)) != n:
            raise ValueError(f"SafetyLimits: duplicate joint names in {list(self.joint_names)}")
        for name in ("lower", "upper", "velocity", "acceleration", "jerk", "max_joint_step", "margin"):
            arr = np.array(getattr(self, name), dtype=np.float64, copy=True).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"SafetyLimits.{name}: expected {n} values, got {arr.size}")
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(arr))]
            if bad:
                raise ValueError(f"SafetyLimits.{name}: not finite for joints {bad}")
            if name not in ("lower", "upper", "margin"):
                bad = [self.joint_names[i] for i in np.flatnonzero(arr <= 0.0)]
                if bad:
                    raise ValueError(f"SafetyLimits.{name}: must be > 0 for joints {bad}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        bad = [self.joint_names[i] for i in np.flatnonzero(self.lower >= self.upper)]
        if bad:
            raise ValueError(f"SafetyLimits: lower >= upper (after margin) for joints {bad}")

    @property
    def n(self) -> int:
        """Number of joints."""
        return len(self.joint_names)

    @classmethod
    def from_spec(cls, spec: Any, position_margin: float | None = None) -> SafetyLimits:
        """Limits from a ``RobotSpec`` (``vla_mpc.core.robot_model``).

        Reads ``spec.joint_names``, ``spec.limits.{lower, upper, velocity, acceleration, jerk}``
        and ``spec.safety`` (``position_margin`` [rad], default 0.0; ``max_joint_step``
        [rad or m], default unlimited, i.e. the joint's range). The margin applies to the arm
        joints (``spec.arm_joint_names``), as ``min(position_margin, 0.1 * (upper - lower))`` so a
        short-range joint keeps 80 % of its range; gripper joints get none, because "open" and
        "closed" are commanded at their end stops by design.

        Args:
            spec: a RobotSpec or any object with those attributes.
            position_margin: overrides ``spec.safety["position_margin"]`` when given.

        Raises:
            ValueError: a negative margin or step, or limits that fail ``__post_init__``.
        """
        names = tuple(spec.joint_names)
        lim = spec.limits
        lower = np.asarray(lim.lower, dtype=np.float64)
        upper = np.asarray(lim.upper, dtype=np.float64)
        safety = dict(getattr(spec, "safety", None) or {})
        m = float(safety.get("position_margin", 0.0) if position_margin is None else position_margin)
        if not math.isfinite(m) or m < 0.0:
            raise ValueError(f"safety.position_margin must be >= 0, got {m!r}")
        arm = set(getattr(spec, "arm_joint_names", names))
        is_arm = np.array([n in arm for n in names], dtype=bool)
        margin = np.where(is_arm, np.minimum(m, 0.1 * (upper - lower)), 0.0)
        step_cfg = safety.get("max_joint_step")
        if step_cfg is None:
            step = upper - lower
        else:
            s = float(step_cfg)
            if not math.isfinite(s) or s <= 0.0:
                raise ValueError(f"safety.max_joint_step must be > 0, got {step_cfg!r}")
            step = np.full(len(names), s)
        return cls(
            joint_names=names,
            lower=lower + margin,
            upper=upper - margin,
            velocity=np.asarray(lim.velocity, dtype=np.float64),
            acceleration=np.asarray(lim.acceleration, dtype=np.float64),
            jerk=np.asarray(lim.jerk, dtype=np.float64),
            max_joint_step=step,
            margin=margin,
        )
