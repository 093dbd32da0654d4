"""Every log under a root, followed: one reader per file, read in an order and a budget that keep a
daemon responsive and a run's history straight.

The daemon hands ``Follower.turn`` the paths that changed; the follower reads them and says what
it found, file by file, so the daemon can analyse and commit each batch with the file's new
offset. What the follower decides, and why:

- **order**: files are read in path order, the order TensorBoard names a run's event files in;
  while one file of a run has a backlog, the later files of that run wait, so a restarted
  writer's new file is read after the old one, as it was written (a run's history then
  rewinds once, at the restart, instead of zigzagging between two timelines);
- **budget**: a turn stops reading at a deadline and keeps the rest as a backlog for the next
  turns, so a huge log found at start-up never keeps acks, control requests or a SIGTERM
  waiting; a backlog is read on without waiting for the file to change again;
- **re-reads**: each batch says whether it is (probably) bytes read before, because its file
  churned (``LogReader.rereading``): a repeat, not news, for ``RunMonitor.observe``;
- **failures**: a reader that raises is counted and skipped, never fatal to the daemon.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrwatch.sources.base import Batch, LogReader
from lrwatch.sources.boundary import escape_name
from lrwatch.sources.formats import Formats, installed_formats
from lrwatch.sources.layout import inside_root, open_reader

log = logging.getLogger(__name__)

_CHURN = ("truncations", "replacements", "rewrites")


@dataclass(slots=True)
class FileRead:
    """What one turn read from one file."""

    reader: LogReader
    source: str  # the file, relative to the root: how a run's state names it
    batches: list[tuple[Batch, bool]] = field(default_factory=list)  # (batch, is a re-read)
    errors: dict[str, int] = field(default_factory=dict)  # new problems, by stats key


class Follower:
    def __init__(self, root: Path, formats: Formats | None = None) -> None:
        self.root = root
        self.formats = formats or installed_formats()
        self.readers: dict[Path, LogReader] = {}
        self.backlog: set[Path] = set()
        self._by_run: dict[str, set[Path]] = defaultdict(set)
        self._failed: set[Path] = set()  # readers that raised: logged with a traceback once
        self._sources: dict[Path, str] = {}  # a file's name relative to the root
        self._names: dict[Path, str] = {}  # ... and as a str, for os.stat
        self.paused: set[str] = set()  # runs whose files are not read (quarantined)
        self._refused: set[Path] = set()  # known files now symlinks out of the root
        self._real_root = os.path.realpath(root)

    def restore(self, states: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
        """Readers back at their saved positions, in the runs they were read into."""
        for path, (run, state) in states.items():
            try:
                reader = open_reader(self.root, Path(path), run=run, formats=self.formats)
                reader.load_state_dict(state)
            except Exception as exc:  # ValueError: a format change; else a source plugin's bug
                log.warning(
                    "%s: saved position unusable (%s: %s); reading it again",
                    path,
                    type(exc).__name__,
                    exc,
                )
                continue
            self._add(Path(path), reader)

    def readers_of(self, run: str) -> list[LogReader]:
        return [self.readers[path] for path in self._by_run.get(run, ())]

    def sweep(self) -> set[Path]:
        """The known files that changed since their last read: a ``stat`` each. What the daemon
        does instead of waiting for file events when there are too many (see LogWatcher)."""
        changed, stat, names = set(), os.stat, self._names
        for path, reader in self.readers.items():
            try:
                st = stat(names[path])
            except OSError:
                continue  # gone; a file created under the name comes as an event
            try:
                if reader.changed(st):
                    changed.add(path)
            except Exception:  # a source plugin's bug: let the read say it (and skip it)
                changed.add(path)
        return changed

    def turn(
        self, paths: set[Path], deadline: float, stop: Callable[[], bool]
    ) -> Iterator[FileRead]:
        """Read ``paths`` (and the backlog) until ``deadline`` (``time.monotonic``) or ``stop``."""
        paths, self.backlog = paths | self.backlog, set()
        behind: set[str] = set()  # runs with a file that has more
        progress = False  # a turn reads at least one file, however short its budget
        for path in sorted(paths, key=str):  # str: a Path compares part by part, slowly
            reader = self._reader(path)
            if reader is None or reader.run in self.paused:
                continue
            name = self._names[path]
            if os.path.islink(name) and not inside_root(self._real_root, name):
                # Swapped for a symlink out of the root since it was found: not ours to read
                # (scan and the watcher check new paths; a sweep only stats known ones).
                # Counted once per swap, not at every sweep that sees it "changed".
                if path not in self._refused:
                    self._refused.add(path)
                    yield FileRead(reader, self._sources[path], errors={"symlink_outside_root": 1})
                continue
            self._refused.discard(path)
            late = progress and time.monotonic() > deadline
            if reader.run in behind or stop() or late:
                self.backlog.add(path)
                continue
            progress = True
            yield self._read(path, reader, deadline)
            if reader.has_more:
                self.backlog.add(path)
                behind.add(reader.run)

    def forget(self, run: str) -> list[Path]:
        """Drop the readers of ``run``'s vanished files, and say which. The offsets of files
        still there are kept, or a forgotten run's logs would be read again from the start."""
        gone = [path for path in self._by_run.get(run, ()) if not path.exists()]
        for path in gone:
            del self.readers[path], self._sources[path], self._names[path]
            self._by_run[run].discard(path)
            self._failed.discard(path)
            self._refused.discard(path)
        if not self._by_run.get(run):
            self._by_run.pop(run, None)
        self.paused.discard(run)
        return gone

    def prune(self, runs: Container[str]) -> list[Path]:
        """Drop the readers of vanished files whose run is not in ``runs`` (the daemon's), and
        say which: a reader opened for a file deleted just after (a late event) never yields
        a sample, so its run never exists to expire and ``forget`` it (2 KB a run, found with
        tracemalloc over a churn of short runs)."""
        gone = []
        for run in [run for run in self._by_run if run not in runs]:
            gone += self.forget(run)
        return gone

    def pause(self, run: str) -> None:
        """Read none of ``run``'s files any more (a quarantined run, see RunBook.quarantine)."""
        self.paused.add(run)
        self.backlog -= self._by_run.get(run, set())

    def _reader(self, path: Path) -> LogReader | None:
        reader = self.readers.get(path)
        if reader is None:
            if not os.path.exists(os.fspath(path)):
                return None  # gone already (an event that came late): nothing to follow
            try:
                reader = open_reader(self.root, path, formats=self.formats)
            except ValueError:
                return None  # not a log after all (e.g. renamed into .lrwatch)
            except Exception:  # a source plugin's open() or run_dir(): skip the file
                if path not in self._failed:
                    self._failed.add(path)
                    log.exception("%s: cannot open a reader; skipped", path)
                return None
            self._add(path, reader)
        return reader

    def _add(self, path: Path, reader: LogReader) -> None:
        self.readers[path] = reader
        self._by_run[reader.run].add(path)
        relative = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        self._sources[path] = escape_name(relative.as_posix())
        self._names[path] = os.fspath(path)

    def _read(self, path: Path, reader: LogReader, deadline: float) -> FileRead:
        out = FileRead(reader, self._sources[path])
        before = _stats(reader)
        batches: list[tuple[Batch, bool]] = []
        try:
            while True:
                rereading = reader.rereading
                batch = reader.read()
                if not batch:
                    break
                batches.append((batch, rereading or reader.rereading))
                if time.monotonic() > deadline:
                    break
        except Exception:  # a reader bug must not take every other run down with it
            if path not in self._failed:
                self._failed.add(path)
                log.exception("%s: reader failed; skipped", path)
            out.errors["reader_errors"] = 1
        after = _stats(reader)
        # The file churned during this turn: its batches re-read what was read before, even
        # the ones whose re-read ended within the batch (``rereading`` is then already over).
        churned = _churn(after) > _churn(before)
        out.batches = [(batch, reread or churned) for batch, reread in batches]
        for error, count in after.items():
            if count > before.get(error, 0):
                out.errors[error] = count - before.get(error, 0)
        return out


def _stats(reader: LogReader) -> Mapping[str, int]:
    try:
        return dict(reader.stats)
    except Exception:  # a source plugin's bug: no counters, rather than no daemon
        return {}


def _churn(stats: Mapping[str, int]) -> int:
    return sum(stats.get(counter, 0) for counter in _CHURN)
