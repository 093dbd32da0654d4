"""Checkpoint reconcile with a real daemon and real job processes.

A hooked job gets a cut (x0.1) through ``lrwatch set-lr``, saves ``hook.state_dict()`` and exits.
A new job process restores it and goes on logging: its heartbeat at once reports factor 0.1 and
last_seq 1, it trains at 0.1 x its LR, the daemon's status shows 0.1, and nothing is applied
again (one command, one ack). Then a job restored from a checkpoint taken *before* the cut: the
ack says command 1 was handled, so it is skipped and the job runs at factor 1; the daemon's view
follows the job's (it is the truth about its factor), with still one command and one ack.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.testing import free_port
from tests.integration import actuation_job as job

pytestmark = pytest.mark.slow

BASE_LR = 0.1


def test_a_resumed_job_reports_its_restored_factor_and_reapplies_nothing(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    root, state, log, port = tmp_path / "runs", tmp_path / "state.sqlite", tmp_path / "d.log", 0
    root.mkdir()
    port = free_port()
    daemon = testing.spawn(root, state, port, log, *job.plateau_reported_only(tmp_path))
    procs.append(daemon)
    testing.wait_ready(daemon, port, log)
    run, ckpt = root / "exp", tmp_path / "ckpt.json"

    def row() -> dict[str, Any] | None:
        return next((r for r in testing.status(port)["runs"] if r["run"] == "exp"), None)

    first = job.start(
        run, "--lr", str(BASE_LR), "--step-time", "0.01", "--exit-after-scale", "20",
        "--state-out", str(ckpt),
    )  # fmt: skip
    procs.append(first)
    testing.wait_for(lambda: (r := row()) is not None and r["hook_alive"], 30, "the hook")
    out = job.cli("set-lr", "exp", "--scale", "0.1", "--port", str(port))
    assert out.returncode == 0, out.stderr
    assert first.wait(timeout=20) == 0
    assert json.loads(ckpt.read_text()) == {"lr_scale": pytest.approx(0.1), "last_seq": 1}
    last_step = job.read_log(run)[-1]["step"]
    testing.wait_for(
        lambda: (r := row()) is not None and not r["unacked_commands"], 10, "the ack read"
    )

    # The resumed job.
    second = job.start(
        run, "--lr", str(BASE_LR), "--step-time", "0.01", "--state-in", str(ckpt),
        "--start-step", str(last_step + 1), "--steps", "200",
    )  # fmt: skip
    procs.append(second)
    testing.wait_for(
        lambda: (b := channel.read_heartbeat(run)) is not None and b.pid == second.pid,
        20,
        "the resumed job's heartbeat",
    )
    beat = channel.read_heartbeat(run)
    assert beat is not None
    assert beat.lr_scale == pytest.approx(0.1) and beat.last_seq == 1
    testing.wait_for(
        lambda: len([r for r in job.read_log(run) if r["step"] > last_step]) >= 50,
        20,
        "the resumed job's log",
    )
    resumed = [r for r in job.read_log(run) if r["step"] > last_step]
    assert all(r["lr"] == pytest.approx(0.1 * BASE_LR) for r in resumed)
    assert all(r["lr_scale"] == pytest.approx(0.1) for r in resumed)
    testing.wait_for(
        lambda: (r := row()) is not None and r["lrs"] == [pytest.approx(0.1 * BASE_LR)],
        5,
        "the daemon to read the resumed job's heartbeat",
        show=row,
    )
    status = row()
    assert status is not None and status["lr_scale"] == pytest.approx(0.1)
    assert status["unacked_commands"] == []
    assert (
        job.channel_files(run, "commands")
        == job.channel_files(run, "acks")
        == ["000000000001.json"]
    )
    job.stop(second)

    # A job restored from a checkpoint taken before the cut: command 1 is skipped (its ack
    # exists), the job runs at factor 1 and the daemon's view follows the job's.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"lr_scale": 1.0, "last_seq": 0}))
    shutil.copy(ckpt.with_suffix(".pt"), old.with_suffix(".pt"))  # converged weights: no jump
    third = job.start(
        run, "--lr", str(BASE_LR), "--step-time", "0.01", "--state-in", str(old),
        "--start-step", str(last_step + 300), "--steps", "200",
    )  # fmt: skip
    procs.append(third)
    testing.wait_for(
        lambda: (r := row()) is not None and r["lr_scale"] == pytest.approx(1.0),
        20,
        "the daemon to follow the job's factor",
        show=row,
    )
    beat = channel.read_heartbeat(run)
    assert beat is not None and beat.pid == third.pid
    assert beat.lr_scale == 1.0 and beat.last_seq == 1
    assert (
        job.channel_files(run, "commands")
        == job.channel_files(run, "acks")
        == ["000000000001.json"]
    )
    job.stop(third)
    db = sqlite3.connect(state)
    rows = db.execute("SELECT seq, ack IS NOT NULL FROM commands").fetchall()
    db.close()
    assert rows == [(1, 1)]
