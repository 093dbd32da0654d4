"""Every run the daemon knows (RunBook), and what touches all of them at once: creation and
restoration, the channel polls (acks, heartbeats), the once-a-second lifecycle tick (run.py
says what a run's states are), checkpoints and the status snapshot.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from lrwatch.analysis import coverage
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.daemon.actuator import Actuator
from lrwatch.daemon.run import Run, RunState
from lrwatch.daemon.store import Store, StoredCommand
from lrwatch.detectors.stall import StallDetector
from lrwatch.logs import first_time
from lrwatch.protocol.channel import ack_to_json
from lrwatch.protocol.types import Ack, AckStatus, Finding, Role
from lrwatch.sinks.prometheus import Metrics
from lrwatch.sources.boundary import escape_name, unescape_name
from lrwatch.sources.follow import Follower

log = logging.getLogger(__name__)


def role_metrics(monitor: RunMonitor) -> frozenset[str]:
    """Every metric name that plays a role under ``monitor``'s settings: those are exported."""
    roles = monitor.settings.roles
    return frozenset(name for role in Role for name in getattr(roles, role.value))


def reconfigure(monitor: RunMonitor, config: Config) -> RunMonitor:
    """``monitor`` under the settings ``config`` gives its run now (a config reload).

    A policy change keeps everything: the controller is rebuilt, the detectors and the run's
    control state (LR factor, cooldown, pause) carry over. A change of the detectors' knobs or of
    the roles rebuilds the detectors, which warm up again as on a new run (their saved state
    belongs to other knobs); the control state still carries over.
    """
    settings = config.for_run(monitor.run)
    if settings == monitor.settings:
        return monitor
    fresh = RunMonitor(monitor.run, settings)
    old = monitor.settings
    if settings.detectors == old.detectors and settings.roles == old.roles:
        fresh.load_state_dict(monitor.state_dict())
    else:
        fresh.control = monitor.control
    return fresh


