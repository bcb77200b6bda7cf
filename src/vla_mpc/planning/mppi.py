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

import torch

from vla_mpc.planning.common import SamplingPlanner, check_common_config, check_finite

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
        check_common_config(self, min_elites=1)
        check_finite("temperature", self.temperature, low=0.0, low_inclusive=False)
        check_finite("max_std", self.max_std, low=0.0, low_inclusive=False)
        check_finite("min_std", self.min_std, low=0.0, high=self.max_std)
        if self.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {SELECT_MODES}, got {self.select!r}")


class MPPI(SamplingPlanner):
    """MPPI planner with warm start and policy-prior samples (see module docstring); the loop,
    bounds and warm start are ``SamplingPlanner``'s.

    Args:
        config: ``MPPIConfig``.
        action_dim: ``A``.
        action_low, action_high: per-dimension bounds ``(A,)`` or scalars [action units].
        seed: seeds the planner's ``torch.Generator``; same seed + same inputs -> same plan.
        dtype, device: of the sampled actions (default float32, CPU).

    Raises:
        ValueError: invalid bounds.
    """

    config: MPPIConfig

    def initial_std(self, mean: torch.Tensor) -> torch.Tensor:
        """``max_std`` everywhere (TD-MPC2)."""
        return torch.full_like(mean, self.config.max_std)

    def weights(self, elite_costs: torch.Tensor) -> torch.Tensor:
        """``(E,)`` normalised ``exp(-temperature * (cost - min cost))``."""
        score = torch.exp(-self.config.temperature * (elite_costs - elite_costs.min()))  # [E]
        return score / (score.sum() + 1e-9)

    def update(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean and std of the elites; std clamped to ``[min_std, max_std]``."""
        w = self.weights(elite_costs).view(-1, 1, 1)  # [E, 1, 1]
        mean = (w * elites).sum(dim=0)  # [H, A]
        std = (w * (elites - mean.unsqueeze(0)) ** 2).sum(dim=0).sqrt()
        return mean, std.clamp(self.config.min_std, self.config.max_std)

    def choose(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``select="mean"``: the weighted mean; ``"sample"``: one elite drawn by weight."""
        if self.config.select == "sample":
            pick = torch.multinomial(self.weights(elite_costs), 1, generator=self.generator)
            chosen = elites[pick[0]]
        else:
            chosen = mean
        return self.project(chosen), self.project(mean)
