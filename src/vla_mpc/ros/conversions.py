"""The only module that knows the ROS 2 wire formats: messages <-> numpy.

Every other module gets numpy arrays and plain Python values. Image encodings follow cv_bridge's
semantics (``sensor_msgs/image_encodings``): ``rgb8``/``bgr8`` -> (H, W, 3) uint8 in that channel
order, ``rgba8``/``bgra8`` -> (H, W, 4) uint8, ``mono8`` -> (H, W) uint8, ``mono16``/``16UC1`` ->
(H, W) uint16, ``32FC1`` -> (H, W) float32; rows may be padded (``step`` >= width * bytes per
pixel) and ``is_bigendian`` is honoured. Quaternions are (x, y, z, w), as in ROS.

Errors: every ``*_to_*`` function that reads a message raises ``ValueError`` with a message that
names the offending field when the message is malformed (wrong step, size, encoding, missing
joints, non-finite values where they are not allowed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import ColorRGBA, Float32MultiArray, Float64MultiArray, Header, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from visualization_msgs.msg import Marker, MarkerArray

# --------------------------------------------------------------------------------------------- time


def stamp_to_sec(stamp: Time | Duration) -> float:
    """``builtin_interfaces/Time`` or ``Duration`` -> seconds (float64)."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Seconds (float, >= 0) -> ``builtin_interfaces/Time``.

    Raises:
        ValueError: if ``t`` is negative or not finite.
    """
    if not math.isfinite(t) or t < 0.0:
        raise ValueError(f"time must be finite and >= 0 s, got {t!r}")
    sec = int(math.floor(t))
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def sec_to_duration(t: float) -> Duration:
    """Seconds (finite, >= 0) -> ``builtin_interfaces/Duration``."""
    s = sec_to_stamp(t)
    return Duration(sec=s.sec, nanosec=s.nanosec)


def header(stamp: float | Time | None = None, frame_id: str = "") -> Header:
    """A ``std_msgs/Header``; ``stamp`` in seconds or as a Time message (None -> zero)."""
    if stamp is None:
        t = Time()
    elif isinstance(stamp, Time):
        t = stamp
    else:
        t = sec_to_stamp(float(stamp))
    return Header(stamp=t, frame_id=frame_id)


# ------------------------------------------------------------------------------------------- images

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}

SUPPORTED_IMAGE_ENCODINGS = tuple(_ENCODINGS)


def image_to_numpy(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> array in the message's own encoding (no colour conversion).

    Returns:
        (H, W, C) for multi-channel encodings, (H, W) for single-channel ones; dtype per encoding
        (see module docstring). The array is a copy, safe to keep.

    Raises:
        ValueError: unsupported encoding, zero size, ``step`` smaller than a row, or ``data``
            shorter than ``step * height``.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ValueError(f"Image.encoding {enc!r} not supported (supported: {SUPPORTED_IMAGE_ENCODINGS})")
    dtype, channels = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ValueError(f"Image size must be positive, got height={h} width={w}")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"Image.step {step} < width*channels*itemsize = {row_bytes} for {enc}")
    buf = memoryview(msg.data) if not isinstance(msg.data, (bytes, bytearray)) else msg.data
    if len(buf) < step * h:
        raise ValueError(f"Image.data has {len(buf)} bytes, expected step*height = {step * h}")
    raw = np.frombuffer(buf, dtype=np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    arr = np.ascontiguousarray(raw).view(dt).reshape(h, w, channels) if channels > 1 else (
        np.ascontiguousarray(raw).view(dt).reshape(h, w)
    )
    return arr.astype(dtype, copy=True)  # native byte order, owned copy


def numpy_to_image(
    array: np.ndarray, encoding: str, stamp: float | Time | None = None, frame_id: str = ""
) -> Image:
    """Array -> ``sensor_msgs/Image`` (little-endian, unpadded rows).

    Args:
        array: (H, W) or (H, W, C) with the dtype and channel count ``encoding`` requires.
        encoding: one of ``SUPPORTED_IMAGE_ENCODINGS``.

    Raises:
        ValueError: unsupported encoding, or dtype / channel count not matching the encoding.
    """
    if encoding not in _ENCODINGS:
        raise ValueError(f"encoding {encoding!r} not supported (supported: {SUPPORTED_IMAGE_ENCODINGS})")
    dtype, channels = _ENCODINGS[encoding]
    a = np.asarray(array)
    got_c = 1 if a.ndim == 2 else (a.shape[2] if a.ndim == 3 else -1)
    if got_c != channels or a.dtype != dtype:
        raise ValueError(
            f"array of shape {a.shape} dtype {a.dtype} does not fit encoding {encoding!r} "
            f"({channels} channel(s) of {dtype})"
        )
    a = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype)
    msg = Image()
    msg.header = header(stamp, frame_id)
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * channels * dtype.itemsize)
    msg.data = a.tobytes()
    return msg


def image_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> (H, W, 3) uint8 RGB, as cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")``:
    rgb8 / 8UC3 as they are (8UC3 has no channel order: cv_bridge keeps it), bgr8 swapped, rgba8 /
    bgra8 without alpha, mono8 / 8UC1 grey replicated, mono16 scaled by 255/65535 then replicated.

    Raises:
        ValueError: malformed message, or an encoding with no colour meaning (16UC1, 32FC1: cv_bridge
            refuses that conversion too).
    """
    import cv2  # local: only image paths need OpenCV

    arr = image_to_numpy(msg)
    enc = msg.encoding
    if enc == "rgb8" or enc == "8UC3":
        return arr
    if enc == "bgr8":
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    if enc == "bgra8":
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if enc in ("mono8", "8UC1"):
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if enc == "mono16":  # cv_bridge: depth converted first (x * 255 / 65535, rounded), then grey -> RGB
        return cv2.cvtColor(np.rint(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    raise ValueError(f"Image.encoding {enc!r} has no RGB meaning")


def compressed_to_rgb(msg: CompressedImage, reduce: int = 1) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (jpeg or png) -> (H, W, 3) uint8 RGB.

    Args:
        reduce: 1, 2, 4 or 8: decode at 1/reduce of the size (``cv2.IMREAD_REDUCED_COLOR_<n>``; for
            JPEG the DCT is scaled while decoding, much cheaper than decoding then resizing);
            the result is (ceil(H / reduce), ceil(W / reduce), 3).

    Raises:
        ValueError: unknown format, bytes that do not decode, or an unsupported ``reduce``.
    """
    import cv2

    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    if reduce not in flags:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce!r}")
    fmt = msg.format.lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ValueError(f"CompressedImage.format {msg.format!r} not supported (jpeg, png)")
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    bgr = cv2.imdecode(buf, flags[reduce]) if buf.size else None
    if bgr is None:
        raise ValueError(f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def rgb_to_compressed(
    rgb: np.ndarray, fmt: str = "jpeg", stamp: float | Time | None = None, frame_id: str = "", quality: int = 90
) -> CompressedImage:
    """(H, W, 3) uint8 RGB -> ``sensor_msgs/CompressedImage`` (``fmt`` 'jpeg' or 'png')."""
    import cv2

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    ext = ".jpg" if fmt == "jpeg" else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, enc = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError("image encoding failed")
    msg = CompressedImage()
    msg.header = header(stamp, frame_id)
    msg.format = f"rgb8; {fmt} compressed bgr8"
    msg.data = enc.tobytes()
    return msg


def camera_info_msg(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float,
    stamp: float | Time | None = None, frame_id: str = "",
) -> CameraInfo:
    """Pinhole ``sensor_msgs/CameraInfo`` with no distortion (``plumb_bob``, zeros).

    Args: intrinsics in pixels; ``frame_id`` is the optical frame (REP 103: z forward, x right).
    """
    msg = CameraInfo()
    msg.header = header(stamp, frame_id)
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# ------------------------------------------------------------------------------------------- joints


@dataclass(frozen=True)
class JointStateArrays:
    """A ``sensor_msgs/JointState`` as arrays. ``position`` [rad or m], ``velocity`` [rad/s or m/s]
    (NaN where the message had none), ``stamp`` [s]."""

    names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    stamp: float


def joint_state_to_arrays(msg: JointState) -> JointStateArrays:
    """``sensor_msgs/JointState`` -> names + float64 arrays, in the message's order.

    Raises:
        ValueError: duplicate names, or ``position``/``velocity`` lengths that do not match ``name``
            (an empty ``velocity`` is allowed and becomes NaN).
    """
    names = tuple(msg.name)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"JointState.name has duplicates: {dup}")
    pos = np.asarray(msg.position, dtype=np.float64)
    if pos.shape != (len(names),):
        raise ValueError(f"JointState.position has {pos.size} values for {len(names)} names")
    vel = np.asarray(msg.velocity, dtype=np.float64)
    if vel.size == 0:
        vel = np.full(len(names), np.nan)
    elif vel.shape != (len(names),):
        raise ValueError(f"JointState.velocity has {vel.size} values for {len(names)} names")
    return JointStateArrays(names, pos, vel, stamp_to_sec(msg.header.stamp))


def select_joints(names: Sequence[str], values: np.ndarray, wanted: Sequence[str]) -> np.ndarray:
    """Reorder ``values`` (over ``names``) to the order of ``wanted``, by name.

    Raises:
        ValueError: naming the joints of ``wanted`` that are missing from ``names``.
    """
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise ValueError(f"missing joints {missing} (got {list(names)})")
    return np.asarray(values, dtype=np.float64)[[index[n] for n in wanted]]


def joint_state_msg(
    names: Sequence[str],
    position: Iterable[float],
    velocity: Iterable[float] | None = None,
    effort: Iterable[float] | None = None,
    stamp: float | Time | None = None,
    frame_id: str = "",
) -> JointState:
    """Names + arrays -> ``sensor_msgs/JointState`` (position [rad or m], velocity [rad/s])."""
    msg = JointState()
    msg.header = header(stamp, frame_id)
    msg.name = list(names)
    msg.position = [float(x) for x in position]
    msg.velocity = [] if velocity is None else [float(x) for x in velocity]
    msg.effort = [] if effort is None else [float(x) for x in effort]
    return msg


# ------------------------------------------------------------------------------------- multiarrays


def float64_array_msg(values: Iterable[float]) -> Float64MultiArray:
    """A flat ``std_msgs/Float64MultiArray`` (the ros2_control forward command format)."""
    msg = Float64MultiArray()
    msg.data = [float(v) for v in values]
    return msg


def float64_array_to_numpy(msg: Float64MultiArray) -> np.ndarray:
    """``std_msgs/Float64MultiArray`` -> flat float64 array (data_offset honoured)."""
    return np.asarray(msg.data, dtype=np.float64)[int(msg.layout.data_offset):]


def float32_tensor_msg(array: np.ndarray, labels: Sequence[str]) -> Float32MultiArray:
    """N-d float32 array -> ``std_msgs/Float32MultiArray`` with one labelled dimension per axis
    (row-major; ``stride`` as the message definition says: product of this and inner sizes).

    Raises:
        ValueError: if ``len(labels) != array.ndim``.
    """
    a = np.ascontiguousarray(array, dtype=np.float32)
    if len(labels) != a.ndim:
        raise ValueError(f"{len(labels)} labels for an array of {a.ndim} dims {a.shape}")
    msg = Float32MultiArray()
    strides = np.cumprod(a.shape[::-1])[::-1] if a.ndim else []
    msg.layout.dim = [
        MultiArrayDimension(label=str(lab), size=int(s), stride=int(st))
        for lab, s, st in zip(labels, a.shape, strides)
    ]
    msg.layout.data_offset = 0
    msg.data = a.ravel().tolist()
    return msg


def float32_tensor_to_numpy(msg: Float32MultiArray) -> tuple[np.ndarray, tuple[str, ...]]:
    """``std_msgs/Float32MultiArray`` -> (array shaped by its layout, labels).

    Raises:
        ValueError: when the data length does not match the product of the dimension sizes.
    """
    data = np.asarray(msg.data, dtype=np.float32)[int(msg.layout.data_offset):]
    shape = tuple(int(d.size) for d in msg.layout.dim)
    labels = tuple(d.label for d in msg.layout.dim)
    if not shape:
        return data, ()
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"Float32MultiArray: {data.size} values for layout {dict(zip(labels, shape))}")
    return data.reshape(shape), labels


# -------------------------------------------------------------------------------------- trajectories


def trajectory_msg(
    joint_names: Sequence[str],
    positions: np.ndarray,
    time_from_start: Sequence[float] | np.ndarray,
    stamp: float | Time | None = None,
    velocities: np.ndarray | None = None,
    frame_id: str = "",
) -> JointTrajectory:
    """(T, D) joint positions at ``time_from_start`` (T,) [s] -> ``trajectory_msgs/JointTrajectory``.

    ``stamp`` is the trajectory's start time (zero means "start now" for ros2_control).

    Raises:
        ValueError: on mismatched shapes or decreasing times.
    """
    p = np.asarray(positions, dtype=np.float64)
    t = np.asarray(time_from_start, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(joint_names) or t.shape != (p.shape[0],):
        raise ValueError(
            f"positions {p.shape} / times {t.shape} do not fit {len(joint_names)} joints"
        )
    if np.any(np.diff(t) < 0):
        raise ValueError("time_from_start must be non-decreasing")
    v = None if velocities is None else np.asarray(velocities, dtype=np.float64)
    if v is not None and v.shape != p.shape:
        raise ValueError(f"velocities {v.shape} must match positions {p.shape}")
    msg = JointTrajectory()
    msg.header = header(stamp, frame_id)
    msg.joint_names = list(joint_names)
    pts = []
    for i in range(p.shape[0]):
        pt = JointTrajectoryPoint()
        pt.positions = p[i].tolist()
        if v is not None:
            pt.velocities = v[i].tolist()
        pt.time_from_start = sec_to_duration(float(t[i]))
        pts.append(pt)
    msg.points = pts
    return msg


def trajectory_to_numpy(msg: JointTrajectory) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, float]:
    """``trajectory_msgs/JointTrajectory`` -> (joint_names, times (T,) [s], positions (T, D), stamp [s]).

    Raises:
        ValueError: a point whose positions do not match the joint count, non-finite values, or
            decreasing ``time_from_start``.
    """
    names = tuple(msg.joint_names)
    n = len(names)
    if len(set(names)) != n:
        raise ValueError(f"JointTrajectory.joint_names has duplicates: {list(names)}")
    times = np.empty(len(msg.points))
    pos = np.empty((len(msg.points), n))
    for i, pt in enumerate(msg.points):
        if len(pt.positions) != n:
            raise ValueError(f"JointTrajectory.points[{i}].positions has {len(pt.positions)} values for {n} joints")
        pos[i] = pt.positions
        times[i] = stamp_to_sec(pt.time_from_start)
    if not np.all(np.isfinite(pos)):
        raise ValueError("JointTrajectory has non-finite positions")
    if np.any(np.diff(times) < 0):
        raise ValueError("JointTrajectory.points time_from_start decreases")
    return names, times, pos, stamp_to_sec(msg.header.stamp)


# ------------------------------------------------------------------------------------------ markers


def pose_msg(position: Sequence[float], quat_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> Pose:
    """Position [m] + quaternion (x, y, z, w) -> ``geometry_msgs/Pose``."""
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in quat_xyzw)
    return p


def _rgba(rgba: Sequence[float]) -> ColorRGBA:
    r, g, b, a = (float(v) for v in rgba)
    return ColorRGBA(r=r, g=g, b=b, a=a)


def line_strip_marker(
    ns: str, marker_id: int, points: np.ndarray, rgba: Sequence[float], frame_id: str = "base_link",
    stamp: float | Time | None = None, width: float = 0.005, lifetime_s: float = 0.0,
) -> Marker:
    """(N, 3) points [m] in ``frame_id`` -> a LINE_STRIP ``visualization_msgs/Marker``.

    Raises:
        ValueError: if ``points`` is not (N, 3) with N >= 2 or has non-finite values.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] < 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"line strip needs finite (N>=2, 3) points, got {pts.shape}")
    m = Marker()
    m.header = header(stamp, frame_id)
    m.ns, m.id = ns, int(marker_id)
    m.type, m.action = Marker.LINE_STRIP, Marker.ADD
    m.pose.orientation.w = 1.0
    m.scale.x = float(width)
    m.color = _rgba(rgba)
    m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts]
    m.lifetime = sec_to_duration(lifetime_s)
    return m


