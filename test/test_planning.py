"""CEM / MPPI planners, the kinematic world model and batched torch FK (no ROS graph).

Oracles: the analytic minimum of separable quadratics (and its clamp to the bounds), exact
constant-velocity kinematics, the shift rule of TD-MPC2's warm start, and pinocchio (through
``RobotModel``) for forward kinematics.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vla_mpc.models.world_model import (
    Goal,
    KinematicCostConfig,
    KinematicWorldModel,
    TorchFK,
    actions_to_targets,
    targets_to_actions,
)
from vla_mpc.planning.cem import CEM, CEMConfig
from vla_mpc.planning.common import BAD_COST, shift_mean
from vla_mpc.planning.mppi import MPPI, MPPIConfig

H, A = 4, 3
TARGET = torch.tensor([[0.30, -0.20, 0.10], [0.10, 0.05, -0.25], [-0.15, 0.20, 0.0], [0.05, -0.30, 0.20]])


def cumsum_rollout(z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Integrator: latents [S, H, A] = z0 + cumulative actions."""
    return z0.view(1, 1, -1) + torch.cumsum(actions, dim=1)


def quadratic(latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """sum (a - TARGET)^2: minimum 0 at a = TARGET (analytic)."""
    return (actions - TARGET).pow(2).sum(dim=(1, 2))


def cem(**kw) -> CEM:
    cfg = dict(num_samples=400, num_elites=20, iterations=30, horizon=H, init_std=0.5, max_norm=None)
    cfg.update(kw.pop("cfg", {}))
    return CEM(CEMConfig(**cfg), A, kw.pop("low", -1.0), kw.pop("high", 1.0), seed=kw.pop("seed", 0))


def mppi(**kw) -> MPPI:
    cfg = dict(num_samples=512, num_elites=64, iterations=20, horizon=H, temperature=10.0, max_std=0.5,
               min_std=0.001)
    cfg.update(kw.pop("cfg", {}))
    return MPPI(MPPIConfig(**cfg), A, kw.pop("low", -1.0), kw.pop("high", 1.0), seed=kw.pop("seed", 0))


# ------------------------------------------------------------------------------------ planners


@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_finds_quadratic_minimum(make):
    result = make().plan(torch.zeros(A), cumsum_rollout, quadratic)
    assert result.actions.shape == (H, A)
    np.testing.assert_allclose(result.actions.numpy(), TARGET.numpy(), atol=0.02)
    assert result.cost < 1e-3
    assert result.best_cost_per_iteration[-1] < result.best_cost_per_iteration[0]
    # latents are the model's prediction for the chosen actions
    np.testing.assert_allclose(result.latents.numpy(), np.cumsum(result.actions.numpy(), axis=0), atol=1e-6)


@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_seeded_runs_repeat(make):
    a = make(seed=7).plan(torch.zeros(A), cumsum_rollout, quadratic).actions
    b = make(seed=7).plan(torch.zeros(A), cumsum_rollout, quadratic).actions
    c = make(seed=8).plan(torch.zeros(A), cumsum_rollout, quadratic).actions
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_bounds_give_the_clamped_minimum(make):
    # separable quadratic: the minimum inside a box is the target clamped to the box
    low, high = torch.tensor([-0.1, -0.15, -0.2]), torch.tensor([0.1, 0.15, 0.2])
    result = make(low=low, high=high).plan(torch.zeros(A), cumsum_rollout, quadratic)
    for x in (result.actions, result.top_k_actions, result.mean):
        assert torch.all(x >= low - 1e-7) and torch.all(x <= high + 1e-7)
    np.testing.assert_allclose(result.actions.numpy(), TARGET.clamp(low, high).numpy(), atol=0.02)


def test_max_norm_bounds_every_step():
    p = cem(cfg=dict(max_norm=0.2, init_std=0.1))
    result = p.plan(torch.zeros(A), cumsum_rollout, quadratic)
    assert float(result.top_k_actions.norm(dim=-1).max()) <= 0.2 + 1e-6
    assert float(result.actions.norm(dim=-1).max()) <= 0.2 + 1e-6
    # steps whose target is longer than 0.2 end on the sphere, pointing at the target
    t0 = TARGET[0]
    np.testing.assert_allclose(result.actions[0].numpy(), (t0 * 0.2 / t0.norm()).numpy(), atol=0.03)


@pytest.mark.parametrize("tail", ["zero", "repeat"])
@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_warm_start_shifts_previous_mean(make, tail):
    p = make(cfg=dict(warm_start_tail=tail))
    first = p.plan(torch.zeros(A), cumsum_rollout, quadratic)
    prev = p.previous_mean
    np.testing.assert_array_equal(prev.numpy(), first.mean.numpy())
    start = p.initial_mean(None)
    np.testing.assert_array_equal(start[:-1].numpy(), prev[1:].numpy())
    np.testing.assert_array_equal(start[-1].numpy(), (np.zeros(A) if tail == "zero" else prev[-1].numpy()))
    p.reset()
    assert p.previous_mean is None and torch.count_nonzero(p.initial_mean(None)) == 0


def test_shift_mean_rule():
    m = torch.arange(8.0).view(4, 2)
    np.testing.assert_array_equal(shift_mean(m, "zero").numpy(), [[2, 3], [4, 5], [6, 7], [0, 0]])
    np.testing.assert_array_equal(shift_mean(m, "repeat").numpy(), [[2, 3], [4, 5], [6, 7], [6, 7]])
    with pytest.raises(ValueError, match="warm_start_tail"):
        shift_mean(m, "drop")


def test_warm_start_speeds_up_a_tracking_problem():
    # a target sequence that advances one step per call: the shifted previous plan is nearly right
    long_target = torch.linspace(-0.5, 0.5, 12).view(12, 1).repeat(1, A)
    cost_at = lambda k: (lambda lat, act: (act - long_target[k:k + H]).pow(2).sum(dim=(1, 2)))  # noqa: E731
    warm = cem(cfg=dict(iterations=3, init_std=0.05))
    cold = cem(cfg=dict(iterations=3, init_std=0.05))
    warm_costs, cold_costs = [], []
    for k in range(6):
        warm_costs.append(warm.plan(torch.zeros(A), cumsum_rollout, cost_at(k)).cost)
        cold.reset()
        cold_costs.append(cold.plan(torch.zeros(A), cumsum_rollout, cost_at(k)).cost)
    assert np.mean(warm_costs[2:]) < 0.5 * np.mean(cold_costs[2:])


@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_prior_samples_enter_the_population(make):
    p = make(cfg=dict(iterations=1))
    result = p.plan(torch.zeros(A), cumsum_rollout, quadratic, prior_samples=TARGET)
    assert result.best_cost_per_iteration[0] == pytest.approx(0.0, abs=1e-10)  # the prior was scored
    assert result.top_k_indices[0] == 0 and result.top_k_costs[0] == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="prior_samples"):
        p.plan(torch.zeros(A), cumsum_rollout, quadratic, prior_samples=torch.zeros(H + 1, A))


