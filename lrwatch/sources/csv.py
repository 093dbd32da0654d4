"""CSV logs: a header row; a ``step`` column (or a step-like one: Stable-Baselines3's
``time/total_timesteps``, Keras' and YOLO's ``epoch``, CatBoost's ``iter``; else the row number),
every other numeric column a metric. Lightning's ``CSVLogger`` (``metrics.csv``) in mind; ``*.tsv``
is tab-separated (CatBoost).

Damage is counted, never fatal: a rejected row or an unbalanced quote is a corrupt record and the
next line is read as usual (each line is one row, so one stray quote cannot swallow the file).
Lightning rewrites the whole file with a wider header when a new metric first appears: the header
is pinned (``FileTail.head``), a changed one is counted in ``stats["rewrites"]`` and the file read
again from the start. The rules in full: docs/formats.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

from lrwatch.sources.base import Batch, FileSource
from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, TailedReader

MAX_LINE_BYTES = 64 << 20  # as for JSONL: beyond this a newline-less run of bytes is garbage

STEP_COLUMNS = (
    "step",
    "Step",
    "global_step",
    "time/total_timesteps",  # Stable-Baselines3
    "total/steps",  # OpenAI baselines
    "total_timesteps",
    "timesteps",
    "steps_done",
    "iteration",
    "iter",  # CatBoost learn_error.tsv
    "epoch",  # Keras CSVLogger, YOLO results.csv
)
"""Columns that stand for the step, in order of preference; none: the row number."""

_CORRUPT: list[str] = []  # what _checked_rows yields for a damaged line (an identity, never filled)


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

    __slots__ = ("delimiter", "metrics", "step", "time")

    def __init__(self, header: bytes, delimiter: str = ",", prefix: str = "") -> None:
        self.delimiter = delimiter
        text = header.decode("utf-8", "replace").lstrip("\ufeff").rstrip("\r\n")
        try:
            names = next(csv.reader([text], delimiter=delimiter), [])
        except csv.Error:
            names = []
        names = [name.strip() for name in names]
        # -1: the row number is the step (no step-like column)
        self.step = next((names.index(n) for n in STEP_COLUMNS if n in names), -1)
        self.time = names.index("time") if "time" in names else -1
        self.metrics = [
            (i, prefix + name)
            for i, name in enumerate(names)
            if name and i not in (self.step, self.time)
        ]


class CsvReader(TailedReader):
    """Tails one CSV file; see the module docstring for the format and the header rewrite."""

    format = "csv"

    def __init__(self, path: Path, run: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        super().__init__(path, run, chunk_bytes=chunk_bytes)
        self._columns: _Columns | None = None  # parsed from self.tail.head, which persists
        name = self.path.name
        self._delimiter = "\t" if name.endswith(".tsv") else ","
        self._prefix = name[: -len("_error.tsv")] + "/" if name.endswith("_error.tsv") else ""
        self._rows_read = 0  # data rows consumed: the step when there is no step column

    @property
    def header(self) -> str:
        """The header line in force ("" before it has been read)."""
        return self.tail.head.decode("utf-8", "replace").rstrip("\r\n")

    def state_dict(self) -> dict[str, Any]:
        return {**self.tail.state_dict(), "header": self.header, "rows": self._rows_read}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        rows = state.get("rows", 0)
        if type(rows) is not int or rows < 0:
            raise ValueError(f"csv state: rows must be a non-negative int, got {rows!r}")
        self.tail.load_state_dict(state)
        self._rows_read = rows
        self._columns = None
        if self.tail.offset and not self.tail.head:  # no header to parse rows by: start over
            self.tail.restart()

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        start = 0
        if self.tail.offset == 0:  # at the start of the file: the first line is the header
            start = data.index(b"\n") + 1
            self.tail.head = data[:start]
            self._columns = None
            self._rows_read = 0
        columns = self._columns
        if columns is None:
            columns = self._columns = _Columns(self.tail.head, self._delimiter, self._prefix)
        if start == end:
            return end, 0
        text = data[start:end].decode("utf-8", "replace")
        lines = text.split("\n")
        lines.pop()  # the empty string after the last newline
        # csv's own writers end lines in \r\n (Lightning's and Keras' CSVs are CRLF): fine for
        # the fast path. A quote or a bare \r needs the line-by-line one, and so does a chunk
        # with a line the csv module rejects.
        rows: Iterable[list[str]] | None = None
        if not ('"' in text or ("\r" in text and text.count("\r") != text.count("\r\n"))):
            try:  # the common case: one csv.reader over the whole chunk
                rows = list(csv.reader(lines, delimiter=columns.delimiter))
            except csv.Error:  # a NUL byte, a cell over the csv module's field limit
                rows = None
        if rows is None:
            rows = self._checked_rows(lines, columns.delimiter)
        self._rows(rows, columns, out)
        return end, 0

    def _checked_rows(self, lines: list[str], delimiter: str) -> Iterable[list[str]]:
        """Rows one line at a time, for chunks holding quotes or bare carriage returns, or a line
        the csv module rejects: a line with an unbalanced quote, or one the csv module rejects
        (a bare ``\r`` or a NUL inside it, a cell over its field size limit), is
        counted as corrupt and the next line goes on (one per line, or a stray quote would
        make the csv module swallow every line after it as one quoted field)."""
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]  # CRLF line endings
            if line.count('"') % 2 or "\r" in line:
                self.corrupt += 1
                yield _CORRUPT
                continue
            try:
                yield next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:
                self.corrupt += 1
                yield _CORRUPT

    def _rows(self, rows: Iterable[list[str]], columns: _Columns, out: Batch) -> None:
        metrics, step_at, time_at = columns.metrics, columns.step, columns.time
        rows_read = self._rows_read  # a local in the hot loop; stored back at the end
        for row in rows:
            if not row:
                if row is _CORRUPT:  # counted by _checked_rows; it still takes a row number
                    rows_read += 1
                continue  # a blank line
            rows_read += 1
            if step_at < 0:
                step: int | None = rows_read - 1
            else:
                step = _step(row[step_at]) if step_at < len(row) else None
            if step is None:
                self.corrupt += 1
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
        self._rows_read = rows_read


class CsvSource(FileSource):
    """The built-in ``csv`` format (plugins.py)."""

    reader = CsvReader

    def claims(self, path: PurePath) -> bool:
        return path.name.endswith((".csv", ".tsv"))
