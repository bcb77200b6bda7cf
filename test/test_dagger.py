"""DAgger rollouts (ROS-free): the expert labels every state the executed policy reaches and the
rows form a loadable contract-B dataset; datasets concatenate for training, and expert-labelled
episodes count as imitable whatever their outcome."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.models.checkpoint import save_policy
from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
from vla_mpc.training.dagger import collect
from vla_mpc.training.dataset import Dataset


def _tiny_checkpoint(path) -> None:
    spec = load_robot_spec("panda")
    a = spec.n_joints
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_delta": {"mean": [0.0] * a, "std": [0.01] * a}}
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, image_size=32, vision_width=8, d_model=32,
                       vlm_heads=2, latent_tokens=4, latent_dim=16, expert_width=64, expert_blocks=1, cond_dim=32)
    torch.manual_seed(0)
    save_policy(DualSystemPolicy(cfg, stats).eval(), path)


@pytest.mark.parametrize("beta", [1.0, 0.0])
def test_rollouts_are_labelled_by_the_expert(tmp_path, beta):
    """beta 1: the expert drives and reaches the cube; beta 0: an untrained learner drives and
    fails, and the rows still carry the expert's chunks towards the cube."""
    pytest.importorskip("sentence_transformers")
    _tiny_checkpoint(tmp_path / "ckpt")
    meta = collect(tmp_path / "ckpt", tmp_path / "dg", kinds=["reach"], episodes_per_kind=1, seed_start=60000,
                   beta=beta, render_size=96, threads=1, timeout_s=12.0 if beta else 2.0)
    ds = Dataset.load(tmp_path / "dg")
    (ep,) = ds.meta["episodes"]
    assert ep["expert_labels"] and ep["source"] == "dagger" and ep["success"] == (beta == 1.0)
    assert meta["dagger"]["learner_sr"] == {"reach": float(beta == 1.0)}
    assert meta["dagger"]["expert_phases"] == "state"  # the labelling expert is a function of the state
    n = len(ds)
    assert n == ep["stop"] and ds.frames.shape == (n, 96, 96, 3) and ds.actions.shape == (n, 16, 8)
    assert np.all(np.isfinite(ds.keypoints)) and ds.keypoints.shape == (n, 2, 3)
    assert ds.timestamps[0] == 0.0 and np.allclose(np.diff(ds.timestamps), 0.1)  # one row per chunk, 10 Hz
    if beta == 0.0:
        assert n == 20  # 2 s at 10 Hz
    # every label starts where the command stream is: at the measured positions until the first
    # chunk, then at the committed target, which leads the lagging arm by a few hundredths of a rad
    np.testing.assert_allclose(ds.actions[0, 0], ds.proprio[0, :8], atol=1e-5)
    lead = np.abs(ds.actions[1:, 0] - ds.proprio[1:, :8]).max(axis=1)
    assert np.all(lead < 0.3) and np.median(lead) > 1e-4, np.percentile(lead, [0, 50, 100])
    # the rows are imitable even when the learner failed
    assert len(ds.rows("all", success_only=True, expert_labels=True)) == n
    assert len(ds.rows("all", success_only=True)) == (n if beta else 0)
    # the expert's labels head for the cube: each label continues the row's measured velocity
    # (label[1] - label[0] ~ v dt) and bends it towards the cube, so its last target's TCP is nearer
    # the cube than where the arm would coast at that velocity over the chunk
    from vla_mpc.core.robot_model import RobotModel

    model = RobotModel(load_robot_spec("panda"))
    q, v = ds.proprio[:, :8].astype(np.float64), ds.proprio[:, 8:].astype(np.float64)
    horizon = (ds.actions.shape[1] - 1) * 0.05
    label_end = model.fk_positions(ds.actions[:, -1].astype(np.float64))
    coast_end = model.fk_positions(q + v * horizon)
    goal = ds.keypoints[:, 1].astype(np.float64)
    nearer = np.linalg.norm(label_end - goal, axis=1) < np.linalg.norm(coast_end - goal, axis=1)
    moving = np.abs(v[:, :7]).max(axis=1) > 0.05
    assert moving.sum() >= 5 and nearer[moving].mean() >= 0.8, (moving.sum(), nearer[moving].mean())
    rows = np.flatnonzero(moving)
    fastest = np.abs(v[rows, :7]).argmax(axis=1)
    first_step = ds.actions[rows, 1, fastest] - ds.actions[rows, 0, fastest]
    assert np.mean(np.sign(first_step) == np.sign(v[rows, fastest])) >= 0.9  # continues the measured motion
    if beta == 1.0:  # the expert drives: its labels end nearer the cube than the episode began
        assert np.linalg.norm(label_end[-1] - goal[-1]) < np.linalg.norm(label_end[0] - goal[0])


