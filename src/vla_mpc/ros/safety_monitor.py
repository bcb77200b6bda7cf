"""safety_monitor node: the only thing that talks to the robot controller.

A thin shell around :class:`vla_mpc.core.safety.SafetyFilter` (all rules live there).

Subscribes:
  ``/vla_mpc/joint_command`` (sensor_msgs/JointState, positions by name; COMMAND_QOS),
  ``/joint_states`` (sensor_msgs/JointState; STATE_SUB_QOS),
  ``/vla_mpc/safety/estop`` (std_msgs/Bool, latched; ``true`` latches the e-stop),
  ``/vla_mpc/episode`` (std_msgs/String JSON, latched; ``"event": "start"`` resets the episode cost
  and arms the re-sync to the simulator's reset position, see ``SafetyFilter.begin_episode``).
Publishes:
  ``/forward_position_controller/commands`` (std_msgs/Float64MultiArray over ``spec.joint_names``)
  or ``/joint_trajectory_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory, one point
  ``dt`` ahead), chosen by ``output_interface``; each accepted command is forwarded from the
  subscription callback (no extra queueing), holds come from a timer at ``rate_hz``;
  ``/vla_mpc/safety/state`` (std_msgs/String, RELIABLE + TRANSIENT_LOCAL depth 1) on change;
  ``/vla_mpc/safety/interventions`` (diagnostic_msgs/DiagnosticStatus per joint and reason, keys
  ``joint``, ``reason``, ``action``, ``kind``; repeats of the same intervention at most once per
  ``intervention_min_interval_s``, all of them counted);
  ``/vla_mpc/safety/cost`` (std_msgs/Float64MultiArray ``[step_cost, episode_cost]``, one per
  output command; STREAM_QOS);
  ``/diagnostics`` (DiagnosticArray at 1 Hz: state, episode cost and intervention counts by kind).
Services: ``~/reset`` and ``~/estop`` (std_srvs/Trigger).

Starts in HOLDING; holds the first measured position once joint states arrive and forwards
commands after that. Times for timeouts and the command rate come from the node clock
(``use_sim_time`` works). Commands faster than ``rate_hz`` are thinned (``rate_window``; newest
wins) and released by a one-shot timer when due; Cartesian constraints (``cartesian_constraints``)
and the cost budget (``cost_budget``, ``cost_reaction``) come from the robot config's ``safety:``
block; a measured jump beyond ``resync_tolerance`` (or, right after an episode start, a measured
teleport) re-syncs to the measured position. ``/diagnostics`` also reports the command
callback's wall time (``command_callback_us_p50`` / ``_p99`` over the last 1000 commands).
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.core.safety import COMMAND_KEY, SafetyAction, SafetyFilter, SafetyLimits, SafetyState, Verdict
from vla_mpc.core.safety_cartesian import CartesianConstraints
from vla_mpc.core.safety_cost import COST_REACTIONS, CostConfig
from vla_mpc.ros import conversions as cv
from vla_mpc.ros.diagnostics import diagnostic_array, diagnostic_status
from vla_mpc.ros.params import declare
from vla_mpc.ros.qos import COMMAND_QOS, LATCHED_QOS, STATE_SUB_QOS, STREAM_QOS
from vla_mpc.ros.runtime import run_node

_LEVEL = {
    SafetyState.ACTIVE: DiagnosticStatus.OK,
    SafetyState.LIMITING: DiagnosticStatus.WARN,
    SafetyState.HOLDING: DiagnosticStatus.WARN,
    SafetyState.INACTIVE: DiagnosticStatus.WARN,
    SafetyState.ESTOP: DiagnosticStatus.ERROR,
}


class SafetyMonitor(Node):
    """Inline safety filter between the command sources and the robot controller."""

    def __init__(self, **kwargs: Any) -> None:
        """``kwargs`` go to ``rclpy.node.Node`` (e.g. ``context``, ``parameter_overrides``)."""
        super().__init__("safety_monitor", **kwargs)
        robot = declare(self, "robot_config", "panda", "Robot name (config/<name>.yaml) or path to a robot config.",
                        read_only=True)
        self.rate_hz = declare(self, "rate_hz", 200.0, "Control period of the output [Hz]: dt = 1 / rate_hz; hold "
                               "timer rate. Commands are expected at this rate or slower.", read_only=True,
                               min_value=1.0, max_value=2000.0)
        self.output_interface = declare(self, "output_interface", "forward_position",
                                        "forward_position (Float64MultiArray) or joint_trajectory (JointTrajectory).",
                                        read_only=True)
        if self.output_interface not in ("forward_position", "joint_trajectory"):
            raise ValueError(f"output_interface must be forward_position or joint_trajectory, got {self.output_interface!r}")
        cmd_timeout = declare(self, "command_timeout_s", 0.2, "Hold when no command was accepted for this long [s].",
                              read_only=True, min_value=0.001, max_value=60.0)
        js_timeout = declare(self, "joint_state_timeout_s", 0.2, "Hold when /joint_states is older than this [s].",
                             read_only=True, min_value=0.001, max_value=60.0)
        jump_action = declare(self, "jump_action", "clamp", "Targets farther than max_joint_step from the last "
                              "output: clamp (limit the step) or reject (hold).", read_only=True)
        brake_fraction = declare(self, "brake_fraction", 0.5, "Fraction of the acceleration limit planned for "
                                 "braking near position limits and step targets.", read_only=True,
                                 min_value=0.05, max_value=1.0)
        self.spec = load_robot_spec(robot)
        self.names = tuple(self.spec.joint_names)
        margin = declare(self, "position_margin", float(self.spec.safety.get("position_margin", 0.0)),
                         "Kept away from the position limits, arm joints [rad] (default: robot config).",
                         read_only=True, min_value=0.0, max_value=1.0)
        limits = SafetyLimits.from_spec(self.spec, position_margin=margin)
        step = declare(self, "max_joint_step", float(np.max(limits.max_joint_step)),
                       "Largest accepted target distance from the last output [rad or m] (default: robot config).",
                       read_only=True, min_value=1e-6, max_value=10.0)
        limits = self._tightened(limits, step)
        use_cartesian = declare(self, "cartesian_constraints", True, "Enforce the robot config's safety.cartesian "
                                "constraints (table, keep-out boxes, workspace, self-collision).", read_only=True)
        cartesian = CartesianConstraints.from_spec(self.spec) if use_cartesian else None
        cost = CostConfig.from_dict(self.spec.safety.get("cost"))
        budget = declare(self, "cost_budget", -1.0 if cost.budget is None else float(cost.budget),
                         "Safety cost per episode before cost_reaction [steps]; < 0 = none (default: robot "
                         "config safety.cost.budget).", read_only=True, min_value=-1.0, max_value=1e9)
        reaction = declare(self, "cost_reaction", cost.reaction,
                           f"Reaction past the cost budget: {'|'.join(COST_REACTIONS)}.", read_only=True)
        cost = CostConfig(budget=None if budget < 0 else budget, reaction=reaction, slow_factor=cost.slow_factor,
                          kinds=cost.kinds)
        resync = declare(self, "resync_tolerance", float(self.spec.safety.get("resync_tolerance", 0.5)),
                         "Measured position this far from the last output re-syncs the filter to it [rad] "
                         "(default: robot config).", read_only=True, min_value=1e-4, max_value=10.0)
        window = declare(self, "rate_window", 10, "Command rate window [periods]: at most rate_window + 1 commands "
                         "are released in any rate_window periods; faster ones are deferred (newest wins).",
                         read_only=True, min_value=1, max_value=1000)
        self.filter = SafetyFilter(limits, 1.0 / self.rate_hz, rate_window=int(window), jump_action=jump_action,
                                   command_timeout_s=cmd_timeout, joint_state_timeout_s=js_timeout,
                                   brake_fraction=brake_fraction, cartesian=cartesian, cost=cost,
                                   resync_tolerance=resync)
        self.intervention_min_interval_s = declare(
            self, "intervention_min_interval_s", 1.0, "Repeats of one intervention are published and logged at most "
            "this often [s] (all are counted).", min_value=0.0, max_value=3600.0)
        log_path = declare(self, "intervention_log", "", "Append one JSON line per intervention to this file "
                           "('' = off).", read_only=True)
        diag_hz = declare(self, "diagnostics_rate_hz", 1.0, "Rate of /diagnostics [Hz].", read_only=True,
                          min_value=0.1, max_value=50.0)
        self._log_file: TextIO | None = None
        if log_path:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(log_path, "a", encoding="utf-8", buffering=1)

        if self.output_interface == "forward_position":
            self._out_pub = self.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
        else:
            self._out_pub = self.create_publisher(JointTrajectory, "/joint_trajectory_controller/joint_trajectory",
                                                  COMMAND_QOS)
        self._state_pub = self.create_publisher(String, "/vla_mpc/safety/state", LATCHED_QOS)
        self._intervention_pub = self.create_publisher(DiagnosticStatus, "/vla_mpc/safety/interventions", STREAM_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", STREAM_QOS)
        self._cost_pub = self.create_publisher(Float64MultiArray, "/vla_mpc/safety/cost", STREAM_QOS)
        self.create_subscription(String, "/vla_mpc/episode", self._on_episode, LATCHED_QOS)
        self.create_subscription(JointState, "/vla_mpc/joint_command", self._on_command, COMMAND_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_joint_state, STATE_SUB_QOS)
        self.create_subscription(Bool, "/vla_mpc/safety/estop", self._on_estop_msg, LATCHED_QOS)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/estop", self._on_estop_srv)
        self.create_timer(1.0 / self.rate_hz, self._on_timer)
        self.create_timer(1.0 / diag_hz, self._publish_diagnostics)

        self._measured: np.ndarray | None = None
        self._published_state: SafetyState | None = None
        self._last_signature: tuple[Any, ...] | None = None
        self._last_signature_t = -math.inf
        self.commands_received = 0
        self.commands_forwarded = 0
        self.commands_deferred = 0
        self._release_timer = None
        self._callback_s: deque[float] = deque(maxlen=1000)  # command callback wall times [s]
        self._publish_state()
        self.get_logger().info(
            f"safety_monitor: robot {self.spec.name}, {len(self.names)} joints, {self.rate_hz:g} Hz, "
            f"output {self.output_interface}, timeouts cmd {cmd_timeout:g} s / joint states {js_timeout:g} s")

    # ---------------------------------------------------------------------------------- setup

    def _tightened(self, limits: SafetyLimits, step: float) -> SafetyLimits:
        """Declare the limits as read-only parameters; launch overrides may only tighten them."""
        arrays: dict[str, np.ndarray] = {}
        for key in ("velocity", "acceleration", "jerk"):
            spec_vals = getattr(limits, key)
            vals = np.asarray(declare(self, f"limits.{key}", [float(x) for x in spec_vals],
                                      f"Per-joint {key} limit over {list(self.names)} (robot config; overrides "
                                      "may only tighten).", read_only=True), dtype=np.float64)
            if vals.shape != spec_vals.shape or not np.all(np.isfinite(vals)) or np.any(vals <= 0.0):
                self.get_logger().error(f"limits.{key}: override {vals.tolist()} ignored (need {len(self.names)} "
                                        "positive values)")
                vals = spec_vals
            elif np.any(vals > spec_vals):
                self.get_logger().warning(f"limits.{key}: values above the robot config were lowered to it")
            arrays[key] = np.minimum(vals, spec_vals)
        return SafetyLimits(
            joint_names=limits.joint_names, lower=limits.lower, upper=limits.upper,
            velocity=arrays["velocity"], acceleration=arrays["acceleration"], jerk=arrays["jerk"],
            max_joint_step=np.minimum(limits.max_joint_step, step), margin=limits.margin)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------------------ callbacks

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            js = cv.joint_state_to_arrays(msg)
            q = cv.select_joints(js.names, js.position, self.names)
        except ValueError as exc:
            self.get_logger().warning(f"/joint_states ignored: {exc}", throttle_duration_sec=5.0)
            return
        if not np.all(np.isfinite(q)):
            self.get_logger().warning("/joint_states ignored: non-finite positions", throttle_duration_sec=5.0)
            return
        self._measured = q
        first = not self.filter.seeded
        now = self._now()
        verdict = self.filter.observe_joint_state(q, now)
        if first:
            self.get_logger().info("joint states received: holding the measured position")
        if verdict is not None:
            self.get_logger().info(verdict.summary)
            self._after(verdict, now)

    def _on_command(self, msg: JointState) -> None:
        t0 = time.perf_counter()
        now = self._now()
        self.commands_received += 1
        stamp = cv.stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:
            stamp = now  # unstamped sources: order by arrival
        cmd, verdict = self.filter.filter(msg.name, msg.position, stamp, self._measured, now_s=now)
        if cmd is not None:
            self._send(cmd)
            if verdict.action in (SafetyAction.PASS, SafetyAction.CLAMPED):
                self.commands_forwarded += 1
        elif verdict.action is SafetyAction.DEFERRED:
            self.commands_deferred += 1
            if self._release_timer is None:  # release it when due, not at the next periodic tick
                delay = self.filter.release_delay_s(now)
                if delay is not None:
                    self._release_timer = self.create_timer(max(delay, 1e-4), self._on_release)
        self._after(verdict, now)
        self._callback_s.append(time.perf_counter() - t0)

    def _on_release(self) -> None:
        """One-shot: release the newest deferred command (commands faster than rate_hz)."""
        if self._release_timer is not None:
            self.destroy_timer(self._release_timer)
            self._release_timer = None
        self._on_timer()

    def _on_timer(self) -> None:
        now = self._now()
        result = self.filter.tick(now, self._measured)
        if result is None:
            self._after(None, now)
            return
        cmd, verdict = result
        if cmd is not None:
            self._send(cmd)
            if verdict.action in (SafetyAction.PASS, SafetyAction.CLAMPED):
                self.commands_forwarded += 1  # a deferred command released by the timer
        self._after(verdict, now)

    def _on_episode(self, msg: String) -> None:
        try:
            event = json.loads(msg.data)
        except ValueError as exc:
            self.get_logger().warning(f"/vla_mpc/episode ignored: not JSON ({exc})")
            return
        if not isinstance(event, dict) or event.get("event") != "start":
            return
        robot = event.get("robot")
        if robot is not None and robot != self.spec.name:
            self.get_logger().error(f"/vla_mpc/episode for robot {robot!r} ignored (this is {self.spec.name!r})")
            return
        was = self.filter.episode_cost
        self.filter.begin_episode(self._now())
        self.get_logger().info(f"episode {event.get('episode')} starts: cost reset (was {was:g}); "
                               "re-sync armed for the reset jump")
        self._publish_state()

    def _on_estop_msg(self, msg: Bool) -> None:
        if msg.data:
            self._estop("e-stop topic")

    def _on_estop_srv(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._estop("e-stop service")
        response.success = True
        response.message = "e-stop latched; call ~/reset to clear"
        return response

    def _estop(self, source: str) -> None:
        now = self._now()
        verdict = self.filter.estop(source)
        self._after(verdict, now)
        result = self.filter.hold(self._measured)
        if result[0] is not None:
            self._send(result[0])

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self.filter.state
        self.filter.reset(self._measured)
        self._after(None, self._now())
        response.success = True
        response.message = f"reset from {was.value}: holding until the next valid command"
        self.get_logger().info(response.message)
        return response

    # -------------------------------------------------------------------------------- outputs

    def _send(self, cmd: np.ndarray) -> None:
        if self.output_interface == "forward_position":
            self._out_pub.publish(cv.float64_array_msg(cmd))
        else:
            self._out_pub.publish(cv.trajectory_msg(self.names, cmd[None, :], [1.0 / self.rate_hz]))
        self._cost_pub.publish(cv.float64_array_msg((self.filter.step_cost, self.filter.episode_cost)))

    def _after(self, verdict: Verdict | None, now: float) -> None:
        if verdict is not None and verdict.intervention:
            self._report(verdict, now)
        self._publish_state()

    def _publish_state(self) -> None:
        state = self.filter.state
        if state is not self._published_state:
            self._state_pub.publish(String(data=state.value))
            if self._published_state is not None:
                self.get_logger().info(f"safety state {self._published_state.value} -> {state.value}")
            self._published_state = state

    def _report(self, verdict: Verdict, now: float) -> None:
        signature = (verdict.action, tuple(sorted(verdict.reasons)), verdict.kinds)
        if signature == self._last_signature and now - self._last_signature_t < self.intervention_min_interval_s:
            return
        self._last_signature, self._last_signature_t = signature, now
        level = DiagnosticStatus.WARN if verdict.action is SafetyAction.CLAMPED else DiagnosticStatus.ERROR
        kinds = list(verdict.kinds)
        kind = ",".join(kinds)
        for joint, reason in verdict.reasons.items():
            self._intervention_pub.publish(diagnostic_status(
                "safety_monitor", level, verdict.summary[:200],
                {"joint": joint, "reason": reason, "action": verdict.action.value, "kind": kind},
                hardware_id=self.spec.name))
        if verdict.action is not SafetyAction.CLAMPED:
            self.get_logger().warning(verdict.summary, throttle_duration_sec=1.0)
        if self._log_file is not None:
            record = {"time_s": now, "wall_time": time.time(), "action": verdict.action.value,
                      "state": verdict.state.value, "kinds": kinds,
                      "reasons": {("command" if j == COMMAND_KEY else j): r for j, r in verdict.reasons.items()}}
            self._log_file.write(json.dumps(record) + "\n")

    def _publish_diagnostics(self) -> None:
        f = self.filter
        state = f.state
        values: dict[str, object] = {
            "state": state.value,
            "commands_received": self.commands_received,
            "commands_forwarded": self.commands_forwarded,
            "commands_deferred": self.commands_deferred,
            "episode_cost": f.episode_cost,
            "interventions_total": sum(f.counts.values()),
        }
        if f.cartesian is not None:
            values["cartesian_fk_calls"] = f.cartesian.fk_calls
        if self._callback_s:
            cb = np.asarray(self._callback_s) * 1e6
            values["command_callback_us_p50"] = float(np.percentile(cb, 50))
            values["command_callback_us_p99"] = float(np.percentile(cb, 99))
        values.update({f"interventions.{k}": v for k, v in sorted(f.counts.items())})
        status = diagnostic_status("vla_mpc/safety_monitor", _LEVEL[state], state.value, values,
                                   hardware_id=self.spec.name)
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), [status]))

    def close(self) -> None:
        """Close the intervention log (called by ``run_node`` at shutdown)."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def main(args: list[str] | None = None) -> int:
    """Console script ``safety_monitor``."""
    return run_node(SafetyMonitor, args)


if __name__ == "__main__":
    raise SystemExit(main())
