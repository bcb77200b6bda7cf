"""safety_monitor node: the only thing that talks to the robot controller.

A thin shell around :class:`vla_mpc.core.safety.SafetyFilter` (all rules live there).

Subscribes:
  ``/vla_mpc/joint_command`` (sensor_msgs/JointState, positions by name; COMMAND_QOS),
  ``/joint_states`` (sensor_msgs/JointState; STATE_SUB_QOS),
  ``/vla_mpc/safety/estop`` (std_msgs/Bool, latched; ``true`` latches the e-stop).
Publishes:
  ``/forward_position_controller/commands`` (std_msgs/Float64MultiArray over ``spec.joint_names``)
  or ``/joint_trajectory_controller/joint_trajectory`` (trajectory_msgs/JointTrajectory, one point
  ``dt`` ahead), chosen by ``output_interface``; each accepted command is forwarded from the
  subscription callback (no extra queueing), holds come from a timer at ``rate_hz``;
  ``/vla_mpc/safety/state`` (std_msgs/String, RELIABLE + TRANSIENT_LOCAL depth 1) on change;
  ``/vla_mpc/safety/interventions`` (diagnostic_msgs/DiagnosticStatus per joint and reason, keys
  ``joint``, ``reason``, ``action``, ``kind``; repeats of the same intervention at most once per
  ``intervention_min_interval_s``, all of them counted);
  ``/diagnostics`` (DiagnosticArray at 1 Hz: state and intervention counts by kind).
Services: ``~/reset`` and ``~/estop`` (std_srvs/Trigger).

Starts in HOLDING; holds the first measured position once joint states arrive and forwards
commands after that. Times for timeouts come from the node clock (``use_sim_time`` works).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.core.safety import COMMAND_KEY, SafetyAction, SafetyFilter, SafetyLimits, SafetyState, Verdict
from vla_mpc.ros import conversions as cv
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

    def __init__(self) -> None:
        super().__init__("safety_monitor")
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
        self.filter = SafetyFilter(limits, 1.0 / self.rate_hz, jump_action=jump_action,
                                   command_timeout_s=cmd_timeout, joint_state_timeout_s=js_timeout,
                                   brake_fraction=brake_fraction)
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
                self.get_logger().warn(f"limits.{key}: values above the robot config were lowered to it")
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
            self.get_logger().warn(f"/joint_states ignored: {exc}", throttle_duration_sec=5.0)
            return
        if not np.all(np.isfinite(q)):
            self.get_logger().warn("/joint_states ignored: non-finite positions", throttle_duration_sec=5.0)
            return
        self._measured = q
        first = not self.filter.seeded
        self.filter.observe_joint_state(q, self._now())
        if first:
            self.get_logger().info("joint states received: holding the measured position")

    def _on_command(self, msg: JointState) -> None:
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
        self._after(verdict, now)

    def _on_timer(self) -> None:
        now = self._now()
        result = self.filter.tick(now, self._measured)
        if result is None:
            self._after(None, now)
            return
        cmd, verdict = result
        if cmd is not None:
            self._send(cmd)
        self._after(verdict, now)

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
            self._intervention_pub.publish(DiagnosticStatus(
                level=level, name="safety_monitor", message=verdict.summary[:200], hardware_id=self.spec.name,
                values=[KeyValue(key="joint", value=joint), KeyValue(key="reason", value=reason),
                        KeyValue(key="action", value=verdict.action.value), KeyValue(key="kind", value=kind)]))
        if verdict.action is not SafetyAction.CLAMPED:
            self.get_logger().warn(verdict.summary, throttle_duration_sec=1.0)
        if self._log_file is not None:
            record = {"time_s": now, "wall_time": time.time(), "action": verdict.action.value,
                      "state": verdict.state.value, "kinds": kinds,
                      "reasons": {("command" if j == COMMAND_KEY else j): r for j, r in verdict.reasons.items()}}
            self._log_file.write(json.dumps(record) + "\n")

    def _publish_diagnostics(self) -> None:
        state = self.filter.state
        values = [KeyValue(key="state", value=state.value),
                  KeyValue(key="commands_received", value=str(self.commands_received)),
                  KeyValue(key="commands_forwarded", value=str(self.commands_forwarded)),
                  KeyValue(key="interventions_total", value=str(sum(self.filter.counts.values())))]
        values += [KeyValue(key=f"interventions.{k}", value=str(v)) for k, v in sorted(self.filter.counts.items())]
        status = DiagnosticStatus(level=_LEVEL[state], name="vla_mpc/safety_monitor", hardware_id=self.spec.name,
                                  message=state.value, values=values)
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)

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
