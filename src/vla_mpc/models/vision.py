"""Image preprocessing shared by training and inference (contract C) and System 2's CNN encoder.

:func:`resize_frame` is the one place camera frames become model pixels: the dataset converter, the
built-in System 2 and the world model all call it, so training and inference see the same pixels.

:class:`ConvEncoder` is a small strided CNN (four 3x3/5x5 stride-2 convolutions with GroupNorm +
GELU, about 75k parameters at width 32) that turns a (S, S) frame into (S/16)^2 spatial tokens.
It is sized for this machine: a 96 px frame costs ~10 M multiply-adds, so System 2 runs in a few
milliseconds on one CPU thread and a 25-minute training run on two cores sees ~10^5 frames
(DrQ-style random-shift augmentation, Yarats et al. 2021, :func:`random_shift`, makes that count).
No rclpy here.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["resize_frame", "images_to_tensor", "random_shift", "shifted_views", "ConvEncoder", "IMAGE_MEAN",
           "IMAGE_STD"]

# Per-channel normalisation of [0, 1] pixels (ImageNet statistics; any fixed values work, these are
# the conventional ones).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def resize_frame(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize with ``cv2.INTER_AREA`` (contract C).

    Args:
        image: (H, W, 3) uint8 RGB.
        size: output side [px], >= 1.

    Returns:
        (size, size, 3) uint8 RGB, C-contiguous (a new array).

    Raises:
        ValueError: not an (H, W, 3) uint8 array, an empty image, or ``size < 1``.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"resize_frame expects an (H, W, 3) uint8 RGB image, got {a.shape} {a.dtype}")
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"resize_frame size must be an int >= 1, got {size!r}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"resize_frame got an empty image {a.shape}")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = a[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square).copy()
    return np.ascontiguousarray(cv2.resize(square, (int(size), int(size)), interpolation=cv2.INTER_AREA))


def images_to_tensor(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 RGB (..., S, S, 3) -> normalised float32 (..., 3, S, S) (``IMAGE_MEAN`` / ``IMAGE_STD``)."""
    x = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if x.dtype != torch.uint8 or x.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (..., S, S, 3), got {tuple(x.shape)} {x.dtype}")
    x = x.movedim(-1, -3).float().div_(255.0)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (x - mean) / std


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None,
                 return_shift: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DrQ random shift: replicate-pad by ``pad`` px and crop back at a random offset per image.

    Args:
        x: (B, C, S, S) float images.
        pad: shift range [px], >= 0 (0 returns ``x``).
        return_shift: also return how far each image's content moved, (B, 2) int64 (dx right,
            dy down) [px], each in [-pad, pad].
    """
    if pad <= 0:
        return (x, torch.zeros(x.shape[0], 2, dtype=torch.int64)) if return_shift else x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    # Integer crops via an index grid (one gather, no Python loop over the batch).
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [B, H]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [B, W]
    idx_b = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    out = out.permute(0, 3, 1, 2).contiguous()
    # out[y, x] = x[y + dy - pad, x + dx - pad]: the content moved by (pad - dx, pad - dy)
    return (out, torch.stack([pad - dx, pad - dy], dim=1)) if return_shift else out


def shifted_views(frames: np.ndarray, radius: int) -> np.ndarray:
    """The test-time counterpart of :func:`random_shift`: each frame shifted by every
    ``(dx, dy)`` in ``{-radius, 0, radius}^2`` px, edge-replicated as in training.

    A model trained on randomly shifted frames answers with a spread over the shift; averaging its
    outputs over these views estimates the expectation over the augmentation (test-time
    augmentation), where one unshifted view is a single draw.

    Args:
        frames: (..., S, S, 3) uint8 (any leading dimensions).
        radius: shift [px], 0 <= radius < S.

    Returns:
        (K, ..., S, S, 3) uint8, K = 9 (1 for ``radius`` 0); view 0 is the unshifted frame.

    Raises:
        ValueError: ``frames`` not (..., S, S, 3) uint8, or ``radius`` outside [0, S).
    """
    f = np.asarray(frames)
    if f.dtype != np.uint8 or f.ndim < 3 or f.shape[-1] != 3 or f.shape[-2] != f.shape[-3]:
        raise ValueError(f"frames must be uint8 (..., S, S, 3), got {f.shape} {f.dtype}")
    s = f.shape[-2]
    if not 0 <= int(radius) < s:
        raise ValueError(f"radius must be in [0, {s}) px, got {radius}")
    r = int(radius)
    if r == 0:
        return f[None].copy()
    pad = [(0, 0)] * (f.ndim - 3) + [(r, r), (r, r), (0, 0)]
    padded = np.pad(f, pad, mode="edge")
    offsets = [(0, 0)] + [(dx, dy) for dy in (-r, 0, r) for dx in (-r, 0, r) if (dx, dy) != (0, 0)]
    # a view shifted by (dx, dy) shows the scene moved by (dx, dy): view[y, x] = frame[y - dy, x - dx]
    return np.stack([padded[..., r - dy:r - dy + s, r - dx:r - dx + s, :] for dx, dy in offsets])


class ConvEncoder(nn.Module):
    """Small CNN: (B, 3, S, S) normalised pixels -> (B, (S/16)^2, out_dim) spatial tokens.

    Four stride-2 convolutions (5x5 then 3x3) with GroupNorm(8) + GELU, channels
    ``width, 2 width, 4 width, 4 width``, then a linear projection of each cell to ``out_dim``
    plus a learned positional embedding per cell.

    Args:
        image_size: input side S [px], a multiple of 16, >= 16.
        width: channels of the first convolution, a multiple of 8.
        out_dim: token width.
    """

    def __init__(self, image_size: int = 96, width: int = 32, out_dim: int = 128) -> None:
        super().__init__()
        if image_size < 16 or image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 16, got {image_size}")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8, got {width}")
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(chans[i], chans[i + 1], k, stride=2, padding=k // 2),
                       nn.GroupNorm(8, chans[i + 1]), nn.GELU()]
        self.net = nn.Sequential(*layers)
        #: channels and side of the stride-8 feature map (:meth:`forward` ``return_features``)
        self.feature_channels, self.feature_grid = chans[3], image_size // 8
        self.grid = image_size // 16
        self.num_tokens = self.grid * self.grid
        self.proj = nn.Linear(chans[-1], out_dim)
        self.pos = nn.Parameter(torch.randn(1, self.num_tokens, out_dim) * 0.02)

    def forward(self, x: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> tokens (B, (S/16)^2, out_dim); with ``return_features`` also the
        stride-8 feature map (B, 4 width, S/8, S/8) (after the third convolution's GELU)."""
        split = 3 * 3  # three stages of (conv, norm, GELU) reach stride 8
        mid = self.net[:split](x)  # [B, 4w, S/8, S/8]
        f = self.net[split:](mid)  # [B, C, S/16, S/16]
        tokens = self.proj(f.flatten(2).transpose(1, 2)) + self.pos  # [B, G*G, out_dim]
        return (tokens, mid) if return_features else tokens
