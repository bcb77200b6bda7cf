"""Expert-relabelled rollouts of a learned policy (DAgger), written as a training dataset.

    python -m vla_mpc.train dagger --checkpoint output/policy_train --out output/dagger0 \\
        --episodes-per-kind 30 --seed-start 60000 [--beta 0.3] [--kinds reach,push,pick_place]

Behaviour cloning trains on the states the expert visits; the learned policy drifts into states the
expert never showed it and errors compound (Ross, Gordon & Bagnell, "A Reduction of Imitation
Learning and Structured Prediction to No-Regret Online Learning", AISTATS 2011). DAgger runs the
learner, asks the expert what it would do in every state the learner reaches, and adds those
labels to the data. Here, without ROS (:func:`vla_mpc.sim.rollout.run_episode`'s loop):

* the learner (:class:`~vla_mpc.models.learned.LearnedSystem2` on rendered frames +
  :class:`~vla_mpc.models.learned.LearnedSystem1`) drives the sim; with probability ``beta`` per
  chunk the expert's chunk is executed instead (the mixture policy of DAgger's first iterations);
* the scripted expert (privileged object poses, :class:`~vla_mpc.models.scripted.ScriptedSystem2`
  + :class:`~vla_mpc.models.scripted.ScriptedSystem1`) runs beside it on the same measured states
  and its chunk is the label: planned from the learner's committed target (where the command
  stream is; the arm lags it) with the measured velocities (not the learner's commanded velocity,
  which can be large and wrong, nor from rest, which restarts every move);
* the expert reads its phase from the state (``ScriptedSystem1Config(phases="state")``, the
  default ``expert_phases``): the demonstrations' expert completes a waypoint only within 1 cm of
  it, so a learner that passed 2 cm beside one was labelled "go back to it" for the rest of the
  episode, against the demonstrations' "go on" from the same states; System 1 then dithered
  between the two (session 6, README);
* a row is written at each chunk (:data:`ROW_RATE_HZ`, 10 Hz = the dataset's camera rate, the
  executing chunk linearly interpolated, as when the demonstrations were collected): the
  ``front`` frame rendered at the sim node's 224 px and resized like the camera ingest, positions
  and velocities, the expert's chunk resampled to ``chunk_dt``, the task keypoints.

The loop is :func:`~vla_mpc.sim.rollout.run_episode`'s (ends at success or the kind's time limit):
the learner and the expert ride in it as one System 2 (both latents) and one System 1 (executes
one chunk, records the other).

The output is a contract-B dataset (:mod:`vla_mpc.training.dataset`; ``source`` ``"dagger"``,
``expert_labels`` true on every episode) that ``train policy --dataset BASE THIS`` trains on
beside the demonstrations; its episodes' ``success`` is the learner's. Seeds stay below the
evaluation seeds. No rclpy here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from vla_mpc.training.dataset import FORMAT, compute_stats

__all__ = ["ROW_RATE_HZ", "collect", "main"]

#: Rows (and expert chunks) per second of sim time [Hz]: the camera rate of the recorded
#: demonstrations (``sim_robot.camera_rate_hz``), independent of the policy node's chunk rate.
ROW_RATE_HZ = 10.0


def _resample(chunk: np.ndarray, dt_in: float, dt_out: float, steps: int) -> np.ndarray:
    """(H_in, n) targets at ``k dt_in`` -> (steps, n) at ``k dt_out`` (linear, last held)."""
    t_in = dt_in * np.arange(len(chunk))
    t_out = dt_out * np.arange(steps)
    return np.stack([np.interp(t_out, t_in, chunk[:, j]) for j in range(chunk.shape[1])], axis=1)


class _Latents:
    """System 2 pair for :func:`~vla_mpc.sim.rollout.run_episode`: the learner's latent from the
    rendered frames and the expert's from the privileged object positions, as one opaque value."""

    def __init__(self, learner, expert, sim) -> None:
        self.learner, self.expert, self.sim = learner, expert, sim
        #: (sim time [s], {camera: frame}) of the last call: the System 1 row at the same instant reuses it.
        self.last_images: tuple[float, dict] | None = None

    def reset(self) -> None:
        if self.learner is not None:
            self.learner.reset()
        self.expert.reset()
        self.last_images = None

    def infer(self, images, instruction, objects=None):
        self.last_images = (self.sim.time, images)
        z_learner = None if self.learner is None else self.learner.infer(images, instruction)
        return z_learner, self.expert.infer({}, instruction, objects)


