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

MAX_LINE_BYTES = 1 << 20  # a longer newline-less run of bytes is not a log line
NOT_LOGS = frozenset({"requirements.txt", "license.txt", "cmakelists.txt", "notice.txt"})
"""Names (lower-cased) of ``*.txt`` files that are never logs; READMEs are excluded by prefix."""

_NUM = (
    r"[-+]?(?:(?:nan|inf(?:inity)?)(?![A-Za-z])"
    r"|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
)
_KEY = r"[A-Za-z_][\w./\-]*"
# An epoch and the iteration within it, tried before the markers below: mmdetection's
# "Epoch [1][50/7330]", mmengine's "Epoch(train) [1][ 50/7330]", fairseq's "epoch 001:  100 / 1000",
# Ignite's "Epoch[1] Iteration[5/1000]", PyTorch's ImageNet example "Epoch: [0][ 10/5005]", its
# MNIST example "Train Epoch: 1 [640/60000 (1%)]" (samples, not iterations), its language model
# "| epoch   1 |   200/ 2983 batches |", timm's "Train: 0 [  50/1251 (  4%)]", and a progress bar
# whose description names the epoch: tqdm's "Epoch 3/10:  45%|####5     | 450/1000 [...]"
# (Lightning's TQDMProgressBar), rich's "Epoch 0/9  ━━━━━━ 450/1000". The step counts
# iterations (in the log's own unit) across epochs.
_EPOCH_ITER = re.compile(
    r"(?:\bepoch\b(?:\(train\))?|^\s*train\b)\s*:?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*"
    r"(?:\]\s*(?:iter(?:ation)?\s*)?\[|\[|:\s*\d+%\|[^|]*\||:|\||[━╸╺─]+)"
    r"\s*(\d+)\s*/\s*(\d+)\s*\]?\s*:?",
    re.IGNORECASE,
)
_STEP_MARKERS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        # (DeepSpeed's pipeline engine: "steps: 10 loss: 2.3456 iter time (s): ...")
        r"\b(?:step|steps|iter|iters|iteration)\b(?:\(train\))?\s*[=:\[]?\s*(\d+)"
        r"(?:\s*/\s*\d+)?\s*\]?\s*:?",
        r"(?:^|\s)s:(\d+)\b",  # llm.c main.log
        r"^\s*\d+\|(\d+)\|",  # torchtune's progress bar: "<epoch>|<step>|Loss: 1.404: ..."
        # (PaddleOCR: "epoch: [1/500], global_step: 10, ...", the counter taking the step)
        r"\bepoch\b\s*[=:]?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*\]?\s*:?",
        r"^\s*\[\s*(\d+)\s*\]",
    )
)
# key=value (one word) or key: value (up to two words: "Train Loss: 4.05")
_ASSIGNED = re.compile(
    rf"(?<![\w./\-])(?:({_KEY})\s*=\s*|({_KEY}(?:[ \t]{_KEY})?)\s*:\s*)({_NUM})", re.IGNORECASE
)
# key value, at the start of a segment ("train loss 11.0093", "loss     nan (+nanz)")
_SPACED = re.compile(rf"[\s\-]*({_KEY}(?:\s+{_KEY})?)\s+({_NUM})", re.IGNORECASE)
# (a tab: PyTorch's ImageNet example prints "Time  0.512 ( 0.601)\tLoss 6.9e+00 (6.9e+00)\t...")
_SEGMENTS = re.compile(r"[|;\t]|,(?!\d{3}(?!\d))")
# a quoted value is a number too: transformers 5 prints {'loss': '319.2', 'epoch': '1'}
_DICT_PAIR = re.compile(rf"""['"]([^'"]+)['"]\s*:\s*(['"]?)({_NUM})\2""", re.IGNORECASE)
_INT = re.compile(r"[-+]?\d+")
_DICT_STEP_KEYS = ("step", "global_step", "iteration", "iter", "epoch")
_SPLIT_LINE = re.compile(rf"(\d+)\s+([A-Za-z]\w*)\s+({_NUM})\s*")  # build-nanogpt
_SPLIT_LOSSES = {"train": "train_loss", "val": "val_loss"}
_SUMMARY_KEY = "train_runtime"
# A dict after a logging prefix ending in "| ": fairseq's --log-format json,
# "2024-05-01 10:00:00 | INFO | train_inner | {"epoch": 1, "loss": "9.71", "num_updates": "100"}".
_LOGGED_DICT = re.compile(r"\|\s*$")
# fairseq's simple format prints a validation's metrics under the training's names:
# "epoch 001 | valid on 'valid' subset | loss 9.56 | ... | num_updates 1000".
_SUBSET = re.compile(r"\bvalid on '(\w+)' subset\b")
# Megatron-LM's validation: " validation loss at iteration 1000 on validation set | lm loss value:
# 5.37E+00 | lm loss PPL: 2.15E+02 |", named as its TensorBoard tags name them ("lm loss
# validation": lm_loss_validation), so they do not land in the training loss.
_MEGATRON_VALID = re.compile(r"validation loss at iteration\s+(\d+)")
_MEGATRON_VALUE = re.compile(rf"({_KEY}(?: {_KEY})*) value:\s*({_NUM})", re.IGNORECASE)
# Keras' progress bar under its "Epoch 3/10" line: "6/6 ━━━━━━ 0s 7ms/step - loss: 0.68 - ..."
# (Keras 3), "6/6 [======] - 0s 7ms/step - loss: 0.68" (tf.keras). Only the finished bar (6/6)
# holds the epoch's metrics; a running one holds the mean of its first batches.
_PROGRESS = re.compile(r"(\d+)/(\d+)\s+(?:━|\[[=>.]|-\s)")
# Terminal control in a captured stdout: colours (ESC [ ... m) and the backspaces a progress bar
# redraws itself with.
_TERMINAL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08+")
# A progress bar (tqdm's "45%|####5  |", rich's "━━━") redraws as it advances, its metrics (the
# postfix) still the last batch's until the job sets the new ones: a draw that repeats the last
# draw's metrics at a new count is stale, not a record.
_BAR = re.compile(r"\d%\||━")
# A table printed row by row under a header line (fastai's "epoch  train_loss  valid_loss  time"
# then "0  0.523419  0.391521  00:05"): the header names the columns, the first one the step.
_HEADER = re.compile(
    r"\s*(?:epoch|step|iter|iteration)(?:\s+[A-Za-z_][\w./\-]*){2,}\s*", re.IGNORECASE
)
_CELL = re.compile(rf"{_NUM}|#na#|\d+:\d\d(?::\d\d)?", re.IGNORECASE)