@pytest.mark.parametrize("make", [cem, mppi], ids=["cem", "mppi"])
def test_nan_costs_are_ignored(make):
    def poisoned(latents, actions):
        c = quadratic(latents, actions)
        c[actions[:, 0, 0] > 0.35] = float("nan")  # half-space around the optimum is "NaN"
        return c

    result = make().plan(torch.zeros(A), cumsum_rollout, poisoned)
    assert torch.isfinite(result.actions).all()
    assert torch.isfinite(result.costs).all() and float(result.costs.max()) <= BAD_COST * (1 + 1e-6)
    assert result.actions[0, 0] <= 0.35 + 1e-6
    np.testing.assert_allclose(result.actions.numpy(), TARGET.numpy(), atol=0.03)


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (CEMConfig, dict(num_elites=500, num_samples=400), "num_elites"),
        (CEMConfig, dict(momentum_mean=1.0), "momentum_mean"),
        (CEMConfig, dict(init_std=0.0), "init_std"),
        (CEMConfig, dict(horizon=0), "horizon"),
        (CEMConfig, dict(max_norm=-1.0), "max_norm"),
        (CEMConfig, dict(warm_start_tail="keep"), "warm_start_tail"),
        (MPPIConfig, dict(temperature=0.0), "temperature"),
        (MPPIConfig, dict(min_std=3.0, max_std=2.0), "min_std"),
        (MPPIConfig, dict(select="argmax"), "select"),
        (MPPIConfig, dict(num_samples=True), "num_samples"),
    ],
)
def test_config_errors_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_bad_inputs_raise_value_errors():
    p = cem()
    with pytest.raises(ValueError, match="action_low > action_high"):
        CEM(CEMConfig(horizon=H), A, 1.0, -1.0)
    with pytest.raises(ValueError, match="init_mean"):
        p.plan(torch.zeros(A), cumsum_rollout, quadratic, init_mean=torch.zeros(H, A + 1))
    with pytest.raises(ValueError, match="z0"):
        p.plan(torch.tensor([float("nan")] * A), cumsum_rollout, quadratic)
    with pytest.raises(ValueError, match="cost returned shape"):
        p.plan(torch.zeros(A), cumsum_rollout, lambda lat, act: act.sum(dim=2))


