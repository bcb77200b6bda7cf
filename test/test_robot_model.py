"""RobotSpec loading and RobotModel kinematics against independent oracles.

Oracles: (1) the published DH tables (Franka modified DH, UR standard DH) evaluated by the small
functions below; (2) yourdfpy's FK of the same URDF; (3) robosuite's own MJCF of the robot and
gripper, compiled by MuJoCo, with the fixed offsets stored in config ``sim:`` keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_mpc.core.config import ConfigError
from vla_mpc.core.robot_model import RobotModel, load_robot_spec, xyz_rpy_to_matrix

N_RANDOM = 8


# ------------------------------------------------------------------------- DH oracles


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def _trans(x: float, y: float, z: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


# Franka "Robot and interface specifications", modified DH: (a, d, alpha) per joint, then flange.
FRANKA_MDH = [(0, 0.333, 0), (0, 0, -math.pi / 2), (0, 0.316, math.pi / 2),
              (0.0825, 0, math.pi / 2), (-0.0825, 0.384, -math.pi / 2), (0, 0, math.pi / 2),
              (0.088, 0, math.pi / 2)]
FRANKA_FLANGE_D = 0.107
FRANKA_HAND_TCP = 0.1034  # Franka Hand: flange -> TCP along z, hand turned -pi/4 about z


def franka_dh_flange(q: np.ndarray) -> np.ndarray:
    """Modified (Craig) DH: T_i = RotX(alpha_{i-1}) TransX(a_{i-1}) RotZ(q_i) TransZ(d_i)."""
    T = np.eye(4)
    for (a, d, alpha), qi in zip(FRANKA_MDH, q):
        T = T @ _rot_x(alpha) @ _trans(a, 0, 0) @ _rot_z(qi) @ _trans(0, 0, d)
    return T @ _trans(0, 0, FRANKA_FLANGE_D)


# UR "DH parameters for calculations of kinematics and dynamics", UR5e: (d, a, alpha).
UR5E_DH = [(0.1625, 0, math.pi / 2), (0, -0.425, 0), (0, -0.3922, 0),
           (0.1333, 0, math.pi / 2), (0.0997, 0, -math.pi / 2), (0.0996, 0, 0)]
UR5E_TCP = 0.145  # robosuite Robotiq85 eef offset from the flange


def ur_dh_flange(q: np.ndarray) -> np.ndarray:
    """Standard DH: T_i = RotZ(q_i) TransZ(d_i) TransX(a_i) RotX(alpha_i), in UR's Base frame."""
    T = np.eye(4)
    for (d, a, alpha), qi in zip(UR5E_DH, q):
        T = T @ _rot_z(qi) @ _trans(0, 0, d) @ _trans(a, 0, 0) @ _rot_x(alpha)
    return T


@pytest.fixture(scope="module")
def panda():
    spec = load_robot_spec("panda")
    return spec, RobotModel(spec)


@pytest.fixture(scope="module")
def ur5e():
    spec = load_robot_spec("ur5e")
    return spec, RobotModel(spec)


