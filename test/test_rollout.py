"""ROS-free expert closed loop in the sim: every Franka task solved, goal images, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mujoco")
pytest.importorskip("robosuite")

from vla_mpc.sim.rollout import (  # noqa: E402 - after the importorskip guards
    RolloutConfig,
    goal_image,
    main,
    make_expert,
    run_episode,
)
from vla_mpc.sim.sim_robot import SimRobot  # noqa: E402
from vla_mpc.sim.tasks import EVAL_SEED_OFFSET, TASK_KINDS, EpisodeSpec, sample_episode  # noqa: E402


@pytest.fixture(scope="module")
def panda():
    spec, s2, s1 = make_expert("panda")
    sim = SimRobot(spec, cameras=("front",), image_size=(64, 64))
    yield sim, s2, s1
    sim.close()


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_expert_solves_each_task(panda, kind: str) -> None:
    sim, s2, s1 = panda
    episode = sample_episode("panda", kind, EVAL_SEED_OFFSET + 7)
    res = run_episode(sim, episode, s2, s1)
    assert res.success, (res.instruction, res.final_phase, res.status)
    assert 0.5 < res.time_to_success_s <= res.duration_s + 1e-9
    assert sim.task_success(episode.task)  # the sim agrees at the end of the run
    if kind == "push":  # the cube really moved along the asked direction, from where it started
        task = episode.task
        moved = sim.object_poses()[task.object_name][0] - task.origin
        assert moved @ task.direction >= task.push_distance


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_state_phase_expert_solves_each_task(panda, kind: str) -> None:
    """DAgger's labelling expert (phases read from the state) is itself a complete expert."""
    from vla_mpc.core.robot_model import RobotModel
    from vla_mpc.models.scripted import ScriptedSystem1, ScriptedSystem1Config

    sim, s2, _ = panda
    s1 = ScriptedSystem1(sim.spec, RobotModel(sim.spec), ScriptedSystem1Config(phases="state"))
    episode = sample_episode("panda", kind, EVAL_SEED_OFFSET + 11)
    res = run_episode(sim, episode, s2, s1)
    assert res.success, (res.instruction, res.final_phase, res.status)


def test_unknown_object_fails_within_the_time_limit(panda) -> None:
    sim, s2, s1 = panda
    ep = sample_episode("panda", "reach", 3)
    cube = ep.task.object_name
    # the instruction asks for the right cube but the expert is told about another colour
    bad = EpisodeSpec(ep.robot, ep.kind, ep.seed, ep.instruction.replace(cube.split("_")[0], "cyan"), ep.objects)
    with pytest.raises(ValueError, match="cyan"):
        run_episode(sim, bad, s2, s1, RolloutConfig(timeout_s=1.0))
    res = run_episode(sim, ep, s2, s1, RolloutConfig(timeout_s=0.3))  # too short to get there
    assert not res.success and res.time_to_success_s is None
    assert res.duration_s == pytest.approx(0.3, abs=0.011)


def test_frames_and_goal_image(panda) -> None:
    sim, s2, s1 = panda
    ep = sample_episode("panda", "pick", 5)
    res = run_episode(sim, ep, s2, s1, RolloutConfig(stop_on_success=False), render_every_s=1.0)
    assert res.success and res.final_phase == "done"
    assert res.frames.shape[1:] == (64, 64, 3) and res.frames.dtype == np.uint8
    assert len(res.frames) == len(res.frame_times) >= res.duration_s // 1.0
    goal = goal_image("panda", "pick", 5, 64, sim=sim)
    np.testing.assert_array_equal(goal, sim.render("front"))
    assert goal.shape == (64, 64, 3)
    # the goal (cube lifted) differs from the first frame (cube on the table)
    assert np.abs(goal.astype(int) - res.frames[0].astype(int)).mean() > 1.0
    np.testing.assert_array_equal(goal, res.frames[-1])  # deterministic: same as the demonstration's end


