"""``sim_robot`` node: a thin ROS 2 shell around ``vla_mpc.sim.SimRobot``.

Publishes ``/joint_states`` (sensor_msgs/JointState, ``joint_state_rate_hz``), ``/clock``
(rosgraph_msgs/Clock, sim time, same rate), ``/camera/<name>/image_raw`` (rgb8) and
``/camera/<name>/camera_info`` (``camera_rate_hz``, frame ``<name>_optical_frame``),
``/vla_mpc/sim/object_poses`` (MarkerArray of CUBE markers, ns = object name, frame
``base_link``, ``object_pose_rate_hz``) and ``/vla_mpc/sim/task_success`` (std_msgs/Bool, latched,
published on change, for the ``instruction`` parameter). Subscribes
``/forward_position_controller/commands`` (Float64MultiArray over ``spec.joint_names``) and
``/joint_trajectory_controller/joint_trajectory`` (JointTrajectory: joints by name, linear
interpolation in sim time from the current target; a header stamp of zero starts it now).
Service ``/vla_mpc/sim/reset`` (std_srvs/Trigger) draws the next cube layout (seed + 1) and puts
the robot at home; sim time keeps running.

Episodes (docs/DESIGN.md, contract G): subscribes ``/vla_mpc/episode`` (std_msgs/String JSON,
reliable + transient local). On ``{"event": "start", "episode": i, "seed": s, "kind": k, "robot": r,
"instruction": text, ...}`` it resets to ``tasks.sample_episode(r, k, s)`` (objects renamed and
recoloured, robot at home, sim time keeps running), judges success for ``text`` (parsed against the
episode's objects; push from the poses right after the reset) and publishes
``/vla_mpc/sim/episode_ready`` (std_msgs/String JSON ``{"episode": i, "seed": s}``, reliable +
transient local, depth 1). A message for another robot, an unknown kind or a malformed message is
logged as an error and ignored; ``"end"`` events are only logged.

Timing: the timers run on the steady (wall) clock. Every joint-state tick advances physics to
``real_time_factor`` x the wall time elapsed; when the CPU cannot keep up (rendering, a busy
machine) at most ``max_catchup_s`` of physics is run per tick and the wall anchor moves, so sim time
simply runs slower than the wall clock and ``/clock`` tells everyone. Physics steps are never
skipped. All stamps are sim time.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.ros import conversions as conv
from vla_mpc.ros.params import declare
from vla_mpc.ros.qos import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, STATE_QOS, STREAM_QOS
from vla_mpc.ros.runtime import run_node
from vla_mpc.sim.sim_robot import SimRobot
from vla_mpc.sim.tasks import parse_instruction, sample_episode


class SimRobotNode(Node):
    """The MuJoCo sim as a robot + cameras + ros2_control-like position controller."""

    def __init__(self) -> None:
        super().__init__("sim_robot")
        robot = declare(self, "robot_config", "panda", "robot name (config/<name>.yaml) or path",
                        read_only=True)
        seed = declare(self, "seed", 0, "seed of the first cube layout", read_only=True)
        cameras = declare(self, "cameras", ["front"], "cameras to render (sim.cameras keys, 'wrist', "
                          "or robosuite camera names)", read_only=True)
        width = declare(self, "image_width", 224, "camera image width [px]", read_only=True,
                        min_value=16, max_value=1920)
        height = declare(self, "image_height", 224, "camera image height [px]", read_only=True,
                         min_value=16, max_value=1080)
        physics_dt = declare(self, "physics_dt", 0.002, "MuJoCo timestep [s]", read_only=True,
                             min_value=0.0005, max_value=0.01)
        js_rate = declare(self, "joint_state_rate_hz", 200.0, "/joint_states, /clock and physics "
                          "tick rate [Hz]", read_only=True, min_value=10.0, max_value=1000.0)
        cam_rate = declare(self, "camera_rate_hz", 10.0, "camera image rate [Hz]", read_only=True,
                           min_value=0.5, max_value=60.0)
        obj_rate = declare(self, "object_pose_rate_hz", 10.0, "object markers and task success "
                           "rate [Hz]", read_only=True, min_value=0.5, max_value=100.0)
        self._rtf = declare(self, "real_time_factor", 1.0, "sim seconds per wall second",
                            min_value=0.01, max_value=10.0)
        self._max_catchup = declare(self, "max_catchup_s", 0.05, "most sim time advanced per tick "
                                    "[s]; beyond it sim time runs slower", min_value=0.001, max_value=1.0)
        instruction = declare(self, "instruction", "", "task for the success predicate, e.g. "
                              "'pick up the red cube' (empty: none)")
        self.add_on_set_parameters_callback(self._on_set)

        self.spec = load_robot_spec(robot)
        self.sim = SimRobot(self.spec, cameras=tuple(cameras), image_size=(width, height),
                            seed=seed, physics_dt=physics_dt)
        self._task = parse_instruction(instruction) if instruction else None
        self._traj: tuple[np.ndarray, np.ndarray] | None = None  # (times (T,), positions (T, n))
        self._n = len(self.spec.joint_names)
        self._last_success: bool | None = None
        self._marker_names: list[str] = []

        self._js_pub = self.create_publisher(JointState, "/joint_states", STATE_QOS)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        self._img_pubs = {c: self.create_publisher(Image, f"/camera/{c}/image_raw", SENSOR_QOS)
                          for c in self.sim.cameras}
        self._info_pubs = {c: self.create_publisher(CameraInfo, f"/camera/{c}/camera_info", SENSOR_QOS)
                           for c in self.sim.cameras}
        self._obj_pub = self.create_publisher(MarkerArray, "/vla_mpc/sim/object_poses", STREAM_QOS)
        self._success_pub = self.create_publisher(Bool, "/vla_mpc/sim/task_success", LATCHED_QOS)
        self.create_subscription(Float64MultiArray, "/forward_position_controller/commands",
                                 self._on_command, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "/joint_trajectory_controller/joint_trajectory",
                                 self._on_trajectory, COMMAND_QOS)
        self.create_service(Trigger, "/vla_mpc/sim/reset", self._on_reset)
        self._ready_pub = self.create_publisher(String, "/vla_mpc/sim/episode_ready", LATCHED_QOS)
        self.create_subscription(String, "/vla_mpc/episode", self._on_episode, LATCHED_QOS)
        self.episode_index: int | None = None

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._wall_anchor = time.monotonic()
        self._sim_anchor = self.sim.time
        self.rejected_commands = 0
        self.create_timer(1.0 / js_rate, self._on_tick, clock=steady)
        # Rendering (20-100 ms per frame on llvmpipe) runs in its own thread: mujoco releases the
        # GIL while rasterising, so the physics/joint-state timer keeps its rate.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cam_period = 1.0 / cam_rate
        self._cam_thread = threading.Thread(target=self._camera_loop, name="sim_render", daemon=True)
        self._cam_thread.start()
        self.create_timer(1.0 / obj_rate, self._on_objects, clock=steady)
        self.get_logger().info(
            f"sim_robot: {self.spec.name} ({self.spec.sim.get('robosuite_robot')}), joints "
            f"{list(self.spec.joint_names)}, cameras {self.sim.cameras} {width}x{height}, "
            f"physics dt {physics_dt} s, task {instruction!r}")

    # ----------------------------------------------------------------------------- callbacks

    def _on_set(self, params):  # noqa: ANN001 - rclpy callback signature
        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name == "real_time_factor":
                self._reanchor()
                self._rtf = float(p.value)
            elif p.name == "max_catchup_s":
                self._max_catchup = float(p.value)
            elif p.name == "instruction":
                try:
                    task = parse_instruction(p.value) if p.value else None
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                self._task, self._last_success = task, None
        return SetParametersResult(successful=True)

    def _reanchor(self) -> None:
        self._wall_anchor, self._sim_anchor = time.monotonic(), self.sim.time

    def _reject(self, why: str) -> None:
        self.rejected_commands += 1
        self.get_logger().warning(f"command rejected ({self.rejected_commands} so far): {why}",
                                  throttle_duration_sec=2.0)

    def _on_command(self, msg: Float64MultiArray) -> None:
        q = conv.float64_array_to_numpy(msg)
        try:
            self.sim.set_position_target(q)
        except ValueError as exc:
            self._reject(str(exc))
            return
        self._traj = None

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            names, times, pos, stamp = conv.trajectory_to_numpy(msg)
            unknown = [n for n in names if n not in self.spec.joint_names]
            if unknown or not len(times):
                raise ValueError(f"unknown joints {unknown}" if unknown else "no points")
        except ValueError as exc:
            self._reject(f"trajectory: {exc}")
            return
        start = self.sim.time if stamp == 0.0 else stamp
        idx = [list(self.spec.joint_names).index(n) for n in names]
        current = self.sim.position_target
        full = np.tile(current, (len(times) + 1, 1))
        full[1:, idx] = pos
        t = np.concatenate([[self.sim.time], start + times])
        t = np.maximum.accumulate(t)  # a point already in the past is reached immediately
        self._traj = (t, full)

    def _trajectory_target(self, t: float) -> np.ndarray:
        times, pos = self._traj
        return np.array([np.interp(t, times, pos[:, j]) for j in range(self._n)])

    def _on_tick(self) -> None:
        dt = self.sim.physics_dt
        due = self._sim_anchor + (time.monotonic() - self._wall_anchor) * self._rtf - self.sim.time
        if due > self._max_catchup:  # behind: run slower than the wall clock, never skip physics
            due = self._max_catchup
            self._wall_anchor = time.monotonic()
            self._sim_anchor = self.sim.time + due
        n = int(due / dt + 1e-9)
        if n > 0:
            if self._traj is not None:
                self.sim.set_position_target(self._trajectory_target(self.sim.time + n * dt))
                if self.sim.time >= self._traj[0][-1]:
                    self._traj = None
            with self._lock:
                self.sim.step(n * dt)
        stamp = conv.sec_to_stamp(self.sim.time)
        self._clock_pub.publish(ClockMsg(clock=stamp))
        names, q, qd = self.sim.joint_state()
        self._js_pub.publish(conv.joint_state_msg(names, q, qd, stamp=stamp))

    def _camera_loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += self._cam_period
            try:
                self._on_camera()
            except Exception as exc:  # noqa: BLE001 - keep the robot running without images
                if not self.context.ok():
                    return  # shutting down: the publishers' context is gone
                self.get_logger().error(f"render failed: {exc}", throttle_duration_sec=5.0)
            delay = next_t - time.monotonic()
            if delay < 0.0:  # behind: drop the missed frames instead of bursting
                next_t = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def _on_camera(self) -> None:
        stamp = conv.sec_to_stamp(self.sim.time)
        for c in self.sim.cameras:
            rgb = self.sim.render(c, lock=self._lock)
            frame = f"{c}_optical_frame"
            self._img_pubs[c].publish(conv.numpy_to_image(rgb, "rgb8", stamp, frame))
            fx, fy, cx, cy, w, h = self.sim.camera_intrinsics(c)
            self._info_pubs[c].publish(conv.camera_info_msg(w, h, fx, fy, cx, cy, stamp, frame))

    def _on_objects(self) -> None:
        stamp = conv.sec_to_stamp(self.sim.time)
        objs = [conv.SceneObject(name, p, q, rgba, size, "base_link")
                for name, (p, q, rgba, size) in self.sim.object_poses().items()]
        markers = conv.objects_to_markers(objs, stamp)
        names = [o.name for o in objs]
        if names != self._marker_names:  # an episode renamed objects: clear rviz's old markers
            markers.markers.insert(0, conv.delete_all_marker("base_link"))
            self._marker_names = names
        self._obj_pub.publish(markers)
        if self._task is not None:
            try:
                ok = self.sim.task_success(self._task)
            except (KeyError, ValueError) as exc:  # the task names an object not in this scene
                self.get_logger().error(f"task {self._task.instruction!r}: {exc}", throttle_duration_sec=5.0)
                return
            if ok != self._last_success:
                self._last_success = ok
                self._success_pub.publish(Bool(data=ok))
                self.get_logger().info(f"task {self._task.instruction!r}: success={ok}")

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._lock:
            t = self.sim.time
            self.sim.reset(self.sim.seed + 1)
            self.sim.data.time = t  # /clock must not jump backwards
        self._traj, self._last_success = None, None
        self._reanchor()
        response.success = True
        response.message = f"reset with seed {self.sim.seed}"
        return response

    def _on_episode(self, msg: String) -> None:
        log = self.get_logger()
        try:
            event = json.loads(msg.data)
            if not isinstance(event, dict) or event.get("event") not in ("start", "end"):
                raise ValueError("needs 'event': 'start' | 'end'")
            if event["event"] == "end":
                log.info(f"episode {event.get('episode')} ended: success={event.get('success')}")
                return
            missing = [k for k in ("episode", "seed", "kind", "robot", "instruction") if k not in event]
            if missing:
                raise ValueError(f"'start' lacks {missing}")
            index, seed = int(event["episode"]), int(event["seed"])
            if event["robot"] != self.spec.name:
                log.error(f"/vla_mpc/episode {index} is for robot {event['robot']!r}, this sim is "
                          f"{self.spec.name!r}: ignored")
                return
            spec = sample_episode(self.spec.name, str(event["kind"]), seed)
            instruction = str(event["instruction"])
            task = parse_instruction(instruction, list(spec.objects))
        except (ValueError, TypeError, KeyError) as exc:  # json.JSONDecodeError is a ValueError
            log.error(f"/vla_mpc/episode: {type(exc).__name__}: {exc}: ignored ({msg.data[:200]!r})")
            return
        with self._lock:
            t = self.sim.time
            self.sim.reset(seed, episode=spec)
            self.sim.data.time = t  # /clock must not jump backwards
        self._traj, self._task, self._last_success = None, task, None
        self.episode_index = index
        self._reanchor()
        self._ready_pub.publish(String(data=json.dumps({"episode": index, "seed": seed})))
        log.info(f"episode {index}: {spec.kind} seed {seed}, task {instruction!r}")

    def close(self) -> None:
        """Stop the render thread and release the renderer (called by ``run_node`` at shutdown)."""
        self._stop.set()
        self._cam_thread.join(timeout=2.0)
        self.sim.close()


def main(args: list[str] | None = None) -> int:
    """Console script ``sim_robot``."""
    return run_node(SimRobotNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