class _Relabel:
    """System 1 for :func:`~vla_mpc.sim.rollout.run_episode`: executes the learner's chunk (the
    expert's with probability ``beta``), and at every call records a row whose label is the
    expert's chunk from the same measured state (module docstring). Without a learner
    (``learner=None``, DART) it executes ``driver``'s chunk, the expert with injected noise."""

    def __init__(self, learner, expert, latents: _Latents, sim, camera: str, beta: float, rng: np.random.Generator,
                 image_size: int, chunk_size: int, chunk_dt: float, driver=None) -> None:
        from vla_mpc.models.vision import resize_frame
        from vla_mpc.sim.tasks import task_keypoints

        self._resize, self._task_keypoints = resize_frame, task_keypoints
        self.learner, self.expert, self.latents, self.sim, self.camera = learner, expert, latents, sim, camera
        self.driver = driver
        if (learner is None) == (driver is None):
            raise ValueError("give either a learner or a driver (DART)")
        self.beta, self.rng, self.image_size = beta, rng, image_size
        self.chunk_size, self.chunk_dt = chunk_size, chunk_dt
        self.dt = (learner if learner is not None else driver).dt  # the executed chunks' step [s]
        self.task = None
        self.rows: dict[str, list] = {k: [] for k in ("frames", "proprio", "actions", "keypoints", "timestamps")}
        self._t0: float | None = None

    def start(self, task) -> None:
        """The next episode's task (its keypoints label the rows); time restarts at its first row."""
        self.task, self._t0 = task, None

    def reset(self) -> None:
        for backend in (self.learner, self.driver, self.expert):
            if backend is not None:
                backend.reset()

    def infer(self, z, proprio, prefix=None, velocity=None) -> np.ndarray:
        z_learner, z_expert = z
        if self._t0 is None:
            self._t0 = self.sim.time
        # The label: what the expert would command next. It starts at the committed target, not at
        # the measured positions (the arm lags its command: labels from the measured positions drag
        # the stream back by the lag every call, and the expert executing them itself solved 0/12),
        # and continues the measured velocity: the learner's commanded velocity, a finite
        # difference of two sampled targets, swung the labels 20-40 cm (session 4), and a label
        # from rest crawled (session 6). ScriptedSystem1.chunk_from_state. Under DART the driver is
        # the expert with noise on its goals, a smooth plan: the label is then the clean expert's
        # own chunk from the driver's committed stream, which the expert executes as it is.
        expert_chunk = self.expert.infer(z_expert, proprio, prefix, velocity=velocity)  # advances its phase
        if self.driver is not None:  # DART: the noisy expert drives, the clean one labels
            label = expert_chunk
            chunk = self.driver.infer(z_expert, proprio, prefix, velocity=velocity)
        else:
            start = None if prefix is None or len(prefix) == 0 else prefix[0]
            label = self.expert.chunk_from_state(proprio, velocity, start=start)
            if self.rng.random() < self.beta:
                chunk = expert_chunk
            else:
                chunk = self.learner.infer(z_learner, proprio, prefix, velocity)
        v = np.zeros_like(proprio) if velocity is None else velocity
        r = self.rows
        last = self.latents.last_images  # System 2 ran at this instant: its frame, not a second render
        frame = last[1][self.camera] if last is not None and last[0] == self.sim.time else self.sim.render(self.camera)
        r["frames"].append(self._resize(frame, self.image_size))
        r["proprio"].append(np.concatenate([proprio, v]).astype(np.float32))
        r["actions"].append(_resample(label, self.expert.dt, self.chunk_dt, self.chunk_size).astype(np.float32))
        r["keypoints"].append(self._task_keypoints(self.task, self.sim.object_poses()).astype(np.float32))
        r["timestamps"].append(self.sim.time - self._t0)
        return chunk


