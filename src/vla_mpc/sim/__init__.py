"""vla_mpc.sim: the robosuite-built MuJoCo tabletop scene (no rclpy, no *_msgs).

``SimRobot`` (sim_robot.py) steps and renders it; ``scene.py`` composes the MJCF; ``tasks.py`` holds
the task suite (instruction parsing, success predicates, seeded episodes); ``rollout.py`` runs the
scripted expert closed loop without ROS (success rates, goal images). Importing this package does
not import mujoco or robosuite; constructing a ``SimRobot`` does.
"""

from vla_mpc.sim.tasks import (
    EVAL_SEED_OFFSET,
    TASK_KINDS,
    EpisodeSpec,
    Task,
    instruction_templates,
    is_success,
    parse_instruction,
    sample_episode,
)

__all__ = ["EVAL_SEED_OFFSET", "TASK_KINDS", "EpisodeSpec", "SimRobot", "Task", "instruction_templates",
           "is_success", "parse_instruction", "sample_episode"]


def __getattr__(name: str):  # lazy: keep `import vla_mpc.sim` free of mujoco/robosuite
    if name == "SimRobot":
        from vla_mpc.sim.sim_robot import SimRobot

        return SimRobot
    raise AttributeError(name)
