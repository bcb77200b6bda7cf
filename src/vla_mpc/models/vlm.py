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

With ``feature_points`` > 0, ``z``'s last token is not a query output but a read-out of
:class:`FeaturePoints`: the expected image positions of text-conditioned soft-argmax maps over the
CNN's stride-8 features (the spatial softmax of Levine et al. 2016, "End-to-end training of deep
visuomotor policies", Sec. 4.1, with the maps' keys compared against instruction-dependent queries).
The transformer sees 16 px cells; the feature points are continuous, so a linear head on ``z``
can read where the named object is to a fraction of a cell.

With ``role_points`` (three text tokens), the points are split by role: half are queried by the
object phrase's embedding alone ("red cube"), half by the goal phrase's ("green pad"), and two
small MLPs read the task keypoints from them, the object's from the object points only, the goal's
from all points and the goal phrase. Each keypoint then has one way into the image, through the
maps its own phrase queries, so the object's error can only be lowered by a map on the object:
that binds colour words to roles where a shared read-out of all points left it to chance (which
cube was read as the object changed from run to run, README, session 13). The read keypoints
(normalised) open ``z``'s last token, so System 1's interface, ``z``, keeps its shape. This is
the keypoint bottleneck of Levine et al. 2016 (Sec. 4.2) made per role. Training may also give
each role's first map a pixel target (``PolicyConfig.keypoint_pixel_weight``, :func:`cell_splat`):
where the keypoint projects into the frame. Through the 3-D read-out alone the maps learned
slowly (pick_place keypoints 3.1 / 5.8 cm off after 17 min); with the pixel targets they read
them to a median 1.7 / 2.0 cm in the same time (README, session 14).
"""

from __future__ import annotations

import torch
from torch import nn

from vla_mpc.models.text import TEXT_DIM
from vla_mpc.models.vision import ConvEncoder
from vla_mpc.sim.tasks import NUM_TASK_KEYPOINTS

__all__ = ["CompactVLM", "FeaturePoints", "ROLE_KEYPOINT_DIM", "cell_splat"]

#: Width of the role heads' read-out at the start of ``z``'s last token: the task keypoints' (x, y, z).
ROLE_KEYPOINT_DIM = NUM_TASK_KEYPOINTS * 3


class FeaturePoints(nn.Module):
    """Text-conditioned spatial soft-argmax: feature maps + instruction -> feature points.

    For each of ``num_points`` points, an instruction-dependent query (a linear map of the frozen
    sentence embeddings) is compared with a 1x1-convolution key at every cell; the softmax over the
    cells, at a learned temperature, weights the cells' centres into an expected position (x, y) in
    [-1, 1] (image frame, x right, y down) and their 1x1-convolution values into a feature. That is
    the spatial softmax of Levine et al. 2016 (Sec. 4.1), which turns a map into coordinates
    without a resolution limit of its grid; the queries make the points follow the instruction's
    object instead of a fixed channel.

    Args:
        channels: feature-map channels C.
        grid: feature-map side G (square maps).
        text_dim: width of the flattened text input (text_tokens x 384).
        num_points: points per map P, >= 1.
        key_dim: query / key width.
        value_dim: value width per point.

    Shapes:
        ``forward(features (B, C, G, G) float32, text (B, text_dim) float32)`` ->
        (points (B, P, 2 + value_dim), attention (B, P, G, G), rows summing to 1).
    """

    def __init__(self, channels: int, grid: int, text_dim: int, num_points: int = 8, key_dim: int = 32,
                 value_dim: int = 8) -> None:
        super().__init__()
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points, self.key_dim, self.grid = int(num_points), int(key_dim), int(grid)
        self.point_dim = 2 + int(value_dim)  # (x, y) and the value of each point
        self.key = nn.Conv2d(channels, key_dim, 1)
        self.value = nn.Conv2d(channels, value_dim, 1)
        self.query = nn.Linear(text_dim, num_points * key_dim)
        self.log_temperature = nn.Parameter(torch.zeros(()))  # Levine et al.'s learned alpha
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2.0 - 1.0  # cell centres in [-1, 1]
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("cell_xy", torch.stack([xx.flatten(), yy.flatten()], dim=1), persistent=False)

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = features.shape
        if h != self.grid or w != self.grid:
            raise ValueError(f"expected ({self.grid}, {self.grid}) feature maps, got ({h}, {w})")
        keys = self.key(features).flatten(2)  # [B, K, G*G]
        values = self.value(features).flatten(2).transpose(1, 2)  # [B, G*G, V]
        queries = self.query(text).view(b, self.num_points, self.key_dim)  # [B, P, K]
        logits = torch.bmm(queries, keys) * (self.log_temperature.exp() / self.key_dim ** 0.5)
        attention = logits.softmax(dim=-1)  # [B, P, G*G]
        points = torch.cat([attention @ self.cell_xy, attention @ values], dim=-1)  # [B, P, 2 + V]
        return points, attention.view(b, self.num_points, h, w)


def cell_splat(uv: torch.Tensor, grid: int) -> torch.Tensor:
    """A distribution over a (grid x grid) map's cells whose expected cell centre is ``uv``: the
    bilinear weights of the four cells around it (a point between cell centres and the border is
    kept on the border cells). The target of a soft-argmax map (:class:`FeaturePoints`): the
    cross-entropy to it is lowest for a map equal to it, whose expected position is ``uv``
    itself, so a map can be supervised to sub-cell precision (the expectation, unlike a
    one-hot cell, does not round to a cell centre).

    Args:
        uv: (M, 2) float32 (x right, y down) in [-1, 1] (the image; ``FeaturePoints`` coordinates).
        grid: map side G >= 2.

    Returns:
        (M, G * G) float32, rows summing to 1, row-major cells (y, x).
    """
    c = ((uv.float() + 1.0) * 0.5 * grid - 0.5).clamp(0.0, grid - 1.0)  # continuous cell index (x, y)
    i0 = c.floor().clamp(max=grid - 2)
    frac = c - i0
    i0 = i0.long()
    out = uv.new_zeros(uv.shape[0], grid * grid, dtype=torch.float32)
    for dy in (0, 1):
        wy = frac[:, 1] if dy else 1.0 - frac[:, 1]
        for dx in (0, 1):
            wx = frac[:, 0] if dx else 1.0 - frac[:, 0]
            idx = (i0[:, 1] + dy) * grid + (i0[:, 0] + dx)
            out.scatter_add_(1, idx[:, None], (wx * wy)[:, None])
    return out


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
        feature_points: 0, or :class:`FeaturePoints` per camera whose MLP read-out is ``z``'s last
            token (module docstring; needs ``latent_tokens`` >= 2).
        role_points: split the feature points by role (module docstring): needs ``text_tokens``
            3, an even ``feature_points`` >= 2 and ``latent_dim`` > :data:`ROLE_KEYPOINT_DIM`; then
            ``z[:, -1, :6]`` are the task keypoints in normalised units (object, goal; x, y, z).

    Raises:
        ValueError: sizes that do not fit (above).
    """

    def __init__(self, num_cameras: int, image_size: int, vision_width: int, d_model: int, layers: int,
                 heads: int, latent_tokens: int, latent_dim: int, text_tokens: int = 1,
                 feature_points: int = 0, role_points: bool = False) -> None:
        super().__init__()
        if feature_points < 0 or feature_points and latent_tokens < 2:
            raise ValueError(f"feature_points must be >= 0 and needs latent_tokens >= 2, got {feature_points} "
                             f"(latent_tokens {latent_tokens})")
        if role_points and (text_tokens != 3 or feature_points < 2 or feature_points % 2
                            or latent_dim <= ROLE_KEYPOINT_DIM):
            raise ValueError(f"role_points needs text_tokens 3, an even feature_points >= 2 and latent_dim > "
                             f"{ROLE_KEYPOINT_DIM}, got {text_tokens}, {feature_points}, {latent_dim}")
        self.feature_points = int(feature_points)
        self.role_points = bool(role_points)
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
        if self.feature_points:
            v = self.vision
            readout_dim = latent_dim
            if self.role_points:  # per role: queries from that role's phrase alone
                half = self.feature_points // 2
                self.object_points = FeaturePoints(v.feature_channels, v.feature_grid, TEXT_DIM, half)
                self.goal_points = FeaturePoints(v.feature_channels, v.feature_grid, TEXT_DIM, half)
                point_dim = self.object_points.point_dim
                obj_width = num_cameras * half * point_dim
                mlp = lambda i: nn.Sequential(nn.Linear(i, 4 * latent_dim), nn.GELU(),  # noqa: E731
                                              nn.Linear(4 * latent_dim, 4 * latent_dim), nn.GELU(),
                                              nn.Linear(4 * latent_dim, 3))
                self.object_head = mlp(obj_width)
                self.goal_head = mlp(2 * obj_width + TEXT_DIM)
                readout_dim = latent_dim - ROLE_KEYPOINT_DIM
            else:
                self.points = FeaturePoints(v.feature_channels, v.feature_grid, self.text_tokens * TEXT_DIM,
                                            self.feature_points)
                point_dim = self.points.point_dim
            width = num_cameras * self.feature_points * point_dim + d_model
            self.point_readout = nn.Sequential(nn.Linear(width, 4 * latent_dim), nn.GELU(),
                                               nn.Linear(4 * latent_dim, 4 * latent_dim), nn.GELU(),
                                               nn.Linear(4 * latent_dim, readout_dim))

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor, return_maps: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Latent for a batch.

        Args:
            images: (B, N_cam, 3, S, S) float32, normalised (``vision.images_to_tensor``).
            text_emb: (B, text_tokens, 384) float32 sentence embeddings ((B, 384) when text_tokens is 1).
            return_maps: also return, with ``role_points``, the attention of each role's first
                point, (B, N_cam, 2, G, G) (object, goal; rows sum to 1; G the stride-8 grid),
                the maps a pixel target can supervise; None without ``role_points``.

        Returns:
            z: (B, latent_tokens, latent_dim) float32; with ``feature_points`` its last token is
            the feature points' read-out (with ``role_points`` opened by the 6 normalised keypoints).

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
        if self.feature_points:
            vis, features = self.vision(images.flatten(0, 1), return_features=True)  # [B*N, G*G, D], [B*N, C, g, g]
        else:
            vis = self.vision(images.flatten(0, 1))  # [B*N, G*G, D]
        vis = vis.view(b, n, vis.shape[1], vis.shape[2]) + self.camera_embed  # [B, N, G*G, D]
        tokens = torch.cat([
            self.queries.expand(b, -1, -1),               # [B, Tz, D]
            text,                                          # [B, T, D]
            vis.flatten(1, 2),                             # [B, N*G*G, D]
        ], dim=1)
        h = self.encoder(tokens)[:, : self.latent_tokens]  # [B, Tz, D]
        z = self.out(self.out_norm(h))
        maps = None
        if not self.feature_points:
            return (z, maps) if return_maps else z
        if self.role_points:
            per_camera = text_emb.repeat_interleave(n, dim=0)  # [B*N, 3, 384]: sentence, object, goal
            obj, obj_maps = self.object_points(features, per_camera[:, 1])  # [B*N, P/2, 2 + V], [B*N, P/2, G, G]
            goal, goal_maps = self.goal_points(features, per_camera[:, 2])
            maps = torch.stack([obj_maps[:, 0], goal_maps[:, 0]], dim=1).unflatten(0, (b, n))  # [B, N, 2, G, G]
            obj, goal = obj.reshape(b, -1), goal.reshape(b, -1)
            keypoints = torch.cat([self.object_head(obj),
                                   self.goal_head(torch.cat([obj, goal, text_emb[:, 2]], dim=1))], dim=1)
            points = torch.cat([obj, goal], dim=1)
            point_token = torch.cat([keypoints, self.point_readout(torch.cat([points, text.mean(dim=1)], dim=1))],
                                    dim=1)
        else:
            flat_text = text_emb.flatten(1).repeat_interleave(n, dim=0)  # [B*N, T*384], per camera
            points, _ = self.points(features, flat_text)  # [B*N, P, 2 + V]
            point_token = self.point_readout(torch.cat([points.reshape(b, -1), text.mean(dim=1)], dim=1))
        z = torch.cat([z[:, :-1], point_token[:, None]], dim=1)  # the last token: the feature points
        return (z, maps) if return_maps else z
