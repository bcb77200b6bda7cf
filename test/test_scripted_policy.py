"""Scripted (privileged) System 2 / System 1, ROS-free, closed loop on a perfectly tracking robot."""

from __future__ import annotations

import numpy as np
import pytest

from vla_mpc.models.scripted import (
    LATENT_FIELDS,
    Phase,
    ScriptedSystem1,
    ScriptedSystem1Config,
    ScriptedSystem2,
    System1Backend,
    System2Backend,
    Task,
    decode_latent,
    parse_instruction,
)

OBJECTS = {
    "red_cube": np.array([0.50, 0.10, 0.025]),  # base_link [m]
    "blue_cube": np.array([0.45, -0.20, 0.025]),
    "green_cube": np.array([0.60, 0.00, 0.025]),
}
EXECUTE_STEPS = 4  # chunk steps executed before the next inference (0.2 s at dt = 0.05 s)


@pytest.fixture(scope="module")
def system1() -> ScriptedSystem1:
    return ScriptedSystem1.from_robot("panda")


def _run(system1: ScriptedSystem1, instruction: str, calls: int = 60):
    """Closed loop: System 2 latent, System 1 chunk, execute EXECUTE_STEPS steps exactly.

    Returns the list of (phase when the chunk was made, chunk) and the final q.
    """
    system1.reset()
    z = ScriptedSystem2().infer({}, instruction, OBJECTS)
    q = np.array(system1.spec.home, dtype=float)
    prefix = None
    log = []
    for _ in range(calls):
        chunk = system1.infer(z, q, prefix)
        log.append((system1.phase, chunk))
        q = chunk[EXECUTE_STEPS].copy()
        prefix = chunk[EXECUTE_STEPS:EXECUTE_STEPS + 2]
        if system1.phase is Phase.DONE:
            break
    return log, q


def test_parse_instruction():
    names = list(OBJECTS)
    assert parse_instruction("Pick up the red cube.", names) == parse_instruction("grasp the RED block", names)
    spec = parse_instruction("pick up the red cube", names)
    assert (spec.task, spec.target, spec.destination) == (Task.PICK, "red_cube", None)
    spec = parse_instruction("reach the blue cube", names)
    assert (spec.task, spec.target) == (Task.REACH, "blue_cube")
    spec = parse_instruction("put the green cube on the red cube", names)
    assert (spec.task, spec.target, spec.destination) == (Task.PLACE, "green_cube", "red_cube")
    assert parse_instruction("pick up the red cube", names).instr_id != spec.instr_id
    with pytest.raises(ValueError, match="blue_cube"):
        parse_instruction("pick up the purple cube", names)
    with pytest.raises(ValueError, match="no verb"):
        parse_instruction("the red cube", names)


def test_system2_latent():
    s2 = ScriptedSystem2()
    assert isinstance(s2, System2Backend)
    z = s2.infer({}, "pick up the red cube", OBJECTS)
    assert z.dtype == np.float32 and z.shape == (1, len(LATENT_FIELDS)) == s2.latent_shape
    task = decode_latent(z)
    assert task.valid and task.task is Task.PICK
    np.testing.assert_allclose(task.object_position, OBJECTS["red_cube"], atol=1e-6)
    place = decode_latent(s2.infer({}, "put the red cube on the blue cube", OBJECTS))
    np.testing.assert_allclose(place.goal_position, OBJECTS["blue_cube"] + [0, 0, s2.place_clearance], atol=1e-6)
    bad = s2.infer({}, "pick up the purple cube", OBJECTS)
    assert not decode_latent(bad).valid and "purple" in s2.status
    assert not decode_latent(s2.infer({}, "pick up the red cube", {})).valid


