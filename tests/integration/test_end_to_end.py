"""The whole loop, for real: a PyTorch job diverges, a `lrwatch run` daemon process sees it in
the job's JSONL log, the hook cuts the LR, the ack comes back, and /metrics shows it all.

Two copies of the job run under the watched root: one with the hook, one without. In act mode
the daemon may only write to the one whose hook heartbeats; the other must be left alone.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.testing import free_port

pytestmark = pytest.mark.slow

PEAK_LR, WARMUP = 3.0, 400  # lrwatch.demo.train's defaults


def schedule_lr(step: int) -> float:
    """What the job's own LambdaLR warm-up gives after `scheduler.step()` at `step`."""
    return PEAK_LR * min(1.0, (step + 2) / WARMUP)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def read_log(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    state: Path


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    root = tmp_path / "runs"
    root.mkdir()
    port, state, log = free_port(), tmp_path / "state.sqlite", tmp_path / "daemon.log"
    proc = testing.spawn(root, state, port, log)
    testing.wait_ready(proc, port, log)
    yield Daemon(proc, testing.url(port), state)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_divergence_is_detected_cut_acknowledged_and_exported(
    daemon: Daemon, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    jobs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lrwatch.demo.train",
                str(root / name),
                "--steps",
                "500",
                "--step-time",
                "0.02",
                *extra,
            ]
        )
        for name, extra in (("rescued", []), ("unaided", ["--no-lrwatch"]))
    }
    for job in jobs.values():
        assert job.wait(timeout=180) == 0
    time.sleep(1.5)  # a heartbeat poll and a scrape's worth of slack for the last lines

    # The hook applied the daemon's cut and acknowledged it.
    rescued = root / "rescued"
    ack = channel.load_ack(rescued, 1)
    assert ack is not None, "no ack for command 1"
    assert ack.status.value == "applied"
    assert ack.lr_scale == pytest.approx(0.1)
    log = {int(r["step"]): r for r in read_log(rescued / "metrics.jsonl")}
    # The LR the job used after the ack is the factor times what it used before, on top of
    # its own warm-up schedule (the hook scales, the schedule goes on).
    before, after = log[ack.step - 1]["lr"], log[ack.step]["lr"]
    assert before == pytest.approx(schedule_lr(ack.step - 1))
    assert after == pytest.approx(0.1 * schedule_lr(ack.step))
    assert after == pytest.approx(ack.lrs[0])
    assert after / schedule_lr(ack.step) == pytest.approx(0.1 * before / schedule_lr(ack.step - 1))
    # ... and it was in time: the rescued job never produced a non-finite loss.
    assert all(math.isfinite(r["loss"]) for r in log.values())

    # The run without a hook diverged and was left alone (act mode, but no live hook).
    unaided = [r["loss"] for r in read_log(root / "unaided" / "metrics.jsonl")]
    assert not math.isfinite(unaided[-1])
    assert not (root / "unaided" / ".lrwatch").exists()

    # The daemon recorded the finding before the first non-finite loss, and the ack.
    db = sqlite3.connect(daemon.state)
    findings = db.execute("SELECT run, kind, step FROM findings").fetchall()
    acks = db.execute("SELECT run, seq, ack FROM commands").fetchall()
    db.close()
    first_nan = next(i for i, v in enumerate(unaided) if not math.isfinite(v))
    unaided_divergence = [s for r, k, s in findings if r == "unaided" and k == "divergence"]
    assert unaided_divergence and min(unaided_divergence) < first_nan
    assert any(r == "rescued" and k == "divergence" for r, k, _ in findings)
    assert [(r, s) for r, s, a in acks if a] == [("rescued", 1)]

    # A real scrape shows the finding, the new LR scale and the adjustment.
    metrics = scrape(daemon.url)
    assert metrics['lrwatch_findings_total{kind="divergence",run="rescued"}'] >= 1
    assert metrics['lrwatch_lr_scale{run="rescued"}'] == pytest.approx(0.1)
    assert metrics['lrwatch_adjustments_total{reason="divergence",run="rescued"}'] == 1
    assert metrics['lrwatch_commands_unacked{run="rescued"}'] == 0
    assert metrics['lrwatch_ingested_samples_total{format="jsonl"}'] >= 2 * 500 * 2
    assert 'lrwatch_lr_scale{run="unaided"}' not in metrics

    # SIGTERM: a clean, prompt exit.
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=5) == 0


def test_replay_reports_the_divergence_of_a_finished_run(tmp_path: Path) -> None:
    run = tmp_path / "job"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lrwatch.demo.train",
            str(run),
            "--no-lrwatch",
            "--steps",
            "500",
            "--step-time",
            "0",
        ],
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "lrwatch", "replay", str(run), "--format", "jsonl"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows, "replay found nothing in a diverging run"
    for row in rows:
        assert {"run", "metric", "step", "kind", "severity", "detail", "action"} <= row.keys()
        assert row["run"] == "job"
        assert row["severity"] in ("info", "warning", "critical")
    divergences = [r for r in rows if r["kind"] == "divergence"]
    losses = [r["loss"] for r in read_log(run / "metrics.jsonl")]
    first_nan = next(i for i, v in enumerate(losses) if not math.isfinite(v))
    assert divergences[0]["step"] < first_nan
    assert divergences[0]["action"] == {"type": "scale_lr", "factor": 0.1}
