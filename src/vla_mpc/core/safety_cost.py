"""Safety cost per output step and a per-episode cost budget (no rclpy).

The cost follows VLA-Arena's constrained-episode notion: one unit per control step on which a
safety constraint was violated or had to be enforced, or the robot was in contact with a
constraint surface; the episode's cumulative cost (CC) is the sum. Which intervention kinds count
is configurable (``kinds``); by default the joint position limits (``position``: the target lay
beyond a limit), the Cartesian constraints (``cartesian``: the command was braked to keep the
robot out of the table / a box / itself) and ``contact`` (the *measured* configuration penetrates a
Cartesian constraint). Rate limits (velocity, acceleration, jerk) shape a motion but are not a
safety violation, so they do not count by default.

Configuration (``config/<robot>.yaml``, ``safety.cost``)::

    cost:
      budget: 200            # cost units per episode (null: no budget)
      reaction: hold         # slow | hold | stop, once the budget is exceeded
      slow_factor: 0.25      # slow: velocity limits scaled by this until the next episode
      kinds: [position, cartesian, contact]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CostConfig", "CostTracker", "COST_REACTIONS"]

COST_REACTIONS = ("slow", "hold", "stop")


@dataclass(frozen=True)
class CostConfig:
    """Cost budget settings.

    Attributes:
        budget: cumulative cost per episode above which ``reaction`` applies; None = no budget.
        reaction: ``"slow"`` (scale the velocity limits by ``slow_factor``), ``"hold"`` (refuse
            commands, hold) or ``"stop"`` (latch the e-stop); slow and hold last until the next
            episode starts, stop until the e-stop is reset.
        slow_factor: (0, 1].
        kinds: intervention kinds (``Verdict.kinds``) that cost 1 per step; ``"contact"`` is the
            measured-state check.

    Raises:
        ValueError: (``__post_init__``) naming the bad value.
    """

    budget: float | None = None
    reaction: str = "hold"
    slow_factor: float = 0.25
    kinds: tuple[str, ...] = ("position", "cartesian", "contact")

    def __post_init__(self) -> None:
        if self.budget is not None and not (math.isfinite(self.budget) and self.budget >= 0.0):
            raise ValueError(f"safety.cost.budget must be a number >= 0 or null, got {self.budget!r}")
        if self.reaction not in COST_REACTIONS:
            raise ValueError(f"safety.cost.reaction must be one of {COST_REACTIONS}, got {self.reaction!r}")
        if not (0.0 < self.slow_factor <= 1.0):
            raise ValueError(f"safety.cost.slow_factor must be in (0, 1], got {self.slow_factor!r}")
        object.__setattr__(self, "kinds", tuple(self.kinds))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CostConfig:
        """From ``spec.safety["cost"]`` (None or {} gives the defaults: no budget)."""
        d = dict(d or {})
        unknown = sorted(set(d) - {"budget", "reaction", "slow_factor", "kinds"})
        if unknown:
            raise ValueError(f"safety.cost: unknown keys {unknown}")
        budget = d.get("budget")
        return cls(budget=None if budget is None else float(budget), reaction=str(d.get("reaction", "hold")),
                   slow_factor=float(d.get("slow_factor", 0.25)),
                   kinds=tuple(d.get("kinds", cls.kinds)))


class CostTracker:
    """Accumulates the per-step cost of one episode.

    Attributes:
        step_cost: cost of the last output step (0.0 or 1.0).
        episode_cost: cumulative cost since :meth:`reset`.
        exceeded: True once ``episode_cost > budget`` in this episode.
    """

    def __init__(self, config: CostConfig) -> None:
        self.config = config
        self._kinds = frozenset(config.kinds)
        self._contact = "contact" in self._kinds
        self.step_cost = 0.0
        self.episode_cost = 0.0
        self.exceeded = False

    def add(self, kinds: Iterable[str], contact: bool) -> bool:
        """Account one output step that involved intervention ``kinds``; ``contact`` when the
        measured state penetrates a constraint. Returns True when this step exceeds the budget
        for the first time in the episode."""
        cost = 1.0 if (contact and self._contact) or not self._kinds.isdisjoint(kinds) else 0.0
        self.step_cost = cost
        if cost:
            self.episode_cost += cost
            b = self.config.budget
            if b is not None and not self.exceeded and self.episode_cost > b:
                self.exceeded = True
                return True
        return False

    def reset(self) -> None:
        """Start a new episode: the cumulative cost and the budget flag go back to zero."""
        self.step_cost = 0.0
        self.episode_cost = 0.0
        self.exceeded = False
