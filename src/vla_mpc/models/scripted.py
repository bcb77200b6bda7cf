"""Scripted (privileged) policy backends and the System 2 / System 1 backend interfaces.

**Not a learned model.** :class:`ScriptedSystem2` reads the simulator's ground-truth object poses
(``/vla_mpc/sim/object_poses``, privileged information a real robot does not have) and the
instruction, parsed by the one task parser :func:`vla_mpc.sim.tasks.parse_instruction`;
:class:`ScriptedSystem1` is a hand-written reach / push / pick / place state machine with inverse
kinematics (the robot's :class:`~vla_mpc.core.robot_model.RobotModel`). Together they are the
expert of the task suite (``vla_mpc.sim.tasks``; success rates measured by ``vla_mpc.sim.rollout``)
and drive the whole ROS graph before learned models exist.

Both implement the backend interfaces of :mod:`vla_mpc.models.base` (re-exported here).

The scripted latent is one token of :data:`LATENT_FIELDS`; decode it with :func:`decode_latent`.
No rclpy here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vla_mpc.models.base import LATENT_LABELS, System1Backend, System2Backend, joint_vector
from vla_mpc.sim.tasks import Task as ParsedTask
from vla_mpc.sim.tasks import parse_instruction

if TYPE_CHECKING:  # kinematics is injected; importing it here would pull in pinocchio
    from vla_mpc.core.robot_model import RobotModel, RobotSpec

__all__ = [
    "LATENT_FIELDS",
    "LATENT_LABELS",
    "KIND_TO_TASK_ID",
    "TaskId",
    "Phase",
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

# One token; positions [m] in base_link. instr_id: ``tasks.Task.task_id`` (CRC of the parsed task,
# exact in float32, < 2^24). goal: PLACE release point; PUSH where the cube should end up.
LATENT_FIELDS = (
    "valid", "task", "instr_id", "obj_x", "obj_y", "obj_z", "goal_x", "goal_y", "goal_z",
)
_F = {name: i for i, name in enumerate(LATENT_FIELDS)}


# ------------------------------------------------------------------------------------ task ids


class TaskId(enum.IntEnum):
    """Task ids carried in the latent's ``task`` field."""

    IDLE = 0
    REACH = 1
    PICK = 2
    PLACE = 3
    PUSH = 4


#: ``tasks.Task.kind`` -> latent task id.
KIND_TO_TASK_ID = {"reach": TaskId.REACH, "pick": TaskId.PICK, "pick_place": TaskId.PLACE,
                   "push": TaskId.PUSH}


# ---------------------------------------------------------------------------------------- latent


@dataclass(frozen=True)
class LatentTask:
    """A decoded scripted latent. Positions (3,) float64 [m] in ``base_link``."""

    valid: bool
    task: TaskId
    instr_id: int
    object_position: np.ndarray
    goal_position: np.ndarray


def encode_latent(
    task: ParsedTask | None, object_position: np.ndarray | None = None, goal_position: np.ndarray | None = None
) -> np.ndarray:
    """Scripted latent ``z``: (1, len(LATENT_FIELDS)) float32; ``task=None`` -> an invalid (idle) z.

    Args:
        task: the parsed task (``vla_mpc.sim.tasks.Task``), or None.
        object_position: (3,) target object centre [m] in base_link (required with ``task``).
        goal_position: (3,) PLACE release point / PUSH end point of the cube [m] in base_link, or
            None (zeros).
    """
    z = np.zeros((1, len(LATENT_FIELDS)), dtype=np.float32)
    if task is None:
        return z
    z[0, _F["valid"]] = 1.0
    z[0, _F["task"]] = float(KIND_TO_TASK_ID[task.kind])
    z[0, _F["instr_id"]] = float(task.task_id)
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
    if t not in TaskId._value2member_map_:
        raise ValueError(f"scripted latent task id {t} unknown (known: {[int(x) for x in TaskId]})")
    row = a[0].astype(np.float64)
    return LatentTask(
        valid=bool(row[_F["valid"]] > 0.5),
        task=TaskId(t),
        instr_id=int(round(row[_F["instr_id"]])),
        object_position=row[_F["obj_x"]:_F["obj_z"] + 1].copy(),
        goal_position=row[_F["goal_x"]:_F["goal_z"] + 1].copy(),
    )


