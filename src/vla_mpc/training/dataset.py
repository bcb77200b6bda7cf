"""rosbag2 recordings -> the training dataset on disk (contract B), and :class:`Dataset` to read it.

    python -m vla_mpc.training.dataset --bags output/collect-reach [more bags or folders] \\
        --out data/panda-reach --image-size 96 [--camera front] [--chunk-size 16] [--chunk-dt 0.05]
    (same as: python -m vla_mpc.train convert --bags ... --out ...)

``--bags`` takes rosbag2 directories or folders holding them (searched recursively: a bag is a
directory with a ``metadata.yaml`` or ``*.mcap`` files, as ``vla_mpc.collect`` writes them).

What a row is. One row per camera frame on ``/vla_mpc/observation/<camera>/image`` (10 Hz) inside an
episode. Episodes come from ``/vla_mpc/episode`` (std_msgs/String JSON, contract G): an episode's
window opens at the sim's ``/vla_mpc/sim/episode_ready`` for that episode (or at its "start" event if
the bag has no ready message) and closes at its "end" event (or the next "start", or the end of what
was readable). Window membership uses the bag's receive times (the recorder's wall clock, the only
clock the event messages have); everything inside a window is aligned on header stamps (sim time:
the camera, ``/joint_states`` and ``/vla_mpc/joint_command`` stamps all come from the sim clock).

- ``proprio``: the newest ``/joint_states`` with stamp <= the frame's stamp, positions then
  velocities over the robot's ``joint_names`` [rad, m, rad/s, m/s]; frames with no earlier joint
  state are dropped.
- ``actions``: the commanded targets on ``/vla_mpc/joint_command`` (inside the window) at
  ``t + k * chunk_dt``, k = 0..chunk_size-1, interpolated linearly between command stamps; past the
  last command of the episode the last command repeats. Frames stamped before the episode's first
  command (the policy not running yet) are dropped: their target is undefined.
- ``timestamps``: frame stamp minus the stamp of the episode window's first frame [s].
- ``keypoints`` (optional file): (N, 2, 3) float32 [m, ``base_link``], the two task keypoints of
  :func:`vla_mpc.sim.tasks.task_keypoints` (the instruction's object now, and where the task wants
  it) from the newest ``/vla_mpc/sim/object_poses`` with stamp <= the frame's stamp; the push origin
  is the object's position in the window's first object message. NaN where the bag has no object
  poses or the instruction does not parse against them (``meta["keypoint_rows"]`` counts the rows
  that have them). These are System 2's auxiliary targets (``training/policy.py``).

Damaged bags never stop a conversion: a bag rosbags cannot open (no ``metadata.yaml``, an MCAP
without footer after a crash or truncation) is scanned record by record up to the first damaged
record (:func:`scan_mcap`); what was read is converted and the bag is listed in
``meta["partial_bags"]`` with the reason; a bag of which nothing is readable is listed in
``meta["skipped_bags"]``. Messages whose CDR does not decode are counted (``meta["bad_messages"]``)
and dropped.

Messages are decoded with the ``rosbags`` type store (pure Python; no rclpy needed to convert).
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

FORMAT = "vla_mpc.dataset/1"
EPISODE_TOPIC = "/vla_mpc/episode"
READY_TOPIC = "/vla_mpc/sim/episode_ready"
SUCCESS_TOPIC = "/vla_mpc/sim/task_success"
JOINT_STATES_TOPIC = "/joint_states"
COMMAND_TOPIC = "/vla_mpc/joint_command"
OBJECTS_TOPIC = "/vla_mpc/sim/object_poses"
STD_FLOOR = 1e-3  # contract B: std floored so normalisation never divides by ~0
VAL_EVERY = 10    # contract B: every 10th episode is validation

_MCAP_MAGIC = b"\x89MCAP0\r\n"


def observation_topic(camera: str) -> str:
    """The camera_ingest output the dataset reads for ``camera``."""
    return f"/vla_mpc/observation/{camera}/image"


# ----------------------------------------------------------------------------------- bag reading


@dataclass
class RawMessage:
    """One serialized message: topic, type name (``pkg/msg/Type``), receive time [ns], CDR bytes."""

    topic: str
    msgtype: str
    log_ns: int
    data: bytes


@dataclass
class BagRead:
    """What :func:`read_bag` got out of a bag.

    Attributes:
        messages: the messages of the requested topics, in receive-time order.
        error: None when the whole bag was read, else why reading stopped early.
        method: ``"rosbags"`` (indexed reader) or ``"scan"`` (record scan of the MCAP files).
    """

    messages: list[RawMessage]
    error: str | None
    method: str


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    from rosbags.rosbag2.storage_mcap import decompress  # lz4 / zstd, as rosbags' own reader

    return decompress(data, compression, size, 0)


def scan_mcap(path: Path, topics: set[str] | None = None) -> tuple[list[RawMessage], str | None]:
    """Read an MCAP file record by record, without its summary or footer, up to the first damaged
    or incomplete record (MCAP spec: https://mcap.dev/spec; records are opcode u8, length u64 LE,
    body; schema 0x03, channel 0x04, message 0x05, chunk 0x06 with the same records inside).

    Args:
        path: the ``.mcap`` file.
        topics: only keep messages of these topics (None: all).

    Returns:
        (messages in file order, None if the file ended cleanly with its footer else the reason).
    """
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    out: list[RawMessage] = []

    def records(buf: memoryview, nested: bool) -> Iterator[tuple[int, memoryview]]:
        pos, end = 0, len(buf)
        while pos < end:
            if end - pos < 9:
                raise EOFError(f"incomplete record header at byte {pos}")
            op = buf[pos]
            (length,) = struct.unpack_from("<Q", buf, pos + 1)
            if pos + 9 + length > end:
                raise EOFError(f"record 0x{op:02x} at byte {pos} runs past the end "
                               f"({length} bytes, {end - pos - 9} left)")
            yield op, buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            if op == 0x02 and not nested:  # footer
                return

    def string(body: memoryview, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<I", body, pos)
        return bytes(body[pos + 4:pos + 4 + n]).decode(), pos + 4 + n

    def handle(op: int, body: memoryview, nested: bool) -> None:
        if op == 0x03:
            (sid,) = struct.unpack_from("<H", body, 0)
            schemas[sid], _ = string(body, 2)
        elif op == 0x04:
            cid, sid = struct.unpack_from("<HH", body, 0)
            topic, _ = string(body, 4)
            channels[cid] = (topic, schemas.get(sid, ""))
        elif op == 0x05:
            cid, _seq, log_ns, _pub = struct.unpack_from("<HIQQ", body, 0)
            if cid not in channels:
                raise ValueError(f"message on unknown channel {cid}")
            topic, msgtype = channels[cid]
            if topics is None or topic in topics:
                out.append(RawMessage(topic, msgtype, int(log_ns), bytes(body[22:])))
        elif op == 0x06 and not nested:
            _t0, _t1, usize, _crc = struct.unpack_from("<QQQI", body, 0)
            compression, pos = string(body, 28)
            (csize,) = struct.unpack_from("<Q", body, pos)
            if pos + 8 + csize > len(body):
                raise EOFError("chunk data runs past its record")
            inner = _decompress(bytes(body[pos + 8:pos + 8 + csize]), compression, usize)
            for iop, ibody in records(memoryview(inner), nested=True):
                handle(iop, ibody, nested=True)

    try:
        data = memoryview(Path(path).read_bytes())
    except OSError as exc:
        return out, f"{path.name}: cannot read: {exc}"
    if bytes(data[:8]) != _MCAP_MAGIC:
        return out, f"{path.name}: not an MCAP file (bad magic)"
    footer = False
    try:
        for op, body in records(data[8:], nested=False):
            handle(op, body, nested=False)
            if op == 0x02:
                footer = True
                break
    except Exception as exc:  # noqa: BLE001 - damaged data of any kind: keep what was read
        return out, f"{path.name}: {type(exc).__name__}: {exc} (after {len(out)} messages)"
    return out, None if footer else f"{path.name}: no footer (recording not closed)"


def read_bag(bag: Path, topics: Sequence[str]) -> BagRead:
    """All messages of ``topics`` in ``bag`` (rosbag2 directory or a single ``.mcap`` file).

    Tries the ``rosbags`` reader (needs ``metadata.yaml`` and intact MCAP files); if it cannot open
    the bag, scans the MCAP files (:func:`scan_mcap`). Never raises for bag damage.
    """
    from rosbags.rosbag2 import Reader

    wanted = set(topics)
    bag = Path(bag)
    msgs: list[RawMessage] = []
    if bag.is_dir():
        try:
            reader = Reader(bag)
            reader.open()
        except Exception as exc:  # noqa: BLE001 - fall back to scanning below
            open_error = f"{type(exc).__name__}: {exc}"
        else:
            try:
                conns = [c for c in reader.connections if c.topic in wanted]
                for conn, t_ns, raw in reader.messages(connections=conns):
                    msgs.append(RawMessage(conn.topic, conn.msgtype, int(t_ns), bytes(raw)))
            except Exception as exc:  # noqa: BLE001 - damaged in the middle: keep what was read
                reader.close()
                return BagRead(msgs, f"read stopped: {type(exc).__name__}: {exc}", "rosbags")
            reader.close()
            return BagRead(msgs, None, "rosbags")
        files = sorted(bag.glob("*.mcap"))
    else:
        open_error = "not a rosbag2 directory"
        files = [bag] if bag.suffix == ".mcap" and bag.is_file() else []
    if not files:
        return BagRead([], f"cannot open ({open_error}) and no .mcap file to scan", "scan")
    errors = []
    for f in files:
        part, err = scan_mcap(f, wanted)
        msgs.extend(part)
        if err:
            errors.append(err)
    msgs.sort(key=lambda m: m.log_ns)
    reason = f"rosbags could not open it ({open_error}); scanned the MCAP records"
    if errors:
        reason += ": " + "; ".join(errors)
    return BagRead(msgs, reason, "scan")


def find_bags(paths: Sequence[Path]) -> list[Path]:
    """Bag directories (``metadata.yaml`` or ``*.mcap`` inside) at or under ``paths``, sorted;
    a path that is itself an ``.mcap`` file is taken as is."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".mcap":
            found.append(p)
            continue
        if not p.is_dir():
            raise FileNotFoundError(f"--bags: {p} is not a directory or .mcap file")
        if (p / "metadata.yaml").is_file() or any(p.glob("*.mcap")):
            found.append(p)
            continue
        found.extend(sorted({m.parent for m in p.rglob("metadata.yaml")} | {m.parent for m in p.rglob("*.mcap")}))
    seen, unique = set(), []
    for b in found:
        if b.resolve() not in seen:
            seen.add(b.resolve())
            unique.append(b)
    return unique


