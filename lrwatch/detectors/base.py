"""The contract every detector keeps.

A detector watches one series (one metric of one run) and is pure: values in, findings out,
no I/O, no clocks, no logging. That is what lets the daemon, ``lrwatch replay`` and the tests
run the very same object, and lets the daemon persist it through ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

from lrwatch.types import Finding


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
