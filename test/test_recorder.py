"""recorder: a bag written from live topics has the rosbag2 layout and reads back message for message."""

import time

import yaml


def test_records_and_reads_back(start_node, ros_node, tmp_path):
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import LATCHED_QOS, STATE_QOS

    bag = tmp_path / "bag"
    node = ros_node.node
    js_pub = node.create_publisher(JointState, "/joint_states", STATE_QOS)
    instr_pub = node.create_publisher(String, "/vla_mpc/instruction", LATCHED_QOS)
    instr_pub.publish(String(data="pick up the red cube"))
    proc = start_node("vla_mpc.ros.recorder", {"output_dir": str(bag), "discovery_period_s": 0.1})
    # wait until the recorder subscribes to both topics
    assert ros_node.spin_until(lambda: js_pub.get_subscription_count() > 0 and instr_pub.get_subscription_count() > 0, 20.0), proc.log()
    ros_node.spin_for(1.0)  # DDS matching is asymmetric: let the reader side settle too
    sent = []
    for i in range(50):
        msg = cv.joint_state_msg(["j1", "j2"], [0.01 * i, -0.01 * i], stamp=100.0 + i * 0.01)
        js_pub.publish(msg)
        sent.append(msg)
        ros_node.spin_for(0.01)
    from rclpy.duration import Duration

    assert js_pub.wait_for_all_acked(Duration(seconds=10.0))
    ros_node.spin_for(0.5)
    assert proc.stop() == 0, proc.log()

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    assert any(f.endswith(".mcap") for f in meta["relative_file_paths"])
    with Reader(bag) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert topics["/joint_states"].msgtype == "sensor_msgs/msg/JointState"
        assert "offered_qos_profiles" in (bag / "metadata.yaml").read_text()
        got = [deserialize_message(raw, JointState) for c, _, raw in reader.messages() if c.topic == "/joint_states"]
        instr = [deserialize_message(raw, String) for c, _, raw in reader.messages() if c.topic == "/vla_mpc/instruction"]
    assert [list(m.position) for m in got] == [list(m.position) for m in sent]  # reliable: every message, in order
    assert [m.data for m in instr] == ["pick up the red cube"]  # latched message recorded
