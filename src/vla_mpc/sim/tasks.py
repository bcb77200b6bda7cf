"""Language tasks of the tabletop sim: instructions, success predicates, seeded episodes (no MuJoCo, no ROS).

Task kinds (:data:`TASK_KINDS`) and their success predicates (``Task`` holds the thresholds;
everything in one frame, the sim uses ``base_link``, metres):

* ``reach`` -- "reach the red cube" (also ``reach for``, ``touch``, ``go to``, ``move to``): a tool
  centre point (TCP) within ``reach_radius`` (3 cm) of the centre of the cube's top face and not
  below that face by more than 1 cm.
* ``push`` -- "push the blue cube to the left" (also ``slide``, ``shove``, ``nudge``; directions
  ``left`` +y, ``right`` -y, ``forward`` +x (away from the robot), ``back`` -x, all in
  ``base_link``, i.e. as the robot sees it): the cube moved at least ``push_distance`` (8 cm) along
  the direction from where it was at the start of the episode (``Task.origin``), at most
  ``push_lateral`` (5 cm) sideways, and still rests on the table (bottom within ``rest_tolerance``,
  1 cm).
* ``pick`` -- "pick up the red cube" (also ``lift``, ``grasp``, ``grab``, ``raise``): the cube's
  bottom more than ``lift_height`` (5 cm) above the table **and** its centre within
  ``grasp_radius`` (3 cm) of a TCP (held, not tossed).
* ``pick_place`` -- "put the red cube on the green pad" (also ``place``, ``set``, ``stack``,
  ``move``, ``bring`` with ``on``/``onto``/``in``/``into``; the destination may be a pad or another
  cube): the cube's centre lies over the destination's top face (|dx|, |dy| <= the destination's
  half extents) and its bottom is within ``rest_tolerance`` (1 cm) of that face (resting on it).

Object names are ``<colour>_<noun>`` with nouns ``cube`` (``block`` and ``box`` are synonyms) and
``pad`` (``mat``, ``target``).

Episodes: :func:`sample_episode` draws a layout (positions, yaws, colours) and an instruction from
the kind's :func:`instruction_templates`, deterministically from ``(robot, kind, seed)``. Training
uses seeds ``0 .. EVAL_SEED_OFFSET - 1``; evaluation uses ``EVAL_SEED_OFFSET + i``.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

TASK_KINDS = ("reach", "push", "pick", "pick_place")

#: First evaluation seed; training seeds are below it.
EVAL_SEED_OFFSET = 100_000

#: How far the push layout leaves room for the cube to travel [m] (the expert pushes 11 cm).
PUSH_TRAVEL = 0.12

#: Push directions in ``base_link`` (x forward away from the robot, y to the robot's left).
DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "left": (0.0, 1.0, 0.0),
    "right": (0.0, -1.0, 0.0),
    "forward": (1.0, 0.0, 0.0),
    "back": (-1.0, 0.0, 0.0),
}
_DIRECTION_WORDS = {
    "left": "left", "right": "right",
    "forward": "forward", "forwards": "forward", "away": "forward", "ahead": "forward",
    "back": "back", "backward": "back", "backwards": "back", "closer": "back", "toward": "back",
    "towards": "back",
}
#: Phrase of each direction used by the push templates.
DIRECTION_PHRASES = {"left": "to the left", "right": "to the right", "forward": "forward",
                     "back": "back"}

#: Colour words and base RGBA in [0, 1]. Episodes draw distinct colours per object type and add a
#: small per-channel jitter (``COLOUR_JITTER``).
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.7, 0.15, 1.0),
    "blue": (0.1, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
    "orange": (1.0, 0.5, 0.05, 1.0),
}
COLOUR_JITTER = 0.06

_NOUNS = {"cube": "cube", "block": "cube", "box": "cube", "cubes": "cube", "blocks": "cube",
          "pad": "pad", "mat": "pad", "target": "pad", "pads": "pad"}
_REACH_VERBS = ("reach", "touch", "go", "approach", "hover", "point")
_PICK_VERBS = ("pick", "lift", "grasp", "grab", "raise", "take", "hold")
_PUSH_VERBS = ("push", "slide", "shove", "nudge")
_PLACE_VERBS = ("put", "place", "set", "stack", "move", "bring", "drop")
_PLACE_PREPS = ("on", "onto", "in", "into", "inside", "atop", "over")

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": ("reach the {object}", "touch the {object}", "go to the {object}",
              "reach for the {object}"),
    "push": ("push the {object} {direction}", "slide the {object} {direction}",
             "nudge the {object} {direction}"),
    "pick": ("pick up the {object}", "lift the {object}", "grasp the {object}",
             "grab the {object}"),
    "pick_place": ("put the {object} on the {destination}", "place the {object} on the {destination}",
                   "move the {object} onto the {destination}", "set the {object} on the {destination}"),
}


def _frozen(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    a = np.array(values, dtype=np.float64).reshape(3)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Task:
    """A parsed instruction with its success thresholds.

    Attributes:
        kind: one of :data:`TASK_KINDS`.
        object_name: the object acted on, ``"<colour>_cube"``.
        instruction: the original text.
        destination: pick_place: the object to put it on (``"<colour>_pad"`` or a cube), else None.
        direction: push: (3,) unit vector in ``base_link`` (read-only array), else None.
        origin: push: (3,) position of the object at the start of the episode [m], or None until
            bound (:func:`bind_origin`; ``SimRobot.task_success`` binds it from its last reset).
        lift_height: pick: clearance of the cube's bottom above the table [m].
        grasp_radius: pick: max distance cube centre - TCP [m].
        reach_radius: reach: max distance TCP - cube top-face centre [m].
        push_distance: push: min displacement along ``direction`` [m].
        push_lateral: push: max displacement across ``direction`` (horizontal) [m].
        rest_tolerance: push / pick_place: max gap between the cube's bottom and the surface it
            rests on [m].
    """

    kind: str
    object_name: str
    instruction: str
    destination: str | None = None
    direction: np.ndarray | None = None
    origin: np.ndarray | None = None
    lift_height: float = 0.05
    grasp_radius: float = 0.03
    reach_radius: float = 0.03
    push_distance: float = 0.08
    push_lateral: float = 0.05
    rest_tolerance: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        object.__setattr__(self, "direction", _frozen(self.direction))
        object.__setattr__(self, "origin", _frozen(self.origin))
        if self.kind == "push" and self.direction is None:
            raise ValueError("a push task needs a direction")
        if self.kind == "pick_place" and not self.destination:
            raise ValueError("a pick_place task needs a destination")

    def _key(self) -> tuple:
        arr = lambda a: None if a is None else tuple(float(v) for v in a)  # noqa: E731
        return (self.kind, self.object_name, self.instruction, self.destination, arr(self.direction),
                arr(self.origin), self.lift_height, self.grasp_radius, self.reach_radius,
                self.push_distance, self.push_lateral, self.rest_tolerance)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def direction_name(self) -> str | None:
        """push: ``"left"``, ``"right"``, ``"forward"`` or ``"back"``; else None."""
        if self.direction is None:
            return None
        return max(DIRECTIONS, key=lambda k: float(np.dot(DIRECTIONS[k], self.direction)))

    @property
    def task_id(self) -> int:
        """Stable id in [0, 2^24) (exact in float32) of what is asked: kind, objects, direction."""
        key = f"{self.kind}|{self.object_name}|{self.destination or ''}|{self.direction_name or ''}"
        return zlib.crc32(key.encode()) & 0xFFFFFF


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _find(words: Sequence[str], phrase: Sequence[str]) -> int:
    n = len(phrase)
    for i in range(len(words) - n + 1):
        if list(words[i:i + n]) == list(phrase):
            return i
    return -1


def _forms() -> str:
    return ("use 'reach the <colour> cube', 'push the <colour> cube to the left|right|forward|back', "
            "'pick up the <colour> cube' or 'put the <colour> cube on the <colour> pad'")


def parse_instruction(text: str, object_names: Sequence[str] | None = None) -> Task:
    """Parse an English instruction into a :class:`Task` (case and punctuation ignored).

    Objects are mentioned as "<colour> <noun>" (``block``/``box`` -> ``cube``, ``mat``/``target``
    -> ``pad``). With ``object_names`` (the scene's names, e.g. ``"red_cube"``) the mentions are
    matched against them instead, so any ``a_b`` name can be used as "a b". The kind is decided by
    the verbs: a push verb (``push``, ``slide``, ``shove``, ``nudge``) needs a direction word
    (``left``, ``right``, ``forward``/``away``, ``back``/``backward``/``closer``); a place verb with a
    preposition (``on``, ``onto``, ``in``, ``into``) between two mentioned objects makes a
    pick_place; then a pick verb makes a pick; then a reach verb (``reach``, ``touch``, ``go``,
    ``move``, ``approach``, ``hover``) a reach.

    Args:
        text: the instruction.
        object_names: the objects present, or None (names are formed from the words).

    Returns:
        The :class:`Task` (``origin`` unset).

    Raises:
        ValueError: no object mentioned (the message lists ``object_names``), an object not in
            ``object_names``, no verb understood, or a push without a direction; the message names
            the forms understood.
    """
    raw = _words(text)
    words = [_NOUNS.get(w, w) for w in raw]
    mentions: list[tuple[int, str]] = []
    if object_names is not None:
        for name in object_names:
            phrase = [_NOUNS.get(w, w) for w in _words(name.replace("_", " "))]
            pos = _find(words, phrase)
            if pos >= 0 and phrase:
                mentions.append((pos, name))
        if not mentions:
            named = [f"{words[i]}_{words[i + 1]}" for i in range(len(words) - 1)
                     if words[i + 1] in ("cube", "pad") and i + 1 < len(words)]
            raise ValueError(f"instruction {text!r} names none of the objects {sorted(object_names)}"
                             + (f" (it names {named})" if named else "") + f"; {_forms()}")
    else:
        for i in range(1, len(words)):
            if words[i] in ("cube", "pad") and words[i - 1] not in ("the", "a", "an", "that", "this"):
                mentions.append((i - 1, f"{words[i - 1]}_{words[i]}"))
        if not mentions:
            raise ValueError(f"instruction {text!r} names no '<colour> cube' or '<colour> pad'; {_forms()}")
    mentions.sort()
    target = mentions[0][1]
    wset = set(words)
    if wset & set(_PUSH_VERBS) or ("move" in wset and len(mentions) == 1
                                   and any(w in _DIRECTION_WORDS for w in words[mentions[0][0]:])):
        dirs = [_DIRECTION_WORDS[w] for w in words[mentions[0][0]:] if w in _DIRECTION_WORDS]
        if not dirs:
            raise ValueError(f"instruction {text!r}: push needs a direction (left, right, forward, "
                             f"back); {_forms()}")
        return Task("push", target, text, direction=DIRECTIONS[dirs[0]])
    if len(mentions) >= 2 and wset & set(_PLACE_VERBS):
        between = words[mentions[0][0]:mentions[1][0]]
        if any(p in between for p in _PLACE_PREPS) or _find(between, ["on", "top", "of"]) >= 0:
            return Task("pick_place", target, text, destination=mentions[1][1])
    if wset & set(_PICK_VERBS):
        return Task("pick", target, text)
    if wset & set(_REACH_VERBS) or "move" in wset:
        return Task("reach", target, text)
    raise ValueError(f"instruction {text!r}: no verb understood; {_forms()}")


def bind_origin(task: Task, objects: Mapping[str, Sequence[Any]]) -> Task:
    """``task`` with ``origin`` set to its object's current position (push); other kinds unchanged.

    Args:
        objects: ``{name: (position (3,), ...)}`` as ``SimRobot.object_poses()``.

    Raises:
        KeyError: the task's object is not in ``objects``.
    """
    if task.kind != "push":
        return task
    if task.object_name not in objects:
        raise KeyError(f"task object {task.object_name!r} not in scene {sorted(objects)}")
    from dataclasses import replace

    return replace(task, origin=np.asarray(objects[task.object_name][0], float))


def is_success(
    task: Task,
    objects: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    tcp_positions: Sequence[Sequence[float]] | np.ndarray,
    table_height: float,
) -> bool:
    """Evaluate ``task`` on one snapshot of the scene (predicates in the module docstring).

    Args:
        task: from :func:`parse_instruction` (push: with ``origin``, see :func:`bind_origin`).
        objects: ``{name: (position (3,), quat xyzw (4,), rgba (4,), size (3,) full edges)}`` [m],
            as ``SimRobot.object_poses()`` returns (position and size are used; heights are taken
            as ``size[2]``, exact for the upright cubes and flat pads of this sim).
        tcp_positions: (n_grippers, 3) tool centre points [m], same frame.
        table_height: z of the table surface [m], same frame.

    Raises:
        KeyError: the task's object or destination is not in the scene.
        ValueError: a push task without ``origin``.
    """
    for name in (task.object_name, task.destination):
        if name is not None and name not in objects:
            raise KeyError(f"task object {name!r} not in scene {sorted(objects)}")
    pos, _quat, _rgba, size = objects[task.object_name]
    pos = np.asarray(pos, float)
    half_h = 0.5 * float(np.asarray(size, float)[2])
    bottom = pos[2] - half_h
    tcps = np.asarray(tcp_positions, float).reshape(-1, 3)
    if task.kind == "pick":
        lifted = bottom - table_height > task.lift_height
        held = bool(np.any(np.linalg.norm(tcps - pos, axis=1) <= task.grasp_radius))
        return bool(lifted and held)
    if task.kind == "reach":
        top = pos + np.array([0.0, 0.0, half_h])
        near = np.linalg.norm(tcps - top, axis=1) <= task.reach_radius
        above = tcps[:, 2] >= top[2] - 0.01
        return bool(np.any(near & above))
    if task.kind == "push":
        if task.origin is None:
            raise ValueError(f"push task {task.instruction!r} has no origin (bind_origin at episode start)")
        d = (pos - task.origin)[:2]
        u = np.asarray(task.direction, float)[:2]
        along = float(d @ u)
        lateral = float(np.linalg.norm(d - along * u))
        resting = abs(bottom - table_height) <= task.rest_tolerance
        return bool(along >= task.push_distance and lateral <= task.push_lateral and resting)
    # pick_place
    dpos, _dq, _drgba, dsize = objects[task.destination]
    dpos, dsize = np.asarray(dpos, float), np.asarray(dsize, float)
    over = bool(np.all(np.abs(pos[:2] - dpos[:2]) <= 0.5 * dsize[:2]))
    surface = dpos[2] + 0.5 * dsize[2]
    resting = -0.5 * task.rest_tolerance <= bottom - surface <= task.rest_tolerance
    return bool(over and resting)


#: Number of task keypoints :func:`task_keypoints` returns.
NUM_TASK_KEYPOINTS = 2


def task_keypoints(task: Task, objects: Mapping[str, Sequence[Any]]) -> np.ndarray:
    """Where the task is, as two points [m] in the frame of ``objects`` (``base_link`` in the sim).

    Row 0 is the centre of the task's object now. Row 1 is where the task wants something:

    * reach: the centre of the object's top face (the point the reach predicate measures);
    * push: ``origin + push_distance * direction`` (the nearest point that satisfies the predicate);
    * pick: the object centre raised by ``lift_height`` plus half its height;
    * pick_place: the centre of the destination's top face.

    These are the auxiliary targets System 2 learns to read from its camera frame (the policy's
    ``aux_keypoints``): they tie ``z`` to the object the instruction names. The idea of supervising
    a policy's visual features with object positions is that of Levine et al. 2016 (end-to-end
    visuomotor policies, Sec. 4.2: feature points pretrained on object poses).

    Args:
        task: a parsed task (push: with ``origin``, :func:`bind_origin`).
        objects: ``{name: (position (3,), ...[, size (3,) as the 4th item])}``; without a size a
            height of 0 is used.

    Returns:
        (2, 3) float64.

    Raises:
        KeyError: the task's object or destination is not in ``objects``.
        ValueError: a push task without ``origin``.
    """
    for name in (task.object_name, task.destination):
        if name is not None and name not in objects:
            raise KeyError(f"task object {name!r} not in scene {sorted(objects)}")

    def centre_and_half_height(name: str) -> tuple[np.ndarray, float]:
        item = objects[name]
        pos = np.asarray(item[0], float).reshape(3)
        half_h = 0.5 * float(np.asarray(item[3], float).reshape(3)[2]) if len(item) > 3 else 0.0
        return pos, half_h

    pos, half_h = centre_and_half_height(task.object_name)
    if task.kind == "reach":
        goal = pos + np.array([0.0, 0.0, half_h])
    elif task.kind == "push":
        if task.origin is None:
            raise ValueError(f"push task {task.instruction!r} has no origin (bind_origin at episode start)")
        goal = np.asarray(task.origin, float) + task.push_distance * np.asarray(task.direction, float)
    elif task.kind == "pick":
        goal = pos + np.array([0.0, 0.0, task.lift_height + half_h])
    else:
        dpos, dhalf = centre_and_half_height(task.destination)
        goal = dpos + np.array([0.0, 0.0, dhalf])
    return np.stack([pos, goal])


def instruction_templates(kind: str) -> tuple[str, ...]:
    """Instruction templates of ``kind`` (placeholders ``{object}``, ``{direction}`` (a phrase of
    :data:`DIRECTION_PHRASES`), ``{destination}``; object names are written with spaces).

    Raises:
        ValueError: unknown kind.
    """
    if kind not in _TEMPLATES:
        raise ValueError(f"task kind must be one of {TASK_KINDS}, got {kind!r}")
    return _TEMPLATES[kind]


# ------------------------------------------------------------------------------------ episodes


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode: what ``SimRobot.reset(seed, episode=...)`` applies and what to ask.

    Attributes:
        robot: robot name (``config/<robot>.yaml``).
        kind: one of :data:`TASK_KINDS`.
        seed: the seed it was drawn from.
        instruction: the language instruction.
        objects: ``{name: {"type": "cube" | "pad", "position": [x, y, z] m in base_link (object
            centre, resting on the table), "yaw": rad about z, "rgba": [4] in [0, 1],
            "size": [3] full extents m}}``, cubes first, in scene slot order.
    """

    robot: str
    kind: str
    seed: int
    instruction: str
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        """The instruction parsed against the episode's objects (``origin`` bound for push)."""
        t = parse_instruction(self.instruction, list(self.objects))
        return bind_origin(t, {k: (v["position"],) for k, v in self.objects.items()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists and floats only)."""
        return asdict(self)


@dataclass(frozen=True)
class SceneLayout:
    """Where and what :func:`sample_episode` places, from a robot config's ``sim`` section.

    Attributes:
        n_cubes: number of cube slots in the scene (``sim.objects``, default 3).
        cube_size: (3,) full edges [m] of the cubes (all equal; ``sim.objects[*].half_size``).
        n_pads: number of pad slots (``sim.pads.count``, default 2).
        pad_size: (3,) full extents [m] (``sim.pads.size``, default 0.09 x 0.09 x 0.002).
        region: ((x_lo, x_hi), (y_lo, y_hi)) object centres [m] in base_link (``sim.object_region``).
        min_separation: min distance between cube centres [m] (``sim.object_min_separation``).
        table_z: table surface z in base_link [m] (``sim.table_z_in_base_link``), or None: objects
            then carry z = half their height (``SimRobot`` puts them on its table either way).
        kinds: task kinds this robot's expert supports (``sim.task_kinds``, default all).
    """

    n_cubes: int
    cube_size: tuple[float, float, float]
    n_pads: int
    pad_size: tuple[float, float, float]
    region: tuple[tuple[float, float], tuple[float, float]]
    min_separation: float
    table_z: float | None
    kinds: tuple[str, ...]


def layout_from_sim_config(sim: Mapping[str, Any]) -> SceneLayout:
    """:class:`SceneLayout` from a robot config's ``sim`` mapping (defaults as SimRobot's).

    Raises:
        ValueError: malformed values.
    """
    objects = sim.get("objects") or [{}, {}, {}]
    halves = {tuple(float(v) for v in o.get("half_size", (0.02, 0.02, 0.02))) for o in objects}
    if len(halves) != 1:
        raise ValueError(f"sim.objects: all cubes need one half_size for episode sampling, got {halves}")
    half = halves.pop()
    pads = dict(sim.get("pads") or {})
    region = sim.get("object_region", {"x": [0.4, 0.65], "y": [-0.22, 0.22]})
    kinds = tuple(sim.get("task_kinds", TASK_KINDS))
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad:
        raise ValueError(f"sim.task_kinds: unknown kinds {bad} (known {TASK_KINDS})")
    return SceneLayout(
        n_cubes=len(objects), cube_size=tuple(2.0 * h for h in half),
        n_pads=int(pads.get("count", 2)),
        pad_size=tuple(float(v) for v in pads.get("size", (0.09, 0.09, 0.002))),
        region=((float(region["x"][0]), float(region["x"][1])),
                (float(region["y"][0]), float(region["y"][1]))),
        min_separation=float(sim.get("object_min_separation", 0.09)),
        table_z=(None if sim.get("table_z_in_base_link") is None
                 else float(sim["table_z_in_base_link"])), kinds=kinds,
    )


@functools.lru_cache(maxsize=16)
def scene_layout(robot: str) -> SceneLayout:
    """The :class:`SceneLayout` of robot ``robot`` (name or config path), cached.

    Raises:
        vla_mpc.core.config.ConfigError: missing or bad robot config.
    """
    from vla_mpc.core.robot_model import load_robot_spec

    return layout_from_sim_config(load_robot_spec(robot).sim)


def _episode_rng(robot: str, kind: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(robot.encode()),
                                  zlib.crc32(kind.encode())])


def _colours(rng: np.random.Generator, n: int) -> list[tuple[str, list[float]]]:
    names = list(PALETTE)
    if n > len(names):
        raise ValueError(f"{n} objects but only {len(names)} colours in PALETTE")
    out = []
    for i in rng.permutation(len(names))[:n]:
        base = np.asarray(PALETTE[names[i]], float)
        rgba = base.copy()
        rgba[:3] = np.clip(base[:3] + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, 3), 0.0, 1.0)
        out.append((names[i], [round(float(v), 4) for v in rgba]))
    return out


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    s = float(np.clip((p - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + s * ab)))


def sample_episode(robot: str, kind: str, seed: int, layout: SceneLayout | None = None) -> EpisodeSpec:
    """Draw an episode of ``kind`` for ``robot``; the same ``(robot, kind, seed)`` gives the same spec.

    Cubes get distinct colours from :data:`PALETTE` (with jitter), yaw in [-pi/4, pi/4], centres
    uniform in the layout's region at least ``min_separation`` apart. push: the target cube sits
    where a ``PUSH_TRAVEL`` (12 cm) push in the drawn direction stays in the region, and the other
    cubes keep 8 cm from the pushed path. pick_place: ``n_pads`` pads (distinct colours, yaw 0)
    are placed in the region too, 9 cm from every cube and 1.2 pad widths from each other; the
    instruction names one cube and one pad. Other kinds have no pads (``SimRobot`` hides them).

    Args:
        robot: robot name, used for the config (``scene_layout``) and the seed stream.
        kind: one of :data:`TASK_KINDS`.
        seed: any int (training ``< EVAL_SEED_OFFSET``, evaluation ``>= EVAL_SEED_OFFSET``).
        layout: override of ``scene_layout(robot)`` (tests).

    Raises:
        ValueError: unknown kind, a kind the robot does not support (``sim.task_kinds``), or no
            layout found in 1000 draws (region too small).
    """
    if kind not in TASK_KINDS:
        raise ValueError(f"task kind must be one of {TASK_KINDS}, got {kind!r}")
    lay = layout if layout is not None else scene_layout(robot)
    if kind not in lay.kinds:
        raise ValueError(f"robot {robot!r} supports task kinds {lay.kinds} (config sim.task_kinds), "
                         f"not {kind!r}")
    rng = _episode_rng(robot, kind, seed)
    (x_lo, x_hi), (y_lo, y_hi) = lay.region
    cube_z = 0.5 * lay.cube_size[2] + (lay.table_z or 0.0)
    pad_z = 0.5 * lay.pad_size[2] + (lay.table_z or 0.0)
    cube_colours = _colours(rng, lay.n_cubes)
    target_i = int(rng.integers(lay.n_cubes))
    direction = str(rng.choice(list(DIRECTIONS))) if kind == "push" else None
    n_pads = lay.n_pads if kind == "pick_place" else 0
    pad_colours = _colours(rng, n_pads) if n_pads else []
    for _ in range(1000):
        xy = np.zeros((lay.n_cubes, 2))
        if direction is not None:
            u = np.asarray(DIRECTIONS[direction][:2])
            lo = np.array([x_lo, y_lo]) - np.minimum(u, 0) * PUSH_TRAVEL
            hi = np.array([x_hi, y_hi]) - np.maximum(u, 0) * PUSH_TRAVEL
            xy[target_i] = rng.uniform(lo, hi)
            path = (xy[target_i] - 0.06 * u, xy[target_i] + (PUSH_TRAVEL + 0.03) * u)
        ok = True
        for i in range(lay.n_cubes):
            if direction is not None and i == target_i:
                continue
            for _try in range(200):
                p = np.array([rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)])
                if any(np.linalg.norm(p - xy[j]) < lay.min_separation
                       for j in range(lay.n_cubes) if j < i or (direction is not None and j == target_i)):
                    continue
                if direction is not None and _seg_dist(p, *path) < 0.08:
                    continue
                xy[i] = p
                break
            else:
                ok = False
                break
        pads = np.zeros((n_pads, 2))
        pad_sep = 1.2 * max(lay.pad_size[:2])
        pad_clear = 0.5 * math.hypot(*lay.pad_size[:2]) + 0.5 * lay.cube_size[0] + 0.01
        for k in range(n_pads if ok else 0):
            for _try in range(200):
                p = np.array([rng.uniform(x_lo, x_hi), rng.uniform(y_lo, y_hi)])
                if all(np.linalg.norm(p - c) >= pad_clear for c in xy) and \
                        all(np.linalg.norm(p - pads[j]) >= pad_sep for j in range(k)):
                    pads[k] = p
                    break
            else:
                ok = False
                break
        if ok:
            break
    else:
        raise ValueError(f"sample_episode({robot!r}, {kind!r}, {seed}): no layout of {lay.n_cubes} "
                         f"cubes and {n_pads} pads fits region {lay.region}")
    objects: dict[str, dict[str, Any]] = {}
    for i, (colour, rgba) in enumerate(cube_colours):
        objects[f"{colour}_cube"] = {
            "type": "cube", "position": [float(xy[i, 0]), float(xy[i, 1]), cube_z],
            "yaw": float(rng.uniform(-math.pi / 4, math.pi / 4)), "rgba": rgba,
            "size": [float(v) for v in lay.cube_size]}
    for k, (colour, rgba) in enumerate(pad_colours):
        objects[f"{colour}_pad"] = {
            "type": "pad", "position": [float(pads[k, 0]), float(pads[k, 1]), pad_z], "yaw": 0.0,
            "rgba": rgba, "size": [float(v) for v in lay.pad_size]}
    templates = instruction_templates(kind)
    template = templates[int(rng.integers(len(templates)))]
    target = f"{cube_colours[target_i][0]} cube"
    dest = f"{pad_colours[int(rng.integers(n_pads))][0]} pad" if n_pads else ""
    instruction = template.format(object=target, destination=dest,
                                  direction=DIRECTION_PHRASES.get(direction or "", ""))
    return EpisodeSpec(robot=robot, kind=kind, seed=int(seed), instruction=instruction, objects=objects)