def cube_marker(
    ns: str, marker_id: int, position: Sequence[float], quat_xyzw: Sequence[float], size: Sequence[float],
    rgba: Sequence[float], frame_id: str = "base_link", stamp: float | Time | None = None,
) -> Marker:
    """A CUBE marker: pose in ``frame_id``, ``size`` (3,) full edge lengths [m]."""
    m = Marker()
    m.header = header(stamp, frame_id)
    m.ns, m.id = ns, int(marker_id)
    m.type, m.action = Marker.CUBE, Marker.ADD
    m.pose = pose_msg(position, quat_xyzw)
    m.scale.x, m.scale.y, m.scale.z = (float(v) for v in size)
    m.color = _rgba(rgba)
    return m


def keypoint_markers(points: np.ndarray, stamp: float | Time | None = None, frame_id: str = "base_link",
                     ns: str = "policy_keypoints", diameter: float = 0.03) -> MarkerArray:
    """System 2's task keypoints as SPHERE markers: id 0 the instruction's object (yellow), id 1
    where the task wants it (cyan), ``diameter`` [m], in ``frame_id``.

    Args:
        points: (2, 3) [m] (``DualSystemPolicy.predict_keypoints``).

    Raises:
        ValueError: not (2, 3) finite values.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape != (2, 3) or not np.all(np.isfinite(p)):
        raise ValueError(f"keypoints must be finite (2, 3), got {p.shape}")
    arr = MarkerArray()
    for i, rgba in enumerate(((1.0, 0.85, 0.0, 0.9), (0.0, 0.9, 1.0, 0.9))):
        m = cube_marker(ns, i, p[i], (0.0, 0.0, 0.0, 1.0), (diameter,) * 3, rgba, frame_id, stamp)
        m.type = Marker.SPHERE
        arr.markers.append(m)
    return arr


def delete_all_marker(frame_id: str = "base_link") -> Marker:
    """A DELETEALL marker, to put first in a MarkerArray that replaces the previous one."""
    m = Marker()
    m.header.frame_id = frame_id
    m.action = Marker.DELETEALL
    return m


@dataclass(frozen=True)
class SceneObject:
    """An object pose as the sim publishes it: position (3,) [m] and quaternion (x, y, z, w) in the
    marker's frame, colour (r, g, b, a) in [0, 1], size (3,) [m]."""

    name: str
    position: np.ndarray
    quat_xyzw: np.ndarray
    rgba: np.ndarray
    size: np.ndarray
    frame_id: str


