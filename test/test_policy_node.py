"""policy node through real pub/sub: the node runs in its own process (conftest ``start_node``), the
test publishes /joint_states (echoing the commands back: a perfectly tracking robot), the instruction
and the privileged object poses, and listens to /vla_mpc/joint_command, /vla_mpc/latent and
/vla_mpc/action_chunk."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from vla_mpc.core.robot_model import load_robot_spec  # noqa: E402
from vla_mpc.models.scripted import LATENT_FIELDS  # noqa: E402
from vla_mpc.ros import conversions as cv  # noqa: E402
from vla_mpc.ros.qos import LATCHED_QOS, STATE_QOS  # noqa: E402

NODE = "vla_mpc.ros.policy_node"
RECV_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
RED_CUBE = np.array([0.5, 0.1, 0.025])  # base_link [m]


class _World:
    """Test-side robot: publishes joint states (= the last command), instruction, object poses."""

    def __init__(self, ros, state_rate_hz: float = 100.0) -> None:
        self.ros = ros
        n = ros.node
        self.spec = load_robot_spec("panda")
        self.q = np.array(self.spec.home, dtype=float)
        self.publish_states = True
        self.follow_commands = True  # False: the robot stays where it is (e.g. a reset robot)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.latents: list[Float32MultiArray] = []
        self.chunks: list[JointTrajectory] = []
        self.state_pub = n.create_publisher(JointState, "/joint_states", STATE_QOS)
        self.instr_pub = n.create_publisher(String, "/vla_mpc/instruction", LATCHED_QOS)
        self.obj_pub = n.create_publisher(MarkerArray, "/vla_mpc/sim/object_poses", 10)
        n.create_subscription(JointState, "/vla_mpc/joint_command", self._on_command, RECV_QOS)
        n.create_subscription(Float32MultiArray, "/vla_mpc/latent", self.latents.append, RECV_QOS)
        n.create_subscription(JointTrajectory, "/vla_mpc/action_chunk", self.chunks.append, RECV_QOS)
        n.create_timer(1.0 / state_rate_hz, self._publish_state)
        n.create_timer(0.1, self._publish_objects)
        self.instr_pub.publish(String(data="pick up the red cube"))

    def _on_command(self, msg: JointState) -> None:
        arr = cv.joint_state_to_arrays(msg)
        q = cv.select_joints(arr.names, arr.position, self.spec.joint_names)
        self.commands.append((time.monotonic(), q))
        if self.follow_commands:
            self.q = q

    def _publish_state(self) -> None:
        if self.publish_states:
            self.state_pub.publish(cv.joint_state_msg(self.spec.joint_names, self.q, stamp=time.time()))

    def _publish_objects(self) -> None:
        objs = [
            cv.SceneObject("red_cube", RED_CUBE, np.array([0, 0, 0, 1.0]), np.array([1, 0, 0, 1.0]),
                           np.full(3, 0.05), "base_link"),
            cv.SceneObject("blue_cube", np.array([0.45, -0.2, 0.025]), np.array([0, 0, 0, 1.0]),
                           np.array([0, 0, 1, 1.0]), np.full(3, 0.05), "base_link"),
        ]
        self.obj_pub.publish(cv.objects_to_markers(objs, stamp=time.time()))


def _change_state(ros, transition_id: int) -> bool:
    client = ros.node.create_client(ChangeState, "/policy/change_state")
    assert ros.spin_until(client.service_is_ready, 10.0), "lifecycle service not available"
    fut = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    assert ros.spin_until(fut.done, 10.0), "change_state timed out"
    return fut.result().success


def test_streams_at_control_rate_publishes_labelled_latent_and_holds_without_states(start_node, ros_node):
    rate = 100.0
    node = start_node(NODE, {"autostart": True, "require_camera": False, "control_rate_hz": rate,
                             "max_state_age_s": 0.1})
    world = _World(ros_node)
    assert ros_node.spin_until(lambda: len(world.commands) > 20 and len(world.latents) > 0, 30.0), node.log()[-3000:]

    # Rate over a 3 s window.
    world.commands.clear()
    ros_node.spin_for(3.0)
    times = np.array([t for t, _ in world.commands])
    assert times.size >= 0.9 * rate * 3.0, f"{times.size} commands in 3 s at {rate} Hz"
    gaps = np.diff(times)
    assert np.percentile(gaps, 99) < 4.0 / rate, f"p99 gap {np.percentile(gaps, 99) * 1e3:.1f} ms"
    assert "chunks 10 Hz, linear interpolation" in node.log()  # the scripted backend's execution defaults

    # Latent: labelled dims, valid scripted task for the red cube.
    z, labels = cv.float32_tensor_to_numpy(world.latents[-1])
    assert labels == ("tokens", "dim")
    assert z.shape == (1, len(LATENT_FIELDS))
    f = {k: i for i, k in enumerate(LATENT_FIELDS)}
    assert z[0, f["valid"]] == 1.0
    np.testing.assert_allclose(z[0, f["obj_x"]:f["obj_z"] + 1], RED_CUBE, atol=1e-6)

    # Following chunks: the arm moved away from home, and chunks are published over joint_names.
    moved = np.linalg.norm(world.commands[-1][1] - world.spec.home)
    assert moved > 0.05, f"commands stayed at home (moved {moved:.4f} rad)"
    assert world.chunks and tuple(world.chunks[-1].joint_names) == world.spec.joint_names

    # Joint states stop -> the node holds: commands keep coming, all equal to one constant target.
    world.publish_states = False
    ros_node.spin_for(0.4)
    world.commands.clear()
    ros_node.spin_for(1.0)
    held = np.array([q for _, q in world.commands])
    assert held.shape[0] >= 0.9 * rate * 1.0, f"{held.shape[0]} hold commands in 1 s"
    assert np.max(np.abs(held - held[0])) < 1e-9, "command changed while joint states were stale"

    # States return -> the node follows chunks again (commands change).
    world.publish_states = True
    ros_node.spin_for(1.5)
    resumed = np.array([q for _, q in world.commands[-50:]])
    assert np.max(np.abs(resumed - held[0])) > 1e-4, "node did not resume after joint states returned"
    assert node.alive()


def test_reanchors_when_the_robot_does_not_follow(start_node, ros_node):
    """A robot that stops following (moved away and held, e.g. a reset the node missed or a
    protective stop): the node drops its stream and plans from the measured position again."""
    node = start_node(NODE, {"autostart": True, "require_camera": False})  # the default max_tracking_error
    world = _World(ros_node)
    assert ros_node.spin_until(
        lambda: world.commands and np.linalg.norm(world.commands[-1][1] - world.spec.home) > 0.02, 60.0), (
        node.log()[-3000:])
    world.follow_commands = False
    moved = np.array(world.spec.home, dtype=float)
    moved[0] += 0.8  # the arm is elsewhere now, 0.8 rad about joint 1, and does not follow
    world.q = moved
    assert ros_node.spin_until(lambda: np.max(np.abs(world.commands[-1][1] - moved)) < 0.1, 10.0), (
        f"commands stayed {np.max(np.abs(world.commands[-1][1] - moved)):.2f} rad from the robot\n" + node.log()[-3000:])
    assert "re-anchored to the measured position" in node.log()
    world.follow_commands = True  # following again: the stream goes on from where the robot is
    world.commands.clear()
    assert ros_node.spin_until(lambda: len(world.commands) > 100, 20.0)
    steps = np.abs(np.diff(np.array([q for _, q in world.commands]), axis=0))
    assert steps.max() < 0.05, f"command jumped {steps.max():.3f} rad after the re-anchor"
    assert node.alive()


def test_lifecycle_inactive_until_activated(start_node, ros_node):
    node = start_node(NODE, {"require_camera": False, "control_rate_hz": 100.0})
    world = _World(ros_node)
    assert _change_state(ros_node, Transition.TRANSITION_CONFIGURE)
    ros_node.spin_for(1.0)
    assert world.commands == [], "configured but inactive node published commands"
    assert _change_state(ros_node, Transition.TRANSITION_ACTIVATE)
    assert ros_node.spin_until(lambda: len(world.commands) > 50, 10.0), node.log()[-3000:]
    assert _change_state(ros_node, Transition.TRANSITION_DEACTIVATE)
    ros_node.spin_for(0.3)
    world.commands.clear()
    ros_node.spin_for(0.7)
    assert world.commands == [], "deactivated node kept publishing"


def test_split_system2_and_system1_in_two_processes(start_node, ros_node):
    """role system2 publishes /vla_mpc/latent; role system1 (another process) follows it."""
    common = {"autostart": True, "require_camera": False}
    s2 = start_node(NODE, {**common, "role": "system2"}, ["-r", "__node:=policy_system2"])
    s1 = start_node(NODE, {**common, "role": "system1"}, ["-r", "__node:=policy_system1"])
    world = _World(ros_node)

    def moved() -> float:
        return float(np.linalg.norm(world.commands[-1][1] - world.spec.home)) if world.commands else 0.0

    # Wait for the behaviour, not for a command count: on a loaded 2-core machine System 1 may first hold
    # (no latent yet, or a joint state delayed past max_state_age_s) and publish its hold commands.
    assert ros_node.spin_until(lambda: len(world.latents) > 1 and moved() > 0.01, 60.0), (
        f"system1 did not follow the latent (moved {moved():.4f} rad)\n" + s2.log()[-2000:] + s1.log()[-2000:]
    )


# --------------------------------------------------------------------------- learned backend + episodes


KEYPOINT_MEAN = [0.5, -0.1, -0.09, 0.45, 0.2, -0.11]


def _learned_checkpoint(path, keypoint_head: bool = False) -> str:
    """A tiny randomly initialised policy for the Panda (8 joints, chunk 16 x 0.05 s) saved to ``path``;
    with ``keypoint_head`` its keypoints read ~``KEYPOINT_MEAN`` (tiny std)."""
    import torch

    from vla_mpc.models.checkpoint import save_policy
    from vla_mpc.models.policy import DualSystemPolicy, PolicyConfig

    names = load_robot_spec("panda").joint_names
    dof = len(names)
    cfg = PolicyConfig(robot="panda", joint_names=names, image_size=32, vision_width=8, d_model=32, vlm_heads=2,
                       latent_tokens=4, latent_dim=16, expert_width=64, expert_blocks=2, cond_dim=32,
                       keypoint_head=keypoint_head)
    stats = {"proprio": {"mean": [0.0] * 2 * dof, "std": [1.0] * 2 * dof},
             "action_delta": {"mean": [0.0] * dof, "std": [0.01] * dof}}  # small random motions
    if keypoint_head:
        stats["keypoints"] = {"mean": KEYPOINT_MEAN, "std": [1e-3] * 6}
    torch.manual_seed(0)
    save_policy(DualSystemPolicy(cfg, stats), path)
    return str(path)


def test_learned_backend_streams_from_a_checkpoint(start_node, ros_node, tmp_path):
    from sensor_msgs.msg import Image

    from vla_mpc.ros.qos import SENSOR_QOS

    from visualization_msgs.msg import MarkerArray

    from vla_mpc.ros.qos import STREAM_QOS

    ckpt = _learned_checkpoint(tmp_path / "ckpt", keypoint_head=True)
    node = start_node(NODE, {"autostart": True, "backend": "learned", "checkpoint": ckpt, "control_rate_hz": 100.0})
    world = _World(ros_node)
    keypoints = []
    ros_node.node.create_subscription(MarkerArray, "/vla_mpc/policy/keypoints", keypoints.append, STREAM_QOS)
    cam = ros_node.node.create_publisher(Image, "/vla_mpc/observation/front/image", SENSOR_QOS)
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    ros_node.node.create_timer(0.1, lambda: cam.publish(cv.numpy_to_image(frame, "rgb8", stamp=time.time())))
    assert ros_node.spin_until(lambda: len(world.commands) > 50 and len(world.latents) > 1 and world.chunks, 90.0), (
        node.log()[-3000:])
    z, labels = cv.float32_tensor_to_numpy(world.latents[-1])
    assert labels == ("tokens", "dim") and z.shape == (4, 16)
    names, _times, points, _stamp = cv.trajectory_to_numpy(world.chunks[-1])
    assert names == world.spec.joint_names and points.shape == (16, 8)
    # Continuous stream: successive commands never jump (chunks are joined, not switched).
    cmds = np.array([q for _, q in world.commands[-50:]])
    assert np.max(np.abs(np.diff(cmds, axis=0))) < 0.05, "joint command jumped"
    # System 2's keypoints for rviz: the object and its goal, spheres in base_link
    assert ros_node.spin_until(lambda: keypoints, 10.0)
    markers = keypoints[-1].markers
    assert [(m.ns, m.id, m.header.frame_id) for m in markers] == [("policy_keypoints", 0, "base_link"),
                                                                    ("policy_keypoints", 1, "base_link")]
    got = [[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in markers]
    np.testing.assert_allclose(np.ravel(got), KEYPOINT_MEAN, atol=0.05)
    # The learned backend's execution defaults (chunk_rate_hz 0 / interpolation auto in the params).
    assert "chunks 3.33333 Hz, pchip interpolation" in node.log(), node.log()[-2000:]
    assert node.alive()


def test_bad_checkpoint_fails_configure_naming_the_file(start_node, ros_node, tmp_path):
    bad = tmp_path / "broken_ckpt"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    node = start_node(NODE, {"backend": "learned", "checkpoint": str(bad)})
    assert not _change_state(ros_node, Transition.TRANSITION_CONFIGURE)
    assert ros_node.spin_until(lambda: "broken_ckpt/config.json: not valid JSON" in node.log(), 5.0), node.log()[-2000:]


def test_episode_start_resets_and_holds_the_new_measured_state(start_node, ros_node):
    node = start_node(NODE, {"autostart": True, "require_camera": False, "control_rate_hz": 100.0})
    world = _World(ros_node)
    episode_pub = ros_node.node.create_publisher(String, "/vla_mpc/episode", LATCHED_QOS)
    assert ros_node.spin_until(lambda: len(world.commands) > 100, 30.0), node.log()[-3000:]
    # The sim resets: joint states pause, the episode starts, the robot reappears elsewhere.
    world.publish_states = False
    ros_node.spin_for(0.3)
    episode_pub.publish(String(data='{"event": "start", "episode": 1, "seed": 5, "kind": "pick", '
                                    '"instruction": "pick up the red cube", "robot": "panda"}'))
    ros_node.spin_for(0.3)
    world.commands.clear()
    ros_node.spin_for(0.7)
    assert world.commands == [], "node kept commanding after an episode start without fresh joint states"
    reset_q = np.array(world.spec.home, dtype=float) + 0.05
    world.q = reset_q.copy()
    world.publish_states = True
    assert ros_node.spin_until(lambda: len(world.commands) > 0, 5.0)
    np.testing.assert_allclose(world.commands[0][1], reset_q, atol=1e-9)  # held where the robot is
    assert "episode 1 start (seed 5)" in node.log()


def test_episode_start_ignores_a_joint_state_from_before_the_reset(start_node, ros_node):
    """A joint state published before the sim's reset can arrive after the episode start: the hold
    must follow the newest measured position until the first chunk, so the commands end up where
    the robot is, not where it was (the safety monitor refuses such commands)."""
    node = start_node(NODE, {"autostart": True, "require_camera": False, "control_rate_hz": 100.0})
    world = _World(ros_node)
    episode_pub = ros_node.node.create_publisher(String, "/vla_mpc/episode", LATCHED_QOS)
    assert ros_node.spin_until(lambda: len(world.commands) > 100, 30.0), node.log()[-3000:]
    old_q = world.q.copy()
    world.publish_states = False
    world.follow_commands = False
    episode_pub.publish(String(data='{"event": "start", "episode": 2, "seed": 6, "kind": "pick", '
                                    '"instruction": "pick up the red cube", "robot": "panda"}'))
    assert ros_node.spin_until(lambda: "episode 2 start" in node.log(), 5.0), node.log()[-2000:]
    world.state_pub.publish(cv.joint_state_msg(world.spec.joint_names, old_q, stamp=time.time()))  # stale
    ros_node.spin_for(0.05)
    reset_q = old_q.copy()
    reset_q[0] += 0.3  # the reset puts the arm 0.3 rad away (inside the limits)
    world.q = reset_q.copy()
    t_fresh = time.monotonic()
    world.publish_states = True
    ros_node.spin_for(1.5)
    after = [q for t, q in world.commands if t > t_fresh + 0.1]
    assert after, node.log()[-2000:]
    # Every command from then on starts at (and moves smoothly away from) the reset position.
    assert np.max(np.abs(after[0] - reset_q)) < 1e-6, (after[0], reset_q)
    steps = np.abs(np.diff(np.stack(after), axis=0)).max()
    assert steps < 0.05, f"command stream jumped by {steps} rad"


def test_learned_backend_split_across_two_processes(start_node, ros_node, tmp_path):
    """role system2 (VLM + sentence model) and role system1 (action expert only) from one checkpoint."""
    from sensor_msgs.msg import Image

    from vla_mpc.ros.qos import SENSOR_QOS

    ckpt = _learned_checkpoint(tmp_path / "ckpt")
    common = {"autostart": True, "backend": "learned", "checkpoint": ckpt}
    s2 = start_node(NODE, {**common, "role": "system2"}, ["-r", "__node:=policy_system2"])
    s1 = start_node(NODE, {**common, "role": "system1"}, ["-r", "__node:=policy_system1"])
    world = _World(ros_node)
    cam = ros_node.node.create_publisher(Image, "/vla_mpc/observation/front/image", SENSOR_QOS)
    frame = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    ros_node.node.create_timer(0.1, lambda: cam.publish(cv.numpy_to_image(frame, "rgb8", stamp=time.time())))
    assert ros_node.spin_until(lambda: len(world.latents) > 1 and len(world.chunks) > 2, 90.0), (
        s2.log()[-2000:] + s1.log()[-2000:])
    assert "following chunks" in s1.log()
    assert cv.float32_tensor_to_numpy(world.latents[-1])[0].shape == (4, 16)


def test_learned_backend_holds_without_an_instruction(start_node, ros_node, tmp_path):
    from sensor_msgs.msg import Image

    from vla_mpc.ros.qos import SENSOR_QOS

    ckpt = _learned_checkpoint(tmp_path / "ckpt")
    node = start_node(NODE, {"autostart": True, "backend": "learned", "checkpoint": ckpt})
    world = _World(ros_node)
    world.instr_pub.publish(String(data=""))  # contract G: "" between episodes = no task
    cam = ros_node.node.create_publisher(Image, "/vla_mpc/observation/front/image", SENSOR_QOS)
    frame = np.zeros((32, 32, 3), np.uint8)
    ros_node.node.create_timer(0.1, lambda: cam.publish(cv.numpy_to_image(frame, "rgb8", stamp=time.time())))
    assert ros_node.spin_until(lambda: len(world.commands) > 100, 60.0), node.log()[-3000:]
    ros_node.spin_for(0.5)  # the latched "pick up ..." of _World may have arrived first: let "" win
    world.latents.clear(), world.chunks.clear(), world.commands.clear()
    ros_node.spin_for(1.5)
    assert world.latents == [] and world.chunks == [] and len(world.commands) > 100
    held = np.array([q for _, q in world.commands])
    np.testing.assert_allclose(held, np.broadcast_to(held[0], held.shape), atol=1e-12)  # holding
    world.instr_pub.publish(String(data="pick up the red cube"))
    assert ros_node.spin_until(lambda: len(world.latents) > 0 and len(world.chunks) > 0, 10.0), node.log()[-3000:]



def test_loop_hands_each_tick_its_scheduled_time_despite_jitter():
    """The control step samples the chunk stream at the tick's scheduled time, so each command
    carries exactly one period of motion however late the thread wakes (the safety monitor limits
    acceleration per command: a tick 2 ms late at 1 rad/s would look like 20 rad/s^2)."""
    from vla_mpc.ros.policy_node import _Loop

    rng = np.random.default_rng(0)
    scheduled: list[float] = []
    woke: list[float] = []
    errors: list[str] = []

    def body(t: float) -> None:
        woke.append(time.monotonic())
        scheduled.append(t)
        time.sleep(float(rng.uniform(0.0, 0.015)))  # work of varying length: some run past the next tick

    loop = _Loop("test", 0.01, body, errors.append)
    loop.start()
    time.sleep(0.5)
    loop.stop()
    assert not errors and len(scheduled) > 20
    gaps = np.diff(scheduled)
    np.testing.assert_allclose(gaps, 0.01, atol=1e-9)  # the schedule: exactly one period apart
    assert np.all(np.asarray(woke) >= np.asarray(scheduled) - 1e-4)  # never handed a future time
    assert (np.asarray(woke) - np.asarray(scheduled)).max() > 0.003  # while some ticks ran late


def test_loop_errors_after_the_context_shut_down_are_not_reported():
    """SIGINT / SIGTERM shut the context down before ``close()`` stops the loops: the publishes that
    fail in between are shutdown, not errors, and are neither logged nor kept as ``last_error``."""
    import rclpy
    from rclpy.context import Context

    from vla_mpc.ros.policy_node import PolicyNode

    ctx = Context()
    rclpy.init(context=ctx, domain_id=91)
    node = PolicyNode(context=ctx)
    try:
        node._report("control: a backend error")
        assert node._last_error == "control: a backend error"
        ctx.shutdown()
        node._report("control: RCLError: Failed to publish: publisher's context is invalid")
        assert node._last_error == "control: a backend error"
    finally:
        node.close()
        node.destroy_node()
        if ctx.ok():
            ctx.shutdown()
