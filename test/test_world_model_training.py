"""Training the JEPA world model end to end on a tiny synthetic contract-B dataset (no sim, no ROS).

The synthetic "robot" is a bright square on a dark background whose pixel position is a fixed
linear function of the Panda's joints 1 and 2; episodes are random walks of those joints. Oracles:
the copy-last-latent baseline (a predictor that learned how actions move the square must beat it at
every step) and the loss before training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.models.jepa import load_world_model, prediction_error_report
from vla_mpc.training.world_model import make_world_model_batch, parse_args, train_world_model, window_starts

SIZE = 32
EPISODES, STEPS = 30, 20


def square_frame(dq: np.ndarray) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: a 6 px square centred at pixels set by the offsets from home of
    joints 1 and 2, ``dq[0]``, ``dq[1]`` [rad] (25 px per rad; home -> the centre)."""
    img = np.full((SIZE, SIZE, 3), 20, np.uint8)
    cx = int(round(SIZE / 2 + 25 * dq[0]))
    cy = int(round(SIZE / 2 + 25 * dq[1]))
    img[max(cy - 3, 0):max(cy + 3, 0), max(cx - 3, 0):max(cx + 3, 0)] = (230, 60, 40)
    return img


def write_dataset(path: Path, seed: int = 0) -> Path:
    """Contract-B files for random walks of joints 1-2 around home."""
    spec = load_robot_spec("panda")
    home = np.asarray(spec.home, np.float64)
    rng = np.random.default_rng(seed)
    frames, proprio, ep, stamps, eps = [], [], [], [], []
    for e in range(EPISODES):
        q = home.copy()
        eps.append({"index": e, "bag": "", "kind": "reach", "instruction": "", "seed": e, "success": True,
                    "source": "random", "start": e * STEPS, "stop": (e + 1) * STEPS})
        for k in range(STEPS):
            frames.append(square_frame(q - home))
            proprio.append(np.concatenate([q, np.zeros_like(q)]))
            ep.append(e)
            stamps.append(0.1 * k)
            step = np.zeros_like(q)
            step[:2] = np.clip(rng.normal(0.0, 0.08, 2), -0.1, 0.1)
            q = np.clip(q + step, home - 0.35, home + 0.35)
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "frames.npy", np.stack(frames))
    pr = np.stack(proprio).astype(np.float32)
    np.save(path / "proprio.npy", pr)
    np.save(path / "actions.npy", np.repeat(pr[:, None, :8], 4, axis=1))
    np.save(path / "episode_index.npy", np.asarray(ep, np.int32))
    np.save(path / "timestamps.npy", np.asarray(stamps))
    st = {"mean": pr.mean(0).tolist(), "std": np.maximum(pr.std(0), 1e-3).tolist(),
          "min": pr.min(0).tolist(), "max": pr.max(0).tolist()}
    meta = {"format": "vla_mpc.dataset/1", "robot": "panda", "joint_names": list(spec.joint_names),
            "camera": "front", "image_size": SIZE, "frame_rate_hz": 10.0, "chunk_size": 4, "chunk_dt": 0.05,
            "episodes": eps, "skipped_bags": [], "stats": {"proprio": st, "action": st}}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


class LocalDataset:
    """Stand-in for ``vla_mpc.training.dataset.Dataset`` (contract B) while it is being written."""

    def __init__(self, path: Path) -> None:
        self.meta = json.loads((path / "meta.json").read_text())
        for name in ("frames", "proprio", "actions", "episode_index", "timestamps"):
            setattr(self, name, np.load(path / f"{name}.npy", mmap_mode="r"))

    def episodes(self, split: str) -> list[int]:
        idx = [e["index"] for e in self.meta["episodes"]]
        return [e for i, e in enumerate(idx) if (i % 10 == 9) == (split == "val")]

    def rows(self, split: str) -> np.ndarray:
        keep = set(self.episodes(split))
        return np.flatnonzero(np.isin(np.asarray(self.episode_index), list(keep)))


def load_dataset(path: Path):
    try:
        from vla_mpc.training.dataset import Dataset
    except ImportError:
        return LocalDataset(path)
    return Dataset.load(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_dataset(write_dataset(tmp_path_factory.mktemp("wm_ds")))


def test_batches_stay_inside_episodes_and_actions_are_deltas(dataset):
    starts = window_starts(dataset, "train", 3)
    ep = np.asarray(dataset.episode_index)
    assert np.all(ep[starts] == ep[starts + 3])
    val = dataset.episodes("val")
    assert val and not np.any(np.isin(ep[starts], val))  # val episodes are not in train windows
    b = make_world_model_batch(dataset, "train", np.random.default_rng(0), 8, horizon=3)
    assert b["frames"].shape == (8, 4, SIZE, SIZE, 3) and b["frames"].dtype == torch.uint8
    assert b["proprio"].shape == (8, 4, 16) and b["actions"].shape == (8, 3, 8)
    np.testing.assert_allclose(b["actions"].numpy(), np.diff(b["proprio"].numpy()[..., :8], axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="no window"):
        window_starts(dataset, "train", STEPS)


def test_short_training_lowers_the_loss_and_beats_copy_last(dataset, tmp_path):
    torch.manual_seed(0)
    args = parse_args(["--dataset", "unused", "--out", str(tmp_path), "--steps", "200", "--minutes", "2.0",
                       "--batch-size", "16", "--horizon", "3", "--latent-dim", "16", "--val-every", "50",
                       "--lr", "2e-3"])
    out = train_world_model(dataset, tmp_path, args, progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    val = [row["val_loss"] for row in log if "val_loss" in row]
    assert len(val) >= 2 and val[-1] < 0.8 * val[0], val
    report = out["report"]
    assert report["horizon"] == 3
    # the predictor beats copy-last at every horizon step (oracle: the trivial world model)
    assert all(m < 0.8 * c for m, c in zip(report["model_l1"], report["copy_last_l1"])), report
    # no collapse: the latent still varies across frames and the checkpoint loads
    net = load_world_model(Path(report["checkpoint"]))
    b = make_world_model_batch(dataset, "val", np.random.default_rng(1), 32, horizon=1)
    z = net.encode_target(b["frames"][:, 0])
    assert float(z.std(dim=0).mean()) > 0.1
    again = prediction_error_report(net, make_world_model_batch(dataset, "val", np.random.default_rng(12345), 64, 3))
    assert again["model_mean"] == pytest.approx(report["model_mean"], rel=1e-5)
