"""Replay a rosbag2 (MCAP) into the graph, and replay-and-compare for offline debugging.

    python -m vla_mpc.replay BAG [--rate 1.0] [--topics T ...] [--remap A:=B ...] [--loop]
        [--clock-hz 100]
    python -m vla_mpc.replay compare BAG [--checkpoint DIR] [--robot panda] [--set policy.p=v]
        [--tolerance 0.05] [--out report.json] [--no-planner]

**play** publishes every recorded message (serialized bytes, never deserialised) at the bag's pace
times ``--rate`` (0 = as fast as possible), with the QoS the recording publishers offered (RELIABLE
/ TRANSIENT_LOCAL only when every recorded publisher offered it, as ``ros2 bag play`` adapts). Time:
if the bag holds ``/clock`` (the sim's clock, recorded), it is replayed like any topic, so stamps
and ``/clock`` agree; otherwise ``/clock`` is published at ``--clock-hz`` from the bag's receive
time (``ros2 bag play --clock``). Nodes listening should run with ``use_sim_time:=true``.

**compare** replays the policy's inputs (``INPUT_TOPICS``: /clock, /joint_states, the model frames
``/vla_mpc/observation/<cam>/image``, instruction, goal image, episode events and the sim's
privileged object poses for the scripted backend) at 1x into a fresh policy node (plus the planner
when the bag has planner topics, plus camera_ingest when it has raw camera frames but no model
frames), started like ``bringup`` does (``config/params/<node>.yaml``, ``use_sim_time``), with its
``/vla_mpc/joint_command`` remapped to ``/vla_mpc/replay/joint_command``. For each recorded
``/vla_mpc/joint_command`` (by header stamp) the replayed commands are linearly interpolated at the
same stamp; the report (JSON) gives per step the max and mean absolute difference over joints
[rad, m for fingers] at the same stamp and the windowed difference (the closest replayed command
within +-``--window`` s: the policy's loops free-run on the wall clock, so the replay reproduces
the commands but not the phase of the 2 Hz / 10 Hz inference ticks), overall figures, the first
divergence time (first step whose windowed difference exceeds ``--tolerance``) and the constant
time lag that best explains the same-stamp difference. See the README (Replay) for the tolerance.

A truncated or corrupt bag (no metadata.yaml, MCAP without footer, damaged chunk) is read
sequentially record by record until the damage; everything before it is replayed and
:attr:`Bag.status` says where reading stopped (byte offset, last good message time).
"""

from __future__ import annotations

import argparse
import json
import mmap
import re
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

# Topics the policy (and planner) consume; compare replays these.
INPUT_TOPICS = (
    r"^/clock$",
    r"^/joint_states$",
    r"^/vla_mpc/observation/[^/]+/image$",
    r"^/vla_mpc/instruction$",
    r"^/vla_mpc/goal_image$",
    r"^/vla_mpc/episode$",
    r"^/vla_mpc/sim/object_poses$",
)
# Topics the whole graph without the sim consumes (replay.launch.py nodes:=true): the robot's
# sensors as recorded, so camera_ingest, policy, planner and safety monitor run on them afresh.
GRAPH_INPUT_TOPICS = (
    r"^/clock$",
    r"^/joint_states$",
    r"^/camera/.*",
    r"^/vla_mpc/instruction$",
    r"^/vla_mpc/goal_image$",
    r"^/vla_mpc/episode$",
    r"^/vla_mpc/sim/object_poses$",
    r"^/vla_mpc/sim/task_success$",
)
RAW_CAMERA_TOPICS = (r"^/camera/[^/]+/image_raw$", r"^/camera/[^/]+/image_raw/compressed$", r"^/camera/[^/]+/camera_info$")
COMMAND_TOPIC = "/vla_mpc/joint_command"
REPLAY_COMMAND_TOPIC = "/vla_mpc/replay/joint_command"
DEFAULT_TOLERANCE = 0.05  # rad (m for fingers): windowed max |replayed - recorded| per step, see README
DEFAULT_WINDOW_S = 0.6    # s: timing slack of the windowed difference (one System 2 + one System 1 period)

# ------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class QosInfo:
    """The QoS a recorded topic is replayed with (adapted from all offered profiles)."""

    reliable: bool = True
    transient_local: bool = False
    depth: int = 10


@dataclass(frozen=True)
class TopicInfo:
    """One recorded topic: ``msgtype`` like ``sensor_msgs/msg/Image``."""

    name: str
    msgtype: str
    qos: QosInfo


@dataclass
class ReadStatus:
    """How far reading got. ``complete`` False means damage: ``stopped_at`` says where."""

    complete: bool = True
    stopped_at: str | None = None
    messages: int = 0
    last_time_ns: int | None = None
    mode: str = "indexed"  # "indexed" (rosbags reader) | "sequential scan" (damaged bag)