def _counter(values: dict[str, float]) -> int | None:
    """The step a line's own update counter gives (fairseq's ``num_updates``, ``global_step``),
    taken out of its metrics: a count of updates is finer than an epoch and exact."""
    for key in list(values):
        if key == "global_step" or key.endswith("num_updates"):
            value = values.pop(key)
            if value.is_integer() and value >= 0:
                return int(value)
    return None


def _same(values: dict[str, float], drawn: dict[str, float] | None) -> bool:
    """Whether a bar's metrics are the last draw's (NaN the same as NaN)."""
    return (
        drawn is not None
        and values.keys() == drawn.keys()
        and all(v == drawn[k] or (v != v and drawn[k] != drawn[k]) for k, v in values.items())
    )


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _name(key: str) -> str:
    words = key.split()
    return key if len(words) == 1 else "_".join(words).lower()


def _pairs(text: str, *, spaced: bool = True) -> dict[str, float]:
    """The metrics in what follows a step marker (see the module docstring)."""
    found: dict[str, float] = {}
    subset = _SUBSET.search(text)
    if subset is not None:  # fairseq's validation: named as its JSON format names them
        return {f"{subset[1]}_{k}": v for k, v in _pairs(text[subset.end() :]).items()}
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
        self._epoch_base: int | None = None  # the file's first epoch number: 0 or 1 (_EPOCH_ITER)
        self._drawn: dict[str, float] | None = None  # the last progress bar's metrics (_BAR)
        self._columns: list[str] | None = None  # the header of the table being printed (_HEADER)
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
        self._unrecognised = bool(state.get("unrecognised", False))

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        if self.tail.offset == 0:  # a fresh start (new file, truncation)
            self._lines = self._records = self._counted = 0
            self._step, self._epoch_base, self._unrecognised = None, None, False
            self._drawn = self._columns = None
        if self._unrecognised:
            return end, 0
        text = data[:end].decode("utf-8", "replace")
        if "\x1b" in text or "\x08" in text:
            text = _TERMINAL.sub("", text)
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
            if brace == 0 or (brace > 0 and _LOGGED_DICT.search(stripped, 0, brace)):
                return self._dict(stripped[brace:], out)
        split = _SPLIT_LINE.fullmatch(stripped)
        if split is not None:
            name = _SPLIT_LOSSES.get(split.group(2), split.group(2))
            out.add(int(split.group(1)), None, {name: _number(split.group(3))})
            return True
        if "validation loss at" in line and (valid := _MEGATRON_VALID.search(line)) is not None:
            named = _MEGATRON_VALUE.findall(line, valid.end())
            values = {f"{_name(key)}_validation": _number(value) for key, value in named}
            if values:
                out.add(int(valid[1]), None, values)
            return bool(values)
        epoch = _EPOCH_ITER.search(line)
        if epoch is not None:
            number, i, n = (int(g) for g in epoch.groups())
            if self._epoch_base is None:
                self._epoch_base = 0 if number == 0 else 1
            step = max(0, number - self._epoch_base) * n + i
            if _BAR.search(line, epoch.start(), epoch.end()) is None:
                return self._marked(step, line, epoch.end(), out)
            values = _pairs(line[epoch.end() :])
            stale, self._drawn = _same(values, self._drawn), values or self._drawn
            if not values or stale:
                return bool(values)  # a stale draw (see _BAR) still is a line of the log
            return self._marked(step, line, epoch.end(), out)
        for marker in _STEP_MARKERS:
            match = marker.search(line)
            if match is not None:
                return self._marked(int(match.group(1)), line, match.end(), out)
        if self._step is not None and (bar := _PROGRESS.match(stripped)) is not None:
            # Keras: belongs to the epoch above, once finished
            values = _pairs(stripped[bar.end() :]) if bar[1] == bar[2] else {}
            if values:
                out.add(self._step, None, values)
            return bool(values)
        if line[0] in " \t" and self._step is not None:  # under a marker line (OLMo)
            values = _pairs(stripped, spaced=False)
            if values:
                out.add(self._step, None, values)
                return True
            return False
        self._step = None
        return self._table(stripped, out)

    def _table(self, line: str, out: Batch) -> bool:
        """A row of the table under the last header line (see _HEADER); or a header."""
        cells = line.split()
        if _HEADER.fullmatch(line) is not None:
            self._columns = cells
            return False
        columns = self._columns
        if columns is None or len(cells) != len(columns) or not cells[0].isdigit():
            return False
        if not all(_CELL.fullmatch(cell) for cell in cells):
            return False
        values = {
            name: _number(cell)
            for name, cell in zip(columns[1:], cells[1:], strict=True)
            if ":" not in cell and cell.lower() != "#na#"
        }
        if values:
            out.add(int(cells[0]), None, values)
        return bool(values)

    def _marked(self, step: int, line: str, end: int, out: Batch) -> bool:
        """The pairs after a step marker ending at ``end``, at ``step`` unless a counter of
        updates among them says otherwise."""
        values = _pairs(line[end:])
        self._step = _counter(values) if values else None
        if self._step is None:
            self._step = step
        if values:
            out.add(self._step, None, values)
        return bool(values)

    def _dict(self, line: str, out: Batch) -> bool:
        pairs = _DICT_PAIR.findall(line)
        values = {key: _number(value) for key, _, value in pairs}
        if not values or _SUMMARY_KEY in values:
            return False
        # The step: a step-like key written as a bare integer ('epoch': 3, not 'epoch': 0.5,
        # nor transformers 5's quoted 'epoch': '1', which is a float it printed short).
        integers = {key for key, quote, value in pairs if not quote and _INT.fullmatch(value)}
        step = _counter(values)
        for key in _DICT_STEP_KEYS if step is None else ():
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
