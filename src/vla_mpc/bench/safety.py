"""Safety filter benchmark: per-command check time and a limit fuzz.

``run()`` returns one dict per measurement (the ``python -m vla_mpc.bench safety`` dispatcher
prints each as a JSON line):

* ``{"suite": "safety", "robot": r, "dof": n, "check_us_p50": ..., "check_us_p99": ...,
  "check_us_clamped_p50": ..., "check_us_clamped_p99": ...}``: wall time of one
  :meth:`SafetyFilter.filter` call [us] (``time.perf_counter``) on a smooth reachable stream (PASS)
  and on a stream that must be limited (CLAMPED), at ``dt`` = 5 ms; for ``panda`` and ``gr1``
  (each if its config exists).
* ``{"suite": "safety", "robot": "panda", "fuzz_commands": N, "fuzz_violations": V, ...}``:
  N >= 100,000 random and adversarial calls (targets up to 30 % beyond the limits, 1e6-rad jumps,
  NaN/Inf, wrong names, stale stamps, holds, e-stop/reset) at several ``dt``; V counts output
  samples that break a position, velocity, acceleration or jerk limit (finite differences over
  ``dt``; relative tolerance 1e-6) or are not finite.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from vla_mpc.core.robot_model import load_robot_spec
from vla_mpc.core.safety import SafetyFilter, SafetyLimits
from vla_mpc.paths import config_path

DT = 0.005
FUZZ_COMMANDS = 100_000


def _timing(robot: str, n_calls: int = 3000) -> dict[str, Any]:
    spec = load_robot_spec(robot)
    f = SafetyFilter.from_spec(spec, DT, command_timeout_s=1e9, joint_state_timeout_s=1e9)
    names = tuple(spec.joint_names)
    span = f.limits.upper - f.limits.lower
    phase = np.arange(len(names))
    q0 = f.limits.lower + span * (0.5 + 0.2 * np.sin(phase))  # away from the braking zones
    f.observe_joint_state(q0, 0.0)
    result: dict[str, Any] = {"suite": "safety", "robot": robot, "dof": len(names), "dt_s": DT}
    t = 0.0
    for label, amp in (("", 0.002), ("_clamped", 0.3)):  # 0.2 % / 30 % of each joint's range
        times = np.empty(n_calls)
        actions: dict[str, int] = {}
        for k in range(n_calls):
            t += DT
            # Smooth sinusoid from q0 (amplitude a fraction of each joint's range, 0.5 Hz).
            x = q0 + amp * span * (1.0 - np.cos(2.0 * math.pi * 0.5 * t)) * np.cos(phase)
            t0 = time.perf_counter()
            _, verdict = f.filter(names, x, t)
            times[k] = time.perf_counter() - t0
            actions[verdict.action.value] = actions.get(verdict.action.value, 0) + 1
        result[f"check_us{label}_p50"] = round(float(np.percentile(times, 50)) * 1e6, 1)
        result[f"check_us{label}_p99"] = round(float(np.percentile(times, 99)) * 1e6, 1)
        result[f"actions{label}"] = actions
    return result


def _violations(p: np.ndarray, lim: SafetyLimits, dt: float) -> int:
    """Output samples (rows of p, (T, n)) that break a limit, counted per joint and derivative."""
    v = np.diff(p, axis=0) / dt
    a = np.diff(v, axis=0) / dt
    j = np.diff(a, axis=0) / dt
    rel = 1e-6
    return int(
        np.sum(~np.isfinite(p))
        + np.sum((p < lim.lower - 1e-12) | (p > lim.upper + 1e-12))
        + np.sum(np.abs(v) > lim.velocity * (1 + rel))
        + np.sum(np.abs(a) > lim.acceleration * (1 + rel) + 1e-6)
        + np.sum(np.abs(j) > lim.jerk * (1 + rel) + 1e-3)
    )


def _fuzz(robot: str, n_commands: int, seed: int = 0) -> dict[str, Any]:
    spec = load_robot_spec(robot)
    rng = np.random.default_rng(seed)
    names = list(spec.joint_names)
    n = len(names)
    dts = (0.001, 0.005, 0.02)
    per_episode = 2000
    commands = violations = samples = 0
    kinds: dict[str, int] = {}
    while commands < n_commands:
        dt = dts[(commands // per_episode) % len(dts)]
        f = SafetyFilter.from_spec(spec, dt, command_timeout_s=1e9, joint_state_timeout_s=1e9,
                                   jump_action="reject" if rng.random() < 0.2 else "clamp")
        lim = f.limits
        span = lim.upper - lim.lower
        q0 = lim.lower + rng.random(n) * span
        f.observe_joint_state(q0, 0.0)
        out = [q0, q0, q0]
        t = 1.0
        x = q0.copy()
        for _ in range(per_episode):
            t += dt
            r = rng.random()
            if r < 0.02:  # a new random far target, up to 30 % beyond the limits
                x = lim.lower - 0.3 * span + rng.random(n) * 1.6 * span
            elif r < 0.5:  # random walk of the target
                x = x + rng.normal(0.0, 0.02, n)
            if r < 0.03:
                cmd, _ = f.hold()
            elif r < 0.05:
                bad = x.copy()
                bad[rng.integers(n)] = rng.choice([math.nan, math.inf, -math.inf])
                cmd, _ = f.filter(names, bad, t)
            elif r < 0.06:
                cmd, _ = f.filter(names, x * 1e6, t)
            elif r < 0.07:
                cmd, _ = f.filter(names[:-1] + ["not_a_joint"], x, t)
            elif r < 0.08:
                cmd, _ = f.filter(names, x, t - 2 * dt)  # stamp goes backwards
            elif r < 0.081:
                f.estop("fuzz")
                cmd, _ = f.filter(names, x, t)
            elif r < 0.082:
                f.reset()  # no re-seed: the output stays continuous
                cmd, _ = f.filter(names, x, t)
            elif r < 0.09:
                perm = rng.permutation(n)
                cmd, _ = f.filter([names[i] for i in perm], x[perm], t)
            else:
                cmd, _ = f.filter(names, x, t)
            out.append(cmd)
            commands += 1
        for k, c in f.counts.items():
            kinds[k] = kinds.get(k, 0) + c
        p = np.array(out)
        violations += _violations(p, lim, dt)
        samples += p.size
    return {"suite": "safety", "robot": robot, "fuzz_commands": commands, "fuzz_violations": violations,
            "fuzz_samples_checked": samples, "fuzz_dt_s": list(dts), "fuzz_interventions": kinds}


def run() -> list[dict[str, Any]]:
    """Time the per-command check (panda, gr1 if configured) and fuzz >= 100,000 commands."""
    results = []
    for robot in ("panda", "gr1"):
        if robot == "panda" or config_path(robot).exists():
            results.append(_timing(robot))
    results.append(_fuzz("panda", FUZZ_COMMANDS))
    return results
