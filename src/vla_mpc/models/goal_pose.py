"""Goal pose from a goal image: where the end effector is in a camera frame.

The planner's ``decoded`` goal route needs the end-effector position a goal image shows. The JEPA
world model's proprio head reads joint positions from its 32-d latent, and that read-out was too
coarse for a 3 cm goal (0.1-0.3 rad per joint, ~12 cm at the tool, even on training frames). This
is a dedicated regressor: System 2's CNN (:class:`vla_mpc.models.vision.ConvEncoder`, S/16 x S/16
spatial tokens) followed by an MLP over the flattened token grid (position-specific weights keep
where things are in the image) to the tool position in ``base_link`` [m]. A fixed camera makes this
a plain regression; it is trained on scene sets (``python -m vla_mpc.train scenes``, arm poses from
a dataset) with forward-kinematics labels (``python -m vla_mpc.train goal_pose``).

Checkpoint: a directory with ``model.safetensors`` and ``config.json`` ``{"format":
"vla_mpc.goal_pose/1", "robot", "image_size", "width", "d_model", "hidden", "ee_mean" [3],
"ee_std" [3]}``; never pickle. No rclpy here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_mpc.models.vision import ConvEncoder, images_to_tensor, random_shift, resize_frame

__all__ = ["FORMAT", "GoalPoseConfig", "GoalPoseEstimator", "save_goal_pose", "load_goal_pose"]

FORMAT = "vla_mpc.goal_pose/1"


@dataclass(frozen=True)
class GoalPoseConfig:
    """Shapes and normalisation of a :class:`GoalPoseEstimator`.

    Attributes:
        robot: robot name (``config/<robot>.yaml``) whose ``ee_link`` the labels are.
        image_size: frame side S [px] (multiple of 16), after ``resize_frame``.
        width: first-layer CNN channels (multiple of 8); d_model: token width; hidden: MLP width.
        ee_mean / ee_std: (3,) normalisation of the target positions [m] (from the training labels).
        augment_shift: DrQ random-shift range during training [px].
    """

    robot: str
    image_size: int = 96
    width: int = 32
    d_model: int = 64
    hidden: int = 256
    ee_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ee_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    augment_shift: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "ee_mean", tuple(float(v) for v in self.ee_mean))
        object.__setattr__(self, "ee_std", tuple(float(v) for v in self.ee_std))
        for name, low in (("image_size", 16), ("width", 8), ("d_model", 8), ("hidden", 8), ("augment_shift", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"GoalPoseConfig.{name} must be an int >= {low}, got {v!r}")
        if self.image_size % 16 or self.width % 8:
            raise ValueError(f"GoalPoseConfig: image_size must be a multiple of 16 and width of 8, got "
                             f"{self.image_size}, {self.width}")
        if len(self.ee_mean) != 3 or len(self.ee_std) != 3 or not all(math.isfinite(v) for v in self.ee_mean) \
                or not all(math.isfinite(v) and v > 0 for v in self.ee_std):
            raise ValueError(f"GoalPoseConfig: ee_mean / ee_std must be 3 finite values (std > 0), got "
                             f"{self.ee_mean} / {self.ee_std}")


class GoalPoseEstimator(nn.Module):
    """(B, S, S, 3) uint8 frames -> (B, 3) end-effector positions [m, ``base_link``]."""

    def __init__(self, config: GoalPoseConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ConvEncoder(config.image_size, config.width, config.d_model)
        tokens = (config.image_size // 16) ** 2
        self.head = nn.Sequential(nn.LayerNorm(tokens * config.d_model), nn.Linear(tokens * config.d_model, config.hidden),
                                  nn.GELU(), nn.Linear(config.hidden, 3))
        self.register_buffer("ee_mean", torch.tensor(config.ee_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("ee_std", torch.tensor(config.ee_std, dtype=torch.float32), persistent=False)

    def forward_normalised(self, frames: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 3) normalised positions."""
        s = self.config.image_size
        if frames.dim() != 4 or tuple(frames.shape[1:]) != (s, s, 3):
            raise ValueError(f"frames must be (B, {s}, {s}, 3) uint8, got {tuple(frames.shape)}")
        x = images_to_tensor(frames)
        if augment and self.config.augment_shift:
            x = random_shift(x, self.config.augment_shift)
        return self.head(self.encoder(x).flatten(1))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE in normalised units; ``batch``: ``frames`` uint8 (B, S, S, 3), ``ee`` float32 (B, 3) [m].
        Metrics: ``loss`` and ``error_cm`` (mean Euclidean error)."""
        pred = self.forward_normalised(batch["frames"], augment=self.training)
        target = (batch["ee"].float() - self.ee_mean) / self.ee_std
        loss = (pred - target).pow(2).mean()
        err = ((pred.detach() - target) * self.ee_std).norm(dim=1).mean()
        return loss, {"loss": float(loss.detach()), "error_cm": float(err) * 100.0}

    @torch.inference_mode()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB frame (any size: ``resize_frame`` to ``image_size``) -> (3,)
        float64 end-effector position [m, ``base_link``].

        Raises:
            ValueError: not an (H, W, 3) uint8 image.
        """
        frame = resize_frame(np.asarray(image), self.config.image_size)
        out = self.forward_normalised(torch.from_numpy(frame)[None]) * self.ee_std + self.ee_mean
        return out[0].numpy().astype(np.float64)


def save_goal_pose(model: GoalPoseEstimator, path: Path | str) -> None:
    """Write ``model.safetensors`` + ``config.json`` into the directory ``path`` (created)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({"format": FORMAT, **asdict(model.config)}, indent=1))


def load_goal_pose(path: Path | str) -> GoalPoseEstimator:
    """Load a goal-pose checkpoint directory (or a training output directory: its ``best``).

    Raises:
        FileNotFoundError: the directory or a file is missing (named).
        ValueError: bad JSON, wrong format, bad config fields, or weights that do not match
            (missing / unexpected / mis-shaped / non-finite tensors), naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "best" / "config.json").is_file() and not (path / "config.json").is_file():
        path = path / "best"
    from vla_mpc.core.config import dataclass_from_json, read_format_json

    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    doc = read_format_json(cfg_path, FORMAT, "goal pose checkpoint", "python -m vla_mpc.train goal_pose")
    if not w_path.is_file():
        raise FileNotFoundError(f"goal pose checkpoint: {w_path} not found")
    config = dataclass_from_json(GoalPoseConfig, doc, f"goal pose checkpoint: {cfg_path}")
    model = GoalPoseEstimator(config)
    try:
        weights = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"goal pose checkpoint: {w_path} is not a readable safetensors file: {exc}") from exc
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ValueError(f"goal pose checkpoint: {w_path}: missing tensors {missing[:5]}, unexpected {extra[:5]}")
    for k, v in weights.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"goal pose checkpoint: {w_path}: {k} is {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if not torch.isfinite(v).all():
            raise ValueError(f"goal pose checkpoint: {w_path}: {k} has non-finite values")
    model.load_state_dict(weights)
    return model.eval()
