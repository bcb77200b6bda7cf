"""Write urdf/gr1.urdf from robosuite 1.5.2's GR1 model, compiled by MuJoCo.

The kinematics are read as data from the simulator's model: robosuite's ``GR1FixedLowerBody``
with its default hands (``FourierRightHand`` / ``FourierLeftHand``) is composed the way
``robosuite.robots.Robot.load_model`` does it, compiled with MuJoCo, and every URDF link pose is
taken from the compiled model at q = 0 relative to its URDF parent (intermediate MJCF bodies
without joints are folded into the joint origins). Joint axes and ranges are the MJCF's; joint
velocity and effort limits come from ``config/gr1.yaml`` (which cites their sources).

Run once after a robosuite upgrade, then review the diff:

    PYTHONPATH=src python tools/gr1_mjcf_to_urdf.py [--out urdf/gr1.urdf]

Needs robosuite 1.5.2, mujoco, numpy and pyyaml.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "gr1.yaml"


@dataclass(frozen=True)
class Link:
    """One URDF link and the joint that attaches it to its parent.

    ``mj_name`` names a MuJoCo body (``mj_kind == "body"``) or site (``"site"``) whose frame the
    link takes. ``joint`` is the URDF joint name; for a revolute joint ``mj_joint`` is the MuJoCo
    joint, for a fixed joint it is None. ``shapes`` are primitive visuals/collisions in the
    link frame: ("cylinder", radius, (x, y, z) end point from the origin) draws a cylinder from
    the origin to that point; ("box", (sx, sy, sz), (cx, cy, cz) centre); ("sphere", r, centre).
    """

    name: str
    parent: str | None
    mj_name: str
    mj_kind: str = "body"
    joint: str | None = None
    mj_joint: str | None = None
    shapes: tuple = ()


def _arm(side: str, hand: str) -> list[Link]:
    """Links of one arm: shoulder to wrist, the palm, the index proximal phalanx and the TCP."""
    s = side[0]  # "r" / "l"
    gp = f"gripper0_{side}_"
    sign = -1.0 if side == "right" else 1.0
    links = [
        Link(f"{s}_upper_arm_pitch_link", "torso_waist_roll_link", f"robot0_{s}_upper_arm_pitch",
             joint=f"{s}_shoulder_pitch", mj_joint=f"robot0_{s}_shoulder_pitch",
             shapes=(("cylinder", 0.035, (0.0, sign * 0.067, 0.0)),)),
        Link(f"{s}_upper_arm_roll_link", f"{s}_upper_arm_pitch_link", f"robot0_{s}_upper_arm_roll",
             joint=f"{s}_shoulder_roll", mj_joint=f"robot0_{s}_shoulder_roll",
             shapes=(("cylinder", 0.035, (0.0, sign * 0.040, -0.0575)),)),
        Link(f"{s}_upper_arm_yaw_link", f"{s}_upper_arm_roll_link", f"robot0_{s}_upper_arm_yaw",
             joint=f"{s}_shoulder_yaw", mj_joint=f"robot0_{s}_shoulder_yaw",
             shapes=(("cylinder", 0.035, (0.0, 0.0, -0.1885)),)),
        Link(f"{s}_lower_arm_pitch_link", f"{s}_upper_arm_yaw_link", f"robot0_{s}_lower_arm_pitch",
             joint=f"{s}_elbow_pitch", mj_joint=f"robot0_{s}_elbow_pitch",
             shapes=(("sphere", 0.035, (0.0, 0.0, 0.0)),
                     ("cylinder", 0.03, (0.0, 0.0, -0.0405)))),
        Link(f"{s}_hand_yaw_link", f"{s}_lower_arm_pitch_link", f"robot0_{s}_hand_yaw",
             joint=f"{s}_wrist_yaw", mj_joint=f"robot0_{s}_wrist_yaw",
             shapes=(("cylinder", 0.03, (0.0, 0.0, -0.2015)),)),
        Link(f"{s}_hand_roll_link", f"{s}_hand_yaw_link", f"robot0_{s}_hand_roll",
             joint=f"{s}_wrist_roll", mj_joint=f"robot0_{s}_wrist_roll"),
        Link(f"{s}_hand_pitch_link", f"{s}_hand_roll_link", f"robot0_{s}_hand_pitch",
             joint=f"{s}_wrist_pitch", mj_joint=f"robot0_{s}_wrist_pitch",
             shapes=(("sphere", 0.025, (0.0, 0.0, 0.0)),)),
        # Palm frame of the Fourier hand: fingers hang along -z, spread along x, palm normal +-y.
        Link(f"{side}_palm", f"{s}_hand_pitch_link", f"{gp}{s}_palm", joint=f"{side}_palm_joint",
             shapes=(("box", (0.075, 0.03, 0.095), (0.0, 0.0, -0.05)),)),
        Link(f"{hand}_index_proximal_link", f"{side}_palm", f"{gp}{hand}_index_proximal_link",
             joint=f"{hand}_index_proximal_joint", mj_joint=f"{gp}{hand}_index_proximal_joint",
             shapes=(("cylinder", 0.008, (0.07, -0.0055, 0.0)),)),
        # robosuite's end-effector site (what robot0_<side>_eef_pos reports and OSC/IK track).
        Link(f"{side}_tcp", f"{s}_hand_pitch_link", f"{gp}grip_site", mj_kind="site",
             joint=f"{side}_tcp_joint"),
    ]
    return links


LINKS: list[Link] = [
    Link("base_link", None, "robot0_base",
         shapes=(("box", (0.16, 0.26, 0.12), (-0.03, 0.0, -0.05)),)),
    Link("torso_waist_yaw_link", "base_link", "robot0_torso_waist_yaw",
         joint="torso_waist_yaw", mj_joint="robot0_torso_waist_yaw",
         shapes=(("cylinder", 0.06, (0.0, 0.0, 0.055)),)),
    Link("torso_waist_pitch_link", "torso_waist_yaw_link", "robot0_torso_waist_pitch",
         joint="torso_waist_pitch", mj_joint="robot0_torso_waist_pitch",
         shapes=(("cylinder", 0.06, (0.0, 0.0, 0.085)),)),
    Link("torso_waist_roll_link", "torso_waist_pitch_link", "robot0_torso_waist_roll",
         joint="torso_waist_roll", mj_joint="robot0_torso_waist_roll",
         shapes=(("box", (0.16, 0.22, 0.26), (-0.01, 0.0, 0.15)),)),
    Link("head_yaw_link", "torso_waist_roll_link", "robot0_head_yaw",
         joint="head_yaw", mj_joint="robot0_head_yaw",
         shapes=(("cylinder", 0.025, (0.0, 0.0, 0.036)),)),
    Link("head_roll_link", "head_yaw_link", "robot0_head_roll",
         joint="head_roll", mj_joint="robot0_head_roll"),
    Link("head_pitch_link", "head_roll_link", "robot0_head_pitch",
         joint="head_pitch", mj_joint="robot0_head_pitch",
         shapes=(("sphere", 0.09, (0.03, 0.0, 0.08)),)),
    *_arm("right", "R"),
    *_arm("left", "L"),
]


def build_model() -> mujoco.MjModel:
    """Compile robosuite's GR1FixedLowerBody with its default base and hands (as Robot.load_model)."""
    from robosuite.models.bases import robot_base_factory
    from robosuite.models.grippers import gripper_factory
    from robosuite.models.robots import GR1FixedLowerBody

    robot = GR1FixedLowerBody(idn=0)
    robot.add_base(base=robot_base_factory(robot.default_base, idn=0))
    for arm in robot.arms:
        robot.add_gripper(gripper_factory(robot.default_gripper[arm], idn=f"0_{arm}"),
                          robot.eef_name[arm])
    return mujoco.MjModel.from_xml_string(robot.get_xml())


