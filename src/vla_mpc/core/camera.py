"""Camera frame preparation for the models (ROS-free): resize, and a freshness gate.

``prepare_frame`` turns any RGB frame into the model's square input: centre crop (keep the middle,
lose the sides) or letterbox (keep everything, pad), then ``cv2.resize`` with INTER_AREA when
shrinking (OpenCV's recommended filter for decimation) and INTER_LINEAR when enlarging.
``FrameGate`` drops stale, duplicate and out-of-order frames and counts why.
``ApproximateTimeSync`` groups the frames of several cameras whose stamps lie within a slop, the
policy of ROS ``message_filters.ApproximateTimeSynchronizer`` (message_filters has no PyPI wheel;
this follows its Python implementation's matching rule, ROS-free).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

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


def decode_reduction(source_hw: tuple[int, int], size: tuple[int, int], mode: ResizeMode | str = ResizeMode.CENTER_CROP) -> int:
    """Largest JPEG decode reduction (1, 2, 4 or 8) that still leaves at least the model frame's
    pixels for :func:`prepare_frame`, so decoding at reduced size never upsamples.

    Args:
        source_hw: (height, width) of the compressed source [px].
        size: (height, width) of the model frame [px].
    """
    h, w = int(source_hw[0]), int(source_hw[1])
    out_h, out_w = int(size[0]), int(size[1])
    if ResizeMode(mode) is ResizeMode.CENTER_CROP:
        ratio = out_w / out_h  # the crop keeps the model aspect; it must still cover the model frame
        crop_h, crop_w = (h, h * ratio) if w / h > ratio else (w / ratio, w)
        need_h, need_w = h * out_h / crop_h, w * out_w / crop_w  # reduced source size that leaves it
    else:
        scale = min(out_w / w, out_h / h)
        need_h, need_w = h * scale, w * scale  # the letterboxed image's size
    for f in (8, 4, 2):
        if h // f >= need_h and w // f >= need_w:
            return f
    return 1


class Drop(str, Enum):
    """Why a frame was not forwarded."""

    STALE = "stale"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    MALFORMED = "malformed"
    UNSYNCED = "unsynced"  # several cameras: no partner frame within the slop before it aged out


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


class ApproximateTimeSync:
    """Approximate time synchronisation of several streams (ROS ``message_filters``'
    ``ApproximateTimeSynchronizer`` rule): when a frame arrives, every other stream's queued frames
    within ``slop_s`` of its stamp are candidates, nearest first; the first combination whose
    stamps all lie within ``slop_s`` of each other is emitted as a set and removed, together with
    every older queued frame of those streams (they can no longer be part of a newer set; they are
    counted in ``unmatched``). Each stream keeps at most ``queue_size`` frames (the oldest go, also
    counted).

    Args:
        names: stream (camera) names, at least one.
        slop_s: largest stamp spread inside a set [s], > 0.
        queue_size: frames kept per stream, >= 1.
    Raises:
        ValueError: no or repeated names, non-positive ``slop_s`` or ``queue_size``.
    """

    def __init__(self, names: Sequence[str], slop_s: float, queue_size: int = 5) -> None:
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"names must be unique and not empty, got {names}")
        if not slop_s > 0.0:
            raise ValueError(f"slop_s must be > 0 s, got {slop_s!r}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        self.names, self.slop_s, self.queue_size = names, float(slop_s), int(queue_size)
        self.queues: dict[str, dict[float, Any]] = {n: {} for n in names}
        self.unmatched: dict[str, int] = {n: 0 for n in names}
        self.sets = 0
        self.last_spread_s: float | None = None

    def add(self, name: str, stamp: float, item: Any) -> dict[str, tuple[float, Any]] | None:
        """Queue ``item`` of stream ``name`` at ``stamp`` [s]; returns the completed set
        {name: (stamp, item)} or None.

        Raises:
            KeyError: unknown stream name.
        """
        queue = self.queues[name]
        queue[float(stamp)] = item
        while len(queue) > self.queue_size:
            del queue[min(queue)]
            self.unmatched[name] += 1
        candidates: list[list[float]] = []
        for other in self.names:
            if other == name:
                candidates.append([float(stamp)])
                continue
            near = sorted((s for s in self.queues[other] if abs(s - stamp) <= self.slop_s), key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            if max(combo) - min(combo) <= self.slop_s:
                out = {}
                for n, s in zip(self.names, combo):
                    q = self.queues[n]
                    out[n] = (s, q.pop(s))
                    for old in [o for o in q if o < s]:
                        del q[old]
                        self.unmatched[n] += 1
                self.sets += 1
                self.last_spread_s = max(combo) - min(combo)
                return out
        return None
