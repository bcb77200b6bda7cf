"""End-effector action space for System 1: joint-target chunks <-> tool-pose deltas.

A chunk of absolute joint targets ``a`` (H, n) over ``RobotSpec.joint_names`` is described, given
the measured joint positions ``q`` (n,), by H rows of

    [ p(a_k) - p(q)                     (3)  position of ``ee_link`` from the measured one [m]
      log(R(a_k) R_home^T)              (3)  orientation as a rotation vector from the home
                                             pose's orientation, ``base_link`` axes [rad]
      a_k[j]  for the other joints      (n - n_arm) gripper etc., absolute [m or rad] ]

(``p``, ``R``: forward kinematics of ``ee_link``, :class:`~vla_mpc.core.robot_model.RobotModel`;
``R_home = R(spec.home)``). Position is relative: "where the tool goes from here" is close to
linear in the target-minus-tool vector System 1 receives (``keypoint_condition``). Orientation and
gripper are absolute, as in Diffusion Policy's end-effector position control (Chi et al., RSS
2023): tabletop demonstrations hold one tool orientation and an open or closed gripper, which are
constants in absolute terms but would, as deltas, have to be recomputed from the measured state
by the network. The inverse, :meth:`EndEffectorActions.to_joint_targets`, tracks those poses with
damped least-squares IK over the arm joints (Nakamura & Hanafusa 1986; Buss 2004), step by step
along the chunk, each step warm-started from the previous one, clipped to the joint limits.

Why: behaviour cloning in joint space must learn the arm's inverse kinematics from the
demonstrations alone; in this space a chunk that moves the tool towards a target seen in the image
is close to linear in "target minus tool" (the end-effector action spaces of Diffusion Policy,
Chi et al. 2023, and of most manipulation VLAs, e.g. OpenVLA's 7-DoF end-effector deltas).

No rclpy here. Not thread-safe (one pinocchio ``Data``): one instance per thread.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EndEffectorActions", "TCP_FLOOR_MARGIN", "rotation_log", "rotation_exp", "tcp_floor_from_spec"]

_POSE_DIM = 6

#: Height kept above the safety monitor's table limit for ``ee_link`` by :func:`tcp_floor_from_spec`
#: [m]: a target on the floor itself would pass the monitor only until the arm's tracking error
#: dips it by a millimetre.
TCP_FLOOR_MARGIN = 0.002


def tcp_floor_from_spec(spec, margin: float = TCP_FLOOR_MARGIN) -> float | None:
    """The lowest ``ee_link`` height [m, ``base_link``] the safety monitor lets a command reach,
    plus ``margin``: ``table_height + clearance + r + |c|`` over the ``safety.cartesian`` spheres
    fixed to ``ee_link`` (radius r, centre c in the link frame; :mod:`vla_mpc.core.safety_cartesian`).

    Returns:
        The floor, or None when the spec has no table or no sphere on ``ee_link``.

    Raises:
        ValueError: a malformed ``safety.cartesian`` block.
    """
    from vla_mpc.core.safety_cartesian import CartesianConfig

    block = (getattr(spec, "safety", None) or {}).get("cartesian")
    if not block:
        return None
    config = CartesianConfig.from_dict(block)
    reach = [s.radius + float(np.linalg.norm(s.center)) for s in config.spheres if s.link == spec.ee_link]
    if config.table_height is None or not reach:
        return None
    return float(config.table_height + config.clearance + max(reach) + margin)


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Rotation vectors of rotation matrices.

    Args:
        R: (..., 3, 3) float64 rotation matrices.

    Returns:
        (..., 3) float64 rotation vectors [rad], angle in [0, pi). Accurate for angles below
        about 3 rad (the chunk deltas here are a few hundredths of a radian).
    """
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    vee = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], axis=-1)
    sin = np.sin(theta)
    small = sin < 1e-6
    scale = np.where(small, 0.5 + theta**2 / 12.0, theta / (2.0 * np.where(small, 1.0, sin)))
    return vee * scale[..., None]


