"""SimRobot (ROS-free): scene building, servo tracking, rendering, seeded layouts, task predicates.

Uses the robot configs through ``load_robot_spec``; nothing here imports rclpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.sim.tasks import Task, is_success, parse_instruction

mujoco = pytest.importorskip("mujoco")
pytest.importorskip("robosuite")

from vla_mpc.sim.sim_robot import SimRobot  # noqa: E402 - after the importorskip guards


@pytest.fixture(scope="module")
def panda() -> SimRobot:
    sim = SimRobot(load_robot_spec("panda"), cameras=("front",), image_size=(160, 120), seed=3)
    yield sim
    sim.close()


def test_joint_state_and_home(panda: SimRobot) -> None:
    panda.reset(3)
    names, q, qd = panda.joint_state()
    spec = panda.spec
    assert names[: len(spec.joint_names)] == list(spec.joint_names)
    assert "gripper0_right_finger_joint2" in names  # every gripper joint is reported
    np.testing.assert_allclose(q[:7], spec.home[:7], atol=1e-9)
    assert q.shape == qd.shape == (len(names),)


def test_render_shape_and_content(panda: SimRobot) -> None:
    img = panda.render("front")
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    assert img.std() > 10.0  # not blank
    # the red cube is visible: some pixels are strongly red
    red = (img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80)
    assert red.sum() > 5
    fx, fy, cx, cy, w, h = panda.camera_intrinsics("front")
    assert (w, h) == (160, 120) and fx == pytest.approx(fy) and cx == pytest.approx(79.5)
    # fovy oracle: the half image height subtends half the vertical field of view
    fovy = float(panda.model.cam_fovy[panda._camera_ids["front"]])
    assert np.degrees(2 * np.arctan(0.5 * h / fy)) == pytest.approx(fovy)


def test_position_target_is_tracked(panda: SimRobot) -> None:
    panda.reset(3)
    target = panda.home.copy()
    target[0] += 0.4
    target[3] += 0.3
    target[5] -= 0.2
    target[7] = 0.01  # finger: mostly closed (no object between the fingers)
    panda.set_position_target(target)
    panda.step(1.5)
    _, q, qd = panda.joint_state()
    np.testing.assert_allclose(q[:7], target[:7], atol=5e-3)
    assert abs(q[7] - 0.01) < 3e-3
    assert np.abs(qd[:7]).max() < 0.05
    assert panda.time == pytest.approx(1.5, abs=1e-9)


def test_target_clipped_to_limits(panda: SimRobot) -> None:
    target = panda.home.copy()
    target[0] = 10.0
    used = panda.set_position_target(target)
    assert used[0] == pytest.approx(panda.spec.limits.upper[0])
    with pytest.raises(ValueError, match="expected"):
        panda.set_position_target(target[:-1])
    with pytest.raises(ValueError, match="non-finite"):
        panda.set_position_target(np.full_like(target, np.nan))


def test_layout_seeded_and_reproducible(panda: SimRobot) -> None:
    panda.reset(11)
    a = {k: v[0].copy() for k, v in panda.object_poses().items()}
    panda.reset(12)
    b = {k: v[0].copy() for k, v in panda.object_poses().items()}
    panda.reset(11)
    c = {k: v[0].copy() for k, v in panda.object_poses().items()}
    assert set(a) >= {"red_cube", "green_cube", "blue_cube"}
    for k in a:
        np.testing.assert_allclose(a[k], c[k], atol=1e-12)
    assert max(np.linalg.norm(a[k][:2] - b[k][:2]) for k in a) > 0.01
    # cubes rest on the table: bottom face at table height
    for p, _q, _rgba, size in panda.object_poses().values():
        assert p[2] - size[2] / 2 == pytest.approx(panda.table_height(), abs=1e-6)


def test_pick_success_by_teleport(panda: SimRobot) -> None:
    panda.reset(5)
    task = parse_instruction("Pick up the red cube.")
    assert task == Task("pick", "red_cube", "Pick up the red cube.")
    assert not panda.task_success(task)  # on the table
    tcp, _ = panda.ee_pose()
    assert tcp[2] - panda.table_height() > 0.1  # home holds the tcp high above the table
    panda.set_object_pose("red_cube", tcp)
    assert panda.task_success(task)
    assert not panda.task_success(parse_instruction("pick up the blue cube"))
    # lifted but not in the gripper: not a pick
    panda.set_object_pose("red_cube", tcp + np.array([0.0, 0.2, 0.0]))
    assert not panda.task_success(task)


def test_reach_predicate() -> None:
    objs = {"blue_cube": (np.array([0.5, 0.0, 0.02]), np.array([0, 0, 0, 1.0]),
                          np.ones(4), np.full(3, 0.04))}
    task = parse_instruction("reach the blue cube")
    assert is_success(task, objs, [[0.5, 0.01, 0.06]], 0.0)
    assert not is_success(task, objs, [[0.5, 0.05, 0.06]], 0.0)  # 5 cm off to the side
    assert not is_success(task, objs, [[0.5, 0.0, 0.10]], 0.0)   # 6 cm above the top face
    with pytest.raises(ValueError):
        parse_instruction("dance")


@pytest.mark.parametrize("robot", ["ur5e", "gr1"])
def test_other_robots_build_and_step(robot: str) -> None:
    spec = load_robot_spec(robot)
    sim = SimRobot(spec, cameras=("front",), image_size=(64, 64))
    try:
        target = sim.home.copy()
        target[0] += 0.2
        sim.set_position_target(target)
        sim.step(1.0)
        names, q, _ = sim.joint_state()
        assert names[: len(spec.joint_names)] == list(spec.joint_names)
        assert abs(q[0] - target[0]) < 0.01
        assert np.all(np.isfinite(q))
        assert sim.render().shape == (64, 64, 3)
    finally:
        sim.close()
