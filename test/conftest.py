"""Shared fixtures: ROS network isolation, nodes in separate processes, a test-side rclpy node.

Isolation happens at import time, before any test imports rclpy: LOCALHOST discovery and a
``ROS_DOMAIN_ID`` derived from this process id, so concurrent test runs on one machine do not see
each other (and nothing leaves loopback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
if "VLA_MPC_TEST_DOMAIN_ID" in os.environ:
    os.environ["ROS_DOMAIN_ID"] = os.environ["VLA_MPC_TEST_DOMAIN_ID"]
else:
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"


def _param_arg(key: str, value: Any) -> str:
    if isinstance(value, bool):
        v = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        v = "[" + ",".join(_yaml_scalar(x) for x in value) + "]"
    else:
        v = _yaml_scalar(value)
    return f"{key}:={v}"


def _yaml_scalar(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        return "'" + x.replace("'", "''") + "'"
    return repr(x)


class NodeProcess:
    """A node started with ``python -m <module> --ros-args ...``; its output goes to a log file."""

    def __init__(self, module: str, params: dict[str, Any], extra_args: list[str], log_dir: Path):
        self.module = module
        self.log_path = log_dir / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-u", "-m", module, "--ros-args"]
        for k, v in params.items():
            cmd += ["-p", _param_arg(k, v)]
        cmd += extra_args
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL: a crashed command source) and reap the process."""
        if self.alive():
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> int:
        """SIGINT, then SIGKILL after 10 s. Returns the exit code."""
        self.kill(signal.SIGINT)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., NodeProcess]]:
    """Factory: ``start_node("vla_mpc.ros.safety_monitor", {"rate_hz": 200.0})`` starts the node in
    its own process (same ROS domain as the test). Stopped at teardown; on test failure its log is
    printed."""
    procs: list[NodeProcess] = []

    def _start(module: str, params: dict[str, Any] | None = None, extra_args: list[str] | None = None) -> NodeProcess:
        p = NodeProcess(module, params or {}, extra_args or [], tmp_path)
        procs.append(p)
        return p

    yield _start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for p in procs:
        p.stop()
        if failed:
            sys.stderr.write(f"\n----- log of {p.module} -----\n{p.log()[-6000:]}\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ANN001 - pytest hook signature
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class RosTestNode:
    """A test-side rclpy node with its own context and executor; ``spin_until`` waits with a bound."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"vla_mpc_test_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.01, max(0.0, end - time.monotonic())))

    def spin_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Spin until ``predicate()`` is true or ``timeout`` [s] passes; returns the predicate."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.01)
        return bool(predicate())

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def ros_node() -> Iterator[RosTestNode]:
    """A fresh test-side node (own rclpy context) for publishing and subscribing."""
    n = RosTestNode()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """A scratch folder that lives for the session."""
    return Path(tempfile.mkdtemp(prefix="vla_mpc_test_"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: extra torch threads only contend on the shared CPU (restored afterwards)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
