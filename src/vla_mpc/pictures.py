"""Pictures people can look at, from a rosbag2 recording (or a demo output folder).

    python -m vla_mpc.pictures BAG_OR_OUTPUT_DIR [--out DIR] [--robot panda] [--camera front]

Writes PNGs (matplotlib, Agg):

* ``camera_frames.png``: the first and last frame of ``/camera/<camera>/image_raw`` (or its
  ``/compressed``, or the model frames ``/vla_mpc/observation/<camera>/image``) with the commanded
  end-effector path (forward kinematics of ``/vla_mpc/joint_command``) projected into the image with
  a pinhole model: intrinsics from the recorded ``/camera/<camera>/camera_info``, camera pose from
  the sim's camera definition in ``base_link`` (``sim.cameras`` of config/<robot>.yaml over
  ``vla_mpc.sim.scene.DEFAULT_CAMERAS``; bags carry no camera extrinsics). Without camera_info or a
  known camera pose (a real robot's bag), the path is drawn in a side panel (top view) instead.
* ``tcp_path.png``: measured (``/joint_states``) and commanded end-effector path in ``base_link``,
  top and side views, with the objects' first poses (``/vla_mpc/sim/object_poses``).
* ``joints.png``: per joint, measured position and commanded target over time [s since the first
  message], with the position limits of config/<robot>.yaml (``load_robot_spec``) drawn dashed.
* ``latency.png``: per topic, a histogram of inter-arrival times (receive time of the recorder)
  [ms] with p50 / p99.
* ``imagined_rollouts.png``: when ``/vla_mpc/imagined_rollouts`` was recorded, the planner's sampled
  and planned end-effector rollouts (LINE_STRIPs in base_link) of three replans (first, middle,
  last) over the measured path, top view.

A damaged bag gives pictures of what was readable (:attr:`BagData.read_error` says where it stopped).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAX_PATH_POINTS = 1500


@dataclass
class BagData:
    """What the pictures need, read from a bag in one pass. Times are receive times [s]."""

    robot: str | None = None
    joint_names: tuple[str, ...] = ()
    joint_t: np.ndarray = field(default_factory=lambda: np.zeros(0))           # (N,)
    joint_q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))      # (N, D) over joint_names
    command_t: np.ndarray = field(default_factory=lambda: np.zeros(0))         # (M,)
    command_q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))    # (M, D)
    frames: list[tuple[float, np.ndarray]] = field(default_factory=list)       # first and last (t, RGB)
    frame_topic: str | None = None
    intrinsics: tuple[float, float, float, float, int, int] | None = None      # fx, fy, cx, cy, W, H
    objects: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (pos (3,), rgba (4,))
    arrivals: dict[str, np.ndarray] = field(default_factory=dict)              # topic -> receive times (K,)
    rollouts: list[tuple[float, list]] = field(default_factory=list)           # (t, [LineStrip]) per replan
    read_error: str | None = None


def _detect_robot(joint_names: set[str], command_names: tuple[str, ...]) -> str | None:
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.graph import ROBOTS

    for robot in ROBOTS:
        names = load_robot_spec(robot).joint_names
        if tuple(names) == command_names or (joint_names and set(names) <= joint_names):
            return robot
    return None


def find_bag(path: Path) -> Path:
    """A bag directory, a .mcap file, or an output folder holding ``bag/`` -> the bag path.

    Raises:
        FileNotFoundError: nothing bag-like at ``path``.
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".mcap":
        return path
    if path.is_dir() and ((path / "metadata.yaml").is_file() or any(path.glob("*.mcap"))):
        return path
    if (path / "bag").is_dir():
        return path / "bag"
    raise FileNotFoundError(f"{path} is neither a rosbag2 directory nor an output folder with bag/")


