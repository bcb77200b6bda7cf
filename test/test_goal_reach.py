"""Goal images in the sim and the ROS-free plan-act loop (``vla_mpc.goal_reach``).

Oracles: pinocchio forward kinematics of the IK solutions, the simulator's own TCP after its servo
settles, the contract-B loader for the collected dataset, and the 3 cm success radius measured in
the sim (not in the model).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mujoco")

from vla_mpc import goal_reach as gr  # noqa: E402
from vla_mpc.core.robot_model import RobotModel, load_robot_spec  # noqa: E402


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel(load_robot_spec("panda"))


@pytest.fixture(scope="module")
def sim():
    s = gr.make_sim("panda")
    yield s
    s.close()


@pytest.fixture(scope="module")
def goals(sim, robot):
    return gr.goal_set(sim, robot, num_goals=2, seed=0)


def test_goal_set_poses_and_images(goals, robot, sim):
    home = np.asarray(robot.spec.home)
    home_tcp = robot.fk_positions(home[None])[0]
    sim.reset(gr.SCENE_SEED)
    home_image = sim.render(gr.CAMERA)
    assert len(goals) == 2
    for g in goals:
        assert 0.05 <= np.linalg.norm(g.tcp - home_tcp) <= np.sqrt(3) * gr.GOAL_OFFSET_M + 1e-9
        np.testing.assert_allclose(robot.fk_positions(g.q[None])[0], g.tcp, atol=1e-3)  # IK solved
        assert np.linalg.norm(g.sim_tcp - g.tcp) < 0.015  # the sim's servo settles there (its own TCP)
        assert np.all(g.q >= robot.spec.limits.lower) and np.all(g.q <= robot.spec.limits.upper)
        assert g.image.shape == (gr.IMAGE_SIZE, gr.IMAGE_SIZE, 3) and g.image.dtype == np.uint8
        assert np.abs(g.image.astype(int) - home_image.astype(int)).mean() > 0.5  # the arm moved in view
    assert np.abs(goals[0].image.astype(int) - goals[1].image.astype(int)).mean() > 0.5
    again = gr.goal_targets(home_tcp, 2, seed=0)
    np.testing.assert_array_equal(again, np.array([g.tcp for g in goals]))  # fixed set


def test_oracle_route_reaches_the_goals_within_3cm(goals, sim):
    res = gr.evaluate(None, cycles=30, sim=sim, goals=goals)
    assert set(res["routes"]) == {"oracle"} and "no world-model or goal-pose checkpoint" in res["note"]
    r = res["routes"]["oracle"]
    assert r["goal_reach_success"] == 1.0, r
    assert max(r["errors_m"]) < gr.SUCCESS_RADIUS_M
    with pytest.raises(ValueError, match="need a world-model checkpoint"):
        gr.evaluate(None, routes=["jepa"], sim=sim, goals=goals)


def test_reach_result_measures_in_the_sim(goals, sim, robot):
    # a goal the planner is not told about (it holds home): the result is the sim's TCP distance
    kin = gr.kinematic_model(robot, 0.1)
    sim.reset(gr.SCENE_SEED)
    start = sim.tcp_positions()[0].copy()
    home = np.asarray(robot.spec.home)
    r = gr.reach_goal(sim, kin, gr.make_planner(kin), kin.make_goal(joint_positions=home), goals[0].sim_tcp,
                      cycles=3, stop_when_settled=False)
    assert r.cycles == 3 and r.tcp_path.shape == (4, 3)
    np.testing.assert_allclose(r.tcp_path[0], start)
    assert np.linalg.norm(r.tcp_path[-1] - start) < 0.03  # held near home (servo sag at reset only)
    assert r.error_m == pytest.approx(float(np.linalg.norm(r.tcp_path[-1] - goals[0].sim_tcp)))
    assert r.success == (r.error_m <= gr.SUCCESS_RADIUS_M)


def test_collected_dataset_loads_as_contract_b(tmp_path):
    dataset_mod = pytest.importorskip("vla_mpc.training.dataset")
    gr.collect_dataset(tmp_path / "ds", episodes=3, steps=5, seed=0)
    ds = dataset_mod.Dataset.load(tmp_path / "ds")
    assert ds.frames.shape == (15, gr.IMAGE_SIZE, gr.IMAGE_SIZE, 3) and ds.proprio.shape == (15, 16)
    assert ds.actions.shape == (15, 16, 8)
    assert [e["source"] for e in ds.meta["episodes"]] == ["expert", "perturbed", "random"]
    np.testing.assert_array_equal(np.asarray(ds.episode_index), np.repeat([0, 1, 2], 5))
    # each episode starts with the arm at home (the sim resets the fingers to its own value), and it moves
    home = np.asarray(load_robot_spec("panda").home)
    np.testing.assert_allclose(np.asarray(ds.proprio)[[0, 5, 10], :7], np.tile(home[:7], (3, 1)), atol=1e-6)
    assert np.abs(np.diff(np.asarray(ds.proprio)[:5, :7], axis=0)).max() > 1e-3


def test_estimated_route_plans_to_the_end_effector_the_estimator_reads(goals, sim, tmp_path):
    """A goal-pose estimator that reads goal 0's tool position (fixed output: ee_std ~0) drives the
    kinematic planner there; for goal 1 the same reading is the wrong place (the route trusts it)."""
    import torch

    from vla_mpc.models.goal_pose import GoalPoseConfig, GoalPoseEstimator, save_goal_pose

    torch.manual_seed(0)
    save_goal_pose(GoalPoseEstimator(GoalPoseConfig(robot="panda", image_size=32, width=8, d_model=16, hidden=16,
                                                    ee_mean=tuple(goals[0].tcp.tolist()), ee_std=(1e-6,) * 3)),
                   tmp_path / "gp")
    res = gr.evaluate(None, cycles=30, routes=["estimated"], goal_pose=tmp_path / "gp", sim=sim, goals=goals)
    errors = res["routes"]["estimated"]["errors_m"]
    assert errors[0] < gr.SUCCESS_RADIUS_M, errors
    assert errors[1] > np.linalg.norm(goals[1].sim_tcp - goals[0].tcp) - 0.03, errors
    with pytest.raises(ValueError, match="goal-pose checkpoint"):
        gr.evaluate(None, routes=["estimated"], sim=sim, goals=goals)


def test_shipped_goal_pose_checkpoint_reads_the_goal_images(goals):
    """The Franka's shipped estimator (checkpoints/panda/goal_pose) places the tool of each goal
    image within a few cm of where the sim put it (the full figure: goal_reach eval / bench planner)."""
    from pathlib import Path

    from vla_mpc.models.goal_pose import load_goal_pose

    model = load_goal_pose(Path(__file__).resolve().parents[1] / "checkpoints" / "panda" / "goal_pose")
    assert model.config.robot == "panda"
    for g in goals:
        assert np.linalg.norm(model.predict(g.image) - g.sim_tcp) < 0.05
