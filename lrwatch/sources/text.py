"""Plain-text training logs (``*.log``, ``*.txt``): what training scripts print, read line by line.

A line gives a record in one of these shapes, tried in this order: a user regex with named groups
(as Katib's stdout collector takes one; when given, only it is used), a dict line (the Hugging
Face Trainer's ``{'loss': 2.31, ...}``, or JSON), build-nanogpt's ``<step> <split> <value>``, or a
step marker (``step 100``, ``iter 100:``, ``step 1/19560 |``, ``[100]``, ...) followed by
``key=value``, ``key: value`` or ``key value`` pairs. Lines that match nothing are skipped and
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

MAX_LINE_BYTES = 1 << 20  # a longer newline-less run of bytes is not a log line
NOT_LOGS = frozenset({"requirements.txt", "license.txt", "cmakelists.txt", "notice.txt"})
"""Names (lower-cased) of ``*.txt`` files that are never logs; READMEs are excluded by prefix."""

_NUM = (
    r"[-+]?(?:(?:nan|inf(?:inity)?)(?![A-Za-z])"
    r"|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
)
_KEY = r"[A-Za-z_][\w./\-]*"
_STEP_MARKERS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\b(?:step|iter|iters|iteration)\b\s*[=:]?\s*(\d+)(?:\s*/\s*\d+)?\s*:?",
        r"(?:^|\s)s:(\d+)\b",  # llm.c main.log
        r"\bepoch\b\s*[=:]?\s*(\d+)(?:\s*/\s*\d+)?\s*:?",
        r"^\s*\[\s*(\d+)\s*\]",
    )
)
# key=value (one word) or key: value (up to two words: "Train Loss: 4.05")
_ASSIGNED = re.compile(
    rf"(?<![\w./\-])(?:({_KEY})\s*=\s*|({_KEY}(?:[ \t]{_KEY})?)\s*:\s*)({_NUM})", re.IGNORECASE
)
# key value, at the start of a segment ("train loss 11.0093", "loss     nan (+nanz)")
_SPACED = re.compile(rf"[\s\-]*({_KEY}(?:\s+{_KEY})?)\s+({_NUM})", re.IGNORECASE)
_SEGMENTS = re.compile(r"[|;]|,(?!\d{3}(?!\d))")
# a quoted value is a number too: transformers 5 prints {'loss': '319.2', 'epoch': '1'}
_DICT_PAIR = re.compile(rf"""['"]([^'"]+)['"]\s*:\s*(['"]?)({_NUM})\2""", re.IGNORECASE)
_INT = re.compile(r"[-+]?\d+")
_DICT_STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
_SPLIT_LINE = re.compile(rf"(\d+)\s+([A-Za-z]\w*)\s+({_NUM})\s*")  # build-nanogpt
_SPLIT_LOSSES = {"train": "train_loss", "val": "val_loss"}
_SUMMARY_KEY = "train_runtime"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _name(key: str) -> str:
    words = key.split()
    return key if len(words) == 1 else "_".join(words).lower()


def _pairs(text: str, *, spaced: bool = True) -> dict[str, float]:
    """The metrics in what follows a step marker (see the module docstring)."""
    found: dict[str, float] = {}
    for segment in _SEGMENTS.split(text):
        assigned = False
        for match in _ASSIGNED.finditer(segment):
            assigned = True
            found[_name(match.group(1) or match.group(2))] = _number(match.group(3))
        if not assigned and spaced:
            spaced_pair = _SPACED.match(segment)
            if spaced_pair is not None:
                found[_name(spaced_pair.group(1))] = _number(spaced_pair.group(2))
    return found


class TextConfig(BaseModel):
    """``sources: {text: {...}}``: which files are text logs and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    globs: tuple[str, ...] = Field(
        default=("*.log", "*.txt"), description="file-name patterns (fnmatch) read as text logs"
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
            "unrecognised": self._unrecognised,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("lines", "records", "counted"):
            value = state.get(key, 0)
            if type(value) is not int or value < 0:
                raise ValueError(f"text state: {key} must be a non-negative int, got {value!r}")
        step = state.get("step")
        if step is not None and type(step) is not int:
            raise ValueError(f"text state: step must be an int or None, got {step!r}")
        self.tail.load_state_dict(state)
        self._lines, self._records = state.get("lines", 0), state.get("records", 0)
        self._counted, self._step = state.get("counted", 0), step
        self._unrecognised = bool(state.get("unrecognised", False))

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        if self.tail.offset == 0:  # a fresh start (new file, truncation)
            self._lines = self._records = self._counted = 0
            self._step, self._unrecognised = None, False
        if self._unrecognised:
            return end, 0
        for line in data[:end].decode("utf-8", "replace").splitlines():
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
        if stripped[0] == "{" and stripped[-1] == "}":
            return self._dict(stripped, out)
        split = _SPLIT_LINE.fullmatch(stripped)
        if split is not None:
            name = _SPLIT_LOSSES.get(split.group(2), split.group(2))
            out.add(int(split.group(1)), None, {name: _number(split.group(3))})
            return True
        for marker in _STEP_MARKERS:
            match = marker.search(line)
            if match is not None:
                self._step = int(match.group(1))
                values = _pairs(line[match.end() :])
                if values:
                    out.add(self._step, None, values)
                    return True
                return False
        if line[0] in " \t" and self._step is not None:  # under a marker line (OLMo)
            values = _pairs(stripped, spaced=False)
            if values:
                out.add(self._step, None, values)
                return True
            return False
        self._step = None
        return False

    def _dict(self, line: str, out: Batch) -> bool:
        pairs = _DICT_PAIR.findall(line)
        values = {key: _number(value) for key, _, value in pairs}
        if not values or _SUMMARY_KEY in values:
            return False
        # The step: a step-like key written as a bare integer ('epoch': 3, not 'epoch': 0.5,
        # nor transformers 5's quoted 'epoch': '1', which is a float it printed short).
        integers = {key for key, quote, value in pairs if not quote and _INT.fullmatch(value)}
        step = None
        for key in _DICT_STEP_KEYS:
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
                number = _number(text)
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
