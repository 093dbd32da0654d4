"""The daemon: wiring and lifecycle, read as ``startup -> main_loop -> shutdown``.

One thread runs the loop below; watchdog's observer thread and the HTTP threads only meet it at
bounded queues (changed paths in, control requests in) and a status snapshot (out). Each loop
turn: read what changed, analyse it, commit offsets + state + findings + commands in one
transaction, then write the command files, then collect acks and heartbeats.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from lrwatch import channel
from lrwatch.actuator import Actuator
from lrwatch.config import Config, Mode
from lrwatch.exporter import Metrics
from lrwatch.pipeline import RunMonitor
from lrwatch.server import ControlRequest, DaemonServer
from lrwatch.sources.base import LogReader
from lrwatch.sources.discovery import LogWatcher, open_reader, scan
from lrwatch.store import Store
from lrwatch.types import Ack, AckStatus, Action, ActionType, Command, Role, Sample

log = logging.getLogger("lrwatch.daemon")

MAX_READS_PER_FILE_PER_TURN = 8
HEARTBEAT_POLL_SECONDS = 1.0


@dataclass(slots=True)
class Run:
    """A run the daemon knows: its analysis, its channel, and its place in the lifecycle."""

    name: str
    monitor: RunMonitor
    actuator: Actuator
    last_sample_at: float = 0.0
    kinds_active: set[str] = field(default_factory=set)
    labels: dict[int, str] = field(default_factory=dict)  # seq -> reason label, for metrics

    def state(self, now: float, stale_after: float) -> str:
        if now - self.last_sample_at <= stale_after:
            return "active"
        return "stale" if self.actuator.heartbeat else "finished"


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config.logdir is None:
            raise ValueError("config.logdir is required to run the daemon")
        self.config = config
        self.root = config.logdir.resolve()
        self.clock = clock
        self.metrics = Metrics(registry or CollectorRegistry())
        self.key = channel.load_secret(
            config.secret_file.read_text().strip() if config.secret_file else None
        )
        self.control: queue.Queue[ControlRequest] = queue.Queue(maxsize=64)
        self.runs: dict[str, Run] = {}
        self.readers: dict[Path, LogReader] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._status: dict[str, Any] = {"runs": []}
        self._status_lock = threading.Lock()
        self.store = Store(config.state or self.root / ".lrwatch-state.sqlite")
        self.watcher = LogWatcher(self.root, use_polling=config.use_polling_observer)
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

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); a second signal forces the exit."""
        previous = self._install_signal_handlers()
        try:
            self.startup()
            self.main_loop()
        finally:
            self.shutdown()
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
        self._restore()
        self.watcher.start()
        self._ingest(set(scan(self.root)))
        self._ready.set()

    def main_loop(self) -> None:
        next_rescan = self.clock() + self.config.rescan_interval_seconds
        next_beat = 0.0
        while not self._stop.is_set():
            changed, overflowed = self.watcher.drain(self.config.poll_interval_seconds)
            now = self.clock()
            if overflowed or now >= next_rescan:
                changed |= set(scan(self.root))
                next_rescan = now + self.config.rescan_interval_seconds
            self._ingest(changed)
            # Acks are awaited every turn (they end an adjustment); heartbeats, which only
            # change liveness on a scale of seconds, once a second.
            beats = now >= next_beat
            if beats:
                next_beat = now + HEARTBEAT_POLL_SECONDS
            self._poll_channels(heartbeats=beats)
            self._serve_control()
            if beats or changed:
                self._publish(now)

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        self.watcher.stop()
        self.server.stop()
        self.store.close()
        log.info("stopped")

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                raise SystemExit(f"forced exit on second signal {signum}")
            log.info("signal %d: shutting down (again to force)", signum)
            self._stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)
        return previous

    # --- state -------------------------------------------------------------------------------

    def _restore(self) -> None:
        for path, (_run, state) in self.store.reader_states().items():
            reader = open_reader(self.root, Path(path))
            reader.load_state_dict(state)
            self.readers[Path(path)] = reader
        for name, state in self.store.run_states().items():
            self._run(name).monitor.load_state_dict(state)
        commands: dict[str, list[Any]] = defaultdict(list)
        for item in self.store.commands():
            commands[item.command.run].append(item)
        for name, items in commands.items():
            self._run(name).actuator.restore(items)

    def _run(self, name: str) -> Run:
        run = self.runs.get(name)
        if run is None:
            run_dir = self.root if name == "." else self.root / name
            monitor = RunMonitor(name, self.config.for_run(name))
            run = self.runs[name] = Run(name, monitor, Actuator(name, run_dir, self.key))
            log.info("new run %s", name)
        return run

    # --- ingest and analysis -----------------------------------------------------------------

    def _ingest(self, paths: set[Path]) -> None:
        batches: dict[str, list[Sample]] = defaultdict(list)
        touched: list[LogReader] = []
        for path in sorted(paths):
            reader = self.readers.get(path)
            if reader is None:
                try:
                    reader = self.readers[path] = open_reader(self.root, path)
                except ValueError:
                    continue  # not a log after all (e.g. renamed into .lrwatch)
            before = dict(reader.stats)
            for _ in range(MAX_READS_PER_FILE_PER_TURN):
                samples = reader.read()
                if not samples:
                    break
                batches[reader.run].extend(samples)
                self.metrics.ingested_total.labels(reader.format).inc(len(samples))
            self._count_source_errors(reader, before)
            touched.append(reader)
        if not touched:
            return
        now = self.clock()
        sends: list[tuple[Run, Command]] = []
        with self.store.transaction():
            for reader in touched:
                self.store.save_reader(str(reader.path), reader.run, reader.state_dict())
            for name, samples in batches.items():
                run = self._run(name)
                sends.extend((run, c) for c in self._analyse(run, samples, now))
                self.store.save_run(name, run.monitor.state_dict())
        for run, command in sends:
            run.actuator.send(command)

    def _analyse(self, run: Run, samples: list[Sample], now: float) -> list[Command]:
        outcome = run.monitor.observe(samples, can_act=self._why_not(run, now))
        run.last_sample_at = now
        self._observe_samples(run, samples, now)
        for finding in outcome.findings:
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
        commands = []
        for decision in outcome.decisions:
            self.store.audit(
                run.name,
                "decision",
                "controller",
                {
                    "step": decision.step,
                    "reason": decision.reason,
                    "action": decision.action.to_json() if decision.action else None,
                },
            )
            if decision.action is not None and decision.finding is not None:
                command = run.actuator.new_command(
                    decision.action, decision.reason, "controller", now
                )
                run.labels[command.seq] = decision.finding.kind
                self.store.add_command(command)
                commands.append(command)
        return commands

    def _why_not(self, run: Run, now: float) -> str | None:
        """Why the daemon may not write to this run now, or None if it may."""
        if self.config.mode is Mode.OBSERVE:
            return "observe mode"
        if run.monitor.control.paused:
            return "run paused"
        if not run.actuator.alive(now, self.config.heartbeat_timeout_seconds):
            return "no live hook"
        return None

    def _observe_samples(self, run: Run, samples: list[Sample], now: float) -> None:
        roles = run.monitor.settings.roles
        last: dict[str, float] = {}
        for sample in samples:
            if roles.role_of(sample.metric) is not None:
                last[sample.metric] = sample.value
            if sample.wall_time is not None:
                self.metrics.ingest_lag.observe(max(0.0, now - sample.wall_time))
        for metric, value in last.items():
            self.metrics.metric_value.labels(run.name, metric).set(value)
        self.metrics.run_last_step.labels(run.name).set(run.monitor.last_step())
        self.metrics.run_last_update.labels(run.name).set(now)
        active = run.monitor.active_kinds()
        for kind in active | run.kinds_active:
            self.metrics.finding_active.labels(run.name, kind).set(1 if kind in active else 0)
        run.kinds_active = active

    def _count_source_errors(self, reader: LogReader, before: dict[str, int]) -> None:
        for error, count in reader.stats.items():
            new = count - before.get(error, 0)
            if new > 0:
                self.metrics.source_errors_total.labels(reader.format, error).inc(new)
                log.warning("%s: %d new %s", reader.path, new, error.replace("_", " "))

    # --- channel -----------------------------------------------------------------------------

    def _poll_channels(self, *, heartbeats: bool) -> None:
        for run in self.runs.values():
            if not (heartbeats or run.actuator.unacked):
                continue
            acks = run.actuator.poll(heartbeat=heartbeats)
            if acks:
                with self.store.transaction():
                    for ack in acks:
                        self._record_ack(run, ack)
                    self.store.save_run(run.name, run.monitor.state_dict())
            beat = run.actuator.heartbeat
            if beat is None:
                continue
            self.metrics.hook_heartbeat.labels(run.name).set(beat.written_at)
            if not run.actuator.unacked:
                # The job is the truth about its factor (it may have restored a checkpoint).
                run.monitor.control.lr_scale = beat.lr_scale
            self.metrics.lr_scale.labels(run.name).set(run.monitor.control.lr_scale)
            for group, lr in enumerate(beat.lrs):
                self.metrics.effective_lr.labels(run.name, str(group)).set(lr)
            self.metrics.commands_unacked.labels(run.name).set(len(run.actuator.unacked))

    def _record_ack(self, run: Run, ack: Ack) -> None:
        self.store.record_ack(run.name, ack)
        self.store.audit(
            run.name,
            "ack",
            "hook",
            {
                "seq": ack.seq,
                "status": ack.status.value,
                "step": ack.step,
                "lr_scale": ack.lr_scale,
                "lrs": list(ack.lrs),
                "reason": ack.reason,
            },
        )
        if ack.status is AckStatus.APPLIED:
            run.monitor.control.lr_scale = ack.lr_scale
            label = run.labels.pop(ack.seq, "restored")
            self.metrics.adjustments_total.labels(run.name, label).inc()
            log.warning(
                "run %s: command %d applied at step %d, LR factor now %g",
                run.name,
                ack.seq,
                ack.step,
                ack.lr_scale,
            )
        else:
            log.warning(
                "run %s: command %d %s: %s", run.name, ack.seq, ack.status.value, ack.reason
            )

    # --- manual control ----------------------------------------------------------------------

    def _serve_control(self) -> None:
        while True:
            try:
                request = self.control.get_nowait()
            except queue.Empty:
                return
            try:
                request.reply.set_result(self._control(request))
            except Exception as exc:  # a bad request must not take the daemon down
                log.exception("control request failed")
                request.reply.set_result((HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)}))

    def _control(self, req: ControlRequest) -> tuple[int, dict[str, Any]]:
        run = self.runs.get(req.run)
        if run is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no run named {req.run!r}"}
        control = run.monitor.control
        now = self.clock()
        if req.verb in ("pause", "resume"):
            with self.store.transaction():
                control.paused = req.verb == "pause"
                self.store.save_run(run.name, run.monitor.state_dict())
                self.store.audit(run.name, req.verb, req.who, dict(req.body))
            return HTTPStatus.OK, {"run": run.name, "paused": control.paused}
        factor, error = self._manual_factor(run, req.body)
        if error:
            return HTTPStatus.BAD_REQUEST, {"error": error}
        if not run.actuator.alive(now, self.config.heartbeat_timeout_seconds):
            return HTTPStatus.CONFLICT, {"error": f"run {run.name} has no live hook"}
        reason = str(req.body.get("reason") or f"manual set-lr by {req.who}")[:200]
        with self.store.transaction():
            command = run.actuator.new_command(
                Action(ActionType.SCALE_LR, factor), reason, req.who, now
            )
            run.labels[command.seq] = "manual"
            self.store.add_command(command)
            self.store.audit(run.name, "set-lr", req.who, {**req.body, "factor": factor})
        run.actuator.send(command)
        return HTTPStatus.ACCEPTED, {"run": run.name, "seq": command.seq, "factor": factor}

    def _manual_factor(self, run: Run, body: dict[str, Any]) -> tuple[float, str | None]:
        """A manual --scale or --value as a factor on the current one, within the policy."""
        policy = run.monitor.settings.policy
        current = run.monitor.control.lr_scale
        beat = run.actuator.heartbeat
        try:
            if "scale" in body:
                target = current * float(body["scale"])
            elif "value" in body and beat and beat.lrs and beat.lrs[0] > 0:
                target = current * float(body["value"]) / beat.lrs[0]
            else:
                return 1.0, "give 'scale', or 'value' for a run whose hook reports its LR"
        except (TypeError, ValueError):
            return 1.0, "scale and value must be numbers"
        if not (policy.min_lr_scale <= target <= policy.max_lr_scale) or target != target:
            return 1.0, (
                f"resulting LR factor {target:g} is outside "
                f"[{policy.min_lr_scale:g}, {policy.max_lr_scale:g}]"
            )
        factor = target / current
        if not (1 / policy.max_change <= factor <= policy.max_change):
            return 1.0, f"change x{factor:g} exceeds the per-command limit {policy.max_change:g}"
        return factor, None

    # --- status and lifecycle of runs --------------------------------------------------------

    def _publish(self, now: float) -> None:
        counts = dict.fromkeys(("active", "stale", "finished"), 0)
        rows = []
        for run in list(self.runs.values()):
            state = run.state(now, self.config.stale_after_seconds)
            if state == "finished" and now - run.last_sample_at > self.config.run_ttl_seconds:
                self.metrics.forget_run(run.name)
                del self.runs[run.name]
                continue
            counts[state] += 1
            rows.append(self._row(run, state, now))
        for state, count in counts.items():
            self.metrics.runs.labels(state).set(count)
        with self._status_lock:
            self._status = {"root": str(self.root), "mode": self.config.mode.value, "runs": rows}

    def _row(self, run: Run, state: str, now: float) -> dict[str, Any]:
        monitor = run.monitor
        loss_metric = monitor.role_metric(Role.LOSS)
        beat = run.actuator.heartbeat
        return {
            "run": run.name,
            "state": "paused" if monitor.control.paused else state,
            "last_step": monitor.last_step(),
            "loss": monitor.series[loss_metric].last_value if loss_metric else None,
            "lr_scale": monitor.control.lr_scale,
            "lrs": list(beat.lrs) if beat else [],
            "hook_alive": run.actuator.alive(now, self.config.heartbeat_timeout_seconds),
            "active_findings": sorted(run.kinds_active),
            "unacked_commands": sorted(run.actuator.unacked),
        }

    def status(self) -> dict[str, Any]:
        with self._status_lock:
            return self._status
