"""The contract every detector keeps.

A detector watches one series (one metric of one run) and is pure: values in, findings out,
no I/O, no clocks, no logging. That is what lets the daemon, ``lrwatch replay`` and the tests
run the very same object, and lets the daemon persist it through ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from lrwatch.plugins import Group
from lrwatch.protocol.types import Finding, Role

# The plugin API (docs/plugins.md): what a detector plugin may import from here.
__all__ = ["Detector", "DetectorPlugin"]


@runtime_checkable
class Detector(Protocol):
    """Structural protocol (no base class needed), as prometheus_client does for collectors.

    ``update`` is called once per sample in step order and returns a Finding on the sample at
    which an episode *starts* (a rising edge), not on every sample while it lasts; ``active``
    says which kind, if any, is ongoing, for the ``lrwatch_finding_active`` gauge.
    """

    kinds: ClassVar[tuple[str, ...]]

    def update(self, step: int, value: float) -> Finding | None: ...

    @property
    def active(self) -> str | None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class DetectorPlugin(Protocol):
    """What an entry point of the ``lrwatch.detectors`` group names: usually the detector class
    itself, with two class attributes. lrwatch builds one detector per series of a role in
    ``roles``, as ``plugin(config)``: ``config`` is the ``detectors.plugins.NAME`` section
    validated by ``config_model`` (a pydantic model; ``extra="forbid"`` is advised so that a
    misspelt knob is an error, not a silent default)."""

    roles: ClassVar[tuple[Role, ...]]
    config_model: ClassVar[type[BaseModel]]

    def __call__(self, config: Any) -> Detector: ...


DETECTORS: Group[DetectorPlugin, Detector] = Group("detectors")
