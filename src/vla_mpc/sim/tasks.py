"""Language tasks of the tabletop sim: instruction parsing and success predicates (no MuJoCo, no ROS).

Instructions (case-insensitive, optional trailing period):

* ``pick up the <colour> cube`` (also ``pick``, ``lift``, ``grasp``; ``block`` for ``cube``): success
  when that cube's bottom face is more than ``lift_height`` (5 cm) above the table **and** its
  centre is within ``grasp_radius`` (3 cm) of a tool centre point, i.e. it is held, not tossed.
* ``reach the <colour> cube`` (also ``reach for``, ``touch``, ``go to``): success when a tool centre
  point is within ``reach_radius`` (3 cm) of the centre of the cube's top face and not below that
  face by more than 1 cm.

Everything is in one frame (the sim uses ``base_link``), metres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

_PICK = r"(?:pick(?:\s+up)?|lift|grasp)"
_REACH = r"(?:reach(?:\s+for)?|touch|go\s+to)"
_PATTERN = re.compile(
    rf"^\s*(?P<verb>{_PICK}|{_REACH})\s+(?:the\s+)?(?P<colour>[a-z]+)\s+(?:cube|block)\s*\.?\s*$"
)


@dataclass(frozen=True)
class Task:
    """A parsed instruction.

    Attributes:
        kind: ``"pick"`` or ``"reach"``.
        object_name: the target object, ``"<colour>_cube"``.
        instruction: the original text.
        lift_height: pick: required clearance of the cube's bottom above the table [m].
        grasp_radius: pick: max distance cube centre - tool centre point [m].
        reach_radius: reach: max distance tool centre point - cube top-face centre [m].
    """

    kind: str
    object_name: str
    instruction: str
    lift_height: float = 0.05
    grasp_radius: float = 0.03
    reach_radius: float = 0.03


def parse_instruction(text: str) -> Task:
    """Parse ``text`` into a ``Task``.

    Raises:
        ValueError: the text matches no known task form (the message lists the forms).
    """
    m = _PATTERN.match(text.lower())
    if m is None:
        raise ValueError(f"instruction {text!r} not understood; use 'pick up the <colour> cube' or "
                         "'reach the <colour> cube'")
    kind = "pick" if re.fullmatch(_PICK, m.group("verb")) else "reach"
    return Task(kind=kind, object_name=f"{m.group('colour')}_cube", instruction=text)


def is_success(
    task: Task,
    objects: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    tcp_positions: Sequence[Sequence[float]] | np.ndarray,
    table_height: float,
) -> bool:
    """Evaluate ``task`` on one snapshot of the scene.

    Args:
        task: from ``parse_instruction``.
        objects: ``{name: (position (3,), quat xyzw (4,), rgba (4,), size (3,) full edges)}`` [m],
            as ``SimRobot.object_poses()`` returns (only position and size are used; the cube's
            height is taken as ``size[2]``, exact for the upright cubes of this sim).
        tcp_positions: (n_grippers, 3) tool centre points [m], same frame.
        table_height: z of the table surface [m], same frame.

    Raises:
        KeyError: the task's object is not in the scene.
    """
    if task.object_name not in objects:
        raise KeyError(f"task object {task.object_name!r} not in scene {sorted(objects)}")
    pos, _quat, _rgba, size = objects[task.object_name]
    pos = np.asarray(pos, float)
    half_h = 0.5 * float(np.asarray(size, float)[2])
    tcps = np.asarray(tcp_positions, float).reshape(-1, 3)
    if task.kind == "pick":
        lifted = pos[2] - half_h - table_height > task.lift_height
        held = bool(np.any(np.linalg.norm(tcps - pos, axis=1) <= task.grasp_radius))
        return bool(lifted and held)
    top = pos + np.array([0.0, 0.0, half_h])
    near = np.linalg.norm(tcps - top, axis=1) <= task.reach_radius
    above = tcps[:, 2] >= top[2] - 0.01
    return bool(np.any(near & above))