class ScriptedSystem2:
    """Privileged System 2: instruction + ground-truth object positions -> scripted latent.

    Ignores the images (it still receives them, like a learned backend). ``status`` says why the
    last latent is invalid (instruction not understood, object absent), or ``"ok"``. A push's goal
    is fixed once per instruction: ``push_travel`` along the direction from where the object was
    when the instruction was first seen (until ``reset``). The latent's object position stays the
    object's position now, so System 1 re-aims its stroke from wherever the cube has gone
    (:meth:`ScriptedSystem1._push_line`).

    Args:
        place_clearance: release point above a destination *cube's* centre [m], >= 0 (the sim's
            4 cm cubes: one edge + 5 mm, so the held cube is released just above).
        pad_clearance: release point above a destination *pad's* centre [m], >= 0 (half a 4 cm
            cube + the pad's 1 mm half thickness + 5 mm).
        push_travel: how far a push moves the cube's centre [m], > 0 (tasks: success from 8 cm).
    """

    latent_shape = (1, len(LATENT_FIELDS))

    def __init__(self, place_clearance: float = 0.045, pad_clearance: float = 0.026,
                 push_travel: float = 0.11) -> None:
        for name, v in (("place_clearance", place_clearance), ("pad_clearance", pad_clearance)):
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"{name} must be finite and >= 0 m, got {v!r}")
        if not (math.isfinite(push_travel) and push_travel > 0.0):
            raise ValueError(f"push_travel must be finite and > 0 m, got {push_travel!r}")
        self.place_clearance = float(place_clearance)
        self.pad_clearance = float(pad_clearance)
        self.push_travel = float(push_travel)
        self.status = "no instruction"
        self._cache: tuple[str, tuple[str, ...], ParsedTask] | None = None
        self._push_start: dict[str, np.ndarray] = {}

    def reset(self) -> None:
        self.status = "no instruction"
        self._cache = None
        self._push_start = {}

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
            task = self._cache[2]
        else:
            try:
                task = parse_instruction(instruction, names)
            except ValueError as exc:
                self.status = str(exc)
                self._cache = None
                return encode_latent(None)
            self._cache = (instruction, names, task)
        obj = np.asarray(objects[task.object_name], dtype=np.float64).reshape(3)
        goal = None
        if task.kind == "pick_place":
            dest = np.asarray(objects[task.destination], dtype=np.float64).reshape(3)
            lift = self.pad_clearance if task.destination.endswith("_pad") else self.place_clearance
            goal = dest + [0.0, 0.0, lift]
        elif task.kind == "push":
            origin = self._push_start.setdefault(instruction, obj.copy())
            goal = origin + self.push_travel * np.asarray(task.direction, dtype=np.float64)
        self.status = "ok"
        return encode_latent(task, obj, goal)


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
    PUSH = "push"
    RETREAT = "retreat"
    WANDER = "wander"
    DONE = "done"


#: ``ScriptedSystem1Config.phases`` values.
PHASE_RULES = ("sequence", "state")

