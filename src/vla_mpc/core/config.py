"""YAML configuration loading with errors that name the file and the field.

Every problem found in a configuration file is reported as a :class:`ConfigError` whose message
reads ``<file>: <field>: <problem>``, e.g.::

    config/panda.yaml: robot.limits.panda_joint3.velocity: expected a positive number, got -1

Fields are addressed with dotted paths (``"robot.limits"``); list items are written ``key[i]``.
No rclpy here: nodes, the simulator and the tests share these helpers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "read_format_json",
    "dataclass_from_json",
    "load_yaml_mapping",
    "require",
    "require_number",
    "require_number_list",
    "require_str_list",
    "optional",
]

_MISSING = object()


class ConfigError(ValueError):
    """A configuration file is missing, malformed or holds an invalid value.

    Attributes:
        file: the offending file, as given (a path or a display string).
        field: dotted path of the offending field (``""`` when the whole file is at fault);
            for YAML syntax errors, ``"line <n>"`` (1-based).
        problem: what is wrong, without the file and field.
    """

    def __init__(self, file: str | os.PathLike[str], field: str, problem: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        where = f"{self.file}: {field}" if field else self.file
        super().__init__(f"{where}: {problem}")


def read_format_json(path: str | os.PathLike[str], expected_format: str, what: str, hint: str = "") -> dict[str, Any]:
    """Read a JSON object whose ``"format"`` field must be ``expected_format`` (datasets, scene
    sets and checkpoints each tag their ``meta.json`` / ``config.json`` this way).

    Args:
        what: the prefix of every error message (e.g. ``"dataset"``).
        hint: appended to the not-found message (how to make the file).

    Raises:
        FileNotFoundError: ``path`` is missing (named, with ``hint``).
        ValueError: not valid JSON, not an object, or another format (named).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: {p} not found" + (f" ({hint})" if hint else ""))
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: {p} is not valid JSON: {exc}") from exc
    got = doc.get("format") if isinstance(doc, dict) else None
    if got != expected_format:
        raise ValueError(f"{what}: {p} has format {got!r}, expected {expected_format!r}")
    return doc


