"""vla_mpc.collect: episode planning, contract-G events, data-source parameters, graph selection,
and the training-command dispatcher."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from vla_mpc.collect import (
    DATASET_TOPICS, EpisodePlan, parse_kinds, plan_episodes, policy_overrides,
)


def fake_sample(robot: str, kind: str, seed: int) -> SimpleNamespace:
    return SimpleNamespace(instruction=f"{kind}-{seed}-{robot}")


def test_plan_round_robin_over_kinds_and_seeds() -> None:
    plans = plan_episodes("panda", ["reach", "push"], 3, 10, "expert", timeouts={"push": 5.0}, sample=fake_sample)
    assert [(p.episode, p.kind, p.seed) for p in plans] == [
        (0, "reach", 10), (1, "push", 10), (2, "reach", 11), (3, "push", 11), (4, "reach", 12), (5, "push", 12)]
    assert plans[1].instruction == "push-10-panda"
    assert plans[0].timeout_s == 20.0 and plans[1].timeout_s == 5.0


def test_plan_uses_the_task_sampler() -> None:
    from vla_mpc.sim.tasks import sample_episode

    plans = plan_episodes("panda", ["reach", "pick_place"], 1, 0, "perturbed")
    for p in plans:
        assert p.instruction == sample_episode("panda", p.kind, p.seed).instruction
        assert p.source == "perturbed"


def test_plan_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="fly"):
        plan_episodes("panda", ["fly"], 1, 0, "expert", sample=fake_sample)
    with pytest.raises(ValueError, match="source"):
        plan_episodes("panda", ["reach"], 1, 0, "dreamt", sample=fake_sample)
    with pytest.raises(ValueError, match="episodes_per_kind"):
        plan_episodes("panda", ["reach"], 0, 0, "expert", sample=fake_sample)


def test_events_follow_contract_g() -> None:
    p = EpisodePlan(4, "panda", "push", 17, "push the red cube to the left", "random", 30.0)
    start = p.start_event()
    assert start == {"event": "start", "episode": 4, "seed": 17, "kind": "push",
                     "instruction": "push the red cube to the left", "robot": "panda", "source": "random"}
    end = p.end_event(True, 3.25)
    assert end["event"] == "end" and end["success"] is True and end["time_to_success_s"] == 3.25
    assert {k: v for k, v in end.items() if k not in ("event", "success", "time_to_success_s")} == \
        {k: v for k, v in start.items() if k != "event"}
    assert json.loads(json.dumps(p.end_event(False, None)))["time_to_success_s"] is None


def test_sources_map_to_policy_parameters() -> None:
    assert policy_overrides("expert", 0.05) == {}
    assert policy_overrides("perturbed", 0.05) == {"scripted_noise_std": 0.05, "scripted_random_actions": False}
    assert policy_overrides("random", 0.05) == {"scripted_noise_std": 0.0, "scripted_random_actions": True}


def test_parse_kinds_and_recorded_topics() -> None:
    assert parse_kinds(" reach, push ,,pick_place") == ["reach", "push", "pick_place"]
    for t in ("/vla_mpc/episode", "/vla_mpc/sim/episode_ready", "/joint_states", "/vla_mpc/joint_command",
              "/vla_mpc/observation/front/image", "/vla_mpc/safety/cost", "/forward_position_controller/commands"):
        assert t in DATASET_TOPICS


def test_bringup_exclude_leaves_out_nodes(tmp_path) -> None:
    from vla_mpc.bringup import Bringup

    names = [n.name for n in Bringup(record_dir=tmp_path / "bag", exclude=("latent_mpc_planner",)).nodes()]
    assert names == ["recorder", "sim_robot", "camera_ingest", "policy", "safety_monitor"]
    assert "latent_mpc_planner" in [n.name for n in Bringup().nodes()]


def test_collect_cli_refuses_evaluation_seeds(capsys) -> None:
    from vla_mpc.collect import main

    with pytest.raises(SystemExit):
        main(["--kinds", "reach", "--episodes-per-kind", "5", "--seed-start", "99999"])
    assert "EVAL_SEED_OFFSET" in capsys.readouterr().err


def test_train_dispatcher(monkeypatch, capsys) -> None:
    import sys
    import types

    from vla_mpc import train

    seen = {}
    fake = types.ModuleType("vla_mpc.training.policy")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "vla_mpc.training.policy", fake)
    assert train.main(["policy", "--dataset", "D", "--out", "O", "--resume"]) == 0
    assert seen["argv"] == ["--dataset", "D", "--out", "O", "--resume"]
    with pytest.raises(SystemExit):
        train.main(["nonsense"])
    assert train.main(["--help"]) == 0
    assert "world_model" in capsys.readouterr().out


def test_one_episode_through_the_real_graph_converts(tmp_path) -> None:
    """End to end: the real graph (sim, camera ingest, scripted policy, safety monitor, recorder)
    runs one reach episode; the bag converts into a dataset with that episode. (~40 s)"""
    import os
    import subprocess
    import sys

    from vla_mpc.training.dataset import Dataset, convert

    out = tmp_path / "run"
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    proc = subprocess.run(
        [sys.executable, "-m", "vla_mpc.collect", "--kinds", "reach", "--episodes-per-kind", "1",
         "--seed-start", "3", "--timeout", "20", "--output", str(out)],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_ready"] == 1 and summary["error"] is None
    ep = summary["episodes"][0]
    assert ep["kind"] == "reach" and ep["seed"] == 3 and ep["duration_s"] > 0
    meta = convert([out / "bag"], tmp_path / "ds", image_size=32)
    ds = Dataset.load(tmp_path / "ds")
    assert [(e["kind"], e["seed"], e["success"]) for e in meta["episodes"]] == [("reach", 3, ep["success"])]
    assert len(ds) >= 10  # ~10 frames per second of episode
    assert meta["skipped_bags"] == [] and meta["partial_bags"] == []
    assert 5.0 <= meta["frame_rate_hz"] <= 12.0
