"""vla_mpc.training.loop: loss goes down, checkpoints and logs are written, resume is exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vla_mpc.training.loop import (
    LOG_FILE, STATE_JSON, STATE_TENSORS, SUMMARY_FILE, TrainConfig, load_trainer_state, lr_at,
    make_optimizer, save_trainer_state, train,
)

TRUE_W = np.array([[1.5, -2.0, 0.5], [0.3, 0.8, -1.2]], dtype=np.float32)  # (out 2, in 3)


class Regressor(torch.nn.Module):
    """y = W x + b, with a dropout layer so the torch RNG matters for resume."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2)
        self.drop = torch.nn.Dropout(0.1)

    def loss(self, batch):
        pred = self.lin(self.drop(batch["x"]))
        loss = torch.mean((pred - batch["y"]) ** 2)
        return loss, {"mae": float(torch.mean(torch.abs(pred.detach() - batch["y"])))}


def make_batch(split: str, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
    x = rng.normal(size=(batch_size, 3)).astype(np.float32)
    y = x @ TRUE_W.T + (0.0 if split == "train" else 0.01)
    return {"x": torch.from_numpy(x), "y": torch.from_numpy(y.astype(np.float32))}


def save_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path / "model.safetensors"))


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=60, max_minutes=5.0, batch_size=32, lr=0.2, weight_decay=0.0, warmup_steps=5,
                val_every=10, val_batches=2, checkpoint_every=20, seed=3, num_threads=1, grad_clip=10.0)
    base.update(kw)
    return TrainConfig(**base)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / LOG_FILE).read_text().splitlines()]


def test_loss_goes_down_and_outputs_are_written(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Regressor()
    res = train(module, make_batch, tmp_path, _cfg(), save_weights, progress=False)
    assert res.steps == 60
    rows = _log(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["val_loss"] < 0.2 * rows[0]["val_loss"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert "val/mae" in rows[0] and "train/mae" in rows[0]
    for d in ("last", "best"):
        assert (tmp_path / d / "model.safetensors").is_file()
        assert (tmp_path / d / SUMMARY_FILE).is_file()
    assert (tmp_path / "last" / STATE_TENSORS).is_file() and (tmp_path / "last" / STATE_JSON).is_file()
    assert not (tmp_path / "best" / STATE_TENSORS).exists()
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["steps"] == 60 and summary["stop_reason"] == "max_steps"
    best_row = min(rows, key=lambda r: r["val_loss"])
    assert summary["best_step"] == best_row["step"]
    # the trainer state has no pickle: plain JSON + safetensors
    json.loads((tmp_path / "last" / STATE_JSON).read_text())
    with open(tmp_path / "last" / STATE_TENSORS, "rb") as f:
        assert f.read(2) != b"\x80\x04"


def test_schedule_warmup_then_cosine() -> None:
    cfg = TrainConfig(max_steps=110, warmup_steps=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(500, cfg) == pytest.approx(0.0, abs=1e-12)


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = Regressor()
    init = {k: v.clone() for k, v in ref.state_dict().items()}
    res_ref = train(ref, make_batch, tmp_path / "ref", _cfg(), save_weights, progress=False)

    # the same run, killed at step 47 (after the step-40 checkpoint), then resumed
    crashed = Regressor()
    crashed.load_state_dict(init)
    calls = {"n": 0}

    def dying_batch(split, rng, bs):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == 48:
                raise KeyboardInterrupt
        return make_batch(split, rng, bs)

    with pytest.raises(KeyboardInterrupt):
        train(crashed, dying_batch, tmp_path / "run", _cfg(), save_weights, progress=False)
    assert json.loads((tmp_path / "run" / "last" / STATE_JSON).read_text())["info"]["step"] == 40
    resumed = Regressor()  # fresh weights: everything must come from the trainer state
    res = train(resumed, make_batch, tmp_path / "run", _cfg(), save_weights, resume=True, progress=False)
    assert res.steps == 60
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
    rows_ref, rows = _log(tmp_path / "ref"), _log(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]  # nothing past the step-40 checkpoint duplicated
    for a, b in zip(rows_ref, rows):
        assert a["lr"] == b["lr"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
    assert res.val_loss == pytest.approx(res_ref.val_loss, rel=1e-6)
    assert res.minutes >= json.loads((tmp_path / "run" / "last" / STATE_JSON).read_text())["info"]["minutes"] - 1e-9


def test_resume_drops_log_lines_past_the_checkpoint(tmp_path: Path) -> None:
    module = Regressor()
    calls = {"n": 0}

    def dying_batch(split, rng, bs):
        if split == "train":
            calls["n"] += 1
            if calls["n"] == 56:  # after the step-50 log line, before step 60
                raise KeyboardInterrupt
        return make_batch(split, rng, bs)

    with pytest.raises(KeyboardInterrupt):
        train(module, dying_batch, tmp_path, _cfg(), save_weights, progress=False)
    assert [r["step"] for r in _log(tmp_path)] == [10, 20, 30, 40, 50]
    train(Regressor(), make_batch, tmp_path, _cfg(), save_weights, resume=True, progress=False)
    assert [r["step"] for r in _log(tmp_path)] == [10, 20, 30, 40, 50, 60]


def test_max_minutes_stops_and_counts_across_resume(tmp_path: Path) -> None:
    module = Regressor()
    res = train(module, make_batch, tmp_path, _cfg(max_steps=10**6, max_minutes=0.01, checkpoint_every=10**6),
                save_weights, progress=False)
    assert 0 < res.steps < 10**6
    assert 0.01 <= res.minutes < 0.2
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["stop_reason"] == "max_minutes"
    # a resume with the same budget stops at once: the budget is the total
    res2 = train(Regressor(), make_batch, tmp_path, _cfg(max_steps=10**6, max_minutes=0.01, checkpoint_every=10**6),
                 save_weights, resume=True, progress=False)
    assert res2.steps == res.steps


def test_trainer_state_roundtrip_and_errors(tmp_path: Path) -> None:
    cfg = _cfg(weight_decay=0.1)
    a = Regressor()
    opt = make_optimizer(a, cfg)
    loss, _ = a.loss(make_batch("train", np.random.default_rng(0), 8))
    loss.backward()
    opt.step()
    save_trainer_state(tmp_path, a, opt, {"step": 1})
    b = Regressor()
    opt_b = make_optimizer(b, cfg)
    assert load_trainer_state(tmp_path, b, opt_b) == {"step": 1}
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=0, atol=0)
    sa, sb = opt.state_dict(), opt_b.state_dict()
    for idx in sa["state"]:
        for name, v in sa["state"][idx].items():
            torch.testing.assert_close(sb["state"][idx][name], v, rtol=0, atol=0)
    assert [g["weight_decay"] for g in sb["param_groups"]] == [0.1, 0.0]

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 2)

    other = Other()
    with pytest.raises(ValueError, match="trainer_state.safetensors"):
        load_trainer_state(tmp_path, other, make_optimizer(other, cfg))
    with pytest.raises(FileNotFoundError, match="trainer_state"):
        load_trainer_state(tmp_path / "nope", b, opt_b)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0)


def test_non_finite_loss_raises(tmp_path: Path) -> None:
    class Bad(Regressor):
        def loss(self, batch):
            return self.lin(batch["x"]).sum() * math.nan, {}

    with pytest.raises(FloatingPointError, match="step 0"):
        train(Bad(), make_batch, tmp_path, _cfg(), save_weights, progress=False)
