"""latent_mpc_planner in its own process, through real pub/sub.

Oracles: pinocchio forward kinematics (``RobotModel``, independent of the node's batched torch FK)
for the imagined end-effector paths, the chunk's own targets for the imagined final state, and
the goal configuration for "the plan moves toward it".
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from vla_mpc.core.robot_model import RobotModel, load_robot_spec  # noqa: E402
from vla_mpc.ros import conversions as conv  # noqa: E402
from vla_mpc.ros.qos import LATCHED_QOS, SENSOR_QOS, STATE_QOS, STREAM_QOS  # noqa: E402

MODULE = "vla_mpc.ros.planner_node"
HORIZON = 8
DT = 0.1
BASE = dict(robot_config="panda", horizon=HORIZON, dt=DT, replan_rate_hz=10.0, num_samples=128,
            num_elites=16, iterations=4, num_rollout_markers=5)


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel(load_robot_spec("panda"))


class Probe:
    """Test-side publishers and the latest messages on the planner's outputs."""

    def __init__(self, ros_node):
        self.ros = ros_node
        n = ros_node.node
        self.costs: list[float] = []
        self.markers: MarkerArray | None = None
        self.plan: JointTrajectory | None = None
        self.command: JointState | None = None
        n.create_subscription(Float32, "/vla_mpc/planner/cost", lambda m: self.costs.append(m.data), STREAM_QOS)
        n.create_subscription(MarkerArray, "/vla_mpc/imagined_rollouts", lambda m: setattr(self, "markers", m),
                              STREAM_QOS)
        n.create_subscription(JointTrajectory, "/vla_mpc/plan", lambda m: setattr(self, "plan", m), STREAM_QOS)
        n.create_subscription(JointState, "/vla_mpc/joint_command", lambda m: setattr(self, "command", m),
                              STREAM_QOS)
        self.pub_state = n.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.pub_chunk = n.create_publisher(JointTrajectory, "/vla_mpc/action_chunk", STREAM_QOS)

    def run(self, names, q, until, timeout, chunk=None) -> bool:
        """Publish joint states at ~50 Hz (and the chunk at ~5 Hz) until ``until()`` or timeout."""
        ticks = [0]

        def tick() -> bool:
            ticks[0] += 1
            self.pub_state.publish(conv.joint_state_msg(names, q))
            if chunk is not None and ticks[0] % 10 == 1:
                self.pub_chunk.publish(chunk)
            self.ros.spin_for(0.02)
            return until()

        return self.ros.spin_until(tick, timeout)


def line_strips(markers: MarkerArray, ns: str) -> list[Marker]:
    return [m for m in markers.markers if m.ns == ns and m.action == Marker.ADD]


def points(m: Marker) -> np.ndarray:
    return np.array([[p.x, p.y, p.z] for p in m.points])


def test_vla_mode_imagines_the_chunk(start_node, ros_node, robot):
    spec = robot.spec
    names, home = list(spec.joint_names), np.asarray(spec.home, dtype=float)
    # System 1's chunk: joint 1 at 0.3 rad/s and joint 4 at -0.2 rad/s for 1 s (inside every limit)
    times = np.linspace(0.0, 1.0, 11)
    targets = home[None] + np.outer(times, np.r_[0.3, 0, 0, -0.2, 0, 0, 0, 0])
    chunk = conv.trajectory_msg(names, targets[1:], times[1:])  # stamp 0: starts "now"
    start_node(MODULE, dict(BASE, mode="vla"))
    probe = Probe(ros_node)
    ok = probe.run(names, home, lambda: probe.markers is not None and len(probe.costs) > 0, timeout=30.0,
                   chunk=chunk)
    assert ok, "no cost / markers from the planner"
    assert all(np.isfinite(probe.costs))
    arr = probe.markers
    assert arr.markers[0].action == Marker.DELETEALL  # old rollouts do not accumulate
    plan = line_strips(arr, "plan")
    assert len(plan) == 1
    m = plan[0]
    assert m.type == Marker.LINE_STRIP and m.header.frame_id == "base_link"
    pts = points(m)
    assert pts.shape == (HORIZON + 1, 3) and np.all(np.isfinite(pts))
    # oracle: pinocchio FK of the current state and of the chunk's target at t = H * dt
    q_end = home + HORIZON * DT * np.r_[0.3, 0, 0, -0.2, 0, 0, 0, 0]
    np.testing.assert_allclose(pts[0], robot.fk_positions(home)[0], atol=1e-4)
    np.testing.assert_allclose(pts[-1], robot.fk_positions(q_end)[0], atol=1e-4)


