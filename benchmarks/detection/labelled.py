"""A labelled run as the scorer sees it, read from the ``<label>/<name>/{metrics.jsonl,
labels.json}`` layout (the development corpus and the synthetic generator), and lrwatch's
findings on it, from ``lrwatch replay --format jsonl`` in a subprocess: the CLI's contract, as a
user tuning thresholds would run it, and whatever lrwatch is on the path."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Series = list[tuple[int, float]]


@dataclass
class Run:
    name: str  # <label>/<name> as lrwatch replay names it, or a real log's folder name
    labels: dict[str, Any]
    series: dict[str, Series]  # by role: "loss", "val_loss"
    findings: list[dict[str, Any]] = field(default_factory=list)
    # A real log's folder can hold several runs: each one's loss, so an LR cut is judged
    # against the loss of the run it was made on (empty: the one series above).
    parts: dict[str, Series] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.labels["label"])

    @property
    def onset(self) -> int | None:
        onset = self.labels.get("onset_step")
        return None if onset is None else int(onset)

    def loss(self) -> Series:
        return self.series.get("loss", [])

    def loss_of(self, run: str) -> Series:
        return self.parts.get(run, self.loss())

    def lrwatch_steps(
        self, kind: str, metric: str | None = None, severity: str | None = None
    ) -> list[int]:
        return sorted(
            f["step"]
            for f in self.findings
            if f["kind"] == kind
            and (metric is None or f["metric"] == metric)
            and (severity is None or f.get("severity") == severity)
        )

    def cuts(self) -> list[dict[str, Any]]:
        """The findings on which act mode would have cut the LR (``scale_lr`` by < 1)."""
        return [f for f in self.findings if is_cut(f.get("action"))]


def is_cut(action: dict[str, Any] | None) -> bool:
    if not action or action.get("type") != "scale_lr":
        return False
    factor = action.get("factor")
    return factor is not None and float(factor) < 1.0


def load(corpus: Path) -> list[Run]:
    runs = []
    for labels_path in sorted(corpus.glob("*/*/labels.json")):
        directory = labels_path.parent
        series: dict[str, Series] = defaultdict(list)
        with (directory / "metrics.jsonl").open() as f:
            for line in f:
                record = json.loads(line)
                step = int(record.pop("step"))
                for key, value in record.items():
                    series[key].append((step, float(value)))
        name = f"{directory.parent.name}/{directory.name}"
        runs.append(Run(name, json.loads(labels_path.read_text()), dict(series)))
    return runs


@dataclass
class Replay:
    findings: list[dict[str, Any]]
    seconds: float
    returncode: int
    stderr: str


def replay(path: Path | list[Path], config: Path | None) -> Replay:
    """lrwatch's findings under ``path`` (or paths), through the CLI's JSONL contract. A failing
    replay is returned (exit code and stderr), not raised: the caller decides what it means."""
    paths = path if isinstance(path, list) else [path]
    cmd = [sys.executable, "-m", "lrwatch", "replay", "--format", "jsonl", *map(str, paths)]
    if config is not None:
        cmd += ["--config", str(config)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    findings = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return Replay(findings, time.perf_counter() - started, done.returncode, done.stderr)


def attach(runs: list[Run], findings: list[dict[str, Any]]) -> None:
    by_run = {r.name: r for r in runs}
    for f in findings:
        by_run[f["run"]].findings.append(f)


def first_at_or_after(steps: Iterable[int], onset: int, end: int | None = None) -> int | None:
    return next((s for s in steps if s >= onset and (end is None or s <= end)), None)


def still_improving(series: Series, step: int) -> bool | None:
    """Was a cut (or plateau flag) at ``step`` made while the loss was still falling?

    The horizon grows with the run, since logs are sampled anywhere from every step to every
    epoch: ``h`` = as many logged values as the run had up to the cut, capped by what is left
    after it. Yes if the mean of the ``h`` values after the cut is at least 5 % (of its
    magnitude) below the mean of the last ``max(1, h // 4)`` values up to and including it.
    None (cannot tell) if fewer than 3 finite values follow the cut."""
    i = next((k for k, (s, _) in enumerate(series) if s >= step), None)
    if i is None:
        return None
    h = min(i + 1, len(series) - 1 - i)
    future = [v for _, v in series[i + 1 : i + 1 + h] if math.isfinite(v)]
    past = [v for _, v in series[max(0, i + 1 - max(1, h // 4)) : i + 1] if math.isfinite(v)]
    if len(future) < 3 or not past:
        return None
    before = statistics.fmean(past)
    return statistics.fmean(future) <= before - 0.05 * abs(before)
