"""Policy training on a tiny synthetic dataset written in the contract-B format inside the test:
batches pair each row with an older frame of the same episode, the joint loss goes down through
the shared training loop, and ``python -m vla_mpc.train policy`` writes a loadable checkpoint."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vla_mpc.models.checkpoint import load_policy
from vla_mpc.training.dataset import Dataset
from vla_mpc.training.loop import TrainConfig, train
from vla_mpc.training.policy import _instruction_of_rows, build_policy, make_policy_batch

S, H, DOF, EPISODES, ROWS = 32, 8, 2, 6, 20
INSTRUCTIONS = ("reach the red cube", "reach the blue cube")
SMALL = dict(vision_width=8, d_model=32, vlm_heads=2, latent_tokens=4, latent_dim=16, expert_width=64,
             expert_blocks=2, cond_dim=32)


def _write_dataset(path) -> None:
    """Episodes reach a target drawn as a bright square; channel 0 of every pixel = the row index."""
    rng = np.random.default_rng(0)
    n = EPISODES * ROWS
    frames = np.zeros((n, S, S, 3), np.uint8)
    proprio = np.zeros((n, 2 * DOF), np.float32)
    actions = np.zeros((n, H, DOF), np.float32)
    episode_index = np.repeat(np.arange(EPISODES, dtype=np.int32), ROWS)
    timestamps = np.tile(np.arange(ROWS) * 0.1, EPISODES)
    episodes = []
    for e in range(EPISODES):
        target = rng.uniform(-1, 1, DOF)
        q = np.zeros(DOF)
        px = ((target + 1) / 2 * (S - 8)).astype(int)
        for i in range(ROWS):
            r = e * ROWS + i
            frames[r, px[0]:px[0] + 8, px[1]:px[1] + 8, 1] = 255
            frames[r, ..., 0] = r
            steps = q + (target - q) * (np.arange(1, H + 1)[:, None] / H) * 0.5
            actions[r] = steps
            proprio[r, :DOF], proprio[r, DOF:] = q, (steps[0] - q) / 0.05
            q = steps[1]
        episodes.append({"index": e, "bag": "synthetic", "kind": "reach", "instruction": INSTRUCTIONS[e % 2],
                         "seed": e, "success": True, "source": "expert", "start": e * ROWS, "stop": (e + 1) * ROWS})

    def stats(x):
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-3).tolist(),
                "min": x.min(0).tolist(), "max": x.max(0).tolist()}

    meta = {"format": "vla_mpc.dataset/1", "robot": "synthetic", "joint_names": [f"j{i}" for i in range(DOF)],
            "camera": "front", "image_size": S, "frame_rate_hz": 10.0, "chunk_size": H, "chunk_dt": 0.05,
            "episodes": episodes, "skipped_bags": [], "stats": {"proprio": stats(proprio), "action": stats(actions)}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps(meta))
    for name, arr in (("frames", frames), ("proprio", proprio), ("actions", actions),
                      ("episode_index", episode_index), ("timestamps", timestamps)):
        np.save(path / f"{name}.npy", arr)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    path = tmp_path_factory.mktemp("policy_ds")
    _write_dataset(path)
    return Dataset.load(path)


def _fake_text() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {t: rng.standard_normal(384).astype(np.float32) for t in INSTRUCTIONS}


def test_batches_use_an_older_frame_of_the_same_episode(dataset):
    rng = np.random.default_rng(0)
    text = _fake_text()
    lags = []
    for _ in range(20):
        b = make_policy_batch(dataset, text, "train", rng, 16, max_latent_lag=4)
        assert b["images"].dtype == torch.uint8 and b["images"].shape == (16, S, S, 3)
        assert b["proprio"].shape == (16, 2 * DOF) and b["actions"].shape == (16, H, DOF)
        frame_rows = b["images"][:, 0, 0, 0].numpy().astype(int)
        # Recover each sample's row from its action chunk (unique per row in this dataset).
        rows = [int(np.argmin(np.abs(dataset.actions - a.numpy()).sum(axis=(1, 2)))) for a in b["actions"]]
        for r, f, emb in zip(rows, frame_rows, b["text_emb"].numpy()):
            assert 0 <= r - f <= 4 and dataset.episode_index[f] == dataset.episode_index[r]
            ep = int(dataset.episode_index[r])
            np.testing.assert_array_equal(emb, text[INSTRUCTIONS[ep % 2]])
            lags.append(r - f)
        val = make_policy_batch(dataset, text, "val", rng, 4)
        val_rows = [int(np.argmin(np.abs(dataset.actions - a.numpy()).sum(axis=(1, 2)))) for a in val["actions"]]
        assert set(dataset.episode_index[val_rows].tolist()) <= set(dataset.episodes("val"))
    assert set(lags) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="no text embedding"):
        make_policy_batch(dataset, {}, "train", rng, 2)


@pytest.mark.parametrize("sampler", ["flow", "ddim"])
def test_loss_goes_down(dataset, tmp_path, sampler):
    torch.manual_seed(0)
    policy = build_policy(dataset.meta, dataset.proprio, dataset.actions, sampler=sampler, **SMALL)
    text, instr = _fake_text(), _instruction_of_rows(dataset)
    rows = {"train": dataset.rows("train"), "val": dataset.rows("val")}
    make = lambda split, rng, bs: make_policy_batch(dataset, text, split, rng, bs, rows=rows[split],  # noqa: E731
                                                    instructions=instr)
    from vla_mpc.models.checkpoint import save_policy

    cfg = TrainConfig(max_steps=60, batch_size=32, lr=2e-3, warmup_steps=5, val_every=15, val_batches=2,
                      checkpoint_every=1000, num_threads=1)
    result = train(policy, make, tmp_path / "run", cfg, save_policy, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0], losses
    back = load_policy(tmp_path / "run" / "best")
    assert back.config.sampler == sampler and back.stats["action_delta"]["std"] == policy.stats["action_delta"]["std"]


def test_train_cli_writes_a_loadable_checkpoint(dataset, tmp_path):
    pytest.importorskip("sentence_transformers")
    from vla_mpc.training.policy import main

    out = tmp_path / "cli"
    # a synthetic robot without config/<robot>.yaml: joint-space actions, no state noise on "arm" joints
    assert main(["--dataset", str(dataset.path), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--action-mode", "delta", "--proprio-noise", "0"]) == 0
    policy = load_policy(out / "last", expected_joint_names=dataset.meta["joint_names"])
    assert load_policy(out).config == policy.config  # a run directory loads its best/
    assert policy.config.image_size == S and policy.config.chunk_size == H
    assert json.loads((out / "last" / "config.json").read_text())["extra"]["max_latent_lag"] == 4
    # a second stage starts from the first's weights and records where it started (bench learning sums stages)
    out2 = tmp_path / "stage2"
    assert main(["--dataset", str(dataset.path), str(dataset.path), "--out", str(out2), "--steps", "2",
                 "--batch-size", "4", "--init", str(out / "last"), "--proprio-noise", "0"]) == 0
    summary = json.loads((out2 / "train_summary.json").read_text())
    assert summary["init"] == str((out / "last").resolve()) and summary["steps"] == 2
    staged = load_policy(out2 / "last")
    assert staged.config == policy.config
    both = Dataset.concatenate([dataset, Dataset.load(dataset.path)])  # both --dataset copies were used
    assert len(both) == 2 * len(dataset)
    assert json.loads((out2 / "last" / "config.json").read_text())["extra"]["rows"]["train"] == len(
        both.rows("train", success_only=True, expert_labels=True))
    # --augment-shift overrides the init checkpoint's shift range (and only that), and is saved
    assert policy.config.augment_shift == 4
    out3 = tmp_path / "stage3"
    assert main(["--dataset", str(dataset.path), "--out", str(out3), "--steps", "1", "--batch-size", "4",
                 "--init", str(out / "last"), "--proprio-noise", "0", "--augment-shift", "0"]) == 0
    unshifted = load_policy(out3 / "last").config
    assert unshifted.augment_shift == 0 and dataclasses.replace(unshifted, augment_shift=4) == policy.config


@pytest.fixture(scope="module")
def keypoint_dataset(tmp_path_factory) -> Dataset:
    """The synthetic dataset plus keypoints: the target square's pixel position (both keypoints),
    with one row of NaN (no object poses for it)."""
    path = tmp_path_factory.mktemp("policy_kp_ds")
    _write_dataset(path)
    frames = np.load(path / "frames.npy")
    green = frames[..., 1] == 255
    kp = np.zeros((len(frames), 2, 3), np.float32)
    for r in range(len(frames)):
        ys, xs = np.nonzero(green[r])
        kp[r, :, 0], kp[r, :, 1], kp[r, 1, 2] = ys.mean() / S, xs.mean() / S, 0.02
    kp[3] = np.nan
    np.save(path / "keypoints.npy", kp)
    return Dataset.load(path)


@pytest.mark.parametrize("feature_points", [0, 4])
def test_keypoint_head_learns_where_the_target_is(keypoint_dataset, tmp_path, feature_points):
    from vla_mpc.models.checkpoint import save_policy

    ds = keypoint_dataset
    torch.manual_seed(0)
    policy = build_policy(ds.meta, ds.proprio, ds.actions, ds.keypoints, feature_points=feature_points, **SMALL)
    assert policy.config.keypoint_head and len(policy.stats["keypoints"]["mean"]) == 6
    assert policy.config.feature_points == feature_points
    text, instr = _fake_text(), _instruction_of_rows(ds)
    rng = np.random.default_rng(0)
    batch = make_policy_batch(ds, text, "train", rng, 8, instructions=instr)
    assert batch["keypoints"].shape == (8, 2, 3)
    # a batch whose keypoints are all NaN adds nothing to the loss
    nan_batch = dict(batch, keypoints=torch.full((8, 2, 3), float("nan")))
    torch.manual_seed(1)
    loss_nan, info_nan = policy.loss(nan_batch)
    assert torch.isfinite(loss_nan) and "keypoint_loss" not in info_nan

    make = lambda split, rng, bs: make_policy_batch(ds, text, split, rng, bs, instructions=instr)  # noqa: E731
    cfg = TrainConfig(max_steps=80, batch_size=32, lr=2e-3, warmup_steps=5, val_every=20, val_batches=2,
                      checkpoint_every=1000, num_threads=1)
    result = train(policy, make, tmp_path / "run", cfg, save_policy, progress=False)
    kp_losses = [h["train/keypoint_loss"] for h in result.history]
    assert kp_losses[-1] < 0.3 * kp_losses[0], kp_losses
    # the head survives a checkpoint round trip and reads positions in the dataset's units
    back = load_policy(tmp_path / "run" / "last").eval()
    assert back.config.keypoint_head and back.config.feature_points == feature_points
    rows = np.array([e * ROWS + 5 for e in range(EPISODES)])  # one row per episode: six targets
    z = back.encode(torch.from_numpy(np.ascontiguousarray(ds.frames[rows])),
                    torch.from_numpy(np.stack([text[i] for i in instr[rows]])))
    pred = back.predict_keypoints(z).numpy()
    truth = np.asarray(ds.keypoints[rows])
    spread = np.abs(truth - truth.mean(0)).mean()
    assert pred.shape == (EPISODES, 2, 3) and np.abs(pred - truth).mean() < 0.5 * spread, (pred, truth)


def test_keypoint_head_needs_keypoints(dataset):
    with pytest.raises(ValueError, match="keypoint_head needs a dataset with keypoints"):
        build_policy(dataset.meta, dataset.proprio, dataset.actions, None, keypoint_head=True)
    policy = build_policy(dataset.meta, dataset.proprio, dataset.actions, **SMALL)
    assert not policy.config.keypoint_head
    with pytest.raises(RuntimeError, match="no keypoint head"):
        policy.predict_keypoints(torch.zeros(1, 4, 16))


def test_keypoint_condition_gives_system1_the_target_relative_to_the_gripper():
    """System 1's input carries (keypoints read from z) - FK(q), / 0.2 m; sampling uses it too."""
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec
    from vla_mpc.models.policy import KEYPOINT_REL_SCALE, DualSystemPolicy, PolicyConfig

    spec = load_robot_spec("panda")
    a = len(spec.joint_names)
    with pytest.raises(ValueError, match="needs keypoint_head"):
        PolicyConfig(robot="panda", joint_names=spec.joint_names, keypoint_condition=True)
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, image_size=32, keypoint_head=True,
                       keypoint_condition=True, **{k: v for k, v in SMALL.items()})
    kp_mean = [0.5, -0.1, -0.09, 0.45, 0.2, -0.11]
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_delta": {"mean": [0.0] * a, "std": [0.01] * a},
             "keypoints": {"mean": kp_mean, "std": [1e-6] * 6}}  # the head reads ~kp_mean whatever z is
    policy = DualSystemPolicy(cfg, stats).eval()
    q = torch.tensor([list(spec.home) + [0.0] * a, [0.1] * 7 + [0.02] + [0.0] * a], dtype=torch.float32)
    z = torch.randn(2, 4, 16)
    z_in, x = policy.system1_input(z, q)
    assert z_in is z and x.shape == (2, 2 * a + 6)
    ee = RobotModel(spec).fk_positions(q[:, :a].double().numpy())
    expected = (np.array(kp_mean).reshape(1, 2, 3) - ee[:, None, :]).reshape(2, 6) / KEYPOINT_REL_SCALE
    np.testing.assert_allclose(x[:, 2 * a:].numpy(), expected, atol=1e-4)
    chunk = policy.sample_chunk(z, q)
    assert chunk.shape == (2, 16, a) and torch.isfinite(chunk).all()