def _adapt_qos(profiles: Sequence[Any]) -> QosInfo:
    """rosbags ``Qos`` records (one per recorded publisher) -> the profile to replay with."""
    if not profiles:
        return QosInfo()
    def val(x: Any) -> int:
        return int(getattr(x, "value", x))

    reliable = all(val(p.reliability) == 1 for p in profiles)   # 1 = RELIABLE (rmw enum)
    latched = all(val(p.durability) == 1 for p in profiles)     # 1 = TRANSIENT_LOCAL
    depth = max([int(p.depth) for p in profiles] + [1])
    return QosInfo(reliable, latched, max(1, min(depth, 1000)))


_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


class _Damage(Exception):
    def __init__(self, offset: int, reason: str):
        super().__init__(reason)
        self.offset, self.reason = offset, reason


def _string(buf: bytes | memoryview, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    if pos + 4 + n > len(buf):
        raise ValueError("string runs past the record")
    return bytes(buf[pos + 4:pos + 4 + n]).decode(), pos + 4 + n


def _records(buf: bytes | memoryview, start: int, base: int) -> Iterator[tuple[int, int, memoryview, bool]]:
    """MCAP records of ``buf`` from ``start``: (file offset, opcode, content, cut). A record cut off
    by the end of ``buf`` is yielded once with ``cut`` True (an uncompressed chunk's complete inner
    records are still readable) and ends the iteration; a cut-off header raises _Damage."""
    pos, end = start, len(buf)
    view = memoryview(buf)
    while pos < end:
        if pos + 9 > end:
            raise _Damage(base + pos, f"record header cut off ({end - pos} bytes left)")
        op = buf[pos]
        (length,) = struct.unpack_from("<Q", buf, pos + 1)
        if pos + 9 + length > end:
            yield base + pos, op, view[pos + 9:end], True
            raise _Damage(base + pos, f"record 0x{op:02x} of {length} bytes cut off after {end - pos - 9} bytes")
        yield base + pos, op, view[pos + 9:pos + 9 + length], False
        pos += 9 + length
        if op == _OP_FOOTER:
            return


def _scan_mcap(path: Path) -> Iterator[tuple[str, Any, int, memoryview]]:
    """Sequentially parse one MCAP file; yields ("schema"|"channel"|"message", ...). Raises _Damage
    at the first record that is cut off or does not parse."""
    from rosbags.rosbag2.storage_mcap import decompress, get_qos

    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        if size < len(_MAGIC):
            raise _Damage(0, "file shorter than the MCAP magic")
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        if data[:8] != _MAGIC:
            raise _Damage(0, "not an MCAP file (bad magic)")

        def parse(records: Iterator[tuple[int, int, memoryview, bool]]):
            for off, op, c, cut in records:
                if cut and op != _OP_CHUNK:
                    continue  # _records raises the damage next
                try:
                    if op == _OP_SCHEMA:
                        (sid,) = struct.unpack_from("<H", c, 0)
                        name, _ = _string(c, 2)
                        yield "schema", (sid, name), off, c
                    elif op == _OP_CHANNEL:
                        cid, sid = struct.unpack_from("<HH", c, 0)
                        topic, p = _string(c, 4)
                        _enc, p = _string(c, p)
                        (mlen,) = struct.unpack_from("<I", c, p)
                        qos = get_qos(bytes(c[p + 4:p + 4 + mlen]))
                        yield "channel", (cid, sid, topic, qos), off, c
                    elif op == _OP_MESSAGE:
                        cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", c, 0)
                        yield "message", (cid, log_time), off, c[22:]
                    elif op == _OP_CHUNK:
                        _t0, _t1, usize, crc = struct.unpack_from("<QQQI", c, 0)
                        comp, p = _string(c, 28)
                        (rlen,) = struct.unpack_from("<Q", c, p)
                        if cut and comp == "":  # readable up to the cut: parse the complete inner records
                            inner = c[p + 8:p + 8 + rlen]
                        elif cut:
                            continue  # a compressed chunk cut off: nothing in it is readable
                        elif p + 8 + rlen > len(c):
                            raise ValueError("chunk records run past the chunk")
                        else:
                            inner = decompress(bytes(c[p + 8:p + 8 + rlen]), comp, usize, crc)
                        try:
                            yield from parse(_records(inner, 0, off + 9 + p + 8))
                        except _Damage as exc:
                            raise _Damage(exc.offset, f"in the chunk at byte {off}: {exc.reason}") from None
                    elif op in (_OP_DATA_END, _OP_FOOTER):
                        return
                except _Damage:
                    raise
                except Exception as exc:  # noqa: BLE001 - any parse failure is damage at this record
                    raise _Damage(off, f"record 0x{op:02x} does not parse: {type(exc).__name__}: {exc}") from None

        yield from parse(_records(data, 8, 0))
    finally:
        try:
            data.close()
        except BufferError:  # a consumer still holds a view; the mapping goes with the last reference
            pass


class Bag:
    """A rosbag2 directory (or one ``.mcap`` file) opened for replay.

    ``topics`` {name: TopicInfo}; ``messages(topics)`` yields ``(topic, log_time_ns, raw_cdr_bytes)``
    in time order; ``status`` says whether everything was read (``complete``) or where the damage
    stopped it. Nothing raises for bag damage; a path that is not a bag raises ``FileNotFoundError``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} does not exist")
        self.status = ReadStatus()
        self.topics: dict[str, TopicInfo] = {}
        self._indexed = False
        try:
            from rosbags.rosbag2 import Reader

            if self.path.is_file():
                raise FileNotFoundError("single file: scan it")
            with Reader(self.path) as reader:
                for c in reader.connections:
                    self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, _adapt_qos(c.ext.offered_qos_profiles))
            self._indexed = True
        except Exception as exc:  # noqa: BLE001 - damaged or unindexed: fall back to a sequential scan
            self._open_error = f"{type(exc).__name__}: {exc}"
            self.status.mode = "sequential scan"
            self.topics = {}
            for kind, info, _off, _c in self._scan(collect_only=True):
                pass

    def _files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        files = sorted(self.path.glob("*.mcap"))
        if not files:
            raise FileNotFoundError(f"no .mcap file in {self.path}")
        return files

    def _scan(self, collect_only: bool = False, wanted: set[str] | None = None):
        """Sequential read of every .mcap file; fills ``topics``; yields messages. Records damage."""
        schemas: dict[int, str] = {}
        channels: dict[int, str] = {}
        self.status = ReadStatus(mode="sequential scan")
        for f in self._files():
            try:
                for kind, info, off, c in _scan_mcap(f):
                    if kind == "schema":
                        schemas[info[0]] = info[1]
                    elif kind == "channel":
                        cid, sid, topic, qos = info
                        channels[cid] = topic
                        if topic not in self.topics:
                            self.topics[topic] = TopicInfo(topic, schemas.get(sid, ""), _adapt_qos(qos))
                    elif kind == "message":
                        cid, t_ns = info
                        topic = channels.get(cid)
                        if topic is None:
                            continue
                        self.status.messages += 1
                        self.status.last_time_ns = t_ns
                        if not collect_only and (wanted is None or topic in wanted):
                            yield "message", (topic, t_ns), off, bytes(c)
            except _Damage as exc:
                self.status.complete = False
                last = "none" if self.status.last_time_ns is None else f"{self.status.last_time_ns * 1e-9:.3f} s"
                self.status.stopped_at = (
                    f"{f.name}: byte {exc.offset}: {exc.reason} (after {self.status.messages} readable "
                    f"messages; last message at {last})"
                )
                return
            except OSError as exc:
                self.status.complete = False
                self.status.stopped_at = f"{f.name}: {exc}"
                return

    def messages(self, topics: set[str] | Sequence[str] | None = None) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time [ns], serialized CDR bytes), in log-time order (file order when scanning)."""
        wanted = None if topics is None else set(topics)
        if not self._indexed:
            for _kind, (topic, t_ns), _off, raw in self._scan(wanted=wanted):
                yield topic, t_ns, raw
            return
        from rosbags.rosbag2 import Reader

        self.status = ReadStatus()
        try:
            with Reader(self.path) as reader:
                conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
                expected = sum(int(c.msgcount) for c in conns)
                for conn, t_ns, raw in reader.messages(connections=conns):
                    self.status.messages += 1
                    self.status.last_time_ns = t_ns
                    yield conn.topic, t_ns, raw
            if self.status.messages < expected:  # the index promised more: damage the reader skipped
                last = "none" if self.status.last_time_ns is None else f"{self.status.last_time_ns * 1e-9:.3f} s"
                self.status.complete = False
                self.status.stopped_at = (
                    f"read {self.status.messages} of the {expected} indexed messages; last message at {last}"
                )
        except Exception as exc:  # noqa: BLE001 - damage inside an indexed bag
            self.status.complete = False
            last = "none" if self.status.last_time_ns is None else f"{self.status.last_time_ns * 1e-9:.3f} s"
            self.status.stopped_at = (
                f"{type(exc).__name__}: {exc} (after {self.status.messages} messages; last message at {last})"
            )


def metadata_topics(bag_dir: Path | str) -> list[str]:
    """Topic names listed in a rosbag2 directory's metadata.yaml (no bag reading; [] when the file
    is missing, e.g. a recording that was killed). Used by ``launch/replay.launch.py``."""
    import yaml

    meta = Path(bag_dir) / "metadata.yaml"
    if not meta.is_file():
        return []
    info = (yaml.safe_load(meta.read_text()) or {}).get("rosbag2_bagfile_information", {})
    return [t["topic_metadata"]["name"] for t in info.get("topics_with_message_count", [])]


def select_topics(bag: Bag, patterns: Sequence[str] | None) -> list[str]:
    """Bag topics matching any of ``patterns`` (exact names or regexes); all topics for None/[]."""
    if not patterns:
        return sorted(bag.topics)
    regs = [re.compile(p if p.startswith("^") else "^" + re.escape(p) + "$") for p in patterns]
    return sorted(t for t in bag.topics if any(r.search(t) for r in regs))


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> {"/a": "/b"}. Raises ValueError for an item without ``:=``."""
    out = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"--remap expects from:=to, got {item!r}")
        out[src] = dst
    return out


# ------------------------------------------------------------------------------------ playing


def _msg_class(type_name: str):
    import importlib

    pkg, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


@dataclass
class PlayResult:
    """What a play run did: messages published per (output) topic, bag status, wall time [s]."""

    published: dict[str, int] = field(default_factory=dict)
    status: ReadStatus = field(default_factory=ReadStatus)
    wall_s: float = 0.0
    first_time_ns: int | None = None
    last_time_ns: int | None = None

    @property
    def total(self) -> int:
        return sum(self.published.values())


class Player:
    """Publishes a bag's messages from ``node`` (an rclpy Node) with the recorded timing and QoS.

    Args:
        node: the node that owns the publishers (any executor; publishing needs no spinning).
        bag: the opened bag.
        topics: topic names to play (default all).
        remap: {recorded topic: published topic}.
        rate: playback rate (1.0 = recorded pace, 0 = as fast as possible).
        clock_hz: rate of the synthetic /clock when the bag has no /clock of its own [Hz] (0: none).
    Raises:
        ValueError: non-positive ``rate`` other than 0, or an unknown topic.
    """

    def __init__(self, node, bag: Bag, topics: Sequence[str] | None = None, remap: dict[str, str] | None = None,
                 rate: float = 1.0, clock_hz: float = 100.0) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if rate < 0.0 or not np.isfinite(rate):
            raise ValueError(f"rate must be >= 0 (0 = as fast as possible), got {rate!r}")
        self.node, self.bag, self.rate = node, bag, float(rate)
        self.topics = list(bag.topics) if topics is None else list(topics)
        unknown = [t for t in self.topics if t not in bag.topics]
        if unknown:
            raise ValueError(f"topics {unknown} are not in the bag (it has {sorted(bag.topics)})")
        self.remap = dict(remap or {})
        self.publishers: dict[str, Any] = {}
        for t in self.topics:
            info = bag.topics[t]
            try:
                cls = _msg_class(info.msgtype)
            except (ValueError, ImportError, AttributeError):
                node.get_logger().warning(f"not replaying {t}: type {info.msgtype!r} is not importable here")
                continue
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=info.qos.depth,
                reliability=ReliabilityPolicy.RELIABLE if info.qos.reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if info.qos.transient_local else DurabilityPolicy.VOLATILE,
            )
            self.publishers[t] = node.create_publisher(cls, self.remap.get(t, t), qos)
        self.clock_pub = None
        if clock_hz > 0 and "/clock" not in self.publishers:
            from rosgraph_msgs.msg import Clock

            from vla_mpc.ros.qos import CLOCK_QOS

            self.clock_pub = node.create_publisher(Clock, self.remap.get("/clock", "/clock"), CLOCK_QOS)
            self._clock_period = 1.0 / clock_hz

    def _publish_clock(self, t_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        self.clock_pub.publish(msg)

    def play(self, stop: threading.Event | None = None, loop: bool = False) -> PlayResult:
        """Play once (or until ``stop`` with ``loop``). Returns what was published."""
        result = PlayResult(published={self.remap.get(t, t): 0 for t in self.publishers})
        wall0 = time.monotonic()
        while True:
            self._play_once(result, stop)
            result.status = self.bag.status
            if not loop or (stop is not None and stop.is_set()) or result.total == 0:
                break
        result.wall_s = time.monotonic() - wall0
        return result

    def _play_once(self, result: PlayResult, stop: threading.Event | None) -> None:
        start_wall: float | None = None
        t0: int | None = None
        next_clock = 0.0
        for topic, t_ns, raw in self.bag.messages(self.publishers):
            if stop is not None and stop.is_set():
                return
            if t0 is None:
                t0, start_wall = t_ns, time.monotonic()
                if result.first_time_ns is None:
                    result.first_time_ns = t_ns
                if self.clock_pub is not None:
                    self._publish_clock(t_ns)
                    next_clock = start_wall + self._clock_period
            if self.rate > 0.0:
                due = start_wall + (t_ns - t0) * 1e-9 / self.rate
                while True:
                    now = time.monotonic()
                    if self.clock_pub is not None and now >= next_clock:
                        self._publish_clock(t0 + int((now - start_wall) * self.rate * 1e9))
                        next_clock += self._clock_period
                        if next_clock < now:
                            next_clock = now + self._clock_period
                    if now >= due:
                        break
                    wake = min(due, next_clock) if self.clock_pub is not None else due
                    time.sleep(max(0.0, wake - now))
            elif self.clock_pub is not None:
                self._publish_clock(t_ns)
            self.publishers[topic].publish(raw)  # serialized bytes: rclpy publishes them as they are
            out = self.remap.get(topic, topic)
            result.published[out] = result.published.get(out, 0) + 1
            result.last_time_ns = t_ns

    def wait_for_acks(self, timeout_s: float = 5.0) -> bool:
        """Wait until reliable subscribers acknowledged everything (else a burst's tail is lost)."""
        from rclpy.duration import Duration

        ok = True
        for pub in self.publishers.values():
            ok = pub.wait_for_all_acked(Duration(seconds=timeout_s)) and ok
        return ok


# ------------------------------------------------------------------------------------ compare


def command_differences(
    recorded_t: np.ndarray, recorded_q: np.ndarray, replayed_t: np.ndarray, replayed_q: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE, window_s: float = DEFAULT_WINDOW_S, max_lag_s: float = 0.6,
    lag_step_s: float = 0.005,
) -> dict[str, Any]:
    """Compare two command streams over the same joints.

    Args:
        recorded_t: (N,) recorded command stamps [s]; recorded_q: (N, D) [rad or m].
        replayed_t: (M,) replayed command stamps [s] (same clock); replayed_q: (M, D).
        tolerance: a step diverges when its windowed max |difference| exceeds this [rad or m].
        window_s: timing slack [s]: the windowed difference of a recorded step is the smallest
            max-over-joints |difference| to the replayed commands within +-window_s of its stamp
            (the policy's loops free-run on the wall clock, so a replay reproduces the commands
            but not the phase of its 2 Hz System 2 / 10 Hz System 1 ticks; default 0.6 s, one
            System 2 period + one System 1 period).
        max_lag_s, lag_step_s: search range/step of the constant lag of the replay [s].
    Returns:
        JSON-ready dict: ``steps`` (per compared recorded step: ``t`` [s since the first recorded
        command], ``max_abs``, ``mean_abs`` at the same stamp, ``windowed_max_abs``),
        ``compared`` / ``skipped`` step counts (recorded steps outside the replayed span are
        skipped), ``max_abs_diff``, ``mean_abs_diff``, ``p95_max_abs_diff``,
        ``per_joint_max_abs_diff`` (D,) at the same stamp, ``windowed_max_abs_diff``,
        ``windowed_mean_abs_diff``, ``first_divergence_t`` (s since the first recorded command, or
        None: the first step whose windowed difference exceeds ``tolerance``, moved back over the
        contiguous steps before it whose same-stamp difference exceeds it),
        ``within_tolerance``, ``lag_s`` (the constant shift of the replay that minimises the mean
        difference) and ``mean_abs_diff_at_lag``.
    Raises:
        ValueError: mismatched shapes or fewer than 2 replayed commands.
    """
    rt, rq = np.asarray(recorded_t, float), np.asarray(recorded_q, float)
    pt, pq = np.asarray(replayed_t, float), np.asarray(replayed_q, float)
    if rq.ndim != 2 or pq.ndim != 2 or rq.shape[1] != pq.shape[1] or rt.shape != rq.shape[:1] or pt.shape != pq.shape[:1]:
        raise ValueError(f"shapes do not fit: recorded {rt.shape} {rq.shape}, replayed {pt.shape} {pq.shape}")
    if pt.size < 2:
        raise ValueError(f"need >= 2 replayed commands to interpolate, got {pt.size}")
    order = np.argsort(pt, kind="stable")
    pt, pq = pt[order], pq[order]
    t_origin = float(rt.min()) if rt.size else 0.0

    def interp(t: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(t, pt, pq[:, j]) for j in range(pq.shape[1])], axis=1)

    inside = (rt >= pt[0]) & (rt <= pt[-1])
    t_in, q_in = rt[inside], rq[inside]
    out: dict[str, Any] = {"compared": int(inside.sum()), "skipped": int((~inside).sum()), "tolerance": tolerance}
    if t_in.size == 0:
        out.update(steps=[], max_abs_diff=None, mean_abs_diff=None, first_divergence_t=None, within_tolerance=False)
        return out
    diff = np.abs(interp(t_in) - q_in)  # [N_in, D]
    step_max, step_mean = diff.max(axis=1), diff.mean(axis=1)
    grid = np.arange(pt[0], pt[-1] + 1e-9, 0.001)  # replayed commands densified to 1 ms
    dense = interp(grid)  # [G, D]
    lo = np.searchsorted(grid, t_in - window_s, side="left")
    hi = np.searchsorted(grid, t_in + window_s, side="right")
    windowed = np.array([np.abs(dense[a:b] - q).max(axis=1).min() for a, b, q in zip(lo, hi, q_in)])
    bad = np.flatnonzero(windowed > tolerance)
    first = None
    if bad.size:
        # the window hides a divergence for up to window_s: walk back over the contiguous steps
        # whose same-stamp difference already exceeded the tolerance to where it began
        first = int(bad[0])
        while first > 0 and step_max[first - 1] > tolerance:
            first -= 1
    lags = np.arange(-max_lag_s, max_lag_s + 1e-12, lag_step_s)
    lag_cost = []
    for lag in lags:
        ok = (t_in + lag >= pt[0]) & (t_in + lag <= pt[-1])
        lag_cost.append(np.abs(interp(t_in[ok] + lag) - q_in[ok]).mean() if ok.sum() > 0.5 * t_in.size else np.inf)
    best = int(np.argmin(lag_cost))
    out.update(
        steps=[{"t": round(float(t - t_origin), 4), "max_abs": float(m), "mean_abs": float(a), "windowed_max_abs": float(w)}
               for t, m, a, w in zip(t_in, step_max, step_mean, windowed)],
        window_s=window_s,
        windowed_max_abs_diff=float(windowed.max()),
        windowed_mean_abs_diff=float(windowed.mean()),
        max_abs_diff=float(step_max.max()),
        mean_abs_diff=float(diff.mean()),
        p95_max_abs_diff=float(np.percentile(step_max, 95)),
        per_joint_max_abs_diff=[float(v) for v in diff.max(axis=0)],
        first_divergence_t=None if first is None else round(float(t_in[first] - t_origin), 4),
        within_tolerance=bool(bad.size == 0),
        lag_s=round(float(lags[best]), 4),
        mean_abs_diff_at_lag=float(lag_cost[best]),
    )
    return out


def _commands_from_bag(bag: Bag, names: Sequence[str] | None = None):
    """Recorded /vla_mpc/joint_command -> (names, stamps (N,) [s], positions (N, D))."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    from vla_mpc.ros import conversions as cv

    ts, qs = [], []
    for _topic, _t, raw in bag.messages([COMMAND_TOPIC]):
        js = cv.joint_state_to_arrays(deserialize_message(raw, JointState))
        if names is None:
            names = js.names
        try:
            qs.append(cv.select_joints(js.names, js.position, names))
        except ValueError:
            continue
        ts.append(js.stamp)
    return tuple(names or ()), np.asarray(ts), np.asarray(qs).reshape(len(qs), len(names or ()))


def detect_robot(bag: Bag, joint_names: Sequence[str]) -> str:
    """Robot of a bag: the ``robot`` of a recorded /vla_mpc/episode start, else the robot config whose
    joint_names equal the recorded command's names. Raises ValueError when neither works."""
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.graph import ROBOTS

    if "/vla_mpc/episode" in bag.topics:
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import String

        for _t, _s, raw in bag.messages(["/vla_mpc/episode"]):
            try:
                robot = json.loads(deserialize_message(raw, String).data).get("robot")
            except (ValueError, AttributeError):
                continue
            if robot:
                return str(robot)
    for robot in ROBOTS:
        if tuple(load_robot_spec(robot).joint_names) == tuple(joint_names):
            return robot
    raise ValueError(f"cannot tell the robot from joints {list(joint_names)}; pass --robot")


def compare(
    bag_path: Path | str, robot: str | None = None, checkpoint: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None, tolerance: float = DEFAULT_TOLERANCE,
    planner: bool | None = None, log_dir: Path | None = None, ready_timeout_s: float = 60.0,
    window_s: float = DEFAULT_WINDOW_S,
) -> dict[str, Any]:
    """Replay a bag's inputs into fresh nodes and compare their commands with the recorded ones.

    Args:
        bag_path: rosbag2 directory holding the inputs and ``/vla_mpc/joint_command``.
        robot: robot name; detected from the bag when None.
        checkpoint: policy checkpoint directory: the policy node gets ``checkpoint`` (absolute) and
            ``backend: learned`` (unless ``overrides`` set another backend).
        overrides: extra node parameters {"policy": {"control_rate_hz": 200}, ...}.
        planner: run the planner too (default: when the bag has planner topics).
        log_dir: node logs go there (default: a temporary folder named in the report).
    Returns:
        :func:`command_differences`' dict plus ``bag``, ``robot``, ``joint_names``, ``nodes``,
        ``replayed_commands``, ``recorded_commands``, ``bag_status``, ``logs`` and
        ``policy_stale_input_holds`` (times the fresh policy held because an input was older than
        its ``max_*_age_s``: replay jitter can add such holds; compare with the recording's log).
    Raises:
        FileNotFoundError: no bag; ValueError: no recorded commands or no inputs in the bag;
        RuntimeError: the fresh nodes did not come up or produced no commands.
    """
    import os
    import signal
    import subprocess
    import tempfile

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from vla_mpc.bringup import node_command
    from vla_mpc.graph import GRAPH_NODES
    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.runtime import isolate_ros_network

    bag = Bag(bag_path)
    if COMMAND_TOPIC not in bag.topics:
        raise ValueError(f"{bag.path} has no recorded {COMMAND_TOPIC} to compare against")
    names, rec_t, rec_q = _commands_from_bag(bag)
    read_status = bag.status
    if rec_t.size == 0:
        raise ValueError(f"{bag.path}: {COMMAND_TOPIC} holds no readable commands")
    robot = robot or detect_robot(bag, names)
    inputs = select_topics(bag, INPUT_TOPICS)
    if "/joint_states" not in inputs:
        raise ValueError(f"{bag.path} has no /joint_states to replay")
    by_name = {n.name: n for n in GRAPH_NODES}
    run = ["policy"]
    has_obs = any(t.startswith("/vla_mpc/observation/") for t in inputs)
    if not has_obs:
        raw_cams = select_topics(bag, RAW_CAMERA_TOPICS)
        if raw_cams:
            inputs += raw_cams
            run.insert(0, "camera_ingest")
    if planner if planner is not None else any(t.startswith("/vla_mpc/planner/") or t == "/vla_mpc/plan" for t in bag.topics):
        run.append("latent_mpc_planner")
    overrides = dict(overrides or {})
    if checkpoint:  # a checkpoint means the learned backend unless --set policy.backend=... says otherwise
        overrides.setdefault("policy", {})["checkpoint"] = str(Path(checkpoint).resolve())
        overrides["policy"].setdefault("backend", "learned")
    log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="vla_mpc_replay_"))
    log_dir.mkdir(parents=True, exist_ok=True)

    isolate_ros_network()
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    for name in run:
        node = by_name[name]
        params: dict[str, Any] = {"robot_config": robot, "use_sim_time": True}
        if name == "policy":
            params["autostart"] = True
        params.update(overrides.get(name, {}))
        cmd = node_command(node, params) + ["-r", f"{COMMAND_TOPIC}:={REPLAY_COMMAND_TOPIC}"]
        fh = open(log_dir / f"{name}.log", "wb")
        logs.append(fh)
        procs[name] = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ))

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    node = rclpy.create_node("vla_mpc_replay_compare", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    got_t: list[float] = []
    got_q: list[np.ndarray] = []
    index: dict[tuple[str, ...], np.ndarray | None] = {}

    def on_command(msg: JointState) -> None:
        key = tuple(msg.name)
        if key not in index:
            index[key] = np.array([key.index(n) for n in names]) if all(n in key for n in names) else None
        idx = index[key]
        if idx is not None:
            got_t.append(cv.stamp_to_sec(msg.header.stamp))
            got_q.append(np.asarray(msg.position, float)[idx])

    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    node.create_subscription(JointState, REPLAY_COMMAND_TOPIC, on_command,
                             QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE))
    halt = threading.Event()
    def spin() -> None:
        while not halt.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        player = Player(node, bag, inputs, rate=1.0)
        js_pub = player.publishers["/joint_states"]
        end = time.monotonic() + ready_timeout_s
        obs_pubs = [p for t, p in player.publishers.items() if t.startswith("/vla_mpc/observation/")]
        while time.monotonic() < end:
            dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if dead:
                raise RuntimeError(f"replay nodes exited early {dead}; logs in {log_dir}")
            if js_pub.get_subscription_count() > 0 and all(p.get_subscription_count() > 0 for p in obs_pubs):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"the fresh policy did not subscribe within {ready_timeout_s} s; logs in {log_dir}")
        time.sleep(1.0)  # let the DDS reader side match too (asymmetric discovery)
        result = player.play()
        player.wait_for_acks(2.0)
        time.sleep(0.5)
    finally:
        halt.set()
        spinner.join(timeout=2.0)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for fh in logs:
            fh.close()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=context)
    t0 = (result.first_time_ns or 0) * 1e-9
    rep_t = np.asarray(got_t)
    rep_q = np.asarray(got_q).reshape(len(got_q), len(names))
    keep = rep_t > 0.0  # before the first /clock the node's sim time is 0
    rep_t, rep_q = rep_t[keep], rep_q[keep]
    if rep_t.size < 2:
        raise RuntimeError(f"the fresh nodes published {rep_t.size} commands; logs in {log_dir}")
    report = command_differences(rec_t, rec_q, rep_t, rep_q, tolerance, window_s)
    # input-freshness holds of the fresh policy (wall-clock max_*_age_s): replay jitter on a loaded
    # machine can add holds the recording did not have, which shows up as a (timing) divergence
    log = (log_dir / "policy.log").read_text(errors="replace") if (log_dir / "policy.log").is_file() else ""
    report["policy_stale_input_holds"] = sum(1 for line in log.splitlines() if "holding:" in line and "older than" in line)
    report.update(
        bag=str(bag.path), robot=robot, joint_names=list(names), nodes=run, inputs=inputs,
        recorded_commands=int(rec_t.size), replayed_commands=int(rep_t.size),
        replay_start_time=t0,
        bag_status={"complete": read_status.complete and result.status.complete,
                    "stopped_at": read_status.stopped_at or result.status.stopped_at,
                    "mode": result.status.mode},
        logs=str(log_dir),
    )
    return report


