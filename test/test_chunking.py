"""ChunkStreamer: interpolation, chunk joining (blend vs naive switching), hold logic, threads."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vla_mpc.core.chunking import (
    ChunkStreamer,
    ChunkStreamerConfig,
    Freshness,
    HoldReason,
    blend_weight,
    finite_difference,
    hold_reason,
    max_jerk,
    sample_stream,
)

DT = 0.05  # s per chunk step
CTRL_DT = 0.01  # s per control tick (100 Hz)


def _linear_chunk(p0: np.ndarray, v: np.ndarray, steps: int, dt: float = DT) -> np.ndarray:
    """(steps, n): p0 + v * k * dt."""
    return p0[None, :] + v[None, :] * dt * np.arange(steps)[:, None]


def _stream_with_switch(blend_steps: int, mismatch: float, interpolation: str = "linear"):
    """Stream chunk A, then at t_switch submit chunk B (same velocity, offset by ``mismatch``)."""
    v = np.array([0.5, -0.3])
    a = _linear_chunk(np.zeros(2), v, 20)
    t_switch = 0.30
    b = _linear_chunk(v * t_switch + mismatch, v, 20)  # B starts at t_switch, offset by mismatch
    s = ChunkStreamer(ChunkStreamerConfig(2, DT, blend_steps, interpolation))
    s.submit(a, 0.0)
    times = np.arange(0.0, 0.8, CTRL_DT)
    out = []
    for t in times:
        if abs(t - t_switch) < 1e-9:
            s.submit(b, t_switch)
        out.append(s.sample(t))
    return times, np.array(out), v, int(round(t_switch / CTRL_DT))


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "pchip"])
def test_interpolation_exact_on_linear_chunks_and_holds_outside(interpolation):
    rng = np.random.default_rng(0)
    p0, v = rng.normal(size=3), rng.normal(size=3)
    chunk = _linear_chunk(p0, v, 10)
    s = ChunkStreamer(ChunkStreamerConfig(3, DT, interpolation=interpolation))
    t_start = 2.0
    s.submit(chunk, t_start)
    t = t_start + rng.uniform(0.0, 9 * DT, size=50)
    np.testing.assert_allclose(s.sample_many(t), p0 + v * (t - t_start)[:, None], atol=1e-12)
    # never extrapolates: before the first step hold chunk[0], past the end hold chunk[-1]
    np.testing.assert_allclose(s.sample(t_start - 1.0), chunk[0], atol=0)
    np.testing.assert_allclose(s.sample(t_start + 9 * DT + 0.3), chunk[-1], atol=0)
    np.testing.assert_allclose(s.sample(t_start + 100.0), chunk[-1], atol=0)


def test_cubic_interpolation_exact_on_cubic_interior():
    """Catmull-Rom on uniform knots reproduces quadratics exactly between interior knots."""
    tk = DT * np.arange(12)
    chunk = (1.0 + 2.0 * tk - 3.0 * tk**2)[:, None]
    s = ChunkStreamer(ChunkStreamerConfig(1, DT, interpolation="cubic"))
    s.submit(chunk, 0.0)
    t = np.linspace(DT, 10 * DT, 37)
    np.testing.assert_allclose(s.sample_many(t)[:, 0], 1.0 + 2.0 * t - 3.0 * t**2, atol=1e-12)


def test_pchip_matches_scipy_and_stays_between_knots_where_catmull_rom_overshoots():
    """An open gripper held at its limit (0.04 m) after closing: the monotone cubic never leaves the
    knots' range, Catmull-Rom passes the limit (the overshoot the safety monitor counts as cost)."""
    from scipy.interpolate import PchipInterpolator

    values = np.array([0.0, 0.02, 0.04, 0.04, 0.04, 0.03, 0.035, 0.01])[:, None]
    tk = DT * np.arange(len(values))
    t = np.linspace(0.0, tk[-1], 701)
    out = {}
    for interpolation in ("cubic", "pchip"):
        s = ChunkStreamer(ChunkStreamerConfig(1, DT, interpolation=interpolation))
        s.submit(values, 0.0)
        out[interpolation] = s.sample_many(t)[:, 0]
    np.testing.assert_allclose(out["pchip"], PchipInterpolator(tk, values[:, 0])(t), atol=1e-12)
    assert out["pchip"].max() <= 0.04 + 1e-15 and out["pchip"].min() >= 0.0
    assert out["cubic"].max() > 0.0401  # Catmull-Rom overshoots the held limit
    # Between every pair of knots the monotone cubic stays inside them.
    for a, b, lo_t, hi_t in zip(values[:-1, 0], values[1:, 0], tk[:-1], tk[1:]):
        seg = out["pchip"][(t >= lo_t) & (t <= hi_t)]
        assert seg.min() >= min(a, b) - 1e-15 and seg.max() <= max(a, b) + 1e-15