def test_rows_whose_chunk_does_not_start_at_their_state_are_dropped():
    """A row pairing a state with another instant's chunk cannot be imitated: dropped; tracking lag kept."""
    from types import SimpleNamespace

    from vla_mpc.training.policy import rows_starting_at_their_state

    n, h, a = 6, 4, 3
    proprio = np.zeros((n, 2 * a), np.float32)
    actions = np.zeros((n, h, a), np.float32)
    actions[1, 0, 0] = 0.1  # tracking lag: kept
    actions[2, 0, 2] = -6.5  # another instant's chunk: dropped
    actions[3, 0, 1] = np.nan  # corrupt: dropped
    actions[4, 1:, 0] = 5.0  # far later in the chunk but starting here: kept
    ds = SimpleNamespace(actions=actions, proprio=proprio)
    kept, dropped = rows_starting_at_their_state(ds, np.arange(n), 0.3)
    assert kept.tolist() == [0, 1, 4, 5] and dropped.tolist() == [2, 3]
    kept, dropped = rows_starting_at_their_state(ds, np.array([5, 2]), 0.3)
    assert kept.tolist() == [5] and dropped.tolist() == [2]
    with pytest.raises(ValueError, match="max_gap"):
        rows_starting_at_their_state(ds, np.arange(n), 0.0)


