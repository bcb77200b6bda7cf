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
