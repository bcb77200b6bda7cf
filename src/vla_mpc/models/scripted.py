"""Scripted (privileged) policy backends and the System 2 / System 1 backend interfaces.

**Not a learned model.** :class:`ScriptedSystem2` reads the simulator's ground-truth object poses
(``/vla_mpc/sim/object_poses``, privileged information a real robot does not have) and a parsed
instruction; :class:`ScriptedSystem1` is a hand-written pick-and-place state machine with inverse
kinematics. Together they let the whole ROS graph drive the simulated robot ("pick up the red cube")
before learned models exist, and they are the reference the learned backends are compared with.

Both implement the backend interfaces of :mod:`vla_mpc.models.base` (re-exported here).

The scripted latent is one token of :data:`LATENT_FIELDS`; decode it with :func:`decode_latent`.
No rclpy here.
"""

from __future__ import annotations

import enum
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from vla_mpc.models.base import LATENT_LABELS, System1Backend, System2Backend

if TYPE_CHECKING:  # kinematics is injected; importing it here would pull in pinocchio
    from vla_mpc.core.robot_model import RobotModel, RobotSpec

__all__ = [
    "LATENT_FIELDS",
    "LATENT_LABELS",
    "Task",
    "Phase",
    "TaskSpec",
    "LatentTask",
    "System2Backend",
    "System1Backend",
    "parse_instruction",
    "encode_latent",
    "decode_latent",
    "ScriptedSystem2",
    "ScriptedSystem1Config",
    "ScriptedSystem1",
]

# One token; positions [m] in base_link. instr_id: CRC of the parsed task, exact in float32 (< 2^24).
LATENT_FIELDS = (
    "valid", "task", "instr_id", "obj_x", "obj_y", "obj_z", "goal_x", "goal_y", "goal_z",
)
_F = {name: i for i, name in enumerate(LATENT_FIELDS)}


# ------------------------------------------------------------------------------ instruction parse


class Task(enum.IntEnum):
    """Task ids carried in the latent's ``task`` field."""

    IDLE = 0
    REACH = 1
    PICK = 2
    PLACE = 3


@dataclass(frozen=True)
class TaskSpec:
    """A parsed instruction: the task, the object to act on, and (PLACE) the destination object."""

    task: Task
    target: str
    destination: str | None = None

    @property
    def instr_id(self) -> int:
        """Stable id in [0, 2^24) (exact in float32): changes when the task or its objects change."""
        key = f"{self.task.name}|{self.target}|{self.destination or ''}"
        return zlib.crc32(key.encode()) & 0xFFFFFF


_NOUN_SYNONYMS = {"block": "cube", "box": "cube", "cubes": "cube", "blocks": "cube", "ball": "sphere"}
_PLACE_PREPOSITIONS = ("on", "onto", "in", "into", "inside", "top", "above", "over")
_PICK_VERBS = ("pick", "lift", "grasp", "grab", "take", "raise", "hold")
_REACH_VERBS = ("reach", "touch", "approach", "go", "move", "point", "hover")
_PLACE_VERBS = ("put", "place", "stack", "set", "move", "drop", "bring")


def _words(text: str) -> list[str]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [_NOUN_SYNONYMS.get(w, w) for w in words]


def _find(words: list[str], phrase: list[str]) -> int:
    n = len(phrase)
    for i in range(len(words) - n + 1):
        if words[i:i + n] == phrase:
            return i
    return -1


