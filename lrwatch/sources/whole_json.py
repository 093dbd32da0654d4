"""A JSON file that its writer rewrites whole rather than appends to (``trainer_state.json``,
Sacred's ``metrics.json``): byte offsets mean nothing, so it is parsed whole on each change,
and its reader yields only what is new. A file caught half-written (not valid JSON yet) is
"not yet", like a torn line; a bigger file than ``MAX_FILE_BYTES`` is not read (counted in
``corrupt_records``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrwatch.sources.base import Batch

MAX_FILE_BYTES = 512 << 20
"""The largest published ``trainer_state.json`` with ``logging_steps=1`` over a long run is a
few MiB."""


class WholeJsonReader:
    """The part of a ``LogReader`` of a rewritten JSON file that does not depend on its shape:
    when to parse it, and its counters. ``_take`` reads a parsed document into a batch."""

    format = "json"

    def __init__(self, path: Path, run: str) -> None:
        self.path = Path(path)
        self.run = run
        self.has_more = False  # the whole file is read at once
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) last parsed
        self._counters = {"corrupt_records": 0, "rewrites": 0}

    def read(self) -> Batch:
        out = Batch(self.run)
        try:
            st = os.stat(self.path)
        except OSError:
            return out
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._seen:
            return out
        if st.st_size > MAX_FILE_BYTES:
            self._seen = key
            self._counters["corrupt_records"] += 1
            return out
        try:
            with open(self.path, "rb") as file:
                document = json.loads(file.read())
        except (OSError, ValueError, RecursionError):
            return out  # being rewritten (or not JSON): tried again on the next change
        self._seen = key
        self._take(document, out)
        return out

    def _take(self, document: Any, out: Batch) -> None:
        """Add what ``document`` (the file, parsed) holds that was not yielded yet."""
        raise NotImplementedError

    def changed(self, st: os.stat_result) -> bool:
        return (st.st_ino, st.st_size, st.st_mtime_ns) != self._seen

    @property
    def stats(self) -> Mapping[str, int]:
        return dict(self._counters)
