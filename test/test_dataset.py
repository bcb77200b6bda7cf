"""Bag -> dataset conversion (contract B): exact round trip on a hand-built bag, damaged bags."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.models.vision import resize_frame
from vla_mpc.training.dataset import (
    Dataset, convert, decode_image, episodes_from_events, find_bags, interpolate_targets, main, scan_mcap,
)

NAMES = list(load_robot_spec("panda").joint_names)  # 7 arm joints + panda_finger_joint1
DOF = len(NAMES)
C0 = np.linspace(-1.0, 1.0, DOF)       # command q(t) = C0 + C1 * (t - 10)   [rad, m]
C1 = np.linspace(0.1, 0.3, DOF)        # [rad/s]
JS_T0, JS_DT = 9.9, 0.005              # /joint_states stamps: JS_T0 + i * JS_DT (200 Hz)
IMG = 224
SEC = 1_000_000_000


def js_value(i: int) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity of joint-state number i over NAMES."""
    return 0.001 * i + np.arange(DOF), -0.002 * i - np.arange(DOF)


def image(value: int) -> np.ndarray:
    img = np.zeros((IMG, IMG, 3), np.uint8)
    img[..., 0] = value % 256
    img[: IMG // 2, :, 1] = 255 - value % 256
    img[:, : IMG // 3, 2] = 7 * value % 256
    return img


class BagBuilder:
    """Writes a rosbag2 (MCAP) with the recorder's topics and types, via the rosbags writer."""

    def __init__(self) -> None:
        from rosbags.typesys import Stores, get_typestore

        self.ts = get_typestore(Stores.ROS2_KILTED)
        self.items: list[tuple[int, str, str, object]] = []

    def _hdr(self, stamp: float):
        T = self.ts.types["builtin_interfaces/msg/Time"]
        H = self.ts.types["std_msgs/msg/Header"]
        sec = int(np.floor(stamp))
        return H(stamp=T(sec=sec, nanosec=int(round((stamp - sec) * 1e9))), frame_id="")

    def add(self, log_s: float, topic: str, msgtype: str, msg: object) -> None:
        self.items.append((int(round(log_s * SEC)), topic, msgtype, msg))

    def string(self, log_s: float, topic: str, payload: dict) -> None:
        self.add(log_s, topic, "std_msgs/msg/String", self.ts.types["std_msgs/msg/String"](data=json.dumps(payload)))

    def joint_state(self, log_s: float, topic: str, stamp: float, names, pos, vel) -> None:
        JS = self.ts.types["sensor_msgs/msg/JointState"]
        self.add(log_s, topic, "sensor_msgs/msg/JointState",
                 JS(header=self._hdr(stamp), name=list(names), position=np.asarray(pos, float),
                    velocity=np.asarray(vel, float), effort=np.zeros(0)))

    def image(self, log_s: float, stamp: float, img: np.ndarray) -> None:
        I = self.ts.types["sensor_msgs/msg/Image"]
        self.add(log_s, "/vla_mpc/observation/front/image", "sensor_msgs/msg/Image",
                 I(header=self._hdr(stamp), height=img.shape[0], width=img.shape[1], encoding="rgb8",
                   is_bigendian=0, step=img.shape[1] * 3, data=img.reshape(-1).copy()))

    def objects(self, log_s: float, stamp: float, objects: dict, delete_first: bool = False) -> None:
        """/vla_mpc/sim/object_poses: {name: (position (3,), size (3,))} as CUBE markers (ns = name)."""
        ts = self.ts.types
        M, MA = ts["visualization_msgs/msg/Marker"], ts["visualization_msgs/msg/MarkerArray"]
        P, Q, V = ts["geometry_msgs/msg/Point"], ts["geometry_msgs/msg/Quaternion"], ts["geometry_msgs/msg/Vector3"]
        Pose, C, D = ts["geometry_msgs/msg/Pose"], ts["std_msgs/msg/ColorRGBA"], ts["builtin_interfaces/msg/Duration"]

        def marker(ns: str, i: int, action: int, pos, size) -> object:
            return M(header=self._hdr(stamp), ns=ns, id=i, type=1, action=action,
                     pose=Pose(position=P(x=float(pos[0]), y=float(pos[1]), z=float(pos[2])),
                               orientation=Q(x=0.0, y=0.0, z=0.0, w=1.0)),
                     scale=V(x=float(size[0]), y=float(size[1]), z=float(size[2])),
                     color=C(r=1.0, g=0.0, b=0.0, a=1.0), lifetime=D(sec=0, nanosec=0), frame_locked=False,
                     points=[], colors=[], texture_resource="", texture=ts["sensor_msgs/msg/CompressedImage"](
                         header=self._hdr(stamp), format="", data=np.zeros(0, np.uint8)),
                     uv_coordinates=[], text="", mesh_resource="",
                     mesh_file=ts["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
                     mesh_use_embedded_materials=False)

        markers = [marker("", 0, 3, (0, 0, 0), (0, 0, 0))] if delete_first else []
        markers += [marker(n, i, 0, p, sz) for i, (n, (p, sz)) in enumerate(objects.items())]
        self.add(log_s, "/vla_mpc/sim/object_poses", "visualization_msgs/msg/MarkerArray", MA(markers=markers))

    def write(self, path: Path) -> Path:
        from rosbags.rosbag2 import StoragePlugin, Writer

        with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
            conns = {}
            for t, topic, msgtype, msg in sorted(self.items, key=lambda x: x[0]):
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, msgtype, typestore=self.ts)
                w.write(conns[topic], t, self.ts.serialize_cdr(msg, msgtype))
        return path


def start(ep: int, kind: str, seed: int) -> dict:
    return {"event": "start", "episode": ep, "seed": seed, "kind": kind, "instruction": f"{kind} the red cube",
            "robot": "panda", "source": "expert"}


def end(ep: int, success: bool) -> dict:
    return {"event": "end", "episode": ep, "seed": 0, "kind": "reach", "instruction": "", "robot": "panda",
            "source": "expert", "success": success, "time_to_success_s": 0.4 if success else None}


# Sim stamps are log seconds + 9 (sim clock and wall clock offset), so both clocks advance together.
SIM_OFFSET = 9.0


def build_two_episode_bag(path: Path) -> dict:
    """Episode 0 (logs 1.0-2.0 s): ready at 1.05; a pre-ready frame at 1.02 (excluded); frames every
    0.1 s from 1.1025; commands at 100 Hz from log 1.1 (sim 10.1) to 1.6 (sim 10.6).
    Between episodes (log 2.5): a frame and a wild command, both excluded.
    Episode 1 (logs 3.0-3.8 s, no ready message: the window opens at its start event): a frame
    before its first command (dropped, but the window's t0), then frames; commands from log 3.2.
    Returns the expected values used by the test."""
    b = BagBuilder()
    exp = {"frames": [], "proprio": [], "t": [], "ep": []}
    wild = np.full(DOF, 99.0)
    # joint states over the whole bag (extra finger joint, shuffled order: matched by name)
    names = NAMES + ["panda_finger_joint2"]
    perm = np.random.default_rng(0).permutation(len(names))
    i = 0
    while JS_T0 + i * JS_DT <= 13.0:
        stamp = JS_T0 + i * JS_DT
        p, v = js_value(i)
        p9, v9 = np.append(p, 0.5), np.append(v, 0.0)
        b.joint_state(stamp - SIM_OFFSET + 0.001, "/joint_states", stamp, [names[k] for k in perm], p9[perm], v9[perm])
        i += 1

    def expected_js(stamp: float) -> np.ndarray:
        k = int(np.floor((stamp - JS_T0) / JS_DT + 1e-9))
        p, v = js_value(k)
        return np.concatenate([p, v])

    def cmd(q_t: float) -> np.ndarray:
        return C0 + C1 * (q_t - 10.0)

    # ---- episode 0
    b.string(1.0, "/vla_mpc/episode", start(0, "reach", 11))
    b.image(1.02, 10.02, image(200))  # before ready: excluded
    b.string(1.05, "/vla_mpc/sim/episode_ready", {"episode": 0, "seed": 11})
    # object poses: the red cube moves from x 0.50 to 0.55 at sim 10.45 (frames from 10.5025 see it)
    cube, pad = np.array([0.04, 0.04, 0.04]), np.array([0.1, 0.1, 0.002])
    b.objects(1.06, 10.06, {"red_cube": ((0.50, 0.0, -0.09), cube), "blue_pad": ((0.4, 0.2, -0.111), pad)},
              delete_first=True)
    b.objects(1.45, 10.45, {"red_cube": ((0.55, 0.0, -0.09), cube), "blue_pad": ((0.4, 0.2, -0.111), pad)})
    j = 0
    while 10.1 + 0.01 * j <= 10.6 + 1e-9:
        t = 10.1 + 0.01 * j
        b.joint_state(t - SIM_OFFSET + 0.0005, "/vla_mpc/joint_command", t, NAMES, cmd(t), np.zeros(DOF))
        j += 1
    ep0_frames = [10.1025 + 0.1 * f for f in range(8)]  # 10.1025 .. 10.8025 (past the last command)
    for f, t in enumerate(ep0_frames):
        b.image(t - SIM_OFFSET + 0.002, t, image(f))
        exp["frames"].append(f)
        exp["proprio"].append(expected_js(t))
        exp["t"].append(t - ep0_frames[0])
        exp["ep"].append(0)
    b.add(1.9, "/vla_mpc/sim/task_success", "std_msgs/msg/Bool", b.ts.types["std_msgs/msg/Bool"](data=True))
    b.string(2.0, "/vla_mpc/episode", end(0, True))
    # ---- between episodes
    b.image(2.5, 11.5, image(201))
    b.joint_state(2.5, "/vla_mpc/joint_command", 11.5, NAMES, wild, np.zeros(DOF))
    # ---- episode 1 (no ready message)
    b.string(3.0, "/vla_mpc/episode", start(1, "push", 12))
    b.image(3.1, 12.1, image(202))  # before the first command: dropped, but it is the window's t0
    for j in range(31):  # commands 12.2 .. 12.5
        t = 12.2 + 0.01 * j
        b.joint_state(t - SIM_OFFSET + 0.0005, "/vla_mpc/joint_command", t, NAMES, cmd(t), np.zeros(DOF))
    for f in range(4):
        t = 12.2025 + 0.1 * f
        b.image(t - SIM_OFFSET + 0.002, t, image(50 + f))
        exp["frames"].append(50 + f)
        exp["proprio"].append(expected_js(t))
        exp["t"].append(t - 12.1)
        exp["ep"].append(1)
    b.string(3.8, "/vla_mpc/episode", end(1, False))
    b.write(path)
    exp["cmd_range"] = {0: (10.1, 10.6), 1: (12.2, 12.5)}
    exp["frame_t"] = ep0_frames + [12.2025 + 0.1 * f for f in range(4)]
    exp["cmd"] = cmd
    # task keypoints of "reach the red cube": the cube centre and its top-face centre; episode 1
    # ("push the red cube", no direction, no object poses) has none
    kp = [[[0.50, 0.0, -0.09], [0.50, 0.0, -0.07]] if t < 10.45 else [[0.55, 0.0, -0.09], [0.55, 0.0, -0.07]]
          for t in ep0_frames]
    exp["keypoints"] = np.array(kp + [[[np.nan] * 3] * 2] * 4)
    return exp


@pytest.fixture(scope="module")
def two_episode_bag(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("bags")
    exp = build_two_episode_bag(d / "run0")
    return d / "run0", exp


def test_round_trip_exact(two_episode_bag, tmp_path: Path) -> None:
    bag, exp = two_episode_bag
    meta = convert([bag], tmp_path / "ds", image_size=96, chunk_size=4, chunk_dt=0.05)
    ds = Dataset.load(tmp_path / "ds")
    n = len(exp["frames"])
    assert len(ds) == n == 12
    assert meta["robot"] == "panda" and meta["joint_names"] == NAMES
    assert meta["skipped_bags"] == [] and meta["partial_bags"] == [] and meta["bad_messages"] == 0
    # episode boundaries
    eps = meta["episodes"]
    assert [(e["index"], e["start"], e["stop"], e["kind"], e["seed"], e["success"], e["complete"]) for e in eps] == [
        (0, 0, 8, "reach", 11, True, True), (1, 8, 12, "push", 12, False, True)]
    np.testing.assert_array_equal(ds.episode_index, exp["ep"])
    # frames: resize_frame of the right images, in time order
    for row, value in enumerate(exp["frames"]):
        np.testing.assert_array_equal(ds.frames[row], resize_frame(image(value), 96))
    # proprio: newest joint state at or before the frame stamp, matched by name
    np.testing.assert_allclose(ds.proprio, np.asarray(exp["proprio"], np.float32), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds.timestamps, exp["t"], atol=1e-6)
    # actions: the linear command function inside the command span, the last command past it
    for row, t in enumerate(exp["frame_t"]):
        lo, hi = exp["cmd_range"][exp["ep"][row]]
        for k in range(4):
            q_t = min(t + 0.05 * k, hi)
            np.testing.assert_allclose(ds.actions[row, k], exp["cmd"](q_t), atol=1e-5, err_msg=f"row {row} k {k}")
    # stats over all rows
    np.testing.assert_allclose(meta["stats"]["proprio"]["mean"], ds.proprio.astype(np.float64).mean(0), atol=1e-6)
    np.testing.assert_allclose(meta["stats"]["proprio"]["std"], np.maximum(ds.proprio.astype(np.float64).std(0), 1e-3), atol=1e-6)
    flat = ds.actions.reshape(-1, DOF).astype(np.float64)
    np.testing.assert_allclose(meta["stats"]["action"]["min"], flat.min(0), atol=1e-6)
    np.testing.assert_allclose(meta["stats"]["action"]["max"], flat.max(0), atol=1e-6)
    np.testing.assert_allclose(meta["stats"]["action"]["mean"], flat.mean(0), atol=1e-6)
    assert meta["frame_rate_hz"] == pytest.approx(10.0)
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["format"] == "vla_mpc.dataset/1"
    assert not (tmp_path / "ds" / "frames.tmp").exists()


def test_keypoints_from_object_poses(two_episode_bag, tmp_path: Path) -> None:
    bag, exp = two_episode_bag
    meta = convert([bag], tmp_path / "ds", image_size=96, chunk_size=4, chunk_dt=0.05)
    ds = Dataset.load(tmp_path / "ds")
    assert ds.keypoints is not None and ds.keypoints.shape == (12, 2, 3) and ds.keypoints.dtype == np.float32
    np.testing.assert_allclose(ds.keypoints, exp["keypoints"], atol=1e-6)  # NaN compares equal to NaN
    assert meta["keypoint_rows"] == 8
    # a dataset without the optional file still loads (converted before keypoints existed)
    (tmp_path / "ds" / "keypoints.npy").unlink()
    assert Dataset.load(tmp_path / "ds").keypoints is None


def test_episode_keypoints_edge_cases() -> None:
    from vla_mpc.training.dataset import episode_keypoints

    objs = [(0, 5.0, {"red_cube": (np.array([0.5, 0.0, -0.09]), np.array([0.04] * 3))}),
            (0, 6.0, {"red_cube": (np.array([0.6, 0.0, -0.09]), np.array([0.04] * 3))})]
    kp = episode_keypoints("slide the red cube to the left", np.array([4.0, 5.5, 7.0]), objs)
    assert np.isnan(kp[0]).all()                      # before the first object message
    np.testing.assert_allclose(kp[1], [[0.5, 0.0, -0.09], [0.5, 0.08, -0.09]])  # origin + 8 cm along +y
    np.testing.assert_allclose(kp[2], [[0.6, 0.0, -0.09], [0.5, 0.08, -0.09]])  # goal fixed at the origin's
    assert np.isnan(episode_keypoints("touch the green cube", np.array([5.5]), objs)).all()  # not in the scene
    assert np.isnan(episode_keypoints("dance", np.array([5.5]), objs)).all()
    assert np.isnan(episode_keypoints(None, np.array([5.5]), objs)).all()
    assert episode_keypoints("touch the red cube", np.zeros(0), objs).shape == (0, 2, 3)


def test_splits(tmp_path: Path, two_episode_bag) -> None:
    bag, _ = two_episode_bag
    convert([bag], tmp_path / "ds", image_size=32, chunk_size=2)
    ds = Dataset.load(tmp_path / "ds")
    assert ds.episodes("train") == [0] and ds.episodes("val") == [1]
    np.testing.assert_array_equal(ds.rows("val"), np.arange(8, 12))
    assert ds.episodes("val", success_only=True) == []
    # 25 episodes: val = 9, 19
    ds.meta["episodes"] = [{"index": i, "start": i, "stop": i + 1, "success": True} for i in range(25)]
    assert ds.episodes("val") == [9, 19]
    assert len(ds.episodes("train")) == 23
    with pytest.raises(ValueError, match="split"):
        ds.episodes("test")


def test_truncated_and_garbled_bags(tmp_path: Path, two_episode_bag) -> None:
    bag, exp = two_episode_bag
    full = convert([bag], tmp_path / "full", image_size=32, chunk_size=2)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    # truncated after the first chunk: a recorder killed mid-run (no footer, no metadata.yaml)
    hdr_len = struct.unpack_from("<Q", data, 9)[0]
    pos = 8 + 9 + hdr_len
    assert data[pos] == 0x06
    chunk_end = pos + 9 + struct.unpack_from("<Q", data, pos + 1)[0]
    assert chunk_end < len(data) - 1000
    trunc = tmp_path / "bags" / "truncated"
    trunc.mkdir(parents=True)
    (trunc / mcap.name).write_bytes(data[: chunk_end + 500])
    # garbled: everything after the MCAP header replaced with noise (metadata.yaml kept)
    garbled = tmp_path / "bags" / "garbled"
    shutil.copytree(bag, garbled)
    noise = np.random.default_rng(1).integers(0, 256, len(data) - 40, dtype=np.uint8).tobytes()
    (garbled / mcap.name).write_bytes(data[:40] + noise)
    empty = tmp_path / "bags" / "empty"
    empty.mkdir()
    (empty / "x.mcap").write_bytes(b"")

    msgs, err = scan_mcap(trunc / mcap.name)
    assert msgs and "past the end" in err

    bags = find_bags([tmp_path / "bags"])
    assert {b.name for b in bags} == {"truncated", "garbled", "empty"}
    meta = convert([bag] + bags, tmp_path / "ds", image_size=32, chunk_size=2)
    skipped = {Path(s["bag"]).name: s["reason"] for s in meta["skipped_bags"]}
    assert set(skipped) == {"garbled", "empty"}
    assert [Path(p["bag"]).name for p in meta["partial_bags"]] == ["truncated"]
    ds = Dataset.load(tmp_path / "ds")
    n_full = full["conversion"]["rows"]
    trunc_eps = [e for e in meta["episodes"] if Path(e["bag"]).name == "truncated"]
    assert trunc_eps, "the readable part of the truncated bag was converted"
    first = trunc_eps[0]
    assert first["kind"] == "reach"
    rows = first["stop"] - first["start"]
    assert 0 < rows <= 8
    # what was converted equals the intact bag's rows (frames and proprio do not depend on the cut)
    np.testing.assert_array_equal(ds.frames[first["start"]:first["stop"]], ds.frames[:rows])
    np.testing.assert_array_equal(ds.proprio[first["start"]:first["stop"]], ds.proprio[:rows])
    assert len(ds) == n_full + sum(e["stop"] - e["start"] for e in trunc_eps)


def test_cli_and_load_errors(tmp_path: Path, two_episode_bag, capsys) -> None:
    bag, _ = two_episode_bag
    assert main(["--bags", str(bag.parent), "--out", str(tmp_path / "ds"), "--image-size", "24",
                 "--chunk-size", "3"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["rows"] == 12 and line["episodes"] == 2
    assert main(["--bags", str(bag), "--out", str(tmp_path / "ds")]) == 2  # not empty, no --overwrite
    ds = Dataset.load(tmp_path / "ds")
    assert ds.frames.shape == (12, 24, 24, 3) and ds.actions.shape == (12, 3, DOF)
    (tmp_path / "ds" / "proprio.npy").unlink()
    with pytest.raises(FileNotFoundError, match="proprio.npy"):
        Dataset.load(tmp_path / "ds")
    np.save(tmp_path / "ds" / "proprio.npy", np.zeros((5, 2 * DOF), np.float32))
    with pytest.raises(ValueError, match="proprio.npy"):
        Dataset.load(tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        Dataset.load(tmp_path / "nothing")


def test_nothing_convertible_raises_naming_the_bags(tmp_path: Path) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(ValueError, match="bad magic"):
        convert([d], tmp_path / "ds")


def test_pure_helpers() -> None:
    t = np.array([0.0, 1.0, 2.0])
    q = np.array([[0.0, 10.0], [1.0, 20.0], [4.0, 20.0]])
    out = interpolate_targets(t, q, np.array([[-1.0, 0.5], [1.5, 3.0]]))
    np.testing.assert_allclose(out, [[[0, 10], [0.5, 15]], [[2.5, 20], [4, 20]]])
    ev = [(10, {"event": "start", "episode": 0}), (50, {"event": "end", "episode": 0}),
          (60, {"event": "start", "episode": 1}), (99, {"event": "end", "episode": 7}),
          (120, {"event": "start", "episode": 2})]
    eps = episodes_from_events(ev, [(20, {"episode": 0}), (5, {"episode": 1})], bag_end_ns=200)
    assert [(e.open_ns, e.close_ns, e.end is not None) for e in eps] == [(20, 50, True), (60, 120, False), (120, 200, False)]
    from rosbags.typesys import Stores, get_typestore

    I = get_typestore(Stores.ROS2_KILTED).types["sensor_msgs/msg/Image"]
    H = get_typestore(Stores.ROS2_KILTED).types["std_msgs/msg/Header"]
    T = get_typestore(Stores.ROS2_KILTED).types["builtin_interfaces/msg/Time"]
    px = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)  # 1 x 2 BGR, padded to step 8
    raw = np.concatenate([px.reshape(-1), [0, 0]]).astype(np.uint8)
    m = I(header=H(stamp=T(sec=0, nanosec=0), frame_id=""), height=1, width=2, encoding="bgr8", is_bigendian=0,
          step=8, data=raw)
    np.testing.assert_array_equal(decode_image(m), px[:, :, ::-1])
    m.encoding = "32FC1"
    with pytest.raises(ValueError, match="32FC1"):
        decode_image(m)