def _random_q(spec, n: int, seed: int, margin: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.minimum(margin, 0.25 * (spec.limits.upper - spec.limits.lower))
    lo = np.maximum(spec.limits.lower + m, -math.pi)
    hi = np.minimum(spec.limits.upper - m, math.pi)
    return rng.uniform(lo, hi, size=(n, spec.n_joints))


def test_panda_fk_matches_franka_dh(panda):
    spec, model = panda
    for q in _random_q(spec, N_RANDOM, seed=1):
        flange = franka_dh_flange(q[:7])
        tcp = flange @ _rot_z(-math.pi / 4) @ _trans(0, 0, FRANKA_HAND_TCP)
        np.testing.assert_allclose(model.fk(q), tcp, atol=1e-6)
        np.testing.assert_allclose(model.link_poses(q, ["panda_link8"])["panda_link8"], flange,
                                   atol=1e-6)


def test_ur5e_fk_matches_ur_dh(ur5e):
    spec, model = ur5e
    base_link_T_base = _rot_z(math.pi)  # ROS base_link vs UR Base frame (ur_description)
    for q in _random_q(spec, N_RANDOM, seed=2):
        flange = base_link_T_base @ ur_dh_flange(q[:6])
        np.testing.assert_allclose(model.link_poses(q, ["flange"])["flange"], flange, atol=1e-6)
        np.testing.assert_allclose(model.fk(q), flange @ _trans(0, 0, UR5E_TCP), atol=1e-6)


def test_fk_batch_and_arm_only_shapes(panda):
    spec, model = panda
    qs = _random_q(spec, 5, seed=3)
    batch = model.fk(qs)
    assert batch.shape == (5, 4, 4)
    np.testing.assert_allclose(batch[2], model.fk(qs[2]), atol=0)
    np.testing.assert_allclose(model.fk_positions(qs), batch[:, :3, 3], atol=1e-12)
    np.testing.assert_allclose(model.fk(qs[0, :7]), model.fk(qs[0]), atol=1e-12)
    with pytest.raises(ValueError):
        model.fk(np.zeros(5))
    with pytest.raises(ValueError):
        model.fk(np.full(8, np.nan))


@pytest.mark.parametrize("robot", ["panda", "ur5e"])
def test_fk_matches_yourdfpy(robot, request):
    yourdfpy = pytest.importorskip("yourdfpy")
    spec, model = request.getfixturevalue(robot)
    urdf = yourdfpy.URDF.load(str(spec.urdf_path), load_meshes=False, build_scene_graph=True)
    finger = {"panda": "panda_rightfinger", "ur5e": "right_outer_knuckle"}[robot]  # mimic child
    for q in _random_q(spec, N_RANDOM, seed=4):
        urdf.update_cfg(dict(zip(spec.joint_names, q)))
        ours = model.link_poses(q, [spec.ee_link, finger])
        for link in (spec.ee_link, finger):
            theirs = urdf.get_transform(link, spec.base_link)
            np.testing.assert_allclose(ours[link], theirs, atol=1e-9, err_msg=link)


def _mujoco_eef_in_base(robot: str, qs: np.ndarray, spec) -> np.ndarray:
    """(B, 4, 4) pose of robosuite's eef site in its robot base body, from robosuite's MJCF."""
    mujoco = pytest.importorskip("mujoco")
    pytest.importorskip("robosuite")
    from robosuite.models import grippers, robots

    robot_model = getattr(robots, spec.sim["robosuite_robot"])()
    gripper = getattr(grippers, spec.sim["robosuite_gripper"])()
    robot_model.add_gripper(gripper)
    m = mujoco.MjModel.from_xml_string(robot_model.get_xml())
    d = mujoco.MjData(m)
    adr = [m.joint(j).qposadr[0] for j in robot_model.joints]
    base = m.body(robot_model.naming_prefix + spec.sim["sim_base_body"]).id
    site = m.site(gripper.naming_prefix + spec.sim["sim_eef_site"]).id
    out = []
    for q in qs:
        d.qpos[:] = 0.0
        d.qpos[adr] = q[: spec.n_arm]
        mujoco.mj_kinematics(m, d)
        Tb, Ts = np.eye(4), np.eye(4)
        Tb[:3, :3], Tb[:3, 3] = d.xmat[base].reshape(3, 3), d.xpos[base]
        Ts[:3, :3], Ts[:3, 3] = d.site_xmat[site].reshape(3, 3), d.site_xpos[site]
        out.append(np.linalg.inv(Tb) @ Ts)
    return np.array(out)


# Tolerances: Panda, robosuite's hand quaternion is rounded (0.924, -0.383): < 1 mm. UR5e,
# robosuite's link lengths are rounded to the mm (config/ur5e.yaml): a few mm.
@pytest.mark.parametrize("robot,pos_tol,rot_tol", [("panda", 1e-3, 2e-3), ("ur5e", 4e-3, 2e-3)])
def test_fk_matches_robosuite_mujoco(robot, pos_tol, rot_tol, request):
    spec, model = request.getfixturevalue(robot)
    qs = _random_q(spec, N_RANDOM, seed=5)
    T_mj = _mujoco_eef_in_base(robot, qs, spec)
    T_base = spec.sim_transform("base_link_in_sim_base")
    T_eef = spec.sim_transform("sim_eef_in_ee_link")
    for q, Tm in zip(qs, T_mj):
        ours = T_base @ model.fk(q) @ T_eef
        assert np.linalg.norm(ours[:3, 3] - Tm[:3, 3]) < pos_tol
        cos = (np.trace(ours[:3, :3].T @ Tm[:3, :3]) - 1) / 2
        assert math.acos(min(1.0, cos)) < rot_tol


@pytest.mark.parametrize("robot", ["panda", "ur5e"])
def test_jacobian_matches_finite_differences(robot, request):
    spec, model = request.getfixturevalue(robot)
    q = _random_q(spec, 1, seed=6)[0]
    J = model.jacobian(q)
    assert J.shape == (6, spec.n_arm)
    eps = 1e-6
    T0 = model.fk(q)
    for k in range(spec.n_arm):
        dq = q.copy()
        dq[k] += eps
        T1 = model.fk(dq)
        np.testing.assert_allclose((T1[:3, 3] - T0[:3, 3]) / eps, J[:3, k], atol=1e-5)
        dR = T1[:3, :3] @ T0[:3, :3].T  # world-frame rotation increment
        w = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]]) / 2
        np.testing.assert_allclose(w / eps, J[3:, k], atol=1e-5)


