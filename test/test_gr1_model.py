"""config/gr1.yaml and urdf/gr1.urdf against the simulator's own GR1 model.

Oracle: robosuite 1.5.2's GR1FixedLowerBody with its default Fourier hands, composed as
``robosuite.robots.Robot.load_model`` does and compiled by MuJoCo. Independent FK of the URDF:
yourdfpy (and, when it exists, the project's pinocchio-based ``vla_mpc.core.robot_model``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")
mujoco = pytest.importorskip("mujoco")
pytest.importorskip("robosuite")
yourdfpy = pytest.importorskip("yourdfpy")

from vla_mpc.paths import config_path, resolve  # noqa: E402

N_SAMPLES = 40
POS_TOL = 1e-4  # m
ROT_TOL = 1e-4  # rad

# URDF frame -> (MuJoCo kind, name) it must coincide with.
FRAME_PAIRS = {
    "right_tcp": ("site", "gripper0_right_grip_site"),
    "left_tcp": ("site", "gripper0_left_grip_site"),
    "r_lower_arm_pitch_link": ("body", "robot0_r_lower_arm_pitch"),
    "l_lower_arm_pitch_link": ("body", "robot0_l_lower_arm_pitch"),
    "head_pitch_link": ("body", "robot0_head_pitch"),
    "R_index_proximal_link": ("body", "gripper0_right_R_index_proximal_link"),
    "L_index_proximal_link": ("body", "gripper0_left_L_index_proximal_link"),
}
# key of the ee_link pose derived from sim.sim_eef_site and sim.sim_eef_in_ee_link
EE_FROM_SITE = "ee_link from sim_eef_site"


@pytest.fixture(scope="module")
def cfg() -> dict:
    return yaml.safe_load(config_path("gr1").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def joint_names(cfg) -> list[str]:
    return list(cfg["robot"]["arm_joints"]) + list(cfg["robot"]["gripper"]["joints"])


@pytest.fixture(scope="module")
def urdf(cfg):
    return yourdfpy.URDF.load(str(resolve(cfg["robot"]["urdf"])), load_meshes=False,
                              build_scene_graph=True)


@pytest.fixture(scope="module")
def robosuite_parts(cfg):
    """The robot model and its hands, built as robosuite.robots.Robot.load_model builds them."""
    from robosuite.models.bases import robot_base_factory
    from robosuite.models.grippers import gripper_factory
    from robosuite.models import robots

    robot = getattr(robots, cfg["sim"]["robosuite_robot"])(idn=0)
    robot.add_base(base=robot_base_factory(robot.default_base, idn=0))
    grippers = {}
    for arm in robot.arms:
        name = cfg["sim"]["robosuite_gripper"][arm]
        grippers[arm] = gripper_factory(name, idn=f"0_{arm}")
        robot.add_gripper(grippers[arm], robot.eef_name[arm])
    return robot, grippers


@pytest.fixture(scope="module")
def mj(robosuite_parts):
    robot, _ = robosuite_parts
    return mujoco.MjModel.from_xml_string(robot.get_xml())


def _mj_pose(model, data, kind: str, name: str) -> np.ndarray:
    T = np.eye(4)
    if kind == "body":
        i = model.body(name).id
        T[:3, :3], T[:3, 3] = data.xmat[i].reshape(3, 3), data.xpos[i]
    else:
        i = model.site(name).id
        T[:3, :3], T[:3, 3] = data.site_xmat[i].reshape(3, 3), data.site_xpos[i]
    return T


def _sim_transform(entry: dict) -> np.ndarray:
    """{xyz, rpy} -> 4x4, URDF convention R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = entry["rpy"]
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    Rz = np.array([[np.cos(y), -np.sin(y), 0], [np.sin(y), np.cos(y), 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = Rz @ Ry @ Rx, entry["xyz"]
    return T


def _mj_joint_names(cfg) -> dict[str, str]:
    """Our joint -> MuJoCo joint, by robosuite's instance prefixes (robot0_, gripper0_<arm>_)."""
    sim = cfg["sim"]
    names = {j: f"robot0_{j}" for j in cfg["robot"]["arm_joints"]}
    for j, arm, measured in zip(cfg["robot"]["gripper"]["joints"], sim["gripper_arms"],
                                sim["gripper_measure_joints"]):
        names[j] = f"gripper0_{arm}_{measured}"
    return names


def _rot_angle(R: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))


def _random_configs(cfg, joint_names, n: int, seed: int = 0) -> np.ndarray:
    lim = cfg["robot"]["limits"]
    lo = np.array([lim[j]["lower"] for j in joint_names])
    hi = np.array([lim[j]["upper"] for j in joint_names])
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, len(joint_names)))  # [n, 22]


