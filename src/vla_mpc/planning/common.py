"""Pieces shared by the sampling planners (CEM, MPPI): callable types, bounds, warm start, result.

Conventions (both planners):

* A *latent* ``z`` has any shape ``Z`` (a joint vector ``(D,)`` for the kinematic world model,
  ``(tokens, dim)`` for a learned JEPA predictor). ``rollout(z0, actions)`` maps ``z0: Z`` and
  ``actions: (S, H, A)`` to the predicted latents after each action, ``(S, H, *Z)``.
* ``cost(latents, actions) -> (S,)``: lower is better. NaN and +/-inf costs are replaced by a large
  finite value (``BAD_COST``) before elites are chosen, so one diverging sample cannot poison the
  update (the ``nan_to_num`` of TD-MPC2 ``tdmpc2.py::_plan``, which maximises values).
* Actions live in their physical units (for the kinematic world model: joint position deltas per
  planning step [rad or m]); ``action_low``/``action_high`` are per-dimension bounds ``(A,)``.

Nothing here imports rclpy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

RolloutFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``rollout(z0: Z, actions: (S, H, A)) -> latents (S, H, *Z)``."""

CostFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``cost(latents: (S, H, *Z), actions: (S, H, A)) -> (S,)``, lower is better."""

BAD_COST = 1.0e30
"""Finite stand-in for NaN / inf costs (float32 max is ~3.4e38)."""

WARM_START_TAILS = ("zero", "repeat")


@dataclass(frozen=True)
class PlanResult:
    """What one ``plan()`` call returns (all tensors on the planner's device, detached).

    Attributes:
        actions: ``(H, A)`` the chosen action sequence (the final sampling mean for CEM as in
            V-JEPA 2-AC; the score-weighted elite mean, or one elite, for MPPI).
        latents: ``(H, *Z)`` the world model's prediction for ``actions``.
        cost: cost of ``actions`` (float).
        mean: ``(H, A)`` final sampling mean (what the next call warm-starts from).
        std: ``(H, A)`` final sampling standard deviation.
        costs: ``(S,)`` costs of the last iteration's samples (after ``nan_to_num``).
        top_k_indices: ``(K,)`` int64 indices into the last iteration's samples, best first.
        top_k_actions: ``(K, H, A)`` those samples.
        top_k_latents: ``(K, H, *Z)`` their predicted latents (for visualising imagined rollouts).
        top_k_costs: ``(K,)`` their costs, ascending.
        best_cost_per_iteration: ``(iterations,)`` lowest sample cost seen in each iteration.
    """

    actions: torch.Tensor
    latents: torch.Tensor
    cost: float
    mean: torch.Tensor
    std: torch.Tensor
    costs: torch.Tensor
    top_k_indices: torch.Tensor
    top_k_actions: torch.Tensor
    top_k_latents: torch.Tensor
    top_k_costs: torch.Tensor
    best_cost_per_iteration: torch.Tensor


def check_positive_int(name: str, value: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def check_finite(name: str, value: float, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a finite number in range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low if low_inclusive else value <= low):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


def as_bounds(
    action_dim: int,
    low: float | Sequence[float] | torch.Tensor | None,
    high: float | Sequence[float] | torch.Tensor | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension action bounds ``(A,)``; None means unbounded (+/-inf).

    Raises:
        ValueError: wrong length, NaN, or ``low > high`` in some dimension (named).
    """
    def one(v: float | Sequence[float] | torch.Tensor | None, fill: float, name: str) -> torch.Tensor:
        if v is None:
            return torch.full((action_dim,), fill, dtype=dtype, device=device)
        t = torch.as_tensor(v, dtype=dtype, device=device)
        if t.ndim == 0:
            t = t.expand(action_dim).clone()
        if t.shape != (action_dim,):
            raise ValueError(f"{name} must be a scalar or have shape ({action_dim},), got {tuple(t.shape)}")
        if torch.isnan(t).any():
            raise ValueError(f"{name} has NaN entries: {t.tolist()}")
        return t

    lo, hi = one(low, -math.inf, "action_low"), one(high, math.inf, "action_high")
    bad = (lo > hi).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"action_low > action_high in dimensions {bad}: {lo[bad].tolist()} > {hi[bad].tolist()}")
    return lo, hi


