"""Fault injection through real pub/sub: safety_monitor in its own process, a command source in
another, the test process publishing joint states / e-stop / episodes and recording outputs.

- the command source dies (SIGKILL) -> HOLDING within command_timeout_s (+ transport slack);
- joint states stop -> HOLDING within joint_state_timeout_s;
- the e-stop latches against a live command source until ~/reset;
- a burst of 10,000 commands: no RSS growth of the node, the last command is out promptly;
- the sim's reset (measured state jumps home) re-syncs without an e-stop or a drag back, and
  /vla_mpc/safety/cost counts per step and resets on /vla_mpc/episode "start".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS, STREAM_QOS

PANDA = load_robot_spec("panda")
NAMES = list(PANDA.joint_names)
HOME = np.asarray(PANDA.home, dtype=np.float64).copy()
HOME[-1] = 0.02  # finger mid-range
ARM = np.r_[np.ones(7), 0.0]
SRC = Path(__file__).resolve().parents[1] / "src"
SLACK_S = 1.0  # transport + scheduling slack on a shared 2-core machine [s]

SOURCE = textwrap.dedent("""
    import sys, numpy as np, rclpy
    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import COMMAND_QOS
    from sensor_msgs.msg import JointState
    names = sys.argv[1].split(",")
    target = [float(x) for x in sys.argv[2].split(",")]
    rclpy.init()
    node = rclpy.create_node("fault_command_source")
    pub = node.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
    node.create_timer(0.01, lambda: pub.publish(
        cv.joint_state_msg(names, target, stamp=node.get_clock().now().to_msg())))
    rclpy.spin(node)
