"""Dual-system policy benchmarks (``python -m vla_mpc.bench policy``).

Rows (one dict each):

* ``system2``: ``s2_latency_ms_p50`` / ``p99`` -- the built-in System 2 (:class:`LearnedSystem2`
  with the shipped Franka policy's configuration and statistics, ``checkpoints/panda/policy/
  config.json``, and random weights: timing does not depend on training) on one
  224x224 RGB frame + an instruction, end to end (resize to 96 px, CNN, transformer; the MiniLM
  embedding is cached per instruction, so a repeated instruction costs a dictionary look-up; the
  first encoding of a new one is reported as ``text_first_ms``).
* ``system1_<dof>dof``: ``s1_chunk_latency_ms_p50`` / ``p99`` -- flow matching, chunk 16, 10 Euler
  steps, batch 1, for a 7-DoF arm and the GR1 upper body (``config/gr1.yaml``), through
  :class:`LearnedSystem1` (input checks, float64 <-> float32, inpainting off / on).
* ``system1_panda_ee``: the same for the Franka policy as trained here (``action_mode="ee"``,
  ``keypoint_condition``): forward kinematics of the inputs and damped least-squares IK of the
  chunk's tool poses included.
* ``control_stream``: ``control_rate_hz`` / ``control_gap_ms_p99`` -- the policy node (learned
  backend, default-size random-weight checkpoint, role both, ``control_rate_hz`` 200) runs as a
  subprocess with System 2 at 2 Hz beside its control loop; this process publishes joint states
  (100 Hz), 224x224 camera frames (10 Hz) and the instruction, and measures the arrival of
  ``/vla_mpc/joint_command`` over DDS.
* ``control_stream_scripted``: the same measurement with the scripted backend (no learned model):
  what the machine's current load alone does to the stream.
* ``chunk_joining``: ``boundary_jerk_ratio`` -- max jerk [rad/s^3] near chunk switches with real-time
  chunking (inpainted prefix + the streamer's C2 cross-fade) divided by naive switching (no prefix,
  ``blend_steps`` 0), same model, same noise, same switch times. The model is a System 1 trained here
  for a few seconds on a bimodal family of smooth motions (``q0 + v0 t +- 0.75 t^2`` per joint, the
  sign random: consecutive chunks disagree, as a multimodal policy's do), so the ratio measures
  chunk joining, not an untrained network's noise.

torch runs on one thread (the node's ``torch_threads`` default: System 2 and System 1 then run in
parallel on the two cores). Timings on a shared CPU are noisy: compare medians across runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vla_mpc.core.chunking import ChunkStreamer, ChunkStreamerConfig, finite_difference
from vla_mpc.models.learned import LearnedSystem1, LearnedSystem2
from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
from vla_mpc.models.text import TextEncoder

INSTRUCTION = "pick up the red cube"


def _unit_stats(dof: int, delta_std: float = 0.05) -> dict:
    return {"proprio": {"mean": [0.0] * 2 * dof, "std": [1.0] * 2 * dof},
            "action_delta": {"mean": [0.0] * dof, "std": [delta_std] * dof}}


def _policy(robot: str, joint_names, **kw) -> DualSystemPolicy:
    torch.manual_seed(0)
    return DualSystemPolicy(PolicyConfig(robot=robot, joint_names=tuple(joint_names), **kw),
                            _unit_stats(len(joint_names))).eval()


def _pcts(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


#: How the shipped Franka policy's System 1 sees the robot (``PolicyConfig.system1_state``, session 12).
SYSTEM1_STATE = "cartesian"


def shipped_policy_config() -> tuple[PolicyConfig, dict]:
    """The shipped Franka policy's ``(PolicyConfig, statistics)`` (``checkpoints/panda/policy``
    under the share directory; no weights read).

    Raises:
        CheckpointError: the checkpoint's ``config.json`` is missing or invalid.
    """
    from vla_mpc.models.checkpoint import read_checkpoint_config
    from vla_mpc.paths import share_dir

    config, stats, _doc = read_checkpoint_config(share_dir() / "checkpoints" / "panda" / "policy")
    return config, stats


def bench_system2(repeats: int = 40) -> dict:
    config, stats = shipped_policy_config()
    torch.manual_seed(0)
    pol = DualSystemPolicy(config, stats).eval()
    enc = TextEncoder()
    s2 = LearnedSystem2(pol, enc)
    img = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    enc.encode(INSTRUCTION + " now")  # loads the sentence model (not timed as text_first_ms)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc.encode(INSTRUCTION)
    text_first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(3):
        s2.infer({"front": img}, INSTRUCTION)
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s2.infer({"front": img}, INSTRUCTION)
        ms.append((time.perf_counter() - t0) * 1e3)
    p50, p99 = _pcts(ms)
    n = pol.num_parameters()
    return {"name": "system2", "s2_latency_ms_p50": p50, "s2_latency_ms_p99": p99, "text_first_ms": text_first_ms,
            "text_model_load_s": load_s, "system2_parameters": n["system2"], "image": "224x224 -> 96",
            "latent_shape": list(s2.latent_shape), "feature_points": pol.config.feature_points,
            "text_tokens": pol.config.text_tokens, "role_points": pol.config.role_points,
            "goal_readings": s2.goal_readings,
            "shift_average_px": s2.shift_average_px,
            "views": 9 if s2.shift_average_px else 1, "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "notes": f"{repeats} calls, repeated instruction (embedding cached)"}


def _chunk_latency(s1: LearnedSystem1, z: np.ndarray, q: np.ndarray, v: np.ndarray, prefix: np.ndarray,
                   repeats: int, warmup: int) -> dict:
    """p50 / p99 [ms] of ``s1.infer`` without and with the committed ``prefix`` (``_rtc`` keys)."""
    rows = {}
    for tag, pre in (("", None), ("_rtc", prefix)):
        for _ in range(warmup):
            s1.infer(z, q, pre, v)
        ms = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            s1.infer(z, q, pre, v)
            ms.append((time.perf_counter() - t0) * 1e3)
        rows[f"s1_chunk_latency_ms_p50{tag}"], rows[f"s1_chunk_latency_ms_p99{tag}"] = _pcts(ms)
    return rows


def bench_system1(dof: int, label: str, repeats: int = 300) -> dict:
    names = [f"{label}_j{i}" for i in range(dof)]
    pol = _policy(label, names)
    s1 = LearnedSystem1(pol)
    z = np.random.default_rng(0).standard_normal((pol.config.latent_tokens, pol.config.latent_dim))
    q, v = np.zeros(dof), np.zeros(dof)
    rows = _chunk_latency(s1, z, q, v, np.zeros((8, dof)), repeats, warmup=50)
    return {"name": f"system1_{dof}dof", "robot": label, "action_dim": dof, "chunk_size": pol.config.chunk_size,
            "num_inference_steps": pol.config.num_inference_steps, "sampler": pol.config.sampler, **rows,
            "system1_parameters": pol.num_parameters()["system1"], "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "notes": f"{repeats} chunks, batch 1; _rtc = with an 8-step committed prefix inpainted"}


def bench_system1_ee(repeats: int = 200) -> dict:
    """System 1 of the Franka policy as shipped (``action_mode="ee"``, System 1 on the keypoints and
    the task kind, :data:`SYSTEM1_STATE`): the flow-matching sample plus forward kinematics of the
    inputs and the damped least-squares IK that turns the chunk's tool poses into joint targets
    (:mod:`vla_mpc.models.ee_actions`)."""
    from vla_mpc.core.robot_model import load_robot_spec

    spec = load_robot_spec("panda")
    a = spec.n_joints
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_ee": {"mean": [0.0] * 6 + [0.02] * (a - spec.n_arm), "std": [0.02] * (6 + a - spec.n_arm)},
             "keypoints": {"mean": [0.5, 0.0, 0.05, 0.5, 0.1, 0.05], "std": [0.1] * 6}}
    torch.manual_seed(0)
    pol = DualSystemPolicy(PolicyConfig(robot="panda", joint_names=spec.joint_names, action_mode="ee",
                                        keypoint_head=True, keypoint_condition=True, system1_condition="keypoints",
                                        system1_state=SYSTEM1_STATE), stats).eval()
    s1 = LearnedSystem1(pol)
    z = np.random.default_rng(0).standard_normal((pol.config.latent_tokens, pol.config.latent_dim))
    q, v = np.asarray(spec.home, dtype=np.float64), np.zeros(a)
    rows = _chunk_latency(s1, z, q, v, np.repeat(q[None], 8, axis=0), repeats, warmup=20)
    return {"name": "system1_panda_ee", "robot": "panda", "action_mode": "ee", "action_dim": a,
            "output_dim": pol.output_dim, "chunk_size": pol.config.chunk_size,
            "num_inference_steps": pol.config.num_inference_steps, **rows,
            "system1_parameters": pol.num_parameters()["system1"], "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
            "system1_state": pol.config.system1_state,
            "notes": f"{repeats} chunks, batch 1, System 1 on the keypoints and task kind; includes FK + per-step "
                     "DLS IK (3 iterations per step); _rtc = with an 8-step committed prefix"}


# ------------------------------------------------------------------------------- chunk joining


def _synthetic_chunks(rng: np.random.Generator, n: int, dof: int, horizon: int, dt: float):
    q0 = rng.uniform(-1, 1, (n, dof))
    v0 = rng.uniform(-0.5, 0.5, (n, dof))
    acc = np.where(rng.random((n, dof)) < 0.5, -1.5, 1.5)
    t = dt * np.arange(horizon)[None, :, None]
    return q0, v0, q0[:, None] + v0[:, None] * t + 0.5 * acc[:, None] * t * t


def _train_joining_model(dof: int, steps: int = 400, seed: int = 0) -> DualSystemPolicy:
    from vla_mpc.models.action_expert import flow_matching_loss

    pol = _policy("synthetic", [f"j{i}" for i in range(dof)], image_size=32, vision_width=8, d_model=32,
                  vlm_heads=2, latent_tokens=1, latent_dim=8, expert_width=128, expert_blocks=2, cond_dim=64)
    pol.stats["action_delta"]["std"] = [0.2] * dof
    pol.action_std.fill_(0.2)
    pol.train()
    opt = torch.optim.Adam(pol.system1.parameters(), lr=2e-3)
    rng = np.random.default_rng(seed)
    z = torch.zeros(256, 1, 8)
    for _ in range(steps):
        q0, v0, a = _synthetic_chunks(rng, 256, dof, pol.config.chunk_size, pol.config.chunk_dt)
        proprio = torch.from_numpy(np.concatenate([q0, v0], 1)).float()
        x = pol.normalize_actions(torch.from_numpy(a).float(), proprio)
        p = pol.normalize_proprio(proprio)
        loss = flow_matching_loss(lambda xt, t: pol.system1(xt, t, z, p), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pol.eval()


def _stream(pol: DualSystemPolicy, rtc: bool, blend_steps: int, seconds: float, rate_hz: float,
            chunk_rate_hz: float, seed: int) -> tuple[np.ndarray, list[float]]:
    """Simulated node loop: a perfectly tracking robot; every 1/chunk_rate_hz s a chunk is inferred
    from the commanded state and submitted (start two control periods ahead, as the node does)."""
    dof, dt = pol.config.action_dim, pol.config.chunk_dt
    s1 = LearnedSystem1(pol, seed=seed)
    streamer = ChunkStreamer(ChunkStreamerConfig(action_dim=dof, dt=dt, blend_steps=blend_steps))
    z = np.zeros((1, 8), np.float32)
    period = 1.0 / rate_hz
    ticks = int(round(seconds * rate_hz))
    every = int(round(rate_hz / chunk_rate_hz))
    q = np.zeros(dof)
    out, switches = [], []
    for i in range(ticks):
        now = i * period
        if i % every == 0:
            t_start = now + 2 * period
            prefix = None
            if not streamer.empty:
                overlap = int(np.clip(np.floor((streamer.end_time() - t_start) / dt) + 1, 2, pol.config.chunk_size))
                committed = streamer.committed(t_start, overlap)
                prefix = committed if rtc else None
                vel = (committed[1] - committed[0]) / dt
            else:
                vel = np.zeros(dof)
            chunk = s1.infer(z, q, prefix, vel)
            streamer.submit(chunk, t_start, t_now=now)
            if i:
                switches.append(t_start)
        q = streamer.sample(now)
        out.append(q)
    return np.asarray(out), switches


def bench_chunk_joining(dof: int = 7, seconds: float = 6.0, rate_hz: float = 200.0, blend_steps: int = 4) -> dict:
    pol = _train_joining_model(dof)
    results = {}
    for name, rtc, blend in (("naive", False, 0), ("rtc", True, blend_steps)):
        x, switches = _stream(pol, rtc, blend, seconds, rate_hz, 10.0, seed=1)
        jerk = np.abs(finite_difference(x, 1.0 / rate_hz, 3)).max(axis=1)  # [T-3]
        t = np.arange(3, x.shape[0]) / rate_hz  # time of each backward difference
        window = blend_steps * pol.config.chunk_dt + 0.02
        near = np.zeros_like(t, dtype=bool)
        for ts in switches:
            near |= (t >= ts - 0.02) & (t <= ts + window)
        results[name] = (float(jerk[near].max()), float(jerk[~near].max()) if (~near).any() else float("nan"))
    return {"name": "chunk_joining", "boundary_jerk_ratio": results["rtc"][0] / results["naive"][0],
            "boundary_jerk_naive": results["naive"][0], "boundary_jerk_rtc": results["rtc"][0],
            "interior_jerk_naive": results["naive"][1], "interior_jerk_rtc": results["rtc"][1],
            "action_dim": dof, "blend_steps": blend_steps, "stream_rate_hz": rate_hz, "chunk_rate_hz": 10.0,
            "interpolation": "linear",
            "notes": "max |jerk| [rad/s^3] within [switch - 20 ms, switch + blend + 20 ms]; rtc = inpainted "
                     "prefix (Black et al. 2025) + C2 cross-fade; naive = no prefix, blend_steps 0"}


# ------------------------------------------------------------------------------ control stream


def bench_control_stream(seconds: float = 10.0, rate_hz: float = 200.0, startup_timeout: float = 120.0,
                         backend: str = "learned") -> dict:
    """Start the policy node as a subprocess; measure joint_command arrivals here.

    ``backend="scripted"`` runs the same measurement without the learned models (a baseline for
    what the machine's load alone does to the stream)."""
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.checkpoint import save_policy

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "VLA_MPC_TEST_DOMAIN_ID" in os.environ:
        os.environ["ROS_DOMAIN_ID"] = os.environ["VLA_MPC_TEST_DOMAIN_ID"]
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from vla_mpc.ros import conversions as cv
    from vla_mpc.ros.qos import LATCHED_QOS, SENSOR_QOS, STATE_QOS

    spec = load_robot_spec("panda")
    tmp = Path(tempfile.mkdtemp(prefix="vla_mpc_bench_policy_"))
    save_policy(_policy("panda", spec.joint_names), tmp / "ckpt")
    log_path = tmp / "policy_node.log"
    cmd = [sys.executable, "-u", "-m", "vla_mpc.ros.policy_node", "--ros-args",
           "-p", "autostart:=true", "-p", f"backend:={backend}", "-p", f"checkpoint:={tmp / 'ckpt'}",
           "-p", f"control_rate_hz:={rate_hz}", "-p", "robot_config:=panda"]
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("vla_mpc_bench_policy", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    arrivals: list[float] = []
    latents: list[float] = []
    node.create_subscription(JointState, "/vla_mpc/joint_command", lambda m: arrivals.append(time.monotonic()),
                             QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
    from std_msgs.msg import Float32MultiArray

    node.create_subscription(Float32MultiArray, "/vla_mpc/latent", lambda m: latents.append(time.monotonic()), 10)
    from diagnostic_msgs.msg import DiagnosticArray

    from vla_mpc.ros.diagnostics import POLICY_STATUS_NAME

    node_side: list[dict] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == POLICY_STATUS_NAME:
                node_side.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    state_pub = node.create_publisher(JointState, "/joint_states", STATE_QOS)
    cam_pub = node.create_publisher(Image, "/vla_mpc/observation/front/image", SENSOR_QOS)
    instr_pub = node.create_publisher(String, "/vla_mpc/instruction", LATCHED_QOS)
    home = np.asarray(spec.home, dtype=float)
    frame = np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    node.create_timer(0.01, lambda: state_pub.publish(cv.joint_state_msg(spec.joint_names, home, stamp=time.time())))
    node.create_timer(0.1, lambda: cam_pub.publish(cv.numpy_to_image(frame, "rgb8", stamp=time.time())))
    instr_pub.publish(String(data=INSTRUCTION))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            end = time.monotonic() + startup_timeout
            while time.monotonic() < end and (len(arrivals) < 200 or not latents) and proc.poll() is None:
                ex.spin_once(timeout_sec=0.01)
            if len(arrivals) < 200:
                raise RuntimeError(f"policy node produced {len(arrivals)} commands in {startup_timeout} s; "
                                   f"log {log_path}: {log_path.read_text(errors='replace')[-1500:]}")
            arrivals.clear()
            n_latents = len(latents)
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                ex.spin_once(timeout_sec=0.005)
            duration = time.monotonic() - t0
        finally:
            proc.send_signal(2)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            ex.shutdown(timeout_sec=1.0)
            node.destroy_node()
            rclpy.shutdown(context=ctx)
            shutil.rmtree(tmp, ignore_errors=True)
    t = np.asarray(arrivals)
    gaps = np.diff(t) * 1e3
    return {"name": "control_stream" if backend == "learned" else f"control_stream_{backend}", "backend": backend,
            "control_rate_setting_hz": rate_hz,
            "control_rate_hz": float(t.size / duration), "control_gap_ms_p50": float(np.percentile(gaps, 50)),
            "control_gap_ms_p99": float(np.percentile(gaps, 99)), "control_gap_ms_max": float(gaps.max()),
            "latent_rate_hz": float((len(latents) - n_latents) / duration), "window_s": duration,
            "node_side_gap_ms_p99": _last_float(node_side, "control_gap_p99_ms"),
            "node_inference_latency_ms": _last_float(node_side, "inference_latency_ms"),
            "load_avg_1min": os.getloadavg()[0],
            "notes": f"policy node subprocess ({backend}, role both, torch_threads 1) -> this process over DDS "
                     "(LOCALHOST); System 2 at 2 Hz on 224x224 frames beside the control loop"}


def _last_float(rows: list[dict], key: str) -> float:
    for r in reversed(rows):
        try:
            return float(r[key])
        except (KeyError, ValueError):
            continue
    return float("nan")


def run(include_control_stream: bool = True, torch_threads: int = 1) -> list[dict]:
    """All policy rows (see the module docstring)."""
    from vla_mpc.core.robot_model import load_robot_spec

    prev = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        rows = [bench_system2(), bench_system1(7, "arm7"), bench_system1_ee(),
                bench_system1(len(load_robot_spec("gr1").joint_names), "gr1"), bench_chunk_joining()]
    finally:
        torch.set_num_threads(prev)
    if include_control_stream:
        rows.append(bench_control_stream())
        rows.append(bench_control_stream(backend="scripted"))  # same load, no learned models: the baseline
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
