"""The JEPA world model (``vla_mpc.models.jepa``) without training data, sim or ROS.

Oracles: the EMA rule computed by hand, VICReg's terms on batches with known statistics, exact
joint integration, the base class's generic ``next`` loop for the vectorised rollout, a checkpoint
round trip, and the kinematic model's own joint-limit barrier for the constraint costs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import RobotModel, load_robot_spec
from vla_mpc.models.jepa import (
    JepaConfig,
    JepaNet,
    JepaWorldModel,
    load_world_model,
    prediction_error_report,
    save_world_model,
    vicreg_terms,
)
from vla_mpc.models.world_model import Goal, KinematicCostConfig, KinematicWorldModel, WorldModel
from vla_mpc.planning.cem import CEM, CEMConfig

S = 32


@pytest.fixture(scope="module")
def robot() -> RobotModel:
    return RobotModel(load_robot_spec("panda"))


def make_net(robot, **kw) -> JepaNet:
    torch.manual_seed(0)
    return JepaNet(JepaConfig.from_robot_spec(robot.spec, image_size=S, latent_dim=16, **kw))


def make_batch(robot, b=4, t=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    home = torch.tensor(robot.spec.home, dtype=torch.float32)
    actions = 0.05 * torch.randn(b, t, 8, generator=g)
    q = home + torch.cat([torch.zeros(b, 1, 8), torch.cumsum(actions, dim=1)], dim=1)
    return {"frames": torch.randint(0, 256, (b, t + 1, S, S, 3), generator=g, dtype=torch.uint8),
            "proprio": torch.cat([q, torch.zeros_like(q)], dim=-1), "actions": actions}


def test_loss_is_finite_and_backpropagates_to_encoder_and_predictor(robot):
    net = make_net(robot).train()
    loss, metrics = net.loss(make_batch(robot))
    assert torch.isfinite(loss)
    assert set(metrics) >= {"teacher_forcing", "rollout", "variance", "covariance", "proprio", "latent_std", "copy_last"}
    loss.backward()
    assert net.encoder.convs[0].weight.grad is not None and net.encoder.convs[0].weight.grad.abs().sum() > 0
    assert net.predictor.mlp[-1].weight.grad.abs().sum() > 0  # zero-initialised output layer still learns
    assert all(p.grad is None for p in net.target_encoder.parameters())  # stop-gradient


def test_ema_update_rule(robot):
    net = make_net(robot, ema_decay=0.9)
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in net.target_encoder.parameters()]
    online = [p.clone() for p in net.encoder.parameters()]
    net.train().loss(make_batch(robot))  # training-mode loss applies one EMA step first
    for t_old, o, t_new in zip(before, online, net.target_encoder.parameters()):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * o)
    frozen = [p.clone() for p in net.target_encoder.parameters()]
    net.eval().loss(make_batch(robot))  # validation does not move the target
    assert all(torch.equal(a, b) for a, b in zip(frozen, net.target_encoder.parameters()))


def test_vicreg_terms_flag_collapse():
    collapsed = torch.ones(64, 8)
    var, cov, std = vicreg_terms(collapsed, target_std=0.5)
    assert var.item() == pytest.approx(0.5 - 0.01, abs=1e-4)  # sqrt(0 + 1e-4) = 0.01
    assert cov.item() == pytest.approx(0.0, abs=1e-9) and std.item() == pytest.approx(0.01, abs=1e-4)
    spread = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0))
    var, cov, std = vicreg_terms(spread, target_std=0.5)
    assert var.item() == 0.0 and cov.item() < 0.01 and std.item() == pytest.approx(1.0, abs=0.05)
    correlated = spread[:, :1].repeat(1, 8)  # 8 copies of one variable: off-diagonal cov = 1
    assert vicreg_terms(correlated)[1].item() == pytest.approx(56 / 8, rel=0.05)


def test_encoder_latent_is_layer_normed(robot):
    z = make_net(robot).encode_target(make_batch(robot)["frames"])  # [4, 4, 16]
    assert z.shape == (4, 4, 16)
    torch.testing.assert_close(z.mean(dim=-1), torch.zeros(4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(dim=-1, unbiased=False), torch.ones(4, 4), atol=1e-3, rtol=0)


def test_batch_validation_names_the_key(robot):
    net = make_net(robot)
    b = make_batch(robot)
    with pytest.raises(ValueError, match="actions"):
        net.loss({"frames": b["frames"], "proprio": b["proprio"]})
    with pytest.raises(ValueError, match="frames must be"):
        net.loss(dict(b, frames=b["frames"][:, :, :16]))
    with pytest.raises(ValueError, match="lower must be < upper"):
        JepaConfig(robot="x", joint_names=("a",), lower=(1.0,), upper=(0.0,), velocity=(1.0,))
    with pytest.raises(ValueError, match="ema_decay"):
        JepaConfig.from_robot_spec(robot.spec, ema_decay=1.0)


def test_checkpoint_round_trip_and_errors(robot, tmp_path):
    net = make_net(robot)
    save_world_model(net, tmp_path / "ck")
    again = load_world_model(tmp_path / "ck")
    assert again.config == net.config and not again.training
    frames = make_batch(robot)["frames"]
    torch.testing.assert_close(again.encode_target(frames), net.encode_target(frames))
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["latent_dim"] = 24
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_world_model(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_world_model(tmp_path / "ck")


def world_model(robot, **cost) -> JepaWorldModel:
    kin = KinematicWorldModel.from_robot_model(robot, 0.1, KinematicCostConfig(**cost))
    return JepaWorldModel(make_net(robot), kin)


def test_rollout_integrates_joints_and_matches_the_next_loop(robot):
    m = world_model(robot)
    assert m.supports_image_goals and m.latent_shape == (16 + 8,)
    home = np.asarray(robot.spec.home)
    image = np.random.default_rng(0).integers(0, 256, (S, S, 3), dtype=np.uint8)
    z0 = m.encode(image, home)
    a = 0.3 * torch.randn(5, 4, 8, generator=torch.Generator().manual_seed(1))  # some beyond vel * dt
    lat = m.rollout(z0, a)
    assert lat.shape == (5, 4, 24)
    step = torch.maximum(torch.minimum(a, m.kinematic.max_step), -m.kinematic.max_step)
    torch.testing.assert_close(m.joint_positions(lat), torch.tensor(home, dtype=torch.float32) + torch.cumsum(step, 1))
    torch.testing.assert_close(lat, WorldModel.rollout(m, z0, a), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="camera image"):
        m.encode(None, home)


def test_cost_is_zero_latent_distance_at_the_goal_image(robot):
    m = world_model(robot, joint_limit_weight=0.0, action_weight=0.0)
    home = np.asarray(robot.spec.home)
    rng = np.random.default_rng(0)
    image, other = (rng.integers(0, 256, (S, S, 3), dtype=np.uint8) for _ in range(2))
    z0 = m.encode(image, home)
    same, different = m.make_goal(image=image), m.make_goal(image=other)
    lat = z0.view(1, 1, -1).expand(1, 2, -1).clone()  # "nothing changes" for two steps
    a = torch.zeros(1, 2, 8)
    assert m.cost(lat, a, same).item() == pytest.approx(0.0, abs=1e-6)
    expect = m.latent_weight * 2 * (z0[:16] - different.latent).abs().mean().item()
    assert m.cost(lat, a, different).item() == pytest.approx(expect, rel=1e-5)
    with pytest.raises(ValueError, match="a goal needs"):
        m.make_goal()


def test_joint_limit_barrier_keeps_jepa_plans_inside_limits(robot):
    m = world_model(robot, joint_limit_weight=10.0, joint_limit_margin=0.05)
    spec = robot.spec
    q = np.array(spec.home, dtype=float)
    upper = float(spec.limits.upper[0])
    q[0] = upper - 0.08
    image = np.zeros((S, S, 3), np.uint8)
    z0 = m.encode(image, q)
    # a "goal" that pays for pushing joint 1 up: the reference term rewards +max_step on joint 1
    ref = torch.zeros(6, 8)
    ref[:, 0] = m.kinematic.max_step[0]
    low, high = m.action_bounds(1.0)
    cfg = CEMConfig(num_samples=200, num_elites=20, iterations=8, horizon=6, init_std=0.1, max_norm=None)
    r = CEM(cfg, 8, low, high, seed=0).plan(z0, m.rollout, m.objective(Goal(reference_actions=ref)))
    assert m.joint_positions(r.latents)[:, 0].max().item() <= upper
    r_free = CEM(cfg, 8, low, high, seed=0).plan(
        z0, m.rollout, world_model(robot, joint_limit_weight=0.0).objective(Goal(reference_actions=ref)))
    assert m.joint_positions(r_free.latents)[:, 0].max().item() > upper  # without it the plan leaves


def test_prediction_report_shapes_and_copy_last(robot):
    net = make_net(robot)
    b = make_batch(robot, t=3)
    r = prediction_error_report(net, b)
    assert r["horizon"] == 3 and len(r["model_l1"]) == 3 and len(r["copy_last_l1"]) == 3
    z = net.encode_target(b["frames"])
    assert r["copy_last_l1"][0] == pytest.approx((z[:, 0] - z[:, 1]).abs().mean().item(), rel=1e-5)
    assert r["ratio"] == pytest.approx(r["model_mean"] / r["copy_last_mean"])


def test_frozen_encoder_stage_trains_the_predictor_only(robot):
    net = make_net(robot).train()
    net.freeze_encoder()
    before = [p.clone() for p in net.target_encoder.parameters()]
    b = make_batch(robot)
    loss, m = net.loss(b)
    assert loss.item() == pytest.approx(m["teacher_forcing"] + net.config.rollout_weight * m["rollout"], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in net.encoder.parameters()) and net.proprio_head.weight.grad is None
    assert net.predictor.mlp[-1].weight.grad.abs().sum() > 0
    assert all(torch.equal(a, p) for a, p in zip(before, net.target_encoder.parameters()))  # no EMA
    # the untrained (zero-residual) predictor on frozen latents is exactly copy-last
    assert m["teacher_forcing"] == pytest.approx(
        (net.encode_target(b["frames"])[:, :-1] - net.encode_target(b["frames"])[:, 1:]).abs().mean().item(), rel=1e-5)


def test_pose_frames_join_the_proprio_term_only(robot):
    """Single rendered frames with joint positions (scene sets) enter the proprio MSE as extra rows;
    the other terms are unchanged; a frozen encoder ignores them; an MLP head is available."""
    net = make_net(robot, proprio_head_hidden=32).eval()
    assert isinstance(net.proprio_head, torch.nn.Sequential)
    batch = make_batch(robot)
    g = torch.Generator().manual_seed(3)
    pose_frames = torch.randint(0, 256, (5, S, S, 3), generator=g, dtype=torch.uint8)
    pose_q = torch.tensor(robot.spec.home, dtype=torch.float32) + 0.1 * torch.randn(5, 8, generator=g)
    _, plain = net.loss(batch)
    _, both = net.loss(dict(batch, pose_frames=pose_frames, pose_q=pose_q))
    for key in ("teacher_forcing", "rollout", "variance"):
        assert both[key] == pytest.approx(plain[key], rel=1e-5)
    with torch.no_grad():
        q = batch["proprio"][..., :8]
        seq = (net.proprio_head(net.encoder(batch["frames"])) - net.norm_q(q)).pow(2).reshape(-1, 8)
        pose = (net.proprio_head(net.encoder(pose_frames)) - net.norm_q(pose_q)).pow(2)
    assert both["proprio"] == pytest.approx(float(torch.cat([seq, pose]).mean()), rel=1e-4)
    net.freeze_encoder()
    _, frozen = net.loss(dict(batch, pose_frames=pose_frames, pose_q=pose_q))
    assert frozen["proprio"] == pytest.approx(float(seq.mean()), rel=1e-4)
    with pytest.raises(ValueError, match="proprio_head_hidden"):
        make_net(robot, proprio_head_hidden=-1)