# ---------------------------------------------------------------------------- message decoding


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _stamp(msg: Any) -> float:
    return float(msg.header.stamp.sec) + 1e-9 * float(msg.header.stamp.nanosec)


def decode_image(msg: Any) -> np.ndarray:
    """A decoded sensor_msgs/Image (rosbags object) -> (H, W, 3) uint8 RGB.

    Supports rgb8, bgr8, rgba8, bgra8, mono8 (row padding via ``step`` handled).

    Raises:
        ValueError: another encoding or a data size that does not match.
    """
    enc = msg.encoding.lower()
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(enc)
    if channels is None:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * channels or data.size < h * step:
        raise ValueError(f"image data {data.size} B does not fit {h}x{w} {enc} step {step}")
    img = data[:h * step].reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[:, :, 2::-1]
    return np.ascontiguousarray(img[:, :, :3])


@dataclass
class Episode:
    """One episode window found in a bag (times are receive times [ns] of the recorder).

    Attributes:
        start: the "start" event (dict, contract G).
        end: the "end" event, or None when the bag has none for it.
        open_ns: window start (episode_ready, else the start event).
        close_ns: window end (the end event, else the next start, else the bag end).
    """

    start: dict
    end: dict | None
    open_ns: int
    close_ns: int


def episodes_from_events(events: Sequence[tuple[int, dict]], ready: Sequence[tuple[int, dict]],
                         bag_end_ns: int) -> list[Episode]:
    """Pair ``/vla_mpc/episode`` events into episode windows.

    Args:
        events: (receive time [ns], decoded JSON) of ``/vla_mpc/episode``, any order.
        ready: (receive time [ns], decoded JSON) of ``/vla_mpc/sim/episode_ready``.
        bag_end_ns: receive time of the last readable message.

    Returns:
        Episodes in time order. An "end" without its "start" is ignored; a "start" without an "end"
        runs to the next "start" (or ``bag_end_ns``) with ``end=None``. A ready message opens the
        window when it names the same episode and arrives between that start and its close.
    """
    evs = sorted(events, key=lambda e: e[0])
    starts = [(t, e) for t, e in evs if e.get("event") == "start"]
    out: list[Episode] = []
    for i, (t, e) in enumerate(starts):
        nxt = starts[i + 1][0] if i + 1 < len(starts) else None
        end = next(((te, ee) for te, ee in evs if ee.get("event") == "end" and te >= t
                    and (nxt is None or te <= nxt) and ee.get("episode") == e.get("episode")), None)
        close = end[0] if end else (nxt if nxt is not None else bag_end_ns)
        opens = [tr for tr, r in ready if t <= tr <= close and r.get("episode") == e.get("episode")]
        out.append(Episode(e, end[1] if end else None, min(opens) if opens else t, close))
    return out


