"""Plain-text training logs (``*.log``, ``*.txt``): what training scripts print, read line by line.

A line gives a record in one of these shapes, tried in this order: a user regex with named groups
(as Katib's stdout collector takes one; when given, only it is used), a dict line (the Hugging
Face Trainer's ``{'loss': 2.31, ...}``, or JSON), build-nanogpt's ``<step> <split> <value>``, or a
step marker (``step 100``, ``iter 100:``, ``step 1/19560 |``, ``[100]``, an epoch and the
iteration within it, a progress bar that names its epoch, ...) followed by ``key=value``,
``key: value`` or ``key value`` pairs; under an ``Epoch 3/10`` line, Keras' finished progress
bar; a row of a table under its header line (fastai's). Lines that match nothing are skipped and
counted; a file none of whose first lines gives a record is reported once as not a training log.
Each shape's details and the naming of metrics: docs/formats.md.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lrwatch.sources.base import Batch
from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, TailedReader
from lrwatch.sources.text_shapes import (
    BAR,
    CELL,
    DICT_PAIR,
    DICT_STEP_KEYS,
    EPOCH_ITER,
    HEADER,
    INT,
    LOGGED_DICT,
    MEGATRON_VALID,
    MEGATRON_VALUE,
    PROGRESS,
    SPLIT_LINE,
    SPLIT_LOSSES,
    STEP_MARKERS,
    SUMMARY_KEY,
    TERMINAL,
    metric_name,
    read_pairs,
    same_draw,
    to_float,
    update_counter,
)

MAX_LINE_BYTES = 1 << 20  # a longer newline-less run of bytes is not a log line
NOT_LOGS = frozenset({"requirements.txt", "license.txt", "cmakelists.txt", "notice.txt"})
"""Names (lower-cased) of ``*.txt`` files that are never logs; READMEs are excluded by prefix."""


class TextConfig(BaseModel):
    """``sources: {text: {...}}``: which files are text logs and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    globs: tuple[str, ...] = Field(
        default=("*.log", "*.txt", "*.out"),
        description="file-name patterns (fnmatch) read as text logs (*.out: Slurm's, nohup's)",
    )
    pattern: str | None = Field(
        default=None,
        description="a regex with named groups: `step` and one per metric; replaces the "
        "built-in line shapes",
    )
    probe_lines: int = Field(
        default=1000, ge=1, description="a file none of whose first N lines parse is no log"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compiled = re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regex ({exc}): {value!r}") from None
            if not set(compiled.groupindex) - {"step"}:
                raise ValueError(f"needs a named group per metric, e.g. (?P<loss>...): {value!r}")
        return value


class TextReader(TailedReader):
    """Tails one text log; see the module docstring."""

    format = "text"

    def __init__(
        self,
        path: Path,
        run: str,
        *,
        pattern: str | None = None,
        probe_lines: int = 1000,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__(path, run, chunk_bytes=chunk_bytes)
        self._pattern = re.compile(pattern) if pattern is not None else None
        self._probe_lines = probe_lines
        self._lines = 0  # non-blank lines seen
        self._records = 0  # lines that gave a record
        self._skipped = 0
        self._counted = 0  # dict lines (or pattern matches without a step group) so far
        self._step: int | None = None  # the step indented continuation lines belong to
        self._epoch_base: int | None = None  # the file's first epoch number: 0 or 1 (EPOCH_ITER)
        self._iter_at: tuple[int, int] | None = None  # the last epoch read, its top iteration
        self._global_iter = False  # the iteration went on counting over an epoch's end
        self._drawn: dict[str, float] | None = None  # the last progress bar's metrics (BAR)
        self._columns: list[str] | None = None  # the header of the table being printed (HEADER)
        self._unrecognised = False

    @property
    def stats(self) -> Mapping[str, int]:
        return {
            **super().stats,
            "skipped_lines": self._skipped,
            "unrecognised_files": int(self._unrecognised),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.tail.state_dict(),
            "lines": self._lines,
            "records": self._records,
            "counted": self._counted,
            "step": self._step,
            "epoch_base": self._epoch_base,
            "iter_at": self._iter_at,
            "global_iter": self._global_iter,
            "drawn": self._drawn,
            "columns": self._columns,
            "unrecognised": self._unrecognised,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("lines", "records", "counted"):
            value = state.get(key, 0)
            if type(value) is not int or value < 0:
                raise ValueError(f"text state: {key} must be a non-negative int, got {value!r}")
        step, base = state.get("step"), state.get("epoch_base")
        if step is not None and type(step) is not int:
            raise ValueError(f"text state: step must be an int or None, got {step!r}")
        if base not in (None, 0, 1):
            raise ValueError(f"text state: epoch_base must be 0, 1 or None, got {base!r}")
        drawn, columns = state.get("drawn"), state.get("columns")
        iter_at = state.get("iter_at")
        if iter_at is not None and not (
            isinstance(iter_at, (list, tuple))
            and len(iter_at) == 2
            and all(type(x) is int for x in iter_at)
        ):
            raise ValueError(f"text state: iter_at must be two ints or None, got {iter_at!r}")
        if drawn is not None and not (
            isinstance(drawn, dict)
            and all(isinstance(k, str) and type(v) is float for k, v in drawn.items())
        ):
            raise ValueError(f"text state: drawn must be a dict of floats or None, got {drawn!r}")
        if columns is not None and not (
            isinstance(columns, list) and all(isinstance(c, str) for c in columns)
        ):
            raise ValueError(f"text state: columns must be a list of names or None: {columns!r}")
        self.tail.load_state_dict(state)
        self._lines, self._records = state.get("lines", 0), state.get("records", 0)
        self._counted, self._step, self._epoch_base = state.get("counted", 0), step, base
        self._drawn, self._columns = drawn, columns
        self._iter_at = None if iter_at is None else (iter_at[0], iter_at[1])
        self._global_iter = bool(state.get("global_iter", False))
        self._unrecognised = bool(state.get("unrecognised", False))

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        if self.tail.offset == 0:  # a fresh start (new file, truncation)
            self._lines = self._records = self._counted = 0
            self._step, self._epoch_base, self._unrecognised = None, None, False
            self._drawn = self._columns = self._iter_at = None
            self._global_iter = False
        if self._unrecognised:
            return end, 0
        text = data[:end].decode("utf-8", "replace")
        if "\x1b" in text or "\x08" in text:
            text = TERMINAL.sub("", text)
        for line in text.splitlines():
            if not line or line.isspace():
                continue
            self._lines += 1
            if self._line(line, out):
                self._records += 1
            else:
                self._skipped += 1
                if not self._records and self._lines >= self._probe_lines:
                    self._unrecognised = True
                    return end, 0
        return end, 0

    def _line(self, line: str, out: Batch) -> bool:
        """Add the record ``line`` holds to ``out``; whether it held one."""
        if self._pattern is not None:
            return self._matched(line, out)
        stripped = line.strip()
        if stripped[-1] == "}":
            brace = stripped.find("{")
            if brace == 0 or (brace > 0 and LOGGED_DICT.search(stripped, 0, brace)):
                return self._dict(stripped[brace:], out)
        split = SPLIT_LINE.fullmatch(stripped)
        if split is not None:
            name = SPLIT_LOSSES.get(split.group(2), split.group(2))
            out.add(int(split.group(1)), None, {name: to_float(split.group(3))})
            return True
        if "validation loss at" in line and (valid := MEGATRON_VALID.search(line)) is not None:
            named = MEGATRON_VALUE.findall(line, valid.end())
            values = {f"{metric_name(key)}_validation": to_float(value) for key, value in named}
            if values:
                out.add(int(valid[1]), None, values)
            return bool(values)
        epoch = EPOCH_ITER.search(line)
        if epoch is not None:
            step = self._epoch_step(*(int(g) for g in epoch.groups()))
            values = read_pairs(line[epoch.end() :])
            if BAR.search(line, epoch.start(), epoch.end()) is None:
                return self._marked(step, values, out)
            stale, self._drawn = same_draw(values, self._drawn), values or self._drawn
            if not values or stale:
                return bool(values)  # a stale draw (see BAR) still is a line of the log
            return self._marked(step, dict(values), out)  # (a copy: the counter is popped)
        for marker in STEP_MARKERS:
            match = marker.search(line)
            if match is not None:
                return self._marked(int(match.group(1)), read_pairs(line[match.end() :]), out)
        if self._step is not None and (bar := PROGRESS.match(stripped)) is not None:
            # Keras: belongs to the epoch above, once finished
            values = read_pairs(stripped[bar.end() :]) if bar[1] == bar[2] else {}
            if values:
                out.add(self._step, None, values)
            return bool(values)
        if line[0] in " \t" and self._step is not None:  # under a marker line (OLMo)
            values = read_pairs(stripped, spaced=False)
            if values:
                out.add(self._step, None, values)
                return True
            return False
        self._step = None
        return self._table(stripped, out)

    def _table(self, line: str, out: Batch) -> bool:
        """A row of the table under the last header line (see HEADER); or a header."""
        cells = line.split()
        if HEADER.fullmatch(line) is not None:
            self._columns = cells
            return False
        columns = self._columns
        if columns is None or len(cells) != len(columns) or not cells[0].isdigit():
            return False
        if not all(CELL.fullmatch(cell) for cell in cells):
            return False
        values = {
            name: to_float(cell)
            for name, cell in zip(columns[1:], cells[1:], strict=True)
            if ":" not in cell and cell.lower() != "#na#"
        }
        if values:
            out.add(int(cells[0]), None, values)
        return bool(values)

    def _epoch_step(self, number: int, i: int, n: int) -> int:
        """The step of iteration ``i`` of ``n`` in epoch ``number``, counted across epochs from
        the file's first epoch number (0 or 1); or ``i`` itself, once it went on counting over
        an epoch's end ("Epoch [2/5], Step [700/3000]": a global count)."""
        if self._epoch_base is None:
            self._epoch_base = 0 if number == 0 else 1
        last = self._iter_at
        if last is not None and number == last[0]:
            self._iter_at = (number, max(i, last[1]))
        else:
            self._iter_at = (number, i)
            if last is not None and number > last[0] and i > last[1]:
                self._global_iter = True
        return i if self._global_iter else max(0, number - self._epoch_base) * n + i

    def _marked(self, step: int, values: dict[str, float], out: Batch) -> bool:
        """The pairs after a step marker, at ``step`` unless a counter of updates among them
        says otherwise (taken out of them)."""
        self._step = update_counter(values) if values else None
        if self._step is None:
            self._step = step
        if values:
            out.add(self._step, None, values)
        return bool(values)

    def _dict(self, line: str, out: Batch) -> bool:
        pairs = DICT_PAIR.findall(line)
        values = {key: to_float(value) for key, _, value in pairs}
        if not values or SUMMARY_KEY in values:
            return False
        # The step: a step-like key written as a bare integer ('epoch': 3, not 'epoch': 0.5,
        # nor transformers 5's quoted 'epoch': '1', which is a float it printed short).
        integers = {key for key, quote, value in pairs if not quote and INT.fullmatch(value)}
        step = update_counter(values)
        for key in DICT_STEP_KEYS if step is None else ():
            if key in integers:
                step = int(values.pop(key))
                break
        if step is None:
            self._counted += 1
            step = self._counted
        if values:
            out.add(step, None, values)
        return bool(values)

    def _matched(self, line: str, out: Batch) -> bool:
        assert self._pattern is not None
        match = self._pattern.search(line)
        if match is None:
            return False
        values: dict[str, float] = {}
        step: int | None = None
        for name, text in match.groupdict().items():
            if text is None:
                continue
            try:
                number = to_float(text)
            except ValueError:
                continue
            if name == "step":
                step = int(number) if number.is_integer() else None
            else:
                values[name] = number
        if not values:
            return False
        if step is None:
            self._counted += 1
            step = self._counted
        out.add(step, None, values)
        return True


class TextSource:
    """The built-in ``text`` format (plugins.py), configured by ``sources.text``."""

    config_model = TextConfig

    def __init__(self, config: TextConfig | None = None) -> None:
        self.config = config or TextConfig()

    def claims(self, path: PurePath) -> bool:
        name = path.name
        lower = name.lower()
        if lower in NOT_LOGS or lower.startswith(("readme", "license", "requirements")):
            return False
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.config.globs)

    def run_dir(self, path: PurePath) -> PurePath:
        return path.parent

    def open(self, path: Path, run: str) -> TextReader:
        return TextReader(
            path, run, pattern=self.config.pattern, probe_lines=self.config.probe_lines
        )
