"""The System 2 / System 1 backend interfaces the policy node calls (scripted and learned backends).

* :class:`System2Backend` -- ``infer(images, instruction, objects) -> z``:
  ``images`` {camera name: (H, W, 3) uint8 RGB}, ``instruction`` str, ``objects`` {name: (3,)
  position [m] in ``base_link``} (privileged; learned backends ignore it and may receive ``None``);
  ``z`` is (tokens, dim) float32, published on ``/vla_mpc/latent`` with dims labelled
  ("tokens", "dim").
* :class:`System1Backend` -- ``infer(z, proprio, prefix, velocity) -> chunk``:
  ``z`` (tokens, dim) float32, ``proprio`` (action_dim,) float64 measured joint positions over
  ``RobotSpec.joint_names`` [rad or m], ``prefix`` (P, action_dim) float64 or None: the targets
  already committed for the chunk's first steps (real-time chunking: a chunk must agree with
  them), ``velocity`` (action_dim,) float64 measured joint velocities [rad/s or m/s] or None (then
  taken as zero); returns ``chunk`` (chunk_size, action_dim) float64 joint position targets
  [rad or m], ``chunk[k]`` for ``t_start + k * dt``.

The split follows Helix / GR00T N1 (a slow vision-language System 2 writes a latent that a fast
action expert, System 1, reads; ``../shared/seeds/004``). No rclpy here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["LATENT_LABELS", "System2Backend", "System1Backend", "joint_vector"]

LATENT_LABELS = ("tokens", "dim")


def joint_vector(value: object, action_dim: int, name: str, *, zeros_if_none: bool = False) -> np.ndarray:
    """A System 1 input over ``joint_names`` (``proprio``, ``velocity``) checked and as float64.

    Args:
        value: array-like of ``action_dim`` values [rad, m or their rates], or None with
            ``zeros_if_none`` (a velocity not given: taken as zero).
        action_dim: the backend's joint count.
        name: the argument's name, for the error.

    Returns:
        (action_dim,) float64 (a new array).

    Raises:
        ValueError: wrong length or non-finite values (``"<name> must be finite (n,), got shape ..."``).
    """
    if value is None and zeros_if_none:
        return np.zeros(action_dim)
    v = np.array(value, dtype=np.float64).reshape(-1)
    if v.shape != (action_dim,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite ({action_dim},), got shape {np.shape(value)}")
    return v


@runtime_checkable
class System2Backend(Protocol):
    """Slow system (~2 Hz): images + instruction -> latent ``z`` (tokens, dim) float32."""

    latent_shape: tuple[int, int]

    def reset(self) -> None:
        """Forget any episode state."""

    def infer(
        self,
        images: Mapping[str, np.ndarray],
        instruction: str,
        objects: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Latent ``z`` (tokens, dim) float32 for the current observation."""


@runtime_checkable
class System1Backend(Protocol):
    """Fast system: ``z`` + proprioception -> action chunk (chunk_size, action_dim) float64."""

    chunk_size: int
    action_dim: int
    dt: float

    def reset(self) -> None:
        """Forget any episode state."""

    def infer(
        self,
        z: np.ndarray,
        proprio: np.ndarray,
        prefix: np.ndarray | None = None,
        velocity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Chunk of joint position targets (chunk_size, action_dim) float64 [rad or m]."""
