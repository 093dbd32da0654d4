"""What goes wrong around the daemon's runs, counted every time and logged once per kind.

A file that keeps failing the same way, a plugin that raises at every batch or a full disk must
not flood the log: the first occurrence of each kind is logged at its level (with the real error),
later ones at debug, and the counter says how often. One place for that rule, so that every kind
of trouble reads the same in the log and in /metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lrwatch.daemon.store import error_kind
from lrwatch.logs import first_time
from lrwatch.plugins import PluginProblem
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sources.base import LogReader
from lrwatch.sources.boundary import escape_name

log = logging.getLogger(__name__)


class Problems:
    def __init__(self, metrics: Metrics, state_path: Path) -> None:
        self.metrics = metrics
        self.state_path = state_path
        self._sources: set[tuple[str, str, str]] = set()  # (run, file, error) logged
        self._state: set[tuple[str, str]] = set()  # (operation, error) logged
        self._loop: set[str] = set()  # unexpected loop errors logged
        self._plugins: set[tuple[str, str, str]] = set()  # (group, name, stage) logged

    def source(self, reader: LogReader, errors: dict[str, int]) -> None:
        """What reading a file ran into; each kind logged once per file, the first time."""
        for error, new in errors.items():
            self.metrics.source_errors_total.labels(reader.format, error).inc(new)
            key = (reader.run, str(reader.path), error)
            level = first_time(self._sources, key, logging.WARNING)
            where = escape_name(str(reader.path))
            log.log(level, "%s: %d new %s", where, new, error.replace("_", " "))

    def state(self, operation: str, exc: BaseException) -> None:
        """The state file failed (a full disk, an I/O error). Runs stay dirty, and are
        checkpointed again at the next chance."""
        error = error_kind(exc)
        self.metrics.state_errors_total.labels(operation, error).inc()
        level = first_time(self._state, (operation, error), logging.ERROR)
        log.log(
            level,
            "state file %s: %s failed (%s: %s); watching goes on, what is not saved is kept "
            "in memory and saved at the next checkpoint",
            self.state_path,
            operation,
            type(exc).__name__,
            exc,
        )

    def loop(self, exc: Exception) -> None:
        """Not a run's (those are quarantined where they happen): a bug of the main loop's
        own, which goes on after a pause; a recurring one costs a log line and a counter, not
        every run of the node."""
        what = f"{type(exc).__name__}: {exc}"
        self.metrics.run_errors_total.labels("loop", type(exc).__name__).inc()
        if what not in self._loop:
            self._loop.add(what)
            log.error("main loop: unexpected error; going on", exc_info=exc)

    def plugin(self, problem: PluginProblem) -> None:
        """Logged once per plugin and stage; counted once too when it cannot be loaded or
        configured (each new series would only repeat that), and at each failure while running
        (a plugin that keeps failing must not flood the log: the counter says how often)."""
        key = (problem.group, problem.name, problem.stage)
        if key in self._plugins:
            if problem.stage == "run":
                self.metrics.plugin_errors_total.labels(*key).inc()
            log.debug("%s; running without it", problem)
            return
        self._plugins.add(key)
        self.metrics.plugin_errors_total.labels(*key).inc()
        log.error("%s; running without it", problem)

    def notice(self, notifier: str, outcome: str) -> None:
        """A notifier's delivery (sent, failed, dropped): counted."""
        self.metrics.notifications_total.labels(notifier, outcome).inc()

    def forget(self, run: str) -> None:
        """An expired run's files: a file of that name seen again is logged afresh."""
        self._sources = {key for key in self._sources if key[0] != run}