def test_mpc_mode_moves_toward_the_goal(start_node, ros_node, robot):
    spec = robot.spec
    names, home = list(spec.joint_names), np.asarray(spec.home, dtype=float)
    goal = home + np.r_[0.4, 0.3, 0.0, 0.3, 0.0, -0.2, 0.0, 0.0]
    start_node(MODULE, dict(BASE, mode="mpc", planner="mppi", goal_joint_positions=[float(x) for x in goal]))
    probe = Probe(ros_node)
    ok = probe.run(names, home, lambda: None not in (probe.plan, probe.command, probe.markers), timeout=30.0)
    assert ok, "no plan / command / markers from the planner"
    # the command is a position target over joint_names that moves toward the goal
    js = conv.joint_state_to_arrays(probe.command)
    cmd = conv.select_joints(js.names, js.position, names)
    assert np.linalg.norm(cmd - goal) < np.linalg.norm(home - goal) - 0.05
    # the plan: H points, dt apart, within the planning velocity bound, ending closer still
    jn, t, pos, _ = conv.trajectory_to_numpy(probe.plan)
    assert list(jn) == names and pos.shape == (HORIZON, len(names))
    np.testing.assert_allclose(t, DT * np.arange(1, HORIZON + 1), atol=1e-6)
    steps = np.abs(np.diff(np.vstack([home, pos]), axis=0))
    assert np.all(steps <= 0.5 * spec.limits.velocity * DT + 1e-6)  # velocity_scale 0.5
    assert np.linalg.norm(pos[-1] - goal) < np.linalg.norm(cmd - goal)
    # imagined rollouts: top-k samples + the plan, all H + 1 finite points in base_link
    samples = line_strips(probe.markers, "samples")
    assert len(samples) == BASE["num_rollout_markers"]
    for m in samples + line_strips(probe.markers, "plan"):
        assert m.type == Marker.LINE_STRIP and m.header.frame_id == "base_link"
        assert points(m).shape == (HORIZON + 1, 3) and np.all(np.isfinite(points(m)))
    assert len({m.id for m in samples}) == len(samples)  # fixed, distinct ids


def test_hybrid_mode_refines_a_chunk_that_leaves_the_limits(start_node, ros_node, robot):
    spec = robot.spec
    names = list(spec.joint_names)
    q = np.asarray(spec.home, dtype=float).copy()
    j1_upper = float(spec.limits.upper[0])
    q[0] = j1_upper - 0.1
    # System 1 proposes joint 1 at +0.3 rad/s (through its limit) and joint 4 at -0.2 rad/s
    times = np.linspace(0.0, 1.0, 11)
    velocity = np.r_[0.3, 0, 0, -0.2, 0, 0, 0, 0]
    chunk = conv.trajectory_msg(names, (q[None] + np.outer(times, velocity))[1:], times[1:])
    start_node(MODULE, dict(BASE, mode="hybrid", iterations=6))
    probe = Probe(ros_node)
    ok = probe.run(names, q, lambda: probe.plan is not None and probe.markers is not None, timeout=30.0, chunk=chunk)
    assert ok, "no refined plan from the planner"
    _, _, pos, _ = conv.trajectory_to_numpy(probe.plan)
    assert pos[:, 0].max() <= j1_upper  # refined: stays inside the URDF limit ...
    assert q[0] + HORIZON * DT * 0.3 > j1_upper  # ... where the proposal would have left it
    # ... and otherwise follows the proposal: joint 4 makes most of its commanded -0.16 rad (the
    # sampler's noise on the refined plan is a few centi-radians at this small budget)
    assert pos[-1, 3] - q[3] < -0.6 * 0.2 * HORIZON * DT
    assert probe.command is None  # hybrid publishes the plan, not commands


