"""Policy checkpoints: safetensors + config.json round trip; every way a checkpoint can be broken is
refused at load with a message naming the file and the mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vla_mpc.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_policy, save_policy
from vla_mpc.models.learned import load_learned_backends
from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig

JOINTS = ("a", "b", "c")


def _policy(**kw) -> DualSystemPolicy:
    dof = len(JOINTS)
    stats = {"proprio": {"mean": [0.1] * 2 * dof, "std": [2.0] * 2 * dof},
             "action": {"mean": [0.0] * dof, "std": [1.0] * dof},
             "action_delta": {"mean": [0.01] * dof, "std": [0.3] * dof}}
    cfg = dict(robot="test", joint_names=JOINTS, image_size=32, vision_width=8, d_model=32, vlm_heads=2,
               latent_tokens=4, latent_dim=16, chunk_size=8, expert_width=64, expert_blocks=2, cond_dim=32)
    cfg.update(kw)
    torch.manual_seed(0)
    return DualSystemPolicy(PolicyConfig(**cfg), stats).eval()


@pytest.fixture
def saved(tmp_path):
    pol = _policy()
    path = tmp_path / "ckpt"
    save_policy(pol, path, extra={"steps": 3})
    return pol, path


def test_round_trip_reproduces_outputs_and_stores_no_pickle(saved):
    pol, path = saved
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    doc = json.loads((path / CONFIG_FILE).read_text())
    assert doc["format"] == "vla_mpc.policy/1" and doc["extra"] == {"steps": 3}
    assert doc["stats"]["action_delta"]["std"] == [0.3] * 3 and doc["parameters"]["total"] > 0
    header_len = int.from_bytes((path / WEIGHTS_FILE).read_bytes()[:8], "little")  # safetensors header
    assert json.loads((path / WEIGHTS_FILE).read_bytes()[8:8 + header_len])
    back = load_policy(path)
    assert back.config == pol.config and not back.training
    z = torch.randn(1, 4, 16)
    img, txt = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8), torch.randn(1, 384)
    noise = torch.randn(1, 8, 3)
    proprio = torch.randn(1, 6)
    with torch.no_grad():
        torch.testing.assert_close(back.encode(img, txt), pol.encode(img, txt))
    torch.testing.assert_close(back.sample_chunk(z, proprio, noise=noise), pol.sample_chunk(z, proprio, noise=noise))


def test_missing_directory_and_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="nowhere.*does not exist"):
        load_policy(tmp_path / "nowhere")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: missing"):
        load_policy(path)
    (path / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: missing"):
        load_policy(path)


def test_corrupt_files_are_refused(saved):
    _, path = saved
    w = path / WEIGHTS_FILE
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])  # truncated download / disk full
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: corrupt"):
        load_policy(path)
    w.write_bytes(b"\x80\x04\x95")  # a pickle opcode stream is not safetensors
    with pytest.raises(CheckpointError, match=f"{WEIGHTS_FILE}: corrupt"):
        load_policy(path)
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE}: not valid JSON"):
        load_policy(path)


def test_config_problems_name_the_field(saved):
    _, path = saved
    cfg_file = path / CONFIG_FILE
    doc = json.loads(cfg_file.read_text())
    for edit, pattern in (
        (lambda d: d.update(format="other/9"), "format 'other/9'"),
        (lambda d: d["config"].update(sampler="euler"), "sampler"),
        (lambda d: d["config"].update(colour="red"), "unknown PolicyConfig key"),
        (lambda d: d["stats"].pop("action_delta"), "action_delta"),
        (lambda d: d["stats"]["proprio"].update(std=[1.0]), r"stats\['proprio'\]\['std'\]"),
    ):
        broken = json.loads(json.dumps(doc))
        edit(broken)
        cfg_file.write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_policy(path)
        assert CONFIG_FILE in str(info.value)


def test_weights_that_do_not_match_the_config(saved, tmp_path):
    _, path = saved
    other = tmp_path / "wider"
    save_policy(_policy(expert_width=128), other)
    (path / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(CheckpointError, match=r"shape mismatch.*system1\.in_x\.weight"):
        load_policy(path)
    from safetensors.torch import load_file, save_file

    save_policy(_policy(), path)
    tensors = load_file(str(path / WEIGHTS_FILE))
    del tensors["system1.out.bias"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"missing tensors \['system1.out.bias'\].*unexpected tensors \['extra.weight'\]"):
        load_policy(path)
    tensors = load_file(str(other / WEIGHTS_FILE))
    save_policy(_policy(), path)
    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["system1.out.bias"][0] = float("nan")
    save_file(tensors, str(path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="non-finite"):
        load_policy(path)


def test_joint_names_must_match_the_robot(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match=r"config.json: joint_names \['a', 'b', 'c'\].*\['a', 'b', 'x'\]"):
        load_learned_backends(path, ("a", "b", "x"), need_system2=False)
    policy, s2, make_s1 = load_learned_backends(path, JOINTS, need_system2=False)
    assert s2 is None
    s1 = make_s1()
    assert s1.infer(np.zeros((4, 16), np.float32), np.zeros(3)).shape == (8, 3)


def test_the_shipped_franka_policy_is_what_the_benchmarks_and_budget_say():
    """``checkpoints/panda/policy`` loads for the Panda's joints, has the System 2 that
    ``bench policy`` times, and its training (the stages whose work it holds) fits the 30 min."""
    from pathlib import Path

    from vla_mpc.bench.learning import staged_cost
    from vla_mpc.bench.policy import SYSTEM1_STATE, shipped_policy_config
    from vla_mpc.core.robot_model import load_robot_spec

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "panda" / "policy"
    policy = load_policy(shipped, expected_joint_names=load_robot_spec("panda").joint_names)
    c = policy.config
    assert shipped_policy_config()[0] == c  # the System 2 bench policy times is the shipped one's
    assert c.feature_points == 8 and c.system1_condition == "keypoints" and c.action_mode == "ee"
    assert c.system1_state == SYSTEM1_STATE and c.role_points and c.text_tokens == 3
    minutes, _, stages, notes = staged_cost(shipped)
    assert 0 < minutes <= 30.0 and stages == 2 and notes == []  # a fresh System 1, then System 2 on it


def test_the_policy_node_hands_goal_readings_to_system2():
    """The node's ``goal_readings`` parameter reaches the learned System 2: -1 its default
    (:data:`GOAL_READINGS` for the shipped role-point policy), 0 off, N held; below -1 raises."""
    from pathlib import Path

    from vla_mpc.models.learned import GOAL_READINGS
    from vla_mpc.ros.policy_node import load_backends

    shipped = str(Path(__file__).resolve().parents[1] / "checkpoints" / "panda" / "policy")
    for asked, held in ((-1, GOAL_READINGS), (0, 0), (5, 5)):
        _, s2, _ = load_backends("learned", "panda", 16, 0.05, 0.3, checkpoint=shipped, goal_readings=asked)
        assert s2.goal_readings == held
    with pytest.raises(ValueError, match="goal_readings"):
        load_backends("learned", "panda", 16, 0.05, 0.3, checkpoint=shipped, goal_readings=-2)
