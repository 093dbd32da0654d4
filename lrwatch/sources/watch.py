"""The watchdog producer: hands the paths of changed logs to the daemon loop.

The producer (watchdog's thread) and the consumer (the daemon's thread) meet only at a bounded
queue; when that overflows, or a directory moves, the consumer is told to rescan
(``layout.scan``). Which changed files are logs is ``layout.log_format``'s answer, the one the
scan gives too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from pathlib import Path

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

from lrwatch.sources.formats import Formats, installed_formats
from lrwatch.sources.layout import inside_root, log_format

log = logging.getLogger(__name__)

ADAPT_WINDOW_SECONDS = 2.0  # how long an event or change rate is measured before a switch


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
