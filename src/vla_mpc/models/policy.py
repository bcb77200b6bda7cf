"""The learned dual-system policy (contract E): :class:`PolicyConfig` and :class:`DualSystemPolicy`.

System 2 (:class:`~vla_mpc.models.vlm.CompactVLM`, ~2 Hz) maps camera frames + the instruction's
sentence embedding to ``z`` (latent_tokens, latent_dim); System 1
(:class:`~vla_mpc.models.action_expert.ActionExpert`, every chunk) maps ``z`` + proprioception to a
chunk of absolute joint position targets. Both are trained jointly through ``z`` with System 1's
generative loss (GR00T N1 / Helix train the two end to end the same way).

Normalisation (statistics travel with the checkpoint, in ``config.json``): proprioception
``(p - mean) / std`` with the dataset's ``stats["proprio"]``; actions either

* ``action_mode = "delta"`` (default): the chunk relative to the measured joint positions,
  ``(a - q) / std_delta`` with ``stats["action_delta"]`` (:func:`delta_action_stats`; each chunk
  then starts near zero whatever the arm's pose, which is what a chunk is: a short motion from
  here), or
* ``"absolute"``: ``(a - mean) / std`` with the dataset's ``stats["action"]``, or
* ``"ee"``: the chunk as end-effector positions relative to the measured one, orientations
  and the other joints' (gripper) targets (:mod:`vla_mpc.models.ee_actions`), ``(f - mean) / std``
  with ``stats["action_ee"]``;
  :meth:`DualSystemPolicy.sample_chunk` turns sampled poses back into joint targets with damped
  least-squares IK, so every caller still receives joint targets.

No rclpy here.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from vla_mpc.models.action_expert import (
    SAMPLERS,
    ActionExpert,
    cosine_alpha_bar,
    ddim_sample,
    ddim_timesteps,
    diffusion_loss,
    flow_matching_loss,
    flow_sample,
    rtc_weights,
)
from vla_mpc.models.ee_actions import rotation_log
from vla_mpc.models.text import TEXT_DIM, TEXT_TOKEN_COUNTS
from vla_mpc.models.vision import images_to_tensor, random_shift
from vla_mpc.models.vlm import ROLE_KEYPOINT_DIM, CompactVLM, cell_splat
from vla_mpc.sim.tasks import NUM_TASK_KEYPOINTS, TASK_KINDS

__all__ = ["ACTION_MODES", "ACTION_STATS_GROUP", "SYSTEM1_CONDITIONS", "SYSTEM1_STATES", "PolicyConfig",
           "DualSystemPolicy", "delta_action_stats", "isotropic_xy_stats", "validate_stats", "yaw_rotation"]

ACTION_MODES = ("delta", "absolute", "ee")

#: What System 1 is conditioned on (``PolicyConfig.system1_condition``).
SYSTEM1_CONDITIONS = ("latent", "keypoints")

#: How System 1 sees the robot's state (``PolicyConfig.system1_state``).
SYSTEM1_STATES = ("joints", "cartesian")

#: Scale of the tool centre point's velocity System 1 receives with ``system1_state = "cartesian"``
#: [m/s]: the scripted expert's tool moves at up to about 0.3 m/s, so the input stays O(1).
TCP_VELOCITY_SCALE = 0.25

#: Step of the finite difference that gives the tool's velocity from the joint velocities [s]
#: (``p(q + h v) - p(q)) / h``; its error is O(h) times the tool's acceleration, < 1 mm/s here).
_TCP_VELOCITY_STEP = 0.01

#: The statistics group each action_mode normalises with.
ACTION_STATS_GROUP = {"delta": "action_delta", "absolute": "action", "ee": "action_ee"}

#: Scale of the end-effector-relative keypoints System 1 receives (``keypoint_condition``) [m]:
#: the table reach of these tasks is a few tenths of a metre, so the inputs stay O(1).
KEYPOINT_REL_SCALE = 0.2


@dataclass(frozen=True)
class PolicyConfig:
    """Shapes and hyper-parameters of a :class:`DualSystemPolicy` (saved in ``config.json``).

    Attributes:
        robot: robot name (``config/<robot>.yaml``).
        joint_names: the action / proprio order (``RobotSpec.joint_names``); action_dim = its length.
        cameras: camera names, in the order of the images' camera axis.
        image_size: frame side S [px] after :func:`~vla_mpc.models.vision.resize_frame`, multiple of 16.
        vision_width: first-layer CNN channels (multiple of 8).
        d_model / vlm_layers / vlm_heads: System 2 transformer width, depth, heads.
        latent_tokens / latent_dim: shape of ``z``.
        chunk_size: H, steps per chunk; chunk_dt: time between them [s].
        expert_width / expert_blocks / cond_dim: System 1 denoiser size.
        sampler: ``"flow"`` (conditional flow matching, Euler) or ``"ddim"`` (DDPM-trained, DDIM-sampled).
        num_inference_steps: denoising steps per chunk.
        diffusion_train_steps: DDPM timesteps T (``ddim`` only).
        action_mode: ``"delta"``, ``"absolute"`` or ``"ee"`` (module docstring).
        rtc_frozen_steps: real-time chunking: committed steps that must match exactly.
        augment_shift: DrQ random-shift range during training [px] (0 = off).
        keypoint_head: System 2 also predicts the two task keypoints (:func:`vla_mpc.sim.tasks.
            task_keypoints`: the instruction's object and its goal, (2, 3) m in ``base_link``) with a
            linear read-out of ``z``, trained by an auxiliary MSE (needs ``stats["keypoints"]``).
            It makes ``z`` locate the named object from the image instead of leaving that to the
            action loss alone (the auxiliary pose targets of Levine et al. 2016, Sec. 4.2).
        keypoint_weight: weight of that MSE (in normalised keypoint units) beside the action loss.
        keypoint_condition: System 1 also receives the keypoints System 2 reads, relative to the
            end effector (forward kinematics of the measured joints, ``config/<robot>.yaml``'s
            ``ee_link``), divided by :data:`KEYPOINT_REL_SCALE`: an explicit "where is the target
            from the gripper" input, so the action expert maps a Cartesian error to joint motion
            instead of re-deriving both positions from ``z`` (needs ``keypoint_head``; the
            keypoints enter detached, so the action loss never moves the keypoint head).
        system1_condition: ``"latent"`` (default): System 1 reads the whole ``z`` (its tokens,
            flattened) beside the state. ``"keypoints"``: System 1 reads only what System 2's
            heads read out of ``z``: the two task keypoints relative to the end effector (as
            ``keypoint_condition``) and the task kind (a ``task_head``, a linear read-out of ``z``
            trained with cross-entropy on :data:`~vla_mpc.sim.tasks.TASK_KINDS`, given to System 1
            as a one-hot of its arg-max). That is a narrow, object-centric interface between the
            two systems (System 2 says what to do and where; System 1 how to move), as in
            RT-Trajectory (Gu et al. 2023) or HAMSTER (Li et al. 2025), where a VLM's 2-D
            sketch or path conditions the low-level policy: System 1 then cannot fit the
            training layouts' pixels, and it can be trained on the dataset's true keypoints
            (with noise and System 2's lag) without rendering a frame. Needs ``keypoint_head``
            and ``keypoint_condition``.
        text_tokens: System 2's text input: 1, the instruction's sentence embedding; 3, also the
            embeddings of its object and goal phrases (:func:`vla_mpc.models.text.
            instruction_phrases`; a sentence embedding does not say which colour is the object
            and which the destination).
        feature_points: 0 (default), or N > 0: ``z``'s last token is System 2's read-out of N
            instruction-conditioned spatial soft-argmax points on the CNN's stride-8 features
            (:class:`~vla_mpc.models.vlm.FeaturePoints`; Levine et al. 2016), so the keypoint head
            on ``z`` gets positions finer than the transformer's 16 px cells. Needs
            ``latent_tokens`` >= 2.
        role_points: the feature points split by role (:class:`~vla_mpc.models.vlm.CompactVLM`):
            half queried by the object phrase, half by the goal phrase, each keypoint read by its
            own MLP from its role's points, and the keypoint head is ``z[:, -1, :6]`` (the
            keypoints System 2 wrote there) instead of a linear map of all of ``z``. Needs
            ``text_tokens`` 3, an even ``feature_points`` >= 2, ``keypoint_head`` and
            ``latent_dim`` > 6.
        keypoint_pixel_weight: weight of a second keypoint term for ``role_points``: each
            role's first map is supervised with the cross-entropy (less the target's entropy,
            so 0 at best) to the cell distribution whose expectation is where the keypoint
            projects into the frame (:func:`~vla_mpc.models.vlm.cell_splat`; the batch's
            ``keypoint_uv``, from the sim camera's geometry in training). The maps then learn
            where the named object is straight from its pixels instead of through the 3-D
            read-out alone (heatmap supervision, as in keypoint detectors: Tompson et al.
            2014, Newell et al. 2016). 0 (default) = off.
        system1_state: how System 1 sees the robot. ``"joints"`` (default): every joint's
            normalised position and velocity. ``"cartesian"``: no arm joint position at all; the
            tool centre point's velocity (``base_link``, / :data:`TCP_VELOCITY_SCALE`), its
            orientation as a rotation vector from the home pose's, and the other joints'
            (gripper) normalised positions and velocities, beside the end-effector-relative
            keypoints and the task kind. Everything System 1 then reads about positions is
            relative to the tool, so a policy cannot tell two layouts apart by where the arm is
            (a System 1 on joint positions can fit its ~100 training layouts per task and miss
            new ones), and a rotation of the scene about ``base_link``'s z axis rotates its
            inputs and its action's position part alike: training may then rotate both
            (``s1_yaw`` in :meth:`DualSystemPolicy.loss`; ``train policy --yaw-augment``), so
            one push direction's demonstrations teach the others. Needs
            ``system1_condition = "keypoints"`` and ``action_mode = "ee"``.
    """

    robot: str
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...] = ("front",)
    image_size: int = 96
    vision_width: int = 32
    d_model: int = 128
    vlm_layers: int = 2
    vlm_heads: int = 4
    latent_tokens: int = 8
    latent_dim: int = 64
    chunk_size: int = 16
    chunk_dt: float = 0.05
    expert_width: int = 256
    expert_blocks: int = 2
    cond_dim: int = 256
    sampler: str = "flow"
    num_inference_steps: int = 10
    diffusion_train_steps: int = 100
    action_mode: str = "delta"
    rtc_frozen_steps: int = 2
    augment_shift: int = 4
    keypoint_head: bool = False
    keypoint_weight: float = 1.0
    keypoint_condition: bool = False
    system1_condition: str = "latent"
    text_tokens: int = 1
    feature_points: int = 0
    system1_state: str = "joints"
    role_points: bool = False
    keypoint_pixel_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(str(j) for j in self.joint_names))
        object.__setattr__(self, "cameras", tuple(str(c) for c in self.cameras))
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"joint_names must be non-empty and unique, got {list(self.joint_names)}")
        if not self.cameras:
            raise ValueError("cameras must name at least one camera")
        ints = {"image_size": 16, "vision_width": 8, "d_model": 8, "vlm_layers": 1, "vlm_heads": 1,
                "latent_tokens": 1, "latent_dim": 1, "chunk_size": 2, "expert_width": 8, "expert_blocks": 1,
                "cond_dim": 8, "num_inference_steps": 1, "diffusion_train_steps": 2}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"PolicyConfig.{name} must be an int >= {low}, got {v!r}")
        if self.image_size % 16:
            raise ValueError(f"PolicyConfig.image_size must be a multiple of 16, got {self.image_size}")
        if self.vision_width % 8:
            raise ValueError(f"PolicyConfig.vision_width must be a multiple of 8, got {self.vision_width}")
        if self.d_model % self.vlm_heads:
            raise ValueError(f"PolicyConfig.vlm_heads ({self.vlm_heads}) must divide d_model ({self.d_model})")
        if not (isinstance(self.chunk_dt, (int, float)) and math.isfinite(self.chunk_dt) and self.chunk_dt > 0):
            raise ValueError(f"PolicyConfig.chunk_dt must be a finite number > 0 s, got {self.chunk_dt!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"PolicyConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.sampler == "ddim" and self.num_inference_steps > self.diffusion_train_steps:
            raise ValueError(f"PolicyConfig.num_inference_steps ({self.num_inference_steps}) must be <= "
                             f"diffusion_train_steps ({self.diffusion_train_steps}) for ddim")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"PolicyConfig.action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if not isinstance(self.keypoint_condition, bool) or (self.keypoint_condition and not self.keypoint_head):
            raise ValueError(f"PolicyConfig.keypoint_condition must be a bool and needs keypoint_head, got "
                             f"{self.keypoint_condition!r} (keypoint_head {self.keypoint_head!r})")
        if isinstance(self.text_tokens, bool) or self.text_tokens not in TEXT_TOKEN_COUNTS:
            raise ValueError(f"PolicyConfig.text_tokens must be one of {TEXT_TOKEN_COUNTS}, got {self.text_tokens!r}")
        if self.system1_condition not in SYSTEM1_CONDITIONS:
            raise ValueError(f"PolicyConfig.system1_condition must be one of {SYSTEM1_CONDITIONS}, got "
                             f"{self.system1_condition!r}")
        if self.system1_condition == "keypoints" and not self.keypoint_condition:
            raise ValueError("PolicyConfig.system1_condition 'keypoints' needs keypoint_head and keypoint_condition")
        if not isinstance(self.keypoint_head, bool):
            raise ValueError(f"PolicyConfig.keypoint_head must be a bool, got {self.keypoint_head!r}")
        if not (isinstance(self.keypoint_weight, (int, float)) and not isinstance(self.keypoint_weight, bool)
                and math.isfinite(self.keypoint_weight) and self.keypoint_weight >= 0):
            raise ValueError(f"PolicyConfig.keypoint_weight must be a finite number >= 0, got {self.keypoint_weight!r}")
        if self.system1_state not in SYSTEM1_STATES:
            raise ValueError(f"PolicyConfig.system1_state must be one of {SYSTEM1_STATES}, got {self.system1_state!r}")
        if self.system1_state == "cartesian" and (self.system1_condition != "keypoints" or self.action_mode != "ee"):
            raise ValueError("PolicyConfig.system1_state 'cartesian' needs system1_condition 'keypoints' and "
                             f"action_mode 'ee', got {self.system1_condition!r} and {self.action_mode!r}")
        if self.feature_points and self.latent_tokens < 2:
            raise ValueError(f"PolicyConfig.feature_points needs latent_tokens >= 2, got {self.latent_tokens}")
        if not isinstance(self.role_points, bool):
            raise ValueError(f"PolicyConfig.role_points must be a bool, got {self.role_points!r}")
        if self.role_points and (self.text_tokens != 3 or not self.keypoint_head or self.feature_points < 2
                                 or self.feature_points % 2 or self.latent_dim <= ROLE_KEYPOINT_DIM):
            raise ValueError(f"PolicyConfig.role_points needs text_tokens 3, keypoint_head, an even feature_points "
                             f">= 2 and latent_dim > {ROLE_KEYPOINT_DIM}, got {self.text_tokens}, "
                             f"{self.keypoint_head}, {self.feature_points}, {self.latent_dim}")
        w = self.keypoint_pixel_weight
        if not (isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0) \
                or (w > 0 and not self.role_points):
            raise ValueError(f"PolicyConfig.keypoint_pixel_weight must be a finite number >= 0 (> 0 needs "
                             f"role_points), got {w!r} (role_points {self.role_points})")
        for name in ("rtc_frozen_steps", "augment_shift", "feature_points"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"PolicyConfig.{name} must be an int >= 0, got {v!r}")

    @property
    def action_dim(self) -> int:
        return len(self.joint_names)

    @property
    def task_head(self) -> bool:
        """System 2 has a task-kind read-out (``system1_condition == "keypoints"``)."""
        return self.system1_condition == "keypoints"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["joint_names"], d["cameras"] = list(self.joint_names), list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        """Build from a dict; raises ValueError naming unknown or missing keys."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig key(s) {unknown}")
        missing = sorted(k for k in ("robot", "joint_names") if k not in d)
        if missing:
            raise ValueError(f"PolicyConfig lacks required key(s) {missing}")
        return cls(**d)


