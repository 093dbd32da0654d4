"""``hook.log()``: the JSONL metrics file, for jobs that have no logger of their own.

Written in the format the daemon's JSONL source reads: one object per line with ``step``,
``time`` and the metrics; NaN and infinities are written as ``NaN``/``Infinity`` because a
non-finite loss is the very signal the daemon looks for.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from lrwatch.hook.warn_once import WarnOnce

FILENAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, path: Path, report: WarnOnce) -> None:
        self.path = path
        self._report = report
        self._file: BinaryIO | None = None

    def write(self, step: int, metrics: Mapping[str, object]) -> None:
        record: dict[str, object] = {"step": int(step)}
        for name, value in metrics.items():
            number = self._number(name, value)
            if number is not None:
                record[name] = number
        record.setdefault("time", time.time())
        line = (json.dumps(record, allow_nan=True) + "\n").encode()
        try:
            self._append(line)
        except OSError as exc:
            self.close()  # reopened on the next call: the directory may come back
            self._report("writing metrics.jsonl", exc)

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def _append(self, line: bytes) -> None:
        # Unbuffered with O_APPEND: each line is one write() that lands whole, so a reader
        # never sees half a line and nothing is left in a buffer if the job dies.
        if self._file is None:
            self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._file.write(line)

    def _number(self, name: str, value: object) -> int | float | None:
        if type(value) is int or type(value) is float:
            return value
        try:
            return float(value)  # type: ignore[arg-type]  # tensors, numpy scalars, bools
        except (TypeError, ValueError, RuntimeError) as exc:
            self._report(f"logging metric {name!r} (not a number, skipped)", exc)
            return None


def default_path(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / FILENAME
