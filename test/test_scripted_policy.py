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
    TaskId,
    decode_latent,
    parse_instruction,
)
from vla_mpc.sim import tasks

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


def test_parse_instruction_is_the_task_suites():
    assert parse_instruction is tasks.parse_instruction  # one parser for the sim and the expert
    names = list(OBJECTS)
    a, b = parse_instruction("Pick up the red cube.", names), parse_instruction("grasp the RED block", names)
    assert (a.kind, a.object_name) == (b.kind, b.object_name) == ("pick", "red_cube") and a.task_id == b.task_id
    spec = parse_instruction("put the green cube on the red cube", names)
    assert (spec.kind, spec.object_name, spec.destination) == ("pick_place", "green_cube", "red_cube")
    assert parse_instruction("pick up the red cube", names).task_id != spec.task_id
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
    assert task.valid and task.task is TaskId.PICK
    np.testing.assert_allclose(task.object_position, OBJECTS["red_cube"], atol=1e-6)
    place = decode_latent(s2.infer({}, "put the red cube on the blue cube", OBJECTS))
    np.testing.assert_allclose(place.goal_position, OBJECTS["blue_cube"] + [0, 0, s2.place_clearance], atol=1e-6)
    bad = s2.infer({}, "pick up the purple cube", OBJECTS)
    assert not decode_latent(bad).valid and "purple" in s2.status
    assert not decode_latent(s2.infer({}, "pick up the red cube", {})).valid
    # push: the goal is push_travel along the direction from where the cube was first seen
    push = decode_latent(s2.infer({}, "push the green cube to the left", OBJECTS))
    assert push.task is TaskId.PUSH
    np.testing.assert_allclose(push.goal_position, OBJECTS["green_cube"] + [0, s2.push_travel, 0], atol=1e-6)
    moved = dict(OBJECTS, green_cube=OBJECTS["green_cube"] + [0.0, 0.05, 0.0])
    again = decode_latent(s2.infer({}, "push the green cube to the left", moved))
    np.testing.assert_allclose(again.goal_position, push.goal_position, atol=1e-6)
    np.testing.assert_allclose(again.object_position, moved["green_cube"], atol=1e-6)  # the cube now
    s2.reset()
    fresh = decode_latent(s2.infer({}, "push the green cube to the left", moved))
    np.testing.assert_allclose(fresh.object_position, moved["green_cube"], atol=1e-6)
    # a pad destination: released lower than on a cube (a pad is 2 mm thick)
    pad = dict(OBJECTS, green_pad=np.array([0.45, 0.2, 0.001]))
    place = decode_latent(s2.infer({}, "put the red cube on the green pad", pad))
    np.testing.assert_allclose(place.goal_position, pad["green_pad"] + [0, 0, s2.pad_clearance], atol=1e-6)


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


def test_push_strokes_straight_through_the_cube_at_low_height(system1):
    log, q = _run(system1, "push the red cube forward", calls=120)
    assert system1.phase is Phase.DONE, system1.status
    phases = [ph for ph, _ in log]
    assert phases.index(Phase.PREGRASP) < phases.index(Phase.DESCEND) < phases.index(Phase.PUSH) < phases.index(Phase.RETREAT)
    cube, c = OBJECTS["red_cube"], system1.config
    g = system1.spec.gripper_indices
    stroke = np.array([system1.tcp_position(row) for ph, ch in log if ph is Phase.PUSH for row in ch])
    # the stroke stays on the push line (y of the cube) at push height, and moves forward (+x)
    assert np.abs(stroke[:, 1] - cube[1]).max() < 0.01
    assert np.abs(stroke[:, 2] - (cube[2] + c.push_height)).max() < 0.01
    assert stroke[:, 0].min() < cube[0] - c.push_standoff + 0.01
    assert stroke[:, 0].max() > cube[0] + ScriptedSystem2().push_travel - c.pusher_offset - 0.01
    for ph, ch in log:  # fingers closed (a solid pusher) once the approach has closed them
        if ph in (Phase.DESCEND, Phase.PUSH):
            np.testing.assert_allclose(ch[:, g], np.tile(system1.spec.gripper.closed, (len(ch), 1)), atol=1e-9)
    assert system1.tcp_position(q)[2] > cube[2] + c.pregrasp_height - 0.02  # retreated upwards


