"""camera_ingest: frame preparation, the freshness gate, and the node through real pub/sub."""

import time

import numpy as np
import pytest

from vla_mpc.core.camera import Drop, FrameGate, prepare_frame


def test_center_crop_keeps_the_middle():
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[:, :80] = 255  # a white band on the far left is cropped away (640 -> 480 wide)
    rgb[:, 300:340] = (0, 255, 0)  # a green band in the middle survives
    out = prepare_frame(rgb, (224, 224), "center_crop")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert out[:, :5].max() == 0
    assert out[112, 112, 1] == 255


def test_letterbox_pads_and_keeps_everything():
    rgb = np.full((100, 200, 3), 50, np.uint8)
    out = prepare_frame(rgb, (100, 100), "letterbox")
    assert out.shape == (100, 100, 3)
    assert (out[:20] == 0).all() and (out[-20:] == 0).all()  # 200x100 -> 100x50 band in the middle
    assert (out[30:70] == 50).all()


def test_prepare_frame_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        prepare_frame(np.zeros((4, 4), np.uint8), (2, 2))
    with pytest.raises(ValueError, match="positive"):
        prepare_frame(np.zeros((4, 4, 3), np.uint8), (0, 2))


def test_frame_gate_counts_reasons():
    g = FrameGate(max_age_s=0.5)
    assert g.check(10.0, now=10.1) is None
    assert g.check(10.0, now=10.1) is Drop.DUPLICATE
    assert g.check(9.9, now=10.1) is Drop.OUT_OF_ORDER
    assert g.check(10.2, now=11.0) is Drop.STALE
    assert g.check(10.9, now=11.0) is None
    assert g.accepted == 2
    assert g.drops[Drop.DUPLICATE] == g.drops[Drop.OUT_OF_ORDER] == g.drops[Drop.STALE] == 1
    with pytest.raises(ValueError):
        FrameGate(max_age_s=0.0)


def test_node_converts_drops_and_survives_malformed(start_node, ros_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import SENSOR_QOS

    proc = start_node("vla_mpc.ros.camera_ingest", {"cameras": ["front"], "image_height": 224, "image_width": 224})
    received: list[Image] = []
    diags: list[DiagnosticArray] = []
    node = ros_node.node
    node.create_subscription(Image, "/vla_mpc/observation/front/image", received.append, SENSOR_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    pub = node.create_publisher(Image, "/camera/front/image_raw", SENSOR_QOS)
    bgr = np.zeros((480, 640, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR order

    def now() -> float:
        return time.time()

    # discovery: publish fresh frames until one comes back
    assert ros_node.spin_until(lambda: (pub.publish(cv.numpy_to_image(bgr, "bgr8", now(), "cam")) or bool(received)), 20.0), proc.log()
    out = cv.image_to_numpy(received[-1])
    assert out.shape == (224, 224, 3) and received[-1].encoding == "rgb8"
    assert (out[..., 0] == 255).all() and (out[..., 2] == 0).all()  # BGR -> RGB
    # malformed: wrong step; old: a stamp 10 s before the last frame. Neither comes out, the node keeps running.
    ros_node.spin_for(1.0)  # drain frames still in flight from the discovery loop
    n = len(received)
    small = bgr[:48, :64].copy()  # best-effort transport: keep the adversarial frames small
    for _ in range(5):
        bad = cv.numpy_to_image(small, "bgr8", now(), "cam")
        bad.step = 10
        pub.publish(bad)
        pub.publish(cv.numpy_to_image(small, "bgr8", now() - 10.0, "cam"))
        ros_node.spin_for(0.05)
    ros_node.spin_for(0.5)
    assert len(received) == n
    assert proc.alive()
    assert ros_node.spin_until(lambda: (pub.publish(cv.numpy_to_image(bgr, "bgr8", now(), "cam")) or len(received) > n), 5.0)

    def counts():
        for arr in reversed(diags):
            for st in arr.status:
                if st.name.endswith("/front"):
                    return {kv.key: kv.value for kv in st.values}
        return {}

    assert ros_node.spin_until(
        lambda: int(counts().get("dropped_malformed", 0)) >= 1 and int(counts().get("dropped_out_of_order", 0)) >= 1, 5.0
    ), counts()
