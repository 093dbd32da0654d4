"""CSV logs: a header row naming a ``step`` column; every other numeric column is a metric.

Written with Lightning's ``CSVLogger`` (``metrics.csv``) in mind. Cells are skipped when empty (a
row holds only the metrics logged at that step) or not numbers; ``nan``/``inf`` are kept. A
``step`` cell must be an integer (``"12.0"`` is accepted: CSV has no types, and pandas writes
integers that way next to NaNs); a row without one is corrupt and counted. A ``time`` column, if
any, is the wall time (as in JSONL). A file whose header has no ``step`` column is not a metrics
log: it is consumed without yielding anything.

Lightning **rewrites the whole file** with a wider header when a new metric key first appears.
The header is pinned as the file's expected head (``FileTail.head``), so a changed header is seen
on the next read, counted in ``stats["rewrites"]``, and the file is read again from the start.
Rows already yielded are then yielded again: the consumer drops steps it has already seen.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

from lrwatch.sources.base import Batch, FileSource
from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, TailedReader

MAX_LINE_BYTES = 64 << 20  # as for JSONL: beyond this a newline-less run of bytes is garbage


def _step(cell: str) -> int | None:
    try:
        return int(cell)
    except ValueError:
        pass
    try:
        value = float(cell)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


class _Columns:
    """Where the step, the time and the metrics are in a row, from the header line."""

    __slots__ = ("metrics", "step", "time")

    def __init__(self, header: bytes) -> None:
        names = next(csv.reader([header.decode("utf-8", "replace").lstrip("\ufeff")]), [])
        names = [name.strip() for name in names]
        self.step = names.index("step") if "step" in names else -1
        self.time = names.index("time") if "time" in names else -1
        self.metrics = [
            (i, name) for i, name in enumerate(names) if name and i not in (self.step, self.time)
        ]


class CsvReader(TailedReader):
    """Tails one CSV file; see the module docstring for the format and the header rewrite."""

    format = "csv"

    def __init__(self, path: Path, run: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__(path, run, chunk_bytes=chunk_bytes)
        self._columns: _Columns | None = None  # parsed from self._tail.head, which persists

    @property
    def header(self) -> str:
        """The header line in force ("" before it has been read)."""
        return self._tail.head.decode("utf-8", "replace").rstrip("\r\n")

    def state_dict(self) -> dict[str, Any]:
        return {**self._tail.state_dict(), "header": self.header}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._tail.load_state_dict(state)
        self._columns = None
        if self._tail.offset and not self._tail.head:  # no header to parse rows by: start over
            self._tail.restart()

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        start = 0
        if self._tail.offset == 0:  # at the start of the file: the first line is the header
            start = data.index(b"\n") + 1
            self._tail.head = data[:start]
            self._columns = None
        columns = self._columns
        if columns is None:
            columns = self._columns = _Columns(self._tail.head)
        if columns.step < 0 or start == end:
            return end, 0
        lines = data[start:end].decode("utf-8", "replace").split("\n")
        lines.pop()  # the empty string after the last newline
        self._rows(csv.reader(lines), columns, out)
        return end, 0

    def _rows(self, rows: Iterable[list[str]], columns: _Columns, out: Batch) -> None:
        metrics, step_at, time_at = columns.metrics, columns.step, columns.time
        for row in rows:
            if not row:
                continue  # a blank line
            step = _step(row[step_at]) if step_at < len(row) else None
            if step is None:
                self._corrupt += 1
                continue
            wall_time = None
            if 0 <= time_at < len(row):
                try:  # noqa: SIM105 - as below
                    wall_time = float(row[time_at])
                except ValueError:
                    pass
            width = len(row)
            found: dict[str, float] = {}
            for i, name in metrics:
                if i >= width:
                    break
                cell = row[i]
                if cell:
                    # try/except, not contextlib.suppress: this runs per cell, and the context
                    # manager would cost more than the parse.
                    try:  # noqa: SIM105
                        found[name] = float(cell)
                    except ValueError:
                        pass  # a non-numeric cell (a note, a path): not a metric
            if found:
                out.add(step, wall_time, found)


class CsvSource(FileSource):
    """The built-in ``csv`` format (registry.py)."""

    reader = CsvReader

    def claims(self, path: PurePath) -> bool:
        return path.name.endswith(".csv")