# ------------------------------------------------------------------------------------ CLI


def _play_main(a: argparse.Namespace) -> int:
    import rclpy

    from vla_mpc.ros.runtime import isolate_ros_network

    bag = Bag(a.bag)
    topics = select_topics(bag, a.topics)
    if a.topics and not topics:
        print(f"no topic of {bag.path} matches {a.topics}; it has {sorted(bag.topics)}", file=sys.stderr)
        return 2
    isolate_ros_network()
    rclpy.init(args=[])  # our own argv is not for rcl (it would read "a:=b" as a node remap)
    node = rclpy.create_node("vla_mpc_replay")
    stop = threading.Event()
    try:
        player = Player(node, bag, topics, parse_remaps(a.remap), a.rate, a.clock_hz)
        time.sleep(a.delay)  # give subscribers time to discover the publishers
        result = player.play(stop, loop=a.loop)
        player.wait_for_acks(5.0)
    except KeyboardInterrupt:
        stop.set()
        result = None
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    if result is not None:
        summary = {"bag": str(bag.path), "published": result.published, "messages": result.total,
                   "wall_s": round(result.wall_s, 3), "complete": result.status.complete,
                   "stopped_at": result.status.stopped_at}
        print(json.dumps(summary))
        if not result.status.complete:
            print(f"[replay] bag damaged: replayed what was readable; stopped at {result.status.stopped_at}",
                  file=sys.stderr)
    return 0


