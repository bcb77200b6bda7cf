"""Closed-loop evaluation through the real ROS graph: success rate, safety cost, time, jerk.

    python -m vla_mpc.eval --robot panda --kinds reach,push,pick_place --episodes 50 \\
        --policy scripted|learned [--checkpoint P] [--mode vla|mpc|hybrid] --output DIR
        [--seed-offset 100000] [--timeout 30] [--record] [--set node.param=value]

Starts sim_robot, camera_ingest, policy, safety_monitor (and latent_mpc_planner for ``--mode mpc``
or ``hybrid``) once, waits until the sim, the safety monitor and the configured policy (its
checkpoint loaded) subscribe to ``/vla_mpc/episode``, then runs ``--episodes`` episodes per task
kind exactly as ``vla_mpc.collect`` does (``/vla_mpc/episode`` start -> ``episode_ready`` -> instruction -> success
or timeout -> end), on seeds ``seed_offset + i`` (``EVAL_SEED_OFFSET`` = 100000 and up: never used
for training). The policy is the ``scripted`` expert, or ``learned`` (policy parameters
``backend: learned``, ``checkpoint: P``); ``--mode`` sets ``latent_mpc_planner.mode``.

Metrics per episode (pure functions below, so they are tested on hand-made message sequences):

- success: the sim's ``/vla_mpc/sim/task_success`` became true before the timeout (SR = mean);
- CC, cumulative safety cost (VLA-Arena's count): the sum of step costs (``data[0]``) of the
  ``/vla_mpc/safety/cost`` messages received during the episode, one per command the safety
  monitor sent, 1 when a constraint was violated or enforced on that step (contract H);
- time to success [s of sim time] from the instruction to the first success;
- mean absolute jerk [rad/s^3] of the commands that reached the robot
  (``/forward_position_controller/commands``, the safety monitor's output): third finite
  differences over the arm joints with dt = 1 / ``safety_monitor.rate_hz`` (one output per control
  period), ``mean |q[t+3] - 3 q[t+2] + 3 q[t+1] - q[t]| / dt^3``.

Output: ``DIR/results.json`` (per task: SR, n, CC mean and total, time to success mean/median,
jerk; overall; every episode), ``DIR/sr_per_task.png`` (SR bar plot), ``DIR/logs/``, and with
``--record`` a rosbag2 in ``DIR/bag``. The default DIR is ``output/eval-<policy>-<mode>-<time>``,
where ``python -m vla_mpc.bench learning`` looks for the newest results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vla_mpc.collect import (
    DEFAULT_TIMEOUTS, EpisodeOutcome, EpisodePlan, GraphError, outcome_row, parse_kinds, plan_episodes,
)

POLICIES = ("scripted", "learned")
MODES = ("vla", "mpc", "hybrid")
RESULTS_FILE = "results.json"
PLOT_FILE = "sr_per_task.png"


# ------------------------------------------------------------------------------- pure metrics


def cumulative_cost(costs: Sequence[Sequence[float]]) -> float:
    """CC of one episode: the sum of the step costs.

    Args:
        costs: ``/vla_mpc/safety/cost`` payloads of the episode, each ``[step_cost, cumulative]``
            (a bare number is taken as the step cost).

    Returns:
        Sum of ``step_cost`` (0.0 for no messages).
    """
    total = 0.0
    for c in costs:
        step = c if isinstance(c, (int, float)) else c[0]
        total += float(step)
    return total


def monitor_cumulative(costs: Sequence[Sequence[float]]) -> float | None:
    """The safety monitor's own running total at the end of the episode (``data[1]`` of the last
    message); None without messages. Differs from :func:`cumulative_cost` when messages were lost."""
    last = [c for c in costs if not isinstance(c, (int, float)) and len(c) >= 2]
    return float(last[-1][1]) if last else None


def mean_abs_jerk(commands: np.ndarray | Sequence[Sequence[float]], dt: float, n_joints: int | None = None) -> float:
    """Mean absolute jerk of a command stream sampled every ``dt`` seconds.

    Args:
        commands: (T, dof) positions [rad]; rows in time order.
        dt: sample period [s], > 0.
        n_joints: use only the first ``n_joints`` columns (the arm joints; None: all).

    Returns:
        ``mean(|Δ³q| / dt³)`` over time and joints [rad/s³]; nan when T < 4.

    Raises:
        ValueError: ``dt <= 0`` or ``commands`` not 2-D.
    """
    if not dt > 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    q = np.asarray(commands, dtype=np.float64)
    if q.ndim != 2:
        raise ValueError(f"commands must be (T, dof), got shape {q.shape}")
    if n_joints is not None:
        q = q[:, :n_joints]
    if q.shape[0] < 4:
        return float("nan")
    return float(np.mean(np.abs(np.diff(q, n=3, axis=0))) / dt ** 3)


def episode_result(o: EpisodeOutcome, dt: float, n_joints: int | None) -> dict[str, Any]:
    """The results row of one episode: collect's row plus ``cc``, ``cc_monitor``, ``jerk`` and the
    policy node's timing: ``system1_latency_ms`` (mean of its reported System 1 inference latency
    [ms]) and ``control_gap_p99_ms`` (the largest reported p99 control tick period [ms]), None
    when the node reported none (a scripted System 1 still reports its latency).

    ``cc`` is None when the episode ran but no ``/vla_mpc/safety/cost`` message arrived (a safety
    monitor without the cost topic): unknown, not zero.
    """
    cmds = [c for c in o.commands if len(c) == len(o.commands[0])] if o.commands else []
    cc = cumulative_cost(o.costs) if o.costs or not o.ready else None
    latency = [t["inference_latency_ms"] for t in o.policy_timing if "inference_latency_ms" in t]
    gaps = [t["control_gap_p99_ms"] for t in o.policy_timing if "control_gap_p99_ms" in t]
    return {**outcome_row(o), "cc": cc, "cc_monitor": monitor_cumulative(o.costs),
            "cost_messages": len(o.costs), "commands": len(cmds),
            "jerk": _finite_or_none(mean_abs_jerk(cmds, dt, n_joints) if cmds else float("nan")),
            "system1_latency_ms": _mean(latency), "control_gap_p99_ms": max(gaps) if gaps else None}


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.mean(xs)) if xs else None


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-kind and overall (``"all"``) metrics from episode rows (:func:`episode_result`).

    Episodes that never became ready (``ready`` false: the graph failed) are counted in
    ``n_not_run`` and excluded from every rate. Episodes with ``cc`` None (no cost messages) are
    counted in ``cc_unknown`` and left out of the CC figures.

    Returns:
        ``{kind: {"n", "n_not_run", "sr", "successes", "cc_mean", "cc_total", "cc_episodes_with_cost",
        "cc_unknown", "time_to_success_mean", "time_to_success_median", "jerk_mean",
        "system1_latency_ms_mean", "control_gap_p99_ms_max"}}``; rates and means are None without
        episodes (or without the figure: rows from before it was recorded).
    """
    kinds = sorted({r["kind"] for r in rows})
    out: dict[str, dict[str, Any]] = {}
    for key in kinds + ["all"]:
        sel = [r for r in rows if key == "all" or r["kind"] == key]
        ran = [r for r in sel if r.get("ready", True)]
        tts = [r["time_to_success_s"] for r in ran if r["success"] and r["time_to_success_s"] is not None]
        gaps = [r["control_gap_p99_ms"] for r in ran if r.get("control_gap_p99_ms") is not None]
        out[key] = {
            "n": len(ran), "n_not_run": len(sel) - len(ran),
            "successes": sum(bool(r["success"]) for r in ran),
            "sr": (sum(bool(r["success"]) for r in ran) / len(ran)) if ran else None,
            "cc_mean": _mean([r["cc"] for r in ran]),
            "cc_total": float(sum(r["cc"] for r in ran if r["cc"] is not None)),
            "cc_episodes_with_cost": sum(r["cc"] is not None and r["cc"] > 0 for r in ran),
            "cc_unknown": sum(r["cc"] is None for r in ran),
            "time_to_success_mean": _mean(tts),
            "time_to_success_median": float(np.median(tts)) if tts else None,
            "jerk_mean": _mean([r["jerk"] for r in ran]),
            "system1_latency_ms_mean": _mean([r.get("system1_latency_ms") for r in ran]),
            "control_gap_p99_ms_max": max(gaps) if gaps else None,
        }
    return out


