"""``lrwatch replay``: the daemon's detectors and policy over finished logs, no channel.

This is how users tune thresholds against their own history: the same ``RunMonitor`` the
daemon uses, fed every sample of a run in step order, answering what the controller *would*
have done in act mode.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import gt, le
from pathlib import Path, PurePath
from typing import Any

from lrwatch.analysis import coverage
from lrwatch.analysis.coverage import json_safe
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Decision, Finding, Sample
from lrwatch.sources.base import Batch
from lrwatch.sources.formats import Formats, build_formats, installed_formats
from lrwatch.sources.layout import SKIPPED_DIRS, open_reader, run_dir, run_name, scan


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
            "detail": {k: json_safe(v) for k, v in f.detail.items()},
            "action": d.action.to_json() if d and d.action else None,
            "requests": [r.to_json() for r in d.requests] if d else [],
            "decision": d.reason if d else None,
        }


@dataclass(slots=True)
class ReplayedRun:
    """One run as replay judged it, with what it could not read (coverage.py)."""

    name: str
    files: list[Path]
    metrics: list[str] = field(default_factory=list)  # every metric read, sorted
    steps: int = 0  # distinct steps read
    loss: str | None = None  # the metric taken as the loss; None: the run was not judged
    loss_inferred: bool = False
    first_nonfinite: tuple[str, int, float] | None = None  # (metric, step, value), earliest
    skipped: dict[str, int] = field(default_factory=dict)  # corrupt records, by file
    findings: list[ReplayedFinding] = field(default_factory=list)
    went_back: dict[str, int] = field(default_factory=dict)  # steps back within a file, by file

    @property
    def judged(self) -> bool:
        return self.loss is not None

    def warnings(self) -> list[str]:
        """What a user must hear about this run, on stderr (or in a table's header)."""
        out = []
        if self.loss is None:
            out.append(coverage.no_loss(self.name, self.metrics))
        elif self.loss_inferred:
            out.append(coverage.inferred_loss(self.name, self.loss))
        for path, count in self.skipped.items():
            message = coverage.skipped(path, {"corrupt_records": count})
            if message:
                out.append(f"run {self.name}: {message}")
        for path, count in self.went_back.items():
            out.append(
                f"run {self.name}: {path}: its step went back {count} time"
                f"{'s' if count != 1 else ''} (a restart from a checkpoint, runs appended to one "
                "log, or a step counted within each epoch): read merged by step, a step's first "
                "value kept; a pattern (sources.text.pattern) can name a step that counts on"
            )
        return out


@dataclass(slots=True)
class Discovery:
    """The runs under the paths given (name -> files), and what was not read."""

    runs: dict[str, list[Path]]
    unrecognised: list[Path] = field(default_factory=list)  # files given that are no log
    empty: list[Path] = field(default_factory=list)  # directories given that hold no log
    # Files under the directories given that look like logs (LOGLIKE) but no format reads.
    unread_logs: list[Path] = field(default_factory=list)


# Names of files that are usually a training log: under a directory replayed, one that no format
# claims is said (a checkpoint or a config.json beside the logs is not).
LOGLIKE = (".log", ".txt", ".out", ".jsonl", ".csv")
LOGLIKE_NAMES = frozenset({"trainer_state.json", "metrics.json", "log_history.json"})


def discover(paths: Iterable[Path], formats: Formats | None = None) -> Discovery:
    """Log files per run. A directory's runs are named relative to it (a directory that is a
    run itself keeps its own name); a file's run is its run directory's name. Two different
    directories that would get the same name (``a/train``, ``b/train``) are named by their path
    from the directory they share instead, so their series are never merged; names that do not
    clash stay as they were."""
    formats = formats or installed_formats()
    found: dict[Path, tuple[str, list[Path]]] = {}  # the run's directory -> (name, its files)
    result = Discovery({})
    for path in paths:
        if path.is_dir():
            logs = scan(path, formats)
            if not logs:
                result.empty.append(path)
            else:
                result.unread_logs += _unread_logs(path, formats)
            base = Path(os.path.abspath(path))
            for log in logs:
                try:
                    name = run_name(path, log, formats)
                except ValueError:  # the run is above ``path`` (a directory inside a run)
                    name = "."
                folder = run_dir(log, formats) if name == "." else base / name
                entry = found.setdefault(folder, (folder.name if name == "." else name, []))
                entry[1].append(log)
        elif path.is_file():
            if formats.claim(PurePath(os.path.abspath(path))) is None:
                result.unrecognised.append(path)
                continue
            folder = run_dir(path, formats)
            found.setdefault(folder, (folder.name, []))[1].append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    by_name: dict[str, list[Path]] = defaultdict(list)
    for folder, (name, _) in found.items():
        by_name[name].append(folder)
    for folder, (name, files) in found.items():
        clash = by_name[name]
        if len(clash) > 1:
            name = _distinct_name(folder, clash)
        result.runs.setdefault(name, []).extend(dict.fromkeys(files))
    return result


def _unread_logs(root: Path, formats: Formats) -> list[Path]:
    """Files under ``root`` named like logs (LOGLIKE) that no format claims; hidden names and
    lrwatch's own directories left out, as ``scan`` leaves them."""
    found = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not (name.endswith(LOGLIKE) or name in LOGLIKE_NAMES):
                continue
            full = Path(folder, name)
            if formats.claim(PurePath(os.path.abspath(full))) is None:
                found.append(full)
    return sorted(found)


def _distinct_name(folder: Path, clash: list[Path]) -> str:
    """``folder``'s path from the deepest directory all of ``clash`` share (its parent, if
    that is one of them: a run inside another run's directory)."""
    common = Path(os.path.commonpath([str(f) for f in clash]))
    if common in clash:
        common = common.parent
    return folder.relative_to(common).as_posix()


def discover_runs(paths: Iterable[Path], formats: Formats | None = None) -> dict[str, list[Path]]:
    """``discover(paths).runs``: log files per run."""
    return discover(paths, formats).runs


def read_run(run: str, files: list[Path], formats: Formats | None = None) -> list[Sample]:
    """All samples of a run's files, merged by step (stable: file order breaks ties)."""
    return list(read_records(run, files, formats)[0])


def read_records(
    run: str, files: list[Path], formats: Formats | None = None
) -> tuple[Batch, dict[str, int], dict[str, int]]:
    """All records of a run's files, as one batch merged by step (stable: file order breaks
    ties); the records each file's reader skipped as corrupt, and the times each file's step
    went back (files with some: the merge makes one timeline of what were several).

    Records, not samples: most scalars are of metrics no detector watches, and those need no
    ``Sample`` (``RunMonitor.observe_records``). The samples of records merged stably by step
    are those of samples merged stably by step, in the same order: a record's scalars share
    its step. The batches' columns are concatenated (no tuple per record), and sorted only
    if out of order, which is checked first, in C: files usually are in step order."""
    merged = Batch(run)
    steps, wall_times, values = merged.steps, merged.wall_times, merged.values
    skipped: dict[str, int] = {}
    went_back: dict[str, int] = {}
    for path in files:
        reader = open_reader(path.parent, path, run=run, formats=formats)
        first = len(steps)
        while batch := reader.read():
            steps += batch.steps
            wall_times += batch.wall_times
            values += batch.values
        corrupt = int(reader.stats.get("corrupt_records", 0))
        if corrupt:
            skipped[str(path)] = corrupt
        backs = sum(map(gt, islice(steps, first, None), islice(steps, first + 1, None)))  # (C)
        if backs:
            went_back[str(path)] = backs
    # (files each in order, and only one: in order; else checked in C, rarely out of order)
    if went_back or (len(files) > 1 and not all(map(le, steps, islice(steps, 1, None)))):
        order = sorted(range(len(steps)), key=steps.__getitem__)
        merged.steps = [steps[i] for i in order]
        merged.wall_times = [wall_times[i] for i in order]
        merged.values = [values[i] for i in order]
    return merged, skipped, went_back


def replay_runs(
    discovery: Discovery,
    config: Config,
    formats: Formats,
    problems: list[PluginProblem] | None = None,
) -> Iterator[ReplayedRun]:
    """Each run of ``discovery``, judged (one at a time: a big history is not held at once)."""
    problems = [] if problems is None else problems
    for run, files in sorted(discovery.runs.items()):
        records, skipped, went_back = read_records(run, files, formats)
        monitor = RunMonitor(run, config.for_run(run), assume_landed=True)
        outcome = monitor.observe_records(records.records(), can_act=None)
        problems += outcome.problems + formats.take_problems()
        decisions = {id(d.finding): d for d in outcome.decisions}
        loss, inferred = coverage.loss_of(monitor)
        yield ReplayedRun(
            run,
            files,
            sorted(monitor.series),
            len(set(records.steps)),
            loss,
            inferred,
            _first_nonfinite(records),
            skipped,
            [ReplayedFinding(f, decisions.get(id(f))) for f in outcome.findings],
            went_back,
        )


def _first_nonfinite(records: Batch) -> tuple[str, int, float] | None:
    every = chain.from_iterable(map(dict.values, records.values))
    if all(map(math.isfinite, every)):  # the common case, checked in C
        return None
    for s in records:  # in step order
        if not math.isfinite(s.value):
            return s.metric, s.step, s.value
    return None


def replay(
    paths: Iterable[Path], config: Config, problems: list[PluginProblem] | None = None
) -> Iterator[ReplayedFinding]:
    """The findings of each run under ``paths``, with what act mode would have done. Plugins
    that cannot be used are left out and appended to ``problems`` (as the daemon does)."""
    problems = [] if problems is None else problems
    formats, more = build_formats(config.sources)
    problems += more
    for run in replay_runs(discover(paths, formats), config, formats, problems):
        yield from run.findings
