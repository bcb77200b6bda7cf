"""The safety filter: joint commands in -> checked joint commands + a Verdict out. No rclpy.

Every command that reaches the robot controller passes through :meth:`SafetyFilter.filter` (one
output per control period ``dt``) or :meth:`SafetyFilter.hold` / :meth:`SafetyFilter.tick` (when
there is no fresh, valid command). The output sequence is guaranteed to stay inside the position
limits (shrunk by ``safety.position_margin``) and the velocity limits; acceleration and jerk limits
hold whenever they are mutually consistent with those (the filter brakes early enough near the
position limits for that; ``test/test_safety_core.py`` and ``python -m vla_mpc.bench safety`` fuzz
all four), with position > velocity > acceleration > jerk as the order of priority if they ever
conflict.

Rate limiting follows libfranka's ``franka::limitRate`` (``include/franka/rate_limiting.h``,
``src/rate_limiting.cpp``): from the last *commanded* position, velocity and acceleration, the
commanded jerk is clipped to ``[-J, J]``, the resulting acceleration to a "safe" acceleration
``min((J / A) * (V - v), A)`` that lets the acceleration ramp down before the velocity limit, and
the velocity integrated once per period. Two additions make it safe for arbitrary targets:

* the velocity limit is shrunk near the position limits to the speed from which a stop at a
  reduced deceleration (``brake_fraction * A``) ends inside them, with the jerk ramp and one
  period of latency accounted for (the same chain then keeps the acceleration continuous);
* a target that cannot be reached within the limits in one period is approached with the same
  braking-consistent velocity profile instead of libfranka's ``(target - last) / dt``, so a step
  target is reached without overshoot or limit cycles. A target that *is* reachable within every
  limit passes through bit-for-bit (streamed trajectories are not delayed).

Extension point: ``checks`` (see :class:`CommandCheck`) run on each rate-limited candidate before it
is released; Cartesian keep-out volumes and cost budgets plug in there.

Units (REP 103): positions [rad] (or [m] for prismatic joints), velocities [rad/s], accelerations
[rad/s^2], jerks [rad/s^3], times [s]. All arrays are float64 over ``spec.joint_names``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = [
    "SafetyAction",
    "SafetyState",
    "Verdict",
    "SafetyLimits",
    "CommandCheck",
    "SafetyFilter",
    "COMMAND_KEY",
]

#: Key used in :attr:`Verdict.reasons` for reasons that concern the whole command (stamp, timeout).
COMMAND_KEY = "*"


class SafetyAction(enum.Enum):
    """What the filter did with one command (or one timer tick)."""

    PASS = "PASS"  #: forwarded unchanged
    CLAMPED = "CLAMPED"  #: forwarded after limiting one or more joints
    REJECTED = "REJECTED"  #: refused; the output is a hold command
    HOLD = "HOLD"  #: no valid command source (timeout, stale state, internal error): holding
    ESTOP = "ESTOP"  #: e-stop latched: holding until reset()


class SafetyState(enum.Enum):
    """The monitor's state (published on ``/vla_mpc/safety/state``)."""

    INACTIVE = "INACTIVE"  #: deactivated: commands refused, nothing is sent
    ACTIVE = "ACTIVE"  #: commands pass through unchanged
    LIMITING = "LIMITING"  #: commands pass through, limited
    HOLDING = "HOLDING"  #: holding the last safe position (start-up, timeout, rejection)
    ESTOP = "ESTOP"  #: latched e-stop; only reset() leaves it