def test_dart_rollouts_inject_noise_and_keep_clean_labels(tmp_path):
    """No checkpoint: the expert drives with seeded noise on its goals (DART); the rows carry the
    noise-free expert's chunks from the measured states, and the noise moves the visited states."""
    runs = {}
    for seed in (0, 1):
        meta = collect(None, tmp_path / f"dart{seed}", kinds=["reach"], episodes_per_kind=1, seed_start=60000,
                       render_size=64, image_size=32, threads=1, timeout_s=3.0, dart_noise_std=0.05, seed=seed)
        assert meta["dagger"]["checkpoint"] is None and meta["dagger"]["dart_noise_std"] == 0.05
        ds = Dataset.load(tmp_path / f"dart{seed}")
        (ep,) = ds.meta["episodes"]
        assert ep["source"] == "dart" and ep["expert_labels"]
        assert ds.frames.shape == (30, 32, 32, 3)  # 3 s at 10 Hz
        runs[seed] = ds
    a, b = runs[0], runs[1]
    assert np.abs(a.proprio[-1, :7] - b.proprio[-1, :7]).max() > 0.01  # the noise drove other states
    # labels start where the command stream is (at the measured positions before the first chunk)
    np.testing.assert_allclose(a.actions[0, 0], a.proprio[0, :8], atol=1e-5)
    assert np.abs(a.actions[1:, 0] - a.proprio[1:, :8]).max() < 0.3


class _Fake:
    """A System 1 stand-in returning ``value`` everywhere; records its calls."""

    def __init__(self, value: float) -> None:
        self.value, self.calls, self.dt, self.chunk_size = value, [], 0.05, 16

    def infer(self, z, q, prefix=None, velocity=None):
        self.calls.append((z, None if prefix is None else np.array(prefix)))
        return np.full((16, 8), self.value)

    def chunk_from_state(self, q, v=None, start=None):
        return np.full((16, 8), self.value + (0.5 if start is not None else 0.25))

    def reset(self) -> None:
        pass


class _FakeSim:
    time = 0.0

    def render(self, camera):
        return np.zeros((8, 8, 3), np.uint8)

    def object_poses(self):
        return {}


def _relabel(learner, driver, beta=0.0):
    from vla_mpc.training import dagger

    latents = type("L", (), {"last_images": None})()
    r = dagger._Relabel(learner, _Fake(1.0), latents, _FakeSim(), "front", beta, np.random.default_rng(0), 8, 16, 0.05,
                        driver=driver)
    r._task_keypoints = lambda task, objects: np.zeros((2, 3))
    r._resize = lambda frame, size: frame
    return r


def test_labels_come_from_the_clean_expert_and_start_at_the_command():
    """DART: the noisy driver's chunk is executed and the clean expert's own chunk (from the same
    committed stream) is the label. DAgger: the learner's chunk is executed and the label is the
    expert's chunk_from_state from the committed target."""
    prefix = np.zeros((3, 8))
    dart = _relabel(None, _Fake(2.0))
    executed = dart.infer((None, "z"), np.zeros(8), prefix, np.zeros(8))
    assert np.all(executed == 2.0) and np.all(dart.rows["actions"][-1] == 1.0)
    assert dart.driver.calls[0][0] == "z" and np.array_equal(dart.expert.calls[0][1], prefix)
    dagger_ = _relabel(_Fake(3.0), None)
    executed = dagger_.infer(("zl", "z"), np.zeros(8), prefix, np.zeros(8))
    assert np.all(executed == 3.0) and np.all(dagger_.rows["actions"][-1] == 1.5)  # from the command
    dagger_.infer(("zl", "z"), np.zeros(8), None, np.zeros(8))
    assert np.all(dagger_.rows["actions"][-1] == 1.25)  # no stream yet: from the measured positions
    with pytest.raises(ValueError, match="either a learner or a driver"):
        _relabel(None, None)


