"""Sacred's ``metrics.json``, and telling it from detectron2's file of the same name.

Sacred's ``FileStorageObserver`` keeps ``<run>/metrics.json``: one JSON object, indented, of
``{"training.loss": {"steps": [...], "values": [...], "timestamps": [...]}, ...}``, a list per
metric that ``_run.log_scalar(name, value, step)`` appends to, the whole file rewritten at each
heartbeat. So, as ``trainer_state.json`` is, it is read whole on each change, and only the
entries past those already yielded are yielded; a file caught half-written is "not yet"; a list
that no longer extends the one read (the run was restarted into the same directory) is read
again from its start (``stats["rewrites"]``). Each metric has its own steps; a step's values
are one record.

detectron2 writes ``metrics.json`` as JSON lines. ``MetricsJsonReader`` reads the file's first
line once there is one: an object of Sacred's shape, or a line that is no whole object (``{``),
is Sacred's; anything else is detectron2's, read by the JSONL reader.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lrwatch.sources.base import Batch, LogReader
from lrwatch.sources.whole_json import WholeJsonReader

_SNIFF_BYTES = 4096


class SacredReader(WholeJsonReader):
    """One Sacred ``metrics.json`` (``LogReader``); see the module docstring."""

    format = "sacred"

    def __init__(self, path: Path, run: str) -> None:
        super().__init__(path, run)
        self._emitted: dict[str, int] = {}  # entries yielded, by metric
        self._last: dict[str, int] = {}  # the step of the last of them, by metric
        self._rereading = False

    def _take(self, state: Any, out: Batch) -> None:
        series = _series(state) if isinstance(state, dict) else None
        if series is None:
            self._counters["corrupt_records"] += 1
            return
        self._rereading = False
        if any(self._went_back(name, steps) for name, (steps, _) in series.items()):
            self._counters["rewrites"] += 1
            self._emitted, self._last, self._rereading = {}, {}, True
        new: list[tuple[int, str, float]] = []
        for name, (steps, values) in series.items():
            done = self._emitted.get(name, 0)
            new += zip(steps[done:], [name] * (len(steps) - done), values[done:], strict=True)
            if len(steps) > done:
                self._emitted[name], self._last[name] = len(steps), steps[-1]
        new.sort(key=lambda entry: entry[0])  # stable: the file's order of metrics kept
        record: dict[str, float] = {}
        for i, (step, name, value) in enumerate(new):
            record[name] = value
            if i + 1 == len(new) or new[i + 1][0] != step:
                out.add(step, None, record)
                record = {}

    def _went_back(self, name: str, steps: list[int]) -> bool:
        done = self._emitted.get(name, 0)
        return done > 0 and (len(steps) < done or steps[done - 1] != self._last.get(name))

    @property
    def rereading(self) -> bool:
        return self._rereading

    def state_dict(self) -> dict[str, Any]:
        return {"emitted": dict(self._emitted), "last": dict(self._last)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        emitted, last = state.get("emitted", {}), state.get("last", {})
        for what, table in (("emitted", emitted), ("last", last)):
            if not isinstance(table, dict) or not all(
                isinstance(k, str) and type(v) is int and (what == "last" or v >= 0)
                for k, v in table.items()
            ):
                raise ValueError(f"sacred state: {what} must map names to ints, got {table!r}")
        self._emitted, self._last, self._seen = dict(emitted), dict(last), None


def _series(state: dict[str, Any]) -> dict[str, tuple[list[int], list[float]]] | None:
    """{metric: (steps, values)} of a Sacred ``metrics.json``; None if it is not one. A value
    that is no number (a string, a null) is NaN: a point the run logged, whatever it held."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for name, entry in state.items():
        if not isinstance(entry, dict):
            return None
        steps, values = entry.get("steps"), entry.get("values")
        if not isinstance(steps, list) or not isinstance(values, list):
            return None
        if len(steps) != len(values) or not all(type(s) is int for s in steps):
            return None
        out[name] = (steps, [_number(v) for v in values])
    return out


def _number(value: Any) -> float:
    return float(value) if type(value) in (float, int) else math.nan


def is_sacred(head: bytes) -> bool | None:
    """Whether a ``metrics.json`` whose first bytes are ``head`` is Sacred's (see the module
    docstring); None while it cannot tell (no complete first line yet)."""
    text = head.lstrip()
    end = text.find(b"\n")
    if end < 0:
        if not text or len(head) < _SNIFF_BYTES:
            return None  # (a longer first line is no indented object: JSONL, or garbage)
        return False
    try:
        first = json.loads(text[:end])
    except ValueError:
        return text[:end].strip() == b"{"
    return isinstance(first, dict) and _series(first) is not None and bool(first)


class MetricsJsonReader:
    """``metrics.json``, Sacred's or detectron2's (``LogReader``): the reader for the one it
    is, chosen at the first read that can tell, does the work."""

    def __init__(self, path: Path, run: str, jsonl: Callable[[Path, str], LogReader]) -> None:
        self.path = Path(path)
        self.run = run
        self._jsonl = jsonl
        self._inner: LogReader | None = None
        self.format = "jsonl"  # the chosen reader's, once chosen
        self.has_more = False

    def _reader(self) -> LogReader | None:
        if self._inner is None:
            try:
                with open(self.path, "rb") as file:
                    head = file.read(_SNIFF_BYTES)
            except OSError:
                return None
            sacred = is_sacred(head)
            if sacred is not None:
                self._choose(sacred)
        return self._inner

    def _choose(self, sacred: bool) -> LogReader:
        inner = SacredReader(self.path, self.run) if sacred else self._jsonl(self.path, self.run)
        self._inner, self.format = inner, inner.format
        return inner

    def read(self) -> Batch:
        reader = self._reader()
        if reader is None:
            return Batch(self.run)
        batch = reader.read()
        self.has_more = reader.has_more
        return batch

    @property
    def rereading(self) -> bool:
        return self._inner is not None and self._inner.rereading

    def changed(self, st: os.stat_result) -> bool:
        return self._inner is None or self._inner.changed(st)

    @property
    def stats(self) -> Mapping[str, int]:
        return self._inner.stats if self._inner is not None else {}

    def state_dict(self) -> dict[str, Any]:
        if self._inner is None:
            return {}
        return {"kind": self._inner.format, "inner": self._inner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return  # saved before the file told which it is
        kind = state.get("kind", "jsonl")  # (a state saved when only detectron2's was read)
        if kind not in ("sacred", "jsonl"):
            raise ValueError(f"metrics.json state: kind must be sacred or jsonl, got {kind!r}")
        inner = state["inner"] if "kind" in state else state
        if not isinstance(inner, Mapping):
            raise ValueError(f"metrics.json state: inner must be an object, got {inner!r}")
        self._choose(kind == "sacred").load_state_dict(inner)
