"""Camera frame preparation for the models (ROS-free): resize, and a freshness gate.

``prepare_frame`` turns any RGB frame into the model's square input: centre crop (keep the middle,
lose the sides) or letterbox (keep everything, pad), then ``cv2.resize`` with INTER_AREA when
shrinking (OpenCV's recommended filter for decimation) and INTER_LINEAR when enlarging.
``FrameGate`` drops stale, duplicate and out-of-order frames and counts why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np


class ResizeMode(str, Enum):
    """How a non-square frame becomes the square model frame."""

    CENTER_CROP = "center_crop"
    LETTERBOX = "letterbox"


def prepare_frame(rgb: np.ndarray, size: tuple[int, int], mode: ResizeMode | str = ResizeMode.CENTER_CROP) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (size[0], size[1], 3) uint8 RGB model frame.

    Args:
        rgb: the decoded camera frame.
        size: (height, width) of the model input [px], e.g. (224, 224).
        mode: centre crop to the target aspect ratio, or letterbox (pad with black).

    Raises:
        ValueError: ``rgb`` not (H, W, 3) uint8, or a non-positive size.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"model frame size must be positive, got {size}")
    mode = ResizeMode(mode)
    h, w = rgb.shape[:2]
    target_ratio = out_w / out_h
    if mode is ResizeMode.CENTER_CROP:
        if w / h > target_ratio:  # too wide: crop the sides
            cw = max(1, int(round(h * target_ratio)))
            x0 = (w - cw) // 2
            rgb = rgb[:, x0:x0 + cw]
        else:  # too tall: crop top and bottom
            ch = max(1, int(round(w / target_ratio)))
            y0 = (h - ch) // 2
            rgb = rgb[y0:y0 + ch]
        h, w = rgb.shape[:2]
        interp = cv2.INTER_AREA if (h > out_h or w > out_w) else cv2.INTER_LINEAR
        return cv2.resize(rgb, (out_w, out_h), interpolation=interp)
    scale = min(out_w / w, out_h / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    out = np.zeros((out_h, out_w, 3), np.uint8)
    y0, x0 = (out_h - nh) // 2, (out_w - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = resized
    return out


class Drop(str, Enum):
    """Why a frame was not forwarded."""

    STALE = "stale"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"


@dataclass
class FrameGate:
    """Accepts a frame only if it is newer than the last accepted one and not older than
    ``max_age_s`` relative to ``now`` (both on the ROS clock, so bag replay with ``use_sim_time``
    behaves). Counts accepted frames and drops per reason.

    Raises (constructor):
        ValueError: non-positive ``max_age_s``.
    """

    max_age_s: float
    last_stamp: float | None = None
    accepted: int = 0
    drops: dict[Drop, int] = field(default_factory=lambda: {d: 0 for d in Drop})

    def __post_init__(self) -> None:
        if not self.max_age_s > 0.0:
            raise ValueError(f"max_age_s must be > 0 s, got {self.max_age_s!r}")

    def check(self, stamp: float, now: float) -> Drop | None:
        """Return None (accept: the gate records ``stamp``) or the drop reason (counted)."""
        reason: Drop | None = None
        if self.last_stamp is not None and stamp == self.last_stamp:
            reason = Drop.DUPLICATE
        elif self.last_stamp is not None and stamp < self.last_stamp:
            reason = Drop.OUT_OF_ORDER
        elif now - stamp > self.max_age_s:
            reason = Drop.STALE
        if reason is None:
            self.last_stamp = stamp
            self.accepted += 1
        else:
            self.drops[reason] += 1
        return reason

    def count(self, reason: Drop) -> None:
        """Count a drop decided elsewhere (e.g. a malformed message)."""
        self.drops[reason] += 1
