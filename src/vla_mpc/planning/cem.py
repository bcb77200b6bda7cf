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

import torch

from vla_mpc.planning.common import SamplingPlanner, check_common_config, check_finite


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
        check_common_config(self, min_elites=2)
        check_finite("momentum_mean", self.momentum_mean, low=0.0, high=1.0)
        if self.momentum_mean >= 1.0:
            raise ValueError(f"momentum_mean must be < 1 (1 never moves the mean), got {self.momentum_mean}")
        check_finite("momentum_std", self.momentum_std, low=0.0, high=1.0)
        check_finite("init_std", self.init_std, low=0.0, low_inclusive=False)
        check_finite("min_std", self.min_std, low=0.0, high=self.init_std)


class CEM(SamplingPlanner):
    """Cross-entropy method planner with warm start (see module docstring); the loop, bounds and
    warm start are ``SamplingPlanner``'s.

    Args:
        config: ``CEMConfig``.
        action_dim: ``A``.
        action_low, action_high: per-dimension bounds ``(A,)`` or scalars [action units].
        seed: seeds the planner's ``torch.Generator``; same seed + same inputs -> same plan.
        dtype, device: of the sampled actions (default float32, CPU).

    Raises:
        ValueError: invalid bounds.
    """

    config: CEMConfig

    def initial_std(self, mean: torch.Tensor) -> torch.Tensor:
        """``init_std`` everywhere (V-JEPA 2-AC starts at its ``maxnorm``)."""
        return torch.full_like(mean, self.config.init_std)

    def update(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Momentum refit to the elites' mean and std; std floored at ``min_std``."""
        cfg = self.config
        mean = (1.0 - cfg.momentum_mean) * elites.mean(dim=0) + cfg.momentum_mean * mean
        std = (1.0 - cfg.momentum_std) * elites.std(dim=0) + cfg.momentum_std * std
        return mean, std.clamp_min(cfg.min_std)

    def choose(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final mean, projected into the bounds (V-JEPA 2-AC executes the mean)."""
        chosen = self.project(mean)  # [H, A]
        return chosen, chosen
