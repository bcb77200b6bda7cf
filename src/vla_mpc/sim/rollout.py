"""ROS-free closed loop in the sim (scripted expert or a learned checkpoint): success rates and goal images.

The loop is the policy node's, in simulated time and without threads: System 2 (the privileged
:class:`~vla_mpc.models.scripted.ScriptedSystem2`) every ``1 / latent_rate_hz``, System 1 every
``1 / chunk_rate_hz`` on the measured joint positions and the committed prefix, a
:class:`~vla_mpc.core.chunking.ChunkStreamer` sampled at ``control_rate_hz`` into
``SimRobot.set_position_target``, physics stepped in between. Inference takes zero sim time (the
chunk starts one control period ahead). The task predicate is checked at ``success_rate_hz``
(the sim node's object-pose rate); the camera renders only when frames are asked for.

``python -m vla_mpc.sim.rollout --robot panda --kind all --episodes 20`` prints one JSON line:
``{"robot", "episodes", "seed_start", "expert_sr": {kind: SR}, "time_to_success_s": {kind: mean
over successes}, "failed_seeds": {kind: [...]}, "wall_s"}``.

``--checkpoint DIR`` runs a learned policy instead (:mod:`vla_mpc.models.learned`; System 2 sees the
``front`` camera rendered at the sim node's 224 x 224 each time it runs) and reports ``sr`` in
place of ``expert_sr``. This is a quick offline check of a checkpoint: inference takes no sim time
here, so it is optimistic against the live graph, where ``python -m vla_mpc.eval`` is the measure.
The chunk rate and interpolation default to the backend's, as in the policy node
(``core.chunking.EXECUTION_DEFAULTS``). ``--safety-filter`` puts the safety monitor's filter
between the stream and the sim, as the graph does, and adds ``"cc"`` per kind.
No rclpy here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vla_mpc.core.chunking import INTERPOLATIONS, ChunkStreamer, ChunkStreamerConfig, execution_defaults
from vla_mpc.sim.tasks import EVAL_SEED_OFFSET, TASK_KINDS, EpisodeSpec, bind_origin, sample_episode, task_keypoints

#: ``PrivilegedReadouts(which=...)`` / ``--privileged-readouts``: which read-outs are the true ones.
PRIVILEGED_READOUTS = ("all", "object", "goal")
#: Default episode time limits [s of sim time] per task kind.
DEFAULT_TIMEOUTS_S = {"reach": 15.0, "push": 25.0, "pick": 20.0, "pick_place": 30.0}


@dataclass(frozen=True)
class RolloutConfig:
    """Loop rates and limits (defaults: ``config/params/policy.yaml`` and the sim node's, with the
    scripted backend's chunk rate and interpolation; :func:`learned_config` gives the learned one's).

    Attributes:
        control_rate_hz: joint targets sent to the sim [Hz], > 0.
        chunk_rate_hz: System 1 inferences [Hz], > 0.
        latent_rate_hz: System 2 inferences [Hz], > 0.
        success_rate_hz: task predicate checks [Hz], > 0.
        blend_steps: chunk cross-fade steps (ChunkStreamerConfig).
        interpolation: between chunk steps (ChunkStreamerConfig: linear | cubic | pchip).
        safety_filter: pass every target through the robot's :class:`~vla_mpc.core.safety.SafetyFilter`
            (the safety monitor's rules at ``control_rate_hz``, as in the graph) before the sim.
        timeout_s: episode time limit [s]; None: ``DEFAULT_TIMEOUTS_S[kind]``.
        stop_on_success: end at the first successful check; else run until the expert is done
            (phase ``done``) and ``settle_s`` more, or the time limit.
        settle_s: extra time after the expert is done [s], >= 0.
    """

    control_rate_hz: float = 100.0
    chunk_rate_hz: float = 10.0
    latent_rate_hz: float = 2.0
    success_rate_hz: float = 10.0
    blend_steps: int = 4
    interpolation: str = "linear"
    safety_filter: bool = False
    timeout_s: float | None = None
    stop_on_success: bool = True
    settle_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("control_rate_hz", "chunk_rate_hz", "latent_rate_hz", "success_rate_hz"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ValueError(f"{name} must be finite and > 0 Hz, got {v!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.timeout_s is not None and not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0 s or None, got {self.timeout_s!r}")
        if not (math.isfinite(self.settle_s) and self.settle_s >= 0.0):
            raise ValueError(f"settle_s must be >= 0 s, got {self.settle_s!r}")


@dataclass
class EpisodeResult:
    """Outcome of one closed-loop episode.

    Attributes:
        robot, kind, seed, instruction: the episode.
        success: ``stop_on_success``: the task predicate held at some check; else: it holds at the
            end of the run.
        time_to_success_s: sim time of the first successful check [s], or None.
        duration_s: sim time the episode ran [s].
        final_phase: System 1's phase at the end (e.g. ``"done"``).
        status: System 1's last status line.
        frames: (T, H, W, 3) uint8 RGB rendered every ``render_every_s``, or None.
        frame_times: (T,) sim times of ``frames`` [s], or None.
        extra: with ``RolloutConfig.safety_filter``: ``"safety_interventions"`` (``{kind: count}``
            over the episode's commands, kinds as in ``Verdict.kinds``) and ``"cc"`` (the summed
            step costs: the safety monitor's CC); else empty, for callers' additions.
    """

    robot: str
    kind: str
    seed: int
    instruction: str
    success: bool
    time_to_success_s: float | None
    duration_s: float
    final_phase: str
    status: str
    frames: np.ndarray | None = None
    frame_times: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_expert(robot: str, config: Any = None) -> tuple[Any, Any, Any]:
    """``(spec, ScriptedSystem2(), ScriptedSystem1)`` for ``robot`` (System 1 ``config``:
    a ``ScriptedSystem1Config`` or None for the defaults)."""
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec
    from vla_mpc.models.scripted import ScriptedSystem1, ScriptedSystem2

    spec = load_robot_spec(robot)
    return spec, ScriptedSystem2(), ScriptedSystem1(spec, RobotModel(spec), config)


def learned_config(**kwargs: Any) -> RolloutConfig:
    """A :class:`RolloutConfig` with the learned backend's chunk rate and interpolation
    (``core.chunking.EXECUTION_DEFAULTS``, as the policy node picks them); ``kwargs`` override."""
    rate, interpolation = execution_defaults("learned")
    return RolloutConfig(**{"chunk_rate_hz": rate, "interpolation": interpolation, **kwargs})


def run_episode(
    sim: Any,
    episode: EpisodeSpec,
    system2: Any,
    system1: Any,
    config: RolloutConfig | None = None,
    *,
    render_every_s: float | None = None,
    camera: str | None = None,
    system2_cameras: Sequence[str] | None = None,
) -> EpisodeResult:
    """Reset ``sim`` to ``episode`` and run the expert closed loop until success or the limit.

    Args:
        sim: a ``SimRobot`` of ``episode.robot``.
        episode: from ``tasks.sample_episode``.
        system2: a System 2 backend: ``ScriptedSystem2`` (privileged object positions) or one
            that reads camera frames (``LearnedSystem2``: give ``system2_cameras``).
        system1: a System 1 backend (``ScriptedSystem1``, ``LearnedSystem1``); its
            ``chunk_size``/``dt`` set the streamer. It receives the measured velocities too.
        config: loop settings.
        render_every_s: render ``camera`` this often [s of sim time] into ``frames`` (the first
            frame at t = 0, the last at the end); None: no rendering.
        camera: camera name (default the sim's first).
        system2_cameras: cameras rendered for System 2 each time it runs (None: System 2 gets no
            images, only the object positions).

    Returns:
        The :class:`EpisodeResult`.

    Raises:
        ValueError: the episode does not fit the sim (see ``SimRobot.reset``).
    """
    cfg = config or RolloutConfig()
    sim.reset(episode=episode)
    system2.reset()
    system1.reset()
    task = episode.task
    n = len(sim.joint_names)
    streamer = ChunkStreamer(ChunkStreamerConfig(action_dim=n, dt=system1.dt, blend_steps=cfg.blend_steps,
                                                 interpolation=cfg.interpolation))
    dt = 1.0 / cfg.control_rate_hz
    safety = None
    if cfg.safety_filter:
        from vla_mpc.core.safety import SafetyFilter

        safety = SafetyFilter.from_spec(sim.spec, dt)
        safety.reset(sim.joint_state()[1][:n])
    timeout = cfg.timeout_s if cfg.timeout_s is not None else DEFAULT_TIMEOUTS_S[episode.kind]
    every_chunk = max(1, round(cfg.control_rate_hz / cfg.chunk_rate_hz))
    every_latent = max(1, round(cfg.control_rate_hz / cfg.latent_rate_hz))
    every_check = max(1, round(cfg.control_rate_hz / cfg.success_rate_hz))
    every_frame = None if render_every_s is None else max(1, round(render_every_s * cfg.control_rate_hz))
    frames, frame_times = [], []
    safety_counts: dict[str, int] = {}
    safety_cost = 0.0
    z = None
    t_success: float | None = None
    done_at: float | None = None
    success = False
    steps = int(math.ceil(timeout / dt))
    t0 = sim.time
    k = 0
    for k in range(steps + 1):
        t = sim.time - t0
        _names, q_all, v_all = sim.joint_state()
        q, v = q_all[:n], v_all[:n]
        if every_frame is not None and k % every_frame == 0:
            frames.append(sim.render(camera))
            frame_times.append(t)
        if k % every_check == 0 and k > 0:
            success = sim.task_success(task)
            if success and t_success is None:
                t_success = t
            if success and cfg.stop_on_success:
                break
            if getattr(system1, "phase", None) is not None and system1.phase.value == "done":
                done_at = t if done_at is None else done_at
                if not cfg.stop_on_success and t - done_at >= cfg.settle_s:
                    break
        if k == steps:
            break
        if k % every_latent == 0:
            objects = {name: pose[0] for name, pose in sim.object_poses().items()}
            images = {c: sim.render(c) for c in (system2_cameras or ())}
            z = system2.infer(images, episode.instruction, objects)
        if k % every_chunk == 0 and z is not None:
            t_start = t + dt
            prefix = streamer.rtc_prefix(t_start, system1.chunk_size)  # as the policy node does
            chunk = system1.infer(z, q, prefix, velocity=v)
            streamer.submit(chunk, t_start, t_now=t)
        target = streamer.sample(t + dt, default=q)
        if safety is not None:
            safety.observe_joint_state(q, t)
            target, verdict = safety.filter(safety.joint_names, target, t, q, now_s=t)
            for kind in verdict.kinds:
                safety_counts[kind] = safety_counts.get(kind, 0) + 1
            if target is None:  # nothing to send (never for a fresh stream at 1 / dt): keep the last
                target = safety.last_command
            else:
                safety_cost += safety.step_cost
        sim.set_position_target(target)
        sim.step(dt)
    if every_frame is not None and (not frame_times or frame_times[-1] < sim.time - t0):
        frames.append(sim.render(camera))
        frame_times.append(sim.time - t0)
    if not cfg.stop_on_success:
        success = sim.task_success(task)
    return EpisodeResult(
        robot=episode.robot, kind=episode.kind, seed=episode.seed, instruction=episode.instruction,
        success=bool(success),
        time_to_success_s=t_success, duration_s=sim.time - t0,
        final_phase=str(getattr(getattr(system1, "phase", None), "value", "")),
        status=str(getattr(system1, "status", "")),
        frames=np.stack(frames) if frames else None,
        frame_times=np.asarray(frame_times) if frame_times else None,
        extra={"safety_interventions": safety_counts, "cc": safety_cost} if safety is not None else {},
    )


def goal_image(robot: str, kind: str, seed: int, size: int = 96, *, sim: Any = None,
               camera: str = "front") -> np.ndarray:
    """The last frame of a successful expert demonstration of ``sample_episode(robot, kind, seed)``.

    The expert runs until it is done (plus 0.5 s to settle); the ``camera`` frame at that moment,
    rendered at ``size`` x ``size`` px, is the goal image.

    Args:
        sim: a ``SimRobot`` of ``robot`` whose image size is (size, size) and which renders
            ``camera``, or None (one is built and closed).

    Returns:
        (size, size, 3) uint8 RGB.

    Raises:
        RuntimeError: the expert did not succeed on this seed (the message names the status).
    """
    from vla_mpc.sim.sim_robot import SimRobot

    spec, s2, s1 = make_expert(robot)
    own = sim is None
    if own:
        sim = SimRobot(spec, cameras=(camera,), image_size=(size, size))
    try:
        res = run_episode(sim, sample_episode(robot, kind, seed), s2, s1,
                          RolloutConfig(stop_on_success=False))
        if not res.success:
            raise RuntimeError(f"expert failed {robot}/{kind} seed {seed} ({res.instruction!r}): "
                               f"phase {res.final_phase}, {res.status}")
        return sim.render(camera)
    finally:
        if own:
            sim.close()


def expert_success_rates(robot: str, kinds: Sequence[str], episodes: int,
                         seed_start: int = EVAL_SEED_OFFSET,
                         config: RolloutConfig | None = None) -> dict[str, Any]:
    """Run the expert on seeds ``seed_start .. seed_start + episodes - 1`` of each kind.

    Returns:
        ``{"robot", "episodes", "seed_start", "expert_sr": {kind: float}, "time_to_success_s":
        {kind: mean [s] or None}, "failed_seeds": {kind: [int]}, "wall_s": float}``.
    """
    from vla_mpc.sim.sim_robot import SimRobot

    t_wall = time.perf_counter()
    spec, s2, s1 = make_expert(robot)
    sim = SimRobot(spec, cameras=("front",), image_size=(64, 64))
    out: dict[str, Any] = {"robot": robot, "episodes": episodes, "seed_start": seed_start,
                           "expert_sr": {}, "time_to_success_s": {}, "failed_seeds": {}}
    try:
        _fill_success_rates(out, "expert_sr", sim, robot, kinds, episodes, seed_start, s2, s1, config, None)
    finally:
        sim.close()
    out["wall_s"] = round(time.perf_counter() - t_wall, 1)
    return out


def _fill_success_rates(out: dict[str, Any], sr_key: str, sim: Any, robot: str, kinds: Sequence[str], episodes: int,
                        seed_start: int, system2: Any, system1: Any, config: RolloutConfig | None,
                        system2_cameras: Sequence[str] | None) -> None:
    """Run ``episodes`` seeds per kind and fill ``out[sr_key]``, ``out["time_to_success_s"]`` and
    ``out["failed_seeds"]`` per kind."""
    for kind in kinds:
        results = []
        for i in range(episodes):
            episode = sample_episode(robot, kind, seed_start + i)
            if hasattr(system1, "start"):
                system1.start(episode)
            results.append(run_episode(sim, episode, system2, system1, config, system2_cameras=system2_cameras))
        ok = [r for r in results if r.success]
        out[sr_key][kind] = len(ok) / max(1, episodes)
        out["time_to_success_s"][kind] = (round(float(np.mean([r.time_to_success_s for r in ok])), 3)
                                          if ok else None)
        out["failed_seeds"][kind] = [r.seed for r in results if not r.success]
        if results and "cc" in results[0].extra:
            out.setdefault("cc", {})[kind] = round(float(np.mean([r.extra["cc"] for r in results])), 3)


class PrivilegedReadouts:
    """A learned System 1 handed the *true* task keypoints and kind in place of System 2's.

    System 2 still runs on the frames (its latent is passed on), but System 1 is conditioned on
    ``sim.tasks.task_keypoints`` of the sim's object poses at each call and (policies with a task
    head) on the episode's kind:
    the success rate System 1 would reach with a perfect System 2, which splits a learned policy's
    failures between perception and control (an ablation, not a deployable mode). With ``which``
    ``"object"`` or ``"goal"`` only that keypoint is true and the other is System 2's reading of
    ``z`` (and the kind is System 2's): which of the two readings costs the episodes.

    Args:
        system1: a ``LearnedSystem1`` of a policy with ``keypoint_condition``.
        sim: the ``SimRobot`` the episodes run in.
        which: ``"all"`` (both keypoints and the kind), ``"object"`` or ``"goal"``
            (:data:`PRIVILEGED_READOUTS`).

    Raises:
        ValueError: an unknown ``which``.
    """

    def __init__(self, system1: Any, sim: Any, which: str = "all") -> None:
        if which not in PRIVILEGED_READOUTS:
            raise ValueError(f"which must be one of {PRIVILEGED_READOUTS}, got {which!r}")
        self.system1, self.sim, self.which = system1, sim, which
        self.chunk_size, self.action_dim, self.dt = system1.chunk_size, system1.action_dim, system1.dt
        self._episode: EpisodeSpec | None = None
        self._task: Any = None
        config = getattr(getattr(system1, "policy", None), "config", None)
        self._with_kind = config is None or bool(config.task_head)  # latent-mode policies read no kind

    @property
    def status(self) -> str:
        return self.system1.status

    def start(self, episode: EpisodeSpec) -> None:
        """The next episode (call before ``run_episode``; a push binds its origin at the first call)."""
        self._episode, self._task = episode, None

    def reset(self) -> None:
        self.system1.reset()

    def infer(self, z: Any, proprio: np.ndarray, prefix: np.ndarray | None = None,
              velocity: np.ndarray | None = None) -> np.ndarray:
        """``LearnedSystem1.infer`` with the true read-outs. Raises RuntimeError before :meth:`start`."""
        if self._episode is None:
            raise RuntimeError("PrivilegedReadouts.start(episode) must be called before each episode")
        objects = self.sim.object_poses()
        if self._task is None:  # the episode's start: the sim has been reset to it
            self._task = bind_origin(self._episode.task, objects)
        keypoints = np.asarray(task_keypoints(self._task, objects), dtype=np.float32)
        kind = self._episode.kind if self._with_kind else None
        if self.which != "all":  # the other row is System 2's reading of z
            import torch

            read = self.system1.policy.predict_keypoints(torch.as_tensor(z, dtype=torch.float32)[None])[0].numpy()
            row = 1 if self.which == "object" else 0
            keypoints[row] = read[row]
            kind = None
        return self.system1.infer(z, proprio, prefix, velocity, keypoints=keypoints, task_kind=kind)


def learned_success_rates(checkpoint: str, robot: str, kinds: Sequence[str], episodes: int,
                          seed_start: int = EVAL_SEED_OFFSET, config: RolloutConfig | None = None,
                          image_size: int = 224, threads: int = 2,
                          privileged_readouts: bool | str = False, system1_seed: int = 0,
                          rtc_prefix_steps: int | None = None, goal_readings: int | None = None) -> dict[str, Any]:
    """Run a learned policy checkpoint ROS-free on seeds ``seed_start ..`` of each kind.

    Args:
        checkpoint: a policy checkpoint directory (or a training output directory: its ``best``).
        config: loop settings; None: :func:`learned_config` (the learned backend's chunk rate and
            interpolation, as in the policy node).
        image_size: the rendered camera side [px] (the sim node's ``image_width`` / ``image_height``).
        threads: torch intra-op threads.
        privileged_readouts: System 1 gets the true keypoints and kind (:class:`PrivilegedReadouts`;
            True or ``"all"``), or only the true object or goal (``"object"`` / ``"goal"``); the
            output then says ``"privileged_readouts": "all"`` (or which).
        system1_seed: seeds System 1's sampling noise (reset to it at every episode). A flow
            policy's success on a layout depends on its noise: session 10's Franka checkpoint
            solved 45, 33 and 42 of the 50 evaluation reach layouts with seeds 0, 1 and 2 (safety
            filter on; one System 2 view), 48-50 with the true keypoints; session 11's (System 2
            with feature points, 9 views) 49, 44 and 50. Compare checkpoints over several seeds.
        rtc_prefix_steps: committed steps each new chunk inpaints (``LearnedSystem1``'s
            ``prefix_steps``); None: :data:`~vla_mpc.models.learned.RTC_PREFIX_STEPS`, as the node.
        goal_readings: ``LearnedSystem2``'s (None: its default,
            :data:`~vla_mpc.models.learned.GOAL_READINGS` for role-point policies; 0: the goal as read).

    Returns:
        ``{"robot", "checkpoint", "episodes", "seed_start", "system1_seed", "rtc_prefix_steps", "goal_readings",
        "sr": {kind: float},
        "time_to_success_s": {kind: mean [s] or None}, "failed_seeds": {kind: [int]}, "wall_s": float}``.

    Raises:
        CheckpointError: a missing, corrupt or mismatched checkpoint.
        ValueError: ``privileged_readouts`` for a policy without ``keypoint_condition``;
            ``rtc_prefix_steps`` < 1; an unknown ``privileged_readouts``; ``goal_readings`` that
            ``LearnedSystem2`` refuses.
    """
    import torch

    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.learned import RTC_PREFIX_STEPS, load_learned_backends
    from vla_mpc.sim.sim_robot import SimRobot

    torch.set_num_threads(max(1, int(threads)))
    t_wall = time.perf_counter()
    spec = load_robot_spec(robot)
    prefix_steps = RTC_PREFIX_STEPS if rtc_prefix_steps is None else rtc_prefix_steps
    which = "all" if privileged_readouts is True else (privileged_readouts or None)
    if which is not None and which not in PRIVILEGED_READOUTS:
        raise ValueError(f"privileged_readouts must be a bool or one of {PRIVILEGED_READOUTS}, got {which!r}")
    policy, s2, make_s1 = load_learned_backends(checkpoint, spec.joint_names, seed=system1_seed,
                                                prefix_steps=prefix_steps, goal_readings=goal_readings)
    if which and not policy.config.keypoint_condition:
        raise ValueError("privileged_readouts needs a policy whose System 1 reads keypoints (keypoint_condition)")
    s1 = make_s1()
    cams = tuple(policy.config.cameras)
    sim = SimRobot(spec, cameras=cams, image_size=(image_size, image_size))
    if which:
        s1 = PrivilegedReadouts(s1, sim, which)
    out: dict[str, Any] = {"robot": robot, "checkpoint": str(checkpoint), "episodes": episodes,
                           "seed_start": seed_start, "system1_seed": system1_seed,
                           "rtc_prefix_steps": prefix_steps, "goal_readings": s2.goal_readings, "sr": {},
                           "time_to_success_s": {}, "failed_seeds": {}}
    if which:
        out["privileged_readouts"] = which
    try:
        _fill_success_rates(out, "sr", sim, robot, kinds, episodes, seed_start, s2, s1,
                            learned_config() if config is None else config, cams)
    finally:
        sim.close()
    out["wall_s"] = round(time.perf_counter() - t_wall, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.sim.rollout``: expert success rates as one JSON line on stdout."""
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.sim.rollout", description=__doc__.split("\n")[0])
    ap.add_argument("--robot", default="panda", help="robot name (config/<robot>.yaml)")
    ap.add_argument("--kind", action="append", default=None,
                    help=f"task kind, repeatable, or 'all' ({', '.join(TASK_KINDS)}); default all")
    ap.add_argument("--episodes", type=int, default=20, help="episodes (seeds) per kind")
    ap.add_argument("--seed-start", type=int, default=EVAL_SEED_OFFSET,
                    help=f"first seed (default the evaluation seeds, {EVAL_SEED_OFFSET})")
    ap.add_argument("--checkpoint", default=None,
                    help="learned policy checkpoint (or training output) directory; default: the scripted expert")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for --checkpoint (default 2)")
    ap.add_argument("--chunk-rate-hz", type=float, default=None,
                    help="System 1 chunk rate [Hz] (default: the backend's, as the policy node: scripted 10, "
                         "learned 3.33)")
    ap.add_argument("--interpolation", default=None, choices=INTERPOLATIONS,
                    help="between chunk steps (default: the backend's, as the policy node: scripted linear, "
                         "learned pchip)")
    ap.add_argument("--safety-filter", action="store_true",
                    help="pass the targets through the safety monitor's filter (as the graph does); adds 'cc' "
                         "(mean safety cost per episode) to the output")
    ap.add_argument("--system1-seed", type=int, default=0,
                    help="with --checkpoint: seed of System 1's sampling noise (success depends on it: "
                         "compare checkpoints over several)")
    ap.add_argument("--rtc-prefix-steps", type=int, default=None,
                    help="with --checkpoint: steps of the executing chunk each new chunk inpaints (default "
                         "models.learned.RTC_PREFIX_STEPS, as the policy node; 16: the whole overlap)")
    ap.add_argument("--privileged-readouts", nargs="?", const="all", default=None, choices=PRIVILEGED_READOUTS,
                    help="with --checkpoint: System 1 gets the true task keypoints and kind instead of System 2's "
                         "(System 1's success rate with a perfect System 2); 'object' or 'goal': only that "
                         "keypoint is true")
    ap.add_argument("--goal-readings", type=int, default=None,
                    help="with --checkpoint: System 2 holds the median of its first N goal readings per "
                         "instruction (models.learned.GOAL_READINGS for role-point policies; 0: off)")
    args = ap.parse_args(argv)
    kinds = args.kind or ["all"]
    if "all" in kinds:
        kinds = list(TASK_KINDS)
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad or args.episodes < 1:
        ap.error(f"unknown kinds {bad}" if bad else "--episodes must be >= 1")
    rate, interpolation = execution_defaults("scripted" if args.checkpoint is None else "learned")
    try:
        config = RolloutConfig(chunk_rate_hz=rate if args.chunk_rate_hz is None else args.chunk_rate_hz,
                               interpolation=args.interpolation or interpolation, safety_filter=args.safety_filter)
    except ValueError as exc:
        ap.error(str(exc))
    if args.checkpoint is None:
        if args.privileged_readouts or args.rtc_prefix_steps is not None or args.goal_readings is not None:
            ap.error("--privileged-readouts, --rtc-prefix-steps and --goal-readings need --checkpoint")
        print(json.dumps(expert_success_rates(args.robot, kinds, args.episodes, args.seed_start, config)))
        return 0
    from vla_mpc.models.checkpoint import CheckpointError

    try:
        print(json.dumps(learned_success_rates(args.checkpoint, args.robot, kinds, args.episodes,
                                               args.seed_start, config, threads=args.threads,
                                               privileged_readouts=args.privileged_readouts,
                                               system1_seed=args.system1_seed,
                                               rtc_prefix_steps=args.rtc_prefix_steps,
                                               goal_readings=args.goal_readings)))
    except (CheckpointError, ValueError) as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
