"""Cross-entropy method (CEM) over action sequences, as V-JEPA 2-AC plans with its predictor.

Source: V-JEPA 2 (Assran et al., 2025, "V-JEPA 2: Self-Supervised Video Models Enable
Understanding, Prediction and Planning", section on V-JEPA 2-AC planning) and its repository
facebookresearch/vjepa2 ``notebooks/utils/mpc_utils.py::cem``. Per iteration:

1. sample ``num_samples`` sequences from N(mean, std) (``# [S, H, A]``), rescale each step to the
   per-step ``max_norm`` (the repository's ``maxnorm``) and clamp to the action bounds;
2. roll them through the world model and score them with the objective (L1 to the goal latent in
   V-JEPA 2-AC; any ``cost`` callable here);
3. keep the ``num_elites`` lowest-cost sequences (the repository's ``topk``);
4. ``mean <- (1 - momentum_mean) * elite_mean + momentum_mean * mean`` and the same for ``std``
   with ``momentum_std``.

The plan is the final mean. Additions (for receding-horizon use here): a warm start from the
previous plan shifted by one step and policy-prior sequences mixed into every iteration, both as in
TD-MPC2 ``tdmpc2.py::_plan``; a seeded ``torch.Generator``; a ``min_std`` floor. The gripper-specific
momenta of the repository are not separate parameters: gripper joints are ordinary action
dimensions here.

Defaults are the repository's robot-evaluation values: 400 samples, horizon 2, 10 iterations,
top 10, momentum 0.15 (mean) / 0.75 (std), max norm 0.075. The V-JEPA 2 blog/paper budget for
DROID reaching is 800 samples, horizon 16, top 80.
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


@dataclass(frozen=True)
class CEMConfig:
    """CEM hyper-parameters. Action-valued fields are in action units (rad per step for the
    kinematic world model).

    Attributes:
        num_samples: ``S``, sequences per iteration (V-JEPA 2-AC ``samples``).
        num_elites: sequences the distribution is refitted to (``topk``); ``2 <= num_elites <= S``.
        iterations: refits per ``plan()`` call (``cem_steps``).
        horizon: ``H``, planning steps (``rollout``).
        momentum_mean: weight of the old mean in the update, in [0, 1).
        momentum_std: weight of the old std in the update, in [0, 1].
        init_std: initial sampling std (V-JEPA 2-AC starts at ``maxnorm``), > 0.
        min_std: floor on the std after each update, >= 0 and <= ``init_std``.
        max_norm: per-step Euclidean norm bound on actions, > 0, or None for none.
        warm_start_tail: ``"zero"`` or ``"repeat"``: the last step after shifting the previous mean.
        top_k: how many of the last iteration's best samples ``PlanResult`` carries (visualisation).

    Raises:
        ValueError: naming the first invalid field.
    """

    num_samples: int = 400
    num_elites: int = 10
    iterations: int = 10
    horizon: int = 2
    momentum_mean: float = 0.15
    momentum_std: float = 0.75
    init_std: float = 0.075
    min_std: float = 0.0
    max_norm: float | None = 0.075
    warm_start_tail: str = "zero"
    top_k: int = 10

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_elites", "iterations", "horizon", "top_k"):
            check_positive_int(name, getattr(self, name))
        if not 2 <= self.num_elites <= self.num_samples:
            raise ValueError(f"num_elites must be in [2, num_samples={self.num_samples}], got {self.num_elites}")
        check_finite("momentum_mean", self.momentum_mean, low=0.0, high=1.0)
        if self.momentum_mean >= 1.0:
            raise ValueError(f"momentum_mean must be < 1 (1 never moves the mean), got {self.momentum_mean}")
        check_finite("momentum_std", self.momentum_std, low=0.0, high=1.0)
        check_finite("init_std", self.init_std, low=0.0, low_inclusive=False)
        check_finite("min_std", self.min_std, low=0.0, high=self.init_std)
        if self.max_norm is not None:
            check_finite("max_norm", self.max_norm, low=0.0, low_inclusive=False)
        if self.warm_start_tail not in WARM_START_TAILS:
            raise ValueError(f"warm_start_tail must be one of {WARM_START_TAILS}, got {self.warm_start_tail!r}")


class CEM(SamplingPlanner):
    """Cross-entropy method planner with warm start (see module docstring).

    Args:
        config: ``CEMConfig``.
        action_dim: ``A``.
        action_low, action_high: per-dimension bounds ``(A,)`` or scalars [action units].
        seed: seeds the planner's ``torch.Generator``; same seed + same inputs -> same plan.
        dtype, device: of the sampled actions (default float32, CPU).

    Raises:
        ValueError: invalid bounds.
    """

    def __init__(
        self,
        config: CEMConfig,
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
            init_mean: ``(H, A)`` initial sampling mean; default: the previous plan shifted one
                step (warm start), or zeros on the first call / after ``reset()``.
            prior_samples: ``(P, H, A)`` or ``(H, A)`` sequences (e.g. System 1's chunk) put into
                every iteration's population in place of ``P`` Gaussian samples.

        Returns:
            ``PlanResult`` (actions = final mean, projected into the bounds).

        Raises:
            ValueError: wrong shapes or non-finite inputs, or callables returning wrong shapes.
        """
        cfg = self.config
        z0 = self.latent(z0)
        mean = self.initial_mean(init_mean)  # [H, A]
        std = torch.full_like(mean, cfg.init_std)  # [H, A]
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
            mean = (1.0 - cfg.momentum_mean) * elites.mean(dim=0) + cfg.momentum_mean * mean
            std = (1.0 - cfg.momentum_std) * elites.std(dim=0) + cfg.momentum_std * std
            std = std.clamp_min(cfg.min_std)
        chosen = constrain(mean, self.low, self.high, self.max_norm)  # [H, A]
        self._prev_mean = chosen.clone()
        return finish(z0, chosen, chosen, std, samples, latents, costs, cfg.top_k, best, rollout, cost)
