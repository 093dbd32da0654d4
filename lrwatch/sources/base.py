"""The contract every log reader keeps, and the batch it returns.

Readers are resumable, in the manner of tensorboard's event loaders: each ``read()`` yields only
what is new since the last call, a truncated tail is "not yet" (left for the next call), and the
position round-trips through ``state_dict()`` so a restarted daemon goes on where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, Protocol, runtime_checkable

from lrwatch.plugins import Group
from lrwatch.protocol.types import Sample

# The plugin API (docs/plugins.md): what a source plugin may import from here.
__all__ = ["Batch", "FileSource", "LogReader", "Source", "SourcePlugin"]


class Batch:
    """What one ``read()`` found: one entry per record (a JSONL line, a CSV row, a TensorBoard
    event), each a step, its wall time and the ``{metric: value}`` logged at it, in file order.

    Why records and not one ``Sample`` per scalar: building a Python object per scalar costs
    more than parsing the line it came from (about 0.5 µs against 0.7 µs for orjson on a
    5-field line), so a reader that made them could not be much faster than a plain
    ``json.loads`` loop. A record keeps the dict the parser already built. Iterating a batch
    yields ``Sample`` objects, made on demand, for the consumers that want them.
    """

    __slots__ = ("run", "steps", "values", "wall_times")

    def __init__(self, run: str) -> None:
        self.run = run
        self.steps: list[int] = []
        self.wall_times: list[float | None] = []
        self.values: list[dict[str, float]] = []

    def add(self, step: int, wall_time: float | None, values: dict[str, float]) -> None:
        """One record (``values`` not empty). Parsers append to the lists in their hot loops."""
        self.steps.append(step)
        self.wall_times.append(wall_time)
        self.values.append(values)

    def records(self) -> Iterator[tuple[int, float | None, dict[str, float]]]:
        return zip(self.steps, self.wall_times, self.values, strict=True)

    def __iter__(self) -> Iterator[Sample]:
        run = self.run
        for step, wall_time, values in zip(self.steps, self.wall_times, self.values, strict=True):
            for metric, value in values.items():
                yield Sample(run, metric, step, value, wall_time)

    def __len__(self) -> int:
        """The number of scalars (not records): what ``lrwatch_ingested_samples_total`` counts."""
        return sum(map(len, self.values))

    def __bool__(self) -> bool:
        return bool(self.steps)  # parsers never add a record without values

    def __repr__(self) -> str:
        return f"Batch(run={self.run!r}, records={len(self.steps)}, samples={len(self)})"


@runtime_checkable
class LogReader(Protocol):
    path: Path
    run: str
    format: str  # "jsonl", "csv", "tensorboard", "trainer_state", "text": the label of
    # lrwatch_ingested_samples_total and lrwatch_source_errors_total
    has_more: bool  # the last read() stopped at its byte budget, not at the end: call again

    def read(self) -> Batch:
        """The records completed since the last call, in file order. An empty batch means
        "caught up": a reader never returns one while complete records remain unread."""
        ...

    @property
    def rereading(self) -> bool:
        """Whether the reader is going over bytes again after the file churned (rotated,
        rewritten, replaced): up to where it had been, what it reads is probably not news."""
        ...

    def changed(self, st: os.stat_result) -> bool:
        """Whether a fresh ``stat`` of the file shows something the last read did not see."""
        ...

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters of trouble met so far (e.g. ``corrupt_records``, ``truncations``)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Source(Protocol):
    """A log format: which files it reads, which run each belongs to, and the reader for one.

    ``claims`` is asked of every file name under the watched root (at each scan and file
    event), so it must be cheap and do no I/O: a test of the path's name and parts.
    """

    def claims(self, path: PurePath) -> bool: ...

    def run_dir(self, path: PurePath) -> PurePath:
        """The directory that is ``path``'s run: for most formats the file's own directory;
        MLflow's ``<run>/metrics/<name>`` files belong to ``<run>``."""
        ...

    def open(self, path: Path, run: str) -> LogReader: ...


@runtime_checkable
class SourcePlugin(Protocol):
    """What an entry point of ``lrwatch.sources`` names: usually the Source class, built as
    ``plugin(config)`` with the ``sources.NAME`` section validated by ``config_model`` (None
    when it has no options). Installed sources are active unless ``sources.NAME.enabled`` is
    false; the built-in formats are asked last, so a plugin may claim a file they would."""

    def __call__(self, config: Any) -> Source: ...


SOURCES: Group[SourcePlugin, Source] = Group("sources")


class FileSource:
    """The built-in formats: a file-name test and a reader class; a file's run is its directory.
    A plugin may subclass it too."""

    reader: Callable[[Path, str], LogReader]

    def __init__(self, config: None = None) -> None:
        del config  # the built-in formats take no options

    def claims(self, path: PurePath) -> bool:
        raise NotImplementedError

    def run_dir(self, path: PurePath) -> PurePath:
        return path.parent

    def open(self, path: Path, run: str) -> LogReader:
        return type(self).reader(path, run)
