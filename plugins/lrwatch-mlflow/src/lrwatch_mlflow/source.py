"""MLflow's local file store as an lrwatch log format.

The layout, as ``mlflow/store/tracking/file_store.py`` (MLflow 3.17) writes it::

    <tracking_dir>/<experiment_id>/<run_id>/meta.yaml
                                           /params/<name>      one value, rewritten: not a log
                                           /tags/<name>        one value, rewritten: not a log
                                           /artifacts/...
                                           /metrics/<name>     one line per logged value
    <tracking_dir>/.trash/<experiment_id>/...                  deleted experiments
    <tracking_dir>/<experiment_id>/models/m-<hex>/metrics/...  MLflow 3 logged models: not runs

A metric name may hold ``/`` (``train/loss``); it is then a subdirectory under ``metrics/``. Each
line is ``f"{timestamp_ms} {value} {step}\\n"`` (``FileStore._log_run_metric``), or with two
more fields, ``dataset_name dataset_digest``, for a metric logged against a dataset; MLflow
before 1.0 wrote only ``timestamp value``, read back as step 0 (``_get_metric_from_line``
accepts 2, 3 or 5 fields). The value is Python's ``str(float)``, so a non-finite loss is
written ``nan``, ``inf`` or ``-inf``, which ``float()`` reads back: kept, it is the signal.

Each line is one ``open(path, "a").write(...)`` (``mlflow.utils.file_utils.append_to``), which a
concurrent reader can see half-done, so a line without its newline is "not yet" (FileTail's
rule). A line that does not parse is skipped and counted in ``stats["corrupt_records"]``.

Every metric is its own file, so a reader reads one metric; lrwatch merges the files of a run by
step (each series keeps its own last step, so the loss file being ahead of the lr file is fine).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lrwatch.sources.base import Batch
from lrwatch.sources.tail import DEFAULT_CHUNK_BYTES, TailedReader

METRICS_DIR = "metrics"  # FileStore.METRICS_FOLDER_NAME
TRASH_DIR = ".trash"  # FileStore.TRASH_FOLDER_NAME
MAX_LINE_BYTES = 1 << 20
"""A metric line is some 40 bytes; a megabyte without a newline is not one being written but
garbage (or the wrong file): it is skipped as corrupt rather than buffered without bound."""


class MlflowConfig(BaseModel):
    """The ``sources.mlflow`` section of lrwatch's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment_id_pattern: str = Field(
        default=r"[0-9]+",
        description="regex an experiment directory's name must match in full (the file store "
        "names experiments by integers: 0 for Default, 18-digit random ids for the others)",
    )
    run_id_pattern: str = Field(
        default=r"[0-9a-f]{32}",
        description="regex a run directory's name must match in full (the file store names "
        "runs uuid4().hex)",
    )
    include: tuple[str, ...] = Field(
        default=("*",), description="fnmatch globs: only metrics matching one of them are read"
    )
    exclude: tuple[str, ...] = Field(
        default=("system/*",),
        description="fnmatch globs of metrics not read; by default MLflow's system metrics "
        "(CPU, GPU, memory), which no lrwatch detector looks at and which would cost a reader "
        "each",
    )
    step: Literal["logged", "line"] = Field(
        default="logged",
        description="'logged': the step MLflow wrote; 'line': the line's index in its file, for "
        "jobs that call log_metric without step= (MLflow then writes step 0 every time, and "
        "lrwatch would keep only the first value)",
    )

    @field_validator("experiment_id_pattern", "run_id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {value!r} ({exc})") from None
        return value