def test_pchip_keeps_velocity_continuous_at_knots_where_linear_steps_it():
    """Noisy chunk steps: linear interpolation changes the velocity at each knot within one control
    period (an acceleration spike of dv / CTRL_DT), the monotone cubic does not."""
    rng = np.random.default_rng(3)
    values = np.cumsum(rng.normal(0.01, 0.01, size=(16, 2)), axis=0)
    t = np.arange(0.0, 15 * DT, CTRL_DT / 4)
    accel = {}
    for interpolation in ("linear", "pchip"):
        s = ChunkStreamer(ChunkStreamerConfig(2, DT, interpolation=interpolation))
        s.submit(values, 0.0)
        q = s.sample_many(t)
        accel[interpolation] = np.abs(np.diff(q, 2, axis=0)).max() / (CTRL_DT / 4) ** 2
    assert accel["pchip"] < 0.25 * accel["linear"], accel


def test_rtc_prefix_spans_the_remaining_overlap():
    s = ChunkStreamer(ChunkStreamerConfig(1, DT))
    assert s.rtc_prefix(0.0, 16) is None  # nothing executing
    chunk = np.arange(16, dtype=float)[:, None]
    s.submit(chunk, 0.0)
    # From 0.3 s the executing chunk has steps 6..15 left: 10 steps, the same values.
    np.testing.assert_allclose(s.rtc_prefix(0.3, 16), chunk[6:], atol=1e-12)
    assert s.rtc_prefix(0.3, 4).shape == (4, 1)  # at most max_steps
    assert s.rtc_prefix(5.0, 16).shape == (2, 1)  # past the end: min_steps of the held last step
    s.hold(np.array([7.0]), 1.0)
    np.testing.assert_allclose(s.rtc_prefix(1.1, 16), [[7.0], [7.0]])  # holding: the held target
    with pytest.raises(ValueError):
        s.rtc_prefix(0.0, 1, min_steps=2)


@given(
    p0=st.lists(st.floats(-3, 3), min_size=2, max_size=2),
    v=st.lists(st.floats(-2, 2), min_size=2, max_size=2),
    t_start=st.floats(0.0, 100.0),
    u=st.floats(0.0, 1.0),
)
@settings(max_examples=50, deadline=None)
def test_interpolation_property(p0, v, t_start, u):
    p0, v = np.array(p0), np.array(v)
    s = ChunkStreamer(ChunkStreamerConfig(2, DT))
    s.submit(_linear_chunk(p0, v, 8), t_start)
    t = t_start + u * 7 * DT
    np.testing.assert_allclose(s.sample(t), p0 + v * (t - t_start), atol=1e-9)


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "pchip"])
def test_blending_is_continuous_at_the_boundary(interpolation):
    mismatch = 0.05  # rad between what chunk A and chunk B predict for the same time
    blend_steps = 4
    _, out, v, k = _stream_with_switch(blend_steps, mismatch, interpolation)
    steps = np.abs(np.diff(out, axis=0))
    velocity_step = np.abs(v) * CTRL_DT
    # At the switch: no larger step than the executing velocity implies (no jump).
    assert np.all(steps[k - 1:k + 1] <= velocity_step * 1.05 + 1e-12), steps[k - 1:k + 1]
    # Over the whole overlap: velocity step plus the cross-fade's share of the mismatch,
    # max |w'| = 1.875 (quintic) spread over blend_steps * DT.
    bound = velocity_step + 1.875 * mismatch * CTRL_DT / (blend_steps * DT)
    assert np.all(steps <= bound * 1.05 + 1e-12), (steps.max(axis=0), bound)
    # It ends on chunk B.
    np.testing.assert_allclose(out[-1], v * 0.79 + mismatch, atol=1e-12)
    # Naive switching jumps by the mismatch.
    _, naive, _, _ = _stream_with_switch(0, mismatch, interpolation)
    assert np.abs(np.diff(naive, axis=0))[k - 1].max() >= mismatch


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "pchip"])
def test_blending_has_lower_jerk_than_naive_switching(interpolation):
    _, blended, _, _ = _stream_with_switch(4, 0.05, interpolation)
    _, naive, _, _ = _stream_with_switch(0, 0.05, interpolation)
    j_blend, j_naive = max_jerk(blended, CTRL_DT), max_jerk(naive, CTRL_DT)
    assert j_blend < 0.1 * j_naive, (j_blend, j_naive)
    # no mismatch -> joining changes nothing: the stream is the same straight line
    _, same, v, _ = _stream_with_switch(4, 0.0, interpolation)
    np.testing.assert_allclose(same, np.arange(0.0, 0.8, CTRL_DT)[:, None] * v, atol=1e-12)


