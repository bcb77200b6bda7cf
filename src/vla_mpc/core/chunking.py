"""Action-chunk streaming: one joint target per control tick from chunks that arrive asynchronously.

System 1 predicts *chunks* (``chunk_size`` x ``action_dim`` joint position targets, one every
``dt`` seconds) a few times per second; the control loop needs one target per tick (60-500 Hz).
:class:`ChunkStreamer` holds the executing trajectory, samples it at any time (linear, cubic or
monotone cubic interpolation between chunk steps, never extrapolating: before the first step and
after the last it holds that step's target) and joins a newly submitted chunk without a jump.

Joining chunks. Switching to a new chunk the moment it arrives ("naive switching") jumps by the
mismatch between the old and new predictions, a velocity and jerk spike the robot feels. Two
published remedies:

* ACT's temporal ensembling (Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with
  Low-Cost Hardware", Sec. 3.3): average all chunks that cover a time step with exponential weights.
* Real-time chunking (Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow
  Policies", arXiv:2506.07339): the steps the robot executes while the next chunk is inferred are
  frozen (the new chunk must agree with them) and the rest of the overlap is softly guided toward
  the previous chunk with weights that decay over the overlap ("inpainting").

This module implements the execution-side half of real-time chunking that needs no model: the new
chunk is cross-faded into the executing trajectory over ``blend_steps`` chunk steps with a C2
weight ``w(s) = 6 s^5 - 15 s^4 + 10 s^3`` (``s`` from 0 at the switch to 1 at the end of the
overlap), starting at the last time already streamed, so the output is continuous in position and
(with the C2 weight) in velocity at the switch. The model-side half (inpainting the frozen prefix
into the flow) needs the prediction of the executing trajectory over the inference delay:
:meth:`ChunkStreamer.committed` returns it, for a learned System 1 to condition on.
``blend_steps = 0`` is naive switching, kept for the benchmark (:func:`max_jerk` compares them).

Staleness (:class:`Freshness`, :func:`hold_reason`): System 1 must hold, not guess, when the latent
``z`` is older than ``max_latent_age_s``, the joint states are stale, or (when required) no fresh
camera frame arrived. Holding means streaming a constant target: the last commanded position, or
the last measured one if nothing was commanded yet (:meth:`ChunkStreamer.hold`).

Times are seconds on one monotonic clock chosen by the caller (the policy node uses
``time.monotonic()``). No rclpy here.
"""

from __future__ import annotations

import enum
import math
import threading
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLEND_WEIGHTS",
    "EXECUTION_DEFAULTS",
    "INTERPOLATIONS",
    "ChunkStreamerConfig",
    "ChunkStreamer",
    "Freshness",
    "HoldReason",
    "hold_reason",
    "blend_weight",
    "execution_defaults",
    "finite_difference",
    "max_jerk",
    "sample_stream",
]

INTERPOLATIONS = ("linear", "cubic", "pchip")

#: System 1 chunk rate and interpolation per policy backend (``execution_defaults``).
#:
#: * ``scripted``: a new chunk every 0.1 s, linear interpolation: the settings the demonstrations
#:   and DAgger / DART rows were recorded with (the expert's chunks are smooth quintics).
#: * ``learned``: a new chunk every 0.3 s, so 6 of a 16-step, 0.05 s chunk execute before the next
#:   joins (ACT's and Diffusion Policy's "n_action_steps"), with the monotone cubic. Measured on
#:   the shipped Franka policy, reach, 15 unseen seeds, ROS-free with the safety filter (session 9;
#:   README "Chunk rate"): 10/15 at 10 Hz, 12-13/15 at 5 Hz, 15/15 at 3.33 Hz, 14/15 at 2.5 Hz.
#:   At 10 Hz every chunk's first free step disagrees with the committed prefix it inpaints
#:   (median 0.06 rad, ~2 cm at the hand), and consecutive chunks alternate: a 5 Hz wobble that
#:   the safety monitor's acceleration limits turn into lag. Linear interpolation steps the
#:   velocity at every chunk step; Catmull-Rom overshoots the knots (the open gripper past its
#:   limit, which the safety monitor counts as cost); ``pchip`` does neither.
EXECUTION_DEFAULTS: dict[str, tuple[float, str]] = {
    "scripted": (10.0, "linear"),
    "learned": (10.0 / 3.0, "pchip"),
}


