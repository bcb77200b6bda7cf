"""SafetyFilter (vla_mpc.core.safety) without ROS: limits, input checks, states, and a property
test that no command sequence can make the output break a position, velocity, acceleration or
jerk limit (finite differences of the output over dt)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.core.safety import (
    COMMAND_KEY,
    SafetyAction,
    SafetyFilter,
    SafetyLimits,
    SafetyState,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PANDA = load_robot_spec("panda")
DT = 0.005


def make_filter(spec=PANDA, dt: float = DT, **kw) -> tuple[SafetyFilter, np.ndarray]:
    kw.setdefault("command_timeout_s", 1e6)
    kw.setdefault("joint_state_timeout_s", 1e6)
    kw.setdefault("cartesian", None)  # joint limits only; Cartesian constraints: test_safety_faults.py
    f = SafetyFilter.from_spec(spec, dt, **kw)
    q0 = np.asarray(spec.home, dtype=np.float64).copy()
    q0 = np.clip(q0, f.limits.lower, f.limits.upper)
    f.observe_joint_state(q0, 0.0)
    return f, q0


def violations(outputs: list[np.ndarray], limits: SafetyLimits, dt: float, start: np.ndarray) -> dict[str, int]:
    """Count limit violations of an output sequence (rows = periods) by finite differences.
    Before the sequence the robot rests at ``start`` (three periods)."""
    p = np.array([start, start, start] + outputs)
    v = np.diff(p, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    rel = 1e-6
    return {
        "nonfinite": int(np.sum(~np.isfinite(p))),
        "position": int(np.sum((p < limits.lower - 1e-12) | (p > limits.upper + 1e-12))),
        "velocity": int(np.sum(np.abs(v) > limits.velocity * (1 + rel))),
        "acceleration": int(np.sum(np.abs(a) > limits.acceleration * (1 + rel) + 1e-6)),
        "jerk": int(np.sum(np.abs(j) > limits.jerk * (1 + rel) + 1e-3)),
    }


def random_spec(draw_floats: list[float], n: int) -> SimpleNamespace:
    """A RobotSpec-like object with limits drawn from ``draw_floats`` (uniform [0, 1) values)."""
    u = np.asarray(draw_floats, dtype=np.float64).reshape(6, n)
    lower = -0.2 - 3.0 * u[0]
    upper = 0.2 + 3.0 * u[1]
    names = tuple(f"j{i}" for i in range(n))
    return SimpleNamespace(
        name="random", joint_names=names, arm_joint_names=names,
        limits=SimpleNamespace(lower=lower, upper=upper, velocity=0.05 + 3.0 * u[2],
                               acceleration=0.5 + 30.0 * u[3], jerk=10.0 + 10000.0 * u[4],
                               effort=np.ones(n)),
        home=0.5 * (lower + upper), safety={"position_margin": 0.05, "max_joint_step": 0.05 + u[5, 0]},
    )


# ----------------------------------------------------------------------------------------- limits


def test_limits_from_spec_apply_margin_to_arm_joints_only():
    lim = SafetyLimits.from_spec(PANDA)
    arm = [PANDA.joint_names.index(n) for n in PANDA.arm_joint_names]
    np.testing.assert_allclose(lim.lower[arm], PANDA.limits.lower[arm] + 0.05)
    np.testing.assert_allclose(lim.upper[arm], PANDA.limits.upper[arm] - 0.05)
    finger = PANDA.joint_names.index("panda_finger_joint1")
    assert lim.lower[finger] == 0.0 and lim.upper[finger] == 0.04  # open/closed stay reachable
    np.testing.assert_array_equal(lim.velocity, PANDA.limits.velocity)
    assert np.all(lim.max_joint_step == 0.05)


def test_limits_reject_bad_values_naming_the_joint():
    lim = SafetyLimits.from_spec(PANDA)
    vel = lim.velocity.copy()
    vel[2] = -1.0
    with pytest.raises(ValueError, match="panda_joint3"):
        SafetyLimits(lim.joint_names, lim.lower, lim.upper, vel, lim.acceleration, lim.jerk,
                     lim.max_joint_step, lim.margin)
    with pytest.raises(ValueError, match="dt"):
        SafetyFilter(lim, 0.0)


# ------------------------------------------------------------------------------------ pass, clamp


def test_reachable_stream_passes_bit_for_bit_and_reordered_names_are_mapped():
    f, q0 = make_filter()
    names = list(PANDA.joint_names)
    t = np.arange(1, 201) * DT
    # A smooth trajectory well inside every limit (amplitude 0.02 rad at 0.5 Hz on each arm joint).
    traj = q0 + 0.02 * (1 - np.cos(2 * np.pi * 0.5 * t))[:, None] * np.r_[np.ones(7), 0.0]
    for k in range(len(t)):
        if k % 2:
            order = names[::-1]
            cmd, verdict = f.filter(order, traj[k][::-1], t[k])
        else:
            cmd, verdict = f.filter(names, traj[k], t[k])
        assert verdict.action is SafetyAction.PASS, verdict.summary
        np.testing.assert_array_equal(cmd, traj[k])
    assert f.state is SafetyState.ACTIVE


def test_over_velocity_step_is_clamped_naming_the_joint():
    f, q0 = make_filter()
    target = q0.copy()
    target[0] += 0.04  # within max_joint_step, but 8 rad/s over one 5 ms period
    cmd, verdict = f.filter(PANDA.joint_names, target, 1.0)
    assert verdict.action is SafetyAction.CLAMPED and f.state is SafetyState.LIMITING
    assert set(verdict.reasons) == {"panda_joint1"}
    assert verdict.reasons["panda_joint1"].startswith("velocity 8 rad/s > 2.175")
    assert 0.0 < cmd[0] - q0[0] <= PANDA.limits.acceleration[0] * DT**2 + 1e-12  # from rest: <= A dt^2
    np.testing.assert_array_equal(cmd[1:], q0[1:])


def test_step_target_converges_with_negligible_overshoot_and_then_passes():
    f, q0 = make_filter()
    target = q0.copy()
    target[[0, 3]] += [0.04, -0.03]
    out = []
    for k in range(400):
        cmd, verdict = f.filter(PANDA.joint_names, target, 1.0 + k * DT)
        out.append(cmd)
        if verdict.action is SafetyAction.PASS:
            break
    assert verdict.action is SafetyAction.PASS, "did not converge in 2 s"
    np.testing.assert_array_equal(out[-1], target)
    p = np.array(out)
    # Braking-consistent approach: at most a fraction of a milliradian past the target.
    assert p[:, 0].max() <= target[0] + 5e-4 and p[:, 3].min() >= target[3] - 5e-4
    assert all(n == 0 for n in violations(out, f.limits, DT, q0).values())


def test_target_beyond_position_limit_stops_inside_it():
    f, q0 = make_filter()
    names = PANDA.joint_names
    out = []
    for k in range(1200):
        target = out[-1].copy() if out else q0.copy()
        target[1] += 0.05  # keep pushing joint 2 upward, max_joint_step at a time
        cmd, verdict = f.filter(names, target, 1.0 + k * DT)
        out.append(cmd)
    assert out[-1][1] == pytest.approx(f.limits.upper[1], abs=1e-3)
    assert "position" in verdict.reasons["panda_joint2"] or "velocity" in verdict.reasons["panda_joint2"]
    assert all(n == 0 for n in violations(out, f.limits, DT, q0).values())


# ---------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "names, expected",
    [
        (lambda n: n[:-1], {"panda_finger_joint1": "missing from command"}),
        (lambda n: n[:-1] + ("bogus",), {"bogus": "unknown joint", "panda_finger_joint1": "missing from command"}),
        (lambda n: n[:-1] + ("panda_joint1",), {"panda_joint1": "duplicate joint name",
                                                "panda_finger_joint1": "missing from command"}),
    ],
)
def test_wrong_names_are_rejected_naming_them(names, expected):
    f, q0 = make_filter()
    bad_names = names(PANDA.joint_names)
    cmd, verdict = f.filter(bad_names, q0[: len(bad_names)], 1.0)
    assert verdict.action is SafetyAction.REJECTED and f.state is SafetyState.HOLDING
    assert dict(verdict.reasons) == expected
    np.testing.assert_array_equal(cmd, q0)  # holding where it was


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_targets_are_rejected(bad):
    f, q0 = make_filter()
    target = q0.copy()
    target[4] = bad
    cmd, verdict = f.filter(PANDA.joint_names, target, 1.0)
    assert verdict.action is SafetyAction.REJECTED and "panda_joint5" in verdict.reasons
    assert np.all(np.isfinite(cmd))


def test_stamps_that_repeat_or_go_backwards_are_rejected():
    f, q0 = make_filter()
    assert f.filter(PANDA.joint_names, q0, 2.0)[1].action is SafetyAction.PASS
    for stamp, word in ((2.0, "duplicate"), (1.5, "backwards"), (math.nan, "not finite")):
        _, verdict = f.filter(PANDA.joint_names, q0, stamp)
        assert verdict.action is SafetyAction.REJECTED and word in verdict.reasons[COMMAND_KEY]
    assert f.filter(PANDA.joint_names, q0, 2.1)[1].action is SafetyAction.PASS


def test_equal_stamp_with_a_new_target_is_a_new_command():
    """Under use_sim_time the ROS clock moves in /clock ticks: two commands may share a stamp."""
    f, q0 = make_filter()
    assert f.filter(PANDA.joint_names, q0, 2.0, now_s=2.0)[1].action is SafetyAction.PASS
    q1 = q0.copy()
    q1[0] += 1e-4
    assert f.filter(PANDA.joint_names, q1, 2.0, now_s=2.0 + DT)[1].action is SafetyAction.PASS
    # exact duplicate
    assert f.filter(PANDA.joint_names, q1, 2.0, now_s=2.0 + 2 * DT)[1].action is SafetyAction.REJECTED


@pytest.mark.parametrize("jump_action", ["clamp", "reject"])
def test_absurd_jumps_clamp_or_reject(jump_action):
    f, q0 = make_filter(jump_action=jump_action)
    target = q0.copy()
    target[2] += 1.0  # 20x max_joint_step
    cmd, verdict = f.filter(PANDA.joint_names, target, 1.0)
    assert "max_joint_step" in verdict.reasons["panda_joint3"]
    if jump_action == "clamp":
        assert verdict.action is SafetyAction.CLAMPED and "step" in verdict.kinds
        assert 0.0 < cmd[2] - q0[2] <= 0.05
    else:
        assert verdict.action is SafetyAction.REJECTED
        np.testing.assert_array_equal(cmd, q0)


# ------------------------------------------------------------------------ states, hold, e-stop


def test_estop_latches_until_reset_and_decelerates():
    f, q0 = make_filter()
    names = PANDA.joint_names
    target = q0.copy()
    out = []
    for k in range(60):  # get joint 1 moving at speed
        target[0] = q0[0] + 0.01 * k
        out.append(f.filter(names, target, 1.0 + k * DT)[0])
    assert f.last_velocity[0] > 0.5
    assert f.estop("test").intervention
    for k in range(100):
        cmd, verdict = f.filter(names, q0, 2.0 + k * DT)
        assert verdict.action is SafetyAction.ESTOP and f.state is SafetyState.ESTOP
        out.append(cmd)
        out.append(f.tick(2.0 + (k + 0.5) * DT)[0])
    assert f.last_velocity[0] == 0.0  # stopped
    assert all(n == 0 for n in violations(out, f.limits, DT, q0).values())
    f.reset()
    assert f.state is SafetyState.HOLDING
    _, verdict = f.filter(names, out[-1], 3.0)
    assert verdict.action is SafetyAction.PASS and f.state is SafetyState.ACTIVE


def test_command_timeout_and_stale_joint_states_hold():
    f, q0 = make_filter(command_timeout_s=0.1, joint_state_timeout_s=0.2)
    names = PANDA.joint_names
    f.observe_joint_state(q0, 1.0)
    assert f.tick(1.0)[1].action is SafetyAction.HOLD  # starts HOLDING: no command yet
    assert f.filter(names, q0, 1.0, now_s=1.0)[1].action is SafetyAction.PASS
    assert f.tick(1.05) is None  # commands flowing: nothing to add
    cmd, verdict = f.tick(1.15)
    assert verdict.action is SafetyAction.HOLD and "command_timeout" in verdict.kinds and verdict.intervention
    assert f.state is SafetyState.HOLDING
    np.testing.assert_array_equal(cmd, q0)
    assert not f.tick(1.16)[1].intervention  # a hold is reported once
    # A fresh command resumes; then joint states go stale: commands are refused.
    assert f.filter(names, q0, 1.17, now_s=1.17)[1].action is SafetyAction.PASS
    cmd, verdict = f.filter(names, q0, 1.25, now_s=1.25)
    assert verdict.action is SafetyAction.REJECTED and "stale_joint_state" in verdict.kinds
    assert "stale_joint_state" in f.tick(1.26)[1].kinds


def test_no_joint_state_means_nothing_to_send():
    f = SafetyFilter.from_spec(PANDA, DT)
    cmd, verdict = f.filter(PANDA.joint_names, PANDA.home, 1.0)
    assert cmd is None and verdict.action is SafetyAction.REJECTED
    assert f.tick(1.0)[0] is None


def test_extra_checks_reject_and_internal_errors_fail_closed():
    def keep_joint1_negative(cmd):
        return {"panda_joint1": "keep-out"} if cmd[0] > 0.001 else {}

    f, q0 = make_filter(checks=[keep_joint1_negative])
    target = q0.copy()
    target[0] = 0.002
    cmd, verdict = f.filter(PANDA.joint_names, target, 1.0)
    assert q0[0] < cmd[0] <= 0.001
    assert verdict.action in (SafetyAction.PASS, SafetyAction.CLAMPED)  # first step is short
    for k in range(20):
        cmd, verdict = f.filter(PANDA.joint_names, target, 1.1 + k * DT)
    assert verdict.action is SafetyAction.REJECTED and verdict.reasons == {"panda_joint1": "keep-out"}

    def broken(cmd):
        raise RuntimeError("boom")

    g, q0 = make_filter(checks=[broken])
    cmd, verdict = g.filter(PANDA.joint_names, q0, 1.0)
    assert verdict.action is SafetyAction.HOLD and "boom" in verdict.reasons[COMMAND_KEY]
    assert g.state is SafetyState.HOLDING and np.all(np.isfinite(cmd))


# ------------------------------------------------------------------------------------ properties

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["target", "far", "nan", "names", "hold", "tick", "repeat", "reverse"]),
        st.lists(st.floats(-1.0, 1.0), min_size=8, max_size=8),
    ),
    min_size=20, max_size=120,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=_OPS,
    limit_draws=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=48, max_size=48),
    dt=st.sampled_from([0.001, 0.002, 0.005, 0.01, 0.02]),
)
def test_any_command_sequence_respects_every_limit(ops, limit_draws, dt):
    spec = random_spec(limit_draws, 8)
    f, q0 = make_filter(spec, dt)
    lim = f.limits
    names = list(spec.joint_names)
    span = lim.upper - lim.lower
    out = []
    t = 1.0
    last = q0
    for kind, u in ops:
        u = np.asarray(u)
        t += dt
        target = lim.lower - 0.3 * span + (u + 1.0) * 0.8 * span  # 30 % beyond either limit
        if kind == "target":
            res = f.filter(names, target, t)
        elif kind == "far":
            res = f.filter(names, 1e6 * u, t)
        elif kind == "nan":
            target[int(abs(u[0]) * 7.99)] = math.nan
            res = f.filter(names, target, t)
        elif kind == "names":
            res = f.filter(names[:-1] + ["j0"], target, t)
        elif kind == "hold":
            res = f.hold()
        elif kind == "tick":
            res = f.tick(t) or f.hold()
        elif kind == "repeat":
            res = f.filter(names, last, t - dt)  # stamp goes backwards
        else:
            res = f.filter(names[::-1], last[::-1] + 0.01 * u, t)
        cmd, verdict = res
        if verdict.action is SafetyAction.DEFERRED:  # two commands in one period: nothing sent now
            assert cmd is None
            continue
        assert cmd is not None and verdict.action in SafetyAction
        out.append(cmd)
        last = cmd
    assert violations(out, lim, dt, q0) == dict.fromkeys(("nonfinite", "position", "velocity", "acceleration", "jerk"), 0)


@settings(max_examples=30, deadline=None)
@given(u=st.lists(st.floats(-1.0, 1.0), min_size=8, max_size=8))
def test_reachable_static_target_is_reached_exactly(u):
    f, q0 = make_filter()
    lim = f.limits
    target = np.clip(q0 + 0.3 * np.asarray(u) * (lim.upper - lim.lower) / 2, lim.lower, lim.upper)
    out = []
    for k in range(2000):  # 10 s; the slowest joint (finger, 0.05 m/s) needs < 1 s
        cmd, verdict = f.filter(PANDA.joint_names, target, 1.0 + k * DT)
        out.append(cmd)
        if verdict.action is SafetyAction.PASS and np.array_equal(cmd, out[-2] if len(out) > 1 else q0):
            break
    np.testing.assert_array_equal(out[-1], target)
    assert all(n == 0 for n in violations(out, lim, DT, q0).values())


def test_core_imports_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None; sys.modules['diagnostic_msgs'] = None\n"
            "import vla_mpc.core.safety as s, vla_mpc.core.safety_cartesian, vla_mpc.core.safety_cost\n"
            "import vla_mpc.core.safety_limits; print(s.SafetyFilter.__name__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "SafetyFilter"


# ------------------------------------------------------------------------- Cartesian constraints

from vla_mpc.core.robot_model import RobotModel  # noqa: E402
from vla_mpc.core.safety_cartesian import CartesianConfig, CartesianConstraints, segment_distance  # noqa: E402
from vla_mpc.core.safety_cost import CostConfig  # noqa: E402

PANDA_MODEL = RobotModel(PANDA)
ARM = np.r_[np.ones(7), 0.0]  # arm joints only (the finger rests at its upper limit)
# A table raised to 0.25 m (home TCP at 0.487 m), a keep-out box in front and the hand/base pair.
CART = {
    "clearance": 0.01,
    "table_height": 0.25,
    "workspace": {"min": [-0.6, -0.9, -0.2], "max": [1.0, 0.9, 1.3]},
    "keep_out_boxes": [{"name": "post", "min": [0.45, -0.3, 0.2], "max": [0.7, -0.1, 0.8]}],
    "spheres": [{"name": "tcp", "link": "panda_tcp", "radius": 0.005, "workspace": True},
                {"name": "hand", "link": "panda_hand", "center": [0.0, 0.0, 0.04], "radius": 0.05}],
    "capsules": [{"name": "base", "link": "panda_link0", "a": [0, 0, 0.05], "b": [0, 0, 0.333], "radius": 0.09},
                 {"name": "hand", "link": "panda_hand", "a": [0, 0, 0], "b": [0, 0, 0.1], "radius": 0.05}],
    "self_collision": [["hand", "base"]],
}


def cart_filter(config=CART, **kw) -> tuple[SafetyFilter, np.ndarray, CartesianConstraints]:
    cart = CartesianConstraints(PANDA_MODEL, CartesianConfig.from_dict(config))
    f, q0 = make_filter(cartesian=cart, **kw)
    return f, q0, cart


def test_segment_distance_against_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p1, q1, p2, q2 = rng.normal(size=(4, 3))
        s = np.linspace(0, 1, 401)
        a = p1 + s[:, None] * (q1 - p1)
        b = p2 + s[:, None] * (q2 - p2)
        brute = np.min(np.linalg.norm(a[:, None] - b[None], axis=2))
        assert segment_distance(p1, q1, p2, q2) == pytest.approx(brute, abs=2e-3)
        assert segment_distance(p1, q1, p2, q2) <= brute + 1e-12


def test_cartesian_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"keep_out_boxes\[0\]"):
        CartesianConfig.from_dict({**CART, "keep_out_boxes": [{"min": [0, 0, 1], "max": [1, 1, 0]}]})
    with pytest.raises(ValueError, match="self_collision"):
        CartesianConfig.from_dict({**CART, "self_collision": [["hand", "nope"]]})
    with pytest.raises(ValueError, match="unknown keys"):
        CartesianConfig.from_dict({**CART, "tabel_height": 0.0})


def test_distances_match_fk_and_lipschitz_bound_holds():
    _, q0, cart = cart_filter()
    tcp = PANDA_MODEL.fk(q0)[:3, 3]
    d = dict(zip(cart.names, cart.distances(q0)))
    assert d["table:tcp"] == pytest.approx(tcp[2] - 0.005 - 0.25, abs=1e-12)
    rng = np.random.default_rng(0)
    lim = SafetyLimits.from_spec(PANDA)
    for _ in range(200):  # a point moves at most sum_j R_j |dq_j| (module docstring)
        q1 = lim.lower + rng.random(8) * (lim.upper - lim.lower)
        q2 = np.clip(q1 + rng.normal(0, 0.1, 8), lim.lower, lim.upper)
        moved = np.linalg.norm(cart.sphere_centers(q2) - cart.sphere_centers(q1), axis=1).max()
        assert moved <= np.abs(q2 - q1) @ cart._lip_env + 1e-12


def _descend_target(q0: np.ndarray, dz: float) -> np.ndarray:
    tcp = PANDA_MODEL.fk(q0)
    res = PANDA_MODEL.ik(tcp[:3, 3] + [0.0, 0.0, dz], tcp[:3, :3], q0)
    assert res.converged
    return res.q


def test_command_into_the_table_brakes_above_it_and_can_leave():
    f, q0, cart = cart_filter()
    names = PANDA.joint_names
    low = _descend_target(q0, -0.4)  # TCP 0.15 m below the raised table
    out, kinds = [], set()
    for k in range(600):
        cmd, verdict = f.filter(names, low, 1.0 + k * DT)
        out.append(cmd)
        kinds.update(verdict.kinds)
    assert "cartesian" in kinds
    assert any("table:" in r for r in verdict.reasons) and verdict.action is SafetyAction.CLAMPED
    d = np.array([cart.distances(q) for q in out])
    assert d.min() >= 0.0  # never into the table (clearance 0.01 m spent on braking at most)
    assert dict(zip(cart.names, d[-1]))["table:tcp"] < 0.05  # it did get close: braked, not frozen early
    assert all(n == 0 for n in violations(out, f.limits, DT, q0).values())
    assert f.step_cost == 1.0 and f.episode_cost > 0  # Cartesian enforcement costs
    # Away from the table is allowed again.
    for k in range(400):
        cmd, verdict = f.filter(names, q0, 5.0 + k * DT)
    np.testing.assert_allclose(cmd, q0, atol=1e-9)
    assert verdict.action is SafetyAction.PASS


def test_far_from_constraints_needs_no_fk_and_a_robot_inside_may_leave():
    f, q0, cart = cart_filter()
    names = PANDA.joint_names
    for k in range(100):  # small motion around home, far from everything
        target = q0 + 0.01 * math.sin(k * 0.1)
        f.filter(names, target, 1.0 + k * DT)
    assert cart.fk_calls <= 3
    # Start inside the table (table raised above the home TCP): deeper is refused, up is allowed.
    inside = {**CART, "table_height": 0.55}
    g, q0, cart = cart_filter(inside)
    assert dict(zip(cart.names, cart.distances(q0)))["table:tcp"] < 0
    down, up = _descend_target(q0, -0.05), _descend_target(q0, 0.2)
    for k in range(100):
        cmd, verdict = g.filter(names, down, 1.0 + k * DT)
    assert "cartesian" in verdict.kinds
    assert dict(zip(cart.names, cart.distances(cmd)))["table:tcp"] >= dict(zip(cart.names, cart.distances(q0)))[
        "table:tcp"] - 0.01
    for k in range(600):
        cmd, verdict = g.filter(names, up, 2.0 + k * DT)
    np.testing.assert_allclose(cmd, up, atol=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(st.tuples(st.sampled_from(["jump", "walk", "hold", "dz"]),
                           st.lists(st.floats(-1.0, 1.0), min_size=8, max_size=8)), min_size=3, max_size=12),
    dt=st.sampled_from([0.002, 0.005, 0.01]),
)
def test_any_command_sequence_respects_cartesian_and_joint_limits(ops, dt):
    # The table 0.14 m under the home TCP, so that many sequences need Cartesian braking.
    f, q0, cart = cart_filter({**CART, "table_height": 0.35}, dt=dt)
    lim = f.limits
    names = PANDA.joint_names
    span = lim.upper - lim.lower
    out, t, x = [], 1.0, q0.copy()
    for kind, u in ops:
        u = np.asarray(u)
        if kind == "jump":  # anywhere in (and 10 % beyond) the joint range
            x = lim.lower - 0.1 * span + (u + 1.0) * 0.6 * span
        elif kind == "walk":
            x = x + 0.3 * u
        elif kind == "dz":  # shoulder and elbow forward: down toward the table / box
            x = x + 0.5 * np.abs(u) * np.r_[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
        for _ in range(int(0.3 / dt)):  # hold each target for 0.3 s
            t += dt
            cmd, verdict = f.hold() if kind == "hold" else f.filter(names, x, t)
            out.append(cmd)
    d = np.array([cart.distances(q) for q in out])
    assert d.min() >= 0.0, dict(zip(cart.names, d.min(axis=0)))
    assert violations(out, lim, dt, q0) == dict.fromkeys(("nonfinite", "position", "velocity", "acceleration", "jerk"), 0)


# ------------------------------------------------------------------------------- cost budget


@pytest.mark.parametrize("reaction", ["hold", "stop", "slow"])
def test_cost_budget_reactions_and_episode_reset(reaction):
    f, q0 = make_filter(cost=CostConfig(budget=5, reaction=reaction, slow_factor=0.25))
    names = PANDA.joint_names
    beyond = q0.copy()
    beyond[0] = 10.0  # beyond the position limit: each limited step costs 1 (max_joint_step clamps)
    costs = []
    for k in range(6):
        f.filter(names, beyond, 1.0 + k * DT)
        costs.append((f.step_cost, f.episode_cost))
    assert costs[:3] == [(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]
    assert f.cost.exceeded and f.episode_cost == 6.0
    cmd, verdict = f.filter(names, q0, 2.0)
    if reaction == "hold":
        assert verdict.action is SafetyAction.REJECTED and "cost_budget" in verdict.kinds
    elif reaction == "stop":
        assert verdict.action is SafetyAction.ESTOP and f.state is SafetyState.ESTOP
    else:
        far = q0.copy()
        far[2] += 0.04
        out = [f.filter(names, far, 2.0 + k * DT)[0] for k in range(1, 200)]
        v = np.diff(np.array(out)[:, 2]) / DT
        assert np.abs(v).max() <= 0.25 * PANDA.limits.velocity[2] + 1e-9
    for _ in range(200):  # come to rest
        f.hold()
    f.begin_episode(3.0)
    assert f.episode_cost == 0.0 and not f.cost.exceeded
    _, verdict = f.filter(names, f.last_command, 3.0 + DT)
    if reaction == "stop":
        assert verdict.action is SafetyAction.ESTOP  # an e-stop needs reset(), not a new episode
    else:
        assert verdict.action is SafetyAction.PASS and f.step_cost == 0.0


def test_float_noise_at_an_end_stop_is_no_intervention():
    """A gripper commanded "open" at its end stop plus interpolation noise: clipped silently."""
    f, q0 = make_filter()
    target = q0.copy()
    target[7] = f.limits.upper[7] + 1e-9
    cmd, verdict = f.filter(PANDA.joint_names, target, 1.0)
    assert verdict.action is SafetyAction.PASS and cmd[7] == f.limits.upper[7] and f.step_cost == 0.0
    target[7] = f.limits.upper[7] + 1e-3  # a real overshoot is still a (costly) position intervention
    _, verdict = f.filter(PANDA.joint_names, target, 1.0 + DT)
    assert "position" in verdict.kinds and f.step_cost == 1.0


def test_velocity_limiting_costs_nothing_by_default():
    f, q0 = make_filter()
    target = q0.copy()
    target[0] += 0.04
    f.filter(PANDA.joint_names, target, 1.0)
    assert f.step_cost == 0.0


# --------------------------------------------------------------------------------- rate, re-sync


def test_commands_faster_than_rate_are_thinned_newest_first():
    f, q0 = make_filter()
    names = PANDA.joint_names
    out_times = []
    now = 1.0
    for k in range(400):  # 4x the rate: one command every dt / 4 (a slow ramp: reachable each period)
        now += DT / 4
        target = q0 + 1e-6 * k * np.r_[np.ones(7), 0.0]
        cmd, verdict = f.filter(names, target, now, now_s=now)
        if cmd is None:
            assert verdict.action is SafetyAction.DEFERRED
        else:
            np.testing.assert_array_equal(cmd, target)
            out_times.append(now)
        if k % 4 == 3:  # the node's timer at 1 / dt releases the newest deferred command
            res = f.tick(now)
            if res is not None:
                np.testing.assert_array_equal(res[0], target)  # newest wins
                out_times.append(now)
    w = f.rate_window
    assert len(out_times) <= (400 / 4) * (w + 1) / w + w + 1
    t = np.asarray(out_times)
    # At most w + 1 releases in any interval of w periods.
    assert np.all(t[w + 1:] - t[: -(w + 1)] >= w * DT - 1e-9)


def test_jittery_stream_at_the_rate_is_never_deferred():
    f, q0 = make_filter()
    rng = np.random.default_rng(1)
    for k in range(500):  # arrivals k dt + e, |e| < dt / 2
        now = 1.0 + DT * (k + rng.uniform(-0.49, 0.49))
        _, verdict = f.filter(PANDA.joint_names, q0 + 1e-6 * k * ARM, now, now_s=now)
        assert verdict.action is SafetyAction.PASS


def test_measured_jump_resyncs_without_estop_or_drag_back():
    f, q0 = make_filter()
    names = PANDA.joint_names
    away = q0.copy()
    away[[0, 3]] += [0.8, -0.4]
    for k in range(800):  # move away from home (as an episode would)
        f.filter(names, away, 1.0 + k * DT)
    np.testing.assert_allclose(f.last_command, away)
    # The sim resets to home: the measured state jumps.
    verdict = f.observe_joint_state(q0, 5.0)
    assert verdict is not None and "resync" in verdict.kinds and f.state is SafetyState.HOLDING
    np.testing.assert_array_equal(f.last_command, q0)
    cmd, _ = f.tick(5.0)
    np.testing.assert_array_equal(cmd, q0)  # holds home, at rest
    # A stale source still sending the old position is refused, not followed back.
    cmd, verdict = f.filter(names, away, 5.01)
    assert verdict.action is SafetyAction.REJECTED and "resync" in verdict.kinds
    np.testing.assert_array_equal(cmd, q0)
    # A re-synced source near home is followed.
    cmd, verdict = f.filter(names, q0 + 1e-5 * ARM, 5.02)
    assert verdict.action is SafetyAction.PASS
    # Small jumps re-sync only right after an episode start, and only as a measured teleport.
    here = f.last_command
    near = here + 0.1 * ARM
    assert f.observe_joint_state(near, 6.0) is None  # 0.1 < resync_tolerance 0.5
    f.observe_joint_state(here, 6.05)
    f.begin_episode(6.1)
    lag = here + 0.04 * ARM  # a tracking lag growing smoothly: no re-sync
    assert f.observe_joint_state(here + 0.02 * ARM, 6.15) is None and f.observe_joint_state(lag, 6.2) is None
    assert f.observe_joint_state(here + 0.08 * ARM, 6.3) is None  # 0.04 step < 0.05: still a lag
    assert f.observe_joint_state(near + 0.1 * ARM, 6.4) is not None  # a 0.12 teleport
    np.testing.assert_array_equal(f.last_command, near + 0.1 * ARM)


def test_resync_during_estop_keeps_the_latch():
    f, q0 = make_filter()
    f.estop("test")
    moved = q0 + 0.6
    f.observe_joint_state(np.clip(moved, f.limits.lower, f.limits.upper), 2.0)
    assert f.state is SafetyState.ESTOP
    cmd, verdict = f.tick(2.0)
    assert verdict.action is SafetyAction.ESTOP
    np.testing.assert_array_equal(cmd, np.clip(moved, f.limits.lower, f.limits.upper))


def test_fuzz_with_cartesian_constraints_has_no_violations():
    """The bench's adversarial fuzz (NaN, 1e6 jumps, wrong names, stale stamps, e-stop/reset, far
    targets) with the robot config's Cartesian constraints: Cartesian braking happens and no
    output breaks a joint limit or penetrates a constraint."""
    from vla_mpc.bench.safety import _fuzz

    res = _fuzz("panda", 4000, seed=2, cartesian=True)
    assert res["fuzz_cartesian_interventions"].get("cartesian", 0) > 20
    assert res["fuzz_cartesian_violations"] == 0 and res["fuzz_cartesian_penetrations"] == 0
