"""The Hugging Face VLM adapter on a tiny randomly initialised PaliGemma built in the test and saved
to ``tmp_path`` (no download: the adapter loads with ``local_files_only=True``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from vla_mpc.models.hf_adapter import HFSystem2, LatentProjection  # noqa: E402

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "<image>", "pick", "up", "the", "red", "blue", "cube", "push", "left"]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    """A 2-layer PaliGemma (SigLIP 32 px / Gemma width 32) + a word-level tokenizer, saved locally."""
    import torch
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              PreTrainedTokenizerFast, SiglipImageProcessor)

    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    ip = SiglipImageProcessor(size={"height": 32, "width": 32})
    ip.image_seq_length = 16  # (32 / 8)^2 patches
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    cfg = PaliGemmaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=32),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, vocab_size=len(WORDS) + 1),
        image_token_index=WORDS.index("<image>"), vocab_size=len(WORDS) + 1, projection_dim=32,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_paligemma")
    PaliGemmaForConditionalGeneration(cfg).save_pretrained(path)
    proc.save_pretrained(path)
    return str(path)


def test_adapter_maps_image_and_instruction_to_latent(tiny_vlm):
    s2 = HFSystem2(tiny_vlm, latent_tokens=4, latent_dim=16, cameras=("front",), seed=3)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    z = s2.infer({"front": img}, "pick up the red cube")
    assert z.shape == (4, 16) and z.dtype == np.float32 and np.all(np.isfinite(z))
    assert s2.latent_shape == (4, 16)
    # Deterministic for the same input; sensitive to the instruction and to the pixels.
    np.testing.assert_array_equal(z, s2.infer({"front": img}, "pick up the red cube"))
    assert np.max(np.abs(z - s2.infer({"front": img}, "push the blue cube left"))) > 1e-4
    assert np.max(np.abs(z - s2.infer({"front": 255 - img}, "pick up the red cube"))) > 1e-4
    # Same seed -> same read-out; another seed -> another one.
    np.testing.assert_allclose(HFSystem2(tiny_vlm, 4, 16, seed=3).infer({"front": img}, "pick up the red cube"), z,
                               atol=1e-6)
    assert np.max(np.abs(HFSystem2(tiny_vlm, 4, 16, seed=4).infer({"front": img}, "pick up the red cube") - z)) > 1e-4
    with pytest.raises(ValueError, match="wrist"):
        HFSystem2(tiny_vlm, 4, 16, cameras=("front", "wrist")).infer({"front": img}, "pick up the red cube")


def test_projection_weights_round_trip_through_safetensors(tiny_vlm, tmp_path):
    a = HFSystem2(tiny_vlm, 4, 16, seed=1)
    f = tmp_path / "projection.safetensors"
    a.projection.save(f)
    b = HFSystem2(tiny_vlm, 4, 16, seed=2, projection=f)
    img = np.full((32, 32, 3), 100, np.uint8)
    np.testing.assert_allclose(a.infer({"c": img}, "pick up the cube"), b.infer({"c": img}, "pick up the cube"), atol=1e-6)
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="projection.safetensors"):
        HFSystem2(tiny_vlm, 4, 16, projection=f)
    with pytest.raises(ValueError, match="projection"):
        LatentProjection(32, 8, 16).load(tmp_path / "absent.safetensors")


def test_missing_or_empty_model_directory_fails_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        HFSystem2(tmp_path / "does_not_exist")
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty_model"):
        HFSystem2(empty)