def test_chunk_arriving_late_drops_its_past_steps_without_a_jump():
    """Inference delay: chunk B's t_start is in the past; the streamed part is never rewritten."""
    s = ChunkStreamer(ChunkStreamerConfig(1, DT, blend_steps=3))
    s.submit(np.zeros((20, 1)), 0.0)
    out = [s.sample(t) for t in np.arange(0.0, 0.5, CTRL_DT)]
    s.submit(np.ones((20, 1)), 0.2)  # predicted from an observation at 0.2 s, arrives at ~0.5 s
    out += [s.sample(t) for t in np.arange(0.5, 1.2, CTRL_DT)]
    x = np.array(out)[:, 0]
    assert np.all(x[:50] == 0.0)
    # smooth start: first step w(0.01 / 0.15) = 0.0027 of the unit mismatch (naive: 1.0)
    assert abs(x[50] - x[49]) < 0.005
    np.testing.assert_allclose(x[-1], 1.0)
    assert np.all(np.diff(x) >= -1e-15)  # monotone cross-fade, no overshoot


def test_hold_streams_a_constant_until_the_next_submit():
    s = ChunkStreamer(ChunkStreamerConfig(2, DT))
    s.submit(_linear_chunk(np.zeros(2), np.ones(2), 10), 0.0)
    target = np.array([0.3, -0.2])
    s.hold(target, 0.1)
    assert s.holding
    np.testing.assert_array_equal(sample_stream(s, np.arange(0.1, 0.6, CTRL_DT)), np.tile(target, (50, 1)))
    s.submit(_linear_chunk(target, np.ones(2), 10), 0.6)
    assert not s.holding
    np.testing.assert_allclose(s.sample(0.6), target)  # leaves the hold without a jump


def test_hold_reasons():
    f = Freshness(max_latent_age_s=1.0, max_state_age_s=0.1, max_image_age_s=0.5, require_camera=True)
    now = 100.0
    assert hold_reason(f, now, 99.5, 99.95, 99.8) is None
    assert hold_reason(f, now, 98.9, 99.95, 99.8) is HoldReason.STALE_LATENT
    assert hold_reason(f, now, None, 99.95, 99.8) is HoldReason.NO_LATENT
    assert hold_reason(f, now, 99.5, 99.85, 99.8) is HoldReason.STALE_STATE
    assert hold_reason(f, now, 99.5, None, 99.8) is HoldReason.NO_STATE
    assert hold_reason(f, now, 99.5, 99.95, None) is HoldReason.NO_CAMERA
    assert hold_reason(f, now, 99.5, 99.95, 99.4) is HoldReason.STALE_CAMERA
    no_cam = Freshness(1.0, 0.1, 0.5, require_camera=False)
    assert hold_reason(no_cam, now, 99.5, 99.95, None) is None


def test_stale_latent_means_hold_in_a_control_loop():
    """A control loop built like the policy node's: stale z -> hold the last commanded target."""
    f = Freshness(max_latent_age_s=0.3, max_state_age_s=0.1, require_camera=False)
    s = ChunkStreamer(ChunkStreamerConfig(1, DT))
    s.submit(_linear_chunk(np.zeros(1), np.ones(1), 40), 0.0)  # keeps moving for 2 s
    latent_time, last = 0.0, None
    out = []
    for t in np.arange(0.0, 1.0, CTRL_DT):
        reason = hold_reason(f, t, latent_time, t, None)
        if reason is not None and not s.holding:
            s.hold(last, t)
        last = s.sample(t)
        out.append(last[0])
    out = np.array(out)
    k = int(round(0.3 / CTRL_DT)) + 1  # first tick with an age above 0.3 s
    assert np.all(np.diff(out[:k]) > 0)
    assert np.all(out[k:] == out[k - 1])


