"""Goal-pose estimator: learns the end-effector position from frames, checkpoints, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_mpc.models.goal_pose import GoalPoseConfig, GoalPoseEstimator, load_goal_pose, save_goal_pose

S = 32


def _frames_with_a_dot(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright 4x4 square whose pixel position encodes the 'end effector' (x, y); z constant."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1, (n, 2))
    frames = np.zeros((n, S, S, 3), np.uint8)
    for i, (u, v) in enumerate(xy):
        r, c = int(u * (S - 4)), int(v * (S - 4))
        frames[i, r:r + 4, c:c + 4] = 255
    ee = np.concatenate([0.3 + 0.4 * xy, np.full((n, 1), 0.1)], axis=1).astype(np.float32)
    return frames, ee


def test_learns_positions_from_frames(tmp_path):
    from vla_mpc.training.loop import TrainConfig, train

    frames, ee = _frames_with_a_dot(400)
    cfg = GoalPoseConfig(robot="panda", image_size=S, width=8, d_model=16, hidden=64,
                         ee_mean=tuple(ee.mean(0).tolist()), ee_std=tuple(np.maximum(ee.std(0), 1e-3).tolist()),
                         augment_shift=0)
    torch.manual_seed(0)
    model = GoalPoseEstimator(cfg)

    def make(split, rng, b):
        idx = rng.choice(np.arange(300) if split == "train" else np.arange(300, 400), size=b)
        return {"frames": torch.from_numpy(frames[idx]), "ee": torch.from_numpy(ee[idx])}

    result = train(model, make, tmp_path / "run", TrainConfig(max_steps=300, batch_size=32, lr=3e-3, warmup_steps=10,
                                                              val_every=100, val_batches=2, num_threads=1),
                   save_goal_pose, progress=False)
    errors = [h["val/error_cm"] for h in result.history]
    assert errors[-1] < 3.0, errors  # cm; predicting the mean position would be ~15 cm off
    back = load_goal_pose(tmp_path / "run")  # a training directory loads its best/
    pred = np.stack([back.predict(np.ascontiguousarray(f)) for f in frames[300:320]])
    spread = np.abs(ee[300:320] - ee[300:320].mean(0))[:, :2].mean()
    assert pred.shape == (20, 3) and np.abs(pred - ee[300:320])[:, :2].mean() < 0.5 * spread
    # predict() takes any frame size (resize_frame to image_size)
    big = np.repeat(np.repeat(frames[300], 2, axis=0), 2, axis=1)
    assert back.predict(big).shape == (3,)


def test_bad_checkpoints_and_config(tmp_path):
    model = GoalPoseEstimator(GoalPoseConfig(robot="panda", image_size=S, width=8, d_model=16, hidden=16))
    save_goal_pose(model, tmp_path / "ok")
    assert load_goal_pose(tmp_path / "ok").config == model.config
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_goal_pose(tmp_path / "missing")
    bad = tmp_path / "bad"
    save_goal_pose(model, bad)
    (bad / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_goal_pose(bad)
    doc = json.loads((tmp_path / "ok" / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(dict(doc, hidden=32)))
    with pytest.raises(ValueError, match="head"):
        load_goal_pose(bad)
    (bad / "config.json").write_text(json.dumps(dict(doc, format="other")))
    with pytest.raises(ValueError, match="format"):
        load_goal_pose(bad)
    (bad / "config.json").write_text(json.dumps(doc))
    (bad / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="safetensors"):
        load_goal_pose(bad)
    with pytest.raises(ValueError, match="ee_std"):
        GoalPoseConfig(robot="panda", ee_std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="frames must be"):
        model.forward_normalised(torch.zeros(1, 16, 16, 3, dtype=torch.uint8))


def test_goal_pose_cli_rejects_bad_sources(tmp_path, capsys):
    from vla_mpc.training.goal_pose import main

    assert main(["--out", str(tmp_path / "o")]) == 2
    assert "no frames" in capsys.readouterr().err
    assert main(["--scenes", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "meta.json" in capsys.readouterr().err
