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
    assert f.filter(PANDA.joint_names, q0, 2.0)[1].action is SafetyAction.PASS
    q1 = q0.copy()
    q1[0] += 1e-4
    assert f.filter(PANDA.joint_names, q1, 2.0)[1].action is SafetyAction.PASS
    assert f.filter(PANDA.joint_names, q1, 2.0)[1].action is SafetyAction.REJECTED  # exact duplicate


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
    code = "import sys; sys.modules['rclpy'] = None; import vla_mpc.core.safety as s; print(s.SafetyFilter.__name__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "SafetyFilter"
