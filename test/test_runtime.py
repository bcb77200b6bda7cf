"""run_node: a failed node ends its process even when a library left a non-daemon thread running."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import SRC


def test_failed_node_exits_despite_non_daemon_threads():
    code = textwrap.dedent(
        """
        import threading, time
        from rclpy.node import Node
        from vla_mpc.ros.runtime import run_node

        def factory():
            threading.Thread(target=time.sleep, args=(600,), daemon=False).start()  # a library's thread
            node = Node("failing_node")
            def boom():
                raise RuntimeError("backend exploded")
            node.create_timer(0.05, boom)
            return node

        raise SystemExit(run_node(factory, []))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONPATH": str(SRC)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "node failed: backend exploded" in proc.stdout


def test_make_executor_names_and_environment(monkeypatch):
    import pytest
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from vla_mpc.ros.runtime import EXECUTORS, make_executor

    assert EXECUTORS == ("events", "single_threaded")
    rclpy.init()
    try:
        monkeypatch.delenv("VLA_MPC_EXECUTOR", raising=False)
        default = make_executor()
        assert not isinstance(default, SingleThreadedExecutor)
        assert type(default).__name__ == "EventsExecutor"
        monkeypatch.setenv("VLA_MPC_EXECUTOR", "single_threaded")
        assert isinstance(make_executor(), SingleThreadedExecutor)
        assert type(make_executor("events")).__name__ == "EventsExecutor"  # an explicit name wins
        monkeypatch.setenv("VLA_MPC_EXECUTOR", "multi_threaded")
        with pytest.raises(ValueError, match="single_threaded"):
            make_executor()
        # an rclpy without the EventsExecutor (Jazzy): the SingleThreadedExecutor
        import sys
        import types

        monkeypatch.setitem(sys.modules, "rclpy.experimental", types.ModuleType("rclpy.experimental"))
        assert isinstance(make_executor("events"), SingleThreadedExecutor)
    finally:
        rclpy.shutdown()


_BUSY_NODE = textwrap.dedent(
    """
    import sys
    from rclpy.node import Node
    from std_msgs.msg import Float64MultiArray
    from vla_mpc.ros.runtime import run_node

    class Busy(Node):
        def __init__(self):
            super().__init__("busy_node")
            self.n = 0
            self.pub = self.create_publisher(Float64MultiArray, "/busy", 10)
            self.create_subscription(Float64MultiArray, "/busy", self.on_msg, 10)
            self.create_timer(0.002, lambda: self.pub.publish(Float64MultiArray(data=[1.0] * 9)))

        def on_msg(self, msg):
            self.n += 1
            if self.n == 200:
                print("receiving", flush=True)

    raise SystemExit(run_node(Busy, []))
    """
)


def _run_busy_node_and_stop(executor: str, sig: int) -> subprocess.CompletedProcess:
    import os
    import time

    env = {**os.environ, "PYTHONPATH": str(SRC), "VLA_MPC_EXECUTOR": executor,
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": "73"}
    proc = subprocess.Popen([sys.executable, "-u", "-c", _BUSY_NODE], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60.0
        line = ""
        while time.monotonic() < deadline and "receiving" not in line:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert "receiving" in line, f"the node never received its own messages ({executor})"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_nodes_stop_cleanly_on_sigint_and_sigterm_with_either_executor():
    """A node busy with 500 Hz messages ends with code 0 on the signals bringup and launch send,
    under both executors (the EventsExecutor's spin() alone would ignore them)."""
    import signal

    import pytest

    for executor in ("events", "single_threaded"):
        for sig in (signal.SIGINT, signal.SIGTERM):
            done = _run_busy_node_and_stop(executor, sig)
            if done.returncode != 0:
                pytest.fail(f"{executor}, {signal.Signals(sig).name}: exit {done.returncode}\n{done.stdout}")
            assert "node failed" not in done.stdout, done.stdout
