"""Safety filter benchmark: per-command check time, a limit fuzz, and the node's added latency.

``run()`` returns one dict per measurement (the ``python -m vla_mpc.bench safety`` dispatcher
prints each as a JSON line):

* ``{"robot": r, "dof": n, "check_us_p50": ..., "check_us_p99": ..., "check_us_clamped_p50": ...,
  "check_us_clamped_p99": ...}``: wall time of one :meth:`SafetyFilter.filter` call [us]
  (``time.perf_counter``) with joint limits only, on a smooth reachable stream (PASS) and on a
  stream that must be limited (CLAMPED), at ``dt`` = 5 ms; ``check_us_cartesian_far_*`` the same
  smooth stream with the robot config's Cartesian constraints (FK mostly skipped by the Lipschitz
  bound), ``check_us_cartesian_near_*`` a stream that keeps the TCP within a few cm of a raised
  table (FK on every call); ``fk_calls_*`` counts them. For ``panda`` and ``gr1``.
* ``{"robot": "panda", "fuzz_commands": N, "fuzz_violations": V, ...}``: N >= 100,000 random and
  adversarial calls (targets up to 30 % beyond the limits, 1e6-rad jumps, NaN/Inf, wrong names,
  stale stamps, holds, e-stop/reset) at several ``dt``; V counts output samples that break a
  position, velocity, acceleration or jerk limit (finite differences over ``dt``; relative
  tolerance 1e-6) or are not finite. ``fuzz_cartesian_commands`` / ``fuzz_cartesian_violations``:
  the same with the robot config's Cartesian constraints, V counting outputs whose spheres or
  capsules penetrate a constraint (distance < 0) besides the joint-limit checks.
* ``{"robot": "panda", "added_latency_ms_p50": ..., "added_latency_ms_p99": ...}``: the
  safety_monitor node in its own process (``rate_hz`` 100, Cartesian constraints on); this process
  publishes ``/joint_states`` and a reachable 100 Hz command stream and subscribes to both the
  command topic and the controller topic: added latency = arrival of the output - arrival of the
  command it came from (matched by value; both arrivals on this process's monotonic clock, so it
  is the node's time plus one DDS hop). ``load_avg_1min`` is reported with it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.core.safety import SafetyFilter, SafetyLimits
from vla_mpc.paths import config_path

DT = 0.005
FUZZ_COMMANDS = 100_000


def _percentiles(times: np.ndarray, label: str) -> dict[str, float]:
    return {f"check_us{label}_p50": round(float(np.percentile(times, 50)) * 1e6, 1),
            f"check_us{label}_p99": round(float(np.percentile(times, 99)) * 1e6, 1)}


def _stream(f: SafetyFilter, names: tuple[str, ...], q0: np.ndarray, direction: np.ndarray, n_calls: int,
            t0: float) -> tuple[np.ndarray, dict[str, int], float]:
    """Time ``n_calls`` filter calls on ``q0 + (1 - cos(pi t)) * direction`` (0.5 Hz)."""
    times = np.empty(n_calls)
    actions: dict[str, int] = {}
    t = t0
    for k in range(n_calls):
        t += DT
        x = q0 + (1.0 - math.cos(2.0 * math.pi * 0.5 * t)) * direction
        t1 = time.perf_counter()
        _, verdict = f.filter(names, x, t)
        times[k] = time.perf_counter() - t1
        actions[verdict.action.value] = actions.get(verdict.action.value, 0) + 1
    return times, actions, t


def _timing(robot: str, n_calls: int = 3000) -> dict[str, Any]:
    from vla_mpc.core.safety_cartesian import CartesianConfig, CartesianConstraints

    spec = load_robot_spec(robot)
    names = tuple(spec.joint_names)
    result: dict[str, Any] = {"robot": robot, "dof": len(names), "dt_s": DT}
    f = SafetyFilter.from_spec(spec, DT, command_timeout_s=1e9, joint_state_timeout_s=1e9, cartesian=None)
    span = f.limits.upper - f.limits.lower
    phase = np.arange(len(names))
    q0 = f.limits.lower + span * (0.5 + 0.2 * np.sin(phase))  # away from the braking zones
    f.observe_joint_state(q0, 0.0)
    t = 0.0
    for label, amp in (("", 0.002), ("_clamped", 0.3)):  # 0.2 % / 30 % of each joint's range
        times, actions, t = _stream(f, names, q0, amp * span * np.cos(phase), n_calls, t)
        result.update(_percentiles(times, label))
        result[f"actions{label}"] = actions
    # With the robot config's Cartesian constraints: the smooth stream around home (far from them).
    # Home with every joint at least 5 % of its range inside the limits (fingers rest at a limit).
    home = np.clip(np.asarray(spec.home, dtype=np.float64), f.limits.lower + 0.05 * span, f.limits.upper - 0.05 * span)
    g = SafetyFilter.from_spec(spec, DT, command_timeout_s=1e9, joint_state_timeout_s=1e9)
    if g.cartesian is not None:
        g.observe_joint_state(home, 0.0)
        times, actions, _ = _stream(g, names, home, 0.002 * span * np.cos(phase), n_calls, 0.0)
        result.update(_percentiles(times, "_cartesian_far"))
        result["fk_calls_far"] = g.cartesian.fk_calls
        # Near: the table raised to 0.5 mm beyond the clearance under the home pose's lowest sphere,
        # so the Lipschitz bound cannot skip FK (the stream moves the spheres by more than that).
        cfg = dict(spec.safety["cartesian"])
        d_home = dict(zip(g.cartesian.names, g.cartesian.distances(home)))
        lowest = min(v for k, v in d_home.items() if k.startswith("table:"))
        cfg["table_height"] = float(cfg["table_height"]) + lowest - g.cartesian.clearance - 0.0005
        near = CartesianConstraints(g.cartesian._robot, CartesianConfig.from_dict(cfg))
        h = SafetyFilter.from_spec(spec, DT, command_timeout_s=1e9, joint_state_timeout_s=1e9, cartesian=near)
        h.observe_joint_state(home, 0.0)
        times, actions, _ = _stream(h, names, home, 0.002 * span * np.cos(phase), n_calls, 0.0)
        result.update(_percentiles(times, "_cartesian_near"))
        result["fk_calls_near"] = near.fk_calls
        result["actions_cartesian_near"] = actions
    return result


def _violations(p: np.ndarray, lim: SafetyLimits, dt: float) -> int:
    """Output samples (rows of p, (T, n)) that break a limit, counted per joint and derivative."""
    v = np.diff(p, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    rel = 1e-6
    return int(
        np.sum(~np.isfinite(p))
        + np.sum((p < lim.lower - 1e-12) | (p > lim.upper + 1e-12))
        + np.sum(np.abs(v) > lim.velocity * (1 + rel))
        + np.sum(np.abs(a) > lim.acceleration * (1 + rel) + 1e-6)
        + np.sum(np.abs(j) > lim.jerk * (1 + rel) + 1e-3)
    )


def _fuzz(robot: str, n_commands: int, seed: int = 0, cartesian: bool = False) -> dict[str, Any]:
    spec = load_robot_spec(robot)
    rng = np.random.default_rng(seed)
    names = list(spec.joint_names)
    n = len(names)
    dts = (0.001, 0.005, 0.02)
    per_episode = 2000
    commands = violations = samples = cart_violations = 0
    kinds: dict[str, int] = {}
    cart = None
    while commands < n_commands:
        dt = dts[(commands // per_episode) % len(dts)]
        f = SafetyFilter.from_spec(spec, dt, command_timeout_s=1e9, joint_state_timeout_s=1e9,
                                   jump_action="reject" if rng.random() < 0.2 else "clamp",
                                   cartesian=cart if cartesian and cart is not None else ("spec" if cartesian else None))
        cart = f.cartesian
        lim = f.limits
        span = lim.upper - lim.lower
        while True:  # a start inside the joint limits (and, with constraints, clear of them)
            q0 = lim.lower + rng.random(n) * span
            if cart is None or cart.distances(q0).min() >= cart.clearance:
                break
        if cart is not None:
            cart._ref_q, cart._ref_slack = None, -math.inf  # a new filter: forget the FK reference
        f.observe_joint_state(q0, 0.0)
        out = [q0, q0, q0]
        t = 1.0
        x = q0.copy()
        for _ in range(per_episode):
            t += dt
            r = rng.random()
            if r < 0.02:  # a new random far target, up to 30 % beyond the limits
                x = lim.lower - 0.3 * span + rng.random(n) * 1.6 * span
            elif r < 0.5:  # random walk of the target
                x = x + rng.normal(0.0, 0.02, n)
            if r < 0.03:
                cmd, _ = f.hold()
            elif r < 0.05:
                bad = x.copy()
                bad[rng.integers(n)] = rng.choice([math.nan, math.inf, -math.inf])
                cmd, _ = f.filter(names, bad, t)
            elif r < 0.06:
                cmd, _ = f.filter(names, x * 1e6, t)
            elif r < 0.07:
                cmd, _ = f.filter(names[:-1] + ["not_a_joint"], x, t)
            elif r < 0.08:
                cmd, _ = f.filter(names, x, t - 2 * dt)  # stamp goes backwards
            elif r < 0.081:
                f.estop("fuzz")
                cmd, _ = f.filter(names, x, t)
            elif r < 0.082:
                f.reset()  # no re-seed: the output stays continuous
                cmd, _ = f.filter(names, x, t)
            elif r < 0.09:
                perm = rng.permutation(n)
                cmd, _ = f.filter([names[i] for i in perm], x[perm], t)
            else:
                cmd, _ = f.filter(names, x, t)
            commands += 1
            if cmd is not None:  # None: DEFERRED (nothing sent)
                out.append(cmd)
        for k, c in f.counts.items():
            kinds[k] = kinds.get(k, 0) + c
        p = np.array(out)
        violations += _violations(p, lim, dt)
        samples += p.size
        if cart is not None:
            cart_violations += int(sum(int((cart.distances(q) < 0.0).any()) for q in p))
    key = "fuzz_cartesian" if cartesian else "fuzz"
    res = {"robot": robot, f"{key}_commands": commands, f"{key}_violations": violations + cart_violations,
           f"{key}_samples_checked": samples, f"{key}_dt_s": list(dts), f"{key}_interventions": kinds}
    if cartesian:
        res["fuzz_cartesian_penetrations"] = cart_violations
    return res


_LATENCY_SCRIPT = r"""
import json, sys, time
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_QOS

