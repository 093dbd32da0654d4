"""A real daemon with broken plugins beside working ones: it keeps running the rest, counts each
failure in a metric and logs it once."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from lrwatch import testing
from lrwatch.testing import free_port
from tests import fake_dist
from tests.unit.test_plugins import RAISER

NOTIFIERS = '''
import json
from pydantic import BaseModel, ConfigDict

class RecorderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str

class Recorder:
    """Appends each notice to a file, as JSON lines."""
    config_model = RecorderConfig
    def __init__(self, config):
        self.path = config.path
    def notify(self, notice):
        with open(self.path, "a") as out:
            out.write(json.dumps(notice.to_json()) + "\\n")
    def close(self):
        pass

class Down:
    """An endpoint that is always down."""
    config_model = None
    def __init__(self, config):
        pass
    def notify(self, notice):
        raise ConnectionError("endpoint down")
    def close(self):
        pass
'''


def diverging_lines() -> str:
    values = [1.0 / (1 + 0.05 * s) + 0.01 * ((s * 7919) % 13) / 13 for s in range(100)]
    values += [values[-1] * 1.5**k for k in range(1, 30)]
    return "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in enumerate(values))


@pytest.mark.slow
def test_broken_plugins_are_counted_logged_once_and_the_daemon_runs_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    fake_dist.install(
        site,
        "team-plugins",
        {
            "lrwatch.detectors": {"raiser": "team:Raiser", "broken": "team_broken:Detector"},
            "lrwatch.notifiers": {"recorder": "team_notify:Recorder", "down": "team_notify:Down"},
        },
        {
            "team": RAISER,
            "team_broken": "import not_installed_anywhere\n",
            "team_notify": NOTIFIERS,
        },
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    received = tmp_path / "notices.jsonl"
    config = tmp_path / "lrwatch.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "detectors": {"plugins": {"raiser": {}, "broken": {}}},
                "notifiers": {
                    "sink": {"plugin": "recorder", "path": str(received), "min_severity": "info"},
                    "pager": {"plugin": "down"},
                },
            }
        )
    )
    root = tmp_path / "logs"
    (root / "job").mkdir(parents=True)
    (root / "job" / "m.jsonl").write_text(diverging_lines())
    log, port = tmp_path / "daemon.log", free_port()
    proc = testing.spawn(root, tmp_path / "state.sqlite", port, log, "--config", str(config))
    try:
        testing.wait_ready(proc, port, log)

        def metrics() -> dict[str, float]:
            return testing.scrape(port)

        found = 'lrwatch_findings_total{kind="divergence",run="job"}'
        testing.wait_for(lambda: metrics().get(found, 0) >= 1, 20, "the divergence", show=metrics)
        # A second run: the raising detector fails there too (counted), logged only once.
        (root / "job2").mkdir()
        (root / "job2" / "m.jsonl").write_text(diverging_lines())
        found2 = 'lrwatch_findings_total{kind="divergence",run="job2"}'
        testing.wait_for(lambda: metrics().get(found2, 0) >= 1, 20, "job2's divergence")
        failed = 'lrwatch_notifications_total{notifier="pager",outcome="failed"}'
        testing.wait_for(lambda: metrics().get(failed, 0) >= 2, 10, "the pager's failures")
        sent = 'lrwatch_notifications_total{notifier="sink",outcome="sent"}'
        testing.wait_for(lambda: metrics().get(sent, 0) >= 2, 10, "notices delivered")
        now = metrics()
        errors = "lrwatch_plugin_errors_total"
        assert now[f'{errors}{{group="detectors",plugin="broken",stage="load"}}'] == 1
        assert now[f'{errors}{{group="detectors",plugin="raiser",stage="run"}}'] == 2
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    notices = [json.loads(line) for line in received.read_text().splitlines()]
    divergences = {
        n["run"] for n in notices if n["event"] == "finding" and n["kind"] == "divergence"
    }
    assert divergences == {"job", "job2"}
    text = log.read_text()
    assert text.count("detectors plugin 'raiser' (run)") == 1
    assert text.count("detectors plugin 'broken' (load)") == 1
    assert "No module named 'not_installed_anywhere'" in text
    assert text.count("notifier pager: could not deliver") == 1
    assert "ConnectionError: endpoint down" in text
