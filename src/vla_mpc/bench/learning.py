"""Learning benchmark (issue 5 "done when"): expert SR, learned-policy SR and CC, training minutes.

``python -m vla_mpc.bench learning`` prints one JSON line per row ``run()`` returns:

* ``{"name": "expert", "robot": "panda", "expert_sr": {kind: SR}, "expert_sr_min": ..., "episodes": n,
  "seed_start": 100000, "source": "vla_mpc.sim.rollout.expert_success_rates"}``: the scripted expert
  in the sim without ROS (``vla_mpc.sim.rollout``), ``VLA_MPC_BENCH_EXPERT_EPISODES`` episodes per
  Franka task kind (default 20; 0 skips the row) on the evaluation seeds.
* ``{"name": "learned_policy", "sr_reach", "sr_push", "sr_pick_place", "cc", "cc_per_task",
  "episodes_per_kind", "mode", "checkpoint", "source": <results.json read>}``: from the newest
  ``results.json`` of a learned-policy evaluation (``python -m vla_mpc.eval --policy learned``).
  Where it looks, in order: ``VLA_MPC_EVAL_RESULTS`` (one results.json path, or several joined by
  ``os.pathsep``: each task from the first that ran it, pooled with later runs of the task on
  other seeds, :func:`merge_learned_rows`); else the newest
  (modification time) ``output/eval-*/results.json`` with ``"policy": "learned"`` under the
  current directory and the repository root. With ``VLA_MPC_BENCH_RUN_EVAL=N`` it first runs a
  fresh N-episodes-per-kind evaluation of the policy checkpoint (below) through the ROS graph and
  reports that. ``cc`` is the mean cumulative safety cost per episode over all kinds.
* ``{"name": "training", "train_minutes_policy", "train_minutes_world_model", "steps_policy",
  "steps_world_model", "source_policy", "source_world_model"}``: from ``train_summary.json``
  (written by ``vla_mpc.training.loop``) in the checkpoint directory or its parent; a staged run
  (``train policy|world_model --init``) adds the minutes and steps of the run it started from, following
  the summaries' ``init`` fields (``stages`` counts them), as long as the model still holds that
  stage's work (:func:`staged_cost`: a stage whose system a later stage started afresh is not
  counted). Checkpoints:
  ``VLA_MPC_POLICY_CHECKPOINT`` / ``VLA_MPC_WORLD_MODEL_CHECKPOINT``, else the shipped
  ``checkpoints/panda/policy`` and ``checkpoints/panda/world_model`` under the share directory.

A missing input gives that row with ``null`` figures and a ``note`` saying what was not found.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

FRANKA_KINDS = ("reach", "push", "pick", "pick_place")
EVAL_KINDS = ("reach", "push", "pick_place")
ROBOT = "panda"


def _share() -> Path:
    from vla_mpc.paths import share_dir

    return share_dir()


def default_checkpoint(which: str) -> Path:
    """``checkpoints/panda/<which>`` under the share directory, or the environment override."""
    env = {"policy": "VLA_MPC_POLICY_CHECKPOINT", "world_model": "VLA_MPC_WORLD_MODEL_CHECKPOINT"}[which]
    return Path(os.environ[env]) if os.environ.get(env) else _share() / "checkpoints" / ROBOT / which


def find_latest_results(roots: Iterable[Path], policy: str = "learned") -> Path | None:
    """The newest ``<root>/output/eval-*/results.json`` (by modification time) whose ``policy``
    field equals ``policy``; None if there is none. Unreadable files are skipped."""
    found: list[tuple[float, Path]] = []
    for root in roots:
        for p in Path(root).glob("output/eval-*/results.json"):
            try:
                if json.loads(p.read_text()).get("policy") == policy:
                    found.append((p.stat().st_mtime, p))
            except (OSError, ValueError):
                continue
    return max(found)[1] if found else None


def learned_row(results: dict[str, Any], source: str) -> dict[str, Any]:
    """The learned-policy row from an eval ``results.json`` dict."""
    per = results.get("per_task", {})
    row: dict[str, Any] = {"name": "learned_policy", "robot": results.get("robot"), "policy": results.get("policy"),
                           "mode": results.get("mode"),
                           "checkpoint": results.get("checkpoint"),
                           "episodes_per_kind": results.get("episodes_per_kind"), "source": source}
    for kind in EVAL_KINDS:
        row[f"sr_{kind}"] = per.get(kind, {}).get("sr")
    row["cc"] = per.get("all", {}).get("cc_mean")
    row["cc_per_task"] = {k: v.get("cc_mean") for k, v in per.items() if k != "all"}
    row["time_to_success_s"] = {k: v.get("time_to_success_mean") for k, v in per.items() if k != "all"}
    row["jerk"] = per.get("all", {}).get("jerk_mean")
    row["episodes_per_task"] = {k: v.get("n") for k, v in per.items() if k != "all"}
    row["jerk_per_task"] = {k: v.get("jerk_mean") for k, v in per.items() if k != "all"}
    seeds: dict[str, list[int]] = {}
    for ep in results.get("episodes") or ():
        if isinstance(ep, dict) and ep.get("kind") in row["episodes_per_task"] and isinstance(ep.get("seed"), int):
            seeds.setdefault(ep["kind"], []).append(ep["seed"])
    row["seeds_per_task"] = {k: sorted(v) for k, v in seeds.items()}
    if results.get("error"):
        row["note"] = f"evaluation stopped early: {results['error']}"
    return row


def merge_learned_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One learned-policy row from the rows of several evaluations (e.g. 50 reach episodes in one
    run, push and pick_place in another): each task's figures come from the first row that has
    the task, pooled with any later row that ran the task on seeds none of the rows taken ran (e.g.
    push on seeds 100000-100019 in one run and 100020-100049 in another: both rows must list their
    seeds, ``seeds_per_task``). Pooled: SR and ``cc`` weighted by episodes, time to success by
    successes, jerk by episodes. ``cc`` and ``jerk`` overall are the episode-weighted means over the
    tasks; ``source`` / ``checkpoint`` list every row used.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("merge_learned_rows needs at least one row")
    if len(rows) == 1:
        return rows[0]
    out: dict[str, Any] = {"name": "learned_policy", "robot": rows[0].get("robot"), "policy": rows[0].get("policy"),
                           "mode": rows[0].get("mode"), "checkpoint": [], "source": [], "episodes_per_task": {},
                           "cc_per_task": {}, "time_to_success_s": {}, "jerk_per_task": {}}
    out["seeds_per_task"] = {}
    for kind in EVAL_KINDS:
        out[f"sr_{kind}"] = None
        taken: list[dict[str, Any]] = []
        seen: set[int] = set()  # seeds of the rows taken
        for row in rows:
            if kind not in row.get("episodes_per_task", {}):
                continue
            seeds = row.get("seeds_per_task", {}).get(kind)
            if taken and not (seen and seeds and seen.isdisjoint(seeds)):
                continue  # the first row's seeds unknown, this row's unknown, or run before
            taken.append(row)
            seen |= set(seeds or ())
            for key in ("checkpoint", "source"):
                if row.get(key) not in out[key]:
                    out[key].append(row.get(key))
        if not taken:
            continue
        if len(taken) == 1:
            row = taken[0]
            out[f"sr_{kind}"] = row.get(f"sr_{kind}")
            for key in ("episodes_per_task", "cc_per_task", "time_to_success_s", "jerk_per_task", "seeds_per_task"):
                if kind in row.get(key, {}):
                    out[key][kind] = row[key][kind]
            continue
        ns = [int(r["episodes_per_task"][kind] or 0) for r in taken]
        srs = [r.get(f"sr_{kind}") or 0.0 for r in taken]
        wins = [sr * n for sr, n in zip(srs, ns)]

        def pooled(key: str, weights: list[float]) -> float | None:
            terms = [(r.get(key, {}).get(kind), w) for r, w in zip(taken, weights)]
            terms = [(v, w) for v, w in terms if v is not None and w > 0]
            return sum(v * w for v, w in terms) / sum(w for _, w in terms) if terms else None

        out["episodes_per_task"][kind] = sum(ns)
        out[f"sr_{kind}"] = sum(wins) / sum(ns) if sum(ns) else None
        out["cc_per_task"][kind] = pooled("cc_per_task", ns)
        out["jerk_per_task"][kind] = pooled("jerk_per_task", ns)
        out["time_to_success_s"][kind] = pooled("time_to_success_s", wins)
        out["seeds_per_task"][kind] = sorted(s for r in taken for s in r["seeds_per_task"][kind])
    n = {k: v for k, v in out["episodes_per_task"].items() if v}

    def weighted(per: dict[str, Any]) -> float | None:
        terms = [(per[k], n[k]) for k in n if per.get(k) is not None]
        return sum(v * w for v, w in terms) / sum(w for _, w in terms) if terms else None

    out["cc"], out["jerk"] = weighted(out["cc_per_task"]), weighted(out["jerk_per_task"])
    notes = [r["note"] for r in rows if r.get("note")]
    if notes:
        out["note"] = "; ".join(notes)
    return out


def train_summary(checkpoint: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """``train_summary.json`` in ``checkpoint`` or its parent (the training output directory)."""
    for p in (checkpoint / "train_summary.json", checkpoint.parent / "train_summary.json"):
        if p.is_file():
            try:
                return json.loads(p.read_text()), p
            except ValueError:
                continue
    return None, None


#: The parts of a policy a training stage may train or start afresh (``train_summary.json``'s
#: ``trained`` / ``fresh``, written by ``train policy``).
SYSTEMS = ("system1", "system2")


def staged_cost(checkpoint: Path, max_stages: int = 10) -> tuple[float, int, int, list[str]]:
    """Minutes and steps of ``checkpoint``'s training plus every earlier stage it was initialised
    from (``init`` in ``train_summary.json``; a relative ``init`` is taken from the summary's
    folder, as in a shipped checkpoint that carries its earlier stages' summaries) whose work the
    model still holds.

    A policy stage's summary may say which systems it ``trained`` and which it started ``fresh``
    (re-initialised: ``train policy`` without ``--init``, or with ``--expert-width`` /
    ``--feature-points`` on an ``--init``). Walking from the newest stage back, a system a stage
    started fresh drops out of the model's history: an earlier stage counts only if it trained a
    system that is still in it. So a fresh System 2 trained for a kept System 1 costs its own
    minutes plus System 1's stages, not the System 2 stages it replaced. A summary without these
    fields (world models, older policies) trained everything and starts fresh only without
    ``init``.

    Returns:
        (minutes, steps, stages counted, notes); ``stages`` is 0 when ``checkpoint`` has no
        summary. An ``init`` whose summary is missing, or a cycle, ends the chain with a note; a
        stage whose work was replaced is named in a note.
    """
    minutes, steps, stages, walked, notes, seen = 0.0, 0, 0, 0, [], set()
    live = set(SYSTEMS)  # systems whose earlier training is still in the model
    ckpt: Path | None = checkpoint
    while ckpt is not None and walked < max_stages:
        summary, path = train_summary(ckpt)
        if summary is None:
            if walked:
                notes.append(f"stage {walked + 1}: no train_summary.json in {ckpt} or its parent (not counted)")
            break
        if path.resolve() in seen:
            notes.append(f"init cycle at {path}")
            break
        seen.add(path.resolve())
        walked += 1
        trained = set(summary.get("trained", SYSTEMS))
        if trained & live:
            minutes += float(summary["minutes"])
            steps += int(summary.get("steps") or 0)
            stages += 1
        else:
            notes.append(f"{path} not counted: that stage trained {sorted(trained)}, which a later stage "
                         f"started afresh")
        live -= set(summary.get("fresh", () if summary.get("init") else SYSTEMS))
        init = Path(summary["init"]) if summary.get("init") else None
        ckpt = init if init is None or init.is_absolute() else path.parent / init  # shipped: relative
    return minutes, steps, stages, notes


def training_row(policy_ckpt: Path, world_model_ckpt: Path) -> dict[str, Any]:
    """Training minutes and steps of both checkpoints, all stages summed (None where no summary
    was found)."""
    row: dict[str, Any] = {"name": "training"}
    notes = []
    for key, ckpt in (("policy", policy_ckpt), ("world_model", world_model_ckpt)):
        summary, path = train_summary(ckpt)
        minutes, steps, stages, stage_notes = staged_cost(ckpt)
        row[f"train_minutes_{key}"] = round(minutes, 2) if summary else None
        row[f"steps_{key}"] = steps if summary else None
        row[f"stages_{key}"] = stages
        row[f"source_{key}"] = str(path) if path else None
        notes += stage_notes
        if summary is None:
            notes.append(f"no train_summary.json in {ckpt} or its parent")
    if notes:
        row["note"] = "; ".join(notes)
    return row


def expert_row(episodes: int) -> dict[str, Any]:
    """The scripted expert's SR per Franka task kind (``vla_mpc.sim.rollout``, no ROS)."""
    from vla_mpc.sim.rollout import expert_success_rates
    from vla_mpc.sim.tasks import EVAL_SEED_OFFSET

    res = expert_success_rates(ROBOT, FRANKA_KINDS, episodes, EVAL_SEED_OFFSET)
    srs = res["expert_sr"]
    return {"name": "expert", "robot": ROBOT, "expert_sr": srs, "expert_sr_min": min(srs.values()),
            "episodes": episodes, "seed_start": EVAL_SEED_OFFSET, "time_to_success_s": res["time_to_success_s"],
            "failed_seeds": res["failed_seeds"], "wall_s": res["wall_s"],
            "source": "vla_mpc.sim.rollout.expert_success_rates"}


def run() -> list[dict[str, Any]]:
    """The benchmark rows (module docstring)."""
    rows: list[dict[str, Any]] = []
    n_expert = int(os.environ.get("VLA_MPC_BENCH_EXPERT_EPISODES", "20"))
    if n_expert > 0:
        rows.append(expert_row(n_expert))
    policy_ckpt = default_checkpoint("policy")
    n_eval = int(os.environ.get("VLA_MPC_BENCH_RUN_EVAL", "0"))
    paths: list[Path] = []
    if n_eval > 0:
        import time

        from vla_mpc import eval as evaluation

        out = Path("output") / time.strftime("eval-learned-vla-%Y%m%d-%H%M%S")
        evaluation.run(ROBOT, EVAL_KINDS, n_eval, "learned", "vla", out, checkpoint=policy_ckpt)
        paths = [out / evaluation.RESULTS_FILE]
    elif os.environ.get("VLA_MPC_EVAL_RESULTS"):
        paths = [Path(p) for p in os.environ["VLA_MPC_EVAL_RESULTS"].split(os.pathsep) if p]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"VLA_MPC_EVAL_RESULTS names no file at {missing}")
    else:
        latest = find_latest_results({Path.cwd(), _share()})
        paths = [latest] if latest is not None else []
    paths = [p for p in paths if p.is_file()]
    if paths:
        rows.append(merge_learned_rows([learned_row(json.loads(p.read_text()), str(p)) for p in paths]))
    else:
        rows.append({"name": "learned_policy", **{f"sr_{k}": None for k in EVAL_KINDS}, "cc": None,
                     "note": "no learned-policy results.json found (run python -m vla_mpc.eval --policy learned "
                             "--checkpoint ..., or set VLA_MPC_EVAL_RESULTS / VLA_MPC_BENCH_RUN_EVAL=N)"})
    rows.append(training_row(policy_ckpt, default_checkpoint("world_model")))
    return rows