def test_dagger_labels_executed_by_the_expert_solve_the_task():
    """The labels must be commands the expert would give: the state-phase expert executing its own
    chunk_from_state labels, from its command stream, reaches the cube; started at the measured
    positions instead (the lag dragged back every call), the same labels never get there."""
    from vla_mpc.models.scripted import ScriptedSystem1Config
    from vla_mpc.sim.rollout import RolloutConfig, make_expert, run_episode
    from vla_mpc.sim.sim_robot import SimRobot
    from vla_mpc.sim.tasks import sample_episode

    spec, s2, s1 = make_expert("panda", ScriptedSystem1Config(phases="state"))

    class _Labels:
        chunk_size, dt, action_dim = s1.chunk_size, s1.dt, s1.action_dim

        def __init__(self, from_command: bool) -> None:
            self.from_command = from_command

        def reset(self) -> None:
            s1.reset()

        def infer(self, z, q, prefix=None, velocity=None):
            s1.infer(z, q, prefix, velocity=velocity)
            start = prefix[0] if self.from_command and prefix is not None else None
            return s1.chunk_from_state(q, velocity, start=start)

    sim = SimRobot(spec, cameras=("front",), image_size=(32, 32))
    try:
        episode = sample_episode("panda", "reach", 100000)
        ok = run_episode(sim, episode, s2, _Labels(True), RolloutConfig(timeout_s=12.0))
        stuck = run_episode(sim, episode, s2, _Labels(False), RolloutConfig(timeout_s=12.0))
    finally:
        sim.close()
    assert ok.success and not stuck.success


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="evaluation seeds"):
        collect(tmp_path / "none", tmp_path / "o", seed_start=99_990, episodes_per_kind=10)
    with pytest.raises(ValueError, match="beta"):
        collect(tmp_path / "none", tmp_path / "o", beta=1.5)
    with pytest.raises(ValueError, match="kinds"):
        collect(tmp_path / "none", tmp_path / "o", kinds=["juggle"])
    with pytest.raises(ValueError, match="phases"):
        collect(tmp_path / "none", tmp_path / "o", expert_phases="random")
    with pytest.raises(ValueError, match="dart_noise_std"):
        collect(None, tmp_path / "o")  # neither a learner nor DART's noise
    with pytest.raises(ValueError, match="dart_noise_std"):
        collect(tmp_path / "none", tmp_path / "o", dart_noise_std=0.05)  # both


def _write(path, rows_per_ep: int, episodes: int, value: int, keypoints: bool, **meta_over) -> None:
    n = rows_per_ep * episodes
    path.mkdir(parents=True)
    np.save(path / "frames.npy", np.full((n, 16, 16, 3), value, np.uint8))
    np.save(path / "proprio.npy", np.full((n, 4), value, np.float32))
    np.save(path / "actions.npy", np.full((n, 4, 2), value, np.float32))
    np.save(path / "episode_index.npy", np.repeat(np.arange(episodes, dtype=np.int32), rows_per_ep))
    np.save(path / "timestamps.npy", np.tile(np.arange(rows_per_ep) * 0.1, episodes))
    if keypoints:
        np.save(path / "keypoints.npy", np.full((n, 2, 3), value, np.float32))
    eps = [{"index": e, "kind": "reach", "instruction": "touch the red cube", "success": e % 2 == 0,
            "source": "expert", "start": e * rows_per_ep, "stop": (e + 1) * rows_per_ep} for e in range(episodes)]
    meta = {"format": "vla_mpc.dataset/1", "robot": "synthetic", "joint_names": ["a", "b"], "camera": "front",
            "image_size": 16, "frame_rate_hz": 10.0, "chunk_size": 4, "chunk_dt": 0.05, "episodes": eps,
            "stats": {}}
    meta.update(meta_over)
    (path / "meta.json").write_text(json.dumps(meta))


def test_concatenate_reindexes_episodes_and_fills_missing_keypoints(tmp_path):
    _write(tmp_path / "a", 3, 2, 1, keypoints=True)
    _write(tmp_path / "b", 4, 3, 2, keypoints=False)
    a, b = Dataset.load(tmp_path / "a"), Dataset.load(tmp_path / "b")
    assert Dataset.concatenate([a]) is a
    d = Dataset.concatenate([a, b])
    assert len(d) == 18 and [e["index"] for e in d.meta["episodes"]] == list(range(5))
    assert [(e["start"], e["stop"]) for e in d.meta["episodes"]] == [(0, 3), (3, 6), (6, 10), (10, 14), (14, 18)]
    np.testing.assert_array_equal(d.episode_index, [0] * 3 + [1] * 3 + [2] * 4 + [3] * 4 + [4] * 4)
    assert np.all(d.frames[:6] == 1) and np.all(d.frames[6:] == 2) and np.all(d.actions[6:] == 2)
    assert np.all(d.keypoints[:6] == 1) and np.all(np.isnan(d.keypoints[6:])) and d.meta["keypoint_rows"] == 6
    assert d.meta["stats"]["proprio"]["mean"] == pytest.approx([(6 * 1 + 12 * 2) / 18] * 4)
    # row ranges follow the episodes: the successful ones (0, 2, 4) of the union
    np.testing.assert_array_equal(d.rows("all", success_only=True), list(range(0, 3)) + list(range(6, 10))
                                  + list(range(14, 18)))
    _write(tmp_path / "c", 3, 1, 3, keypoints=False, chunk_dt=0.1)
    with pytest.raises(ValueError, match="chunk_dt"):
        Dataset.concatenate([a, Dataset.load(tmp_path / "c")])
    with pytest.raises(ValueError, match="at least one"):
        Dataset.concatenate([])