def objects_to_markers(
    objects: Iterable[SceneObject], stamp: float | Time | None = None
) -> MarkerArray:
    """Scene objects -> MarkerArray of CUBE markers (``ns`` = object name, id = index)."""
    arr = MarkerArray()
    arr.markers = [
        cube_marker(o.name, i, o.position, o.quat_xyzw, o.size, o.rgba, o.frame_id, stamp)
        for i, o in enumerate(objects)
    ]
    return arr


def markers_to_objects(msg: MarkerArray) -> dict[str, SceneObject]:
    """MarkerArray of object markers -> {name: SceneObject}; DELETE/DELETEALL markers are skipped.

    Raises:
        ValueError: a marker with non-finite pose values.
    """
    out: dict[str, SceneObject] = {}
    for m in msg.markers:
        if m.action != Marker.ADD:
            continue
        p, q = m.pose.position, m.pose.orientation
        pos = np.array([p.x, p.y, p.z])
        quat = np.array([q.x, q.y, q.z, q.w])
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            raise ValueError(f"marker {m.ns!r} has a non-finite pose")
        out[m.ns] = SceneObject(
            m.ns, pos, quat, np.array([m.color.r, m.color.g, m.color.b, m.color.a]),
            np.array([m.scale.x, m.scale.y, m.scale.z]), m.header.frame_id,
        )
    return out