def constrain(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Project actions into the feasible set: per-step Euclidean norm <= ``max_norm`` (rescaling the
    step's vector, V-JEPA 2-AC's ``maxnorm``), then clamp to ``[low, high]`` per dimension.

    Args:
        actions: ``(..., A)``.
        low, high: ``(A,)``.
        max_norm: per-step norm bound in action units, or None for none.

    Returns:
        ``(..., A)`` a new tensor.
    """
    if max_norm is not None:
        norm = actions.norm(dim=-1, keepdim=True)
        actions = actions * (max_norm / norm.clamp_min(max_norm))
    return torch.maximum(torch.minimum(actions, high), low)


def shift_mean(mean: torch.Tensor, tail: str = "zero") -> torch.Tensor:
    """Warm start: the previous plan advanced by one step (TD-MPC2 ``_plan``: ``mean[:-1] =
    prev_mean[1:]``).

    Args:
        mean: ``(H, A)`` previous mean.
        tail: what fills the last step: ``"zero"`` (TD-MPC2; for delta actions "hold still") or
            ``"repeat"`` (copy the previous last step, i.e. keep moving).

    Returns:
        ``(H, A)`` new tensor.

    Raises:
        ValueError: unknown ``tail`` or ``mean`` not 2-D.
    """
    if tail not in WARM_START_TAILS:
        raise ValueError(f"warm_start_tail must be one of {WARM_START_TAILS}, got {tail!r}")
    if mean.ndim != 2:
        raise ValueError(f"mean must be (H, A), got shape {tuple(mean.shape)}")
    out = torch.empty_like(mean)
    out[:-1] = mean[1:]
    out[-1] = 0.0 if tail == "zero" else mean[-1]
    return out


def check_sequence(name: str, x: torch.Tensor | None, horizon: int, action_dim: int, batched: bool) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(H, A)`` (or ``(P, H, A)`` when ``batched``) and finite."""
    if x is None:
        return
    want = ("P", horizon, action_dim) if batched else (horizon, action_dim)
    ok = x.ndim == len(want) and tuple(x.shape[-2:]) == (horizon, action_dim)
    if not ok:
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} has non-finite values")


def evaluate(z0: torch.Tensor, actions: torch.Tensor, rollout: RolloutFn, cost: CostFn) -> tuple[torch.Tensor, torch.Tensor]:
    """Roll ``actions (S, H, A)`` out from ``z0`` and score them.

    Returns:
        latents ``(S, H, *Z)`` and costs ``(S,)`` with NaN/inf replaced by ``BAD_COST``.

    Raises:
        ValueError: if the callables return the wrong shapes.
    """
    s, h = actions.shape[:2]
    latents = rollout(z0, actions)
    if tuple(latents.shape[:2]) != (s, h):
        raise ValueError(f"rollout returned shape {tuple(latents.shape)}, expected ({s}, {h}, ...)")
    c = cost(latents, actions)
    if tuple(c.shape) != (s,):
        raise ValueError(f"cost returned shape {tuple(c.shape)}, expected ({s},)")
    c = torch.nan_to_num(c, nan=BAD_COST, posinf=BAD_COST, neginf=-BAD_COST)
    return latents, c


def finish(
    z0: torch.Tensor,
    chosen: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    samples: torch.Tensor,
    latents: torch.Tensor,
    costs: torch.Tensor,
    top_k: int,
    best_per_iter: list[float],
    rollout: RolloutFn,
    cost: CostFn,
) -> PlanResult:
    """Evaluate the chosen sequence and package the last iteration for visualisation."""
    plan_latents, plan_cost = evaluate(z0, chosen.unsqueeze(0), rollout, cost)  # [1, H, *Z], [1]
    k = min(top_k, costs.shape[0])
    top_costs, idx = torch.topk(costs, k, largest=False, sorted=True)
    return PlanResult(
        actions=chosen,
        latents=plan_latents[0],
        cost=float(plan_cost[0]),
        mean=mean,
        std=std,
        costs=costs,
        top_k_indices=idx,
        top_k_actions=samples[idx],
        top_k_latents=latents[idx],
        top_k_costs=top_costs,
        best_cost_per_iteration=torch.tensor(best_per_iter, dtype=costs.dtype),
    )


