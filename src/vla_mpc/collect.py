"""Record episodes through the running graph (demonstrations, perturbed and random-action episodes).

    python -m vla_mpc.collect --robot panda --kinds reach,push,pick_place --episodes-per-kind 20 \\
        --seed-start 0 --source expert|perturbed|random --output DIR [--noise-std 0.03]
        [--timeout 30] [--record-topics dataset|all] [--set node.param=value]

Starts the graph once (sim_robot, camera_ingest, policy with the ``scripted`` backend and
``autostart``, safety_monitor, recorder; the planner is not started), waits until the sim, the
safety monitor, the configured policy and the recorder subscribe to ``/vla_mpc/episode``, then runs
the episodes one after the other without restarting anything (contract G):

1. publish ``{"event": "start", "episode": i, "seed": s, "kind": k, "instruction": ..., "robot": ...,
   "source": ...}`` on ``/vla_mpc/episode`` (std_msgs/String JSON, reliable + transient local); the
   instruction comes from ``vla_mpc.sim.tasks.sample_episode(robot, kind, seed)``;
2. wait for ``/vla_mpc/sim/episode_ready`` naming episode i (the sim has reset to that episode);
3. publish the instruction on ``/vla_mpc/instruction`` (latched);
4. wait for ``/vla_mpc/sim/task_success`` true (then ``settle`` more seconds, so the bag shows the
   finished state) or the kind's timeout [s of sim time];
5. publish ``{"event": "end", ..., "success": bool, "time_to_success_s": float | null}`` and an
   empty instruction (the policy holds without a task while the sim resets for the next episode).

Episodes go round-robin over the kinds (reach 0, push 0, pick_place 0, reach 1, ...) on seeds
``seed_start .. seed_start + episodes_per_kind - 1`` (training seeds are below
``EVAL_SEED_OFFSET``). ``--source perturbed`` sets the policy's ``scripted_noise_std`` (contract H),
``--source random`` its ``scripted_random_actions`` (random wandering inside the joint limits; such
episodes run to the timeout, ``--random-episode-s``).

Output: ``DIR/bag`` (one rosbag2, MCAP), ``DIR/summary.json`` (per episode: kind, seed,
instruction, success, time to success [s sim], wall time [s]; totals), ``DIR/logs/<node>.log``.
Convert with ``python -m vla_mpc.training.dataset --bags DIR --out DATASET``.

Timing: all episode times are sim time (this process follows ``/clock``); a wall-clock cap of
``wall_factor`` x the timeout guards against a stalled sim.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

EPISODE_TOPIC = "/vla_mpc/episode"
READY_TOPIC = "/vla_mpc/sim/episode_ready"
SUCCESS_TOPIC = "/vla_mpc/sim/task_success"
INSTRUCTION_TOPIC = "/vla_mpc/instruction"
COST_TOPIC = "/vla_mpc/safety/cost"
ROBOT_COMMAND_TOPIC = "/forward_position_controller/commands"

SOURCES = ("expert", "perturbed", "random")

#: Episode timeouts [s of sim time] per task kind: about 2-3x what the scripted expert needs.
DEFAULT_TIMEOUTS = {"reach": 20.0, "push": 30.0, "pick": 30.0, "pick_place": 40.0}

#: Topics recorded with ``--record-topics dataset``: what the dataset converter and the evaluator
#: read, plus the safety and planner context; the raw camera (the observation is its resized copy)
#: and /clock are left out (about half the bag size).
DATASET_TOPICS = (
    EPISODE_TOPIC, READY_TOPIC, SUCCESS_TOPIC, INSTRUCTION_TOPIC, "/joint_states", "/vla_mpc/joint_command",
    "/vla_mpc/observation/front/image", "/vla_mpc/action_chunk", "/vla_mpc/sim/object_poses", COST_TOPIC,
    "/vla_mpc/safety/state", "/vla_mpc/safety/interventions", ROBOT_COMMAND_TOPIC,
)


# --------------------------------------------------------------------------------- pure planning


@dataclass(frozen=True)
class EpisodePlan:
    """One planned episode.

    Attributes:
        episode: index within the run (0-based), the ``episode`` field of the events.
        kind: task kind; seed: ``sample_episode`` seed; instruction: from ``sample_episode``.
        timeout_s: give up after this much sim time after the instruction [s].
    """

    episode: int
    robot: str
    kind: str
    seed: int
    instruction: str
    source: str
    timeout_s: float

    def start_event(self) -> dict[str, Any]:
        """The ``/vla_mpc/episode`` "start" message (contract G)."""
        return {"event": "start", "episode": self.episode, "seed": self.seed, "kind": self.kind,
                "instruction": self.instruction, "robot": self.robot, "source": self.source}

    def end_event(self, success: bool, time_to_success_s: float | None) -> dict[str, Any]:
        """The ``/vla_mpc/episode`` "end" message (contract G)."""
        return {**self.start_event(), "event": "end", "success": bool(success),
                "time_to_success_s": None if time_to_success_s is None else float(time_to_success_s)}


def plan_episodes(robot: str, kinds: Sequence[str], episodes_per_kind: int, seed_start: int, source: str,
                  timeouts: dict[str, float] | None = None,
                  sample: Callable[[str, str, int], Any] | None = None) -> list[EpisodePlan]:
    """Episodes round-robin over ``kinds`` on seeds ``seed_start + j``, j < episodes_per_kind.

    Args:
        sample: ``(robot, kind, seed) -> spec with .instruction`` (default
            ``vla_mpc.sim.tasks.sample_episode``).

    Raises:
        ValueError: unknown kind or source, or episodes_per_kind < 1 (the bad value named).
    """
    from vla_mpc.sim.tasks import TASK_KINDS, sample_episode

    sample = sample or sample_episode
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    bad = [k for k in kinds if k not in TASK_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be among {TASK_KINDS}, got {list(kinds)!r}")
    if episodes_per_kind < 1:
        raise ValueError(f"episodes_per_kind must be >= 1, got {episodes_per_kind}")
    timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
    out: list[EpisodePlan] = []
    for j in range(episodes_per_kind):
        for kind in kinds:
            seed = seed_start + j
            spec = sample(robot, kind, seed)
            out.append(EpisodePlan(len(out), robot, kind, seed, spec.instruction, source, float(timeouts[kind])))
    return out


def policy_overrides(source: str, noise_std: float) -> dict[str, Any]:
    """Policy-node parameters of a data source (contract H)."""
    if source == "perturbed":
        return {"scripted_noise_std": float(noise_std), "scripted_random_actions": False}
    if source == "random":
        return {"scripted_noise_std": 0.0, "scripted_random_actions": True}
    return {}


# --------------------------------------------------------------------------------- the ROS runner


@dataclass
class EpisodeOutcome:
    """What one episode did (times [s]; ``sim`` = sim time, ``wall`` = this machine's clock).

    Attributes:
        ready: the sim reported the episode ready (reset done).
        success: the sim's success predicate became true within the timeout.
        time_to_success_s: sim time from the instruction to the first success; None if none.
        duration_s: sim time from the instruction to the end event.
        wall_s: wall time from the start event to the end event.
        costs: (step_cost, cumulative) pairs from ``/vla_mpc/safety/cost`` inside the episode.
        commands: robot commands (``/forward_position_controller/commands``) inside the episode.
        policy_timing: the policy node's ``/diagnostics`` timing figures received inside the
            episode (about one per second): ``{"inference_latency_ms": System 1's chunk inference,
            a moving average [ms], "control_gap_p99_ms": the control loop's 99th-percentile tick
            period [ms]}``, each key only when the node reported a number.
        error: why the episode could not run (None when it ran).
    """

    plan: EpisodePlan
    ready: bool = False
    success: bool = False
    time_to_success_s: float | None = None
    duration_s: float = 0.0
    wall_s: float = 0.0
    costs: list[tuple[float, float]] = field(default_factory=list)
    commands: list[list[float]] = field(default_factory=list)
    policy_timing: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


#: The policy diagnostics keys :func:`policy_timing` keeps [ms].
POLICY_TIMING_KEYS = ("inference_latency_ms", "control_gap_p99_ms")


def policy_timing(values: Sequence[Any]) -> dict[str, float]:
    """The finite numbers among the policy's timing diagnostics (``KeyValue``-like items with
    ``key`` / ``value`` strings, keys :data:`POLICY_TIMING_KEYS`); "n/a" or garbage is left out."""
    out: dict[str, float] = {}
    for kv in values:
        if kv.key in POLICY_TIMING_KEYS:
            try:
                x = float(kv.value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                out[kv.key] = x
    return out


class GraphError(RuntimeError):
    """The graph cannot run episodes (a node died, or the sim never answered)."""


class EpisodeRunner:
    """Runs planned episodes through a started graph from one rclpy node (``rclpy.init`` must have
    run). Callbacks only store data; waiting happens in :meth:`_spin_until` (spin_once loop).

    Args:
        name: node name.
        watch: returns the graph's dead nodes ({name: exit code}); a non-empty answer raises
            :class:`GraphError` while waiting (``Bringup.dead``).
        wall_factor: wall-clock cap of an episode = max(10 s, wall_factor x its sim timeout).
        settle_s: sim seconds recorded after the first success before the end event.
        ready_timeout_s: wall seconds to wait for ``/vla_mpc/sim/episode_ready``.
        collect_metrics: also record ``/vla_mpc/safety/cost`` and the robot commands per episode
            (the evaluator; subscriptions RELIABLE, depth 200).
    """

    def __init__(self, name: str = "vla_mpc_episodes", watch: Callable[[], dict[str, int]] | None = None,
                 wall_factor: float = 4.0, settle_s: float = 0.5, ready_timeout_s: float = 30.0,
                 collect_metrics: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.parameter import Parameter
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Bool, Float64MultiArray, String

        from vla_mpc.ros.diagnostics import POLICY_STATUS_NAME
        from vla_mpc.ros.qos import LATCHED_QOS
        from vla_mpc.ros.runtime import make_executor

        self.node = rclpy.create_node(name, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.String = String
        self._policy_status_name = POLICY_STATUS_NAME
        self.watch = watch or (lambda: {})
        self.wall_factor, self.settle_s, self.ready_timeout_s = wall_factor, settle_s, ready_timeout_s
        self.episode_pub = self.node.create_publisher(String, EPISODE_TOPIC, LATCHED_QOS)
        self.instruction_pub = self.node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self._ready: dict[int, float] = {}          # episode -> sim time received
        self._success: list[tuple[float, bool]] = []
        self._active: EpisodeOutcome | None = None
        self.node.create_subscription(String, READY_TOPIC, self._on_ready, LATCHED_QOS)
        self.node.create_subscription(Bool, SUCCESS_TOPIC, self._on_success, LATCHED_QOS)
        if collect_metrics:
            deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
            self.node.create_subscription(Float64MultiArray, COST_TOPIC, self._on_cost, deep)
            self.node.create_subscription(Float64MultiArray, ROBOT_COMMAND_TOPIC, self._on_command, deep)
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._collecting = False
        # The nodes' executor (EventsExecutor by default): this node takes /clock and, with
        # collect_metrics, every command and cost message of the graph.
        self._executor = make_executor()
        self._executor.add_node(self.node)

    # -- callbacks (store only) ------------------------------------------------------------
    def now(self) -> float:
        """Sim time [s] (the node follows /clock; 0 until the first /clock message)."""
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _on_ready(self, msg) -> None:  # noqa: ANN001
        try:
            ep = int(json.loads(msg.data)["episode"])
        except (ValueError, KeyError, TypeError):
            self.node.get_logger().warning(f"unreadable {READY_TOPIC}: {msg.data!r}")
            return
        self._ready.setdefault(ep, self.now())

    def _on_success(self, msg) -> None:  # noqa: ANN001
        self._success.append((self.now(), bool(msg.data)))

    def _on_cost(self, msg) -> None:  # noqa: ANN001
        if self._collecting and self._active is not None and len(msg.data) >= 2:
            self._active.costs.append((float(msg.data[0]), float(msg.data[1])))

    def _on_command(self, msg) -> None:  # noqa: ANN001
        if self._collecting and self._active is not None:
            self._active.commands.append([float(x) for x in msg.data])

    def _on_diagnostics(self, msg) -> None:  # noqa: ANN001
        if not (self._collecting and self._active is not None):
            return
        for status in msg.status:
            if status.name == self._policy_status_name:
                timing = policy_timing(status.values)
                if timing:
                    self._active.policy_timing.append(timing)

    # -- waiting -----------------------------------------------------------------------------
    def _spin_until(self, pred: Callable[[], bool], wall_timeout_s: float) -> bool:
        end = time.monotonic() + wall_timeout_s
        while time.monotonic() < end:
            if pred():
                return True
            self._executor.spin_once(timeout_sec=0.02)
            dead = self.watch()
            if dead:
                raise GraphError(f"nodes exited: {dead}")
        return pred()

    def wait_for_graph(self, need: Sequence[str], timeout_s: float = 90.0) -> None:
        """Wait until the nodes in ``need`` subscribe to ``/vla_mpc/episode`` and /clock runs.

        Raises:
            GraphError: a node missing after ``timeout_s`` [s wall] (named), or a node died.
        """
        def subscribers() -> set[str]:
            return {i.node_name for i in self.node.get_subscriptions_info_by_topic(EPISODE_TOPIC)}

        ok = self._spin_until(lambda: set(need) <= subscribers() and self.now() > 0.0, timeout_s)
        if not ok:
            missing = sorted(set(need) - subscribers())
            raise GraphError(
                f"after {timeout_s:.0f} s: {'no /clock' if self.now() <= 0 else ''} "
                f"{'nodes not subscribed to ' + EPISODE_TOPIC + ': ' + str(missing) if missing else ''}"
                " (contract G: the sim and policy subscribe /vla_mpc/episode)")

    def _publish(self, pub, payload: dict | str) -> None:  # noqa: ANN001
        text = payload if isinstance(payload, str) else json.dumps(payload)
        pub.publish(self.String(data=text))

    # -- one episode -------------------------------------------------------------------------
    def run_episode(self, plan: EpisodePlan, hold_s: float | None = None) -> EpisodeOutcome:
        """Run one episode (module docstring, steps 1-5) and return its outcome.

        Args:
            hold_s: run exactly this long [s sim] regardless of success (random-action episodes);
                None: stop at success (+ settle) or the timeout.
        """
        out = EpisodeOutcome(plan)
        wall0 = time.monotonic()
        self._active = out
        self._collecting = False
        self._publish(self.episode_pub, plan.start_event())
        if not self._spin_until(lambda: plan.episode in self._ready, self.ready_timeout_s):
            out.error = f"no {READY_TOPIC} for episode {plan.episode} within {self.ready_timeout_s:.0f} s"
            self._end(plan, out, wall0)
            return out
        out.ready = True
        n_success_before = len(self._success)
        self._collecting = True
        self._publish(self.instruction_pub, plan.instruction)
        t0 = self.now()
        limit = plan.timeout_s if hold_s is None else hold_s

        def first_success() -> float | None:
            for t, ok in self._success[n_success_before:]:
                if ok and t >= self._ready[plan.episode]:
                    return t
            return None

        def done() -> bool:
            if self.now() - t0 >= limit:
                return True
            ts = first_success()
            return hold_s is None and ts is not None and self.now() - ts >= self.settle_s

        self._spin_until(done, max(10.0, limit * self.wall_factor))
        ts = first_success()
        out.success = ts is not None
        out.time_to_success_s = None if ts is None else max(0.0, ts - t0)
        out.duration_s = self.now() - t0
        self._end(plan, out, wall0)
        return out

    def _end(self, plan: EpisodePlan, out: EpisodeOutcome, wall0: float) -> None:
        self._collecting = False
        self._publish(self.episode_pub, plan.end_event(out.success, out.time_to_success_s))
        # clear the instruction: until the next episode is ready the policy has no task, so it cannot
        # plan from the old task and pre-reset joint states while the sim resets
        self._publish(self.instruction_pub, "")
        # let the end event reach every subscriber before the next start replaces it (latched depth 1)
        self._spin_until(lambda: False, 0.2)
        out.wall_s = time.monotonic() - wall0
        self._active = None

    def close(self) -> None:
        self._executor.remove_node(self.node)
        self._executor.shutdown()
        self.node.destroy_node()


class GraphSession:
    """A started graph plus an :class:`EpisodeRunner`, for ``with``: the one start/stop sequence of
    ``collect``, ``eval`` and ``demo``.

    Entering initialises rclpy, builds the runner (``runner_kwargs`` go to :class:`EpisodeRunner`,
    ``watch`` is ``bringup.dead``) and starts ``bringup``. Leaving stops the graph, closes the
    runner and shuts rclpy down, whatever happened. A :class:`GraphError` (a node died, the graph
    never came up) or Ctrl-C inside the block is caught, logged as ``<tag> stopped: ...`` and kept
    in ``error``, so the caller still summarises what was recorded; other exceptions propagate.

    After the block: ``error`` (str or None), ``dead`` ({node: exit code} of the nodes that had
    exited before the stop), ``exit_codes`` ({node: exit code} after the stop), ``wall_s``; ``t_start`` is the
    ``time.monotonic()`` of entering.
    """

    def __init__(self, bringup: Any, name: str, tag: str, log: Callable[[str], None] = print,
                 **runner_kwargs: Any) -> None:
        self.bringup, self.name, self.tag, self.log = bringup, name, tag, log
        self.runner_kwargs = runner_kwargs
        self.runner: EpisodeRunner | None = None
        self.error: str | None = None
        self.dead: dict[str, int] = {}
        self.exit_codes: dict[str, int] = {}
        self.wall_s = 0.0
        self.t_start = 0.0

    def __enter__(self) -> "GraphSession":
        import rclpy

        rclpy.init()
        self.t_start = time.monotonic()
        try:
            self.runner = EpisodeRunner(self.name, watch=self.bringup.dead, **self.runner_kwargs)
            self.bringup.start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        handled = exc_type is not None and issubclass(exc_type, (GraphError, KeyboardInterrupt))
        if exc_type is not None and issubclass(exc_type, GraphError):
            self.error = str(exc)
            self.log(f"{self.tag} stopped: {self.error}; see the node logs")
        elif handled:
            self.error = "interrupted"
            self.log(f"{self.tag} interrupted; summarising what was recorded")
        self._stop()
        return handled

    def _stop(self) -> None:
        import rclpy

        self.wall_s = time.monotonic() - self.t_start
        self.dead = self.bringup.dead()
        self.exit_codes = self.bringup.stop()
        if self.runner is not None:
            self.runner.close()
        if rclpy.ok():
            rclpy.shutdown()


# ----------------------------------------------------------------------------------------- run


def outcome_row(o: EpisodeOutcome) -> dict[str, Any]:
    """JSON row of an episode for ``summary.json``."""
    return {**asdict(o.plan), "ready": o.ready, "success": o.success, "time_to_success_s": o.time_to_success_s,
            "duration_s": round(o.duration_s, 3), "wall_s": round(o.wall_s, 3), "error": o.error}


def run(robot: str, plans: list[EpisodePlan], output: Path, overrides: dict[str, dict[str, Any]],
        record_topics: str = "dataset", random_episode_s: float = 8.0, startup_timeout_s: float = 120.0,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the graph, run ``plans``, stop the graph; returns (and writes) ``output/summary.json``."""
    from vla_mpc.bringup import Bringup
    from vla_mpc.ros.runtime import isolate_ros_network

    isolate_ros_network()
    output.mkdir(parents=True, exist_ok=True)
    source = plans[0].source if plans else "expert"
    merged: dict[str, dict[str, Any]] = {
        "policy": {"backend": "scripted", "autostart": True},
        "safety_monitor": {"intervention_log": str(output / "safety_interventions.jsonl")},
    }
    if record_topics == "dataset":
        merged["recorder"] = {"topics": list(DATASET_TOPICS)}
    for node, params in overrides.items():
        merged.setdefault(node, {}).update(params)
    bringup = Bringup(robot=robot, sim=True, use_sim_time=True, record_dir=output / "bag", log_dir=output / "logs",
                      overrides=merged, exclude=("latent_mpc_planner",))
    outcomes: list[EpisodeOutcome] = []
    with GraphSession(bringup, "vla_mpc_collect", "[collect]", log) as session:
        runner = session.runner
        runner.wait_for_graph(["sim_robot", "safety_monitor", "policy", "recorder"], startup_timeout_s)
        log(f"[collect] graph up after {time.monotonic() - session.t_start:.1f} s; {len(plans)} episodes ({source})")
        for plan in plans:
            hold = random_episode_s if plan.source == "random" else None
            o = runner.run_episode(plan, hold_s=hold)
            outcomes.append(o)
            log(f"[collect] episode {plan.episode} {plan.kind} seed {plan.seed}: "
                f"{'SUCCESS' if o.success else 'fail'} ttS {o.time_to_success_s} sim {o.duration_s:.1f} s, "
                f"wall {o.wall_s:.1f} s{'; ' + o.error if o.error else ''}")
            if o.error and not any(x.ready for x in outcomes):
                raise GraphError(f"first episode never became ready: {o.error} (does sim_robot implement "
                                 f"contract G /vla_mpc/episode?)")
    error, codes, wall = session.error, session.exit_codes, session.wall_s
    ran = [o for o in outcomes if o.ready]
    summary = {
        "robot": robot, "source": source, "bag": str(output / "bag"), "error": error, "exit_codes": codes,
        "episodes": [outcome_row(o) for o in outcomes],
        "n_episodes": len(outcomes), "n_ready": len(ran), "n_success": sum(o.success for o in ran),
        "success_rate": (sum(o.success for o in ran) / len(ran)) if ran else None,
        "wall_s_total": round(wall, 2),
        "wall_s_per_episode": round(sum(o.wall_s for o in outcomes) / len(outcomes), 3) if outcomes else None,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def parse_kinds(text: str) -> list[str]:
    """``"reach,push"`` -> ["reach", "push"] (whitespace ignored, empty items dropped)."""
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_mpc.collect``; exit code 0 when every episode ran (success or not)."""
    from vla_mpc.bringup import parse_overrides
    from vla_mpc.graph import ROBOTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="panda", choices=ROBOTS)
    ap.add_argument("--kinds", default="reach,push,pick_place", help="comma-separated task kinds")
    ap.add_argument("--episodes-per-kind", type=int, default=10)
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (training seeds < 100000)")
    ap.add_argument("--source", default="expert", choices=SOURCES)
    ap.add_argument("--noise-std", type=float, default=0.03, help="perturbed: policy scripted_noise_std [rad]")
    ap.add_argument("--timeout", type=float, default=None, help="episode timeout [s sim] for every kind")
    ap.add_argument("--random-episode-s", type=float, default=8.0, help="random: episode length [s sim]")
    ap.add_argument("--record-topics", default="dataset", choices=("dataset", "all"))
    ap.add_argument("--output", type=Path, default=None, help="output folder (default output/collect-<time>)")
    ap.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="parameter override")
    a = ap.parse_args(argv)
    from vla_mpc.sim.tasks import EVAL_SEED_OFFSET

    if a.seed_start + a.episodes_per_kind > EVAL_SEED_OFFSET:
        ap.error(f"seeds must stay below EVAL_SEED_OFFSET={EVAL_SEED_OFFSET} (kept for evaluation)")
    kinds = parse_kinds(a.kinds)
    timeouts = {k: a.timeout for k in kinds} if a.timeout else None
    try:
        plans = plan_episodes(a.robot, kinds, a.episodes_per_kind, a.seed_start, a.source, timeouts)
    except ValueError as exc:
        ap.error(str(exc))
    overrides = parse_overrides(a.set)
    pol = policy_overrides(a.source, a.noise_std)
    if pol:
        overrides.setdefault("policy", {}).update({k: v for k, v in pol.items() if k not in overrides.get("policy", {})})
    output = a.output or Path("output") / time.strftime("collect-%Y%m%d-%H%M%S")
    summary = run(a.robot, plans, output, overrides, a.record_topics, a.random_episode_s)
    print(json.dumps({k: summary[k] for k in ("bag", "n_episodes", "n_ready", "n_success", "success_rate",
                                               "wall_s_total", "wall_s_per_episode", "error")}))
    return 0 if summary["error"] is None and summary["n_ready"] == summary["n_episodes"] else 1


if __name__ == "__main__":
    sys.exit(main())