@dataclass(frozen=True)
class LineStrip:
    """A LINE_STRIP marker as arrays: ``points`` (N, 3) [m] in ``frame_id``, ``rgba`` (4,) in [0, 1]."""

    ns: str
    marker_id: int
    points: np.ndarray
    rgba: np.ndarray
    frame_id: str


def markers_to_line_strips(msg: MarkerArray) -> list[LineStrip]:
    """The ADD LINE_STRIP markers of a MarkerArray (e.g. the planner's imagined rollouts), in order;
    other marker types and DELETE/DELETEALL are skipped. Marker poses are taken as identity (as
    :func:`line_strip_marker` writes them).

    Raises:
        ValueError: a line strip with non-finite points.
    """
    out: list[LineStrip] = []
    for m in msg.markers:
        if m.action != Marker.ADD or m.type != Marker.LINE_STRIP:
            continue
        pts = np.array([[p.x, p.y, p.z] for p in m.points], dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"line strip {m.ns!r}/{m.id} has non-finite points")
        out.append(LineStrip(m.ns, int(m.id), pts, np.array([m.color.r, m.color.g, m.color.b, m.color.a]),
                             m.header.frame_id))
    return out


def camera_info_to_intrinsics(msg: CameraInfo) -> tuple[float, float, float, float, int, int]:
    """``sensor_msgs/CameraInfo`` -> (fx, fy, cx, cy, width, height) [px] from ``k``.

    Raises:
        ValueError: a zero or non-finite focal length, or a zero image size.
    """
    fx, fy, cx, cy = float(msg.k[0]), float(msg.k[4]), float(msg.k[2]), float(msg.k[5])
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0.0 or fy <= 0.0:
        raise ValueError(f"CameraInfo.k has no usable focal length: {list(msg.k)}")
    if msg.width <= 0 or msg.height <= 0:
        raise ValueError(f"CameraInfo size must be positive, got {msg.width}x{msg.height}")
    return fx, fy, cx, cy, int(msg.width), int(msg.height)