def test_cli_prints_expert_sr(capsys) -> None:
    assert main(["--robot", "panda", "--kind", "reach", "--episodes", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["robot"] == "panda" and out["seed_start"] == EVAL_SEED_OFFSET
    assert out["expert_sr"] == {"reach": 1.0} and out["failed_seeds"] == {"reach": []}
    with pytest.raises(SystemExit):
        main(["--kind", "fly"])


@pytest.mark.parametrize("robot, kind", [("ur5e", "push"), ("gr1", "reach")])
def test_expert_on_the_other_robots(robot: str, kind: str) -> None:
    """UR5e pushes with its fingers turned to the push direction (sim.expert.push_align); GR1's
    1.57 rad hands settle within the span-relative gripper tolerance."""
    spec, s2, s1 = make_expert(robot)
    sim = SimRobot(spec, cameras=("front",), image_size=(32, 32))
    try:
        for seed in (EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 3):  # ur5e: seed 100000 pushes sideways
            res = run_episode(sim, sample_episode(robot, kind, seed), s2, s1)
            assert res.success, (robot, seed, res.instruction, res.status)
    finally:
        sim.close()


def test_system2_gets_rendered_frames_and_system1_velocities(panda) -> None:
    """The loop a learned backend needs: camera frames for System 2, velocities for System 1."""
    sim, s2, s1 = panda
    seen_images, seen_velocity = [], []

    class FramesSystem2:
        def reset(self) -> None:
            s2.reset()

        def infer(self, images, instruction, objects=None):
            seen_images.append({k: (v.shape, v.dtype) for k, v in images.items()})
            return s2.infer(images, instruction, objects)

    class VelocitySystem1:
        chunk_size, dt = s1.chunk_size, s1.dt

        def reset(self) -> None:
            s1.reset()

        def infer(self, z, proprio, prefix=None, velocity=None):
            seen_velocity.append(np.array(velocity))
            return s1.infer(z, proprio, prefix, velocity=velocity)

    res = run_episode(sim, sample_episode("panda", "reach", EVAL_SEED_OFFSET + 3), FramesSystem2(),
                      VelocitySystem1(), system2_cameras=("front",))
    assert res.success
    assert seen_images and all(s == {"front": ((64, 64, 3), np.uint8)} for s in seen_images)
    assert len(seen_images) == int(res.duration_s * 2) + 1  # System 2 at 2 Hz from t = 0
    assert max(np.abs(v).max() for v in seen_velocity) > 0.05  # the arm's measured motion, not zeros


class _JumpySystem1:
    """The expert's chunks with every other step of panda_joint1 moved 0.1 rad: a velocity reversal
    every 0.05 s, far past the acceleration limits. Records the prefixes it is handed."""

    def __init__(self, s1) -> None:
        self.s1, self.chunk_size, self.dt = s1, s1.chunk_size, s1.dt
        self.prefix_lengths: list[int] = []

    def reset(self) -> None:
        self.s1.reset()

    def infer(self, z, proprio, prefix=None, velocity=None):
        self.prefix_lengths.append(0 if prefix is None else len(prefix))
        chunk = self.s1.infer(z, proprio, prefix, velocity=velocity).copy()
        chunk[1::2, 0] += 0.1
        return chunk


def _sent_targets(sim, episode, s2, s1, config):
    """Run one episode and return the (T, n) targets the loop sent to the sim (after its reset)."""
    sent = []
    original, original_reset = sim.set_position_target, sim.reset
    sim.set_position_target = lambda q: (sent.append(np.array(q, dtype=float)), original(q))[1]
    sim.reset = lambda **kw: (original_reset(**kw), sent.clear())[0]
    try:
        res = run_episode(sim, episode, s2, s1, config)
    finally:
        sim.set_position_target, sim.reset = original, original_reset
    return res, np.array(sent)


def test_safety_filter_in_the_loop_limits_what_reaches_the_sim(panda) -> None:
    from vla_mpc.core.safety import SafetyLimits

    sim, s2, s1 = panda
    jumpy = _JumpySystem1(s1)
    episode = sample_episode("panda", "reach", EVAL_SEED_OFFSET + 3)
    limits = SafetyLimits.from_spec(sim.spec)
    dt = 1.0 / RolloutConfig.control_rate_hz
    res_raw, raw = _sent_targets(sim, episode, s2, jumpy, RolloutConfig(timeout_s=2.0))
    jumpy = _JumpySystem1(s1)
    res, filtered = _sent_targets(sim, episode, s2, jumpy, RolloutConfig(timeout_s=2.0, safety_filter=True))
    assert res_raw.extra == {}  # no filter, no safety figures
    accel = lambda q: np.abs(np.diff(q[:, 0], 2)).max() / dt**2  # noqa: E731
    assert accel(raw) > 2.0 * limits.acceleration[0]  # the test's commands do violate the limit
    assert accel(filtered) <= limits.acceleration[0] * (1.0 + 1e-6)
    assert np.all(np.abs(np.diff(filtered, axis=0)) / dt <= limits.velocity * (1.0 + 1e-6))
    assert res.extra["safety_interventions"].get("acceleration", 0) > 0
    assert res.extra["cc"] == 0.0  # acceleration clamps are not a cost kind
    # Real-time chunking as in the policy node: after the first chunk, the prefix spans the rest
    # of the executing chunk (16 steps, a chunk every 0.1 s: 14-15 left), not just 2 steps.
    assert jumpy.prefix_lengths[0] == 0 and min(jumpy.prefix_lengths[1:]) >= 13


def test_expert_passes_the_safety_filter_without_cost(panda) -> None:
    sim, s2, s1 = panda
    res = run_episode(sim, sample_episode("panda", "pick_place", EVAL_SEED_OFFSET + 7), s2, s1,
                      RolloutConfig(safety_filter=True))
    assert res.success and res.extra["cc"] == 0.0, (res.status, res.extra)


def test_rollout_config_rejects_an_unknown_interpolation() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        RolloutConfig(interpolation="spline")


def test_learned_rollouts_use_the_learned_backends_chunk_rate() -> None:
    """The ROS-free loop picks the chunk rate and interpolation the policy node picks per backend."""
    from vla_mpc.core.chunking import execution_defaults
    from vla_mpc.sim.rollout import learned_config

    assert (RolloutConfig().chunk_rate_hz, RolloutConfig().interpolation) == execution_defaults("scripted")
    cfg = learned_config(safety_filter=True)
    assert (cfg.chunk_rate_hz, cfg.interpolation) == execution_defaults("learned") == (10.0 / 3.0, "pchip")
    assert cfg.safety_filter
    assert learned_config(chunk_rate_hz=5.0).chunk_rate_hz == 5.0
    with pytest.raises(ValueError, match="backend"):
        execution_defaults("oracle")


def test_cli_learned_checkpoint_errors(tmp_path, capsys) -> None:
    assert main(["--checkpoint", str(tmp_path / "missing"), "--kind", "reach", "--episodes", "1"]) == 2
    assert "missing" in capsys.readouterr().err


def test_privileged_readouts_hand_system1_the_true_keypoints(panda, tmp_path) -> None:
    """The ablation wrapper conditions System 1 on the sim's true keypoints and the episode's kind
    (a push's origin bound at the episode's start); a policy without keypoint input is refused."""
    from vla_mpc.sim.rollout import PrivilegedReadouts, learned_success_rates
    from vla_mpc.sim.tasks import bind_origin, task_keypoints

    sim, _, _ = panda
    calls = []

    class Recorder:
        chunk_size, action_dim, dt, status = 16, 8, 0.05, "ok"

        def reset(self):
            pass

        def infer(self, z, proprio, prefix=None, velocity=None, keypoints=None, task_kind=None):
            calls.append((keypoints, task_kind))
            return np.repeat(np.asarray(proprio)[None], 16, axis=0)

    wrapped = PrivilegedReadouts(Recorder(), sim)
    episode = sample_episode("panda", "push", 5)
    sim.reset(episode=episode)
    q = sim.joint_state()[1][:8]
    with pytest.raises(RuntimeError, match="start"):
        wrapped.infer(None, q)
    wrapped.start(episode)
    wrapped.infer(None, q)
    objects = sim.object_poses()
    expected = task_keypoints(bind_origin(episode.task, objects), objects)
    np.testing.assert_allclose(calls[-1][0], expected)
    assert calls[-1][1] == "push"
    # only one keypoint true: the other is System 2's reading of z, and the kind System 2's too
    read = np.array([[0.3, -0.2, 0.05], [0.6, 0.1, 0.02]], np.float32)

    class ReadingPolicy:
        def predict_keypoints(self, z):
            import torch

            assert z.shape == (1, 4, 16)
            return torch.from_numpy(read)[None]

    rec = Recorder()
    rec.policy = ReadingPolicy()
    for which, true_row in (("object", 0), ("goal", 1)):
        part = PrivilegedReadouts(rec, sim, which)
        part.start(episode)
        part.infer(np.zeros((4, 16), np.float32), q)
        np.testing.assert_allclose(calls[-1][0][true_row], expected[true_row], rtol=1e-6)
        np.testing.assert_allclose(calls[-1][0][1 - true_row], read[1 - true_row])
        assert calls[-1][1] is None
    with pytest.raises(ValueError, match="which"):
        PrivilegedReadouts(rec, sim, "both")

    import torch

    from vla_mpc.models.checkpoint import save_policy
    from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig

    a = sim.spec.n_joints
    cfg = PolicyConfig(robot="panda", joint_names=sim.spec.joint_names, image_size=32, vision_width=8, d_model=32,
                       vlm_heads=2, latent_tokens=4, latent_dim=16, expert_width=64, expert_blocks=1, cond_dim=32)
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_delta": {"mean": [0.0] * a, "std": [0.01] * a}}
    torch.manual_seed(0)
    save_policy(DualSystemPolicy(cfg, stats).eval(), tmp_path / "ckpt")  # latent-conditioned: no keypoints
    with pytest.raises(ValueError, match="keypoint_condition"):
        learned_success_rates(str(tmp_path / "ckpt"), "panda", ["reach"], 1, privileged_readouts=True)
    with pytest.raises(SystemExit):
        main(["--privileged-readouts", "--kind", "reach", "--episodes", "1"])  # no checkpoint to ablate


def test_learned_success_rates_seed_system1_noise(tmp_path, monkeypatch) -> None:
    """``system1_seed`` and ``rtc_prefix_steps`` reach the System 1 backends (their sampling noise,
    the prefix they inpaint) and the output."""
    import torch

    import vla_mpc.models.learned as learned
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.checkpoint import save_policy
    from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
    from vla_mpc.sim.rollout import RolloutConfig, learned_success_rates

    spec = load_robot_spec("panda")
    a = spec.n_joints
    cfg = PolicyConfig(robot="panda", joint_names=spec.joint_names, image_size=32, vision_width=8, d_model=32,
                       vlm_heads=2, latent_tokens=4, latent_dim=16, expert_width=64, expert_blocks=1, cond_dim=32)
    stats = {"proprio": {"mean": [0.0] * 2 * a, "std": [1.0] * 2 * a},
             "action_delta": {"mean": [0.0] * a, "std": [0.01] * a}}
    torch.manual_seed(0)
    save_policy(DualSystemPolicy(cfg, stats).eval(), tmp_path / "ckpt")
    built = []
    original = learned.load_learned_backends

    def spy(checkpoint, joint_names, need_system2=True, seed=0, prefix_steps=learned.RTC_PREFIX_STEPS,
            goal_readings=None):
        policy, s2, make_s1 = original(checkpoint, joint_names, need_system2, seed, prefix_steps, goal_readings)

        class _Text:  # keeps the test off the MiniLM model
            def encode_instruction(self, text, tokens):
                return np.zeros((tokens, 384), np.float32)

        def make():
            s1 = make_s1()
            built.append((s1.seed, s1.prefix_steps))
            return s1
        return policy, learned.LearnedSystem2(policy, _Text(), goal_readings=goal_readings), make

    monkeypatch.setattr(learned, "load_learned_backends", spy)
    out = learned_success_rates(str(tmp_path / "ckpt"), "panda", ["reach"], 1, config=RolloutConfig(timeout_s=0.3),
                                image_size=32, threads=1, system1_seed=7)
    assert built == [(7, learned.RTC_PREFIX_STEPS)] and out["system1_seed"] == 7 and out["sr"]["reach"] == 0.0
    assert out["rtc_prefix_steps"] == learned.RTC_PREFIX_STEPS
    out = learned_success_rates(str(tmp_path / "ckpt"), "panda", ["reach"], 1, config=RolloutConfig(timeout_s=0.3),
                                image_size=32, threads=1, rtc_prefix_steps=16)
    assert built[-1] == (0, 16) and out["rtc_prefix_steps"] == 16
