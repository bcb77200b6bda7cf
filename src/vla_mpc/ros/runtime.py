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

#: ``VLA_MPC_EXECUTOR`` values: the executor every node's ``main`` spins (:func:`make_executor`).
EXECUTORS = ("events", "single_threaded")


def isolate_ros_network(default_domain_id: int = 37) -> None:
    """Keep DDS traffic on this machine unless the caller chose otherwise: sets
    ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` when they are unset. Must run
    before ``rclpy.init`` (the RMW reads them when the context is created)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(default_domain_id))


def make_executor(name: str | None = None) -> Executor:
    """The executor a node spins on: ``name``, else ``$VLA_MPC_EXECUTOR``, else ``"events"``.

    ``"events"`` is rclpy's ``EventsExecutor`` (rclpy.experimental): its wait and dispatch run in
    C++, so a Python node's executor thread holds the GIL far less per message. Measured in the
    evaluation graph (panda, learned policy, 2 cores, 200 Hz ``/joint_states`` and ``/clock``):
    with the ``SingleThreadedExecutor`` the policy node's executor thread held the GIL 37 % of the
    time, almost all of it in rclpy's wait-set code, and System 1's chunk inference took 70-165 ms
    (10 ms on an idle core); with the ``EventsExecutor`` 35-75 ms. ``"single_threaded"`` is the
    ``SingleThreadedExecutor`` (ROS_ON_PIP.md: the ``MultiThreadedExecutor`` collapses at 200 Hz,
    so it is not offered). An rclpy without the ``EventsExecutor`` (ros2/rclpy#1391, in Kilted and
    backported to Jazzy's rclpy 7.1.4; Humble has none) gets the ``SingleThreadedExecutor``, with a
    note on stderr.

    Raises:
        ValueError: an unknown name (the message lists :data:`EXECUTORS`).
    """
    name = name or os.environ.get("VLA_MPC_EXECUTOR") or "events"
    if name not in EXECUTORS:
        raise ValueError(f"VLA_MPC_EXECUTOR must be one of {EXECUTORS}, got {name!r}")
    if name == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            print("[vla_mpc] this rclpy has no EventsExecutor: using the SingleThreadedExecutor",
                  file=sys.stderr, flush=True)
        else:
            return EventsExecutor()
    return SingleThreadedExecutor()


def spin(executor: Executor) -> None:
    """Spin ``executor`` until the context shuts down (SIGINT / SIGTERM via rclpy's handlers).

    Either executor is spun in ``spin_once`` steps of 0.1 s that check the context:
    ``EventsExecutor.spin()`` does not return on a signal (ROS_ON_PIP.md). The
    ``EventsExecutor``'s ``spin_once`` can raise a ``RuntimeError`` while the context is being shut
    down; that ends the spin like ``ExternalShutdownException`` (the ``SingleThreadedExecutor``'s).
    Any error while the context is still valid is raised.
    """
    context = executor.context
    while context.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
        except RuntimeError:
            if context.ok():
                raise
            return


def run_node(
    node_factory: Callable[[], Node | list[Node]],
    args: list[str] | None = None,
    executor_factory: Callable[[], Executor] = make_executor,
    exit_on_failure: bool = True,
) -> int:
    """Init rclpy, build the node(s), spin until SIGINT/SIGTERM or external shutdown, clean up.

    Args:
        node_factory: builds one node or a list of nodes (composition on one executor).
        args: command-line arguments for ``rclpy.init`` (``--ros-args ...``).
        executor_factory: the executor to spin on (default :func:`make_executor`: the
            ``EventsExecutor`` unless ``VLA_MPC_EXECUTOR`` says ``single_threaded``).
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
        spin(executor)
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
