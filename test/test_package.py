"""Packaging and launch files: they parse, name files that exist, and agree with setup.py."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _setup_console_scripts() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    return {m.group(1): m.group(2) for m in re.finditer(r'"(\w+) = \{PACKAGE\}\.([\w.]+):main"', text)}


def test_one_version_number():
    from vla_mpc.paths import read_package_version

    version = read_package_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert "version=VERSION" in (ROOT / "setup.py").read_text()  # setup.py reads package.xml
    assert not re.search(r'version\s*=\s*"\d', (ROOT / "setup.py").read_text())


def test_package_xml_is_format_3_ament_python():
    import xml.etree.ElementTree as ET

    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.attrib["format"] == "3"
    assert root.findtext("name") == "vla_mpc"
    assert root.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "vla_mpc").is_file()
    cfg = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/vla_mpc" in cfg and "install_scripts=$base/lib/vla_mpc" in cfg


def test_console_scripts_point_at_real_mains():
    import importlib

    scripts = _setup_console_scripts()
    assert {"sim_robot", "camera_ingest", "policy", "latent_mpc_planner", "safety_monitor", "recorder", "bringup"} <= set(scripts)
    for name, module in scripts.items():
        mod = importlib.import_module(f"vla_mpc.{module}")
        assert callable(getattr(mod, "main")), name


def test_graph_nodes_match_executables_and_params():
    from vla_mpc.graph import GRAPH_NODES, RECORDER

    scripts = _setup_console_scripts()
    for node in (*GRAPH_NODES, RECORDER):
        assert scripts[node.executable] == node.module.removeprefix("vla_mpc."), node
        pfile = ROOT / node.params_file
        assert pfile.is_file(), pfile
        params = yaml.safe_load(pfile.read_text())
        assert list(params) == [node.name] and "ros__parameters" in params[node.name], pfile


@pytest.mark.parametrize("launch_file", sorted((ROOT / "launch").glob("*.launch.py")), ids=lambda p: p.name)
def test_launch_files_parse_and_reference_existing_files(launch_file):
    tree = ast.parse(launch_file.read_text(), filename=str(launch_file))
    funcs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    # every DeclareLaunchArgument has a description
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        if getattr(call.func, "id", None) == "DeclareLaunchArgument":
            assert any(k.arg == "description" for k in call.keywords), ast.unparse(call)
    # executables named in the launch file exist as console scripts
    scripts = _setup_console_scripts()
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        kw = {k.arg: k.value for k in call.keywords}
        if getattr(call.func, "id", None) == "Node" and isinstance(kw.get("package"), ast.Constant) \
                and kw["package"].value == "vla_mpc" and isinstance(kw.get("executable"), ast.Constant):
            assert kw["executable"].value in scripts
    # referenced config files exist
    for s in strings:
        if re.fullmatch(r"[\w-][\w./-]*\.(yaml|rviz|urdf)", s):
            assert (ROOT / "config" / s).exists() or (ROOT / s).exists(), s


def test_bringup_launch_declares_the_issue_arguments():
    tree = ast.parse((ROOT / "launch" / "bringup.launch.py").read_text())
    declared = {
        c.args[0].value for c in ast.walk(tree)
        if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "DeclareLaunchArgument"
    }
    assert {"robot", "sim", "rviz", "record", "use_sim_time"} <= declared


def test_every_robot_config_loads_and_names_its_urdf():
    from vla_mpc.core.robot_model import load_robot_spec
    from vla_mpc.graph import ROBOTS

    for robot in ROBOTS:
        spec = load_robot_spec(robot)
        assert spec.urdf_path.is_file()
        assert spec.base_link == "base_link"


def test_bringup_commands_pass_params_file_and_overrides():
    from vla_mpc.bringup import Bringup, node_command, parse_overrides

    b = Bringup(robot="ur5e", record_dir=Path("/tmp/x"), overrides=parse_overrides(["policy.control_rate_hz=200"]))
    names = [n.name for n in b.nodes()]
    assert names[0] == "recorder" and "sim_robot" in names
    policy = next(n for n in b.nodes() if n.name == "policy")
    cmd = node_command(policy, b.params_for(policy))
    assert cmd[cmd.index("--params-file") + 1].endswith("config/params/policy.yaml")
    assert "robot_config:='ur5e'" in cmd and "control_rate_hz:=200" in cmd and "use_sim_time:=true" in cmd
    sim = next(n for n in b.nodes() if n.name == "sim_robot")
    assert "use_sim_time:=false" in node_command(sim, b.params_for(sim))  # the clock source
    with pytest.raises(ValueError, match="node.param=value"):
        parse_overrides(["control_rate_hz=200"])


def test_core_does_not_import_ros():
    """The ROS-free core imports with rclpy and every *_msgs package made unimportable."""
    code = (
        "import sys\n"
        "for m in ['rclpy','std_msgs','sensor_msgs','geometry_msgs','trajectory_msgs','visualization_msgs',"
        "'diagnostic_msgs','builtin_interfaces','cv_bridge']: sys.modules[m] = None\n"
        "import vla_mpc.core.robot_model, vla_mpc.core.safety, vla_mpc.core.chunking, vla_mpc.core.camera\n"
        "import vla_mpc.planning.cem, vla_mpc.planning.mppi, vla_mpc.models.world_model, vla_mpc.models.scripted\n"
        "import vla_mpc.sim\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-2000:]


def test_bad_robot_config_names_file_and_field(tmp_path):
    from vla_mpc.core.config import ConfigError
    from vla_mpc.core.robot_model import load_robot_spec

    src = yaml.safe_load((ROOT / "config" / "panda.yaml").read_text())
    src["robot"]["urdf"] = str(ROOT / "urdf" / "panda.urdf")
    src["robot"]["limits"]["panda_joint3"]["velocity"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(src))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*panda_joint3.*velocity"):
        load_robot_spec(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_robot_spec(str(tmp_path / "missing.yaml"))
