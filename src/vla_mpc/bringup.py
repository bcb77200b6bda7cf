"""Start the vla_mpc graph as one process per node: the pip-install equivalent of
``ros2 launch vla_mpc bringup.launch.py`` (launch_ros has no wheel).

    python -m vla_mpc.bringup --robot panda --instruction "pick up the red cube" [--record DIR]
        [--no-sim] [--no-use-sim-time] [--duration 60] [--set policy.control_rate_hz=200]

Each node gets ``--params-file config/params/<node>.yaml`` plus ``robot_config`` and
``use_sim_time`` overrides, exactly as the launch file passes them. One process per node keeps the
fast loops (System 1, safety monitor) off each other's GIL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vla_mpc.graph import GRAPH_NODES, RECORDER, ROBOTS, GraphNode
from vla_mpc.paths import share_dir


def _param_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_param_value(x) for x in v) + "]"
    return repr(v)


def node_command(node: GraphNode, params: dict[str, Any]) -> list[str]:
    """The argv that starts ``node`` with its parameter file and ``params`` overrides."""
    cmd = [sys.executable, "-u", "-m", node.module, "--ros-args"]
    pfile = share_dir() / node.params_file
    if pfile.is_file():
        cmd += ["--params-file", str(pfile)]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={_param_value(v)}"]
    return cmd


def parse_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["policy.control_rate_hz=200", ...]`` -> {"policy": {"control_rate_hz": 200}} (YAML values).

    Raises:
        ValueError: an item that is not ``node.param=value``.
    """
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or not node or not param:
            raise ValueError(f"--set expects node.param=value, got {item!r}")
        out.setdefault(node, {})[param] = yaml.safe_load(value)
    return out


@dataclass
class Bringup:
    """Starts and stops the graph's processes. Use as a context manager.

    Attributes:
        robot: robot name (config/<robot>.yaml).
        sim: start the MuJoCo sim robot.
        use_sim_time: every node but the sim follows /clock.
        record_dir: if set, the recorder writes a rosbag2 (MCAP) there.
        log_dir: if set, each node's output goes to ``<log_dir>/<node>.log``; else to this terminal.
        overrides: per-node parameter overrides.
        exclude: names of graph nodes not to start (e.g. ``("latent_mpc_planner",)`` when the
            policy alone drives the robot, as ``vla_mpc.collect`` does).
    """

    robot: str = "panda"
    sim: bool = True
    use_sim_time: bool = True
    record_dir: Path | None = None
    log_dir: Path | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, init=False)
    _logs: list = field(default_factory=list, init=False)

    def nodes(self) -> list[GraphNode]:
        """The nodes this configuration starts, in start order."""
        selected = [n for n in GRAPH_NODES if (n.group == "core" or (n.group == "sim" and self.sim))
                    and n.name not in self.exclude]
        if self.record_dir is not None:
            selected.insert(0, RECORDER)  # first, so it sees the latched topics from the start
        return selected

    def params_for(self, node: GraphNode) -> dict[str, Any]:
        """Parameters passed on the command line to ``node`` (after its parameter file)."""
        params: dict[str, Any] = {}
        if node.name != RECORDER.name:
            params["robot_config"] = self.robot
        # the sim is the clock source; everyone else follows /clock when asked. The recorder stamps
        # with the wall clock, as `ros2 bag record` does by default, so rates read from the bag are
        # real-time rates.
        params["use_sim_time"] = bool(self.use_sim_time and node.group not in ("sim", "record"))
        if node is RECORDER:
            params["output_dir"] = str(self.record_dir)
        params.update(self.overrides.get(node.name, {}))
        return params

    def start(self) -> None:
        """Start every node's process."""
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes():
            out = None
            if self.log_dir is not None:
                out = open(self.log_dir / f"{node.name}.log", "wb")
                self._logs.append(out)
            self.procs[node.name] = subprocess.Popen(
                node_command(node, self.params_for(node)), stdout=out, stderr=subprocess.STDOUT if out else None,
                env=dict(os.environ),
            )

    def dead(self) -> dict[str, int]:
        """Nodes whose process has exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGINT every node (reverse start order, the recorder last), wait, SIGKILL stragglers.

        Returns:
            Exit code per node.
        """
        order = list(self.procs)[::-1]
        if RECORDER.name in order:  # keep recording until everything else is down
            order.remove(RECORDER.name)
            order.append(RECORDER.name)
        codes: dict[str, int] = {}
        for name in order:
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            codes[name] = p.returncode
        for f in self._logs:
            f.close()
        return codes

    def __enter__(self) -> "Bringup":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_instruction(text: str, hold_s: float | None) -> None:
    """Publish ``text`` on /vla_mpc/instruction (latched) and keep the publisher alive for
    ``hold_s`` seconds (None: until Ctrl-C)."""
    import rclpy
    from std_msgs.msg import String

    from vla_mpc.ros.qos import LATCHED_QOS

    rclpy.init()
    node = rclpy.create_node("vla_mpc_bringup")
    try:
        node.create_publisher(String, "/vla_mpc/instruction", LATCHED_QOS).publish(String(data=text))
        end = None if hold_s is None else time.monotonic() + hold_s
        while rclpy.ok() and (end is None or time.monotonic() < end):
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Console script ``bringup`` / ``python -m vla_mpc.bringup``."""
    from vla_mpc.ros.runtime import isolate_ros_network

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="panda", choices=ROBOTS)
    ap.add_argument("--sim", action=argparse.BooleanOptionalAction, default=True, help="start the MuJoCo sim robot")
    ap.add_argument("--use-sim-time", action=argparse.BooleanOptionalAction, default=None,
                    help="nodes follow /clock (default: on with --sim)")
    ap.add_argument("--record", type=Path, default=None, help="rosbag2 (MCAP) directory to record into")
    ap.add_argument("--instruction", default="", help="publish this on /vla_mpc/instruction (latched)")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--log-dir", type=Path, default=None, help="write each node's output to <dir>/<node>.log")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="parameter override")
    a = ap.parse_args(argv)
    isolate_ros_network()
    use_sim_time = a.sim if a.use_sim_time is None else a.use_sim_time
    bringup = Bringup(a.robot, a.sim, use_sim_time, a.record, a.log_dir, parse_overrides(a.set))
    bringup.start()
    try:
        if a.instruction:
            publish_instruction(a.instruction, a.duration)
        else:
            end = None if a.duration is None else time.monotonic() + a.duration
            while end is None or time.monotonic() < end:
                time.sleep(0.2)
                if bringup.dead():
                    break
    except KeyboardInterrupt:
        pass
    finally:
        codes = bringup.stop()
    failed = {n: c for n, c in codes.items() if c not in (0, -signal.SIGINT)}
    if failed:
        print(f"[bringup] nodes exited with errors: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