def interpolate_targets(cmd_t: np.ndarray, cmd_q: np.ndarray, query_t: np.ndarray) -> np.ndarray:
    """Commanded targets at ``query_t`` by linear interpolation between command stamps.

    Args:
        cmd_t: (M,) command stamps [s], non-decreasing, M >= 1.
        cmd_q: (M, dof) commanded positions.
        query_t: (...,) query times [s].

    Returns:
        (..., dof) float64; before the first / after the last command the first / last command.
    """
    q = np.asarray(query_t, dtype=np.float64)
    flat = q.reshape(-1)
    out = np.empty((flat.size, cmd_q.shape[1]))
    for j in range(cmd_q.shape[1]):
        out[:, j] = np.interp(flat, cmd_t, cmd_q[:, j])
    return out.reshape(*q.shape, cmd_q.shape[1])


@dataclass
class EpisodeRows:
    """The rows of one episode (see the module docstring)."""

    frame_ids: np.ndarray     # (n,) int64 indices into the bag's frame list
    proprio: np.ndarray       # (n, 2*dof) float32
    actions: np.ndarray       # (n, chunk_size, dof) float32
    timestamps: np.ndarray    # (n,) float64 [s since the window's first frame]


def episode_rows(frame_t: np.ndarray, js_t: np.ndarray, js_pv: np.ndarray, cmd_t: np.ndarray,
                 cmd_q: np.ndarray, chunk_size: int, chunk_dt: float) -> tuple[EpisodeRows | None, str]:
    """Rows of one episode from its frames, the joint states and its commands.

    Args:
        frame_t: (F,) stamps [s] of the frames in the window, in receive order.
        js_t: (J,) joint-state stamps [s], sorted; js_pv: (J, 2*dof) positions then velocities.
        cmd_t: (M,) command stamps [s] inside the window, sorted; cmd_q: (M, dof).
        chunk_size, chunk_dt: action chunk length and spacing [s].

    Returns:
        (rows, "") or (None, why the episode has no rows).
    """
    if frame_t.size == 0:
        return None, "no camera frames"
    if cmd_t.size == 0:
        return None, "no joint commands"
    order = np.argsort(frame_t, kind="stable")
    t = frame_t[order]
    js_idx = np.searchsorted(js_t, t, side="right") - 1
    keep = (js_idx >= 0) & (t >= cmd_t[0])
    if not keep.any():
        return None, "no frame after the first command with an earlier joint state"
    t0 = t[0]
    t, js_idx, ids = t[keep], js_idx[keep], order[keep]
    query = t[:, None] + chunk_dt * np.arange(chunk_size)[None, :]
    actions = interpolate_targets(cmd_t, cmd_q, query)
    return EpisodeRows(ids.astype(np.int64), js_pv[js_idx].astype(np.float32), actions.astype(np.float32),
                       (t - t0).astype(np.float64)), ""