def collect(checkpoint: str | Path | None, out: str | Path, robot: str = "panda",
            kinds: Sequence[str] = ("reach", "push", "pick_place"), episodes_per_kind: int = 20,
            seed_start: int = 60000, beta: float = 0.0, image_size: int = 96, render_size: int = 224,
            chunk_size: int = 16, chunk_dt: float = 0.05, seed: int = 0, threads: int = 2,
            timeout_s: float | None = None, progress: bool = False, expert_phases: str = "state",
            dart_noise_std: float = 0.0, camera: str = "front") -> dict:
    """Run the learner with the expert labelling (module docstring) and write the dataset ``out``.

    Without a ``checkpoint`` the rollouts are DART's (Laskey et al., "DART: Noise Injection for
    Robust Imitation Learning", CoRL 2017): the expert drives with an Ornstein-Uhlenbeck offset of
    std ``dart_noise_std`` [rad] on its joint goals (``ScriptedSystem1Config.noise_std``), and the
    label is the noise-free expert's own chunk from the driver's command stream (what it would
    execute there). The states are the
    expert's own plus the drift the noise adds, the states a learner with a small error reaches;
    the labels bring them back. No learner runs, so a round costs the sim and the renders only.

    Args:
        checkpoint: learned policy checkpoint (or training output) directory, or None (DART).
        out: dataset directory to write (created).
        episodes_per_kind: episodes of each kind, seeds ``seed_start + i`` (round-robin over kinds).
        beta: probability [0, 1] that a chunk executed is the expert's instead of the learner's
            (with a checkpoint).
        chunk_size / chunk_dt: the dataset's action chunks (as ``train convert``).
        seed: seeds the beta draws and DART's noise.
        timeout_s: episode time limit [s of sim time]; None: the rollout's per-kind default.
        expert_phases: the labelling expert's ``ScriptedSystem1Config.phases`` (``"state"``:
            module docstring; ``"sequence"``: the demonstrations' phase machine).
        dart_noise_std: DART's noise std [rad], > 0 exactly when ``checkpoint`` is None.
        camera: the recorded camera without a checkpoint (with one, the policy's first).

    Returns:
        The meta dict (also ``out/meta.json``), with ``learner_sr`` per kind.

    Raises:
        ValueError: bad arguments, or seeds reaching the evaluation range.
        CheckpointError: a missing, corrupt or mismatched checkpoint.
    """
    import torch
    from tqdm import tqdm

    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.learned import load_learned_backends
    from vla_mpc.models.scripted import ScriptedSystem1Config
    from vla_mpc.sim.rollout import RolloutConfig, make_expert, run_episode
    from vla_mpc.sim.sim_robot import SimRobot
    from vla_mpc.sim.tasks import EVAL_SEED_OFFSET, TASK_KINDS, sample_episode

    kinds = list(kinds)
    if not kinds or any(k not in TASK_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {TASK_KINDS}, got {kinds}")
    if episodes_per_kind < 1 or not (0.0 <= beta <= 1.0):
        raise ValueError(f"episodes_per_kind must be >= 1 and beta in [0, 1], got {episodes_per_kind}, {beta}")
    if seed_start < 0 or seed_start + episodes_per_kind * len(kinds) > EVAL_SEED_OFFSET:
        raise ValueError(f"seeds from {seed_start} reach the evaluation seeds ({EVAL_SEED_OFFSET})")
    dart = checkpoint is None
    if dart != (dart_noise_std > 0.0) or not np.isfinite(dart_noise_std):
        raise ValueError(f"dart_noise_std must be > 0 exactly when no checkpoint is given (DART), got "
                         f"{dart_noise_std!r} with checkpoint {checkpoint!r}")
    expert_config = ScriptedSystem1Config(phases=expert_phases)  # ValueError on an unknown rule
    torch.set_num_threads(max(1, int(threads)))
    t_wall = time.monotonic()
    spec = load_robot_spec(robot)
    _, expert2, expert1 = make_expert(robot, expert_config)
    if dart:
        learner2 = learner1 = None
        _, _, driver = make_expert(robot, ScriptedSystem1Config(phases=expert_phases, noise_std=dart_noise_std,
                                                                noise_seed=seed))
    else:
        policy, learner2, make_s1 = load_learned_backends(checkpoint, spec.joint_names)
        learner1, driver = make_s1(), None
        camera = policy.config.cameras[0]
    cfg = RolloutConfig(chunk_rate_hz=ROW_RATE_HZ, interpolation="linear", timeout_s=timeout_s)
    sim = SimRobot(spec, cameras=(camera,), image_size=(render_size, render_size))
    system2 = _Latents(learner2, expert2, sim)
    system1 = _Relabel(learner1, expert1, system2, sim, camera, beta, np.random.default_rng(seed), image_size,
                       chunk_size, chunk_dt, driver=driver)
    episodes, ep_index = [], []
    learner_success: dict[str, list[bool]] = {k: [] for k in kinds}
    jobs = [(kinds[i % len(kinds)], seed_start + i) for i in range(episodes_per_kind * len(kinds))]
    try:
        for index, (kind, ep_seed) in enumerate(tqdm(jobs, desc="dagger", disable=not progress)):
            episode = sample_episode(robot, kind, ep_seed)
            start = len(system1.rows["frames"])
            system1.start(episode.task)
            res = run_episode(sim, episode, system2, system1, cfg, system2_cameras=(camera,))
            stop = len(system1.rows["frames"])
            ep_index += [index] * (stop - start)
            learner_success[kind].append(res.success)
            episodes.append({"index": index, "bag": None, "kind": kind, "instruction": episode.instruction,
                             "seed": ep_seed, "success": res.success, "source": "dart" if dart else "dagger",
                             "expert_labels": True,
                             "beta": beta, "time_to_success_s": res.time_to_success_s, "complete": True,
                             "start": start, "stop": stop})
    finally:
        sim.close()
    rows = len(ep_index)
    if not rows:
        raise ValueError("no rows were recorded")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.stack(v) for k, v in system1.rows.items()}
    arrays["timestamps"] = arrays["timestamps"].astype(np.float64)
    arrays["episode_index"] = np.asarray(ep_index, dtype=np.int32)
    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a)
    meta = {
        "format": FORMAT, "robot": robot, "joint_names": list(spec.joint_names), "camera": camera,
        "image_size": image_size, "frame_rate_hz": cfg.chunk_rate_hz, "chunk_size": chunk_size,
        "chunk_dt": chunk_dt, "episodes": episodes, "skipped_bags": [], "partial_bags": [],
        "skipped_episodes": [], "bad_messages": 0,
        "stats": {"proprio": compute_stats(arrays["proprio"]), "action": compute_stats(arrays["actions"])},
        "keypoint_rows": rows, "source_bags": [],
        "dagger": {"checkpoint": None if dart else str(checkpoint), "beta": beta, "seed_start": seed_start,
                   "render_size": render_size, "expert_phases": expert_phases, "dart_noise_std": dart_noise_std,
                   "learner_sr": {k: float(np.mean(v)) for k, v in learner_success.items()}},
        "conversion": {"seconds": round(time.monotonic() - t_wall, 3), "rows": rows,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="learned policy checkpoint or training output; omit with --dart-noise-std (DART)")
    ap.add_argument("--dart-noise-std", type=float, default=0.0,
                    help="without --checkpoint: the expert drives with this std [rad] of noise on its joint goals "
                         "and the noise-free expert labels (DART, Laskey et al. 2017); e.g. 0.02 (at 0.05 the noisy "
                         "expert fails push and pick_place)")
    ap.add_argument("--out", required=True, type=Path, help="dataset directory to write")
    ap.add_argument("--robot", default="panda")
    ap.add_argument("--kinds", default="reach,push,pick_place", help="comma-separated task kinds")
    ap.add_argument("--episodes-per-kind", type=int, default=20)
    ap.add_argument("--seed-start", type=int, default=60000,
                    help="first episode seed (default 60000; must stay below the evaluation seeds)")
    ap.add_argument("--beta", type=float, default=0.0,
                    help="probability that a chunk executed is the expert's (DAgger's mixture; default 0)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the beta draws")
    ap.add_argument("--expert-phases", choices=("state", "sequence"), default="state",
                    help="how the labelling expert picks its phase: from the measured state (default; "
                         "what DAgger needs) or in sequence like the demonstrations' expert")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run_cli(a: argparse.Namespace) -> int:
    """Collect from parsed arguments; prints a one-line JSON summary (exit 2 on bad input)."""
    from vla_mpc.models.checkpoint import CheckpointError

    if a.out.exists() and any(a.out.iterdir()) and not a.overwrite:
        print(f"dagger: {a.out} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    try:
        meta = collect(a.checkpoint, a.out, a.robot, [k for k in a.kinds.split(",") if k], a.episodes_per_kind,
                       a.seed_start, a.beta, seed=a.seed, threads=a.threads, progress=True,
                       expert_phases=a.expert_phases, dart_noise_std=a.dart_noise_std)
    except (ValueError, CheckpointError) as exc:
        print(f"dagger: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(a.out), "episodes": len(meta["episodes"]), "rows": meta["conversion"]["rows"],
                      "learner_sr": meta["dagger"]["learner_sr"], "seconds": meta["conversion"]["seconds"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.training.dagger`` (same as ``python -m vla_mpc.train dagger``)."""
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.train dagger", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run_cli(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
