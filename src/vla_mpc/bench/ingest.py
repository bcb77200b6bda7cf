"""Benchmark suite ``ingest``: camera frame preparation cost and bag replay throughput.

``ingest_ms_p50/p99``: one 640x480 JPEG (``sensor_msgs/CompressedImage``) decoded, converted to RGB
and centre-cropped/resized to the 224x224 model frame, i.e. the work camera_ingest does per frame
(excluding DDS transport), as the node does it: decoded at half size
(``cv2.IMREAD_REDUCED_COLOR_2``, :func:`vla_mpc.core.camera.decode_reduction`); the full-size
decode is reported as ``ingest_full_decode_ms_*`` for comparison. Target (issue 7): p99 <= 5 ms on
this 2-core CPU.

``replay_msgs_per_s``: :class:`vla_mpc.replay.Player` at rate 0 (as fast as possible) reading a
20,000-message MCAP bag of 8-joint ``sensor_msgs/JointState`` and publishing each serialized
message with rclpy (no subscriber attached; DDS delivery to subscribers is not included).
Target (issue 7): >= 5,000 msg/s. ``bag_read_msgs_per_s``: the reading alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np


def _ingest(iterations: int) -> dict:
    from vla_mpc.core.camera import decode_reduction, prepare_frame
    from vla_mpc.ros import conversions as cv

    rng = np.random.default_rng(0)
    # a textured scene-like frame (smooth gradients + noise) so JPEG has realistic content
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([(x * 255 // 640), (y * 255 // 480), ((x + y) * 255 // 1120)], axis=-1).astype(np.uint8)
    frame = np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    msg = cv.rgb_to_compressed(frame, "jpeg", quality=90)
    f = decode_reduction((480, 640), (224, 224), "center_crop")
    figures = {}
    for label, reduce in (("ingest", f), ("ingest_full_decode", 1)):
        times = []
        for i in range(iterations + 20):
            t0 = time.perf_counter()
            out = prepare_frame(cv.compressed_to_rgb(msg, reduce), (224, 224), "center_crop")
            dt = time.perf_counter() - t0
            if i >= 20:  # warm-up
                times.append(dt * 1e3)
        if out.shape != (224, 224, 3):
            raise RuntimeError(f"unexpected model frame shape {out.shape}")
        t = np.asarray(times)
        figures[f"{label}_ms_p50"] = round(float(np.percentile(t, 50)), 3)
        figures[f"{label}_ms_p99"] = round(float(np.percentile(t, 99)), 3)
    return {"name": "jpeg_640x480_to_224x224", **figures, "decode_reduction": f, "iterations": iterations,
            "jpeg_bytes": len(msg.data)}


def _replay(n: int = 20_000) -> dict:
    import rclpy
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from vla_mpc.replay import Bag, Player
    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.runtime import isolate_ros_network

    names = [f"joint{i}" for i in range(8)]
    with tempfile.TemporaryDirectory(prefix="vla_mpc_bench_") as tmp:
        path = Path(tmp) / "bag"
        ts = get_typestore(Stores.ROS2_KILTED)
        w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        w.open()
        conn = w.add_connection("/bench/joint_states", "sensor_msgs/msg/JointState", typestore=ts)
        for i in range(n):
            q = np.full(8, 0.001 * i)
            w.write(conn, 1_000_000_000 + i * 5_000_000, serialize_message(cv.joint_state_msg(names, q, q, stamp=1.0 + i * 0.005)))
        w.close()
        t0 = time.perf_counter()
        read = sum(1 for _ in Bag(path).messages())
        read_s = time.perf_counter() - t0
        isolate_ros_network()
        context = rclpy.Context()
        rclpy.init(args=[], context=context)
        node = rclpy.create_node("vla_mpc_bench_replay", context=context)
        try:
            player = Player(node, Bag(path), rate=0.0, clock_hz=0.0)
            result = player.play()
        finally:
            node.destroy_node()
            rclpy.shutdown(context=context)
    if result.total != n or read != n:
        raise RuntimeError(f"replayed {result.total} / read {read} of {n} messages")
    return {"name": "replay_jointstate_mcap", "replay_msgs_per_s": round(n / result.wall_s),
            "bag_read_msgs_per_s": round(n / read_s), "messages": n}


def run(iterations: int = 300) -> list[dict]:
    return [_ingest(iterations), _replay()]
