"""``make demo``: the whole graph drives the simulated robot, then a summary from the recording.

    python -m vla_mpc.demo [--robot panda] [--kind pick_place] [--seed 100000] [--policy auto]
        [--instruction TEXT] [--duration 60] [--output output/demo-<time>]
        [--set policy.control_rate_hz=200]

Runs sim_robot -> camera_ingest -> policy -> safety_monitor (planner beside it) with the recorder
on, runs one episode of the task suite (the sim resets to ``sample_episode(robot, kind, seed)``,
the sampled instruction is published), stops at task success (plus a short settle time) or after
``--duration`` seconds of sim time, then reads the rosbag2 it recorded and prints: the measured rate of each
topic (wall clock), the inter-message gap p99 of the command streams, safety interventions and the
task outcome. The output folder keeps the bag (MCAP), every node's log, the safety intervention
log, ``summary.json`` and the PNG pictures of :mod:`vla_mpc.pictures` (camera frames with the
commanded end-effector path, the path in base_link, joints against their limits, inter-arrival
histograms, the planner's imagined rollouts).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_mpc.bringup import Bringup, parse_overrides

# Topics whose rate the summary reports, in graph order.
REPORTED_TOPICS = (
    "/joint_states",
    "/camera/front/image_raw",
    "/vla_mpc/observation/front/image",
    "/vla_mpc/latent",
    "/vla_mpc/action_chunk",
    "/vla_mpc/joint_command",
    "/forward_position_controller/commands",
    "/vla_mpc/planner/cost",
    "/vla_mpc/imagined_rollouts",
    "/vla_mpc/sim/object_poses",
    "/clock",
)
COMMAND_TOPICS = ("/vla_mpc/joint_command", "/forward_position_controller/commands")


@dataclass
class TopicStats:
    """Receive-time statistics of one topic (wall clock of the recorder)."""

    count: int
    rate_hz: float
    gap_ms_p99: float


@dataclass
class BagSummary:
    """What the demo reads back from its recording."""

    topics: dict[str, TopicStats] = field(default_factory=dict)
    interventions: dict[str, int] = field(default_factory=dict)
    task_success: bool | None = None
    safety_states: list[str] = field(default_factory=list)
    error: str | None = None                    # set when the bag could be read only in part


def _stats(times_ns: list[int]) -> TopicStats:
    t = np.asarray(sorted(times_ns), dtype=np.float64) * 1e-9
    if t.size < 2:
        return TopicStats(int(t.size), 0.0, float("nan"))
    gaps = np.diff(t)
    # rate over the active span: the first and last message bound the window
    return TopicStats(int(t.size), float((t.size - 1) / (t[-1] - t[0])), float(np.percentile(gaps, 99) * 1e3))


def read_bag(bag: Path) -> BagSummary:
    """Read the demo's recording for the summary. A truncated or corrupt bag gives what was
    readable and sets ``error`` (nothing raises for bag damage).

    Args:
        bag: rosbag2 directory.
    """
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Bool, String

    from vla_mpc.replay import Bag

    out = BagSummary()
    times: dict[str, list[int]] = {}
    try:
        reader = Bag(bag)
        for topic, t_ns, raw in reader.messages():
            times.setdefault(topic, []).append(t_ns)
            if topic == "/vla_mpc/safety/interventions":
                st = deserialize_message(raw, DiagnosticStatus)
                kv = {k.key: k.value for k in st.values}
                key = kv.get("reason", st.message or "unknown").split(" ")[0]
                out.interventions[key] = out.interventions.get(key, 0) + 1
            elif topic == "/vla_mpc/sim/task_success":
                out.task_success = bool(out.task_success) or deserialize_message(raw, Bool).data
            elif topic == "/vla_mpc/safety/state":
                s = deserialize_message(raw, String).data
                if not out.safety_states or out.safety_states[-1] != s:
                    out.safety_states.append(s)
        if not reader.status.complete:
            out.error = f"bag read stopped: {reader.status.stopped_at}"
    except Exception as exc:  # noqa: BLE001 - keep what was read, say where it stopped
        out.error = f"bag read stopped: {type(exc).__name__}: {exc}"
    out.topics = {t: _stats(v) for t, v in times.items()}
    return out


def format_summary(summary: BagSummary, meta: dict[str, Any]) -> str:
    """The human-readable summary block printed at the end of the demo."""
    lines = [
        "",
        "=" * 72,
        f"vla_mpc demo: robot {meta['robot']}, instruction {meta['instruction']!r}",
        f"ran {meta['wall_s']:.1f} s wall; output in {meta['output']}",
        "-" * 72,
        f"{'topic':45s} {'msgs':>7s} {'rate Hz':>9s} {'gap p99 ms':>10s}",
    ]
    for topic in REPORTED_TOPICS:
        st = summary.topics.get(topic)
        if st is None:
            lines.append(f"{topic:45s} {0:7d} {'-':>9s} {'-':>10s}")
        else:
            lines.append(f"{topic:45s} {st.count:7d} {st.rate_hz:9.1f} {st.gap_ms_p99:10.1f}")
    lines.append("-" * 72)
    total = sum(summary.interventions.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(summary.interventions.items())) or "none"
    lines.append(f"safety interventions: {total} ({detail})")
    states = summary.safety_states
    if len(states) > 8:
        from collections import Counter

        visits = ", ".join(f"{k} x{v}" for k, v in Counter(states).items())
        lines.append(f"safety states: {len(states) - 1} transitions ({visits}); final {states[-1]}")
    else:
        lines.append(f"safety states: {' -> '.join(states) or 'none recorded'}")
    outcome = {True: "SUCCESS", False: "not achieved", None: "unknown (no success topic)"}[summary.task_success]
    lines.append(f"task outcome: {outcome}")
    if summary.error:
        lines.append(f"warning: {summary.error}")
    lines.append("=" * 72)
    return "\n".join(lines)


DEFAULT_KIND = "pick_place"
#: The default task when the demo runs the shipped learned policy: the one it solves (README,
#: "Measured": reach 41/50 unseen seeds without ROS; push and pick_place are not there yet).
DEFAULT_LEARNED_KIND = "reach"
DEFAULT_SEED = 100_000  # vla_mpc.sim.tasks.EVAL_SEED_OFFSET: a layout never used for training


def default_checkpoint(robot: str) -> Path | None:
    """The shipped policy checkpoint of ``robot`` (``checkpoints/<robot>/policy`` in the share
    dir), or None when there is none."""
    from vla_mpc.paths import share_dir

    path = share_dir() / "checkpoints" / robot / "policy"
    return path if (path / "config.json").is_file() and (path / "model.safetensors").is_file() else None


def default_kind(robot: str, policy: str) -> str:
    """The demo's task when ``--kind`` is not given: reach for gr1 (its only task) and for the
    shipped learned policy (``policy`` ``learned``, or ``auto`` with a checkpoint shipped), else
    :data:`DEFAULT_KIND`."""
    learned = policy == "learned" or (policy == "auto" and default_checkpoint(robot) is not None)
    return "reach" if robot == "gr1" else DEFAULT_LEARNED_KIND if learned else DEFAULT_KIND


def policy_params(policy: str, robot: str) -> dict[str, Any]:
    """Policy-node parameters for ``--policy`` (``auto``: learned when a shipped checkpoint exists).

    Raises:
        FileNotFoundError: ``learned`` without a shipped checkpoint (the path searched is named).
    """
    ckpt = default_checkpoint(robot)
    if policy == "auto":
        policy = "learned" if ckpt is not None else "scripted"
    if policy == "scripted":
        return {"backend": "scripted"}
    if ckpt is None:
        raise FileNotFoundError(f"no shipped checkpoint for {robot!r} (checkpoints/{robot}/policy); train one "
                                "(README: Tasks, data, training) or pass --set policy.checkpoint=DIR")
    return {"backend": "learned", "checkpoint": str(ckpt)}


def run(robot: str, kind: str, seed: int, instruction: str | None, duration_s: float, output: Path,
        overrides: dict[str, dict[str, Any]], policy: str = "auto", settle_s: float = 3.0) -> dict[str, Any]:
    """Run one episode of the task suite through the graph and return the summary dict (also
    written to ``output/summary.json``).

    The episode runs as ``vla_mpc.collect`` runs them (docs/DESIGN.md, Episodes): the sim resets to
    ``sample_episode(robot, kind, seed)`` and the instruction is the sampled one unless
    ``instruction`` is given (it must name an object of that scene).
    """
    from vla_mpc.collect import EpisodePlan, GraphSession
    from vla_mpc.ros.runtime import isolate_ros_network
    from vla_mpc.sim.tasks import sample_episode

    isolate_ros_network()
    output.mkdir(parents=True, exist_ok=True)
    spec = sample_episode(robot, kind, seed)
    plan = EpisodePlan(0, robot, kind, seed, instruction or spec.instruction, "demo", float(duration_s))
    merged: dict[str, dict[str, Any]] = {
        "policy": {"autostart": True, **policy_params(policy, robot)},
        "safety_monitor": {"intervention_log": str(output / "safety_interventions.jsonl")},
    }
    for node, params in overrides.items():
        merged.setdefault(node, {}).update(params)
    print(f"[demo] {robot}: {kind} seed {seed}: {plan.instruction!r}, policy backend {merged['policy']['backend']}")
    bringup = Bringup(robot=robot, sim=True, use_sim_time=True, record_dir=output / "bag",
                      log_dir=output / "logs", overrides=merged)
    outcome = None
    with GraphSession(bringup, "vla_mpc_demo", "[demo]", settle_s=settle_s, wall_factor=2.0) as session:
        session.runner.wait_for_graph(["sim_robot", "policy"])
        outcome = session.runner.run_episode(plan)
    wall_s, codes, dead = session.wall_s, session.exit_codes, session.dead
    from vla_mpc.pictures import make_pictures

    summary = read_bag(output / "bag")
    try:
        pictures, _data = make_pictures(output / "bag", output, robot)
    except Exception as exc:  # noqa: BLE001 - the summary still matters without pictures
        print(f"[demo] pictures failed: {type(exc).__name__}: {exc}")
        pictures = []
    meta = {"robot": robot, "kind": kind, "seed": seed, "instruction": plan.instruction,
            "policy": merged["policy"].get("backend"), "wall_s": wall_s, "output": str(output)}
    print(format_summary(summary, meta))
    result = {
        **meta,
        "exit_codes": codes,
        "early_exits": dead,
        "episode": None if outcome is None else {"ready": outcome.ready, "success": outcome.success,
                                                  "time_to_success_s": outcome.time_to_success_s,
                                                  "error": outcome.error},
        "topics": {t: vars(s) for t, s in summary.topics.items()},
        "interventions": summary.interventions,
        "safety_states": summary.safety_states,
        "task_success": summary.task_success,
        "pictures": [str(p) for p in pictures],
        "bag_error": summary.error,
    }
    (output / "summary.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make demo``."""
    from vla_mpc.sim.tasks import TASK_KINDS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="panda", choices=("panda", "ur5e", "gr1"))
    ap.add_argument("--kind", default=None, choices=TASK_KINDS,
                    help=f"task of the suite (default {DEFAULT_KIND} with the scripted expert, "
                         f"{DEFAULT_LEARNED_KIND} with the shipped learned policy; reach for gr1, its only task)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="scene layout and instruction seed")
    ap.add_argument("--instruction", default=None, help="override the sampled instruction (name a scene object)")
    ap.add_argument("--policy", default="auto", choices=("auto", "learned", "scripted"),
                    help="auto: the shipped learned checkpoint when there is one, else the scripted expert")
    ap.add_argument("--duration", type=float, default=60.0, help="episode timeout [s of sim time]")
    ap.add_argument("--output", type=Path, default=None, help="output folder (default output/demo-<time>)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="parameter override")
    a = ap.parse_args(argv)
    output = a.output or Path("output") / time.strftime("demo-%Y%m%d-%H%M%S")
    kind = a.kind or default_kind(a.robot, a.policy)
    result = run(a.robot, kind, a.seed, a.instruction, a.duration, output, parse_overrides(a.set), a.policy)
    return 0 if not result["early_exits"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