def yaw_rotation(yaw: torch.Tensor) -> torch.Tensor:
    """Rotations about ``base_link``'s z axis: yaw (B,) [rad] -> (B, 3, 3) float32."""
    c, s = torch.cos(yaw.float()), torch.sin(yaw.float())
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], dim=1)


def isotropic_xy_stats(group: dict) -> dict:
    """End-effector action statistics (``stats["action_ee"]``) made invariant to rotations about z.

    Under random yaw rotations (``PolicyConfig.system1_state = "cartesian"``, ``s1_yaw``) the
    position part's x and y mix, so their normalisation must not depend on the axis: mean 0 and
    one std, the root of the mean second moment of x and y. Orientation and gripper entries are
    kept (the tool's orientation does not turn with the scene).

    Args:
        group: ``{"mean": [dim], "std": [dim], ...}`` with dim >= 6 (position first).

    Returns:
        A copy with entries 0 and 1 of ``mean`` / ``std`` replaced (other keys dropped: ``min`` /
        ``max`` no longer describe the rotated data).

    Raises:
        ValueError: fewer than 3 entries.
    """
    mean, std = [float(x) for x in group["mean"]], [float(x) for x in group["std"]]
    if len(mean) < 3 or len(std) != len(mean):
        raise ValueError(f"expected end-effector statistics with >= 3 entries, got {len(mean)} / {len(std)}")
    second = [m * m + sd * sd for m, sd in zip(mean[:2], std[:2])]
    r = math.sqrt(sum(second) / 2.0)
    mean[0] = mean[1] = 0.0
    std[0] = std[1] = max(r, 1e-3)
    return {"mean": mean, "std": std}


