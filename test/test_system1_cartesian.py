"""System 1 on a Cartesian, tool-relative state (``PolicyConfig.system1_state = "cartesian"``) and
the yaw augmentation it allows: what the state holds (no arm joint position; the tool's velocity
and orientation), that a rotation of the scene about z turns its inputs and its action's
positions alike, the isotropic statistics, the CLI, and that a System 1 trained with the
augmentation on one direction of motion acts in another."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import RobotModel, load_robot_spec
from vla_mpc.models.checkpoint import load_policy
from vla_mpc.models.ee_actions import EndEffectorActions
from vla_mpc.models.policy import (
    KEYPOINT_REL_SCALE,
    TCP_VELOCITY_SCALE,
    DualSystemPolicy,
    PolicyConfig,
    isotropic_xy_stats,
    yaw_rotation,
)
from vla_mpc.sim.tasks import TASK_KINDS

SMALL = dict(image_size=32, vision_width=8, d_model=32, vlm_heads=2, latent_tokens=4, latent_dim=16,
             chunk_size=8, expert_width=64, expert_blocks=2, cond_dim=64)
KP_MEAN = [0.5, -0.1, 0.02, 0.45, 0.2, 0.02]
EE_STATS = {"mean": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.02], "std": [0.03, 0.03, 0.03, 0.05, 0.05, 0.05, 0.01]}


@pytest.fixture(scope="module")
def spec():
    return load_robot_spec("panda")


def _policy(spec, state: str = "cartesian", ee_stats: dict | None = None, **kw) -> DualSystemPolicy:
    a = len(spec.joint_names)
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, keypoint_head=True, keypoint_condition=True,
                       system1_condition="keypoints", action_mode="ee", system1_state=state, **{**SMALL, **kw})
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_ee": ee_stats or EE_STATS,
             "keypoints": {"mean": KP_MEAN, "std": [0.1] * 6}}
    torch.manual_seed(0)
    return DualSystemPolicy(cfg, stats).eval()


def _state(spec, q: np.ndarray, v: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([q, v])[None]).float()


def test_config_checks(spec):
    names = spec.joint_names
    with pytest.raises(ValueError, match="system1_state must be one of"):
        PolicyConfig(robot="panda", joint_names=names, system1_state="pixels")
    with pytest.raises(ValueError, match="needs system1_condition 'keypoints' and action_mode 'ee'"):
        PolicyConfig(robot="panda", joint_names=names, keypoint_head=True, keypoint_condition=True,
                     system1_condition="keypoints", action_mode="delta", system1_state="cartesian")
    cfg = _policy(spec).config
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["system1_state"]  # checkpoints written before the field load as "joints"
    assert PolicyConfig.from_dict(old).system1_state == "joints"


def test_the_cartesian_state_holds_the_tool_not_the_arm_joints(spec):
    """The state is the tool's velocity (J v), its orientation from home, the finger's position and
    velocity, the relative keypoints and the kind; a self-motion of the 7-joint arm (same tool
    pose) leaves it unchanged, while the joint state sees it."""
    policy, joints = _policy(spec), _policy(spec, "joints")
    model = RobotModel(spec)
    q = np.asarray(spec.home, np.float64).copy()
    v = np.array([0.3, -0.2, 0.1, 0.25, -0.1, 0.2, 0.3, 0.01])
    kp = torch.tensor(KP_MEAN, dtype=torch.float32).view(1, 2, 3)
    kind = torch.tensor([TASK_KINDS.index("push")])
    z = torch.zeros(1, 0, SMALL["latent_dim"])
    _, s = policy.system1_input(z, _state(spec, q, v), kp, kind)
    assert s.shape == (1, 3 + 3 + 2 + 6 + len(TASK_KINDS))
    J = model.jacobian(q)
    np.testing.assert_allclose(s[0, :3].numpy() * TCP_VELOCITY_SCALE, J[:3] @ v[:7], atol=3e-3)
    np.testing.assert_allclose(s[0, 3:6].numpy(), 0.0, atol=1e-5)  # the home orientation
    np.testing.assert_allclose(s[0, 6:8].numpy(), [q[7], v[7]], atol=1e-6)  # the finger (unit stats)
    tcp = model.fk(q)[:3, 3]
    rel = (np.asarray(KP_MEAN).reshape(2, 3) - tcp).ravel() / KEYPOINT_REL_SCALE
    np.testing.assert_allclose(s[0, 8:14].numpy(), rel, atol=1e-5)
    assert s[0, 14:].tolist() == [float(k == kind.item()) for k in range(len(TASK_KINDS))]
    # a step along the Jacobian's null space: the tool stays, the elbow moves
    _, _, vt = np.linalg.svd(J)
    q2 = q.copy()
    q2[:7] += 0.01 * vt[-1]
    rest = np.zeros_like(v)
    _, s_a = policy.system1_input(z, _state(spec, q, rest), kp, kind)
    _, s_b = policy.system1_input(z, _state(spec, q2, rest), kp, kind)
    assert float((s_a - s_b).abs().max()) < 2e-3
    _, j_a = joints.system1_input(z, _state(spec, q, rest), kp, kind)
    _, j_b = joints.system1_input(z, _state(spec, q2, rest), kp, kind)
    assert float((j_a - j_b).abs().max()) > 5e-3


def test_yaw_turns_the_cartesian_inputs_and_the_action_positions(spec):
    policy = _policy(spec)
    q = np.asarray(spec.home, np.float64)
    v = np.array([0.3, -0.2, 0.1, 0.25, -0.1, 0.2, 0.3, 0.0])
    p = _state(spec, q, v)
    kp = torch.tensor(KP_MEAN, dtype=torch.float32).view(1, 2, 3)
    kind = torch.tensor([0])
    z = torch.zeros(1, 0, SMALL["latent_dim"])
    yaw = torch.tensor([math.pi / 2])
    _, s0 = policy.system1_input(z, p, kp, kind)
    _, s1 = policy.system1_input(z, p, kp, kind, yaw=yaw)
    R = yaw_rotation(yaw)[0]
    np.testing.assert_allclose(s1[0, :3], R @ s0[0, :3], atol=1e-5)  # tool velocity
    np.testing.assert_allclose(s1[0, 3:8], s0[0, 3:8], atol=1e-6)  # orientation and finger unchanged
    for k in range(2):  # each relative keypoint
        np.testing.assert_allclose(s1[0, 8 + 3 * k:11 + 3 * k], R @ s0[0, 8 + 3 * k:11 + 3 * k], atol=1e-5)
    # a quarter turn maps +x to +y
    np.testing.assert_allclose(R @ torch.tensor([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-6)
    # the action's positions turn by the same rotation; orientation and finger stay
    ee = EndEffectorActions(RobotModel(spec))
    f = np.zeros((1, 8, ee.dim))
    f[0, :, 0] = np.linspace(0.0, 0.05, 8)
    f[0, :, 6] = 0.03
    targets = torch.from_numpy(ee.to_joint_targets(q[None], f)).float()
    std = torch.tensor(EE_STATS["std"])
    a0 = policy.normalize_actions(targets, p) * std
    a1 = policy.normalize_actions(targets, p, yaw=yaw) * std
    np.testing.assert_allclose(a1[0, :, :3], a0[0, :, :3] @ R.T, atol=1e-5)
    np.testing.assert_allclose(a1[0, :, 3:], a0[0, :, 3:], atol=1e-6)
    with pytest.raises(ValueError, match="need system1_state 'cartesian'"):
        _policy(spec, "joints").system1_input(z, p, kp, kind, yaw=yaw)


def test_isotropic_xy_stats():
    group = {"mean": [0.03, -0.01, 0.02, 0.1, 0.0, 0.0, 0.02], "std": [0.04, 0.02, 0.03, 0.05, 0.05, 0.05, 0.01],
             "min": [0.0] * 7, "max": [1.0] * 7}
    out = isotropic_xy_stats(group)
    assert out["mean"][:2] == [0.0, 0.0] and out["std"][0] == out["std"][1]
    second = (0.03**2 + 0.04**2 + 0.01**2 + 0.02**2) / 2  # the mean second moment is kept
    assert out["std"][0] == pytest.approx(math.sqrt(second))
    assert out["mean"][2:] == group["mean"][2:] and out["std"][2:] == group["std"][2:]
    assert set(out) == {"mean", "std"} and group["mean"][0] == 0.03  # min / max dropped, input untouched
    with pytest.raises(ValueError, match=">= 3 entries"):
        isotropic_xy_stats({"mean": [0.0], "std": [1.0]})


def _rows_toward_the_object(spec, n: int, rng: np.random.Generator, direction: np.ndarray):
    """Synthetic System 1 rows: the object lies 10 cm from the tool along ``direction`` (+-2 cm),
    and the chunk moves the tool half way to it (the expert's "go there")."""
    ee = EndEffectorActions(RobotModel(spec))
    q = np.asarray(spec.home, np.float64) + rng.normal(0.0, 0.05, (n, 8)) * np.r_[np.ones(7), 0.0]
    tcp = RobotModel(spec).fk_positions(q)
    obj = tcp + 0.1 * direction + rng.normal(0.0, 0.02, (n, 3)) * [1.0, 1.0, 0.0]
    f = np.zeros((n, SMALL["chunk_size"], ee.dim))
    ramp = np.linspace(1.0 / SMALL["chunk_size"], 1.0, SMALL["chunk_size"])[None, :, None]
    f[..., :3] = 0.5 * (obj - tcp)[:, None, :] * ramp
    f[..., 6] = 0.03
    actions = ee.to_joint_targets(q, f)
    kp = np.stack([obj, obj], axis=1)
    proprio = np.concatenate([q, np.zeros_like(q)], axis=1)
    return (torch.from_numpy(proprio).float(), torch.from_numpy(actions).float(), torch.from_numpy(kp).float())


@pytest.mark.parametrize("yaw_augment", [False, True])
def test_a_yaw_augmented_system1_acts_in_a_direction_it_never_saw(spec, yaw_augment):
    """Trained only on objects in front of the tool (+x), a cartesian System 1 with random yaw
    rotations moves toward an object on its left (+y); without them it moves forward anyway."""
    stats = {"mean": EE_STATS["mean"], "std": [0.02, 0.02, 0.005, 0.05, 0.05, 0.05, 0.01]}
    policy = _policy(spec, ee_stats=stats).train()
    rng = np.random.default_rng(0)
    proprio, actions, kp = _rows_toward_the_object(spec, 512, rng, np.array([1.0, 0.0, 0.0]))
    kind = torch.zeros(512, dtype=torch.int64)
    poses = torch.from_numpy(EndEffectorActions(RobotModel(spec)).target_poses(actions.double().numpy())).float()
    opt = torch.optim.Adam(policy.system1.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(300):
        i = torch.from_numpy(rng.integers(0, 512, 128))
        batch = {"s1_proprio": proprio[i], "s1_actions": actions[i], "s1_keypoints": kp[i], "s1_task_kind": kind[i],
                 "s1_action_poses": poses[i]}
        if yaw_augment:
            batch["s1_yaw"] = torch.from_numpy(rng.uniform(-math.pi, math.pi, 128)).float()
        loss, _ = policy.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    test_p, _, test_kp = _rows_toward_the_object(spec, 16, np.random.default_rng(1), np.array([0.0, 1.0, 0.0]))
    model = RobotModel(spec)
    z = torch.zeros(16, 0, SMALL["latent_dim"])
    chunk = policy.sample_chunk(z, test_p, keypoints=test_kp, task_kind=torch.zeros(16, dtype=torch.int64),
                                generator=torch.Generator().manual_seed(0))
    move = model.fk_positions(chunk[:, -1].double().numpy()) - model.fk_positions(test_p[:, :8].double().numpy())
    toward = np.median(move[:, 1])  # the object is 10 cm to the left: half way is +5 cm in y
    forward = np.median(move[:, 0])
    off = math.degrees(math.atan2(abs(forward), toward))  # angle between the move and the object's direction
    print(f"yaw_augment {yaw_augment}: toward {toward:.4f} m, forward {forward:.4f} m, {off:.1f} deg off")
    if yaw_augment:
        assert toward > 0.03 and off < 15.0, (toward, forward)
    else:  # the move keeps much of the only direction it was shown
        assert forward > 0.015 and off > 25.0, (toward, forward)


def test_train_cli_cartesian_system1_with_yaw_augment(tmp_path, spec):
    from test_system1_keypoints import _write_panda_dataset

    from vla_mpc.training.policy import main

    _write_panda_dataset(tmp_path / "ds", spec)
    base = ["--dataset", str(tmp_path / "ds"), "--system1-batch-size", "16", "--steps", "2"]
    out = tmp_path / "fresh"
    assert main(base + ["--out", str(out), "--system1-only", "--action-mode", "ee", "--system1-condition",
                        "keypoints", "--system1-state", "cartesian", "--yaw-augment"]) == 0
    policy = load_policy(out / "last", expected_joint_names=spec.joint_names)
    ee = policy.stats["action_ee"]
    assert policy.config.system1_state == "cartesian" and ee["mean"][:2] == [0.0, 0.0] and ee["std"][0] == ee["std"][1]
    assert json.loads((out / "last" / "config.json").read_text())["extra"]["yaw_augment"] is True
    z = torch.zeros(1, policy.config.latent_tokens, policy.config.latent_dim)
    q = torch.tensor([list(spec.home) + [0.0] * 8], dtype=torch.float32)
    assert torch.isfinite(policy.sample_chunk(z, q)).all()
    # a joint-state System 1 refuses the augmentation
    with pytest.raises(ValueError, match="--yaw-augment needs a 'cartesian' System 1"):
        main(base + ["--out", str(tmp_path / "bad"), "--system1-only", "--action-mode", "ee", "--system1-condition",
                     "keypoints", "--yaw-augment"])
    joints = tmp_path / "joints"
    assert main(base + ["--out", str(joints), "--system1-only", "--action-mode", "ee", "--system1-condition",
                        "keypoints"]) == 0
    # a fresh cartesian System 1 on a trained System 2: System 2 and its heads exactly kept
    out2 = tmp_path / "swap"
    assert main(base + ["--out", str(out2), "--init", str(joints / "last"), "--system1-only", "--system1-state",
                        "cartesian", "--yaw-augment"]) == 0
    before, after = load_policy(joints / "last"), load_policy(out2 / "last")
    assert after.config.system1_state == "cartesian" and before.config.system1_state == "joints"
    kept = [k for k in before.state_dict() if not k.startswith("system1.")]
    assert kept and all(torch.equal(before.state_dict()[k], after.state_dict()[k]) for k in kept)
    assert after.stats["action_ee"]["mean"][:2] == [0.0, 0.0]
    assert json.loads((out2 / "train_summary.json").read_text())["fresh"] == ["system1"]
    # continuing a joint-statistics System 1 with the augmentation is refused
    with pytest.raises(ValueError, match="--yaw-augment needs a 'cartesian' System 1"):
        main(base + ["--out", str(tmp_path / "bad2"), "--init", str(joints / "last"), "--system1-only",
                     "--yaw-augment"])
