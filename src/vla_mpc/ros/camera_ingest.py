"""camera_ingest node: camera images in, model-ready frames out, per-camera health.

Subscribes, per camera name ``<c>`` in parameter ``cameras``:
  ``/camera/<c>/image_raw`` (sensor_msgs/Image: rgb8, bgr8, rgba8, bgra8, mono8) and
  ``/camera/<c>/image_raw/compressed`` (sensor_msgs/CompressedImage: jpeg, png; image_transport's
  naming), both with sensor-data QoS.
Compressed frames are decoded at 1/2, 1/4 or 1/8 size (``cv2.IMREAD_REDUCED_COLOR_n``) when the
previous frame showed the source is at least that many times the model frame
(:func:`~vla_mpc.core.camera.decode_reduction`).
Publishes ``/vla_mpc/observation/<c>/image`` (sensor_msgs/Image rgb8, ``image_height`` x
``image_width``, the source stamp and frame kept) and ``/diagnostics`` (one status per camera: rate,
accepted and dropped counts by reason, age of the last frame).

Stale (older than ``max_age_s`` on the node's clock), duplicate and out-of-order frames are dropped
and counted; malformed images are dropped with a throttled warning, never crash the node.

Several cameras: with ``sync_slop_s`` > 0 (and more than one camera) frames are published only as
approximately synchronised sets (:class:`~vla_mpc.core.camera.ApproximateTimeSync`, the
``message_filters`` ApproximateTime rule: stamps within ``sync_slop_s``), every frame of a set
published back to back with its own stamp, so the policy's newest frames are always one set;
frames that find no partner are counted as ``dropped_unsynced``. Diagnostics add per camera the
sets published and the last set's stamp spread.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from vla_mpc.core.camera import ApproximateTimeSync, Drop, FrameGate, ResizeMode, decode_reduction, prepare_frame
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.params import declare
from vla_mpc.ros.qos import SENSOR_QOS
from vla_mpc.ros.runtime import run_node


class _Camera:
    def __init__(self, name: str, max_age_s: float) -> None:
        self.name = name
        self.gate = FrameGate(max_age_s)
        self.publisher = None
        self.last_rx_mono: float | None = None
        self.window_start = time.monotonic()
        self.window_count = 0
        self.rate_hz = 0.0
        self.source_hw: tuple[int, int] | None = None  # full size of the last compressed frame [px]


class CameraIngest(Node):
    """Thin node around :func:`vla_mpc.core.camera.prepare_frame` and :class:`FrameGate`."""

    def __init__(self) -> None:
        super().__init__("camera_ingest")
        cams = declare(self, "cameras", ["front"], "Camera names; topics /camera/<name>/image_raw[/compressed].", read_only=True)
        self.height = declare(self, "image_height", 224, "Model frame height [px].", read_only=True, min_value=8, max_value=4096)
        self.width = declare(self, "image_width", 224, "Model frame width [px].", read_only=True, min_value=8, max_value=4096)
        mode = declare(self, "resize_mode", "center_crop", "center_crop or letterbox.", read_only=True)
        self.mode = ResizeMode(mode)
        max_age = declare(self, "max_age_s", 0.5, "Frames older than this on the node clock are dropped [s].", min_value=0.001, max_value=60.0)
        diag_hz = declare(self, "diagnostics_rate_hz", 1.0, "Rate of /diagnostics [Hz].", min_value=0.1, max_value=50.0)
        slop = declare(self, "sync_slop_s", 0.05, "Several cameras: largest stamp spread of a synchronised set [s]; 0 = no sync.",
                       read_only=True, min_value=0.0, max_value=10.0)
        sync_queue = declare(self, "sync_queue_size", 5, "Several cameras: frames queued per camera while waiting for partners.",
                             read_only=True, min_value=1, max_value=100)
        self.sync = ApproximateTimeSync(list(cams), slop, sync_queue) if slop > 0.0 and len(cams) > 1 else None
        self.cams: dict[str, _Camera] = {}
        for name in cams:
            cam = _Camera(name, max_age)
            cam.publisher = self.create_publisher(Image, f"/vla_mpc/observation/{name}/image", SENSOR_QOS)
            self.create_subscription(Image, f"/camera/{name}/image_raw", lambda m, c=cam: self._on_image(c, m), SENSOR_QOS)
            self.create_subscription(
                CompressedImage, f"/camera/{name}/image_raw/compressed", lambda m, c=cam: self._on_image(c, m), SENSOR_QOS
            )
            self.cams[name] = cam
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / diag_hz, self._publish_diagnostics)
        sync = f", approximate sync within {slop * 1e3:.0f} ms" if self.sync is not None else ""
        self.get_logger().info(f"camera_ingest: cameras {list(cams)} -> {self.height}x{self.width} ({self.mode.value}){sync}")

    def _on_image(self, cam: _Camera, msg: Image | CompressedImage) -> None:
        stamp = cv.stamp_to_sec(msg.header.stamp)
        now = self.get_clock().now().nanoseconds * 1e-9
        try:
            if isinstance(msg, CompressedImage):
                # decode at reduced size when the previous frame showed the source is large enough
                f = 1 if cam.source_hw is None else decode_reduction(cam.source_hw, (self.height, self.width), self.mode)
                rgb = cv.compressed_to_rgb(msg, f)
                cam.source_hw = (rgb.shape[0] * f, rgb.shape[1] * f)
            else:
                rgb = cv.image_to_rgb(msg)
        except ValueError as exc:
            cam.gate.count(Drop.MALFORMED)
            self.get_logger().warning(f"camera {cam.name}: dropped malformed frame: {exc}", throttle_duration_sec=5.0)
            return
        reason = cam.gate.check(stamp, now)
        if reason is not None:
            self.get_logger().debug(f"camera {cam.name}: dropped {reason.value} frame at {stamp:.3f}")
            return
        frame = prepare_frame(rgb, (self.height, self.width), self.mode)
        out = cv.numpy_to_image(frame, "rgb8", msg.header.stamp, msg.header.frame_id)
        cam.last_rx_mono = time.monotonic()
        if self.sync is None:
            cam.publisher.publish(out)
            cam.window_count += 1
            return
        before = dict(self.sync.unmatched)
        matched = self.sync.add(cam.name, stamp, out)
        for name, n in self.sync.unmatched.items():
            for _ in range(n - before[name]):
                self.cams[name].gate.count(Drop.UNSYNCED)
        for name, (_s, image) in (matched or {}).items():
            self.cams[name].publisher.publish(image)
            self.cams[name].window_count += 1

    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        mono = time.monotonic()
        for cam in self.cams.values():
            elapsed = mono - cam.window_start
            cam.rate_hz = cam.window_count / elapsed if elapsed > 0 else 0.0
            cam.window_start, cam.window_count = mono, 0
            age = None if cam.last_rx_mono is None else mono - cam.last_rx_mono
            st = DiagnosticStatus(name=f"vla_mpc/camera_ingest/{cam.name}", hardware_id=cam.name)
            if age is None:
                st.level, st.message = DiagnosticStatus.WARN, "no frames yet"
            elif age > 1.0:
                st.level, st.message = DiagnosticStatus.ERROR, f"no frame for {age:.1f} s"
            else:
                st.level, st.message = DiagnosticStatus.OK, f"{cam.rate_hz:.1f} Hz"
            st.values = [KeyValue(key="rate_hz", value=f"{cam.rate_hz:.2f}"),
                         KeyValue(key="accepted", value=str(cam.gate.accepted))]
            if self.sync is not None:
                spread = self.sync.last_spread_s
                st.values += [KeyValue(key="sync_sets", value=str(self.sync.sets)),
                              KeyValue(key="sync_spread_ms", value="n/a" if spread is None else f"{spread * 1e3:.1f}")]
            st.values += [KeyValue(key=f"dropped_{d.value}", value=str(n)) for d, n in cam.gate.drops.items()]
            arr.status.append(st)
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Console script ``camera_ingest``."""
    return run_node(CameraIngest, args)


if __name__ == "__main__":
    raise SystemExit(main())
