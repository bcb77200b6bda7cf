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
