"""Pixel targets of the role maps (``train policy --keypoint-pixel-weight``): the sim camera's
projection of the task keypoints lands on the objects in the rendered frames."""

from __future__ import annotations

import numpy as np
import pytest

from vla_mpc.sim.tasks import TASK_KINDS

pytest.importorskip("mujoco")


def test_projected_keypoints_land_on_their_objects_in_rendered_frames():
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.models.vision import resize_frame
    from vla_mpc.sim.sim_robot import SimRobot
    from vla_mpc.sim.tasks import sample_episode, task_keypoints
    from vla_mpc.training.policy import PixelProjector

    spec = load_robot_spec("panda")
    sim = SimRobot(spec, cameras=("front",), image_size=(224, 224))
    size = 96
    project = PixelProjector("panda", "front", size)
    try:
        for kind, seed in (("pick_place", 100000), ("pick_place", 100001), ("push", 100002)):
            ep = sample_episode("panda", kind, seed)
            sim.reset(episode=ep)
            frame = resize_frame(sim.render("front"), size).astype(float)
            poses = sim.object_poses()
            uv = project(task_keypoints(ep.task, poses)[None], np.array([TASK_KINDS.index(kind)]))[0].numpy()
            names = [ep.task.object_name] + ([ep.task.destination] if kind == "pick_place" else [])
            rgba = {k: o["rgba"] for k, o in ep.objects.items()}
            for k, name in enumerate(names):
                x, y = np.round((uv[k] + 1.0) / 2.0 * size - 0.5).astype(int)
                pixel = frame[y, x] / 255.0
                nearest = min(rgba, key=lambda n: np.linalg.norm(np.asarray(rgba[n][:3]) - pixel))
                assert nearest.split("_")[0] == name.split("_")[0], (ep.instruction, name, nearest, pixel)
            if kind == "push":
                assert np.isnan(uv[1]).all() and np.isfinite(uv[0]).all()  # a push goal marks nothing
        behind = project(np.array([[[3.0, 0.0, 0.5], [0.4, 5.0, 0.0]]]), None).numpy()
        assert np.isnan(behind).all()  # behind the camera; outside the frame
    finally:
        sim.close()
    with pytest.raises(ValueError, match="fixed sim camera"):
        PixelProjector("panda", "wrist", size)
