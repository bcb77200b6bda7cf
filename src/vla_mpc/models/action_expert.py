"""System 1's action expert: latent ``z`` + proprioception -> an action chunk, by conditional flow
matching or DDIM-sampled diffusion, with real-time-chunking inpainting of a committed prefix.

Generative heads (all in normalised action space, ``x`` (B, H, A)):

* **Flow matching** (Lipman et al. 2023; the pi0 recipe, Black et al. 2024): linear path
  ``x_t = (1 - t) eps + t a`` from noise (t = 0) to data (t = 1), velocity target ``a - eps``,
  training times with noise level ``1 - t ~ 0.001 + 0.999 Beta(1.5, 1)`` (pi0 Sec. 4, more weight
  on noisy times); sampling integrates the ODE with ``num_inference_steps`` forward-Euler steps
  (:func:`flow_sample`).
* **Diffusion** (DDPM training, Ho et al. 2020, as in Diffusion Policy, Chi et al. 2023; cosine
  schedule, Nichol & Dhariwal 2021) sampled with deterministic DDIM (Song et al. 2021, eta = 0) on
  ``num_inference_steps`` evenly spaced timesteps (:func:`ddim_sample`). The network predicts
  ``v = sqrt(ab) eps - sqrt(1 - ab) a`` (v-parameterisation, Salimans & Ho 2022) rather than
  ``eps``: the cosine schedule's last timestep has ``ab ~ 2e-7``, where recovering the clean chunk
  from an ``eps`` prediction divides its error by ``sqrt(ab)`` (measured: 10-step DDIM from an
  eps-trained expert diverged); from ``v`` both ``a`` and ``eps`` follow stably at every timestep.

Real-time chunking (Black, Galliker, Levine 2025, "Real-Time Execution of Action Chunking Flow
Policies", arXiv:2506.07339): when the caller passes the targets already committed for the chunk's
first steps (``prefix``, P steps), every denoising step guides the model's clean-chunk estimate
toward them with the soft mask of their Eq. 5 (:func:`rtc_weights`: 1 on the first ``frozen`` steps,
exponentially decaying to 0 over the rest of the overlap, 0 after): ``a_hat <- a_hat + W (Y - a_hat)``,
then the step continues from the guided estimate. This is their guided inpainting with the
network's Jacobian taken as identity (no vector-Jacobian product, so a denoising step costs one
forward pass); with ``W = 1`` the last step lands exactly on the committed targets, so a new chunk
joins the executing one without a jump.

Batch-1 latency is the design constraint (SIM_AND_MODELS.md: a 2-layer transformer decoder costs
10-15 ms per chunk here, an MLP ~1 ms). The denoiser is a residual MLP over the flattened chunk
(width ``width``, ``blocks`` pre-LN blocks with FiLM conditioning, Perez et al. 2018). Everything
that does not change across denoising steps is computed once per chunk (:meth:`ActionExpert.prepare`:
the condition's contribution to the input layer and every FiLM scale/shift; the time embeddings of
the whole schedule in one batched call), so a step is ``2 * blocks + 2`` small matmuls.
No rclpy here.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "SAMPLERS",
    "ActionExpert",
    "cosine_alpha_bar",
    "diffusion_loss",
    "flow_matching_loss",
    "flow_sample",
    "ddim_sample",
    "ddim_timesteps",
    "rtc_weights",
    "sinusoidal_embedding",
]

SAMPLERS = ("flow", "ddim")


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of times ``t`` (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(1, half - 1))
    args = (t.float() * scale)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def cosine_alpha_bar(num_train_steps: int, s: float = 0.008) -> torch.Tensor:
    """Cumulative signal fraction ``alpha_bar[k]`` for k = 0..T-1 of the cosine schedule (Nichol &
    Dhariwal 2021, Eq. 17; betas clipped at 0.999): (T,) float64, decreasing from ~1 to ~0."""
    steps = torch.arange(num_train_steps + 1, dtype=torch.float64)
    f = torch.cos(((steps / num_train_steps) + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.clamp(1 - f[1:] / f[:-1], max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(num_train_steps: int, num_inference_steps: int) -> list[int]:
    """Evenly spaced training timesteps, descending (``T-1`` ... ``0``), ``num_inference_steps`` of them."""
    if not 1 <= num_inference_steps <= num_train_steps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_steps}], got {num_inference_steps}")
    ts = torch.linspace(num_train_steps - 1, 0, num_inference_steps).round().long().tolist()
    return [int(t) for t in ts]


def rtc_weights(horizon: int, overlap: int, frozen: int) -> torch.Tensor:
    """Soft inpainting mask of real-time chunking (Black et al. 2025, Eq. 5): (horizon,) float32.

    ``W[i] = 1`` for ``i < frozen`` (executed during inference: must match), then
    ``c_i (e^{c_i} - 1) / (e - 1)`` with ``c_i = (overlap - i) / (overlap - frozen + 1)`` for
    ``frozen <= i < overlap`` (decays toward 0), and 0 for ``i >= overlap`` (free).

    Args:
        horizon: chunk length H.
        overlap: steps covered by the committed prefix, clipped to [0, H].
        frozen: steps that must match exactly, clipped to [0, overlap].
    """
    overlap = max(0, min(int(overlap), horizon))
    frozen = max(0, min(int(frozen), overlap))
    w = torch.zeros(horizon, dtype=torch.float32)
    w[:frozen] = 1.0
    if overlap > frozen:
        i = torch.arange(frozen, overlap, dtype=torch.float32)
        c = (overlap - i) / (overlap - frozen + 1)
        w[frozen:overlap] = c * torch.expm1(c) / (math.e - 1.0)
    return w


def flow_matching_loss(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], actions: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional flow-matching loss on the linear path (pi0 recipe).

    ``x_t = (1 - t) eps + t a``, target ``a - eps``, noise level ``1 - t ~ 0.001 + 0.999 Beta(1.5, 1)``.

    Args:
        velocity: ``v(x_t (B, H, A), t (B,)) -> (B, H, A)``.
        actions: (B, H, A) normalised data.

    Returns:
        Scalar mean squared error.
    """
    b = actions.shape[0]
    eps = torch.randn(actions.shape, generator=generator)
    u = torch.distributions.Beta(1.5, 1.0).sample((b,))  # uses the global torch RNG
    t = 1.0 - (0.001 + 0.999 * u)
    xt = (1 - t)[:, None, None] * eps + t[:, None, None] * actions
    return F.mse_loss(velocity(xt, t), actions - eps)


