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

Further rules, in this order after the rate limiter:

* Cartesian constraints (:mod:`vla_mpc.core.safety_cartesian`: table plane, keep-out boxes,
  workspace box, self-collision capsules). The candidate is accepted when the configuration where
  the robot would come to rest if it braked right after it (per joint ``v^2 / (2 brake_fraction A)
  + (A / J + 2 dt) |v|`` further, inside the position limits) keeps every distance >= clearance, or
  at least does not bring any violated constraint closer than the current rest configuration does
  (so a robot that starts inside a constraint can leave it). Otherwise the filter brakes (the hold
  step: all joints decelerate within their limits) instead of clipping the position, which would
  make velocity steps. FK runs only when a Lipschitz bound cannot prove the rest configuration free.
* ``checks`` (:class:`CommandCheck`): extra rules; a non-empty answer holds (REJECTED).
* Cost (:mod:`vla_mpc.core.safety_cost`): each output step costs 1 when its interventions include a
  cost kind (default: position limit, Cartesian constraint) or the measured state penetrates a
  Cartesian constraint ("contact"); past the episode budget the filter slows, holds or stops.

Timing. Each output is one period ``dt`` of motion, so commands must not be released faster than
``1 / dt`` on average: any interval of ``rate_window`` periods may hold at most ``rate_window + 1``
released commands (a sliding window over the last release times). A command that would exceed it
is *deferred* (``SafetyAction.DEFERRED``, nothing to send now); the newest deferred command is
released by :meth:`tick` once the window allows (:meth:`release_delay_s` says when). A periodic
stream at ``1 / dt`` passes without delay whatever its phase and jitter (up to one period), and a
window forgets, so one late burst from the source does not delay the stream after it; a faster
stream is thinned to ``(rate_window + 1) / rate_window`` times ``1 / dt`` (newest command wins).
Holds are never deferred and do not count.

Re-sync. When the measured position departs from the last output by more than
``resync_tolerance`` (e.g. the simulator was reset to home between episodes, or the robot was
moved by hand while the controller was off), the filter restarts from the measured position at
rest (HOLDING, kind ``"resync"``; the e-stop stays latched if it was) instead of latching an
e-stop or dragging the robot back; targets farther than ``max_joint_step`` from it are then
refused (not clamped) until the command source has re-synced too. :meth:`begin_episode` lowers
the tolerance to ``episode_resync_tolerance`` for ``episode_resync_window_s`` for measured
*teleports* (the measured state itself steps by more than that between two samples), so that
even a small reset jump re-syncs while an ordinary tracking lag never does.

