"""System 2's built-in compact vision-language model: camera images + instruction -> latent ``z``.

Tokens (width ``d_model``): ``latent_tokens`` learned query tokens, ``text_tokens`` text tokens (a
linear map of frozen 384-d MiniLM sentence embeddings, :mod:`vla_mpc.models.text`: the instruction,
and with 3 also its object and goal phrases, each with a learned role embedding) and, per camera, the
(S/16)^2 spatial tokens of a shared :class:`~vla_mpc.models.vision.ConvEncoder` plus a learned
camera embedding. A pre-norm transformer encoder (Vaswani et al. 2017) mixes them; the outputs at
the query positions, layer-normed and projected, are ``z`` (latent_tokens, latent_dim). The query
read-out follows Perceiver-style latent queries (Jaegle et al. 2021) and GR00T N1's / Helix's
fixed-size latent handed from the slow to the fast system. Trained end to end with System 1
through ``z`` (the sentence model stays frozen). No rclpy here.
"""

from __future__ import annotations

import torch
from torch import nn

from vla_mpc.models.text import TEXT_DIM
from vla_mpc.models.vision import ConvEncoder

__all__ = ["CompactVLM"]


class CompactVLM(nn.Module):
    """(images, text embedding) -> ``z``.

    Args:
        num_cameras: cameras per observation, >= 1.
        image_size: frame side S [px] (multiple of 16).
        vision_width: first-layer channels of the CNN.
        d_model: token width; ``heads`` must divide it.
        layers: transformer layers.
        heads: attention heads.
        latent_tokens / latent_dim: shape of ``z``.
        text_tokens: text embeddings per instruction (1 or 3, :data:`~vla_mpc.models.text.TEXT_TOKEN_COUNTS`).
    """

    def __init__(self, num_cameras: int, image_size: int, vision_width: int, d_model: int, layers: int,
                 heads: int, latent_tokens: int, latent_dim: int, text_tokens: int = 1) -> None:
        super().__init__()
        self.text_tokens = int(text_tokens)
        if self.text_tokens > 1:  # which role each text token holds (sentence, object, goal)
            self.text_role = nn.Parameter(torch.randn(self.text_tokens, d_model) * 0.02)
        self.vision = ConvEncoder(image_size, vision_width, d_model)
        self.camera_embed = nn.Parameter(torch.randn(num_cameras, 1, d_model) * 0.02)
        self.text_proj = nn.Linear(TEXT_DIM, d_model)
        self.queries = nn.Parameter(torch.randn(latent_tokens, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, latent_dim)
        self.num_cameras = num_cameras
        self.latent_tokens = latent_tokens

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Latent for a batch.

        Args:
            images: (B, N_cam, 3, S, S) float32, normalised (``vision.images_to_tensor``).
            text_emb: (B, text_tokens, 384) float32 sentence embeddings ((B, 384) when text_tokens is 1).

        Returns:
            z: (B, latent_tokens, latent_dim) float32.

        Raises:
            ValueError: a camera count or text token count that does not match.
        """
        b, n = images.shape[:2]
        if n != self.num_cameras:
            raise ValueError(f"expected {self.num_cameras} camera(s), got {n}")
        if text_emb.dim() == 2:
            text_emb = text_emb.unsqueeze(1)
        if text_emb.shape[1] != self.text_tokens:
            raise ValueError(f"expected {self.text_tokens} text token(s), got {tuple(text_emb.shape)}")
        text = self.text_proj(text_emb)  # [B, T, D]
        if self.text_tokens > 1:
            text = text + self.text_role
        vis = self.vision(images.flatten(0, 1))  # [B*N, G*G, D]
        vis = vis.view(b, n, vis.shape[1], vis.shape[2]) + self.camera_embed  # [B, N, G*G, D]
        tokens = torch.cat([
            self.queries.expand(b, -1, -1),               # [B, Tz, D]
            text,                                          # [B, T, D]
            vis.flatten(1, 2),                             # [B, N*G*G, D]
        ], dim=1)
        h = self.encoder(tokens)[:, : self.latent_tokens]  # [B, Tz, D]
        return self.out(self.out_norm(h))
