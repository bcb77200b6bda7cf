"""The node graph in one place: read by ``python -m vla_mpc.bringup`` (pip installs) and by the
launch files (``launch/*.launch.py``, robot computers), so both start the same nodes with the same
parameter files."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GraphNode:
    """One node of the graph.

    Attributes:
        name: the ROS node name (also the key of its block in ``config/params/<name>.yaml``).
        module: Python module with ``main(args=None)``.
        executable: console script installed to ``lib/vla_mpc`` (launch_ros ``executable=``).
        group: ``sim`` nodes run only with a simulator, ``core`` always, ``record`` only when recording.
    """

    name: str
    module: str
    executable: str
    group: str

    @property
    def params_file(self) -> str:
        """Path of the node's default parameters, relative to the share directory."""
        return f"config/params/{self.name}.yaml"


GRAPH_NODES: tuple[GraphNode, ...] = (
    GraphNode("sim_robot", "vla_mpc.ros.sim_node", "sim_robot", "sim"),
    GraphNode("camera_ingest", "vla_mpc.ros.camera_ingest", "camera_ingest", "core"),
    GraphNode("policy", "vla_mpc.ros.policy_node", "policy", "core"),
    GraphNode("latent_mpc_planner", "vla_mpc.ros.planner_node", "latent_mpc_planner", "core"),
    GraphNode("safety_monitor", "vla_mpc.ros.safety_monitor", "safety_monitor", "core"),
)

RECORDER = GraphNode("recorder", "vla_mpc.ros.recorder", "recorder", "record")

ROBOTS: tuple[str, ...] = ("panda", "ur5e", "gr1")
