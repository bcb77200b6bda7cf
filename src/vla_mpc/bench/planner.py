"""Planner latency for three published sampling budgets (``python -m vla_mpc.bench planner``).

Predictor: the foundation ``KinematicWorldModel`` of the Panda (latent = 8 joint positions,
actions = per-step deltas), with the full objective: joint-space goal, end-effector goal, joint-limit
barrier and a table plane + one keep-out box through batched torch forward kinematics (``TorchFK``)
on every predicted step. A learned JEPA predictor costs far more per rollout; these figures are the
planner's own overhead plus the cheapest useful world model.

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
torch runs on ``torch_threads`` threads (1 by default, as the node): these batches are too small to
gain from intra-op threads, and on a shared 2-core machine OpenMP threads that wait for each other
made calls 10-30x slower. Timings on shared CPUs are noisy: compare medians across runs.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vla_mpc.models.world_model import KinematicCostConfig, KinematicWorldModel
from vla_mpc.planning.cem import CEM, CEMConfig
from vla_mpc.planning.mppi import MPPI, MPPIConfig

PREDICTOR = "KinematicWorldModel(panda) + TorchFK constraint costs"
DT = 0.1  # s per planning step


def _model() -> tuple[KinematicWorldModel, np.ndarray]:
    from vla_mpc.core.robot_model import RobotModel, load_robot_spec

    robot = RobotModel(load_robot_spec("panda"))
    cost = KinematicCostConfig(
        goal_weight=1.0, ee_goal_weight=5.0, action_weight=0.1, table_height=0.0,
        keep_out_boxes=(((0.3, -0.1, 0.0), (0.5, 0.1, 0.3)),),
    )
    return KinematicWorldModel.from_robot_model(robot, DT, cost), np.asarray(robot.spec.home, dtype=np.float64)


def _budgets() -> list[tuple[str, str, object]]:
    return [
        ("cem_vjepa2ac_repo", "cem", CEMConfig(num_samples=400, horizon=2, iterations=10, num_elites=10)),
        ("cem_vjepa2ac_seed", "cem", CEMConfig(num_samples=800, horizon=16, iterations=10, num_elites=80)),
        ("mppi_tdmpc2", "mppi", MPPIConfig(num_samples=512, horizon=3, iterations=6, num_elites=64,
                                           temperature=0.5, max_std=0.1, min_std=0.005)),
    ]


def run(repeats: int = 20, warmup: int = 2, torch_threads: int = 1) -> list[dict]:
    """Time ``plan()`` for each budget.

    Args:
        repeats: timed calls per budget (>= 1).
        warmup: untimed calls first (allocator and first-call overheads).
        torch_threads: intra-op threads while timing (restored afterwards).

    Returns:
        One dict per budget: ``name``, ``planner``, ``num_samples``, ``horizon``, ``iterations``,
        ``num_elites``, ``plan_ms_p50``, ``plan_ms_p99``, ``predictor``, ``torch_threads``, ``notes``.

    Raises:
        ValueError: if ``repeats < 1``, ``warmup < 0`` or ``torch_threads < 1``.
    """
    if repeats < 1 or warmup < 0 or torch_threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, torch_threads >= 1; got {repeats}, {warmup}, {torch_threads}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        return _run(repeats, warmup)
    finally:
        torch.set_num_threads(previous_threads)


def _run(repeats: int, warmup: int) -> list[dict]:
    model, home = _model()
    z0 = model.encode(None, home)
    goal = model.make_goal(joint_positions=home + np.r_[0.3, 0.2, -0.2, 0.3, 0.0, -0.2, 0.1, 0.0],
                           ee_position=[0.45, 0.1, 0.35])
    objective = model.objective(goal)
    low, high = model.action_bounds(0.5)
    rows = []
    for name, kind, cfg in _budgets():
        planner = CEM(cfg, model.action_dim, low, high, seed=0) if kind == "cem" else MPPI(
            cfg, model.action_dim, low, high, seed=0)
        times = []
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            planner.plan(z0, model.rollout, objective)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        rows.append({
            "name": name,
            "planner": kind,
            "num_samples": cfg.num_samples,
            "horizon": cfg.horizon,
            "iterations": cfg.iterations,
            "num_elites": cfg.num_elites,
            "plan_ms_p50": float(np.percentile(times, 50)),
            "plan_ms_p99": float(np.percentile(times, 99)),
            "predictor": PREDICTOR,
            "torch_threads": torch.get_num_threads(),
            "notes": f"{repeats} warm-started calls, dt {DT} s, CPU",
        })
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