def execution_defaults(backend: str) -> tuple[float, str]:
    """``(chunk_rate_hz [Hz], interpolation)`` for a policy ``backend`` (see :data:`EXECUTION_DEFAULTS`).

    Raises:
        ValueError: an unknown backend.
    """
    try:
        return EXECUTION_DEFAULTS[backend]
    except KeyError:
        raise ValueError(f"backend must be one of {sorted(EXECUTION_DEFAULTS)}, got {backend!r}") from None

BLEND_WEIGHTS = ("quintic", "linear")

# Knots closer than this fraction of dt are merged (avoids degenerate spline intervals).
_KNOT_MERGE_FRACTION = 1e-3
# Extra knots per chunk step inside the cross-fade, so interpolating the composite follows the smooth
# weight (with knots only at chunk steps, linear interpolation would turn w'(0) = 0 into a kink).
_BLEND_SUBDIVISIONS = 8


def blend_weight(s: np.ndarray | float, kind: str = "quintic") -> np.ndarray:
    """Cross-fade weight of the *new* chunk at normalised overlap time ``s``.

    Args:
        s: normalised time in the overlap, 0 at the switch and 1 at its end (clipped to [0, 1]).
        kind: ``"quintic"`` (smootherstep ``6s^5 - 15s^4 + 10s^3``: zero first and second
            derivative at both ends, so velocity and acceleration stay continuous) or ``"linear"``.

    Returns:
        Weights in [0, 1], float64, shaped like ``s``.

    Raises:
        ValueError: unknown ``kind``.
    """
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0)
    if kind == "quintic":
        return s * s * s * (s * (6.0 * s - 15.0) + 10.0)
    if kind == "linear":
        return s
    raise ValueError(f"blend weight kind must be one of {BLEND_WEIGHTS}, got {kind!r}")


