"""Shared ``main()`` plumbing for every node: network isolation defaults, init, spin, shutdown.

ros2/examples habit: ``main(args=None)``; shutdown catches ``KeyboardInterrupt`` and
``ExternalShutdownException`` and cleans up in ``finally`` (Jazzy has no ``with rclpy.init()``).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, Executor, SingleThreadedExecutor
from rclpy.node import Node


def isolate_ros_network(default_domain_id: int = 37) -> None:
    """Keep DDS traffic on this machine unless the caller chose otherwise: sets
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` when they are unset. Must run
    before ``rclpy.init`` (the RMW reads them when the context is created)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(default_domain_id))


def run_node(
    node_factory: Callable[[], Node | list[Node]],
    args: list[str] | None = None,
    executor_factory: Callable[[], Executor] = SingleThreadedExecutor,
    exit_on_failure: bool = True,
) -> int:
    """Init rclpy, build the node(s), spin until SIGINT/SIGTERM or external shutdown, clean up.

    Args:
        node_factory: builds one node or a list of nodes (composition on one executor).
        args: command-line arguments for ``rclpy.init`` (``--ros-args ...``).
        executor_factory: the executor to spin on (SingleThreadedExecutor by default: the
            measured MultiThreadedExecutor collapses at 200 Hz, see ROS_ON_PIP.md).
        exit_on_failure: when the node failed, end the process with ``os._exit(1)`` after
            cleaning up instead of returning (threads of torch, tokenizers or tqdm would
            otherwise keep a failed node's process alive, invisible to its supervisor).

    Returns:
        Process exit code: 0 on a clean shutdown, 1 if the node factory raised.
    """
    isolate_ros_network()
    # rclpy's default signal handlers turn SIGINT and SIGTERM (sent by bringup and by test
    # teardown) into a context shutdown, which ends spin() with ExternalShutdownException.
    rclpy.init(args=args)
    nodes: list[Node] = []
    executor = executor_factory()
    code = 0
    try:
        built = node_factory()
        nodes = built if isinstance(built, list) else [built]
        for n in nodes:
            executor.add_node(n)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - report and exit non-zero; never hang
        import traceback

        traceback.print_exc()
        print(f"[vla_mpc] node failed: {exc}", flush=True)
        code = 1
    finally:
        for n in nodes:
            try:
                close = getattr(n, "close", None)
                if callable(close):
                    close()
                n.destroy_node()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        executor.shutdown(timeout_sec=1.0)
        if rclpy.ok():
            rclpy.shutdown()
    if code != 0 and exit_on_failure:
        # A failed node must end its process so the supervisor (bringup, launch, systemd) sees it:
        # library threads that are not daemons (tokenizers, torch, tqdm monitors) would otherwise
        # keep a dead node's process alive, and nothing downstream could tell.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