def delta_action_stats(proprio: np.ndarray, actions: np.ndarray, max_rows: int = 200_000) -> dict:
    """Statistics of chunks relative to the measured positions, ``actions - proprio[:, None, :A]``.

    Args:
        proprio: (N, 2A) positions then velocities; actions: (N, H, A) absolute targets.
        max_rows: evenly strided subset size (bounds the cost on big datasets).

    Returns:
        ``{"mean": [A], "std": [A] (floored at 1e-3, as the dataset's stats), "min": [A], "max": [A]}``.
    """
    n = actions.shape[0]
    idx = np.arange(0, n, max(1, n // max_rows))
    a = np.asarray(actions[idx], dtype=np.float64)
    q = np.asarray(proprio[idx], dtype=np.float64)[:, None, : a.shape[2]]
    d = (a - q).reshape(-1, a.shape[2])
    return {"mean": d.mean(0).tolist(), "std": np.maximum(d.std(0), 1e-3).tolist(),
            "min": d.min(0).tolist(), "max": d.max(0).tolist()}


def validate_stats(stats: dict, config: PolicyConfig, action_features: int | None = None) -> None:
    """Check the normalisation statistics against the config.

    Args:
        action_features: the size of System 1's action rows (``action_mode = "ee"``: 6 + the
            robot's non-arm joints); default ``config.action_dim``.

    Raises:
        ValueError: a missing group/field, a wrong length or a non-finite / non-positive std,
            naming the key.
    """
    a = config.action_dim
    groups = {"proprio": 2 * a, ACTION_STATS_GROUP[config.action_mode]: action_features or a}
    if config.keypoint_head:
        groups["keypoints"] = NUM_TASK_KEYPOINTS * 3
    for group, n in groups.items():
        if not isinstance(stats, dict) or group not in stats:
            raise ValueError(f"stats lack {group!r} (action_mode {config.action_mode!r} needs it)")
        for key in ("mean", "std"):
            v = np.asarray(stats[group].get(key, []), dtype=np.float64)
            if v.shape != (n,):
                raise ValueError(f"stats[{group!r}][{key!r}] must have {n} values, got shape {v.shape}")
            if not np.all(np.isfinite(v)) or (key == "std" and np.any(v <= 0)):
                raise ValueError(f"stats[{group!r}][{key!r}] must be finite (std > 0)")


class DualSystemPolicy(nn.Module):
    """System 2 + System 1 with their normalisation.

    Args:
        config: :class:`PolicyConfig`.
        stats: dataset statistics (contract B ``meta["stats"]``, plus ``"action_delta"`` from
            :func:`delta_action_stats` for ``action_mode = "delta"``, or ``"action_ee"`` from
            :meth:`~vla_mpc.models.ee_actions.EndEffectorActions.stats` for ``"ee"``).

    Attributes:
        output_dim: size of System 1's action rows (``action_dim``, or 6 + non-arm joints for ``ee``).

    Raises:
        ValueError: bad stats (:func:`validate_stats`).
        ConfigError: ``keypoint_condition`` or ``action_mode = "ee"`` for a robot whose
            ``config/<robot>.yaml`` / URDF does not load (they need its kinematics).
    """

    def __init__(self, config: PolicyConfig, stats: dict) -> None:
        super().__init__()
        c = config
        a = c.action_dim
        self._robot_model = self._ee = None
        self._kinematics_lock = threading.Lock()  # one pinocchio Data, shared by every System 1 thread
        if c.keypoint_condition or c.action_mode == "ee":
            from vla_mpc.core.robot_model import RobotModel, load_robot_spec
            from vla_mpc.models.ee_actions import EndEffectorActions, tcp_floor_from_spec

            spec = load_robot_spec(c.robot)
            self._robot_model = RobotModel(spec)
            if c.action_mode == "ee":  # chunks never aim the tool below the safety monitor's table limit
                self._ee = EndEffectorActions(self._robot_model, tcp_floor=tcp_floor_from_spec(spec))
        self.output_dim = self._ee.dim if self._ee is not None else a
        validate_stats(stats, config, self.output_dim)
        self.config = config
        self.stats = {k: {kk: [float(x) for x in vv] for kk, vv in v.items()} for k, v in stats.items()}
        self.system2 = CompactVLM(len(c.cameras), c.image_size, c.vision_width, c.d_model, c.vlm_layers,
                                  c.vlm_heads, c.latent_tokens, c.latent_dim, c.text_tokens, c.feature_points,
                                  c.role_points)
        extra = NUM_TASK_KEYPOINTS * 3 if c.keypoint_condition else 0
        extra += len(TASK_KINDS) if c.task_head else 0
        s1_tokens = 0 if c.system1_condition == "keypoints" else c.latent_tokens  # read-outs only
        self._n_arm = self._robot_model.spec.n_arm if self._robot_model is not None else a
        # "cartesian": tool velocity (3), tool orientation (3), the other joints' positions and velocities
        state = 6 + 2 * (a - self._n_arm) if c.system1_state == "cartesian" else 2 * a
        self.system1 = ActionExpert(s1_tokens, c.latent_dim, state + extra, c.chunk_size, self.output_dim,
                                    c.expert_width, c.expert_blocks, c.cond_dim)
        group = ACTION_STATS_GROUP[c.action_mode]
        t = lambda g, k: torch.tensor(stats[g][k], dtype=torch.float32)  # noqa: E731
        self.register_buffer("proprio_mean", t("proprio", "mean"), persistent=False)
        self.register_buffer("proprio_std", t("proprio", "std"), persistent=False)
        self.register_buffer("action_mean", t(group, "mean"), persistent=False)
        self.register_buffer("action_std", t(group, "std"), persistent=False)
        if c.keypoint_head:
            if not c.role_points:  # role points: System 2 writes the keypoints into z itself
                self.keypoint_head = nn.Linear(c.latent_tokens * c.latent_dim, NUM_TASK_KEYPOINTS * 3)
            self.register_buffer("keypoint_mean", t("keypoints", "mean"), persistent=False)
            self.register_buffer("keypoint_std", t("keypoints", "std"), persistent=False)
        if c.task_head:
            self.task_head = nn.Linear(c.latent_tokens * c.latent_dim, len(TASK_KINDS))
        self.register_buffer("alpha_bar", cosine_alpha_bar(c.diffusion_train_steps).float(), persistent=False)
        self._schedule_cache: dict[tuple, torch.Tensor] = {}

    @property
    def ee_actions(self):
        """The :class:`~vla_mpc.models.ee_actions.EndEffectorActions` of ``action_mode = "ee"``, else
        None. Not thread-safe: use it before the policy runs (training's pose table)."""
        return self._ee

    # ---------------------------------------------------------------------------- normalisation
    def normalize_proprio(self, proprio: torch.Tensor) -> torch.Tensor:
        """(B, 2A) raw [rad, m, rad/s, m/s] -> normalised."""
        return (proprio - self.proprio_mean) / self.proprio_std

    def system1_input(self, z: torch.Tensor, proprio: torch.Tensor, keypoints: torch.Tensor | None = None,
                      task_kind: torch.Tensor | None = None,
                      yaw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """System 1's inputs: the latent part and the state part.

        The state part is the normalised proprio (B, 2A) (``system1_state = "cartesian"``:
        instead the tool's velocity / ``TCP_VELOCITY_SCALE`` (3), its orientation as a rotation
        vector from the home pose's [rad] (3) and the non-arm joints' normalised positions and
        velocities), plus with ``keypoint_condition`` the keypoints minus the end-effector
        position, / ``KEYPOINT_REL_SCALE`` (B, 6), plus with ``system1_condition = "keypoints"``
        the task kind one-hot (B, len(TASK_KINDS)). The latent part is ``z`` (``"latent"``) or
        an empty (B, 0, Dz) (``"keypoints"``).

        Args:
            z: (B, Tz, Dz) latent.
            proprio: (B, 2A) raw positions then velocities.
            keypoints: (B, 2, 3) [m, base_link] to use instead of those read from ``z`` (training
                on the dataset's keypoints), or None.
            task_kind: (B,) int64 indices into ``TASK_KINDS`` to use instead of ``task_head``'s
                arg-max, or None.
            yaw: (B,) [rad] rotation of the scene about ``base_link``'s z applied to the
                Cartesian inputs (the relative keypoints and the tool's velocity; training
                augmentation, ``"cartesian"`` only), or None.

        Returns:
            (latent part (B, Tz or 0, Dz), state part (B, state + [6] [+ len(TASK_KINDS)])).

        Raises:
            ValueError: ``yaw`` for a policy whose System 1 reads joint positions.
        """
        c = self.config
        p = self.normalize_proprio(proprio)
        z_in = z[:, :0] if c.system1_condition == "keypoints" else z
        if not c.keypoint_condition:
            return z_in, p
        cartesian = c.system1_state == "cartesian"
        if yaw is not None and not cartesian:
            raise ValueError("yaw rotations need system1_state 'cartesian' (joint positions do not rotate)")
        with torch.no_grad():
            if keypoints is None:
                keypoints = self._keypoint_readout(z.detach()) * self.keypoint_std + self.keypoint_mean
            kp = keypoints.float().reshape(-1, NUM_TASK_KEYPOINTS, 3)
            q = proprio[:, : c.action_dim].detach().double().numpy()
            with self._kinematics_lock:
                if cartesian:
                    T = self._robot_model.fk(q)
                    ahead = self._robot_model.fk_positions(
                        q + _TCP_VELOCITY_STEP * proprio[:, c.action_dim:].detach().double().numpy())
                else:
                    ee_np = self._robot_model.fk_positions(q)
            if cartesian:
                ee = torch.from_numpy(T[:, :3, 3]).float()
                tcp_v = torch.from_numpy((ahead - T[:, :3, 3]) / _TCP_VELOCITY_STEP).float()
                turn = torch.from_numpy(rotation_log(T[:, :3, :3] @ self._ee.home_rotation.T)).float()
                rel = kp - ee[:, None, :]
                if yaw is not None:
                    R = yaw_rotation(yaw)
                    rel = rel @ R.transpose(1, 2)
                    tcp_v = (R @ tcp_v[:, :, None])[:, :, 0]
                a, na = c.action_dim, self._n_arm
                state = torch.cat([tcp_v / TCP_VELOCITY_SCALE, turn, p[:, na:a], p[:, a + na:]], dim=1)
            else:
                state, rel = p, kp - torch.from_numpy(ee_np).float()[:, None, :]
            parts = [state, rel.flatten(1) / KEYPOINT_REL_SCALE]
            if c.task_head:
                if task_kind is None:
                    task_kind = self.task_head(z.detach().flatten(1)).argmax(dim=1)
                parts.append(nn.functional.one_hot(task_kind.long(), len(TASK_KINDS)).float())
        return z_in, torch.cat(parts, dim=1)

    def normalize_actions(self, actions: torch.Tensor, proprio: torch.Tensor,
                          action_poses: torch.Tensor | None = None, yaw: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, A) absolute targets -> normalised System 1 rows (B, H, output_dim) (module docstring;
        ``ee``: forward kinematics of every target, ~15 µs each, no gradient, unless ``action_poses``
        (B, H, 6) gives them: :meth:`~vla_mpc.models.ee_actions.EndEffectorActions.target_poses`,
        which training computes once per dataset row; ``yaw`` (B,) [rad] rotates the position
        part about z, as :meth:`system1_input` rotates the inputs). ValueError on mismatched
        shapes, or ``yaw`` outside ``action_mode = "ee"``."""
        q = proprio[:, : self.config.action_dim]
        if yaw is not None and self._ee is None:
            raise ValueError("yaw rotations need action_mode 'ee'")
        if self._ee is not None:
            poses = None if action_poses is None else action_poses.detach().double().numpy()
            with self._kinematics_lock:
                f = self._ee.features(q.detach().double().numpy(), actions.detach().double().numpy(), poses)
            f = torch.from_numpy(f).float()
            if yaw is not None:
                f = torch.cat([f[..., :3] @ yaw_rotation(yaw).transpose(1, 2), f[..., 3:]], dim=-1)
            return (f - self.action_mean) / self.action_std
        base = q[:, None] if self.config.action_mode == "delta" else 0.0
        return (actions - base - self.action_mean) / self.action_std

    def denormalize_actions(self, x: torch.Tensor, proprio: torch.Tensor,
                            committed: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of :meth:`normalize_actions`: (B, H, output_dim) -> (B, H, A) absolute targets
        (``ee``: damped least-squares IK along the chunk, about 2 ms per chunk on this CPU, the
        first P steps taken from ``committed`` (B, P, A) when given)."""
        q = proprio[:, : self.config.action_dim]
        if self._ee is not None:
            f = (x * self.action_std + self.action_mean).detach().double().numpy()
            fixed = None if committed is None else committed.detach().double().numpy()
            with self._kinematics_lock:
                a = self._ee.to_joint_targets(q.detach().double().numpy(), f, fixed)
            return torch.from_numpy(a).float()
        base = q[:, None] if self.config.action_mode == "delta" else 0.0
        return x * self.action_std + self.action_mean + base

    # --------------------------------------------------------------------------------- System 2
    def encode(self, images: torch.Tensor, text_emb: torch.Tensor, augment: bool = False, return_maps: bool = False
               ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """System 2: images uint8 (B, S, S, 3) or (B, N_cam, S, S, 3) + text_emb (B, text_tokens, 384)
        float32 (or (B, 384) with one text token) -> z (B, Tz, Dz).

        With ``return_maps``: (z, maps, shift): the role maps of
        :meth:`~vla_mpc.models.vlm.CompactVLM.forward` (B, N_cam, 2, G, G) or None, and how far
        the augmentation moved each frame's content, (B, N_cam, 2) int64 [px] (dx right, dy down;
        zeros without ``augment``).

        Raises:
            ValueError: wrong image or text shapes.
        """
        if images.dim() == 4:
            images = images.unsqueeze(1)
        s = self.config.image_size
        if images.dim() != 5 or tuple(images.shape[2:]) != (s, s, 3):
            raise ValueError(f"images must be (B, [N_cam,] {s}, {s}, 3) uint8 (resize_frame to image_size {s}), "
                             f"got {tuple(images.shape)}")
        x = images_to_tensor(images)  # [B, N, 3, S, S]
        shift = torch.zeros(x.shape[0], x.shape[1], 2, dtype=torch.int64)
        if augment and self.config.augment_shift > 0:
            flat, moved = random_shift(x.flatten(0, 1), self.config.augment_shift, return_shift=True)
            x, shift = flat.view_as(x), moved.view_as(shift)
        t = self.config.text_tokens
        if text_emb.shape[-1] != TEXT_DIM or not (text_emb.dim() == 3 and text_emb.shape[1] == t
                                                  or text_emb.dim() == 2 and t == 1):
            raise ValueError(f"text_emb must be (B, {t}, {TEXT_DIM})" + (f" or (B, {TEXT_DIM})" if t == 1 else "")
                             + f" (TextEncoder.encode_instruction), got {tuple(text_emb.shape)}")
        if not return_maps:
            return self.system2(x, text_emb.float())
        z, maps = self.system2(x, text_emb.float(), return_maps=True)
        return z, maps, shift

    def _pixel_loss(self, maps: torch.Tensor, shift: torch.Tensor, uv: torch.Tensor) -> torch.Tensor | None:
        """``keypoint_pixel_weight``'s term: mean KL from :func:`~vla_mpc.models.vlm.cell_splat` of
        the (shifted) pixel targets ``uv`` (B, [N_cam,] 2, 2) to the role maps (B, N_cam, 2, G, G)
        [nats]; None when no target is finite and inside the frame."""
        b, n, roles, g, _ = maps.shape
        uv = uv.float().reshape(b, -1, roles, 2)
        if uv.shape[1] != n:
            raise ValueError(f"keypoint_uv has {uv.shape[1]} camera(s), the frames {n}")
        uv = uv + (2.0 * shift.float() / self.config.image_size)[:, :, None, :]
        uv, maps = uv.reshape(-1, 2), maps.reshape(-1, g * g)
        ok = torch.isfinite(uv).all(dim=1) & (uv.abs() <= 1.0).all(dim=1)
        if not bool(ok.any()):
            return None
        target = cell_splat(uv[ok], g)
        entropy = -(target * target.clamp_min(1e-12).log()).sum(dim=1)
        cross = -(target * maps[ok].clamp_min(1e-12).log()).sum(dim=1)
        return (cross - entropy).mean()

    # --------------------------------------------------------------------------------- training
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Joint System 2 + System 1 loss (contract E).

        Args:
            batch: ``images`` uint8 (B, S, S, 3) or (B, N_cam, S, S, 3); ``text_emb`` float32
                (B, text_tokens, 384) (or (B, 384)); ``proprio`` float32 (B, 2A) raw; ``actions`` float32 (B, H, A) raw
                absolute targets [rad, m]; with ``keypoint_head``, optionally ``keypoints`` float32
                (B, 2, 3) [m] of the frame in ``images`` (rows with NaN are left out of that term),
                and ``scene_images`` (B2, S, S, 3) uint8 + ``scene_text_emb`` (B2, 384) +
                ``scene_keypoints`` (B2, 2, 3): extra rendered layouts without actions
                (:mod:`vla_mpc.training.scenes`) that only enter the keypoint term. With
                ``system1_condition = "keypoints"`` also ``task_kind`` int64 (B,) (and
                ``scene_task_kind`` (B2,)) for the task head, and System 1 learns from
                ``s1_proprio`` (B1, 2A), ``s1_actions`` (B1, H, A), ``s1_keypoints`` (B1, 2, 3)
                and ``s1_task_kind`` (B1,) (and optionally ``s1_yaw`` (B1,) [rad]: each row's
                scene rotated about z, ``system1_state = "cartesian"`` only) when given (rows without frames: the dataset's
                keypoints, System 2 not run), else from ``proprio``, ``actions``, ``keypoints``
                and ``task_kind``; rows with NaN keypoints are left out of System 1's term. A
                batch without ``images`` trains System 1 alone, one with images but neither
                ``actions`` nor ``s1_actions`` System 2 alone (``"keypoints"`` only). With
                ``action_mode = "ee"``, ``action_poses`` / ``s1_action_poses`` float64 or float32
                (B, H, 6) may give the targets' poses (:meth:`~vla_mpc.models.ee_actions.
                EndEffectorActions.target_poses`), saving their forward kinematics. With
                ``keypoint_pixel_weight`` > 0, ``keypoint_uv`` float32 (B, [N_cam,] 2, 2) (and
                ``scene_keypoint_uv`` (B2, ...)): where the keypoints appear in the unshifted
                frames, x right, y down in [-1, 1], NaN where unknown (``training.policy.
                PixelProjector``).

        Returns:
            (scalar loss, {"loss": ...[, "action_loss", "z_rms", "keypoint_loss", "pixel_loss",
            "task_loss"]}). Flow: MSE of the velocity ``a - eps``; ddim: MSE of the v-prediction;
            both in normalised action units; plus ``keypoint_weight`` x the keypoint MSE in
            normalised keypoint units; plus ``keypoint_pixel_weight`` x the role maps' KL to
            their pixel targets [nats]; plus the task head's cross-entropy [nats].

        Raises:
            ValueError: ``system1_condition = "keypoints"`` and the batch has no keypoints / task
                kinds, or no row with finite keypoints; a batch without images for a
                ``"latent"`` policy.
        """
        c = self.config
        frames = batch.get("images") is not None
        if not frames and c.system1_condition != "keypoints":
            raise ValueError("a batch without images only trains System 1 (system1_condition 'keypoints')")
        scenes = frames and c.keypoint_head and batch.get("scene_images") is not None
        pixels = frames and c.keypoint_pixel_weight > 0 and batch.get("keypoint_uv") is not None
        z = maps = shift = None
        if scenes:  # one System 2 pass over the demonstration frames and the extra layouts
            b = batch["images"].shape[0]
            images = batch["images"] if batch["images"].dim() == 5 else batch["images"].unsqueeze(1)
            scene_images = batch["scene_images"]
            scene_images = scene_images if scene_images.dim() == 5 else scene_images.unsqueeze(1)
            z_all, maps, shift = self.encode(torch.cat([images, scene_images]),
                                             torch.cat([batch["text_emb"].float(), batch["scene_text_emb"].float()]),
                                             augment=self.training, return_maps=True)
            z, z_scene = z_all[:b], z_all[b:]
            if pixels:
                scene_uv = batch.get("scene_keypoint_uv")
                scene_uv = (torch.full((scene_images.shape[0], *batch["keypoint_uv"].shape[1:]), float("nan"))
                            if scene_uv is None else scene_uv.float())
                uv = torch.cat([batch["keypoint_uv"].float(), scene_uv])
        elif frames:
            z, maps, shift = self.encode(batch["images"], batch["text_emb"], augment=self.training, return_maps=True)
            uv = batch.get("keypoint_uv")
        system1 = not (c.system1_condition == "keypoints" and frames and batch.get("s1_actions") is None
                       and batch.get("actions") is None)  # else System 2 alone (train policy --system2-only)
        if not system1:
            loss, info = torch.zeros(()), {}
        elif c.system1_condition == "keypoints":
            pre = "s1_" if batch.get("s1_proprio") is not None else ""
            missing = [pre + k for k in ("keypoints", "task_kind") if batch.get(pre + k) is None]
            if missing:
                raise ValueError(f"system1_condition 'keypoints' trains System 1 on the batch's {missing}")
            proprio, actions = batch[pre + "proprio"].float(), batch[pre + "actions"].float()
            kp, kind = batch[pre + "keypoints"].float(), batch[pre + "task_kind"]
            poses, yaw = batch.get(pre + "action_poses"), batch.get(pre + "yaw")
            rows = torch.isfinite(kp).flatten(1).all(dim=1)
            if not bool(rows.any()):
                raise ValueError("no System 1 row of the batch has finite keypoints")
            if not bool(rows.all()):
                proprio, actions, kp, kind = proprio[rows], actions[rows], kp[rows], kind[rows]
                poses = None if poses is None else poses[rows]
                yaw = None if yaw is None else yaw[rows]
            z_in, p = self.system1_input(proprio.new_zeros((proprio.shape[0], 0, c.latent_dim)), proprio, kp, kind,
                                         yaw=yaw)
        else:
            proprio, actions = batch["proprio"].float(), batch["actions"].float()
            poses, yaw = batch.get("action_poses"), None
            z_in, p = self.system1_input(z, proprio)
        if system1:
            a = self.normalize_actions(actions, proprio, poses, yaw=yaw)
            if c.sampler == "flow":
                loss = flow_matching_loss(lambda xt, t: self.system1(xt, t, z_in, p), a)
            else:
                loss = diffusion_loss(lambda xt, t: self.system1(xt, t, z_in, p), a, self.alpha_bar)
            info = {"action_loss": float(loss.detach())}
        if z is None:  # System 1 alone
            info["loss"] = info["action_loss"]
            return loss, info
        info["z_rms"] = float(z.detach().pow(2).mean().sqrt())
        preds, targets = [], []
        if c.keypoint_head and batch.get("keypoints") is not None:
            preds.append(self._keypoint_readout(z))
            targets.append(batch["keypoints"].float().flatten(1))
        if scenes:
            preds.append(self._keypoint_readout(z_scene))
            targets.append(batch["scene_keypoints"].float().flatten(1))
        if preds:
            pred = torch.cat(preds)
            target = (torch.cat(targets) - self.keypoint_mean) / self.keypoint_std
            valid = torch.isfinite(target).all(dim=1)
            if bool(valid.any()):
                kp_loss = (pred[valid] - target[valid]).pow(2).mean()
                info["keypoint_loss"] = float(kp_loss.detach())
                loss = loss + c.keypoint_weight * kp_loss
        if pixels and maps is not None:
            pixel_loss = self._pixel_loss(maps, shift, uv)
            if pixel_loss is not None:
                info["pixel_loss"] = float(pixel_loss.detach())
                loss = loss + c.keypoint_pixel_weight * pixel_loss
        if c.task_head:
            if batch.get("task_kind") is None:
                raise ValueError("the task head needs the batch's 'task_kind' for its frames")
            logits, kinds = [self.task_head(z.flatten(1))], [batch["task_kind"]]
            if scenes and batch.get("scene_task_kind") is not None:
                logits.append(self.task_head(z_scene.flatten(1)))
                kinds.append(batch["scene_task_kind"])
            task_loss = nn.functional.cross_entropy(torch.cat(logits), torch.cat(kinds).long())
            info["task_loss"] = float(task_loss.detach())
            loss = loss + task_loss
        info["loss"] = float(loss.detach())
        return loss, info

    @torch.inference_mode()
    def predict_task_kind(self, z: torch.Tensor) -> torch.Tensor:
        """System 2's reading of the task kind from its latent.

        Args:
            z: (B, Tz, Dz) float32.

        Returns:
            (B,) int64 indices into :data:`~vla_mpc.sim.tasks.TASK_KINDS`.

        Raises:
            RuntimeError: the policy has no task head (``system1_condition`` is not ``"keypoints"``).
        """
        if not self.config.task_head:
            raise RuntimeError("this policy has no task head (PolicyConfig.system1_condition is not 'keypoints')")
        return self.task_head(z.float().flatten(1)).argmax(dim=1)

    @torch.inference_mode()
    def predict_keypoints(self, z: torch.Tensor) -> torch.Tensor:
        """System 2's estimate of the task keypoints from its latent.

        Args:
            z: (B, Tz, Dz) float32.

        Returns:
            (B, 2, 3) float32 [m, ``base_link``]: the instruction's object and its goal
            (:func:`vla_mpc.sim.tasks.task_keypoints`).

        Raises:
            RuntimeError: the policy was built without ``keypoint_head``.
        """
        if not self.config.keypoint_head:
            raise RuntimeError("this policy has no keypoint head (PolicyConfig.keypoint_head is false)")
        x = self._keypoint_readout(z.float()) * self.keypoint_std + self.keypoint_mean
        return x.view(z.shape[0], NUM_TASK_KEYPOINTS, 3)

    def with_keypoints(self, z: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        """``z`` with its keypoint read-out replaced: the inverse of :meth:`predict_keypoints` for a
        ``role_points`` policy, whose latent carries the normalised keypoints in its last token's
        first :data:`~vla_mpc.models.vlm.ROLE_KEYPOINT_DIM` values.

        Args:
            z: (B, Tz, Dz) float32 latent (not modified).
            keypoints: (B, 2, 3) float32 [m, ``base_link``] task keypoints.

        Returns:
            (B, Tz, Dz) float32 copy of ``z`` whose :meth:`predict_keypoints` is ``keypoints``.

        Raises:
            RuntimeError: the policy was built without ``role_points`` (its keypoints are a learned
                map of all of ``z`` and cannot be written back).
            ValueError: ``keypoints`` is not (B, 2, 3) for ``z``'s B.
        """
        if not self.config.role_points:
            raise RuntimeError("only a role_points policy carries its keypoints in z (PolicyConfig.role_points)")
        kp = torch.as_tensor(keypoints, dtype=torch.float32)
        if kp.shape != (z.shape[0], NUM_TASK_KEYPOINTS, 3):
            raise ValueError(f"keypoints must be ({z.shape[0]}, {NUM_TASK_KEYPOINTS}, 3), got {tuple(kp.shape)}")
        out = z.float().clone()
        out[:, -1, :ROLE_KEYPOINT_DIM] = (kp.reshape(z.shape[0], -1) - self.keypoint_mean) / self.keypoint_std
        return out

    def _keypoint_readout(self, z: torch.Tensor) -> torch.Tensor:
        """The keypoint head: (B, Tz, Dz) -> (B, 6) normalised keypoints; with ``role_points`` the
        first 6 values of ``z``'s last token, else a linear map of the flattened ``z``."""
        if self.config.role_points:
            return z[:, -1, :ROLE_KEYPOINT_DIM]
        return self.keypoint_head(z.flatten(1))

    # -------------------------------------------------------------------------------- inference
    def _time_terms(self) -> torch.Tensor:
        """The schedule's time terms (num_inference_steps, width), cached (eval mode only)."""
        c = self.config
        key = (c.sampler, c.num_inference_steps)
        cached = self._schedule_cache.get(key)
        if cached is not None and not self.training:
            return cached
        if c.sampler == "flow":
            times = torch.arange(c.num_inference_steps, dtype=torch.float32) / c.num_inference_steps
        else:
            times = torch.tensor(ddim_timesteps(c.diffusion_train_steps, c.num_inference_steps),
                                 dtype=torch.float32) / c.diffusion_train_steps
        terms = self.system1.time_terms(times).detach()
        if not self.training:
            self._schedule_cache[key] = terms
        return terms

    def train(self, mode: bool = True) -> "DualSystemPolicy":
        self._schedule_cache.clear()
        return super().train(mode)

    @torch.inference_mode()
    def sample_chunk(self, z: torch.Tensor, proprio: torch.Tensor, prefix: torch.Tensor | None = None,
                     noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                     keypoints: torch.Tensor | None = None, task_kind: torch.Tensor | None = None) -> torch.Tensor:
        """System 1: a chunk of absolute joint targets.

        Args:
            z: (B, Tz, Dz) float32 latent.
            proprio: (B, 2A) raw positions then velocities.
            prefix: (B, P, A) raw committed targets for the chunk's first P steps (real-time
                chunking), or None.
            noise: (B, H, output_dim) starting noise, or None (drawn with ``generator``).
            keypoints / task_kind: read-outs to condition on instead of System 2's heads
                (:meth:`system1_input`; e.g. the true ones, to measure System 1 alone), or None.

        Returns:
            (B, H, A) float32 absolute targets [rad, m].
        """
        c = self.config
        b = z.shape[0]
        z_in, p = self.system1_input(z.float(), proprio.float(), keypoints, task_kind)
        c_in, film = self.system1.prepare(self.system1.condition(z_in, p))
        base = c_in.unsqueeze(0) + self._time_terms().unsqueeze(1)  # [K, B, W]: cached per chunk
        if noise is None:
            noise = torch.randn((b, c.chunk_size, self.output_dim), generator=generator)
        target = weights = None
        if prefix is not None and prefix.shape[1] > 0:
            prefix = prefix[:, : c.chunk_size].float()
            target = self.normalize_actions(prefix, proprio.float())
            weights = rtc_weights(c.chunk_size, prefix.shape[1], c.rtc_frozen_steps)
        step = self.system1.step
        if c.sampler == "flow":
            x = flow_sample(lambda x, k, t: step(x, base[k], film), noise, c.num_inference_steps,
                            target, weights)
        else:
            x = ddim_sample(lambda x, i, k: step(x, base[i], film), noise, self.alpha_bar,
                            ddim_timesteps(c.diffusion_train_steps, c.num_inference_steps), target, weights,
                            clip=5.0)
        frozen = None if target is None else prefix[:, : min(c.rtc_frozen_steps, prefix.shape[1])]
        return self.denormalize_actions(x, proprio.float(), frozen)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: ``system2`` (with the keypoint and task heads), ``system1``, ``total``."""
        s1 = sum(p.numel() for p in self.system1.parameters())
        total = sum(p.numel() for p in self.parameters())
        return {"system2": total - s1, "system1": s1, "total": total}
