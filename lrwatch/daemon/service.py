"""The daemon: wiring and lifecycle, read as ``startup -> main_loop -> shutdown``.

One thread runs the loop below; watchdog's observer thread and the HTTP threads only meet it at
bounded queues (changed paths in, control and status requests in, answers out). Each loop turn:
find what changed (file events, or a sweep of the known files when events are too many: see
LogWatcher), read and analyse it within a time budget (Follower), commit what must be committed
in one transaction, then write the command files (store.py explains why in that order), then
collect acks; once a second, heartbeats, run lifecycles and overdue checkpoints (runs.py).

What is committed when (RunBook.checkpoint says why it is exact): a run whose batch produced a
finding is checkpointed — state and file offsets together — in the same transaction as the
finding and its commands; other runs at least every ``checkpoint_interval_seconds`` and at a
clean shutdown. Saving every run's state on every batch cost more than all the rest at a
thousand runs.

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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from lrwatch.analysis.monitor import Outcome
from lrwatch.config import Config, ConfigError, Mode, plugin_problems, read_secret_file
from lrwatch.daemon import control
from lrwatch.daemon.http import ControlRequest, DaemonServer
from lrwatch.daemon.runs import Run, RunBook
from lrwatch.daemon.store import StateInUse, Store, error_kind, exclusive_lock
from lrwatch.logs import first_time
from lrwatch.plugins import PluginProblem
from lrwatch.protocol import channel
from lrwatch.protocol.types import ActionType, Command, Decision
from lrwatch.sinks import notify
from lrwatch.sinks.notify import Notice, Outlet, build_outlets
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sinks.tensorboard import DecisionWriter
from lrwatch.sources.base import Batch, LogReader
from lrwatch.sources.boundary import Intake, escape_name
from lrwatch.sources.follow import Follower
from lrwatch.sources.formats import build_formats
from lrwatch.sources.layout import scan
from lrwatch.sources.watch import LogWatcher

log = logging.getLogger("lrwatch.daemon.service")

TURN_SECONDS = 0.2
"""Reading and analysis per loop turn, at most (about: a read is not interrupted). A backlog, say
a big log found at start-up, is spread over turns, so acks, control requests and heartbeats are
never kept waiting, and a SIGTERM is obeyed within a turn."""
TICK_SECONDS = 1.0
MIN_SWEEP_SECONDS = 0.1  # the sweep interval of a few dozen files (see _sweep_interval)
"""Heartbeats and run lifecycles change on a scale of seconds: once a second is enough, and keeps
a thousand runs from costing anything per turn."""
STATUS_TIMEOUT_SECONDS = 5.0
# The settings a SIGHUP cannot change (see Daemon._reload).
_FIXED_AT_START: tuple[str, ...] = ("logdir", "state", "metrics_host", "metrics_port")
_FIXED_AT_START += ("api_token_file", "use_polling_observer")


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        reload: Callable[[], Config] | None = None,
    ) -> None:
        if config.logdir is None:
            raise ValueError("config.logdir is required to run the daemon")
        self.config = config
        self.root = config.logdir.resolve()
        self.clock = clock
        self._load_config = reload
        self.metrics = Metrics(registry or CollectorRegistry())
        self.control: queue.Queue[ControlRequest] = queue.Queue(maxsize=64)
        self.follower = Follower(self.root)
        self._reported: set[tuple[str, str, str]] = set()  # (run, file, error) logged
        self._state_reported: set[tuple[str, str]] = set()  # (operation, error) logged
        self._loop_errors: set[str] = set()  # unexpected loop errors logged
        self.intake = Intake(config.max_metrics_per_run, config.max_metric_names)
        self._plugin_failures: set[tuple[str, str, str]] = set()  # (group, name, stage) logged
        self.outlets: list[Outlet] = []
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        self._ready = threading.Event()
        self._root_lock = self._lock_root()
        try:
            self.store = Store(config.state or self.root / ".lrwatch-state.sqlite")
        except BaseException:
            self._unlock_root()
            raise
        try:
            self.book = RunBook(
                self.root, config, _load_key(config), self.store, self.metrics, self.follower
            )
            self.book.on_forget = self._forgotten
            self.watcher = LogWatcher(
                self.root,
                use_polling=config.use_polling_observer,
                max_events_per_second=config.max_file_events_per_second,
            )
            self.tensorboard = DecisionWriter(clock)  # RUN/lrwatch/: decisions as TB events
            token = config.api_token_file.read_text().strip() if config.api_token_file else None
            self.server = DaemonServer(
                config.metrics_host,
                config.metrics_port,
                self.metrics.registry,
                self.status,
                self._ready.is_set,
                self.control,
                token,
            )
        except BaseException:  # a taken port, an unreadable token: release what we hold
            self.store.close()
            self._unlock_root()
            raise

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
        self.server.start()
        log.info(
            "serving /metrics on %s (mode %s, watching %s)",
            self.server.url,
            self.config.mode.value,
            self.root,
        )
        self._start_plugins()
        self._restore()
        self.watcher.start()
        self._ingest(set(scan(self.root)))
        self.book.tick(self.clock())
        self._ready.set()

    def main_loop(self) -> None:
        next_rescan = self.clock() + self.config.rescan_interval_seconds
        next_tick = self.clock() + TICK_SECONDS
        next_sweep = time.monotonic()
        while not self._stop.is_set():
            try:
                next_rescan, next_tick, next_sweep = self._turn(next_rescan, next_tick, next_sweep)
            except sqlite3.Error as exc:
                self._state_failed("commit", exc)
                time.sleep(min(1.0, self.config.poll_interval_seconds * 10))
            except Exception as exc:
                # Not a run's (those are quarantined where they happen): a bug of the loop's
                # own. Logged once per kind, counted, and the loop goes on after a pause, so a
                # recurring one costs a log line and a counter, not every run of the node.
                what = f"{type(exc).__name__}: {exc}"
                self.metrics.run_errors_total.labels("loop", type(exc).__name__).inc()
                if what not in self._loop_errors:
                    self._loop_errors.add(what)
                    log.exception("main loop: unexpected error; going on")
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
        self._serve_control()
        now = self.clock()
        tick = now >= next_tick
        if tick:
            next_tick = now + TICK_SECONDS
        try:
            self.book.poll_channels(heartbeats=tick)
        except sqlite3.Error as exc:  # the state file's trouble: counted, the loop goes on
            self._state_failed("commit", exc)
        if tick:
            try:
                self.book.tick(now)
            except sqlite3.Error as exc:  # checkpoints, stalls, expiry: retried at next tick
                self._state_failed("commit", exc)
            for problem in self.follower.formats.take_problems():  # claims() raised
                self._plugin_failed(problem)
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
        self._ready.clear()
        self.watcher.stop()
        self.server.stop()
        deadline = time.monotonic() + notify.CLOSE_TIMEOUT_SECONDS
        for outlet in self.outlets:  # together: one slow endpoint's wait, not one per outlet
            outlet.close(drain=True)
        for outlet in self.outlets:
            outlet.thread.join(max(0.0, deadline - time.monotonic()))
        self.store.close()
        self._unlock_root()
        log.info("stopped")

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

    def _lock_root(self) -> int | None:
        """One daemon per log root: two would both write commands into the same channels. The
        lock is on the root directory itself: no lock file that could be deleted."""
        try:
            return exclusive_lock(self.root, f"log root {self.root}", directory=True)
        except StateInUse:
            raise
        except OSError as exc:  # a read-only log root (say, observe mode over a mounted share)
            log.info("cannot lock %s (%s); make sure no other daemon watches it", self.root, exc)
            return None

    def _unlock_root(self) -> None:
        if self._root_lock is not None:
            os.close(self._root_lock)
            self._root_lock = None

    # --- state -------------------------------------------------------------------------------

    def _restore(self) -> None:
        """The saved state; rows that do not parse are left out, counted and logged (their
        runs start afresh, their files are read again), the others restored."""
        self.follower.restore(self.store.reader_states())
        self.book.restore()
        for table, key, why in self.store.problems:
            self.metrics.state_errors_total.labels("restore", "unparseable_row").inc()
            log.error(
                "state file %s: %s row %s unparseable (%s): left out, starts afresh",
                self.store.path,
                table,
                escape_name(key),
                why,
            )
        self.store.problems.clear()

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
        one that cannot be used is reported (see ``_plugin_failed``) and left out; the daemon
        runs on with the rest."""
        problems = plugin_problems(self.config)
        formats, more_problems = build_formats(self.config.sources)
        problems += more_problems
        self.follower.formats = self.watcher.formats = formats
        self.outlets, more = build_outlets(self.config.notifiers, self._count_notice)
        for problem in dict.fromkeys([*problems, *more]):
            self._plugin_failed(problem)

    def _plugin_failed(self, problem: PluginProblem) -> None:
        """Logged once per plugin and stage; counted once too when it cannot be loaded or
        configured (each new series would only repeat that), and at each failure while running
        (a plugin that keeps failing must not flood the log: the counter says how often)."""
        key = (problem.group, problem.name, problem.stage)
        if key in self._plugin_failures:
            if problem.stage == "run":
                self.metrics.plugin_errors_total.labels(*key).inc()
            log.debug("%s; running without it", problem)
            return
        self._plugin_failures.add(key)
        self.metrics.plugin_errors_total.labels(*key).inc()
        log.error("%s; running without it", problem)

    def _count_notice(self, notifier: str, outcome: str) -> None:
        self.metrics.notifications_total.labels(notifier, outcome).inc()

    def _notices(self, outcome: Outcome, sent: list[tuple[Command, Decision]]) -> list[Notice]:
        """What the notifiers are told of one batch: its findings, and the commands sent."""
        now = self.clock()
        notices = [
            Notice(
                "finding",
                f.run,
                f.step,
                f.kind,
                f.severity,
                f.reason,
                now,
                f.metric,
                {**f.detail, "onset_step": f.onset_step},
            )
            for f in outcome.findings
        ]
        for command, decision in sent:
            detail = {"action": command.action.to_json(), "seq": command.seq}
            kind = decision.label or command.action.type.value
            notices.append(
                Notice(
                    "action",
                    command.run,
                    decision.step,
                    kind,
                    decision.severity,
                    command.reason,
                    now,
                    detail=detail,
                )
            )
        return notices

    # --- ingest and analysis -----------------------------------------------------------------

    def _ingest(self, paths: set[Path]) -> None:
        """Read what changed (see Follower.turn) and analyse it; then, if anything was found,
        commit it in one transaction with a checkpoint of each run concerned (RunBook.checkpoint
        says why the others can wait: most turns need no transaction at all), and write the
        commands that came of it."""
        if not (paths or self.follower.backlog):
            return
        started = time.monotonic()
        news: list[_News] = []
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
                    self._withdraw([item for item in news if item.run is run])
                    news = [item for item in news if item.run is not run]
                else:
                    self.metrics.run_errors_total.labels("ingest", type(exc).__name__).inc()
                    log.exception("%s: cannot be ingested", reader.path)
            self._count_source_errors(reader, read.errors)
        if news:
            self._commit_all(news)

    def _admit(
        self, run: Run, reader: LogReader, batch: Batch, reread: bool, source: str, started: float
    ) -> _News | None:
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
            self._count_source_errors(reader, problems)
        if not batch:
            return None
        if run.dirty_since is None:
            run.dirty_since = started
        self.metrics.ingested(reader.format, len(batch))
        return self._analyse(run, batch, reread, source)

    def _commit_all(self, news: list[_News]) -> None:
        """Commit the turn's news in one transaction, then send the commands (the outbox: never
        a command that is not in the database). Should the transaction fail, each run's news is
        tried alone, so that one run's bad data costs only that run (quarantined; the others'
        findings are then counted and logged twice, a small price on a path only a bug takes);
        a failure of the state file itself (a full disk) is counted, and those runs' news stay
        in memory, their commands unsent, until a later checkpoint succeeds."""
        try:
            with self.store.transaction():
                for item in news:
                    self._commit(item)
                for run in {id(item.run): item.run for item in news}.values():
                    self.book.checkpoint(run)
            committed = news
        except sqlite3.OperationalError as exc:  # full, I/O, locked: the state file's, not a run's
            self._state_failed("commit", exc)
            self._withdraw(news)
            committed = []
        except Exception:
            committed = []
            by_run: dict[int, list[_News]] = {}
            for item in news:
                by_run.setdefault(id(item.run), []).append(item)
            for items in by_run.values():
                run = items[0].run
                try:
                    with self.store.transaction():
                        for item in items:
                            self._commit(item)
                        self.book.checkpoint(run)
                    committed += items
                except sqlite3.OperationalError as exc:  # full, I/O, locked: not the run's
                    self._state_failed("commit", exc)
                    self._withdraw(items)
                except Exception as exc:
                    self._withdraw(items)
                    self.book.quarantine(run, "commit", exc)
        for item in committed:
            for command in item.commands:
                item.run.actuator.send(command)
            for outlet in self.outlets:
                for notice in item.notices:
                    outlet.offer(notice)

    @staticmethod
    def _withdraw(items: list[_News]) -> None:
        """Commands that could not be committed are never sent: forget them (the controller
        decides again on the next finding; a gap in sequence numbers is harmless)."""
        for item in items:
            for command in item.commands:
                item.run.actuator.withdraw(command)

    def _state_failed(self, operation: str, exc: BaseException) -> None:
        """The state file failed (a full disk, an I/O error): counted, logged once per kind
        with the real error. Runs stay dirty, and are checkpointed again at the next chance."""
        error = error_kind(exc)
        self.metrics.state_errors_total.labels(operation, error).inc()
        level = first_time(self._state_reported, (operation, error), logging.ERROR)
        log.log(
            level,
            "state file %s: %s failed (%s: %s); watching goes on, what is not saved is kept "
            "in memory and saved at the next checkpoint",
            self.store.path,
            operation,
            type(exc).__name__,
            exc,
        )

    def _forgotten(self, run: Run) -> None:
        """An expired run is forgotten everywhere, or each would leave a little behind."""
        self.intake.forget(run.name)
        self.tensorboard.forget(run.actuator.run_dir)
        self._reported = {key for key in self._reported if key[0] != run.name}

    def _analyse(self, run: Run, batch: Batch, reread: bool, source: str) -> _News | None:
        """Feed one batch to the run's monitor; what it found (with the commands it numbered),
        or None."""
        now = self.clock()
        outcome = run.monitor.observe(
            batch, can_act=self._why_not(run, now), source=source, reread=reread
        )
        run.last_sample_at = now
        if run.stall.active:  # data again: the stall is over now, not at the next tick
            run.check_stall(now, self.config)
        roles = run.role_metrics
        if run.monitor.inferred_roles:  # a loss guessed from its name is exported too
            roles = roles | frozenset(run.monitor.inferred_roles.values())
        self.metrics.export_batch(run.name, batch, roles, run.monitor.last_step(), now)
        self.book.export_kinds(run)
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
            self._plugin_failed(problem)
        sent: list[tuple[Command, Decision]] = []
        for decision in outcome.decisions:
            if decision.action is not None:
                for action in (decision.action, *decision.requests):
                    command = run.actuator.new_command(action, decision.reason, "controller", now)
                    # Only LR changes count as adjustments; a request's label is empty.
                    is_lr = action.type is ActionType.SCALE_LR
                    run.labels[command.seq] = decision.label if is_lr else ""
                    sent.append((command, decision))
        commands = [command for command, _ in sent]
        if run.actuator.has_channel:  # what record() writes for; cached, unlike its own check
            actuator = run.actuator
            self.tensorboard.record(
                actuator.run_dir, run.monitor, outcome, commands, answer=actuator.answer
            )
        if not (outcome.findings or outcome.decisions):
            return None
        notices = self._notices(outcome, sent) if self.outlets else []
        return _News(run, outcome, commands, notices)

    def _commit(self, news: _News) -> None:
        """Into the open transaction: the findings, the decisions (audited) and commands."""
        run = news.run
        for finding in news.outcome.findings:
            self.book.record_finding(run, finding)
        for decision in news.outcome.decisions:
            self.store.audit(
                run.name,
                "decision",
                "controller",
                {
                    "step": decision.step,
                    "reason": decision.reason,
                    "action": decision.action.to_json() if decision.action else None,
                    "requests": [r.to_json() for r in decision.requests],
                },
            )
        for command in news.commands:
            self.store.add_command(command)

    def _why_not(self, run: Run, now: float) -> str | None:
        """Why the daemon may not write to this run now, or None if it may."""
        if self.config.mode is Mode.OBSERVE:
            return "observe mode"
        if run.monitor.control.paused:
            return "run paused"
        if not run.alive(now, self.config):
            return "no live hook"
        return None

    def _count_source_errors(self, reader: LogReader, errors: dict[str, int]) -> None:
        """Every problem is counted; each kind is logged once per file, the first time (a
        file that keeps failing the same way must not flood the log: the counter says how
        often)."""
        for error, new in errors.items():
            self.metrics.source_errors_total.labels(reader.format, error).inc(new)
            key = (reader.run, str(reader.path), error)
            level = first_time(self._reported, key, logging.WARNING)
            where = escape_name(str(reader.path))
            log.log(level, "%s: %d new %s", where, new, error.replace("_", " "))

    def _serve_control(self) -> None:
        while True:
            try:
                request = self.control.get_nowait()
            except queue.Empty:
                return
            if not request.reply.set_running_or_notify_cancel():
                continue  # withdrawn by the HTTP thread after its timeout (see server._withdraw)
            try:
                if request.verb == "status":
                    answer = (200, self.book.status(self.clock()))
                else:
                    answer = control.handle(request, self.book, self.config, self.clock())
            except Exception as exc:  # a bad request must not take the daemon down
                log.exception("control request failed")
                answer = (500, {"error": str(exc)})
            request.reply.set_result(answer)

    def status(self) -> dict[str, Any]:
        """For the HTTP threads: the main loop builds it (only it touches the runs) and answers
        within a turn."""
        request = ControlRequest("status", "", {}, "")
        try:
            self.control.put_nowait(request)
            _, answer = request.reply.result(timeout=STATUS_TIMEOUT_SECONDS)
        except queue.Full:
            return {"error": "the daemon is busy", "runs": []}
        except TimeoutError:
            request.reply.cancel()
            return {"error": "the daemon is busy", "runs": []}
        return answer


@dataclass(slots=True)
class _News:
    """What one batch of a run found, waiting for the turn's transaction."""

    run: Run
    outcome: Outcome
    commands: list[Command]
    notices: list[Notice]


def _load_key(config: Config) -> bytes | None:
    return channel.load_secret(read_secret_file(config))