Units (REP 103): positions [rad] (or [m] for prismatic joints), velocities [rad/s], accelerations
[rad/s^2], jerks [rad/s^3], times [s], distances [m] in ``base_link``. Commands and outputs are
``(n,)`` float64 over ``spec.joint_names``; internally the filter keeps plain Python floats (for
7-30 joints a per-joint loop costs less than numpy's per-call overhead).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vla_mpc.core.safety_cost import CostConfig, CostTracker
from vla_mpc.core.safety_limits import SafetyLimits

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
    CLAMPED = "CLAMPED"  #: forwarded after limiting one or more joints (or braking for a constraint)
    REJECTED = "REJECTED"  #: refused; the output is a hold command
    DEFERRED = "DEFERRED"  #: valid but faster than 1 / dt: kept, released by tick() (nothing sent now)
    HOLD = "HOLD"  #: no valid command source (timeout, stale state, re-sync, internal error): holding
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
            (stamp, timeout, e-stop) use the key :data:`COMMAND_KEY` (``"*"``), Cartesian ones the
            constraint's name (``"table:hand"``). Empty for PASS.
        summary: one short line for logs and diagnostics.
        state: the filter's state after this call.
        kinds: the intervention kinds involved (``"position"``, ``"velocity"``, ``"acceleration"``,
            ``"jerk"``, ``"braking"``, ``"step"``, ``"nonfinite"``, ``"names"``, ``"stamp"``,
            ``"command_timeout"``, ``"stale_joint_state"``, ``"estop"``, ``"check"``,
            ``"cartesian"``, ``"cost_budget"``, ``"rate"``, ``"resync"``, ``"inactive"``,
            ``"error"``); used for counting.
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

#: Targets at most this far beyond a position bound [rad or m] are clipped to it without an
#: intervention (interpolation noise at end stops); farther ones are position interventions.
POSITION_TOLERANCE = 1e-6


def _fmt(x: float) -> str:
    return f"{x:.4g}"


class CommandCheck(Protocol):
    """An extra rule run on each rate-limited candidate command before it is released.

    ``__call__(command)`` gets the candidate ``(n,)`` float64 over ``joint_names`` and returns
    ``{joint_or_"*": reason}``; a non-empty result makes the filter hold instead (REJECTED, kind
    ``"check"``). Cartesian keep-out volumes (forward kinematics) and cost budgets implement this.
    """

    def __call__(self, command: np.ndarray) -> Mapping[str, str]: ...


class SafetyFilter:
    """Checks and limits joint position commands, one control period ``dt`` per output.

    The filter owns the last commanded position, velocity and acceleration and a
    :class:`SafetyState`. It reads no clock: every time is passed in (``stamp_s``, ``now_s``), so
    it runs the same on wall time, sim time and in tests.

    Args:
        limits: the limits to enforce.
        dt: control period [s] (> 0): the time one output step represents. Velocities,
            accelerations and jerks of the output sequence are finite differences over ``dt``.
        jump_action: ``"clamp"`` (move at most ``max_joint_step`` toward a far target) or
            ``"reject"`` (hold) for targets farther than ``max_joint_step`` from the last output.
        command_timeout_s: hold when no command was accepted for this long [s].
        joint_state_timeout_s: hold (and reject commands) when joint states are older [s].
        brake_fraction: fraction of the acceleration limit planned for braking near position
            limits, step targets and Cartesian constraints (0 < f <= 1); the rest is headroom for
            the jerk ramp.
        checks: extra :class:`CommandCheck` rules.
        cartesian: a :class:`vla_mpc.core.safety_cartesian.CartesianConstraints` or None.
        cost: the :class:`CostConfig` (default: no budget; the cost is still counted).
        rate_window: the command rate window [periods] (>= 1; see the module docstring).
        resync_tolerance: measured-vs-output distance that triggers a re-sync [rad or m] (> 0).
        episode_resync_tolerance: the same during ``episode_resync_window_s`` [s] after
            :meth:`begin_episode`.

    Raises:
        ValueError: on a non-positive or non-finite ``dt``/timeout/tolerance, an unknown
            ``jump_action``, ``brake_fraction`` outside (0, 1] or ``rate_window`` < 1.
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
        cartesian: Any | None = None,
        cost: CostConfig | None = None,
        rate_window: int = 10,
        resync_tolerance: float = 0.5,
        episode_resync_tolerance: float = 0.05,
        episode_resync_window_s: float = 10.0,
    ) -> None:
        for name, val in (
            ("dt", dt),
            ("command_timeout_s", command_timeout_s),
            ("joint_state_timeout_s", joint_state_timeout_s),
            ("resync_tolerance", resync_tolerance),
            ("episode_resync_tolerance", episode_resync_tolerance),
            ("episode_resync_window_s", episode_resync_window_s),
        ):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0.0):
                raise ValueError(f"SafetyFilter: {name} must be a finite number > 0, got {val!r}")
        if jump_action not in ("clamp", "reject"):
            raise ValueError(f"SafetyFilter: jump_action must be 'clamp' or 'reject', got {jump_action!r}")
        if not (0.0 < brake_fraction <= 1.0):
            raise ValueError(f"SafetyFilter: brake_fraction must be in (0, 1], got {brake_fraction!r}")
        if not (isinstance(rate_window, int) and rate_window >= 1):
            raise ValueError(f"SafetyFilter: rate_window must be an int >= 1, got {rate_window!r}")
        self.limits = limits
        self.dt = float(dt)
        self.jump_action = jump_action
        self.command_timeout_s = float(command_timeout_s)
        self.joint_state_timeout_s = float(joint_state_timeout_s)
        self.brake_fraction = float(brake_fraction)
        self.checks = tuple(checks)
        self.cartesian = cartesian
        self.cost = CostTracker(cost or CostConfig())
        self.rate_window = int(rate_window)
        self.resync_tolerance = float(resync_tolerance)
        self.episode_resync_tolerance = float(episode_resync_tolerance)
        self.episode_resync_window_s = float(episode_resync_window_s)
        self.joint_names = limits.joint_names
        n = limits.n
        self._n = n
        self._range = range(n)
        self._index = {name: i for i, name in enumerate(self.joint_names)}
        # Constants of the rate limiter, per joint, as Python floats.
        h = self.dt
        self._h = h
        self._inv_h = 1.0 / h
        fl = lambda arr: [float(x) for x in arr]  # noqa: E731
        self._lo = fl(limits.lower)
        self._hi = fl(limits.upper)
        self._V = fl(limits.velocity)
        self._A = fl(limits.acceleration)
        self._dA = fl(limits.jerk * h)  # largest acceleration change per period [rad/s^2]
        # libfranka's safe-acceleration gain J/A; once J*dt >= A the per-period bound is tighter.
        self._k = fl(np.minimum(limits.jerk / limits.acceleration, self._inv_h))
        self._Ab = fl(brake_fraction * limits.acceleration)
        # Braking latency: the jerk ramp to full deceleration plus two periods (one to react, one
        # for the step that is being computed).
        c = limits.acceleration / limits.jerk + 2.0 * h
        self._c = fl(c)
        self._c2 = fl(c * c)
        self._two_inv_Ab = fl(2.0 / (brake_fraction * limits.acceleration))
        self._half_inv_Ab = fl(0.5 / (brake_fraction * limits.acceleration))
        self._max_step = fl(limits.max_joint_step)
        # Distance beyond which the braking speed exceeds V (the cap is then V itself) [rad].
        self._far = fl(limits.velocity**2 / (2.0 * brake_fraction * limits.acceleration) + c * limits.velocity)
        self._vscale = 1.0  # velocity cap factor (cost reaction "slow")
        # State.
        self._outside = False
        self._p = [0.0] * n
        self._v = [0.0] * n
        self._a = [0.0] * n
        self._seeded = False
        self._state = SafetyState.HOLDING
        self._last_stamp = -math.inf
        self._last_target: list[float] | None = None
        self._last_command_time: float | None = None
        self._last_joint_state_time: float | None = None
        self._estop_reason = ""
        self._hold_reason = "no command yet"
        self._budget_hold = ""
        self._hold_kind = ""
        self._resync_guard = False
        self._episode_resync_until = -math.inf
        self._last_measured: list[float] | None = None
        # Release times of the last rate_window + 1 commands [s] (the sliding rate window).
        self._released: deque[float] = deque(maxlen=self.rate_window + 1)
        self._window_s = self.rate_window * self.dt - 1e-9
        self._pending: tuple[list[float], dict[str, str], list[str], float] | None = None
        self._cart_prev: np.ndarray | None = None
        self._contact = False
        self._names_cache: tuple[tuple[str, ...], list[int] | None] = ((), None)
        self.counts: dict[str, int] = {}

    # ------------------------------------------------------------------ construction, properties

    @classmethod
    def from_spec(cls, spec: Any, dt: float, *, cartesian: Any = "spec", **kwargs: Any) -> SafetyFilter:
        """A filter for a ``RobotSpec``: ``SafetyLimits.from_spec(spec)``, ``jump_action`` from
        ``spec.safety`` (default ``"clamp"``), the cost budget from ``spec.safety["cost"]``,
        ``resync_tolerance`` from ``spec.safety`` when set, and the Cartesian constraints from
        ``spec.safety["cartesian"]`` (``cartesian="spec"``; pass ``None`` for joint limits only,
        or a ``CartesianConstraints``).

        Raises:
            ValueError: malformed ``safety`` settings (the key is named).
        """
        safety = getattr(spec, "safety", None) or {}
        kwargs.setdefault("jump_action", safety.get("jump_action", "clamp"))
        kwargs.setdefault("cost", CostConfig.from_dict(safety.get("cost")))
        for key in ("resync_tolerance", "episode_resync_tolerance"):
            if safety.get(key) is not None:
                kwargs.setdefault(key, float(safety[key]))
        if isinstance(cartesian, str) and cartesian == "spec":
            from vla_mpc.core.safety_cartesian import CartesianConstraints

            cartesian = CartesianConstraints.from_spec(spec)
        return cls(SafetyLimits.from_spec(spec), dt, cartesian=cartesian, **kwargs)

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
        return np.array(self._p)

    @property
    def last_velocity(self) -> np.ndarray:
        """Copy of the last output's velocity ``(n,)`` [rad/s] (finite difference over dt)."""
        return np.array(self._v)

    @property
    def step_cost(self) -> float:
        """Cost of the last output step (0 or 1)."""
        return self.cost.step_cost

    @property
    def episode_cost(self) -> float:
        """Cumulative cost since the last :meth:`begin_episode`."""
        return self.cost.episode_cost

    # ------------------------------------------------------------------------------- inputs

    def observe_joint_state(self, positions: np.ndarray | None, t_s: float) -> Verdict | None:
        """Record that a joint state arrived at ``t_s`` [s] (the caller's clock).

        ``positions`` ``(n,)`` over ``joint_names`` seeds the hold position the first time (and
        after :meth:`reset`); a non-finite or mis-shaped array is ignored for seeding. When it
        departs from the last output by more than the re-sync tolerance, the filter re-syncs (see
        the module docstring) and returns the HOLD verdict (kind ``"resync"``); else None.
        With Cartesian constraints, it also checks the measured configuration for contact.
        """
        self._last_joint_state_time = float(t_s)
        if positions is None:
            return None
        if not self._seeded:
            self._seed(positions)
            return None
        try:
            q = positions.tolist() if isinstance(positions, np.ndarray) else [float(x) for x in positions]
        except (TypeError, ValueError):
            return None
        if len(q) != self._n:
            return None
        p = self._p
        dev = 0.0
        worst = 0
        for i in self._range:
            d = abs(q[i] - p[i])
            if not d <= dev:  # also catches NaN (then not used)
                if d != d:
                    return None
                dev, worst = d, i
        prev, self._last_measured = self._last_measured, q
        tol = self.resync_tolerance
        if t_s <= self._episode_resync_until and prev is not None:
            # Right after an episode start, a smaller jump re-syncs too, but only a *teleport*: the
            # measured state itself stepped by more than the tolerance between two samples (a
            # tracking lag while moving never does that).
            jump = max(abs(a - b) for a, b in zip(q, prev))
            if jump > self.episode_resync_tolerance:
                tol = self.episode_resync_tolerance
        if dev > tol:
            self._episode_resync_until = -math.inf
            self._seed(q)
            self._resync_guard = True
            self._pending = None
            if self._state is not SafetyState.ESTOP and self._state is not SafetyState.INACTIVE:
                self._state = SafetyState.HOLDING
            reason = (f"re-synced to the measured position: {self.joint_names[worst]} was {_fmt(dev)} from the "
                      f"last output (> {_fmt(tol)})")
            self._hold_reason = reason
            return self._verdict(SafetyAction.HOLD, {COMMAND_KEY: reason}, ("resync",), True)
        if self.cartesian is not None:
            qa = np.array(q)
            # FK only when the Lipschitz bound (from the command path's last FK) cannot rule out
            # contact: far from every constraint this costs a few microseconds.
            if self.cartesian.surely_free(qa):
                self._contact = False
            else:
                try:
                    self._contact = bool((self.cartesian.distances(qa) < 0.0).any())
                except ValueError:
                    self._contact = False
        return None

    def _seed(self, q: Any) -> bool:
        if q is None:
            return False
        try:
            vals = [float(x) for x in np.asarray(q, dtype=np.float64).reshape(-1)]
        except (TypeError, ValueError):
            return False
        if len(vals) != self._n or not all(math.isfinite(x) for x in vals):
            return False
        self._p = vals
        self._v = [0.0] * self._n
        self._a = [0.0] * self._n
        self._outside = any(x < lo or x > hi for x, lo, hi in zip(vals, self._lo, self._hi))
        self._cart_prev = None
        self._seeded = True
        return True

    def begin_episode(self, now_s: float) -> None:
        """A new episode starts (``/vla_mpc/episode`` "start"): the cumulative cost and a cost
        hold or slow-down are cleared (a latched e-stop is not), and for
        ``episode_resync_window_s`` a measured teleport above ``episode_resync_tolerance``
        re-syncs."""
        self.cost.reset()
        self._vscale = 1.0
        if self._budget_hold:
            self._budget_hold = ""
            if self._state is SafetyState.HOLDING:
                self._hold_reason = "new episode: waiting for a command"
        self._episode_resync_until = float(now_s) + self.episode_resync_window_s

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
            stamp_s: the command's time stamp [s]; must not decrease; an equal stamp with the same
                target is a duplicate and rejected.
            measured_q: measured positions ``(n,)`` over ``joint_names``; seeds the filter if it
                has no position yet (otherwise the last command is the reference, as in
                libfranka).
            now_s: arrival time on the caller's clock [s] (default ``stamp_s``); it restarts the
                command timeout, is compared with the last :meth:`observe_joint_state` time and
                drives the rate bucket.

        Returns:
            ``(command, verdict)``: ``command`` ``(n,)`` float64 over ``joint_names`` (a new
            array), or ``None`` when there is nothing to send (never had a position to hold, or
            DEFERRED). Invalid commands give a hold command and REJECTED; an internal error gives
            HOLD (fails closed). Never raises for bad input.
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
        if self._budget_hold:
            return self._reject({COMMAND_KEY: self._budget_hold}, ("cost_budget",))
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
        if stamp == self._last_stamp and x == self._last_target:
            return self._reject({COMMAND_KEY: f"duplicate command (stamp {stamp:.6f} s, same target)"}, ("stamp",))
        self._last_target = x
        # Non-finite targets and absurd jumps; one comparison per joint covers both on the fast
        # path (NaN compares False).
        reasons: dict[str, str] = {}
        kinds: list[str] = []
        p, ms = self._p, self._max_step
        for i in self._range:
            if not abs(x[i] - p[i]) <= ms[i]:
                break
        else:
            i = -1
        if i >= 0:
            bad = [j for j in self._range if not math.isfinite(x[j])]
            if bad:
                return self._reject({self.joint_names[j]: f"target {x[j]!r} is not finite" for j in bad},
                                    ("nonfinite",))
            far = [j for j in self._range if abs(x[j] - p[j]) > ms[j]]
            jump_reasons = {self.joint_names[j]: f"step {_fmt(x[j] - p[j])} > max_joint_step {_fmt(ms[j])}"
                            for j in far}
            if self._resync_guard:
                return self._reject({k: f"{r} after a re-sync to the measured position (stale command source)"
                                     for k, r in jump_reasons.items()}, ("resync",))
            if self.jump_action == "reject":
                return self._reject(jump_reasons, ("step",))
            tol = POSITION_TOLERANCE
            beyond = [j for j in far if not self._lo[j] - tol <= x[j] <= self._hi[j] + tol]
            for j in beyond:  # the raw target also lies beyond a position limit (a cost kind)
                jump_reasons[self.joint_names[j]] += f"; position {_fmt(x[j])} outside [{_fmt(self._lo[j])}, " \
                                                     f"{_fmt(self._hi[j])}]"
            x = [p[j] + min(max(x[j] - p[j], -ms[j]), ms[j]) for j in self._range]
            reasons.update(jump_reasons)
            kinds.append("step")
            if beyond:
                kinds.append("position")
        self._resync_guard = False
        self._last_command_time = float(now_s)
        self._last_stamp = stamp
        # Rate window: faster than 1 / dt -> keep the newest, tick() releases it.
        if not self._take_slot(now_s):
            # Counted, but not an intervention to report: the command itself is not changed (under
            # use_sim_time a slow simulator makes this routine).
            self.counts["rate"] = self.counts.get("rate", 0) + 1
            self._pending = (x, reasons, kinds, now_s)
            return None, self._verdict(SafetyAction.DEFERRED, {COMMAND_KEY: "command faster than 1 / dt: deferred"},
                                       ("rate",), False)
        self._pending = None
        return self._emit(x, reasons, kinds)

    def release_delay_s(self, now_s: float) -> float | None:
        """Seconds from ``now_s`` until a DEFERRED command can be released by :meth:`tick`
        (0 if it can be now), or None when nothing is deferred."""
        if self._pending is None:
            return None
        r = self._released
        if len(r) < r.maxlen:
            return 0.0
        return max(0.0, r[0] + self._window_s - now_s)

    def _take_slot(self, now_s: float) -> bool:
        """True (and the release is recorded) when releasing a command at ``now_s`` keeps at most
        ``rate_window + 1`` releases in any ``rate_window`` periods."""
        r = self._released
        if len(r) == r.maxlen and now_s - r[0] < self._window_s:
            return False
        r.append(float(now_s))
        return True

    def _emit(self, x: list[float], reasons: dict[str, str], kinds: list[str]) -> tuple[np.ndarray | None, Verdict]:
        """Rate-limit toward ``x``, apply the Cartesian constraints and checks, commit, account."""
        out, limited = self._step(x, reasons, kinds)
        if self.cartesian is not None:
            creasons = self._cartesian_violations(out)
            if creasons:
                out, _ = self._step(self._p, {}, [])  # brake: the hold step
                self._cart_prev = None
                reasons.update(creasons)
                kinds.append("cartesian")
                limited = True
        if self.checks:
            arr = np.array(out)
            check_reasons: dict[str, str] = {}
            for check in self.checks:
                check_reasons.update(check(arr))
            if check_reasons:
                return self._reject(check_reasons, ("check",))
        self._commit(out)
        self._account(kinds)
        if self._state is SafetyState.ESTOP:  # the cost budget's "stop" reaction latched it
            return np.array(out), self._verdict(SafetyAction.ESTOP, {COMMAND_KEY: self._estop_reason},
                                                ("cost_budget",), True)
        self._hold_kind = ""
        if limited or reasons:
            self._state = SafetyState.LIMITING
            return np.array(out), self._verdict(SafetyAction.CLAMPED, reasons, tuple(dict.fromkeys(kinds)), True)
        self._state = SafetyState.ACTIVE
        return np.array(out), _PASS

    def _map_names(self, names: Sequence[str], positions: Any) -> tuple[list[float] | None, dict[str, str]]:
        names_t = names if isinstance(names, tuple) else tuple(names)
        try:
            if isinstance(positions, np.ndarray):
                pos = positions.astype(np.float64, copy=False).reshape(-1).tolist()
            else:
                pos = [float(v) for v in positions]
        except (TypeError, ValueError) as exc:
            return None, {COMMAND_KEY: f"positions are not numbers: {exc}"}
        if len(pos) != len(names_t):
            return None, {COMMAND_KEY: f"{len(pos)} positions for {len(names_t)} names"}
        if names_t == self.joint_names:
            return pos, {}
        cached_names, perm = self._names_cache
        if names_t == cached_names and perm is not None:
            return [pos[j] for j in perm], {}
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
        perm = [src[n] for n in self.joint_names]
        self._names_cache = (names_t, perm)
        return [pos[j] for j in perm], {}

    def _brake(self, i: int, d: float) -> float:
        """Largest speed [rad/s] from which braking at ``Ab = brake_fraction * A`` after a delay
        ``c = A / J + 2 dt`` (jerk ramp and latency) stops within distance ``d`` >= 0 [rad]:
        the root of ``v^2 / (2 Ab) + c v = d``, i.e. ``Ab (sqrt(c^2 + 2 d / Ab) - c)``."""
        if d <= 0.0:
            return 0.0
        return self._Ab[i] * (math.sqrt(self._c2[i] + d * self._two_inv_Ab[i]) - self._c[i])

    def _step(self, x: list[float], reasons: dict[str, str], kinds: list[str]) -> tuple[list[float], bool]:
        """One rate-limited period toward target ``x`` (n floats).

        Returns ``(output (n floats), limited)``; ``limited`` is False when ``x`` is reachable
        within every limit this period (then the output is ``x`` exactly). Appends a reason per
        limited joint to ``reasons`` and its kind to ``kinds``.
        """
        p, v, a = self._p, self._v, self._a
        h, inv_h = self._h, self._inv_h
        V, A, dA, K, far = self._V, self._A, self._dA, self._k, self._far
        lo_l, hi_l = self._lo, self._hi
        outside = self._outside
        vs = self._vscale
        out = [0.0] * self._n
        limited = False
        for i in self._range:
            pi, vi, ai, xi = p[i], v[i], a[i], x[i]
            lo, hi = lo_l[i], hi_l[i]
            # A target within POSITION_TOLERANCE beyond a bound (float noise of interpolation, e.g.
            # a gripper commanded "open" at its end stop) is clipped silently: no intervention.
            if xi > hi and xi - hi <= POSITION_TOLERANCE:
                xi = hi
            elif xi < lo and lo - xi <= POSITION_TOLERANCE:
                xi = lo
            if outside:
                # A joint seeded outside the limits may only move back inside: relax its bound to
                # the current position.
                lo = lo if lo < pi else pi
                hi = hi if hi > pi else pi
            Vi = V[i]
            Vc = Vi * vs
            # Braking-aware speed limit toward each position bound (rad/s, >= 0).
            du = hi - pi
            dd = pi - lo
            fi = far[i]
            cu = Vc if du >= fi else min(self._brake(i, du), Vc)
            cd = Vc if dd >= fi else min(self._brake(i, dd), Vc)
            # Largest acceleration toward each bound this period: libfranka's safe-acceleration
            # chain k (cap - v) (which also implies the hard velocity bound, as |v| <= V), jerk and
            # acceleration limits.
            ki, Ai, dAi = K[i], A[i], dA[i]
            bu = min(ki * (cu - vi), ai + dAi, Ai)
            bd = min(ki * (cd + vi), dAi - ai, Ai)
            # The acceleration that lands exactly on the target this period.
            a_req = ((xi - pi) * inv_h - vi) * inv_h
            if a_req <= bu and -a_req <= bd and lo <= xi <= hi:
                out[i] = xi
                continue
            # Not reachable this period: approach the target (clipped into the bounds) on a
            # braking-consistent velocity profile (no overshoot, no limit cycle), limited in
            # priority order: velocity/position chain, then jerk and acceleration, then the hard
            # velocity limit, then the hard position limit.
            limited = True
            e = min(max(xi, lo), hi) - pi
            ae = abs(e)
            vd = min(ae * inv_h, self._brake(i, ae))
            v_des = vd if e > 0.0 else (-vd if e < 0.0 else 0.0)
            ac = (v_des - vi) * inv_h
            ac = min(max(ac, -ki * (cd + vi)), ki * (cu - vi))
            ac = min(max(ac, max(ai - dAi, -Ai)), min(ai + dAi, Ai))
            ac = min(max(ac, (-Vi - vi) * inv_h), (Vi - vi) * inv_h)
            out[i] = min(max(pi + (vi + ac * h) * h, lo), hi)
            if reasons is not None:
                name = self.joint_names[i]
                kind, why = self._explain(i, xi, lo, hi, cu, cd)
                reasons[name] = f"{reasons[name]}; {why}" if name in reasons else why
                kinds.append(kind)
        return out, limited

    def _explain(self, i: int, x: float, lo: float, hi: float, v_hi: float, v_lo: float) -> tuple[str, str]:
        """Name the first limit (position, velocity, acceleration, jerk) the raw target breaks."""
        h = self._h
        if x > hi:
            return "position", f"position {_fmt(x)} > {_fmt(hi)} (upper limit - margin)"
        if x < lo:
            return "position", f"position {_fmt(x)} < {_fmt(lo)} (lower limit + margin)"
        v_req = (x - self._p[i]) / h
        if abs(v_req) > self._V[i] * self._vscale:
            slow = " (slowed: cost budget)" if self._vscale < 1.0 else ""
            return "velocity", f"velocity {_fmt(v_req)} rad/s > {_fmt(self._V[i] * self._vscale)}{slow}"
        a_req = (v_req - self._v[i]) / h
        if abs(a_req) > self._A[i]:
            return "acceleration", f"acceleration {_fmt(a_req)} rad/s^2 > {_fmt(self._A[i])}"
        j_req = (a_req - self._a[i]) / h
        if abs(j_req) > self._dA[i] / h:
            return "jerk", f"jerk {_fmt(j_req)} rad/s^3 > {_fmt(self._dA[i] / h)}"
        cap = v_hi if v_req > 0 else v_lo
        return "braking", f"velocity {_fmt(v_req)} rad/s too fast to stop before the position limit (<= {_fmt(cap)})"

    def _rest_point(self, out: list[float], vel: list[float] | None = None) -> np.ndarray:
        """(n,) where the robot would come to rest if it braked right after reaching ``out`` with
        velocity ``vel`` (default: the velocity of ``out`` over one period from the last output):
        ``v |v| / (2 Ab) + c v`` further, kept inside the position limits."""
        p, inv_h = self._p, self._inv_h
        rest = [0.0] * self._n
        for i in self._range:
            o = out[i]
            vi = (o - p[i]) * inv_h if vel is None else vel[i]
            s = vi * abs(vi) * self._half_inv_Ab[i] + self._c[i] * vi
            lo, hi = self._lo[i], self._hi[i]
            rest[i] = min(max(o + s, min(lo, o)), max(hi, o))
        return np.array(rest)

    def _cartesian_violations(self, out: list[float]) -> dict[str, str]:
        """Reasons when the rest point of candidate ``out`` breaks a Cartesian constraint more
        than the current rest point does; {} when the candidate is admissible."""
        cart = self.cartesian
        q = self._rest_point(out)
        if cart.surely_free(q):
            self._cart_prev = None
            return {}
        d = cart.evaluate(q)
        viol = d < cart.clearance
        if not viol.any():
            self._cart_prev = None
            return {}
        prev = self._cart_prev
        if prev is None:
            prev = cart.distances(self._rest_point(self._p, self._v))  # the current state's rest point
        worse = viol & (d < prev - 1e-9)
        if not worse.any():
            self._cart_prev = d
            return {}
        return cart.explain(d, worse)

    def _commit(self, out: list[float]) -> None:
        """Make ``out`` the last command; velocity and acceleration are its finite differences."""
        inv_h, p, v, a = self._inv_h, self._p, self._v, self._a
        for i in self._range:
            vn = (out[i] - p[i]) * inv_h
            a[i] = (vn - v[i]) * inv_h
            v[i] = vn
            p[i] = out[i]
        if self._outside:
            self._outside = any(x < lo or x > hi for x, lo, hi in zip(p, self._lo, self._hi))

    def _account(self, kinds: Sequence[str]) -> None:
        """Add this output step's cost; apply the budget reaction when it is first exceeded."""
        if not self.cost.add(kinds, self._contact):
            return
        cfg = self.cost.config
        why = f"cost budget exceeded: {self.cost.episode_cost:g} > {cfg.budget:g} this episode"
        if cfg.reaction == "stop":
            self.estop(why)
        elif cfg.reaction == "hold":
            self._budget_hold = f"{why}; holding until the next episode"
        else:
            self._vscale = cfg.slow_factor

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
        self._pending = None
        out, _ = self._step(self._p, None, [])
        self._commit(out)
        self._cart_prev = None
        self._account(kinds)
        return np.array(out), self._verdict(action, reasons, kinds, intervention)

    def _fail_closed(self, exc: BaseException) -> tuple[np.ndarray | None, Verdict]:
        if self._state is not SafetyState.ESTOP:
            self._state = SafetyState.HOLDING
        self._pending = None
        reasons = {COMMAND_KEY: f"internal error, holding: {type(exc).__name__}: {exc}"}
        try:
            if self._seeded:
                out, _ = self._step(self._p, None, [])
                self._commit(out)
                return np.array(out), self._verdict(SafetyAction.HOLD, reasons, ("error",), True)
        except Exception:  # noqa: BLE001 - the state itself is broken: repeat the last output
            pass
        out = np.array(self._p) if self._seeded and all(math.isfinite(x) for x in self._p) else None
        if out is not None:
            self._v = [0.0] * self._n
            self._a = [0.0] * self._n
        return out, self._verdict(SafetyAction.HOLD, reasons, ("error",), True)

    # ------------------------------------------------------------------------ timer, e-stop

    def tick(self, now_s: float, measured_q: np.ndarray | None = None) -> tuple[np.ndarray | None, Verdict] | None:
        """Timer callback logic at time ``now_s`` [s]: timeouts, holds and deferred commands.

        Returns:
            ``None`` while commands are flowing (nothing to send), else ``(command, verdict)``:
            ESTOP while latched; HOLD when joint states are older than ``joint_state_timeout_s``,
            when no command was accepted for ``command_timeout_s``, or while HOLDING; the newest
            DEFERRED command once the rate allows it. The command is ``None`` if there is no
            position to hold yet.
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
            if self._pending is not None and self._take_slot(now_s):
                x, reasons, kinds, _ = self._pending
                self._pending = None
                return self._emit(x, reasons, kinds)
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
        # Reported when the hold starts or its cause changes (e.g. commands stop, then joint states).
        intervention = self._state is not SafetyState.HOLDING or self._hold_kind != kind
        self._hold_kind = kind
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
        self._pending = None
        return self._verdict(SafetyAction.ESTOP, {COMMAND_KEY: reason}, ("estop",), first)

    def reset(self, measured_q: np.ndarray | None = None) -> Verdict:
        """Clear the e-stop and any hold: back to HOLDING until the next valid command.

        ``measured_q`` ``(n,)`` (finite) re-seeds the reference position at rest, so motion resumes
        from where the robot is; without it the last output (and its velocity) is kept. The stamp
        order is forgotten. A cost-budget hold is cleared too (the episode cost is kept).
        """
        self._state = SafetyState.HOLDING
        self._estop_reason = ""
        self._hold_reason = "reset: waiting for a command"
        self._budget_hold = ""
        self._last_stamp = -math.inf
        self._last_target = None
        self._last_command_time = None
        self._pending = None
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