def test_jepa_mode_plans_from_a_goal_image(start_node, ros_node, robot, tmp_path):
    """Goal images through real pub/sub, encoded by a JEPA checkpoint. The untrained predictor is
    exactly copy-last (zero-initialised residual), so the published cost is the L1 energy between
    the observation's and the goal image's latents (oracle: the same checkpoint encoding both
    offline) plus effort: ~0 when the goal image is the current view."""
    import torch

    from vla_mpc.models.jepa import JepaConfig, JepaNet, load_world_model, prepare_image, save_world_model

    torch.manual_seed(0)
    save_world_model(JepaNet(JepaConfig.from_robot_spec(robot.spec, dt=DT, image_size=32, latent_dim=16)),
                     tmp_path / "ck")
    net = load_world_model(tmp_path / "ck")
    rng = np.random.default_rng(0)
    view = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # node resizes 64 -> 32 (contract C)
    other = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def latent(img):
        return net.encode_target(torch.from_numpy(prepare_image(img, 32)))

    expected = 10.0 * 2.0 * float((latent(view) - latent(other)).abs().mean())  # latent_weight 10, final + mean
    assert expected > 0.1
    names, home = list(robot.spec.joint_names), np.asarray(robot.spec.home, dtype=float)
    debug = tmp_path / "debug"
    node = start_node(MODULE, dict(BASE, mode="mpc", world_model="jepa", checkpoint=str(tmp_path / "ck"),
                                   debug_output_dir=str(debug), horizon=4))
    probe = Probe(ros_node)
    pub_img = ros_node.node.create_publisher(Image, "/vla_mpc/observation/front/image", SENSOR_QOS)
    pub_goal = ros_node.node.create_publisher(Image, "/vla_mpc/goal_image", LATCHED_QOS)
    pub_goal.publish(conv.numpy_to_image(other, "rgb8"))
    seen = {"n": 0}

    def until_costs(k):
        pub_img.publish(conv.numpy_to_image(view, "rgb8"))
        return len(probe.costs) >= seen["n"] + k and probe.plan is not None and probe.markers is not None

    assert probe.run(names, home, lambda: until_costs(5), timeout=40.0), "no plan from a goal image"
    far = probe.costs[-1]
    assert expected <= far <= expected + 0.05, (far, expected)
    m = line_strips(probe.markers, "plan")[0]
    assert m.header.frame_id == "base_link" and points(m).shape == (4 + 1, 3)
    _, _, pos, _ = conv.trajectory_to_numpy(probe.plan)
    assert pos.shape == (4, len(names)) and np.all(np.isfinite(pos))
    pub_goal.publish(conv.numpy_to_image(view, "rgb8"))  # now the goal is what the camera sees
    seen["n"] = len(probe.costs)
    assert probe.run(names, home, lambda: until_costs(8), timeout=30.0)
    assert probe.costs[-1] < 0.05 * expected, (probe.costs[-1], expected)
    assert node.stop() == 0
    assert (debug / "imagined_vs_executed.png").stat().st_size > 1000  # written at shutdown


def test_goal_pose_estimator_turns_a_goal_image_into_an_end_effector_goal(start_node, ros_node, robot, tmp_path):
    """goal_pose_checkpoint: the goal image's end-effector position (a tiny estimator whose output is
    ~fixed at TARGET: ee_std ~0) becomes the kinematic planner's goal; the plan moves toward it."""
    import torch

    from vla_mpc.models.goal_pose import GoalPoseConfig, GoalPoseEstimator, save_goal_pose

    names, home = list(robot.spec.joint_names), np.asarray(robot.spec.home, dtype=float)
    home_ee = robot.fk_positions(home[None])[0]
    target = home_ee + np.array([0.08, 0.06, -0.06])
    torch.manual_seed(0)
    save_goal_pose(GoalPoseEstimator(GoalPoseConfig(robot="panda", image_size=32, width=8, d_model=16, hidden=16,
                                                    ee_mean=tuple(target.tolist()), ee_std=(1e-6,) * 3)),
                   tmp_path / "gp")
    node = start_node(MODULE, dict(BASE, mode="mpc", goal_pose_checkpoint=str(tmp_path / "gp")))
    probe = Probe(ros_node)
    pub_goal = ros_node.node.create_publisher(Image, "/vla_mpc/goal_image", LATCHED_QOS)
    pub_goal.publish(conv.numpy_to_image(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8),
                                         "rgb8"))
    assert probe.run(names, home, lambda: probe.plan is not None and len(probe.costs) > 5, timeout=40.0), node.log()[-2000:]
    _, _, pos, _ = conv.trajectory_to_numpy(probe.plan)
    end = robot.fk_positions(pos[-1][None])[0]
    assert np.linalg.norm(end - target) < 0.7 * np.linalg.norm(home_ee - target), (end, target)
    assert "goal image" in node.log() and node.alive()


def test_goal_pose_checkpoint_for_another_robot_fails_configure(start_node, tmp_path):
    from vla_mpc.models.goal_pose import GoalPoseConfig, GoalPoseEstimator, save_goal_pose

    save_goal_pose(GoalPoseEstimator(GoalPoseConfig(robot="ur5e", image_size=32, width=8, d_model=16, hidden=16)),
                   tmp_path / "gp")
    node = start_node(MODULE, dict(BASE, mode="mpc", goal_pose_checkpoint=str(tmp_path / "gp")))
    deadline = time.monotonic() + 40.0
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not node.alive() and node.proc.returncode != 0
    assert "'ur5e'" in node.log(), node.log()[-2000:]