n_cmd = int(sys.argv[1])
spec = load_robot_spec("panda")
names = list(spec.joint_names)
home = np.array(spec.home, dtype=np.float64)
home[-1] = 0.02
rclpy.init()
node = rclpy.create_node("safety_latency_bench")
ex = SingleThreadedExecutor()
ex.add_node(node)
cmd_in, out_at, state = {}, {}, []
node.create_subscription(JointState, "/vla_mpc/joint_command",
                         lambda m: cmd_in.setdefault(round(m.position[0], 12), time.monotonic()), COMMAND_QOS)
node.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                         lambda m: out_at.setdefault(round(m.data[0], 12), time.monotonic()), COMMAND_QOS)
node.create_subscription(String, "/vla_mpc/safety/state", lambda m: state.append(m.data), LATCHED_QOS)
from diagnostic_msgs.msg import DiagnosticArray
from vla_mpc.ros.qos import STREAM_QOS
diag = {}
node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.update(
    {kv.key: kv.value for st in m.status if st.name == "vla_mpc/safety_monitor" for kv in st.values}), STREAM_QOS)
js = node.create_publisher(JointState, "/joint_states", STATE_QOS)
cmd = node.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
node.create_timer(0.01, lambda: js.publish(cv.joint_state_msg(names, home)))
end = time.monotonic() + 60.0
while time.monotonic() < end and not (state and state[-1] == "HOLDING" and out_at):
    ex.spin_once(timeout_sec=0.01)