def test_returns_copies_and_copies_inputs():
    s = ChunkStreamer(ChunkStreamerConfig(2, DT))
    chunk = np.zeros((5, 2))
    s.submit(chunk, 0.0)
    chunk[:] = 7.0
    x = s.sample(0.1)
    x[:] = 5.0
    np.testing.assert_array_equal(s.sample(0.1), [0.0, 0.0])
    c, t0 = s.last_chunk()
    c[:] = 3.0
    np.testing.assert_array_equal(s.last_chunk()[0], np.zeros((5, 2)))
    np.testing.assert_array_equal(s.sample(0.0, default=np.ones(2)), [0.0, 0.0])
    with pytest.raises(LookupError):
        ChunkStreamer(ChunkStreamerConfig(2, DT)).sample(0.0)


def test_committed_prefix_is_the_executing_trajectory():
    s = ChunkStreamer(ChunkStreamerConfig(1, DT))
    s.submit(_linear_chunk(np.zeros(1), np.ones(1), 10), 0.0)
    np.testing.assert_allclose(s.committed(0.1, 3)[:, 0], [0.1, 0.15, 0.2])


def test_concurrent_submit_and_sample():
    """Two producers and one consumer: no errors, every sample finite and inside the convex hull
    of the submitted values (linear interpolation and cross-fades are convex combinations)."""
    s = ChunkStreamer(ChunkStreamerConfig(3, 0.002, blend_steps=3))
    errors: list[BaseException] = []
    stop = threading.Event()
    clock = [0.0]

    def producer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                s.submit(rng.uniform(-1.0, 1.0, size=(8, 3)), clock[0] + rng.uniform(-0.01, 0.01))
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(2)]
    s.submit(np.zeros((8, 3)), 0.0)
    for th in threads:
        th.start()
    samples = []
    try:
        for i in range(3000):
            clock[0] = i * 1e-3
            samples.append(s.sample(clock[0]))
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=5.0)
    x = np.array(samples)
    assert not errors, errors
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 1.0 + 1e-12)


def test_finite_difference_and_jerk_oracle():
    t = np.arange(0.0, 1.0, CTRL_DT)
    x = (2.0 * t**3)[:, None]  # jerk 12
    np.testing.assert_allclose(finite_difference(x, CTRL_DT, 3), 12.0, rtol=1e-6)
    assert max_jerk(x, CTRL_DT) == pytest.approx(12.0, rel=1e-6)
    np.testing.assert_allclose(finite_difference(x, CTRL_DT, 1)[:, 0], np.diff(x[:, 0]) / CTRL_DT)
    with pytest.raises(ValueError, match="samples"):
        max_jerk(np.zeros((3, 1)), CTRL_DT)


def test_blend_weight_ends_and_smoothness():
    s = np.linspace(0, 1, 1001)
    w = blend_weight(s)
    assert w[0] == 0.0 and w[-1] == 1.0 and np.all(np.diff(w) >= 0)
    dw = np.gradient(w, s)
    assert abs(dw[0]) < 1e-2 and abs(dw[-1]) < 1e-2 and dw.max() == pytest.approx(1.875, rel=1e-3)
    with pytest.raises(ValueError, match="'cosine'"):
        blend_weight(0.5, "cosine")


@pytest.mark.parametrize(
    "kwargs, bad",
    [
        ({"action_dim": 0, "dt": DT}, "action_dim"),
        ({"action_dim": 2, "dt": 0.0}, "dt"),
        ({"action_dim": 2, "dt": DT, "blend_steps": -1}, "blend_steps"),
        ({"action_dim": 2, "dt": DT, "interpolation": "spline"}, "'spline'"),
        ({"action_dim": 2, "dt": DT, "blend_weight": "cos"}, "'cos'"),
    ],
)
def test_config_validation(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        ChunkStreamerConfig(**kwargs)


def test_submit_and_hold_validation():
    s = ChunkStreamer(ChunkStreamerConfig(2, DT))
    with pytest.raises(ValueError, match=r"\(chunk_size >= 1, 2\)"):
        s.submit(np.zeros((4, 3)), 0.0)
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="step 2, joint 1"):
        s.submit(bad, 0.0)
    with pytest.raises(ValueError, match="hold target"):
        s.hold(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="max_state_age_s"):
        Freshness(max_state_age_s=0.0)


def test_core_modules_import_without_ros():
    code = (
        "import sys; sys.modules['rclpy'] = None; sys.modules['sensor_msgs'] = None; "
        "import vla_mpc.core.chunking, vla_mpc.models.scripted"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
