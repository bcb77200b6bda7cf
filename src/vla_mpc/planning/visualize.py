"""Offline picture of a planning run: imagined vs executed end-effector paths (no rclpy).

``PathRecorder`` keeps what a run needs for it (the planner node fills one and writes it at
shutdown; the ROS-free goal-reach loop can too): every planning cycle's imagined end-effector path
of the chosen plan (``(H + 1, 3)`` [m], ``base_link``, current position first) with its time, and
the executed end-effector positions measured from joint states. ``save`` writes

* ``imagined_vs_executed.png``: top view (x-y) and side view (x-z) in ``base_link``: executed path
  black, each cycle's imagined plan a thin line coloured by time (early blue -> late yellow,
  matplotlib ``viridis``), the goal end-effector position (when known) a red cross; and a third
  panel with the distance between where each plan said the end effector would be after
  ``lookahead_s`` and where it was measured at that time [m] (how well imagination matched
  reality; for a learned model this is the latent predictor's kinematic part, which is exact
  integration, so the gap is the servo's tracking error plus latency);
* ``imagined_vs_executed.npz``: the same arrays, to re-plot or compare runs.

Matplotlib (Agg backend) is imported only when saving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PNG_NAME = "imagined_vs_executed.png"
NPZ_NAME = "imagined_vs_executed.npz"


@dataclass
class PathRecorder:
    """Ring buffers of imagined plans and executed end-effector positions.

    Args:
        dt: seconds between the points of an imagined path (the model's step).
        max_plans: how many of the latest plans to keep.
        max_executed: how many of the latest executed positions to keep.
    """

    dt: float
    max_plans: int = 300
    max_executed: int = 20000
    plan_times: list[float] = field(default_factory=list)
    plans: list[np.ndarray] = field(default_factory=list)
    executed_times: list[float] = field(default_factory=list)
    executed: list[np.ndarray] = field(default_factory=list)
    goal: np.ndarray | None = None

    def add_plan(self, t: float, path: np.ndarray) -> None:
        """One cycle's imagined path ``(H + 1, 3)`` [m] starting at time ``t`` [s]."""
        p = np.asarray(path, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
            raise ValueError(f"path must be a finite (H + 1, 3) array, got {p.shape}")
        self.plan_times.append(float(t))
        self.plans.append(p)
        if len(self.plans) > self.max_plans:
            del self.plans[0], self.plan_times[0]

    def add_executed(self, t: float, position: np.ndarray) -> None:
        """The measured end-effector position ``(3,)`` [m] at time ``t`` [s]."""
        self.executed_times.append(float(t))
        self.executed.append(np.asarray(position, dtype=np.float64).reshape(3))
        if len(self.executed) > self.max_executed:
            del self.executed[0], self.executed_times[0]

    def prediction_gaps(self, lookahead_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``(times, gaps [m])``: for each plan, the distance between its imagined position at
        ``t + lookahead_s`` (linear interpolation along the path) and the executed position at
        that time (interpolated); plans whose look-ahead is outside the recording are skipped."""
        if not self.executed or not self.plans:
            return np.zeros(0), np.zeros(0)
        te = np.asarray(self.executed_times)
        xe = np.asarray(self.executed)
        ts, gaps = [], []
        for t0, p in zip(self.plan_times, self.plans):
            t = t0 + lookahead_s
            if t < te[0] or t > te[-1]:
                continue
            tp = t0 + self.dt * np.arange(len(p))
            if t > tp[-1]:
                continue
            imagined = np.array([np.interp(t, tp, p[:, k]) for k in range(3)])
            measured = np.array([np.interp(t, te, xe[:, k]) for k in range(3)])
            ts.append(t0)
            gaps.append(float(np.linalg.norm(imagined - measured)))
        return np.asarray(ts), np.asarray(gaps)

    def save(self, out_dir: Path | str, title: str = "", lookahead_s: float | None = None) -> Path:
        """Write the PNG and NPZ (module docstring) into ``out_dir`` (created). Returns the PNG path.

        Raises:
            ValueError: nothing recorded yet.
        """
        if not self.plans and not self.executed:
            raise ValueError("nothing recorded: no plans and no executed positions")
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        look = self.dt if lookahead_s is None else float(lookahead_s)
        gap_t, gaps = self.prediction_gaps(look)
        xe = np.asarray(self.executed) if self.executed else np.zeros((0, 3))
        t_all = np.asarray(self.plan_times)
        fig, axes = plt.subplots(1, 3, figsize=(15, 5))
        cmap = plt.get_cmap("viridis")
        span = max(float(t_all.max() - t_all.min()), 1e-9) if len(t_all) else 1.0
        for ax, (i, j, name) in zip(axes[:2], ((0, 1, "top view: x-y"), (0, 2, "side view: x-z"))):
            for t0, p in zip(self.plan_times, self.plans):
                ax.plot(p[:, i], p[:, j], color=cmap((t0 - t_all.min()) / span), lw=0.8, alpha=0.7)
            if len(xe):
                ax.plot(xe[:, i], xe[:, j], color="black", lw=2.0, label="executed")
                ax.plot(xe[0, i], xe[0, j], "ko", ms=6, label="start")
            if self.goal is not None:
                ax.plot(self.goal[i], self.goal[j], "rx", ms=12, mew=3, label="goal")
            ax.set_xlabel("xyz"[i] + " [m] (base_link)")
            ax.set_ylabel("xyz"[j] + " [m] (base_link)")
            ax.set_title(f"{name}; imagined plans coloured by time")
            ax.axis("equal")
            ax.legend(loc="best", fontsize=8)
        ax = axes[2]
        if len(gaps):
            ax.plot(gap_t - gap_t[0], 100.0 * gaps, "b.-", lw=1)
        ax.set_xlabel("plan time [s]")
        ax.set_ylabel(f"imagined - executed after {look:.2f} s [cm]")
        ax.set_title("prediction gap of the chosen plans")
        ax.grid(True, alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        png = out / PNG_NAME
        fig.savefig(png, dpi=80)
        plt.close(fig)
        plans = np.stack(self.plans) if self.plans else np.zeros((0, 0, 3))  # [P, H + 1, 3], no pickle
        np.savez(out / NPZ_NAME, plan_times=t_all, plans=plans, executed_times=np.asarray(self.executed_times), executed=xe,
                 goal=np.full(3, np.nan) if self.goal is None else np.asarray(self.goal),
                 gap_times=gap_t, gaps=gaps)
        return png
