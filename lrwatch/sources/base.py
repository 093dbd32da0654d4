"""The contract every log reader keeps.

Readers are resumable, in the manner of tensorboard's event loaders: each ``read()`` yields only
what is new since the last call, a truncated tail is "not yet" (left for the next call), and the
position round-trips through ``state_dict()`` so a restarted daemon goes on where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lrwatch.types import Sample


@runtime_checkable
class LogReader(Protocol):
    path: Path
    run: str
    format: str  # "jsonl" | "csv" | "tensorboard": the label of lrwatch_ingested_samples_total

    def read(self) -> list[Sample]:
        """Samples from complete records written since the last call, in file order."""
        ...

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters of trouble met so far (e.g. ``corrupt_records``, ``truncations``)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
