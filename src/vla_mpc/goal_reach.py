"""Reach goal images in the sim with the latent MPC planner (ROS-free), and world-model data.

``python -m vla_mpc.goal_reach collect --out D [--episodes N] [--steps T] [--seed S]``
    drives the MuJoCo Franka (``SimRobot``) from home toward random end-effector targets (inverse
    kinematics of ``RobotModel``) with a smooth random perturbation, plus purely random joint
    motions, and writes a contract-B dataset (``vla_mpc.training.dataset`` format: ``meta.json``,
    ``frames.npy`` 96 px from the ``front`` camera at 10 Hz, ``proprio.npy``, ``actions.npy``,
    ``episode_index.npy``, ``timestamps.npy``) for ``python -m vla_mpc.train world_model``.
    Episode sources: ``expert`` (straight joint-space motion to the IK solution), ``perturbed``
    (the same plus a random walk) and ``random`` (random-walk joint targets), as contract H asks.
``python -m vla_mpc.goal_reach eval --checkpoint C [--goals N] [--cycles K] [--json F]``
    measures ``goal_reach_success`` / ``goal_reach_error_m`` over ``goal_set``.

The goal set (``goal_set``): ``num_goals`` end-effector targets on a fixed pseudo-random pattern
around the home tool centre point (offsets up to +/-0.12 m in x, y and z, ``base_link``), each
solved by damped-least-squares IK from home (position only, joints near home); the goal image is
the ``front`` camera frame after the sim's servo has settled at that configuration (same cube
layout as the episode). Success: the measured TCP ends within ``success_radius_m`` (3 cm, the
issue's threshold) of the goal image's TCP.

The loop (``reach_goal``): every cycle renders the camera, reads the joint positions, encodes both
(``WorldModel.encode``), plans (CEM, warm-started), commands the first planned joint target
(``q + a_0``) and steps the sim by one model step ``dt``. Goal routes:

* ``jepa``: the goal image's latent from the learned encoder, V-JEPA 2-AC's L1 latent energy;
* ``decoded``: the kinematic world model with the goal joint configuration decoded from the goal
  image by the learned proprio head (``JepaWorldModel.decode_joint_positions``) and its
  end-effector position by forward kinematics;
* ``estimated`` (``--goal-pose C``): the kinematic world model with the end-effector position read
  from the goal image by the goal-pose estimator (:mod:`vla_mpc.models.goal_pose`), no joint goal;
* ``oracle``: the kinematic world model with the true goal configuration (an upper bound: it
  measures the planner and servo, not perception).

Nothing here imports rclpy.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

SUCCESS_RADIUS_M = 0.03
GOAL_OFFSET_M = 0.12
CAMERA = "front"
IMAGE_SIZE = 96
FRAME_RATE_HZ = 10.0
SCENE_SEED = 0


@dataclass(frozen=True)
class GoalSample:
    """One goal: ``tcp`` (3,) [m] ``base_link``, ``q`` (n,) [rad, m] over ``joint_names``, the
    settled sim TCP ``sim_tcp`` (3,) [m] (what success is measured against) and ``image``
    (S, S, 3) uint8 RGB."""

    tcp: np.ndarray
    q: np.ndarray
    sim_tcp: np.ndarray
    image: np.ndarray


def make_sim(robot: str = "panda", image_size: int = IMAGE_SIZE, seed: int = SCENE_SEED) -> Any:
    """A ``SimRobot`` with the ``front`` camera at ``image_size`` px (imports MuJoCo lazily)."""
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.sim.sim_robot import SimRobot

    return SimRobot(load_robot_spec(robot), cameras=(CAMERA,), image_size=(image_size, image_size), seed=seed)


def goal_targets(home_tcp: np.ndarray, num_goals: int, seed: int = 0) -> np.ndarray:
    """``(num_goals, 3)`` TCP targets [m]: home + offsets on a fixed pseudo-random pattern, each
    axis in [-GOAL_OFFSET_M, GOAL_OFFSET_M], at least 5 cm from home."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < num_goals:
        d = rng.uniform(-GOAL_OFFSET_M, GOAL_OFFSET_M, 3)
        if np.linalg.norm(d) >= 0.05:
            out.append(np.asarray(home_tcp, float) + d)
    return np.array(out)


