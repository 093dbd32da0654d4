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
from operator import le
from pathlib import Path
from typing import Any

from lrwatch.config import Config
from lrwatch.pipeline import RunMonitor
from lrwatch.registry import PluginProblem
from lrwatch.sources.base import Batch
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


def read_records(run: str, files: list[Path], formats: Formats | None = None) -> Batch:
    """All records of a run's files, as one batch merged by step (stable: file order breaks
    ties).

    Records, not samples: most scalars are of metrics no detector watches, and those need no
    ``Sample`` (``RunMonitor.observe_records``). The samples of records merged stably by step
    are those of samples merged stably by step, in the same order: a record's scalars share
    its step. The batches' columns are concatenated (no tuple per record), and sorted only
    if out of order, which is checked first, in C: files usually are in step order."""
    merged = Batch(run)
    steps, wall_times, values = merged.steps, merged.wall_times, merged.values
    for path in files:
        reader = open_reader(path.parent, path, run=run, formats=formats)
        while batch := reader.read():
            steps += batch.steps
            wall_times += batch.wall_times
            values += batch.values
    if not all(map(le, steps, islice(steps, 1, None))):
        order = sorted(range(len(steps)), key=steps.__getitem__)
        merged.steps = [steps[i] for i in order]
        merged.wall_times = [wall_times[i] for i in order]
        merged.values = [values[i] for i in order]
    return merged


def read_run(run: str, files: list[Path], formats: Formats | None = None) -> list[Sample]:
    """All samples of a run's files, merged by step (stable: file order breaks ties)."""
    return list(read_records(run, files, formats))


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
        outcome = monitor.observe_records(read_records(run, files, formats).records(), can_act=None)
        problems += outcome.problems + formats.take_problems()
        decisions = {id(d.finding): d for d in outcome.decisions}
        for finding in outcome.findings:
            yield ReplayedFinding(finding, decisions.get(id(finding)))
