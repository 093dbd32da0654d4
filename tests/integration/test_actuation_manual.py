"""Manual override through a real ``lrwatch run`` daemon, driven by the real ``lrwatch`` CLI.

A healthy hooked job (constant LR 0.1) gets ``set-lr --scale`` and ``set-lr --value``; refused
requests (bounds, change limit) exit non-zero and write nothing. A second, diverging job (the
demo's) is paused first: the divergence is found and recorded, no command is written. Every
accepted override is in the audit table with who did it. With ``api_token_file`` configured,
the control API refuses a CLI without ``LRWATCH_API_TOKEN`` and accepts it with the token.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from lrwatch import testing
from lrwatch.protocol import channel
from lrwatch.testing import free_port
from tests.integration import actuation_job as job

pytestmark = pytest.mark.slow

BASE_LR = 0.1


def run_row(port: int, run: str) -> dict[str, Any] | None:
    return next((r for r in testing.status(port)["runs"] if r["run"] == run), None)


def start_daemon(tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int, Path, Path]:
    root = tmp / "runs"
    root.mkdir()
    port, state, log = free_port(), tmp / "state.sqlite", tmp / "daemon.log"
    if "--config" not in extra:  # the counted commands are the tests' own, not plateau cuts
        extra = (*extra, *job.plateau_reported_only(tmp))
    proc = testing.spawn(root, state, port, log, *extra)
    testing.wait_ready(proc, port, log)
    return proc, port, root, state


def test_set_lr_pause_resume_through_the_cli(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon, port, root, state = start_daemon(tmp_path)
    procs.append(daemon)
    healthy, wild = root / "healthy", root / "wild"
    procs.append(job.start(healthy, "--step-time", "0.01", "--lr", str(BASE_LR)))
    demo = [sys.executable, "-m", "lrwatch.demo.train", str(wild), "--steps", "420"]
    with (tmp_path / "wild.log").open("wb") as sink:
        wild_job = subprocess.Popen([*demo, "--step-time", "0.02"], stdout=sink, stderr=sink)
    procs.append(wild_job)

    def alive(run: str) -> bool:
        row = run_row(port, run)
        return bool(row and row["hook_alive"])

    show = lambda: testing.status(port)  # noqa: E731
    testing.wait_for(lambda: alive("wild"), 30, "the diverging job's hook", show=show)

    # pause before the divergence (around step 320, ~6 s away): observed only from now on.
    paused = job.cli("pause", "wild", "--reason", "test", "--port", str(port))
    assert paused.returncode == 0, paused.stderr
    assert job.read_log(wild)[-1]["step"] < 250, "paused too late to test anything"
    assert run_row(port, "wild")["state"] == "paused"  # type: ignore[index]

    # --scale on the healthy job: applied by the hook, acked, shown by status.
    testing.wait_for(lambda: alive("healthy"), 30, "the healthy job's hook", show=show)
    out = job.cli("set-lr", "healthy", "--scale", "0.5", "--port", str(port))
    assert out.returncode == 0, out.stderr
    assert "command 1 sent to healthy" in out.stdout
    testing.wait_for(lambda: channel.load_ack(healthy, 1) is not None, 10, "ack 1")
    ack = channel.load_ack(healthy, 1)
    assert ack is not None and ack.status.value == "applied", ack
    assert ack.lr_scale == pytest.approx(0.5)
    assert ack.lrs[0] == pytest.approx(0.5 * BASE_LR)

    def shows(scale: float, lr: float) -> bool:
        row = run_row(port, "healthy")
        return bool(
            row
            and row["lr_scale"] == pytest.approx(scale)
            and row["lrs"]
            and row["lrs"][0] == pytest.approx(lr)
            and not row["unacked_commands"]
        )

    testing.wait_for(lambda: shows(0.5, 0.05), 10, "status lr_scale 0.5", show=show)
    as_json = job.cli("status", "--json", "--port", str(port))
    assert as_json.returncode == 0, as_json.stderr
    row = next(r for r in json.loads(as_json.stdout)["runs"] if r["run"] == "healthy")
    assert row["lr_scale"] == pytest.approx(0.5)

    # --value: the LR of group 0 becomes that value.
    out = job.cli("set-lr", "healthy", "--value", "0.02", "--port", str(port))
    assert out.returncode == 0, out.stderr
    testing.wait_for(lambda: channel.load_ack(healthy, 2) is not None, 10, "ack 2")
    ack = channel.load_ack(healthy, 2)
    assert ack is not None and ack.status.value == "applied", ack
    assert ack.lrs[0] == pytest.approx(0.02)
    assert ack.lr_scale == pytest.approx(0.2)
    testing.wait_for(lambda: shows(0.2, 0.02), 10, "status lr_scale 0.2", show=show)
    testing.wait_for(
        lambda: job.read_log(healthy)[-1]["lr"] == pytest.approx(0.02), 5, "the job's LR 0.02"
    )

    # Out of bounds (factor 0.2 x 100 = 20 > max_lr_scale 1) and over the per-command limit
    # (x0.05 < 1/max_change): refused with a clear error and a non-zero exit, nothing written.
    for args, words in ((("--scale", "100"), "outside"), (("--scale", "0.05"), "limit")):
        out = job.cli("set-lr", "healthy", *args, "--port", str(port))
        assert out.returncode != 0
        assert "400" in out.stderr and words in out.stderr, out.stderr
    assert job.channel_files(healthy, "commands") == ["000000000001.json", "000000000002.json"]

    # The paused run diverged: the finding is recorded, no command was written.
    assert wild_job.wait(timeout=30) == 0
    db = sqlite3.connect(state)

    def wild_findings() -> list[str]:
        rows = db.execute("SELECT kind FROM findings WHERE run = 'wild'").fetchall()
        return [kind for (kind,) in rows]

    testing.wait_for(lambda: "divergence" in wild_findings(), 10, "the divergence finding")
    assert job.channel_files(wild, "commands") == []
    assert run_row(port, "wild")["unacked_commands"] == []  # type: ignore[index]
    resumed = job.cli("resume", "wild", "--port", str(port))
    assert resumed.returncode == 0, resumed.stderr
    assert run_row(port, "wild")["state"] != "paused"  # type: ignore[index]

    # The audit log: every accepted override, with who.
    audit = db.execute("SELECT at, run, event, who, detail FROM audit ORDER BY id").fetchall()
    db.close()
    manual = [(run, event, who) for _, run, event, who, _ in audit if event != "decision"]
    overrides = [(r, e) for r, e, _ in manual if e in ("set-lr", "pause", "resume")]
    assert overrides == [
        ("wild", "pause"),
        ("healthy", "set-lr"),
        ("healthy", "set-lr"),
        ("wild", "resume"),
    ]
    assert all(who.startswith("cli:") for _, e, who in manual if e != "ack")
    pause_detail = next(json.loads(d) for _, r, e, _, d in audit if e == "pause")
    assert pause_detail.get("reason") == "test"
    set_lr = [json.loads(d) for _, r, e, _, d in audit if e == "set-lr"]
    assert [d["factor"] for d in set_lr] == pytest.approx([0.5, 0.4])
    acks = [json.loads(d) for _, r, e, who, d in audit if e == "ack" and r == "healthy"]
    assert [(a["seq"], a["status"]) for a in acks] == [(1, "applied"), (2, "applied")]


def test_the_control_api_wants_the_bearer_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    config = tmp_path / "lrwatch.yaml"
    config.write_text(f"api_token_file: {token_file}\n")
    daemon, port, root, state = start_daemon(tmp_path, "--config", str(config))
    try:
        run = root / "exp"
        run.mkdir()
        (run / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
        testing.wait_for(lambda: run_row(port, "exp") is not None, 10, "the run")

        for token in (None, "wrong"):
            out = job.cli("pause", "exp", "--port", str(port), token=token)
            assert out.returncode != 0
            assert "401" in out.stderr and "token" in out.stderr, out.stderr
        assert run_row(port, "exp")["state"] != "paused"  # type: ignore[index]
        out = job.cli("set-lr", "exp", "--scale", "0.5", "--port", str(port))
        assert out.returncode != 0 and "401" in out.stderr, out.stderr

        out = job.cli("pause", "exp", "--port", str(port), token="s3cret-token")
        assert out.returncode == 0, out.stderr
        assert run_row(port, "exp")["state"] == "paused"  # type: ignore[index]
        # status is read-only and stays open (like /metrics)
        assert job.cli("status", "--json", "--port", str(port)).returncode == 0
    finally:
        job.stop(daemon)
    db = sqlite3.connect(state)
    audit = db.execute("SELECT run, event, who FROM audit").fetchall()
    db.close()
    assert [(r, e) for r, e, _ in audit] == [("exp", "pause")]


def post(port: int, run: str, verb: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{testing.url(port)}/api/runs/{run}/{verb}",
        data=json.dumps({"who": "test", **body}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_set_lr_value_right_after_an_ack(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    daemon, port, root, _ = start_daemon(tmp_path)
    procs.append(daemon)
    run = root / "healthy"
    procs.append(job.start(run, "--step-time", "0.01", "--lr", str(BASE_LR)))
    testing.wait_for(
        lambda: (r := run_row(port, "healthy")) is not None and r["hook_alive"], 30, "the hook"
    )
    seq = 0
    for _ in range(5):
        seq = int(post(port, "healthy", "set-lr", {"scale": 0.5})["seq"])
        while True:  # the daemon has read the ack ...
            row = run_row(port, "healthy")
            assert row is not None
            if row["lr_scale"] == pytest.approx(0.5):
                break
        if row["lrs"][0] == pytest.approx(BASE_LR):  # ... but not yet the heartbeat after it
            break
        back = int(post(port, "healthy", "set-lr", {"scale": 2.0})["seq"])  # to 1, again
        testing.wait_for(lambda s=back: channel.load_ack(run, s) is not None, 10, "the ack")
        time.sleep(1.5)
    else:
        pytest.skip("never caught the daemon between an ack and the next heartbeat")
    seq = int(post(port, "healthy", "set-lr", {"value": 0.02})["seq"])
    testing.wait_for(lambda: channel.load_ack(run, seq) is not None, 10, "the ack")
    ack = channel.load_ack(run, seq)
    assert ack is not None and ack.status.value == "applied"
    assert ack.lrs[0] == pytest.approx(0.02)


def test_observe_mode_refuses_set_lr(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    daemon, port, root, _ = start_daemon(tmp_path, "--mode", "observe")
    procs.append(daemon)
    run = root / "healthy"
    procs.append(job.start(run, "--step-time", "0.01"))
    testing.wait_for(
        lambda: (r := run_row(port, "healthy")) is not None and r["hook_alive"], 30, "the hook"
    )
    out = job.cli("set-lr", "healthy", "--scale", "0.5", "--port", str(port))
    time.sleep(0.5)
    assert job.channel_files(run, "commands") == []
    assert out.returncode != 0 and "observe" in out.stderr, out.stdout


def test_a_hook_with_another_secret_rejects_the_commands_and_on_call_sees_it(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon has no secret, the job has one: the hook refuses the unsigned command (its LR
    untouched) and /metrics counts the rejection, from a series that existed at 0 before."""
    daemon, port, root, _ = start_daemon(tmp_path)
    procs.append(daemon)
    monkeypatch.setenv("LRWATCH_SECRET", "the-job's-own-secret")
    run = root / "healthy"
    procs.append(job.start(run, "--step-time", "0.01", "--lr", str(BASE_LR)))
    testing.wait_for(
        lambda: (r := run_row(port, "healthy")) is not None and r["hook_alive"], 30, "the hook"
    )
    rejected = 'lrwatch_command_acks_total{run="healthy",status="rejected"}'
    testing.wait_for(lambda: rejected in testing.scrape(port), 5, "the ack counters at 0")
    assert testing.scrape(port)[rejected] == 0
    out = job.cli("set-lr", "healthy", "--scale", "0.5", "--port", str(port))
    assert out.returncode == 0, out.stderr
    testing.wait_for(lambda: testing.scrape(port)[rejected] == 1, 10, "the rejection counted")
    ack = channel.load_ack(run, 1)
    assert ack is not None and ack.status.value == "rejected" and ack.lr_scale == 1.0
    assert "unsigned" in ack.reason
    metrics = testing.scrape(port)
    assert metrics['lrwatch_command_acks_total{run="healthy",status="applied"}'] == 0
    assert "the-job's-own-secret" not in (tmp_path / "daemon.log").read_text()
