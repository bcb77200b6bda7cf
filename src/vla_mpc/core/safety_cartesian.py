"""Cartesian safety constraints through forward kinematics (no rclpy): table plane, keep-out boxes,
a workspace box and self-collision between capsules.

The robot is approximated by spheres (for the table, keep-out boxes and workspace) and capsules
(for self-collision pairs), each fixed to a URDF link. :meth:`CartesianConstraints.distances`
returns one signed distance per constraint [m] (negative = penetration); the safety filter
(:class:`vla_mpc.core.safety.SafetyFilter`) keeps every distance >= ``clearance`` at the
configuration where the robot would *stop* if it started braking after the candidate command,
and otherwise brakes (see the filter's docstring).

FK is kept off the fast path with a Lipschitz bound: a point fixed to link ``L`` moves at most
``sum_j R_j |dq_j|`` when the joints move by ``dq``, where ``R_j`` is the length of the kinematic
chain from joint ``j`` to the point (triangle inequality over the URDF joint offsets; 1 for
prismatic joints). After one FK at ``q_ref`` with smallest slack ``s = min(d) - clearance``, any
``q`` with ``sum_j R_j |q_j - q_ref_j| < s`` (half of it for self-collision pairs, where both
bodies move) is known to be admissible without FK.

Configuration (``config/<robot>.yaml``, ``safety.cartesian``; frame ``base_link``, units m)::

    cartesian:
      clearance: 0.02                 # kept from every surface [m]
      table_height: -0.112            # table plane z [m] (null: no table)
      workspace: {min: [x, y, z], max: [x, y, z]}    # spheres with workspace: true stay inside
      keep_out_boxes: [{name: b, min: [...], max: [...]}]
      spheres: [{name: hand, link: panda_hand, center: [0, 0, 0.06], radius: 0.06, workspace: true}]
      capsules: [{name: base, link: panda_link0, a: [0, 0, 0], b: [0, 0, 0.33], radius: 0.09}]
      self_collision: [[hand, base]]  # capsule name pairs

Segment-segment distance: C. Ericson, "Real-Time Collision Detection" (2005), 5.1.9.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Sphere", "Capsule", "Box", "CartesianConfig", "CartesianConstraints", "segment_distance"]


def _vec3(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected 3 numbers, got {value!r}") from None
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: expected 3 finite numbers, got {value!r}")
    return arr


def _positive(value: Any, where: str, allow_zero: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or x < 0.0 or (x == 0.0 and not allow_zero):
        raise ValueError(f"{where}: must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    return x


@dataclass(frozen=True, eq=False)
class Sphere:
    """A sphere fixed to ``link``: ``center`` (3,) [m] in the link frame, ``radius`` [m];
    ``workspace``: it must stay inside the workspace box."""

    name: str
    link: str
    center: np.ndarray
    radius: float
    workspace: bool = False


@dataclass(frozen=True, eq=False)
class Capsule:
    """A capsule fixed to ``link``: segment ``a``-``b`` (3,) [m] in the link frame, ``radius`` [m]."""

    name: str
    link: str
    a: np.ndarray
    b: np.ndarray
    radius: float


@dataclass(frozen=True, eq=False)
class Box:
    """Axis-aligned box in ``base_link``: ``lower`` < ``upper`` (3,) [m]."""

    name: str
    lower: np.ndarray
    upper: np.ndarray


@dataclass(frozen=True, eq=False)
class CartesianConfig:
    """Parsed ``safety.cartesian`` block (see the module docstring).

    Raises:
        ValueError: (:meth:`from_dict`) naming the offending key.
    """

    clearance: float = 0.02
    table_height: float | None = None
    workspace: Box | None = None
    keep_out_boxes: tuple[Box, ...] = ()
    spheres: tuple[Sphere, ...] = ()
    capsules: tuple[Capsule, ...] = ()
    self_collision: tuple[tuple[str, str], ...] = ()

    @property
    def has_constraints(self) -> bool:
        """True when at least one constraint (table, box, workspace, self-collision pair) is set."""
        return bool(self.table_height is not None or self.keep_out_boxes or self.workspace is not None
                    or self.self_collision)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "safety.cartesian") -> CartesianConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        known = {"clearance", "table_height", "workspace", "keep_out_boxes", "spheres", "capsules", "self_collision"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown} (known: {sorted(known)})")
        clearance = _positive(d.get("clearance", 0.02), f"{where}.clearance", allow_zero=True)
        th = d.get("table_height")
        if th is not None:
            th = float(th)
            if not math.isfinite(th):
                raise ValueError(f"{where}.table_height: not finite")

        def box(b: Any, w: str, name: str) -> Box:
            if not isinstance(b, Mapping):
                raise ValueError(f"{w}: expected {{min: [x, y, z], max: [x, y, z]}}, got {b!r}")
            lo, hi = _vec3(b.get("min"), f"{w}.min"), _vec3(b.get("max"), f"{w}.max")
            if np.any(lo >= hi):
                raise ValueError(f"{w}: min must be < max on every axis, got {lo.tolist()} / {hi.tolist()}")
            return Box(str(b.get("name", name)), lo, hi)

        ws = d.get("workspace")
        workspace = box(ws, f"{where}.workspace", "workspace") if ws is not None else None
        boxes = tuple(box(b, f"{where}.keep_out_boxes[{i}]", f"box{i}")
                      for i, b in enumerate(d.get("keep_out_boxes") or ()))
        spheres = []
        for i, s in enumerate(d.get("spheres") or ()):
            w = f"{where}.spheres[{i}]"
            if not isinstance(s, Mapping) or "link" not in s:
                raise ValueError(f"{w}: expected {{name, link, center, radius}}, got {s!r}")
            spheres.append(Sphere(str(s.get("name", f"sphere{i}")), str(s["link"]),
                                  _vec3(s.get("center", (0.0, 0.0, 0.0)), f"{w}.center"),
                                  _positive(s.get("radius", 0.0), f"{w}.radius", allow_zero=True),
                                  bool(s.get("workspace", False))))
        capsules = []
        for i, c in enumerate(d.get("capsules") or ()):
            w = f"{where}.capsules[{i}]"
            if not isinstance(c, Mapping) or "link" not in c or "name" not in c:
                raise ValueError(f"{w}: expected {{name, link, a, b, radius}}, got {c!r}")
            capsules.append(Capsule(str(c["name"]), str(c["link"]), _vec3(c.get("a"), f"{w}.a"),
                                    _vec3(c.get("b"), f"{w}.b"), _positive(c.get("radius"), f"{w}.radius")))
        names = [c.name for c in capsules]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}.capsules: duplicate names in {names}")
        pairs = []
        for i, p in enumerate(d.get("self_collision") or ()):
            if not (isinstance(p, Sequence) and len(p) == 2 and all(x in names for x in p) and p[0] != p[1]):
                raise ValueError(f"{where}.self_collision[{i}]: expected two different capsule names from "
                                 f"{names}, got {p!r}")
            pairs.append((str(p[0]), str(p[1])))
        if boxes or th is not None or workspace is not None:
            if not spheres:
                raise ValueError(f"{where}: table_height/workspace/keep_out_boxes need at least one sphere")
        if workspace is not None and not any(s.workspace for s in spheres):
            raise ValueError(f"{where}.workspace: no sphere has workspace: true")
        return cls(clearance, th, workspace, boxes, tuple(spheres), tuple(capsules), tuple(pairs))


def segment_distance(p1: Sequence[float], q1: Sequence[float], p2: Sequence[float], q2: Sequence[float]) -> float:
    """Shortest distance [m] between segments p1-q1 and p2-q2 (each 3 floats); Ericson 5.1.9.
    Plain Python floats: for one pair this is several times faster than numpy."""
    d1 = (q1[0] - p1[0], q1[1] - p1[1], q1[2] - p1[2])
    d2 = (q2[0] - p2[0], q2[1] - p2[1], q2[2] - p2[2])
    r = (p1[0] - p2[0], p1[1] - p2[1], p1[2] - p2[2])
    a = d1[0] * d1[0] + d1[1] * d1[1] + d1[2] * d1[2]
    e = d2[0] * d2[0] + d2[1] * d2[1] + d2[2] * d2[2]
    f = d2[0] * r[0] + d2[1] * r[1] + d2[2] * r[2]
    eps = 1e-12
    if a <= eps and e <= eps:
        s = t = 0.0
    elif a <= eps:
        s, t = 0.0, min(max(f / e, 0.0), 1.0)
    else:
        c = d1[0] * r[0] + d1[1] * r[1] + d1[2] * r[2]
        if e <= eps:
            t, s = 0.0, min(max(-c / a, 0.0), 1.0)
        else:
            b = d1[0] * d2[0] + d1[1] * d2[1] + d1[2] * d2[2]
            denom = a * e - b * b
            s = min(max((b * f - c * e) / denom, 0.0), 1.0) if denom > eps else 0.0
            t = (b * s + f) / e
            if t < 0.0:
                t, s = 0.0, min(max(-c / a, 0.0), 1.0)
            elif t > 1.0:
                t, s = 1.0, min(max((b - c) / a, 0.0), 1.0)
    dx = r[0] + d1[0] * s - d2[0] * t
    dy = r[1] + d1[1] * s - d2[1] * t
    dz = r[2] + d1[2] * s - d2[2] * t
    return math.sqrt(dx * dx + dy * dy + dz * dz)


class CartesianConstraints:
    """Signed distances of the robot's spheres and capsules to the configured constraints.

    Args:
        model: a :class:`vla_mpc.core.robot_model.RobotModel` (its pinocchio model and data are
            used; not thread-safe, give this class its own model).
        config: the parsed constraints.

    Attributes:
        names: one label per constraint, the order of :meth:`distances` (``"table:hand"``,
            ``"keep_out:<box>:<sphere>"``, ``"workspace:<sphere>"``, ``"self:<a>-<b>"``).
        clearance: [m].

    Raises:
        KeyError: a sphere or capsule names a link that is not in the URDF.
    """

    def __init__(self, model: Any, config: CartesianConfig) -> None:
        pin = model._pin
        self._pin = pin
        self._robot = model
        self.config = config
        self.clearance = float(config.clearance)
        links = list(dict.fromkeys([s.link for s in config.spheres] + [c.link for c in config.capsules]))
        self._fids = [model.frame_id(link) for link in links]
        li = {link: i for i, link in enumerate(links)}
        sp = config.spheres
        self._s_link = np.array([li[s.link] for s in sp], dtype=np.intp)
        self._s_c = np.array([s.center for s in sp]).reshape(len(sp), 3)
        self._s_r = np.array([s.radius for s in sp])
        self._ws_idx = np.array([i for i, s in enumerate(sp) if s.workspace], dtype=np.intp)
        cap = {c.name: c for c in config.capsules}
        self._pairs = [(cap[a], cap[b], li[cap[a].link], li[cap[b].link]) for a, b in config.self_collision]
        names: list[str] = []
        if config.table_height is not None:
            names += [f"table:{s.name}" for s in sp]
        for b in config.keep_out_boxes:
            names += [f"keep_out:{b.name}:{s.name}" for s in sp]
        if config.workspace is not None:
            names += [f"workspace:{sp[i].name}" for i in self._ws_idx]
        names += [f"self:{a}-{b}" for a, b in config.self_collision]
        self.names = tuple(names)
        self._n_env = len(names) - len(self._pairs)
        # Plain-float copies for the per-call loops.
        self._s_link_l = [int(i) for i in self._s_link]
        self._s_r_l = [float(r) for r in self._s_r]
        self._ws_idx_l = [int(i) for i in self._ws_idx]
        self._boxes = [(b.lower.tolist(), b.upper.tolist()) for b in config.keep_out_boxes]
        self._ws = (config.workspace.lower.tolist(), config.workspace.upper.tolist()) if config.workspace else None
        self._lip_env, self._lip_self = self._lipschitz(model, config)
        self._ref_q: np.ndarray | None = None
        self._ref_slack = -math.inf
        self.fk_calls = 0

    @classmethod
    def from_spec(cls, spec: Any, model: Any | None = None) -> CartesianConstraints | None:
        """From ``spec.safety["cartesian"]``; ``None`` when the block is absent or empty.

        Raises:
            ValueError: a malformed block (names the key). KeyError: an unknown link.
        """
        block = (getattr(spec, "safety", None) or {}).get("cartesian")
        if not block:
            return None
        config = CartesianConfig.from_dict(block)
        if not config.has_constraints:
            return None
        if model is None:
            from vla_mpc.core.robot_model import RobotModel

            model = RobotModel(spec)
        return cls(model, config)

    # ------------------------------------------------------------------------------- bounds

    def _lipschitz(self, model: Any, config: CartesianConfig) -> tuple[np.ndarray, np.ndarray]:
        """Per joint over ``spec.joint_names``: the largest chain length from the joint to any
        sphere (env) / capsule end (self) [m per rad]; 1 per m for prismatic joints."""
        m = model.model
        spec = model.spec
        col = {j: i for i, j in enumerate(spec.joint_names)}
        n = len(spec.joint_names)
        env = np.zeros(n)
        slf = np.zeros(n)

        def chain(fid: int, local: float, out: np.ndarray) -> None:
            frame = m.frames[fid]
            length = float(np.linalg.norm(frame.placement.translation)) + local
            jid = frame.parentJoint if hasattr(frame, "parentJoint") else frame.parent
            while jid > 0:
                name = m.names[jid]
                prismatic = m.joints[jid].shortname().startswith("JointModelP")
                if name in col:
                    r = 1.0 if prismatic else length
                    out[col[name]] = max(out[col[name]], r)
                length += float(np.linalg.norm(m.jointPlacements[jid].translation))
                jid = m.parents[jid]

        for s in config.spheres:
            chain(model.frame_id(s.link), float(np.linalg.norm(s.center)), env)
        for c in config.capsules:
            chain(model.frame_id(c.link), max(float(np.linalg.norm(c.a)), float(np.linalg.norm(c.b))), slf)
        return env, 2.0 * slf

    # ---------------------------------------------------------------------------- distances

    def _frames(self, q: np.ndarray) -> list[Any]:
        pin, rm = self._pin, self._robot
        pin.forwardKinematics(rm.model, rm.data, rm.pinocchio_q(q))
        self.fk_calls += 1
        return [pin.updateFramePlacement(rm.model, rm.data, fid) for fid in self._fids]

    def sphere_centers(self, q: np.ndarray) -> np.ndarray:
        """(S, 3) sphere centres in ``base_link`` [m] at ``q`` (n,) over ``joint_names``."""
        return np.array(self._centers(self._frames(q))).reshape(-1, 3)

    def _centers(self, frames: list[Any]) -> list[list[float]]:
        return [frames[li].act(c).tolist() for li, c in zip(self._s_link_l, self._s_c)]

    def distances(self, q: np.ndarray) -> np.ndarray:
        """Signed distances (len(names),) [m] at ``q`` (n,) over ``joint_names``: > 0 free,
        < 0 penetrating (clearance not subtracted). Point-box distance: Euclidean outside, minus
        the depth to the nearest face inside.

        Raises:
            ValueError: a q of the wrong shape or with non-finite values (from ``RobotModel``).
        """
        frames = self._frames(q)
        cfg = self.config
        out: list[float] = []
        centers = self._centers(frames)
        radii = self._s_r_l
        th = cfg.table_height
        if th is not None:
            out += [c[2] - r - th for c, r in zip(centers, radii)]
        for lo, hi in self._boxes:
            for c, r in zip(centers, radii):
                gx = max(lo[0] - c[0], c[0] - hi[0])
                gy = max(lo[1] - c[1], c[1] - hi[1])
                gz = max(lo[2] - c[2], c[2] - hi[2])
                if gx <= 0.0 and gy <= 0.0 and gz <= 0.0:
                    out.append(max(gx, gy, gz) - r)
                else:
                    gx, gy, gz = max(gx, 0.0), max(gy, 0.0), max(gz, 0.0)
                    out.append(math.sqrt(gx * gx + gy * gy + gz * gz) - r)
        if cfg.workspace is not None:
            lo, hi = self._ws
            for i in self._ws_idx_l:
                c = centers[i]
                out.append(min(c[0] - lo[0], c[1] - lo[1], c[2] - lo[2], hi[0] - c[0], hi[1] - c[1], hi[2] - c[2])
                           - radii[i])
        for ca, cb, la, lb in self._pairs:
            fa, fb = frames[la], frames[lb]
            out.append(segment_distance(fa.act(ca.a).tolist(), fa.act(ca.b).tolist(),
                                        fb.act(cb.a).tolist(), fb.act(cb.b).tolist()) - ca.radius - cb.radius)
        return np.array(out)

    def surely_free(self, q: np.ndarray) -> bool:
        """True when ``q`` is known, without FK, to keep every distance >= clearance (the
        Lipschitz bound from the last FK reference; see the module docstring)."""
        ref = self._ref_q
        if ref is None or self._ref_slack <= 0.0:
            return False
        dq = np.abs(q - ref)
        return float(dq @ self._lip_env) < self._ref_slack_env and float(dq @ self._lip_self) < self._ref_slack_self

    def evaluate(self, q: np.ndarray) -> np.ndarray:
        """:meth:`distances` at ``q``, remembered as the reference of :meth:`surely_free`."""
        d = self.distances(q)
        self._ref_q = np.array(q, dtype=np.float64)
        cl = self.clearance
        env, slf = d[: self._n_env], d[self._n_env:]
        self._ref_slack_env = float(env.min()) - cl if env.size else math.inf
        self._ref_slack_self = float(slf.min()) - cl if slf.size else math.inf
        self._ref_slack = min(self._ref_slack_env, self._ref_slack_self)
        return d

    def explain(self, d: np.ndarray, worse: np.ndarray) -> dict[str, str]:
        """``{constraint: reason}`` for the constraints flagged in ``worse`` (bool mask over names)."""
        return {self.names[i]: f"{self.names[i]}: distance {d[i]:.4g} m < clearance {self.clearance:.4g} m"
                for i in np.flatnonzero(worse)}

