"""``/diagnostics`` helpers shared by the nodes (diagnostic_msgs, as diagnostic_updater lays them out).

``diagnostic_status(name, level, message, values)`` builds one ``DiagnosticStatus``;
``diagnostic_array(stamp, statuses)`` wraps statuses in a ``DiagnosticArray`` for ``/diagnostics``.
Levels are the message's constants (``OK``, ``WARN``, ``ERROR``, ``STALE``) or their names.
Values are ``{key: value}``; each value is converted with ``str`` (floats with ``%.6g``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["LEVELS", "POLICY_STATUS_NAME", "diagnostic_status", "diagnostic_array"]

#: ``DiagnosticStatus.name`` of the policy node's status (``vla_mpc.ros.policy_node``; read by
#: ``vla_mpc.collect`` / ``eval`` and the policy benchmark).
POLICY_STATUS_NAME = "vla_mpc/policy"

#: Level names -> DiagnosticStatus level bytes.
LEVELS = {
    "OK": DiagnosticStatus.OK,
    "WARN": DiagnosticStatus.WARN,
    "ERROR": DiagnosticStatus.ERROR,
    "STALE": DiagnosticStatus.STALE,
}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def diagnostic_status(name: str, level: int | bytes | str, message: str,
                      values: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
                      hardware_id: str = "") -> DiagnosticStatus:
    """One ``DiagnosticStatus``.

    Args:
        name: status name, e.g. ``"vla_mpc/safety_monitor"``.
        level: ``DiagnosticStatus.OK`` .. ``STALE`` (int or bytes) or one of :data:`LEVELS`' names.
        message: one short line.
        values: key/value pairs (mapping or pairs); values are converted to strings.
        hardware_id: e.g. the robot name.

    Raises:
        ValueError: an unknown level.
    """
    if isinstance(level, str):
        if level not in LEVELS:
            raise ValueError(f"unknown diagnostic level {level!r} (use one of {sorted(LEVELS)})")
        level = LEVELS[level]
    elif isinstance(level, int):
        level = bytes([level])
    if level not in LEVELS.values():
        raise ValueError(f"unknown diagnostic level {level!r}")
    items = values.items() if isinstance(values, Mapping) else values
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=_text(v)) for k, v in items])


def diagnostic_array(stamp: Time, statuses: Iterable[DiagnosticStatus]) -> DiagnosticArray:
    """A ``DiagnosticArray`` stamped ``stamp`` (``node.get_clock().now().to_msg()``)."""
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = list(statuses)
    return arr
