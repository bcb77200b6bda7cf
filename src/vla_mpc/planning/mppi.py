"""MPPI over action sequences, as TD-MPC2 plans in its latent space.

Source: Hansen, Su, Wang, "TD-MPC2: Scalable, Robust World Models for Continuous Control" (ICLR
2024) and nicklashansen/tdmpc2 ``tdmpc2/tdmpc2.py::_plan``. Per ``plan()`` call:

* the mean starts from the previous plan shifted by one step (``mean[:-1] = prev_mean[1:]``; the
  last step is zero, or a repeat, see ``warm_start_tail``) and the std from ``max_std``;
* policy-prior sequences (TD-MPC2's ``num_pi_trajs`` policy rollouts; here e.g. System 1's action
  chunk) take the first ``P`` places of every iteration's population;
* each iteration samples ``S - P`` sequences from N(mean, std), clamps them to the action bounds,
  scores them (``nan_to_num``), keeps the ``num_elites`` best and refits mean and std with the
  weights ``exp(-temperature * (cost - min_cost))`` (TD-MPC2 uses ``exp(temperature * (value -
  max_value))`` on values; costs are negated values), std clamped to ``[min_std, max_std]``.

The result is the final weighted mean (``select="mean"``, the deterministic choice for a position-
controlled arm) or, as TD-MPC2 does, one elite drawn with probability proportional to its weight
(``select="sample"``; TD-MPC2 then adds ``std`` noise during training, which is not done here).

Defaults are TD-MPC2's: 512 samples, 64 elites, 6 iterations, horizon 3, temperature 0.5,
std in [0.05, 2] (TD-MPC2 actions are in [-1, 1]; scale std to your action units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from vla_mpc.planning.common import (
    WARM_START_TAILS,
    CostFn,
    PlanResult,
    RolloutFn,
    SamplingPlanner,
    check_finite,
    check_positive_int,
    constrain,
    evaluate,
    finish,
)

SELECT_MODES = ("mean", "sample")


@dataclass(frozen=True)
class MPPIConfig:
    """MPPI hyper-parameters (TD-MPC2 names). Std values are in action units.

    Attributes:
        num_samples: ``S``, sequences per iteration.
        num_elites: sequences that get a weight; ``1 <= num_elites <= S``.
        iterations: refits per ``plan()`` call.
        horizon: ``H``, planning steps.
        temperature: inverse temperature of the weights [1 / cost unit], > 0; larger -> greedier.
        min_std, max_std: std clamp; ``0 <= min_std <= max_std``, ``max_std > 0``. The std starts
            at ``max_std`` on every call.
        max_norm: per-step Euclidean norm bound on actions, > 0, or None for none (TD-MPC2 has none).
        warm_start_tail: ``"zero"`` (TD-MPC2) or ``"repeat"``.
        select: ``"mean"`` or ``"sample"`` (see module docstring).
        top_k: how many of the last iteration's best samples ``PlanResult`` carries.

    Raises:
        ValueError: naming the first invalid field.
    """

    num_samples: int = 512
    num_elites: int = 64
    iterations: int = 6
    horizon: int = 3
    temperature: float = 0.5
    min_std: float = 0.05
    max_std: float = 2.0
    max_norm: float | None = None
    warm_start_tail: str = "zero"
    select: str = "mean"
    top_k: int = 10

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_elites", "iterations", "horizon", "top_k"):
            check_positive_int(name, getattr(self, name))
        if self.num_elites > self.num_samples:
            raise ValueError(f"num_elites must be <= num_samples={self.num_samples}, got {self.num_elites}")
        check_finite("temperature", self.temperature, low=0.0, low_inclusive=False)
        check_finite("max_std", self.max_std, low=0.0, low_inclusive=False)
        check_finite("min_std", self.min_std, low=0.0, high=self.max_std)
        if self.max_norm is not None:
            check_finite("max_norm", self.max_norm, low=0.0, low_inclusive=False)
        if self.warm_start_tail not in WARM_START_TAILS:
            raise ValueError(f"warm_start_tail must be one of {WARM_START_TAILS}, got {self.warm_start_tail!r}")
        if self.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {self.select!r}")


class MPPI(SamplingPlanner):
    """MPPI planner with warm start and policy-prior samples (see module docstring).

    Args:
        config: ``MPPIConfig``.
        action_dim: ``A``.
        action_low, action_high: per-dimension bounds ``(A,)`` or scalars [action units].
        seed: seeds the planner's ``torch.Generator``; same seed + same inputs -> same plan.
        dtype, device: of the sampled actions (default float32, CPU).

    Raises:
        ValueError: invalid bounds.
    """

    def __init__(
        self,
        config: MPPIConfig,
        action_dim: int,
        action_low: float | Sequence[float] | torch.Tensor | None = None,
        action_high: float | Sequence[float] | torch.Tensor | None = None,
        seed: int | None = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(config.horizon, action_dim, action_low, action_high, config.max_norm,
                         config.warm_start_tail, seed, dtype, device)
        self.config = config

    @torch.no_grad()
    def plan(
        self,
        z0: torch.Tensor,
        rollout: RolloutFn,
        cost: CostFn,
        *,
        init_mean: torch.Tensor | None = None,
        prior_samples: torch.Tensor | None = None,
    ) -> PlanResult:
        """Optimise an action sequence from latent ``z0``.

        Args:
            z0: current latent, shape ``Z``.
            rollout: ``(z0, actions [S, H, A]) -> latents [S, H, *Z]``.
            cost: ``(latents [S, H, *Z], actions [S, H, A]) -> [S]``, lower is better.
            init_mean: ``(H, A)`` initial mean; default: previous plan shifted one step, or zeros.
            prior_samples: ``(P, H, A)`` or ``(H, A)`` policy-prior sequences, ``P < num_samples``.

        Returns:
            ``PlanResult``.

        Raises:
            ValueError: wrong shapes or non-finite inputs, or callables returning wrong shapes.
        """
        cfg = self.config
        z0 = self.latent(z0)
        mean = self.initial_mean(init_mean)  # [H, A]
        std = torch.full_like(mean, cfg.max_std)  # [H, A]
        prior = self.prior(prior_samples, cfg.num_samples)  # [P, H, A] or None
        n_prior = 0 if prior is None else prior.shape[0]
        best: list[float] = []
        for _ in range(cfg.iterations):
            samples = self.sample(mean, std, cfg.num_samples - n_prior)  # [S - P, H, A]
            if prior is not None:
                samples = torch.cat([prior, samples], dim=0)  # [S, H, A]
            latents, costs = evaluate(z0, samples, rollout, cost)  # [S, H, *Z], [S]
            elite_costs, elite_idx = torch.topk(costs, cfg.num_elites, largest=False)
            elites = samples[elite_idx]  # [E, H, A]
            best.append(float(elite_costs.min()))
            score = torch.exp(-cfg.temperature * (elite_costs - elite_costs.min()))  # [E]
            score = score / (score.sum() + 1e-9)
            w = score.view(-1, 1, 1)  # [E, 1, 1]
            mean = (w * elites).sum(dim=0)  # [H, A]
            std = (w * (elites - mean.unsqueeze(0)) ** 2).sum(dim=0).sqrt()
            std = std.clamp(cfg.min_std, cfg.max_std)
        if cfg.select == "sample":
            pick = torch.multinomial(score, 1, generator=self.generator)
            chosen = elites[pick[0]]
        else:
            chosen = mean
        chosen = constrain(chosen, self.low, self.high, self.max_norm)  # [H, A]
        mean = constrain(mean, self.low, self.high, self.max_norm)
        self._prev_mean = mean.clone()
        return finish(z0, chosen, mean, std, samples, latents, costs, cfg.top_k, best, rollout, cost)