#: ``phases="state"``: a descent's horizontal slack [m] (``ScriptedSystem1.phase_from_state``).
_CONE_BASE, _CONE_SLOPE = 0.015, 0.3
#: PUSH: closer than this to its goal [m] the cube no longer sets the stroke's direction (the
#: direction to a point 1 cm away turns with every millimetre of slip); the last one is kept.
_PUSH_AIM_MIN = 0.02


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
        gripper_tolerance: gripper distance to open/closed that completes a gripper phase [m], > 0;
            per joint at least 5 % of its open-closed span (UR5e Robotiq 0.04 rad, GR1 hands 0.079 rad).
        stall_calls: consecutive calls with the gripper still (< 0.5 mm) that also complete a
            gripper phase (fingers stopped by the object), >= 1.
        push_height: PUSH: TCP height relative to the object centre during the stroke [m] (the
            closed fingertips then push the cube's lower half).
        push_standoff: PUSH: horizontal distance from the object centre to the TCP where the
            stroke starts (behind the object) [m], > 0.
        pusher_offset: PUSH: horizontal distance TCP -> object centre while in contact [m] (cube
            half edge + finger half thickness): the stroke ends this far short of the goal, > 0.
        push_step: PUSH: the stroke's TCP target leads the measured TCP by this much along the
            push line (straight Cartesian stroke, not a joint-space arc) [m], > 0.
        push_align: PUSH: turn the tool about base_link z by the stroke's first direction (modulo
            pi, so at most +-90 deg) so its fingers meet the object the same way for every
            direction; None: the robot config's ``sim.expert.push_align`` (default False). The
            UR5e's Robotiq fingers need it for sideways pushes; the Panda's do not.
        noise_std: std of an Ornstein-Uhlenbeck offset (correlation 0.9 per call) added to each
            chunk's goal joint positions [rad, m for fingers], >= 0; 0 = the clean expert. The
            chunk still starts at the committed prefix, so the perturbation is smooth.
        noise_seed: seed of that noise (and of ``random_actions``).
        random_actions: ignore the task: wander between random TCP targets in a box around the
            latent's object (+-0.2 m in x/y, 0-0.3 m above its centre; IK with the home
            orientation) with a random gripper command, a new target when reached or after 3 s
            (for world-model data).
        phases: how the phase is chosen at each call. ``"sequence"``: the phases run in order,
            each completed when the measured TCP comes within ``position_tolerance`` of its
            target (demonstrations). ``"state"``: the phase is read from the measured state
            (:meth:`ScriptedSystem1.phase_from_state`), so the expert is a policy of the state
            alone, as DAgger's labelling expert must be: a learner that passes 2 cm beside a
            waypoint is told to go on, not to go back to it.
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
    push_height: float = -0.006
    push_standoff: float = 0.06
    pusher_offset: float = 0.032
    push_step: float = 0.04
    push_align: bool | None = None
    noise_std: float = 0.0
    noise_seed: int = 0
    random_actions: bool = False
    phases: str = "sequence"

    def __post_init__(self) -> None:
        if self.phases not in PHASE_RULES:
            raise ValueError(f"phases must be one of {PHASE_RULES}, got {self.phases!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 2:
            raise ValueError(f"chunk_size must be an int >= 2, got {self.chunk_size!r}")
        positive = ("dt", "pregrasp_height", "reach_height", "lift_height", "position_tolerance",
                    "min_move_time", "gripper_tolerance", "push_standoff", "pusher_offset", "push_step")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("grasp_height", "push_height"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if not (isinstance(self.noise_std, (int, float)) and math.isfinite(self.noise_std) and self.noise_std >= 0.0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std!r}")
        if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int):
            raise ValueError(f"noise_seed must be an int, got {self.noise_seed!r}")
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
    wander_target: np.ndarray | None = None  # random_actions: (tcp (3,), gripper (G,))
    wander_grip: np.ndarray | None = None
    wander_calls: int = 0
    rest_z: float | None = None  # phases="state": the object's centre height when the instruction came [m]
    push_direction: np.ndarray | None = None  # PUSH: the last stroke direction aimed from >= _PUSH_AIM_MIN (3,)
    push_yaw: float | None = None  # PUSH with push_align: the stroke's direction when first aimed [rad]


class ScriptedSystem1:
    """Privileged pick-and-place state machine: scripted latent + proprio -> joint-space chunk.

    Phases (TCP targets in base_link, top-down grasp with the home pose's TCP orientation):
    PREGRASP (``pregrasp_height`` above the object, gripper open) -> DESCEND (``grasp_height``) ->
    CLOSE (gripper closed; done when closed or stalled on the object) -> LIFT (``lift_height`` up)
    -> DONE for PICK; PLACE continues TRANSPORT (above the goal) -> LOWER (goal) -> RELEASE ->
    RETREAT -> DONE; REACH is PREGRASP -> DESCEND (to ``reach_height``) -> DONE; PUSH is PREGRASP
    (``pregrasp_height`` above the stroke start, ``push_standoff`` behind the object, gripper
    closed) -> DESCEND (to ``push_height``) -> PUSH (straight stroke to ``pusher_offset`` short of
    the latent's goal, the target leading the TCP by ``push_step``; the line is re-aimed from the
    cube's position now at every call, :meth:`_push_line`) -> RETREAT (``pregrasp_height`` up) ->
    DONE. A move phase completes when the *measured* TCP (forward kinematics of
    ``proprio``) is within ``position_tolerance`` of its target; with ``phases="state"`` the phase
    is instead read from the measured state at every call (:meth:`phase_from_state`).

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
        self._grip_tol = np.maximum(self.config.gripper_tolerance, 0.05 * np.abs(self._grip_open - self._grip_closed))
        vmax = np.asarray(spec.limits.velocity, dtype=np.float64)
        self._v_arm = self.config.speed_scale * vmax[self._arm]
        self._v_grip = self.config.gripper_speed_scale * vmax[self._grip]
        home = np.asarray(spec.home, dtype=np.float64)
        self._rotation = np.asarray(model.fk(home))[:3, :3].copy()
        align = self.config.push_align
        if align is None:
            align = bool(((getattr(spec, "sim", None) or {}).get("expert") or {}).get("push_align", False))
        self._push_align = align
        self._state = _State()
        self._goal: tuple[np.ndarray, np.ndarray] | None = None  # (arm goal, gripper target) of the last infer
        self.status = "idle"
        self._rng = np.random.default_rng(self.config.noise_seed)
        self._noise = np.zeros(self.action_dim)
        self._tcp_now = self.tcp_position(home)

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
        """Forget the episode: phase, latched grasp and noise state (the noise stream continues)."""
        self._state = _State()
        self.status = "idle"
        self._noise = np.zeros(self.action_dim)
        self._goal: tuple[np.ndarray, np.ndarray] | None = None

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
        if task.task is TaskId.PUSH:
            start, end = self._push_line(task)
            if ph in (Phase.IDLE, Phase.PREGRASP):
                return start + c.pregrasp_height * up, self._grip_closed
            if ph is Phase.DESCEND:
                return start, self._grip_closed
            if ph is Phase.PUSH:
                return self._push_carrot(start, end), self._grip_closed
            return end + c.pregrasp_height * up, self._grip_closed  # RETREAT, DONE
        if ph in (Phase.IDLE, Phase.PREGRASP):
            return obj + c.pregrasp_height * up, self._grip_open
        if task.task is TaskId.REACH:  # DESCEND, DONE
            return obj + c.reach_height * up, self._grip_open
        if ph is Phase.DESCEND:
            return obj + c.grasp_height * up, self._grip_open
        if ph is Phase.CLOSE:
            return st.latched, self._grip_closed
        if ph is Phase.LIFT or (ph is Phase.DONE and task.task is TaskId.PICK):
            return st.latched + c.lift_height * up, self._grip_closed
        if ph is Phase.TRANSPORT:
            z = max(st.latched[2] + c.lift_height, goal[2] + c.pregrasp_height)
            return np.array([goal[0], goal[1], z]), self._grip_closed
        if ph in (Phase.LOWER, Phase.RELEASE):
            return goal + c.grasp_height * up, self._grip_closed if ph is Phase.LOWER else self._grip_open
        return goal + (c.grasp_height + c.pregrasp_height) * up, self._grip_open  # RETREAT, DONE (place)

    def _push_line(self, task: LatentTask) -> tuple[np.ndarray, np.ndarray]:
        """PUSH stroke start and end TCP positions (3,) [m] in base_link.

        The stroke runs from the cube's position now toward the latent's goal: ``push_standoff``
        behind the cube, to ``pusher_offset`` short of the goal. As the cube moves or slips
        sideways the line turns with it, so the stroke keeps the pusher behind the cube's centre
        and pushes it back toward the goal (closed-loop pushing; Mason, "Mechanics and Planning of
        Manipulator Pushing Operations", IJRR 1986: a push through the centre of friction
        translates the object, one beside it turns it).
        Within ``_PUSH_AIM_MIN`` of the goal the last direction is kept.
        """
        c, st = self.config, self._state
        d = (task.goal_position - task.object_position)[:2]
        n = float(np.linalg.norm(d))
        if n >= _PUSH_AIM_MIN or st.push_direction is None:
            u = np.array([d[0] / n, d[1] / n, 0.0]) if n > 1e-6 else np.array([1.0, 0.0, 0.0])
            if n >= _PUSH_AIM_MIN:
                st.push_direction = u
        else:
            u = st.push_direction
        # Height from the cube's rest height (a tipping cube's centre sinks; the stroke must not).
        rest_z = float(task.object_position[2]) if st.rest_z is None else st.rest_z
        z = rest_z + c.push_height
        start = task.object_position - c.push_standoff * u
        end = task.goal_position - c.pusher_offset * u
        start[2] = end[2] = z
        return start, end

    def _push_carrot(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """The stroke target: ``push_step`` ahead of the measured TCP's projection on the line."""
        seg = end - start
        length = float(np.linalg.norm(seg))
        s = float(np.clip((self._tcp_now - start) @ seg / max(length, 1e-9) ** 2, 0.0, 1.0))
        s = min(1.0, s + self.config.push_step / max(length, 1e-9))
        return start + s * seg

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
        q = joint_vector(proprio, self.action_dim, "proprio")
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
        self._tcp_now = self.tcp_position(q)
        self._goal = None
        if self.config.random_actions and task.valid:
            return self._wander(task, q, p0, v0)
        if not task.valid or task.task is TaskId.IDLE:
            if st.phase is not Phase.IDLE:
                self.reset()
            self.status = "idle: invalid latent, holding"
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        if task.instr_id != st.instr_id:
            self._state = st = _State(phase=Phase.PREGRASP, instr_id=task.instr_id,
                                      rest_z=float(task.object_position[2]))
        if self.config.phases == "state":
            grip = q[self._grip]
            st.gripper_history = (st.gripper_history + [float(np.mean(grip)) if grip.size else 0.0])[
                -(self.config.stall_calls + 1):]
            self._set_phase(task, self.phase_from_state(task, q))
        else:
            self._advance(task, q)
        tcp_target, grip_target = self.phase_target(task)
        q_goal = self._solve_ik(tcp_target, q, self._task_rotation(task))
        if q_goal is None:
            self.status = f"{st.phase.value}: IK failed for TCP target {np.round(tcp_target, 3).tolist()}; holding"
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        self.status = f"{st.phase.value}: TCP target {np.round(tcp_target, 3).tolist()}"
        q_goal, grip_target = self._perturb(q_goal, grip_target)
        self._goal = (q_goal, grip_target)
        return self._chunk(p0, v0, q_goal, grip_target)

    def chunk_from_state(self, proprio: np.ndarray, velocity: np.ndarray | None = None,
                         start: np.ndarray | None = None) -> np.ndarray:
        """The chunk towards the goal of the last :meth:`infer` call from ``start`` (the command
        stream's current target; default the measured positions) with the *measured* velocities,
        without advancing the phase: a DAgger label for a state the learner reached.

        Where the chunk starts matters as much as its shape. A position-controlled arm lags its
        command (the demonstrations: a median 0.028 rad between a row's command and its measured
        positions), so a stream whose every chunk starts at the measured positions drags the
        command back by the lag ten times a second: the expert executing such labels itself
        solved 0 of 12 seeds (session 7), against 12/12 from its command stream. ``start`` =
        the learner's committed target keeps the stream's lead; the measured velocity (not the
        learner's, a finite difference of two sampled targets that swung the labels 20-40 cm,
        session 4) continues the arm's real motion, which planned from rest crawled (session 6).
        Executed by the expert itself (``start`` = its own command): reach 3/3, push 3/3,
        pick_place 1/3, slower than its own chunks (7.6-11.5 s against 5.1-8.3 s to success).

        Args:
            proprio: (action_dim,) measured joint positions [rad or m].
            velocity: (action_dim,) measured joint velocities [rad/s or m/s], or None (at rest).
            start: (action_dim,) where the chunk starts [rad or m], or None (``proprio``).

        Returns:
            (chunk_size, action_dim) float64 starting at ``start``; held there when :meth:`infer`
            produced no goal (idle, IK failure, wandering) since the last reset.

        Raises:
            ValueError: bad shapes or non-finite inputs.
        """
        q = joint_vector(proprio, self.action_dim, "proprio")
        v = joint_vector(velocity, self.action_dim, "velocity", zeros_if_none=True)
        p0 = q if start is None else joint_vector(start, self.action_dim, "start")
        if self._goal is None:
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        return self._chunk(p0, v, *self._goal)

    def _perturb(self, q_goal_arm: np.ndarray, grip_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the Ornstein-Uhlenbeck offset (``noise_std``) to the goal, clipped to the limits."""
        std = self.config.noise_std
        if std <= 0.0:
            return q_goal_arm, grip_target
        rho = 0.9
        self._noise = rho * self._noise + std * math.sqrt(1.0 - rho**2) * self._rng.standard_normal(self.action_dim)
        lo, hi = np.asarray(self.spec.limits.lower), np.asarray(self.spec.limits.upper)
        arm = np.clip(q_goal_arm + self._noise[self._arm], lo[self._arm], hi[self._arm])
        grip = np.clip(grip_target + self._noise[self._grip], lo[self._grip], hi[self._grip])
        return arm, grip

    def _wander(self, task: LatentTask, q: np.ndarray, p0: np.ndarray, v0: np.ndarray) -> np.ndarray:
        """random_actions: a chunk towards the current random target (a new one when reached)."""
        st = self._state
        st.phase = Phase.WANDER
        reached = st.wander_target is not None and np.linalg.norm(self._tcp_now - st.wander_target) < 0.02
        st.wander_calls += 1
        timeout = st.wander_calls * self.dt * 2 > 3.0  # ~ calls at half the chunk length
        if st.wander_target is None or reached or timeout:
            lo = task.object_position + np.array([-0.2, -0.2, 0.0])
            hi = task.object_position + np.array([0.2, 0.2, 0.3])
            st.wander_target = self._rng.uniform(lo, hi)
            st.wander_grip = np.where(self._rng.random(self._grip.size) < 0.5, self._grip_open, self._grip_closed)
            st.wander_calls = 0
            st.ik_cache_key = None
        q_goal = self._solve_ik(st.wander_target, q)
        if q_goal is None:  # unreachable: draw another next call
            st.wander_target = None
            self.status = "wander: IK failed; holding"
            return np.repeat(p0[None, :], self.chunk_size, axis=0)
        self.status = f"wander: TCP target {np.round(st.wander_target, 3).tolist()}"
        q_goal, grip = self._perturb(q_goal, st.wander_grip)
        return self._chunk(p0, v0, q_goal, grip)

    # ----------------------------------------------------------------------------- internals
    def phase_from_state(self, task: LatentTask, q: np.ndarray) -> Phase:
        """The phase the measured state calls for (``phases="state"``).

        Read from the TCP (forward kinematics of ``q``), the gripper and the latent's object and
        goal; only the terminal phases (RETREAT, DONE), whether a grasp is under way, the
        gripper's stall history and a push's last direction (:meth:`_push_line`) are remembered.
        With h the TCP's height above a descent's end point, a descent's region is h up to
        ``pregrasp_height + position_tolerance`` with a horizontal offset below
        ``0.015 + 0.3 min(h, pregrasp_height - h)`` m: 1.5 cm at the top and at the bottom (as
        the sequence expert arrives), up to 3 cm halfway down, where a descent's straight path
        still corrects the offset before the fingers reach the 4 cm cube.

        * REACH: in the cone over the object -> DESCEND (DONE once within
          ``position_tolerance``), else PREGRASP.
        * PUSH (the latent's stroke, :meth:`_push_line`): within ``position_tolerance`` of
          the stroke's end -> RETREAT; at stroke height (h < 2 cm) within ``0.015 + 0.3 h`` m
          of the line anywhere from 6 cm behind its start to its end -> PUSH; in the descent
          region over the start (from 6 cm behind it to 1.5 cm past it) -> DESCEND; else PREGRASP.
        * PICK / PICK_PLACE: held = the gripper neither open nor closed (something between the
          fingers) and either the object off the table (1.5 cm above its height when the
          instruction came) within 3 cm of the TCP or a held phase under way. Held -> RELEASE
          at the release point (``position_tolerance``; then until the gripper is open), LOWER
          within 3 cm of the goal's vertical, LIFT while more than 3 cm below the transport
          height and 5 cm from the goal, else TRANSPORT (PICK: LIFT, DONE once lifted).
          PICK_PLACE with the object within 2 cm of the goal's vertical and at most 5 mm above
          it and the gripper open -> RETREAT. At the grasp point (1.5 cm) -> CLOSE, then LIFT
          once the gripper has closed or stalled on the object. In the descent region over the
          object with the gripper open -> DESCEND. Else PREGRASP.

        The thresholds are this module's tolerances, not tuned per task. The need for a labelling
        expert that is a function of the state is DAgger's (Ross et al., AISTATS 2011, Sec. 3:
        the expert is queried on the learner's states).

        Args:
            task: the decoded latent (valid, not IDLE).
            q: (action_dim,) measured positions [rad, m].

        Returns:
            The phase; it does not change the machine (``infer`` sets it).
        """
        c, st = self.config, self._state
        tcp = self.tcp_position(q)
        if st.phase is Phase.DONE or (st.phase is Phase.RETREAT and task.task in (TaskId.PUSH, TaskId.PLACE)):
            target, _ = self.phase_target(task)
            if st.phase is Phase.DONE or np.linalg.norm(tcp - target) < c.position_tolerance:
                return Phase.DONE
            return Phase.RETREAT
        grip = q[self._grip]
        grip_open = grip.size == 0 or bool(np.all(np.abs(grip - self._grip_open) < self._grip_tol))
        grip_closed = grip.size == 0 or bool(np.all(np.abs(grip - self._grip_closed) < self._grip_tol))
        obj, goal = task.object_position, task.goal_position

        def in_cone(end: np.ndarray, offset: float) -> bool:
            h = float(tcp[2] - end[2])
            slack = _CONE_SLOPE * max(0.0, min(h, c.pregrasp_height - h))
            return h < c.pregrasp_height + c.position_tolerance and offset < _CONE_BASE + slack

        if task.task is TaskId.REACH:
            end = obj + c.reach_height * np.array([0.0, 0.0, 1.0])
            if np.linalg.norm(tcp - end) < c.position_tolerance:
                return Phase.DONE
            return Phase.DESCEND if in_cone(end, float(np.linalg.norm((tcp - end)[:2]))) else Phase.PREGRASP
        if task.task is TaskId.PUSH:
            start, end = self._push_line(task)
            if np.linalg.norm(tcp - end) < c.position_tolerance:
                return Phase.RETREAT
            u = end - start
            length = float(np.linalg.norm(u))
            u = u / max(length, 1e-9)
            rel = tcp - start
            along = float(rel @ u)
            offset = float(np.linalg.norm(rel[:2] - along * u[:2]))
            h = float(rel[2])
            if h < 0.02 and -0.06 <= along <= length and offset < _CONE_BASE + _CONE_SLOPE * max(h, 0.0):
                return Phase.PUSH
            if -0.06 <= along <= 0.015 and in_cone(start, offset):
                return Phase.DESCEND
            return Phase.PREGRASP
        # PICK / PLACE
        rest_z = float(obj[2]) if st.rest_z is None else st.rest_z
        grasp = obj + c.grasp_height * np.array([0.0, 0.0, 1.0])
        near_tcp = float(np.linalg.norm((tcp - grasp)[:2]))
        if task.task is TaskId.PLACE and grip_open and np.linalg.norm((obj - goal)[:2]) < 0.02 \
                and obj[2] < goal[2] + 0.005:
            return Phase.RETREAT
        # Something between the fingers (neither open nor closed), and either the object is off
        # the table beside the TCP or a held phase is under way (System 2's object position can
        # be 0.5 s old, the TCP not).
        held = not grip_open and not grip_closed and (
            (obj[2] > rest_z + 0.015 and np.linalg.norm(tcp - grasp) < 0.03)
            or st.phase in (Phase.LIFT, Phase.TRANSPORT, Phase.LOWER, Phase.RELEASE))
        if held:
            if task.task is TaskId.PICK:
                return Phase.DONE if tcp[2] > rest_z + c.grasp_height + c.lift_height - c.position_tolerance \
                    else Phase.LIFT
            release_at = goal + c.grasp_height * np.array([0.0, 0.0, 1.0])
            to_goal = float(np.linalg.norm((tcp - goal)[:2]))
            if st.phase is Phase.RELEASE or np.linalg.norm(tcp - release_at) < c.position_tolerance:
                return Phase.RELEASE
            if to_goal < 0.03:
                return Phase.LOWER
            transport_z = max(rest_z + c.grasp_height + c.lift_height, goal[2] + c.pregrasp_height)
            return Phase.LIFT if tcp[2] < transport_z - 0.03 and to_goal > 0.05 else Phase.TRANSPORT
        if near_tcp < 0.015 and abs(float(tcp[2] - grasp[2])) < 0.015:  # at the grasp point
            if st.phase is Phase.LIFT:  # the grasp is made: the creeping fingers keep squeezing
                return Phase.LIFT
            stalled = self._gripper_stalled()
            return Phase.LIFT if grip_closed or (stalled and not grip_open) else Phase.CLOSE
        if grip_open and in_cone(grasp, near_tcp):
            return Phase.DESCEND
        return Phase.PREGRASP

    def _gripper_stalled(self) -> bool:
        """The gripper moved less than 0.5 mm over the last ``stall_calls`` calls."""
        h = self._state.gripper_history
        return len(h) > self.config.stall_calls and max(h) - min(h) < 5e-4

    def _set_phase(self, task: LatentTask, phase: Phase) -> None:
        """``phases="state"``: enter ``phase``. CLOSE latches the object's grasp point now; LIFT
        (and PICK's DONE) lifts from above the object at its rest height."""
        st, c = self._state, self.config
        if phase is not st.phase:
            st.gripper_history = st.gripper_history[-1:]
        obj = task.object_position
        if phase is Phase.CLOSE:
            st.latched = obj + np.array([0.0, 0.0, c.grasp_height])
        elif phase is Phase.LIFT or (phase is Phase.DONE and task.task is TaskId.PICK and st.phase is not Phase.DONE):
            rest_z = float(obj[2]) if st.rest_z is None else st.rest_z
            st.latched = np.array([obj[0], obj[1], rest_z + c.grasp_height])
        st.phase = phase

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
            grip_done = grip.size == 0 or np.all(np.abs(grip - grip_target) < self._grip_tol)
            ph, nxt = st.phase, None
            if ph is Phase.PREGRASP and reached and (grip_done or stalled):  # closed on itself: stalled
                nxt = Phase.DESCEND
            elif task.task is TaskId.PUSH:
                if ph is Phase.DESCEND and reached:
                    nxt = Phase.PUSH
                elif ph is Phase.PUSH and reached and np.linalg.norm(target - self._push_line(task)[1]) < 1e-9:
                    nxt = Phase.RETREAT
                elif ph is Phase.RETREAT and reached:
                    nxt = Phase.DONE
            elif ph is Phase.DESCEND and reached and task.task is TaskId.REACH:
                nxt = Phase.DONE
            elif ph is Phase.DESCEND and reached:
                st.latched = target.copy()
                nxt = Phase.CLOSE
            elif ph is Phase.CLOSE and (grip_done or (stalled and np.all(np.abs(grip - self._grip_open) > self._grip_tol))):
                nxt = Phase.LIFT
            elif ph is Phase.LIFT and reached:
                nxt = Phase.DONE if task.task is TaskId.PICK else Phase.TRANSPORT
            elif ph is Phase.TRANSPORT and reached:
                nxt = Phase.LOWER
            elif ph is Phase.LOWER and reached:
                nxt = Phase.RELEASE
            elif ph is Phase.RELEASE and (grip_done or (stalled and np.all(np.abs(grip - self._grip_closed) > self._grip_tol))):
                nxt = Phase.RETREAT
            elif ph is Phase.RETREAT and reached:
                nxt = Phase.DONE
            if nxt is None:
                return
            st.phase = nxt
            st.gripper_history = st.gripper_history[-1:]
            stalled = False

    def _task_rotation(self, task: LatentTask) -> np.ndarray:
        """TCP orientation (3, 3) in base_link: the home pose's, turned for PUSH with push_align."""
        if task.task is not TaskId.PUSH or not self._push_align:
            return self._rotation
        st = self._state
        if st.push_yaw is None:  # turned once per instruction: a wrist that follows the re-aimed stroke shakes
            start, end = self._push_line(task)
            st.push_yaw = math.atan2(end[1] - start[1], end[0] - start[0])
        yaw = st.push_yaw
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2  # the gripper is symmetric under pi
        cy, sy = math.cos(yaw), math.sin(yaw)
        return np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]]) @ self._rotation

    def _solve_ik(self, tcp_target: np.ndarray, q: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray | None:
        """Arm joint positions (A,) for ``tcp_target``, cached per (phase, 1 mm-rounded target)."""
        st = self._state
        key = (st.phase, tuple(np.round(tcp_target, 3)))
        if st.ik_cache_key == key and st.ik_cache_q is not None:
            return st.ik_cache_q
        seed = q.copy()
        if st.ik_cache_q is not None:
            seed[self._arm] = st.ik_cache_q
        rot = self._rotation if rotation is None else rotation
        sol, converged, _err = self.model.ik(tcp_target, rot, q0=seed)
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
