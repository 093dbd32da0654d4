"""Everything lrwatch tells Prometheus, in one place.

Metric names follow Prometheus' conventions (``lrwatch_`` prefix, base units, ``_total`` for
counters). The registry is injected, never the global one, so tests and several daemons in one
process each get their own. Labels that name a run are removed when the run expires, which keeps
label cardinality bounded however many runs come and go.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lrwatch import __version__

RUN_STATES = ("active", "stale", "finished")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.metric_value = Gauge(
            "lrwatch_metric_value",
            "Last value of a role metric (loss, val loss, grad norm, LR).",
            ["run", "metric"],
            registry=r,
        )
        self.run_last_step = Gauge(
            "lrwatch_run_last_step",
            "Last training step seen in the run's logs.",
            ["run"],
            registry=r,
        )
        self.run_last_update = Gauge(
            "lrwatch_run_last_update_timestamp_seconds",
            "Unix time at which the run's logs last produced a sample.",
            ["run"],
            registry=r,
        )
        self.finding_active = Gauge(
            "lrwatch_finding_active",
            "1 while a finding of this kind is ongoing in the run.",
            ["run", "kind"],
            registry=r,
        )
        self.findings_total = Counter(
            "lrwatch_findings", "Findings raised, by kind.", ["run", "kind"], registry=r
        )
        self.lr_scale = Gauge(
            "lrwatch_lr_scale",
            "LR factor lrwatch applies on top of the job's schedule.",
            ["run"],
            registry=r,
        )
        self.effective_lr = Gauge(
            "lrwatch_effective_lr",
            "LR the optimizer uses (schedule x factor), as the hook reports it, per param group.",
            ["run", "group"],
            registry=r,
        )
        self.adjustments_total = Counter(
            "lrwatch_adjustments",
            "LR adjustments acknowledged by the hook, by reason.",
            ["run", "reason"],
            registry=r,
        )
        self.commands_unacked = Gauge(
            "lrwatch_commands_unacked",
            "Commands written to the run's hook and not yet acknowledged.",
            ["run"],
            registry=r,
        )
        self.hook_heartbeat = Gauge(
            "lrwatch_hook_last_heartbeat_timestamp_seconds",
            "Unix time of the hook's last heartbeat.",
            ["run"],
            registry=r,
        )
        self.ingested_total = Counter(
            "lrwatch_ingested_samples", "Samples read from logs, by format.", ["format"], registry=r
        )
        self.source_errors_total = Counter(
            "lrwatch_source_errors",
            "Problems met while reading logs (corrupt records, truncations, replaced files).",
            ["format", "error"],
            registry=r,
        )
        self.ingest_lag = Histogram(
            "lrwatch_ingest_lag_seconds",
            "Time from a sample's wall time in the log to its analysis by lrwatch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.runs = Gauge(
            "lrwatch_runs", "Runs known to the daemon, by state.", ["state"], registry=r
        )
        self.build_info = Gauge(
            "lrwatch_build_info", "lrwatch's version; always 1.", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        for state in RUN_STATES:
            self.runs.labels(state).set(0)

    def forget_run(self, run: str) -> None:
        """Drop every label set naming ``run`` (it expired), keeping cardinality bounded."""
        for metric in (
            self.metric_value,
            self.run_last_step,
            self.run_last_update,
            self.finding_active,
            self.findings_total,
            self.lr_scale,
            self.effective_lr,
            self.adjustments_total,
            self.commands_unacked,
            self.hook_heartbeat,
        ):
            metric.remove_by_labels({"run": run})
