"""vla_mpc.sim: the robosuite-built MuJoCo tabletop scene (no rclpy, no *_msgs).

``SimRobot`` (sim_robot.py) steps and renders it; ``scene.py`` composes the MJCF; ``tasks.py`` holds
instruction parsing and success predicates. Importing this package does not import mujoco or
robosuite; constructing a ``SimRobot`` does.
"""

from vla_mpc.sim.tasks import Task, is_success, parse_instruction

__all__ = ["SimRobot", "Task", "is_success", "parse_instruction"]


def __getattr__(name: str):  # lazy: keep `import vla_mpc.sim` free of mujoco/robosuite
    if name == "SimRobot":
        from vla_mpc.sim.sim_robot import SimRobot

        return SimRobot
    raise AttributeError(name)