def compute_stats(x: np.ndarray) -> dict[str, list[float]]:
    """Per-feature mean/std/min/max over all leading axes of ``x`` (..., D); std floored at 1e-3."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
    return {"mean": flat.mean(0).tolist(), "std": np.maximum(flat.std(0), STD_FLOOR).tolist(),
            "min": flat.min(0).tolist(), "max": flat.max(0).tolist()}


# ----------------------------------------------------------------------------------- conversion


@dataclass
class _BagContent:
    events: list[tuple[int, dict]] = field(default_factory=list)   # (receive ns, /vla_mpc/episode JSON)
    ready: list[tuple[int, dict]] = field(default_factory=list)    # (receive ns, episode_ready JSON)
    frame_t: list[float] = field(default_factory=list)
    frame_log: list[int] = field(default_factory=list)
    frame_rows: list[int] = field(default_factory=list)   # row in the temporary frame file
    js: list[tuple[float, tuple[str, ...], np.ndarray, np.ndarray]] = field(default_factory=list)
    cmds: list[tuple[int, float, tuple[str, ...], np.ndarray]] = field(default_factory=list)
    successes: list[tuple[int, bool]] = field(default_factory=list)
    objects: list[tuple[int, float, dict]] = field(default_factory=list)  # (receive ns, stamp, {name: (pos, size)})


def load_npy(path: Path, what: str) -> np.ndarray:
    """Memory-map the ``.npy`` file ``path`` read-only.

    Raises:
        FileNotFoundError: ``path`` is missing (named, prefixed by ``what``).
        ValueError: not a readable ``.npy`` file (named).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} not found")
    try:
        return np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise ValueError(f"{what}: {path} is not a readable .npy file: {exc}") from exc


def _select(names: Sequence[str], values: np.ndarray, wanted: Sequence[str]) -> np.ndarray | None:
    index = {n: i for i, n in enumerate(names)}
    if any(w not in index for w in wanted) or len(values) < len(names):
        return None
    return np.asarray([values[index[w]] for w in wanted], dtype=np.float64)


def episode_keypoints(instruction: str | None, frame_t: np.ndarray,
                      objects: Sequence[tuple[int, float, dict]]) -> np.ndarray:
    """Task keypoints per frame of one episode (the ``keypoints`` array, module docstring).

    Args:
        instruction: the episode's instruction.
        frame_t: (n,) frame stamps [s] of the episode's rows.
        objects: the episode window's ``/vla_mpc/sim/object_poses`` as (receive ns, stamp [s],
            {name: (position (3,), size (3,))}), in receive order.

    Returns:
        (n, 2, 3) float64; rows with no earlier object message, or all rows when the instruction
        does not parse against the objects, are NaN (never raises for bad data).
    """
    from vla_mpc.sim.tasks import bind_origin, parse_instruction, task_keypoints

    out = np.full((len(frame_t), 2, 3), np.nan)
    if not instruction or not objects or not len(frame_t):
        return out
    objs = sorted(objects, key=lambda o: o[1])
    stamps = np.array([o[1] for o in objs])
    try:
        task = parse_instruction(instruction, list(objs[0][2]))
        task = bind_origin(task, {k: (v[0],) for k, v in objs[0][2].items()})
    except (ValueError, KeyError):
        return out
    idx = np.searchsorted(stamps, np.asarray(frame_t, float), side="right") - 1
    cache: dict[int, np.ndarray] = {}
    for r, i in enumerate(idx):
        if i < 0:
            continue
        if i not in cache:
            scene = {k: (v[0], None, None, v[1]) for k, v in objs[i][2].items()}
            try:
                cache[i] = task_keypoints(task, scene)
            except (KeyError, ValueError):
                cache[i] = np.full((2, 3), np.nan)
        out[r] = cache[i]
    return out


