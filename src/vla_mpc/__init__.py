"""vla_mpc: dual-system VLA + latent world-model MPC for ROS 2 robots.

The version number lives in ``package.xml`` only; ``setup.py`` and this module read it from there
(or from the installed distribution's metadata).
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("vla_mpc")
except _metadata.PackageNotFoundError:  # running from a source checkout without install
    from vla_mpc.paths import read_package_version as _read

    __version__ = _read()
