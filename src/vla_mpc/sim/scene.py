"""Compose the tabletop scene's MJCF with robosuite 1.5.2 and compile it to a ``mujoco.MjModel``.

robosuite is used here only as an asset library and MJCF composer: its robot classes (meshes,
inertias, joint ranges, torque actuators), its grippers, its ``TableArena`` and ``BoxObject`` and
``ManipulationTask`` (which merges them into one world). We do what ``robosuite.robots.Robot.
load_model`` does (robot + default base/mount + gripper per arm), add the cameras this package
needs as children of the robot's base body (so camera poses are given in ``base_link``), and
compile the XML with the plain ``mujoco`` bindings. No robosuite environment, controller or
``MjSim`` wrapper is created: see ``sim_robot.py`` for why.

Names in the compiled model carry robosuite's prefixes: robot joints ``robot0_<joint>``, gripper
joints ``gripper0_<arm>_<joint>``, cube free joints ``<object>_joint0``.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

_LOG = logging.getLogger(__name__)

#: Colours of the default cubes, RGBA in [0, 1].
DEFAULT_CUBES: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("red", (0.85, 0.1, 0.1, 1.0)),
    ("green", (0.1, 0.7, 0.15, 1.0)),
    ("blue", (0.1, 0.25, 0.9, 1.0)),
)

#: Default camera, in ``base_link``: in front of the table looking back at the robot [m, deg].
DEFAULT_CAMERAS: dict[str, dict[str, Any]] = {
    "front": {"pos": [1.35, 0.0, 0.6], "lookat": [0.3, 0.0, 0.12], "fovy": 55.0},
    "side": {"pos": [0.45, -1.05, 0.45], "lookat": [0.4, 0.0, -0.05], "fovy": 55.0},
}


@dataclass(frozen=True)
class CubeSpec:
    """One coloured cube of the scene.

    Attributes:
        name: object name, e.g. ``"red_cube"`` (also the MuJoCo body prefix).
        colour: the colour word used in instructions, e.g. ``"red"``.
        rgba: (4,) colour in [0, 1].
        half_size: (3,) half extents [m].
    """

    name: str
    colour: str
    rgba: tuple[float, float, float, float]
    half_size: tuple[float, float, float] = (0.02, 0.02, 0.02)

    def __post_init__(self) -> None:
        if len(self.rgba) != 4 or len(self.half_size) != 3 or min(self.half_size) <= 0.0:
            raise ValueError(f"cube {self.name!r}: rgba needs 4 values and half_size 3 positive "
                             f"values (got rgba={self.rgba}, half_size={self.half_size})")


@dataclass(frozen=True)
class PadSpec:
    """One flat target pad slot: a visual-only (no collision) thin box on a mocap body.

    Attributes:
        name: body name in the compiled model, e.g. ``"pad0"`` (a slot; ``SimRobot`` names pads
            by colour at run time).
        rgba: (4,) initial colour in [0, 1].
        half_size: (3,) half extents [m]; the pad is drawn with its bottom on the table.
    """

    name: str
    rgba: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 1.0)
    half_size: tuple[float, float, float] = (0.045, 0.045, 0.001)

    def __post_init__(self) -> None:
        if len(self.rgba) != 4 or len(self.half_size) != 3 or min(self.half_size) <= 0.0:
            raise ValueError(f"pad {self.name!r}: rgba needs 4 values and half_size 3 positive "
                             f"values (got rgba={self.rgba}, half_size={self.half_size})")


def pads_from_config(pads: Mapping[str, Any] | None) -> list[PadSpec]:
    """Pad slots from the ``sim.pads`` config entry: ``{count: int (default 2), size: [3] full
    extents m (default [0.09, 0.09, 0.002])}``.

    Raises:
        ValueError: negative count or malformed size.
    """
    pads = dict(pads or {})
    count = int(pads.get("count", 2))
    size = [float(v) for v in pads.get("size", (0.09, 0.09, 0.002))]
    if count < 0 or len(size) != 3:
        raise ValueError(f"sim.pads: count must be >= 0 and size 3 values, got {pads}")
    return [PadSpec(f"pad{i}", half_size=tuple(0.5 * v for v in size)) for i in range(count)]


@dataclass
class SceneModel:
    """The compiled scene and the names needed to drive it.

    Attributes:
        model: the compiled ``mujoco.MjModel``.
        xml: the MJCF it was compiled from (for debugging and ``mujoco.viewer``).
        robot_joints: robosuite's robot joint names (prefixed), model order.
        grippers: per arm (``"right"``, ``"left"``), a dict with ``joints`` (prefixed joint names),
            ``actuators`` (prefixed actuator names), ``init_qpos`` (len(joints),), ``open_ctrl`` and
            ``closed_ctrl`` (len(actuators),) actuator controls of the fully open / closed gripper,
            ``grip_site`` (site name of the tool centre point), ``robosuite_model`` (the
            robosuite ``GripperModel``, for ``gripper_ctrl``).
        arms: robosuite's arm names in order (``["right"]`` or ``["right", "left"]``).
        robot_init_qpos: robosuite's default joint positions over ``robot_joints`` [rad].
        base_body: name of the robot's root body; its frame is ``base_link``.
        cubes: the cubes placed in the scene.
        pads: the pad slots (mocap bodies named ``PadSpec.name``, parked below the table).
        table_top_z: world height of the table surface [m].
        table_center: (3,) world position of the table-top centre [m].
        table_half_size: (3,) table half extents [m].
        cameras: names of the cameras this module added.
    """

    model: Any
    xml: str
    robot_joints: list[str]
    grippers: dict[str, dict[str, Any]]
    arms: list[str]
    robot_init_qpos: np.ndarray
    base_body: str
    cubes: list[CubeSpec]
    table_top_z: float
    table_center: np.ndarray
    table_half_size: np.ndarray
    cameras: list[str] = field(default_factory=list)
    pads: list[PadSpec] = field(default_factory=list)


def cubes_from_config(objects: Sequence[Mapping[str, Any]] | None) -> list[CubeSpec]:
    """Build the cube list from the ``sim.objects`` config entry (or the red/green/blue default).

    Args:
        objects: list of ``{colour: str, rgba: [4], half_size: [3] (optional, m), name: str
            (optional, default "<colour>_cube")}``, or None for the default cubes.

    Raises:
        ValueError: an entry lacks ``colour``/``rgba`` or has malformed values, or names repeat.
    """
    if not objects:
        return [CubeSpec(f"{c}_cube", c, rgba) for c, rgba in DEFAULT_CUBES]
    cubes = []
    for i, o in enumerate(objects):
        if "colour" not in o or "rgba" not in o:
            raise ValueError(f"sim.objects[{i}]: needs 'colour' and 'rgba' (got keys {sorted(o)})")
        colour = str(o["colour"]).lower()
        cubes.append(CubeSpec(
            name=str(o.get("name", f"{colour}_cube")),
            colour=colour,
            rgba=tuple(float(v) for v in o["rgba"]),
            half_size=tuple(float(v) for v in o.get("half_size", (0.02, 0.02, 0.02))),
        ))
    names = [c.name for c in cubes]
    if len(set(names)) != len(names):
        raise ValueError(f"sim.objects: object names repeat: {names}")
    return cubes


def _look_at_xyaxes(pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """MuJoCo camera ``xyaxes`` (6,) for a camera at ``pos`` looking at ``lookat`` with world-up z.

    MuJoCo cameras look along their -z axis with +y up, so x = forward x up, y = x x forward.

    Raises:
        ValueError: ``pos == lookat`` or the view direction is vertical.
    """
    fwd = np.asarray(lookat, float) - np.asarray(pos, float)
    n = np.linalg.norm(fwd)
    if n < 1e-9:
        raise ValueError(f"camera pos {pos} equals lookat {lookat}")
    fwd /= n
    x = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-6:
        raise ValueError(f"camera at {pos} looks straight up/down at {lookat}; tilt it slightly")
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return np.concatenate([x, y])


def _quiet_robosuite() -> None:
    """robosuite logs macro-file and optional-dependency warnings at import; keep them out."""
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)


def build_scene(
    robosuite_robot: str,
    *,
    gripper: str | Mapping[str, str] | None = "default",
    base: str = "default",
    cubes: Sequence[CubeSpec] = (),
    pads: Sequence[PadSpec] = (),
    cameras: Mapping[str, Mapping[str, Any]] | None = None,
    table_full_size: Sequence[float] = (0.8, 0.8, 0.05),
    table_offset: Sequence[float] = (0.0, 0.0, 0.8),
    max_image_size: tuple[int, int] = (640, 480),
) -> SceneModel:
    """Compose robot + gripper(s) + table + cubes + cameras with robosuite and compile with mujoco.

    Args:
        robosuite_robot: robosuite robot class name (``Panda``, ``UR5e``, ``GR1FixedLowerBody``,
            ``GR1ArmsOnly``, ...).
        gripper: robosuite gripper class name for every arm, a dict ``{arm: name}``, ``"default"``
            for the robot's own default, or None for no gripper.
        base: robosuite base/mount name, or ``"default"``.
        cubes: cubes to add (free bodies; their poses are set by the caller after compiling).
        pads: flat pads to add: mocap bodies with one visual-only box geom (group 1, no contacts),
            parked 1 m below the table; the caller moves them (``data.mocap_pos``).
        cameras: ``{name: {pos: (3,), lookat: (3,), fovy: deg}}`` in ``base_link`` [m]; cameras
            are children of the robot's base body.
        table_full_size: table extents (x, y, z) [m].
        table_offset: table-top centre in the world [m].
        max_image_size: (width, height) of the largest offscreen image wanted [px].

    Returns:
        The compiled ``SceneModel``.

    Raises:
        ValueError: unknown robot/gripper name or malformed camera entry.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    _quiet_robosuite()
    import mujoco
    from robosuite.models.arenas import TableArena
    from robosuite.models.bases import robot_base_factory
    from robosuite.models.grippers import gripper_factory
    from robosuite.models.objects import BoxObject
    from robosuite.models.robots import create_robot
    from robosuite.models.robots.robot_model import REGISTERED_ROBOTS
    from robosuite.models.tasks import ManipulationTask

    if robosuite_robot not in REGISTERED_ROBOTS:
        raise ValueError(f"unknown robosuite robot {robosuite_robot!r}; known: "
                         f"{sorted(REGISTERED_ROBOTS)}")
    robot = create_robot(robosuite_robot, idn=0)
    robot.add_base(base=robot_base_factory(robot.default_base if base == "default" else base,
                                           idn=0))
    gripper_models = {}
    for arm in robot.arms:
        if gripper is None:
            continue
        if isinstance(gripper, Mapping):
            gname = gripper.get(arm, "default")
        else:
            gname = gripper
        if gname == "default":
            gname = robot.default_gripper[arm]
        if gname is None:
            continue
        try:
            g = gripper_factory(gname, idn=f"0_{arm}")
        except Exception as exc:  # robosuite raises bare ValueError/KeyError variants
            raise ValueError(f"robosuite gripper {gname!r} for arm {arm!r}: {exc}") from exc
        robot.add_gripper(g, robot.eef_name[arm])
        gripper_models[arm] = g

    arena = TableArena(table_full_size=tuple(table_full_size), table_offset=tuple(table_offset))
    offset = robot.base_xpos_offset["table"](float(table_full_size[0]))
    robot.set_base_xpos(offset)

    objects = [BoxObject(name=c.name, size=list(c.half_size), rgba=list(c.rgba)) for c in cubes]
    task = ManipulationTask(mujoco_arena=arena, mujoco_robots=[robot], mujoco_objects=objects)

    base_body_name = robot.root_body
    base_elem = task.worldbody.find(f".//body[@name='{base_body_name}']")
    if base_elem is None:
        raise ValueError(f"robot root body {base_body_name!r} not found in the composed MJCF")
    added = []
    for cname, c in (cameras or {}).items():
        try:
            pos = np.asarray(c["pos"], float).reshape(3)
            lookat = np.asarray(c["lookat"], float).reshape(3)
            fovy = float(c.get("fovy", 45.0))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"camera {cname!r}: needs pos (3,), lookat (3,), fovy: {exc}") from exc
        ET.SubElement(base_elem, "camera", {
            "name": cname, "mode": "fixed", "fovy": f"{fovy:g}",
            "pos": " ".join(f"{v:.6g}" for v in pos),
            "xyaxes": " ".join(f"{v:.6g}" for v in _look_at_xyaxes(pos, lookat)),
        })
        added.append(cname)

    for pad in pads:
        body = ET.SubElement(task.worldbody, "body", {
            "name": pad.name, "mocap": "true",
            "pos": f"0 0 {float(table_offset[2]) - 1.0:.6g}"})
        ET.SubElement(body, "geom", {
            "name": f"{pad.name}_vis", "type": "box", "group": "1", "contype": "0",
            "conaffinity": "0", "size": " ".join(f"{v:.6g}" for v in pad.half_size),
            "rgba": " ".join(f"{v:.6g}" for v in pad.rgba)})

    xml = task.get_xml()
    model = mujoco.MjModel.from_xml_string(xml)
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), int(max_image_size[0]))
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), int(max_image_size[1]))

    grippers = {}
    for arm, g in gripper_models.items():
        grippers[arm] = {
            "joints": list(g.joints),
            "actuators": list(g.actuators),
            "init_qpos": np.asarray(g.init_qpos, float),
            "open_ctrl": gripper_ctrl(model, g, np.full(g.dof, -1.0)),
            "closed_ctrl": gripper_ctrl(model, g, np.full(g.dof, 1.0)),
            "grip_site": g.important_sites["grip_site"],
            "robosuite_model": g,
        }
    return SceneModel(
        model=model, xml=xml, robot_joints=list(robot.joints), grippers=grippers,
        arms=list(robot.arms), robot_init_qpos=np.asarray(robot.init_qpos, float),
        base_body=base_body_name, cubes=list(cubes),
        table_top_z=float(table_offset[2]), table_center=np.asarray(table_offset, float),
        table_half_size=np.asarray(table_full_size, float) / 2.0, cameras=added, pads=list(pads),
    )


def gripper_ctrl(model: Any, g: Any, action: np.ndarray) -> np.ndarray:
    """Actuator controls (len(g.actuators),) that robosuite gripper ``g`` settles at under the
    constant normalised ``action`` (g.dof,) in [-1, 1] (-1 open, +1 closed per dim).

    robosuite grippers turn a normalised action into per-actuator values in [-1, 1] with
    ``format_action`` (some integrate it at ``speed`` per call), and robosuite maps [-1, 1] linearly
    onto each actuator's ``ctrlrange``. We run ``format_action`` to convergence and apply that map.
    """
    g.current_action = np.zeros(g.dof)
    action = np.clip(np.asarray(action, float).reshape(g.dof), -1.0, 1.0)
    a = None
    for _ in range(50):
        a = np.asarray(g.format_action(action), float)
    g.current_action = np.zeros(g.dof)
    ids = [model.actuator(n).id for n in g.actuators]
    lo, hi = model.actuator_ctrlrange[ids, 0], model.actuator_ctrlrange[ids, 1]
    return (lo + hi) / 2.0 + (hi - lo) / 2.0 * np.clip(a, -1.0, 1.0)
