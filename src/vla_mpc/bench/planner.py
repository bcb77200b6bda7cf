"""Planner latency, rollout throughput and goal reach (``python -m vla_mpc.bench planner``).

Predictors (both with the full constraint objective: joint-limit barrier, a table plane and one
keep-out box through batched torch forward kinematics, ``TorchFK``, on every predicted step):

* ``kinematic``: the ``KinematicWorldModel`` of the Panda (latent = 8 joint positions, actions =
  per-step deltas) with joint-space and end-effector goals: the planner's own overhead plus the
  cheapest useful world model;
* ``jepa``: the learned ``JepaWorldModel`` (latent = learned image latent + joint positions,
  predictor MLP unrolled over the horizon, L1 latent energy to a goal image). Its latency does not
  depend on the weights, so without a checkpoint an untrained net of the default ``JepaConfig``
  is timed (the row says which).

Budgets:

* ``cem_vjepa2ac_repo``: V-JEPA 2-AC repository defaults (facebookresearch/vjepa2
  ``notebooks/utils/mpc_utils.py``): 400 samples, horizon 2, 10 iterations, top 10.
* ``cem_vjepa2ac_seed``: the budget quoted for V-JEPA 2-AC reaching (800 samples, 16 steps,
  top 80), 10 iterations.
* ``mppi_tdmpc2``: TD-MPC2 defaults (``tdmpc2/config.yaml``): 512 samples, horizon 3, 6
  iterations, 64 elites, temperature 0.5; std in [0.005, 0.1] rad per step (TD-MPC2's [0.05, 2]
  is for actions normalised to [-1, 1]).

Each budget plans ``warmup`` times, then ``repeats`` timed warm-started calls from the same state
(wall clock, ``time.perf_counter``); ``plan_ms_p50`` / ``plan_ms_p99`` are percentiles of those.

Rollout throughput (``jepa`` rows): ``rollout_gflops`` = the predictor's multiply-adds x 2 for one
rollout of the budget's S x H (counted from its ``nn.Linear`` shapes) / the measured median time of
``JepaWorldModel.rollout`` alone; ``rollout_fraction_of_matmul_peak`` divides it by
``matmul_peak_gflops``, the best fp32 1024 x 1024 x 1024 ``torch.mm`` throughput seen so far in
the run (timed at the start and after each rollout measurement, on the same threads; best-of-5 each
time), against the *median* rollout time: on a shared CPU the ratio is a conservative estimate
(SIM_AND_MODELS.md measured 164-182 GFLOP/s on 2 threads of this CPU).

Goal reach (``goal_reach`` row, with a world-model and/or goal-pose checkpoint):
``vla_mpc.goal_reach.evaluate`` over ``GOAL_REACH_GOALS`` goal images in the sim, routes ``jepa``
(goal-image latent), ``decoded`` (kinematic model + joint goal decoded by the learned proprio
head), ``estimated`` (kinematic model + end-effector goal read by the goal-pose estimator,
``$VLA_MPC_GOAL_POSE`` or the shipped ``checkpoints/panda/goal_pose``; the headline figure when
present) and ``oracle`` (true goal joints). The checkpoint is the directory in ``$VLA_MPC_WORLD_MODEL`` (default
``output/world_model/best`` under the current directory); without one the row says so.

torch runs on ``torch_threads`` threads (1 by default, as the node): these batches are too small to
gain from intra-op threads, and on a shared 2-core machine OpenMP threads that wait for each other
made calls 10-30x slower. Timings on shared CPUs are noisy: compare medians across runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from vla_mpc.models.world_model import KinematicCostConfig, KinematicWorldModel
from vla_mpc.planning.cem import CEM, CEMConfig
from vla_mpc.planning.mppi import MPPI, MPPIConfig

PREDICTOR = "KinematicWorldModel(panda) + TorchFK constraint costs"
DT = 0.1  # s per planning step
CHECKPOINT_ENV = "VLA_MPC_WORLD_MODEL"
DEFAULT_CHECKPOINT = Path("output/world_model/best")
GOAL_REACH_GOALS = 8
GOAL_POSE_ENV = "VLA_MPC_GOAL_POSE"


def _cost_config() -> KinematicCostConfig:
    return KinematicCostConfig(goal_weight=1.0, ee_goal_weight=5.0, action_weight=0.1, table_height=0.0,
                               keep_out_boxes=(((0.3, -0.1, 0.0), (0.5, 0.1, 0.3)),))


def _robot():
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    return RobotModel(load_robot_spec("panda"))


def _budgets() -> list[tuple[str, str, object]]:
    return [
        ("cem_vjepa2ac_repo", "cem", CEMConfig(num_samples=400, horizon=2, iterations=10, num_elites=10)),
        ("cem_vjepa2ac_seed", "cem", CEMConfig(num_samples=800, horizon=16, iterations=10, num_elites=80)),
        ("mppi_tdmpc2", "mppi", MPPIConfig(num_samples=512, horizon=3, iterations=6, num_elites=64,
                                           temperature=0.5, max_std=0.1, min_std=0.005)),
    ]


def goal_pose_path() -> Path | None:
    """``$VLA_MPC_GOAL_POSE`` or the shipped ``checkpoints/panda/goal_pose`` if it holds a
    goal-pose checkpoint, else None."""
    from vla_mpc.paths import share_dir

    p = Path(os.environ.get(GOAL_POSE_ENV, str(share_dir() / "checkpoints" / "panda" / "goal_pose"))).expanduser()
    return p if (p / "config.json").is_file() and (p / "model.safetensors").is_file() else None


def checkpoint_path() -> Path | None:
    """``$VLA_MPC_WORLD_MODEL`` or ``output/world_model/best`` if it holds a checkpoint, else None."""
    p = Path(os.environ.get(CHECKPOINT_ENV, str(DEFAULT_CHECKPOINT))).expanduser()
    return p if (p / "config.json").is_file() and (p / "model.safetensors").is_file() else None


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 ``torch.mm`` throughput [GFLOP/s] for n x n x n (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def predictor_flops(net: torch.nn.Module, samples: int, horizon: int) -> float:
    """FLOPs of one ``JepaWorldModel.rollout`` of ``samples`` x ``horizon``: 2 x multiply-adds
    of every ``nn.Linear`` in the predictor per sample and step (activations, concatenation and
    joint integration are not counted)."""
    macs = sum(m.in_features * m.out_features for m in net.predictor.modules() if isinstance(m, torch.nn.Linear))
    return 2.0 * macs * samples * horizon


def run(repeats: int = 20, warmup: int = 2, torch_threads: int = 1, goal_reach: bool = True) -> list[dict]:
    """Time ``plan()`` for each budget and predictor; rollout throughput; goal reach.

    Args:
        repeats: timed calls per budget (>= 1).
        warmup: untimed calls first (allocator and first-call overheads).
        torch_threads: intra-op threads while timing (restored afterwards).
        goal_reach: run the sim goal-reach evaluation when a checkpoint exists.

    Returns:
        One dict per (budget, predictor): ``name``, ``predictor``, ``planner``, ``num_samples``,
        ``horizon``, ``iterations``, ``num_elites``, ``plan_ms_p50``, ``plan_ms_p99``,
        ``torch_threads``, ``notes`` (+ ``rollout_ms_p50``, ``rollout_gflops``,
        ``rollout_fraction_of_matmul_peak``, ``matmul_peak_gflops`` for ``jepa``); then one
        ``goal_reach`` row.

    Raises:
        ValueError: if ``repeats < 1``, ``warmup < 0`` or ``torch_threads < 1``.
    """
    if repeats < 1 or warmup < 0 or torch_threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, torch_threads >= 1; got {repeats}, {warmup}, {torch_threads}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        return _run(repeats, warmup, goal_reach)
    finally:
        torch.set_num_threads(previous_threads)


def _time(fn, repeats: int, warmup: int) -> list[float]:
    out = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        fn()
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def _jepa_model(robot, ckpt: Path | None):
    from vla_mpc.models.jepa import JepaConfig, JepaNet, JepaWorldModel

    kin = KinematicWorldModel.from_robot_model(robot, DT, _cost_config())
    if ckpt is not None:
        model = JepaWorldModel.from_checkpoint(ckpt, robot=robot, cost_config=_cost_config())
        return model, f"JepaWorldModel({ckpt})"
    torch.manual_seed(0)
    net = JepaNet(JepaConfig.from_robot_spec(robot.spec, dt=DT))
    return JepaWorldModel(net, kin), "JepaWorldModel(untrained default JepaConfig: latency only)"


def _run(repeats: int, warmup: int, goal_reach: bool) -> list[dict]:
    robot = _robot()
    home = np.asarray(robot.spec.home, dtype=np.float64)
    kin = KinematicWorldModel.from_robot_model(robot, DT, _cost_config())
    ckpt = checkpoint_path()
    jepa, jepa_name = _jepa_model(robot, ckpt)
    size = jepa.net.config.image_size
    rng = np.random.default_rng(0)
    view, goal_view = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2))
    setups = {
        "kinematic": (kin, kin.encode(None, home), kin.make_goal(
            joint_positions=home + np.r_[0.3, 0.2, -0.2, 0.3, 0.0, -0.2, 0.1, 0.0], ee_position=[0.45, 0.1, 0.35]),
            PREDICTOR),
        "jepa": (jepa, jepa.encode(view, home), jepa.make_goal(image=goal_view), jepa_name),
    }
    peaks = [matmul_peak_gflops()]
    rows = []
    for name, kind, cfg in _budgets():
        for pred, (model, z0, goal, label) in setups.items():
            low, high = model.action_bounds(0.5)
            planner = (CEM if kind == "cem" else MPPI)(cfg, model.action_dim, low, high, seed=0)
            objective = model.objective(goal)
            times = _time(lambda: planner.plan(z0, model.rollout, objective), repeats, warmup)
            row = {
                "name": name, "predictor": pred, "planner": kind, "num_samples": cfg.num_samples,
                "horizon": cfg.horizon, "iterations": cfg.iterations, "num_elites": cfg.num_elites,
                "plan_ms_p50": float(np.percentile(times, 50)), "plan_ms_p99": float(np.percentile(times, 99)),
                "world_model": label, "torch_threads": torch.get_num_threads(),
                "notes": f"{repeats} warm-started calls, dt {model.dt} s, CPU",
            }
            if pred == "jepa":
                acts = 0.05 * torch.randn(cfg.num_samples, cfg.horizon, model.action_dim,
                                          generator=torch.Generator().manual_seed(0))
                rt = _time(lambda: model.rollout(z0, acts), max(repeats, 10), warmup)
                peaks.append(matmul_peak_gflops())  # interleaved: the best peak seen so far
                peak = max(peaks)
                gflops = predictor_flops(model.net, cfg.num_samples, cfg.horizon) / (np.median(rt) * 1e-3) / 1e9
                row.update({"rollout_ms_p50": float(np.median(rt)), "rollout_gflops": float(gflops),
                            "matmul_peak_gflops": float(peak), "rollout_fraction_of_matmul_peak": float(gflops / peak)})
            rows.append(row)
    rows.append(_goal_reach_row(ckpt, goal_reach))
    return rows


def _goal_reach_row(ckpt: Path | None, enabled: bool) -> dict:
    row = {"name": "goal_reach", "num_goals": GOAL_REACH_GOALS, "success_radius_m": 0.03}
    goal_pose = goal_pose_path()
    if ckpt is None and goal_pose is None:
        row["notes"] = (f"no world-model checkpoint (set ${CHECKPOINT_ENV} or train into {DEFAULT_CHECKPOINT}) and no "
                        f"goal-pose checkpoint (${GOAL_POSE_ENV} or checkpoints/panda/goal_pose): "
                        "goal_reach_success / goal_reach_error_m not measured")
        return row
    if not enabled:
        row["notes"] = "goal reach disabled for this run"
        return row
    from vla_mpc.goal_reach import evaluate

    res = evaluate(ckpt, num_goals=GOAL_REACH_GOALS, goal_pose=goal_pose)
    row["checkpoint"] = None if ckpt is None else str(ckpt)
    row["goal_pose_checkpoint"] = None if goal_pose is None else str(goal_pose)
    for route, r in res["routes"].items():
        row[f"goal_reach_success_{route}"] = r["goal_reach_success"]
        row[f"goal_reach_error_m_{route}"] = r["goal_reach_error_m"]
    headline = "estimated" if "estimated" in res["routes"] else "jepa"
    row["goal_reach_success"] = res["routes"][headline]["goal_reach_success"]
    row["goal_reach_error_m"] = res["routes"][headline]["goal_reach_error_m"]
    row["goal_reach_route"] = headline
    row["notes"] = (f"goal_reach_success / _error_m: the {headline} route ("
                    + ("goal image -> end-effector goal by the goal-pose estimator, the planner node's "
                       "goal_pose_checkpoint" if headline == "estimated" else "goal-image latent")
                    + "); see the per-route figures")
    return row


if __name__ == "__main__":
    for r in run():
        print(r)
