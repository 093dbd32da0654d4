"""JSONL logs: one JSON object per line, ``step`` required, every other number a metric.

The format (README.md, "How it works", Formats): nested objects are flattened with ``/``
(``{"train": {"loss": 1}}`` is ``train/loss``); ``NaN``/``Infinity``/``-Infinity`` are kept,
since a non-finite loss is the signal we exist for; an optional top-level ``time`` (Unix seconds)
is the sample's wall time, not a metric; booleans, strings, lists and nulls are not metrics. A
line counts only once its newline is written, so a half-flushed line is "not yet". A torn or
corrupt line (invalid JSON, not an object, a missing or non-integer ``step``) is skipped and
counted in ``stats["corrupt_records"]``.

Native files of other frameworks are read as they are written (the same table): when ``step`` is
absent, the first step-like key of ``STEP_KEYS`` that holds an integer (or an integral float) is
the step and is not a metric — detectron2's ``metrics.json`` (``iteration``, read although it is
not named ``*.jsonl``), LLaMA-Factory's ``trainer_log.jsonl`` (``current_steps``), StyleGAN2-ADA's
``stats.jsonl`` (``Progress/tick``), DeiT-style logs (``epoch``). StyleGAN2-ADA writes each
statistic as ``{"num": n, "mean": m, "std": s}``: such an object is read as its mean, under the
statistic's own name. Only lines without an integer ``step`` take these paths, so the common case
costs nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from lrwatch.sources.base import Batch, FileSource, LogReader
from lrwatch.sources.sacred import MetricsJsonReader
from lrwatch.sources.tail import TailedReader

try:  # orjson parses ~6x faster; it is optional, the standard library is the fallback
    import orjson

    _fast_loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = json.loads

STEP_KEYS = (
    "iteration",  # detectron2 metrics.json
    "current_steps",  # LLaMA-Factory trainer_log.jsonl
    "global_step",
    "iter",
    "Progress/tick",  # StyleGAN2-ADA stats.jsonl: {"num": 1, "mean": 12.0, "std": 0.0}
    "tick",
    "epoch",  # DeiT/timm log.txt, Keras-style per-epoch records
)
"""Keys that stand for the step when ``step`` is absent, most specific first."""

METRICS_JSON = "metrics.json"
NATIVE_NAMES = frozenset({METRICS_JSON})
"""JSON-lines files that do not end in ``.jsonl``: detectron2's ``metrics.json`` (or Sacred's
JSON of the same name: ``sacred.py``)."""

MAX_LINE_BYTES = 64 << 20
"""A "line" longer than this without a newline is garbage (or a hostile file), not a record:
it is skipped as corrupt instead of being buffered without bound."""


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


class JsonlReader(TailedReader):
    """Tails one JSONL file; see the module docstring for the format."""

    format = "jsonl"

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        lines = data[:end].split(b"\n")
        lines.pop()  # the empty string after the last newline
        # The hot loop (profiled): one orjson call per line, and for the common flat record of
        # floats nothing else but two pops and a type check per value; the dict orjson built
        # becomes the record as it is. Everything unusual takes the slow paths.
        loads, steps, walls, values = _fast_loads, out.steps, out.wall_times, out.values
        for line in lines:
            try:
                record = loads(line)
            except ValueError:
                if not line or line.isspace():
                    continue
                record = _slow_loads(line)
            if type(record) is not dict:
                self.corrupt += 1
                continue
            step = record.pop("step", None)
            if type(step) is not int:
                step = step_of(record) if step is None else None
                if step is None:
                    self.corrupt += 1
                    continue
            wall_time = record.pop("time", None)
            if wall_time is not None and type(wall_time) is not float:
                wall_time = _number(wall_time)
            for value in record.values():
                if type(value) is not float:
                    record = _flatten(record)
                    break
            if record:
                steps.append(step)
                walls.append(wall_time)
                values.append(record)
        return end, 0


def step_of(record: dict[str, Any]) -> int | None:
    """The step of a record without a ``step`` key, popped from it (see ``STEP_KEYS``)."""
    for key in STEP_KEYS:
        value = record.get(key)
        if value is None:
            continue
        if type(value) is dict:  # StyleGAN2-ADA's {"num", "mean", "std"}
            value = value.get("mean")
        if type(value) is int or (type(value) is float and value.is_integer()):
            del record[key]
            return int(value)
    return None


def _slow_loads(line: bytes) -> Any:
    """A line orjson refused: the ``NaN``/``Infinity`` literals Python's json writes (and that
    we must keep) parse here; anything else is not JSON and comes back as None."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _flatten(record: dict[str, Any]) -> dict[str, float]:
    """The metrics of a record that is not all floats: ints converted, nested objects flattened
    with ``/``, everything else dropped; file order kept. Depth-first with an explicit stack: a
    hostile, deeply nested line must not hit the recursion limit."""
    out: dict[str, float] = {}
    stack = [("", iter(record.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            kind = type(value)
            if kind is float:
                out[prefix + key] = value
            elif kind is dict:
                if "mean" in value and "num" in value:  # a StyleGAN2-ADA statistic
                    number = _number(value["mean"])
                    if number is not None:
                        out[prefix + key] = number
                    continue
                stack.append((prefix + key + "/", iter(value.items())))
                break
            elif kind is int:
                number = _number(value)
                if number is not None:
                    out[prefix + key] = number
        else:
            stack.pop()
    return out


class JsonlSource(FileSource):
    """The built-in ``jsonl`` format (plugins.py); a ``metrics.json`` may be Sacred's instead
    of detectron2's, which the file itself says (``sacred.MetricsJsonReader``)."""

    reader = JsonlReader

    def claims(self, path: PurePath) -> bool:
        return path.name.endswith(".jsonl") or path.name in NATIVE_NAMES

    def open(self, path: Path, run: str) -> LogReader:
        if path.name == METRICS_JSON:
            return MetricsJsonReader(path, run, JsonlReader)
        return JsonlReader(path, run)
