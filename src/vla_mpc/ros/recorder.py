"""recorder node: writes graph topics to a rosbag2 directory (MCAP storage) without ros2 bag.

On robot computers ``ros2 bag record -s mcap`` does the same job (the launch files use it there);
the Python wheels have no rosbag2, so this node records with the pure-Python ``rosbags`` library
(metadata.yaml version 9, Kilted type hashes, readable by real ``ros2 bag``).

Topics are discovered every ``discovery_period_s`` (all topics of the standard message packages,
or only those in ``topics``, minus ``exclude`` regexes), subscribed with serialized (raw) callbacks
so nothing is deserialised, and written with the receive time of the node's clock (sim time under
``use_sim_time``). QoS is adapted as rosbag2 does: RELIABLE only if every publisher is reliable,
TRANSIENT_LOCAL only if every publisher is; the publishers' profiles are stored in the metadata.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from vla_mpc.ros.params import declare
from vla_mpc.ros.runtime import run_node


def _msg_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the message class (ValueError if not importable)."""
    try:
        pkg, kind, name = type_name.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError) as exc:
        raise ValueError(f"message type {type_name!r} is not importable here") from exc


def _to_bag_qos(profile):
    """An rclpy QoSProfile (as reported for a publisher) -> rosbags' Qos record."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def t(d) -> QosTime:
        ns = int(getattr(d, "nanoseconds", 0))
        return QosTime(sec=ns // 1_000_000_000, nsec=ns % 1_000_000_000)

    return Qos(
        history=QosHistory(int(profile.history)),
        depth=int(profile.depth),
        reliability=QosReliability(int(profile.reliability)),
        durability=QosDurability(int(profile.durability)),
        deadline=t(profile.deadline),
        lifespan=t(profile.lifespan),
        liveliness=QosLiveliness(int(profile.liveliness)),
        liveliness_lease_duration=t(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


class Recorder(Node):
    """Records discovered topics into ``output_dir`` (must not exist yet; rosbag2 layout)."""

    def __init__(self) -> None:
        super().__init__("recorder")
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        out = declare(self, "output_dir", "", "rosbag2 directory to create (must not exist).", read_only=True)
        if not out:
            raise ValueError("recorder: parameter output_dir is required")
        self.topics = set(declare(self, "topics", [""], "Topics to record; [''] records every discovered topic.", read_only=True)) - {""}
        self.exclude = [re.compile(p) for p in declare(
            self, "exclude", ["^/parameter_events$", "^/rosout$"], "Regexes of topics never recorded.", read_only=True) if p]
        period = declare(self, "discovery_period_s", 0.5, "Topic discovery period [s].", min_value=0.05, max_value=10.0)
        self.path = Path(out)
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}
        self._closed = False
        self.create_timer(period, self._discover)
        self._discover()
        self.get_logger().info(f"recording to {self.path}")

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self.connections or (self.topics and topic not in self.topics):
                continue
            if any(p.search(topic) for p in self.exclude) or len(types) != 1:
                continue
            type_name = types[0]
            try:
                cls = _msg_class(type_name)
                self.typestore.types[type_name]  # noqa: B018 - KeyError if rosbags lacks the type
            except (ValueError, KeyError):
                self.get_logger().warning(f"not recording {topic}: type {type_name} unknown", once=True)
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            profiles = [i.qos_profile for i in infos]
            reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
            latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=100,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
            )
            conn = self.writer.add_connection(
                topic, type_name, typestore=self.typestore,
                offered_qos_profiles=[_to_bag_qos(p) for p in profiles],
            )
            self.connections[topic] = conn
            self.counts[topic] = 0
            self.create_subscription(cls, topic, lambda data, t=topic: self._write(t, data), qos, raw=True)
            self.get_logger().info(f"recording {topic} [{type_name}]")

    def _write(self, topic: str, data: bytes) -> None:
        if self._closed:
            return
        self.writer.write(self.connections[topic], self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finish the bag (writes the MCAP summary and metadata.yaml). Idempotent."""
        if not self._closed:
            self._closed = True
            self.writer.close()
            total = sum(self.counts.values())
            self.get_logger().info(f"bag closed: {total} messages on {len(self.counts)} topics in {self.path}")


def main(args: list[str] | None = None) -> int:
    """Console script ``recorder``."""
    return run_node(Recorder, args)


if __name__ == "__main__":
    raise SystemExit(main())
