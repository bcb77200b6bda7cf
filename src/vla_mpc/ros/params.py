"""Parameter declaration with descriptors (description with units, ranges, read-only).

ros2/demos habit: every parameter is declared with a ``ParameterDescriptor``; shapes, checkpoint
paths and safety limits are ``read_only``. Cross-parameter rules belong in each node's on-set
callback, which returns a reason.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    read_only: bool = False,
    min_value: float | int | None = None,
    max_value: float | int | None = None,
    step: float | int | None = None,
) -> Any:
    """Declare ``name`` on ``node`` with a descriptor and return its (possibly overridden) value.

    ``default`` fixes the type; lists must be non-empty so their element type is known (use
    ``dynamic_typing``-free typed arrays: list of float, int, str or bool). Ranges apply to int and
    float parameters and need both bounds (rcl_interfaces requires both).

    Raises:
        ValueError: a range on a non-numeric parameter, or only one bound given.
        rclpy.exceptions.InvalidParameterValueException: an override outside the range.
    """
    desc = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if (min_value is None) != (max_value is None):
        raise ValueError(f"parameter {name}: give both min_value and max_value, or neither")
    if min_value is not None:
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise ValueError(f"parameter {name}: ranges apply to int/float parameters only")
        if isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(min_value), to_value=int(max_value), step=int(step or 0))]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(min_value), to_value=float(max_value), step=float(step or 0.0))
            ]
    if isinstance(default, (bool, int, float, str)):
        desc.type = _TYPES[type(default)]
    return node.declare_parameter(name, default, desc).value