def check_common_config(config: object, min_elites: int) -> None:
    """Validate the fields CEM and MPPI configs share (``num_samples``, ``num_elites``,
    ``iterations``, ``horizon``, ``top_k``, ``max_norm``, ``warm_start_tail``).

    Raises:
        ValueError: naming the first invalid field.
    """
    for name in ("num_samples", "num_elites", "iterations", "horizon", "top_k"):
        check_positive_int(name, getattr(config, name))
    s, e = config.num_samples, config.num_elites
    if not min_elites <= e <= s:
        raise ValueError(f"num_elites must be in [{min_elites}, num_samples={s}], got {e}")
    if config.max_norm is not None:
        check_finite("max_norm", config.max_norm, low=0.0, low_inclusive=False)
    if config.warm_start_tail not in WARM_START_TAILS:
        raise ValueError(f"warm_start_tail must be one of {WARM_START_TAILS}, got {config.warm_start_tail!r}")


class SamplingPlanner(ABC):
    """Base of CEM and MPPI: bounds, random generator, warm-start memory, input checks and the
    shared iteration loop (``plan``). Subclasses give the distribution's start (``initial_std``),
    its refit from the elites (``update``) and the final choice (``choose``).

    Args:
        config: a ``CEMConfig`` / ``MPPIConfig`` (fields ``num_samples``, ``num_elites``,
            ``iterations``, ``horizon``, ``max_norm``, ``warm_start_tail``, ``top_k``).
        action_dim: ``A``.
        action_low, action_high: per-dimension bounds ``(A,)`` or scalars, in action units; None
            means unbounded.
        seed: seeds the planner's own ``torch.Generator`` (None: a nondeterministic seed); same
            seed + same inputs -> same plan.
        dtype, device: of every tensor the planner creates (default float32 on the CPU).

    Raises:
        ValueError: bad bounds (see ``as_bounds``).
    """

    def __init__(
        self,
        config: object,
        action_dim: int,
        action_low: float | Sequence[float] | torch.Tensor | None = None,
        action_high: float | Sequence[float] | torch.Tensor | None = None,
        seed: int | None = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        check_positive_int("action_dim", action_dim)
        self.config = config
        self.horizon = config.horizon
        self.action_dim = action_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.low, self.high = as_bounds(action_dim, action_low, action_high, dtype, self.device)
        self.max_norm = config.max_norm
        self.warm_start_tail = config.warm_start_tail
        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self._prev_mean: torch.Tensor | None = None

    # -- hooks -----------------------------------------------------------------------------

    @abstractmethod
    def initial_std(self, mean: torch.Tensor) -> torch.Tensor:
        """``(H, A)`` sampling std at the start of a ``plan()`` call."""

    @abstractmethod
    def update(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Refit ``(mean, std)`` (both ``(H, A)``) to ``elites (E, H, A)`` with ascending
        ``elite_costs (E,)``."""

    @abstractmethod
    def choose(self, mean: torch.Tensor, std: torch.Tensor, elites: torch.Tensor,
               elite_costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """After the last iteration: ``(chosen (H, A), mean to warm-start from (H, A))``, both
        already inside the bounds."""

    # -- the loop ----------------------------------------------------------------------------

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

        Per iteration: ``num_samples - P`` Gaussian sequences around the mean (projected into the
        bounds) plus the ``P`` prior sequences are rolled out and scored; the ``num_elites``
        lowest-cost ones refit the distribution (``update``).

        Args:
            z0: current latent, shape ``Z``.
            rollout: ``(z0, actions [S, H, A]) -> latents [S, H, *Z]``.
            cost: ``(latents [S, H, *Z], actions [S, H, A]) -> [S]``, lower is better.
            init_mean: ``(H, A)`` initial sampling mean; default: the previous plan shifted one
                step (warm start), or zeros on the first call / after ``reset()``.
            prior_samples: ``(P, H, A)`` or ``(H, A)`` sequences (e.g. System 1's chunk) put into
                every iteration's population in place of ``P`` Gaussian samples.

        Returns:
            ``PlanResult``.

        Raises:
            ValueError: wrong shapes or non-finite inputs, or callables returning wrong shapes.
        """
        cfg = self.config
        z0 = self.latent(z0)
        mean = self.initial_mean(init_mean)  # [H, A]
        std = self.initial_std(mean)  # [H, A]
        prior = self.prior(prior_samples, cfg.num_samples)  # [P, H, A] or None
        n_prior = 0 if prior is None else prior.shape[0]
        best: list[float] = []
        for _ in range(cfg.iterations):
            samples = self.sample(mean, std, cfg.num_samples - n_prior)  # [S - P, H, A]
            if prior is not None:
                samples = torch.cat([prior, samples], dim=0)  # [S, H, A]
            latents, costs = evaluate(z0, samples, rollout, cost)  # [S, H, *Z], [S]
            elite_costs, elite_idx = torch.topk(costs, cfg.num_elites, largest=False)  # ascending
            elites = samples[elite_idx]  # [E, H, A]
            best.append(float(elite_costs[0]))
            mean, std = self.update(mean, std, elites, elite_costs)
        chosen, mean = self.choose(mean, std, elites, elite_costs)
        self._prev_mean = mean.clone()
        return finish(z0, chosen, mean, std, samples, latents, costs, cfg.top_k, best, rollout, cost)

    # -- shared pieces ---------------------------------------------------------------------------

    def project(self, actions: torch.Tensor) -> torch.Tensor:
        """``constrain`` with this planner's bounds and ``max_norm``."""
        return constrain(actions, self.low, self.high, self.max_norm)

    def reset(self) -> None:
        """Forget the previous plan (the next call starts from a zero mean, like TD-MPC2's ``t0``)."""
        self._prev_mean = None

    @property
    def previous_mean(self) -> torch.Tensor | None:
        """``(H, A)`` the mean the last ``plan()`` ended with, or None after ``reset()``."""
        return None if self._prev_mean is None else self._prev_mean.clone()

    def initial_mean(self, init_mean: torch.Tensor | None) -> torch.Tensor:
        """``(H, A)``: ``init_mean`` when given; else the previous mean shifted one step
        (``shift_mean``); else zeros. Always projected into the bounds.

        Raises:
            ValueError: ``init_mean`` of the wrong shape or non-finite.
        """
        if init_mean is not None:
            init_mean = torch.as_tensor(init_mean, dtype=self.dtype, device=self.device)
            check_sequence("init_mean", init_mean, self.horizon, self.action_dim, batched=False)
            mean = init_mean.clone()
        elif self._prev_mean is not None:
            mean = shift_mean(self._prev_mean, self.warm_start_tail)
        else:
            mean = torch.zeros(self.horizon, self.action_dim, dtype=self.dtype, device=self.device)
        return constrain(mean, self.low, self.high, self.max_norm)

    def prior(self, prior_samples: torch.Tensor | None, num_samples: int) -> torch.Tensor | None:
        """Policy-prior sequences ``(P, H, A)`` (e.g. System 1's chunk as deltas), projected into
        the bounds; ``(H, A)`` is accepted as P = 1.

        Raises:
            ValueError: wrong shape, non-finite, or ``P >= num_samples`` (no room left to sample).
        """
        if prior_samples is None:
            return None
        p = torch.as_tensor(prior_samples, dtype=self.dtype, device=self.device)
        if p.ndim == 2:
            p = p.unsqueeze(0)
        check_sequence("prior_samples", p, self.horizon, self.action_dim, batched=True)
        if p.shape[0] >= num_samples:
            raise ValueError(f"prior_samples has {p.shape[0]} sequences; need fewer than num_samples={num_samples}")
        return constrain(p, self.low, self.high, self.max_norm)

    def sample(self, mean: torch.Tensor, std: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` Gaussian sequences ``(n, H, A)`` around ``mean`` with ``std`` (both ``(H, A)``),
        drawn from the planner's generator and projected into the bounds."""
        noise = torch.randn((n, self.horizon, self.action_dim), generator=self.generator,
                            dtype=self.dtype, device=self.device)
        return constrain(mean.unsqueeze(0) + std.unsqueeze(0) * noise, self.low, self.high, self.max_norm)

    def latent(self, z0: torch.Tensor) -> torch.Tensor:
        """``z0`` as a tensor on the planner's device and dtype.

        Raises:
            ValueError: if ``z0`` has non-finite entries.
        """
        z = torch.as_tensor(z0, dtype=self.dtype, device=self.device)
        if not torch.isfinite(z).all():
            raise ValueError("z0 has non-finite entries")
        return z
