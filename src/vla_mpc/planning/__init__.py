"""vla_mpc.planning: sampling MPC over action sequences (batched torch, no rclpy).

``CEM`` (V-JEPA 2-AC) and ``MPPI`` (TD-MPC2) share one interface:
``plan(z0, rollout, cost, init_mean=None, prior_samples=None) -> PlanResult``.
"""

from vla_mpc.planning.cem import CEM, CEMConfig
from vla_mpc.planning.common import CostFn, PlanResult, RolloutFn
from vla_mpc.planning.mppi import MPPI, MPPIConfig

__all__ = ["CEM", "CEMConfig", "MPPI", "MPPIConfig", "PlanResult", "RolloutFn", "CostFn"]
