"""JSONL logs: one JSON object per line, ``step`` required, every other number a metric.

The format (DESIGN.md): nested objects are flattened with ``/`` (``{"train": {"loss": 1}}`` is
``train/loss``); ``NaN``/``Infinity``/``-Infinity`` are kept, since a non-finite loss is the signal
we exist for; an optional top-level ``time`` (Unix seconds) is the sample's wall time, not a
metric; booleans, strings, lists and nulls are not metrics. A line counts only once its newline is
written, so a half-flushed line is "not yet". A torn or corrupt line (invalid JSON, not an object,
a missing or non-integer ``step``) is skipped and counted in ``stats["corrupt_records"]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, FileTail, read_samples
from lrwatch.types import Sample

try:  # orjson parses ~6x faster; it is optional, the standard library is the fallback
    import orjson

    _fast_loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = json.loads

MAX_LINE_BYTES = 64 << 20
"""A "line" longer than this without a newline is garbage (or a hostile file), not a record:
it is skipped as corrupt instead of being buffered without bound."""


def _loads(line: bytes) -> Any:
    """Parse one line; None if it is not JSON. orjson rejects the NaN/Infinity literals that
    Python's json writes (and that we must keep), so such lines take the slower json path."""
    try:
        return _fast_loads(line)
    except ValueError:
        pass
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (bools are ints in Python: excluded)."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: not a usable metric
            return None
    return None


class JsonlReader:
    """Tails one JSONL file; see the module docstring for the format."""

    format = "jsonl"

    def __init__(self, path: Path, run: str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        self.path = Path(path)
        self.run = run
        self.has_more = False  # the last read() stopped at its byte budget: call again
        self._tail = FileTail(self.path, chunk_bytes=chunk_bytes)
        self._corrupt = 0

    def read(self) -> list[Sample]:
        samples, self.has_more = read_samples(self._tail, self._parse)
        return samples

    @property
    def stats(self) -> Mapping[str, int]:
        return {"corrupt_records": self._corrupt, **self._tail.counters}

    def state_dict(self) -> dict[str, Any]:
        return self._tail.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._tail.load_state_dict(state)

    def _parse(self, data: bytes, out: list[Sample]) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            if len(data) >= MAX_LINE_BYTES:
                self._corrupt += 1
                return len(data), 0
            return 0, 2 * len(data)  # one line longer than the chunk: read more of it
        lines = data[:end].split(b"\n")
        lines.pop()  # the empty string after the last newline
        for line in lines:
            if not line or line.isspace():
                continue
            if not self._parse_line(line, out):
                self._corrupt += 1
        return end, 0

    def _parse_line(self, line: bytes, out: list[Sample]) -> bool:
        record = _loads(line)
        if type(record) is not dict:
            return False
        step = record.get("step")
        if type(step) is not int:
            return False
        wall_time = _number(record.get("time"))
        run, append = self.run, out.append
        # Depth-first over nested objects with an explicit stack: a hostile, deeply nested line
        # must not hit the recursion limit, and file order of keys is kept.
        stack = [("", iter(record.items()))]
        while stack:
            prefix, items = stack[-1]
            for key, value in items:
                kind = type(value)
                if kind is float:  # the common case, without a call
                    if prefix or key != "time":
                        append(Sample(run, prefix + key, step, value, wall_time))
                elif kind is dict:
                    stack.append((prefix + key + "/", iter(value.items())))
                    break
                elif kind is int and (prefix or (key != "step" and key != "time")):
                    number = _number(value)
                    if number is not None:
                        append(Sample(run, prefix + key, step, number, wall_time))
            else:
                stack.pop()
        return True
