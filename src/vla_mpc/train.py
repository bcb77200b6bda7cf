"""Training commands: one entry point, one trainer per model.

    python -m vla_mpc.train policy --dataset D --out O [--minutes M] [--steps N] [--seed S] [--resume] ...
    python -m vla_mpc.train world_model --dataset D --out O [--minutes M] [--steps N] [--seed S] [--resume] ...
    python -m vla_mpc.train convert --bags BAG_OR_DIR... --out D [--image-size 96] ...
    python -m vla_mpc.train scenes --count M --out DIR [--arm-poses D] ...
    python -m vla_mpc.train dagger --checkpoint C --out D [--episodes-per-kind N] [--beta B] ...

``policy`` runs ``vla_mpc.training.policy.main(argv)`` (the dual-system policy), ``world_model``
runs ``vla_mpc.training.world_model.main(argv)`` (the latent world model); both parse their own
options (``python -m vla_mpc.train policy --help``) and train with ``vla_mpc.training.loop.train``
(progress bar, ``O/log.jsonl``, ``O/best``, ``O/last``, ``O/train_summary.json``). ``convert`` is
``python -m vla_mpc.training.dataset`` (rosbag2 recordings -> dataset directory).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "policy": ("vla_mpc.training.policy", "train the dual-system policy (System 2 + System 1)"),
    "world_model": ("vla_mpc.training.world_model", "train the latent world model"),
    "convert": ("vla_mpc.training.dataset", "convert rosbag2 recordings into a training dataset"),
    "goal_pose": ("vla_mpc.training.goal_pose", "train the goal-image end-effector estimator (planner goals)"),
    "scenes": ("vla_mpc.training.scenes", "render task layouts with keypoints for System 2's keypoint head"),
    "dagger": ("vla_mpc.training.dagger", "roll out a learned policy with the expert labelling (DAgger data)"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its module's ``main(argv[1:])``; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        ap = argparse.ArgumentParser(prog="python -m vla_mpc.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        sub = ap.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
        for name, (_, text) in COMMANDS.items():
            sub.add_parser(name, help=text, add_help=False)
        if not argv or argv[0] in ("-h", "--help"):
            ap.print_help()
            return 0 if argv else 2
        ap.error(f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
    module_name, _ = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            print(f"python -m vla_mpc.train {argv[0]}: {module_name} is not installed in this tree", file=sys.stderr)
            return 2
        raise
    code = module.main(argv[1:])
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