def _compare_main(a: argparse.Namespace) -> int:
    from vla_mpc.bringup import parse_overrides

    report = compare(a.bag, a.robot, a.checkpoint, parse_overrides(a.set), a.tolerance,
                     planner=False if a.no_planner else None, log_dir=a.log_dir, window_s=a.window)
    text = json.dumps(report, default=float)
    if a.out:
        Path(a.out).write_text(text)
        brief = {k: v for k, v in report.items() if k != "steps"}
        print(json.dumps(brief, default=float))
    else:
        print(text)
    return 0 if report.get("within_tolerance") else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.replay [compare] BAG ...``; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        ap = argparse.ArgumentParser(prog="python -m vla_mpc.replay compare",
                                     description="replay a bag's inputs into a fresh policy and compare its commands")
        ap.add_argument("bag", type=Path)
        ap.add_argument("--checkpoint", default=None, help="policy checkpoint directory (learned backends)")
        ap.add_argument("--robot", default=None, help="panda | ur5e | gr1 (default: from the bag)")
        ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE")
        ap.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="[rad or m] per step max")
        ap.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, help="timing slack of the windowed difference [s]")
        ap.add_argument("--no-planner", action="store_true", help="do not start the planner")
        ap.add_argument("--out", default=None, help="write the full JSON report here (stdout gets the summary)")
        ap.add_argument("--log-dir", type=Path, default=None, help="node logs (default: a temp folder)")
        return _compare_main(ap.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0, help="playback rate (0 = as fast as possible)")
    ap.add_argument("--topics", nargs="+", default=None, help="topics (names or ^regexes) to play")
    ap.add_argument("--remap", nargs="+", default=[], help="from:=to")
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--clock-hz", type=float, default=100.0, help="synthetic /clock rate when the bag has none")
    ap.add_argument("--delay", type=float, default=1.0, help="wait before playing, for discovery [s]")
    return _play_main(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
