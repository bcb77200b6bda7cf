"""System 2 over a user's Hugging Face ``transformers`` VLM loaded from a LOCAL directory.

For a workstation with a real VLM (SmolVLM / Idefics3, PaliGemma class): the model and its
processor are loaded with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1``), so nothing is ever
downloaded; a path without a model fails at load with the path in the message. One observation
(images + instruction) goes through the processor and the model with ``output_hidden_states``;
the chosen layer's hidden states (1, L, hidden) are mapped to ``z`` (latent_tokens, latent_dim) by
:class:`LatentProjection`: ``latent_tokens`` learned queries cross-attending over the layer-normed,
projected hidden states (a Perceiver-style read-out, Jaegle et al. 2021; GR00T N1 likewise feeds
a VLM's middle-layer hidden states to its action expert).

The projection is the only part trained for the robot (the VLM stays frozen); its weights live in a
safetensors file (:meth:`LatentProjection.save` / ``projection=`` path). Without one it is
initialised from ``seed``: ``z`` is then a fixed random read-out of the VLM's features, usable to
exercise the graph, and a System 1 must be trained on the same read-out. No rclpy here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["LatentProjection", "HFSystem2"]


class LatentProjection(nn.Module):
    """Hidden states (B, L, hidden) -> z (B, latent_tokens, latent_dim).

    Args:
        hidden_size: the VLM's hidden width.
        latent_tokens / latent_dim: shape of ``z``.
        width: attention width; heads: attention heads (must divide ``width``).
    """

    def __init__(self, hidden_size: int, latent_tokens: int, latent_dim: int, width: int = 128, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.proj = nn.Linear(hidden_size, width)
        self.queries = nn.Parameter(torch.randn(latent_tokens, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out = nn.Linear(width, latent_dim)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask``: (B, L) attention mask of the VLM's inputs (1 = token), or None."""
        kv = self.proj(self.norm(hidden.float()))  # [B, L, W]
        q = self.queries.expand(hidden.shape[0], -1, -1)  # [B, Tz, W]
        pad = None if mask is None else mask == 0
        h, _ = self.attn(q, kv, kv, key_padding_mask=pad, need_weights=False)
        return self.out(h)

    def save(self, path: Path | str) -> None:
        """Write the weights as safetensors (no pickle)."""
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: Path | str) -> None:
        """Load weights written by :meth:`save`.

        Raises:
            ValueError: missing/corrupt file or tensors that do not fit, naming the file.
        """
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: projection weights missing")
        try:
            tensors = load_file(str(path))
            self.load_state_dict(tensors, strict=True)
        except Exception as exc:  # noqa: BLE001 - safetensors and torch raise several types
            raise ValueError(f"{path}: projection weights do not load: {exc}") from exc


class HFSystem2:
    """System 2 backend over a local ``transformers`` vision-language model.

    Args:
        model_path: local directory with the model (``config.json``, weights) and its processor.
        latent_tokens / latent_dim: shape of ``z``.
        cameras: camera names whose frames are passed (in this order); None = every frame given,
            sorted by name.
        hidden_layer: which hidden state to read (index into ``hidden_states``; -1 = last).
        projection: safetensors file of :class:`LatentProjection` weights, or None (seeded init).
        seed: projection initialisation seed.
        prompt: text template; ``{instruction}`` is replaced, and the processor's image token is
            prepended once per image when the template has none (PaliGemma / Idefics3 style).
        dtype: torch dtype of the VLM (``torch.float32``; ``torch.bfloat16`` halves CPU time on
            AVX-512 bf16 machines).

    Raises:
        FileNotFoundError: ``model_path`` is not a directory.
        ValueError: the directory holds no loadable model / processor (message names the path).
    """

    def __init__(
        self,
        model_path: Path | str,
        latent_tokens: int = 8,
        latent_dim: int = 64,
        cameras: tuple[str, ...] | None = None,
        hidden_layer: int = -1,
        projection: Path | str | None = None,
        seed: int = 0,
        prompt: str = "{instruction}",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"VLM directory {path} does not exist (the adapter never downloads)")
        from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor

        try:
            self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError
            raise ValueError(f"{path}: no loadable processor ({type(exc).__name__}: {exc})") from exc
        errors = []
        self.model = None
        for auto in (AutoModelForImageTextToText, AutoModel):
            try:
                self.model = auto.from_pretrained(str(path), local_files_only=True, dtype=dtype)
                break
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{auto.__name__}: {type(exc).__name__}: {exc}")
        if self.model is None:
            raise ValueError(f"{path}: no loadable model ({'; '.join(errors)})")
        self.model.eval().requires_grad_(False)
        cfg = self.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        hidden = int(text_cfg.hidden_size)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(seed)
            self.projection = LatentProjection(hidden, latent_tokens, latent_dim).eval()
        if projection is not None:
            self.projection.load(projection)
        self.latent_shape = (latent_tokens, latent_dim)
        self.cameras = tuple(cameras) if cameras is not None else None
        self.hidden_layer = int(hidden_layer)
        self.prompt = prompt
        self.path = path
        self.status = "not run"
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.status = "not run"

    def _text(self, instruction: str, n_images: int) -> str:
        text = self.prompt.format(instruction=instruction)
        token = getattr(self.processor, "image_token", None)
        if token and token not in text:
            text = token * n_images + text
        return text

    def infer(
        self,
        images: Mapping[str, np.ndarray],
        instruction: str,
        objects: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``z`` (latent_tokens, latent_dim) float32 from (H, W, 3) uint8 RGB frames + instruction.

        Raises:
            ValueError: a configured camera is missing, or no image at all.
        """
        names = self.cameras if self.cameras is not None else tuple(sorted(images))
        missing = [c for c in names if c not in images]
        if missing or not names:
            raise ValueError(f"HF System 2 needs camera(s) {list(missing) or '(any)'} (has {sorted(images)})")
        frames = [np.asarray(images[c], dtype=np.uint8) for c in names]
        inputs = self.processor(text=self._text(instruction, len(frames)), images=frames, return_tensors="pt")
        inputs.pop("labels", None)
        with self._lock, torch.inference_mode():
            out = self.model(**inputs, output_hidden_states=True, return_dict=True)
            states = getattr(out, "hidden_states", None)
            if states is None:  # e.g. a bare encoder output
                states = (out.last_hidden_state,)
            z = self.projection(states[self.hidden_layer], inputs.get("attention_mask"))[0]
        self.status = "ok"
        return z.float().numpy().astype(np.float32, copy=True)
