"""What a config reload (SIGHUP) does to a run's analysis: policy changes keep every detector's
state, detector or role changes restart the detectors, the control state always carries over."""

from __future__ import annotations

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.analysis.policy import PolicyConfig
from lrwatch.config import Config, RunOverride
from lrwatch.daemon.runs import reconfigure
from lrwatch.detectors import DetectorsConfig
from lrwatch.protocol.types import Sample


def warmed(config: Config) -> RunMonitor:
    monitor = RunMonitor("team/a", config.for_run("team/a"))
    monitor.observe(
        [Sample("team/a", "loss", s, 1.0 / (s + 1), 1e9 + s) for s in range(100)], can_act=None
    )
    monitor.control.lr_scale, monitor.control.paused = 0.1, True
    return monitor


def test_nothing_changed_keeps_the_very_monitor() -> None:
    config = Config()
    monitor = warmed(config)
    assert reconfigure(monitor, Config()) is monitor


def test_a_policy_change_keeps_the_detectors_state() -> None:
    monitor = warmed(Config())
    new = Config(overrides=(RunOverride(glob="team/*", policy=PolicyConfig(cooldown_steps=500)),))
    fresh = reconfigure(monitor, new)
    assert fresh.controller.policy.cooldown_steps == 500
    assert fresh.state_dict()["series"] == monitor.state_dict()["series"]
    assert (fresh.control.lr_scale, fresh.control.paused) == (0.1, True)


def test_a_detector_change_restarts_the_detectors_not_the_control() -> None:
    monitor = warmed(Config())
    knobs = DetectorsConfig.model_validate({"plateau": {"enabled": False}})
    fresh = reconfigure(monitor, Config(detectors=knobs))
    assert fresh.settings.detectors == knobs and not fresh.series  # warm up again
    assert (fresh.control.lr_scale, fresh.control.paused) == (0.1, True)
