"""The daemon's configuration: pydantic models that reject unknown fields and name bad values.

One file configures everything (YAML or TOML). Each stage owns its own model — the detectors'
knobs live beside the detectors, the policy's beside the controller — and this module only
composes them, so a knob is defined in exactly one place.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import tomllib
import typing
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lrwatch import plugins
from lrwatch.analysis.policy import PolicyConfig
from lrwatch.detectors import DetectorsConfig
from lrwatch.plugins import PluginProblem
from lrwatch.roles import RolesConfig
from lrwatch.sinks.notify import NOTIFIERS, NotifierSettings

DEFAULT_METRICS_PORT = 9708
"""lrwatch's default /metrics port. Unassigned in the Prometheus default-port plugins."""


class Mode(StrEnum):
    ACT = "act"
    OBSERVE = "observe"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    max_metrics_per_run: int = Field(
        default=1000,
        ge=1,
        description="distinct metric names kept per run; values of further names are dropped "
        'and counted (lrwatch_source_errors_total{error="metric_names_capped"})',
    )
    max_metric_names: int = Field(
        default=100_000, ge=1, description="distinct metric names kept over all runs"
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
        problem = plugins.check(group, name, raw)
        if problem is not None and problem not in problems:
            problems.append(problem)
    for instance, settings in config.notifiers.items():
        # Built as the daemon builds it (a constructor may refuse what the model let through),
        # then closed: nothing is sent.
        try:
            notifier = plugins.build(NOTIFIERS, settings.plugin or instance, settings.options())
        except plugins.PluginError as exc:
            if exc.problem not in problems:
                problems.append(exc.problem)
            continue
        with contextlib.suppress(Exception):  # a close() that fails costs nothing here
            notifier.close()
    return problems


class ConfigError(Exception):
    """A config file that cannot be used; the message names each bad field and value."""


def read_secret_file(config: Config) -> str | None:
    """The HMAC secret ``secret_file`` names (None without one); ConfigError naming the field
    if it cannot be read. ``lrwatch config check``, the start and a SIGHUP all ask here."""
    path = config.secret_file
    if path is None:
        return None
    try:
        return path.read_bytes().decode().strip()
    except OSError as exc:
        raise ConfigError(f"secret_file: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"secret_file: {path} is not UTF-8 text") from None


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


MAX_CONFIG_BYTES = 1 << 20
"""A config file is a few KB; anything much larger is a mistake (or hostile)."""
MAX_CONFIG_NODES = 100_000
"""YAML nodes a config may expand to, aliases counted at each use: a 400-byte "billion
laughs" of nested aliases expands to billions, which validation would walk for minutes."""


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes: not a config file")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    kind = path.suffix.lstrip(".") or "YAML"
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else _load_yaml(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not usable {kind}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, not {type(data).__name__}")
    return data


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, refusing documents that expand past ``MAX_CONFIG_NODES``: the node
    graph is composed first (aliases are shared references there, so this is cheap), its
    expanded size counted once per distinct node, and only then constructed."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        if _expanded_size(node, sizes) > MAX_CONFIG_NODES:
            raise ValueError(f"expands to more than {MAX_CONFIG_NODES} nodes (nested aliases?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes under ``root`` with every alias expanded, without expanding any (memoised by node,
    iterative: a deep document must not hit the recursion limit)."""
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            total = 1 + sum(sizes[id(child)] for child in children)
            sizes[id(node)] = min(total, MAX_CONFIG_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def format_validation_error(exc: ValidationError, path: Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = [f"{where}{exc.error_count()} invalid setting(s)"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        # Notifier options hold webhook URLs and tokens: never echoed, not even in an error.
        secret = bool(err["loc"]) and err["loc"][0] == "notifiers"
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: {_unknown(err['loc'], shown)}")
        else:
            lines.append(f"  {field}: {err['msg']}{shown}")
    return "\n".join(lines)


def _unknown(loc: tuple[int | str, ...], shown: str) -> str:
    """An unknown key, with what it should have been: the closest valid name (difflib), else
    the valid names of its section; for ``detectors:`` always every detector's name."""
    valid = _fields_at(Config, loc[:-1])
    section = ".".join(str(p) for p in loc[:-1])
    detectors = section.endswith("detectors")
    what = "unknown detector" if detectors else "unknown setting"
    if not valid:
        return f"{what}{shown}"
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    guess = f", did you mean {close[0]!r}?" if close else ""
    if detectors:
        builtin = ", ".join(name for name in valid if name != "plugins")
        return f"{what}{shown}{guess} (detectors: {builtin}; plugins go under {section}.plugins)"
    return f"{what}{shown}{guess}" if close else f"{what}{shown} (valid: {', '.join(valid)})"


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model found by following ``loc`` from ``model`` (through
    optional, tuple and dict fields); empty if ``loc`` leads to no model."""
    annotation: Any = model
    for part in loc:
        annotation = _model_in(annotation)
        if annotation is None:
            return []
        if isinstance(part, int):
            continue  # (a tuple's element: _model_in looks inside it)
        info = annotation.model_fields.get(str(part))
        if info is None:
            return []
        annotation = info.annotation
        if typing.get_origin(annotation) is dict:  # a name the user chose, then a model
            annotation = typing.get_args(annotation)[-1]
    found = _model_in(annotation)
    return list(found.model_fields) if found is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):  # X | None, tuple[X, ...]
        found = _model_in(arg)
        if found is not None:
            return found
    return None
