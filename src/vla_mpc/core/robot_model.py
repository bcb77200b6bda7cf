"""Robot description (config/<robot>.yaml + URDF) and pinocchio kinematics.

:func:`load_robot_spec` reads a robot config (schema in docs/DESIGN.md), validates every field and
cross-checks it against the URDF; :class:`RobotModel` gives forward kinematics, Jacobians and a
damped-least-squares IK on top of pinocchio.

Conventions: joint vectors are over ``RobotSpec.joint_names`` (arm joints, then commanded gripper
joints) in [rad] (revolute) or [m] (prismatic); poses are (4, 4) float64 homogeneous transforms of a
link in ``base_link`` (the URDF root, fixed: no free-flyer). No rclpy here.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_mpc import paths
from vla_mpc.core.config import (
    ConfigError,
    load_yaml_mapping,
    require,
    require_number,
    require_number_list,
    require_str_list,
)

__all__ = [
    "JointLimits",
    "GripperSpec",
    "RobotSpec",
    "UrdfJoint",
    "IKResult",
    "RobotModel",
    "load_robot_spec",
    "parse_urdf_joints",
    "xyz_rpy_to_matrix",
]

LIMIT_KEYS = ("lower", "upper", "velocity", "acceleration", "jerk", "effort")
_MOVABLE = ("revolute", "continuous", "prismatic")
_URDF_TOL = 1e-9  # slack when comparing config limits with URDF limits (decimal round-off)
_IK_STALL_WINDOW = 25  # IK iterations between progress checks
_IK_STALL_GAIN = 0.05  # an attempt stops early if its error fell less than 5 % over a window


def _frozen_array(values: Iterable[float]) -> np.ndarray:
    a = np.array(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class JointLimits:
    """Per-joint limits, each a read-only (n,) float64 array over ``RobotSpec.joint_names``.

    Units: lower/upper [rad] or [m]; velocity [rad/s] or [m/s]; acceleration [rad/s^2] or
    [m/s^2]; jerk [rad/s^3] or [m/s^3]; effort [Nm] or [N]. Sources are cited in the config file.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    effort: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for k in LIMIT_KEYS:
            a = _frozen_array(getattr(self, k))
            if a.ndim != 1 or (n is not None and a.shape[0] != n):
                raise ValueError(f"JointLimits.{k}: expected shape ({n},), got {a.shape}")
            n = a.shape[0]
            object.__setattr__(self, k, a)

    def subset(self, indices: Sequence[int]) -> JointLimits:
        """Limits of the joints at ``indices`` (e.g. ``spec.arm_indices``)."""
        idx = np.asarray(indices, dtype=np.intp)
        return JointLimits(**{k: getattr(self, k)[idx] for k in LIMIT_KEYS})


@dataclass(frozen=True, eq=False)
class GripperSpec:
    """Commanded gripper coordinates.

    Attributes:
        joints: URDF joint names the gripper is commanded through (mimic joints excluded).
        open: (k,) float64 [m] or [rad], the open position of each joint.
        closed: (k,) float64, the closed position of each joint.
    """

    joints: tuple[str, ...]
    open: np.ndarray
    closed: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "joints", tuple(self.joints))
        object.__setattr__(self, "open", _frozen_array(self.open))
        object.__setattr__(self, "closed", _frozen_array(self.closed))
        if not (len(self.joints) == self.open.shape[0] == self.closed.shape[0]):
            raise ValueError("GripperSpec: joints, open and closed must have the same length")