class Converter:
    """Converts bags one at a time into one dataset directory (see the module docstring)."""

    def __init__(self, out: Path, image_size: int = 96, camera: str = "front", chunk_size: int = 16,
                 chunk_dt: float = 0.05, robot: str | None = None) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 px, got {image_size}")
        if chunk_size < 1 or not chunk_dt > 0:
            raise ValueError(f"chunk_size must be >= 1 and chunk_dt > 0, got {chunk_size}, {chunk_dt}")
        self.out = Path(out)
        self.image_size, self.camera = int(image_size), camera
        self.chunk_size, self.chunk_dt = int(chunk_size), float(chunk_dt)
        self.robot = robot
        self.joint_names: list[str] | None = None
        self.typestore = _typestore()
        self.out.mkdir(parents=True, exist_ok=True)
        self._tmp_path = self.out / "frames.tmp"
        self._tmp = open(self._tmp_path, "wb")
        self._tmp_rows = 0
        self.meta_episodes: list[dict] = []
        self.skipped_bags: list[dict] = []
        self.partial_bags: list[dict] = []
        self.skipped_episodes: list[dict] = []
        self.bad_messages = 0
        self._sel_frames: list[np.ndarray] = []
        self._proprio: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._ep_index: list[np.ndarray] = []
        self._keypoints: list[np.ndarray] = []
        self._frame_dts: list[np.ndarray] = []
        self.rows = 0

    # -- per message -----------------------------------------------------------------------
    def _decode(self, m: RawMessage, content: _BagContent) -> None:
        from vla_mpc.models.vision import resize_frame

        msg = self.typestore.deserialize_cdr(m.data, m.msgtype)
        if m.topic == EPISODE_TOPIC:
            content.events.append((m.log_ns, json.loads(msg.data)))
        elif m.topic == READY_TOPIC:
            content.ready.append((m.log_ns, json.loads(msg.data)))
        elif m.topic == SUCCESS_TOPIC:
            content.successes.append((m.log_ns, bool(msg.data)))
        elif m.topic == JOINT_STATES_TOPIC:
            content.js.append((_stamp(msg), tuple(msg.name), np.asarray(msg.position, dtype=np.float64),
                               np.asarray(msg.velocity, dtype=np.float64)))
        elif m.topic == COMMAND_TOPIC:
            content.cmds.append((m.log_ns, _stamp(msg), tuple(msg.name), np.asarray(msg.position, dtype=np.float64)))
        elif m.topic == OBJECTS_TOPIC:
            objs, stamp = {}, None
            for mk in msg.markers:
                if mk.action != 0:  # visualization_msgs/Marker ADD = 0; DELETE / DELETEALL carry no pose
                    continue
                p, sc = mk.pose.position, mk.scale
                pos, size = np.array([p.x, p.y, p.z]), np.array([sc.x, sc.y, sc.z])
                if np.all(np.isfinite(pos)) and np.all(np.isfinite(size)):
                    objs[mk.ns] = (pos, size)
                    stamp = _stamp(mk) if stamp is None else stamp
            if objs and stamp is not None:
                content.objects.append((m.log_ns, stamp, objs))
        else:  # observation image
            t = _stamp(msg)
            frame = resize_frame(decode_image(msg), self.image_size)
            self._tmp.write(frame.tobytes())
            content.frame_t.append(t)
            content.frame_log.append(m.log_ns)
            content.frame_rows.append(self._tmp_rows)
            self._tmp_rows += 1

    def add_bag(self, bag: Path) -> None:
        """Read ``bag`` and add its episodes' rows. Records damage in the meta lists; never raises
        for a damaged bag."""
        topics = [EPISODE_TOPIC, READY_TOPIC, SUCCESS_TOPIC, JOINT_STATES_TOPIC, COMMAND_TOPIC,
                  OBJECTS_TOPIC, observation_topic(self.camera)]
        read = read_bag(bag, topics)
        content = _BagContent()
        for m in read.messages:
            try:
                self._decode(m, content)
            except Exception:  # noqa: BLE001 - a garbled message: drop it, count it
                self.bad_messages += 1
        if not read.messages or not content.events:
            why = read.error or "no /vla_mpc/episode events (not recorded by vla_mpc.collect / eval?)"
            if read.messages and not content.events and read.error:
                why += "; no /vla_mpc/episode events in the readable part"
            self.skipped_bags.append({"bag": str(bag), "reason": why})
            return
        if read.error:
            self.partial_bags.append({"bag": str(bag), "reason": read.error, "messages_read": len(read.messages)})
        bag_end = read.messages[-1].log_ns
        episodes = episodes_from_events(content.events, content.ready, bag_end)
        self._add_episodes(bag, episodes, content)

    def _add_episodes(self, bag: Path, episodes: list[Episode], c: _BagContent) -> None:
        frame_t = np.asarray(c.frame_t)
        frame_log = np.asarray(c.frame_log, dtype=np.int64)
        frame_rows = np.asarray(c.frame_rows, dtype=np.int64)
        arrays = None  # joint states and commands over joint_names, built once the robot is known
        for ep in episodes:
            robot = ep.start.get("robot")
            if self.robot is None:
                self.robot = robot
            if robot != self.robot:
                self.skipped_episodes.append({"bag": str(bag), "episode": ep.start.get("episode"),
                                              "reason": f"robot {robot!r}, dataset is {self.robot!r}"})
                continue
            if self.joint_names is None:
                from vla_mpc.core.robot_model import load_robot_spec

                self.joint_names = list(load_robot_spec(self.robot).joint_names)
            if arrays is None:
                arrays = self._state_arrays(c)
            js_t, js_pv, cm_log, cm_t, cm_q = arrays
            in_cmd = (cm_log >= ep.open_ns) & (cm_log <= ep.close_ns)
            cm_order = np.argsort(cm_t[in_cmd], kind="stable")
            in_win = (frame_log >= ep.open_ns) & (frame_log <= ep.close_ns)
            rows, why = episode_rows(frame_t[in_win], js_t, js_pv, cm_t[in_cmd][cm_order],
                                     cm_q[in_cmd][cm_order], self.chunk_size, self.chunk_dt)
            if rows is None:
                self.skipped_episodes.append({"bag": str(bag), "episode": ep.start.get("episode"), "reason": why})
                continue
            success = (bool(ep.end.get("success")) if ep.end is not None
                       else any(ok for t, ok in c.successes if ep.open_ns <= t <= ep.close_ns))
            index = len(self.meta_episodes)
            n = len(rows.frame_ids)
            self.meta_episodes.append({
                "index": index, "bag": str(bag), "bag_episode": ep.start.get("episode"),
                "kind": ep.start.get("kind"), "instruction": ep.start.get("instruction"),
                "seed": ep.start.get("seed"), "success": success, "source": ep.start.get("source"),
                "time_to_success_s": ep.end.get("time_to_success_s") if ep.end else None,
                "complete": ep.end is not None, "start": self.rows, "stop": self.rows + n,
            })
            self._sel_frames.append(frame_rows[in_win][rows.frame_ids])
            self._keypoints.append(episode_keypoints(ep.start.get("instruction"), frame_t[in_win][rows.frame_ids],
                                                     [o for o in c.objects if ep.open_ns <= o[0] <= ep.close_ns]))
            self._proprio.append(rows.proprio)
            self._actions.append(rows.actions)
            self._times.append(rows.timestamps)
            self._ep_index.append(np.full(n, index, dtype=np.int32))
            if n > 1:
                self._frame_dts.append(np.diff(rows.timestamps))
            self.rows += n

    def _state_arrays(self, c: _BagContent) -> tuple[np.ndarray, ...]:
        """Joint states (sorted by stamp) and commands of a bag over ``joint_names``; messages
        missing a joint are dropped. Returns js_t (J,), js_pv (J, 2*dof), cmd_log (M,) int64 [ns],
        cmd_t (M,), cmd_q (M, dof)."""
        names = self.joint_names
        dof = len(names)
        js_t, js_pv = [], []
        for t, jn, pos, vel in c.js:
            p = _select(jn, pos, names)
            v = _select(jn, vel, names) if len(vel) else np.zeros(dof)
            if p is not None and v is not None:
                js_t.append(t)
                js_pv.append(np.concatenate([p, v]))
        cm_log, cm_t, cm_q = [], [], []
        for log_ns, t, jn, pos in c.cmds:
            q = _select(jn, pos, names)
            if q is not None:
                cm_log.append(log_ns)
                cm_t.append(t)
                cm_q.append(q)
        order = np.argsort(js_t, kind="stable")
        return (np.asarray(js_t, dtype=np.float64)[order], np.asarray(js_pv).reshape(-1, 2 * dof)[order],
                np.asarray(cm_log, dtype=np.int64), np.asarray(cm_t, dtype=np.float64),
                np.asarray(cm_q).reshape(-1, dof))

    # -- output ----------------------------------------------------------------------------
    def finish(self, bags: Sequence[Path], seconds: float) -> dict:
        """Write the arrays and ``meta.json``; returns the meta dict.

        Raises:
            ValueError: no episode had rows (the skipped bags/episodes and why are in the message).
        """
        self._tmp.close()
        try:
            if not self.rows:
                raise ValueError(
                    "no rows converted: skipped bags " + json.dumps(self.skipped_bags)
                    + "; skipped episodes " + json.dumps(self.skipped_episodes))
            s = self.image_size
            tmp = np.memmap(self._tmp_path, dtype=np.uint8, mode="r", shape=(self._tmp_rows, s, s, 3))
            sel = np.concatenate(self._sel_frames)
            frames = np.lib.format.open_memmap(self.out / "frames.npy", mode="w+", dtype=np.uint8,
                                               shape=(self.rows, s, s, 3))
            for a in range(0, self.rows, 1024):
                frames[a:a + 1024] = tmp[sel[a:a + 1024]]
            frames.flush()
            del frames, tmp
        finally:
            self._tmp_path.unlink(missing_ok=True)
        proprio = np.concatenate(self._proprio)
        actions = np.concatenate(self._actions)
        np.save(self.out / "proprio.npy", proprio)
        np.save(self.out / "actions.npy", actions)
        np.save(self.out / "episode_index.npy", np.concatenate(self._ep_index))
        np.save(self.out / "timestamps.npy", np.concatenate(self._times))
        keypoints = np.concatenate(self._keypoints).astype(np.float32)
        keypoint_rows = int(np.isfinite(keypoints).all(axis=(1, 2)).sum())
        if keypoint_rows:
            np.save(self.out / "keypoints.npy", keypoints)
        dts = np.concatenate(self._frame_dts) if self._frame_dts else np.zeros(0)
        # measured camera rate (median frame spacing in sim time); None when no episode has 2 rows
        rate = float(round(1.0 / float(np.median(dts)), 2)) if dts.size and np.median(dts) > 0 else None
        meta = {
            "format": FORMAT, "robot": self.robot, "joint_names": self.joint_names, "camera": self.camera,
            "image_size": self.image_size, "frame_rate_hz": rate, "chunk_size": self.chunk_size,
            "chunk_dt": self.chunk_dt, "episodes": self.meta_episodes, "skipped_bags": self.skipped_bags,
            "partial_bags": self.partial_bags, "skipped_episodes": self.skipped_episodes,
            "bad_messages": self.bad_messages,
            "stats": {"proprio": compute_stats(proprio), "action": compute_stats(actions)},
            "keypoint_rows": keypoint_rows,
            "source_bags": [str(b) for b in bags],
            "conversion": {"seconds": round(seconds, 3), "rows": self.rows,
                           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        }
        (self.out / "meta.json").write_text(json.dumps(meta, indent=1))
        return meta


def convert(bags: Sequence[Path], out: Path, image_size: int = 96, camera: str = "front", chunk_size: int = 16,
            chunk_dt: float = 0.05, robot: str | None = None, progress: bool = False) -> dict:
    """Convert ``bags`` (rosbag2 directories or ``.mcap`` files) into the dataset directory ``out``.

    Args:
        robot: keep only episodes of this robot (None: the robot of the first episode).
        progress: tqdm bar over bags (stderr).

    Returns:
        The meta dict (also written to ``out/meta.json``).

    Raises:
        ValueError: nothing convertible in any bag.
    """
    from tqdm import tqdm

    t0 = time.monotonic()
    conv = Converter(out, image_size, camera, chunk_size, chunk_dt, robot)
    for bag in tqdm(list(bags), desc="bags", disable=not progress):
        conv.add_bag(Path(bag))
    return conv.finish(list(bags), time.monotonic() - t0)


# ------------------------------------------------------------------------------------- reading


class Dataset:
    """A converted dataset (contract B), arrays memory-mapped read-only.

    Attributes:
        meta: ``meta.json``.
        frames: (N, S, S, 3) uint8; proprio: (N, 2*dof) float32; actions: (N, chunk_size, dof)
        float32; episode_index: (N,) int32; timestamps: (N,) float64 [s]; keypoints: (N, 2, 3)
        float32 [m] or None (datasets converted before keypoints existed, or bags without object poses).
    """

    ARRAYS = ("frames", "proprio", "actions", "episode_index", "timestamps")
    OPTIONAL_ARRAYS = ("keypoints",)

    def __init__(self, path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.path = Path(path)
        self.meta = meta
        self.frames = arrays["frames"]
        self.proprio = arrays["proprio"]
        self.actions = arrays["actions"]
        self.episode_index = arrays["episode_index"]
        self.timestamps = arrays["timestamps"]
        self.keypoints = arrays.get("keypoints")

    @classmethod
    def load(cls, path: Path | str) -> "Dataset":
        """Open the dataset directory ``path``.

        Raises:
            FileNotFoundError: ``meta.json`` or an array file is missing (named).
            ValueError: wrong format tag, or an array whose shape/dtype disagrees with the meta (named).
        """
        from vla_mpc.core.config import read_format_json

        path = Path(path)
        meta = read_format_json(path / "meta.json", FORMAT, "dataset",
                                "convert bags with python -m vla_mpc.training.dataset")
        arrays = {name: load_npy(path / f"{name}.npy", "dataset") for name in cls.ARRAYS}
        arrays.update({name: load_npy(path / f"{name}.npy", "dataset") for name in cls.OPTIONAL_ARRAYS
                       if (path / f"{name}.npy").is_file()})
        n = arrays["frames"].shape[0]
        dof, s, c = len(meta["joint_names"]), meta["image_size"], meta["chunk_size"]
        expected = {"frames": ((n, s, s, 3), np.uint8), "proprio": ((n, 2 * dof), np.float32),
                    "actions": ((n, c, dof), np.float32), "episode_index": ((n,), np.int32),
                    "timestamps": ((n,), np.float64), "keypoints": ((n, 2, 3), np.float32)}
        for name, (shape, dtype) in expected.items():
            if name not in arrays:
                continue
            a = arrays[name]
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"dataset: {path / (name + '.npy')} is {a.shape} {a.dtype}, "
                                 f"expected {shape} {np.dtype(dtype)} (from meta.json and frames.npy)")
        return cls(path, meta, arrays)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def episodes(self, split: str, success_only: bool = False, expert_labels: bool = False) -> list[int]:
        """Episode indices of ``split``: ``"val"`` = every 10th episode (positions 9, 19, ...), or the
        last episode when there are fewer than 10 (and at least 2); ``"train"`` = the rest;
        ``"all"`` = every episode.

        Args:
            success_only: keep only episodes whose ``success`` is true.
            expert_labels: with ``success_only``, also keep episodes whose actions are expert
                labels (``expert_labels`` true: :mod:`vla_mpc.training.dagger` rollouts, worth
                imitating whatever the learner's outcome).

        Raises:
            ValueError: unknown split.
        """
        eps = [e["index"] for e in self.meta["episodes"]]
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if split == "all":
            chosen = eps
        else:
            val = [e for i, e in enumerate(eps) if i % VAL_EVERY == VAL_EVERY - 1]
            if not val and len(eps) >= 2:
                val = [eps[-1]]
            chosen = val if split == "val" else [e for e in eps if e not in set(val)]
        if success_only:
            ok = {e["index"] for e in self.meta["episodes"]
                  if e.get("success") or (expert_labels and e.get("expert_labels"))}
            chosen = [e for e in chosen if e in ok]
        return chosen

    def rows(self, split: str, success_only: bool = False, expert_labels: bool = False) -> np.ndarray:
        """Row indices (int64, ascending) of the episodes of ``split`` (see :meth:`episodes`)."""
        by_index = {e["index"]: e for e in self.meta["episodes"]}
        parts = [np.arange(by_index[i]["start"], by_index[i]["stop"], dtype=np.int64)
                 for i in self.episodes(split, success_only, expert_labels)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    @classmethod
    def concatenate(cls, datasets: Sequence["Dataset"]) -> "Dataset":
        """One in-memory dataset from several of the same robot, joints, camera, image size and
        chunking (e.g. demonstrations + :mod:`vla_mpc.training.dagger` rollouts).

        Episodes keep their order (dataset by dataset) and are re-indexed, row ranges shifted;
        ``stats`` are recomputed over the union; ``keypoints`` is NaN for the rows of a dataset
        without them (None if none has them). ``meta["sources"]`` lists the paths. Arrays are
        read into memory (about 28 kB per 96 px row).

        Raises:
            ValueError: no dataset, or datasets that disagree on robot, joint_names, camera,
                image_size, chunk_size or chunk_dt (named).
        """
        if not datasets:
            raise ValueError("concatenate needs at least one dataset")
        if len(datasets) == 1:
            return datasets[0]
        first = datasets[0]
        for d in datasets[1:]:
            for key in ("robot", "joint_names", "camera", "image_size", "chunk_size", "chunk_dt"):
                if d.meta.get(key) != first.meta.get(key):
                    raise ValueError(f"datasets {first.path} and {d.path} differ in {key}: "
                                     f"{first.meta.get(key)!r} vs {d.meta.get(key)!r}")
        episodes, offset = [], 0
        for d in datasets:
            for e in d.meta["episodes"]:
                episodes.append(dict(e, index=len(episodes), start=int(e["start"]) + offset,
                                     stop=int(e["stop"]) + offset, dataset=str(d.path)))
            offset += len(d)
        cat = lambda name: np.concatenate([np.asarray(getattr(d, name)) for d in datasets])  # noqa: E731
        ep_index = np.empty(offset, dtype=np.int32)
        for e in episodes:
            ep_index[e["start"]:e["stop"]] = e["index"]
        keypoints = None
        if any(d.keypoints is not None for d in datasets):
            keypoints = np.concatenate([np.asarray(d.keypoints, dtype=np.float32) if d.keypoints is not None
                                        else np.full((len(d), 2, 3), np.nan, np.float32) for d in datasets])
        arrays = {"frames": cat("frames"), "proprio": cat("proprio"), "actions": cat("actions"),
                  "episode_index": ep_index, "timestamps": cat("timestamps")}
        if keypoints is not None:
            arrays["keypoints"] = keypoints
        meta = {k: first.meta.get(k) for k in ("format", "robot", "joint_names", "camera", "image_size",
                                                "frame_rate_hz", "chunk_size", "chunk_dt")}
        meta.update(episodes=episodes, sources=[str(d.path) for d in datasets],
                    stats={"proprio": compute_stats(arrays["proprio"]), "action": compute_stats(arrays["actions"])},
                    keypoint_rows=int(np.isfinite(keypoints).all(axis=(1, 2)).sum()) if keypoints is not None else 0)
        return cls(first.path, meta, arrays)


# ----------------------------------------------------------------------------------------- CLI


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The converter's command-line options (shared with ``python -m vla_mpc.train convert``)."""
    ap.add_argument("--bags", type=Path, nargs="+", required=True,
                    help="rosbag2 directories, .mcap files, or folders searched for bags")
    ap.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    ap.add_argument("--image-size", type=int, default=96, help="frame side [px] (default 96)")
    ap.add_argument("--camera", default="front", help="camera name (/vla_mpc/observation/<camera>/image)")
    ap.add_argument("--chunk-size", type=int, default=16, help="action chunk length (default 16)")
    ap.add_argument("--chunk-dt", type=float, default=0.05, help="action spacing in a chunk [s] (default 0.05)")
    ap.add_argument("--robot", default=None, help="keep only this robot's episodes (default: the first seen)")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_cli(a: argparse.Namespace) -> int:
    """Run a conversion from parsed arguments; prints a one-line JSON summary."""
    if a.out.exists() and any(a.out.iterdir()) and not a.overwrite:
        print(f"dataset: {a.out} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    bags = find_bags(a.bags)
    if not bags:
        print(f"dataset: no bags found under {[str(b) for b in a.bags]}", file=sys.stderr)
        return 2
    try:
        meta = convert(bags, a.out, a.image_size, a.camera, a.chunk_size, a.chunk_dt, a.robot, progress=True)
    except ValueError as exc:
        print(f"dataset: {exc}", file=sys.stderr)
        return 1
    secs = meta["conversion"]["seconds"]
    print(json.dumps({
        "out": str(a.out), "bags": len(bags), "episodes": len(meta["episodes"]), "rows": meta["conversion"]["rows"],
        "successful_episodes": sum(bool(e["success"]) for e in meta["episodes"]),
        "skipped_bags": len(meta["skipped_bags"]), "partial_bags": len(meta["partial_bags"]),
        "skipped_episodes": len(meta["skipped_episodes"]), "seconds": secs,
        "rows_per_s": round(meta["conversion"]["rows"] / secs, 1) if secs > 0 else math.inf,
    }))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.training.dataset``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