def parse_instruction(instruction: str, object_names: list[str] | tuple[str, ...]) -> TaskSpec:
    """Parse an English instruction against the scene's object names.

    Object names are the sim's marker namespaces such as ``red_cube``; the instruction mentions
    them as words ("the red cube", "red block": block/box -> cube, ball -> sphere). Grammar:

    * PLACE: two objects with a place preposition between them ("put the red cube on the blue
      cube", "stack the red block onto the green one" is *not* understood: name both objects);
    * PICK: a pick verb ("pick up", "lift", "grasp", "grab", "take", "raise", "hold");
    * REACH: a reach verb ("reach", "touch", "approach", "go to", "move to", "hover over").

    Returns:
        The :class:`TaskSpec`.

    Raises:
        ValueError: no known object mentioned (names the objects that exist), or no verb understood.
    """
    words = _words(instruction)
    mentions: list[tuple[int, str]] = []
    for name in object_names:
        pos = _find(words, _words(name.replace("_", " ")))
        if pos >= 0:
            mentions.append((pos, name))
    if not mentions:
        raise ValueError(f"instruction {instruction!r} names none of the objects {sorted(object_names)}")
    mentions.sort()
    target = mentions[0][1]
    if len(mentions) >= 2:
        between = words[mentions[0][0]:mentions[1][0]]
        if any(p in between for p in _PLACE_PREPOSITIONS) and any(v in words for v in _PLACE_VERBS):
            return TaskSpec(Task.PLACE, target, mentions[1][1])
    if any(v in words for v in _PICK_VERBS):
        return TaskSpec(Task.PICK, target)
    if any(v in words for v in _REACH_VERBS):
        return TaskSpec(Task.REACH, target)
    raise ValueError(
        f"instruction {instruction!r}: no verb understood (pick: {_PICK_VERBS}, reach: {_REACH_VERBS}, "
        f"place: {_PLACE_VERBS} + a preposition between two objects)"
    )


# ---------------------------------------------------------------------------------------- latent


@dataclass(frozen=True)
class LatentTask:
    """A decoded scripted latent. Positions (3,) float64 [m] in ``base_link``."""

    valid: bool
    task: Task
    instr_id: int
    object_position: np.ndarray
    goal_position: np.ndarray


def encode_latent(
    spec: TaskSpec | None, object_position: np.ndarray | None = None, goal_position: np.ndarray | None = None
) -> np.ndarray:
    """Scripted latent ``z``: (1, len(LATENT_FIELDS)) float32; ``spec=None`` -> an invalid (idle) z.

    Args:
        spec: the parsed task, or None.
        object_position: (3,) target object centre [m] in base_link (required with ``spec``).
        goal_position: (3,) PLACE release point [m] in base_link, or None (zeros).
    """
    z = np.zeros((1, len(LATENT_FIELDS)), dtype=np.float32)
    if spec is None:
        return z
    z[0, _F["valid"]] = 1.0
    z[0, _F["task"]] = float(spec.task)
    z[0, _F["instr_id"]] = float(spec.instr_id)
    z[0, _F["obj_x"]:_F["obj_z"] + 1] = np.asarray(object_position, dtype=np.float64)
    if goal_position is not None:
        z[0, _F["goal_x"]:_F["goal_z"] + 1] = np.asarray(goal_position, dtype=np.float64)
    return z