@dataclass(frozen=True, eq=False)
class RobotSpec:
    """A validated robot description (see docs/DESIGN.md, "Robot config").

    Attributes:
        name: robot name, e.g. ``"panda"``.
        joint_names: arm joints then gripper joints; the order of every command vector.
        arm_joint_names: the arm joints (a prefix of ``joint_names``).
        gripper: the gripper, or ``None``.
        limits: per-joint limits over ``joint_names``.
        home: (n,) float64 home configuration over ``joint_names`` [rad] / [m].
        urdf_path: absolute path of the URDF.
        base_link: URDF root link; the frame of every pose.
        ee_link: end-effector (TCP) link.
        config_path: the YAML file the spec came from (``None`` when built in code).
        sim: the ``sim:`` section as parsed (simulator keys; see :meth:`sim_transform`).
        safety: the ``safety:`` section with ``position_margin`` [rad] and ``max_joint_step``
            [rad per command] validated as floats; other keys passed through.
        raw: the whole parsed YAML mapping.
    """

    name: str
    joint_names: tuple[str, ...]
    arm_joint_names: tuple[str, ...]
    gripper: GripperSpec | None
    limits: JointLimits
    home: np.ndarray
    urdf_path: Path
    base_link: str
    ee_link: str
    config_path: Path | None = None
    sim: dict[str, Any] = field(default_factory=dict)
    safety: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "arm_joint_names", tuple(self.arm_joint_names))
        object.__setattr__(self, "home", _frozen_array(self.home))
        object.__setattr__(self, "urdf_path", Path(self.urdf_path))
        if self.joint_names[: len(self.arm_joint_names)] != self.arm_joint_names:
            raise ValueError("RobotSpec: joint_names must start with arm_joint_names")
        if self.home.shape != (len(self.joint_names),):
            raise ValueError(f"RobotSpec: home has shape {self.home.shape}, "
                             f"expected ({len(self.joint_names)},)")

    @property
    def n_joints(self) -> int:
        """Number of commanded joints, ``len(joint_names)``."""
        return len(self.joint_names)

    @property
    def n_arm(self) -> int:
        """Number of arm joints."""
        return len(self.arm_joint_names)

    @property
    def arm_indices(self) -> np.ndarray:
        """(n_arm,) int indices of the arm joints in ``joint_names``."""
        return np.arange(self.n_arm)

    @property
    def gripper_indices(self) -> np.ndarray:
        """(k,) int indices of the gripper joints in ``joint_names`` (empty without gripper)."""
        return np.arange(self.n_arm, self.n_joints)

    def index(self, joint: str) -> int:
        """Index of ``joint`` in ``joint_names``.

        Raises:
            KeyError: unknown joint.
        """
        try:
            return self.joint_names.index(joint)
        except ValueError:
            raise KeyError(f"{self.name}: unknown joint {joint!r}; joints: "
                           f"{list(self.joint_names)}") from None

    def sim_transform(self, key: str) -> np.ndarray:
        """The (4, 4) float64 transform stored as ``sim.<key>: {xyz: [m]*3, rpy: [rad]*3}``.

        Defined keys: ``base_link_in_sim_base`` (pose of ``base_link`` in the simulator's robot
        base body) and ``sim_eef_in_ee_link`` (pose of the simulator's eef site in ``ee_link``).
        So ``T_simbase_simeef = base_link_in_sim_base @ fk(q) @ sim_eef_in_ee_link``.
        rpy is URDF's fixed-axis roll-pitch-yaw, R = Rz(yaw) Ry(pitch) Rx(roll).

        Raises:
            ConfigError: the key is missing or malformed (names the config file and field).
        """
        file = self.config_path or "<RobotSpec>"
        root = {"sim": self.sim}
        require(root, f"sim.{key}", dict, file)
        xyz = require_number_list(root, f"sim.{key}.xyz", file, length=3)
        rpy = require_number_list(root, f"sim.{key}.rpy", file, length=3)
        return xyz_rpy_to_matrix(xyz, rpy)


