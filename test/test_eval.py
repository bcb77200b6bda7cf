"""Evaluation counts success, safety cost, time and jerk correctly: pure metrics on hand-made
sequences, and the episode runner against a scripted stand-in for the sim / safety monitor."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vla_mpc.collect import EpisodePlan, outcome_row, EpisodeOutcome
from vla_mpc.eval import aggregate, cumulative_cost, episode_result, mean_abs_jerk, monitor_cumulative, plot_sr

DT = 0.01


def test_cumulative_cost_sums_step_costs() -> None:
    # VLA-Arena: one per step with a violated / enforced constraint
    msgs = [[0, 0], [1, 1], [1, 2], [0, 2], [0, 2], [1, 3]]
    assert cumulative_cost(msgs) == 3.0
    assert monitor_cumulative(msgs) == 3.0
    assert cumulative_cost([]) == 0.0 and monitor_cumulative([]) is None
    # a lost message: the sum says 2, the monitor's own total says 3
    lost = [[1, 1], [1, 3]]
    assert cumulative_cost(lost) == 2.0 and monitor_cumulative(lost) == 3.0


def test_mean_abs_jerk_on_known_signals() -> None:
    k = np.arange(20, dtype=np.float64)
    a = 1e-6
    cubic = np.stack([a * k ** 3, -2 * a * k ** 3, np.zeros_like(k)], axis=1)  # Δ³q = 6a per step
    assert mean_abs_jerk(cubic, DT) == pytest.approx((6 * a + 12 * a + 0) / 3 / DT ** 3)
    assert mean_abs_jerk(cubic, DT, n_joints=1) == pytest.approx(6 * a / DT ** 3)
    ramp = np.stack([0.01 * k, 0.5 + 0 * k], axis=1)  # constant velocity: no jerk
    assert mean_abs_jerk(ramp, DT) == pytest.approx(0.0, abs=1e-6)
    step = np.zeros((6, 1))
    step[3:] = 0.1  # one jump of 0.1 rad: Δ³ = 0.1, -0.2, 0.1 over the 3 windows
    assert mean_abs_jerk(step, DT) == pytest.approx((0.1 + 0.2 + 0.1) / 3 / DT ** 3)
    assert math.isnan(mean_abs_jerk(np.zeros((3, 2)), DT))
    with pytest.raises(ValueError, match="dt"):
        mean_abs_jerk(step, 0.0)


def _row(kind: str, success: bool, cc: float, tts: float | None, ready: bool = True, jerk: float = 1.0) -> dict:
    return {"kind": kind, "success": success, "cc": cc, "time_to_success_s": tts, "ready": ready, "jerk": jerk}


def test_aggregate_counts_per_task(tmp_path: Path) -> None:
    rows = [_row("reach", True, 0, 2.0), _row("reach", True, 2, 4.0), _row("reach", False, 5, None),
            _row("push", False, 0, None), _row("push", True, 1, 6.0, jerk=3.0),
            _row("push", False, 0, None, ready=False, jerk=None)]
    agg = aggregate(rows)
    assert agg["reach"]["sr"] == pytest.approx(2 / 3) and agg["reach"]["n"] == 3
    assert agg["reach"]["cc_total"] == 7 and agg["reach"]["cc_mean"] == pytest.approx(7 / 3)
    assert agg["reach"]["cc_episodes_with_cost"] == 2
    assert agg["reach"]["time_to_success_mean"] == pytest.approx(3.0)
    assert agg["push"]["n"] == 2 and agg["push"]["n_not_run"] == 1 and agg["push"]["sr"] == 0.5
    assert agg["push"]["jerk_mean"] == pytest.approx(2.0)
    assert agg["all"]["n"] == 5 and agg["all"]["successes"] == 3 and agg["all"]["sr"] == pytest.approx(0.6)
    assert agg["all"]["time_to_success_median"] == pytest.approx(4.0)
    # an episode without cost messages: CC unknown, not zero
    agg2 = aggregate(rows + [_row("reach", True, None, 1.0)])
    assert agg2["reach"]["cc_unknown"] == 1 and agg2["reach"]["cc_total"] == 7
    assert agg2["reach"]["cc_mean"] == pytest.approx(7 / 3) and agg2["reach"]["sr"] == 0.75
    p = plot_sr(agg, tmp_path / "sr.png", "test")
    assert p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"


def test_episode_result_from_outcome() -> None:
    plan = EpisodePlan(0, "panda", "reach", 100000, "reach the red cube", "eval-scripted", 10.0)
    k = np.arange(8, dtype=np.float64)
    cmds = [[1e-6 * x ** 3] * 8 for x in k]
    o = EpisodeOutcome(plan, ready=True, success=True, time_to_success_s=1.5, costs=[(1, 1), (0, 1), (1, 2)],
                       commands=cmds)
    r = episode_result(o, DT, n_joints=7)
    assert r["cc"] == 2 and r["cc_monitor"] == 2 and r["cost_messages"] == 3 and r["commands"] == 8
    assert r["jerk"] == pytest.approx(6e-6 / DT ** 3)
    assert r["seed"] == 100000 and r["success"] is True
    assert json.loads(json.dumps(outcome_row(o)))["kind"] == "reach"
    assert r["system1_latency_ms"] is None and r["control_gap_p99_ms"] is None  # the node reported nothing
    timed = EpisodeOutcome(plan, ready=True, commands=cmds, policy_timing=[
        {"inference_latency_ms": 20.0, "control_gap_p99_ms": 14.0}, {"inference_latency_ms": 40.0},
        {"control_gap_p99_ms": 19.5}])
    rt = episode_result(timed, DT, 7)
    assert rt["system1_latency_ms"] == pytest.approx(30.0) and rt["control_gap_p99_ms"] == 19.5
    agg = aggregate([rt, r])
    assert agg["reach"]["system1_latency_ms_mean"] == pytest.approx(30.0)
    assert agg["reach"]["control_gap_p99_ms_max"] == 19.5
    silent = EpisodeOutcome(plan, ready=True, success=False, commands=cmds)  # no cost topic
    assert episode_result(silent, DT, 7)["cc"] is None
    assert episode_result(EpisodeOutcome(plan), DT, 7)["cc"] == 0.0  # never ran: nothing to count


def test_policy_timing_keeps_finite_timing_figures_only() -> None:
    from types import SimpleNamespace as KV

    from vla_mpc.collect import policy_timing

    values = [KV(key="inference_latency_ms", value="31.25"), KV(key="control_gap_p99_ms", value="n/a"),
              KV(key="reanchors", value="3"), KV(key="threads", value='{"torch": 1}')]
    assert policy_timing(values) == {"inference_latency_ms": 31.25}
    assert policy_timing([KV(key="control_gap_p99_ms", value="nan")]) == {}
    assert policy_timing([]) == {}


# ------------------------------------------------------------------------- runner vs a stand-in


class StandIn:
    """Plays sim + safety monitor for the runner: /clock, episode_ready, task_success, cost and robot
    commands, scripted per task kind. Runs its own executor in a thread."""

    A = 1e-6  # command q_k = A k^3: jerk 6A/dt^3

    def __init__(self) -> None:
        import rclpy
        from rclpy.clock import Clock, ClockType
        from rclpy.executors import SingleThreadedExecutor
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        from rosgraph_msgs.msg import Clock as ClockMsg
        from std_msgs.msg import Bool, Float64MultiArray, String

        from vla_mpc.ros.qos import CLOCK_QOS, COMMAND_QOS, LATCHED_QOS, STREAM_QOS

        self.node = rclpy.create_node("sim_robot")  # the runner waits for this name
        self.events: list[dict] = []
        self.instructions: list[str] = []
        self._t0 = time.monotonic()
        self.ClockMsg, self.Bool, self.F64, self.String = ClockMsg, Bool, Float64MultiArray, String
        self.clock = self.node.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        self.ready = self.node.create_publisher(String, "/vla_mpc/sim/episode_ready", LATCHED_QOS)
        self.success = self.node.create_publisher(Bool, "/vla_mpc/sim/task_success", LATCHED_QOS)
        self.cost = self.node.create_publisher(Float64MultiArray, "/vla_mpc/safety/cost", STREAM_QOS)
        self.cmd = self.node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", COMMAND_QOS)
        self.diag = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.DiagnosticArray, self.DiagnosticStatus, self.KeyValue = DiagnosticArray, DiagnosticStatus, KeyValue
        self.node.create_subscription(String, "/vla_mpc/episode", self._on_episode, LATCHED_QOS)
        self.node.create_subscription(String, "/vla_mpc/instruction", self._on_instruction, LATCHED_QOS)
        self.node.create_timer(0.01, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._pending: list[tuple[float, object, object]] = []  # (due wall time, publisher, msg)
        self._lock = threading.Lock()
        self.current: dict | None = None
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def sim_now(self) -> float:
        return 1000.0 + (time.monotonic() - self._t0)

    def _later(self, delay: float, pub, msg) -> None:  # noqa: ANN001
        with self._lock:
            self._pending.append((time.monotonic() + delay, pub, msg))

    def _tick(self) -> None:
        t = self.sim_now()
        sec = int(t)
        m = self.ClockMsg()
        m.clock.sec, m.clock.nanosec = sec, int((t - sec) * 1e9)
        self.clock.publish(m)
        now = time.monotonic()
        with self._lock:
            due = [p for p in self._pending if p[0] <= now]
            self._pending = [p for p in self._pending if p[0] > now]
        for _, pub, msg in sorted(due, key=lambda p: p[0]):
            pub.publish(msg)

    def _on_episode(self, msg) -> None:  # noqa: ANN001
        ev = json.loads(msg.data)
        self.events.append(ev)
        if ev["event"] != "start":
            return
        self.current = ev
        if ev["kind"] == "pick":  # a sim that never answers
            return
        # a stale success from the previous episode, before the reset is done: must not count
        self._later(0.0, self.success, self.Bool(data=True))
        self._later(0.15, self.success, self.Bool(data=False))
        self._later(0.2, self.ready, self.String(data=json.dumps({"episode": ev["episode"], "seed": ev["seed"]})))

    def _on_instruction(self, msg) -> None:  # noqa: ANN001
        self.instructions.append(msg.data)
        ev = self.current
        if ev is None or not msg.data:  # no task: nothing happens
            return
        if ev["kind"] == "reach":  # succeeds 0.3 s after the instruction; costs 1,0,1,1,0 (CC 3)
            costs = [1, 0, 1, 1, 0]
            self._later(0.3, self.success, self.Bool(data=True))
        else:                      # push: never succeeds; costs 1,1 (CC 2)
            costs = [1, 1]
        cum = 0
        for i, c in enumerate(costs):
            cum += c
            self._later(0.02 + 0.01 * i, self.cost, self.F64(data=[float(c), float(cum)]))
        for k in range(10):
            q = [self.A * k ** 3] * 7 + [0.04]
            self._later(0.02 + 0.01 * k, self.cmd, self.F64(data=q))
        # the policy's timing diagnostics (and another node's status with the same key: not read)
        kv = self.KeyValue
        policy = self.DiagnosticStatus(name="vla_mpc/policy", values=[
            kv(key="inference_latency_ms", value="12.50" if ev["kind"] == "reach" else "40.00"),
            kv(key="control_gap_p99_ms", value="n/a")])
        other = self.DiagnosticStatus(name="vla_mpc/safety", values=[kv(key="inference_latency_ms", value="999")])
        self._later(0.05, self.diag, self.DiagnosticArray(status=[other, policy]))

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


@pytest.fixture()
def ros():
    import rclpy

    rclpy.init()
    try:
        yield
    finally:
        rclpy.shutdown()


def test_runner_counts_success_cost_and_jerk_against_stand_in(ros) -> None:
    from vla_mpc.collect import EpisodeRunner
    from vla_mpc.eval import evaluate

    stand_in = StandIn()
    runner = EpisodeRunner("vla_mpc_eval_test", collect_metrics=True, settle_s=0.3, ready_timeout_s=1.5)
    try:
        runner.wait_for_graph(["sim_robot"], timeout_s=20.0)
        plans = [EpisodePlan(0, "panda", "reach", 100000, "reach the red cube", "eval-scripted", 3.0),
                 EpisodePlan(1, "panda", "push", 100000, "push the blue cube to the left", "eval-scripted", 1.0),
                 EpisodePlan(2, "panda", "pick", 100000, "pick up the red cube", "eval-scripted", 1.0),
                 EpisodePlan(3, "panda", "reach", 100001, "reach the green cube", "eval-scripted", 3.0)]
        rows = evaluate(runner, plans, DT, n_joints=7, log=lambda s: None)
    finally:
        runner.close()
        stand_in.close()
    reach, push, mute, reach2 = rows
    assert reach["ready"] and reach["success"] and reach["error"] is None
    assert 0.25 <= reach["time_to_success_s"] <= 1.0  # 0.3 s scripted, plus transport and spin granularity
    assert reach["cc"] == 3 and reach["cc_monitor"] == 3 and reach["cost_messages"] == 5
    assert reach["commands"] == 10
    assert reach["jerk"] == pytest.approx(6 * StandIn.A / DT ** 3, rel=1e-9)
    assert push["ready"] and not push["success"] and push["time_to_success_s"] is None
    assert push["cc"] == 2 and 1.0 <= push["duration_s"] < 2.0
    assert not mute["ready"] and "episode_ready" in mute["error"]
    assert reach2["success"] and reach2["cc"] == 3
    assert reach["system1_latency_ms"] == 12.5 and push["system1_latency_ms"] == 40.0
    assert reach["control_gap_p99_ms"] is None and mute["system1_latency_ms"] is None
    # the events the sim saw: start/end pairs in order, end carries the outcome (contract G)
    ev = [(e["event"], e["episode"]) for e in stand_in.events]
    assert ev == [("start", 0), ("end", 0), ("start", 1), ("end", 1), ("start", 2), ("end", 2), ("start", 3), ("end", 3)]
    ends = [e for e in stand_in.events if e["event"] == "end"]
    assert [e["success"] for e in ends] == [True, False, False, True]
    assert ends[0]["time_to_success_s"] == pytest.approx(reach["time_to_success_s"])
    assert ends[0]["robot"] == "panda" and ends[0]["seed"] == 100000 and ends[0]["kind"] == "reach"
    # the instruction is sent only once the sim is ready (never for the mute episode), and cleared at each end
    assert stand_in.instructions == ["reach the red cube", "", "push the blue cube to the left", "", "",
                                     "reach the green cube", ""]
    agg = aggregate(rows)
    assert agg["reach"]["sr"] == 1.0 and agg["push"]["sr"] == 0.0 and agg["pick"]["n"] == 0
    assert agg["all"]["cc_total"] == 8


# ------------------------------------------------------------------------- bench learning readers


def test_bench_learning_reads_newest_learned_results_and_summaries(tmp_path: Path, monkeypatch) -> None:
    import os

    from vla_mpc.bench import learning

    def results(policy: str, sr_reach: float, mtime: float) -> None:
        d = tmp_path / "output" / f"eval-{policy}-{mtime}"
        d.mkdir(parents=True)
        per = {"reach": {"sr": sr_reach, "cc_mean": 1.0}, "push": {"sr": 0.5, "cc_mean": 3.0},
               "pick_place": {"sr": 0.25, "cc_mean": 2.0}, "all": {"sr": 0.6, "cc_mean": 2.0, "jerk_mean": 4.0}}
        p = d / "results.json"
        p.write_text(json.dumps({"policy": policy, "robot": "panda", "mode": "vla", "per_task": per,
                                 "episodes_per_kind": 50}))
        os.utime(p, (mtime, mtime))

    results("learned", 0.8, 1000.0)
    results("learned", 0.9, 2000.0)
    results("scripted", 1.0, 3000.0)  # newer, but not the learned policy
    (tmp_path / "output" / "eval-broken").mkdir()
    (tmp_path / "output" / "eval-broken" / "results.json").write_text("{not json")
    path = learning.find_latest_results([tmp_path])
    assert path is not None and "2000" in str(path)
    row = learning.learned_row(json.loads(path.read_text()), str(path))
    assert (row["sr_reach"], row["sr_push"], row["sr_pick_place"], row["cc"]) == (0.9, 0.5, 0.25, 2.0)
    assert learning.find_latest_results([tmp_path / "nothing"]) is None

    pol = tmp_path / "runs" / "policy" / "best"
    pol.mkdir(parents=True)
    (pol.parent / "train_summary.json").write_text(json.dumps({"minutes": 24.567, "steps": 9000}))
    wm = tmp_path / "runs" / "wm"
    wm.mkdir(parents=True)
    (wm / "train_summary.json").write_text(json.dumps({"minutes": 12.0, "steps": 4000}))
    tr = learning.training_row(pol, wm)
    assert tr["train_minutes_policy"] == 24.57 and tr["steps_world_model"] == 4000 and "note" not in tr
    assert learning.training_row(tmp_path / "x", wm)["train_minutes_policy"] is None
    # a staged world model (stage two --init from stage one) costs both stages
    s1, s2 = tmp_path / "runs" / "wm_s1", tmp_path / "runs" / "wm_s2"
    (s1 / "best").mkdir(parents=True)
    s2.mkdir(parents=True)
    (s1 / "train_summary.json").write_text(json.dumps({"minutes": 13.5, "steps": 3000}))
    (s2 / "train_summary.json").write_text(json.dumps({"minutes": 2.25, "steps": 1500,
                                                       "init": str(s1 / "best")}))
    staged = learning.training_row(pol, s2)
    assert staged["train_minutes_world_model"] == 15.75 and staged["steps_world_model"] == 4500
    assert staged["stages_world_model"] == 2 and "note" not in staged
    # a shipped checkpoint names its earlier stage relative to itself
    shipped = tmp_path / "ship"
    (shipped / "stage1").mkdir(parents=True)
    (shipped / "stage1" / "train_summary.json").write_text(json.dumps({"minutes": 20.0, "steps": 3000}))
    (shipped / "train_summary.json").write_text(json.dumps({"minutes": 4.0, "steps": 3000, "init": "stage1"}))
    assert learning.staged_cost(shipped)[:3] == (24.0, 6000, 2)
    # a fresh System 2 for a kept System 1: the System 2 stages it replaced are not counted
    chain = {"s1": {"minutes": 10.0, "steps": 1, "trained": ["system2"], "fresh": ["system1", "system2"]},
             "s2": {"minutes": 11.0, "steps": 2, "trained": ["system1"], "fresh": ["system1"], "init": "../s1"},
             "s3": {"minutes": 7.0, "steps": 4, "trained": ["system2"], "fresh": [], "init": "../s2"},
             "s4": {"minutes": 16.0, "steps": 8, "trained": ["system2"], "fresh": ["system2"], "init": "../s3"}}
    for name, summary in chain.items():
        (shipped / name).mkdir()
        (shipped / name / "train_summary.json").write_text(json.dumps(summary))
    minutes, steps, stages, notes = learning.staged_cost(shipped / "s4")
    assert (minutes, steps, stages) == (27.0, 10, 2) and len(notes) == 2 and "s3" in notes[0] and "s1" in notes[1] and "afresh" in notes[1]
    assert learning.staged_cost(shipped / "s3")[:3] == (28.0, 7, 3)  # before the fresh System 2: all three
    (s1 / "train_summary.json").write_text(json.dumps({"minutes": 13.5, "steps": 3000, "init": str(s2)}))
    assert "init cycle" in learning.training_row(pol, s2)["note"]  # counted once, reported
    (s1 / "train_summary.json").unlink()
    lost = learning.training_row(pol, s2)
    assert lost["train_minutes_world_model"] == 2.25 and "stage 2" in lost["note"]

    monkeypatch.setenv("VLA_MPC_BENCH_EXPERT_EPISODES", "0")
    monkeypatch.setenv("VLA_MPC_EVAL_RESULTS", str(path))
    monkeypatch.setenv("VLA_MPC_POLICY_CHECKPOINT", str(pol))
    monkeypatch.setenv("VLA_MPC_WORLD_MODEL_CHECKPOINT", str(wm))
    rows = learning.run()
    assert [r["name"] for r in rows] == ["learned_policy", "training"]
    assert rows[0]["source"] == str(path) and rows[1]["train_minutes_world_model"] == 12.0
    # several evaluations: each task from the first that ran it, cc and jerk weighted by episodes
    reach_only = tmp_path / "reach50.json"
    reach_only.write_text(json.dumps({"policy": "learned", "robot": "panda", "mode": "vla", "checkpoint": "new",
                                      "per_task": {"reach": {"n": 50, "sr": 0.92, "cc_mean": 0.02, "jerk_mean": 178.0},
                                                   "all": {"n": 50, "sr": 0.92, "cc_mean": 0.02, "jerk_mean": 178.0}}}))
    other = tmp_path / "others10.json"
    other.write_text(json.dumps({"policy": "learned", "robot": "panda", "mode": "vla", "checkpoint": "new",
                                 "per_task": {"reach": {"n": 10, "sr": 0.1, "cc_mean": 9.0, "jerk_mean": 1.0},
                                              "push": {"n": 10, "sr": 0.2, "cc_mean": 202.0, "jerk_mean": 200.0},
                                              "pick_place": {"n": 10, "sr": 0.0, "cc_mean": 257.0, "jerk_mean": 170.0},
                                              "all": {"n": 30}}}))
    monkeypatch.setenv("VLA_MPC_EVAL_RESULTS", os.pathsep.join([str(reach_only), str(other)]))
    merged = learning.run()[0]
    assert (merged["sr_reach"], merged["sr_push"], merged["sr_pick_place"]) == (0.92, 0.2, 0.0)
    assert merged["episodes_per_task"] == {"reach": 50, "push": 10, "pick_place": 10}
    assert merged["cc"] == pytest.approx((50 * 0.02 + 10 * 202.0 + 10 * 257.0) / 70)
    assert merged["jerk"] == pytest.approx((50 * 178.0 + 10 * 200.0 + 10 * 170.0) / 70)
    assert merged["source"] == [str(reach_only), str(other)] and merged["checkpoint"] == ["new"]
    # one task on disjoint seeds in two runs (with their episodes listed): pooled
    def push_run(name: str, seeds: list[int], wins: int, cc: float, tts: float) -> Path:
        eps = [{"kind": "push", "seed": s, "success": i < wins} for i, s in enumerate(seeds)]
        p = tmp_path / name
        p.write_text(json.dumps({"policy": "learned", "robot": "panda", "mode": "vla", "checkpoint": name,
                                 "episodes": eps, "per_task": {
                                     "push": {"n": len(seeds), "sr": wins / len(seeds), "cc_mean": cc,
                                              "time_to_success_mean": tts, "jerk_mean": 100.0},
                                     "all": {"n": len(seeds)}}}))
        return p
    first = push_run("push20.json", list(range(100000, 100020)), 15, 5.0, 14.0)
    second = push_run("push30.json", list(range(100020, 100050)), 21, 3.0, 12.0)
    again = push_run("push_again.json", list(range(100010, 100015)), 0, 99.0, 1.0)  # seeds already taken
    monkeypatch.setenv("VLA_MPC_EVAL_RESULTS", os.pathsep.join(map(str, [reach_only, first, again, second])))
    merged = learning.run()[0]
    assert merged["episodes_per_task"] == {"reach": 50, "push": 50} and merged["sr_push"] == pytest.approx(36 / 50)
    assert merged["cc_per_task"]["push"] == pytest.approx((20 * 5.0 + 30 * 3.0) / 50)
    assert merged["time_to_success_s"]["push"] == pytest.approx((15 * 14.0 + 21 * 12.0) / 36)
    assert merged["seeds_per_task"]["push"] == list(range(100000, 100050))
    assert merged["source"] == [str(reach_only), str(first), str(second)]
    monkeypatch.setenv("VLA_MPC_EVAL_RESULTS", str(tmp_path / "absent.json"))
    with pytest.raises(FileNotFoundError, match="absent.json"):
        learning.run()
