"""msg <-> numpy conversions: round trips per encoding, cv_bridge semantics, malformed input."""

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray

from vla_mpc.ros import conversions as cv


@pytest.mark.parametrize(
    "encoding,shape,dtype",
    [
        ("rgb8", (4, 5, 3), np.uint8),
        ("bgr8", (4, 5, 3), np.uint8),
        ("rgba8", (3, 2, 4), np.uint8),
        ("bgra8", (3, 2, 4), np.uint8),
        ("8UC3", (3, 2, 3), np.uint8),
        ("mono8", (4, 5), np.uint8),
        ("8UC1", (4, 5), np.uint8),
        ("16UC1", (4, 5), np.uint16),
        ("mono16", (2, 3), np.uint16),
        ("32FC1", (4, 5), np.float32),
    ],
)
def test_image_round_trip(encoding, shape, dtype):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        a = rng.normal(size=shape).astype(dtype)
    else:
        a = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    msg = cv.numpy_to_image(a, encoding, stamp=1.5, frame_id="cam")
    # cv_bridge semantics: step = width * channels * bytes per channel, little endian
    channels = 1 if a.ndim == 2 else a.shape[2]
    assert msg.step == a.shape[1] * channels * np.dtype(dtype).itemsize
    assert msg.is_bigendian == 0
    back = cv.image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, a)
    assert cv.stamp_to_sec(msg.header.stamp) == pytest.approx(1.5)


