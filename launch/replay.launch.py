"""Replay a recorded bag into the graph for offline debugging, with /clock and use_sim_time.

    ros2 launch vla_mpc replay.launch.py bag:=/path/to/bag [rate:=1.0] [robot:=panda] [nodes:=true]
        [topics:="/joint_states /camera/front/image_raw"] [remap:="/a:=/b"] [loop:=false]
        [player:=ros2_bag|vla_mpc]

Time: if the bag recorded ``/clock`` (the sim's), it is replayed as a topic and no second clock is
started; otherwise the player publishes ``/clock`` from the bag's receive times
(``ros2 bag play --clock 100``). The graph's nodes (all but the sim) run with ``use_sim_time``.
With ``nodes:=true`` and no ``topics``, only what those nodes consume is played
(``vla_mpc.replay.GRAPH_INPUT_TOPICS``: /clock, /joint_states, /camera/..., instruction, goal image,
episode events, object poses, task success), so the recorded outputs (latent, chunks, commands) do
not compete with the fresh nodes'; with ``nodes:=false`` every topic is played.
``player:=vla_mpc`` uses ``python3 -m vla_mpc.replay`` (same options; also damaged bags) instead of
``ros2 bag play``. For the replay-and-compare debugging mode use ``python3 -m vla_mpc.replay compare``.
"""

import os
import re
import sys

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vla_mpc.graph import GRAPH_NODES
from vla_mpc.replay import GRAPH_INPUT_TOPICS, metadata_topics


def _setup(context):
    share = FindPackageShare("vla_mpc").perform(context)
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    bag, robot, rate = arg("bag"), arg("robot"), arg("rate")
    run_nodes = arg("nodes").lower() == "true"
    recorded = metadata_topics(bag)
    topics = arg("topics").split()
    if not topics and run_nodes and recorded:
        topics = [t for t in recorded if any(re.search(p, t) for p in GRAPH_INPUT_TOPICS)]
    remaps = arg("remap").split()
    has_clock = "/clock" in recorded and (not topics or "/clock" in topics)
    if arg("player") == "vla_mpc":
        cmd = [sys.executable, "-m", "vla_mpc.replay", bag, "--rate", rate]
        if topics:
            cmd += ["--topics", *topics]
        if remaps:
            cmd += ["--remap", *remaps]
        if arg("loop").lower() == "true":
            cmd.append("--loop")
    else:
        cmd = ["ros2", "bag", "play", bag, "--rate", rate]
        if not has_clock:
            cmd += ["--clock", "100"]
        if topics:
            cmd += ["--topics", *topics]
        if remaps:
            cmd += ["--remap", *remaps]
        if arg("loop").lower() == "true":
            cmd.append("--loop")
    actions = [ExecuteProcess(cmd=cmd, output="screen")]
    if run_nodes:
        for n in GRAPH_NODES:
            if n.group == "sim":
                continue
            params = {"robot_config": robot, "use_sim_time": True}
            if n.name == "policy":
                params["autostart"] = True
            actions.append(Node(package="vla_mpc", executable=n.executable, name=n.name, output="screen",
                                parameters=[os.path.join(share, n.params_file), params]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate (1.0 = recorded pace)"),
        DeclareLaunchArgument("topics", default_value="",
                              description="space-separated topics to play (empty: the nodes' inputs with nodes:=true, else all)"),
        DeclareLaunchArgument("remap", default_value="", description="space-separated from:=to remappings"),
        DeclareLaunchArgument("loop", default_value="false", description="replay in a loop"),
        DeclareLaunchArgument("robot", default_value="panda", description="panda, ur5e or gr1"),
        DeclareLaunchArgument("nodes", default_value="true", description="run the graph's nodes (not the sim) on the replay"),
        DeclareLaunchArgument("player", default_value="ros2_bag",
                              description="ros2_bag (ros2 bag play) or vla_mpc (python -m vla_mpc.replay, pip installs)"),
        OpaqueFunction(function=_setup),
    ])