@dataclass(frozen=True)
class Verdict:
    """The outcome of one filter call.

    Attributes:
        action: what happened to the command.
        reasons: ``{joint_name: "velocity 3.1 rad/s > 2.175"}``; reasons about the whole command
            (stamp, timeout, e-stop) use the key :data:`COMMAND_KEY` (``"*"``). Empty for PASS.
        summary: one short line for logs and diagnostics.
        state: the filter's state after this call.
        kinds: the intervention kinds involved (``"position"``, ``"velocity"``, ``"acceleration"``,
            ``"jerk"``, ``"braking"``, ``"step"``, ``"nonfinite"``, ``"names"``, ``"stamp"``,
            ``"command_timeout"``, ``"stale_joint_state"``, ``"estop"``, ``"check"``,
            ``"inactive"``, ``"error"``); used for counting.
        intervention: True when this call is an intervention worth reporting (a clamp, a rejection,
            or the *start* of a hold / e-stop); False for PASS and for each further tick of an
            ongoing hold.
    """

    action: SafetyAction
    reasons: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    state: SafetyState = SafetyState.HOLDING
    kinds: tuple[str, ...] = ()
    intervention: bool = False


_PASS = Verdict(action=SafetyAction.PASS, summary="PASS", state=SafetyState.ACTIVE)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


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


class CommandCheck(Protocol):
    """An extra rule run on each rate-limited candidate command before it is released.

    ``__call__(command)`` gets the candidate ``(n,)`` float64 over ``joint_names`` and returns
    ``{joint_or_"*": reason}``; a non-empty result makes the filter hold instead (REJECTED, kind
    ``"check"``). Cartesian keep-out volumes (forward kinematics) and cost budgets implement this.
    """

    def __call__(self, command: np.ndarray) -> Mapping[str, str]: ...