def _mujoco_poses(cfg, mj, joint_names, q: np.ndarray) -> dict[str, np.ndarray]:
    """Poses in base_link of FRAME_PAIRS' MuJoCo frames (via sim.sim_base_body and
    sim.base_link_in_sim_base), plus EE_FROM_SITE: where the config's sim keys put ee_link."""
    data = mujoco.MjData(mj)
    mj_names = _mj_joint_names(cfg)
    for name, value in zip(joint_names, q):
        data.qpos[mj.jnt_qposadr[mj.joint(mj_names[name]).id]] = value
    mujoco.mj_kinematics(mj, data)
    sim = cfg["sim"]
    T_world_base = (_mj_pose(mj, data, "body", f"robot0_{sim['sim_base_body']}")
                    @ _sim_transform(sim["base_link_in_sim_base"]))
    T_base_world = np.linalg.inv(T_world_base)
    poses = {link: T_base_world @ _mj_pose(mj, data, *ref) for link, ref in FRAME_PAIRS.items()}
    # robosuite's eef site of the right hand, expressed in our ee_link via sim_eef_in_ee_link
    T_site = T_base_world @ _mj_pose(mj, data, "site", f"gripper0_right_{sim['sim_eef_site']}")
    poses[EE_FROM_SITE] = T_site @ np.linalg.inv(_sim_transform(sim["sim_eef_in_ee_link"]))
    return poses


# ---------------------------------------------------------------------------------------------
# Joint set, ranges and limits


def test_every_config_joint_is_in_urdf_with_mjcf_range(cfg, joint_names, urdf, mj):
    lim = cfg["robot"]["limits"]
    assert set(lim) == set(joint_names)
    for name in joint_names:
        assert name in urdf.joint_map, f"{name} missing from the URDF"
        uj = urdf.joint_map[name]
        assert uj.type == "revolute", name
        mj_range = mj.jnt_range[mj.joint(_mj_joint_names(cfg)[name]).id]
        np.testing.assert_allclose([uj.limit.lower, uj.limit.upper], mj_range, atol=1e-12,
                                   err_msg=f"{name}: URDF range vs MJCF")
        np.testing.assert_allclose([lim[name]["lower"], lim[name]["upper"]], mj_range,
                                   atol=1e-12, err_msg=f"{name}: config range vs MJCF")
        assert uj.limit.velocity == pytest.approx(lim[name]["velocity"]), name
        assert uj.limit.effort == pytest.approx(lim[name]["effort"]), name
        for key in ("velocity", "acceleration", "jerk", "effort"):
            assert lim[name][key] > 0.0, f"{name}.{key}"


def test_urdf_moves_only_the_config_joints(cfg, joint_names, urdf):
    assert sorted(urdf.actuated_joint_names) == sorted(joint_names)
    assert urdf.base_link == cfg["robot"]["base_link"]
    for link in (cfg["robot"]["ee_link"], "left_tcp"):
        assert link in urdf.link_map


def test_arm_joints_are_exactly_the_actuated_robot_joints(cfg, mj, joint_names):
    """Every waist/head/arm joint robosuite's robot keeps is commanded, and nothing else."""
    mj_names = _mj_joint_names(cfg)
    robot_joints = {mj.joint(j).name for j in range(mj.njnt)
                    if mj.joint(j).name.startswith("robot0_")}
    assert robot_joints == {mj_names[j] for j in cfg["robot"]["arm_joints"]}
    actuated = {mj.joint(mj.actuator_trnid[a, 0]).name for a in range(mj.nu)}
    assert {mj_names[j] for j in joint_names} <= actuated
    # the gripper coordinate is reported as the joint of the same name
    assert cfg["sim"]["gripper_measure_joints"] == cfg["robot"]["gripper"]["joints"]


def test_home_and_gripper_within_limits(cfg, joint_names):
    robot, lim = cfg["robot"], cfg["robot"]["limits"]
    assert len(robot["home"]) == len(joint_names)
    for name, value in zip(joint_names, robot["home"]):
        assert lim[name]["lower"] <= value <= lim[name]["upper"], name
    for key in ("open", "closed"):
        for name, value in zip(robot["gripper"]["joints"], robot["gripper"][key]):
            assert lim[name]["lower"] <= value <= lim[name]["upper"], f"{key} {name}"


