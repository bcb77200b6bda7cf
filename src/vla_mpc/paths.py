"""Where the package's data files (config/, urdf/, launch/, package.xml) live.

Two layouts are supported:

* a source checkout or editable pip install: the repository root is three levels above this file
  (``<root>/src/vla_mpc/paths.py``);
* a colcon/ament install: data files are installed to ``<prefix>/share/vla_mpc`` and found with
  ``ament_index_python`` when it is importable.

``VLA_MPC_SHARE_DIR`` overrides both (useful for tests and relocated installs).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PACKAGE_NAME = "vla_mpc"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def share_dir() -> Path:
    """Return the directory that holds ``config/``, ``urdf/``, ``launch/`` and ``package.xml``.

    Raises:
        FileNotFoundError: if no candidate directory contains ``config/``.
    """
    override = os.environ.get("VLA_MPC_SHARE_DIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    candidates.append(_SOURCE_ROOT)
    try:  # ament install (robot computers)
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE_NAME)))
    except Exception:  # noqa: BLE001 - ament_index is optional and raises its own types
        pass
    for c in candidates:
        if (c / "config").is_dir():
            return c
    raise FileNotFoundError(
        f"vla_mpc share directory not found (looked in {[str(c) for c in candidates]}); "
        "set VLA_MPC_SHARE_DIR to the folder holding config/ and urdf/"
    )


def config_path(name: str) -> Path:
    """Path of ``config/<name>`` (``.yaml`` appended when no suffix is given)."""
    p = Path(name)
    if not p.suffix:
        p = p.with_suffix(".yaml")
    return share_dir() / "config" / p


def resolve(path: str | os.PathLike[str], relative_to: Path | None = None) -> Path:
    """Resolve ``path``: absolute paths as they are, relative ones against ``relative_to`` (a
    config file's folder) first and then the share directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if relative_to is not None and (relative_to / p).exists():
        return relative_to / p
    return share_dir() / p


def read_package_version(package_xml: Path | None = None) -> str:
    """Read ``<version>`` from package.xml, the single place the version number is kept."""
    package_xml = package_xml or (_SOURCE_ROOT / "package.xml")
    m = re.search(r"<version>([^<]+)</version>", package_xml.read_text(encoding="utf-8"))
    if not m:
        raise ValueError(f"{package_xml}: no <version> element")
    return m.group(1).strip()
