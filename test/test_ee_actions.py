"""End-effector action space: rotation maps, joint chunk <-> tool-pose delta round trips on the
Panda's kinematics, the policy's ``action_mode="ee"`` (joint targets out, prefix kept, checkpoint
round trip, a short training run that learns a tool motion) and the state-noise augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_mpc.core.robot_model import RobotModel, load_robot_spec
from vla_mpc.models.checkpoint import load_policy, save_policy
from vla_mpc.models.ee_actions import EndEffectorActions, rotation_exp, rotation_log
from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
from vla_mpc.training.policy import action_pose_table, perturb_proprio

SMALL = dict(image_size=32, vision_width=8, d_model=32, vlm_heads=2, latent_tokens=4, latent_dim=16,
             chunk_size=8, expert_width=64, expert_blocks=2, cond_dim=32)


@pytest.fixture(scope="module")
def panda():
    spec = load_robot_spec("panda")
    return spec, EndEffectorActions(RobotModel(spec))


def _joint_chunks(spec, b: int, h: int, seed: int = 0, step: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Measured q near home and chunks drifting from it by small random joint steps (reachable)."""
    rng = np.random.default_rng(seed)
    q = np.asarray(spec.home) + rng.normal(0.0, 0.15, (b, spec.n_joints)) * np.r_[np.ones(spec.n_arm), 0.0]
    q[:, spec.n_arm:] = 0.02
    steps = rng.normal(0.0, step, (b, h, spec.n_joints))
    steps[..., spec.n_arm:] = 0.002
    return q, q[:, None] + np.cumsum(steps, axis=1)


def test_rotation_log_inverts_exp():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.8, (200, 3))
    w = w[np.linalg.norm(w, axis=1) < 3.0]  # the log's range: angles below pi
    w = np.concatenate([w, rng.normal(0, 1e-9, (5, 3)), np.zeros((1, 3))])
    R = rotation_exp(w)
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(rotation_log(R), w, atol=1e-9)
    # a quarter turn about z
    np.testing.assert_allclose(rotation_exp(np.array([0.0, 0.0, np.pi / 2])),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)


def test_features_round_trip_through_ik(panda):
    spec, ee = panda
    q, chunk = _joint_chunks(spec, 6, 10)
    f = ee.features(q, chunk)
    assert f.shape == (6, 10, 6 + spec.n_joints - spec.n_arm) and ee.dim == 7
    back = ee.to_joint_targets(q, f)
    assert back.shape == chunk.shape
    f2 = ee.features(q, back)
    np.testing.assert_allclose(f2[..., :3], f[..., :3], atol=1e-4)   # tool position [m]
    np.testing.assert_allclose(f2[..., 3:6], f[..., 3:6], atol=1e-3)  # tool rotation [rad]
    np.testing.assert_allclose(back[..., spec.n_arm:], chunk[..., spec.n_arm:], atol=1e-12)  # gripper passes through
    # committed steps are kept as given and the chain continues from them
    kept = ee.to_joint_targets(q, f, committed=chunk[:, :3])
    np.testing.assert_array_equal(kept[:, :3], chunk[:, :3])
    np.testing.assert_allclose(ee.features(q, kept)[..., :3], f[..., :3], atol=1e-4)


def test_precomputed_target_poses_give_the_same_features_and_loss(panda):
    """Training's pose table (the targets' forward kinematics once per row) changes nothing but the
    cost: the same features for any measured state, the same loss, NaN rows left out of the table."""
    spec, ee = panda
    q, chunk = _joint_chunks(spec, 5, 8, seed=4)
    poses = ee.target_poses(chunk)
    assert poses.shape == (5, 8, 6)
    np.testing.assert_allclose(poses[..., :3], ee.model.fk(chunk.reshape(-1, spec.n_joints))[:, :3, 3].reshape(5, 8, 3))
    moved = q + np.r_[np.full(spec.n_arm, 0.03), 0.0]  # training's state noise moves q, not the targets
    np.testing.assert_allclose(ee.features(moved, chunk, poses), ee.features(moved, chunk), atol=1e-12)
    table = action_pose_table(ee, chunk, np.array([3, 1, 3]), block=1)
    assert np.isnan(table[[0, 2, 4]]).all()
    np.testing.assert_allclose(table[[1, 3]], poses[[1, 3]], atol=1e-6)  # float32
    with pytest.raises(ValueError, match="poses"):
        ee.features(q, chunk, poses[:, :4])
    with pytest.raises(ValueError, match="poses"):
        ee.features(q, chunk, table)  # NaN rows

    pol = _ee_policy(panda)
    proprio = torch.from_numpy(np.concatenate([moved, np.zeros_like(moved)], axis=1)).float()
    actions = torch.from_numpy(chunk).float()
    with_table = pol.normalize_actions(actions, proprio, torch.from_numpy(poses).float())
    torch.testing.assert_close(with_table, pol.normalize_actions(actions, proprio), atol=1e-5, rtol=0)