# ------------------------------------------------------------------------ kinematic world model

LOWER, UPPER, VEL = np.array([-1.0, -2.0]), np.array([1.0, 2.0]), np.array([1.0, 0.5])


def two_joint_model(**cost) -> KinematicWorldModel:
    return KinematicWorldModel(("j1", "j2"), LOWER, UPPER, VEL, dt=0.1, cost_config=KinematicCostConfig(**cost))


def test_kinematic_rollout_is_exact_constant_velocity():
    m = two_joint_model()
    z0 = m.encode(None, [0.2, -0.3])
    # 0.05 rad/step is inside both limits; 0.2 rad/step exceeds j2's 0.5 rad/s * 0.1 s = 0.05
    actions = torch.tensor([[0.05, 0.05]] * 5 + [[0.2, 0.2]] * 5).unsqueeze(0)  # [1, 10, 2]
    lat = m.rollout(z0, actions)[0].numpy()
    k = np.arange(1, 11)
    expect_j1 = 0.2 + np.where(k <= 5, 0.05 * k, 0.25 + 0.1 * (k - 5))  # j1 clipped to 1.0 rad/s * 0.1 s
    expect_j2 = -0.3 + 0.05 * k
    np.testing.assert_allclose(lat[:, 0], expect_j1, atol=1e-6)
    np.testing.assert_allclose(lat[:, 1], expect_j2, atol=1e-6)
    # the vectorised rollout equals the generic next() loop of the base class
    loop = super(KinematicWorldModel, m).rollout(z0, actions)
    np.testing.assert_allclose(loop.numpy(), lat[None], atol=1e-6)


def test_joint_limit_barrier_keeps_plans_inside_limits():
    goal_beyond = [1.4, 0.0]  # j1's upper limit is 1.0 rad
    cfg = CEMConfig(num_samples=300, num_elites=30, iterations=15, horizon=10, init_std=0.05, max_norm=None)
    results = {}
    for weight in (0.0, 10.0):
        m = two_joint_model(joint_limit_weight=weight, joint_limit_margin=0.05)
        low, high = m.action_bounds()
        planner = CEM(cfg, 2, low, high, seed=0)
        goal = m.make_goal(joint_positions=goal_beyond)
        r = planner.plan(m.encode(None, [0.5, 0.0]), m.rollout, m.objective(goal))
        results[weight] = r.latents[:, 0].max().item()
    assert results[0.0] > 1.1  # without the barrier the plan leaves the limits toward the goal
    assert results[10.0] <= 1.0  # with it, the plan stays inside (oracle: the URDF limit)
    assert results[10.0] > 0.9  # and still goes as far as the margin allows


