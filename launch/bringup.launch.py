"""Full vla_mpc graph: (sim robot) -> camera_ingest -> policy -> safety_monitor, planner beside it.

    ros2 launch vla_mpc bringup.launch.py robot:=panda sim:=true rviz:=true record:=false

The node list comes from ``vla_mpc.graph`` so this file and ``python -m vla_mpc.bringup`` start
the same nodes with the same parameter files.
"""

import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vla_mpc.graph import GRAPH_NODES


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _robot_description(share: str, robot: str) -> str:
    with open(os.path.join(share, "config", f"{robot}.yaml"), encoding="utf-8") as f:
        urdf = yaml.safe_load(f)["robot"]["urdf"]
    with open(os.path.join(share, urdf), encoding="utf-8") as f:
        return f.read()


def _setup(context):
    share = FindPackageShare("vla_mpc").perform(context)
    robot = LaunchConfiguration("robot").perform(context)
    sim = _truthy(LaunchConfiguration("sim").perform(context))
    use_sim_time = _truthy(LaunchConfiguration("use_sim_time").perform(context))
    actions = []
    for n in GRAPH_NODES:
        if n.group == "sim" and not sim:
            continue
        actions.append(Node(
            package="vla_mpc",
            executable=n.executable,
            name=n.name,
            output="screen",
            parameters=[
                os.path.join(share, n.params_file),
                {"robot_config": robot, "use_sim_time": use_sim_time and n.group != "sim"},
            ],
        ))
    actions.append(Node(
        package="robot_state_publisher",
        executable="robot_state_publisher",
        parameters=[{"robot_description": _robot_description(share, robot), "use_sim_time": use_sim_time}],
    ))
    if _truthy(LaunchConfiguration("rviz").perform(context)):
        actions.append(Node(
            package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "vla_mpc.rviz")],
            parameters=[{"use_sim_time": use_sim_time}],
        ))
    if _truthy(LaunchConfiguration("record").perform(context)):
        actions.append(ExecuteProcess(
            cmd=["ros2", "bag", "record", "-s", "mcap", "-a", "-o", LaunchConfiguration("record_dir").perform(context)]
            + (["--use-sim-time"] if use_sim_time else []),
            output="screen",
        ))
    instruction = LaunchConfiguration("instruction").perform(context)
    if instruction:
        actions.append(ExecuteProcess(
            cmd=["ros2", "topic", "pub", "--qos-durability", "transient_local", "--qos-reliability", "reliable",
                 "/vla_mpc/instruction", "std_msgs/msg/String", f"{{data: '{instruction}'}}"],
            output="log",
        ))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="panda", description="panda, ur5e or gr1 (config/<robot>.yaml)"),
        DeclareLaunchArgument("sim", default_value="true", description="start the MuJoCo sim robot"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 with config/vla_mpc.rviz"),
        DeclareLaunchArgument("record", default_value="false", description="record all topics (ros2 bag, MCAP)"),
        DeclareLaunchArgument("record_dir", default_value="vla_mpc_bag", description="bag directory when record:=true"),
        DeclareLaunchArgument("use_sim_time", default_value="true", description="follow /clock (sim or bag replay)"),
        DeclareLaunchArgument("instruction", default_value="", description="latched /vla_mpc/instruction to publish"),
        OpaqueFunction(function=_setup),
    ])
