"""ament_python / pip build for vla_mpc. The version is read from package.xml (one place)."""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "vla_mpc"
HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)


def files(pattern):
    return [f for f in sorted(glob(pattern)) if Path(f).is_file()]


def tree(folder):
    """One data_files entry per directory under ``folder`` (checkpoints are nested directories)."""
    dirs = sorted({str(Path(f).parent) for f in glob(f"{folder}/**/*", recursive=True) if Path(f).is_file()})
    return [(f"share/{PACKAGE}/{d}", files(f"{d}/*")) for d in dirs]


setup(
    name=PACKAGE,
    version=VERSION,
    packages=find_packages("src"),
    package_dir={"": "src"},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # glob does not recurse: one entry per folder
        (f"share/{PACKAGE}/launch", files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", files("config/*.yaml") + files("config/*.rviz")),
        (f"share/{PACKAGE}/config/params", files("config/params/*.yaml")),
        (f"share/{PACKAGE}/urdf", files("urdf/*.urdf")),
    ]
    + tree("checkpoints"),
    install_requires=["setuptools", "numpy", "pyyaml"],
    extras_require={"test": ["pytest", "hypothesis"]},
    zip_safe=True,
    maintainer="vla_mpc maintainers",
    maintainer_email="maintainers@vla-mpc.invalid",
    description="Dual-system VLA and latent world-model MPC for ROS 2 robots",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"sim_robot = {PACKAGE}.ros.sim_node:main",
            f"camera_ingest = {PACKAGE}.ros.camera_ingest:main",
            f"policy = {PACKAGE}.ros.policy_node:main",
            f"latent_mpc_planner = {PACKAGE}.ros.planner_node:main",
            f"safety_monitor = {PACKAGE}.ros.safety_monitor:main",
            f"recorder = {PACKAGE}.ros.recorder:main",
            f"bringup = {PACKAGE}.bringup:main",
            f"collect = {PACKAGE}.collect:main",
            f"train = {PACKAGE}.train:main",
            f"eval = {PACKAGE}.eval:main",
            f"replay = {PACKAGE}.replay:main",
            f"pictures = {PACKAGE}.pictures:main",
        ],
    },
)
