"""Where what logs and directory names hold is made safe for the daemon: one place.

Readers parse (sources/); this module admits what they parsed. Names (runs, metrics, paths)
become printable and encodable, losslessly (``escape_name``/``unescape_name``: a non-UTF-8
directory name arrives with lone surrogates that SQLite and Prometheus refuse); steps must fit
SQLite's int64; metric names are capped per run and in total, so a log with a million distinct
keys cannot take memory without bound. What is refused is counted
(``lrwatch_source_errors_total``) and logged once. NaN and infinite *values* pass: a non-finite
loss is the very signal lrwatch exists for. Why: docs/architecture.md (one boundary per
direction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lrwatch.sources.base import Batch

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_METRICS_PER_RUN = 1000
MAX_METRICS_TOTAL = 100_000
_WALL_TIME_LIMIT = 1e12  # Unix seconds: about year 33658; anything beyond is not a wall time

STEP_OUT_OF_RANGE = "step_out_of_range"
METRIC_NAMES_CAPPED = "metric_names_capped"
BAD_WALL_TIME = "bad_wall_time"


def escape_name(name: str) -> str:
    """A printable, encodable, lossless form of a name made by ``os.fsdecode`` (or JSON).

    The common name (printable, no backslash) is returned as it is, at the cost of one scan."""
    if name.isprintable() and "\\" not in name:
        return name
    out = []
    for char in name:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # another lone surrogate (a JSON "\\ud800" escape)
            out.append(f"\\u{code:04x}")
        elif not char.isprintable():  # unassigned, a format or separator character
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unescape_one(match: re.Match[str]) -> str:
    text = match.group(1)
    if text == "\\":
        return "\\"
    code = int(text[1:], 16)
    if text[0] == "x" and code >= 0x80:
        return chr(0xDC00 + code)
    return chr(code)


def unescape_name(name: str) -> str:
    """The name ``escape_name`` was given (for a path: the one ``os.fsencode`` turns back into
    the directory's bytes)."""
    return _ESCAPE.sub(_unescape_one, name) if "\\" in name else name


@dataclass(slots=True)
class _RunNames:
    known: set[str] = field(default_factory=set)
    renamed: dict[str, str] = field(default_factory=dict)  # raw key -> escaped name
    capped: int = 0  # values dropped for the cap


class Intake:
    """Admits the batches of every run into the daemon (see the module docstring).

    ``admit`` edits the batch in place and returns the problems it met, by error name, for
    ``lrwatch_source_errors_total``; the fast path (every step in range, every name known) is
    two C-level scans of the batch and one set comparison per record."""

    def __init__(
        self, max_per_run: int = MAX_METRICS_PER_RUN, max_total: int = MAX_METRICS_TOTAL
    ) -> None:
        if max_per_run < 1 or max_total < 1:
            raise ValueError(f"metric caps must be at least 1, got {max_per_run}, {max_total}")
        self.max_per_run = max_per_run
        self.max_total = max_total
        self.total = 0
        self._runs: dict[str, _RunNames] = {}
        self.newly_capped: list[str] = []  # runs that first hit a cap in the last admit()

    def admit(self, batch: Batch) -> dict[str, int]:
        errors: dict[str, int] = {}
        self.newly_capped = []
        steps = batch.steps
        if not steps:
            return errors
        if min(steps) < INT64_MIN or max(steps) > INT64_MAX:
            self._drop_records(batch, errors)
        walls = batch.wall_times
        for i, wall in enumerate(walls):
            if wall is not None and not (-_WALL_TIME_LIMIT < wall < _WALL_TIME_LIMIT):
                walls[i] = None  # NaN fails both comparisons
                errors[BAD_WALL_TIME] = errors.get(BAD_WALL_TIME, 0) + 1
        names = self._runs.get(batch.run)
        if names is None:
            names = self._runs[batch.run] = _RunNames()
        known = names.known
        values = batch.values
        for i, record in enumerate(values):
            if record.keys() <= known:
                continue
            values[i] = self._admit_names(batch.run, names, record, errors)
        if len(values) != sum(1 for record in values if record):
            self._drop_empty(batch)
        return errors

    def forget(self, run: str) -> None:
        names = self._runs.pop(run, None)
        if names is not None:
            self.total -= len(names.known)

    def capped(self, run: str) -> int:
        names = self._runs.get(run)
        return names.capped if names else 0

    def _admit_names(
        self, run: str, names: _RunNames, record: dict[str, float], errors: dict[str, int]
    ) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, value in record.items():
            name = key if key in names.known else names.renamed.get(key)
            if name is None:
                name = escape_name(key)
                if name not in names.known:
                    if len(names.known) >= self.max_per_run or self.total >= self.max_total:
                        if not names.capped:
                            self.newly_capped.append(run)
                        names.capped += 1
                        errors[METRIC_NAMES_CAPPED] = errors.get(METRIC_NAMES_CAPPED, 0) + 1
                        continue
                    names.known.add(name)
                    self.total += 1
                if name != key:
                    names.renamed[key] = name
            out[name] = value
        return out

    @staticmethod
    def _drop_records(batch: Batch, errors: dict[str, int]) -> None:
        keep = [i for i, step in enumerate(batch.steps) if INT64_MIN <= step <= INT64_MAX]
        errors[STEP_OUT_OF_RANGE] = len(batch.steps) - len(keep)
        _keep(batch, keep)

    @staticmethod
    def _drop_empty(batch: Batch) -> None:
        _keep(batch, [i for i, record in enumerate(batch.values) if record])


def _keep(batch: Batch, keep: list[int]) -> None:
    """Only the records at ``keep`` (indices, in order) stay in ``batch``, all three columns."""
    batch.steps[:] = [batch.steps[i] for i in keep]
    batch.wall_times[:] = [batch.wall_times[i] for i in keep]
    batch.values[:] = [batch.values[i] for i in keep]
