"""Scene sets for System 2's keypoint head: rendering, loading, bad input, and their use in training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_mpc.training.scenes import FORMAT, SceneSet, generate, main


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    pytest.importorskip("mujoco")
    pytest.importorskip("robosuite")
    out = tmp_path_factory.mktemp("scenes")
    poses = np.tile(np.array([[0.3, 0.2, 0.0, -2.0, 0.0, 2.2, 0.8, 0.04]]), (4, 1))
    generate("panda", 6, out, kinds=("reach", "push", "pick_place"), seed_start=300, arm_poses=poses,
             arm_poses_source="test", image_size=32, render_size=64)
    return out


def test_generated_scenes_match_the_task_layouts(scene_dir) -> None:
    from vla_mpc.sim.tasks import sample_episode

    sc = SceneSet.load(scene_dir)
    assert len(sc) == 6 and sc.frames.shape == (6, 32, 32, 3) and sc.meta["format"] == FORMAT
    assert sc.frames.reshape(6, -1).std(axis=1).min() > 5  # rendered images, not blanks
    for i, kind in enumerate(["reach", "push", "pick_place"] * 2):
        ep = sample_episode("panda", kind, 300 + i)
        assert sc.instructions[i] == ep.instruction
        obj = ep.objects[ep.task.object_name]["position"]
        np.testing.assert_allclose(sc.keypoints[i, 0, :2], obj[:2], atol=1e-3)  # the named cube, where it lies
        if kind == "pick_place":
            pad = ep.objects[ep.task.destination]["position"]
            np.testing.assert_allclose(sc.keypoints[i, 1, :2], pad[:2], atol=1e-3)
        if kind == "push":
            d = np.asarray(ep.task.direction)[:2]
            np.testing.assert_allclose(sc.keypoints[i, 1, :2] - sc.keypoints[i, 0, :2], 0.08 * d, atol=1e-3)
    # different arm poses change the picture, not the keypoints
    assert not np.array_equal(sc.frames[0], sc.frames[3])


def test_bad_input(tmp_path, scene_dir, capsys) -> None:
    with pytest.raises(ValueError, match="training range"):
        generate("panda", 10, tmp_path / "x", seed_start=99_995)
    with pytest.raises(ValueError, match="kinds"):
        generate("panda", 1, tmp_path / "x", kinds=("dance",))
    with pytest.raises(FileNotFoundError, match="meta.json"):
        SceneSet.load(tmp_path / "none")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("frames.npy", "keypoints.npy", "instruction_index.npy"):
        (broken / f).write_bytes((scene_dir / f).read_bytes())
    meta = json.loads((scene_dir / "meta.json").read_text())
    (broken / "meta.json").write_text(json.dumps(dict(meta, image_size=48)))
    with pytest.raises(ValueError, match="frames.npy"):
        SceneSet.load(broken)
    (broken / "meta.json").write_text(json.dumps(dict(meta, instructions=[])))
    with pytest.raises(ValueError, match="instruction_index"):
        SceneSet.load(broken)
    assert main(["--count", "2", "--out", str(tmp_path / "y"), "--arm-poses", str(tmp_path / "nope")]) == 2
    assert "meta.json" in capsys.readouterr().err


def test_scene_frames_enter_only_the_keypoint_loss(tmp_path) -> None:
    """A policy batch with scene frames: the action loss is unchanged, the keypoint loss covers them."""
    import torch

    from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig
    from vla_mpc.training.policy import make_scene_batch

    s = 32
    out = tmp_path / "sc"
    out.mkdir()
    rng = np.random.default_rng(0)
    np.save(out / "frames.npy", rng.integers(0, 255, (10, s, s, 3), dtype=np.uint8))
    np.save(out / "keypoints.npy", rng.normal(size=(10, 2, 3)).astype(np.float32))
    np.save(out / "instruction_index.npy", np.arange(10, dtype=np.int32) % 2)
    (out / "meta.json").write_text(json.dumps({"format": FORMAT, "robot": "r", "image_size": s,
                                               "instructions": ["touch the red cube", "touch the blue cube"]}))
    sc = SceneSet.load(out)
    emb = {t: rng.normal(size=384).astype(np.float32) for t in sc.meta["instructions"]}
    batch = make_scene_batch([sc, sc], np.array([10, 10]), emb, rng, 6)
    assert batch["scene_images"].shape == (6, s, s, 3) and batch["scene_keypoints"].shape == (6, 2, 3)
    for img, e, kp in zip(batch["scene_images"].numpy(), batch["scene_text_emb"].numpy(),
                          batch["scene_keypoints"].numpy()):
        i = next(i for i in range(10) if np.array_equal(sc.frames[i], img))
        np.testing.assert_array_equal(kp, sc.keypoints[i])
        np.testing.assert_array_equal(e, emb[sc.instructions[i]])

    cfg = PolicyConfig(robot="r", joint_names=("a", "b"), image_size=s, vision_width=8, d_model=32, vlm_heads=2,
                       latent_tokens=2, latent_dim=8, chunk_size=4, expert_width=16, cond_dim=16,
                       keypoint_head=True, augment_shift=0)
    stats = {"proprio": {"mean": [0.0] * 4, "std": [1.0] * 4}, "action_delta": {"mean": [0.0] * 2, "std": [1.0] * 2},
             "keypoints": {"mean": [0.0] * 6, "std": [1.0] * 6}}
    policy = DualSystemPolicy(cfg, stats).eval()
    demo = {"images": torch.from_numpy(rng.integers(0, 255, (3, s, s, 3), dtype=np.uint8)),
            "text_emb": torch.randn(3, 384), "proprio": torch.randn(3, 4), "actions": torch.randn(3, 4, 2),
            "keypoints": torch.full((3, 2, 3), float("nan"))}
    torch.manual_seed(5)
    loss_demo, info_demo = policy.loss(demo)
    torch.manual_seed(5)
    loss_both, info_both = policy.loss(dict(demo, **batch))
    assert "keypoint_loss" not in info_demo  # the demo rows have no keypoints
    assert info_both["action_loss"] == pytest.approx(info_demo["loss"], rel=1e-5)
    with torch.no_grad():
        z = policy.encode(batch["scene_images"], batch["scene_text_emb"])
        expected = (policy.keypoint_head(z.flatten(1)) - batch["scene_keypoints"].flatten(1)).pow(2).mean()
    assert info_both["keypoint_loss"] == pytest.approx(float(expected), rel=1e-4)


def test_pose_sets_for_the_world_model(scene_dir, tmp_path) -> None:
    from types import SimpleNamespace

    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.training.world_model import load_pose_sets

    names = list(load_robot_spec("panda").joint_names)
    ds = SimpleNamespace(meta={"joint_names": names, "image_size": 32})
    frames, q = load_pose_sets([scene_dir, scene_dir], ds)
    assert frames.shape == (12, 32, 32, 3) and q.shape == (12, 8) and q.dtype == np.float32
    # the measured arm joints are the pose the scene was rendered in
    np.testing.assert_allclose(q[:, :7], np.tile([0.3, 0.2, 0.0, -2.0, 0.0, 2.2, 0.8], (12, 1)), atol=1e-3)
    assert load_pose_sets([], ds) is None
    with pytest.raises(ValueError, match="image size"):
        load_pose_sets([scene_dir], SimpleNamespace(meta={"joint_names": names, "image_size": 96}))
    old = tmp_path / "old"
    old.mkdir()
    for f in ("frames.npy", "keypoints.npy", "instruction_index.npy", "meta.json"):
        (old / f).write_bytes((scene_dir / f).read_bytes())
    with pytest.raises(ValueError, match="no joint_positions"):
        load_pose_sets([old], ds)
