"""camera_ingest: frame preparation, the freshness gate, and the node through real pub/sub."""

import time

import numpy as np
import pytest

from vla_mpc.core.camera import ApproximateTimeSync, Drop, FrameGate, decode_reduction, prepare_frame


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


def test_decode_reduction_never_upsamples():
    assert decode_reduction((480, 640), (224, 224)) == 2  # 480 -> 240 >= 224
    assert decode_reduction((1080, 1920), (224, 224)) == 4
    assert decode_reduction((480, 640), (96, 96)) == 4
    assert decode_reduction((224, 224), (224, 224)) == 1
    assert decode_reduction((480, 640), (224, 224), "letterbox") == 2  # 320x240 >= 224x168
    assert decode_reduction((480, 640), (400, 400), "letterbox") == 1
    for src in [(480, 640), (720, 1280), (1080, 1920), (300, 300), (1000, 200)]:
        for out in [(224, 224), (96, 96), (120, 160)]:
            f = decode_reduction(src, out)
            crop = prepare_frame(np.zeros((src[0] // f, src[1] // f, 3), np.uint8), out)
            assert crop.shape[:2] == out
            ratio = out[1] / out[0]
            h, w = src[0] // f, src[1] // f
            ch, cw = (h, h * ratio) if w / h > ratio else (w / ratio, w)
            if f > 1:  # reducing never makes the crop smaller than the model frame
                assert ch >= out[0] - 1 and cw >= out[1] - 1


def test_approximate_sync_pairs_nearest_frames_within_slop():
    sync = ApproximateTimeSync(["front", "side"], slop_s=0.02, queue_size=5)
    sets = []
    for k in range(10):  # front at 10 Hz, side 8 ms later
        for name, t in (("front", 1.0 + 0.1 * k), ("side", 1.008 + 0.1 * k)):
            out = sync.add(name, t, f"{name}{k}")
            if out:
                sets.append(out)
    assert len(sets) == 10 and sync.sets == 10
    assert all(s["front"][1][5:] == s["side"][1][4:] for s in sets)  # same index k paired
    assert sync.last_spread_s == pytest.approx(0.008)
    assert sync.unmatched == {"front": 0, "side": 0}


def test_approximate_sync_fast_and_slow_streams_and_no_partner():
    sync = ApproximateTimeSync(["a", "b"], slop_s=0.02, queue_size=10)
    sets = []
    for k in range(30):  # a at 30 Hz
        out = sync.add("a", 2.0 + k / 30.0, k)
        if out:
            sets.append(out)
        if k % 3 == 1:  # b at 10 Hz, 5 ms after every third a frame
            out = sync.add("b", 2.0 + (k - 1) / 30.0 + 0.005, k - 1)
            if out:
                sets.append(out)
    assert len(sets) == 10
    assert [s["a"][1] for s in sets] == [s["b"][1] for s in sets]  # the nearest a frame was chosen
    assert all(abs(s["a"][0] - s["b"][0]) <= 0.02 for s in sets)
    # the a frames between sets can never be matched any more: they were dropped and counted
    assert sync.unmatched["a"] >= 15 and sync.unmatched["b"] == 0
    # b far from every a: no set; the queue stays bounded
    lone = ApproximateTimeSync(["a", "b"], slop_s=0.01, queue_size=3)
    for k in range(10):
        assert lone.add("a", float(k), k) is None
        assert lone.add("b", k + 0.5, k) is None
    assert len(lone.queues["a"]) == 3 and lone.unmatched["a"] == 7
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "a"], 0.1)
    with pytest.raises(ValueError):
        ApproximateTimeSync(["a", "b"], 0.0)


def test_approximate_sync_three_cameras():
    sync = ApproximateTimeSync(["x", "y", "z"], slop_s=0.03)
    assert sync.add("x", 1.00, "x") is None
    assert sync.add("y", 1.02, "y") is None
    out = sync.add("z", 1.04, "z")  # 1.00 .. 1.04 spreads 40 ms > 30 ms: no set
    assert out is None
    out = sync.add("x", 1.035, "x2")  # 1.02 .. 1.04 spreads 20 ms: x2 with y and z
    assert out is not None and {k: v[1] for k, v in out.items()} == {"x": "x2", "y": "y", "z": "z"}
    assert sync.unmatched["x"] == 1  # the older x frame can no longer be part of a set


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
    # drain frames still in flight from the discovery loop: wait until none arrived for 1 s
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        n = len(received)
        ros_node.spin_for(1.0)
        if len(received) == n:
            break
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
    assert ros_node.spin_until(lambda: (pub.publish(cv.numpy_to_image(bgr, "bgr8", now(), "cam")) or len(received) > n), 15.0)

    def counts():
        for arr in reversed(diags):
            for st in arr.status:
                if st.name.endswith("/front"):
                    return {kv.key: kv.value for kv in st.values}
        return {}

    assert ros_node.spin_until(
        lambda: int(counts().get("dropped_malformed", 0)) >= 1 and int(counts().get("dropped_out_of_order", 0)) >= 1, 15.0
    ), counts()


def test_node_two_cameras_synchronised_with_health(start_node, ros_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import SENSOR_QOS

    proc = start_node("vla_mpc.ros.camera_ingest", {"cameras": ["front", "side"], "image_height": 64,
                                                    "image_width": 64, "sync_slop_s": 0.02, "diagnostics_rate_hz": 5.0})
    node = ros_node.node
    got: dict[str, list[float]] = {"front": [], "side": []}
    diags: list[DiagnosticArray] = []
    for cam in got:
        node.create_subscription(Image, f"/vla_mpc/observation/{cam}/image",
                                 lambda m, c=cam: got[c].append(cv.stamp_to_sec(m.header.stamp)), SENSOR_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    front = node.create_publisher(Image, "/camera/front/image_raw", SENSOR_QOS)
    side = node.create_publisher(CompressedImage, "/camera/side/image_raw/compressed", SENSOR_QOS)
    img = np.zeros((120, 160, 3), np.uint8)

    def pair(offset: float) -> None:
        t = time.time()
        front.publish(cv.numpy_to_image(img, "rgb8", t, "front"))
        side.publish(cv.rgb_to_compressed(img, "jpeg", t + offset, "side"))

    assert ros_node.spin_until(lambda: pair(0.005) or ros_node.spin_for(0.05) or (got["front"] and got["side"]), 20.0), proc.log()
    ros_node.spin_for(0.5)
    n_front, n_side = len(got["front"]), len(got["side"])
    for _ in range(3):  # side frames 0.2 s off (pairs 0.45 s apart): never a set, frames held back
        pair(0.2)
        ros_node.spin_for(0.45)
    assert len(got["front"]) == n_front and len(got["side"]) == n_side
    for _ in range(5):
        pair(0.005)
        ros_node.spin_for(0.05)
    assert ros_node.spin_until(lambda: len(got["front"]) > n_front, 5.0)
    # every published front frame has a side partner within the slop
    assert all(min(abs(np.asarray(got["side"]) - t)) <= 0.02 for t in got["front"])

    def status(cam: str) -> dict:
        for arr in reversed(diags):
            for st in arr.status:
                if st.name.endswith("/" + cam):
                    return {kv.key: kv.value for kv in st.values}
        return {}

    assert ros_node.spin_until(lambda: int(status("front").get("dropped_unsynced", 0)) >= 1
                               and int(status("side").get("dropped_unsynced", 0)) >= 1, 5.0), (status("front"), status("side"))
    assert int(status("front")["sync_sets"]) >= 2 and float(status("side")["sync_spread_ms"]) <= 20.0
    assert proc.alive()