def test_barrier_value_and_gripper_mask():
    m = KinematicWorldModel(("j1", "finger"), [-1.0, 0.0], [1.0, 0.04], [1.0, 0.05], dt=0.1,
                            cost_config=KinematicCostConfig(joint_limit_margin=0.1, joint_limit_weight=1.0),
                            barrier_mask=[True, False])
    at_limit = torch.tensor([[[1.0, 0.04]]])  # j1 at its upper limit, finger fully open
    half_in_band = torch.tensor([[[0.95, 0.0]]])
    zero_a = torch.zeros(1, 1, 2)
    assert m.cost(at_limit, zero_a, None).item() == pytest.approx(1.0)  # 1 at the limit, finger exempt
    assert m.cost(half_in_band, zero_a, None).item() == pytest.approx(0.25, abs=1e-6)  # (0.05 / 0.1)^2


def test_hybrid_reference_term():
    m = two_joint_model(reference_weight=2.0, joint_limit_weight=0.0)
    ref = torch.tensor([[0.01, 0.02]] * 3)
    a = torch.stack([ref, ref + 0.1])  # [2, 3, 2]
    c = m.cost(m.rollout(torch.zeros(2), a), a, Goal(reference_actions=ref))
    np.testing.assert_allclose(c.numpy(), [0.0, 2.0 * 6 * 0.01], atol=1e-6)


def test_goal_validation():
    m = two_joint_model()
    with pytest.raises(ValueError, match="goal images"):
        m.make_goal(image=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="needs joint_positions or ee_position"):
        m.make_goal()
    with pytest.raises(ValueError, match="forward kinematics"):
        m.make_goal(ee_position=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="lower >= upper"):
        KinematicWorldModel(("a",), [1.0], [0.0], [1.0], dt=0.1)
    with pytest.raises(ValueError, match="keep_out_boxes"):
        KinematicCostConfig(keep_out_boxes=(((0, 0, 1), (1, 1, 0)),))


def test_targets_actions_round_trip():
    times = np.array([0.0, 0.5, 1.0])
    pos = np.array([[0.0, 1.0], [0.5, 1.0], [1.0, 1.0]])  # j1 at 1 rad/s, j2 still
    a = targets_to_actions(times, pos, np.array([0.0, 1.0]), dt=0.25, horizon=6)
    np.testing.assert_allclose(a, [[0.25, 0]] * 4 + [[0, 0]] * 2, atol=1e-7)  # held after the end
    np.testing.assert_allclose(actions_to_targets([0.0, 1.0], a)[-1], [1.0, 1.0])
    late = targets_to_actions(times, pos, np.array([0.5, 1.0]), dt=0.25, horizon=2, start=0.5)
    np.testing.assert_allclose(late, [[0.25, 0], [0.25, 0]], atol=1e-7)


# ------------------------------------------------------------------------------ batched torch FK


def test_torch_fk_matches_pinocchio_sample_manipulator():
    pin = pytest.importorskip("pinocchio")
    model = pin.buildSampleModelManipulator()
    data = model.createData()
    names = [model.names[i] for i in range(1, model.njoints)]
    frame = model.frames[model.nframes - 1].name
    fk = TorchFK(model, frame, names, dtype=torch.float64)
    q = np.random.default_rng(0).uniform(-3, 3, (16, model.nq))
    rot, pos = fk.transforms(torch.tensor(q))
    for i in range(len(q)):
        pin.framesForwardKinematics(model, data, q[i])
        ref = data.oMf[model.nframes - 1]
        np.testing.assert_allclose(pos[i].numpy(), ref.translation, atol=1e-9)
        np.testing.assert_allclose(rot[i].numpy(), ref.rotation, atol=1e-9)
    np.testing.assert_allclose(fk.positions(torch.tensor(q)).numpy(), pos.numpy(), atol=1e-9)


@pytest.mark.parametrize("robot", ["panda", "ur5e", "gr1"])
def test_torch_fk_matches_robot_model(robot):
    rm_mod = pytest.importorskip("vla_mpc.core.robot_model")
    rm = rm_mod.RobotModel(rm_mod.load_robot_spec(robot))
    m = KinematicWorldModel.from_robot_model(rm, dt=0.1)
    lim = rm.spec.limits
    q = np.random.default_rng(1).uniform(lim.lower, lim.upper, (32, rm.spec.n_joints))
    got_rot, got_pos = m.fk.transforms(torch.tensor(q))
    ref = rm.fk(q)  # [B, 4, 4] pinocchio
    np.testing.assert_allclose(got_pos.numpy(), ref[:, :3, 3], atol=2e-6)
    np.testing.assert_allclose(got_rot.numpy(), ref[:, :3, :3], atol=2e-6)
    np.testing.assert_allclose(m.ee_positions(torch.tensor(q)).numpy(), rm.fk_positions(q), atol=2e-6)
    # batch shape is kept: [S, H, n] -> [S, H, 3]
    assert m.ee_positions(torch.tensor(q).view(4, 8, -1)).shape == (4, 8, 3)