def test_a_pure_tool_translation_reads_as_position_deltas_in_base_link(panda):
    """From home, the tool slides along base_link x with the home orientation: the features read
    the slide, zero orientation and the (absolute) gripper target."""
    spec, ee = panda
    model = ee.model
    q0 = np.asarray(spec.home, dtype=np.float64)
    T0 = model.fk(q0)
    targets, x = [], q0.copy()
    for k in range(1, 6):  # the tool slides +1 cm per step along base_link x, orientation held
        x = model.ik(T0[:3, 3] + [0.01 * k, 0.0, 0.0], T0[:3, :3], q0=x).q
        targets.append(x.copy())
    f = ee.features(q0[None], np.array(targets)[None])[0]
    np.testing.assert_allclose(f[:, :3], [[0.01 * k, 0.0, 0.0] for k in range(1, 6)], atol=2e-4)
    np.testing.assert_allclose(f[:, 3:6], 0.0, atol=2e-3)
    np.testing.assert_allclose(f[:, 3:6], 0.0, atol=2e-3)  # the home orientation is the reference
    np.testing.assert_allclose(f[:, 6:], np.broadcast_to(q0[spec.n_arm:], (5, 1)), atol=1e-9)  # absolute gripper


def test_unreachable_poses_give_finite_joint_targets_within_limits(panda):
    spec, ee = panda
    q = np.asarray(spec.home)[None]
    f = np.zeros((1, 4, ee.dim))
    f[0, :, 0] = 5.0    # 5 m away: out of reach
    f[0, :, 6] = 1.0    # gripper far past its limit
    out = ee.to_joint_targets(q, f)
    lo, hi = np.asarray(spec.limits.lower), np.asarray(spec.limits.upper)
    assert np.all(np.isfinite(out)) and np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    # it still moved towards +x as far as the iterations allow
    assert ee.features(q, out)[0, -1, 0] > 0.01


def test_bad_shapes_and_non_finite_values_raise(panda):
    spec, ee = panda
    q, chunk = _joint_chunks(spec, 2, 4)
    with pytest.raises(ValueError, match="expected q"):
        ee.features(q[:, :3], chunk)
    with pytest.raises(ValueError, match="expected q"):
        ee.to_joint_targets(q, np.zeros((2, 4, 3)))
    bad = chunk.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        ee.features(q, bad)
    with pytest.raises(ValueError, match="iterations"):
        EndEffectorActions(ee.model, iterations=0)


def _ee_policy(panda, **kw) -> DualSystemPolicy:
    spec, ee = panda
    a = spec.n_joints
    q, chunk = _joint_chunks(spec, 64, SMALL["chunk_size"], seed=1)
    proprio = np.concatenate([q, np.zeros_like(q)], axis=1)
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_ee": ee.stats(proprio, chunk)}
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, action_mode="ee", **SMALL, **kw)
    torch.manual_seed(0)
    return DualSystemPolicy(cfg, stats).eval()


