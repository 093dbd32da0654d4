"""The daemon's configuration: pydantic models that reject unknown fields and name bad values.

One file configures everything (YAML or TOML). Each stage owns its own model — the detectors'
knobs live beside the detectors, the policy's beside the controller — and this module only
composes them, so a knob is defined in exactly one place.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lrwatch import registry
from lrwatch.controller import PolicyConfig
from lrwatch.detectors import DetectorsConfig
from lrwatch.notify import NotifierSettings
from lrwatch.registry import PluginProblem
from lrwatch.types import Role

DEFAULT_METRICS_PORT = 9708
"""lrwatch's default /metrics port. Unassigned in the Prometheus default-port registry."""


class Mode(StrEnum):
    ACT = "act"
    OBSERVE = "observe"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RolesConfig(_Strict):
    """Which metric names play which role. The first name present in a run wins.

    The defaults are the names the common frameworks write natively: Hugging Face (``loss``,
    ``eval_loss``, ``train/loss``, ``eval/loss``, ``learning_rate``, ``grad_norm``), Lightning
    (``train_loss_step``, ``lr-AdamW``), Keras (``epoch_loss``, ``train/epoch_loss``,
    ``validation/epoch_loss``, ``epoch_learning_rate``), detectron2 (``total_loss``), llm.c
    (``trl``, ``tel``, ``norm``), nanoGPT and text logs (``train_loss``, ``val_loss``), OLMo
    (``train/CrossEntropyLoss``, ``optim/total_grad_norm``), DeiT (``train_lr``), YOLO
    (``lr/pg0``, ``x/lr0``), Stable-Baselines3 (``train/loss``, ``train/learning_rate``).

    ``infer``: when a run logs none of the ``loss`` (or ``val_loss``) names, the first metric
    whose name contains "loss" takes the role (see ``infer_role`` and
    ``RunMonitor.inferred_roles``).
    """

    loss: tuple[str, ...] = (
        "loss",
        "train/loss",
        "train_loss",
        "Loss/train",
        "loss/train",
        "train_loss_step",
        "training_loss",
        "total_loss",
        "trl",
        "train/epoch_loss",
        "epoch_loss",
        "train/CrossEntropyLoss",
    )
    val_loss: tuple[str, ...] = (
        "val/loss",
        "val_loss",
        "Loss/val",
        "loss/val",
        "eval_loss",
        "eval/loss",
        "validation/epoch_loss",
        "val_loss_epoch",
        "valid_loss",
        "validation_loss",
        "tel",
        "eval/CrossEntropyLoss",
    )
    grad_norm: tuple[str, ...] = (
        "grad_norm",
        "train/grad_norm",
        "gradient_norm",
        "grad/norm",
        "norm",
        "optim/total_grad_norm",
        "total_grad_norm",
    )
    lr: tuple[str, ...] = (
        "lr",
        "train/lr",
        "learning_rate",
        "train/learning_rate",
        "lr-SGD",
        "lr-Adam",
        "lr-AdamW",
        "lr-RMSprop",
        "lr-Adagrad",
        "lr-Adamax",
        "lr-NAdam",
        "lr-RAdam",
        "train/epoch_learning_rate",
        "epoch_learning_rate",
        "train_lr",
        "optim/learning_rate_group0",
        "lr/pg0",
        "x/lr0",
    )
    infer: bool = True

    def role_of(self, metric: str) -> Role | None:
        for role in Role:
            if metric in getattr(self, role.value):
                return role
        return None

    def infer_role(self, metric: str) -> Role | None:
        """The role a metric named nowhere above would take by its name alone: a name that
        contains "loss" (any case) is a validation loss when it also names a held-out split
        (``val``, ``valid``, ``validation``, ``eval``, ``test``), else the training loss. Only
        the last ``/`` part counts for "loss": StyleGAN's ``Loss/G/loss`` is one,
        its ``Loss/scores/fake`` (a logit) is not."""
        if not self.infer:
            return None
        lower = metric.lower()
        if "loss" not in lower.rpartition("/")[2]:
            return None
        words = set(_WORDS.split(lower))
        return Role.VAL_LOSS if words & _HELD_OUT else Role.LOSS


_WORDS = re.compile(r"[^a-z]+")
_HELD_OUT = frozenset({"val", "valid", "validation", "eval", "test", "dev"})


class RunOverride(_Strict):
    """Settings for the runs whose name matches ``glob`` (fnmatch; the last match wins)."""

    glob: str
    roles: RolesConfig | None = None
    detectors: DetectorsConfig | None = None
    policy: PolicyConfig | None = None


