"""The daemon: wiring and lifecycle, read as ``startup -> main_loop -> shutdown``.

``startup`` takes what the daemon holds (the log root's lock, the state file, the port: released
in reverse should one fail, and at ``shutdown``), restores the saved state and reads what is
there. One thread runs the loop; watchdog's observer thread and the HTTP threads only meet it at
bounded queues (changed paths in, control and status requests in, answers out). Each loop turn:
find what changed (file events, or a sweep of the known files when events are too many: see
LogWatcher), read and analyse it within a time budget (Follower), commit what must be committed
in one transaction, then write the command files (commands.py), then collect acks; once a second,
heartbeats, run lifecycles and overdue checkpoints (runs.py). A run whose batch produced a
finding is checkpointed in the same transaction as the finding; the others at least every
``checkpoint_interval_seconds`` and at a clean shutdown (RunBook.checkpoint says why that is exact).

Signals: SIGTERM/SIGINT stop the loop, the dirty runs are checkpointed and the WAL folded into
the state file; a second signal forces the exit (the state on disk is consistent at any instant).
SIGHUP reloads the config file (``_reload`` says what changes live).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from lrwatch.config import Config, ConfigError, plugin_problems, read_secret_file
from lrwatch.daemon import commands, control, http
from lrwatch.daemon.commands import News
from lrwatch.daemon.http import ControlRequest, DaemonServer
from lrwatch.daemon.problems import Problems
from lrwatch.daemon.run import Run
from lrwatch.daemon.runs import RunBook
from lrwatch.daemon.store import Store, lock_root
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack
from lrwatch.sinks import notify
from lrwatch.sinks.notify import Outlet, build_outlets
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sinks.tensorboard import DecisionWriter
from lrwatch.sources.base import Batch, LogReader
from lrwatch.sources.boundary import Intake
from lrwatch.sources.follow import Follower
from lrwatch.sources.formats import build_formats
from lrwatch.sources.layout import scan
from lrwatch.sources.watch import LogWatcher

log = logging.getLogger(__name__)

TURN_SECONDS = 0.2
"""Reading and analysis per loop turn, at most (about: a read is not interrupted). A backlog, say
a big log found at start-up, is spread over turns, so acks, control requests and heartbeats are
never kept waiting, and a SIGTERM is obeyed within a turn."""
TICK_SECONDS = 1.0
"""Heartbeats and run lifecycles change on a scale of seconds: once a second is enough, and keeps
a thousand runs from costing anything per turn."""
MIN_SWEEP_SECONDS = 0.1  # the sweep interval of a few dozen files (see _sweep_interval)
# The settings a SIGHUP cannot change (see Daemon._reload).
_FIXED_AT_START: tuple[str, ...] = ("logdir", "state", "metrics_host", "metrics_port")
_FIXED_AT_START += ("api_token_file", "use_polling_observer")


class Daemon:
    store: Store  # the state file, from startup on
    book: RunBook  # every run, from startup on
    server: DaemonServer  # the HTTP server, from startup on

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        """Only wiring: nothing is locked, opened or bound before ``startup``."""
        if config.logdir is None:
            raise ValueError("config.logdir is required to run the daemon")
        self.config = config
        self.root = config.logdir.resolve()
        self.clock = clock
        self._load_config = reload
        self.state_path = config.state or self.root / ".lrwatch-state.sqlite"
        self.metrics = Metrics(registry or CollectorRegistry())
        self.problems = Problems(self.metrics, self.state_path)
        self.control: queue.Queue[ControlRequest] = queue.Queue(maxsize=64)
        self.follower = Follower(self.root)
        self.intake = Intake(config.max_metrics_per_run, config.max_metric_names)
        self.watcher = LogWatcher(
            self.root,
            use_polling=config.use_polling_observer,
            max_events_per_second=config.max_file_events_per_second,
        )
        self.tensorboard = DecisionWriter(clock)  # RUN/lrwatch/: decisions as TB events
        self.outlets: list[Outlet] = []
        self._held: ExitStack | None = None  # what startup took, released at shutdown
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._ready = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); a second signal forces the exit."""
        previous = self._install_signal_handlers()
        try:
            self.startup()
            self.main_loop()
            self.book.flush()  # a clean stop: what was analysed since the last checkpoints
        finally:
            try:
                self.shutdown()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def startup(self) -> None:
        """Take what the daemon holds, then start serving and reading."""
        held = self.acquire()
        self.server.start()
        log.info(
            "serving /metrics on %s (mode %s, watching %s)",
            self.server.url,
            self.config.mode.value,
            self.root,
        )
        self._start_plugins()
        self.book.restore()
        self.watcher.start()
        held.callback(self.watcher.stop)
        self._ingest(set(scan(self.root)))
        self.book.tick(self.clock())
        self._ready.set()

    def acquire(self) -> ExitStack:
        """Take, in order, the log root's lock, the state file and the port (with the API token
        and the secret); should one fail, what was taken is released, in reverse, and the
        error raised (StateInUse for another daemon's root or state, OSError for a taken port).
        ``shutdown`` releases them in the same reverse order."""
        with ExitStack() as taken:
            root_lock = lock_root(self.root)
            if root_lock is not None:
                taken.callback(os.close, root_lock)
            self.store = Store(self.state_path)
            taken.callback(self.store.close)
            taken.callback(self._close_outlets)  # the notifiers running then (started below)
            key = _load_key(self.config)
            self.book = RunBook(
                self.root, self.config, key, self.store, self.metrics, self.follower
            )
            self.book.on_forget = self._forgotten
            self.book.on_acks = self._acked
            token_file = self.config.api_token_file
            token = token_file.read_text().strip() if token_file else None
            self.server = DaemonServer(
                self.config.metrics_host,
                self.config.metrics_port,
                self.metrics.registry,
                self._ready.is_set,
                self.control,
                token,
            )
            taken.callback(self.server.stop)
            self._held = taken.pop_all()
        return self._held

    def main_loop(self) -> None:
        next_rescan = self.clock() + self.config.rescan_interval_seconds
        next_tick = self.clock() + TICK_SECONDS
        next_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                next_rescan, next_tick, next_sweep = self._turn(next_rescan, next_tick, next_sweep)
            except sqlite3.Error as exc:
                self.problems.state("commit", exc)
                time.sleep(min(1.0, self.config.poll_interval_seconds * 10))
            except Exception as exc:  # the loop's own bug: logged once per kind, counted
                self.problems.loop(exc)
                time.sleep(min(1.0, self.config.poll_interval_seconds * 10))

    def _turn(
        self, next_rescan: float, next_tick: float, next_sweep: float
    ) -> tuple[float, float, float]:
        """One turn of the main loop; returns when the next rescan, tick and sweep are due."""
        if self.follower.backlog:
            wait = 0.0
        elif self.watcher.sweeping:  # new files still come as events, and wake the loop
            wait = max(0.0, next_sweep - time.monotonic())
        else:
            wait = self.config.poll_interval_seconds
        changed, overflowed = self.watcher.drain(wait)
        now = self.clock()
        if overflowed or now >= next_rescan:
            changed |= set(scan(self.root))
            next_rescan = now + self.config.rescan_interval_seconds
            gone = self.follower.prune(self.book.runs)
            if gone:
                self.store.forget_readers([str(path) for path in gone])
        swept = 0
        if self.watcher.sweeping and time.monotonic() >= next_sweep:
            found = self.follower.sweep()
            changed, swept = changed | found, len(found)
            next_sweep = time.monotonic() + self._sweep_interval()
        self.watcher.adapt(swept)
        self._ingest(changed)
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._reload()
        control.serve(self.control, self.book, self.config, self.clock)
        now = self.clock()
        tick = now >= next_tick
        if tick:
            next_tick = now + TICK_SECONDS
        try:
            self.book.poll_channels(heartbeats=tick)
        except sqlite3.Error as exc:  # the state file's trouble: counted, the loop goes on
            self.problems.state("commit", exc)
        if tick:
            try:
                self.book.tick(now)
            except sqlite3.Error as exc:  # checkpoints, stalls, expiry: retried at next tick
                self.problems.state("commit", exc)
            for problem in self.follower.formats.take_problems():  # claims() raised
                self.problems.plugin(problem)
        return next_rescan, next_tick, next_sweep

    def _sweep_interval(self) -> float:
        """Seconds to the next sweep: a sweep costs a stat per known file and a read per changed
        one, so a few dozen files are swept every 0.1 s (a reaction of a few training steps,
        near inotify's) and a fleet at ``sweep_interval_seconds`` (its CPU bound), growing
        with the number of files in between. Measured: 15 fast jobs react ~4x slower at 0.5 s,
        1,000 runs take 2.5x the CPU at 0.1 s (benchmarks/results/fleet.md)."""
        longest = self.config.sweep_interval_seconds
        return min(longest, max(MIN_SWEEP_SECONDS, len(self.follower.readers) * 0.0005))

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload the config at the next loop turn (what SIGHUP does)."""
        self._reload_requested.set()

    def shutdown(self) -> None:
        """Release what startup took, in reverse: the file watcher, the port, the notifiers
        (drained), the state file, the root's lock. Nothing if it took nothing (a failed
        startup has already released its part)."""
        self._ready.clear()
        held, self._held = self._held, None
        if held is None:
            return
        held.close()
        log.info("stopped")

    def _close_outlets(self) -> None:
        deadline = time.monotonic() + notify.CLOSE_TIMEOUT_SECONDS
        for outlet in self.outlets:  # together: one slow endpoint's wait, not one per outlet
            outlet.close(drain=True)
        for outlet in self.outlets:
            outlet.thread.join(max(0.0, deadline - time.monotonic()))

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_stop_signal)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        return previous

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            # Whatever the loop or the shutdown is stuck in; the state on disk is consistent
            # at every instant (one transaction per turn), so leaving now loses nothing.
            raise SystemExit(f"lrwatch: forced exit on a second signal {signum}")
        log.info("signal %d: shutting down (again to force)", signum)
        self._stop.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested.set()

    # --- state and config --------------------------------------------------------------------

    def _reload(self) -> None:
        """Apply a re-read config file. Live: mode, timeouts, intervals, the secret, roles,
        detectors, policy and overrides (per run: see ``runs.reconfigure``). Not live, kept
        until a restart: logdir, state, metrics host and port, the API token, the observer."""
        if self._load_config is None:
            log.warning("SIGHUP: no config file to reload")
            return
        try:
            new = self._load_config()
            key = _load_key(new)
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config:\n%s", exc)
            return
        except Exception as exc:  # whatever a hostile file does, the running config stays
            log.error("config reload refused, keeping the running config: %s", exc)
            return
        for name in _FIXED_AT_START:
            if getattr(new, name) != getattr(self.config, name):
                log.warning("config reload: %s changes only at a restart", name)
        new = new.model_copy(update={n: getattr(self.config, n) for n in _FIXED_AT_START})
        self.config = new
        for outlet in self.outlets:
            outlet.close()
        self._start_plugins()
        self.book.reconfigure(new, key)
        log.info("config reloaded (%d runs kept their state)", len(self.book.runs))

    # --- plugins -----------------------------------------------------------------------------

    def _start_plugins(self) -> None:
        """The configured sources and notifiers, and a check of every plugin the config names:
        one that cannot be used is reported (see ``Problems.plugin``) and left out; the daemon
        runs on with the rest."""
        problems = plugin_problems(self.config)
        formats, more_problems = build_formats(self.config.sources)
        problems += more_problems
        self.follower.formats = self.watcher.formats = formats
        self.outlets, more = build_outlets(self.config.notifiers, self.problems.notice)
        for problem in dict.fromkeys([*problems, *more]):
            self.problems.plugin(problem)

    # --- ingest and analysis -----------------------------------------------------------------

    def _ingest(self, paths: set[Path]) -> None:
        """Read what changed (see Follower.turn) and analyse it; then, if anything was found,
        commit it in one transaction with a checkpoint of each run concerned (RunBook.checkpoint
        says why the others can wait: most turns need no transaction at all), and write the
        commands that came of it."""
        if not (paths or self.follower.backlog):
            return
        started = time.monotonic()
        news: list[News] = []
        for read in self.follower.turn(paths, started + TURN_SECONDS, self._stop.is_set):
            reader = read.reader
            run = None
            try:
                for batch, reread in read.batches:
                    run = self.book.get(reader.run)
                    if run.quarantined is not None:
                        break
                    found = self._admit(run, reader, batch, reread, read.source, started)
                    if found is not None:
                        news.append(found)
            except Exception as exc:  # anything one run's data raised: that run, not the daemon
                if run is not None:
                    self.book.quarantine(run, "ingest", exc)
                    commands.withdraw([item for item in news if item.run is run])
                    news = [item for item in news if item.run is not run]
                else:
                    self.metrics.run_errors_total.labels("ingest", type(exc).__name__).inc()
                    log.exception("%s: cannot be ingested", reader.path)
            self.problems.source(reader, read.errors)
        if news:
            commands.commit_and_send(news, self.book, self.outlets, self.problems)

    def _admit(
        self, run: Run, reader: LogReader, batch: Batch, reread: bool, source: str, started: float
    ) -> News | None:
        """One batch through the boundary (boundary.Intake: steps in range, names escaped and
        capped), then analysed."""
        problems = self.intake.admit(batch)
        for run_name in self.intake.newly_capped:
            log.warning(
                "run %s: more than %d metric names (or %d in all): the values of further "
                "names are dropped and counted (lrwatch_source_errors_total"
                '{error="metric_names_capped"})',
                run_name,
                self.intake.max_per_run,
                self.intake.max_total,
            )
        if problems:
            self.problems.source(reader, problems)
        if not batch:
            return None
        if run.dirty_since is None:
            run.dirty_since = started
        self.metrics.ingested(reader.format, len(batch))
        return self._analyse(run, batch, reread, source)

    def _analyse(self, run: Run, batch: Batch, reread: bool, source: str) -> News | None:
        """Feed one batch to the run's monitor; what it found (with the commands it numbered),
        or None."""
        now = self.clock()
        outcome = run.monitor.observe(
            batch, can_act=run.why_not_act(now, self.config), source=source, reread=reread
        )
        run.last_sample_at = now
        if run.stall.active:  # data again: the stall is over now, not at the next tick
            run.check_stall(now, self.config)
        roles = run.role_metrics
        if run.monitor.inferred_roles:  # a loss guessed from its name is exported too
            roles = roles | frozenset(run.monitor.inferred_roles.values())
        self.metrics.export_batch(run.name, batch, roles, run.monitor.last_step(), now)
        self.book.export_kinds(run)
        if outcome.rewinds:
            self.metrics.rewinds_total.labels(run.name).inc(len(outcome.rewinds))
        for rewind in outcome.rewinds:
            log.warning(
                "run %s: %s went back from step %d to %d (a restart from a checkpoint?): "
                "its detectors start over",
                run.name,
                rewind.metric,
                rewind.from_step,
                rewind.to_step,
            )
        for problem in outcome.problems:
            self.problems.plugin(problem)
        issued = commands.issue(run, outcome.decisions, now)
        numbered = [command for command, _ in issued]
        if run.actuator.has_channel:  # what record() writes for (cached)
            self.tensorboard.record(run.actuator.run_dir, run.monitor, outcome, numbered)
        if not (outcome.findings or outcome.decisions):
            return None
        notices = commands.notices(outcome, issued, self.clock()) if self.outlets else []
        return News(run, outcome, numbered, notices)

    def _forgotten(self, run: Run) -> None:
        """An expired run is forgotten everywhere, or each would leave a little behind."""
        self.intake.forget(run.name)
        self.tensorboard.forget(run.actuator.run_dir)
        self.problems.forget(run.name)

    def _acked(self, run: Run, acks: list[Ack]) -> None:
        """The acks the actuator read, committed: TensorBoard draws them too."""
        self.tensorboard.acked(run.actuator.run_dir, acks)

    def status(self) -> dict[str, Any]:
        """What ``lrwatch status`` shows (``/api/status``); from any thread."""
        return http.status(self.control)


def _load_key(config: Config) -> bytes | None:
    return channel.load_secret(read_secret_file(config))
