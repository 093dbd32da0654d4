"""Exactly once when one end dies between a command and its ack.

1. The daemon (a real ``lrwatch run`` process) is SIGKILLed after writing a command and before
   the hook (a real job that checks its channel only every few seconds) has applied it; a new
   daemon on the same state file must neither lose the command nor send it again, and must
   record the hook's ack when it comes. Once for a manual set-lr, once for a divergence cut.
2. The training process dies after applying a command but before writing its ack. A real
   process cannot be stopped reliably in that window (the ack follows the apply within the same
   ``hook.step()`` call, microseconds later), so the death is simulated in-process: the ack write
   raises a BaseException, as a kill -9 would end the job at that instant. A job resumed from
   a checkpoint taken before the apply applies it exactly once; one resumed from a checkpoint
   taken after it does not apply it again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import lrwatch
from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.protocol.types import Action, ActionType, Command
from lrwatch.testing import free_port
from tests.integration import actuation_job as job

CHECK_INTERVAL = "4"  # seconds between the job's channel checks: the window for the SIGKILL


def stored_commands(state: Path) -> list[tuple[str, int, dict[str, Any], Any]]:
    db = sqlite3.connect(state)
    rows = db.execute("SELECT run, seq, action, ack FROM commands ORDER BY run, seq").fetchall()
    db.close()
    return [(r, s, json.loads(a), json.loads(k) if k else None) for r, s, a, k in rows]


class DaemonRunner:
    def __init__(self, tmp: Path, procs: list[subprocess.Popen[bytes]], *extra: str) -> None:
        self.root, self.state, self.log = tmp / "runs", tmp / "state.sqlite", tmp / "daemon.log"
        self.root.mkdir()
        self.procs, self.extra = procs, extra
        self.port = free_port()
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        proc = testing.spawn(self.root, self.state, self.port, self.log, *self.extra)
        self.procs.append(proc)
        testing.wait_ready(proc, self.port, self.log)
        self.proc = proc
        return proc

    def row(self, run: str) -> dict[str, Any] | None:
        return next((r for r in testing.status(self.port)["runs"] if r["run"] == run), None)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.mark.slow
def test_manual_command_survives_a_daemon_sigkill_exactly_once(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon = DaemonRunner(tmp_path, procs, *job.plateau_reported_only(tmp_path))
    run = daemon.root / "exp"
    procs.append(job.start(run, "--step-time", "0.01", "--check-interval", CHECK_INTERVAL))
    testing.wait_for(
        lambda: (r := daemon.row("exp")) is not None and r["hook_alive"], 30, "the job's hook"
    )
    # Right after a check, so that the next one is CHECK_INTERVAL seconds away.
    first = channel.read_heartbeat(run)
    testing.wait_for(
        lambda: (b := channel.read_heartbeat(run)) is not None and b != first, 10, "a heartbeat"
    )
    out = job.cli("set-lr", "exp", "--scale", "0.5", "--port", str(daemon.port))
    assert out.returncode == 0, out.stderr
    assert job.channel_files(run, "commands") == ["000000000001.json"]
    daemon.kill()
    assert job.channel_files(run, "acks") == [], (
        "the hook answered before the SIGKILL: window missed"
    )
    assert [(r, s, a) for r, s, a, _ in stored_commands(daemon.state)] == [
        ("exp", 1, {"type": "scale_lr", "factor": 0.5})
    ]

    daemon.start()
    testing.wait_for(lambda: job.channel_files(run, "acks") == ["000000000001.json"], 15, "the ack")
    testing.wait_for(
        lambda: (r := daemon.row("exp")) is not None and not r["unacked_commands"],
        10,
        "the restarted daemon to read the ack",
        show=lambda: daemon.row("exp"),
    )
    row = daemon.row("exp")
    assert row is not None and row["lr_scale"] == pytest.approx(0.5)
    ack = channel.load_ack(run, 1)
    assert ack is not None and ack.status.value == "applied" and ack.lr_scale == 0.5
    beat = channel.read_heartbeat(run)
    assert beat is not None and beat.lr_scale == 0.5 and beat.last_seq == 1
    assert job.channel_files(run, "commands") == ["000000000001.json"]
    (_, _, _, stored_ack), *rest = stored_commands(daemon.state)
    assert rest == [] and stored_ack is not None and stored_ack["status"] == "applied"
    # The job applied the factor once: its LR went 0.1 -> 0.05 and stayed there.
    lrs = sorted({round(r["lr"], 9) for r in job.read_log(run)})
    assert lrs == [0.05, 0.1]


@pytest.mark.slow
def test_divergence_cut_survives_a_daemon_sigkill_exactly_once(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    config = tmp_path / "lrwatch.yaml"
    config.write_text("policy:\n  cooldown_steps: 100000\n")
    daemon = DaemonRunner(tmp_path, procs, "--config", str(config))
    run = daemon.root / "wild"
    script = (
        "import sys, lrwatch, lrwatch.demo.train as t\n"
        "real = lrwatch.attach\n"
        "lrwatch.attach = lambda o, d: real(o, d, check_interval=float(sys.argv[2]))\n"
        "t.train(__import__('pathlib').Path(sys.argv[1]), use_lrwatch=True, steps=600,"
        " step_time=0.02)\n"
    )
    with (tmp_path / "wild.log").open("wb") as out:
        wild = subprocess.Popen(
            [sys.executable, "-c", script, str(run), CHECK_INTERVAL], stdout=out, stderr=out
        )
    procs.append(wild)
    testing.wait_for(lambda: job.channel_files(run, "commands") != [], 40, "the divergence cut")
    daemon.kill()
    killed_at_step = job.read_log(run)[-1]["step"]
    assert job.channel_files(run, "acks") == [], (
        "the hook answered before the SIGKILL: window missed"
    )
    assert job.channel_files(run, "commands") == ["000000000001.json"]

    daemon.start()
    assert wild.wait(timeout=40) == 0
    testing.wait_for(
        lambda: (r := daemon.row("wild")) is not None and not r["unacked_commands"],
        10,
        "the restarted daemon to read the ack",
        show=lambda: daemon.row("wild"),
    )
    assert job.channel_files(run, "commands") == ["000000000001.json"], (
        "a second command for the same finding"
    )
    assert job.channel_files(run, "acks") == ["000000000001.json"]
    ack = channel.load_ack(run, 1)
    assert ack is not None and ack.status.value == "applied"
    assert ack.lr_scale == pytest.approx(0.1) and ack.step >= killed_at_step
    row = daemon.row("wild")
    assert row is not None and row["lr_scale"] == pytest.approx(0.1)
    stored = stored_commands(daemon.state)
    assert [(r, s, a["factor"]) for r, s, a, _ in stored] == [("wild", 1, 0.1)]
    assert stored[0][3] is not None and stored[0][3]["status"] == "applied"
    scales = [r["lr"] / (3.0 * min(1.0, (r["step"] + 2) / 400)) for r in job.read_log(run)]
    assert sorted({round(s, 6) for s in scales}) == [0.1, 1.0]


# --- the training process dies between apply and ack (simulated in-process) -----------------


class Killed(BaseException):
    """What a kill -9 is to the job at that instant: nothing after it runs."""


def make_hook(run_dir: Path) -> tuple[lrwatch.Hook, torch.optim.Optimizer]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return lrwatch.attach(optimizer, run_dir, check_interval=1e-9), optimizer


def train_step(hook: lrwatch.Hook, optimizer: torch.optim.Optimizer, step: int) -> float:
    optimizer.zero_grad()
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()
    hook.step(step)
    return hook.lrs[0]


def test_job_killed_between_apply_and_ack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "exp"
    hook, opt = make_hook(run)
    train_step(hook, opt, 0)
    before = hook.state_dict()  # a checkpoint taken before the command arrives
    command = Command("exp", 1, Action(ActionType.SCALE_LR, 0.5), "test", time.time(), "test")
    channel_id = channel.channel_id(run)
    assert channel_id is not None
    channel.write_command(run, command, channel=channel_id, key=None)

    def die(*_: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(channel, "write_ack", die)
        with pytest.raises(Killed):
            train_step(hook, opt, 1)
    assert hook.lr_scale == 0.5, "the command was applied before the 'kill'"
    after = hook.state_dict()  # a checkpoint that could only be taken after the apply
    assert after == {"lr_scale": 0.5, "last_seq": 1}
    assert not channel.ack_path(run, 1).exists()
    del hook

    # Resumed from the checkpoint taken after the apply: nothing applied again.
    hook, opt = make_hook(run)
    hook.load_state_dict(after)
    lrs = [train_step(hook, opt, s) for s in range(1, 6)]
    assert lrs == [pytest.approx(0.05)] * 5 and hook.lr_scale == 0.5
    beat = channel.read_heartbeat(run)
    assert beat is not None and beat.lr_scale == 0.5 and beat.last_seq == 1
    hook.close()

    # Resumed from the checkpoint taken before it: applied exactly once, and acked.
    hook, opt = make_hook(run)
    hook.load_state_dict(before)
    assert hook.lr_scale == 1.0
    lrs = [train_step(hook, opt, s) for s in range(1, 6)]
    assert lrs == [pytest.approx(0.05)] * 5 and hook.lr_scale == 0.5
    ack = channel.load_ack(run, 1)
    assert ack is not None and ack.status.value == "applied" and ack.lr_scale == 0.5
    assert ack.step == 1
    hook.close()

    # ... and a third incarnation from the same old checkpoint skips it: the ack says it was
    # handled, so the job keeps its restored factor (the daemon then follows its heartbeat).
    hook, opt = make_hook(run)
    hook.load_state_dict(before)
    lrs = [train_step(hook, opt, s) for s in range(1, 4)]
    assert lrs == [pytest.approx(0.1)] * 3 and hook.lr_scale == 1.0
    beat = channel.read_heartbeat(run)
    assert beat is not None and beat.lr_scale == 1.0 and beat.last_seq == 1
    assert [p.name for p in (channel.channel_dir(run) / "acks").glob("*.json")] == [
        "000000000001.json"
    ]
    hook.close()


def test_an_ack_that_could_not_be_written_is_written_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "exp"
    hook, opt = make_hook(run)
    train_step(hook, opt, 0)
    command = Command("exp", 1, Action(ActionType.SCALE_LR, 0.5), "test", time.time(), "test")
    channel_id = channel.channel_id(run)
    assert channel_id is not None
    channel.write_command(run, command, channel=channel_id, key=None)

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(channel, "write_ack", disk_full)
        train_step(hook, opt, 1)  # applied; the ack write fails, the loop goes on
    assert hook.lr_scale == 0.5
    for step in range(2, 10):  # the disk has room again
        train_step(hook, opt, step)
    ack = channel.load_ack(run, 1)
    hook.close()
    assert ack is not None and ack.status.value == "applied" and ack.lr_scale == 0.5