def decode_latent(z: np.ndarray) -> LatentTask:
    """(1, len(LATENT_FIELDS)) float32 -> :class:`LatentTask`.

    Raises:
        ValueError: wrong shape, non-finite values or an unknown task id.
    """
    a = np.asarray(z)
    if a.shape != (1, len(LATENT_FIELDS)):
        raise ValueError(f"scripted latent must be (1, {len(LATENT_FIELDS)}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("scripted latent has non-finite values")
    t = int(round(float(a[0, _F["task"]])))
    if t not in Task._value2member_map_:
        raise ValueError(f"scripted latent task id {t} unknown (known: {[int(x) for x in Task]})")
    row = a[0].astype(np.float64)
    return LatentTask(
        valid=bool(row[_F["valid"]] > 0.5),
        task=Task(t),
        instr_id=int(round(row[_F["instr_id"]])),
        object_position=row[_F["obj_x"]:_F["obj_z"] + 1].copy(),
        goal_position=row[_F["goal_x"]:_F["goal_z"] + 1].copy(),
    )


class ScriptedSystem2:
    """Privileged System 2: instruction + ground-truth object positions -> scripted latent.

    Ignores the images (it still receives them, like a learned backend). ``status`` says why the
    last latent is invalid (instruction not understood, object absent), or ``"ok"``.

    Args:
        place_clearance: height of the release point above the destination object's centre [m],
            >= 0 (the sim's 4 cm cubes: one edge + 5 mm, so the held cube is released just above).
    """

    latent_shape = (1, len(LATENT_FIELDS))

    def __init__(self, place_clearance: float = 0.045) -> None:
        if not (math.isfinite(place_clearance) and place_clearance >= 0.0):
            raise ValueError(f"place_clearance must be finite and >= 0 m, got {place_clearance!r}")
        self.place_clearance = float(place_clearance)
        self.status = "no instruction"
        self._cache: tuple[str, tuple[str, ...], TaskSpec] | None = None

    def reset(self) -> None:
        self.status = "no instruction"
        self._cache = None

    def infer(
        self,
        images: Mapping[str, np.ndarray] | None,
        instruction: str,
        objects: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Latent for ``instruction`` in the scene ``objects`` {name: (3,) [m] in base_link}.

        Returns:
            (1, len(LATENT_FIELDS)) float32; all zeros (``valid = 0``) when the instruction is
            empty or not understood, or the objects are unknown (see ``status``).
        """
        if not instruction.strip():
            self.status = "no instruction"
            return encode_latent(None)
        if not objects:
            self.status = "no object poses (privileged /vla_mpc/sim/object_poses)"
            return encode_latent(None)
        names = tuple(sorted(objects))
        if self._cache is not None and self._cache[:2] == (instruction, names):
            spec = self._cache[2]
        else:
            try:
                spec = parse_instruction(instruction, names)
            except ValueError as exc:
                self.status = str(exc)
                self._cache = None
                return encode_latent(None)
            self._cache = (instruction, names, spec)
        obj = np.asarray(objects[spec.target], dtype=np.float64).reshape(3)
        goal = None
        if spec.destination is not None:
            goal = np.asarray(objects[spec.destination], dtype=np.float64).reshape(3) + [0.0, 0.0, self.place_clearance]
        self.status = "ok"
        return encode_latent(spec, obj, goal)


# ------------------------------------------------------------------------------------- System 1


class Phase(enum.Enum):
    """Scripted System 1 state-machine phases."""

    IDLE = "idle"
    PREGRASP = "pregrasp"
    DESCEND = "descend"
    CLOSE = "close"
    LIFT = "lift"
    TRANSPORT = "transport"
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    DONE = "done"


@dataclass(frozen=True)
class ScriptedSystem1Config:
    """Scripted System 1 settings. Heights [m] along base_link z; fractions of the joint limits.

    Attributes:
        chunk_size: steps per chunk, >= 2.
        dt: time between chunk steps [s], > 0.
        pregrasp_height: TCP height above the object centre before descending [m], > 0.
        grasp_height: TCP height above the object centre when closing [m].
        reach_height: REACH: final TCP height above the object centre [m], > 0 (the sim's 4 cm
            cubes: 1.5 cm above the top face, inside its 3 cm reach radius).
        lift_height: how far the grasped object is lifted [m], > 0.
        position_tolerance: TCP distance that completes a move phase [m], > 0.
        speed_scale: fraction of each arm joint's velocity limit used, in (0, 1].
        gripper_speed_scale: fraction of the gripper velocity limit used, in (0, 1].
        min_move_time: shortest move [s], > 0 (keeps short corrections gentle).
        gripper_tolerance: gripper distance to open/closed that completes a gripper phase [m], > 0.
        stall_calls: consecutive calls with the gripper still (< 0.5 mm) that also complete a
            gripper phase (fingers stopped by the object), >= 1.
    """

    chunk_size: int = 16
    dt: float = 0.05
    pregrasp_height: float = 0.10
    grasp_height: float = 0.0
    reach_height: float = 0.035
    lift_height: float = 0.15
    position_tolerance: float = 0.01
    speed_scale: float = 0.3
    gripper_speed_scale: float = 0.9
    min_move_time: float = 0.3
    gripper_tolerance: float = 0.003
    stall_calls: int = 3

    def __post_init__(self) -> None:
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 2:
            raise ValueError(f"chunk_size must be an int >= 2, got {self.chunk_size!r}")
        positive = ("dt", "pregrasp_height", "reach_height", "lift_height", "position_tolerance", "min_move_time", "gripper_tolerance")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not math.isfinite(self.grasp_height):
            raise ValueError(f"grasp_height must be finite, got {self.grasp_height!r}")
        for name in ("speed_scale", "gripper_speed_scale"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 < v <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if isinstance(self.stall_calls, bool) or not isinstance(self.stall_calls, int) or self.stall_calls < 1:
            raise ValueError(f"stall_calls must be an int >= 1, got {self.stall_calls!r}")


# Quintic from (p0, v0, a0 = 0) to (g, 0, 0): coefficients of tau^3, tau^4, tau^5.
_QUINTIC = np.array([[1.0, 1.0, 1.0], [3.0, 4.0, 5.0], [6.0, 12.0, 20.0]])


def _quintic(p0: np.ndarray, v0: np.ndarray, goal: np.ndarray, duration: float, t: np.ndarray):
    """Positions (M, n) and velocities (M, n) at times ``t`` (M,) [s] (held at ``goal`` after)."""
    T = duration
    rhs = np.stack([goal - p0 - v0 * T, -v0 * T, np.zeros_like(p0)])  # (3, n)
    c3, c4, c5 = np.linalg.solve(_QUINTIC, rhs)
    tau = np.clip(t / T, 0.0, 1.0)[:, None]
    pos = p0 + v0 * T * tau + c3 * tau**3 + c4 * tau**4 + c5 * tau**5
    vel = (v0 * T + 3 * c3 * tau**2 + 4 * c4 * tau**3 + 5 * c5 * tau**4) / T
    after = (t >= T)[:, None]
    return np.where(after, goal, pos), np.where(after, 0.0, vel)


@dataclass
class _State:
    phase: Phase = Phase.IDLE
    instr_id: int = -1
    latched: np.ndarray | None = None  # TCP target latched when the grasp closes [m]
    gripper_history: list[float] = field(default_factory=list)
    ik_cache_key: tuple | None = None
    ik_cache_q: np.ndarray | None = None


class ScriptedSystem1:
    """Privileged pick-and-place state machine: scripted latent + proprio -> joint-space chunk.

    Phases (TCP targets in base_link, top-down grasp with the home pose's TCP orientation):
    PREGRASP (``pregrasp_height`` above the object, gripper open) -> DESCEND (``grasp_height``) ->
    CLOSE (gripper closed; done when closed or stalled on the object) -> LIFT (``lift_height`` up)
    -> DONE for PICK; PLACE continues TRANSPORT (above the goal) -> LOWER (goal) -> RELEASE ->
    RETREAT -> DONE; REACH is PREGRASP -> DESCEND (to ``reach_height``) -> DONE. A move phase completes when the *measured* TCP
    (forward kinematics of ``proprio``) is within ``position_tolerance`` of its target.

    Each chunk is a quintic in joint space from the chunk's start (``prefix[0]``, else ``proprio``,
    with the prefix's velocity) to the IK solution of the phase target, timed so every arm joint
    stays under ``speed_scale`` x its velocity limit; the gripper ramps at ``gripper_speed_scale``
    x its limit. A new instruction (``instr_id``) restarts the machine; an invalid latent holds.

    Args:
        spec: ``vla_mpc.core.robot_model.RobotSpec``.
        model: ``vla_mpc.core.robot_model.RobotModel`` for ``spec``.
        config: :class:`ScriptedSystem1Config`.
    """

    def __init__(self, spec: RobotSpec, model: RobotModel, config: ScriptedSystem1Config | None = None) -> None:
        self.spec = spec
        self.model = model
        self.config = config or ScriptedSystem1Config()
        self.chunk_size = self.config.chunk_size
        self.dt = self.config.dt
        names = list(spec.joint_names)
        self.action_dim = len(names)
        self._arm = np.array([names.index(j) for j in spec.arm_joint_names])
        gripper = getattr(spec, "gripper", None)
        self._grip = np.array([names.index(j) for j in gripper.joints], dtype=int) if gripper else np.zeros(0, int)
        self._grip_open = np.asarray(gripper.open, dtype=np.float64) if gripper else np.zeros(0)
        self._grip_closed = np.asarray(gripper.closed, dtype=np.float64) if gripper else np.zeros(0)
        vmax = np.asarray(spec.limits.velocity, dtype=np.float64)
        self._v_arm = self.config.speed_scale * vmax[self._arm]
        self._v_grip = self.config.gripper_speed_scale * vmax[self._grip]
        home = np.asarray(spec.home, dtype=np.float64)
        self._rotation = np.asarray(model.fk(home))[:3, :3].copy()
        self._state = _State()
        self.status = "idle"

    @classmethod
    def from_robot(cls, robot: str = "panda", config: ScriptedSystem1Config | None = None) -> "ScriptedSystem1":
        """Build with ``load_robot_spec(robot)`` and its ``RobotModel``."""
        from vla_mpc.core.robot_model import RobotModel, load_robot_spec

        spec = load_robot_spec(robot)
        return cls(spec, RobotModel(spec), config)

    # ------------------------------------------------------------------------------ public
    @property
    def phase(self) -> Phase:
        return self._state.phase

    def reset(self) -> None:
        self._state = _State()
        self.status = "idle"

    def tcp_position(self, q: np.ndarray) -> np.ndarray:
        """TCP position (3,) [m] in base_link for joint positions ``q`` over ``joint_names``."""
        q = np.asarray(q, dtype=np.float64)
        return np.asarray(self.model.fk(q))[:3, 3].copy()

    def phase_target(self, task: LatentTask) -> tuple[np.ndarray, np.ndarray]:
        """TCP target (3,) [m] and gripper target (G,) [m] of the current phase."""
        c, st = self.config, self._state
        up = np.array([0.0, 0.0, 1.0])
        obj, goal = task.object_position, task.goal_position
        ph = st.phase
        if ph in (Phase.IDLE, Phase.PREGRASP):
            return obj + c.pregrasp_height * up, self._grip_open
        if task.task is Task.REACH:  # DESCEND, DONE
            return obj + c.reach_height * up, self._grip_open
        if ph is Phase.DESCEND:
            return obj + c.grasp_height * up, self._grip_open
        if ph is Phase.CLOSE:
            return st.latched, self._grip_closed
        if ph is Phase.LIFT or (ph is Phase.DONE and task.task is Task.PICK):
            return st.latched + c.lift_height * up, self._grip_closed
        if ph is Phase.TRANSPORT:
            z = max(st.latched[2] + c.lift_height, goal[2] + c.pregrasp_height)
            return np.array([goal[0], goal[1], z]), self._grip_closed
        if ph in (Phase.LOWER, Phase.RELEASE):
            return goal + c.grasp_height * up, self._grip_closed if ph is Phase.LOWER else self._grip_open
        return goal + (c.grasp_height + c.pregrasp_height) * up, self._grip_open  # RETREAT, DONE (place)

    def infer(
        self,
        z: np.ndarray,
        proprio: np.ndarray,
        prefix: np.ndarray | None = None,
        velocity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Next chunk.

        Args:
            z: scripted latent (1, len(LATENT_FIELDS)) float32.
            proprio: (action_dim,) measured joint positions over ``joint_names`` [rad or m].
            prefix: (P >= 1, action_dim) committed targets for the chunk's first steps, or None;
                the chunk starts at ``prefix[0]`` with the prefix's velocity.
            velocity: measured joint velocities; unused (the plan starts from the commanded
                prefix, not the measured state).

        Returns:
            (chunk_size, action_dim) float64 targets [rad or m]; ``chunk[0]`` is the start.

        Raises:
            ValueError: bad shapes or non-finite inputs.
        """
        q = np.asarray(proprio, dtype=np.float64).reshape(-1)
        if q.shape != (self.action_dim,) or not np.all(np.isfinite(q)):
            raise ValueError(f"proprio must be finite ({self.action_dim},), got shape {np.shape(proprio)}")
        p0, v0 = q.copy(), np.zeros_like(q)
        if prefix is not None:
            pre = np.asarray(prefix, dtype=np.float64)
            if pre.ndim != 2 or pre.shape[1] != self.action_dim or pre.shape[0] < 1 or not np.all(np.isfinite(pre)):
                raise ValueError(f"prefix must be finite (P >= 1, {self.action_dim}), got {pre.shape}")
            p0 = pre[0].copy()
            if pre.shape[0] >= 2:
                v0 = (pre[1] - pre[0]) / self.dt
        task = decode_latent(z)
        st = self._state
        if not task.valid or task.task is Task.IDLE:
            if st.phase is not Phase.IDLE:
                self.reset()
            self.status = "idle: invalid latent, holding"
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        if task.instr_id != st.instr_id:
            self._state = st = _State(phase=Phase.PREGRASP, instr_id=task.instr_id)
        self._advance(task, q)
        tcp_target, grip_target = self.phase_target(task)
        q_goal = self._solve_ik(tcp_target, q)
        if q_goal is None:
            self.status = f"{st.phase.value}: IK failed for TCP target {np.round(tcp_target, 3).tolist()}; holding"
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        self.status = f"{st.phase.value}: TCP target {np.round(tcp_target, 3).tolist()}"
        return self._chunk(p0, v0, q_goal, grip_target)

    # ----------------------------------------------------------------------------- internals
    def _advance(self, task: LatentTask, q: np.ndarray) -> None:
        """Run phase transitions on the measured state (at most one per phase per call)."""
        c, st = self.config, self._state
        grip = q[self._grip]
        st.gripper_history = (st.gripper_history + [float(np.mean(grip)) if grip.size else 0.0])[-(c.stall_calls + 1):]
        stalled = len(st.gripper_history) > c.stall_calls and (
            max(st.gripper_history) - min(st.gripper_history) < 5e-4
        )
        for _ in range(len(Phase)):
            target, grip_target = self.phase_target(task)
            reached = np.linalg.norm(self.tcp_position(q) - target) < c.position_tolerance
            grip_done = grip.size == 0 or np.all(np.abs(grip - grip_target) < c.gripper_tolerance)
            ph, nxt = st.phase, None
            if ph is Phase.PREGRASP and reached and grip_done:
                nxt = Phase.DESCEND
            elif ph is Phase.DESCEND and reached and task.task is Task.REACH:
                nxt = Phase.DONE
            elif ph is Phase.DESCEND and reached:
                st.latched = target.copy()
                nxt = Phase.CLOSE
            elif ph is Phase.CLOSE and (grip_done or (stalled and np.all(grip < self._grip_open - c.gripper_tolerance))):
                nxt = Phase.LIFT
            elif ph is Phase.LIFT and reached:
                nxt = Phase.DONE if task.task is Task.PICK else Phase.TRANSPORT
            elif ph is Phase.TRANSPORT and reached:
                nxt = Phase.LOWER
            elif ph is Phase.LOWER and reached:
                nxt = Phase.RELEASE
            elif ph is Phase.RELEASE and (grip_done or (stalled and np.all(grip > self._grip_closed + c.gripper_tolerance))):
                nxt = Phase.RETREAT
            elif ph is Phase.RETREAT and reached:
                nxt = Phase.DONE
            if nxt is None:
                return
            st.phase = nxt
            st.gripper_history = st.gripper_history[-1:]
            stalled = False

    def _solve_ik(self, tcp_target: np.ndarray, q: np.ndarray) -> np.ndarray | None:
        """Arm joint positions (A,) for ``tcp_target``, cached per (phase, 1 mm-rounded target)."""
        st = self._state
        key = (st.phase, tuple(np.round(tcp_target, 3)))
        if st.ik_cache_key == key and st.ik_cache_q is not None:
            return st.ik_cache_q
        seed = q.copy()
        if st.ik_cache_q is not None:
            seed[self._arm] = st.ik_cache_q
        sol, converged, _err = self.model.ik(tcp_target, self._rotation, q0=seed)
        if not converged:
            return None
        arm = np.asarray(sol, dtype=np.float64)[self._arm]
        st.ik_cache_key, st.ik_cache_q = key, arm.copy()
        return arm.copy()

    def _chunk(self, p0: np.ndarray, v0: np.ndarray, q_goal_arm: np.ndarray, grip_target: np.ndarray) -> np.ndarray:
        """(chunk_size, action_dim): arm quintic under the velocity limits, gripper ramp."""
        c = self.config
        t = c.dt * np.arange(c.chunk_size)
        chunk = np.empty((c.chunk_size, self.action_dim))
        a0, av0 = p0[self._arm], v0[self._arm]
        dist = np.abs(q_goal_arm - a0)
        duration = max(c.min_move_time, float(np.max(1.875 * dist / self._v_arm)))
        probe = np.linspace(0.0, 1.0, 41)
        for _ in range(12):  # lengthen until the peak velocity fits (a large v0 can overshoot)
            _, vel = _quintic(a0, av0, q_goal_arm, duration, probe * duration)
            if np.all(np.abs(vel) <= self._v_arm * 1.0001):
                break
            duration *= 1.3
        pos, _ = _quintic(a0, av0, q_goal_arm, duration, t)
        # Hard guarantee: no step exceeds the scaled limit (only binds if v0 itself was too fast).
        step = self._v_arm * c.dt
        for k in range(1, c.chunk_size):
            pos[k] = pos[k - 1] + np.clip(pos[k] - pos[k - 1], -step, step)
        chunk[:, self._arm] = pos
        if self._grip.size:
            g0 = p0[self._grip]
            delta = np.clip(grip_target - g0, -self._v_grip * t[:, None], self._v_grip * t[:, None])
            chunk[:, self._grip] = g0 + delta
        others = np.setdiff1d(np.arange(self.action_dim), np.concatenate([self._arm, self._grip]))
        chunk[:, others] = p0[others]
        return chunk
