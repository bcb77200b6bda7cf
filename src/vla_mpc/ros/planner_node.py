"""latent_mpc_planner: sampling MPC over a world model (CEM or MPPI), imagined rollouts for rviz.

Modes (parameter ``mode``, changeable at run time):

* ``vla`` (default): System 1 drives. Each cycle the current ``/vla_mpc/action_chunk`` is turned
  into per-step actions (``targets_to_actions``), imagined through the world model and its
  predicted cost (constraints + effort, plus the goal term when a goal is set) is published on
  ``/vla_mpc/planner/cost``; the chunk's end-effector path goes to ``/vla_mpc/imagined_rollouts``.
* ``mpc``: the planner drives toward the goal. It publishes the plan on ``/vla_mpc/plan`` and a
  joint target on ``/vla_mpc/joint_command``: the plan's position at the step reached one replan
  period from now (``max(1, round(1 / (replan_rate_hz * dt)))`` steps ahead).
* ``hybrid``: System 1's chunk seeds the sampling mean and is one prior sample in every iteration;
  the objective adds ``reference_weight * ||a - a_chunk||^2`` (the VLA proposes, the world model
  checks and refines); the refined plan goes to ``/vla_mpc/plan`` (System 1 or the safety monitor
  decides what to execute).

World models (parameters ``world_model`` and ``checkpoint``, read-only):

* ``kinematic`` (default): ``KinematicWorldModel``, latent = joint positions. Goals come from the
  parameters ``goal_joint_positions`` (over the robot's ``joint_names`` [rad, m for fingers]) and/or
  ``goal_position`` (end-effector [m] in ``base_link``). With a ``checkpoint`` (a JEPA world-model
  directory, ``vla_mpc.models.jepa.save_world_model``), a goal image becomes a joint-space +
  end-effector goal through the learned encoder and its proprio head
  (``JepaWorldModel.decode_joint_positions``); without one, goal images are logged and ignored.
* With ``goal_pose_checkpoint`` (``python -m vla_mpc.train goal_pose``), a goal image becomes an
  end-effector goal through :class:`vla_mpc.models.goal_pose.GoalPoseEstimator` (any world model;
  it takes precedence over the JEPA decode for ``kinematic``).
* ``jepa`` (needs ``checkpoint``): ``JepaWorldModel``: the latent is the learned image latent plus
  the joint positions; the current image comes from ``/vla_mpc/observation/<camera>/image``
  (``camera`` parameter; no planning on images older than ``image_timeout_s``), the goal image is
  encoded by the same encoder and the objective is V-JEPA 2-AC's L1 latent energy plus the
  kinematic constraint costs. ``dt`` is the checkpoint's (the predictor's step).

A goal image replaces the parameter goal; setting ``goal_joint_positions`` / ``goal_position``
replaces the image goal.

Debugging: with ``debug_output_dir`` set, the node records every chosen plan's imagined
end-effector path and the executed end-effector path (forward kinematics of ``/joint_states``)
and writes ``imagined_vs_executed.png`` (+ ``.npz``) there at shutdown
(``vla_mpc.planning.visualize.PathRecorder``).

Topics: in ``/joint_states`` (JointState, best-effort sub), ``/vla_mpc/action_chunk``
(JointTrajectory, absolute joint targets; joints it does not name hold), ``/vla_mpc/goal_image``
(Image, latched), ``/vla_mpc/observation/<camera>/image`` (Image, sensor QoS; ``jepa`` only);
out ``/vla_mpc/planner/cost`` (Float32, the chunk's cost in ``vla``, the plan's
otherwise), ``/vla_mpc/plan`` (JointTrajectory over ``joint_names``, absolute targets at
``(k + 1) * dt``, header stamp = plan time), ``/vla_mpc/joint_command`` (JointState, ``mpc`` only),
``/vla_mpc/imagined_rollouts`` (MarkerArray in ``base_link``: DELETEALL, then LINE_STRIPs of the
end-effector path with H + 1 points, ns ``samples`` ids 0..k-1 coloured green -> red by cost, ns
``plan`` id 0 blue and thicker), ``/diagnostics`` (1 Hz: mode, plan_ms, cost, goal).

Planning runs on a worker thread at ``replan_rate_hz`` with warm start (the previous mean shifted
one step), so subscriptions on the executor are never blocked. No planning on stale inputs:
joint states older than ``state_timeout_s`` or chunks older than ``chunk_timeout_s`` are ignored.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
import time
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_mpc.core.robot_model import RobotModel, load_robot_spec
from vla_mpc.models.world_model import (
    Goal,
    KinematicCostConfig,
    KinematicWorldModel,
    actions_to_targets,
    targets_to_actions,
)
from vla_mpc.planning.cem import CEM, CEMConfig
from vla_mpc.planning.common import PlanResult
from vla_mpc.planning.mppi import MPPI, MPPIConfig
from vla_mpc.planning.visualize import PathRecorder
from vla_mpc.ros import conversions as conv
from vla_mpc.ros.params import declare
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, STATE_SUB_QOS, STREAM_QOS
from vla_mpc.ros.runtime import run_node

MODES = ("vla", "mpc", "hybrid")
PLANNERS = ("cem", "mppi")
WORLD_MODELS = ("kinematic", "jepa")
PLAN_COLOUR = (0.1, 0.5, 1.0, 1.0)  # chosen plan: blue, drawn thicker


def cost_colour(rank: float) -> tuple[float, float, float, float]:
    """``rank`` in [0, 1] (0 = lowest cost of the drawn samples, 1 = highest) -> RGBA, green to red."""
    r = float(min(max(rank, 0.0), 1.0))
    return (r, 1.0 - r, 0.0, 0.8)


class LatentMpcPlanner(Node):
    """The ``latent_mpc_planner`` node (see module docstring). Parameters and topics: README /
    ``config/params/latent_mpc_planner.yaml``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("latent_mpc_planner", **kwargs)
        self._lock = threading.Lock()
        p = self._declare_parameters()
        torch.set_num_threads(p["torch_threads"])
        self.spec = load_robot_spec(p["robot_config"])
        self.robot = RobotModel(self.spec)
        self.frame_id = self.spec.base_link
        self.dt = p["dt"]
        self.horizon = p["horizon"]
        cost_cfg = KinematicCostConfig(
            goal_weight=p["goal_weight"],
            ee_goal_weight=p["ee_goal_weight"],
            running_goal_weight=p["running_goal_weight"],
            action_weight=p["action_weight"],
            reference_weight=p["reference_weight"],
            joint_limit_margin=p["joint_limit_margin"],
            joint_limit_weight=p["joint_limit_weight"],
            table_height=p["table_height"] if p["table_enabled"] else None,
            keep_out_boxes=KinematicCostConfig.boxes_from_flat(self._array_param("keep_out_boxes")),
            cartesian_clearance=p["cartesian_clearance"],
            cartesian_weight=p["cartesian_weight"],
        )
        self.world_model = p["world_model"]
        self.encoder = None  # JepaWorldModel whose encoder turns goal images into goals
        if p["checkpoint"]:
            from vla_mpc.models.jepa import JepaWorldModel

            self.encoder = JepaWorldModel.from_checkpoint(
                Path(p["checkpoint"]).expanduser(), robot=self.robot, cost_config=cost_cfg,
                latent_weight=p["latent_weight"], running_goal_weight=p["running_goal_weight"])
            if self.world_model == "jepa" and abs(self.encoder.dt - self.dt) > 1e-9:
                self.get_logger().warning(f"dt {self.dt} s replaced by the world model's step {self.encoder.dt} s")
                self.dt = self.encoder.dt
        self.goal_pose = None  # GoalPoseEstimator: goal image -> end-effector goal
        if p["goal_pose_checkpoint"]:
            from vla_mpc.models.goal_pose import load_goal_pose

            from vla_mpc.paths import resolve

            self.goal_pose = load_goal_pose(resolve(p["goal_pose_checkpoint"]))
            if self.goal_pose.config.robot != self.robot.spec.name:
                raise ValueError(f"goal_pose_checkpoint is for robot {self.goal_pose.config.robot!r}, "
                                 f"this planner drives {self.robot.spec.name!r}")
        if self.world_model == "jepa":
            self.model = self.encoder
        else:
            self.model = KinematicWorldModel.from_robot_model(self.robot, self.dt, cost_cfg)
        low, high = self.model.action_bounds(p["velocity_scale"])
        max_norm = p["max_norm"] if p["max_norm"] > 0 else None
        top_k = p["num_rollout_markers"]
        if p["planner"] == "cem":
            cfg = CEMConfig(
                num_samples=p["num_samples"], num_elites=p["num_elites"], iterations=p["iterations"],
                horizon=self.horizon, momentum_mean=p["momentum_mean"], momentum_std=p["momentum_std"],
                init_std=p["init_std"], min_std=p["min_std"], max_norm=max_norm,
                warm_start_tail=p["warm_start_tail"], top_k=top_k,
            )
            self.planner: CEM | MPPI = CEM(cfg, self.model.action_dim, low, high, seed=p["seed"])
        else:
            cfg = MPPIConfig(
                num_samples=p["num_samples"], num_elites=p["num_elites"], iterations=p["iterations"],
                horizon=self.horizon, temperature=p["temperature"], min_std=p["min_std"],
                max_std=p["max_std"], max_norm=max_norm, warm_start_tail=p["warm_start_tail"], top_k=top_k,
            )
            self.planner = MPPI(cfg, self.model.action_dim, low, high, seed=p["seed"])
        self.mode = p["mode"]
        self.state_timeout = p["state_timeout_s"]
        self.chunk_timeout = p["chunk_timeout_s"]
        self.exec_steps = min(self.horizon, max(1, round(1.0 / (p["replan_rate_hz"] * self.dt))))
        self.goal = self._goal_from(self._array_param("goal_joint_positions"), self._array_param("goal_position"))
        # latest inputs (guarded by self._lock): q [n], receipt time [monotonic s]
        self._q: np.ndarray | None = None
        self._q_time = -math.inf
        self._chunk: tuple[tuple[str, ...], np.ndarray, np.ndarray, float] | None = None
        self._chunk_time = -math.inf
        self._goal_image: np.ndarray | None = None
        self._image: np.ndarray | None = None
        self._image_time = -math.inf
        self.image_timeout = p["image_timeout_s"]
        self.recorder = PathRecorder(self.dt) if p["debug_output_dir"] else None
        self.debug_dir = p["debug_output_dir"]
        self._next_exec_record = 0.0
        self.last_plan_ms = float("nan")

        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE_SUB_QOS)
        self.create_subscription(JointTrajectory, "/vla_mpc/action_chunk", self._on_chunk, STREAM_QOS)
        self.create_subscription(Image, "/vla_mpc/goal_image", self._on_goal_image, LATCHED_QOS)
        if self.world_model == "jepa":
            self.create_subscription(Image, f"/vla_mpc/observation/{p['camera']}/image", self._on_image, SENSOR_QOS)
        self.pub_cost = self.create_publisher(Float32, "/vla_mpc/planner/cost", STREAM_QOS)
        self.pub_plan = self.create_publisher(JointTrajectory, "/vla_mpc/plan", STREAM_QOS)
        self.pub_command = self.create_publisher(JointState, "/vla_mpc/joint_command", COMMAND_QOS)
        self.pub_markers = self.create_publisher(MarkerArray, "/vla_mpc/imagined_rollouts", STREAM_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", STREAM_QOS)
        self.last_cost = float("nan")
        self._status = "starting"
        self._next_diag = 0.0

        self._period = 1.0 / p["replan_rate_hz"]
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="latent_mpc_planner", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"latent_mpc_planner: robot {self.spec.name}, world model {type(self.model).__name__}"
            f"{' (' + p['checkpoint'] + ')' if p['checkpoint'] else ''}, mode {self.mode}, {p['planner']} "
            f"{p['num_samples']} samples x {self.horizon} steps x {p['iterations']} iterations, "
            f"dt {self.dt} s, replan {p['replan_rate_hz']} Hz, goal {self._goal_text()}"
        )

    # ------------------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> dict[str, Any]:
        d = lambda *a, **k: declare(self, *a, **k)  # noqa: E731
        p = {
            "robot_config": d("robot_config", "panda", "robot name (config/<name>.yaml) or path", read_only=True),
            "mode": d("mode", "vla", "vla | mpc | hybrid (see the node's docstring)"),
            "world_model": d("world_model", "kinematic", "kinematic | jepa (jepa needs checkpoint)", read_only=True),
            "checkpoint": d("checkpoint", "", "JEPA world-model checkpoint directory ('' = none)", read_only=True),
            "goal_pose_checkpoint": d("goal_pose_checkpoint", "",
                                      "goal-image end-effector estimator directory, absolute or relative to the "
                                      "share directory (the Franka's ships as checkpoints/panda/goal_pose; '' = none)",
                                      read_only=True),
            "camera": d("camera", "front", "jepa: camera of /vla_mpc/observation/<camera>/image", read_only=True),
            "image_timeout_s": d("image_timeout_s", 1.0, "jepa: no planning on older observation images [s]",
                                 read_only=True, min_value=0.01, max_value=60.0),
            "latent_weight": d("latent_weight", 10.0, "jepa: cost per unit of mean |latent - goal latent|",
                               read_only=True, min_value=0.0, max_value=1e6),
            "debug_output_dir": d("debug_output_dir", "", "write imagined_vs_executed.png here at shutdown ('' = off)",
                                  read_only=True),
            "planner": d("planner", "cem", "cem (V-JEPA 2-AC) | mppi (TD-MPC2)", read_only=True),
            "replan_rate_hz": d("replan_rate_hz", 5.0, "planning cycles per second [Hz]", read_only=True,
                                min_value=0.1, max_value=100.0),
            "dt": d("dt", 0.1, "planning step [s]", read_only=True, min_value=0.005, max_value=2.0),
            "horizon": d("horizon", 16, "planning steps H", read_only=True, min_value=1, max_value=200),
            "num_samples": d("num_samples", 256, "sequences per iteration S", read_only=True,
                             min_value=2, max_value=100000),
            "num_elites": d("num_elites", 32, "elites (CEM top-k / MPPI elites)", read_only=True,
                            min_value=1, max_value=100000),
            "iterations": d("iterations", 4, "refits per planning cycle", read_only=True, min_value=1, max_value=100),
            "momentum_mean": d("momentum_mean", 0.15, "CEM: weight of the old mean [0, 1)", read_only=True,
                               min_value=0.0, max_value=0.999),
            "momentum_std": d("momentum_std", 0.75, "CEM: weight of the old std [0, 1]", read_only=True,
                              min_value=0.0, max_value=1.0),
            "init_std": d("init_std", 0.05, "CEM: initial sampling std [rad per step]", read_only=True,
                          min_value=1e-6, max_value=10.0),
            "temperature": d("temperature", 10.0, "MPPI: inverse temperature [1/cost]", read_only=True,
                             min_value=1e-6, max_value=1e6),
            "min_std": d("min_std", 0.002, "std floor [rad per step]", read_only=True, min_value=0.0, max_value=10.0),
            "max_std": d("max_std", 0.05, "MPPI: initial / maximum std [rad per step]", read_only=True,
                         min_value=1e-6, max_value=10.0),
            "max_norm": d("max_norm", 0.0, "per-step action norm bound [rad per step]; 0 = none", read_only=True,
                          min_value=0.0, max_value=100.0),
            "velocity_scale": d("velocity_scale", 0.5, "fraction of the velocity limits plans may use",
                                read_only=True, min_value=0.01, max_value=1.0),
            "warm_start_tail": d("warm_start_tail", "zero", "last step after shifting: zero | repeat",
                                 read_only=True),
            "seed": d("seed", 0, "random seed of the sampler", read_only=True, min_value=0, max_value=2**31 - 1),
            "num_rollout_markers": d("num_rollout_markers", 10, "best samples drawn as imagined rollouts",
                                     read_only=True, min_value=1, max_value=1000),
            "goal_weight": d("goal_weight", 1.0, "cost per rad of final joint distance to the goal",
                             read_only=True, min_value=0.0, max_value=1e6),
            "ee_goal_weight": d("ee_goal_weight", 5.0, "cost per m of final end-effector distance to the goal",
                                read_only=True, min_value=0.0, max_value=1e6),
            "running_goal_weight": d("running_goal_weight", 1.0,
                                     "weight of the goal distances averaged over the horizon (0: final only)",
                                     read_only=True, min_value=0.0, max_value=1e6),
            "action_weight": d("action_weight", 0.1, "cost per (rad per step)^2 of effort", read_only=True,
                               min_value=0.0, max_value=1e6),
            "reference_weight": d("reference_weight", 10.0, "hybrid: cost per (rad per step)^2 away from the chunk",
                                  read_only=True, min_value=0.0, max_value=1e6),
            "joint_limit_margin": d("joint_limit_margin", 0.05, "barrier band inside position limits [rad]",
                                    read_only=True, min_value=1e-4, max_value=1.0),
            "joint_limit_weight": d("joint_limit_weight", 10.0, "barrier cost at a limit (per joint, step)",
                                    read_only=True, min_value=0.0, max_value=1e6),
            "table_enabled": d("table_enabled", False, "penalise the end effector below table_height",
                               read_only=True),
            "table_height": d("table_height", 0.0, "table plane z in base_link [m]", read_only=True,
                              min_value=-10.0, max_value=10.0),
            "cartesian_clearance": d("cartesian_clearance", 0.03, "Cartesian penalty band [m]", read_only=True,
                                     min_value=1e-4, max_value=1.0),
            "cartesian_weight": d("cartesian_weight", 10.0, "Cartesian cost at contact (per step)",
                                  read_only=True, min_value=0.0, max_value=1e6),
            "state_timeout_s": d("state_timeout_s", 0.5, "ignore joint states older than this [s]",
                                 read_only=True, min_value=0.01, max_value=60.0),
            "chunk_timeout_s": d("chunk_timeout_s", 1.0, "ignore action chunks older than this [s]",
                                 read_only=True, min_value=0.01, max_value=60.0),
            "torch_threads": d("torch_threads", 1, "torch CPU threads for planning", read_only=True,
                               min_value=1, max_value=256),
        }
        # Optional arrays: typed but unset by default (an empty list has no type in ROS 2).
        for name, desc, ro in (
            ("goal_joint_positions", "goal configuration over the robot's joint_names [rad, m]", False),
            ("goal_position", "goal end-effector position (x, y, z) in base_link [m]", False),
            ("keep_out_boxes", "keep-out boxes, 6 values each: min xyz, max xyz in base_link [m]", True),
        ):
            self.declare_parameter(name, Parameter.Type.DOUBLE_ARRAY,
                                   ParameterDescriptor(name=name, description=desc, read_only=ro))
        if p["mode"] not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, got {p['mode']!r}")
        if p["world_model"] not in WORLD_MODELS:
            raise ValueError(f"parameter world_model must be one of {WORLD_MODELS}, got {p['world_model']!r}")
        if p["world_model"] == "jepa" and not p["checkpoint"]:
            raise ValueError("parameter world_model is 'jepa' but checkpoint is empty: give a JEPA checkpoint directory")
        if p["planner"] not in PLANNERS:
            raise ValueError(f"parameter planner must be one of {PLANNERS}, got {p['planner']!r}")
        if p["num_elites"] > p["num_samples"]:
            raise ValueError(f"num_elites ({p['num_elites']}) must be <= num_samples ({p['num_samples']})")
        return p

    def _array_param(self, name: str) -> list[float]:
        """Value of an optional DOUBLE_ARRAY parameter; [] when unset."""
        try:
            v = self.get_parameter(name).value
        except ParameterUninitializedException:
            return []
        return [] if v is None else [float(x) for x in v]

    def _goal_from(self, joints: list[float], position: list[float]) -> Goal | None:
        """Goal from parameter values; empty lists mean "not set". Raises ValueError."""
        if not joints and not position:
            return None
        return self.model.make_goal(joint_positions=joints or None, ee_position=position or None)

    def _goal_text(self) -> str:
        g = self.goal
        if g is None:
            return "none"
        parts = []
        if g.latent is not None and self.world_model == "jepa":
            parts.append(f"goal image latent ({g.latent.shape[0]} values)")
        elif g.latent is not None:
            parts.append(f"joints {[round(float(x), 3) for x in g.latent]}")
        if g.ee_position is not None:
            parts.append(f"ee {[round(float(x), 3) for x in g.ee_position]} m")
        return ", ".join(parts)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate run-time changes of ``mode``, ``goal_joint_positions``, ``goal_position``."""
        new = {p.name: p.value for p in params}
        mode = new.get("mode", self.mode)
        if mode not in MODES:
            return SetParametersResult(successful=False, reason=f"mode must be one of {MODES}, got {mode!r}")
        if "goal_joint_positions" in new or "goal_position" in new:
            joints = new.get("goal_joint_positions", self._array_param("goal_joint_positions")) or []
            pos = new.get("goal_position", self._array_param("goal_position")) or []
            try:
                goal = self._goal_from([float(x) for x in joints], [float(x) for x in pos])
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
            with self._lock:
                self.goal = goal
                self.planner.reset()
        if mode != self.mode:
            with self._lock:
                self.mode = mode
                self.planner.reset()
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------ inputs

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            js = conv.joint_state_to_arrays(msg)
            q = conv.select_joints(js.names, js.position, self.spec.joint_names)
        except ValueError as e:
            self.get_logger().warning(f"/joint_states rejected: {e}", throttle_duration_sec=5.0)
            return
        if not np.all(np.isfinite(q)):
            self.get_logger().warning("/joint_states rejected: non-finite positions", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._q, self._q_time = q, time.monotonic()

    def _on_chunk(self, msg: JointTrajectory) -> None:
        try:
            chunk = conv.trajectory_to_numpy(msg)
        except ValueError as e:
            self.get_logger().warning(f"/vla_mpc/action_chunk rejected: {e}", throttle_duration_sec=5.0)
            return
        if len(chunk[1]) == 0:
            self.get_logger().warning("/vla_mpc/action_chunk rejected: no points", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._chunk, self._chunk_time = chunk, time.monotonic()

    def _on_goal_image(self, msg: Image) -> None:
        """A goal image: encoded into a goal when a learned encoder is loaded (module docstring)."""
        try:
            image = conv.image_to_rgb(msg)
        except ValueError as e:
            self.get_logger().warning(f"/vla_mpc/goal_image rejected: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._goal_image = image
        if self.encoder is None and self.goal_pose is None:
            self.get_logger().warning(
                f"goal image {image.shape} received, but the {type(self.model).__name__} cannot encode images "
                "without a JEPA checkpoint; set goal_joint_positions or goal_position", throttle_duration_sec=30.0,
            )
            return
        try:
            goal = self._goal_from_image(image)
        except ValueError as e:
            self.get_logger().error(f"/vla_mpc/goal_image could not be encoded: {e}")
            return
        with self._lock:
            self.goal = goal
            self.planner.reset()
            if self.recorder is not None:
                self.recorder.goal = None if goal.ee_position is None else goal.ee_position.numpy().astype(float)
        self.get_logger().info(f"goal image {image.shape[1]}x{image.shape[0]} encoded: {self._goal_text()}")

    def _goal_from_image(self, image: np.ndarray) -> Goal:
        """``jepa``: the image's latent; ``kinematic``: the joint configuration decoded by the
        learned proprio head, plus its end-effector position (forward kinematics); with a goal-pose
        estimator and the kinematic model: the end-effector position it reads (no joint goal)."""
        if self.goal_pose is not None and self.world_model != "jepa":
            return self.model.make_goal(ee_position=self.goal_pose.predict(image))
        if self.world_model == "jepa":
            return self.model.make_goal(image=image)
        q = self.encoder.decode_joint_positions(self.encoder.encode_image(image))  # [n]
        ee = self.robot.fk_positions(q[None])[0]
        return self.model.make_goal(joint_positions=q, ee_position=ee)

    def _on_image(self, msg: Image) -> None:
        try:
            image = conv.image_to_rgb(msg)
        except ValueError as e:
            self.get_logger().warning(f"observation image rejected: {e}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._image, self._image_time = image, time.monotonic()

    # ------------------------------------------------------------------------------ planning loop

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            next_t = max(next_t + self._period, time.monotonic())
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - keep planning; report loudly
                self._status = f"planning cycle failed: {type(e).__name__}: {e}"
                self.get_logger().error(self._status, throttle_duration_sec=5.0)
            if time.monotonic() >= self._next_diag:
                self._next_diag = time.monotonic() + 1.0
                try:
                    self._publish_diagnostics()
                except Exception as e:  # noqa: BLE001 - e.g. the context shut down under us (SIGINT)
                    if not self.context.ok():
                        return  # shutting down: close() joins this thread
                    self.get_logger().error(f"diagnostics: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            if not self.context.ok():
                return

    def _publish_diagnostics(self) -> None:
        """1 Hz ``/diagnostics``: OK while cycles produce output in time, WARN otherwise."""
        late = math.isfinite(self.last_plan_ms) and self.last_plan_ms > 1e3 * self._period
        ok = self._status == "ok" and not late
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
            name="vla_mpc: latent_mpc_planner",
            message=("plan slower than the replan period" if late else self._status) if not ok else "ok",
            hardware_id=self.spec.name,
            values=[KeyValue(key=k, value=v) for k, v in (
                ("mode", self.mode), ("plan_ms", f"{self.last_plan_ms:.1f}"), ("cost", f"{self.last_cost:.4g}"),
                ("goal", self._goal_text()),
            )],
        )
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def _chunk_actions(self, chunk: tuple, q0: np.ndarray) -> np.ndarray:
        """System 1's chunk -> ``(H, n)`` actions from ``q0``. Joints the chunk does not name hold
        their current position."""
        names, times, pos, stamp = chunk
        full = np.repeat(q0[None], len(times), axis=0)  # [T, n]
        index = {n: i for i, n in enumerate(self.spec.joint_names)}
        for c, name in enumerate(names):
            if name in index:
                full[:, index[name]] = pos[:, c]
        now = self.get_clock().now().nanoseconds * 1e-9
        start = max(0.0, now - stamp) if stamp > 0.0 else 0.0
        return targets_to_actions(times, full, q0, self.dt, self.horizon, start=start)

    def step(self) -> None:
        """One planning cycle with the newest inputs (called by the worker thread)."""
        now = time.monotonic()
        with self._lock:
            q, q_age = self._q, now - self._q_time
            chunk = self._chunk if now - self._chunk_time <= self.chunk_timeout else None
            mode, goal = self.mode, self.goal
            image, image_age = self._image, now - self._image_time
        if q is None or q_age > self.state_timeout:
            self._status = "waiting for /joint_states" if q is None else f"/joint_states stale ({q_age:.2f} s)"
            return
        self._record_executed(q)
        if self.world_model == "jepa" and (image is None or image_age > self.image_timeout):
            self._status = ("waiting for the observation image" if image is None
                            else f"observation image stale ({image_age:.2f} s)")
            return
        z0 = self.model.encode(image, q)  # [Z]
        chunk_actions = None if chunk is None else torch.from_numpy(self._chunk_actions(chunk, q))  # [H, n]
        stamp = self.get_clock().now()
        if mode == "vla":
            if chunk_actions is None:
                self._status = "vla: waiting for /vla_mpc/action_chunk"
                return
            acts = chunk_actions.unsqueeze(0)  # [1, H, n]
            latents = self.model.rollout(z0, acts)  # [1, H, n]
            cost = float(self.model.cost(latents, acts, goal)[0])
            self.pub_cost.publish(Float32(data=cost))
            self._publish_markers(q, None, latents[0], stamp)
            self.last_cost, self._status = cost, "ok"
            return
        if mode == "mpc" and goal is None:
            self._status = "mpc: no goal (publish /vla_mpc/goal_image or set goal_joint_positions / goal_position)"
            self.get_logger().warning(self._status, throttle_duration_sec=10.0)
            return
        if mode == "hybrid" and chunk_actions is None:
            self._status = "hybrid: waiting for /vla_mpc/action_chunk"
            return
        init_mean = prior = None
        if mode == "hybrid":
            init_mean, prior = chunk_actions, chunk_actions.unsqueeze(0)
            goal = Goal(
                latent=None if goal is None else goal.latent,
                ee_position=None if goal is None else goal.ee_position,
                reference_actions=chunk_actions,
            )
        t0 = time.perf_counter()
        result = self.planner.plan(z0, self.model.rollout, self.model.objective(goal),
                                   init_mean=init_mean, prior_samples=prior)
        self.last_plan_ms = (time.perf_counter() - t0) * 1e3
        targets = self._joint_targets(q, result)  # [H, n]
        self.pub_plan.publish(conv.trajectory_msg(
            self.spec.joint_names, targets, self.dt * np.arange(1, self.horizon + 1),
            stamp=stamp.to_msg(), frame_id=self.frame_id,
        ))
        self.pub_cost.publish(Float32(data=float(result.cost)))
        if mode == "mpc":
            self.pub_command.publish(conv.joint_state_msg(
                self.spec.joint_names, targets[self.exec_steps - 1], stamp=stamp.to_msg()))
        self._publish_markers(q, result, result.latents, stamp)
        if self.recorder is not None:
            path = torch.cat([self.model.ee_positions(torch.as_tensor(q, dtype=torch.float32)).unsqueeze(0),
                              self.model.ee_positions(result.latents)]).numpy()
            with self._lock:
                self.recorder.add_plan(time.monotonic(), path)
        self.last_cost, self._status = result.cost, "ok"

    def _joint_targets(self, q: np.ndarray, result: PlanResult) -> np.ndarray:
        """``(H, n)`` absolute joint targets of the plan: the predicted joint positions (the
        kinematic part of the latent; actions are clipped by the model like in its rollout)."""
        if self.world_model == "jepa":
            return self.model.joint_positions(result.latents).numpy().astype(np.float64)
        return actions_to_targets(q, result.actions.numpy())

    def _record_executed(self, q: np.ndarray) -> None:
        """Executed end-effector position for the debug PNG, at most every 50 ms."""
        if self.recorder is None or time.monotonic() < self._next_exec_record:
            return
        self._next_exec_record = time.monotonic() + 0.05
        ee = self.robot.fk_positions(np.asarray(q, dtype=np.float64)[None])[0]
        with self._lock:
            self.recorder.add_executed(time.monotonic(), ee)

    def _publish_markers(self, q: np.ndarray, result: PlanResult | None, plan_latents: torch.Tensor, stamp: Any) -> None:
        """DELETEALL, then the top-k samples (ns ``samples``, ids 0..k-1, green->red by cost) and
        the chosen plan (ns ``plan``, id 0, blue, thicker) as end-effector LINE_STRIPs with H + 1
        points (current position first) in ``base_link``."""
        ee0 = self.model.ee_positions(torch.as_tensor(q, dtype=torch.float32)).unsqueeze(0)  # [1, 3]
        arr = MarkerArray()
        arr.markers.append(conv.delete_all_marker(self.frame_id))
        st = stamp.to_msg()
        if result is not None:
            paths = self.model.ee_positions(result.top_k_latents)  # [K, H, 3]
            costs = result.top_k_costs.numpy()  # [K] ascending
            span = max(float(costs[-1] - costs[0]), 1e-12)
            for i in range(paths.shape[0]):
                pts = torch.cat([ee0, paths[i]], dim=0).numpy()  # [H + 1, 3]
                if np.all(np.isfinite(pts)):
                    colour = cost_colour(float(costs[i] - costs[0]) / span)
                    arr.markers.append(conv.line_strip_marker(
                        "samples", i, pts, colour, self.frame_id, st, width=0.003))
        plan = torch.cat([ee0, self.model.ee_positions(plan_latents)], dim=0).numpy()
        if np.all(np.isfinite(plan)):
            arr.markers.append(conv.line_strip_marker("plan", 0, plan, PLAN_COLOUR, self.frame_id, st, width=0.008))
        self.pub_markers.publish(arr)

    def close(self) -> None:
        """Stop the planning thread (called by ``run_node`` before ``destroy_node``) and write the
        debug PNG when ``debug_output_dir`` is set."""
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        if self.recorder is not None and (self.recorder.plans or self.recorder.executed):
            try:
                png = self.recorder.save(Path(self.debug_dir).expanduser(),
                                         title=f"latent_mpc_planner: {type(self.model).__name__}, mode {self.mode}")
                self.get_logger().info(f"wrote {png}")
            except (OSError, ValueError) as e:
                self.get_logger().error(f"could not write the imagined-vs-executed picture: {e}")


def main(args: list[str] | None = None) -> int:
    """Console script ``latent_mpc_planner``."""
    return run_node(LatentMpcPlanner, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