def rotation_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrices of rotation vectors (Rodrigues' formula).

    Args:
        w: (..., 3) float64 rotation vectors [rad].

    Returns:
        (..., 3, 3) float64 rotation matrices.
    """
    w = np.asarray(w, dtype=np.float64)
    theta = np.linalg.norm(w, axis=-1)
    K = np.zeros(w.shape[:-1] + (3, 3))
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -w[..., 2], w[..., 1], -w[..., 0]
    K[..., 1, 0], K[..., 2, 0], K[..., 2, 1] = w[..., 2], -w[..., 1], w[..., 0]
    small = theta < 1e-8
    t = np.where(small, 1.0, theta)
    a = np.where(small, 1.0, np.sin(t) / t)
    b = np.where(small, 0.5, (1.0 - np.cos(t)) / t**2)
    return np.eye(3) + a[..., None, None] * K + b[..., None, None] * (K @ K)


class EndEffectorActions:
    """Joint chunks <-> end-effector delta chunks for one robot (module docstring).

    Args:
        model: a :class:`~vla_mpc.core.robot_model.RobotModel`.
        iterations: DLS iterations per chunk step (each a forward-kinematics pass and a Jacobian).
        damping: DLS damping lambda [m, rad].
        max_step: largest joint change per iteration [rad] (2-norm).
        tcp_floor: lowest ``ee_link`` height [m, ``base_link``] :meth:`to_joint_targets` aims at
            (:func:`tcp_floor_from_spec`: the safety monitor's table limit), or None (no floor).
            A target below it is raised onto it, so a sampled chunk that dips toward the table
            slides along it: the monitor brakes (holds) a command that would cross its limit,
            which stalled learned pushes at their stroke height (4 mm above the limit).

    Attributes:
        dim: feature size, 6 + (n - n_arm).
    """

    def __init__(self, model, iterations: int = 3, damping: float = 1e-2, max_step: float = 0.2,
                 tcp_floor: float | None = None) -> None:
        if iterations < 1 or damping <= 0 or max_step <= 0:
            raise ValueError("EndEffectorActions: iterations >= 1, damping > 0 and max_step > 0 required")
        if tcp_floor is not None and not math.isfinite(tcp_floor):
            raise ValueError(f"EndEffectorActions: tcp_floor must be finite or None, got {tcp_floor!r}")
        self.tcp_floor = None if tcp_floor is None else float(tcp_floor)
        self.model = model
        spec = model.spec
        self.n, self.n_arm = spec.n_joints, spec.n_arm
        self.dim = _POSE_DIM + self.n - self.n_arm
        self.iterations, self.damping, self.max_step = int(iterations), float(damping), float(max_step)
        self._lo = np.asarray(spec.limits.lower, dtype=np.float64)
        self._hi = np.asarray(spec.limits.upper, dtype=np.float64)
        #: (3, 3) orientation of ``ee_link`` at ``spec.home``: the reference of the rotation features.
        self.home_rotation = np.asarray(model.fk(np.asarray(spec.home, dtype=np.float64)))[:3, :3].copy()

    def _checked(self, q: np.ndarray, x: np.ndarray, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
        """q (B, n) and ``name`` (B, H, width) as float64, or ValueError on shapes / non-finite values."""
        q = np.asarray(q, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if q.ndim != 2 or q.shape[1] != self.n or x.ndim != 3 or x.shape[0] != q.shape[0] or x.shape[2] != width:
            raise ValueError(f"expected q (B, {self.n}) and {name} (B, H, {width}), got {q.shape} and {x.shape}")
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(x))):
            raise ValueError(f"q and {name} must be finite")
        return q, x

    def _poses(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, n) -> positions (M, 3), rotations (M, 3, 3)."""
        T = self.model.fk(q) if len(q) else np.empty((0, 4, 4))
        return T[:, :3, 3], T[:, :3, :3]

    def target_poses(self, targets: np.ndarray) -> np.ndarray:
        """The pose part of :meth:`features` that does not depend on the measured state.

        Forward kinematics of every target is most of the cost of :meth:`features` (H per row,
        ~15 µs each); it is the same however the measured positions are perturbed (training's
        state noise), so training computes it once per dataset row and passes it back.

        Args:
            targets: (B, H, n) absolute joint targets [rad, m] over ``joint_names``.

        Returns:
            (B, H, 6) float64: ``ee_link`` position in ``base_link`` [m], then its orientation
            as a rotation vector from ``home_rotation`` (``base_link`` axes) [rad].

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        a = np.asarray(targets, dtype=np.float64)
        if a.ndim != 3 or a.shape[2] != self.n or not np.all(np.isfinite(a)):
            raise ValueError(f"targets must be finite (B, H, {self.n}), got {a.shape}")
        b, h, _ = a.shape
        p, R = self._poses(a.reshape(b * h, self.n))
        out = np.empty((b, h, _POSE_DIM))
        out[..., :3] = p.reshape(b, h, 3)
        out[..., 3:] = rotation_log(R.reshape(b, h, 3, 3) @ self.home_rotation.T)
        return out

    def features(self, q: np.ndarray, targets: np.ndarray, poses: np.ndarray | None = None) -> np.ndarray:
        """End-effector delta features of joint-target chunks.

        Args:
            q: (B, n) measured joint positions [rad, m] over ``joint_names``.
            targets: (B, H, n) absolute joint targets.
            poses: (B, H, 6) :meth:`target_poses` of ``targets`` when already known (then only
                ``q``'s forward kinematics is computed), or None.

        Returns:
            (B, H, dim) float64: position delta [m] and orientation from ``home_rotation`` [rad]
            (both in ``base_link`` axes), other joints' targets [m or rad].

        Raises:
            ValueError: shapes that do not match, or non-finite values.
        """
        q, a = self._checked(q, targets, "targets", self.n)
        b, h, _ = a.shape
        if poses is None:
            poses = self.target_poses(a)
        poses = np.asarray(poses, dtype=np.float64)
        if poses.shape != (b, h, _POSE_DIM) or not np.all(np.isfinite(poses)):
            raise ValueError(f"poses must be finite ({b}, {h}, {_POSE_DIM}) (target_poses), got {poses.shape}")
        p0, _ = self._poses(q)
        out = np.empty((b, h, self.dim))
        out[..., :3] = poses[..., :3] - p0[:, None]
        out[..., 3:6] = poses[..., 3:]
        out[..., 6:] = a[..., self.n_arm:]
        return out

    def to_joint_targets(self, q: np.ndarray, features: np.ndarray, committed: np.ndarray | None = None) -> np.ndarray:
        """Joint-target chunks that put ``ee_link`` at the poses ``features`` describe.

        For each step k the target pose is ``p(q) + dp_k`` (its height raised to ``tcp_floor``
        when below it), ``exp(w_k) R_home``; the arm joints
        follow it by ``iterations`` damped-least-squares steps from step k-1's solution (step 0
        from ``q``), clipped to the joint limits; the other joints take their targets clipped
        to their limits. Unreachable poses give the closest joints found, never an error.
        A 7-DoF arm reaches a pose with many joint vectors, so steps already committed
        (real-time chunking) are taken as given, and the chain continues from the last of them:
        the chunk stays continuous in joint space, null space included.

        Args:
            q: (B, n) measured joint positions; features: (B, H, dim) (:meth:`features`).
            committed: (B, P, n) joint targets of the chunk's first P steps, kept exactly, or None.

        Returns:
            (B, H, n) float64 absolute joint targets [rad, m].

        Raises:
            ValueError: wrong shapes or non-finite values.
        """
        q, f = self._checked(q, features, "features", self.dim)
        b, h, _ = f.shape
        p_fixed = 0
        if committed is not None:
            committed = np.asarray(committed, dtype=np.float64)
            if committed.ndim != 3 or committed.shape[0] != b or committed.shape[2] != self.n:
                raise ValueError(f"committed must be (B={b}, P, {self.n}), got {committed.shape}")
            p_fixed = min(h, committed.shape[1])
        na, lam2 = self.n_arm, self.damping**2
        lo, hi = self._lo[:na], self._hi[:na]
        p0, _ = self._poses(q)
        p_t = p0[:, None] + f[..., :3]
        if self.tcp_floor is not None:
            p_t[..., 2] = np.maximum(p_t[..., 2], self.tcp_floor)
        R_t = rotation_exp(f[..., 3:6]) @ self.home_rotation
        out = np.empty((b, h, self.n))
        out[..., na:] = np.clip(f[..., 6:], self._lo[na:], self._hi[na:])
        eye = np.eye(_POSE_DIM)
        if p_fixed:
            out[:, :p_fixed] = committed[:, :p_fixed]
        for i in range(b):
            x = q[i].copy() if not p_fixed else committed[i, p_fixed - 1].copy()
            for k in range(p_fixed, h):
                x[na:] = out[i, k, na:]
                for _ in range(self.iterations):
                    T = self.model.fk(x)
                    e = np.concatenate([p_t[i, k] - T[:3, 3], rotation_log(R_t[i, k] @ T[:3, :3].T)])
                    if math.sqrt(float(e @ e)) < 1e-5:
                        break
                    J = self.model.jacobian(x)
                    dq = J.T @ np.linalg.solve(J @ J.T + lam2 * eye, e)
                    norm = float(np.linalg.norm(dq))
                    if norm > self.max_step:
                        dq *= self.max_step / norm
                    x[:na] = np.clip(x[:na] + dq, lo, hi)
                out[i, k, :na] = x[:na]
        return out

    def stats(self, proprio: np.ndarray, actions: np.ndarray, max_rows: int = 20_000) -> dict:
        """Normalisation statistics of the features over a dataset.

        Args:
            proprio: (N, 2n) positions then velocities; actions: (N, H, n) absolute targets.
            max_rows: evenly strided subset size (forward kinematics costs ~15 µs a configuration).

        Returns:
            ``{"mean": [dim], "std": [dim] (floored at 1e-3), "min": [dim], "max": [dim]}``.
        """
        n = actions.shape[0]
        idx = np.arange(0, n, max(1, n // max_rows))
        f = self.features(np.asarray(proprio[idx], dtype=np.float64)[:, : self.n], actions[idx]).reshape(-1, self.dim)
        return {"mean": f.mean(0).tolist(), "std": np.maximum(f.std(0), 1e-3).tolist(),
                "min": f.min(0).tolist(), "max": f.max(0).tolist()}