def test_ee_policy_samples_joint_targets_and_keeps_the_committed_prefix(panda):
    spec, ee = panda
    pol = _ee_policy(panda)
    assert pol.output_dim == 7 and pol.system1.action_dim == 7
    q, chunk = _joint_chunks(spec, 2, SMALL["chunk_size"], seed=2)
    proprio = torch.from_numpy(np.concatenate([q, np.zeros_like(q)], axis=1)).float()
    z = torch.randn(2, 4, 16)
    out = pol.sample_chunk(z, proprio)
    assert out.shape == (2, SMALL["chunk_size"], spec.n_joints) and torch.isfinite(out).all()
    lo, hi = torch.tensor(spec.limits.lower).float(), torch.tensor(spec.limits.upper).float()
    assert bool(((out >= lo - 1e-5) & (out <= hi + 1e-5)).all())
    prefix = torch.from_numpy(chunk[:, :3]).float()
    guided = pol.sample_chunk(z, proprio, prefix=prefix)
    # the frozen steps stay as committed, and the IK chain continues from them (null space too)
    torch.testing.assert_close(guided[:, :2], prefix[:, :2])
    committed = np.repeat(np.asarray(spec.home)[None, None], 2, axis=0)
    with pytest.raises(ValueError, match="committed"):
        ee.to_joint_targets(q, np.zeros((2, 4, ee.dim)), committed[:, :, :3])
    with pytest.raises(ValueError, match="action_ee"):
        DualSystemPolicy(pol.config, {"proprio": pol.stats["proprio"], "action_delta": pol.stats["action_ee"]})


def test_ee_policy_checkpoint_round_trip(panda, tmp_path):
    pol = _ee_policy(panda)
    save_policy(pol, tmp_path / "ckpt")
    back = load_policy(tmp_path / "ckpt", expected_joint_names=panda[0].joint_names)
    assert back.config.action_mode == "ee" and back.output_dim == 7
    z, proprio = torch.randn(1, 4, 16), torch.from_numpy(np.r_[panda[0].home, np.zeros(8)][None]).float()
    noise = torch.randn(1, SMALL["chunk_size"], 7)
    torch.testing.assert_close(back.sample_chunk(z, proprio, noise=noise), pol.sample_chunk(z, proprio, noise=noise))


def test_ee_training_learns_a_tool_motion(panda):
    """System 1 fits chunks that slide the tool along +x or -y, picked by the image: after a short
    run the sampled joint chunks move the tool the right way by about the right distance."""
    spec, ee = panda
    rng = np.random.default_rng(3)
    h = SMALL["chunk_size"]
    n = 48
    q = np.repeat(np.asarray(spec.home)[None], n, axis=0)
    q[:, : spec.n_arm] += rng.normal(0.0, 0.05, (n, spec.n_arm))
    direction = np.where(np.arange(n) % 2 == 0, 0, 1)
    f = np.zeros((n, h, ee.dim))
    axes = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    f[..., :3] = axes[direction][:, None] * (0.005 * np.arange(1, h + 1))[None, :, None]
    chunk = ee.to_joint_targets(q, f)
    proprio = np.concatenate([q, np.zeros_like(q)], axis=1)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[direction == 1, :, :, 1] = 255
    a = spec.n_joints
    stats = {"proprio": {"mean": proprio.mean(0).tolist(), "std": np.maximum(proprio.std(0), 1e-3).tolist()},
             "action_ee": ee.stats(proprio, chunk)}
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, action_mode="ee", augment_shift=0, **SMALL)
    torch.manual_seed(0)
    pol = DualSystemPolicy(cfg, stats)
    opt = torch.optim.AdamW(pol.parameters(), lr=2e-3)
    batch = {"images": torch.from_numpy(images), "text_emb": torch.zeros(n, 384),
             "proprio": torch.from_numpy(proprio).float(), "actions": torch.from_numpy(chunk).float()}
    first = None
    for _ in range(150):
        loss, info = pol.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = info["loss"] if first is None else first
    assert info["loss"] < 0.5 * first
    pol.eval()
    with torch.no_grad():
        z = pol.encode(batch["images"][:8], batch["text_emb"][:8])
    out = pol.sample_chunk(z, batch["proprio"][:8], generator=torch.Generator().manual_seed(0)).double().numpy()
    moved = ee.features(q[:8], out)[:, -1, :3]  # tool displacement at the chunk's end [m]
    want = axes[direction[:8]] * 0.005 * h
    assert np.all(np.sum(moved * axes[direction[:8]], axis=1) > 0.5 * 0.005 * h), moved
    assert np.abs(moved - want).max() < 0.02, (moved, want)
    assert a == out.shape[2]


def test_perturb_proprio_moves_only_the_arm_positions():
    p = torch.zeros(4000, 16)
    batch = {"proprio": p}
    perturb_proprio(batch, np.random.default_rng(0), 0.02, 7)
    assert float(p[:, :7].std()) == pytest.approx(0.02, rel=0.05)
    assert float(p[:, 7:].abs().max()) == 0.0
    before = p.clone()
    perturb_proprio(batch, np.random.default_rng(0), 0.0, 7)
    assert torch.equal(p, before)


