"""Hostile or unlucky channel files never crash the daemon, and no command is silently lost.

Each test runs a real ``lrwatch run`` process over a root holding a legit run: a real PyTorch
job (actuation_job.py) with the real hook, which diverges when the test says so and must then
be cut exactly once (x0.1), whatever the other files in the root do. Then /metrics and
``lrwatch status`` must work, and a restart over the same root must come up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus
from lrwatch.testing import free_port
from tests.integration import actuation_job as job

# Divergence cuts only (the job sits on a plateau, which the default policy would cut too), and
# one cut per run, so that "exactly once" is countable.
CONFIG = "policy:\n  factors: {divergence: 0.1}\n  cooldown_steps: 100000\n"


class Daemon:
    def __init__(self, tmp: Path, procs: list[subprocess.Popen[bytes]]) -> None:
        self.root, self.state, self.log = tmp / "runs", tmp / "state.sqlite", tmp / "daemon.log"
        self.root.mkdir()
        self.config = tmp / "lrwatch.yaml"
        self.config.write_text(CONFIG)
        self.procs, self.port = procs, free_port()
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        proc = testing.spawn(
            self.root, self.state, self.port, self.log, "--config", str(self.config)
        )
        self.procs.append(proc)
        testing.wait_ready(proc, self.port, self.log)
        self.proc = proc
        return proc

    def restart(self) -> None:
        testing.stop(self.proc, self.log)
        self.start()

    def row(self, run: str) -> dict[str, Any] | None:
        return next((r for r in testing.status(self.port)["runs"] if r["run"] == run), None)

    def errors(self, run: str, error: str) -> float:
        key = f'lrwatch_channel_errors_total{{error="{error}",run="{run}"}}'
        return testing.scrape(self.port).get(key, 0.0)

    def check_up(self) -> None:
        """Alive, scraped, and ``lrwatch status`` (the real CLI) answers."""
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        assert "lrwatch_runs" in testing.get(self.port, "/metrics").decode()
        out = job.cli("status", "--port", str(self.port))
        assert out.returncode == 0, out.stderr


def start_job(daemon: Daemon, name: str) -> tuple[Path, Path]:
    """A legit job in ``root/name``; it diverges once the returned trigger file exists."""
    run, trigger = daemon.root / name, daemon.root.parent / f"{name}.diverge"
    daemon.procs.append(job.start(run, "--diverge-when", str(trigger)))
    testing.wait_for(
        lambda: (r := daemon.row(name)) is not None and r["hook_alive"], 30, f"{name}'s hook"
    )
    return run, trigger


def acks(run: Path) -> list[Ack]:
    out = []
    for name in job.channel_files(run, "acks"):
        ack = channel.load_ack(run, int(name.partition(".")[0]))
        assert ack is not None
        out.append(ack)
    return out


def wait_cut_once(daemon: Daemon, run: Path, timeout: float = 60) -> Ack:
    """The job's divergence cut: acked applied, and the job's factor went 1 -> 0.1 once."""
    applied = lambda: [a for a in acks(run) if a.status is AckStatus.APPLIED]  # noqa: E731
    testing.wait_for(lambda: applied(), timeout, f"the cut of {run.name}", show=lambda: acks(run))
    testing.wait_for(
        lambda: (r := daemon.row(run.name)) is not None and not r["unacked_commands"],
        15,
        "the daemon to read the ack",
        show=lambda: daemon.row(run.name),
    )
    time.sleep(1.0)  # a second cut, if one were coming, would be here by now
    [ack] = applied()
    assert ack.lr_scale == pytest.approx(0.1) and ack.digest
    scales = sorted({round(r["lr_scale"], 9) for r in job.read_log(run)})
    assert scales == [0.1, 1.0], scales
    return ack


def plant_run(root: Path, name: str, heartbeat: bytes, diverging: bool = True) -> Path:
    """A run written by a hostile or buggy job: its own heartbeat bytes and a loss that
    diverges (so that, were the heartbeat believed, the controller would act on it)."""
    run = root / name
    (run / ".lrwatch").mkdir(parents=True)
    (run / ".lrwatch" / "id").write_text("feedfeedfeedfeed")
    (run / ".lrwatch" / "heartbeat.json").write_bytes(heartbeat)
    losses = [1.0] * 80 + [10.0**k for k in range(1, 30)] if diverging else [1.0] * 80
    lines = [json.dumps({"step": i, "loss": v}) for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def beat_bytes(**override: Any) -> bytes:
    beat: dict[str, Any] = {
        "pid": 1,
        "host": "h",
        "step": 5,
        "lr_scale": 1.0,
        "last_seq": 0,
        "lrs": [0.1],
        "written_at": time.time() + 3600,  # fresh for the whole test
        "channel": "feedfeedfeedfeed",
    }
    beat.update(override)
    # json.dumps writes NaN and Infinity as bare words, as a buggy job's json.dumps would.
    return json.dumps(beat).encode()


@pytest.mark.slow
def test_hostile_heartbeats_and_acks_never_crash_the_daemon(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon = Daemon(tmp_path, procs)
    root = daemon.root
    deep = b'{"pid": 1, "host": "h", "step": 1, "lr_scale": 1, "last_seq": 0, "lrs": '
    deep += b"[" * 5000 + b"]" * 5000 + b', "written_at": 1}'
    hostile = {
        "inf_step": (beat_bytes(step=float("inf")), "out_of_range"),
        "deep_lrs": (deep, "not_json"),
        "zero_scale": (beat_bytes(lr_scale=0), "out_of_range"),
        "nan_scale": (beat_bytes(lr_scale=float("nan")), "out_of_range"),
        "not_json": (b"\xff\xfe garbage", "not_json"),
    }
    for name, (data, _) in hostile.items():
        plant_run(root, name, data)
    # A believable heartbeat, so the daemon cuts this run, and then a hostile ack of the cut.
    bad_ack = plant_run(root, "bad_ack", beat_bytes())
    legit, trigger = start_job(daemon, "legit")
    testing.wait_for(lambda: job.channel_files(bad_ack, "commands") != [], 30, "the cut of bad_ack")
    (bad_ack / ".lrwatch" / "acks").mkdir()
    channel.ack_path(bad_ack, 1).write_bytes(
        b'{"seq": 1, "status": "applied", "step": Infinity, "lr_scale": 0.1, "lrs": [],'
        b' "acked_at": 1e999, "reason": ""}'
    )
    trigger.touch()
    wait_cut_once(daemon, legit)

    for name, (_, error) in hostile.items():
        testing.wait_for(lambda n=name, e=error: daemon.errors(n, e) >= 1, 10, f"{name} counted")
        row = daemon.row(name)
        assert row is not None and row["channel_trouble"] and not row["hook_alive"], row
    testing.wait_for(lambda: daemon.errors("bad_ack", "out_of_range") >= 1, 10, "the bad ack")
    assert (r := daemon.row("bad_ack")) is not None and r["unacked_commands"] == [1]
    assert "refused" in daemon.log.read_text()
    daemon.check_up()

    daemon.restart()  # no crash loop: the same files are met again at start-up
    time.sleep(2)
    daemon.check_up()
    assert (r := daemon.row("legit")) is not None and r["lr_scale"] == pytest.approx(0.1)


@pytest.mark.slow
def test_a_full_disk_keeps_the_command_pending_and_applies_it_once_there_is_room(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon = Daemon(tmp_path, procs)
    full = daemon.root / "full"
    commands = channel.channel_dir(full) / "commands"
    commands.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(commands)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        filler = commands / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        full, full_trigger = start_job(daemon, "full")
        other, other_trigger = start_job(daemon, "other")
        full_trigger.touch()
        testing.wait_for(lambda: daemon.errors("full", "write_failed") >= 1, 60, "ENOSPC")
        row = daemon.row("full")
        assert row is not None and row["unacked_commands"] == [1] and row["channel_trouble"]
        assert "No space left on device" in " ".join(row["channel_trouble"])
        other_trigger.touch()
        wait_cut_once(daemon, other)  # every other run stays watched and cut

        daemon.restart()  # the command is still unwritten: restore meets the full disk again
        failures = daemon.errors("full", "write_failed")
        daemon.check_up()
        filler.unlink()
        ack = wait_cut_once(daemon, full)
        assert ack.seq == 1
        assert (r := daemon.row("full")) is not None and r["channel_trouble"] == []
        assert failures >= 1
    finally:
        for proc in procs:
            job.stop(proc)
        subprocess.run(["umount", "-l", str(commands)], capture_output=True)


@pytest.mark.slow
def test_a_relaunched_job_in_a_recreated_directory_gets_its_cut(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon = Daemon(tmp_path, procs)
    run, _ = start_job(daemon, "again")
    out = job.cli("set-lr", "again", "--scale", "0.5", "--port", str(daemon.port))
    assert out.returncode == 0, out.stderr
    testing.wait_for(lambda: len(acks(run)) == 1, 15, "the first job's ack")
    job.stop(procs.pop())  # the first job ends; its directory is deleted, a new job starts
    old_channel = channel.channel_id(run)
    shutil.rmtree(run)
    run, trigger = start_job(daemon, "again")
    assert channel.channel_id(run) != old_channel
    testing.wait_for(lambda: daemon.errors("again", "channel_replaced") >= 1, 15, "the new job")
    trigger.touch()
    ack = wait_cut_once(daemon, run)
    assert ack.seq == 1  # where the new hook looks first
    daemon.check_up()
    daemon.restart()
    daemon.check_up()
    assert (r := daemon.row("again")) is not None and r["unacked_commands"] == []


@pytest.mark.slow
def test_junk_and_far_ahead_files_do_not_take_the_cut(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(channel.SECRET_ENV, "s3cret")  # the daemon and the job both sign/check
    daemon = Daemon(tmp_path, procs)
    run, trigger = start_job(daemon, "junk")
    for seq in (1, 2, 100_000_000):
        channel.command_path(run, seq).parent.mkdir(parents=True, exist_ok=True)
        channel.command_path(run, seq).write_bytes(b"not json")
    testing.wait_for(lambda: len(acks(run)) == 2, 15, "the hook to refuse the junk")
    assert all(a.status is AckStatus.REJECTED and "not JSON" in a.reason for a in acks(run))
    daemon.restart()  # old daemons numbered from the far-ahead file on: 100000001
    # Junk at the next numbers, planted after the daemon looked: it must not write over them.
    for seq in (3, 4):
        channel.command_path(run, seq).write_bytes(b"not json either")
    trigger.touch()
    ack = wait_cut_once(daemon, run)
    assert ack.seq >= 5
    rejected = [a for a in acks(run) if a.status is AckStatus.REJECTED]
    assert len(rejected) == 4
    assert (r := daemon.row("junk")) is not None and r["lr_scale"] == pytest.approx(0.1)
    key = 'lrwatch_adjustments_total{reason="divergence",run="junk"}'
    assert testing.scrape(daemon.port).get(key) == 1
    daemon.check_up()