def diffusion_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], actions: torch.Tensor,
                   alpha_bar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM loss (Ho et al. 2020) at uniform timesteps k in [0, T), v-parameterised: the target is
    ``v = sqrt(ab) eps - sqrt(1 - ab) a`` (Salimans & Ho 2022, Sec. 4).

    Args:
        predict: ``v(x_k (B, H, A), k / T (B,)) -> (B, H, A)``.
        actions: (B, H, A) normalised data.
        alpha_bar: (T,) cumulative signal fractions.
    """
    b, steps = actions.shape[0], alpha_bar.shape[0]
    eps = torch.randn(actions.shape, generator=generator)
    k = torch.randint(0, steps, (b,), generator=generator)
    ab = alpha_bar.to(actions.dtype)[k][:, None, None]
    xt = ab.sqrt() * actions + (1 - ab).sqrt() * eps
    v = ab.sqrt() * eps - (1 - ab).sqrt() * actions
    return F.mse_loss(predict(xt, k.to(actions.dtype) / steps), v)


def _guide(estimate: torch.Tensor, target: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
    """``estimate + W (target - estimate)`` over the first P steps (RTC inpainting), else ``estimate``."""
    if target is None or weights is None:
        return estimate
    p = target.shape[1]
    w = weights[:p].view(1, p, 1)
    out = estimate.clone()
    out[:, :p] = estimate[:, :p] + w * (target - estimate[:, :p])
    return out


def flow_sample(
    velocity: Callable[[torch.Tensor, int, float], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int,
    target: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t)`` from t = 0 (``noise``) to t = 1 with forward Euler.

    Args:
        velocity: ``v(x, k, t) -> (B, H, A)`` at step index ``k`` and time ``t = k / num_steps``.
        noise: (B, H, A) starting point x_0.
        num_steps: Euler steps N >= 1 (step size 1 / N).
        target / weights: RTC inpainting: (B, P, A) committed values and (H,) mask weights; at
            each step the clean estimate ``x + (1 - t) v`` is guided (:func:`rtc_weights`).

    Returns:
        (B, H, A) x_1. Exact for a constant velocity field (Euler integrates it without error).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    x = noise
    dt = 1.0 / num_steps
    for k in range(num_steps):
        t = k * dt
        v = velocity(x, k, t)
        if target is not None:
            x1 = _guide(x + (1.0 - t) * v, target, weights)
            v = (x1 - x) / (1.0 - t)
        x = torch.add(x, v, alpha=dt)
    return x


def ddim_sample(
    predict: Callable[[torch.Tensor, int, int], torch.Tensor],
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
    timesteps: list[int],
    target: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from ``noise`` at ``timesteps[0]`` down to a clean sample.

    ``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev) eps_hat`` (Song et al. 2021, Eq. 12) with
    ``x0_hat = sqrt(ab) x - sqrt(1 - ab) v`` and ``eps_hat = sqrt(1 - ab) x + sqrt(ab) v`` from the
    v-prediction; after the last timestep ``ab_prev = 1`` (the clean estimate is returned).

    Args:
        predict: ``v(x, i, k) -> (B, H, A)`` v-prediction at schedule index ``i`` and training
            timestep ``k``.
        noise: (B, H, A) x_T.
        alpha_bar: (T,) cumulative signal fractions (:func:`cosine_alpha_bar`).
        timesteps: descending training timesteps (:func:`ddim_timesteps`).
        target / weights: RTC inpainting of ``x0_hat`` as in :func:`flow_sample`.
        clip: clamp ``x0_hat`` to [-clip, clip] (normalised units), or None.
    """
    x = noise
    ab_all = alpha_bar.to(noise.dtype)
    for i, k in enumerate(timesteps):
        ab = ab_all[k]
        ab_prev = ab_all[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones((), dtype=noise.dtype)
        v = predict(x, i, k)
        x0 = torch.sqrt(ab) * x - torch.sqrt(1 - ab) * v
        eps = torch.sqrt(1 - ab) * x + torch.sqrt(ab) * v
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        if clip is not None or target is not None:
            x0 = _guide(x0, target, weights)
            eps = (x - torch.sqrt(ab) * x0) / torch.sqrt(1 - ab)  # consistent with the edited x0
        x = torch.sqrt(ab_prev) * x0 + torch.sqrt(1 - ab_prev) * eps
    return x


class ActionExpert(nn.Module):
    """Residual-MLP denoiser over the flattened chunk, conditioned on ``z`` and proprioception.

    Args:
        latent_tokens / latent_dim: shape of ``z``.
        proprio_dim: length of the (normalised) proprioception vector (2 * action_dim: positions
            then velocities).
        chunk_size: H.
        action_dim: A.
        width: hidden width of the denoiser.
        blocks: residual blocks.
        cond_dim: width of the condition vector.
        time_dim: sinusoidal time-embedding width.
    """

    def __init__(self, latent_tokens: int, latent_dim: int, proprio_dim: int, chunk_size: int, action_dim: int,
                 width: int = 256, blocks: int = 2, cond_dim: int = 256, time_dim: int = 64) -> None:
        super().__init__()
        self.chunk_size, self.action_dim, self.width, self.blocks, self.time_dim = (
            chunk_size, action_dim, width, blocks, time_dim)
        flat = chunk_size * action_dim
        self.cond = nn.Sequential(
            nn.LayerNorm(latent_tokens * latent_dim + proprio_dim),
            nn.Linear(latent_tokens * latent_dim + proprio_dim, cond_dim), nn.GELU(),
            nn.Linear(cond_dim, cond_dim), nn.GELU(),
        )
        self.in_x = nn.Linear(flat, width)
        self.in_c = nn.Linear(cond_dim, width, bias=False)
        self.in_t = nn.Sequential(nn.Linear(time_dim, width), nn.GELU(), nn.Linear(width, width))
        self.film = nn.Linear(cond_dim, 2 * blocks * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.fc1 = nn.ModuleList(nn.Linear(width, 2 * width) for _ in range(blocks))
        self.fc2 = nn.ModuleList(nn.Linear(2 * width, width) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, flat)

    def condition(self, z: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """(B, Tz, Dz) latent + (B, proprio_dim) normalised proprio -> (B, cond_dim)."""
        return self.cond(torch.cat([z.flatten(1), proprio], dim=-1))

    def prepare(self, c: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per-chunk cache: the condition's input-layer term (B, width) and FiLM (scale, shift)
        (B, width) per block."""
        film = self.film(c).view(c.shape[0], self.blocks, 2, self.width)  # [B, blocks, 2, W]
        return self.in_c(c), [(1.0 + film[:, i, 0], film[:, i, 1]) for i in range(self.blocks)]

    def time_terms(self, t: torch.Tensor) -> torch.Tensor:
        """Times (K,) in [0, 1] -> their input-layer terms (K, width) (one batched call per schedule)."""
        return self.in_t(sinusoidal_embedding(t, self.time_dim))

    def step(self, x: torch.Tensor, base: torch.Tensor, film: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One denoiser evaluation (18 tensor ops, no Python-side allocation beyond them).

        Args:
            x: (B, H, A) noisy normalised chunk.
            base: (B, width) condition + time input terms (``prepare(c)[0] + time_terms(t)``).
            film: per-block (scale, shift) from :meth:`prepare`.

        Returns:
            (B, H, A) velocity (flow) or noise (ddim) prediction.
        """
        h = torch.addmm(base, x.flatten(1), self.in_x.weight.t()) + self.in_x.bias  # [B, W]
        for fc1, fc2, (scale, shift) in zip(self.fc1, self.fc2, film):
            u = torch.addcmul(shift, F.layer_norm(h, (self.width,)), scale)
            h = h + fc2(F.gelu(fc1(u)))
        return self.out(self.out_norm(h)).view(x.shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """Training-time evaluation: x (B, H, A), t (B,) in [0, 1], z, proprio -> (B, H, A)."""
        c_in, film = self.prepare(self.condition(z, proprio))
        return self.step(x, c_in + self.time_terms(t), film)
