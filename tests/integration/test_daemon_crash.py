"""Exactly once under SIGKILL: a real daemon killed at random moments, 20 times and more, while two
live jobs (JSONL and TensorBoard, hooks attached) log a series with a spike and two divergences.

Restarted each time on the same state file, the daemon must end up having reported every
finding exactly once — the very findings ``lrwatch replay`` reports over the finished logs — and
sent every command replay says the policy would send, each exactly once: numbered 1..N without a
gap, written once, applied once by the hook (its final LR factor is the product), acknowledged
and recorded.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lrwatch import testing
from lrwatch.config import Config
from lrwatch.offline.replay import replay
from lrwatch.protocol import channel
from lrwatch.testing import free_port

pytestmark = pytest.mark.slow

KILLS = 20
WRITE_SECONDS = 300  # the jobs' time to finish writing while kills go on (long: a loaded machine)


def start_job(root: Path, name: str, fmt: str, done: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.crash_job",
            str(root / name),
            "--format",
            fmt,
            "--done",
            str(done),
            "--out",
            str(root.parent / f"{name}.hook.json"),
        ],
        cwd=Path(__file__).resolve().parents[2],  # where ``tests`` is importable
    )


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path: Path) -> None:
    root, state, log = tmp_path / "runs", tmp_path / "state.sqlite", tmp_path / "daemon.log"
    root.mkdir()
    done = tmp_path / "done"
    jobs = {
        name: start_job(root, name, fmt, done)
        for name, fmt in [("j", "jsonl"), ("t", "tensorboard")]
    }
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    rng = random.Random(5)
    kills, moments = 0, []
    deadline = time.monotonic() + WRITE_SECONDS
    try:
        # Kill at random moments (in the imports, the start-up, the main loop, a transaction):
        # at least KILLS times, and for as long as the jobs are still writing.
        while kills < KILLS or not all(_written(root, name) for name in jobs):
            proc = testing.spawn(root, state, port, log)
            moment = rng.uniform(0.3, 2.0)
            time.sleep(moment)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            moments.append(round(moment, 2))
            assert time.monotonic() < deadline, f"the jobs never finished writing ({kills} kills)"
        # The last incarnation runs until it has caught up and every command is acknowledged.
        proc = testing.spawn(root, state, port, log)
        testing.wait_ready(proc, port, log)
        expected = list(replay([root], Config()))
        actions: dict[str, list[tuple[int, float]]] = {name: [] for name in jobs}
        for item in expected:
            if item.decision and item.decision.action:
                actions[item.finding.run].append(
                    (item.finding.step, item.decision.action.factor or 0)
                )

        def caught_up() -> bool:
            rows = {r["run"]: r for r in testing.status(port)["runs"]}
            return all(
                n in rows
                and rows[n]["last_step"] == 599
                and not rows[n]["unacked_commands"]
                and len(_acks(root / n)) == len(actions.get(n, []))
                for n in jobs
            )

        testing.wait_for(
            caught_up,
            60,
            "the last daemon to catch up",
            show=lambda: (testing.status(port), actions),
        )
        done.touch()
        for job in jobs.values():
            assert job.wait(timeout=30) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        done.touch()
        for p in [*jobs.values(), proc]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    db = sqlite3.connect(state)
    found = db.execute("SELECT run, metric, step, kind FROM findings ORDER BY run, id").fetchall()
    commands = db.execute(
        "SELECT run, seq, action, reason, ack FROM commands ORDER BY run, seq"
    ).fetchall()
    db.close()

    # Every finding exactly once, and the same as an uninterrupted replay of the same logs.
    replayed = sorted(
        (f.finding.run, f.finding.metric, f.finding.step, f.finding.kind) for f in expected
    )
    assert sorted(found) == replayed, f"kills at {moments}"
    assert {k for *_, k in replayed} >= {"spike", "divergence"}

    for name in jobs:
        mine = [c for c in commands if c[0] == name]
        # Numbered 1..N, each what replay says the policy does, at the finding's step.
        assert [c[1] for c in mine] == list(range(1, len(mine) + 1))
        assert len(mine) == len(actions[name]), actions
        # Both divergences were answered (a plateau before the first may be cut too).
        assert sum(reason.startswith("divergence") for *_, reason, _ in mine) == 2, mine
        for (_, _, action, reason, ack), (step, factor) in zip(mine, actions[name], strict=True):
            assert json.loads(action) == {"type": "scale_lr", "factor": factor}
            assert f"at step {step}:" in reason
            assert ack is not None and json.loads(ack)["status"] == "applied"
        # Written once (one file per number), applied once (the hook's factor is the product).
        assert sorted(_commands(root / name)) == [c[1] for c in mine]
        assert sorted(_acks(root / name)) == [c[1] for c in mine]
        hook = json.loads((root.parent / f"{name}.hook.json").read_text())
        assert hook["last_seq"] == len(mine)
        assert hook["lr_scale"] == pytest.approx(math.prod(f for _, f in actions[name]))
    assert kills >= KILLS


def _written(root: Path, name: str) -> bool:
    """Whether job ``name`` wrote its last step (it then only keeps its hook alive)."""
    beat = channel.read_heartbeat(root / name)
    return beat is not None and beat.step >= 599


def _commands(run_dir: Path) -> list[int]:
    folder = channel.channel_dir(run_dir) / "commands"
    return [int(p.stem) for p in folder.glob("[0-9]*.json")]


def _acks(run_dir: Path) -> list[int]:
    folder = channel.channel_dir(run_dir) / "acks"
    return [int(p.stem) for p in folder.glob("[0-9]*.json")] if folder.is_dir() else []