@pytest.mark.parametrize("robot", ["panda", "ur5e"])
def test_ik_round_trip_respects_limits(robot, request):
    spec, model = request.getfixturevalue(robot)
    lo, hi = spec.limits.lower[: spec.n_arm], spec.limits.upper[: spec.n_arm]
    full_pose_ok = 0
    targets = _random_q(spec, 6, seed=7, margin=0.3)
    for q_true in targets:
        T = model.fk(q_true)
        q, ok, err = model.ik(T[:3, 3], tolerance=1e-4)
        assert ok and err <= 1e-4
        assert np.linalg.norm(model.fk(q)[:3, 3] - T[:3, 3]) <= 1e-4
        assert np.all(q[: spec.n_arm] >= lo) and np.all(q[: spec.n_arm] <= hi)
        np.testing.assert_array_equal(q[spec.n_arm:], spec.home[spec.n_arm:])  # gripper kept
        res = model.ik(T[:3, 3], T[:3, :3], tolerance=1e-4, rotation_tolerance=1e-3)
        assert np.all(res.q[: spec.n_arm] >= lo) and np.all(res.q[: spec.n_arm] <= hi)
        if res.converged:
            full_pose_ok += 1
            Tq = model.fk(res.q)
            assert np.linalg.norm(Tq[:3, 3] - T[:3, 3]) <= 1e-4
            assert np.linalg.norm(Tq[:3, :3] - T[:3, :3]) <= 2e-3
    # local DLS from home: ~95 % success on random full-pose targets (measured 38/40 per robot)
    assert full_pose_ok >= len(targets) - 1


def test_ik_is_deterministic_and_clips_to_limits(panda):
    spec, model = panda
    far = np.array([2.0, 0.0, 0.5])  # out of reach: must not converge, must stay in limits
    a, b = model.ik(far, max_iterations=30), model.ik(far, max_iterations=30)
    assert not a.converged and a.error > 0.5
    np.testing.assert_array_equal(a.q, b.q)
    assert np.all(a.q >= spec.limits.lower) and np.all(a.q <= spec.limits.upper)
    with pytest.raises(ValueError):
        model.ik(np.zeros(3), target_rotation=2 * np.eye(3))


# ------------------------------------------------------------------------- bad input


