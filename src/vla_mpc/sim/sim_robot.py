"""SimRobot: a robosuite-built MuJoCo tabletop scene, stepped and rendered with the raw ``mujoco`` API.

Design
------
robosuite 1.5.2 is the *asset builder* (``scene.build_scene``): it owns the robot meshes, inertias,
joint ranges, grippers, table and cubes, and composes them into one MJCF. Everything that runs is
plain ``mujoco``:

* A robosuite *environment* would impose its control loop (``env.step(action)`` at ``control_freq``
  with its own controllers, observables and numba warm-up) and a 10x slower step with cameras
  (SIM_AND_MODELS.md: 22 env steps/s with one 128 px camera). A ROS sim must instead behave like a
  ros2_control forward position controller, advance physics against the wall clock in arbitrary
  increments, and render only when the camera timer asks. Owning ``MjModel``/``MjData`` gives that.
* The servo is ours: robosuite's arm actuators are torque motors, so each physics step applies a
  computed-torque PD law ``tau = M(q) (wn^2 (q* - q) - 2 zeta wn qdot) + qfrc_bias`` (Coriolis,
  centrifugal and gravity compensation from MuJoCo's ``qfrc_bias``; ``M`` applied with
  ``mj_mulM``), clipped to the actuator's torque range. Scaling by the inertia makes one
  ``(wn, zeta)`` pair behave alike on the Panda wrist, the UR5e shoulder and GR1's waist. Grippers
  keep robosuite's position actuators; the commanded gripper coordinate (e.g. Panda finger
  position [m], ``spec.gripper.open``..``closed``) is mapped linearly onto the actuator controls
  of robosuite's fully open / fully closed gripper.
* Rendering uses one ``mujoco.Renderer`` per image size with the fast settings measured in
  SIM_AND_MODELS.md: shadows off, reflections off, ``offsamples = 0`` (no MSAA).

Frames and units
----------------
REP 103 units (rad, m, s). ``base_link`` is the robot's root body in the MuJoCo model (robosuite's
``robot0_base``); poses returned here are in ``base_link`` unless named ``world``. Quaternions are
(x, y, z, w) like ROS (MuJoCo's own are (w, x, y, z) and are converted here). Camera poses are of
the *optical* frame (REP 103: z forward, x right, y down); MuJoCo cameras look along -z with +y up.

Joint mapping
-------------
``spec.arm_joint_names`` map to robosuite's robot joints by ``sim.joint_map`` (explicit
``{spec name: robosuite name}``), else by name (robosuite name without its ``robot0_`` prefix equal to
the spec name or its ``_``-separated suffix, e.g. ``panda_joint1`` -> ``joint1``), else by order when
the counts agree. Robot joints no spec joint maps to (e.g. GR1's head when the spec has no head) are
held at their home by the same servo. Gripper joint ``i`` of the spec drives the gripper of arm
``sim.gripper_arms[i]`` (default robosuite's arm order, ``right`` first) and is *measured* by that
gripper's joint ``sim.gripper_measure_joints[i]`` (default its first joint, e.g. Panda
``finger_joint1`` in m).
"""

from __future__ import annotations

import math
import os
import time as _time
from typing import Any, Mapping, Sequence

import numpy as np

from vla_mpc.sim.tasks import EpisodeSpec, Task, bind_origin, is_success
from vla_mpc.sim.scene import (DEFAULT_CAMERAS, SceneModel, build_scene, cubes_from_config, gripper_ctrl,
                               pads_from_config)

# headless rendering (EGL, Mesa llvmpipe on CPU-only machines) unless the caller chose a backend;
# must be set before mujoco creates a GL context
os.environ.setdefault("MUJOCO_GL", "egl")

#: Camera aliases: ``"wrist"`` -> robosuite's eye-in-hand camera (first that exists).
_WRIST_CAMERAS = ("robot0_eye_in_hand", "robot0_eye_in_right_hand")

