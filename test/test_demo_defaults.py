"""``make demo``'s choices without running the graph: which policy backend and which task it runs
with and without a shipped learned checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from vla_mpc import demo


def _share(tmp_path: Path, with_policy: bool) -> Path:
    root = tmp_path / ("shipped" if with_policy else "bare")
    (root / "config").mkdir(parents=True)
    if with_policy:
        ckpt = root / "checkpoints" / "panda" / "policy"
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
        (ckpt / "model.safetensors").write_bytes(b"")
    return root


def test_the_demo_runs_the_task_its_policy_solves(tmp_path, monkeypatch):
    bare = _share(tmp_path, with_policy=False)
    monkeypatch.setattr("vla_mpc.paths.share_dir", lambda: bare)
    assert demo.default_checkpoint("panda") is None
    assert demo.policy_params("auto", "panda") == {"backend": "scripted"}
    assert demo.default_kind("panda", "auto") == demo.DEFAULT_KIND == "pick_place"
    assert demo.default_kind("gr1", "auto") == "reach"
    with pytest.raises(FileNotFoundError, match="no shipped checkpoint"):
        demo.policy_params("learned", "panda")

    shipped = _share(tmp_path, with_policy=True)
    monkeypatch.setattr("vla_mpc.paths.share_dir", lambda: shipped)
    assert demo.policy_params("auto", "panda") == {
        "backend": "learned", "checkpoint": str(shipped / "checkpoints" / "panda" / "policy")}
    assert demo.default_kind("panda", "auto") == demo.DEFAULT_LEARNED_KIND == "reach"
    assert demo.default_kind("panda", "scripted") == "pick_place"
    assert demo.default_checkpoint("ur5e") is None and demo.default_kind("ur5e", "auto") == "pick_place"