def dataclass_from_json(cls: type, doc: Mapping[str, Any], source: str) -> Any:
    """Build the dataclass ``cls`` from a JSON object, ignoring its ``"format"`` tag.

    Raises:
        ValueError: unknown fields, or fields the constructor refuses (``TypeError`` / ``ValueError``),
            the message prefixed by ``source``.
    """
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - names - {"format"})
    if unknown:
        raise ValueError(f"{source}: unknown fields {unknown}")
    try:
        return cls(**{k: v for k, v in doc.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: {exc}") from exc


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML file whose top level is a mapping.

    Args:
        path: the file to read.

    Returns:
        The parsed mapping (plain dicts, lists and scalars; ``yaml.safe_load``).

    Raises:
        ConfigError: the file does not exist or cannot be read (field ``""``), the YAML is
            malformed (field ``"line <n>"``, 1-based, with the parser's message), or the top
            level is not a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(p, "", "file not found") from None
    except OSError as e:
        raise ConfigError(p, "", f"cannot read file: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        field = f"line {mark.line + 1}" if mark is not None else ""
        problem = " ".join(s for s in (e.context, e.problem) if s) or "malformed YAML"
        raise ConfigError(p, field, f"malformed YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(p, "", f"malformed YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(p, "", f"expected a YAML mapping at top level, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _lookup(mapping: Mapping[str, Any], path: str, file: str | os.PathLike[str]) -> Any:
    node: Any = mapping
    walked: list[str] = []
    for key in path.split("."):
        if not isinstance(node, Mapping):
            raise ConfigError(file, ".".join(walked), f"expected a mapping, got {_kind(node)}")
        walked.append(key)
        if key not in node:
            return _MISSING
        node = node[key]
    return node


def optional(mapping: Mapping[str, Any], path: str, file: str | os.PathLike[str],
             default: Any = None) -> Any:
    """Return the value at dotted ``path`` or ``default`` when any key on the way is absent.

    Raises:
        ConfigError: an intermediate value exists but is not a mapping.
    """
    value = _lookup(mapping, path, file)
    return default if value is _MISSING else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(mapping: Mapping[str, Any], path: str, kind: type | tuple[type, ...],
            file: str | os.PathLike[str], *, default: Any = _MISSING) -> Any:
    """Fetch the value at dotted ``path`` and check its type.

    Args:
        mapping: parsed configuration (e.g. from :func:`load_yaml_mapping`).
        path: dotted field path, e.g. ``"robot.ee_link"``.
        kind: accepted type(s). ``float`` also accepts ints; ``bool`` never counts as a number.
            ``type(None)`` in the tuple allows ``null``.
        file: the file the mapping came from (for the message).
        default: returned when the field is absent; without it an absent field is an error.

    Returns:
        The value (ints converted to float when ``kind`` is ``float``).

    Raises:
        ConfigError: the field is missing (and no default), or has the wrong type.
    """
    value = _lookup(mapping, path, file)
    if value is _MISSING:
        if default is not _MISSING:
            return default
        raise ConfigError(file, path, "missing required field")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is float and _is_number(value):
            return float(value)
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if k not in (float, int) and isinstance(value, k):
            return value
    names = " or ".join("null" if k is type(None) else
                        "number" if k is float else k.__name__ for k in kinds)
    raise ConfigError(file, path, f"expected {names}, got {_kind(value)} {value!r}")


def require_number(mapping: Mapping[str, Any], path: str, file: str | os.PathLike[str], *,
                   positive: bool = False, default: Any = _MISSING) -> float:
    """Fetch a finite number (int or float, not bool) at dotted ``path`` as ``float``.

    Args:
        positive: require ``value > 0``.

    Raises:
        ConfigError: missing, not a number, not finite, or not positive when ``positive``.
    """
    value = _lookup(mapping, path, file)
    if value is _MISSING and default is not _MISSING:
        return default
    what = "a positive number" if positive else "a finite number"
    if value is _MISSING:
        raise ConfigError(file, path, f"missing required field ({what})")
    if not _is_number(value) or not math.isfinite(value) or (positive and value <= 0):
        raise ConfigError(file, path, f"expected {what}, got {value!r}")
    return float(value)


def require_number_list(mapping: Mapping[str, Any], path: str, file: str | os.PathLike[str], *,
                        length: int | None = None) -> list[float]:
    """Fetch a list of finite numbers at dotted ``path``.

    Args:
        length: required length, or ``None`` for any non-empty length.

    Raises:
        ConfigError: missing, not a list, wrong length, or an item that is not a finite number
            (the field is then ``path[i]``).
    """
    value = require(mapping, path, list, file)
    if length is not None and len(value) != length:
        raise ConfigError(file, path, f"expected {length} numbers, got {len(value)}")
    if length is None and not value:
        raise ConfigError(file, path, "expected a non-empty list of numbers")
    out = []
    for i, v in enumerate(value):
        if not _is_number(v) or not math.isfinite(v):
            raise ConfigError(file, f"{path}[{i}]", f"expected a finite number, got {v!r}")
        out.append(float(v))
    return out


def require_str_list(mapping: Mapping[str, Any], path: str, file: str | os.PathLike[str], *,
                     unique: bool = True) -> list[str]:
    """Fetch a non-empty list of non-empty strings at dotted ``path``.

    Raises:
        ConfigError: missing, not a list, empty, a non-string or empty item (field ``path[i]``),
            or a duplicate when ``unique``.
    """
    value = require(mapping, path, list, file)
    if not value:
        raise ConfigError(file, path, "expected a non-empty list of names")
    seen: set[str] = set()
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v:
            raise ConfigError(file, f"{path}[{i}]", f"expected a non-empty string, got {v!r}")
        if unique and v in seen:
            raise ConfigError(file, f"{path}[{i}]", f"duplicate name {v!r}")
        seen.add(v)
    return list(value)