def xyz_rpy_to_matrix(xyz: Sequence[float], rpy: Sequence[float]) -> np.ndarray:
    """(4, 4) float64 transform from a translation [m] and URDF roll-pitch-yaw [rad]
    (R = Rz(yaw) @ Ry(pitch) @ Rx(roll), as in the URDF ``<origin>`` element)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp = math.cos(r), math.sin(r), math.cos(p), math.sin(p)
    cy, sy = math.cos(y), math.sin(y)
    T = np.eye(4)
    T[:3, :3] = [
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    T[:3, 3] = [float(v) for v in xyz]
    return T


# --------------------------------------------------------------------------------------------
# URDF reading (joint table only; pinocchio does the kinematics)


@dataclass(frozen=True)
class UrdfJoint:
    """One URDF ``<joint>``: type, parent/child links, ``<limit>`` values (``nan`` when absent)
    and the ``<mimic>`` relation ``(master, multiplier, offset)`` or ``None``."""

    name: str
    type: str
    parent: str
    child: str
    lower: float
    upper: float
    velocity: float
    effort: float
    mimic: tuple[str, float, float] | None


@dataclass(frozen=True)
class _UrdfInfo:
    name: str
    links: frozenset[str]
    joints: dict[str, UrdfJoint]
    root: str
    text: str


def _float_attr(elem: ET.Element | None, attr: str, default: float, file: Path, where: str) -> float:
    if elem is None or attr not in elem.attrib:
        return default
    try:
        return float(elem.attrib[attr])
    except ValueError:
        raise ConfigError(file, f"{where}.{attr}",
                          f"expected a number, got {elem.attrib[attr]!r}") from None


def parse_urdf_joints(urdf_path: str | os.PathLike[str]) -> dict[str, UrdfJoint]:
    """Read the joint table of a URDF file.

    Returns:
        joint name -> :class:`UrdfJoint`, in file order.

    Raises:
        ConfigError: the file is missing or is not a well-formed, single-rooted URDF tree
            (names the URDF file; XML errors give the line).
    """
    return _read_urdf(Path(urdf_path)).joints


def _read_urdf(path: Path) -> _UrdfInfo:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "URDF file not found") from None
    except OSError as e:
        raise ConfigError(path, "", f"cannot read URDF: {e.strerror or e}") from None
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line = e.position[0] if e.position else None
        raise ConfigError(path, f"line {line}" if line else "", f"malformed URDF XML: {e}") from None
    if root.tag != "robot":
        raise ConfigError(path, "", f"expected a <robot> root element, got <{root.tag}>")
    links: set[str] = set()
    for link in root.findall("link"):
        name = link.get("name")
        if not name:
            raise ConfigError(path, "link", "a <link> has no name")
        if name in links:
            raise ConfigError(path, f"link[{name}]", "duplicate link name")
        links.add(name)
    joints: dict[str, UrdfJoint] = {}
    children: set[str] = set()
    for j in root.findall("joint"):
        name = j.get("name")
        if not name:
            raise ConfigError(path, "joint", "a <joint> has no name")
        where = f"joint[{name}]"
        if name in joints:
            raise ConfigError(path, where, "duplicate joint name")
        jtype = j.get("type", "")
        parent_e, child_e = j.find("parent"), j.find("child")
        parent = parent_e.get("link") if parent_e is not None else None
        child = child_e.get("link") if child_e is not None else None
        if not parent or not child:
            raise ConfigError(path, where, "missing <parent link=...> or <child link=...>")
        for role, link in (("parent", parent), ("child", child)):
            if link not in links:
                raise ConfigError(path, f"{where}.{role}", f"unknown link {link!r}")
        if child in children:
            raise ConfigError(path, f"{where}.child", f"link {child!r} has two parent joints")
        children.add(child)
        lim = j.find("limit")
        if jtype in ("revolute", "prismatic") and lim is None:
            raise ConfigError(path, where, f"{jtype} joint without a <limit> element")
        lower = _float_attr(lim, "lower", math.nan, path, f"{where}.limit")
        upper = _float_attr(lim, "upper", math.nan, path, f"{where}.limit")
        if jtype in ("revolute", "prismatic"):
            lower = 0.0 if math.isnan(lower) else lower  # URDF spec default
            upper = 0.0 if math.isnan(upper) else upper
        mimic_e = j.find("mimic")
        mimic = None
        if mimic_e is not None:
            master = mimic_e.get("joint")
            if not master:
                raise ConfigError(path, f"{where}.mimic", "no joint attribute")
            mimic = (master,
                     _float_attr(mimic_e, "multiplier", 1.0, path, f"{where}.mimic"),
                     _float_attr(mimic_e, "offset", 0.0, path, f"{where}.mimic"))
        joints[name] = UrdfJoint(
            name=name, type=jtype, parent=parent, child=child, lower=lower, upper=upper,
            velocity=_float_attr(lim, "velocity", math.nan, path, f"{where}.limit"),
            effort=_float_attr(lim, "effort", math.nan, path, f"{where}.limit"), mimic=mimic)
    for j in joints.values():
        if j.mimic is not None and j.mimic[0] not in joints:
            raise ConfigError(path, f"joint[{j.name}].mimic", f"unknown joint {j.mimic[0]!r}")
    roots = sorted(links - children)
    if len(roots) != 1:
        raise ConfigError(path, "", f"expected exactly one root link, found {roots}")
    return _UrdfInfo(root.get("name", ""), frozenset(links), joints, roots[0], text)


# --------------------------------------------------------------------------------------------
# Config loading


def _resolve_config(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix or len(p.parts) > 1 or p.exists():
        return p
    return paths.config_path(str(name_or_path))


def load_robot_spec(name_or_path: str | os.PathLike[str]) -> RobotSpec:
    """Load and validate a robot config and cross-check it against its URDF.

    Args:
        name_or_path: a bare robot name (``"panda"`` -> ``<share>/config/panda.yaml`` via
            :func:`vla_mpc.paths.config_path`) or a path to a YAML file.

    Returns:
        The validated :class:`RobotSpec`.

    Raises:
        ConfigError: naming the config file and the field for: a missing file, malformed YAML,
            a missing or mistyped field, a duplicate or unknown joint, a non-positive velocity /
            acceleration / jerk / effort, lower >= upper, a home or gripper position outside the
            limits, a ``base_link`` that is not the URDF root, an ``ee_link`` not in the URDF,
            a configured joint absent from the URDF, fixed or mimic there, or a limit outside the
            URDF's limit. A missing or malformed URDF raises ConfigError naming the URDF file.
    """
    cfg_path = _resolve_config(name_or_path)
    raw = load_yaml_mapping(cfg_path)
    f = cfg_path
    require(raw, "robot", dict, f)
    name = require(raw, "robot.name", str, f)
    urdf_rel = require(raw, "robot.urdf", str, f)
    base_link = require(raw, "robot.base_link", str, f)
    ee_link = require(raw, "robot.ee_link", str, f)
    arm = require_str_list(raw, "robot.arm_joints", f)

    gripper: GripperSpec | None = None
    if require(raw, "robot.gripper", (dict, type(None)), f, default=None) is not None:
        g_joints = require_str_list(raw, "robot.gripper.joints", f)
        g_open = require_number_list(raw, "robot.gripper.open", f, length=len(g_joints))
        g_closed = require_number_list(raw, "robot.gripper.closed", f, length=len(g_joints))
        for i, j in enumerate(g_joints):
            if j in arm:
                raise ConfigError(f, f"robot.gripper.joints[{i}]", f"{j!r} is also an arm joint")
        gripper = GripperSpec(tuple(g_joints), g_open, g_closed)
    joint_names = tuple(arm) + (gripper.joints if gripper else ())
    n = len(joint_names)

    limits_map = require(raw, "robot.limits", dict, f)
    for key in limits_map:
        if key not in joint_names:
            raise ConfigError(f, f"robot.limits.{key}",
                              "not a configured joint (robot.arm_joints or robot.gripper.joints)")
    table = {k: np.empty(n) for k in LIMIT_KEYS}
    for i, j in enumerate(joint_names):
        base = f"robot.limits.{j}"
        entry = require(raw, base, dict, f)
        for key in entry:
            if key not in LIMIT_KEYS:
                raise ConfigError(f, f"{base}.{key}", f"unknown limit (expected {list(LIMIT_KEYS)})")
        for key in LIMIT_KEYS:
            table[key][i] = require_number(raw, f"{base}.{key}", f,
                                           positive=key not in ("lower", "upper"))
        if not table["lower"][i] < table["upper"][i]:
            raise ConfigError(f, f"{base}.upper", f"upper ({table['upper'][i]}) must exceed "
                              f"lower ({table['lower'][i]})")
    limits = JointLimits(**table)

    home = np.array(require_number_list(raw, "robot.home", f, length=n))
    for i, j in enumerate(joint_names):
        if not limits.lower[i] <= home[i] <= limits.upper[i]:
            raise ConfigError(f, f"robot.home[{i}]", f"{home[i]} for {j} is outside "
                              f"[{limits.lower[i]}, {limits.upper[i]}] (robot.limits.{j})")
    if gripper is not None:
        for key, values in (("open", gripper.open), ("closed", gripper.closed)):
            for k, j in enumerate(gripper.joints):
                i = joint_names.index(j)
                if not limits.lower[i] <= values[k] <= limits.upper[i]:
                    raise ConfigError(f, f"robot.gripper.{key}[{k}]", f"{values[k]} for {j} is "
                                      f"outside [{limits.lower[i]}, {limits.upper[i]}]")

    sim = require(raw, "sim", dict, f, default={})
    if "robosuite_robot" in sim:
        require(raw, "sim.robosuite_robot", str, f)
    safety = dict(require(raw, "safety", dict, f, default={}))
    safety["position_margin"] = require_number(raw, "safety.position_margin", f, default=0.0)
    if safety["position_margin"] < 0:
        raise ConfigError(f, "safety.position_margin",
                          f"expected a number >= 0, got {safety['position_margin']}")
    if "max_joint_step" in safety:
        safety["max_joint_step"] = require_number(raw, "safety.max_joint_step", f, positive=True)

    urdf_path = paths.resolve(urdf_rel, relative_to=cfg_path.parent).resolve()
    if not urdf_path.is_file():
        raise ConfigError(urdf_path, "", f"URDF file not found (from {cfg_path}: robot.urdf)")
    urdf = _read_urdf(urdf_path)
    _check_against_urdf(f, urdf_path, urdf, base_link, ee_link, joint_names, limits)

    return RobotSpec(name=name, joint_names=joint_names, arm_joint_names=tuple(arm),
                     gripper=gripper, limits=limits, home=home, urdf_path=urdf_path,
                     base_link=base_link, ee_link=ee_link, config_path=cfg_path, sim=dict(sim),
                     safety=safety, raw=raw)


def _check_against_urdf(f: Path, urdf_path: Path, urdf: _UrdfInfo, base_link: str, ee_link: str,
                        joint_names: Sequence[str], limits: JointLimits) -> None:
    if base_link != urdf.root:
        raise ConfigError(f, "robot.base_link", f"{base_link!r} is not the root link of "
                          f"{urdf_path} (the root is {urdf.root!r})")
    if ee_link not in urdf.links:
        raise ConfigError(f, "robot.ee_link", f"link {ee_link!r} not found in {urdf_path}")
    for i, j in enumerate(joint_names):
        field_ = f"robot.limits.{j}"
        uj = urdf.joints.get(j)
        if uj is None:
            raise ConfigError(f, field_, f"joint {j!r} not found in {urdf_path}")
        if uj.type not in _MOVABLE:
            raise ConfigError(f, field_, f"joint {j!r} has type {uj.type!r} in {urdf_path}; "
                              f"expected one of {list(_MOVABLE)}")
        if uj.mimic is not None:
            raise ConfigError(f, field_, f"joint {j!r} mimics {uj.mimic[0]!r} in {urdf_path}; "
                              "command the master joint instead")
        if uj.type != "continuous":
            if limits.lower[i] < uj.lower - _URDF_TOL:
                raise ConfigError(f, f"{field_}.lower", f"{limits.lower[i]} is below the URDF "
                                  f"limit {uj.lower} ({urdf_path})")
            if limits.upper[i] > uj.upper + _URDF_TOL:
                raise ConfigError(f, f"{field_}.upper", f"{limits.upper[i]} is above the URDF "
                                  f"limit {uj.upper} ({urdf_path})")
        for key in ("velocity", "effort"):
            u = getattr(uj, key)
            if math.isfinite(u) and u > 0 and getattr(limits, key)[i] > u + _URDF_TOL:
                raise ConfigError(f, f"{field_}.{key}", f"{getattr(limits, key)[i]} exceeds the "
                                  f"URDF limit {u} ({urdf_path})")


# --------------------------------------------------------------------------------------------
# Kinematics


class IKResult:
    """Result of :meth:`RobotModel.ik`; unpacks as ``q, converged, error = result``.

    Attributes:
        q: (n,) float64 over ``joint_names`` [rad]/[m]; non-arm entries copied from ``q0``.
        converged: position (and rotation, if requested) error within tolerance.
        error: final position error ||p_target - p|| [m].
        rotation_error: final rotation error angle [rad] (0.0 for position-only IK).
        iterations: iterations used in total (all attempts).
    """

    __slots__ = ("q", "converged", "error", "rotation_error", "iterations")

    def __init__(self, q: np.ndarray, converged: bool, error: float, rotation_error: float,
                 iterations: int) -> None:
        self.q, self.converged, self.error = q, converged, error
        self.rotation_error, self.iterations = rotation_error, iterations

    def __iter__(self):
        return iter((self.q, self.converged, self.error))

    def __repr__(self) -> str:
        return (f"IKResult(converged={self.converged}, error={self.error:.3g} m, "
                f"rotation_error={self.rotation_error:.3g} rad, iterations={self.iterations})")


class RobotModel:
    """Forward kinematics, Jacobians and IK of a :class:`RobotSpec` (pinocchio, fixed base).

    The pinocchio model is built from ``spec.urdf_path`` (``pinocchio.buildModelFromUrdf``, no
    free-flyer: the URDF root ``base_link`` is pinocchio's world). Joint vectors given to this
    class are over ``spec.joint_names`` (length n) or over the arm joints only (length n_arm; the
    gripper joints then take their ``spec.home`` values). They are mapped by name to pinocchio's
    q layout, which may order joints differently and holds more of them: URDF mimic joints are
    set to ``multiplier * master + offset`` and other joints not in ``joint_names`` stay at
    pinocchio's neutral position (0).

    Cost (measured on this 2-core machine, pinocchio 2.7): ``fk`` about 10-20 µs per
    configuration; batches loop in Python, so B configurations cost B times that.
    Not thread-safe: one pinocchio ``Data`` is reused by every call; make one model per thread.

    Raises (constructor):
        ConfigError: pinocchio cannot build the URDF, or ``spec.ee_link`` / a joint is missing.
    """

    def __init__(self, spec: RobotSpec) -> None:
        import pinocchio as pin  # imported here so specs load without pinocchio installed

        self._pin = pin
        self.spec = spec
        try:
            self.model = pin.buildModelFromUrdf(str(spec.urdf_path))
        except (RuntimeError, ValueError) as e:
            raise ConfigError(spec.urdf_path, "", f"pinocchio cannot build the model: {e}") from None
        self.data = self.model.createData()
        m = self.model
        urdf_joints = parse_urdf_joints(spec.urdf_path)
        pin_names = list(m.names)
        col = {j: i for i, j in enumerate(spec.joint_names)}
        q1_pin, q1_col, q2_pin, q2_col, v_pin, v_col = [], [], [], [], [], []
        mimic_pin, mimic_col, mimic_mul, mimic_off = [], [], [], []
        mimic_v_pin, mimic_v_col = [], []
        for jid in range(1, m.njoints):
            jname, jm = pin_names[jid], m.joints[jid]
            if jname in col:
                if jm.nq == 1:
                    q1_pin.append(jm.idx_q)
                    q1_col.append(col[jname])
                elif jm.nq == 2 and jm.nv == 1:  # continuous joint stored as (cos, sin)
                    q2_pin.append(jm.idx_q)
                    q2_col.append(col[jname])
                else:
                    raise ConfigError(spec.urdf_path, f"joint[{jname}]",
                                      f"unsupported joint with nq={jm.nq}, nv={jm.nv}")
                v_pin.append(jm.idx_v)
                v_col.append(col[jname])
            else:
                uj = urdf_joints.get(jname)
                if uj is not None and uj.mimic is not None and uj.mimic[0] in col and jm.nq == 1:
                    mimic_pin.append(jm.idx_q)
                    mimic_col.append(col[uj.mimic[0]])
                    mimic_mul.append(uj.mimic[1])
                    mimic_off.append(uj.mimic[2])
                    mimic_v_pin.append(jm.idx_v)
                    mimic_v_col.append(col[uj.mimic[0]])
        missing = [j for j in spec.joint_names if j not in pin_names]
        if missing:
            raise ConfigError(spec.urdf_path, "", f"joints {missing} not in the pinocchio model")
        as_idx = lambda x: np.asarray(x, dtype=np.intp)  # noqa: E731
        self._q1_pin, self._q1_col = as_idx(q1_pin), as_idx(q1_col)
        self._q2_pin, self._q2_col = as_idx(q2_pin), as_idx(q2_col)
        self._mimic_pin, self._mimic_col = as_idx(mimic_pin), as_idx(mimic_col)
        self._mimic_mul, self._mimic_off = np.asarray(mimic_mul), np.asarray(mimic_off)
        # Jacobian columns: pinocchio v index of each arm joint, plus mimic contributions.
        arm_set = set(range(spec.n_arm))
        self._arm_v = as_idx([v for v, c in sorted(zip(v_pin, v_col), key=lambda t: t[1])
                              if c in arm_set])
        self._arm_mimic = [(v, c, mul) for v, c, mul in zip(mimic_v_pin, mimic_v_col, mimic_mul)
                           if c in arm_set]
        self._q_neutral = pin.neutral(m)
        self._home = np.asarray(spec.home, dtype=np.float64)
        self._arm_lower = np.asarray(spec.limits.lower[: spec.n_arm])
        self._arm_upper = np.asarray(spec.limits.upper[: spec.n_arm])
        self._frame_cache: dict[str, int] = {}
        self._ee_frame = self.frame_id(spec.ee_link)

    # ---------------------------------------------------------------- helpers

    def frame_id(self, link: str) -> int:
        """pinocchio frame index of URDF link ``link``.

        Raises:
            KeyError: ``link`` is not a link of the URDF.
        """
        fid = self._frame_cache.get(link)
        if fid is None:
            pin = self._pin
            if not self.model.existFrame(link, pin.FrameType.BODY):
                raise KeyError(f"{self.spec.urdf_path}: no link named {link!r}")
            fid = self.model.getFrameId(link, pin.FrameType.BODY)
            self._frame_cache[link] = fid
        return fid

    def full_q(self, q: np.ndarray) -> np.ndarray:
        """(n,) float64 over ``joint_names`` from q of length n or n_arm (gripper from home).

        Raises:
            ValueError: wrong length or non-finite values.
        """
        q = np.asarray(q, dtype=np.float64)
        n, n_arm = self.spec.n_joints, self.spec.n_arm
        if q.ndim != 1 or q.shape[0] not in (n, n_arm):
            raise ValueError(f"{self.spec.name}: expected q of shape ({n},) over joint_names or "
                             f"({n_arm},) over arm joints, got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"{self.spec.name}: q contains NaN or Inf: {q}")
        if q.shape[0] == n:
            return q
        full = self._home.copy()
        full[:n_arm] = q
        return full

    def pinocchio_q(self, q: np.ndarray) -> np.ndarray:
        """pinocchio configuration (model.nq,) for q over ``joint_names`` (or arm joints)."""
        q = self.full_q(q)
        qp = self._q_neutral.copy()
        qp[self._q1_pin] = q[self._q1_col]
        if self._q2_pin.size:
            qp[self._q2_pin] = np.cos(q[self._q2_col])
            qp[self._q2_pin + 1] = np.sin(q[self._q2_col])
        if self._mimic_pin.size:
            qp[self._mimic_pin] = self._mimic_mul * q[self._mimic_col] + self._mimic_off
        return qp

    def _place(self, q: np.ndarray) -> None:
        self._pin.forwardKinematics(self.model, self.data, self.pinocchio_q(q))

    # ---------------------------------------------------------------- forward kinematics

    def fk(self, q: np.ndarray) -> np.ndarray:
        """Pose of ``spec.ee_link`` in ``base_link``.

        Args:
            q: (n,) or (n_arm,) joint positions [rad]/[m], or a batch (B, n) / (B, n_arm).

        Returns:
            (4, 4) float64 homogeneous transform [m], or (B, 4, 4) for a batch.

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        q = np.asarray(q, dtype=np.float64)
        if q.ndim == 2:
            return np.stack([self.fk(qi) for qi in q]) if len(q) else np.empty((0, 4, 4))
        self._place(q)
        return self._pin.updateFramePlacement(self.model, self.data, self._ee_frame).homogeneous

    def fk_positions(self, q_batch: np.ndarray) -> np.ndarray:
        """End-effector positions for many configurations (a Python loop over pinocchio,
        ~10-20 µs per row; use it for per-command checks and rollout markers, not inner loops of
        large planners).

        Args:
            q_batch: (B, n) or (B, n_arm) joint positions [rad]/[m]; (n,) is treated as B = 1.

        Returns:
            (B, 3) float64 positions of ``spec.ee_link`` in ``base_link`` [m].

        Raises:
            ValueError: wrong shape or non-finite values.
        """
        q_batch = np.atleast_2d(np.asarray(q_batch, dtype=np.float64))
        if q_batch.ndim != 2:
            raise ValueError(f"expected q_batch of shape (B, n), got {q_batch.shape}")
        out = np.empty((q_batch.shape[0], 3))
        pin, m, d, fid = self._pin, self.model, self.data, self._ee_frame
        for b, q in enumerate(q_batch):
            pin.forwardKinematics(m, d, self.pinocchio_q(q))
            out[b] = pin.updateFramePlacement(m, d, fid).translation
        return out

    def link_poses(self, q: np.ndarray, links: Iterable[str]) -> dict[str, np.ndarray]:
        """Poses of several URDF links in ``base_link`` at one configuration.

        Args:
            q: (n,) or (n_arm,) joint positions [rad]/[m].
            links: URDF link names.

        Returns:
            link name -> (4, 4) float64 transform [m].

        Raises:
            KeyError: an unknown link. ValueError: bad q.
        """
        fids = {link: self.frame_id(link) for link in links}
        self._place(q)
        return {link: self._pin.updateFramePlacement(self.model, self.data, fid).homogeneous.copy()
                for link, fid in fids.items()}

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """Geometric Jacobian of ``spec.ee_link`` w.r.t. the arm joints.

        Expressed at the ee_link origin with axes aligned to ``base_link``
        (pinocchio ``LOCAL_WORLD_ALIGNED``): ``[v; omega] = J @ dq_arm``.

        Args:
            q: (n,) or (n_arm,) joint positions [rad]/[m].

        Returns:
            (6, n_arm) float64; rows 0-2 linear [m/rad], rows 3-5 angular [rad/rad].

        Raises:
            ValueError: bad q.
        """
        pin = self._pin
        J = pin.computeFrameJacobian(self.model, self.data, self.pinocchio_q(q), self._ee_frame,
                                     pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
        Ja = J[:, self._arm_v].copy()
        for v, c, mul in self._arm_mimic:
            Ja[:, c] += mul * J[:, v]
        return Ja

    # ---------------------------------------------------------------- inverse kinematics

    def ik(self, target_position: np.ndarray, target_rotation: np.ndarray | None = None,
           q0: np.ndarray | None = None, *, max_iterations: int = 200, tolerance: float = 1e-4,
           rotation_tolerance: float = 1e-3, damping: float = 1e-2, max_step: float = 0.2,
           restarts: int = 8) -> IKResult:
        """Damped-least-squares IK for ``spec.ee_link`` over the arm joints.

        Each iteration takes ``dq = J^T (J J^T + damping^2 I)^-1 e`` (damped least squares:
        Nakamura & Hanafusa 1986; Wampler 1986; survey: S. R. Buss, "Introduction to Inverse
        Kinematics with Jacobian Transpose, Pseudoinverse and Damped Least Squares methods",
        2004), scales it to at most ``max_step`` [rad] (2-norm), and clips q to
        ``spec.limits`` lower/upper, so every iterate respects the joint limits. ``e`` is the
        position error [m] (position-only) or [position error; rotation vector
        log(R_target R^T)] in ``base_link`` axes. If an attempt does not converge, up to
        ``restarts`` more start from fixed pseudo-random configurations (seed 0), so the result
        is deterministic; the attempt with the smallest error is returned. An attempt whose error
        falls by less than 5 % over 25 iterations (stuck at a limit or a singularity) yields to
        the next seed early.

        Args:
            target_position: (3,) [m] in ``base_link``.
            target_rotation: optional (3, 3) rotation matrix of ``ee_link`` in ``base_link``.
            q0: initial guess over ``joint_names`` (n) or arm joints (n_arm); default ``home``.
                Non-arm entries are kept unchanged in the result.
            max_iterations: iterations per attempt.
            tolerance: position tolerance [m].
            rotation_tolerance: rotation tolerance [rad] (full-pose IK only).
            damping: DLS damping factor lambda (same units as e).
            max_step: largest joint step per iteration [rad].
            restarts: extra attempts from deterministic random seeds.

        Returns:
            :class:`IKResult` (unpacks as ``q, converged, error``).

        Raises:
            ValueError: malformed target (shape, non-finite, not a rotation) or q0.
        """
        pin = self._pin
        p_t = np.asarray(target_position, dtype=np.float64)
        if p_t.shape != (3,) or not np.all(np.isfinite(p_t)):
            raise ValueError(f"target_position: expected a finite (3,) array, got {p_t!r}")
        R_t = None
        if target_rotation is not None:
            R_t = np.asarray(target_rotation, dtype=np.float64)
            if (R_t.shape != (3, 3) or not np.all(np.isfinite(R_t))
                    or not np.allclose(R_t @ R_t.T, np.eye(3), atol=1e-6)
                    or np.linalg.det(R_t) < 0):
                raise ValueError(f"target_rotation: expected a (3, 3) rotation matrix, got {R_t!r}")
        if max_iterations < 1 or tolerance <= 0 or rotation_tolerance <= 0 or max_step <= 0:
            raise ValueError("ik: max_iterations, tolerance, rotation_tolerance and max_step "
                             "must be positive")
        q_full = self.full_q(self._home if q0 is None else q0).copy()
        n_arm = self.spec.n_arm
        lo, hi = self._arm_lower, self._arm_upper
        rows = slice(0, 6) if R_t is not None else slice(0, 3)
        eye = np.eye(6 if R_t is not None else 3)

        def attempt(q_arm: np.ndarray) -> tuple[np.ndarray, float, float, int]:
            q = q_full.copy()
            q[:n_arm] = np.clip(q_arm, lo, hi)
            best = (q.copy(), math.inf, math.inf)
            window_start = math.inf
            for it in range(1, max_iterations + 1):
                self._place(q)
                T = pin.updateFramePlacement(self.model, self.data, self._ee_frame)
                e_p = p_t - T.translation
                err_p = float(np.linalg.norm(e_p))
                if R_t is not None:
                    e_r = pin.log3(R_t @ T.rotation.T)
                    err_r = float(np.linalg.norm(e_r))
                    e = np.concatenate([e_p, e_r])
                else:
                    err_r, e = 0.0, e_p
                if err_p + err_r < best[1] + best[2]:
                    best = (q.copy(), err_p, err_r)
                if err_p <= tolerance and err_r <= rotation_tolerance:
                    return q, err_p, err_r, it
                # stalled (local minimum at a limit or singularity): give the next seed a turn
                if it % _IK_STALL_WINDOW == 0:
                    if best[1] + best[2] > (1.0 - _IK_STALL_GAIN) * window_start:
                        return best[0], best[1], best[2], it
                    window_start = best[1] + best[2]
                J = self.jacobian(q)[rows]
                dq = J.T @ np.linalg.solve(J @ J.T + damping**2 * eye, e)
                norm = float(np.linalg.norm(dq))
                if norm > max_step:
                    dq *= max_step / norm
                q[:n_arm] = np.clip(q[:n_arm] + dq, lo, hi)
            return best[0], best[1], best[2], max_iterations

        rng = np.random.default_rng(0)
        # finite sampling box for seeds (continuous / +-2 pi joints sampled in [-pi, pi])
        s_lo, s_hi = np.maximum(lo, -math.pi), np.minimum(hi, math.pi)
        starts = [q_full[:n_arm]] + [rng.uniform(s_lo, s_hi) for _ in range(max(0, restarts))]
        best_res: IKResult | None = None
        total = 0
        for start in starts:
            q, err_p, err_r, its = attempt(start)
            total += its
            ok = err_p <= tolerance and err_r <= rotation_tolerance
            if best_res is None or ok or err_p + err_r < best_res.error + best_res.rotation_error:
                best_res = IKResult(q, ok, err_p, err_r, total)
            if ok:
                break
        best_res.iterations = total
        return best_res