def _write_config(tmp_path: Path, mutate, name: str = "robot.yaml") -> Path:
    spec = load_robot_spec("panda")
    raw = yaml.safe_load(spec.config_path.read_text())
    raw["robot"]["urdf"] = str(spec.urdf_path)
    mutate(raw)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def test_missing_config_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml") as e:
        load_robot_spec(missing)
    assert "not found" in str(e.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("robot:\n  name: panda\n  arm_joints: [a, b\n  urdf: x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: malformed YAML"):
        load_robot_spec(p)


def test_negative_velocity_names_field(tmp_path):
    p = _write_config(tmp_path, lambda r: r["robot"]["limits"]["panda_joint3"].update(velocity=-1))
    with pytest.raises(ConfigError) as e:
        load_robot_spec(p)
    assert str(e.value) == (f"{p}: robot.limits.panda_joint3.velocity: "
                            "expected a positive number, got -1")


def test_unknown_joint_names_field(tmp_path):
    def mutate(r):
        r["robot"]["arm_joints"][2] = "panda_joint99"
        r["robot"]["limits"]["panda_joint99"] = r["robot"]["limits"].pop("panda_joint3")
    p = _write_config(tmp_path, mutate)
    with pytest.raises(ConfigError, match=r"robot\.yaml: robot\.limits\.panda_joint99: joint "
                                          r"'panda_joint99' not found in .*panda\.urdf"):
        load_robot_spec(p)


def test_limit_outside_urdf_and_missing_limit(tmp_path):
    p = _write_config(tmp_path, lambda r: r["robot"]["limits"]["panda_joint1"].update(upper=3.5))
    with pytest.raises(ConfigError, match=r"robot\.limits\.panda_joint1\.upper: 3\.5 is above"):
        load_robot_spec(p)
    p = _write_config(tmp_path, lambda r: r["robot"]["limits"].pop("panda_joint7"))
    with pytest.raises(ConfigError, match=r"robot\.limits\.panda_joint7: missing"):
        load_robot_spec(p)
    p = _write_config(tmp_path, lambda r: r["robot"].update(home=[0.0] * 8))
    with pytest.raises(ConfigError, match=r"robot\.home\[3\]"):  # joint4 upper is -0.0698
        load_robot_spec(p)


def test_missing_or_malformed_urdf_names_urdf(tmp_path):
    p = _write_config(tmp_path, lambda r: r["robot"].update(urdf=str(tmp_path / "gone.urdf")))
    with pytest.raises(ConfigError, match=r"gone\.urdf: URDF file not found \(from .*robot\.yaml"):
        load_robot_spec(p)
    bad = tmp_path / "broken.urdf"
    bad.write_text('<robot name="x">\n  <link name="a">\n</robot>\n')
    p = _write_config(tmp_path, lambda r: r["robot"].update(urdf=str(bad)))
    with pytest.raises(ConfigError, match=r"broken\.urdf: line 3: malformed URDF XML"):
        load_robot_spec(p)


def test_base_link_must_be_urdf_root(tmp_path):
    p = _write_config(tmp_path, lambda r: r["robot"].update(base_link="panda_link0"))
    with pytest.raises(ConfigError, match=r"robot\.base_link: 'panda_link0' is not the root"):
        load_robot_spec(p)


def test_robot_without_gripper(tmp_path):
    def mutate(r):
        r["robot"]["gripper"] = None
        r["robot"]["limits"].pop("panda_finger_joint1")
        r["robot"]["home"] = r["robot"]["home"][:7]
    spec = load_robot_spec(_write_config(tmp_path, mutate))
    assert spec.gripper is None and spec.n_joints == spec.n_arm == 7
    assert spec.limits.velocity.shape == (7,)
    model = RobotModel(spec)
    q = _random_q(spec, 1, seed=8)[0]
    np.testing.assert_allclose(model.fk(q), _panda_tcp_from_dh(q), atol=1e-6)


def _panda_tcp_from_dh(q: np.ndarray) -> np.ndarray:
    return franka_dh_flange(q[:7]) @ _rot_z(-math.pi / 4) @ _trans(0, 0, FRANKA_HAND_TCP)


def test_spec_contents_and_sim_transform(panda):
    spec, _ = panda
    assert spec.joint_names[-1] == "panda_finger_joint1"
    np.testing.assert_array_equal(spec.limits.jerk[:7], [7500, 3750, 5000, 6250, 7500, 10000, 10000])
    assert spec.limits.lower.flags.writeable is False
    T = spec.sim_transform("sim_eef_in_ee_link")
    np.testing.assert_allclose(T, xyz_rpy_to_matrix([0, 0, -0.0069], [0, 0, -math.pi / 2]))
    with pytest.raises(ConfigError, match=r"sim\.nope: missing"):
        spec.sim_transform("nope")


def test_bare_name_resolves_through_share_dir(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    _write_config(tmp_path / "config", lambda r: r["robot"].update(name="arm_b"), name="arm_b.yaml")
    monkeypatch.setenv("VLA_MPC_SHARE_DIR", str(tmp_path))
    spec = load_robot_spec("arm_b")
    assert spec.name == "arm_b"
    assert spec.config_path == tmp_path / "config" / "arm_b.yaml"
