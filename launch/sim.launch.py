"""The MuJoCo sim robot alone (publishes /joint_states, cameras, /clock; takes position commands),
plus robot_state_publisher and optionally rviz.

    ros2 launch vla_mpc sim.launch.py robot:=panda rviz:=true
"""

import os

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _setup(context):
    share = FindPackageShare("vla_mpc").perform(context)
    robot = LaunchConfiguration("robot").perform(context)
    with open(os.path.join(share, "config", f"{robot}.yaml"), encoding="utf-8") as f:
        urdf = yaml.safe_load(f)["robot"]["urdf"]
    with open(os.path.join(share, urdf), encoding="utf-8") as f:
        description = f.read()
    actions = [
        Node(package="vla_mpc", executable="sim_robot", name="sim_robot", output="screen",
             parameters=[os.path.join(share, "config/params/sim_robot.yaml"), {"robot_config": robot}]),
        Node(package="robot_state_publisher", executable="robot_state_publisher",
             parameters=[{"robot_description": description, "use_sim_time": True}]),
    ]
    if LaunchConfiguration("rviz").perform(context).lower() == "true":
        actions.append(Node(package="rviz2", executable="rviz2",
                            arguments=["-d", os.path.join(share, "config", "vla_mpc.rviz")],
                            parameters=[{"use_sim_time": True}]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="panda", description="panda, ur5e or gr1"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2"),
        OpaqueFunction(function=_setup),
    ])
