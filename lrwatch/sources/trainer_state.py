"""Hugging Face Trainer's ``trainer_state.json``: read whole, because it is rewritten, not appended.

The Trainer saves ``trainer_state.json`` into each ``checkpoint-N/`` folder (and into the output
directory at the end) with ``json.dump`` over the whole file. Its ``log_history`` is a list of
dicts, one per logging or evaluation event: ``step`` plus ``loss``, ``learning_rate``,
``grad_norm``, ``epoch``, or ``eval_loss`` and other ``eval_*`` keys. Metrics keep the Trainer's
names. The entry written at the end of training (``train_runtime``, ``train_loss`` as the run's
*average*) is a summary, not a point of the curve, and is left out.

Why not a ``TailedReader``: the file never grows by appending, so byte offsets mean nothing. On
each change the file is parsed whole and only the entries past those already yielded are
yielded; a file caught half-written (not valid JSON yet) is "not yet", like a torn line. When the
history no longer extends the one read (a job resumed from an earlier checkpoint rewrote it), it
is read again from its start (``stats["rewrites"]``) and the consumer drops the steps it has.

The run is the Trainer's output directory: ``<out>/checkpoint-N/trainer_state.json`` belongs to
``<out>``, so the copies in several checkpoints are one run; their entries repeat the same steps,
which the run's monitor skips as repeats (``RunMonitor.observe``), so nothing is counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from lrwatch.sources.base import Batch, FileSource
from lrwatch.sources.whole_json import WholeJsonReader

NAME = "trainer_state.json"

_CHECKPOINT = re.compile(r"checkpoint-\d+")
_SUMMARY_KEY = "train_runtime"  # marks the end-of-training summary entry


class TrainerStateReader(WholeJsonReader):
    """One ``trainer_state.json`` (``LogReader``); see the module docstring."""

    format = "trainer_state"

    def __init__(self, path: Path, run: str) -> None:
        super().__init__(path, run)
        self._emitted = 0  # log_history entries already yielded
        self._last_step: int | None = None  # the step of the last of them
        self._reread_until = 0
        self._counters["replacements"] = 0

    def _take(self, state: Any, out: Batch) -> None:
        history = state.get("log_history") if isinstance(state, dict) else None
        if not isinstance(history, list):
            self._counters["corrupt_records"] += 1
            return
        if self._emitted and (
            len(history) < self._emitted or _step_of(history[self._emitted - 1]) != self._last_step
        ):
            self._counters["rewrites"] += 1
            self._reread_until = max(self._reread_until, self._emitted)
            self._emitted = 0
        for entry in history[self._emitted :]:
            self._add(entry, out)
        if history[self._emitted :]:
            self._last_step = _step_of(history[-1])
        self._emitted = len(history)

    def _add(self, entry: Any, out: Batch) -> None:
        step = _step_of(entry)
        if step is None:
            self._counters["corrupt_records"] += 1
            return
        if _SUMMARY_KEY in entry:
            return
        values: dict[str, float] = {}
        for name, value in entry.items():
            if name != "step" and type(value) in (float, int):  # not bool, str or None
                values[name] = float(value)
        if values:
            out.add(step, None, values)

    @property
    def rereading(self) -> bool:
        return self._emitted < self._reread_until

    def state_dict(self) -> dict[str, Any]:
        return {"emitted": self._emitted, "last_step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        emitted, last_step = state.get("emitted", 0), state.get("last_step")
        if type(emitted) is not int or emitted < 0:
            raise ValueError(f"trainer_state state: emitted must be an int >= 0, got {emitted!r}")
        if last_step is not None and type(last_step) is not int:
            raise ValueError(f"trainer_state state: last_step must be an int, got {last_step!r}")
        self._emitted, self._last_step, self._seen = emitted, last_step, None


def _step_of(entry: Any) -> int | None:
    step = entry.get("step") if isinstance(entry, dict) else None
    return step if type(step) is int else None


class TrainerStateSource(FileSource):
    """The built-in ``trainer_state`` format (plugins.py): the run of a checkpoint's copy is
    the output directory above ``checkpoint-N/``."""

    reader = TrainerStateReader

    def claims(self, path: PurePath) -> bool:
        return path.name == NAME

    def run_dir(self, path: PurePath) -> PurePath:
        parent = path.parent
        return parent.parent if _CHECKPOINT.fullmatch(parent.name) else parent