sent = []
k = 0
nxt = time.monotonic()
while k < n_cmd and time.monotonic() < end + 120.0:
    now = time.monotonic()
    if now >= nxt:
        q = home.copy()
        q[0] += 1e-6 * (k + 1)  # distinct, reachable: passes bit-for-bit
        cmd.publish(cv.joint_state_msg(names, q, stamp=node.get_clock().now().to_msg()))
        sent.append(round(q[0], 12))
        k += 1
        nxt += 0.01
    ex.spin_once(timeout_sec=max(0.0, min(0.002, nxt - time.monotonic())))
t_end = time.monotonic() + 1.5
while time.monotonic() < t_end:
    ex.spin_once(timeout_sec=0.01)
lat = [out_at[v] - cmd_in[v] for v in sent if v in out_at and v in cmd_in]
print(json.dumps({"sent": len(sent), "matched": len(lat), "lat_ms": [x * 1e3 for x in lat],
                  "callback_us_p50": float(diag.get("command_callback_us_p50", "nan")),
                  "callback_us_p99": float(diag.get("command_callback_us_p99", "nan")),
                  "deferred": int(diag.get("commands_deferred", "-1"))}))
node.destroy_node()
rclpy.shutdown()
"""


def _added_latency(n_commands: int = 1000) -> dict[str, Any]:
    """The node in one process, the bench's publisher/subscriber in another (module docstring)."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    node = subprocess.Popen([sys.executable, "-m", "vla_mpc.ros.safety_monitor", "--ros-args",
                             "-p", "rate_hz:=100.0", "-p", "command_timeout_s:=0.3",
                             ],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        res = subprocess.run([sys.executable, "-c", _LATENCY_SCRIPT, str(n_commands)], env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        node.terminate()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
    if res.returncode != 0:
        raise RuntimeError(f"latency client failed: {res.stderr[-2000:]}")
    data = __import__("json").loads(res.stdout.strip().splitlines()[-1])
    lat = np.asarray(data["lat_ms"])
    if lat.size == 0:
        raise RuntimeError("no command came through the safety monitor")
    return {"robot": "panda", "added_latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
            "added_latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
            "added_latency_ms_max": round(float(lat.max()), 3),
            "latency_commands_sent": data["sent"], "latency_commands_matched": data["matched"],
            "node_callback_us_p50": round(data["callback_us_p50"], 1),
            "node_callback_us_p99": round(data["callback_us_p99"], 1),
            "latency_commands_deferred": data["deferred"],
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def run() -> list[dict[str, Any]]:
    """Time the per-command check (panda, gr1 if configured), fuzz >= 100,000 commands (joint
    limits) and 20,000 with the Cartesian constraints, and measure the node's added latency."""
    results = []
    for robot in ("panda", "gr1"):
        if robot == "panda" or config_path(robot).exists():
            results.append(_timing(robot))
    results.append(_fuzz("panda", FUZZ_COMMANDS))
    results.append(_fuzz("panda", 20_000, seed=1, cartesian=True))
    results.append(_added_latency())
    return results