def test_noise_is_smooth_reproducible_and_off_by_default():
    cfg = ScriptedSystem1Config(noise_std=0.05, noise_seed=7)
    clean = ScriptedSystem1.from_robot("panda")
    a, b = ScriptedSystem1.from_robot("panda", cfg), ScriptedSystem1.from_robot("panda", cfg)
    other = ScriptedSystem1.from_robot("panda", ScriptedSystem1Config(noise_std=0.05, noise_seed=8))
    z = ScriptedSystem2().infer({}, "pick up the red cube", OBJECTS)
    q = np.array(clean.spec.home, dtype=float)
    ca, cb, cc, co = (s.infer(z, q) for s in (a, b, clean, other))
    np.testing.assert_array_equal(ca, cb)  # same seed, same chunk
    assert np.abs(ca - cc).max() > 1e-3 and np.abs(ca - co).max() > 1e-3
    np.testing.assert_allclose(ca[0], q)  # still starts at the current position: no jump
    vmax = np.asarray(clean.spec.limits.velocity)
    assert np.all(np.abs(np.diff(ca[:, :7], axis=0)) / cfg.dt <= cfg.speed_scale * vmax[:7] * (1 + 1e-9))
    with pytest.raises(ValueError, match="noise_std"):
        ScriptedSystem1Config(noise_std=-1.0)


def test_random_actions_wander_near_the_object_inside_the_limits():
    s1 = ScriptedSystem1.from_robot("panda", ScriptedSystem1Config(random_actions=True, noise_seed=3))
    z = ScriptedSystem2().infer({}, "pick up the red cube", OBJECTS)
    q = np.array(s1.spec.home, dtype=float)
    targets, prefix = [], None
    for _ in range(80):
        chunk = s1.infer(z, q, prefix)
        assert np.all(chunk >= s1.spec.limits.lower - 1e-9) and np.all(chunk <= s1.spec.limits.upper + 1e-9)
        q, prefix = chunk[EXECUTE_STEPS].copy(), chunk[EXECUTE_STEPS:EXECUTE_STEPS + 2]
        targets.append(s1.tcp_position(q))
    assert s1.phase is Phase.WANDER
    t = np.array(targets)
    cube = OBJECTS["red_cube"]
    assert np.ptp(t[:, 0]) > 0.1 and np.ptp(t[:, 1]) > 0.1  # it wanders ...
    # ... near the object (targets within 0.2 m; joint-space moves between them bulge a little)
    assert np.all(np.abs(t[20:, :2] - cube[:2]) < 0.3) and np.all(t[20:, 2] > cube[2] - 0.03)


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


def test_chunk_from_state_continues_the_measured_motion_not_the_committed_one():
    """A DAgger label: the same goal as ``infer``, planned from the measured positions and
    velocities; a fast committed prefix moves ``infer``'s chunk but not the label, the measured
    velocity starts it, and the phase does not move."""
    s1 = ScriptedSystem1.from_robot("panda")
    s2 = ScriptedSystem2()
    q = np.asarray(s1.spec.home, dtype=np.float64)
    assert np.array_equal(s1.chunk_from_state(q), np.repeat(q[None], s1.chunk_size, axis=0))  # no goal yet: hold
    z = s2.infer({}, "reach the red cube", OBJECTS)
    push = np.zeros_like(q)
    push[0] = 0.03  # 0.6 rad/s on joint 1, committed by someone else
    prefix = np.stack([q, q + push])
    executed = s1.infer(z, q, prefix)
    phase = s1.phase
    label = s1.chunk_from_state(q)  # at rest
    calm = ScriptedSystem1.from_robot("panda")
    reference = calm.infer(z, q)  # the expert from rest, on its own
    np.testing.assert_allclose(label, reference, atol=1e-9)
    np.testing.assert_array_equal(label[0], q)
    assert np.abs(executed[:, 0] - label[:, 0]).max() > 0.05  # infer carried the prefix's velocity
    # moving: the label leaves q at the measured velocity (the joints moving towards the goal)
    goal_dir = np.sign(label[-1] - q)
    v = 0.2 * goal_dir
    v[s1.spec.gripper_indices] = 0.0
    moving = s1.chunk_from_state(q, v)
    np.testing.assert_array_equal(moving[0], q)
    arm = np.asarray([i for i in range(len(q)) if i not in set(s1.spec.gripper_indices)])
    np.testing.assert_allclose((moving[1] - moving[0])[arm], v[arm] * s1.dt, atol=0.2 * 0.2 * s1.dt)
    assert np.all(np.abs(moving[4] - q)[arm] >= np.abs(label[4] - q)[arm] - 1e-9)  # ahead of the start from rest
    assert s1.phase is phase
    # from the command stream's target (the learner's committed one), with the measured velocity
    lead = q + 0.5 * push
    led = s1.chunk_from_state(q, v, start=lead)
    np.testing.assert_array_equal(led[0], lead)
    np.testing.assert_allclose((led[1] - led[0])[arm], v[arm] * s1.dt, atol=0.2 * 0.2 * s1.dt)
    with pytest.raises(ValueError, match="start"):
        s1.chunk_from_state(q, v, start=q[:3])
    with pytest.raises(ValueError, match="proprio"):
        s1.chunk_from_state(q[:3])
    with pytest.raises(ValueError, match="velocity"):
        s1.chunk_from_state(q, np.full(len(q), np.nan))


