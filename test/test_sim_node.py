"""The sim_robot node in its own process: joint-state rate, camera images, commands in and out."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("rclpy")

from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from vla_mpc.core.robot_model import load_robot_spec  # noqa: E402
from vla_mpc.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_SUB_QOS  # noqa: E402


def test_sim_node_publishes_and_obeys(start_node, ros_node) -> None:  # noqa: ANN001 - fixtures
    spec = load_robot_spec("panda")
    proc = start_node("vla_mpc.ros.sim_node", {
        "robot_config": "panda", "joint_state_rate_hz": 200.0, "camera_rate_hz": 10.0,
        "image_width": 128, "image_height": 96,
    })
    states: list[tuple[float, JointState]] = []
    images: list[Image] = []
    node = ros_node.node
    node.create_subscription(JointState, "/joint_states", lambda m: states.append((time.monotonic(), m)),
                             STATE_SUB_QOS)
    node.create_subscription(Image, "/camera/front/image_raw", images.append, SENSOR_QOS)
    cmd_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)

    assert ros_node.spin_until(lambda: len(states) > 20 and images, timeout=40.0), proc.log()[-3000:]
    # rate: count messages over a 1 s window (lower bound with margin for a shared 2-core machine)
    n0 = len(states)
    ros_node.spin_for(1.0)
    assert len(states) - n0 >= 100, f"{len(states) - n0} joint states in 1 s"
    img = images[-1]
    assert (img.width, img.height, img.encoding) == (128, 96, "rgb8")
    assert len(img.data) == 128 * 96 * 3

    names = list(states[-1][1].name)
    assert names[:8] == list(spec.joint_names)
    target = np.array(states[-1][1].position[:8])
    target[0] += 0.3
    msg = Float64MultiArray()
    msg.data = target.tolist()
    for _ in range(3):
        cmd_pub.publish(msg)
        ros_node.spin_for(0.05)
    assert ros_node.spin_until(lambda: abs(states[-1][1].position[0] - target[0]) < 0.01, timeout=10.0)

    bad = Float64MultiArray()
    bad.data = [0.0] * 5  # wrong length
    cmd_pub.publish(bad)
    ros_node.spin_for(0.5)
    n1 = len(states)
    ros_node.spin_for(0.5)
    assert proc.alive()
    assert len(states) - n1 > 20  # still publishing
    assert abs(states[-1][1].position[0] - target[0]) < 0.01  # the bad command was ignored
    assert "command rejected" in proc.log()


def test_sim_node_episode_reset_ready_and_success(start_node, ros_node) -> None:  # noqa: ANN001 - fixtures
    """Contract G: /vla_mpc/episode "start" -> reset to sample_episode, episode_ready, success task."""
    import json

    from std_msgs.msg import Bool, String
    from visualization_msgs.msg import MarkerArray

    from vla_mpc.core.robot_model import RobotModel
    from vla_mpc.ros import conversions as conv
    from vla_mpc.ros.qos import LATCHED_QOS, STATE_SUB_QOS
    from vla_mpc.sim.tasks import sample_episode

    spec = load_robot_spec("panda")
    proc = start_node("vla_mpc.ros.sim_node", {
        "robot_config": "panda", "camera_rate_hz": 2.0, "image_width": 64, "image_height": 64,
    })
    node = ros_node.node
    ready: list[dict] = []
    success: list[bool] = []
    objects: list[dict] = []
    states: list[JointState] = []
    node.create_subscription(String, "/vla_mpc/sim/episode_ready", lambda m: ready.append(json.loads(m.data)),
                             LATCHED_QOS)
    node.create_subscription(Bool, "/vla_mpc/sim/task_success", lambda m: success.append(m.data), LATCHED_QOS)
    node.create_subscription(MarkerArray, "/vla_mpc/sim/object_poses",
                             lambda m: objects.append(conv.markers_to_objects(m)), STATE_SUB_QOS)
    node.create_subscription(JointState, "/joint_states", states.append, STATE_SUB_QOS)
    ep_pub = node.create_publisher(String, "/vla_mpc/episode", LATCHED_QOS)
    cmd_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
    assert ros_node.spin_until(lambda: objects and states, timeout=40.0), proc.log()[-3000:]

    def start(index: int, kind: str, seed: int, robot: str = "panda", instruction: str | None = None) -> None:
        ep = sample_episode("panda", kind, seed)
        ep_pub.publish(String(data=json.dumps({
            "event": "start", "episode": index, "seed": seed, "kind": kind, "robot": robot,
            "instruction": instruction or ep.instruction, "source": "expert"})))

    episode = sample_episode("panda", "reach", 12)
    start(4, "reach", 12)
    assert ros_node.spin_until(lambda: ready and ready[-1] == {"episode": 4, "seed": 12}, timeout=10.0), proc.log()[-3000:]
    objects.clear()
    assert ros_node.spin_until(lambda: bool(objects), timeout=5.0)
    assert set(objects[-1]) == set(episode.objects)  # renamed by colour, positions applied
    for name, o in episode.objects.items():
        np.testing.assert_allclose(objects[-1][name].position[:2], o["position"][:2], atol=0.005)
        np.testing.assert_allclose(objects[-1][name].rgba, o["rgba"], atol=1e-6)
    assert ros_node.spin_until(lambda: success and success[-1] is False, timeout=5.0)

    # command the TCP 2 cm above the target cube's top face: reach succeeds
    task = episode.task
    top = np.asarray(episode.objects[task.object_name]["position"]) + [0.0, 0.0, 0.04]
    model = RobotModel(spec)
    q, ok, _ = model.ik(top, model.fk(spec.home)[:3, :3], q0=spec.home)
    assert ok
    msg = Float64MultiArray()
    msg.data = np.asarray(q, float).tolist()
    cmd_pub.publish(msg)
    assert ros_node.spin_until(lambda: success and success[-1] is True, timeout=15.0), proc.log()[-3000:]

    # another robot's episode and a malformed message are ignored (logged); a new episode resets
    n_ready = len(ready)
    start(5, "reach", 13, robot="ur5e")
    ros_node.spin_for(0.5)  # depth-1 latched topic: let each message through before the next
    ep_pub.publish(String(data="{not json"))
    ros_node.spin_for(0.5)
    assert len(ready) == n_ready and proc.alive()
    log = proc.log()
    assert "is for robot 'ur5e'" in log and "/vla_mpc/episode: JSONDecodeError" in log
    start(6, "pick_place", 7)
    assert ros_node.spin_until(lambda: ready[-1] == {"episode": 6, "seed": 7}, timeout=10.0)
    assert ros_node.spin_until(lambda: success[-1] is False, timeout=5.0)
    home_reached = lambda: np.abs(np.asarray(states[-1].position[:7]) - spec.home[:7]).max() < 0.02  # noqa: E731
    assert ros_node.spin_until(home_reached, timeout=5.0)  # the reset put the robot back at home
    pads = sample_episode("panda", "pick_place", 7).objects
    objects.clear()
    assert ros_node.spin_until(lambda: bool(objects) and set(objects[-1]) == set(pads), timeout=5.0)