def read_bag(bag_path: Path, robot: str | None = None, camera: str = "front") -> BagData:
    """Read what the pictures need from a bag (damage-tolerant: see ``BagData.read_error``)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
    from visualization_msgs.msg import MarkerArray

    from vla_mpc.replay import Bag
    from vla_mpc.ros import conversions as cv

    bag = Bag(bag_path)
    out = BagData()
    candidates = [f"/camera/{camera}/image_raw", f"/camera/{camera}/image_raw/compressed",
                  f"/vla_mpc/observation/{camera}/image"]
    out.frame_topic = next((t for t in candidates if t in bag.topics), None)
    info_topic = f"/camera/{camera}/camera_info"
    arrivals: dict[str, list[float]] = {}
    js: list[tuple[float, tuple[str, ...], np.ndarray]] = []
    cmds: list[tuple[float, tuple[str, ...], np.ndarray]] = []
    first_raw = last_raw = None
    for topic, t_ns, raw in bag.messages():
        t = t_ns * 1e-9
        arrivals.setdefault(topic, []).append(t)
        try:
            if topic == "/joint_states":
                m = deserialize_message(raw, JointState)
                js.append((t, tuple(m.name), np.asarray(m.position, float)))
            elif topic == "/vla_mpc/joint_command":
                m = deserialize_message(raw, JointState)
                cmds.append((t, tuple(m.name), np.asarray(m.position, float)))
            elif topic == out.frame_topic:
                if first_raw is None:
                    first_raw = (t, raw)
                last_raw = (t, raw)
            elif topic == info_topic and out.intrinsics is None:
                out.intrinsics = cv.camera_info_to_intrinsics(deserialize_message(raw, CameraInfo))
            elif topic == "/vla_mpc/sim/object_poses" and not out.objects:
                objs = cv.markers_to_objects(deserialize_message(raw, MarkerArray))
                out.objects = {k: (o.position, o.rgba) for k, o in objs.items()}
            elif topic == "/vla_mpc/imagined_rollouts":
                strips = cv.markers_to_line_strips(deserialize_message(raw, MarkerArray))
                if strips:
                    out.rollouts.append((t, strips))
        except ValueError:
            continue  # one malformed message does not spoil the pictures
    if not bag.status.complete:
        out.read_error = bag.status.stopped_at
    out.arrivals = {k: np.asarray(v) for k, v in arrivals.items()}
    for item in (first_raw, last_raw):
        if item is None:
            continue
        t, raw = item
        try:
            if out.frame_topic.endswith("/compressed"):
                rgb = cv.compressed_to_rgb(deserialize_message(raw, CompressedImage))
            else:
                rgb = cv.image_to_rgb(deserialize_message(raw, Image))
            out.frames.append((t, rgb))
        except ValueError:
            continue
    cmd_names = cmds[0][1] if cmds else ()
    js_names = set(js[0][1]) if js else set()
    out.robot = robot or _detect_robot(js_names, cmd_names)
    if out.robot is None:
        return out
    from vla_mpc.core.robot_model import load_robot_spec

    spec = load_robot_spec(out.robot)
    out.joint_names = tuple(spec.joint_names)
    out.joint_t, out.joint_q = _select(js, out.joint_names)
    out.command_t, out.command_q = _select(cmds, out.joint_names)
    return out


def _select(rows, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    from vla_mpc.ros import conversions as cv

    ts, qs = [], []
    for t, msg_names, pos in rows:
        try:
            qs.append(cv.select_joints(msg_names, pos, names))
            ts.append(t)
        except ValueError:
            continue
    return np.asarray(ts), np.asarray(qs).reshape(len(qs), len(names))


def sim_camera_definitions(robot: str) -> dict[str, dict]:
    """The sim's camera definitions for ``robot``: ``sim.cameras`` of its config over
    ``vla_mpc.sim.scene.DEFAULT_CAMERAS`` ({name: {pos: [3] m, lookat: [3] m, fovy: deg}}, base_link)."""
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.sim.scene import DEFAULT_CAMERAS

    defs = {k: dict(v) for k, v in DEFAULT_CAMERAS.items()}
    defs.update({k: dict(v) for k, v in ((load_robot_spec(robot).sim or {}).get("cameras") or {}).items()})
    return defs


def sim_camera_intrinsics(robot: str, camera: str, size: int) -> tuple[float, float, float, float, int, int] | None:
    """Pinhole intrinsics (fx, fy, cx, cy, W, H) [px] of a square ``size`` px frame of a sim camera,
    from its vertical field of view ``fovy`` (as ``SimRobot.camera_intrinsics``: f = S / 2 /
    tan(fovy / 2), principal point at the centre); None when the camera is not defined."""
    d = sim_camera_definitions(robot).get(camera)
    if d is None or "fovy" not in d:
        return None
    f = 0.5 * size / np.tan(0.5 * np.radians(float(d["fovy"])))
    return f, f, (size - 1) / 2.0, (size - 1) / 2.0, int(size), int(size)


def camera_pose_in_base(robot: str, camera: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Optical frame of a sim camera in ``base_link``: (R (3, 3) columns = optical x right, y down,
    z forward; p (3,) [m]) from its ``pos``/``lookat`` definition (``sim.cameras`` of the robot
    config over ``DEFAULT_CAMERAS``), the construction ``vla_mpc.sim.scene`` gives MuJoCo (world up
    z). None when the camera is not defined (e.g. ``wrist``: it moves with the arm)."""
    defs = sim_camera_definitions(robot)
    if camera not in defs or "lookat" not in defs[camera]:
        return None
    pos, look = np.asarray(defs[camera]["pos"], float), np.asarray(defs[camera]["lookat"], float)
    z = look - pos
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # down
    return np.stack([x, y, z], axis=1), pos