def test_table_plane_keeps_the_end_effector_up():
    rm_mod = pytest.importorskip("vla_mpc.core.robot_model")
    rm = rm_mod.RobotModel(rm_mod.load_robot_spec("panda"))
    home = np.asarray(rm.spec.home)
    ee_home = rm.fk_positions(home)[0]
    goal = ee_home + np.array([0.0, 0.0, -0.35])  # straight down, through the table
    table = float(ee_home[2] - 0.15)
    cfg = MPPIConfig(num_samples=256, num_elites=32, iterations=8, horizon=8, temperature=20.0,
                     max_std=0.1, min_std=0.005)
    lowest = {}
    for enabled in (False, True):
        cost = KinematicCostConfig(ee_goal_weight=5.0, table_height=table if enabled else None,
                                   cartesian_clearance=0.02, cartesian_weight=50.0)
        m = KinematicWorldModel.from_robot_model(rm, dt=0.15, cost_config=cost)
        low, high = m.action_bounds(0.5)
        planner = MPPI(cfg, m.action_dim, low, high, seed=0)
        z0 = m.encode(None, home)
        objective = m.objective(m.make_goal(ee_position=goal))
        for _ in range(4):  # receding horizon on a static state: warm starts refine the plan
            r = planner.plan(z0, m.rollout, objective)
        lowest[enabled] = float(rm.fk_positions(r.latents.numpy().astype(np.float64))[:, 2].min())
    assert lowest[False] < table - 0.05  # the goal pulls the plan through the table ...
    assert lowest[True] > table - 0.01  # ... unless the table term holds it above (pinocchio FK)


def test_core_imports_without_ros():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "import vla_mpc.planning.cem, vla_mpc.planning.mppi, vla_mpc.planning.visualize, vla_mpc.models.world_model\n"
        "import vla_mpc.models.jepa, vla_mpc.bench.planner, vla_mpc.goal_reach, vla_mpc.training.world_model\n"
        "assert not any(m.endswith('_msgs') or m.endswith('_msgs.msg') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------ imagined vs executed PNG


def test_path_recorder_gaps_and_picture(tmp_path):
    from vla_mpc.planning.visualize import NPZ_NAME, PathRecorder

    rec = PathRecorder(dt=0.1)
    t = np.arange(0.0, 2.0, 0.01)
    executed = np.stack([0.3 + 0.1 * t, np.zeros_like(t), 0.5 * np.ones_like(t)], axis=1)  # 0.1 m/s along x
    for ti, p in zip(t, executed):
        rec.add_executed(ti, p)
    for k in range(10):  # plans that imagine the true motion, shifted 2 cm up: gap = 0.02 m exactly
        t0 = 0.1 * k
        steps = t0 + 0.1 * np.arange(5)
        rec.add_plan(t0, np.stack([0.3 + 0.1 * steps, 0 * steps, 0.5 + 0.02 + 0 * steps], axis=1))
    times, gaps = rec.prediction_gaps(0.2)
    assert len(gaps) == 10
    np.testing.assert_allclose(gaps, 0.02, atol=1e-9)
    rec.goal = np.array([0.5, 0.0, 0.5])
    png = rec.save(tmp_path)
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(tmp_path / NPZ_NAME)  # no pickle needed
    assert data["plans"].shape == (10, 5, 3) and data["executed"].shape == (len(t), 3)
    with pytest.raises(ValueError, match="finite"):
        rec.add_plan(0.0, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="nothing recorded"):
        PathRecorder(dt=0.1).save(tmp_path / "empty")
