"""policy node: the dual-system policy (System 2 latent at ~2 Hz, System 1 chunks streamed at the
control rate). A lifecycle node: ``configure`` loads the backend, ``activate`` starts the loops.

Threads (rclpy's MultiThreadedExecutor collapses at 200 Hz here, ROS_ON_PIP.md, so the fast loop
is not an executor callback):

* the executor (SingleThreadedExecutor, main thread): subscriptions store the newest message and
  its arrival time (``time.monotonic()``); lifecycle services; diagnostics timer;
* ``system2`` thread (role both | system2): every ``1 / latent_rate_hz`` s runs the System 2
  backend on the newest images + instruction (+ privileged object poses for the scripted backend)
  and publishes ``/vla_mpc/latent``;
* ``system1`` thread (role both | system1): every ``1 / chunk_rate_hz`` s, when the inputs are fresh,
  runs the System 1 backend on ``z`` + the newest joint positions + the committed prefix and
  submits the chunk to a :class:`~vla_mpc.core.chunking.ChunkStreamer` (publishes
  ``/vla_mpc/action_chunk``);
  (the system2 and system1 threads run ``inference_niceness`` steps nicer than the control thread,
  0 by default: in the evaluation graph on 2 cores, niceness 5 made a System 1 chunk take 35-75 ms
  against 27-54 ms at 0, and the control loop's p99 tick gap was 15-20 ms either way; torch and the BLAS libraries
  run ``torch_threads`` threads, 1 by default (:func:`~vla_mpc.models.learned.limit_threads`): the
  two inference threads then use the two cores in parallel);
* ``control`` thread (role both | system1): at ``control_rate_hz`` on an absolute schedule samples the
  streamer and publishes ``/vla_mpc/joint_command``; holds (the last commanded, else the last
  measured position) when :func:`~vla_mpc.core.chunking.hold_reason` says an input is stale.

Backends (parameter ``backend``): ``scripted`` (privileged sim object poses, a state machine; not a
learned model) or ``learned`` (a :class:`~vla_mpc.models.policy.DualSystemPolicy` checkpoint, parameter
``checkpoint``: an absolute path or one relative to the package share dir; loaded on configure, and a
missing, corrupt or mismatched checkpoint fails the configure transition with a message naming the
file and the mismatch). System 1 receives the measured joint velocities and, for real-time chunking,
the executing trajectory over the new chunk's overlap as ``prefix``.

With the learned backend an empty instruction means "no task": System 2 publishes no latent and
System 1 holds (the scripted backend publishes an invalid latent, which its System 1 holds on).

Episodes (contract G): on a ``/vla_mpc/episode`` "start" the node resets its backends (the scripted
System 1 is rebuilt with ``noise_seed`` = the episode's seed), clears the chunk streamer, forgets its
inputs and publishes nothing until a fresh joint state arrives; then it holds that measured state
until a fresh latent and chunk exist (it never drags the robot back to the pre-reset pose).

Re-anchoring: when the command stays more than ``max_tracking_error`` from the measured position
for ``TRACKING_ERROR_PERSIST_S`` while following chunks, the robot is not following (the safety
monitor refused a stream that continued from a pre-reset pose, a protective stop, a hand-guided or
blocked arm). The node then drops the chunks in flight and holds the measured position, and System 1
plans its next chunk from there. Without it, a stream planned from its own committed prefix never
meets the robot again (measured: 2 of 197 recorded expert episodes were lost this way when the
episode reset raced a stale joint state; the safety monitor refused every command to the end).

Topics: subscribes ``/joint_states`` (sensor_msgs/JointState), ``/vla_mpc/observation/<camera>/image``
(sensor_msgs/Image rgb8), ``/vla_mpc/instruction`` (std_msgs/String, latched),
``/vla_mpc/episode`` (std_msgs/String JSON, latched),
``/vla_mpc/sim/object_poses`` (visualization_msgs/MarkerArray in base_link, privileged),
``/vla_mpc/latent`` (role system1 only). Publishes ``/vla_mpc/latent`` (Float32MultiArray, dims
"tokens", "dim"), ``/vla_mpc/action_chunk`` (JointTrajectory over joint_names; header stamp = the
chunk's start on the node clock), ``/vla_mpc/joint_command`` (JointState, position over joint_names),
``/vla_mpc/policy/keypoints`` (MarkerArray in base_link: where a learned System 2 with a keypoint head
locates the instruction's object and its goal, each time it runs), ``/diagnostics``. Parameters: see ``config/params/policy.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_mpc.models.base import LATENT_LABELS
from vla_mpc.core.chunking import (
    INTERPOLATIONS, ChunkStreamer, ChunkStreamerConfig, Freshness, HoldReason, execution_defaults, hold_reason,
)
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.diagnostics import POLICY_STATUS_NAME
from vla_mpc.ros.params import declare
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, STATE_SUB_QOS, STREAM_QOS
from vla_mpc.ros.runtime import run_node

ROLES = ("both", "system2", "system1")
#: How long [s] the command must stay ``max_tracking_error`` from the measured position before the
#: node re-anchors: longer than a stale joint state or a clamp burst, shorter than a wasted episode.
TRACKING_ERROR_PERSIST_S = 0.3
BACKENDS = ("scripted", "learned")


def load_backends(
    backend: str,
    robot_config: str,
    chunk_size: int,
    chunk_dt: float,
    speed_scale: float,
    *,
    checkpoint: str = "",
    scripted_noise_std: float = 0.0,
    scripted_random_actions: bool = False,
    need_system2: bool = True,
    rtc_prefix_steps: int = 0,
    goal_readings: int = -1,
):
    """Build ``(spec, system2, system1_factory)`` for ``backend``.

    ``system1_factory(seed=0)`` builds a System 1 backend (each thread needs its own: the
    kinematics model is not thread-safe); ``seed`` is the scripted backend's ``noise_seed`` (the
    episode seed) and the learned backend's sampling seed.

    Args:
        backend: ``scripted`` | ``learned``.
        robot_config: robot name or config path.
        chunk_size / chunk_dt / speed_scale: scripted System 1 settings (a learned checkpoint
            brings its own chunk size and dt, which must match; see :class:`PolicyNode`).
        checkpoint: learned: checkpoint directory, absolute or relative to the share dir.
        rtc_prefix_steps: learned: committed steps a new chunk inpaints (``LearnedSystem1``'s
            ``prefix_steps``); 0: :data:`~vla_mpc.models.learned.RTC_PREFIX_STEPS`.
        goal_readings: learned: System 2 holds the median of its first this-many goal readings per
            instruction (``LearnedSystem2``'s ``goal_readings``); -1: its default, 0: off.
        scripted_noise_std / scripted_random_actions: scripted perturbations (contract H), passed
            to ``ScriptedSystem1Config`` fields ``noise_std`` / ``random_actions`` when it has them.
        need_system2: learned: also build System 2 (loads the sentence model); False for role system1.

    Raises:
        ValueError: unknown backend, a perturbation the scripted config does not support, or an
            empty ``checkpoint`` for the learned backend.
        vla_mpc.models.checkpoint.CheckpointError: missing, corrupt or mismatched checkpoint.
        vla_mpc.core.config.ConfigError: bad robot config.
    """
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    spec = load_robot_spec(robot_config)
    if backend == "scripted":
        from vla_mpc.models.scripted import ScriptedSystem1, ScriptedSystem1Config, ScriptedSystem2

        kwargs: dict[str, Any] = {"chunk_size": chunk_size, "dt": chunk_dt, "speed_scale": speed_scale}
        known = {f.name for f in dataclasses.fields(ScriptedSystem1Config)}
        for name, value, off in (("noise_std", scripted_noise_std, 0.0), ("random_actions", scripted_random_actions, False)):
            if name in known:
                kwargs[name] = value
            elif value != off:
                raise ValueError(f"this ScriptedSystem1Config has no {name!r}: scripted_{name} unsupported")
        cfg = ScriptedSystem1Config(**kwargs)

        def scripted_factory(seed: int = 0) -> ScriptedSystem1:
            c = dataclasses.replace(cfg, noise_seed=int(seed)) if "noise_seed" in known else cfg
            return ScriptedSystem1(spec, RobotModel(spec), c)

        return spec, ScriptedSystem2(), scripted_factory
    if backend == "learned":
        from vla_mpc.models.learned import RTC_PREFIX_STEPS, LearnedSystem1, load_learned_backends
        from vla_mpc.paths import resolve

        if not checkpoint:
            raise ValueError("backend 'learned' needs the parameter 'checkpoint' (a policy checkpoint directory)")
        if rtc_prefix_steps < 0:
            raise ValueError(f"rtc_prefix_steps must be 0 (the default) or >= 1, got {rtc_prefix_steps}")
        prefix_steps = int(rtc_prefix_steps) or RTC_PREFIX_STEPS
        if goal_readings < -1:
            raise ValueError(f"goal_readings must be -1 (the default), 0 (off) or >= 1, got {goal_readings}")
        policy, system2, _ = load_learned_backends(resolve(checkpoint), spec.joint_names, need_system2=need_system2,
                                                   goal_readings=None if goal_readings == -1 else int(goal_readings))
        return spec, system2, lambda seed=0: LearnedSystem1(policy, seed, prefix_steps)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


class _Loop(threading.Thread):
    """Calls ``body(scheduled)`` every ``period`` s on an absolute ``time.monotonic()`` schedule
    until ``stop()``; ``scheduled`` is the tick's time on the schedule, not the moment the thread
    woke. A tick up to two periods late runs at once (keeps the average rate when the OS delays the
    thread); further behind, the missed ticks are dropped, not bunched. Exceptions are reported
    through ``on_error`` and the loop goes on."""

    def __init__(self, name: str, period: float, body: Callable[[float], None], on_error: Callable[[str], None],
                 niceness: int = 0):
        super().__init__(name=name, daemon=True)
        self.period, self.body, self.on_error, self.niceness = period, body, on_error, niceness
        self._halt = threading.Event()

    def run(self) -> None:
        if self.niceness > 0:  # Linux: per-thread niceness; raising it needs no privileges
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.niceness)
            except (AttributeError, OSError):
                pass
        next_t = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if now - next_t > 2.0 * self.period:  # far behind: drop the missed ticks
                next_t = now - ((now - next_t) % self.period)
            try:
                self.body(next_t)
            except Exception as exc:  # noqa: BLE001 - a backend error must not kill the loop
                self.on_error(f"{self.name}: {type(exc).__name__}: {exc}")
            next_t += self.period
            wait = next_t - time.monotonic()
            if wait > 0.0:
                self._halt.wait(wait) if wait > 0.002 else time.sleep(wait)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=2.0)


class PolicyNode(LifecycleNode):
    """Lifecycle shell around the System 2 / System 1 backends and the chunk streamer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("policy", **kwargs)
        d = lambda *a, **k: declare(self, *a, **k)  # noqa: E731
        d("robot_config", "panda", "Robot name (config/<name>.yaml) or config path.", read_only=True)
        d("backend", "scripted", f"Policy backend: {'|'.join(BACKENDS)} (scripted = privileged sim poses).", read_only=True)
        d("checkpoint", "", "learned backend: policy checkpoint directory (absolute, or relative to the package share dir).", read_only=True)
        d("torch_threads", 1, "learned backend: torch intra-op and BLAS threads (System 2 and System 1 run in parallel threads).", read_only=True, min_value=1, max_value=64)
        d("scripted_noise_std", 0.0, "scripted backend: std of the smooth random perturbation added to chunks [rad, m].", read_only=True, min_value=0.0, max_value=1.0)
        d("scripted_random_actions", False, "scripted backend: random chunks inside the joint limits (world-model data).", read_only=True)
        d("role", "both", "both | system2 | system1: which systems this process runs.", read_only=True)
        self.autostart = d("autostart", False, "Configure and activate at start-up (else wait for lifecycle transitions).", read_only=True)
        d("control_rate_hz", 100.0, "Joint command rate [Hz].", read_only=True, min_value=1.0, max_value=1000.0)
        d("latent_rate_hz", 2.0, "System 2 rate [Hz].", read_only=True, min_value=0.05, max_value=50.0)
        d("chunk_rate_hz", 0.0, "System 1 chunk inference rate [Hz]; 0 = the backend's default (scripted 10 Hz, "
          "learned 3.33 Hz: 6 of 16 steps executed per chunk).", read_only=True, min_value=0.0, max_value=200.0)
        d("chunk_size", 16, "Steps per action chunk.", read_only=True, min_value=2, max_value=1024)
        d("chunk_dt", 0.05, "Time between chunk steps [s].", read_only=True, min_value=0.001, max_value=1.0)
        d("blend_steps", 4, "Chunk steps cross-faded when a new chunk joins (0 = naive switching).", read_only=True, min_value=0, max_value=1024)
        d("interpolation", "auto", f"Between chunk steps: {' | '.join(INTERPOLATIONS)}, or auto = the backend's "
          "default (scripted linear, learned pchip).", read_only=True)
        d("rtc_prefix_steps", 0, "Learned backend: steps of the executing chunk a new chunk inpaints (real-time "
          "chunking); 0 = the default (2: the frozen steps only), 16 = the whole overlap.", read_only=True, min_value=0, max_value=1024)
        d("goal_readings", -1, "Learned backend with role points: System 2 holds the median of its first N goal readings "
          "per instruction (the goal is fixed in base_link); -1 = the default (3), 0 = off.", read_only=True,
          min_value=-1, max_value=1000)
        d("speed_scale", 0.3, "Scripted backend: fraction of the joint velocity limits used.", read_only=True, min_value=0.01, max_value=1.0)
        d("max_latent_age_s", 1.5, "Hold when the latent z is older than this [s].", min_value=0.01, max_value=60.0)
        d("max_state_age_s", 0.1, "Hold when the newest joint state is older than this [s].", min_value=0.001, max_value=10.0)
        d("max_tracking_error", 0.5, "Re-anchor to the measured position when any joint's command stays this far from it [rad or m] (0 = off).", min_value=0.0, max_value=10.0)
        d("max_image_age_s", 0.5, "Hold when the newest camera frame is older than this [s].", min_value=0.001, max_value=60.0)
        d("require_camera", True, "Hold (and skip System 2) without a fresh camera frame.")
        d("cameras", ["front"], "Camera names; frames from /vla_mpc/observation/<name>/image.", read_only=True)
        d("inference_niceness", 0, "Niceness added to the System 2 / System 1 threads (0 = off; raise it on a CPU crowded by other processes so the control loop wins).", read_only=True, min_value=0, max_value=19)
        d("diagnostics_rate_hz", 1.0, "Rate of /diagnostics [Hz].", read_only=True, min_value=0.1, max_value=50.0)
        self._lock = threading.Lock()
        self._loops: list[_Loop] = []
        self._entities: list[Any] = []
        self._active = False
        self._reset_inputs()
        if self.autostart:
            self._autostart_timer = self.create_timer(0.0, self._do_autostart)

    # --------------------------------------------------------------------------- lifecycle
    def _do_autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _reset_inputs(self) -> None:
        self._q: np.ndarray | None = None  # (n,) over joint_names [rad or m]
        self._qd: np.ndarray | None = None  # (n,) velocities [rad/s or m/s], None if not published
        self._episode_gen = getattr(self, "_episode_gen", 0)  # bumped on each episode start
        self._q_time: float | None = None
        self._images: dict[str, Image] = {}
        self._image_time: float | None = None
        self._instruction = ""
        self._objects: dict[str, np.ndarray] = {}
        self._z: np.ndarray | None = None
        self._z_time: float | None = None
        self._last_command: np.ndarray | None = None
        self._anchor_to_measured = True
        self._hold: HoldReason | None = HoldReason.NO_STATE
        self._status2 = "not run"
        self._status1 = "not run"
        self._last_error = ""
        self._tick_times: list[float] = []
        self._infer_latency = 0.0
        self._threads: dict[str, int] = {}  # limit_threads() of the learned backend
        self._diverged_since: float | None = None  # monotonic time the command left max_tracking_error
        self._reanchors = 0

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = lambda n: self.get_parameter(n).value  # noqa: E731
        try:
            self.role = p("role")
            if self.role not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
            rate, interpolation = execution_defaults(p("backend"))  # ValueError: unknown backend
            if p("chunk_rate_hz") > 0.0:
                rate = p("chunk_rate_hz")
            if rate < 0.1:
                raise ValueError(f"chunk_rate_hz must be 0 (the backend's default) or >= 0.1 Hz, got {rate}")
            if p("interpolation") != "auto":
                interpolation = p("interpolation")
            if interpolation not in INTERPOLATIONS:
                raise ValueError(f"interpolation must be auto or one of {INTERPOLATIONS}, got {interpolation!r}")
            self._chunk_rate_hz = float(rate)
            if p("backend") == "learned":
                from vla_mpc.models.learned import limit_threads

                self._threads = limit_threads(p("torch_threads"))  # torch and BLAS (System 1's IK)
            self.spec, self.system2, self._s1_factory = load_backends(
                p("backend"), p("robot_config"), p("chunk_size"), p("chunk_dt"), p("speed_scale"),
                checkpoint=p("checkpoint"), scripted_noise_std=p("scripted_noise_std"),
                scripted_random_actions=p("scripted_random_actions"), need_system2=self.role != "system1",
                rtc_prefix_steps=p("rtc_prefix_steps"), goal_readings=p("goal_readings"),
            )
            self.system1 = self._s1_factory() if self.role != "system2" else None
            self._backend = p("backend")
            if self.system1 is not None and (
                self.system1.chunk_size != p("chunk_size") or not math.isclose(self.system1.dt, p("chunk_dt"))
            ):
                raise ValueError(
                    f"backend chunk_size {self.system1.chunk_size} / dt {self.system1.dt} s differ from the "
                    f"parameters chunk_size {p('chunk_size')} / chunk_dt {p('chunk_dt')}"
                )
            if self.system2 is not None and hasattr(self.system2, "warmup"):
                self.system2.warmup()  # the sentence model loads here, not on the first System 2 tick
            self.names = tuple(self.spec.joint_names)
            self.streamer = ChunkStreamer(ChunkStreamerConfig(
                action_dim=len(self.names), dt=p("chunk_dt"), blend_steps=p("blend_steps"),
                interpolation=interpolation,
            ))
            self.freshness = Freshness(p("max_latent_age_s"), p("max_state_age_s"), p("max_image_age_s"), p("require_camera"))
            self._max_tracking_error = float(p("max_tracking_error"))  # read once: the control loop uses it
        except Exception as exc:  # noqa: BLE001 - report the reason, stay unconfigured
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._reset_inputs()
        self._join_index: dict[tuple[str, ...], np.ndarray] = {}
        sub = lambda *a: self._entities.append(self.create_subscription(*a))  # noqa: E731
        sub(JointState, "/joint_states", self._on_joint_state, STATE_SUB_QOS)
        for cam in p("cameras"):
            sub(Image, f"/vla_mpc/observation/{cam}/image", lambda m, c=cam: self._on_image(c, m), SENSOR_QOS)
        sub(String, "/vla_mpc/instruction", self._on_instruction, LATCHED_QOS)
        sub(String, "/vla_mpc/episode", self._on_episode, LATCHED_QOS)
        sub(MarkerArray, "/vla_mpc/sim/object_poses", self._on_objects, STATE_SUB_QOS)
        if self.role == "system1":
            sub(Float32MultiArray, "/vla_mpc/latent", self._on_latent, STREAM_QOS)
        self.latent_pub = self.create_publisher(Float32MultiArray, "/vla_mpc/latent", STREAM_QOS)
        self.keypoint_pub = self.create_publisher(MarkerArray, "/vla_mpc/policy/keypoints", STREAM_QOS)
        self.chunk_pub = self.create_publisher(JointTrajectory, "/vla_mpc/action_chunk", STREAM_QOS)
        self.command_pub = self.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._entities += [self.latent_pub, self.chunk_pub, self.command_pub, self.diag_pub]
        self._entities.append(self.create_timer(1.0 / p("diagnostics_rate_hz"), self._publish_diagnostics))
        self.get_logger().info(
            f"configured: backend {p('backend')}, role {self.role}, robot {self.spec.name}, "
            f"control {p('control_rate_hz')} Hz, latent {p('latent_rate_hz')} Hz, chunks {self._chunk_rate_hz:g} Hz, "
            f"{self.streamer.config.interpolation} interpolation"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = lambda n: self.get_parameter(n).value  # noqa: E731
        if self.system2 is not None:
            self.system2.reset()
        if self.system1 is not None:
            self.system1.reset()
        self.streamer.clear()
        self._last_command = None
        self._anchor_to_measured = True
        self._active = True
        nice = p("inference_niceness")
        if self.role in ("both", "system2"):
            self._loops.append(_Loop("system2", 1.0 / p("latent_rate_hz"), self._system2_step, self._report, nice))
        if self.role in ("both", "system1"):
            self._loops.append(_Loop("system1", 1.0 / self._chunk_rate_hz, self._system1_step, self._report, nice))
            self._loops.append(_Loop("control", 1.0 / p("control_rate_hz"), self._control_step, self._report))
        for loop in self._loops:
            loop.start()
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loops()
        self.get_logger().info("inactive")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loops()
        self._destroy_entities()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the loops (called by ``run_node`` at exit and by the shutdown transition)."""
        self._stop_loops()

    def _stop_loops(self) -> None:
        self._active = False
        for loop in self._loops:
            loop.stop()
        self._loops = []

    def _destroy_entities(self) -> None:
        for e in self._entities:
            destroy = {
                "Subscription": self.destroy_subscription, "Publisher": self.destroy_publisher,
                "Timer": self.destroy_timer,
            }.get(type(e).__name__)
            if destroy is not None:
                destroy(e)
        self._entities = []

    def _report(self, message: str) -> None:
        if not self.context.ok():
            return  # shutting down (SIGINT / SIGTERM): publishes fail until close() stops the loops
        self._last_error = message
        self.get_logger().error(message, throttle_duration_sec=2.0)

    # --------------------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        names = tuple(msg.name)
        idx = self._join_index.get(names)
        if idx is None:
            missing = [j for j in self.names if j not in names]
            if missing:
                self.get_logger().warning(f"/joint_states lacks joints {missing}", throttle_duration_sec=5.0)
                return
            idx = self._join_index[names] = np.array([names.index(j) for j in self.names])
        q = np.asarray(msg.position, dtype=np.float64)
        if q.shape != (len(names),) or not np.all(np.isfinite(q[idx])):
            self.get_logger().warning("/joint_states: malformed or non-finite positions", throttle_duration_sec=5.0)
            return
        v = np.asarray(msg.velocity, dtype=np.float64)
        qd = v[idx] if v.shape == (len(names),) and np.all(np.isfinite(v[idx])) else None
        self._q, self._qd, self._q_time = q[idx], qd, time.monotonic()

    def _on_image(self, camera: str, msg: Image) -> None:
        self._images[camera] = msg  # decoded by System 2, not in the executor
        self._image_time = time.monotonic()

    def _on_instruction(self, msg: String) -> None:
        if msg.data != self._instruction:
            self.get_logger().info(f"instruction: {msg.data!r}")
        self._instruction = msg.data

    def _on_episode(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
            kind = event["event"]
        except (ValueError, KeyError, TypeError) as exc:
            self.get_logger().warning(f"/vla_mpc/episode: bad message {msg.data[:200]!r}: {exc}", throttle_duration_sec=5.0)
            return
        if kind != "start":
            return
        seed = event.get("seed", 0)
        seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else 0
        with self._lock:
            self._episode_gen += 1
            self._z = self._z_time = None
            self._q = self._qd = self._q_time = None
            self._images, self._image_time = {}, None
            self._last_command = None
            self._anchor_to_measured = True
        if self.system2 is not None:
            self.system2.reset()
        if self.system1 is not None:
            self.system1 = self._s1_factory(seed)
            self.system1.reset()
        self.streamer.clear()
        self.get_logger().info(f"episode {event.get('episode')} start (seed {seed}): backends and chunk streamer reset")

    def _on_objects(self, msg: MarkerArray) -> None:
        try:
            objs = cv.markers_to_objects(msg)
        except ValueError as exc:
            self.get_logger().warning(f"/vla_mpc/sim/object_poses: {exc}", throttle_duration_sec=5.0)
            return
        self._objects = {name: o.position for name, o in objs.items()}

    def _on_latent(self, msg: Float32MultiArray) -> None:
        try:
            z, labels = cv.float32_tensor_to_numpy(msg)
        except ValueError as exc:
            self.get_logger().warning(f"/vla_mpc/latent: {exc}", throttle_duration_sec=5.0)
            return
        if labels != LATENT_LABELS:
            self.get_logger().warning(f"/vla_mpc/latent dims {labels}, expected {LATENT_LABELS}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._z, self._z_time = z, time.monotonic()

    # --------------------------------------------------------------------------- the loops
    def _system2_step(self, _scheduled: float | None = None) -> None:
        now = time.monotonic()
        images_fresh = self._image_time is not None and now - self._image_time <= self.freshness.max_image_age_s
        if self.freshness.require_camera and not images_fresh:
            self._status2 = "waiting for a fresh camera frame"
            return
        images = {}
        for cam, msg in list(self._images.items()):
            try:
                images[cam] = cv.image_to_rgb(msg)
            except ValueError as exc:
                self.get_logger().warning(f"camera {cam}: {exc}", throttle_duration_sec=5.0)
        if self._backend == "learned" and not self._instruction.strip():
            # No task (e.g. "" between episodes, contract G): publish no latent, System 1 holds.
            self._status2 = "no instruction: no latent, System 1 holds"
            with self._lock:
                self._z = self._z_time = None
            return
        gen = self._episode_gen
        z = np.asarray(self.system2.infer(images, self._instruction, dict(self._objects)), dtype=np.float32)
        self._status2 = getattr(self.system2, "status", "ok")
        with self._lock:
            if gen != self._episode_gen:
                return  # an episode started while this latent was computed from the old one
            self._z, self._z_time = z, time.monotonic()
        self.latent_pub.publish(cv.float32_tensor_msg(z, LATENT_LABELS))
        keypoints = getattr(self.system2, "keypoints", None)
        if keypoints is not None:
            try:
                self.keypoint_pub.publish(cv.keypoint_markers(keypoints, self.get_clock().now().to_msg()))
            except ValueError as exc:
                self.get_logger().warning(f"System 2 keypoints: {exc}", throttle_duration_sec=5.0)

    def _inputs_hold_reason(self, now: float) -> HoldReason | None:
        with self._lock:
            z_time = self._z_time
        return hold_reason(self.freshness, now, z_time, self._q_time, self._image_time)

    def _system1_step(self, _scheduled: float | None = None) -> None:
        now = time.monotonic()
        if self._inputs_hold_reason(now) is not None:
            return
        with self._lock:
            z, q, qd, q_time, gen = self._z, self._q, self._qd, self._q_time, self._episode_gen
        if z is None or q is None:
            return
        system1 = self.system1
        # The chunk is indexed from the observation it is planned from, as in training (a row's
        # chunk starts at its joint state's time; real-time chunking, Black et al. 2025): its first
        # steps are the executing trajectory's (inpainted from the prefix) and the ones that pass
        # during inference are dropped on submit. Starting it at "now + latency" instead shifted
        # every chunk against the prefix it inpaints: with 30 ms of System 1 latency, ROS-free with
        # the safety filter, reach fell from 14/15 to 11/15 (session 9).
        t_start = min(now, q_time)  # q_time is set with q
        # Real-time chunking: the executing trajectory over the new chunk's overlap (held: the target).
        prefix = self.streamer.rtc_prefix(t_start, system1.chunk_size)
        t0 = time.monotonic()
        chunk = system1.infer(z, q, prefix, qd)
        done = time.monotonic()
        self._infer_latency = 0.8 * self._infer_latency + 0.2 * (done - t0)
        with self._lock:
            if gen != self._episode_gen:
                return  # stale: computed from the previous episode's inputs
        self.streamer.submit(chunk, max(t_start, done) if prefix is None else t_start, t_now=done)
        self._status1 = getattr(system1, "status", "ok")
        stamp_ros = self.get_clock().now().nanoseconds * 1e-9 + (t_start - done)
        times = self.streamer.config.dt * np.arange(chunk.shape[0])
        self.chunk_pub.publish(cv.trajectory_msg(self.names, chunk, times, stamp=max(0.0, stamp_ros)))

    def _control_step(self, scheduled: float | None = None) -> None:
        """One control tick: sample the stream at the tick's *scheduled* time (default now).

        Each command then carries exactly one control period of motion whatever the thread's
        wake-up jitter, which is what the safety monitor assumes (it limits velocity and
        acceleration per command over ``1 / rate_hz``): sampled at the wake-up time, a tick 2 ms
        late at 1 rad/s looks like 20 rad/s^2 to it.
        """
        gen = self._episode_gen
        wake = time.monotonic()
        now = wake if scheduled is None else min(wake, scheduled)
        reason = self._inputs_hold_reason(now)
        if reason is None and (self.streamer.empty or self.streamer.holding):
            reason = HoldReason.NO_CHUNK  # inputs fresh again; System 1 has not submitted yet
        # Until the first chunk of an episode (or after activation) is followed, the hold tracks the
        # newest measured position: the robot may have been moved (the sim's episode reset, a
        # hand-guided robot), and a hold on a position measured before that is a command far from
        # the robot, which the safety monitor rightly refuses.
        # The flag is set by the episode handler / activation (other threads) and only cleared here,
        # so a control tick racing with an episode start cannot re-arm a hold on the old command.
        anchor = self._anchor_to_measured
        if reason is not None and (anchor or not self.streamer.holding):
            target = self._q if anchor or self._last_command is None else self._last_command
            if target is None:
                self._hold = reason
                return  # nothing known to hold yet: publish nothing
            self.streamer.hold(target, now)
        elif reason is None and gen == self._episode_gen:
            self._anchor_to_measured = False
        if reason != self._hold:
            self.get_logger().info(f"holding: {reason.value}" if reason is not None else "following chunks")
            self._hold = reason
        target = self.streamer.sample(now)
        if reason is None and self._reanchor_if_diverged(target, now):
            target = self.streamer.sample(now)
        self._last_command = target
        self.command_pub.publish(cv.joint_state_msg(self.names, target, stamp=self.get_clock().now().to_msg()))
        self._tick_times.append(wake)  # diagnostics: the thread's real tick periods
        if len(self._tick_times) > 2000:
            del self._tick_times[:1000]

    def _reanchor_if_diverged(self, target: np.ndarray, now: float) -> bool:
        """Module docstring, "Re-anchoring": True when the stream was dropped for a hold on the
        measured position (the newest, fresh: the caller follows chunks only on fresh inputs)."""
        limit = self._max_tracking_error
        q = self._q
        if limit <= 0.0 or q is None:
            return False
        err = np.abs(target - q)
        if float(np.max(err)) <= limit:
            self._diverged_since = None
            return False
        if self._diverged_since is None:
            self._diverged_since = now
            return False
        if now - self._diverged_since < TRACKING_ERROR_PERSIST_S:
            return False
        worst = int(np.argmax(err))
        with self._lock:
            self._episode_gen += 1  # chunks in flight were planned from the abandoned stream
            self._anchor_to_measured = True
        self.streamer.hold(q, now)
        self._diverged_since = None
        self._reanchors += 1
        self.get_logger().warning(
            f"{self.names[worst]}: command {err[worst]:.3f} from the measured position for "
            f"{TRACKING_ERROR_PERSIST_S} s (max_tracking_error {limit}): the robot is not following; "
            f"re-anchored to the measured position")
        return True

    def _publish_diagnostics(self) -> None:
        ticks = np.diff(np.asarray(self._tick_times[-500:]))
        st = DiagnosticStatus(name=POLICY_STATUS_NAME, hardware_id=self.spec.name)
        hold = self._hold.value if self._hold is not None else ""
        st.level = DiagnosticStatus.OK if self._active and not hold else DiagnosticStatus.WARN
        if not self._active:
            st.message = "inactive"
        elif self.role == "system2":
            st.level, st.message = DiagnosticStatus.OK, f"system2: {self._status2}"
        else:
            st.message = f"holding: {hold}" if hold else "following chunks"
        st.values = [
            KeyValue(key="role", value=self.role),
            KeyValue(key="system2", value=self._status2),
            KeyValue(key="system1", value=self._status1),
            KeyValue(key="inference_latency_ms", value=f"{self._infer_latency * 1e3:.2f}"),
            KeyValue(key="threads", value=json.dumps(self._threads)),
            KeyValue(key="control_gap_p99_ms", value=f"{np.percentile(ticks, 99) * 1e3:.2f}" if ticks.size else "n/a"),
            KeyValue(key="reanchors", value=str(self._reanchors)),
            KeyValue(key="last_error", value=self._last_error),
        ]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Console script ``policy``."""
    # Let the control thread get the GIL back quickly (default switch interval 5 ms = one 200 Hz tick).
    sys.setswitchinterval(0.0005)
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
