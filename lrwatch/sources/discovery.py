"""Which files under the watched root are logs, which run each belongs to, and which changed.

One predicate, ``log_format``, decides what is a log, for the full ``scan`` and for the watcher
alike, so the two can never disagree. Excluded are lrwatch's own files: the control channel
(``<run>/.lrwatch/``) and lrwatch's output (an ``lrwatch/`` directory), which would otherwise be
read back as metrics; and hidden names, the temp files that atomic writers rename into place (the
rename is seen as a move to the final name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path, PurePath
from typing import Any

from watchdog.events import (
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from lrwatch import plugins
from lrwatch.plugins import PluginProblem
from lrwatch.sources.base import LogReader, Source
from lrwatch.sources.boundary import escape_name

log = logging.getLogger("lrwatch.sources")

CHANNEL_DIR = ".lrwatch"  # the hook's control channel inside a run directory
OUTPUT_DIR = "lrwatch"  # lrwatch's own output inside a run directory
_SKIPPED_DIRS = frozenset({CHANNEL_DIR, OUTPUT_DIR})
ADAPT_WINDOW_SECONDS = 2.0  # how long an event or change rate is measured before a switch


class Formats:
    """The log formats a daemon (or a replay) reads, in the order they are asked: the source
    plugins by name, then the built-ins. Each daemon and each replay holds its own (built by
    ``build_formats`` from its config), so one's ``sources:`` section never changes another's.
    A source whose ``claims`` raises is dropped from it (said by ``take_problems``)."""

    def __init__(self, entries: list[tuple[str, Source]]) -> None:
        self.entries = tuple(entries)
        self._problems: list[PluginProblem] = []

    def claim(self, pure: PurePath) -> tuple[str, Source] | None:
        """The source that claims ``pure``, if any."""
        for entry in self.entries:
            try:
                if entry[1].claims(pure):
                    return entry
            except Exception as exc:
                # Replaced, not changed in place: the watcher's thread may be iterating it.
                self.entries = tuple(e for e in self.entries if e is not entry)
                message = f"claims({str(pure)!r}) raised {type(exc).__name__}: {exc}; dropped"
                self._problems.append(PluginProblem("sources", entry[0], "run", message))
                return self.claim(pure)
        return None

    def take_problems(self) -> list[PluginProblem]:
        """The sources dropped since the last call."""
        taken, self._problems = self._problems, []
        return taken


def build_formats(
    sections: Mapping[str, Mapping[str, Any]],
) -> tuple[Formats, list[PluginProblem]]:
    """Every installed source (plugins.py) but those whose ``sources.NAME`` section says
    ``enabled: false``, each built with the rest of its section; the ones that cannot be built
    are left out and returned."""
    problems: list[PluginProblem] = []
    installed: list[tuple[str, Source]] = []
    builtins: list[tuple[str, Source]] = []
    for info in plugins.available("sources"):
        section = dict(sections.get(info.name, {}))
        if not section.pop("enabled", True):
            continue
        try:
            source = plugins.build("sources", info.name, section)
        except plugins.PluginError as exc:
            problems.append(exc.problem)
            continue
        (builtins if info.builtin else installed).append((info.name, source))
    known = {info.name for info in plugins.available("sources")}
    for name in sorted(sections.keys() - known):
        problems.append(PluginProblem("sources", name, "load", "not installed"))
    return Formats(installed + builtins), problems


@cache
def installed_formats() -> Formats:
    """Every installed source with its default options: what a caller that names no
    ``Formats`` gets (a test, a tool); the daemon and replay build their own from config."""
    return build_formats({})[0]


def log_format(
    path: Path | str, *, root: Path | str | None = None, formats: Formats | None = None
) -> str | None:
    """The name of the source (log format) that reads ``path``: "jsonl", "csv", "tensorboard"
    or a plugin's; None if it is no log.

    Only the directories *below* ``root`` are checked for the excluded names when ``root`` is
    given, so a watched root that itself lies under some ``lrwatch/`` directory still works.
    """
    found = _log_source(path, root, formats or installed_formats())
    return None if found is None else found[0]


def _log_source(
    path: Path | str, root: Path | str | None, formats: Formats
) -> tuple[str, Source] | None:
    pure = PurePath(path)
    if pure.name.startswith("."):
        return None
    claimed = formats.claim(pure)
    if claimed is None:
        return None
    parents = pure.parent
    if root is not None:
        with contextlib.suppress(ValueError):  # not below root: check every directory
            parents = parents.relative_to(root)
    return None if _SKIPPED_DIRS.intersection(parents.parts) else claimed


def run_dir(path: Path | str, formats: Formats | None = None) -> Path:
    """The directory that is the run of the log at ``path``, as its source says (most formats:
    the file's own directory; an MLflow metric file: the run's, two or more levels up)."""
    full = PurePath(os.path.abspath(path))
    claimed = (formats or installed_formats()).claim(full)
    return Path(claimed[1].run_dir(full) if claimed else full.parent)


def run_name(root: Path | str, path: Path | str, formats: Formats | None = None) -> str:
    """The run a log belongs to: its directory relative to ``root``, ``/``-separated, and "."
    for a log at the root itself (the name the daemon reports and ``set-lr RUN`` takes).

    Except that the nearest directory from the log's own up to ``root`` (both included) holding
    a ``.lrwatch/`` channel is the run: the hook creates ``<run_dir>/.lrwatch/``, so logs that a
    job writes into subdirectories of its run_dir (``tb/``, ``version_0/``) belong to it and can
    be acted on. Raises ValueError if ``path`` is not below ``root``.

    A directory name that is not UTF-8 comes out escaped (``boundary.escape_name``), so that
    the name is the same printable string in SQLite, on /metrics and in ``lrwatch status``.
    """
    base = Path(os.path.abspath(root))
    folder = run_dir(path, formats)
    relative = folder.relative_to(base)  # ValueError if outside: not ours to name
    for candidate in [folder, *folder.parents][: len(relative.parts) + 1]:
        if (candidate / CHANNEL_DIR).is_dir():
            return escape_name(candidate.relative_to(base).as_posix())
    return escape_name(relative.as_posix())


def open_reader(
    root: Path | str,
    path: Path | str,
    *,
    run: str | None = None,
    formats: Formats | None = None,
) -> LogReader:
    """The reader for one log; ValueError if ``path`` is not a log under ``root``.

    ``run`` overrides the name ``run_name`` would give: a restarted daemon keeps the run a file
    was read into, even if a ``.lrwatch/`` channel appeared above it since (which changes the
    name ``run_name`` gives) — else the rest of the file would feed another run's detectors.
    """
    formats = formats or installed_formats()
    claimed = _log_source(path, root, formats)
    if claimed is None:
        raise ValueError(f"not a recognised log file: {path}")
    name = run_name(root, path, formats) if run is None else run
    return claimed[1].open(Path(path), name)


def inside_root(real_root: str, path: str) -> bool:
    """Whether ``path`` resolves to somewhere under ``real_root`` (itself already resolved).
    Guards against a symlink planted in a run directory that points at another user's files."""
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def scan(root: Path | str, formats: Formats | None = None) -> list[Path]:
    """Every log below ``root``, sorted. Symlinked directories are not descended into (no
    loops, no escaping the root); a symlinked file counts only if it resolves inside the root.
    Unreadable directories are skipped; a missing root holds no logs."""
    base = Path(root)
    real_root = os.path.realpath(base)
    claim = (formats or installed_formats()).claim
    found: list[Path] = []
    for folder, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        for name in filenames:
            full = os.path.join(folder, name)
            # (the excluded directories were pruned above: only the name and the sources ask)
            if name.startswith(".") or claim(PurePath(full)) is None:
                continue
            if os.path.islink(full) and not inside_root(real_root, full):
                continue
            found.append(Path(full))
    found.sort()
    return found


