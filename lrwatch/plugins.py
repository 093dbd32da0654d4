"""Where detectors, policies, sources and notifiers come from: the Python entry points of the
groups ``lrwatch.detectors``, ``lrwatch.policies``, ``lrwatch.sources`` and ``lrwatch.notifiers``
(the table, the protocols and a guide: docs/plugins.md).

lrwatch's own are entry points of the ``lrwatch`` distribution in these very groups, found the
same way; a third-party name that collides with a built-in one is refused (the built-in keeps
it), so installing a package can never silently replace the divergence detector.

A plugin that cannot be used — its module fails to import, its config does not validate, it
raises while running — is a ``PluginProblem``: the daemon logs it once, counts it in
``lrwatch_plugin_errors_total`` and goes on without it; ``lrwatch config check`` fails on it;
``lrwatch plugins`` shows it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any, Generic, TypeVar, cast, overload

from pydantic import BaseModel, ValidationError

GROUPS = ("detectors", "policies", "sources", "notifiers")

P = TypeVar("P")  # what an entry point names: usually a class
B = TypeVar("B")  # what it builds, ``P(config)``


@dataclass(frozen=True, slots=True)
class Group(Generic[P, B]):
    """One extension point, typed: its entry points name a ``P`` that builds a ``B``. Each is
    declared beside its protocols (``detectors.base.DETECTORS``, ``analysis.policy.POLICIES``,
    ``sources.base.SOURCES``, ``sinks.notify.NOTIFIERS``), so this module imports none of them."""

    name: str


# The built-ins' running order (a series' detectors are built in this order; formats are tried in
# it). Where each lives is said once, by the lrwatch distribution's entry points (pyproject.toml).
_BUILTIN_ORDER: dict[str, tuple[str, ...]] = {
    "detectors": (
        "divergence",
        "grad_norm",
        "oscillation",
        "plateau",
        "drift",
        "overfit",
        "schedule",
    ),
    "policies": ("factors",),
    "sources": ("jsonl", "csv", "tensorboard", "trainer_state", "text"),
    "notifiers": (),
}


def builtin_names(group: str) -> tuple[str, ...]:
    """The built-in names of ``group``, in the order they run."""
    return _BUILTIN_ORDER[group]


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """Why a plugin is not used (``stage``: load, config or run), for a log line and a metric."""

    group: str
    name: str
    stage: str
    message: str

    def __str__(self) -> str:
        return f"{self.group} plugin {self.name!r} ({self.stage}): {self.message}"


class PluginError(Exception):
    def __init__(self, problem: PluginProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered name, as ``lrwatch plugins`` lists it."""

    group: str
    name: str
    value: str  # "module:attribute"
    distribution: str  # the package that registered it ("lrwatch" for the built-ins)
    version: str
    builtin: bool


def _entry_points(group: str) -> list[tuple[str, str, str, str]]:
    """(name, value, distribution, version) of the installed entry points of ``group``."""
    found = []
    for ep in metadata.entry_points(group=f"lrwatch.{group}"):
        dist = ep.dist
        name = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        found.append((ep.name, ep.value, name, version))
    return found


@cache
def available(group: str) -> tuple[PluginInfo, ...]:
    """Every name registered in ``group``: the built-ins first, in their running order, then the
    others sorted by name. Cached: entry points are read once per process."""
    if group not in GROUPS:
        raise ValueError(f"unknown plugin group {group!r} (one of {', '.join(GROUPS)})")
    builtins: dict[str, PluginInfo] = {}
    others: dict[str, PluginInfo] = {}
    for name, value, dist, version in _entry_points(group):
        if dist == "lrwatch":
            builtins[name] = PluginInfo(group, name, value, dist, version, True)
        elif name not in _BUILTIN_ORDER[group]:  # else a name a built-in keeps: see shadowed()
            others[name] = PluginInfo(group, name, value, dist, version, False)
    missing = [name for name in _BUILTIN_ORDER[group] if name not in builtins]
    if missing:
        raise RuntimeError(
            f"lrwatch's own {group} ({', '.join(missing)}) are not registered: lrwatch is not "
            "installed, or its metadata is stale (pip install -e . from a source tree)"
        )
    ordered = (builtins[name] for name in _BUILTIN_ORDER[group])
    return (*ordered, *(others[n] for n in sorted(others)))