def plot_sr(per_task: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """Bar plot of SR per task (``"all"`` last) with n and successes on each bar; writes ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in per_task if k != "all"] + (["all"] if "all" in per_task else [])
    srs = [per_task[k]["sr"] or 0.0 for k in names]
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.8))
    colours = ["tab:blue"] * (len(names) - 1) + ["tab:gray"] if "all" in names else ["tab:blue"] * len(names)
    bars = ax.bar(names, srs, color=colours)
    for b, k in zip(bars, names):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.02,
                f"{per_task[k]['successes']}/{per_task[k]['n']}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------- running


def evaluate(runner, plans: Sequence[EpisodePlan], dt: float, n_joints: int | None,
             log=print, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:  # noqa: ANN001
    """Run ``plans`` with a started :class:`vla_mpc.collect.EpisodeRunner` (``collect_metrics=True``)
    and return the episode rows. Stops early (GraphError) when a node dies; rows are appended to
    ``rows`` when given, so the episodes finished before that are kept."""
    rows = [] if rows is None else rows
    for plan in plans:
        o = runner.run_episode(plan)
        row = episode_result(o, dt, n_joints)
        rows.append(row)
        log(f"[eval] {plan.kind} seed {plan.seed}: {'SUCCESS' if o.success else 'fail'} "
            f"tts {o.time_to_success_s} cc {row['cc']} jerk {row['jerk']} wall {o.wall_s:.1f} s"
            f"{'; ' + o.error if o.error else ''}")
        if o.error and not any(r["ready"] for r in rows):
            raise GraphError(f"first episode never became ready: {o.error}")
    return rows


def safety_rate_hz(overrides: dict[str, dict[str, Any]]) -> float:
    """The safety monitor's output rate [Hz]: an override, else ``config/params/safety_monitor.yaml``."""
    if "rate_hz" in overrides.get("safety_monitor", {}):
        return float(overrides["safety_monitor"]["rate_hz"])
    import yaml

    from vla_mpc.paths import share_dir

    f = share_dir() / "config/params/safety_monitor.yaml"
    return float(yaml.safe_load(f.read_text())["safety_monitor"]["ros__parameters"]["rate_hz"])


def run(robot: str, kinds: Sequence[str], episodes: int, policy: str, mode: str, output: Path,
        checkpoint: Path | None = None, seed_offset: int | None = None, timeouts: dict[str, float] | None = None,
        record: bool = False, overrides: dict[str, dict[str, Any]] | None = None,
        startup_timeout_s: float = 120.0, log=print) -> dict[str, Any]:  # noqa: ANN001
    """Start the graph, evaluate, write ``results.json`` and the SR plot; returns the results dict.

    Raises:
        ValueError: a seed below ``EVAL_SEED_OFFSET``, ``learned`` without a checkpoint, bad mode.
    """
    from vla_mpc.bringup import Bringup
    from vla_mpc.collect import GraphSession
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.ros.runtime import isolate_ros_network
    from vla_mpc.sim.tasks import EVAL_SEED_OFFSET

    seed_offset = EVAL_SEED_OFFSET if seed_offset is None else seed_offset
    if seed_offset < EVAL_SEED_OFFSET:
        raise ValueError(f"evaluation seeds start at EVAL_SEED_OFFSET={EVAL_SEED_OFFSET} (training seeds are below); "
                         f"got seed offset {seed_offset}")
    if policy not in POLICIES or mode not in MODES:
        raise ValueError(f"policy must be one of {POLICIES} and mode one of {MODES}, got {policy!r}, {mode!r}")
    if policy == "learned" and checkpoint is None:
        raise ValueError("--policy learned needs --checkpoint")
    plans = _eval_plans(robot, kinds, episodes, seed_offset, policy, timeouts)
    isolate_ros_network()
    output.mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict[str, Any]] = {
        "policy": {"backend": policy, "autostart": True},
        "safety_monitor": {"intervention_log": str(output / "safety_interventions.jsonl")},
    }
    if checkpoint is not None:
        # relative paths: from this directory when it exists here, else the policy node's own rule
        # (relative to the package share directory)
        merged["policy"]["checkpoint"] = str(checkpoint.resolve() if checkpoint.exists() else checkpoint)
    if mode != "vla":
        merged["latent_mpc_planner"] = {"mode": mode}
    for node, params in (overrides or {}).items():
        merged.setdefault(node, {}).update(params)
    dt = 1.0 / safety_rate_hz(merged)
    n_arm = len(load_robot_spec(robot).arm_joint_names)
    bringup = Bringup(robot=robot, sim=True, use_sim_time=True, record_dir=(output / "bag") if record else None,
                      log_dir=output / "logs", overrides=merged,
                      exclude=("latent_mpc_planner",) if mode == "vla" else ())
    rows: list[dict[str, Any]] = []
    with GraphSession(bringup, "vla_mpc_eval", "[eval]", log, collect_metrics=True) as session:
        # The policy subscribes to /vla_mpc/episode once configured (its checkpoint loaded): an
        # episode started before that would count the node's start-up (about 10 s) as its own time.
        session.runner.wait_for_graph(["sim_robot", "safety_monitor", "policy"] + (["recorder"] if record else []),
                                      startup_timeout_s)
        evaluate(session.runner, plans, dt, n_arm, log, rows=rows)
    error, codes, wall = session.error, session.exit_codes, session.wall_s
    per_task = aggregate(rows) if rows else {}
    results = {
        "robot": robot, "policy": policy, "mode": mode, "checkpoint": str(checkpoint) if checkpoint else None,
        "kinds": list(kinds), "episodes_per_kind": episodes, "seed_offset": seed_offset,
        "jerk_dt_s": dt, "jerk_joints": n_arm, "per_task": per_task, "episodes": rows, "error": error,
        "exit_codes": codes, "wall_s": round(wall, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (output / RESULTS_FILE).write_text(json.dumps(results, indent=1))
    if per_task:
        plot_sr(per_task, output / PLOT_FILE, f"{robot} {policy} ({mode}), seeds {seed_offset}+")
    return results


def _eval_plans(robot: str, kinds: Sequence[str], episodes: int, seed_offset: int, policy: str,
                timeouts: dict[str, float] | None) -> list[EpisodePlan]:
    """Evaluation episodes: ``plan_episodes`` on seeds from ``seed_offset``, source ``eval-<policy>``."""
    from dataclasses import replace

    plans = plan_episodes(robot, kinds, episodes, seed_offset, "expert", timeouts)
    return [replace(p, source=f"eval-{policy}") for p in plans]


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.eval``; prints the per-task summary as JSON."""
    from vla_mpc.bringup import parse_overrides
    from vla_mpc.graph import ROBOTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="panda", choices=ROBOTS)
    ap.add_argument("--kinds", default="reach,push,pick_place", help="comma-separated task kinds")
    ap.add_argument("--episodes", type=int, default=10, help="episodes per task kind")
    ap.add_argument("--policy", default="scripted", choices=POLICIES)
    ap.add_argument("--checkpoint", type=Path, default=None, help="learned policy checkpoint directory")
    ap.add_argument("--mode", default="vla", choices=MODES, help="latent_mpc_planner mode (vla: planner off)")
    ap.add_argument("--seed-offset", type=int, default=None, help="first seed (default EVAL_SEED_OFFSET=100000)")
    ap.add_argument("--timeout", type=float, default=None,
                    help=f"episode timeout [s sim] for every kind (default per kind: {DEFAULT_TIMEOUTS})")
    ap.add_argument("--record", action="store_true", help="also record a rosbag2 in OUTPUT/bag")
    ap.add_argument("--output", type=Path, default=None, help="default output/eval-<policy>-<mode>-<time>")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="parameter override")
    a = ap.parse_args(argv)
    kinds = parse_kinds(a.kinds)
    output = a.output or Path("output") / time.strftime(f"eval-{a.policy}-{a.mode}-%Y%m%d-%H%M%S")
    try:
        res = run(a.robot, kinds, a.episodes, a.policy, a.mode, output, a.checkpoint, a.seed_offset,
                  {k: a.timeout for k in kinds} if a.timeout else None, a.record, parse_overrides(a.set))
    except ValueError as exc:
        ap.error(str(exc))
    print(json.dumps({"output": str(output), "error": res["error"],
                      "per_task": {k: {m: v[m] for m in ("n", "sr", "cc_mean", "time_to_success_mean", "jerk_mean")}
                                   for k, v in res["per_task"].items()}}))
    return 0 if res["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