ObjectPose = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of ``obj`` (RobotSpec fields may be dataclasses or dicts)."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """(..., 4) MuJoCo (w, x, y, z) -> ROS (x, y, z, w)."""
    q = np.asarray(q, float)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def _mat_to_quat_xyzw(mat: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(mat, float).reshape(9))
    return quat_wxyz_to_xyzw(q)


class SimRobot:
    """A robot on a table with coloured cubes, driven like a ros2_control forward position controller.

    Args:
        spec: the robot's ``RobotSpec`` (``vla_mpc.core.robot_model.load_robot_spec``); fields used:
            ``name``, ``joint_names``, ``arm_joint_names``, ``gripper`` (``joints``, ``open``,
            ``closed``; or None), ``limits`` (``lower``/``upper`` arrays over ``joint_names``),
            ``home`` (over ``joint_names``), ``sim`` (dict, keys below).
        cameras: names of the cameras to render: keys of ``sim.cameras`` (default ``front`` and
            ``side``, defined in ``base_link``), ``wrist``, or any robosuite camera name
            (``agentview``, ``frontview``, ``robot0_eye_in_hand``, ...).
        image_size: (width, height) [px]; default ``sim.image_size`` or (224, 224).
        seed: seed of the cube layout (``reset(seed)`` draws a new one).
        physics_dt: MuJoCo timestep [s].

    ``spec.sim`` keys read (all optional except ``robosuite_robot``):
        robosuite_robot (str), robosuite_gripper (str) or robosuite_grippers ({arm: str}),
        robosuite_base (str, "default"), joint_map ({spec joint: robosuite joint, prefixed or not;
        for a gripper joint: the gripper joint that measures it}), base_body or sim_base_body
        (robosuite root body, default robot0_base), base_link_in_sim_base ({xyz, rpy}) or
        base_body_to_base_link ({xyz, quat_xyzw}): base_link in that body (default identity),
        hand_action ({grip_dims: [int], thumb_yaw_dim: int, thumb_yaw_action: float}: which
        robosuite gripper action dims open/close and which stay fixed, for multi-dof hands),
        gripper_arms ([arm]), gripper_measure_joints ([robosuite gripper joint, unprefixed]),
        cameras ({name: {pos: [3] m, lookat: [3] m, fovy: deg}} in base_link),
        image_size ([w, h] px), render_geom_groups ([int], default [1, 2]: robosuite's visual
        meshes; [0, 2] draws the ~10x lighter collision meshes instead, ~4x faster on llvmpipe), objects ([{colour, rgba, half_size}]),
        object_region ({x: [lo, hi], y: [lo, hi]} m in base_link), object_min_separation (m),
        pads ({count: int, size: [3] m}: target pad slots, default 2 of 9 x 9 x 0.2 cm),
        table_full_size ([3] m), table_offset ([3] m, world),
        servo_natural_frequency (rad/s, 40), servo_damping_ratio (1.0).

    Raises:
        ValueError: missing ``sim.robosuite_robot``, unmappable joints, malformed config values, or an
            unknown camera.
    """

    def __init__(
        self,
        spec: Any,
        *,
        cameras: Sequence[str] = ("front",),
        image_size: tuple[int, int] | None = None,
        seed: int = 0,
        physics_dt: float = 0.002,
    ) -> None:
        import mujoco

        if not (0.0 < physics_dt <= 0.01):
            raise ValueError(f"physics_dt must be in (0, 0.01] s, got {physics_dt}")
        self.spec = spec
        sim = dict(_get(spec, "sim", None) or {})
        self._sim_cfg = sim
        if "robosuite_robot" not in sim:
            raise ValueError(f"robot {_get(spec, 'name')!r}: config sim.robosuite_robot is missing")
        if image_size is None:
            image_size = tuple(sim.get("image_size", (224, 224)))
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(f"image_size must be (width, height) > 0, got {image_size}")
        self.image_size = (int(image_size[0]), int(image_size[1]))

        cam_defs = {k: dict(v) for k, v in DEFAULT_CAMERAS.items()}
        cam_defs.update({k: dict(v) for k, v in (sim.get("cameras") or {}).items()})
        self.scene: SceneModel = build_scene(
            str(sim["robosuite_robot"]),
            gripper=sim.get("robosuite_grippers", sim.get("robosuite_gripper", "default")),
            base=str(sim.get("robosuite_base", "default")),
            cubes=cubes_from_config(sim.get("objects")),
            pads=pads_from_config(sim.get("pads")),
            cameras=cam_defs,
            table_full_size=tuple(sim.get("table_full_size", (0.8, 0.8, 0.05))),
            table_offset=tuple(sim.get("table_offset", (0.0, 0.0, 0.8))),
            max_image_size=self.image_size,
        )
        self.model = self.scene.model
        self.model.opt.timestep = float(physics_dt)
        self.model.vis.quality.offsamples = 0
        self.data = mujoco.MjData(self.model)
        self._mujoco = mujoco

        self._setup_joints()
        self._setup_cameras(cameras)
        self._wn = float(sim.get("servo_natural_frequency", 40.0))
        self._zeta = float(sim.get("servo_damping_ratio", 1.0))
        if self._wn <= 0.0 or self._zeta <= 0.0:
            raise ValueError(f"sim.servo_natural_frequency and servo_damping_ratio must be > 0, "
                             f"got {self._wn}, {self._zeta}")
        region = sim.get("object_region", {"x": [0.4, 0.65], "y": [-0.22, 0.22]})
        self._region = (np.asarray(region["x"], float), np.asarray(region["y"], float))
        self._min_sep = float(sim.get("object_min_separation", 0.09))
        self._renderers: dict[tuple[int, int], Any] = {}
        # robosuite puts collision geoms in group 0 and visual meshes in group 1; draw visuals only
        # (and no sites: robosuite's grip-site markers would show up in the images)
        groups = [int(g) for g in sim.get("render_geom_groups", (1, 2))]
        self._vopt = mujoco.MjvOption()
        for g in range(len(self._vopt.geomgroup)):
            self._vopt.geomgroup[g] = 1 if g in groups else 0
            self._vopt.sitegroup[g] = 0
        self._accel = np.zeros(self.model.nv)
        self._mq = np.zeros(self.model.nv)
        self.seed = int(seed)
        self.reset(seed)

    # ------------------------------------------------------------------------------------ setup

    def _setup_joints(self) -> None:
        m, sim = self.model, self._sim_cfg
        self.joint_names: list[str] = list(_get(self.spec, "joint_names"))
        arm_names = list(_get(self.spec, "arm_joint_names"))
        gripper = _get(self.spec, "gripper")
        grip_names = list(_get(gripper, "joints", ()))
        if self.joint_names != arm_names + grip_names:
            raise ValueError(f"spec.joint_names {self.joint_names} != arm_joint_names + gripper.joints "
                             f"{arm_names + grip_names}")
        robot_joints = self.scene.robot_joints
        stripped = {j: j.split("_", 1)[1] if j.startswith("robot0_") else j for j in robot_joints}
        explicit = dict(sim.get("joint_map") or {})
        arm_rs: list[str] = []
        for name in arm_names:
            if name in explicit:
                cand = [j for j in robot_joints if j == explicit[name] or stripped[j] == explicit[name]]
            else:
                cand = [j for j in robot_joints if stripped[j] == name or name.endswith("_" + stripped[j])]
            arm_rs.append(cand[0] if len(cand) == 1 else "")
        if any(not a for a in arm_rs) or len(set(arm_rs)) != len(arm_rs):
            if len(arm_names) == len(robot_joints) and not explicit:
                arm_rs = list(robot_joints)
            else:
                raise ValueError(
                    f"cannot map spec arm joints {arm_names} to robosuite joints {robot_joints}; "
                    "add sim.joint_map {spec name: robosuite name}")
        self._arm_rs = arm_rs
        self._robot_jids = np.array([m.joint(j).id for j in robot_joints])
        self._robot_qadr = m.jnt_qposadr[self._robot_jids]
        self._robot_dadr = m.jnt_dofadr[self._robot_jids]
        self._arm_idx_in_robot = np.array([robot_joints.index(j) for j in arm_rs], dtype=int)
        act_by_joint = {}
        for a in range(m.nu):
            if m.actuator_trntype[a] == self._mujoco.mjtTrn.mjTRN_JOINT:
                act_by_joint[int(m.actuator_trnid[a, 0])] = a
        missing = [j for j, jid in zip(robot_joints, self._robot_jids) if int(jid) not in act_by_joint]
        if missing:
            raise ValueError(f"robosuite robot joints without an actuator: {missing}")
        self._robot_act = np.array([act_by_joint[int(j)] for j in self._robot_jids])
        self._robot_trq = m.actuator_ctrlrange[self._robot_act].copy()

        arms = list(sim.get("gripper_arms") or self.scene.arms)
        self._grippers = []  # (arm, actuator ids, open ctrl, closed ctrl, measure qpos adr)
        measure = list(sim.get("gripper_measure_joints") or [])
        g_open = np.asarray(_get(gripper, "open", ()), float).reshape(-1)
        g_closed = np.asarray(_get(gripper, "closed", ()), float).reshape(-1)
        if len(grip_names) > len(arms) or len(grip_names) > len(self.scene.grippers):
            raise ValueError(f"spec has {len(grip_names)} gripper joints, scene has grippers on "
                             f"{sorted(self.scene.grippers)}")
        if g_open.shape != (len(grip_names),) or g_closed.shape != (len(grip_names),):
            raise ValueError(f"spec.gripper open/closed need {len(grip_names)} values, got "
                             f"{g_open.tolist()} / {g_closed.tolist()}")
        for i, arm in enumerate(arms[: len(grip_names)]):
            g = self.scene.grippers.get(arm)
            if g is None:
                raise ValueError(f"sim.gripper_arms[{i}] = {arm!r} has no gripper "
                                 f"(have {sorted(self.scene.grippers)})")
            if grip_names[i] in explicit:
                mjoint = explicit[grip_names[i]]
                if mjoint not in g["joints"]:
                    raise ValueError(f"sim.joint_map[{grip_names[i]!r}] = {mjoint!r} is not a joint of the "
                                     f"{arm} gripper {g['joints']}")
            elif i < len(measure):
                mj = [j for j in g["joints"] if j == measure[i] or j.endswith("_" + measure[i])]
                if len(mj) != 1:
                    raise ValueError(f"sim.gripper_measure_joints[{i}] = {measure[i]!r} not in {g['joints']}")
                mjoint = mj[0]
            else:
                mjoint = g["joints"][0]
            open_ctrl, closed_ctrl = g["open_ctrl"], g["closed_ctrl"]
            hand = sim.get("hand_action")
            if hand:
                rg = g["robosuite_model"]
                a_open, a_closed = np.zeros(rg.dof), np.zeros(rg.dof)
                dims = [int(k) for k in hand.get("grip_dims", range(rg.dof))]
                a_open[dims], a_closed[dims] = -1.0, 1.0
                if "thumb_yaw_dim" in hand:
                    k = int(hand["thumb_yaw_dim"])
                    a_open[k] = a_closed[k] = float(hand.get("thumb_yaw_action", 0.0))
                open_ctrl = gripper_ctrl(m, rg, a_open)
                closed_ctrl = gripper_ctrl(m, rg, a_closed)
            self._grippers.append({
                "arm": arm,
                "act": np.array([m.actuator(a).id for a in g["actuators"]]),
                "open_ctrl": open_ctrl, "closed_ctrl": closed_ctrl,
                "cmd_open": g_open[i], "cmd_closed": g_closed[i],
                "measure_qadr": int(m.jnt_qposadr[m.joint(mjoint).id]),
                "measure_dadr": int(m.jnt_dofadr[m.joint(mjoint).id]),
                "measure_joint": mjoint,
            })
        # every gripper joint (commanded or not) for joint_state(); the measured one is reported
        # under the spec name, the others under robosuite's prefixed name.
        measured = {g["measure_joint"] for g in self._grippers}
        self._extra_names, extra_q, extra_d = [], [], []
        for arm in self.scene.arms:
            for j in self.scene.grippers.get(arm, {}).get("joints", []):
                if j not in measured:
                    jid = m.joint(j).id
                    self._extra_names.append(j)
                    extra_q.append(m.jnt_qposadr[jid])
                    extra_d.append(m.jnt_dofadr[jid])
        self._state_names = self.joint_names + self._extra_names
        arm_q = self._robot_qadr[self._arm_idx_in_robot]
        arm_d = self._robot_dadr[self._arm_idx_in_robot]
        self._state_qadr = np.concatenate([arm_q, [g["measure_qadr"] for g in self._grippers],
                                           extra_q]).astype(int)
        self._state_dadr = np.concatenate([arm_d, [g["measure_dadr"] for g in self._grippers],
                                           extra_d]).astype(int)

        limits = _get(self.spec, "limits")
        n = len(self.joint_names)
        lower, upper = _get(limits, "lower"), _get(limits, "upper")
        if lower is None or upper is None:
            # fall back to the simulated model's own ranges
            lower = np.concatenate([m.jnt_range[self._robot_jids[self._arm_idx_in_robot], 0],
                                    np.minimum(g_open, g_closed)])
            upper = np.concatenate([m.jnt_range[self._robot_jids[self._arm_idx_in_robot], 1],
                                    np.maximum(g_open, g_closed)])
        self.lower = np.asarray(lower, float).reshape(n)
        self.upper = np.asarray(upper, float).reshape(n)
        home = _get(self.spec, "home")
        if home is None:
            home = np.concatenate([self.scene.robot_init_qpos[self._arm_idx_in_robot], g_open])
        self.home = np.clip(np.asarray(home, float).reshape(n), self.lower, self.upper)
        self._n_arm = len(arm_names)
        self._tcp_sites = [m.site(self.scene.grippers[a]["grip_site"]).id
                           for a in self.scene.arms if a in self.scene.grippers]
        base_body = str(sim.get("base_body", sim.get("sim_base_body", self.scene.base_body)))
        if base_body not in [m.body(i).name for i in range(m.nbody)]:
            base_body = "robot0_" + base_body
        self._base_id = m.body(base_body).id
        off = sim.get("base_link_in_sim_base", sim.get("base_body_to_base_link")) or {}
        self._base_off_p = np.asarray(off.get("xyz", (0.0, 0.0, 0.0)), float).reshape(3)
        if "rpy" in off:
            r, p_, y = (float(v) for v in off["rpy"])
            cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p_), math.sin(p_), math.cos(y), math.sin(y)
            self._base_off_r = np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                                         [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                                         [-sp, cp * sr, cp * cr]])
        elif "quat_xyzw" in off:
            qx, qy, qz, qw = (float(v) for v in off["quat_xyzw"])
            mat = np.empty(9)
            self._mujoco.mju_quat2Mat(mat, np.array([qw, qx, qy, qz]))
            self._base_off_r = mat.reshape(3, 3)
        else:
            self._base_off_r = np.eye(3)
        self._cube_jnt = [m.joint(f"{c.name}_joint0").id for c in self.scene.cubes]
        self._cube_body = [m.body(f"{c.name}_main").id for c in self.scene.cubes]
        # every geom of a cube body (collision + visual) takes the episode's colour
        self._cube_geoms = [np.flatnonzero(m.geom_bodyid == b) for b in self._cube_body]
        self._cube_rgba0 = [m.geom_rgba[g].copy() for g in self._cube_geoms]
        self._pad_mocap = [int(m.body_mocapid[m.body(p.name).id]) for p in self.scene.pads]
        self._pad_geom = [m.geom(f"{p.name}_vis").id for p in self.scene.pads]
        self._pad_size = [2.0 * np.asarray(p.half_size, float) for p in self.scene.pads]
        # current object names and colours per slot (an episode renames them by colour)
        self._cube_names = [c.name for c in self.scene.cubes]
        self._cube_rgba = [np.asarray(c.rgba, float) for c in self.scene.cubes]
        self._pad_names: list[str | None] = [None] * len(self.scene.pads)
        self._pad_rgba = [np.asarray(p.rgba, float) for p in self.scene.pads]
        self.episode: EpisodeSpec | None = None
        self._start_objects: dict[str, ObjectPose] = {}

    def _setup_cameras(self, cameras: Sequence[str]) -> None:
        m = self.model
        all_names = [m.camera(i).name for i in range(m.ncam)]
        self._camera_ids: dict[str, int] = {}
        for c in cameras:
            real = c
            if c == "wrist":
                real = next((w for w in _WRIST_CAMERAS if w in all_names), "")
            if real not in all_names:
                raise ValueError(f"unknown camera {c!r}; available: {all_names + ['wrist']}")
            self._camera_ids[c] = all_names.index(real)
        self.cameras = list(cameras)

    # ------------------------------------------------------------------------------- commands

    def set_position_target(self, q: Sequence[float] | np.ndarray) -> np.ndarray:
        """Set the servo target, like a ros2_control forward position controller.

        Args:
            q: (n,) positions over ``spec.joint_names`` [rad, m for prismatic gripper joints].

        Returns:
            (n,) the target actually used: ``q`` clipped to ``[lower, upper]``.

        Raises:
            ValueError: wrong length or non-finite values (the target is left unchanged).
        """
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"position target has {q.size} values, expected "
                             f"{len(self.joint_names)} ({self.joint_names})")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"position target has non-finite values: {q.tolist()}")
        self._target = np.clip(q, self.lower, self.upper)
        self._robot_target[self._arm_idx_in_robot] = self._target[: self._n_arm]
        for i, g in enumerate(self._grippers):
            span = g["cmd_closed"] - g["cmd_open"]
            s = 0.0 if span == 0.0 else float(np.clip((self._target[self._n_arm + i] - g["cmd_open"]) / span, 0, 1))
            self.data.ctrl[g["act"]] = g["open_ctrl"] + s * (g["closed_ctrl"] - g["open_ctrl"])
        return self._target.copy()

    def teleport_arm(self, q_arm: Sequence[float] | np.ndarray) -> None:
        """Place the arm joints at ``q_arm`` at once (no physics step, velocities zeroed) and make
        it the servo target, so the next frame shows that pose. For rendering scene variations
        (``vla_mpc.training.scenes``), not for control: nothing is checked for collisions.

        Args:
            q_arm: (n_arm,) arm joint positions over the first ``n_arm`` ``spec.joint_names`` [rad];
                clipped to the joint limits.

        Raises:
            ValueError: wrong length or non-finite values (nothing is changed).
        """
        q = np.asarray(q_arm, dtype=float).reshape(-1)
        if q.shape != (self._n_arm,) or not np.all(np.isfinite(q)):
            raise ValueError(f"teleport_arm needs {self._n_arm} finite arm positions, got {q.tolist()}")
        q = np.clip(q, self.lower[: self._n_arm], self.upper[: self._n_arm])
        d = self.data
        d.qpos[self._robot_qadr[self._arm_idx_in_robot]] = q
        d.qvel[self._robot_dadr[self._arm_idx_in_robot]] = 0.0
        target = self._target.copy()
        target[: self._n_arm] = q
        self.set_position_target(target)
        self._mujoco.mj_forward(self.model, d)

    @property
    def position_target(self) -> np.ndarray:
        """(n,) current servo target over ``spec.joint_names``."""
        return self._target.copy()

    # -------------------------------------------------------------------------------- physics

    @property
    def time(self) -> float:
        """Simulation time since the last reset [s]."""
        return float(self.data.time)

    @property
    def physics_dt(self) -> float:
        """MuJoCo timestep [s]."""
        return float(self.model.opt.timestep)

    def _apply_servo(self) -> None:
        m, d = self.model, self.data
        q = d.qpos[self._robot_qadr]
        qd = d.qvel[self._robot_dadr]
        self._accel[:] = 0.0
        self._accel[self._robot_dadr] = self._wn ** 2 * (self._robot_target - q) - 2.0 * self._zeta * self._wn * qd
        self._mujoco.mj_mulM(m, d, self._mq, self._accel)
        tau = self._mq[self._robot_dadr] + d.qfrc_bias[self._robot_dadr]
        d.ctrl[self._robot_act] = np.clip(tau, self._robot_trq[:, 0], self._robot_trq[:, 1])

    def step(self, duration_s: float | None = None) -> int:
        """Advance physics by ``duration_s`` (rounded to whole timesteps; None: one timestep).

        The servo torque is recomputed before every ``mj_step`` (``qfrc_bias`` and ``M`` come from
        the previous step's ``mj_forward`` stage, as in a real 1-sample-delay controller).

        Returns:
            The number of physics steps taken.

        Raises:
            ValueError: negative or non-finite ``duration_s``.
        """
        if duration_s is None:
            n = 1
        else:
            if not math.isfinite(duration_s) or duration_s < 0.0:
                raise ValueError(f"duration_s must be finite and >= 0, got {duration_s}")
            n = int(round(duration_s / self.model.opt.timestep))
        mj_step = self._mujoco.mj_step
        for _ in range(n):
            self._apply_servo()
            mj_step(self.model, self.data)
        return n

    def reset(self, seed: int | None = None, episode: EpisodeSpec | None = None) -> None:
        """Put the robot at ``home`` with the gripper open per ``home``, and lay out the objects.

        Without ``episode``: the configured cubes (names and colours of ``sim.objects``) rest on
        the table at uniformly random positions in ``sim.object_region`` (``base_link`` x/y [m]) at
        least ``sim.object_min_separation`` apart, with a random yaw in [-pi/4, pi/4]; pads are
        hidden. The same ``seed`` gives the same layout.

        With ``episode`` (``tasks.sample_episode``): its cubes fill the cube slots in order and its
        pads the pad slots; each takes the episode's name, x/y position, yaw and colour (geom rgba
        set at run time); z is set so the object rests on this sim's table. Unused pad slots are
        hidden (parked below the table, not in ``object_poses``). ``seed`` defaults to the
        episode's.

        The object poses right after the reset are kept (``start_object_poses``): push tasks are
        judged against them.

        Raises:
            RuntimeError: the cubes do not fit the region at the required separation.
            ValueError: the episode is for another robot, has a number of cubes other than the
                scene's cube slots, more pads than pad slots, or a size differing from the slot's.
        """
        mj = self._mujoco
        m, d = self.model, self.data
        if episode is not None:
            self._check_episode(episode)
        if seed is None and episode is not None:
            seed = episode.seed
        if seed is not None:
            self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        mj.mj_resetData(m, d)
        robot_q = self.scene.robot_init_qpos.copy()
        if robot_q.shape != (len(self.scene.robot_joints),):
            robot_q = np.zeros(len(self.scene.robot_joints))
        robot_q[self._arm_idx_in_robot] = self.home[: self._n_arm]
        d.qpos[self._robot_qadr] = robot_q
        for arm in self.scene.arms:
            g = self.scene.grippers.get(arm)
            if g is not None:
                for j, v in zip(g["joints"], g["init_qpos"]):
                    d.qpos[m.jnt_qposadr[m.joint(j).id]] = v
        self._robot_target = robot_q.copy()
        self._target = self.home.copy()
        mj.mj_forward(m, d)
        base_pos, base_rot = self.base_pose_matrix()
        table_z = self.table_height()
        if episode is None:
            poses = self._random_layout(rng)
            self._cube_names = [c.name for c in self.scene.cubes]
            self._cube_rgba = [np.asarray(c.rgba, float) for c in self.scene.cubes]
            pads: list[tuple[str, np.ndarray, np.ndarray]] = []
        else:
            cubes = [(k, v) for k, v in episode.objects.items() if v.get("type", "cube") == "cube"]
            poses = [(np.asarray(v["position"], float)[:2], float(v.get("yaw", 0.0))) for _, v in cubes]
            self._cube_names = [k for k, _ in cubes]
            self._cube_rgba = [np.asarray(v["rgba"], float) for _, v in cubes]
            pads = [(k, np.asarray(v["position"], float)[:2], np.asarray(v["rgba"], float))
                    for k, v in episode.objects.items() if v.get("type") == "pad"]
        for i, (c, jid) in enumerate(zip(self.scene.cubes, self._cube_jnt)):
            xy, yaw = poses[i]
            p_world = base_pos + base_rot @ np.array([xy[0], xy[1], table_z + c.half_size[2]])
            adr = m.jnt_qposadr[jid]
            d.qpos[adr: adr + 3] = p_world
            d.qpos[adr + 3: adr + 7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
            m.geom_rgba[self._cube_geoms[i]] = self._cube_rgba[i] if episode is not None else self._cube_rgba0[i]
        self._pad_names = [None] * len(self.scene.pads)
        for k, (mocap, gid, size) in enumerate(zip(self._pad_mocap, self._pad_geom, self._pad_size)):
            if k < len(pads):
                name, xy, rgba = pads[k]
                self._pad_names[k], self._pad_rgba[k] = name, rgba
                d.mocap_pos[mocap] = base_pos + base_rot @ np.array([xy[0], xy[1], table_z + 0.5 * size[2]])
                m.geom_rgba[gid] = rgba
            else:
                d.mocap_pos[mocap] = [0.0, 0.0, self.scene.table_top_z - 1.0]
            quat = np.empty(4)
            mj.mju_mat2Quat(quat, np.ascontiguousarray(base_rot).reshape(9))
            d.mocap_quat[mocap] = quat
        self.episode = episode
        self.set_position_target(self.home)
        mj.mj_forward(m, d)
        self._start_objects = self.object_poses()

    def _check_episode(self, episode: EpisodeSpec) -> None:
        name = _get(self.spec, "name")
        if episode.robot != name:
            raise ValueError(f"episode is for robot {episode.robot!r}, this sim is {name!r}")
        cubes = [(k, v) for k, v in episode.objects.items() if v.get("type", "cube") == "cube"]
        pads = [(k, v) for k, v in episode.objects.items() if v.get("type") == "pad"]
        if len(cubes) != len(self.scene.cubes) or len(pads) > len(self.scene.pads):
            raise ValueError(f"episode has {len(cubes)} cubes and {len(pads)} pads; the scene has "
                             f"{len(self.scene.cubes)} cube and {len(self.scene.pads)} pad slots")
        slots = [2.0 * np.asarray(c.half_size) for c in self.scene.cubes] + self._pad_size
        for (k, v), size in zip(cubes + pads, slots):
            if "size" in v and not np.allclose(np.asarray(v["size"], float), size, atol=1e-6):
                raise ValueError(f"episode object {k!r} has size {v['size']}, the scene slot "
                                 f"{np.round(size, 4).tolist()} (sizes are fixed at scene build)")

    def _random_layout(self, rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
        placed: list[np.ndarray] = []
        out = []
        for _c in self.scene.cubes:
            for _ in range(2000):
                xy = np.array([rng.uniform(*self._region[0]), rng.uniform(*self._region[1])])
                if all(np.linalg.norm(xy - p) >= self._min_sep for p in placed):
                    break
            else:
                raise RuntimeError(f"cannot place {len(self.scene.cubes)} cubes {self._min_sep} m apart "
                                   f"in region x={self._region[0]}, y={self._region[1]}")
            placed.append(xy)
            out.append((xy, rng.uniform(-math.pi / 4, math.pi / 4)))
        return out

    # --------------------------------------------------------------------------------- state

    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Measured joint state: arm + every gripper joint.

        Returns:
            names: ``spec.joint_names`` (gripper joints measured by their measure joint), then the
                remaining gripper joints under robosuite's prefixed names.
            position: (len(names),) float64 [rad or m].
            velocity: (len(names),) float64 [rad/s or m/s].
        """
        d = self.data
        return list(self._state_names), d.qpos[self._state_qadr].copy(), d.qvel[self._state_dadr].copy()

    def base_pose_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``base_link`` in ``world``: position (3,) [m] and rotation matrix (3, 3)."""
        b = self._base_id
        rb = self.data.xmat[b].reshape(3, 3)
        return self.data.xpos[b] + rb @ self._base_off_p, rb @ self._base_off_r

    def base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """``base_link`` in ``world``: position (3,) [m], quaternion (x, y, z, w)."""
        p, r = self.base_pose_matrix()
        return p, _mat_to_quat_xyzw(r)

    def _to_base(self, pos_w: np.ndarray, rot_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bp, br = self.base_pose_matrix()
        return br.T @ (np.asarray(pos_w) - bp), br.T @ np.asarray(rot_w).reshape(3, 3)

    def ee_pose(self, arm: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre point (robosuite's ``grip_site``) of gripper ``arm`` (0 = right) in
        ``base_link``: position (3,) [m], quaternion (x, y, z, w).

        Raises:
            IndexError: the robot has no gripper ``arm``.
        """
        s = self._tcp_sites[arm]
        p, r = self._to_base(self.data.site_xpos[s], self.data.site_xmat[s])
        return p, _mat_to_quat_xyzw(r)

    def tcp_positions(self) -> np.ndarray:
        """(n_grippers, 3) tool centre points in ``base_link`` [m]."""
        return np.array([self.ee_pose(i)[0] for i in range(len(self._tcp_sites))])

    def table_height(self) -> float:
        """Height of the table surface in ``base_link`` [m] (negative: below the base)."""
        bp, br = self.base_pose_matrix()
        return float((br.T @ (np.array([0.0, 0.0, self.scene.table_top_z]) - bp))[2])

    def object_poses(self) -> dict[str, ObjectPose]:
        """Poses of the cubes and of the visible pads in ``base_link``.

        Returns:
            ``{name: (position (3,) [m], quaternion (x, y, z, w) (4,), rgba (4,) in [0, 1],
            size (3,) full edge lengths [m])}``, names e.g. ``"red_cube"``, ``"green_pad"`` (the
            episode's names; without an episode the configured cube names).
        """
        out = {}
        for i, (c, b) in enumerate(zip(self.scene.cubes, self._cube_body)):
            p, r = self._to_base(self.data.xpos[b], self.data.xmat[b])
            out[self._cube_names[i]] = (p, _mat_to_quat_xyzw(r), self._cube_rgba[i].copy(),
                                        2.0 * np.asarray(c.half_size, float))
        for k, name in enumerate(self._pad_names):
            if name is None:
                continue
            mocap = self._pad_mocap[k]
            rot = np.empty(9)
            self._mujoco.mju_quat2Mat(rot, self.data.mocap_quat[mocap])
            p, r = self._to_base(self.data.mocap_pos[mocap], rot.reshape(3, 3))
            out[name] = (p, _mat_to_quat_xyzw(r), self._pad_rgba[k].copy(), self._pad_size[k].copy())
        return out

    def start_object_poses(self) -> dict[str, ObjectPose]:
        """``object_poses()`` as it was right after the last ``reset``."""
        return {k: tuple(np.array(a) for a in v) for k, v in self._start_objects.items()}

    def set_object_pose(self, name: str, position: Sequence[float],
                        quat_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> None:
        """Teleport cube ``name`` to a pose in ``base_link`` (velocity zeroed); for tests and demos.

        Raises:
            KeyError: unknown object name.
        """
        names = list(self._cube_names)
        if name not in names:
            raise KeyError(f"unknown object {name!r}; objects: {names}")
        m, d = self.model, self.data
        jid = self._cube_jnt[names.index(name)]
        bp, br = self.base_pose_matrix()
        q = np.asarray(quat_xyzw, float)
        rot = np.empty(9)
        self._mujoco.mju_quat2Mat(rot, np.array([q[3], q[0], q[1], q[2]]))
        qw = np.empty(4)
        self._mujoco.mju_mat2Quat(qw, (br @ rot.reshape(3, 3)).reshape(9))
        adr, dadr = m.jnt_qposadr[jid], m.jnt_dofadr[jid]
        d.qpos[adr: adr + 3] = bp + br @ np.asarray(position, float)
        d.qpos[adr + 3: adr + 7] = qw
        d.qvel[dadr: dadr + 6] = 0.0
        self._mujoco.mj_forward(m, d)

    # ------------------------------------------------------------------------------- cameras

    def _renderer(self) -> Any:
        key = self.image_size
        r = self._renderers.get(key)
        if r is None:
            mj = self._mujoco
            r = mj.Renderer(self.model, height=key[1], width=key[0])
            r.scene.flags[mj.mjtRndFlag.mjRND_SHADOW] = False
            r.scene.flags[mj.mjtRndFlag.mjRND_REFLECTION] = False
            r.scene.flags[mj.mjtRndFlag.mjRND_SKYBOX] = False
            self._renderers[key] = r
        return r

    def render(self, camera: str | None = None, lock: Any = None) -> np.ndarray:
        """Render ``camera`` (default the first configured) offscreen.

        ``lock`` (a ``threading.Lock``, optional) is held only while the scene is read from
        ``MjData`` (``update_scene``, well under a millisecond), not during rasterisation, so a
        render thread can run while another thread steps physics under the same lock. The GL
        context belongs to the thread that first renders: render from one thread only.

        Returns:
            (H, W, 3) uint8 RGB, H, W = ``image_size[1], image_size[0]``; a fresh array.

        Raises:
            KeyError: ``camera`` is not one of ``self.cameras``.
        """
        camera = self.cameras[0] if camera is None else camera
        if camera not in self._camera_ids:
            raise KeyError(f"camera {camera!r} not configured; configured: {self.cameras}")
        r = self._renderer()
        if lock is None:
            r.update_scene(self.data, camera=self._camera_ids[camera], scene_option=self._vopt)
        else:
            with lock:
                r.update_scene(self.data, camera=self._camera_ids[camera], scene_option=self._vopt)
        return r.render().copy()

    def camera_intrinsics(self, camera: str | None = None) -> tuple[float, float, float, float, int, int]:
        """Pinhole intrinsics of ``camera`` from its vertical field of view ``fovy``.

        Returns:
            (fx, fy, cx, cy, width, height) [px]; square pixels, principal point at the image centre
            in ROS pixel coordinates (pixel centres at integers: ``cx = (W - 1) / 2``).
        """
        camera = self.cameras[0] if camera is None else camera
        w, h = self.image_size
        fovy = math.radians(float(self.model.cam_fovy[self._camera_ids[camera]]))
        f = 0.5 * h / math.tan(0.5 * fovy)
        return f, f, (w - 1) / 2.0, (h - 1) / 2.0, w, h

    def camera_pose(self, camera: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Optical frame of ``camera`` in ``base_link`` (REP 103 optical: z forward, x right,
        y down): position (3,) [m], quaternion (x, y, z, w)."""
        camera = self.cameras[0] if camera is None else camera
        cid = self._camera_ids[camera]
        p, r = self._to_base(self.data.cam_xpos[cid], self.data.cam_xmat[cid])
        return p, _mat_to_quat_xyzw(r @ np.diag([1.0, -1.0, -1.0]))

    def task_success(self, task: Task) -> bool:
        """``tasks.is_success`` on the current state (objects, tool centre points, table height).

        A push task without ``origin`` is judged from the object's pose at the last ``reset``.
        """
        if task.kind == "push" and task.origin is None:
            task = bind_origin(task, self._start_objects)
        return is_success(task, self.object_poses(), self.tcp_positions(), self.table_height())

    def close(self) -> None:
        """Free the renderers' GL contexts."""
        for r in self._renderers.values():
            try:
                r.close()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._renderers.clear()


def measure_throughput(sim: SimRobot, seconds: float = 1.0) -> dict[str, float]:
    """Physics steps/s (with the servo) and render fps of ``sim``'s first camera, wall clock.

    Returns:
        ``{"physics_steps_per_s": ..., "render_fps": ..., "width": ..., "height": ...}``.
    """
    t0 = _time.perf_counter()
    n = 0
    while _time.perf_counter() - t0 < seconds:
        n += sim.step(0.02)
    steps = n / (_time.perf_counter() - t0)
    sim.render()
    t0, k = _time.perf_counter(), 0
    while _time.perf_counter() - t0 < seconds:
        sim.render()
        k += 1
    fps = k / (_time.perf_counter() - t0)
    return {"physics_steps_per_s": steps, "render_fps": fps,
            "width": sim.image_size[0], "height": sim.image_size[1]}