""")


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` [KiB] (/proc/<pid>/status VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Rig:
    """Test side: joint states at 100 Hz from ``self.q`` (a timer that can be stopped), recorders."""

    def __init__(self, ros_node):
        self.ros = ros_node
        n = ros_node.node
        self.q = HOME.copy()
        self.outputs: list[tuple[float, np.ndarray]] = []
        self.states: list[tuple[float, str]] = []
        self.costs: list[np.ndarray] = []
        self.interventions: list[dict[str, str]] = []
        self.cmd_pub = n.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
        self.js_pub = n.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.estop_pub = n.create_publisher(Bool, "/vla_mpc/safety/estop", LATCHED_QOS)
        self.episode_pub = n.create_publisher(String, "/vla_mpc/episode", LATCHED_QOS)
        n.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                              lambda m: self.outputs.append((time.monotonic(), cv.float64_array_to_numpy(m))),
                              COMMAND_QOS)
        n.create_subscription(String, "/vla_mpc/safety/state",
                              lambda m: self.states.append((time.monotonic(), m.data)), LATCHED_QOS)
        n.create_subscription(Float64MultiArray, "/vla_mpc/safety/cost",
                              lambda m: self.costs.append(cv.float64_array_to_numpy(m)), STREAM_QOS)
        n.create_subscription(DiagnosticStatus, "/vla_mpc/safety/interventions",
                              lambda m: self.interventions.append({kv.key: kv.value for kv in m.values}), STREAM_QOS)
        self.reset_cli = n.create_client(Trigger, "/safety_monitor/reset")
        self.follow = False  # True: the measured state tracks the last output (an ideal servo)
        self.js_timer = n.create_timer(0.01, self._publish_joint_state)

    def _publish_joint_state(self) -> None:
        if self.follow and self.outputs:
            self.q = self.outputs[-1][1].copy()
        self.js_pub.publish(cv.joint_state_msg(NAMES, self.q))

    @property
    def state(self) -> str:
        return self.states[-1][1] if self.states else ""

    def until(self, pred, timeout: float = 5.0) -> bool:
        return self.ros.spin_until(pred, timeout)

    def state_since(self, name: str, t0: float) -> float | None:
        """Monotonic time of the first ``name`` state after ``t0``, or None."""
        return next((t for t, s in self.states if s == name and t >= t0), None)


def start(start_node, ros_node, **params):
    node = start_node("vla_mpc.ros.safety_monitor", {"rate_hz": 100.0, "command_timeout_s": 0.3,
                                                     "joint_state_timeout_s": 0.3, **params})
    rig = Rig(ros_node)
    assert rig.until(lambda: rig.state == "HOLDING", 30.0), "monitor did not come up"
    assert rig.until(lambda: len(rig.outputs) > 5, 10.0), "no hold output after joint states"
    np.testing.assert_allclose(rig.outputs[-1][1], HOME)
    return node, rig


def command_source(target: np.ndarray) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", SOURCE, ",".join(NAMES), ",".join(repr(float(x)) for x in target)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def test_command_source_dies_and_joint_states_stop(start_node, ros_node):
    node, rig = start(start_node, ros_node)
    target = HOME + 0.01 * ARM
    src = command_source(target)
    try:
        assert rig.until(lambda: rig.state == "ACTIVE", 30.0), "source never reached the monitor"
        assert rig.until(lambda: np.allclose(rig.outputs[-1][1], target), 5.0)
        t_kill = time.monotonic()
        src.kill()  # SIGKILL: no goodbye
        src.wait(timeout=10)
        assert rig.until(lambda: rig.state_since("HOLDING", t_kill) is not None, 0.3 + SLACK_S + 1.0)
        held_after = rig.state_since("HOLDING", t_kill) - t_kill
        assert held_after <= 0.3 + SLACK_S, held_after
        assert rig.until(lambda: any(i.get("kind") == "command_timeout" for i in rig.interventions), 2.0)
        n = len(rig.outputs)
        assert rig.until(lambda: len(rig.outputs) > n + 10, 2.0)  # hold commands keep coming, constant
        np.testing.assert_allclose(rig.outputs[-1][1], target)
    finally:
        if src.poll() is None:
            src.kill()
            src.wait(timeout=10)
    # Joint states stop: the monitor holds (reason: stale joint states) within the timeout.
    rig.js_timer.cancel()
    t_stop = time.monotonic()
    assert rig.until(lambda: any(i.get("kind") == "stale_joint_state" for i in rig.interventions),
                     0.3 + SLACK_S + 1.0)
    assert rig.state == "HOLDING"
    np.testing.assert_allclose(rig.outputs[-1][1], target)
    assert node.alive()
    del t_stop


def test_estop_latches_against_a_live_source_until_reset(start_node, ros_node):
    _, rig = start(start_node, ros_node)
    rig.estop_pub.publish(Bool(data=True))
    assert rig.until(lambda: rig.state == "ESTOP", 5.0)
    target = HOME + 0.02 * ARM
    src = command_source(target)
    try:
        rig.ros.spin_for(1.5)  # the source streams for 1.5 s
        assert rig.state == "ESTOP"
        np.testing.assert_allclose(rig.outputs[-1][1], HOME)  # did not move toward the commands
        rig.estop_pub.publish(Bool(data=False))  # releasing the button does not clear the latch
        rig.ros.spin_for(0.3)
        assert rig.state == "ESTOP"
        assert rig.reset_cli.wait_for_service(timeout_sec=5.0)
        fut = rig.reset_cli.call_async(Trigger.Request())
        assert rig.until(fut.done, 5.0) and fut.result().success
        assert rig.until(lambda: rig.state in ("ACTIVE", "LIMITING"), 5.0)  # the live source resumes
        assert rig.until(lambda: np.allclose(rig.outputs[-1][1], target), 5.0)
    finally:
        src.kill()
        src.wait(timeout=10)


def test_burst_of_10000_commands_no_memory_growth_or_lag(start_node, ros_node):
    node, rig = start(start_node, ros_node)
    pub = rig.cmd_pub

    def burst(n: int, scale: float) -> float:
        for k in range(n):
            pub.publish(cv.joint_state_msg(NAMES, HOME + scale * (k % 100) * 1e-6 * ARM))
            if k % 200 == 0:
                rig.ros.executor.spin_once(timeout_sec=0.0)
        return time.monotonic()

    burst(2000, 1.0)  # warm-up: caches, DDS buffers, interpreter
    rig.ros.spin_for(1.0)
    rss0 = rss_kib(node.proc.pid)
    burst(10_000, 1.0)
    last = HOME + 3e-5 * ARM  # a distinct final target, reachable in one period
    rig.outputs.clear()
    t_last = time.monotonic()
    pub.publish(cv.joint_state_msg(NAMES, last))
    assert rig.until(lambda: any(np.array_equal(o, last) for _, o in rig.outputs), 5.0), "last command lost"
    lag = next(t for t, o in rig.outputs if np.array_equal(o, last)) - t_last
    rig.ros.spin_for(1.0)
    rss1 = rss_kib(node.proc.pid)
    print(f"burst: RSS {rss0} -> {rss1} KiB, last-command lag {lag * 1e3:.1f} ms")
    assert rss1 - rss0 < 4096, (rss0, rss1)  # < 4 MiB: nothing accumulates per command
    assert lag < 0.25, lag  # no backlog: out within a few periods even right after the burst
    assert node.alive()


def test_sim_reset_jump_resyncs_and_cost_resets_per_episode(start_node, ros_node):
    _, rig = start(start_node, ros_node)
    rig.follow = True
    rig.episode_pub.publish(String(data=json.dumps({"event": "start", "episode": 0, "seed": 1, "robot": "panda"})))
    rig.ros.spin_for(0.2)
    # Push joint 1 beyond its limit for a while: position-limit interventions cost 1 per step.
    beyond = HOME.copy()
    beyond[0] = 10.0
    q = HOME.copy()
    for k in range(60):
        q = q.copy()
        q[0] = min(HOME[0] + 0.02 * k, 2.8)
        rig.cmd_pub.publish(cv.joint_state_msg(NAMES, np.where(np.arange(8) == 0, beyond, q)))
        rig.ros.spin_for(0.01)
    assert rig.until(lambda: bool(rig.costs) and rig.costs[-1][1] >= 5, 5.0), (rig.costs[-3:], rig.interventions[-3:])
    assert rig.costs[-1][0] in (0.0, 1.0) and any(c[0] == 1.0 for c in rig.costs)
    moved = rig.outputs[-1][1].copy()
    assert moved[0] > HOME[0] + 0.05
    # The sim resets: a new episode starts and the measured state jumps back home.
    rig.costs.clear()
    rig.episode_pub.publish(String(data=json.dumps({"event": "start", "episode": 1, "seed": 2, "robot": "panda"})))
    rig.ros.spin_for(0.2)
    rig.follow = False
    rig.q = HOME.copy()
    assert rig.until(lambda: any(i.get("kind") == "resync" for i in rig.interventions), 5.0)
    rig.ros.spin_for(0.3)
    np.testing.assert_allclose(rig.outputs[-1][1], HOME)  # holds home, not the old position
    assert "ESTOP" not in [s for _, s in rig.states]
    # A stale source repeating the old position is refused (no drag back) ...
    for _ in range(10):
        rig.cmd_pub.publish(cv.joint_state_msg(NAMES, moved))
        rig.ros.spin_for(0.01)
    rig.ros.spin_for(0.2)
    np.testing.assert_allclose(rig.outputs[-1][1], HOME)
    # ... and the episode cost restarted from zero.
    assert rig.costs and rig.costs[0][1] <= 2.0
    nxt = HOME + 1e-4 * ARM
    rig.cmd_pub.publish(cv.joint_state_msg(NAMES, nxt))
    assert rig.until(lambda: np.allclose(rig.outputs[-1][1], nxt), 5.0)