def _q_at(s1: ScriptedSystem1, tcp: np.ndarray, gripper: np.ndarray) -> np.ndarray:
    """Joint positions with the TCP at ``tcp`` (home orientation) and the given finger positions."""
    home = np.asarray(s1.spec.home, dtype=np.float64)
    sol, converged, _ = s1.model.ik(tcp, np.asarray(s1.model.fk(home))[:3, :3], q0=home)
    assert converged, tcp
    q = np.asarray(sol, dtype=np.float64).copy()
    q[s1.spec.gripper_indices] = gripper
    return q


def test_state_phases_label_the_learners_states():
    """``phases="state"``: the phase is read from where the TCP is, so a state the sequence
    expert never passes through (2-4 cm off its waypoints) gets the "go on" label, not "go back"."""
    with pytest.raises(ValueError, match="phases"):
        ScriptedSystem1Config(phases="random")
    cfg = ScriptedSystem1Config(phases="state")
    closed, opened = np.array([0.0]), np.array([0.04])
    cube, c = OBJECTS["red_cube"], cfg
    z_push = ScriptedSystem2().infer({}, "push the red cube forward", OBJECTS)  # +x
    stroke_z = cube[2] + c.push_height
    start = np.array([cube[0] - c.push_standoff, cube[1], stroke_z])

    # Low on the push line 4 cm behind the stroke's start (where the learner hovered).
    q = _q_at(ScriptedSystem1.from_robot("panda"), start - [0.04, 0.0, 0.0], closed)
    state = ScriptedSystem1.from_robot("panda", cfg)
    chunk = state.infer(z_push, q)
    assert state.phase is Phase.PUSH
    tcp0, tcp1 = state.tcp_position(q), state.tcp_position(chunk[-1])
    assert tcp1[0] - tcp0[0] > 0.02 and abs(tcp1[2] - tcp0[2]) < 0.01  # forward along the line, not up
    sequence = ScriptedSystem1.from_robot("panda")
    chunk = sequence.infer(z_push, q)
    assert sequence.phase is Phase.PREGRASP  # the demonstrations' expert sends it back up first
    assert sequence.tcp_position(chunk[-1])[2] - tcp0[2] > 0.03

    # 3 cm beside the line at the stroke's height: not aligned, so back over the start.
    state.reset()
    state.infer(z_push, _q_at(state, start + [0.0, 0.03, 0.0], closed))
    assert state.phase is Phase.PREGRASP
    # 2.5 cm off the start's vertical halfway down: descend (and correct on the way).
    state.reset()
    state.infer(z_push, _q_at(state, start + [0.0, 0.025, 0.05], closed))
    assert state.phase is Phase.DESCEND

    z_pick = ScriptedSystem2().infer({}, "pick up the red cube", OBJECTS)
    grasp = cube + [0.0, 0.0, c.grasp_height]
    for tcp, grip, phase in (
        (grasp + [0.025, 0.0, 0.05], opened, Phase.DESCEND),  # off the vertical halfway down
        (grasp + [0.025, 0.0, c.pregrasp_height], opened, Phase.PREGRASP),  # as far off at the top
        (grasp + [0.0, 0.0, 0.05], closed, Phase.PREGRASP),  # fingers closed: open them above first
        (grasp + [0.005, 0.0, 0.0], opened, Phase.CLOSE),  # at the grasp point
    ):
        state = ScriptedSystem1.from_robot("panda", cfg)
        state.infer(z_pick, _q_at(state, tcp, grip))
        assert state.phase is phase, (tcp - grasp, grip, state.phase)


