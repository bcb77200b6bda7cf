"""System 1 conditioned on System 2's read-outs only (``system1_condition = "keypoints"``): the
narrow interface (the chunk depends on ``z`` only through the keypoints and the task kind), the
training rows without frames (lagged, noisy keypoints), the loss, and the CLI on a tiny Panda
dataset written here."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import RobotModel, load_robot_spec
from vla_mpc.models.checkpoint import load_policy
from vla_mpc.models.policy import KEYPOINT_REL_SCALE, DualSystemPolicy, PolicyConfig
from vla_mpc.sim.tasks import TASK_KINDS
from vla_mpc.training.policy import make_system1_batch, task_kind_indices

SMALL = dict(image_size=32, vision_width=8, d_model=32, vlm_heads=2, latent_tokens=4, latent_dim=16,
             chunk_size=8, expert_width=64, expert_blocks=2, cond_dim=32)
KP_MEAN = [0.5, -0.1, 0.02, 0.45, 0.2, 0.02]


@pytest.fixture(scope="module")
def spec():
    return load_robot_spec("panda")


def _policy(spec, condition: str) -> DualSystemPolicy:
    a = len(spec.joint_names)
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, keypoint_head=True, keypoint_condition=True,
                       system1_condition=condition, **SMALL)
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_delta": {"mean": [0.0] * a, "std": [0.01] * a},
             "keypoints": {"mean": KP_MEAN, "std": [1e-6] * 6}}  # the head reads ~KP_MEAN whatever z is
    torch.manual_seed(0)
    return DualSystemPolicy(cfg, stats).eval()


def _proprio(spec) -> torch.Tensor:
    a = len(spec.joint_names)
    return torch.tensor([list(spec.home) + [0.0] * a, [0.1] * 7 + [0.02] + [0.0] * a], dtype=torch.float32)


def test_config_checks(spec):
    with pytest.raises(ValueError, match="system1_condition must be one of"):
        PolicyConfig(robot="panda", joint_names=spec.joint_names, system1_condition="pixels")
    with pytest.raises(ValueError, match="needs keypoint_head and keypoint_condition"):
        PolicyConfig(robot="panda", joint_names=spec.joint_names, keypoint_head=True, system1_condition="keypoints")
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, keypoint_head=True, keypoint_condition=True,
                       system1_condition="keypoints")
    assert cfg.task_head and PolicyConfig.from_dict(cfg.to_dict()) == cfg
    assert not PolicyConfig(robot="panda", joint_names=spec.joint_names).task_head


def test_system1_reads_only_the_keypoints_and_the_task_kind(spec):
    policy = _policy(spec, "keypoints")
    push = TASK_KINDS.index("push")
    with torch.no_grad():  # the task head says "push" whatever z is
        policy.task_head.weight.zero_()
        policy.task_head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(push), len(TASK_KINDS)).float())
    q = _proprio(spec)
    z1, z2 = torch.randn(2, 4, 16), 5.0 * torch.randn(2, 4, 16)
    z_in, state = policy.system1_input(z1, q)
    a = len(spec.joint_names)
    assert z_in.shape == (2, 0, 16) and state.shape == (2, 2 * a + 6 + len(TASK_KINDS))
    ee = RobotModel(spec).fk_positions(q[:, :a].double().numpy())
    rel = (np.array(KP_MEAN).reshape(1, 2, 3) - ee[:, None, :]).reshape(2, 6) / KEYPOINT_REL_SCALE
    np.testing.assert_allclose(state[:, 2 * a:2 * a + 6].numpy(), rel, atol=1e-4)
    np.testing.assert_array_equal(state[:, 2 * a + 6:].argmax(1).numpy(), [push, push])
    assert policy.predict_task_kind(z2).tolist() == [push, push]
    noise = torch.randn(2, 8, a)
    c1, c2 = policy.sample_chunk(z1, q, noise=noise), policy.sample_chunk(z2, q, noise=noise)
    torch.testing.assert_close(c1, c2)  # same read-outs, same chunk: the pixels of z do not reach System 1
    # given keypoints / kinds replace the read-outs (training on the dataset's)
    kp = torch.tensor(KP_MEAN).view(1, 2, 3).repeat(2, 1, 1) + 0.05
    _, given = policy.system1_input(z1, q, kp, torch.tensor([0, 3]))
    np.testing.assert_allclose(given[:, 2 * a:2 * a + 6].numpy(), rel + 0.05 / KEYPOINT_REL_SCALE, atol=1e-4)
    assert given[:, 2 * a + 6:].argmax(1).tolist() == [0, 3]
    # the whole-latent policy does depend on z (the comparison the assertion above relies on)
    latent = _policy(spec, "latent")
    assert not torch.allclose(latent.sample_chunk(z1, q, noise=noise), latent.sample_chunk(z2, q, noise=noise))


def _batch(spec, b: int = 6, b1: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = len(spec.joint_names)
    home = torch.tensor(spec.home, dtype=torch.float32)

    def rows(n):
        q = home + 0.05 * torch.randn(n, a, generator=g)
        q[:, -1] = 0.02
        proprio = torch.cat([q, torch.zeros(n, a)], dim=1)
        actions = q[:, None] + 0.01 * torch.randn(n, 8, a, generator=g).cumsum(1)
        kp = torch.tensor(KP_MEAN).view(1, 2, 3) + 0.05 * torch.randn(n, 2, 3, generator=g)
        return proprio, actions, kp, torch.randint(0, len(TASK_KINDS), (n,), generator=g)

    p, act, kp, kind = rows(b)
    p1, act1, kp1, kind1 = rows(b1)
    return {"images": torch.randint(0, 255, (b, 32, 32, 3), dtype=torch.uint8, generator=g),
            "text_emb": torch.randn(b, 384, generator=g), "proprio": p, "actions": act, "keypoints": kp,
            "task_kind": kind, "s1_proprio": p1, "s1_actions": act1, "s1_keypoints": kp1, "s1_task_kind": kind1}


def test_loss_trains_system1_on_rows_without_frames(spec):
    policy = _policy(spec, "keypoints").train()
    batch = _batch(spec)
    torch.manual_seed(3)
    loss, info = policy.loss(batch)
    assert torch.isfinite(loss) and {"action_loss", "keypoint_loss", "task_loss"} <= set(info)
    # System 1's term does not see the frames: other images, the same action loss
    other = dict(batch, images=torch.randint(0, 255, batch["images"].shape, dtype=torch.uint8))
    torch.manual_seed(3)
    _, info2 = policy.loss(other)
    assert info2["action_loss"] == pytest.approx(info["action_loss"], rel=1e-6)
    assert info2["task_loss"] != pytest.approx(info["task_loss"], rel=1e-6)
    # rows with NaN keypoints are left out of System 1's term, all-NaN is an error
    nan_rows = dict(batch, s1_keypoints=batch["s1_keypoints"].clone())
    nan_rows["s1_keypoints"][:4] = float("nan")
    assert torch.isfinite(policy.loss(nan_rows)[0])
    with pytest.raises(ValueError, match="no System 1 row"):
        policy.loss(dict(batch, s1_keypoints=torch.full_like(batch["s1_keypoints"], float("nan"))))
    no_kind = {k: v for k, v in batch.items() if k != "s1_task_kind"}
    with pytest.raises(ValueError, match="s1_task_kind"):
        policy.loss(no_kind)
    # the task head learns the kind from the text embedding (without the frames' keypoint term:
    # this policy's keypoint std of 1e-6 m would swamp it)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = None
    learn = {k: v for k, v in batch.items() if k != "keypoints"}
    for _ in range(60):
        loss, info = policy.loss(learn)
        first = info["task_loss"] if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert info["task_loss"] < 0.2 * first, (first, info["task_loss"])


def test_system1_rows_lag_and_noise():
    n_eps, rows_per = 40, 25
    n = n_eps * rows_per
    kp = np.zeros((n, 2, 3), np.float32)
    kp[:, :, 0] = np.arange(n)[:, None]  # x = the row index: the lag can be read back
    ds = SimpleNamespace(  # no frames attribute: System 1 rows must not read any
        proprio=np.arange(n, dtype=np.float32)[:, None].repeat(4, 1), actions=np.zeros((n, 8, 2), np.float32),
        keypoints=kp, episode_index=np.repeat(np.arange(n_eps), rows_per))
    kinds = np.arange(n) % len(TASK_KINDS)
    rng = np.random.default_rng(0)
    clean = make_system1_batch(ds, np.arange(n), kinds, rng, 512, max_latent_lag=4, keypoint_noise=0.0)
    row = clean["s1_proprio"][:, 0].numpy().astype(int)
    lag = row - clean["s1_keypoints"][:, 0, 0].numpy().astype(int)
    assert set(lag.tolist()) == {0, 1, 2, 3, 4}
    older = row - lag
    assert np.all(ds.episode_index[older] == ds.episode_index[row])
    np.testing.assert_array_equal(clean["s1_task_kind"].numpy(), kinds[row])
    noisy = make_system1_batch(ds, np.arange(n), kinds, np.random.default_rng(1), 4000, max_latent_lag=0,
                               keypoint_noise=0.01)
    err = noisy["s1_keypoints"].numpy() - kp[noisy["s1_proprio"][:, 0].numpy().astype(int)]
    assert err[..., 1:].std() == pytest.approx(0.01, rel=0.05)
    assert np.corrcoef(err[:, 0, 1], err[:, 1, 1])[0, 1] == pytest.approx(0.5, abs=0.06)  # half the variance shared
    with pytest.raises(ValueError, match="need a dataset with keypoints"):
        make_system1_batch(ds, np.array([], dtype=int), kinds, rng, 4)
    # the pose table's rows travel with their rows (action_mode "ee": no forward kinematics per step)
    table = np.arange(n, dtype=np.float32)[:, None, None] * np.ones((1, 8, 6), np.float32)
    with_poses = make_system1_batch(ds, np.arange(n), kinds, np.random.default_rng(2), 64, action_poses=table)
    np.testing.assert_array_equal(with_poses["s1_action_poses"][:, 0, 0].numpy(), with_poses["s1_proprio"][:, 0].numpy())
    # balance_kinds: a kind with 9 of 10 rows fills half a batch, not nine tenths
    skewed = np.where(np.arange(n) % 10 == 0, 2, 1)
    plain = make_system1_batch(ds, np.arange(n), skewed, np.random.default_rng(3), 4000, max_latent_lag=0)
    even = make_system1_batch(ds, np.arange(n), skewed, np.random.default_rng(3), 4000, max_latent_lag=0,
                              balance_kinds=True)
    assert (plain["s1_task_kind"] == 2).float().mean() == pytest.approx(0.1, abs=0.02)
    assert (even["s1_task_kind"] == 2).float().mean() == pytest.approx(0.5, abs=0.03)
    even_rows = even["s1_proprio"][:, 0].numpy().astype(int)
    np.testing.assert_array_equal(even["s1_task_kind"].numpy(), skewed[even_rows])  # kinds travel with their rows
    assert len(np.unique(even_rows[skewed[even_rows] == 2])) > 0.9 * (n // 10)  # every row of the rare kind drawn


def test_task_kind_indices():
    kinds = task_kind_indices(["reach the red cube", "push the blue cube to the left",
                               "put the red cube on the green pad", "pick up the red cube"])
    assert kinds == {"reach the red cube": TASK_KINDS.index("reach"),
                     "push the blue cube to the left": TASK_KINDS.index("push"),
                     "put the red cube on the green pad": TASK_KINDS.index("pick_place"),
                     "pick up the red cube": TASK_KINDS.index("pick")}
    with pytest.raises(ValueError):
        task_kind_indices(["dance"])


def _write_panda_dataset(path, spec) -> None:
    """Four short episodes (reach and push) near the home pose, with keypoints and frames."""
    rng = np.random.default_rng(0)
    a, eps, rows, h, s = len(spec.joint_names), 4, 12, 16, 32
    n = eps * rows
    q = np.asarray(spec.home) + rng.normal(0.0, 0.03, (n, a)) * np.r_[np.ones(7), 0.0]
    proprio = np.concatenate([q, np.zeros((n, a))], axis=1).astype(np.float32)
    actions = (q[:, None] + rng.normal(0.0, 0.004, (n, h, a)).cumsum(1) * np.r_[np.ones(7), 0.0]).astype(np.float32)
    kp = (np.array(KP_MEAN).reshape(1, 2, 3) + rng.normal(0.0, 0.03, (n, 2, 3))).astype(np.float32)
    instructions = ["reach the red cube", "push the blue cube to the left"]
    episodes = [{"index": e, "bag": "synthetic", "kind": "reach" if e % 2 == 0 else "push",
                 "instruction": instructions[e % 2], "seed": e, "success": True, "source": "expert",
                 "start": e * rows, "stop": (e + 1) * rows} for e in range(eps)]

    def stats(x):
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-3).tolist(),
                "min": x.min(0).tolist(), "max": x.max(0).tolist()}

    meta = {"format": "vla_mpc.dataset/1", "robot": "panda", "joint_names": list(spec.joint_names),
            "camera": "front", "image_size": s, "frame_rate_hz": 10.0, "chunk_size": h, "chunk_dt": 0.05,
            "episodes": episodes, "skipped_bags": [], "stats": {"proprio": stats(proprio), "action": stats(actions)}}
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").write_text(json.dumps(meta))
    arrays = {"frames": rng.integers(0, 255, (n, s, s, 3), dtype=np.uint8), "proprio": proprio, "actions": actions,
              "episode_index": np.repeat(np.arange(eps, dtype=np.int32), rows),
              "timestamps": np.tile(np.arange(rows) * 0.1, eps), "keypoints": kp}
    for name, arr in arrays.items():
        np.save(path / f"{name}.npy", arr)


def test_train_cli_keypoints_mode(tmp_path, spec):
    pytest.importorskip("sentence_transformers")
    from vla_mpc.training.policy import main

    _write_panda_dataset(tmp_path / "ds", spec)
    out = tmp_path / "run"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--action-mode", "ee", "--system1-condition", "keypoints", "--system1-batch-size", "16",
                 "--keypoint-noise", "0.02"]) == 0
    policy = load_policy(out / "last", expected_joint_names=spec.joint_names)
    assert policy.config.system1_condition == "keypoints" and policy.config.action_mode == "ee"
    extra = json.loads((out / "last" / "config.json").read_text())["extra"]
    assert extra["keypoint_noise"] == 0.02 and extra["system1_batch_size"] == 16
    z = torch.randn(2, policy.config.latent_tokens, policy.config.latent_dim)
    assert policy.predict_task_kind(z).shape == (2,)
    chunk = policy.sample_chunk(z, _proprio(spec))
    assert chunk.shape == (2, 16, len(spec.joint_names)) and torch.isfinite(chunk).all()
    # a System-1-only stage: System 2 and its heads stay as they were, System 1 moves
    out2 = tmp_path / "s1"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out2), "--steps", "3", "--init", str(out / "last"),
                 "--system1-only", "--system1-batch-size", "16", "--lr", "1e-2"]) == 0
    staged = load_policy(out2 / "last")
    before, after = policy.state_dict(), staged.state_dict()
    frozen = [k for k in before if not k.startswith("system1.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("system1."))
    assert json.loads((out2 / "last" / "config.json").read_text())["extra"]["system1_only"] is True
    # a larger System 1 on the same System 2: a fresh action expert of the new size, System 2 carried over
    out3 = tmp_path / "wide"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out3), "--steps", "2", "--init", str(out / "last"),
                 "--system1-only", "--system1-batch-size", "16", "--expert-width", "48", "--expert-blocks", "3"]) == 0
    wide = load_policy(out3 / "last")
    assert (wide.config.expert_width, wide.config.expert_blocks) == (48, 3)
    assert wide.num_parameters()["system1"] != policy.num_parameters()["system1"]
    after = wide.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert torch.isfinite(wide.sample_chunk(z, _proprio(spec))).all()
    with pytest.raises(ValueError, match="need --system1-only"):
        main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "bad"), "--steps", "1", "--init",
              str(out / "last"), "--expert-width", "48"])
    # the other split: System 2 and its heads alone, System 1 exactly as it was; its log has no action loss
    out4 = tmp_path / "s2"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out4), "--steps", "3", "--batch-size", "4",
                 "--init", str(out / "last"), "--system2-only", "--lr", "1e-2"]) == 0
    after = load_policy(out4 / "last").state_dict()
    system1 = [k for k in before if k.startswith("system1.")]
    assert all(torch.equal(before[k], after[k]) for k in system1)
    assert any(not torch.equal(before[k], after[k]) for k in frozen)
    logged = [json.loads(line) for line in (out4 / "log.jsonl").read_text().splitlines()]
    assert logged and all("train/action_loss" not in r for r in logged) and "train/task_loss" in logged[-1]
    with pytest.raises(ValueError, match="exclude each other"):
        main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "bad2"), "--steps", "1", "--init",
              str(out / "last"), "--system1-only", "--system2-only"])
    # a fresh System 2 with feature points for the trained System 1: System 1 exactly as it was
    out5 = tmp_path / "points"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out5), "--steps", "2", "--batch-size", "4",
                 "--init", str(out / "last"), "--system2-only", "--feature-points", "3", "--text-tokens", "3"]) == 0
    points = load_policy(out5 / "last")
    assert points.config.feature_points == 3 and points.system2.points.num_points == 3
    assert points.config.text_tokens == 3 and policy.config.text_tokens == 1
    after = points.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in system1)
    assert any(k.startswith("system2.points.") for k in after)
    with pytest.raises(ValueError, match="need --system2-only"):
        main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "bad3"), "--steps", "1", "--init",
              str(out / "last"), "--feature-points", "3"])
    # a fresh System 2 whose points are split by role, System 1 kept; System 1 rows balanced by kind
    out5b = tmp_path / "roles"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out5b), "--steps", "2", "--batch-size", "4",
                 "--init", str(out / "last"), "--system2-only", "--feature-points", "4", "--text-tokens", "3",
                 "--role-points"]) == 0
    roles = load_policy(out5b / "last")
    assert roles.config.role_points and roles.system2.object_points.num_points == 2
    assert all(torch.equal(before[k], roles.state_dict()[k]) for k in system1)
    with pytest.raises(ValueError, match="role_points needs"):
        main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "bad4"), "--steps", "1", "--init",
              str(out / "last"), "--system2-only", "--feature-points", "3", "--text-tokens", "3", "--role-points"])
    out5c = tmp_path / "balanced"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out5c), "--steps", "2", "--init", str(out / "last"),
                 "--system1-only", "--system1-batch-size", "16", "--balance-kinds"]) == 0
    assert json.loads((out5c / "last" / "config.json").read_text())["extra"]["balance_kinds"] is True
    from vla_mpc.training.policy import with_new_system1, with_new_system2

    with pytest.raises(ValueError, match="not System 1 fields"):
        with_new_system1(policy, d_model=64)
    with pytest.raises(ValueError, match="not System 2 fields"):
        with_new_system2(policy, expert_width=64)
    with pytest.raises(ValueError, match="a 'latent' System 1"):
        with_new_system2(_policy(spec, "latent"), feature_points=2)
    fresh = with_new_system2(policy, feature_points=2)
    kept = fresh.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in policy.state_dict().items() if k.startswith("system1."))
    assert not torch.equal(policy.state_dict()["system2.queries"], kept["system2.queries"])  # re-initialised
    with pytest.raises(ValueError, match="--system1-only needs --system1-condition keypoints"):
        main(["--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "bad"), "--steps", "1", "--system1-only",
              "--action-mode", "ee"])
    # System 1 alone from scratch (it never reads System 2); each summary says what its run trained
    out6 = tmp_path / "s1_fresh"
    assert main(["--dataset", str(tmp_path / "ds"), "--out", str(out6), "--steps", "2", "--system1-only",
                 "--action-mode", "ee", "--system1-condition", "keypoints", "--system1-batch-size", "16"]) == 0
    summaries = {o.name: json.loads((o / "train_summary.json").read_text()) for o in (out, out2, out3, out4, out5, out6)}
    assert {k: (v["trained"], v["fresh"], "init" in v) for k, v in summaries.items()} == {
        "run": (["system1", "system2"], ["system1", "system2"], False),
        "s1": (["system1"], [], True), "wide": (["system1"], ["system1"], True), "s2": (["system2"], [], True),
        "points": (["system2"], ["system2"], True), "s1_fresh": (["system1"], ["system1", "system2"], False)}


def test_a_batch_without_images_trains_system1_alone(spec):
    policy = _policy(spec, "keypoints").train()
    batch = {k: v for k, v in _batch(spec).items() if k.startswith("s1_")}
    loss, info = policy.loss(batch)
    assert torch.isfinite(loss) and set(info) == {"loss", "action_loss"}
    loss.backward()
    assert policy.system2.parameters().__next__().grad is None  # System 2 not run
    assert any(p.grad is not None for p in policy.system1.parameters())
    with pytest.raises(ValueError, match="without images only trains System 1"):
        _policy(spec, "latent").loss(batch)


def test_system1_takes_given_readouts(spec):
    """``LearnedSystem1.infer(keypoints=, task_kind=)`` conditions on the read-outs it is handed
    (the privileged-read-out ablation) instead of System 2's heads, and refuses them when the
    policy has no such input."""
    from vla_mpc.models.learned import LearnedSystem1

    policy = _policy(spec, "keypoints")
    s1 = LearnedSystem1(policy, seed=3)
    c = policy.config
    z = np.zeros((c.latent_tokens, c.latent_dim), np.float32)
    q = np.asarray(spec.home, np.float64)
    head = np.asarray(KP_MEAN, np.float64).reshape(2, 3)  # what the head reads whatever z is
    far = head + [0.2, -0.1, 0.05]

    def chunk(**kw):
        s1.reset()
        return s1.infer(z, q, **kw)

    np.testing.assert_allclose(chunk(keypoints=head), chunk(), atol=1e-5)  # same read-outs, same chunk
    assert np.abs(chunk(keypoints=far) - chunk()).max() > 1e-4
    kind = TASK_KINDS[int(policy.predict_task_kind(torch.from_numpy(z)[None])[0])]
    other = next(k for k in TASK_KINDS if k != kind)
    np.testing.assert_allclose(chunk(task_kind=kind), chunk(), atol=1e-5)
    assert np.abs(chunk(task_kind=other) - chunk()).max() > 1e-4
    with pytest.raises(ValueError, match="task_kind"):
        chunk(task_kind="juggle")
    with pytest.raises(ValueError, match="keypoints"):
        chunk(keypoints=np.full((2, 3), np.nan))
    latent_only = LearnedSystem1(DualSystemPolicy(PolicyConfig(robot="panda", joint_names=spec.joint_names, **SMALL),
                                                  {"proprio": {"mean": [0.0] * 2 * len(q), "std": [1.0] * 2 * len(q)},
                                                   "action_delta": {"mean": [0.0] * len(q), "std": [0.01] * len(q)}}
                                                  ).eval())
    with pytest.raises(ValueError, match="keypoint_condition"):
        latent_only.infer(z, q, keypoints=head)
    with pytest.raises(ValueError, match="task_head"):
        latent_only.infer(z, q, task_kind="reach")