def test_dataset_kinds_keep_each_datasets_chosen_task_kinds():
    """``--dataset-kinds``: rows of a kind their dataset may not give are dropped, others kept."""
    from vla_mpc.training.policy import parse_dataset_kinds, rows_of_kinds

    kinds = parse_dataset_kinds(["reach,pick_place", "push"], 2)
    assert kinds == [frozenset({"reach", "pick_place"}), frozenset({"push"})]
    assert parse_dataset_kinds(None, 3) is None and parse_dataset_kinds(["all"], 1)[0] >= {"reach", "push"}
    for bad, n in ((["push"], 2), (["shove"], 1), ([","], 1)):
        with pytest.raises(ValueError, match="dataset-kinds"):
            parse_dataset_kinds(bad, n)
    # dataset 0: rows 0-3, dataset 1: rows 4-6
    instructions = np.array(["touch the red cube", "push the red cube forward", "put the red cube on the blue pad",
                             "push the blue cube to the left", "push the red cube forward", "touch the red cube",
                             "slide the green cube back"], dtype=object)
    kept = rows_of_kinds(np.arange(7), instructions, [4, 3], kinds)
    assert kept.tolist() == [0, 2, 4, 6]
    assert rows_of_kinds(np.array([6, 1, 0]), instructions, [4, 3], kinds).tolist() == [6, 0]
    with pytest.raises(ValueError, match="sizes"):
        rows_of_kinds(np.arange(7), instructions, [4, 4], kinds)