def test_state_phases_finish_a_push_from_where_the_learner_left_it():
    """Closed loop from the learner's hovering state: the state expert strokes and retreats."""
    s1 = ScriptedSystem1.from_robot("panda", ScriptedSystem1Config(phases="state"))
    z = ScriptedSystem2().infer({}, "push the red cube forward", OBJECTS)
    cube, c = OBJECTS["red_cube"], s1.config
    q = _q_at(s1, np.array([cube[0] - c.push_standoff - 0.04, cube[1] + 0.01, cube[2] + 0.01]), np.array([0.0]))
    phases = []
    for _ in range(120):
        chunk = s1.infer(z, q)
        phases.append(s1.phase)
        q = chunk[EXECUTE_STEPS].copy()
        if s1.phase is Phase.DONE:
            break
    assert phases[0] is Phase.PUSH and Phase.PREGRASP not in phases, phases
    assert phases[-1] is Phase.DONE
    end = cube[0] + ScriptedSystem2().push_travel - c.pusher_offset
    assert s1.tcp_position(q)[0] == pytest.approx(end, abs=0.015)


def test_push_stroke_reaims_from_where_the_cube_has_gone():
    """Mid-stroke, the cube slips sideways: the stroke turns to run from the cube now to the goal
    (the latent carries the cube's position now), so the pusher comes back behind its centre."""
    s1 = ScriptedSystem1.from_robot("panda", ScriptedSystem1Config(phases="state"))
    s2 = ScriptedSystem2()
    instruction, cube, c = "push the red cube forward", OBJECTS["red_cube"], s1.config
    goal = decode_latent(s2.infer({}, instruction, OBJECTS)).goal_position
    np.testing.assert_allclose(goal, cube + [s2.push_travel, 0.0, 0.0], atol=1e-6)
    closed = np.asarray(s1.spec.gripper.closed, dtype=np.float64)
    tcp = cube + [0.04 - c.pusher_offset, 0.0, c.push_height]  # pushed 4 cm along y = cube's y
    q = _q_at(s1, tcp, closed)
    for slip, phase in ((0.008, Phase.PUSH), (0.04, Phase.PREGRASP)):
        moved = cube + [0.04, slip, 0.0]
        task = decode_latent(s2.infer({}, instruction, dict(OBJECTS, red_cube=moved)))
        np.testing.assert_allclose(task.object_position, moved, atol=1e-6)
        np.testing.assert_allclose(task.goal_position, goal, atol=1e-6)
        s1.reset()
        s1.infer(s2.infer({}, instruction, dict(OBJECTS, red_cube=moved)), q)
        assert s1.phase is phase, (slip, s1.phase)
        u = (goal - moved)[:2] / np.linalg.norm((goal - moved)[:2])
        target, _ = s1.phase_target(task)
        if phase is Phase.PUSH:  # the carrot lies on the line from the cube now to the goal
            rel = (target - moved)[:2]
            assert abs(rel[0] * u[1] - rel[1] * u[0]) < 1e-6
            assert rel @ u > -c.pusher_offset  # ahead of the pusher's contact point
            assert abs(target[1] - tcp[1]) > 0.001  # it moves the pusher sideways, back behind the cube
        else:  # over the new stroke's start, behind the cube seen from the goal
            np.testing.assert_allclose(target[:2], moved[:2] - c.push_standoff * u, atol=1e-9)
            assert target[2] == pytest.approx(moved[2] + c.push_height + c.pregrasp_height)
