"""A run the daemon knows, and its lifecycle: active, stale, finished, then forgotten.

- **active**: a sample arrived within ``stale_after_seconds``;
- **stale**: no sample for that long while the hook heartbeats (the job steps but does not log:
  a ``stall`` finding, see detectors/stall.py);
- **finished**: no sample for that long and no live hook (the job ended, or never had a hook:
  from the logs alone lrwatch cannot tell a hung job from a finished one, so it does not guess);
- **quarantined**: handling it raised something unexpected (RunBook.quarantine);
- **forgotten**: no sample and no heartbeat for ``run_ttl_seconds``: the run leaves /metrics and
  the state file, so label cardinality and the database stay bounded however many runs come and
  go. Its findings, commands and audit stay in the database. If its logs grow again, it comes
  back as a new run whose files are read on from where they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from lrwatch.analysis import coverage
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config, Mode
from lrwatch.daemon.actuator import Actuator
from lrwatch.detectors.stall import StallDetector
from lrwatch.protocol.types import Finding

MAX_STATUS_METRICS = 50  # metric names a status row lists (to say what a run without a loss has)


class RunState(StrEnum):
    """Where a known run is in its lifecycle: the ``state`` label of ``lrwatch_runs``."""

    ACTIVE = "active"
    STALE = "stale"
    FINISHED = "finished"
    QUARANTINED = "quarantined"


@dataclass(slots=True)
class Run:
    """A run the daemon knows: its analysis, its channel, and its place in the lifecycle."""

    name: str
    monitor: RunMonitor
    actuator: Actuator
    stall: StallDetector
    last_sample_at: float = 0.0  # the daemon's clock when data last came; persisted
    kinds_active: set[str] = field(default_factory=set)
    labels: dict[int, str] = field(default_factory=dict)  # seq -> reason label, for metrics
    role_metrics: frozenset[str] = frozenset()  # names that are role metrics, for /metrics
    dirty_since: float | None = None  # monotonic time of the first analysis not checkpointed
    hooked: bool = False  # a heartbeat was seen: the ack counters exist (at 0) from then on
    has_loss: bool | None = None  # what lrwatch_run_loss_role says, once set
    quarantined: str | None = None  # why the run is no longer handled (RunBook.quarantine)

    def alive(self, now: float, config: Config) -> bool:
        return self.actuator.alive(now, config.heartbeat_timeout_seconds)

    def why_not_act(self, now: float, config: Config) -> str | None:
        """Why the daemon may not write to this run now, or None if it may."""
        if config.mode is Mode.OBSERVE:
            return "observe mode"
        if self.monitor.control.paused:
            return "run paused"
        if not self.alive(now, config):
            return "no live hook"
        return None

    def state(self, now: float, config: Config) -> RunState:
        if self.quarantined is not None:
            return RunState.QUARANTINED
        if now - self.last_sample_at <= config.stale_after_seconds:
            return RunState.ACTIVE
        return RunState.STALE if self.alive(now, config) else RunState.FINISHED

    def expired(self, now: float, config: Config) -> bool:
        beat = self.actuator.heartbeat
        last_sign = max(self.last_sample_at, beat.written_at if beat else 0.0)
        return not self.alive(now, config) and now - last_sign > config.run_ttl_seconds

    def check_stall(self, now: float, config: Config) -> Finding | None:
        found = self.stall.check(now, self.last_sample_at, self.alive(now, config))
        if found is None:
            return None
        return replace(found, run=self.name, step=self.monitor.last_step())

    def active_kinds(self) -> set[str]:
        kinds = self.monitor.active_kinds()
        if self.stall.active:
            kinds.add(self.stall.active)
        return kinds

    def lifecycle_dict(self) -> dict[str, Any]:
        return {
            "last_sample_at": self.last_sample_at,
            "stall": self.stall.state_dict(),
            "channel": self.actuator.channel,  # whose commands the stored ones are (restore)
        }

    def load_lifecycle(self, state: Mapping[str, Any]) -> None:
        self.last_sample_at = float(state.get("last_sample_at", 0.0))
        if isinstance(state.get("channel"), str):
            self.actuator.channel = state["channel"]
        if "stall" in state:
            self.stall.load_state_dict(state["stall"])

    def row(self, now: float, config: Config) -> dict[str, Any]:
        """This run's line in ``lrwatch status``."""
        monitor = self.monitor
        loss_metric, inferred = coverage.loss_of(monitor)
        beat = self.actuator.heartbeat
        return {
            "run": self.name,
            "loss_metric": loss_metric,  # None: no loss recognised, the run is not judged
            "loss_inferred": inferred,
            "metrics": sorted(monitor.series)[:MAX_STATUS_METRICS],
            "state": "paused"
            if monitor.control.paused and not self.quarantined
            else self.state(now, config).value,
            "last_step": monitor.last_step(),
            "loss": monitor.series[loss_metric].last_value if loss_metric else None,
            "lr_scale": monitor.control.lr_scale,
            "lrs": list(beat.lrs) if beat else [],
            "hook_alive": self.alive(now, config),
            "active_findings": sorted(self.kinds_active),
            "unacked_commands": sorted(self.actuator.unacked),
            **({"error": self.quarantined} if self.quarantined else {}),
            # Non-empty: the run is unhealthy (a refused heartbeat, a command not written...).
            "channel_trouble": sorted(self.actuator.trouble.values()),
        }