def test_pick_reaches_pregrasp_and_grasp_poses_within_1cm(system1):
    assert isinstance(system1, System1Backend)
    log, q = _run(system1, "pick up the red cube")
    cube = OBJECTS["red_cube"]
    c = system1.config

    def best(phase: Phase, target: np.ndarray) -> float:
        finals = [system1.tcp_position(ch[-1]) for ph, ch in log if ph is phase]
        assert finals, f"no chunk in phase {phase}"
        return min(np.linalg.norm(p - target) for p in finals)

    assert best(Phase.PREGRASP, cube + [0, 0, c.pregrasp_height]) < 0.01
    assert best(Phase.DESCEND, cube + [0, 0, c.grasp_height]) < 0.01
    assert best(Phase.LIFT, cube + [0, 0, c.grasp_height + c.lift_height]) < 0.01
    assert system1.phase is Phase.DONE
    phases = [ph for ph, _ in log]
    assert phases.index(Phase.PREGRASP) < phases.index(Phase.DESCEND) < phases.index(Phase.CLOSE) < phases.index(Phase.LIFT)
    # Gripper: open through DESCEND, commanded closed while lifting.
    g = system1.spec.gripper_indices
    for ph, ch in log:
        if ph in (Phase.PREGRASP, Phase.DESCEND):
            np.testing.assert_allclose(ch[:, g], np.tile(system1.spec.gripper.open, (len(ch), 1)), atol=1e-9)
    np.testing.assert_allclose(q[g], system1.spec.gripper.closed, atol=1e-9)
    # Top-down grasp: the TCP z axis points down at the grasp.
    grasp_chunk = [ch for ph, ch in log if ph is Phase.CLOSE][0]
    assert system1.model.fk(grasp_chunk[-1])[:3, 2] @ np.array([0, 0, -1.0]) > 0.999


def test_chunks_respect_velocity_limits_and_start_at_the_prefix(system1):
    log, _ = _run(system1, "put the red cube on the blue cube", calls=120)
    assert system1.phase is Phase.DONE, system1.status
    vmax = np.asarray(system1.spec.limits.velocity)
    scale = np.full(vmax.shape, system1.config.speed_scale)
    scale[system1.spec.gripper_indices] = system1.config.gripper_speed_scale
    prev = None
    for _, chunk in log:
        assert chunk.shape == (system1.chunk_size, system1.action_dim) and chunk.dtype == np.float64
        vel = np.abs(np.diff(chunk, axis=0)) / system1.dt
        assert np.all(vel <= scale * vmax * (1 + 1e-9)), (vel / vmax).max(axis=0)
        if prev is not None:  # chunk k starts where chunk k-1 was after EXECUTE_STEPS steps
            np.testing.assert_allclose(chunk[0], prev[EXECUTE_STEPS], atol=1e-12)
        prev = chunk
    # Placed: the TCP ended above the blue cube.
    final = system1.tcp_position(log[-1][1][-1])
    goal = OBJECTS["blue_cube"] + [0, 0, ScriptedSystem2().place_clearance + system1.config.pregrasp_height]
    assert np.linalg.norm(final - goal) < 0.01


def test_reach_stops_above_the_object_with_the_gripper_open(system1):
    log, q = _run(system1, "reach the green cube")
    assert system1.phase is Phase.DONE
    assert Phase.CLOSE not in [ph for ph, _ in log]
    target = OBJECTS["green_cube"] + [0, 0, system1.config.reach_height]
    assert np.linalg.norm(system1.tcp_position(q) - target) < 0.01
    np.testing.assert_allclose(q[system1.spec.gripper_indices], system1.spec.gripper.open)


def test_invalid_latent_holds(system1):
    system1.reset()
    q = np.array(system1.spec.home, dtype=float) + 0.01
    chunk = system1.infer(np.zeros((1, len(LATENT_FIELDS)), np.float32), q)
    np.testing.assert_array_equal(chunk, np.tile(q, (system1.chunk_size, 1)))
    with pytest.raises(ValueError, match="proprio"):
        system1.infer(np.zeros((1, len(LATENT_FIELDS)), np.float32), q[:3])
    with pytest.raises(ValueError, match="scripted latent"):
        decode_latent(np.zeros((2, 3), np.float32))


def test_config_validation():
    with pytest.raises(ValueError, match="speed_scale"):
        ScriptedSystem1Config(speed_scale=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        ScriptedSystem1Config(chunk_size=1)
    with pytest.raises(ValueError, match="pregrasp_height"):
        ScriptedSystem1Config(pregrasp_height=-0.1)