def shadowed(group: str) -> list[PluginInfo]:
    """Third-party entry points refused because a built-in has their name."""
    return [
        PluginInfo(group, name, value, dist, version, False)
        for name, value, dist, version in _entry_points(group)
        if dist != "lrwatch" and name in _BUILTIN_ORDER[group]
    ]


def info(group: str, name: str) -> PluginInfo:
    for item in available(group):
        if item.name == name:
            return item
    names = ", ".join(i.name for i in available(group)) or "none"
    raise PluginError(PluginProblem(group, name, "load", f"not installed (installed: {names})"))


_failed: dict[tuple[str, str], PluginProblem] = {}


@overload
def load(group: Group[P, B], name: str) -> P: ...


@overload
def load(group: str, name: str) -> object: ...


def load(group: Group[P, B] | str, name: str) -> P | object:
    """The object an entry point names, imported once. PluginError says why it can't be; a
    failure is remembered too (see ``forget``), so that a broken module is not executed again
    for every new series. Typed by the group's protocol: the entry point is trusted to follow
    it (a plugin that does not is found out when it runs, and isolated then)."""
    return _load(group if isinstance(group, str) else group.name, name)


@cache
def _load(group: str, name: str) -> object:
    failed = _failed.get((group, name))
    if failed is not None:
        raise PluginError(failed)
    value = info(group, name).value
    module, _, attribute = value.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attribute.split(".") if attribute else ():
            obj = getattr(obj, part)
    except Exception as exc:  # an ImportError, or whatever the plugin's module raised
        message = f"cannot import {value}: {type(exc).__name__}: {exc}"
        problem = _failed[group, name] = PluginProblem(group, name, "load", message)
        raise PluginError(problem) from exc
    return obj


def forget() -> None:
    """Read the entry points and import the plugins afresh (after installing one in-process)."""
    available.cache_clear()
    _load.cache_clear()
    _validate.cache_clear()
    _failed.clear()


def config_model(plugin: object) -> type[BaseModel] | None:
    model = getattr(plugin, "config_model", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def validate_config(group: str, name: str, raw: Mapping[str, Any] | None) -> BaseModel | None:
    """The plugin's own config model over ``raw`` (None for a plugin without one, which then
    takes no options). Validated once per distinct ``raw``; PluginError names each bad field."""
    key = json.dumps(raw or {}, sort_keys=True, default=str)
    return _validate(group, name, key)


@cache
def _validate(group: str, name: str, key: str) -> BaseModel | None:
    raw = json.loads(key)
    model = config_model(_load(group, name))
    if model is None:
        if raw:
            message = f"takes no options, got {', '.join(sorted(raw))}"
            raise PluginError(PluginProblem(group, name, "config", message))
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PluginError(PluginProblem(group, name, "config", fields)) from None


def build(group: Group[P, B], name: str, raw: Mapping[str, Any] | None) -> B:
    """Plugin ``name`` built as lrwatch builds every plugin, ``plugin(config)`` with ``raw``
    validated by its config model (None for one without). PluginError says why it cannot be:
    not installed or not importable (stage load), options rejected (config), or its
    constructor raised (load)."""
    plugin = cast(Callable[[BaseModel | None], B], load(group, name))
    config = validate_config(group.name, name, raw)
    try:
        return plugin(config)
    except Exception as exc:  # the plugin's own bug, or a value its model let through
        message = f"cannot be built: {type(exc).__name__}: {exc}"
        raise PluginError(PluginProblem(group.name, name, "load", message)) from exc


def check(group: str, name: str, raw: Mapping[str, Any] | None) -> PluginProblem | None:
    """Whether ``name`` loads and ``raw`` is a valid config for it; the problem, or None."""
    try:
        validate_config(group, name, raw)
    except PluginError as exc:
        return exc.problem
    return None