# What the watcher asks the kernel for: structure (new files, renames) always, content (every
# write) only in the event mode, see LogWatcher. One watch, rescheduled to switch: two watchdog
# emitters over one tree lose each other's moves (tried: paths went stale after a rename).
_STRUCTURE_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileMovedEvent, DirMovedEvent]
_CONTENT_EVENTS: list[type[FileSystemEvent]] = [FileModifiedEvent, FileClosedEvent]


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: classify, enqueue, never block."""

    def __init__(self, watcher: LogWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        watcher = self._watcher
        if isinstance(event, DirMovedEvent):
            # Everything inside now has a new path; let a scan find it all.
            watcher.request_rescan()
            return
        if isinstance(event, FileMovedEvent):
            raw = event.dest_path
        else:
            raw = event.src_path
            watcher.content_events += 1  # under the GIL; an approximate rate is all it feeds
        path = os.fsdecode(raw)
        if path in watcher._pending:  # unlocked peek: the common case, a file already queued
            return
        if log_format(path, root=watcher.root, formats=watcher.formats) is not None:
            watcher.offer(path)


class LogWatcher:
    """Watches ``root`` recursively and hands changed log paths to the daemon loop.

    The producer (watchdog's thread) and the consumer (``drain``, on the daemon's thread) meet
    only at a bounded queue. A path already waiting is not queued again, so the queue bounds the
    number of distinct changed files, not of writes. If it is full anyway, the producer does not
    wait: it raises the rescan flag and ``drain`` says so, and the consumer runs a full ``scan()``
    (fluent-bit's answer to the same problem). ``start()``/``stop()`` bracket the observer thread;
    ``stop()`` joins it.

    **Events or sweeps.** An event per write is the lowest latency there is (a millisecond), but
    watchdog spends 0.1-0.4 ms of CPU on each (measured here: three threads hand it on), and the
    daemon a loop turn, so a thousand runs logging ten lines a second would cost cores. Above
    ``max_events_per_second`` the watcher stops asking the kernel for writes and only watches
    for new and renamed files; ``sweeping`` then says the consumer must find the grown files
    itself, by a ``stat`` of each known file every so often (Follower.sweep: about 3 µs a file).
    When sweeps find few changes again (under a quarter of the limit), events come back. The
    consumer reports what its sweeps found through ``adapt``, which makes the switch, on the
    consumer's thread.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        use_polling: bool = False,
        maxsize: int = 10_000,
        polling_interval: float = 1.0,
        max_events_per_second: float = 100.0,
        formats: Formats | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize!r}")
        if polling_interval <= 0:
            raise ValueError(f"polling_interval must be positive, got {polling_interval!r}")
        if not max_events_per_second > 0:
            raise ValueError(f"max_events_per_second must be > 0, got {max_events_per_second!r}")
        self.root = Path(root)
        self.formats = formats or installed_formats()
        self.use_polling = use_polling
        self.polling_interval = polling_interval
        self.max_events_per_second = max_events_per_second
        self.backend = ""  # the observer class in use, once started
        self.sweeping = False
        self.content_events = 0  # counted by the content handler, read and reset by adapt()
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=maxsize)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._rescan = threading.Event()
        self._observer: BaseObserver | None = None
        self._watch: ObservedWatch | None = None
        self._swept = 0
        self._window = time.monotonic()
        self._real_root = os.path.realpath(self.root)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._observer is not None:
            raise RuntimeError("LogWatcher already started")
        if not self.root.is_dir():
            raise NotADirectoryError(f"cannot watch {self.root}: not a directory")
        self._observer = self._start_observer()
        self.backend = type(self._observer).__name__

    def stop(self) -> None:
        """Stop and join the observer thread; safe to call twice or before ``start``."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    def _start_observer(self) -> BaseObserver:
        """The one place the backend is chosen: the native observer (inotify on Linux) unless
        polling is asked for or the native one fails to start (inotify watch limits, some
        network and container filesystems), in which case polling it is."""
        if not self.use_polling:
            observer = Observer()
            try:
                self._schedule(observer)
                observer.start()
                return observer
            except OSError as exc:
                log.warning("native file watching failed (%s); falling back to polling", exc)
                observer.stop()
        observer = PollingObserver(timeout=self.polling_interval)
        self._schedule(observer)
        observer.start()
        return observer

    def _schedule(self, observer: BaseObserver) -> None:
        events = _STRUCTURE_EVENTS if self.sweeping else _STRUCTURE_EVENTS + _CONTENT_EVENTS
        self._watch = observer.schedule(
            _Handler(self), str(self.root), recursive=True, event_filter=events
        )

    def adapt(self, swept: int = 0) -> None:
        """Consumer side, once per loop turn: switch between events and sweeps (see the class
        docstring); ``swept`` is how many changed files the consumer's last sweep found."""
        observer = self._observer
        if observer is None or isinstance(observer, PollingObserver):
            return  # polling already is a sweep, done by watchdog
        self._swept += swept
        now = time.monotonic()
        elapsed = now - self._window
        if elapsed < ADAPT_WINDOW_SECONDS:
            return
        # Created files count as content events too: a fast enough stream of them is no better.
        event_rate, swept_rate = self.content_events / elapsed, self._swept / elapsed
        self.content_events, self._swept, self._window = 0, 0, now
        if self.sweeping:
            switch = swept_rate < self.max_events_per_second / 4
        else:
            switch = event_rate > self.max_events_per_second
        if not switch:
            return
        self.sweeping = not self.sweeping
        if self.sweeping:
            log.info("%.0f file events/s: checking the known files by sweeps instead", event_rate)
        else:
            log.info("%.0f changed files/s in sweeps: back to file events", swept_rate)
        if self._watch is not None:
            observer.unschedule(self._watch)
        self._schedule(observer)
        self.request_rescan()  # whatever happened while the watch was being replaced

    # --- producer side (watchdog's thread) ---------------------------------------------------

    def offer(self, path: str) -> None:
        """Queue a changed path without ever blocking; raise the rescan flag if full."""
        with self._lock:
            if path in self._pending:
                return
            self._pending.add(path)
        try:
            self._queue.put_nowait(path)
        except queue.Full:
            with self._lock:
                self._pending.discard(path)
            self._rescan.set()

    def request_rescan(self) -> None:
        self._rescan.set()
        # Wake a waiting drain(); if the queue is full, it is not waiting anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    # --- consumer side (the daemon's thread) -------------------------------------------------

    def drain(self, timeout: float | None = None) -> tuple[set[Path], bool]:
        """``(changed log paths, rescan_needed)``, waiting up to ``timeout`` seconds for the first
        change (None: no wait), so the daemon loop also wakes up periodically when all is quiet.

        The rescan flag is cleared here, before the caller scans, so no change can fall between
        the flag and the scan.
        """
        items: list[str | None] = []
        try:
            if timeout and not self._rescan.is_set():
                items.append(self._queue.get(timeout=timeout))
            for _ in range(self._queue.maxsize):  # bounded: the producer keeps producing
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        paths = [item for item in items if item is not None]
        with self._lock:
            self._pending.difference_update(paths)
        rescan = self._rescan.is_set()
        self._rescan.clear()
        changed = {
            Path(path)
            for path in paths
            if not os.path.islink(path) or inside_root(self._real_root, path)
        }
        return changed, rescan
