"""pictures: PNGs from a bag (camera frame with the projected path, joints with limits, latency
histograms, imagined rollouts), the pinhole projection against an independent oracle, damaged bags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vla_mpc.pictures import camera_pose_in_base, find_bag, make_pictures, project

REPO = Path(__file__).resolve().parents[1]


def _demo_like_bag(path: Path, seconds: float = 2.0) -> dict:
    """A bag with what the demo records: joint states, commands, camera frames + info, object poses,
    imagined rollouts (receive times 100 Hz / 10 Hz)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from rclpy.serialization import serialize_message
    from visualization_msgs.msg import MarkerArray

    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import COMMAND_QOS, SENSOR_QOS, STATE_QOS, STREAM_QOS
    from vla_mpc.ros.recorder import _to_bag_qos

    spec = load_robot_spec("panda")
    home = np.asarray(spec.home, float)
    ts = get_typestore(Stores.ROS2_KILTED)
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = {}
    for topic, msgtype, qos in [
        ("/joint_states", "sensor_msgs/msg/JointState", STATE_QOS),
        ("/vla_mpc/joint_command", "sensor_msgs/msg/JointState", COMMAND_QOS),
        ("/camera/front/image_raw", "sensor_msgs/msg/Image", SENSOR_QOS),
        ("/camera/front/camera_info", "sensor_msgs/msg/CameraInfo", SENSOR_QOS),
        ("/vla_mpc/sim/object_poses", "visualization_msgs/msg/MarkerArray", STREAM_QOS),
        ("/vla_mpc/imagined_rollouts", "visualization_msgs/msg/MarkerArray", STREAM_QOS),
    ]:
        conns[topic] = w.add_connection(topic, msgtype, typestore=ts, offered_qos_profiles=[_to_bag_qos(qos)])

    def put(topic, msg, t):
        w.write(conns[topic], int(t * 1e9), serialize_message(msg))

    t0 = 50.0
    cube = cv.SceneObject("red_cube", np.array([0.55, 0.1, -0.09]), np.array([0, 0, 0, 1.0]),
                          np.array([0.85, 0.1, 0.1, 1.0]), np.array([0.04] * 3), "base_link")
    for i in range(int(seconds * 100)):
        t = t0 + i * 0.01
        q = home + 0.2 * np.sin(np.pi * i / (seconds * 100)) * np.r_[np.ones(7), 0.0]
        put("/joint_states", cv.joint_state_msg(spec.joint_names, q, stamp=t), t)
        put("/vla_mpc/joint_command", cv.joint_state_msg(spec.joint_names, q + 0.01, stamp=t), t + 0.002)
        if i % 10 == 0:
            frame = np.full((120, 160, 3), 90, np.uint8)
            put("/camera/front/image_raw", cv.numpy_to_image(frame, "rgb8", t, "front_optical_frame"), t)
            put("/camera/front/camera_info", cv.camera_info_msg(160, 120, 115.0, 115.0, 79.5, 59.5, t), t)
            put("/vla_mpc/sim/object_poses", cv.objects_to_markers([cube], t), t)
            arr = MarkerArray(markers=[cv.delete_all_marker()] + [
                cv.line_strip_marker("samples", k, np.c_[np.linspace(0.3, 0.5, 5), np.full(5, 0.02 * k), np.zeros(5)],
                                     (0.2, 0.4, 1.0, 0.5)) for k in range(4)
            ] + [cv.line_strip_marker("plan", 0, np.c_[np.linspace(0.3, 0.55, 5), np.zeros(5), np.zeros(5)], (0, 1, 0, 1))])
            put("/vla_mpc/imagined_rollouts", arr, t)
    w.close()
    return {"t0": t0}


def test_projection_matches_an_independent_look_at_camera():
    # camera at (2, 0, 0) looking back at the origin along -x, world up z: optical x (right) = +y,
    # y (down) = -z, z (forward) = -x. Straight ahead -> principal point; +y -> right; +z -> up.
    r = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T  # columns x, y, z
    intr = (100.0, 100.0, 50.0, 40.0, 101, 81)
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.1], [3.0, 0.0, 0.0]])
    uv, ok = project(pts, r, np.array([2.0, 0.0, 0.0]), intr)
    np.testing.assert_allclose(uv[0], [50.0, 40.0])
    np.testing.assert_allclose(uv[1], [50.0 + 100.0 * 0.2 / 2.0, 40.0])  # u = cx + fx X / Z
    np.testing.assert_allclose(uv[2], [50.0, 40.0 - 100.0 * 0.1 / 2.0])  # v = cy + fy Y / Z, Y = -0.1
    assert ok[:3].all() and not ok[3]  # the last point is behind the camera


def test_sim_camera_pose_is_a_rotation_looking_at_its_target():
    r, p = camera_pose_in_base("panda", "front")
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    from vla_mpc.sim.scene import DEFAULT_CAMERAS

    look = np.asarray(DEFAULT_CAMERAS["front"]["lookat"], float)
    uv, ok = project(look[None], r, p, (100.0, 100.0, 50.0, 50.0, 101, 101))
    np.testing.assert_allclose(uv[0], [50.0, 50.0], atol=1e-9)  # the look-at point is the image centre
    assert r[2, 1] < 0.0  # optical y points down: its base_link z component is negative
    assert camera_pose_in_base("panda", "wrist") is None


def test_pictures_from_a_bag_and_from_the_cli(tmp_path):
    bag = tmp_path / "out" / "bag"
    bag.parent.mkdir()
    _demo_like_bag(bag)
    assert find_bag(tmp_path / "out") == bag
    paths, data = make_pictures(tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["camera_frames.png", "imagined_rollouts.png", "joints.png", "latency.png", "tcp_path.png"]
    assert all(p.parent == tmp_path / "out" and p.stat().st_size > 5000 for p in paths)
    assert data.robot == "panda" and data.joint_q.shape == (200, 8) and data.command_q.shape == (200, 8)
    assert data.intrinsics == (115.0, 115.0, 79.5, 59.5, 160, 120)
    assert len(data.rollouts) == 20 and {s.ns for s in data.rollouts[0][1]} == {"samples", "plan"}
    assert data.arrivals["/joint_states"].size == 200
    # the picture is a real image of the frame: read it back, it has the frame's grey
    import matplotlib.image as mpimg

    img = mpimg.imread(tmp_path / "out" / "camera_frames.png")
    assert img.ndim == 3 and img.shape[0] > 200
    # CLI on the bare bag: default folder beside it
    out = subprocess.run([sys.executable, "-m", "vla_mpc.pictures", str(bag), "--out", str(tmp_path / "pics")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report["pictures"]) == 5 and report["bag_error"] is None


def test_pictures_from_a_truncated_bag(tmp_path):
    bag = tmp_path / "bag"
    _demo_like_bag(bag, seconds=4.0)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    paths, got = make_pictures(bag, tmp_path / "pics")
    assert got.read_error and "last message at" in got.read_error
    assert 0 < got.joint_q.shape[0] < 400
    assert "joints.png" in {p.name for p in paths}


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_bag(tmp_path)
