"""Task suite (ROS-free, no MuJoCo): instruction parsing, success predicates, seeded episodes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vla_mpc.sim.tasks import (
    DIRECTION_PHRASES,
    DIRECTIONS,
    EVAL_SEED_OFFSET,
    PALETTE,
    PUSH_TRAVEL,
    TASK_KINDS,
    EpisodeSpec,
    Task,
    bind_origin,
    instruction_templates,
    is_success,
    parse_instruction,
    sample_episode,
    scene_layout,
)

CUBE = np.full(3, 0.04)
PAD = np.array([0.09, 0.09, 0.002])
IDENTITY = np.array([0.0, 0.0, 0.0, 1.0])


def _obj(pos, size=CUBE):
    return (np.asarray(pos, float), IDENTITY, np.ones(4), np.asarray(size, float))


@pytest.mark.parametrize("text, kind, obj, dest, direction", [
    ("reach the red cube", "reach", "red_cube", None, None),
    ("Go to the blue block.", "reach", "blue_cube", None, None),
    ("pick up the green cube", "pick", "green_cube", None, None),
    ("grab the yellow box", "pick", "yellow_cube", None, None),
    ("push the blue cube to the left", "push", "blue_cube", None, "left"),
    ("slide the red cube to the right", "push", "red_cube", None, "right"),
    ("nudge the orange cube forward", "push", "orange_cube", None, "forward"),
    ("push the purple cube back.", "push", "purple_cube", None, "back"),
    ("put the red cube on the green pad", "pick_place", "red_cube", "green_pad", None),
    ("move the red cube onto the blue mat", "pick_place", "red_cube", "blue_pad", None),
    ("place the green cube on the red cube", "pick_place", "green_cube", "red_cube", None),
])
def test_parse_forms(text, kind, obj, dest, direction) -> None:
    t = parse_instruction(text)
    assert (t.kind, t.object_name, t.destination, t.direction_name) == (kind, obj, dest, direction)
    assert t.instruction == text
    if direction is not None:
        np.testing.assert_array_equal(t.direction, DIRECTIONS[direction])
        assert not t.direction.flags.writeable


def test_parse_against_scene_names_and_errors() -> None:
    names = ["red_cube", "green_cube", "green_pad"]
    assert parse_instruction("put the red block on the green pad", names).destination == "green_pad"
    with pytest.raises(ValueError, match="names none of the objects.*purple_cube"):
        parse_instruction("pick up the purple cube", names)
    with pytest.raises(ValueError, match="direction"):
        parse_instruction("push the red cube", names)
    with pytest.raises(ValueError, match="no verb"):
        parse_instruction("the red cube please", names)
    with pytest.raises(ValueError, match="pick up the <colour> cube"):
        parse_instruction("dance")
    # distinct asks get distinct ids, the same ask in other words the same id
    ids = {parse_instruction(s).task_id for s in ("push the red cube to the left", "push the red cube to the right",
                                                   "pick up the red cube", "reach the red cube")}
    assert len(ids) == 4
    assert parse_instruction("lift the red cube").task_id == parse_instruction("pick up the red block").task_id


def test_task_validation_and_equality() -> None:
    with pytest.raises(ValueError, match="kind"):
        Task("fly", "red_cube", "fly")
    with pytest.raises(ValueError, match="direction"):
        Task("push", "red_cube", "push the red cube")
    with pytest.raises(ValueError, match="destination"):
        Task("pick_place", "red_cube", "put the red cube")
    a = parse_instruction("push the red cube to the left")
    assert a == parse_instruction("push the red cube to the left") and hash(a) == hash(parse_instruction("push the red cube to the left"))
    assert a != bind_origin(a, {"red_cube": _obj([0.5, 0.0, 0.02])})


def test_push_predicate_oracle() -> None:
    task = parse_instruction("push the blue cube to the left")
    start = np.array([0.5, 0.0, 0.02])
    with pytest.raises(ValueError, match="origin"):
        is_success(task, {"blue_cube": _obj(start)}, [[0, 0, 1.0]], 0.0)
    task = bind_origin(task, {"blue_cube": _obj(start)})
    np.testing.assert_array_equal(task.origin, start)
    ok = lambda p: is_success(task, {"blue_cube": _obj(p)}, [[0.0, 0.0, 1.0]], 0.0)  # noqa: E731
    assert ok(start + [0.0, 0.09, 0.0])            # 9 cm to the left (+y)
    assert ok(start + [0.03, 0.09, 0.0])           # with 3 cm drift
    assert not ok(start + [0.0, 0.06, 0.0])        # not far enough
    assert not ok(start + [0.0, -0.12, 0.0])       # the wrong way
    assert not ok(start + [0.07, 0.09, 0.0])       # drifted 7 cm sideways
    assert not ok(start + [0.0, 0.09, 0.05])       # lifted, not pushed
    assert not ok(start)


def test_pick_place_predicate_oracle() -> None:
    task = parse_instruction("put the red cube on the green pad")
    pad = np.array([0.5, 0.1, 0.001])
    top = pad[2] + PAD[2] / 2
    ok = lambda p: is_success(task, {"red_cube": _obj(p), "green_pad": _obj(pad, PAD)}, [[0, 0, 1.0]], 0.0)  # noqa: E731
    assert ok([0.5, 0.1, top + 0.02])               # resting on the pad
    assert ok([0.53, 0.07, top + 0.02])             # off-centre, still over it
    assert not ok([0.56, 0.1, top + 0.02])          # centre beside the pad
    assert not ok([0.5, 0.1, top + 0.05])           # hovering 3 cm above
    assert not ok([0.3, 0.1, 0.02])                 # on the table elsewhere
    with pytest.raises(KeyError, match="green_pad"):
        is_success(task, {"red_cube": _obj(pad)}, [[0, 0, 1.0]], 0.0)
    stack = parse_instruction("put the red cube on the blue cube")
    objs = {"red_cube": _obj([0.5, 0.0, 0.06]), "blue_cube": _obj([0.51, 0.0, 0.02])}
    assert is_success(stack, objs, [[0, 0, 1.0]], 0.0)


def test_reach_and_pick_predicates() -> None:
    objs = {"blue_cube": _obj([0.5, 0.0, 0.02])}
    task = parse_instruction("reach the blue cube")
    assert is_success(task, objs, [[0.5, 0.01, 0.06]], 0.0)
    assert not is_success(task, objs, [[0.5, 0.05, 0.06]], 0.0)
    pick = parse_instruction("pick up the blue cube")
    assert is_success(pick, {"blue_cube": _obj([0.5, 0.0, 0.1])}, [[0.5, 0.0, 0.1]], 0.0)
    assert not is_success(pick, {"blue_cube": _obj([0.5, 0.0, 0.1])}, [[0.5, 0.1, 0.1]], 0.0)


def test_templates_cover_every_kind_and_parse_back() -> None:
    for kind in TASK_KINDS:
        for template in instruction_templates(kind):
            for direction in DIRECTION_PHRASES:
                text = template.format(object="red cube", destination="blue pad",
                                       direction=DIRECTION_PHRASES[direction])
                t = parse_instruction(text)
                assert t.kind == kind and t.object_name == "red_cube", text
                if kind == "push":
                    assert t.direction_name == direction, text
                if kind == "pick_place":
                    assert t.destination == "blue_pad", text
    with pytest.raises(ValueError, match="kind"):
        instruction_templates("fly")


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_sample_episode_is_deterministic_and_well_formed(kind: str) -> None:
    lay = scene_layout("panda")
    specs = [sample_episode("panda", kind, s) for s in range(40)]
    assert sample_episode("panda", kind, 3) == specs[3]
    assert sample_episode("panda", kind, EVAL_SEED_OFFSET) != specs[0]
    assert len({s.instruction for s in specs}) > 5
    colours = set()
    for spec in specs:
        assert isinstance(spec, EpisodeSpec) and (spec.robot, spec.kind) == ("panda", kind)
        cubes = {k: v for k, v in spec.objects.items() if v["type"] == "cube"}
        pads = {k: v for k, v in spec.objects.items() if v["type"] == "pad"}
        assert len(cubes) == lay.n_cubes and len(pads) == (lay.n_pads if kind == "pick_place" else 0)
        for name, o in spec.objects.items():
            colour = name.split("_")[0]
            colours.add(colour)
            assert np.abs(np.asarray(o["rgba"][:3]) - PALETTE[colour][:3]).max() <= 0.06 + 1e-9
            (x_lo, x_hi), (y_lo, y_hi) = lay.region
            assert x_lo <= o["position"][0] <= x_hi and y_lo <= o["position"][1] <= y_hi
            assert o["position"][2] == pytest.approx(lay.table_z + o["size"][2] / 2)
        for (a, pa), (b, pb) in itertools.combinations(cubes.items(), 2):
            assert np.linalg.norm(np.subtract(pa["position"][:2], pb["position"][:2])) >= lay.min_separation
        for pad in pads.values():
            for cube in cubes.values():  # no cube starts on or touching a pad
                assert np.linalg.norm(np.subtract(pad["position"][:2], cube["position"][:2])) > 0.08
        task = spec.task
        assert task.kind == kind and task.object_name in cubes
        if kind == "pick_place":
            assert task.destination in pads
        if kind == "push":
            start = np.asarray(cubes[task.object_name]["position"])
            np.testing.assert_allclose(task.origin, start)
            end = start + PUSH_TRAVEL * task.direction
            (x_lo, x_hi), (y_lo, y_hi) = lay.region
            assert x_lo - 1e-9 <= end[0] <= x_hi + 1e-9 and y_lo - 1e-9 <= end[1] <= y_hi + 1e-9
    assert len(colours) == len(PALETTE)  # every colour shows up over 40 seeds


def test_robot_specific_layouts() -> None:
    gr1 = sample_episode("gr1", "reach", 0)
    assert gr1.robot == "gr1" and gr1 != sample_episode("panda", "reach", 0)
    (x_lo, x_hi), _ = scene_layout("gr1").region
    assert all(x_lo <= o["position"][0] <= x_hi for o in gr1.objects.values())
    with pytest.raises(ValueError, match="supports task kinds"):
        sample_episode("gr1", "pick_place", 0)
    with pytest.raises(ValueError, match="kind"):
        sample_episode("panda", "fly", 0)


def test_task_keypoints_per_kind() -> None:
    from vla_mpc.sim.tasks import bind_origin, parse_instruction, task_keypoints

    cube, pad = np.array([0.04, 0.04, 0.04]), np.array([0.12, 0.12, 0.002])
    objs = {"red_cube": (np.array([0.5, 0.1, -0.09]), None, None, cube),
            "blue_pad": (np.array([0.4, -0.2, -0.111]), None, None, pad)}
    reach = parse_instruction("touch the red cube", list(objs))
    np.testing.assert_allclose(task_keypoints(reach, objs), [[0.5, 0.1, -0.09], [0.5, 0.1, -0.07]])
    place = parse_instruction("put the red cube on the blue pad", list(objs))
    np.testing.assert_allclose(task_keypoints(place, objs), [[0.5, 0.1, -0.09], [0.4, -0.2, -0.11]])
    pick = parse_instruction("pick up the red cube", list(objs))
    np.testing.assert_allclose(task_keypoints(pick, objs)[1], [0.5, 0.1, -0.09 + 0.05 + 0.02])
    push = parse_instruction("push the red cube to the right", list(objs))
    with pytest.raises(ValueError, match="no origin"):
        task_keypoints(push, objs)
    push = bind_origin(push, objs)
    moved = dict(objs, red_cube=(np.array([0.5, 0.05, -0.09]), None, None, cube))
    # the goal stays where the predicate is first met from the origin, wherever the cube is now
    np.testing.assert_allclose(task_keypoints(push, moved), [[0.5, 0.05, -0.09], [0.5, 0.02, -0.09]])
    with pytest.raises(KeyError, match="green_cube"):
        task_keypoints(parse_instruction("touch the green cube"), objs)