class RunSettings(_Strict):
    """The effective settings of one run, after overrides."""

    roles: RolesConfig
    detectors: DetectorsConfig
    policy: PolicyConfig


class Config(_Strict):
    mode: Mode = Mode.ACT
    logdir: Path | None = None
    state: Path | None = Field(
        default=None, description="SQLite state file; default <logdir>/.lrwatch-state.sqlite"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535)
    api_token_file: Path | None = Field(
        default=None, description="bearer token for the control API (set-lr, pause, resume)"
    )
    secret_file: Path | None = Field(
        default=None, description="HMAC key for commands; else $LRWATCH_SECRET"
    )
    heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    stale_after_seconds: float = Field(default=300.0, gt=0)
    run_ttl_seconds: float = Field(default=24 * 3600.0, gt=0)
    rescan_interval_seconds: float = Field(default=30.0, gt=0)
    poll_interval_seconds: float = Field(default=0.05, gt=0, le=5)
    use_polling_observer: bool = False
    max_file_events_per_second: float = Field(
        default=100.0, gt=0, description="above this, known files are swept instead (see README)"
    )
    sweep_interval_seconds: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="the longest interval between sweeps of known files (a fleet's); "
        "fewer files are swept more often, down to 0.1 s",
    )
    checkpoint_interval_seconds: float = Field(
        default=30.0, gt=0, description="a run's state is saved at least this often"
    )
    roles: RolesConfig = RolesConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    policy: PolicyConfig = PolicyConfig()
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="options of installed log formats by name; `enabled: false` turns one off "
        "(every installed source is read by default: see `lrwatch plugins`)",
    )
    notifiers: dict[str, NotifierSettings] = Field(
        default_factory=dict, description="where findings and actions are sent (notify.py)"
    )
    overrides: tuple[RunOverride, ...] = ()

    def for_run(self, run: str) -> RunSettings:
        roles, detectors, policy = self.roles, self.detectors, self.policy
        for override in self.overrides:
            if fnmatch.fnmatchcase(run, override.glob):
                roles = override.roles or roles
                detectors = override.detectors or detectors
                policy = override.policy or policy
        return RunSettings(roles=roles, detectors=detectors, policy=policy)


def plugin_problems(config: Config) -> list[PluginProblem]:
    """Every plugin the config names that cannot be used: not installed, failing to import, or
    given options its config model rejects. ``lrwatch config check`` fails on them; the daemon
    logs them and runs without those plugins."""
    checks: list[tuple[str, str, dict[str, Any]]] = []
    detectors = [config.detectors, *(o.detectors for o in config.overrides if o.detectors)]
    policies = [config.policy, *(o.policy for o in config.overrides if o.policy)]
    for section in detectors:
        checks += [("detectors", name, raw) for name, raw in section.plugins.items()]
    for policy in policies:
        checks += [("policies", name, raw) for name, raw in policy.plugins.items()]
    for name, raw in config.sources.items():
        checks.append(("sources", name, {k: v for k, v in raw.items() if k != "enabled"}))
    problems: list[PluginProblem] = []
    for group, name, raw in checks:
        problem = registry.check(group, name, raw)
        if problem is not None and problem not in problems:
            problems.append(problem)
    for instance, settings in config.notifiers.items():
        # Built as the daemon builds it (a constructor may refuse what the model let through),
        # then closed: nothing is sent.
        try:
            notifier = registry.build("notifiers", settings.plugin or instance, settings.options())
        except registry.PluginError as exc:
            if exc.problem not in problems:
                problems.append(exc.problem)
            continue
        with contextlib.suppress(Exception):  # a close() that fails costs nothing here
            notifier.close()
    return problems


class ConfigError(Exception):
    """A config file that cannot be used; the message names each bad field and value."""


def load_config(path: Path | None, **cli_overrides: Any) -> Config:
    """Load a YAML or TOML file (by extension) and apply the CLI's flags on top.

    Flags given as None are "not given" and leave the file's value alone.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_mapping(path)
    raw.update({k: v for k, v in cli_overrides.items() if v is not None})
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = [f"{where}{exc.error_count()} invalid setting(s)"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        # Notifier options hold webhook URLs and tokens: never echoed, not even in an error.
        secret = bool(err["loc"]) and err["loc"][0] == "notifiers"
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        lines.append(f"  {field}: {err['msg']}{shown}")
    return "\n".join(lines)