class SafetyFilter:
    """Checks and limits joint position commands, one control period ``dt`` per output.

    The filter owns the last commanded position, velocity and acceleration (``(n,)`` float64) and
    a :class:`SafetyState`. It reads no clock: every time is passed in (``stamp_s``, ``now_s``),
    so it runs the same on wall time, sim time and in tests.

    Args:
        limits: the limits to enforce.
        dt: control period [s] (> 0): the time one output step represents. Velocities,
            accelerations and jerks of the output sequence are finite differences over ``dt``.
        jump_action: ``"clamp"`` (move at most ``max_joint_step`` toward a far target) or
            ``"reject"`` (hold) for targets farther than ``max_joint_step`` from the last output.
        command_timeout_s: hold when no command was accepted for this long [s].
        joint_state_timeout_s: hold (and reject commands) when joint states are older [s].
        brake_fraction: fraction of the acceleration limit planned for braking near position
            limits and step targets (0 < f <= 1); the rest is headroom for the jerk ramp.
        checks: extra :class:`CommandCheck` rules.

    Raises:
        ValueError: on a non-positive or non-finite ``dt``/timeout, an unknown ``jump_action`` or
            ``brake_fraction`` outside (0, 1].
    """

    def __init__(
        self,
        limits: SafetyLimits,
        dt: float,
        *,
        jump_action: str = "clamp",
        command_timeout_s: float = 0.2,
        joint_state_timeout_s: float = 0.2,
        brake_fraction: float = 0.5,
        checks: Sequence[CommandCheck] = (),
    ) -> None:
        for name, val in (
            ("dt", dt),
            ("command_timeout_s", command_timeout_s),
            ("joint_state_timeout_s", joint_state_timeout_s),
        ):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0.0):
                raise ValueError(f"SafetyFilter: {name} must be a finite number > 0, got {val!r}")
        if jump_action not in ("clamp", "reject"):
            raise ValueError(f"SafetyFilter: jump_action must be 'clamp' or 'reject', got {jump_action!r}")
        if not (0.0 < brake_fraction <= 1.0):
            raise ValueError(f"SafetyFilter: brake_fraction must be in (0, 1], got {brake_fraction!r}")
        self.limits = limits
        self.dt = float(dt)
        self.jump_action = jump_action
        self.command_timeout_s = float(command_timeout_s)
        self.joint_state_timeout_s = float(joint_state_timeout_s)
        self.brake_fraction = float(brake_fraction)
        self.checks = tuple(checks)
        self.joint_names = limits.joint_names
        n = limits.n
        self._n = n
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        # Constants of the rate limiter (per joint).
        h = self.dt
        self._h = h
        self._inv_h = 1.0 / h
        self._V = limits.velocity
        self._A = limits.acceleration
        self._dA = limits.jerk * h  # largest acceleration change per period [rad/s^2]
        # libfranka's safe-acceleration gain J/A; once J*dt >= A the per-period bound is tighter.
        self._k = np.minimum(limits.jerk / limits.acceleration, self._inv_h)
        self._Ab = brake_fraction * limits.acceleration
        # Braking latency: the jerk ramp to full deceleration plus two periods (one to react, one
        # for the step that is being computed).
        self._c = limits.acceleration / limits.jerk + 2.0 * h
        self._c2 = self._c * self._c
        self._two_inv_Ab = 2.0 / self._Ab
        self._max_step = limits.max_joint_step
        self._buf_step = np.zeros(n)
        self._buf_v = np.zeros(n)
        self._buf_caps = np.zeros((2, n))
        self._sgn = np.array([[1.0], [-1.0]])
        self._sb = np.stack([limits.upper, -limits.lower])
        # Distance beyond which the braking speed exceeds V (the cap is then V itself) [rad].
        self._far = limits.velocity**2 / (2.0 * brake_fraction * limits.acceleration) + (
            limits.acceleration / limits.jerk + 2.0 * dt) * limits.velocity
        # State.
        self._outside = False
        self._p = np.zeros(n)
        self._v = np.zeros(n)
        self._a = np.zeros(n)
        self._seeded = False
        self._state = SafetyState.HOLDING
        self._last_stamp = -math.inf
        self._last_target: np.ndarray | None = None
        self._last_command_time: float | None = None
        self._last_joint_state_time: float | None = None
        self._estop_reason = ""
        self._hold_reason = "no command yet"
        self._names_cache: tuple[tuple[str, ...], np.ndarray | None] = ((), None)
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ construction, properties

    @classmethod
    def from_spec(cls, spec: Any, dt: float, **kwargs: Any) -> SafetyFilter:
        """``SafetyFilter(SafetyLimits.from_spec(spec), dt, **kwargs)``; ``jump_action`` defaults
        to ``spec.safety.get("jump_action", "clamp")``."""
        kwargs.setdefault("jump_action", (getattr(spec, "safety", None) or {}).get("jump_action", "clamp"))
        return cls(SafetyLimits.from_spec(spec), dt, **kwargs)

    @property
    def state(self) -> SafetyState:
        """The current :class:`SafetyState`."""
        return self._state

    @property
    def seeded(self) -> bool:
        """True once the filter knows a position to hold (from a joint state or reset)."""
        return self._seeded

    @property
    def last_command(self) -> np.ndarray:
        """Copy of the last output ``(n,)`` float64 (zeros before the first)."""
        return self._p.copy()

    @property
    def last_velocity(self) -> np.ndarray:
        """Copy of the last output's velocity ``(n,)`` [rad/s] (finite difference over dt)."""
        return self._v.copy()

    # ------------------------------------------------------------------------------- inputs

    def observe_joint_state(self, positions: np.ndarray | None, t_s: float) -> None:
        """Record that a joint state arrived at ``t_s`` [s] (the caller's clock).

        ``positions`` ``(n,)`` over ``joint_names`` seeds the hold position the first time (and
        after :meth:`reset`); a non-finite or mis-shaped array is ignored for seeding.
        """
        self._last_joint_state_time = float(t_s)
        if not self._seeded and positions is not None:
            self._seed(positions)

    def _seed(self, q: np.ndarray | None) -> bool:
        if q is None:
            return False
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self._n,) or not np.all(np.isfinite(q)):
            return False
        self._p[:] = q
        self._v[:] = 0.0
        self._a[:] = 0.0
        self._outside = bool(((q < self.limits.lower) | (q > self.limits.upper)).any())
        self._seeded = True
        return True

    # ------------------------------------------------------------------------------ commands

    def filter(
        self,
        names: Sequence[str],
        positions: Sequence[float] | np.ndarray,
        stamp_s: float,
        measured_q: np.ndarray | None = None,
        now_s: float | None = None,
    ) -> tuple[np.ndarray | None, Verdict]:
        """Check one position command and return the command to send.

        Args:
            names: joint names of ``positions`` (any order; every joint of ``joint_names`` once).
            positions: target positions ``(m,)`` [rad or m] in the order of ``names``.
            stamp_s: the command's time stamp [s]; must not decrease; an equal stamp with the same target
                is a duplicate and rejected.
            measured_q: measured positions ``(n,)`` over ``joint_names``; seeds the filter if it
                has no position yet (otherwise the last command is the reference, as in
                libfranka).
            now_s: arrival time on the caller's clock [s] (default ``stamp_s``); it restarts the
                command timeout and is compared with the last :meth:`observe_joint_state` time.

        Returns:
            ``(command, verdict)``: ``command`` ``(n,)`` float64 over ``joint_names`` (a new
            array), or ``None`` when the filter has never had a position to hold. Invalid
            commands give a hold command and REJECTED; an internal error gives HOLD (fails
            closed). Never raises for bad input.
        """
        try:
            return self._filter(names, positions, stamp_s, measured_q, stamp_s if now_s is None else now_s)
        except Exception as exc:  # noqa: BLE001 - fail closed: any internal error holds
            return self._fail_closed(exc)

    def _filter(
        self,
        names: Sequence[str],
        positions: Sequence[float] | np.ndarray,
        stamp_s: float,
        measured_q: np.ndarray | None,
        now_s: float,
    ) -> tuple[np.ndarray | None, Verdict]:
        if self._state is SafetyState.ESTOP:
            return self._hold_output(SafetyAction.ESTOP, {COMMAND_KEY: f"e-stop latched: {self._estop_reason}"},
                                     ("estop",), intervention=False)
        if self._state is SafetyState.INACTIVE:
            return None, self._verdict(SafetyAction.REJECTED, {COMMAND_KEY: "safety filter inactive"},
                                       ("inactive",), True)
        if not self._seeded and not self._seed(measured_q):
            return None, self._verdict(SafetyAction.REJECTED, {COMMAND_KEY: "no joint state yet"},
                                       ("stale_joint_state",), True)
        # Joint-state freshness (the caller reports arrivals through observe_joint_state).
        js_t = self._last_joint_state_time
        if js_t is not None and now_s - js_t > self.joint_state_timeout_s:
            return self._reject({COMMAND_KEY: f"joint states stale: {_fmt(now_s - js_t)} s > "
                                              f"{_fmt(self.joint_state_timeout_s)}"}, ("stale_joint_state",))
        # Stamp order.
        stamp = float(stamp_s)
        if not math.isfinite(stamp):
            return self._reject({COMMAND_KEY: f"stamp {stamp_s!r} is not finite"}, ("stamp",))
        if stamp < self._last_stamp:
            return self._reject({COMMAND_KEY: f"stamp {stamp:.6f} s goes backwards from {self._last_stamp:.6f} s"},
                                ("stamp",))
        # Names -> target over joint_names.
        x, name_reasons = self._map_names(names, positions)
        if x is None:
            return self._reject(name_reasons, ("names",))
        # An equal stamp is a duplicate only if the target repeats too: under use_sim_time the ROS
        # clock advances in /clock ticks, so two distinct commands can share one stamp.
        if stamp == self._last_stamp and self._last_target is not None and np.array_equal(x, self._last_target):
            return self._reject({COMMAND_KEY: f"duplicate command (stamp {stamp:.6f} s, same target)"}, ("stamp",))
        self._last_target = x.copy()
        # Non-finite targets and absurd jumps; one comparison covers both on the fast path (NaN
        # compares False).
        reasons: dict[str, str] = {}
        kinds: list[str] = []
        step = np.subtract(x, self._p, out=self._buf_step)
        if not (np.abs(step) <= self._max_step).all():
            bad = ~np.isfinite(x)
            if bad.any():
                return self._reject({self.joint_names[i]: f"target {x[i]!r} is not finite"
                                     for i in np.flatnonzero(bad)}, ("nonfinite",))
            far = np.abs(step) > self._max_step
            jump_reasons = {
                self.joint_names[i]: f"step {_fmt(step[i])} > max_joint_step {_fmt(self._max_step[i])}"
                for i in np.flatnonzero(far)
            }
            if self.jump_action == "reject":
                return self._reject(jump_reasons, ("step",))
            x = self._p + np.minimum(np.maximum(step, -self._max_step), self._max_step)
            reasons.update(jump_reasons)
            kinds.append("step")
        # Rate limiting (libfranka limitRate) + braking-aware position limits.
        out, limited = self._step(x, reasons, kinds)
        if self.checks:
            check_reasons: dict[str, str] = {}
            for check in self.checks:
                check_reasons.update(check(out))
            if check_reasons:
                return self._reject(check_reasons, ("check",))
        self._commit(out)
        self._last_stamp = stamp
        self._last_command_time = float(now_s)
        if limited or reasons:
            self._state = SafetyState.LIMITING
            return out.copy(), self._verdict(SafetyAction.CLAMPED, reasons, tuple(dict.fromkeys(kinds)), True)
        self._state = SafetyState.ACTIVE
        return out.copy(), _PASS

    def _map_names(self, names: Sequence[str], positions: Any) -> tuple[np.ndarray | None, dict[str, str]]:
        names_t = names if isinstance(names, tuple) else tuple(names)
        try:
            pos = np.asarray(positions, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            return None, {COMMAND_KEY: f"positions are not numbers: {exc}"}
        if pos.size != len(names_t):
            return None, {COMMAND_KEY: f"{pos.size} positions for {len(names_t)} names"}
        if names_t == self.joint_names:
            return pos, {}  # never written to: every later result is a new array
        cached_names, perm = self._names_cache
        if names_t == cached_names and perm is not None:
            return pos[perm], {}
        reasons: dict[str, str] = {}
        seen: set[str] = set()
        for n in names_t:
            if n in seen:
                reasons[n] = "duplicate joint name"
            elif n not in self._index:
                reasons[n] = "unknown joint"
            seen.add(n)
        for n in self.joint_names:
            if n not in seen:
                reasons[n] = "missing from command"
        if reasons:
            return None, reasons
        src = {n: i for i, n in enumerate(names_t)}
        perm = np.array([src[n] for n in self.joint_names], dtype=np.intp)
        self._names_cache = (names_t, perm)
        return pos[perm], {}

    def _step(self, x: np.ndarray, reasons: dict[str, str], kinds: list[str]) -> tuple[np.ndarray, bool]:
        """One rate-limited period toward target ``x`` (n,) float64.

        Returns ``(output (n,), limited)``; ``limited`` is False when ``x`` is reachable within
        every limit this period (then the output is ``x`` exactly). Appends a reason per limited
        joint to ``reasons`` and its kind to ``kinds``.
        """
        p, v, a, h, inv_h = self._p, self._v, self._a, self._h, self._inv_h
        k, A, sgn = self._k, self._A, self._sgn
        if self._outside:
            # A joint seeded outside the limits may only move back inside: relax its bound to the
            # current position.
            lo = np.minimum(self.limits.lower, p)
            hi = np.maximum(self.limits.upper, p)
        else:
            lo, hi = self.limits.lower, self.limits.upper
        # Everything below is stacked (2, n): row 0 looks toward the upper bound, row 1 toward the
        # lower bound with signs flipped, so each quantity is one numpy call.
        # Braking-aware speed limit toward each position bound (rad/s, >= 0).
        caps = self._buf_caps
        np.subtract(hi, p, out=caps[0])
        np.subtract(p, lo, out=caps[1])
        if (caps >= self._far).all():
            caps[:] = self._V  # far from both bounds: the plain velocity limit binds
        else:
            self._brake_speed(caps, out=caps)
            np.minimum(caps, self._V, out=caps)
        # Largest acceleration toward each bound this period: libfranka's safe-acceleration chain
        # k (cap - v) (which also implies the hard velocity bound, as |v| <= V), jerk and
        # acceleration limits.
        sv = sgn * v
        sa = sgn * a
        bound = np.minimum(k * (caps - sv), np.minimum(sa + self._dA, A))
        # The acceleration that lands exactly on the target this period.
        e = x - p
        a_req = (e * inv_h - v) * inv_h
        direct = ((sgn * a_req <= bound) & (sgn * x <= self._sgn_bounds(lo, hi))).all(axis=0)
        if direct.all():
            return x, False
        # Joints that cannot reach the target this period approach it (clipped into the bounds)
        # on a braking-consistent velocity profile (no overshoot, no limit cycle) and are then
        # limited in priority order: velocity/position chain, then jerk and acceleration, then
        # the hard velocity limit, then the hard position limit.
        V = self._V
        e = np.minimum(np.maximum(x, lo), hi) - p
        v_des = np.sign(e) * np.minimum(np.abs(e) * inv_h, self._brake_speed(np.abs(e)))
        a_cmd = np.where(direct, a_req, (v_des - v) * inv_h)
        a_cmd = np.minimum(np.maximum(a_cmd, -k * (caps[1] + v)), k * (caps[0] - v))
        a_cmd = np.minimum(np.maximum(a_cmd, np.maximum(a - self._dA, -A)), np.minimum(a + self._dA, A))
        a_cmd = np.minimum(np.maximum(a_cmd, (-V - v) * inv_h), (V - v) * inv_h)
        out = np.minimum(np.maximum(p + (v + a_cmd * h) * h, lo), hi)
        out[direct] = x[direct]
        for i in np.flatnonzero(~direct):
            name = self.joint_names[i]
            kind, why = self._explain(i, x[i], lo[i], hi[i], caps[0, i], caps[1, i])
            reasons[name] = f"{reasons[name]}; {why}" if name in reasons else why
            kinds.append(kind)
        return out, True

    def _sgn_bounds(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """(2, n): ``[hi, -lo]``, the position bounds in the stacked sign convention."""
        if lo is self.limits.lower:
            return self._sb
        return np.stack([hi, -lo])

    def _brake_speed(self, d: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Largest speed [rad/s] from which braking at ``Ab = brake_fraction * A`` after a delay
        ``c = A / J + 2 dt`` (jerk ramp and latency) stops within distance ``d`` >= 0 [rad]:
        the root of ``v^2 / (2 Ab) + c v = d``, i.e. ``Ab (sqrt(c^2 + 2 d / Ab) - c)``.
        ``d`` is ``(n,)`` or ``(2, n)``; ``out`` may alias ``d``."""
        r = np.maximum(d, 0.0, out=out)
        r *= self._two_inv_Ab
        r += self._c2
        np.sqrt(r, out=r)
        r -= self._c
        r *= self._Ab
        return r

    def _explain(self, i: int, x: float, lo: float, hi: float, v_hi: float, v_lo: float) -> tuple[str, str]:
        """Name the first limit (position, velocity, acceleration, jerk) the raw target breaks."""
        h = self._h
        if x > hi:
            return "position", f"position {_fmt(x)} > {_fmt(hi)} (upper limit - margin)"
        if x < lo:
            return "position", f"position {_fmt(x)} < {_fmt(lo)} (lower limit + margin)"
        v_req = (x - self._p[i]) / h
        if abs(v_req) > self._V[i]:
            return "velocity", f"velocity {_fmt(v_req)} rad/s > {_fmt(self._V[i])}"
        a_req = (v_req - self._v[i]) / h
        if abs(a_req) > self._A[i]:
            return "acceleration", f"acceleration {_fmt(a_req)} rad/s^2 > {_fmt(self._A[i])}"
        j_req = (a_req - self._a[i]) / h
        if abs(j_req) > self._dA[i] / h:
            return "jerk", f"jerk {_fmt(j_req)} rad/s^3 > {_fmt(self._dA[i] / h)}"
        cap = v_hi if v_req > 0 else v_lo
        return "braking", f"velocity {_fmt(v_req)} rad/s too fast to stop before the position limit (<= {_fmt(cap)})"

    def _commit(self, out: np.ndarray) -> None:
        """Make ``out`` the last command; velocity and acceleration are its finite differences."""
        inv_h, v_new = self._inv_h, self._buf_v
        np.subtract(out, self._p, out=v_new)
        v_new *= inv_h
        np.subtract(v_new, self._v, out=self._a)
        self._a *= inv_h
        self._v[:] = v_new
        self._p[:] = out
        if self._outside:
            self._outside = bool(((out < self.limits.lower) | (out > self.limits.upper)).any())

    # ---------------------------------------------------------------------------------- hold

    def hold(self, measured_q: np.ndarray | None = None, reason: str = "hold requested") -> tuple[np.ndarray | None, Verdict]:
        """Stop at the last safe position: one period decelerating within the limits.

        The first call after motion brakes (jerk, acceleration and position limits respected);
        once stopped, the command stays constant. With no position yet, ``measured_q`` ``(n,)``
        seeds it. Enters HOLDING (an e-stop stays ESTOP).

        Returns:
            ``(command, verdict)``: command ``(n,)`` float64 or ``None`` if there is no position to
            hold yet; verdict HOLD (ESTOP while latched).
        """
        try:
            if not self._seeded and not self._seed(measured_q):
                return None, self._verdict(SafetyAction.HOLD, {COMMAND_KEY: "no joint state yet"},
                                           ("stale_joint_state",), False)
            if self._state is SafetyState.ESTOP:
                return self._hold_output(SafetyAction.ESTOP, {COMMAND_KEY: f"e-stop latched: {self._estop_reason}"},
                                         ("estop",), intervention=False)
            return self._hold_output(SafetyAction.HOLD, {COMMAND_KEY: reason}, ("hold",),
                                     intervention=self._state is not SafetyState.HOLDING)
        except Exception as exc:  # noqa: BLE001 - fail closed
            return self._fail_closed(exc)

    def _reject(self, reasons: dict[str, str], kinds: tuple[str, ...]) -> tuple[np.ndarray | None, Verdict]:
        return self._hold_output(SafetyAction.REJECTED, reasons, kinds, intervention=True)

    def _hold_output(self, action: SafetyAction, reasons: dict[str, str], kinds: tuple[str, ...],
                     intervention: bool) -> tuple[np.ndarray | None, Verdict]:
        if not self._seeded:
            return None, self._verdict(action, reasons, kinds, intervention)
        if self._state is not SafetyState.ESTOP and self._state is not SafetyState.INACTIVE:
            self._state = SafetyState.HOLDING
        self._hold_reason = next(iter(reasons.values()), "")
        out, _ = self._step(self._p.copy(), {}, [])
        self._commit(out)
        return out.copy(), self._verdict(action, reasons, kinds, intervention)

    def _fail_closed(self, exc: BaseException) -> tuple[np.ndarray | None, Verdict]:
        if self._state is not SafetyState.ESTOP:
            self._state = SafetyState.HOLDING
        reasons = {COMMAND_KEY: f"internal error, holding: {type(exc).__name__}: {exc}"}
        try:
            if self._seeded:
                out, _ = self._step(self._p.copy(), {}, [])
                self._commit(out)
                return out.copy(), self._verdict(SafetyAction.HOLD, reasons, ("error",), True)
        except Exception:  # noqa: BLE001 - the state itself is broken: repeat the last output
            pass
        out = self._p.copy() if self._seeded and np.all(np.isfinite(self._p)) else None
        if out is not None:
            self._v[:] = 0.0
            self._a[:] = 0.0
        return out, self._verdict(SafetyAction.HOLD, reasons, ("error",), True)

    # ------------------------------------------------------------------------ timer, e-stop

    def tick(self, now_s: float, measured_q: np.ndarray | None = None) -> tuple[np.ndarray | None, Verdict] | None:
        """Timer callback logic: apply the command and joint-state timeouts at time ``now_s`` [s].

        Returns:
            ``None`` while commands are flowing (nothing to send), else ``(hold command, verdict)``:
            ESTOP while latched; HOLD when joint states are older than ``joint_state_timeout_s``,
            when no command was accepted for ``command_timeout_s``, or while HOLDING. The command
            is ``None`` if there is no position to hold yet.
        """
        try:
            if self._state is SafetyState.INACTIVE:
                return None
            if self._state is SafetyState.ESTOP:
                return self.hold(measured_q)
            js_t = self._last_joint_state_time
            if js_t is None or now_s - js_t > self.joint_state_timeout_s:
                age = "never received" if js_t is None else f"{_fmt(now_s - js_t)} s > {_fmt(self.joint_state_timeout_s)}"
                return self._timeout_hold(f"joint states stale: {age}", "stale_joint_state", measured_q)
            cmd_t = self._last_command_time
            if cmd_t is None or now_s - cmd_t > self.command_timeout_s:
                if self._state is SafetyState.HOLDING:
                    return self._timeout_hold(self._hold_reason or "no command", "command_timeout", measured_q)
                return self._timeout_hold(
                    f"command timeout: {_fmt(now_s - cmd_t)} s > {_fmt(self.command_timeout_s)}",
                    "command_timeout", measured_q)
            if self._state is SafetyState.HOLDING:
                return self.hold(measured_q, self._hold_reason)
            return None
        except Exception as exc:  # noqa: BLE001 - fail closed
            return self._fail_closed(exc)

    def _timeout_hold(self, reason: str, kind: str, measured_q: np.ndarray | None) -> tuple[np.ndarray | None, Verdict]:
        intervention = self._state is not SafetyState.HOLDING
        cmd, v = self.hold(measured_q, reason)
        if v.action is SafetyAction.HOLD:
            v = self._verdict(SafetyAction.HOLD, {COMMAND_KEY: reason}, (kind,), intervention and cmd is not None)
        return cmd, v

    def estop(self, reason: str = "e-stop requested") -> Verdict:
        """Latch the e-stop: every later call holds (decelerating) until :meth:`reset`."""
        first = self._state is not SafetyState.ESTOP
        if first:
            self._estop_reason = reason
        self._state = SafetyState.ESTOP
        return self._verdict(SafetyAction.ESTOP, {COMMAND_KEY: reason}, ("estop",), first)

    def reset(self, measured_q: np.ndarray | None = None) -> Verdict:
        """Clear the e-stop and any hold: back to HOLDING until the next valid command.

        ``measured_q`` ``(n,)`` (finite) re-seeds the reference position at rest, so motion resumes
        from where the robot is; without it the last output (and its velocity) is kept. The stamp
        order is forgotten.
        """
        self._state = SafetyState.HOLDING
        self._estop_reason = ""
        self._hold_reason = "reset: waiting for a command"
        self._last_stamp = -math.inf
        self._last_target: np.ndarray | None = None
        self._last_command_time = None
        if measured_q is not None:
            was_seeded = self._seeded
            self._seeded = False
            if not self._seed(measured_q):
                self._seeded = was_seeded
        return self._verdict(SafetyAction.HOLD, {COMMAND_KEY: "reset"}, ("reset",), False)

    def deactivate(self) -> None:
        """Enter INACTIVE: commands are refused and nothing is sent (lifecycle "inactive")."""
        if self._state is not SafetyState.ESTOP:
            self._state = SafetyState.INACTIVE

    def activate(self) -> None:
        """Leave INACTIVE for HOLDING (waiting for a command)."""
        if self._state is SafetyState.INACTIVE:
            self._state = SafetyState.HOLDING

    # ------------------------------------------------------------------------------ verdicts

    def _verdict(self, action: SafetyAction, reasons: Mapping[str, str], kinds: tuple[str, ...],
                 intervention: bool) -> Verdict:
        if intervention:
            for kind in kinds or (action.value.lower(),):
                self.counts[kind] = self.counts.get(kind, 0) + 1
        if reasons:
            items = list(reasons.items())
            summary = "; ".join(f"{j}: {r}" if j != COMMAND_KEY else r for j, r in items[:3])
            if len(items) > 3:
                summary += f" (+{len(items) - 3} more)"
            summary = f"{action.value}: {summary}"
        else:
            summary = action.value
        return Verdict(action=action, reasons=dict(reasons), summary=summary, state=self._state,
                       kinds=kinds, intervention=intervention)