def test_every_supported_encoding_is_round_tripped():
    tested = {"rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "mono8", "8UC1", "16UC1", "mono16", "32FC1"}
    assert set(cv.SUPPORTED_IMAGE_ENCODINGS) == tested


@pytest.mark.parametrize("encoding", cv.SUPPORTED_IMAGE_ENCODINGS)
def test_to_rgb_matches_cv_bridge_semantics(encoding):
    """imgmsg_to_cv2(msg, "rgb8") of cv_bridge (cv_bridge.cpp getConversionCode): colour orders are
    converted, alpha dropped, grey replicated, mono16 depth-scaled first; 8UC3 has no channel order
    and passes through; 16UC1 / 32FC1 have no colour meaning and are refused."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
    grey = rng.integers(0, 255, (3, 4), dtype=np.uint8)
    alpha = np.full((3, 4, 1), 77, np.uint8)
    source, expected = {
        "rgb8": (rgb, rgb), "8UC3": (rgb, rgb), "bgr8": (rgb[..., ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], -1), rgb), "bgra8": (np.concatenate([rgb[..., ::-1], alpha], -1), rgb),
        "mono8": (grey, np.repeat(grey[..., None], 3, -1)), "8UC1": (grey, np.repeat(grey[..., None], 3, -1)),
        "mono16": (grey.astype(np.uint16) * 257, np.repeat(grey[..., None], 3, -1)),  # x*257*255/65535 = x
        "16UC1": (grey.astype(np.uint16), None), "32FC1": (grey.astype(np.float32), None),
    }[encoding]
    msg = cv.numpy_to_image(np.ascontiguousarray(source), encoding)
    if expected is None:
        with pytest.raises(ValueError, match="no RGB meaning"):
            cv.image_to_rgb(msg)
    else:
        np.testing.assert_array_equal(cv.image_to_rgb(msg), expected)


def test_16uc1_keeps_depth_values_and_32fc1_keeps_nan():
    # the PyPI cv-bridge maps 16UC1 to uint8; the real one keeps uint16 millimetres
    depth = np.array([[0, 1, 65535], [1234, 4000, 300]], np.uint16)
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(depth, "16UC1")), depth)
    f = np.array([[np.nan, 1.5], [np.inf, -2.0]], np.float32)
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(f, "32FC1")), f)


def test_compressed_reduced_decode_halves_the_size():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48] = (250, 10, 10)
    msg = cv.rgb_to_compressed(rgb, "jpeg", quality=95)
    half = cv.compressed_to_rgb(msg, 2)
    assert half.shape == (32, 48, 3)
    assert np.abs(half[:, :20].astype(int) - (250, 10, 10)).max() < 20  # colour order kept
    with pytest.raises(ValueError, match="reduce"):
        cv.compressed_to_rgb(msg, 3)


def test_padded_rows_and_big_endian():
    a = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=12)
    rows = [a[r].astype(">u2").tobytes() + b"\xff" * 4 for r in range(3)]  # 4 bytes of padding
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(cv.image_to_numpy(msg), a)


def test_rgb_conversions_match_channel_semantics():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    bgr_msg = cv.numpy_to_image(rgb[..., ::-1].copy(), "bgr8")
    np.testing.assert_array_equal(cv.image_to_rgb(bgr_msg), rgb)
    mono = cv.numpy_to_image(np.full((2, 2), 7, np.uint8), "mono8")
    assert (cv.image_to_rgb(mono) == 7).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(height=2, width=2, encoding="rgb8", step=5, data=b"\x00" * 10), "step"),
        (dict(height=2, width=2, encoding="rgb8", step=6, data=b"\x00" * 11), "bytes"),
        (dict(height=2, width=2, encoding="yuv422", step=4, data=b"\x00" * 8), "encoding"),
        (dict(height=0, width=2, encoding="mono8", step=2, data=b""), "size"),
    ],
)
def test_malformed_images_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cv.image_to_numpy(Image(**kwargs))


def test_compressed_round_trip_and_corrupt():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)
    png = cv.rgb_to_compressed(rgb, "png")
    np.testing.assert_array_equal(cv.compressed_to_rgb(png), rgb)  # png is lossless
    jpg = cv.rgb_to_compressed(rgb, "jpeg", quality=95)
    assert np.abs(cv.compressed_to_rgb(jpg).astype(int) - rgb).mean() < 8
    jpg.data = b"not a jpeg"
    with pytest.raises(ValueError, match="does not decode"):
        cv.compressed_to_rgb(jpg)


def test_joint_state_mapping_by_name():
    msg = cv.joint_state_msg(["b", "a", "c"], [2.0, 1.0, 3.0], [0.2, 0.1, 0.3], stamp=3.25)
    js = cv.joint_state_to_arrays(msg)
    assert js.stamp == pytest.approx(3.25)
    np.testing.assert_array_equal(cv.select_joints(js.names, js.position, ["a", "b", "c"]), [1, 2, 3])
    with pytest.raises(ValueError, match=r"missing joints \['d'\]"):
        cv.select_joints(js.names, js.position, ["a", "d"])
    bad = JointState(name=["a", "a"], position=[1.0, 2.0])
    with pytest.raises(ValueError, match="duplicates"):
        cv.joint_state_to_arrays(bad)
    short = JointState(name=["a", "b"], position=[1.0])
    with pytest.raises(ValueError, match="position has 1 values"):
        cv.joint_state_to_arrays(short)
    # no velocity field is allowed and reads as NaN
    assert np.isnan(cv.joint_state_to_arrays(JointState(name=["a"], position=[0.0])).velocity).all()


def test_float32_tensor_labels_and_strides():
    z = np.arange(24, dtype=np.float32).reshape(4, 6)
    msg = cv.float32_tensor_msg(z, ("tokens", "dim"))
    assert [d.label for d in msg.layout.dim] == ["tokens", "dim"]
    assert [d.stride for d in msg.layout.dim] == [24, 6]  # std_msgs/MultiArrayLayout convention
    back, labels = cv.float32_tensor_to_numpy(msg)
    np.testing.assert_array_equal(back, z)
    assert labels == ("tokens", "dim")
    broken = Float32MultiArray(layout=msg.layout, data=[0.0] * 5)
    with pytest.raises(ValueError, match="5 values"):
        cv.float32_tensor_to_numpy(broken)


def test_trajectory_round_trip_and_errors():
    pos = np.linspace(0, 1, 8 * 3).reshape(8, 3)
    t = np.arange(8) * 0.05
    msg = cv.trajectory_msg(["j1", "j2", "j3"], pos, t, stamp=10.0)
    names, times, p, stamp = cv.trajectory_to_numpy(msg)
    assert names == ("j1", "j2", "j3") and stamp == pytest.approx(10.0)
    np.testing.assert_allclose(times, t, atol=1e-9)
    np.testing.assert_array_equal(p, pos)
    with pytest.raises(ValueError, match="non-decreasing"):
        cv.trajectory_msg(["j1", "j2", "j3"], pos, t[::-1])
    msg.points[2].positions = [0.0]
    with pytest.raises(ValueError, match=r"points\[2\]"):
        cv.trajectory_to_numpy(msg)


def test_markers_round_trip():
    obj = cv.SceneObject("red_cube", np.array([0.5, 0.0, 0.02]), np.array([0, 0, 0, 1.0]),
                         np.array([1, 0, 0, 1.0]), np.array([0.04] * 3), "base_link")
    arr = cv.objects_to_markers([obj])
    back = cv.markers_to_objects(arr)["red_cube"]
    np.testing.assert_allclose(back.position, obj.position)
    np.testing.assert_allclose(back.rgba, obj.rgba)
    assert back.frame_id == "base_link"
    with pytest.raises(ValueError):
        cv.line_strip_marker("x", 0, np.zeros((1, 3)), (1, 0, 0, 1))
    m = cv.line_strip_marker("x", 0, np.zeros((4, 3)), (1, 0, 0, 1))
    assert m.type == m.LINE_STRIP and len(m.points) == 4 and m.header.frame_id == "base_link"


def test_sec_to_stamp_rounding():
    s = cv.sec_to_stamp(1.9999999999)
    assert (s.sec, s.nanosec) == (2, 0)
    with pytest.raises(ValueError):
        cv.sec_to_stamp(-1.0)


def test_keypoint_markers() -> None:
    from visualization_msgs.msg import Marker

    arr = cv.keypoint_markers(np.array([[0.5, -0.1, -0.09], [0.4, 0.2, -0.11]]), 12.5)
    assert [(m.ns, m.id, m.type, m.header.frame_id) for m in arr.markers] == [
        ("policy_keypoints", 0, Marker.SPHERE, "base_link"), ("policy_keypoints", 1, Marker.SPHERE, "base_link")]
    assert arr.markers[1].pose.position.y == pytest.approx(0.2) and arr.markers[0].header.stamp.sec == 12
    with pytest.raises(ValueError, match="finite"):
        cv.keypoint_markers(np.array([[0.5, np.nan, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        cv.keypoint_markers(np.zeros(3))