@dataclass(frozen=True)
class ChunkStreamerConfig:
    """Configuration of a :class:`ChunkStreamer`.

    Attributes:
        action_dim: length of one target (joints over ``RobotSpec.joint_names``), >= 1.
        dt: time between chunk steps [s], > 0.
        blend_steps: length of the cross-fade from the executing trajectory to a new chunk, in chunk
            steps (overlap duration ``blend_steps * dt``); 0 = naive switching.
        interpolation: ``"linear"``, ``"cubic"`` (Catmull-Rom / finite-difference cubic Hermite
            on the knots; exact on linear data, C1 between knots; overshoots the knots where the
            data turn) or ``"pchip"`` (monotone piecewise cubic Hermite, Fritsch & Carlson 1980,
            "Monotone Piecewise Cubic Interpolation", SIAM J. Numer. Anal. 17(2), with the
            three-point end slopes of scipy's ``PchipInterpolator``: C1, and each interval stays
            between its two knots, so a target never leaves the range of the chunk steps, e.g. a
            joint limit the chunk touches). Linear interpolation steps the velocity at every chunk
            step, an acceleration spike of ``dv / control period``; the cubic forms do not.
        blend_weight: ``"quintic"`` (C2 smootherstep, default) or ``"linear"``.
    """

    action_dim: int
    dt: float
    blend_steps: int = 4
    interpolation: str = "linear"
    blend_weight: str = "quintic"

    def __post_init__(self) -> None:
        if isinstance(self.action_dim, bool) or not isinstance(self.action_dim, int) or self.action_dim < 1:
            raise ValueError(f"action_dim must be an int >= 1, got {self.action_dim!r}")
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0.0):
            raise ValueError(f"dt must be a finite number > 0 s, got {self.dt!r}")
        if isinstance(self.blend_steps, bool) or not isinstance(self.blend_steps, int) or self.blend_steps < 0:
            raise ValueError(f"blend_steps must be an int >= 0, got {self.blend_steps!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.blend_weight not in BLEND_WEIGHTS:
            raise ValueError(f"blend_weight must be one of {BLEND_WEIGHTS}, got {self.blend_weight!r}")


class _Trajectory:
    """Immutable piecewise trajectory through knots ``times`` (K,) [s], ``values`` (K, n).

    Holds the first / last knot's value outside [times[0], times[-1]] (never extrapolates).
    """

    __slots__ = ("times", "values", "tangents", "cubic")

    def __init__(self, times: np.ndarray, values: np.ndarray, interpolation: str) -> None:
        self.times = times
        self.values = values
        self.cubic = interpolation != "linear" and times.size >= 3
        self.tangents = None
        if self.cubic:
            self.tangents = (_pchip_tangents if interpolation == "pchip" else _catmull_rom_tangents)(times, values)

    @property
    def t_end(self) -> float:
        return float(self.times[-1])

    def sample(self, t: np.ndarray) -> np.ndarray:
        """Values at times ``t`` (M,) -> (M, n) float64."""
        times, values = self.times, self.values
        if times.size == 1:
            return np.repeat(values, t.size, axis=0)
        tc = np.clip(t, times[0], times[-1])
        i = np.clip(np.searchsorted(times, tc, side="right") - 1, 0, times.size - 2)
        h = times[i + 1] - times[i]
        u = ((tc - times[i]) / h)[:, None]
        p0, p1 = values[i], values[i + 1]
        if not self.cubic:
            return p0 + u * (p1 - p0)
        m0, m1 = self.tangents[i] * h[:, None], self.tangents[i + 1] * h[:, None]
        u2, u3 = u * u, u * u * u
        return (
            (2 * u3 - 3 * u2 + 1) * p0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * p1 + (u3 - u2) * m1
        )


def _catmull_rom_tangents(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Finite-difference tangents (K, n) [units/s] on non-uniform knots; one-sided at the ends."""
    m = np.empty_like(values)
    m[1:-1] = (values[2:] - values[:-2]) / (times[2:] - times[:-2])[:, None]
    m[0] = (values[1] - values[0]) / (times[1] - times[0])
    m[-1] = (values[-1] - values[-2]) / (times[-1] - times[-2])
    return m


def _pchip_tangents(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Monotone (Fritsch-Carlson) tangents (K, n) [units/s] on non-uniform knots, K >= 3.

    Interior: 0 where the secants change sign or one is 0, else their weighted harmonic mean
    (weights ``2 h_k + h_{k-1}`` and ``h_k + 2 h_{k-1}``); ends: the three-point estimate, set to 0
    when its sign differs from the end secant's and limited to 3x that secant when the first two
    secants differ in sign (scipy.interpolate.PchipInterpolator's rules). With these tangents each
    Hermite interval is monotone, so it stays between its two knot values.
    """
    h = np.diff(times)[:, None]  # (K-1, 1)
    delta = np.diff(values, axis=0) / h  # (K-1, n) secants
    m = np.zeros_like(values)
    d0, d1 = delta[:-1], delta[1:]
    h0, h1 = h[:-1], h[1:]
    w1, w2 = 2.0 * h1 + h0, h1 + 2.0 * h0
    same = (d0 * d1) > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / d0 + w2 / d1)
    m[1:-1] = np.where(same, harmonic, 0.0)
    m[0] = _pchip_end(h[0, 0], h[1, 0], delta[0], delta[1])
    m[-1] = _pchip_end(h[-1, 0], h[-2, 0], delta[-1], delta[-2])
    return m


def _pchip_end(h0: float, h1: float, d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
    """End tangent from the end interval (``h0``, secant ``d0``) and its neighbour (``h1``, ``d1``)."""
    m = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    m = np.where(np.sign(m) != np.sign(d0), 0.0, m)
    limit = (np.sign(d0) != np.sign(d1)) & (np.abs(m) > 3.0 * np.abs(d0))
    return np.where(limit, 3.0 * d0, m)


class ChunkStreamer:
    """Thread-safe action queue: the executing trajectory, sampled per control tick.

    ``submit`` (System 1's inference thread) and ``sample`` / ``hold`` (the control loop) may be
    called concurrently from different threads; every call takes one lock for a few microseconds
    of numpy work and every returned array is a copy.

    Chunk convention: ``chunk[k]`` is the target for time ``t_start + k * dt`` [s].
    """

    def __init__(self, config: ChunkStreamerConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._traj: _Trajectory | None = None
        self._t_last: float = -math.inf  # latest time handed out by sample()
        self._holding = False
        self._last_chunk: np.ndarray | None = None
        self._last_chunk_start = math.nan

    # ------------------------------------------------------------------------------- producers
    def submit(self, chunk: np.ndarray, t_start: float, t_now: float | None = None) -> None:
        """Join a new chunk into the executing trajectory without a jump.

        The cross-fade starts at ``t_switch = max(t_start, t_now, last sampled time)``: the part of
        the trajectory already streamed is never rewritten. Over ``blend_steps * dt`` after
        ``t_switch`` the output moves from the executing trajectory to the new chunk with the
        configured weight; after that it follows the new chunk, and past its last step it holds
        that step's target. Chunk steps before ``t_switch`` (the inference delay) are dropped. A
        submit also ends a :meth:`hold`.

        Args:
            chunk: (chunk_size, action_dim) joint targets [rad or m], finite; chunk_size >= 1.
            t_start: time of ``chunk[0]`` [s] (usually the observation time the chunk was
                predicted from, plus one step).
            t_now: the current time [s]; defaults to the last time sampled (``t_start`` if never).

        Raises:
            ValueError: wrong shape, non-finite values or non-finite times.
        """
        c = np.array(chunk, dtype=np.float64, copy=True)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] != self.config.action_dim:
            raise ValueError(
                f"chunk must be (chunk_size >= 1, {self.config.action_dim}), got shape {c.shape}"
            )
        if not np.all(np.isfinite(c)):
            bad = np.argwhere(~np.isfinite(c))[0]
            raise ValueError(f"chunk has a non-finite value at step {bad[0]}, joint {bad[1]}")
        if not math.isfinite(t_start) or (t_now is not None and not math.isfinite(t_now)):
            raise ValueError(f"t_start / t_now must be finite, got {t_start!r} / {t_now!r}")
        cfg = self.config
        new = _Trajectory(t_start + cfg.dt * np.arange(c.shape[0]), c, cfg.interpolation)
        with self._lock:
            old = self._traj
            self._last_chunk, self._last_chunk_start = c, float(t_start)
            self._holding = False
            now = self._t_last if t_now is None else max(t_now, self._t_last)
            if old is None or cfg.blend_steps == 0:
                self._traj = new
                return
            t_switch = max(float(t_start), now if math.isfinite(now) else float(t_start))
            self._traj = _blend(old, new, t_switch, cfg)

    def hold(self, target: np.ndarray, t: float) -> None:
        """Stream the constant ``target`` from time ``t`` on (drops the executing chunk).

        Args:
            target: (action_dim,) position to hold [rad or m] (the last commanded or measured one).
            t: time the hold starts [s].

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        x = np.array(target, dtype=np.float64, copy=True).reshape(-1)
        if x.shape != (self.config.action_dim,) or not np.all(np.isfinite(x)):
            raise ValueError(f"hold target must be finite ({self.config.action_dim},), got {np.shape(target)}")
        with self._lock:
            self._traj = _Trajectory(np.array([float(t)]), x[None, :], "linear")
            self._holding = True

    def clear(self) -> None:
        """Forget the executing trajectory (``sample`` then returns its default)."""
        with self._lock:
            self._traj = None
            self._holding = False
            self._last_chunk = None
            self._last_chunk_start = math.nan
            self._t_last = -math.inf

    # ------------------------------------------------------------------------------- consumers
    def sample(self, t: float, default: np.ndarray | None = None) -> np.ndarray:
        """The target at time ``t`` [s]: (action_dim,) float64, a copy.

        Interpolates between chunk steps; before the first knot or past the last chunk step it
        holds that step's target (no extrapolation).

        Args:
            t: query time [s].
            default: returned (as a copy) when nothing was submitted or held yet.

        Raises:
            LookupError: nothing submitted or held and no ``default``.
        """
        with self._lock:
            traj = self._traj
            if traj is not None and t > self._t_last:
                self._t_last = float(t)
        if traj is None:
            if default is None:
                raise LookupError("ChunkStreamer has no chunk yet (submit() or hold() first)")
            return np.array(default, dtype=np.float64, copy=True)
        return traj.sample(np.array([float(t)]))[0]

    def sample_many(self, times: np.ndarray) -> np.ndarray:
        """Targets at ``times`` (M,) [s] -> (M, action_dim) float64, without advancing the stream.

        Raises:
            LookupError: nothing submitted or held.
        """
        with self._lock:
            traj = self._traj
        if traj is None:
            raise LookupError("ChunkStreamer has no chunk yet (submit() or hold() first)")
        return traj.sample(np.asarray(times, dtype=np.float64).reshape(-1))

    def committed(self, t_from: float, steps: int) -> np.ndarray:
        """The executing trajectory at ``t_from + k * dt`` for k in [0, steps): (steps, action_dim).

        For real-time chunking: the steps the robot will execute while the next chunk is being
        inferred, which a learned System 1 freezes (inpaints) in its prediction.

        Raises:
            LookupError: nothing submitted or held.
            ValueError: ``steps < 1``.
        """
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return self.sample_many(t_from + self.config.dt * np.arange(steps))

    def rtc_prefix(self, t_start: float, max_steps: int, min_steps: int = 2) -> np.ndarray | None:
        """The committed prefix a new chunk starting at ``t_start`` [s] should inpaint (real-time
        chunking, Black et al. 2025: the whole remaining overlap with the executing chunk).

        Returns:
            None when nothing was submitted or held; while holding, ``min_steps`` steps of the held
            target; else the executing trajectory at ``t_start + k * dt`` up to its last knot,
            ``min_steps <= P <= max_steps`` steps: (P, action_dim) float64.

        Raises:
            ValueError: ``min_steps < 1`` or ``max_steps < min_steps``.
        """
        if min_steps < 1 or max_steps < min_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
        with self._lock:
            if self._traj is None:
                return None
            holding, t_end = self._holding, self._traj.t_end
        steps = min_steps
        if not holding:
            steps = int(min(max(math.floor((t_end - t_start) / self.config.dt) + 1, min_steps), max_steps))
        return self.committed(t_start, steps)

    def end_time(self) -> float:
        """Time of the last knot of the executing trajectory [s] (``-inf`` when empty)."""
        with self._lock:
            return -math.inf if self._traj is None else self._traj.t_end

    @property
    def holding(self) -> bool:
        """True after :meth:`hold` until the next :meth:`submit`."""
        with self._lock:
            return self._holding

    @property
    def empty(self) -> bool:
        """True when nothing was submitted or held since construction / :meth:`clear`."""
        with self._lock:
            return self._traj is None

    def last_chunk(self) -> tuple[np.ndarray, float] | None:
        """The last submitted chunk (chunk_size, action_dim) (a copy) and its ``t_start`` [s]."""
        with self._lock:
            if self._last_chunk is None:
                return None
            return self._last_chunk.copy(), self._last_chunk_start


def _blend(old: _Trajectory, new: _Trajectory, t_switch: float, cfg: ChunkStreamerConfig) -> _Trajectory:
    """Composite trajectory: ``old`` until ``t_switch``, cross-faded to ``new`` over the overlap.

    Knots: the last ``old`` knot before ``t_switch`` (so cubic tangents at the switch see the past),
    ``t_switch`` itself, the union of old and new knots and ``_BLEND_SUBDIVISIONS`` evenly spaced
    knots per chunk step inside the overlap, the overlap end, and the new chunk's knots after it.
    Values inside the overlap are ``(1 - w) old + w new``.
    """
    t_blend_end = t_switch + cfg.blend_steps * cfg.dt
    merge = _KNOT_MERGE_FRACTION * cfg.dt
    before = old.times[old.times < t_switch - merge]
    dense = np.linspace(t_switch, t_blend_end, cfg.blend_steps * _BLEND_SUBDIVISIONS + 1)
    inside = np.concatenate([old.times, new.times, dense])
    inside = inside[(inside > t_switch + merge) & (inside < t_blend_end - merge)]
    after = new.times[new.times > t_blend_end + merge]
    knots = np.concatenate([before[-1:], [t_switch], inside, [t_blend_end], after])
    knots = np.unique(knots)
    keep = np.concatenate([[True], np.diff(knots) > merge])
    knots = knots[keep]
    w = blend_weight((knots - t_switch) / (t_blend_end - t_switch), cfg.blend_weight)[:, None]
    w[knots < t_switch] = 0.0
    values = (1.0 - w) * old.sample(knots) + w * new.sample(knots)
    return _Trajectory(knots, values, cfg.interpolation)


# ------------------------------------------------------------------------------------ staleness


class HoldReason(enum.Enum):
    """Why System 1 holds instead of following a chunk (``None`` from :func:`hold_reason` = go)."""

    NO_LATENT = "no latent received"
    STALE_LATENT = "latent older than max_latent_age_s"
    NO_STATE = "no joint state received"
    STALE_STATE = "joint state older than max_state_age_s"
    NO_CAMERA = "no camera frame received"
    STALE_CAMERA = "camera frame older than max_image_age_s"
    INVALID_LATENT = "latent has no task (instruction not understood or object not found)"
    NO_CHUNK = "no action chunk yet"


@dataclass(frozen=True)
class Freshness:
    """Maximum ages of System 1's inputs, measured from their arrival [s].

    Attributes:
        max_latent_age_s: oldest usable latent ``z`` [s], > 0 (System 2 runs at ~2 Hz: 1.5 s
            tolerates two missed updates).
        max_state_age_s: oldest usable joint state [s], > 0.
        max_image_age_s: oldest usable camera frame [s], > 0.
        require_camera: hold when no fresh camera frame (the learned System 2 needs pixels).
    """

    max_latent_age_s: float = 1.5
    max_state_age_s: float = 0.1
    max_image_age_s: float = 0.5
    require_camera: bool = True

    def __post_init__(self) -> None:
        for name in ("max_latent_age_s", "max_state_age_s", "max_image_age_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must be a finite number > 0 s, got {v!r}")


def hold_reason(
    freshness: Freshness,
    now: float,
    latent_time: float | None,
    state_time: float | None,
    image_time: float | None,
) -> HoldReason | None:
    """First reason to hold at ``now`` [s], or ``None`` when every input is fresh.

    Args:
        freshness: the age limits.
        now: current time [s] (same clock as the arrival times).
        latent_time / state_time / image_time: arrival times [s] of the newest latent, joint
            state and camera frame; ``None`` if none arrived yet.
    """
    if state_time is None:
        return HoldReason.NO_STATE
    if now - state_time > freshness.max_state_age_s:
        return HoldReason.STALE_STATE
    if latent_time is None:
        return HoldReason.NO_LATENT
    if now - latent_time > freshness.max_latent_age_s:
        return HoldReason.STALE_LATENT
    if freshness.require_camera:
        if image_time is None:
            return HoldReason.NO_CAMERA
        if now - image_time > freshness.max_image_age_s:
            return HoldReason.STALE_CAMERA
    return None


# ----------------------------------------------------------------------------------- measurement


def sample_stream(streamer: ChunkStreamer, times: np.ndarray) -> np.ndarray:
    """Sample ``streamer`` at increasing ``times`` (M,) [s] like a control loop: (M, action_dim)."""
    return np.stack([streamer.sample(float(t)) for t in np.asarray(times, dtype=np.float64)])


def finite_difference(samples: np.ndarray, dt: float, order: int) -> np.ndarray:
    """``order``-th backward finite difference of a uniformly sampled stream.

    Args:
        samples: (T, n) positions [rad or m] every ``dt`` [s].
        dt: sample period [s], > 0.
        order: 1 velocity, 2 acceleration, 3 jerk.

    Returns:
        (T - order, n) float64 [units / s^order].

    Raises:
        ValueError: bad shape, ``dt`` or ``order``, or fewer than ``order + 1`` samples.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < order + 1:
        raise ValueError(f"samples must be (T > {order}, n), got shape {np.shape(samples)}")
    if not (dt > 0.0) or order < 1:
        raise ValueError(f"need dt > 0 and order >= 1, got dt={dt!r}, order={order!r}")
    return np.diff(x, n=order, axis=0) / dt**order


def max_jerk(samples: np.ndarray, dt: float) -> float:
    """Largest absolute jerk [units/s^3] of a stream sampled every ``dt`` [s] (third backward
    difference, max over time and joints). Compares chunk-joining strategies: the same chunks
    streamed with ``blend_steps = 0`` (naive switching) and with blending.

    Raises:
        ValueError: see :func:`finite_difference`.
    """
    return float(np.max(np.abs(finite_difference(samples, dt, 3))))