def solve_ik(robot: Any, target: np.ndarray, q_home: np.ndarray) -> np.ndarray:
    """Position IK from home (``RobotModel.ik``); the gripper keeps its home value.

    Raises:
        RuntimeError: IK did not converge to 1 mm.
    """
    res = robot.ik(np.asarray(target, float), q0=q_home, tolerance=1e-4)
    if not res.converged or res.error > 1e-3:
        raise RuntimeError(f"IK did not reach {np.round(target, 3).tolist()} (error {res.error:.4f} m)")
    q = np.asarray(res.q, float).copy()
    q[robot.spec.gripper_indices] = q_home[robot.spec.gripper_indices]
    return q


def settle(sim: Any, q: np.ndarray, seconds: float = 1.5) -> None:
    """Reset the scene (``SCENE_SEED`` layout), command ``q`` and let the servo settle."""
    sim.reset(SCENE_SEED)
    sim.set_position_target(q)
    sim.step(seconds)


def goal_set(sim: Any, robot: Any, num_goals: int = 8, seed: int = 0) -> list[GoalSample]:
    """Render the fixed goal set (module docstring). Deterministic for ``(num_goals, seed)``."""
    home = np.asarray(robot.spec.home, float)
    home_tcp = robot.fk_positions(home[None])[0]
    goals = []
    for tcp in goal_targets(home_tcp, num_goals, seed):
        q = solve_ik(robot, tcp, home)
        settle(sim, q)
        goals.append(GoalSample(tcp=tcp, q=q, sim_tcp=sim.tcp_positions()[0].copy(), image=sim.render(CAMERA)))
    sim.reset(SCENE_SEED)
    return goals


# ----------------------------------------------------------------------------- data collection


def _episode_targets(kind: str, robot: Any, rng: np.random.Generator, steps: int) -> np.ndarray:
    """``(steps, n)`` joint targets at 10 Hz for one episode (module docstring)."""
    spec = robot.spec
    home = np.asarray(spec.home, float)
    lo, hi = np.asarray(spec.limits.lower), np.asarray(spec.limits.upper)
    arm = np.asarray(spec.arm_indices)
    max_step = 0.5 * np.asarray(spec.limits.velocity) / FRAME_RATE_HZ  # rad per frame, half speed
    if kind == "random":
        inc = np.clip(rng.normal(0.0, 0.6, (steps, len(home))) * max_step, -max_step, max_step)
        q = home + np.cumsum(inc, axis=0)
    else:
        home_tcp = robot.fk_positions(home[None])[0]
        target = home_tcp + rng.uniform(-1.5 * GOAL_OFFSET_M, 1.5 * GOAL_OFFSET_M, 3)
        try:
            q_goal = solve_ik(robot, target, home)
        except RuntimeError:
            q_goal = home
        speed = rng.uniform(0.3, 1.0)
        n_move = max(1, int(np.ceil(np.max(np.abs(q_goal - home) / (speed * max_step)))))
        s = np.clip(np.arange(1, steps + 1) / n_move, 0.0, 1.0)[:, None]
        q = home + s * (q_goal - home)
        if kind == "perturbed":
            q = q + np.cumsum(rng.normal(0.0, 0.3, (steps, len(home))) * max_step, axis=0)
    q[:, np.setdiff1d(np.arange(len(home)), arm)] = home[np.setdiff1d(np.arange(len(home)), arm)]
    return np.clip(q, lo + 0.05, hi - 0.05)


