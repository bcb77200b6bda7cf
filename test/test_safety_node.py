"""safety_monitor in its own process, through real pub/sub: pass-through, limiting with an
intervention naming the joint, hold on command timeout, latched e-stop cleared by ~/reset."""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STREAM_QOS

PANDA = load_robot_spec("panda")
NAMES = list(PANDA.joint_names)
Q0 = np.asarray(PANDA.home, dtype=np.float64).copy()
Q0[-1] = 0.02  # finger mid-range


class Harness:
    """Test side: publishes /joint_states at 100 Hz and records what the monitor sends."""

    def __init__(self, ros_node):
        self.ros = ros_node
        n = ros_node.node
        self.outputs: list[np.ndarray] = []
        self.states: list[str] = []
        self.interventions: list[dict[str, str]] = []
        self.cmd_pub = n.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
        self.js_pub = n.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.estop_pub = n.create_publisher(Bool, "/vla_mpc/safety/estop", LATCHED_QOS)
        n.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                              lambda m: self.outputs.append(cv.float64_array_to_numpy(m)), COMMAND_QOS)
        n.create_subscription(String, "/vla_mpc/safety/state", lambda m: self.states.append(m.data), LATCHED_QOS)
        n.create_subscription(DiagnosticStatus, "/vla_mpc/safety/interventions",
                              lambda m: self.interventions.append({kv.key: kv.value for kv in m.values}), STREAM_QOS)
        self.reset_cli = n.create_client(Trigger, "/safety_monitor/reset")
        self.estop_cli = n.create_client(Trigger, "/safety_monitor/estop")
        n.create_timer(0.01, lambda: self.js_pub.publish(cv.joint_state_msg(NAMES, Q0)))

    def command(self, q: np.ndarray, names: list[str] = NAMES) -> None:
        self.cmd_pub.publish(cv.joint_state_msg(names, q))

    def until(self, pred, timeout: float = 5.0) -> bool:
        return self.ros.spin_until(pred, timeout)

    def call(self, client) -> Trigger.Response:
        assert client.wait_for_service(timeout_sec=5.0)
        fut = client.call_async(Trigger.Request())
        assert self.until(fut.done, 5.0)
        return fut.result()


def start(start_node, ros_node, **params) -> Harness:
    start_node("vla_mpc.ros.safety_monitor", {"rate_hz": 200.0, "command_timeout_s": 0.3, **params})
    h = Harness(ros_node)
    assert h.until(lambda: h.states and h.states[-1] == "HOLDING", 20.0), "monitor did not come up"
    assert h.until(lambda: len(h.outputs) > 5, 10.0), "no hold output after joint states"
    np.testing.assert_allclose(h.outputs[-1], Q0)  # holds the measured position
    return h


def test_pass_limit_and_timeout(start_node, ros_node, tmp_path):
    log = tmp_path / "interventions.jsonl"
    h = start(start_node, ros_node, intervention_log=str(log))
    # A reachable command passes through unchanged (reordered names are mapped).
    target = Q0.copy()
    target[0] += 1e-5
    h.outputs.clear()
    h.command(target[::-1], NAMES[::-1])
    assert h.until(lambda: any(np.array_equal(o, target) for o in h.outputs))
    assert h.until(lambda: h.states[-1] == "ACTIVE")
    # Over the velocity limit on joint 4: limited, and an intervention names the joint.
    fast = target.copy()
    fast[3] += 0.04
    h.outputs.clear()
    h.command(fast)
    assert h.until(lambda: any(i.get("joint") == "panda_joint4" for i in h.interventions))
    hit = next(i for i in h.interventions if i.get("joint") == "panda_joint4")
    assert hit["action"] == "CLAMPED" and hit["reason"].startswith("velocity")
    assert h.until(lambda: bool(h.outputs))
    assert 0.0 < h.outputs[0][3] - target[3] <= PANDA.limits.acceleration[3] * 0.005**2 + 1e-9
    assert h.until(lambda: h.states[-1] == "LIMITING")
    # The source stops: HOLDING within the timeout (0.3 s) plus transport slack.
    assert h.until(lambda: h.states[-1] == "HOLDING", 1.5)
    assert any(i.get("reason", "").startswith("command timeout") for i in h.interventions) or h.until(
        lambda: any(i.get("reason", "").startswith("command timeout") for i in h.interventions), 1.0)
    n = len(h.outputs)
    assert h.until(lambda: len(h.outputs) > n + 10, 2.0)  # hold targets keep coming
    assert abs(h.outputs[-1][3] - h.outputs[-2][3]) < 1e-12  # ... and have stopped
    assert h.until(lambda: log.exists() and "panda_joint4" in log.read_text(), 3.0)


def test_estop_latches_until_reset(start_node, ros_node):
    h = start(start_node, ros_node)
    h.estop_pub.publish(Bool(data=True))
    assert h.until(lambda: h.states[-1] == "ESTOP")
    moved = Q0.copy()
    moved[0] += 1e-5
    for _ in range(5):
        h.command(moved)
        h.ros.spin_for(0.05)
    assert h.states[-1] == "ESTOP"
    np.testing.assert_allclose(h.outputs[-1], Q0)  # commands do not move it
    h.estop_pub.publish(Bool(data=False))  # releasing the button does not clear the latch
    h.ros.spin_for(0.2)
    assert h.states[-1] == "ESTOP"
    assert h.call(h.reset_cli).success
    assert h.until(lambda: h.states[-1] == "HOLDING")
    h.outputs.clear()
    h.command(moved)
    assert h.until(lambda: any(np.array_equal(o, moved) for o in h.outputs))
    assert h.until(lambda: h.states[-1] == "ACTIVE")
    assert h.call(h.estop_cli).success
    assert h.until(lambda: h.states[-1] == "ESTOP")


def test_warnings_with_different_throttles_do_not_crash_the_monitor():
    """A rejected command's warning (throttled 1 s) and then a malformed joint state's (5 s) must
    both log. rclpy's deprecated ``Logger.warn`` funnels every call site through one frame, and its
    throttle filters are cached per frame: the second call raised ValueError out of the
    subscription callback and ended the node (seen at a demo's shutdown)."""
    import rclpy
    from rclpy.context import Context

    from vla_mpc.core.safety import SafetyAction, SafetyState, Verdict
    from vla_mpc.ros.safety_monitor import SafetyMonitor

    ctx = Context()
    rclpy.init(context=ctx, domain_id=92)
    node = SafetyMonitor(context=ctx)
    try:
        node._report(Verdict(SafetyAction.REJECTED, {"*": "duplicate command"}, "rejected: duplicate",
                             SafetyState.HOLDING, ("stamp",), True), 0.0)
        node._on_joint_state(JointState(name=["not_a_joint"], position=[0.0]))  # malformed: warns, ignored
        node._on_joint_state(JointState(name=list(node.names), position=[float("nan")] * len(node.names)))
        assert node._measured is None  # neither reached the filter
    finally:
        node.close()
        node.destroy_node()
        ctx.shutdown()