def test_limit_threads_sets_torch_and_blas_pools():
    """The learned backend's nodes run torch and numpy's BLAS with the given thread count (System
    1's per-step IK solves are 6 x 6: a multi-threaded BLAS pool only adds hand-offs)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from vla_mpc.models.learned import limit_threads

    np.linalg.solve(np.eye(6), np.ones(6))  # numpy's BLAS is loaded
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the BLAS pools on exit
        try:
            got = limit_threads(1)
            assert got == {"torch": 1, "blas": 1}
            assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
        finally:
            torch.set_num_threads(before)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            limit_threads(bad)


def test_targets_below_the_safety_floor_slide_along_it(panda):
    """``tcp_floor``: a chunk aimed 3 cm under the monitor's table limit is raised onto the floor
    (its horizontal motion kept), so the monitor's Cartesian check passes it instead of braking;
    a chunk above the floor is unchanged. The floor is the monitor's own limit plus the margin."""
    from vla_mpc.core.safety import SafetyFilter
    from vla_mpc.models.ee_actions import TCP_FLOOR_MARGIN, tcp_floor_from_spec

    spec, free = panda
    floor = tcp_floor_from_spec(spec)
    block = spec.safety["cartesian"]
    tcp_sphere = next(s for s in block["spheres"] if s["link"] == spec.ee_link)
    assert floor == pytest.approx(block["table_height"] + block["clearance"] + tcp_sphere["radius"]
                                  + TCP_FLOOR_MARGIN)
    floored = EndEffectorActions(free.model, tcp_floor=floor)
    model = free.model
    q0 = np.asarray(spec.home, np.float64)
    q_low = model.ik(model.fk(q0)[:3, 3] * [1.0, 1.0, 0.0] + [0.1, 0.0, floor + 0.01], model.fk(q0)[:3, :3], q0=q0).q
    p0 = model.fk(q_low)[:3, 3]
    f = np.zeros((1, 6, floored.dim))
    f[0, :, 0] = np.linspace(0.01, 0.06, 6)  # forward 6 cm ...
    f[0, :, 2] = np.linspace(-0.01, -0.04, 6)  # ... and down 4 cm: through the floor
    f[0, :, 6:] = 0.0
    low = free.to_joint_targets(q_low[None], f)[0]
    kept = floored.to_joint_targets(q_low[None], f)[0]
    z_free, z_kept = model.fk_positions(low)[:, 2], model.fk_positions(kept)[:, 2]
    assert z_free.min() < floor - 0.02 and z_kept.min() == pytest.approx(floor, abs=1e-3)
    np.testing.assert_allclose(model.fk_positions(kept)[:, 0] - p0[0], f[0, :, 0], atol=1e-3)
    # the monitor passes the floored chunk and brakes the other
    for chunk, braked in ((kept, False), (low, True)):
        safety = SafetyFilter.from_spec(spec, 0.01)
        safety.reset(q_low)
        kinds = set()
        for k, target in enumerate(np.linspace(q_low, chunk[-1], 200)):
            safety.observe_joint_state(target, 0.01 * k)
            _, verdict = safety.filter(safety.joint_names, target, 0.01 * k, target, now_s=0.01 * k)
            kinds.update(verdict.kinds)
        assert ("cartesian" in kinds) == braked, kinds
    f_up = f.copy()
    f_up[0, :, 2] = 0.0
    np.testing.assert_allclose(floored.to_joint_targets(q_low[None], f_up), free.to_joint_targets(q_low[None], f_up))
    assert tcp_floor_from_spec(type("NoSafety", (), {"safety": {}, "ee_link": "x"})()) is None
    with pytest.raises(ValueError, match="tcp_floor must be finite"):
        EndEffectorActions(model, tcp_floor=float("nan"))


def test_an_ee_policy_aims_above_the_safety_floor(panda):
    spec, _ = panda
    from vla_mpc.models.ee_actions import tcp_floor_from_spec

    assert _ee_policy(panda).ee_actions.tcp_floor == tcp_floor_from_spec(spec)
