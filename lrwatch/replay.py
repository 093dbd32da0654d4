"""``lrwatch replay``: the daemon's detectors and policy over finished logs, no channel.

This is how users tune thresholds against their own history: the same ``RunMonitor`` the
daemon uses, fed every sample of a run in step order, answering what the controller *would*
have done in act mode.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter, le
from pathlib import Path
from typing import Any

from lrwatch.config import Config
from lrwatch.pipeline import Record, RunMonitor
from lrwatch.registry import PluginProblem
from lrwatch.sources.discovery import (
    Formats,
    build_formats,
    installed_formats,
    open_reader,
    run_dir,
    run_name,
    scan,
)
from lrwatch.types import Decision, Finding, Sample


@dataclass(frozen=True, slots=True)
class ReplayedFinding:
    finding: Finding
    decision: Decision | None

    def to_json(self) -> dict[str, Any]:
        f, d = self.finding, self.decision
        return {
            "run": f.run,
            "metric": f.metric,
            "step": f.step,
            "kind": f.kind,
            "severity": f.severity.value,
            "reason": f.reason,
            "onset_step": f.onset_step,
            "detail": {k: _json_safe(v) for k, v in f.detail.items()},
            "action": d.action.to_json() if d and d.action else None,
            "requests": [r.to_json() for r in d.requests] if d else [],
            "decision": d.reason if d else None,
        }


def _json_safe(value: Any) -> Any:
    """Strict JSON has no NaN/Inf; spell them as strings, as the detectors' details do."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def discover_runs(paths: Iterable[Path], formats: Formats | None = None) -> dict[str, list[Path]]:
    """Log files per run. A directory's runs are named relative to it (a directory that is a
    run itself keeps its own name); a file's run is its run directory's name."""
    formats = formats or installed_formats()
    runs: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        if path.is_dir():
            for log in scan(path, formats):
                try:
                    name = run_name(path, log, formats)
                except ValueError:  # the run is above ``path`` (a directory inside a run)
                    name = "."
                runs[run_dir(log, formats).name if name == "." else name].append(log)
        elif path.is_file():
            runs[run_dir(path, formats).name].append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return runs


def read_records(run: str, files: list[Path], formats: Formats | None = None) -> list[Record]:
    """All records of a run's files, merged by step (stable: file order breaks ties).

    Records, not samples: sorting 200k samples cost more than reading them, and most of a
    record's scalars are metrics no detector watches (``RunMonitor.observe_records``). The
    samples of records merged stably by step are those of samples merged stably by step, in
    the same order: a record's scalars share its step. Files are usually in step order
    already: that is checked first, in C, and only a file out of order is sorted."""
    records: list[Record] = []
    for path in files:
        reader = open_reader(path.parent, path, run=run, formats=formats)
        while batch := reader.read():
            records += batch.records()
    steps = [record[0] for record in records]
    if not all(map(le, steps, islice(steps, 1, None))):
        records.sort(key=itemgetter(0))
    return records


def read_run(run: str, files: list[Path], formats: Formats | None = None) -> list[Sample]:
    """All samples of a run's files, merged by step (stable: file order breaks ties)."""
    return [
        Sample(run, metric, step, value, wall_time)
        for step, wall_time, values in read_records(run, files, formats)
        for metric, value in values.items()
    ]


def replay(
    paths: Iterable[Path], config: Config, problems: list[PluginProblem] | None = None
) -> Iterator[ReplayedFinding]:
    """The findings of each run under ``paths``, with what act mode would have done. Plugins
    that cannot be used are left out and appended to ``problems`` (as the daemon does)."""
    problems = [] if problems is None else problems
    formats, more = build_formats(config.sources)
    problems += more
    for run, files in sorted(discover_runs(paths, formats).items()):
        monitor = RunMonitor(run, config.for_run(run), assume_landed=True)
        outcome = monitor.observe_records(read_records(run, files, formats), can_act=None)
        problems += outcome.problems + formats.take_problems()
        decisions = {id(d.finding): d for d in outcome.decisions}
        for finding in outcome.findings:
            yield ReplayedFinding(finding, decisions.get(id(finding)))
