"""QoS profiles by intent (see README's topic table).

- ``SENSOR_QOS``: cameras and other high-rate sensor streams (``qos_profile_sensor_data``:
  BEST_EFFORT, VOLATILE, KEEP_LAST 5): a late frame is worthless, never queue it.
- ``STATE_QOS``: ``/joint_states`` publishers, RELIABLE KEEP_LAST 10, as joint_state_broadcaster.
- ``STATE_SUB_QOS``: subscribers to state streams; BEST_EFFORT matches both reliable and
  best-effort publishers (drivers differ), KEEP_LAST 10.
- ``COMMAND_QOS``: commands, RELIABLE KEEP_LAST 1: only the newest command matters.
- ``STREAM_QOS``: derived streams (latent, chunks, plans, markers, costs), RELIABLE KEEP_LAST 5.
- ``LATCHED_QOS``: instruction, goal image, e-stop, safety state: RELIABLE + TRANSIENT_LOCAL
  depth 1, so a late joiner gets the last value (navigation2 ``robot_navigator.py`` habit).
- ``CLOCK_QOS``: ``/clock`` publisher; rclpy's TimeSource subscribes BEST_EFFORT depth 1.
"""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

SENSOR_QOS = qos_profile_sensor_data
STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATE_SUB_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT
)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
STREAM_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
