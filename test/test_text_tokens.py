"""System 2's text tokens: the instruction split into its object and goal phrases, embedded as
separate tokens with role embeddings, so "the red cube on the green pad" and "the green cube on the
red pad" reach System 2 as different inputs (a pooled sentence embedding cannot tell them apart)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
from vla_mpc.models.text import TextEncoder, instruction_phrases


class _BagOfWords(TextEncoder):
    """A stand-in encoder that, like a pooled sentence model, ignores word order: the sum of
    per-word vectors. Swapped roles give the same sentence vector."""

    def encode(self, text: str) -> np.ndarray:
        out = np.zeros(384, np.float32)
        for w in text.lower().split():
            out += np.random.default_rng(sum(map(ord, w)) * 7919 + len(w)).standard_normal(384).astype(np.float32)
        return out / max(float(np.linalg.norm(out)), 1e-6)


def test_instruction_phrases():
    assert instruction_phrases("put the red cube on the green pad") == (
        "put the red cube on the green pad", "red cube", "green pad")
    assert instruction_phrases("Slide the blue block to the left")[1:] == ("blue cube", "to the left")
    assert instruction_phrases("touch the orange cube")[1:] == ("orange cube", "reach")
    assert instruction_phrases("lift the red cube")[1:] == ("red cube", "pick up")
    assert instruction_phrases("do a little dance") == ("do a little dance",) * 3  # unparsed: the text in all three


def test_encode_instruction_shapes():
    enc = _BagOfWords()
    a = enc.encode_instruction("put the red cube on the green pad", 3)
    b = enc.encode_instruction("put the green cube on the red pad", 3)
    assert a.shape == (3, 384) and a.dtype == np.float32
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)  # the sentence vectors coincide ...
    assert not np.allclose(a[1], b[1])  # ... the object phrases do not
    assert enc.encode_instruction("reach the red cube", 1).shape == (1, 384)
    assert enc.encode_many(["reach the red cube"], tokens=3)["reach the red cube"].shape == (3, 384)
    with pytest.raises(ValueError, match="text tokens must be one of"):
        enc.encode_instruction("reach the red cube", 2)


def _policy(text_tokens: int) -> DualSystemPolicy:
    cfg = PolicyConfig(robot="synthetic", joint_names=("a", "b"), image_size=32, vision_width=8, d_model=32,
                       vlm_heads=2, latent_tokens=2, latent_dim=8, expert_width=32, expert_blocks=1, cond_dim=16,
                       text_tokens=text_tokens)
    stats = {"proprio": {"mean": [0.0] * 4, "std": [1.0] * 4}, "action_delta": {"mean": [0.0] * 2, "std": [0.1] * 2}}
    torch.manual_seed(0)
    return DualSystemPolicy(cfg, stats).eval()


def test_system2_tells_swapped_roles_apart_only_with_phrase_tokens():
    enc = _BagOfWords()
    img = torch.randint(0, 255, (1, 32, 32, 3), dtype=torch.uint8)
    texts = ["put the red cube on the green pad", "put the green cube on the red pad"]
    with torch.inference_mode():
        three = _policy(3)
        za, zb = (three.encode(img, torch.from_numpy(enc.encode_instruction(t, 3))[None]) for t in texts)
        assert (za - zb).abs().max() > 1e-3
        one = _policy(1)
        ya, yb = (one.encode(img, torch.from_numpy(enc.encode_instruction(t, 1))[None]) for t in texts)
        torch.testing.assert_close(ya, yb)  # the order-blind sentence vector alone cannot
        one.encode(img, torch.from_numpy(enc.encode(texts[0]))[None])  # (B, 384) still accepted with 1 token
    with pytest.raises(ValueError, match=r"text_emb must be \(B, 3, 384\)"):
        three.encode(img, torch.zeros(1, 384))
    with pytest.raises(ValueError, match="text_tokens must be one of"):
        _policy(2)