class MlflowSource:
    """The ``mlflow`` log format (entry point ``lrwatch.sources: mlflow``).

    The run of a metric file is its ``<experiment_id>/<run_id>`` directory, not the file's own
    directory (which is ``metrics/`` or below): lrwatch names the run by that directory's path
    under the watched root, so watching the tracking dir gives runs ``<experiment_id>/<run_id>``.
    """

    config_model: ClassVar[type[BaseModel]] = MlflowConfig

    def __init__(self, config: MlflowConfig | None = None) -> None:
        self.config = config if config is not None else MlflowConfig()
        self._experiment = re.compile(self.config.experiment_id_pattern)
        self._run = re.compile(self.config.run_id_pattern)

    def _metrics_at(self, parts: tuple[str, ...]) -> int | None:
        """The index of the run's ``metrics`` part in ``parts``, if they are a metric file.

        The leftmost ``<experiment>/<run>/metrics`` wins: the watched root may itself lie under
        a directory called ``metrics``, and a metric may be named ``eval/metrics/acc``, but
        neither puts an experiment id and a 32-hex run id right before it.
        """
        start = 2
        while True:
            try:
                i = parts.index(METRICS_DIR, start, len(parts) - 1)  # a name must follow it
            except ValueError:
                return None
            if self._run.fullmatch(parts[i - 1]) and self._experiment.fullmatch(parts[i - 2]):
                return i
            start = i + 1

    def metric_name(self, path: PurePath) -> str | None:
        """The MLflow metric a path is the file of (``train/loss``), or None if it is none."""
        parts = path.parts
        if TRASH_DIR in parts:
            return None  # a deleted experiment: its runs are over
        i = self._metrics_at(parts)
        return None if i is None else "/".join(parts[i + 1 :])

    def claims(self, path: PurePath) -> bool:
        """Asked of every file under the watched root: string tests only, no I/O."""
        name = self.metric_name(path)
        if name is None:
            return False
        config = self.config
        return any(fnmatch.fnmatchcase(name, g) for g in config.include) and not any(
            fnmatch.fnmatchcase(name, g) for g in config.exclude
        )

    def run_dir(self, path: PurePath) -> PurePath:
        i = self._metrics_at(path.parts)
        return path.parent if i is None else PurePath(*path.parts[:i])

    def open(self, path: Path, run: str) -> MlflowMetricReader:
        name = self.metric_name(path)
        if name is None:
            raise ValueError(f"not an MLflow metric file: {path}")
        return MlflowMetricReader(path, run, name, step=self.config.step)


class MlflowMetricReader(TailedReader):
    """Tails one metric file (one metric) of one run; see the module docstring for the format.
    lrwatch's ``TailedReader`` does the tailing (offsets, churn, torn last lines)."""

    format = "mlflow"

    def __init__(
        self,
        path: Path,
        run: str,
        metric: str,
        *,
        step: Literal["logged", "line"] = "logged",
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        if step not in ("logged", "line"):
            raise ValueError(f"step must be 'logged' or 'line', got {step!r}")
        super().__init__(path, run, chunk_bytes=chunk_bytes)
        self.metric = metric
        self.step_mode = step
        # Complete lines consumed so far: the step of the next one in "line" mode. It counts
        # from wherever the tail's offset is, so it is saved with the offset.
        self._lines = 0

    def state_dict(self) -> dict[str, Any]:
        return {"tail": self.tail.state_dict(), "lines": self._lines}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``; ValueError naming the field if it is malformed."""
        tail, lines = state.get("tail"), state.get("lines", 0)
        if not isinstance(tail, Mapping):
            raise ValueError(f"mlflow reader state: tail must be a mapping, got {tail!r}")
        if type(lines) is not int or lines < 0:
            raise ValueError(
                f"mlflow reader state: lines must be a non-negative int, got {lines!r}"
            )
        self.tail.load_state_dict(tail)
        self._lines = lines

    def _parse(self, data: bytes, out: Batch) -> tuple[int, int]:
        if self.tail.offset == 0:
            self._lines = 0  # the first read, or the file churned and is read from its start
        end = data.rfind(b"\n") + 1
        if not end:
            return self._no_newline(data, MAX_LINE_BYTES)
        metric, by_line = self.metric, self.step_mode == "line"
        for line in data[:end].splitlines():
            fields = line.split()
            if not fields:
                continue  # a blank line is no record, and no step either
            index, self._lines = self._lines, self._lines + 1
            # MLflow's own reader (FileStore._get_metric_from_line) takes 2, 3 or 5 fields.
            if len(fields) not in (2, 3, 5):
                self.corrupt += 1
                continue
            try:
                timestamp_ms = int(fields[0])
                value = float(fields[1])
                step = index if by_line else int(fields[2]) if len(fields) > 2 else 0
            except ValueError:
                self.corrupt += 1
                continue
            out.add(step, timestamp_ms / 1000.0, {metric: value})
        return end, 0