def project(points: np.ndarray, rotation: np.ndarray, position: np.ndarray,
            intrinsics: tuple[float, float, float, float, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of (N, 3) ``base_link`` points [m] -> (N, 2) pixel (u right, v down) and an
    (N,) mask of points in front of the camera and inside the image. ``rotation``/``position``: the
    optical frame in base_link; ``intrinsics`` (fx, fy, cx, cy, W, H) [px]."""
    fx, fy, cx, cy, w, h = intrinsics
    pc = (np.asarray(points, float) - position) @ rotation  # [N, 3] in the optical frame
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([fx * pc[:, 0] / z + cx, fy * pc[:, 1] / z + cy], axis=1)
    ok = (z > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 0] <= w - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= h - 0.5)
    return uv, ok


def _tcp_path(robot: str, q: np.ndarray) -> np.ndarray:
    """(N, D) joint positions -> (<= MAX_PATH_POINTS, 3) TCP positions [m] in base_link."""
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    if len(q) == 0:
        return np.zeros((0, 3))
    model = RobotModel(load_robot_spec(robot))
    step = max(1, len(q) // MAX_PATH_POINTS)
    return np.stack([model.fk(qi)[:3, 3] for qi in q[::step]])


def _object_colour(name: str, rgba: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(np.asarray(rgba, float)[:3], 0.0, 1.0)
    return tuple(c) if c.sum() > 0 else (0.5, 0.5, 0.5)


def save_pictures(data: BagData, out_dir: Path, camera: str = "front") -> list[Path]:
    """Write the PNGs this module describes into ``out_dir`` (created). Returns their paths; a
    picture whose inputs are not in the bag is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    t_origin = min([a[0] for a in data.arrivals.values() if a.size] or [0.0])
    measured = _tcp_path(data.robot, data.joint_q) if data.robot and len(data.joint_q) else np.zeros((0, 3))
    commanded = _tcp_path(data.robot, data.command_q) if data.robot and len(data.command_q) else np.zeros((0, 3))

    def save(fig, name: str) -> None:
        fig.tight_layout()
        p = out_dir / name
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    # camera frames + the commanded path projected (or beside them)
    if data.frames:
        pose = camera_pose_in_base(data.robot, camera) if data.robot else None
        projectable = pose is not None and data.intrinsics is not None and len(commanded) > 1
        panels = len(data.frames) + (0 if projectable or len(commanded) < 2 else 1)
        fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4), squeeze=False)
        for ax, (t, img), title in zip(axes[0], data.frames, ("first frame", "last frame")):
            ax.imshow(img)
            ax.set_title(f"{data.frame_topic}\n{title}, t = {t - t_origin:.1f} s", fontsize=8)
            ax.axis("off")
            if projectable:
                fx, fy, cx, cy, w, h = data.intrinsics
                sx, sy = img.shape[1] / w, img.shape[0] / h  # frames resized from the calibrated size
                uv, ok = project(commanded, pose[0], pose[1], data.intrinsics)
                uv = uv * [sx, sy]
                ax.plot(np.where(ok, uv[:, 0], np.nan), np.where(ok, uv[:, 1], np.nan), "-", color="yellow",
                        lw=1.5, label="commanded TCP path")
                for name, (pos, rgba) in data.objects.items():
                    o_uv, o_ok = project(pos[None], pose[0], pose[1], data.intrinsics)
                    if o_ok[0]:
                        ax.plot(o_uv[0, 0] * sx, o_uv[0, 1] * sy, "+", color="white", ms=9)
                ax.set_xlim(-0.5, img.shape[1] - 0.5)
                ax.set_ylim(img.shape[0] - 0.5, -0.5)
        if projectable:
            axes[0][0].legend(fontsize=7, loc="lower left")
        elif len(commanded) > 1:
            ax = axes[0][-1]
            ax.plot(commanded[:, 0], commanded[:, 1], "-", color="tab:orange", label="commanded TCP path")
            for name, (pos, rgba) in data.objects.items():
                ax.plot(pos[0], pos[1], "s", color=_object_colour(name, rgba), label=name)
            ax.set_title("commanded path, top view (base_link)\n(no camera pose/intrinsics to project)", fontsize=8)
            ax.set_xlabel("x [m]")
            ax.set_ylabel("y [m]")
            ax.set_aspect("equal", adjustable="datalim")
            ax.legend(fontsize=7)
        save(fig, "camera_frames.png")

    # end-effector paths, top and side views
    if len(measured) > 1 or len(commanded) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
        for ax, (i, j), (xl, yl) in zip(axes, ((0, 1), (0, 2)), (("x [m]", "y [m]"), ("x [m]", "z [m]"))):
            if len(measured) > 1:
                ax.plot(measured[:, i], measured[:, j], "-", color="tab:blue", lw=1.5, label="measured TCP")
                ax.plot(measured[0, i], measured[0, j], "o", color="tab:green", label="start")
                ax.plot(measured[-1, i], measured[-1, j], "s", color="tab:red", label="end")
            if len(commanded) > 1:
                ax.plot(commanded[:, i], commanded[:, j], "--", color="tab:orange", lw=1.0, label="commanded TCP")
            for name, (pos, rgba) in data.objects.items():
                ax.plot(pos[i], pos[j], "X", color=_object_colour(name, rgba), ms=10, label=name)
            ax.set_xlabel(xl)
            ax.set_ylabel(yl)
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
        axes[0].set_title("end-effector path, top view (base_link)")
        axes[1].set_title("side view (base_link)")
        axes[1].legend(fontsize=7, loc="best")
        save(fig, "tcp_path.png")

    # joint positions and commands with limits
    if data.robot and (len(data.joint_q) or len(data.command_q)):
        from vla_mpc.core.robot_model import load_robot_spec

        spec = load_robot_spec(data.robot)
        n = len(data.joint_names)
        cols = 4 if n > 9 else 2
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 2.0 * rows), squeeze=False, sharex=True)
        for k, name in enumerate(data.joint_names):
            ax = axes[k // cols][k % cols]
            if len(data.joint_q):
                ax.plot(data.joint_t - t_origin, data.joint_q[:, k], "-", color="tab:blue", lw=1.0, label="measured")
            if len(data.command_q):
                ax.plot(data.command_t - t_origin, data.command_q[:, k], "--", color="tab:orange", lw=1.0, label="commanded")
            for lim in (spec.limits.lower[k], spec.limits.upper[k]):
                ax.axhline(lim, color="tab:red", ls=":", lw=1.0)
            ax.set_title(f"{name} [{'m' if k >= len(spec.arm_joint_names) else 'rad'}]", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for k in range(n, rows * cols):
            axes[k // cols][k % cols].axis("off")
        axes[0][0].legend(fontsize=7, loc="best")
        for ax in axes[-1]:
            ax.set_xlabel("t [s]")
        fig.suptitle(f"{data.robot}: joint positions and commands; position limits dotted red", fontsize=9)
        save(fig, "joints.png")

    # inter-arrival histograms
    topics = sorted(t for t, a in data.arrivals.items() if a.size >= 3)
    if topics:
        cols = 3
        rows = int(np.ceil(len(topics) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 2.4 * rows), squeeze=False)
        for k, topic in enumerate(topics):
            ax = axes[k // cols][k % cols]
            gaps = np.diff(np.sort(data.arrivals[topic])) * 1e3
            ax.hist(gaps, bins=40, color="tab:blue")
            ax.set_yscale("log")
            ax.set_title(f"{topic}\np50 {np.percentile(gaps, 50):.1f} ms, p99 {np.percentile(gaps, 99):.1f} ms, "
                         f"n={gaps.size + 1}", fontsize=7)
            ax.tick_params(labelsize=7)
        for k in range(len(topics), rows * cols):
            axes[k // cols][k % cols].axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("inter-arrival [ms]", fontsize=7)
        save(fig, "latency.png")

    # the planner's imagined rollouts
    if data.rollouts:
        picks = sorted({0, len(data.rollouts) // 2, len(data.rollouts) - 1})
        fig, axes = plt.subplots(1, len(picks), figsize=(4.6 * len(picks), 4.4), squeeze=False)
        for ax, i in zip(axes[0], picks):
            t, strips = data.rollouts[i]
            if len(measured) > 1:
                ax.plot(measured[:, 0], measured[:, 1], "-", color="0.7", lw=1.0, label="measured TCP")
            for s in strips:
                plan = s.ns == "plan"
                ax.plot(s.points[:, 0], s.points[:, 1], "-", color=np.clip(s.rgba[:3], 0, 1),
                        lw=2.0 if plan else 0.6, alpha=1.0 if plan else 0.6, label="plan" if plan else None)
            for name, (pos, rgba) in data.objects.items():
                ax.plot(pos[0], pos[1], "X", color=_object_colour(name, rgba), ms=9)
            ax.set_title(f"imagined rollouts, t = {t - t_origin:.1f} s ({len(strips)} strips)", fontsize=8)
            ax.set_xlabel("x [m]")
            ax.set_ylabel("y [m]")
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, "imagined_rollouts.png")
    return paths


def make_pictures(path: Path, out_dir: Path | None = None, robot: str | None = None, camera: str = "front"
                  ) -> tuple[list[Path], BagData]:
    """Bag or output folder -> PNGs in ``out_dir`` (default: the output folder, or ``<bag>-pictures``
    beside a bare bag). Returns (paths, the data read)."""
    path = Path(path)
    bag = find_bag(path)
    if out_dir is None:
        out_dir = path if bag != path else bag.parent / f"{bag.name}-pictures"
    data = read_bag(bag, robot, camera)
    return save_pictures(data, Path(out_dir), camera), data


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.pictures``; prints a JSON line with the pictures written."""
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.pictures", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path, help="rosbag2 directory, .mcap file, or an output folder with bag/")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--robot", default=None, help="panda | ur5e | gr1 (default: from the joint names)")
    ap.add_argument("--camera", default="front")
    a = ap.parse_args(argv)
    try:
        paths, data = make_pictures(a.path, a.out, a.robot, a.camera)
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(json.dumps({"pictures": [str(p) for p in paths], "robot": data.robot, "bag_error": data.read_error}))
    if data.read_error:
        print(f"[pictures] bag damaged, pictures show what was readable: {data.read_error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