def _two_squares(rng: np.random.Generator, n: int, names: np.ndarray, phrases: dict):
    """Frames with a red and a green 4 px square; the object phrase names one colour, the goal phrase
    the other. Keypoints: the named square's centre (x, y in [-1, 1], z 0), then the other's."""
    frames = np.zeros((n, S, S, 3), np.uint8)
    kp = np.zeros((n, 2, 3), np.float32)
    text = np.zeros((n, 3, 384), np.float32)
    for r in range(n):
        while True:
            cells = rng.integers(0, S - 4, size=(2, 2))
            if np.abs(cells[0] - cells[1]).max() >= 8:
                break
        centres = (cells + 2.0) / S * 2.0 - 1.0  # (row, col) of each square's centre
        for colour, (y, x) in enumerate(cells):
            frames[r, y:y + 4, x:x + 4, colour] = 255  # colour 0 red, 1 green
        named = int(names[r])
        for k, colour in enumerate((named, 1 - named)):
            kp[r, k, :2] = centres[colour][::-1]
        text[r] = np.stack([phrases["sentence"], phrases["object"][named], phrases["goal"][1 - named]])
    return torch.from_numpy(frames), torch.from_numpy(text), torch.from_numpy(kp)


@pytest.mark.parametrize("pixel_weight", [0.0, 1.0])
def test_role_points_bind_the_object_phrase_to_its_square(one_thread, pixel_weight):
    """Two squares of two colours in every frame; which is the object is only in the object
    phrase. After a short run the object keypoint is the named square's, and naming the other
    colour moves it there: the phrase is bound to its role's maps. With pixel targets, the
    object map's own soft-argmax lands on the square too."""
    from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig

    rng = np.random.default_rng(0)
    phrases = {"sentence": rng.standard_normal(384), "object": rng.standard_normal((2, 384)),
               "goal": rng.standard_normal((2, 384))}
    stats = {"proprio": {"mean": [0.0] * 2 * DOF, "std": [1.0] * 2 * DOF},
             "action": {"mean": [0.0] * DOF, "std": [1.0] * DOF},
             "action_delta": {"mean": [0.0] * DOF, "std": [1.0] * DOF},
             "keypoints": {"mean": [0.0] * 6, "std": [0.5] * 6}}
    cfg = PolicyConfig(robot="synthetic", joint_names=[f"j{i}" for i in range(DOF)], image_size=S, augment_shift=0,
                       keypoint_head=True, text_tokens=3, feature_points=4, role_points=True, chunk_size=H,
                       keypoint_pixel_weight=pixel_weight, **SMALL)
    torch.manual_seed(0)
    policy = DualSystemPolicy(cfg, stats).train()
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        images, text, kp = _two_squares(rng, 32, rng.integers(0, 2, 32), phrases)
        loss, info = policy.loss({"images": images, "text_emb": text, "keypoints": kp, "keypoint_uv": kp[..., :2],
                                  "proprio": torch.zeros(32, 2 * DOF), "actions": torch.zeros(32, H, DOF)})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(info["keypoint_loss"])
    policy.eval()
    names = np.arange(64) % 2
    test_rng = np.random.default_rng(1)
    images, text, kp = _two_squares(test_rng, 64, names, phrases)
    _, swapped_text, swapped_kp = _two_squares(np.random.default_rng(1), 64, 1 - names, phrases)  # same frames
    read = policy.predict_keypoints(policy.encode(images, text))
    read_swapped = policy.predict_keypoints(policy.encode(images, swapped_text))
    gap = (kp[:, 0, :2] - kp[:, 1, :2]).norm(dim=1)  # the distance between the squares
    err = (read[:, 0, :2] - kp[:, 0, :2]).norm(dim=1)
    err_swapped = (read_swapped[:, 0, :2] - swapped_kp[:, 0, :2]).norm(dim=1)
    assert float(np.mean(losses[-20:])) < 0.2 * float(np.mean(losses[:20])), (losses[:3], losses[-3:])
    assert float((err / gap).median()) < 0.25 and float((err_swapped / gap).median()) < 0.25, (err, err_swapped, gap)
    assert ("pixel_loss" in info) == (pixel_weight > 0)
    if pixel_weight:
        with torch.no_grad():
            _, maps, _ = policy.encode(images, text, return_maps=True)
        centres = policy.system2.object_points.cell_xy
        soft_argmax = maps[:, 0, 0].flatten(1) @ centres  # the object map's expected position
        assert float(((soft_argmax - kp[:, 0, :2]).norm(dim=1) / gap).median()) < 0.25
