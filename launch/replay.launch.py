"""Replay a recorded bag into the graph for offline debugging: ``ros2 bag play --clock`` drives
/clock, and the graph's nodes (without the sim) run with use_sim_time.

    ros2 launch vla_mpc replay.launch.py bag:=/path/to/bag rate:=1.0 robot:=panda
        topics:="/joint_states /camera/front/image_raw" nodes:=true
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vla_mpc.graph import GRAPH_NODES


def _setup(context):
    share = FindPackageShare("vla_mpc").perform(context)
    robot = LaunchConfiguration("robot").perform(context)
    cmd = ["ros2", "bag", "play", LaunchConfiguration("bag").perform(context), "--clock",
           "--rate", LaunchConfiguration("rate").perform(context)]
    topics = LaunchConfiguration("topics").perform(context).split()
    if topics:
        cmd += ["--topics", *topics]
    remaps = LaunchConfiguration("remap").perform(context).split()
    if remaps:
        cmd += ["--remap", *remaps]
    actions = [ExecuteProcess(cmd=cmd, output="screen")]
    if LaunchConfiguration("nodes").perform(context).lower() == "true":
        for n in GRAPH_NODES:
            if n.group == "sim":
                continue
            actions.append(Node(package="vla_mpc", executable=n.executable, name=n.name, output="screen",
                                parameters=[os.path.join(share, n.params_file),
                                            {"robot_config": robot, "use_sim_time": True}]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate (1.0 = real time)"),
        DeclareLaunchArgument("topics", default_value="", description="space-separated topics to play (empty: all)"),
        DeclareLaunchArgument("remap", default_value="", description="space-separated from:=to remappings"),
        DeclareLaunchArgument("robot", default_value="panda", description="panda, ur5e or gr1"),
        DeclareLaunchArgument("nodes", default_value="true", description="run the graph's nodes on the replay"),
        OpaqueFunction(function=_setup),
    ])