def collect_dataset(out: Path | str, episodes: int = 40, steps: int = 40, seed: int = 0, robot: str = "panda",
                    chunk_size: int = 16, chunk_dt: float = 0.05) -> Path:
    """Write a contract-B dataset of sim episodes (module docstring) to ``out``.

    Episode ``i`` uses kind ``("expert", "perturbed", "random")[i % 3]`` and ``rng(seed + i)``.
    Each frame row holds the measured joint state when the frame was rendered; ``actions`` are
    the commanded absolute targets at ``t + k * chunk_dt`` (held past the episode end).

    Returns:
        ``out`` as a Path.
    """
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rm = RobotModel(load_robot_spec(robot))
    sim = make_sim(robot)
    frames, proprio, actions, ep_index, stamps, meta_eps = [], [], [], [], [], []
    row = 0
    period = 1.0 / FRAME_RATE_HZ
    for i in range(episodes):
        kind = ("expert", "perturbed", "random")[i % 3]
        rng = np.random.default_rng(seed + i)
        targets = _episode_targets(kind, rm, rng, steps)  # [T, n]
        sim.reset(SCENE_SEED)
        t_cmd = period * np.arange(1, steps + 1)  # target k is commanded for (k*period, (k+1)*period]
        for k in range(steps):
            names, pos, vel = sim.joint_state()
            n = len(rm.spec.joint_names)
            frames.append(sim.render(CAMERA))
            proprio.append(np.concatenate([pos[:n], vel[:n]]).astype(np.float32))
            tq = k * period + chunk_dt * np.arange(chunk_size)
            idx = np.clip(np.searchsorted(t_cmd, tq, side="left"), 0, steps - 1)
            actions.append(targets[idx].astype(np.float32))
            ep_index.append(i)
            stamps.append(k * period)
            sim.set_position_target(targets[k])
            sim.step(period)
        meta_eps.append({"index": i, "bag": "", "kind": "reach", "instruction": "", "seed": seed + i,
                         "success": True, "source": kind, "start": row, "stop": row + steps})
        row += steps
    sim.close()
    fr, pr, ac = np.stack(frames), np.stack(proprio), np.stack(actions)
    np.save(out / "frames.npy", fr)
    np.save(out / "proprio.npy", pr)
    np.save(out / "actions.npy", ac)
    np.save(out / "episode_index.npy", np.asarray(ep_index, np.int32))
    np.save(out / "timestamps.npy", np.asarray(stamps, np.float64))

    def stats(x: np.ndarray) -> dict:
        x = x.reshape(-1, x.shape[-1]).astype(np.float64)
        return {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-3).tolist(),
                "min": x.min(0).tolist(), "max": x.max(0).tolist()}

    meta = {"format": "vla_mpc.dataset/1", "robot": robot, "joint_names": list(rm.spec.joint_names),
            "camera": CAMERA, "image_size": IMAGE_SIZE, "frame_rate_hz": FRAME_RATE_HZ, "chunk_size": chunk_size,
            "chunk_dt": chunk_dt, "episodes": meta_eps, "skipped_bags": [],
            "stats": {"proprio": stats(pr), "action": stats(ac)}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


# ----------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class ReachResult:
    """One goal: ``success`` (final TCP within the radius), ``error_m`` (final TCP distance to the
    goal's settled TCP [m]), ``cycles`` run, ``plan_ms_p50`` [ms], ``tcp_path`` (K + 1, 3) [m]."""

    success: bool
    error_m: float
    cycles: int
    plan_ms_p50: float
    tcp_path: np.ndarray


def reach_goal(sim: Any, model: Any, planner: Any, goal: Any, goal_tcp: np.ndarray, cycles: int = 40,
               success_radius_m: float = SUCCESS_RADIUS_M, stop_when_settled: bool = True) -> ReachResult:
    """Plan-act loop from the sim's current state toward ``goal`` (a ``Goal`` of ``model``).

    Every cycle: render + joint positions -> ``model.encode`` -> ``planner.plan`` -> command
    ``q + a_0`` -> ``sim.step(model.dt)``. Stops after ``cycles`` or, when ``stop_when_settled``,
    once the TCP is inside the radius and moved less than 2 mm in the last cycle.
    """
    planner.reset()
    n = len(model.joint_names) if hasattr(model, "joint_names") else model.action_dim
    path = [sim.tcp_positions()[0].copy()]
    times = []
    objective = model.objective(goal)
    k = 0
    for k in range(1, cycles + 1):
        _, pos, _ = sim.joint_state()
        q = pos[:n].astype(np.float64)
        image = sim.render(CAMERA) if model.supports_image_goals else None
        z0 = model.encode(image, q)
        t0 = time.perf_counter()
        result = planner.plan(z0, model.rollout, objective)
        times.append((time.perf_counter() - t0) * 1e3)
        sim.set_position_target(q + result.actions[0].numpy().astype(np.float64))
        sim.step(model.dt)
        path.append(sim.tcp_positions()[0].copy())
        err = float(np.linalg.norm(path[-1] - goal_tcp))
        if stop_when_settled and err < success_radius_m and np.linalg.norm(path[-1] - path[-2]) < 0.002:
            break
    err = float(np.linalg.norm(path[-1] - goal_tcp))
    return ReachResult(success=err <= success_radius_m, error_m=err, cycles=k,
                       plan_ms_p50=float(np.median(times)) if times else float("nan"), tcp_path=np.array(path))


def make_planner(model: Any, seed: int = 0, velocity_scale: float = 0.5, **cfg: Any) -> Any:
    """CEM at the V-JEPA 2-AC repository budget (400 samples, horizon 2, 10 iterations, top 10)
    with ``init_std`` = the action bound, no max-norm (actions are bounded per joint)."""
    from vla_mpc.planning.cem import CEM, CEMConfig

    low, high = model.action_bounds(velocity_scale)
    base = dict(num_samples=400, horizon=2, iterations=10, num_elites=10, init_std=float(high.max()),
                max_norm=None, min_std=0.002)
    base.update(cfg)
    return CEM(CEMConfig(**base), model.action_dim, low, high, seed=seed)


def kinematic_model(robot: Any, dt: float) -> Any:
    """The ``KinematicWorldModel`` used by the ``decoded`` and ``oracle`` routes (joint-space and
    end-effector goal terms, joint-limit barrier)."""
    from vla_mpc.models.world_model import KinematicCostConfig, KinematicWorldModel

    cost = KinematicCostConfig(goal_weight=1.0, ee_goal_weight=5.0, running_goal_weight=1.0, action_weight=0.1)
    return KinematicWorldModel.from_robot_model(robot, dt, cost)


def evaluate(checkpoint: Path | str | None, num_goals: int = 8, cycles: int = 40, routes: Sequence[str] | None = None,
             goal_pose: Path | str | None = None,
             robot: str = "panda", seed: int = 0, sim: Any = None, goals: list[GoalSample] | None = None) -> dict:
    """Goal-reach figures per route (module docstring).

    Args:
        checkpoint: a ``JepaNet`` checkpoint directory (``save_world_model``), or None: only the
            ``oracle`` route runs (and the row says so).
        num_goals, cycles: goal-set size and the plan-act cycles per goal.
        routes: subset of ``("jepa", "decoded", "oracle")``; default all that are available.
        sim, goals: reuse a ``SimRobot`` / rendered goal set (else built here).

    Returns:
        ``{"routes": {route: {"goal_reach_success": fraction, "goal_reach_error_m": mean,
        "goal_reach_error_m_median": median, "errors_m": [...], "plan_ms_p50": ...}},
        "num_goals": ..., "checkpoint": str | None, "note": ...}``.
    """
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    available = (("jepa", "decoded") if checkpoint is not None else ()) + (("estimated",) if goal_pose else ()) \
        + ("oracle",)
    routes = tuple(available if routes is None else routes)
    missing = [r for r in routes if r not in available]
    if missing:
        raise ValueError(f"routes {missing} are not available (have {list(available)}): jepa and decoded need a "
                         "world-model checkpoint, estimated a goal-pose checkpoint")
    rm = RobotModel(load_robot_spec(robot))
    jepa = None
    note = ""
    if checkpoint is not None:
        from vla_mpc.models.jepa import JepaWorldModel

        jepa = JepaWorldModel.from_checkpoint(checkpoint, robot=rm)
        dt = jepa.dt
    else:
        dt = 1.0 / FRAME_RATE_HZ
        if not goal_pose:
            note = "no world-model or goal-pose checkpoint: goal images cannot be read; only the oracle route ran"
    estimator = None
    if goal_pose:
        from vla_mpc.models.goal_pose import load_goal_pose

        estimator = load_goal_pose(goal_pose)
    own_sim = sim is None
    sim = make_sim(robot) if own_sim else sim
    goals = goal_set(sim, rm, num_goals, seed) if goals is None else goals
    kin = kinematic_model(rm, dt)
    out: dict[str, Any] = {}
    for route in routes:
        errors, ok, ms = [], [], []
        for i, g in enumerate(goals):
            if route == "jepa":
                model, goal = jepa, jepa.make_goal(image=g.image)
            elif route == "decoded":
                q_goal = jepa.decode_joint_positions(jepa.encode_image(g.image))
                model = kin
                goal = kin.make_goal(joint_positions=q_goal, ee_position=rm.fk_positions(q_goal[None])[0])
            elif route == "estimated":
                model, goal = kin, kin.make_goal(ee_position=estimator.predict(g.image))
            else:
                model, goal = kin, kin.make_goal(joint_positions=g.q, ee_position=g.tcp)
            sim.reset(SCENE_SEED)
            r = reach_goal(sim, model, make_planner(model, seed=i), goal, g.sim_tcp, cycles=cycles)
            errors.append(r.error_m)
            ok.append(r.success)
            ms.append(r.plan_ms_p50)
        out[route] = {"goal_reach_success": float(np.mean(ok)), "goal_reach_error_m": float(np.mean(errors)),
                      "goal_reach_error_m_median": float(np.median(errors)),
                      "errors_m": [round(e, 4) for e in errors], "plan_ms_p50": float(np.median(ms))}
    if own_sim:
        sim.close()
    return {"routes": out, "num_goals": len(goals), "cycles": cycles,
            "checkpoint": None if checkpoint is None else str(checkpoint), "note": note}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m vla_mpc.goal_reach", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="write a contract-B world-model dataset from the sim")
    c.add_argument("--out", required=True)
    c.add_argument("--episodes", type=int, default=60)
    c.add_argument("--steps", type=int, default=40, help="frames per episode (10 Hz)")
    c.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval", help="goal_reach_success / goal_reach_error_m over the goal set")
    e.add_argument("--checkpoint", default=None, help="JEPA world-model checkpoint directory")
    e.add_argument("--goals", type=int, default=8)
    e.add_argument("--cycles", type=int, default=40)
    e.add_argument("--routes", default=None, help="comma-separated subset of jepa,decoded,estimated,oracle")
    e.add_argument("--goal-pose", default=None, help="goal-pose estimator checkpoint (the estimated route)")
    e.add_argument("--json", default=None, help="also write the result to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.cmd == "collect":
        t0 = time.monotonic()
        out = collect_dataset(a.out, episodes=a.episodes, steps=a.steps, seed=a.seed)
        print(json.dumps({"dataset": str(out), "rows": a.episodes * a.steps, "seconds": round(time.monotonic() - t0, 1)}))
        return 0
    res = evaluate(a.checkpoint, a.goals, a.cycles, None if a.routes is None else a.routes.split(","),
                   goal_pose=a.goal_pose)
    text = json.dumps(res)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
