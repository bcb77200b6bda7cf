"""SimRobot (ROS-free): scene building, servo tracking, rendering, seeded layouts, task predicates.

Uses the robot configs through ``load_robot_spec``; nothing here imports rclpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.sim.tasks import Task, is_success, parse_instruction, sample_episode

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
        # sample_episode's z (config sim.table_z_in_base_link) is this sim's table
        assert sim.table_height() == pytest.approx(spec.sim["table_z_in_base_link"], abs=1e-6)
        assert sim.render().shape == (64, 64, 3)
    finally:
        sim.close()


def test_reset_applies_an_episode(panda: SimRobot) -> None:
    assert panda.table_height() == pytest.approx(panda.spec.sim["table_z_in_base_link"], abs=1e-6)
    panda.reset(3)
    assert sorted(panda.object_poses()) == ["blue_cube", "green_cube", "red_cube"]  # no pads shown
    ep = sample_episode("panda", "pick_place", 21)
    panda.reset(episode=ep)
    assert panda.seed == 21 and panda.episode is ep
    poses = panda.object_poses()
    assert set(poses) == set(ep.objects)
    for name, o in ep.objects.items():
        p, q, rgba, size = poses[name]
        np.testing.assert_allclose(p, o["position"], atol=1e-6)  # z: resting on this table
        np.testing.assert_allclose(rgba, o["rgba"])
        np.testing.assert_allclose(size, o["size"])
        yaw = 2 * np.arctan2(q[2], q[3])
        assert yaw == pytest.approx(o["yaw"], abs=1e-6)
    # the colours are in the picture: a pad's colour shows where the pad is
    task = ep.task
    pad = ep.objects[task.destination]
    img = panda.render("front").astype(float)
    close = np.linalg.norm(img - 255.0 * np.asarray(pad["rgba"][:3]), axis=-1) < 60.0
    assert close.sum() > 10
    # physics: the cubes stay put, pads do not collide (a cube dropped on a pad lands on the table)
    panda.set_object_pose(task.object_name, np.asarray(pad["position"]) + [0.0, 0.0, 0.05])
    panda.step(1.0)
    p = panda.object_poses()[task.object_name][0]
    assert p[2] - 0.02 == pytest.approx(panda.table_height(), abs=2e-3)
    assert panda.task_success(task)  # on the pad (1 mm below its top is within tolerance)
    with pytest.raises(ValueError, match="robot 'ur5e'"):
        panda.reset(episode=sample_episode("ur5e", "reach", 0))
    panda.reset(3)  # back to the configured cubes and colours
    assert sorted(panda.object_poses()) == ["blue_cube", "green_cube", "red_cube"]
    np.testing.assert_allclose(panda.object_poses()["red_cube"][2], (0.85, 0.1, 0.1, 1.0))


def test_push_success_is_judged_from_the_reset_pose(panda: SimRobot) -> None:
    ep = sample_episode("panda", "push", 4)
    panda.reset(episode=ep)
    task = parse_instruction(ep.instruction, list(ep.objects))
    assert task.origin is None
    start = panda.start_object_poses()[task.object_name][0]
    assert not panda.task_success(task)
    panda.set_object_pose(task.object_name, start + 0.1 * task.direction)
    assert panda.task_success(task)
    panda.set_object_pose(task.object_name, start - 0.1 * task.direction)
    assert not panda.task_success(task)