class RunBook:
    """Every run the daemon knows, with what touches all of them: creation and restoration,
    the channel polls (acks, heartbeats), the once-a-second lifecycle tick and the status
    snapshot. Runs only on the daemon's main thread, like the store it writes to."""

    def __init__(
        self,
        root: Path,
        config: Config,
        key: bytes | None,
        store: Store,
        metrics: Metrics,
        follower: Follower,
    ) -> None:
        self.root, self.config, self.key = root, config, key
        self.store, self.metrics, self.follower = store, metrics, follower
        self.runs: dict[str, Run] = {}
        self.on_forget: Callable[[Run], None] | None = None  # what else holds a run: let go
        self.on_acks: Callable[[Run, list[Ack]], None] | None = None  # who else shows acks
        self._reported: set[tuple[str, str]] = set()  # (run, channel error) already logged
        for state in RunState:  # every state's gauge from 0, before the first tick counts them
            metrics.runs.labels(state.value).set(0)

    def get(self, name: str) -> Run:
        """The run called ``name``, created on first sight."""
        run = self.runs.get(name)
        if run is None:
            # The name is the escaped form of the directory's (boundary.py): back to the path.
            run_dir = self.root if name == "." else self.root / unescape_name(name)
            monitor = RunMonitor(name, self.config.for_run(name))
            run = self.runs[name] = Run(
                name,
                monitor,
                Actuator(name, run_dir, self.key, functools.partial(self._channel_error, name)),
                StallDetector(self.config.stale_after_seconds),
                role_metrics=role_metrics(monitor),
            )
            log.info("new run %s", name)
        return run

    def restore(self) -> None:
        """The saved state; rows that do not parse are left out, counted and logged (their
        runs start afresh, their files are read again), the others restored."""
        self.follower.restore(self.store.reader_states())
        self._restore_runs()
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

    def _restore_runs(self) -> None:
        lifecycles = self.store.lifecycles()
        for name, state in self.store.run_states().items():
            run = self.get(name)
            try:
                run.monitor.load_state_dict(state)
            except Exception as exc:  # e.g. an older detector version, or a damaged row
                log.warning("run %s: saved analysis unusable (%s); starting it afresh", name, exc)
                self.metrics.state_errors_total.labels("restore", "unusable_state").inc()
                run.monitor = RunMonitor(name, self.config.for_run(name))
            try:
                run.load_lifecycle(lifecycles.get(name, {}))
            except Exception as exc:
                log.warning("run %s: saved lifecycle unusable (%s); starting it afresh", name, exc)
                self.metrics.state_errors_total.labels("restore", "unusable_state").inc()
                run.stall = StallDetector(self.config.stale_after_seconds)
            self.export_loss_role(run)
        commands: dict[str, list[StoredCommand]] = defaultdict(list)
        for item in self.store.commands():
            commands[item.command.run].append(item)
        for name, items in commands.items():
            if name in self.runs:
                run = self.runs[name]
                try:
                    superseded = run.actuator.restore(items)
                    if superseded:
                        with self.store.transaction():
                            for ack in superseded:
                                self._record_ack(run, ack)
                            self.checkpoint(run)
                except sqlite3.Error:
                    raise  # the state file's, not the run's
                except Exception as exc:
                    self.quarantine(run, "restore", exc)

    def _channel_error(self, run: str, error: str, message: str) -> None:
        """Counted every time; logged the first time per run and kind (a file that stays bad
        must not flood the log: the counter says how often)."""
        self.metrics.channel_errors_total.labels(run, error).inc()
        log.log(
            first_time(self._reported, (run, error), logging.WARNING),
            "run %s: channel: %s",
            run,
            message,
        )

    def reconfigure(self, config: Config, key: bytes | None) -> None:
        self.config, self.key = config, key
        for run in self.runs.values():
            run.monitor = reconfigure(run.monitor, config)
            run.role_metrics = role_metrics(run.monitor)
            run.actuator.key = key
            run.stall.stale_after_seconds = config.stale_after_seconds

    def quarantine(self, run: Run, stage: str, exc: BaseException) -> None:
        """``run`` raised something unexpected: logged once with its traceback, counted, and
        set aside (its files are no longer read, nothing is written to it), so that every
        other run stays watched. It comes back when it expires (run_ttl_seconds) and is seen
        again, or at a restart."""
        if run.quarantined is not None:
            return
        run.quarantined = f"{stage}: {type(exc).__name__}: {exc}"[:500]
        # Its time-to-live counts from now (a run that failed on its first batch has no sample
        # time yet, and would expire, come back and fail again at once, in a loop).
        run.last_sample_at = max(run.last_sample_at, time.time())
        run.dirty_since = None  # what it holds is suspect: not checkpointed
        self.follower.pause(run.name)
        self.metrics.run_errors_total.labels(stage, type(exc).__name__).inc()
        log.error(
            "run %s quarantined (%s): no longer read or acted on, every other run goes on",
            run.name,
            run.quarantined,
            exc_info=(type(exc), exc, exc.__traceback__),
        )

    def checkpoint(self, run: Run) -> None:
        """Inside the caller's transaction: the run's state, with the offsets of all its files.

        Always both together. State ahead of its offsets would see the same samples again after
        a crash (and could take a file's repeat for a rewind); offsets ahead of the state would
        lose samples. Between checkpoints both may lag the daemon's memory: after a crash the
        samples since are simply analysed again, from the same state, to the same outcome
        (detectors are deterministic), and since anything that produced a finding was
        checkpointed at once (the daemon does so), nothing is reported twice or lost.
        """
        try:  # (the state is serialised before anything is written)
            self.store.save_run(run.name, run.monitor.state_dict(), run.lifecycle_dict())
        except (TypeError, ValueError):  # a plugin's state or memory that is not JSON
            state = run.monitor.state_dict(sanitize=True)
            self.store.save_run(run.name, state, run.lifecycle_dict())
        for reader in self.follower.readers_of(run.name):
            try:
                position = reader.state_dict()
                json.dumps(position)
            except Exception:  # a source plugin's bug: that file is read again after a restart
                log.exception("%s: reader state unusable; not saved", reader.path)
                continue
            self.store.save_reader(str(reader.path), reader.run, position)
        dirty = run.dirty_since if run.dirty_since is not None else time.monotonic()
        self.store.on_rollback(lambda: setattr(run, "dirty_since", dirty))
        run.dirty_since = None

    def flush(self) -> None:
        """Checkpoint every run with analysis not yet saved (a clean shutdown)."""
        dirty = [run for run in self.runs.values() if run.dirty_since is not None]
        if dirty:
            with self.store.transaction():
                for run in dirty:
                    self.checkpoint(run)

    def record_finding(self, run: Run, finding: Finding) -> None:
        """Inside the caller's transaction: store, count, log."""
        self.store.add_finding(finding)
        self.metrics.findings_total.labels(run.name, finding.kind).inc()
        log.warning(
            "run %s: %s %s at step %d: %s",
            run.name,
            finding.severity.value,
            finding.kind,
            finding.step,
            finding.reason,
        )

    def export_kinds(self, run: Run) -> None:
        """The run's open findings, and whether it has a loss at all (after every batch)."""
        active = run.active_kinds()
        self.metrics.export_kinds(run.name, active, run.kinds_active)
        run.kinds_active = active
        self.export_loss_role(run)

    def export_loss_role(self, run: Run) -> None:
        """``lrwatch_run_loss_role``: whether the run's loss is recognised (else it is read but
        not judged, and no alert on its loss can fire: that must be visible on its own).
        Left as it was while the monitor has seen nothing (rebuilt by a reload that changed
        the roles or detectors: it knows again from the run's next samples)."""
        if not run.monitor.series:
            return
        has_loss = coverage.loss_of(run.monitor)[0] is not None
        if has_loss != run.has_loss:
            self.metrics.run_loss_role.labels(run.name).set(1 if has_loss else 0)
            run.has_loss = has_loss

    # --- channels ----------------------------------------------------------------------------

    def poll_channels(self, *, heartbeats: bool) -> None:
        """Acks of the runs waiting for one (every turn: they end an adjustment) and, when
        ``heartbeats``, every run's heartbeat (once a tick: liveness is a matter of seconds)."""
        runs = [run for run in self.runs.values() if run.quarantined is None]
        for run in runs if heartbeats else [r for r in runs if r.actuator.unacked]:
            try:
                self._poll(run, heartbeats=heartbeats)
            except sqlite3.Error:
                raise  # the state file's, not the run's: the daemon counts it (state errors)
            except Exception as exc:
                self.quarantine(run, "channel", exc)

    def _poll(self, run: Run, *, heartbeats: bool) -> None:
        acks = run.actuator.poll(heartbeat=heartbeats)
        if acks:
            with self.store.transaction():
                for ack in acks:
                    self._record_ack(run, ack)
                self.checkpoint(run)  # with the channel the numbering is now for
            if self.on_acks is not None:  # committed: shown where else acks are drawn
                self.on_acks(run, acks)
        beat = run.actuator.heartbeat
        if beat is None:
            return
        name = run.name
        if not run.hooked:
            # Each status's counter from 0, so that increase() sees a run's first rejection.
            for status in AckStatus:
                self.metrics.command_acks_total.labels(name, status.value)
            run.hooked = True
        self.metrics.hook_heartbeat.labels(name).set(beat.written_at)
        if beat.schedule_lrs and beat.schedule_step is not None:
            # The LR the job's own schedule set, exactly: whether it still moves the LR.
            run.monitor.observe_schedule(beat.schedule_step, beat.schedule_lrs[0])
        if run.actuator.heartbeat_is_current():
            # The job is the truth about its factor (it may have restored a checkpoint).
            run.monitor.control.lr_scale = beat.lr_scale
        self.metrics.lr_scale.labels(name).set(run.monitor.control.lr_scale)
        for group, lr in enumerate(beat.lrs):
            self.metrics.effective_lr.labels(name, str(group)).set(lr)
        self.metrics.commands_unacked.labels(name).set(len(run.actuator.unacked))

    def _record_ack(self, run: Run, ack: Ack) -> None:
        self.store.record_ack(run.name, ack)
        self.metrics.command_acks_total.labels(run.name, ack.status.value).inc()
        self.store.audit(run.name, "ack", "hook", ack_to_json(ack))
        if ack.status is not AckStatus.APPLIED:
            log.warning(
                "run %s: command %d %s: %s", run.name, ack.seq, ack.status.value, ack.reason
            )
            return
        run.monitor.control.lr_scale = ack.lr_scale
        label = run.labels.pop(ack.seq, "restored")
        if label:  # empty for a rollback/checkpoint/stop request: not an LR adjustment
            self.metrics.adjustments_total.labels(run.name, label).inc()
        log.warning(
            "run %s: command %d applied at step %d, LR factor now %g",
            run.name,
            ack.seq,
            ack.step,
            ack.lr_scale,
        )

    # --- lifecycle ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Once a second: stalls, expiry, overdue checkpoints and the runs gauge."""
        config = self.config
        counts = dict.fromkeys(RunState, 0)
        stalls, expired, overdue = [], [], []
        due = time.monotonic() - config.checkpoint_interval_seconds
        for run in list(self.runs.values()):
            try:
                if run.expired(now, config):
                    expired.append(run)
                    continue
                if run.quarantined is None:
                    found = run.check_stall(now, config)
                    if found is not None or bool(run.stall.active) != ("stall" in run.kinds_active):
                        stalls.append((run, found))
                    elif run.dirty_since is not None and run.dirty_since <= due:
                        overdue.append(run)
                counts[run.state(now, config)] += 1
            except Exception as exc:
                self.quarantine(run, "tick", exc)
                counts[RunState.QUARANTINED] += 1
        if stalls or expired or overdue:
            self._settle(stalls, expired, overdue)
        for state, count in counts.items():
            self.metrics.runs.labels(state.value).set(count)

    def status(self, now: float) -> dict[str, Any]:
        """What ``lrwatch status`` shows. Built on demand: rows for a thousand runs every
        second, for nobody, cost 3% of a core."""
        rows = []
        for run in self.runs.values():
            row = run.row(now, self.config)
            row["skipped_records"] = sum(
                int(reader.stats.get("corrupt_records", 0))
                for reader in self.follower.readers_of(run.name)
            )
            rows.append(row)
        # Strict JSON: a NaN loss is spelled "nan", as replay spells it.
        answer = {"root": str(self.root), "mode": self.config.mode.value, "runs": rows}
        return dict(coverage.json_safe(answer))

    def _guarded(self, run: Run, stage: str, action: Callable[[], None]) -> None:
        """``action`` for ``run``; should it raise (not the state file: that is every run's
        trouble, the caller's), ``run`` is quarantined and the others go on."""
        try:
            action()
        except sqlite3.Error:
            raise
        except Exception as exc:
            self.quarantine(run, stage, exc)

    def _settle_stall(self, run: Run, found: Finding | None) -> None:
        if found is not None:
            self.record_finding(run, found)
        self.checkpoint(run)

    def _let_go(self, run: Run) -> None:
        gone = self.follower.forget(run.name)
        self.store.forget_run(run.name, [str(p) for p in gone])
        for reader in self.follower.readers_of(run.name):  # files still there: keep
            self.store.save_reader(str(reader.path), reader.run, reader.state_dict())

    def _settle(
        self, stalls: list[tuple[Run, Finding | None]], expired: list[Run], overdue: list[Run]
    ) -> None:
        with self.store.transaction():
            for run, found in stalls:
                self._guarded(run, "tick", partial(self._settle_stall, run, found))
            for run in overdue:
                self._guarded(run, "tick", partial(self.checkpoint, run))
            for run in expired:
                self._guarded(run, "tick", partial(self._let_go, run))
        for run, _ in stalls:
            self.export_kinds(run)
        for run in expired:
            log.info("run %s: gone for over %g s, forgotten", run.name, self.config.run_ttl_seconds)
            self.metrics.forget_run(run.name)
            self._reported = {k for k in self._reported if k[0] != run.name}
            del self.runs[run.name]
            if self.on_forget is not None:
                self.on_forget(run)
