"""A learned action-conditioned JEPA world model (V-JEPA 2-AC style) for goal-image planning.

Parts (``JepaNet``, a ``torch.nn.Module``):

* **encoder**: a small CNN on ``(S, S, 3)`` uint8 RGB frames (contract C pixels,
  ``vla_mpc.models.vision.resize_frame``) -> ``z (D,)``. Conv 5x5/2 -> 3x3/2 -> 3x3/1 (GELU), then
  a per-image normalisation of the last maps (``GroupNorm(1, C)``) and a spatial soft-argmax over the last feature maps (one expected (x, y) image coordinate per
  channel: Levine, Finn et al., "End-to-End Training of Deep Visuomotor Policies", JMLR 2016,
  and Finn et al., "Deep Spatial Autoencoders for Visuomotor Learning", ICRA 2016: keypoints
  localise the arm far better than a flattened feature map) concatenated with the channels'
  global mean, an MLP to ``D`` and a layer norm without affine parameters (every latent has zero
  mean and unit variance over its D entries, as V-JEPA normalises its targets; this fixes the
  latent's scale, so L1 distances are comparable across checkpoints).
* **target encoder**: an exponential moving average of the encoder (I-JEPA / V-JEPA / BYOL),
  no gradients; it makes the prediction targets and is the encoder used at planning time.
* **predictor** ``(z_t, q_t, a_t) -> z_{t+1}``: a residual MLP, ``z + MLP([z, q~, a~])``, where
  ``q~`` are joint positions scaled to [-1, 1] over the position limits and ``a~`` joint position
  deltas per step divided by ``velocity * dt`` (the largest feasible step), so both are O(1).
  The MLP's output layer starts at zero, so the untrained predictor is exactly copy-last.
  Unrolled for a horizon by feeding predictions back, with the joint positions integrated
  exactly (``q_{t+1} = q_t + a_t``), as V-JEPA 2-AC integrates its end-effector state.
* **proprio head**: a linear map ``z -> q~`` (joint positions from the image alone).

Objective (``JepaNet.loss``; batch from ``vla_mpc.training.world_model.make_world_model_batch``):

* ``teacher_forcing``: mean over t of ``L1(P(z_t, q_t, a_t), sg(z-bar_{t+1}))`` with ``z_t`` the
  online encoding of frame t and ``z-bar`` the EMA target encoding (V-JEPA 2-AC's teacher-forcing
  loss; L1 as in its paper);
* ``rollout``: the same L1 along an autoregressive unroll over all T steps (V-JEPA 2-AC's
  multi-step rollout loss, which it found necessary for planning), started from the *target*
  encoder's ``z-bar_0``: that is the latent the planner starts from (``encode`` uses the target
  encoder), and V-JEPA 2-AC's own rollout starts from its frozen encoder's latent. This term
  trains the predictor only; the encoder's prediction gradient comes from teacher forcing;
* **collapse guards** (an encoder trained jointly with its predictor can map every frame to one
  point, making every prediction perfect): (1) the EMA target encoder with stop-gradient
  (BYOL, Grill et al. 2020; I-JEPA, Assran et al. 2023); (2) VICReg's variance and covariance
  terms on the online embeddings of the batch (Bardes, Ponce, LeCun, "VICReg", ICLR 2022):
  ``mean_d relu(gamma - std_d)`` and the sum of squared off-diagonal covariances / D; (3) a
  proprioceptive grounding head: ``MSE(head(z_t), q~_t)`` forces the latent to carry the arm
  configuration (as DINO-WM / V-JEPA 2-AC condition on proprioception; here it is a target).
  ``metrics`` report ``latent_std`` (the batch std averaged over dimensions; near 0 = collapse).

The EMA update of the target encoder happens inside ``loss`` when the module is in training mode
(before the forward pass, so each call's targets come from the previous step's online weights):
the shared training loop (``vla_mpc.training.loop.train``) only calls ``loss`` and the optimiser.
``JepaNet.freeze_encoder`` switches to a second stage that trains the predictor alone on the frozen
target encoder's latents (V-JEPA 2-AC trains its predictor on a frozen encoder): the jointly
trained representation keeps moving during stage one, a target the predictor can only chase.

``JepaWorldModel`` wraps a trained net in the planner's ``WorldModel`` API: the latent is
``[z (D), q (n)]`` (shape ``(D + n,)``), ``next`` applies the predictor and the exact joint
integration (actions clipped to ``velocity * dt`` like ``KinematicWorldModel``), and ``cost`` is
V-JEPA 2-AC's energy, the L1 distance (mean over D) of the predicted visual latent to the goal
image's latent (final step plus ``running_goal_weight`` times the mean over steps), plus the
``KinematicWorldModel`` constraint and effort costs on the integrated joint positions (joint-limit
barrier, table and keep-out boxes through forward kinematics).

Checkpoint (``save_world_model`` / ``load_world_model``): a directory with ``model.safetensors``
(all weights, including the target encoder) and ``config.json`` (``JepaConfig`` fields). No pickle.

Nothing here imports rclpy.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vla_mpc.models.world_model import Goal, KinematicCostConfig, KinematicWorldModel, WorldModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "vla_mpc.jepa_world_model/1"


@dataclass(frozen=True)
class JepaConfig:
    """Shapes and loss weights of ``JepaNet`` (stored in the checkpoint's ``config.json``).

    Attributes:
        robot: robot name (``config/<robot>.yaml``), for the constraint costs at planning time.
        joint_names: command joints, the order of ``q`` and actions (``RobotSpec.joint_names``).
        lower, upper: position limits [rad or m] over ``joint_names`` (scale ``q`` to [-1, 1]).
        velocity: velocity limits [rad/s or m/s] (scale actions by ``velocity * dt``).
        dt: seconds per predicted step (the dataset's frame period, 1 / ``frame_rate_hz``).
        image_size: ``S``, frames are ``(S, S, 3)`` uint8.
        latent_dim: ``D``.
        channels: conv channels of the three encoder layers.
        hidden_dim: predictor MLP width.
        predictor_layers: hidden layers of the predictor MLP (>= 1).
        ema_decay: target encoder ``theta-bar <- decay * theta-bar + (1 - decay) * theta``.
        rollout_weight, variance_weight, covariance_weight, proprio_weight: loss weights.
        proprio_head_hidden: width of the proprio head's hidden layer (0: a linear map ``z -> q``,
            the original head; > 0: one GELU hidden layer, for a more exact image -> joints read-out).
        variance_target: the per-dimension batch std below which the variance term acts
            (VICReg's gamma; below VICReg's 1 because the layer-normed latent of a scene with a few
            degrees of freedom cannot spread every dimension to unit std without inventing
            unpredictable variation).

    Raises:
        ValueError: naming the first invalid field.
    """

    robot: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    velocity: tuple[float, ...]
    dt: float = 0.1
    image_size: int = 96
    latent_dim: int = 32
    channels: tuple[int, int, int] = (16, 32, 32)
    hidden_dim: int = 128
    predictor_layers: int = 2
    ema_decay: float = 0.99
    rollout_weight: float = 1.0
    variance_weight: float = 1.0
    covariance_weight: float = 0.01
    proprio_weight: float = 1.0
    proprio_head_hidden: int = 0
    variance_target: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        n = len(self.joint_names)
        if n < 1:
            raise ValueError("joint_names must not be empty")
        for name in ("lower", "upper", "velocity"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != n or not all(math.isfinite(x) for x in v):
                raise ValueError(f"{name} must be {n} finite values (one per joint), got {v}")
            object.__setattr__(self, name, v)
        if any(lo >= hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError(f"lower must be < upper for every joint, got {self.lower} / {self.upper}")
        if any(v <= 0 for v in self.velocity):
            raise ValueError(f"velocity must be > 0 for every joint, got {self.velocity}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 3 or min(self.channels) < 1:
            raise ValueError(f"channels must be 3 positive ints, got {self.channels}")
        if isinstance(self.proprio_head_hidden, bool) or not isinstance(self.proprio_head_hidden, int) \
                or self.proprio_head_hidden < 0:
            raise ValueError(f"proprio_head_hidden must be an int >= 0, got {self.proprio_head_hidden!r}")
        for name in ("image_size", "latent_dim", "hidden_dim", "predictor_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16 px, got {self.image_size}")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a finite number > 0 [s], got {self.dt!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        for name in ("rollout_weight", "variance_weight", "covariance_weight", "proprio_weight", "variance_target"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def from_robot_spec(cls, spec: Any, dt: float = 0.1, **kwargs: Any) -> "JepaConfig":
        """Joints and limits from a ``RobotSpec`` (``vla_mpc.core.robot_model.load_robot_spec``)."""
        lim = spec.limits
        return cls(robot=spec.name, joint_names=tuple(spec.joint_names), lower=tuple(lim.lower),
                   upper=tuple(lim.upper), velocity=tuple(lim.velocity), dt=dt, **kwargs)

    def to_json(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        return d

    @classmethod
    def from_json(cls, d: dict, source: str = "config") -> "JepaConfig":
        """Raises ValueError naming ``source`` on a wrong format or unknown / missing fields."""
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: format must be {FORMAT!r}, got {d.get('format')!r}")
        from vla_mpc.core.config import dataclass_from_json

        return dataclass_from_json(cls, d, source)


# ---------------------------------------------------------------------------------- modules


class SpatialSoftArgmax(nn.Module):
    """``(B, C, H, W)`` feature maps -> ``(B, 2C)`` expected (x, y) per channel in [-1, 1]
    (softmax over the H*W positions; Levine et al. 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = torch.softmax(x.reshape(b, c, h * w), dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
        ex = (p.sum(dim=2) * xs).sum(dim=-1)  # [B, C]
        ey = (p.sum(dim=3) * ys).sum(dim=-1)  # [B, C]
        return torch.cat([ex, ey], dim=-1)


class ConvEncoder(nn.Module):
    """``(..., S, S, 3)`` uint8 RGB -> ``(..., D)`` float32 (see module docstring)."""

    def __init__(self, channels: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c1, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c2, c3, 3, stride=1, padding=1),
            nn.GroupNorm(1, c3),  # unit-variance maps: the soft-argmax is peaked from the first step
        )
        self.keypoints = SpatialSoftArgmax()
        self.head = nn.Sequential(nn.Linear(3 * c3, 2 * latent_dim), nn.GELU(), nn.Linear(2 * latent_dim, latent_dim),
                                  nn.LayerNorm(latent_dim, elementwise_affine=False))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        lead = frames.shape[:-3]
        x = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0  # [B, 3, S, S]
        x = (x - 0.5) / 0.25
        f = self.convs(x)  # [B, C, S/4, S/4]
        feats = torch.cat([self.keypoints(f), F.gelu(f).mean(dim=(2, 3))], dim=-1)  # [B, 3C]
        return self.head(feats).reshape(*lead, -1)  # [..., D], layer-normed (zero mean, unit var over D)


class Predictor(nn.Module):
    """``z [B, D]``, ``q~ [B, n]``, ``a~ [B, n]`` -> ``z' [B, D] = z + MLP([z, q~, a~])``."""

    def __init__(self, latent_dim: int, n: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = latent_dim + 2 * n
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        mods.append(nn.Linear(width, latent_dim))
        self.mlp = nn.Sequential(*mods)
        # zero-initialised residual: the untrained predictor is the copy-last baseline exactly, and
        # training only has to learn the change (as residual blocks are zero-initialised in
        # Goyal et al. 2017 / Fixup); a random start is worse than copy-last for hundreds of steps
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z: torch.Tensor, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + self.mlp(torch.cat([z, q, a], dim=-1))


def vicreg_terms(z: torch.Tensor, target_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VICReg variance and covariance terms of ``z (N, D)`` (Bardes et al. 2022, eqs. 1-4).

    Returns:
        ``(variance, covariance, mean_std)``: ``mean_d relu(target_std - sqrt(var_d + 1e-4))``, the sum of
        squared off-diagonal covariances divided by D, and the mean per-dimension std.
    """
    n, d = z.shape
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + 1e-4)
    var = torch.relu(target_std - std).mean()
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return var, off.pow(2).sum() / d, std.mean()


class JepaNet(nn.Module):
    """Encoder, EMA target encoder, predictor and proprio head (see module docstring).

    Args:
        config: ``JepaConfig``.
    """

    def __init__(self, config: JepaConfig) -> None:
        super().__init__()
        self.config = config
        n, d = len(config.joint_names), config.latent_dim
        self.encoder = ConvEncoder(config.channels, d)
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.predictor = Predictor(d, n, config.hidden_dim, config.predictor_layers)
        h = config.proprio_head_hidden
        self.proprio_head = nn.Linear(d, n) if h == 0 else nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, n))
        lower = torch.tensor(config.lower, dtype=torch.float32)
        upper = torch.tensor(config.upper, dtype=torch.float32)
        self.encoder_frozen = False
        self.register_buffer("q_mid", (upper + lower) / 2, persistent=False)
        self.register_buffer("q_half", (upper - lower) / 2, persistent=False)
        self.register_buffer("a_scale", torch.tensor(config.velocity, dtype=torch.float32) * config.dt,
                             persistent=False)

    # -- scaling -------------------------------------------------------------------------

    def norm_q(self, q: torch.Tensor) -> torch.Tensor:
        """Joint positions ``(..., n)`` [rad or m] -> [-1, 1] over the position limits."""
        return (q - self.q_mid) / self.q_half

    def denorm_q(self, qn: torch.Tensor) -> torch.Tensor:
        return qn * self.q_half + self.q_mid

    def norm_a(self, a: torch.Tensor) -> torch.Tensor:
        """Joint deltas per step ``(..., n)`` -> units of the largest feasible step."""
        return a / self.a_scale

    # -- inference -------------------------------------------------------------------------

    @torch.no_grad()
    def encode_target(self, frames: torch.Tensor) -> torch.Tensor:
        """``(..., S, S, 3)`` uint8 -> ``(..., D)`` with the EMA target encoder (planning time)."""
        return self.target_encoder(frames)

    def predict(self, z: torch.Tensor, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """One step: ``z [B, D]``, joint positions ``q [B, n]`` and deltas ``a [B, n]`` (physical
        units) -> ``z' [B, D]``."""
        return self.predictor(z, self.norm_q(q), self.norm_a(a))

    def unroll(self, z0: torch.Tensor, q0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Autoregressive rollout: ``z0 [B, D]``, ``q0 [B, n]``, ``actions [B, T, n]`` (deltas,
        physical units, used as given) -> ``[B, T, D]`` predicted latents after each action."""
        z, q, out = z0, q0, []
        for t in range(actions.shape[1]):
            z = self.predict(z, q, actions[:, t])
            q = q + actions[:, t]
            out.append(z)
        return torch.stack(out, dim=1)

    def freeze_encoder(self) -> None:
        """Second training stage (V-JEPA 2-AC's recipe: a frozen encoder, only the action-conditioned
        predictor learns): the encoders and the proprio head stop learning and the EMA stops; the
        predictor then trains on target-encoder latents only (inputs and targets), the exact
        latents the planner uses, against a target that no longer moves."""
        self.encoder_frozen = True
        for mod in (self.encoder, self.proprio_head, self.target_encoder):
            for p in mod.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def update_target(self) -> None:
        """``theta-bar <- decay * theta-bar + (1 - decay) * theta`` (EMA of the encoder)."""
        decay = self.config.ema_decay
        for pt, po in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            pt.mul_(decay).add_(po.detach(), alpha=1.0 - decay)

    # -- training -------------------------------------------------------------------------

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Training objective (module docstring).

        Args:
            batch: ``"frames"`` uint8 ``(B, T+1, S, S, 3)``; ``"proprio"`` float32
                ``(B, T+1, 2n)`` (joint positions then velocities, raw units; positions used);
                ``"actions"`` float32 ``(B, T, n)`` joint position deltas between frames;
                optionally ``"pose_frames"`` uint8 ``(B2, S, S, 3)`` + ``"pose_q"`` float32
                ``(B2, >= n)``: single rendered frames with their joint positions
                (:mod:`vla_mpc.training.scenes`) that join the proprio term only.

        Returns:
            ``(loss, metrics)``: metrics ``teacher_forcing``, ``rollout``, ``variance``,
            ``covariance``, ``proprio``, ``latent_std`` and ``copy_last`` (L1 of the
            copy-the-last-latent baseline over the same targets, for comparison).

        Raises:
            ValueError: missing keys or inconsistent shapes.
        """
        frames, proprio, actions = _check_batch(batch, self.config)
        if self.training and not self.encoder_frozen:
            self.update_target()
        b, t1 = frames.shape[:2]
        n = len(self.config.joint_names)
        q = proprio[..., :n]  # [B, T+1, n]
        with torch.no_grad():
            target = self.target_encoder(frames)  # [B, T+1, D]
        z = target if self.encoder_frozen else self.encoder(frames)  # [B, T+1, D]
        tf = self.predict(z[:, :-1].reshape(-1, z.shape[-1]), q[:, :-1].reshape(-1, n),
                          actions.reshape(-1, n)).view(b, t1 - 1, -1)  # [B, T, D]
        loss_tf = (tf - target[:, 1:]).abs().mean()
        roll = self.unroll(target[:, 0], q[:, 0], actions)  # [B, T, D] from the planning-time latent
        loss_roll = (roll - target[:, 1:]).abs().mean()
        var, cov, std = vicreg_terms(z.reshape(-1, z.shape[-1]), self.config.variance_target)
        loss_q = F.mse_loss(self.proprio_head(z), self.norm_q(q))
        pose_frames = batch.get("pose_frames")
        if pose_frames is not None and not self.encoder_frozen:
            pose_q = batch["pose_q"].float()[..., :n]
            err_pose = (self.proprio_head(self.encoder(pose_frames)) - self.norm_q(pose_q)).pow(2)
            err_seq = (self.proprio_head(z) - self.norm_q(q)).pow(2).reshape(-1, n)
            loss_q = torch.cat([err_seq, err_pose]).mean()  # one mean over every supervised frame
        c = self.config
        total = loss_tf + c.rollout_weight * loss_roll
        if not self.encoder_frozen:  # constants once the encoder is frozen (reported, not optimised)
            total = total + c.variance_weight * var + c.covariance_weight * cov + c.proprio_weight * loss_q
        copy_last = (target[:, :1] - target[:, 1:]).abs().mean()
        metrics = {"teacher_forcing": loss_tf.item(), "rollout": loss_roll.item(), "variance": var.item(),
                   "covariance": cov.item(), "proprio": loss_q.item(), "latent_std": std.item(),
                   "copy_last": float(copy_last)}
        return total, metrics


def _check_batch(batch: dict[str, torch.Tensor], config: JepaConfig) -> tuple[torch.Tensor, ...]:
    for key in ("frames", "proprio", "actions"):
        if key not in batch:
            raise ValueError(f"batch is missing {key!r} (has {sorted(batch)})")
    frames, proprio, actions = batch["frames"], batch["proprio"].float(), batch["actions"].float()
    n, s = len(config.joint_names), config.image_size
    if frames.ndim != 5 or tuple(frames.shape[2:]) != (s, s, 3) or frames.shape[1] < 2:
        raise ValueError(f"frames must be (B, T+1 >= 2, {s}, {s}, 3), got {tuple(frames.shape)}")
    b, t1 = frames.shape[:2]
    if tuple(proprio.shape[:2]) != (b, t1) or proprio.shape[2] < n:
        raise ValueError(f"proprio must be ({b}, {t1}, >= {n}), got {tuple(proprio.shape)}")
    if tuple(actions.shape) != (b, t1 - 1, n):
        raise ValueError(f"actions must be ({b}, {t1 - 1}, {n}), got {tuple(actions.shape)}")
    return frames, proprio, actions


@torch.no_grad()
def prediction_error_report(net: JepaNet, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Multi-step prediction error of the predictor vs the copy-last-latent baseline.

    Both are measured against the target encoder's latents of frames 1..T: the model unrolls its
    predictor from frame 0's latent with the batch's actions; the baseline predicts "nothing
    changes" (``z_0`` for every step), the standard trivial world model.

    Args:
        net: a ``JepaNet`` (evaluated in ``eval`` mode, no EMA update).
        batch: as ``JepaNet.loss``.

    Returns:
        ``{"horizon": T, "model_l1": [T floats], "copy_last_l1": [T floats], "model_mean": float,
        "copy_last_mean": float, "ratio": model_mean / copy_last_mean}`` (L1 = mean absolute error
        per latent dimension; ratio < 1 means the predictor beats copy-last).
    """
    was_training = net.training
    net.eval()
    try:
        frames, proprio, actions = _check_batch(batch, net.config)
        n = len(net.config.joint_names)
        target = net.target_encoder(frames)  # [B, T+1, D]
        roll = net.unroll(target[:, 0], proprio[:, 0, :n], actions)  # [B, T, D]
        model = (roll - target[:, 1:]).abs().mean(dim=(0, 2))  # [T]
        base = (target[:, :1] - target[:, 1:]).abs().mean(dim=(0, 2))  # [T]
    finally:
        net.train(was_training)
    mm, bm = float(model.mean()), float(base.mean())
    return {"horizon": int(actions.shape[1]), "model_l1": model.tolist(), "copy_last_l1": base.tolist(),
            "model_mean": mm, "copy_last_mean": bm, "ratio": mm / max(bm, 1e-12)}


# ------------------------------------------------------------------------------ checkpoints


def save_world_model(net: JepaNet, path: Path | str) -> None:
    """Write ``path/model.safetensors`` (every weight, target encoder included) and
    ``path/config.json`` (``JepaConfig``). Creates ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE))
    (path / CONFIG_FILE).write_text(json.dumps(net.config.to_json(), indent=2))


def load_world_model(path: Path | str) -> JepaNet:
    """Read a checkpoint written by ``save_world_model``; returns the net in ``eval`` mode.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: a malformed config, or weights whose names / shapes do not match it (named).
    """
    from safetensors.torch import load_file

    path = Path(path)
    cfg_path, w_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"world-model checkpoint file missing: {p}")
    try:
        cfg = JepaConfig.from_json(json.loads(cfg_path.read_text()), source=str(cfg_path))
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: not valid JSON ({e})") from e
    net = JepaNet(cfg)
    state = load_file(str(w_path))
    own = net.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"{w_path}: weights do not match {cfg_path}: missing {missing[:5]}, unexpected {extra[:5]}")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise ValueError(f"{w_path}: shape mismatch for {bad[:5]} "
                         f"(e.g. {bad[0]}: file {tuple(state[bad[0]].shape)}, config {tuple(own[bad[0]].shape)})")
    net.load_state_dict(state)
    return net.eval()


# -------------------------------------------------------------------- the planner's world model


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(size, size, 3)`` uint8 with contract C's
    ``vla_mpc.models.vision.resize_frame`` (centre square crop, ``cv2.INTER_AREA``), so training
    and planning see the same pixels. Frames already ``size`` x ``size`` pass unchanged.

    Raises:
        ValueError: not an (H, W, 3) uint8 array.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    if img.shape[:2] == (size, size):
        return img
    from vla_mpc.models.vision import resize_frame

    return resize_frame(img, size)


class JepaWorldModel(WorldModel):
    """The planner's ``WorldModel`` over a trained ``JepaNet`` (see module docstring).

    Args:
        net: a trained ``JepaNet`` (put in ``eval`` mode).
        kinematic: a ``KinematicWorldModel`` over the same joints and ``dt``: joint integration,
            action clipping, forward kinematics and the constraint / effort costs.
        latent_weight: cost per unit of mean-absolute latent distance to the goal latent.
        running_goal_weight: weight of the latent distance averaged over the H steps (0: final only).

    Raises:
        ValueError: joints or ``dt`` of the two models differ, or negative weights.
    """

    supports_image_goals = True

    def __init__(self, net: JepaNet, kinematic: KinematicWorldModel, latent_weight: float = 10.0,
                 running_goal_weight: float = 1.0) -> None:
        cfg = net.config
        if tuple(kinematic.joint_names) != tuple(cfg.joint_names):
            raise ValueError(f"kinematic model joints {list(kinematic.joint_names)} != world model joints "
                             f"{list(cfg.joint_names)}")
        if abs(kinematic.dt - cfg.dt) > 1e-9:
            raise ValueError(f"kinematic model dt {kinematic.dt} s != world model dt {cfg.dt} s")
        if not (latent_weight >= 0 and running_goal_weight >= 0):
            raise ValueError("latent_weight and running_goal_weight must be >= 0")
        self.net = net.eval()
        self.kinematic = kinematic
        self.n = len(cfg.joint_names)
        self.d = cfg.latent_dim
        self.latent_shape = (self.d + self.n,)
        self.action_dim = self.n
        self.dt = cfg.dt
        self.fk = kinematic.fk
        self.latent_weight = float(latent_weight)
        self.running_goal_weight = float(running_goal_weight)

    @classmethod
    def from_checkpoint(cls, path: Path | str, robot: Any = None,
                        cost_config: KinematicCostConfig | None = None, **kwargs: Any) -> "JepaWorldModel":
        """Load ``path`` (``load_world_model``) and build the kinematic part from ``robot`` (a
        ``RobotModel``; default: the checkpoint's robot config).

        Raises:
            FileNotFoundError, ValueError: as ``load_world_model``; a robot whose joints differ.
        """
        net = load_world_model(path)
        if robot is None:
            from vla_mpc.core.robot_model import RobotModel, load_robot_spec

            robot = RobotModel(load_robot_spec(net.config.robot))
        kin = KinematicWorldModel.from_robot_model(robot, net.config.dt, cost_config)
        return cls(net, kin, **kwargs)

    def action_bounds(self, velocity_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``KinematicWorldModel.action_bounds``."""
        return self.kinematic.action_bounds(velocity_scale)

    def split(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., D + n)`` -> visual latent ``(..., D)`` and joint positions ``(..., n)``."""
        return latents[..., : self.d], latents[..., self.d:]

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB -> visual latent ``(D,)`` (target encoder)."""
        img = prepare_image(image, self.net.config.image_size)
        return self.net.encode_target(torch.from_numpy(np.ascontiguousarray(img)))

    def encode(self, image: np.ndarray | None, proprio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``image (H, W, 3)`` uint8 and joint positions ``(n,)`` -> ``[z (D), q (n)]``.

        Raises:
            ValueError: no image, a malformed image, or malformed ``proprio``.
        """
        if image is None:
            raise ValueError("JepaWorldModel.encode needs the current camera image")
        q = self.kinematic.encode(None, proprio)
        return torch.cat([self.encode_image(image), q])

    @torch.no_grad()
    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``[B, D + n]``, ``a [B, n]`` -> ``[B, D + n]``; actions clipped to ``velocity * dt``."""
        v, q = self.split(z)
        a = self.kinematic.next(torch.zeros_like(a), a)  # clipped deltas
        return torch.cat([self.net.predict(v, q, a), q + a], dim=-1)

    @torch.no_grad()
    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``z0 [D + n]``, ``actions [S, H, n]`` -> ``[S, H, D + n]`` (batched over S)."""
        s = actions.shape[0]
        v0, q0 = self.split(z0)
        a = self.kinematic.next(torch.zeros_like(actions), actions)  # clipped [S, H, n]
        q = q0.view(1, 1, -1) + torch.cumsum(a, dim=1)  # [S, H, n]
        vis = self.net.unroll(v0.unsqueeze(0).expand(s, -1), q0.unsqueeze(0).expand(s, -1), a)  # [S, H, D]
        return torch.cat([vis, q], dim=-1)

    def make_goal(
        self,
        image: np.ndarray | None = None,
        joint_positions: np.ndarray | Sequence[float] | None = None,
        ee_position: np.ndarray | Sequence[float] | None = None,
    ) -> Goal:
        """A goal image (-> its visual latent ``(D,)``), optionally with joint / end-effector goals
        for the kinematic cost terms (``Goal.latent`` then holds ``[z_goal, q_goal]``).

        Raises:
            ValueError: no goal, or malformed values.
        """
        if image is None and joint_positions is None and ee_position is None:
            raise ValueError("a goal needs an image, joint_positions or ee_position")
        vis = None if image is None else self.encode_image(image)
        kin = None
        if joint_positions is not None or ee_position is not None:
            kin = self.kinematic.make_goal(joint_positions=joint_positions, ee_position=ee_position)
        latent = vis
        if kin is not None and kin.latent is not None:
            latent = torch.cat([vis if vis is not None else torch.full((self.d,), float("nan")), kin.latent])
        return Goal(latent=latent, ee_position=None if kin is None else kin.ee_position)

    def decode_joint_positions(self, visual_latent: torch.Tensor) -> np.ndarray:
        """The proprio head: visual latent ``(..., D)`` -> joint positions ``(..., n)`` [rad, m]
        (clipped to the limits). How a goal image becomes a joint-space goal for the kinematic
        model."""
        with torch.no_grad():
            q = self.net.denorm_q(self.net.proprio_head(visual_latent))
        return np.clip(q.numpy().astype(np.float64), self.net.config.lower, self.net.config.upper)

    @torch.no_grad()
    def cost(self, latents: torch.Tensor, actions: torch.Tensor, goal: Goal | None) -> torch.Tensor:
        """``latents [S, H, D + n]``, ``actions [S, H, n]`` -> ``[S]`` (module docstring)."""
        vis, q = self.split(latents)
        kin_goal = None
        total = torch.zeros(latents.shape[0], dtype=latents.dtype)
        if goal is not None:
            g = goal.latent
            if g is not None and g.shape[-1] in (self.d, self.d + self.n):
                gv = g[: self.d]
                if torch.isfinite(gv).all() and self.latent_weight > 0:
                    dist = (vis - gv).abs().mean(dim=-1)  # [S, H]
                    total = total + self.latent_weight * (dist[:, -1] + self.running_goal_weight * dist.mean(dim=1))
            gq = g[self.d:] if g is not None and g.shape[-1] == self.d + self.n else None
            kin_goal = Goal(latent=gq, ee_position=goal.ee_position, reference_actions=goal.reference_actions)
        return total + self.kinematic.cost(q, actions, kin_goal)

    def ee_positions(self, latents: torch.Tensor) -> torch.Tensor:
        """``(..., D + n)`` (or ``(..., n)`` joint positions) -> ``(..., 3)`` end effector [m]."""
        q = latents[..., self.d:] if latents.shape[-1] == self.d + self.n else latents
        return self.kinematic.ee_positions(q)

    def joint_positions(self, latents: torch.Tensor) -> torch.Tensor:
        """``(..., D + n)`` -> ``(..., n)`` the integrated joint positions."""
        return latents[..., self.d:]