def world_pose(model: mujoco.MjModel, data: mujoco.MjData, link: Link) -> np.ndarray:
    """4x4 pose in the MuJoCo world of the body or site the link takes its frame from."""
    T = np.eye(4)
    if link.mj_kind == "body":
        b = model.body(link.mj_name).id
        T[:3, :3] = data.xmat[b].reshape(3, 3)
        T[:3, 3] = data.xpos[b]
    else:
        s = model.site(link.mj_name).id
        T[:3, :3] = data.site_xmat[s].reshape(3, 3)
        T[:3, 3] = data.site_xpos[s]
    return T


def rpy_from_matrix(R: np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (R = Rz(yaw) Ry(pitch) Rx(roll)); round trip checked by the caller."""
    pitch = np.arctan2(-R[2, 0], np.hypot(R[0, 0], R[1, 0]))
    if np.hypot(R[0, 0], R[1, 0]) > 1e-9:
        roll = np.arctan2(R[2, 1], R[2, 2])
        yaw = np.arctan2(R[1, 0], R[0, 0])
    else:  # gimbal lock: put all the rotation about x into roll
        roll = np.arctan2(-R[1, 2], R[1, 1])
        yaw = 0.0
    return np.array([roll, pitch, yaw])


def matrix_from_rpy(rpy: np.ndarray) -> np.ndarray:
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _f(x: float) -> str:
    s = f"{x:.9f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _vec(v) -> str:
    return " ".join(_f(float(x)) for x in v)


def _shape_xml(shape: tuple, indent: str) -> list[str]:
    """Origin + geometry lines of one primitive, for <visual> and <collision>."""
    kind = shape[0]
    if kind == "cylinder":
        radius, end = shape[1], np.asarray(shape[2], dtype=float)
        length = float(np.linalg.norm(end))
        z = end / length
        # rotate the cylinder's +z onto the segment direction
        axis = np.cross([0.0, 0.0, 1.0], z)
        s, c = np.linalg.norm(axis), float(z[2])
        if s < 1e-12:
            R = np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
        else:
            k = axis / s
            K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            R = np.eye(3) + s * K + (1 - c) * K @ K
        origin = f'<origin xyz="{_vec(end / 2)}" rpy="{_vec(rpy_from_matrix(R))}"/>'
        geom = f'<geometry><cylinder radius="{_f(radius)}" length="{_f(length)}"/></geometry>'
    elif kind == "box":
        origin = f'<origin xyz="{_vec(shape[2])}" rpy="0 0 0"/>'
        geom = f'<geometry><box size="{_vec(shape[1])}"/></geometry>'
    elif kind == "sphere":
        origin = f'<origin xyz="{_vec(shape[2])}" rpy="0 0 0"/>'
        geom = f'<geometry><sphere radius="{_f(shape[1])}"/></geometry>'
    else:
        raise ValueError(f"unknown primitive {kind!r}")
    return [indent + origin, indent + geom]


def urdf_text(model: mujoco.MjModel, limits: dict) -> str:
    import robosuite

    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)  # q = 0 (qpos0 of every hinge is 0)
    by_name = {link.name: link for link in LINKS}
    out = [
        '<?xml version="1.0"?>',
        "<!--",
        "  Fourier GR1 humanoid upper body on a fixed base (root base_link = the pelvis).",
        f"  Generated by tools/gr1_mjcf_to_urdf.py from robosuite {robosuite.__version__}'s GR1 model:",
        "  robosuite/models/assets/robots/gr1/robot.xml (GR1FixedLowerBody: body joints, frames,",
        "  axes, ranges) and robosuite/models/assets/grippers/fourier_{right,left}_hand.xml",
        "  (palm and index proximal joint), compiled by MuJoCo. robot.xml is robosuite's MJCF of",
        "  Fourier's published GR1T2 model. Joint effort/velocity: config/gr1.yaml, from Fourier's",
        "  GR1T2 URDF (FFTAI/Wiki-GRx-Models) and the hand MJCF's actuatorfrcrange.",
        "  Kinematic model only: primitive geometry, no inertials (dynamics live in the MJCF).",
        "  Each hand is one coordinate, the index proximal joint; the simulator moves all finger",
        "  drives together between robosuite's fully open and fully closed hand (config/gr1.yaml).",
        "  <side>_tcp is robosuite's grip_site (robot0_<side>_eef_pos).",
        "-->",
        '<robot name="gr1">',
        '  <material name="grey"><color rgba="0.6 0.6 0.62 1"/></material>',
    ]
    for link in LINKS:
        out.append(f'  <link name="{link.name}">')
        for tag in ("visual", "collision"):
            for shape in link.shapes:
                out.append(f"    <{tag}>")
                out += _shape_xml(shape, "      ")
                if tag == "visual":
                    out.append('      <material name="grey"/>')
                out.append(f"    </{tag}>")
        out.append("  </link>")
        if link.parent is None:
            continue
        T_parent = world_pose(model, data, by_name[link.parent])
        T_child = world_pose(model, data, link)
        T = np.linalg.inv(T_parent) @ T_child
        rpy = rpy_from_matrix(T[:3, :3])
        err = np.abs(matrix_from_rpy(rpy) - T[:3, :3]).max()
        if err > 1e-9:
            raise RuntimeError(f"{link.name}: rpy round trip error {err:.2e}")
        jtype = "fixed" if link.mj_joint is None else "revolute"
        out.append(f'  <joint name="{link.joint}" type="{jtype}">')
        out.append(f'    <parent link="{link.parent}"/>')
        out.append(f'    <child link="{link.name}"/>')
        out.append(f'    <origin xyz="{_vec(T[:3, 3])}" rpy="{_vec(rpy)}"/>')
        if jtype == "revolute":
            j = model.joint(link.mj_joint).id
            if model.jnt_type[j] != mujoco.mjtJoint.mjJNT_HINGE:
                raise RuntimeError(f"{link.mj_joint}: not a hinge")
            if np.abs(model.jnt_pos[j]).max() > 1e-12:
                raise RuntimeError(f"{link.mj_joint}: joint anchor off the body origin")
            if model.jnt_bodyid[j] != model.body(link.mj_name).id:
                raise RuntimeError(f"{link.mj_joint}: not on body {link.mj_name}")
            lo, hi = model.jnt_range[j]
            lim = limits[link.joint]
            out.append(f'    <axis xyz="{_vec(model.jnt_axis[j])}"/>')
            out.append(f'    <limit lower="{float(lo)!r}" upper="{float(hi)!r}" '
                       f'effort="{_f(lim["effort"])}" velocity="{_f(lim["velocity"])}"/>')
        out.append("  </joint>")
    out.append("</robot>")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "urdf" / "gr1.urdf")
    args = ap.parse_args()
    limits = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["robot"]["limits"]
    args.out.write_text(urdf_text(build_model(), limits), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