def test_one_coordinate_drives_the_whole_hand(cfg, robosuite_parts, mj):
    """The simulator interpolates every finger drive between robosuite's fully open (action -1)
    and fully closed (+1) controls. Check that those extremes reach all 11 drives, and that the
    measured joint's drive goes exactly from gripper.open to gripper.closed, so the commanded
    coordinate is that joint's position target."""
    _, grippers = robosuite_parts
    g_cfg = cfg["robot"]["gripper"]
    mj_names = _mj_joint_names(cfg)
    for arm, joint, q_open, q_closed in zip(cfg["sim"]["gripper_arms"], g_cfg["joints"],
                                            g_cfg["open"], g_cfg["closed"]):
        hand = grippers[arm]
        ids = np.array([mj.actuator(a).id for a in hand.actuators])
        lo, hi = mj.actuator_ctrlrange[ids, 0], mj.actuator_ctrlrange[ids, 1]
        ctrl = {}
        for key, direction in (("open", -1.0), ("closed", 1.0)):
            a = np.asarray(hand.format_action(np.full(hand.dof, direction)))
            np.testing.assert_array_equal(a, np.full(len(ids), direction))  # every drive
            ctrl[key] = (lo + hi) / 2 + (hi - lo) / 2 * a
        driven = [i for i, a_id in enumerate(ids)
                  if mj.joint(mj.actuator_trnid[a_id, 0]).name == mj_names[joint]]
        assert len(driven) == 1, f"{arm}: no single drive for {joint}"
        assert ctrl["open"][driven[0]] == pytest.approx(q_open)
        assert ctrl["closed"][driven[0]] == pytest.approx(q_closed)


# ---------------------------------------------------------------------------------------------
# Forward kinematics


def test_urdf_fk_matches_mujoco(cfg, joint_names, urdf, mj):
    qs = _random_configs(cfg, joint_names, N_SAMPLES)
    tcp = []
    worst_pos, worst_rot = 0.0, 0.0
    for q in qs:
        urdf.update_cfg(dict(zip(joint_names, q)))
        ref = _mujoco_poses(cfg, mj, joint_names, q)
        for key, T_ref in ref.items():
            link = cfg["robot"]["ee_link"] if key == EE_FROM_SITE else key
            T = urdf.get_transform(link, cfg["robot"]["base_link"])
            worst_pos = max(worst_pos, float(np.linalg.norm(T[:3, 3] - T_ref[:3, 3])))
            worst_rot = max(worst_rot, _rot_angle(T[:3, :3].T @ T_ref[:3, :3]))
        tcp.append(ref["right_tcp"][:3, 3])
    # the samples must actually spread the hand around (else the comparison proves little)
    assert np.std(np.array(tcp), axis=0).max() > 0.1
    assert worst_pos < POS_TOL, f"worst position error {worst_pos:.3g} m"
    assert worst_rot < ROT_TOL, f"worst orientation error {worst_rot:.3g} rad"


def test_fk_comparison_detects_a_wrong_joint(cfg, joint_names, urdf, mj):
    """Negative control: offsetting one elbow in the URDF moves the right TCP off the reference."""
    q = _random_configs(cfg, joint_names, 1, seed=1)[0]
    q_wrong = q.copy()
    q_wrong[joint_names.index("r_elbow_pitch")] += 0.05
    urdf.update_cfg(dict(zip(joint_names, q_wrong)))
    T = urdf.get_transform("right_tcp", cfg["robot"]["base_link"])
    ref = _mujoco_poses(cfg, mj, joint_names, q)["right_tcp"]
    assert np.linalg.norm(T[:3, 3] - ref[:3, 3]) > 10 * POS_TOL


def test_robot_model_fk_matches_mujoco(cfg, joint_names, mj):
    """The project's pinocchio model, loaded from config/gr1.yaml, against MuJoCo."""
    robot_model = pytest.importorskip("vla_mpc.core.robot_model")
    spec = robot_model.load_robot_spec("gr1")
    model = robot_model.RobotModel(spec)
    assert list(spec.joint_names) == joint_names
    np.testing.assert_allclose(spec.sim_transform("base_link_in_sim_base"),
                               _sim_transform(cfg["sim"]["base_link_in_sim_base"]))
    for q in _random_configs(cfg, joint_names, 10, seed=2):
        ref = _mujoco_poses(cfg, mj, joint_names, q)
        T_ee = np.asarray(model.fk(q))
        np.testing.assert_allclose(T_ee[:3, 3], ref[EE_FROM_SITE][:3, 3], atol=POS_TOL)
        assert _rot_angle(T_ee[:3, :3].T @ ref[EE_FROM_SITE][:3, :3]) < ROT_TOL
        poses = model.link_poses(q, ("left_tcp", "head_pitch_link"))
        for link in ("left_tcp", "head_pitch_link"):
            T = np.asarray(poses[link])
            np.testing.assert_allclose(T[:3, 3], ref[link][:3, 3], atol=POS_TOL, err_msg=link)
