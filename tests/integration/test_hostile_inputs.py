"""Hostile inputs against a real ``lrwatch run``: whatever one file, directory name, config file,
state row or HTTP client holds, the daemon stays up and keeps watching every other run.

Each case sits beside a legit run whose loss blows up: the divergence must still be found
(``lrwatch_finding_active{kind="divergence"}``), /metrics and ``lrwatch status`` must still
answer, and a restart over the same root must come up. One daemon is shared by the cases that
cannot disturb each other (the module fixture); the full disk needs its own state filesystem.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lrwatch import testing
from lrwatch.daemon.http import IDLE_TIMEOUT_SECONDS, MAX_CONNECTIONS
from lrwatch.testing import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="Linux file names and /proc"),
]

BAD_NAME = os.fsdecode(b"bad\xff\xfename")  # not UTF-8: legal on Linux
BAD_LABEL = "bad\\xff\\xfename"  # how lrwatch names it everywhere (boundary.escape_name)
CONFIG = """\
checkpoint_interval_seconds: 1
rescan_interval_seconds: 1
max_file_events_per_second: 0.5
max_metrics_per_run: 50
max_metric_names: 400
"""


def diverging_jsonl(path: Path, start: int = 0) -> None:
    """A legit run whose loss falls, then blows up to NaN: a divergence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": s, "loss": 2.0 / (1 + s)}) for s in range(start, start + 40)]
    lines += [json.dumps({"step": s, "loss": math.nan}) for s in range(start + 40, start + 44)]
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def diverged(port: int, run: str = "legit") -> bool:
    key = f'lrwatch_finding_active{{kind="divergence",run="{run}"}}'
    return testing.scrape(port).get(key) == 1


def metric(port: int, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return testing.scrape(port).get(f"{name}{{{inner}}}", 0.0)


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lrwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Node:
    """The shared daemon and what the cases planted."""

    root: Path
    state: Path
    config: Path
    log: Path
    outside: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stop_ticker: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.port = free_port()
        extra = ("--config", str(self.config), "--log-format", "json")
        self.proc = testing.spawn(self.root, self.state, self.port, self.log, *extra)
        testing.wait_ready(self.proc, self.port, self.log)

    def alive(self, *, diverging: bool = True) -> None:
        """Up, /metrics and ``lrwatch status`` answer, and the legit run's divergence shows."""
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        assert b"lrwatch_build_info" in testing.get(self.port, "/metrics")
        if diverging:
            testing.wait_for(lambda: diverged(self.port), 30, "the legit divergence")
        answer = cli("status", "--port", str(self.port))
        assert answer.returncode == 0, answer.stderr

    def records(self) -> list[dict[str, object]]:
        """Every line of the daemon's output, each of which must be JSON."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line!r}") from None
        return out

    def logged(self, text: str) -> int:
        return sum(text in str(r.get("message", "")) for r in self.records())


def _ticker(path: Path, stop: threading.Event) -> None:
    """A run that logs 20 lines a second: above ``max_file_events_per_second``, so the daemon
    works in sweep mode (where a known file is only stat-ed, not checked again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    step = 0
    with path.open("a", buffering=1) as f:
        while not stop.wait(0.05):
            f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")
            step += 1


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("hostile")
    root, outside = tmp / "runs", tmp / "outside"
    root.mkdir()
    outside.mkdir()
    config = tmp / "lrwatch.yaml"
    config.write_text(CONFIG)
    n = Node(root, tmp / "state.sqlite", config, tmp / "daemon.log", outside)
    # Planted before the start: each of these used to crash it, and again at every restart.
    (root / "huge_step").mkdir()
    (root / "huge_step" / "metrics.jsonl").write_text(
        '{"step": 18446744073709551615, "loss": NaN}\n'
        f'{{"step": {10**400}, "loss": 1.0}}\n'
        f'{{"step": 3, "loss": {10**400}, "acc": 0.5}}\n'
    )
    (root / "huge_csv").mkdir()
    (root / "huge_csv" / "metrics.csv").write_text("step,loss\n1e300,1.0\n-1e300,2.0\n")
    (root / BAD_NAME).mkdir()
    (root / BAD_NAME / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0, "a\udcffb": 2.0}) + "\n" for s in range(5))
    )
    (root / "many_names").mkdir()
    (root / "many_names" / "metrics.jsonl").write_text(
        json.dumps({"step": 1, **{f"m{i}": float(i) for i in range(2000)}}) + "\n"
    )
    diverging_jsonl(root / "legit" / "metrics.jsonl")
    ticker = threading.Thread(target=_ticker, args=(root / "ticker" / "m.jsonl", n.stop_ticker))
    ticker.start()
    try:
        n.start()
        yield n
    finally:
        n.stop_ticker.set()
        ticker.join()
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait()


def test_out_of_range_steps_and_values_are_refused_and_counted(node: Node) -> None:
    testing.wait_for(lambda: diverged(node.port), 30, "the legit divergence")
    errors = "lrwatch_source_errors_total"

    def refused() -> bool:
        jsonl = metric(node.port, errors, format="jsonl", error="step_out_of_range")
        csv = metric(node.port, errors, format="csv", error="step_out_of_range")
        return jsonl >= 2 and csv >= 2

    testing.wait_for(refused, 20, "the refused steps", show=lambda: testing.scrape(node.port))
    # The record at step 3 is kept; its 10**400 loss is no number (the reader drops it).
    last_step = "lrwatch_run_last_step"
    testing.wait_for(lambda: metric(node.port, last_step, run="huge_step") == 3, 10, "step 3")
    node.alive()


def test_a_run_name_that_is_not_utf8_is_escaped_everywhere(node: Node) -> None:
    testing.wait_for(
        lambda: (
            metric(node.port, "lrwatch_run_last_step", run=BAD_LABEL.replace("\\", "\\\\")) == 4
        ),
        20,
        "the run on /metrics",
        show=lambda: [k for k in testing.scrape(node.port) if "bad" in k],
    )
    rows = testing.status(node.port)["runs"]
    assert BAD_LABEL in {row["run"] for row in rows}

    def checkpointed() -> bool:  # the first checkpoint used to kill the daemon
        with contextlib.closing(sqlite3.connect(node.state)) as db:
            runs = {run for (run,) in db.execute("SELECT run FROM runs")}
            paths = [p for (p,) in db.execute("SELECT path FROM readers")]
        return BAD_LABEL in runs and any(BAD_LABEL in p for p in paths)

    testing.wait_for(checkpointed, 20, "the run's checkpoint")
    node.alive()


def test_metric_names_are_capped_counted_and_logged_once(node: Node) -> None:
    capped = {"format": "jsonl", "error": "metric_names_capped"}
    testing.wait_for(
        lambda: metric(node.port, "lrwatch_source_errors_total", **capped) >= 1950, 20, "the cap"
    )
    more = json.dumps({"step": 2, **{f"n{i}": 1.0 for i in range(100)}}) + "\n"
    with (node.root / "many_names" / "metrics.jsonl").open("a") as f:
        f.write(more)
    testing.wait_for(
        lambda: metric(node.port, "lrwatch_source_errors_total", **capped) >= 2050, 20, ""
    )
    assert node.logged("run many_names: more than 50 metric names") == 1
    node.alive()


def test_a_sighup_with_a_bad_config_keeps_the_running_one(node: Node) -> None:
    assert node.proc is not None
    node.config.write_bytes(b"mode: observe\nroles: {loss: [\xff\xfe]}\n")
    node.proc.send_signal(signal.SIGHUP)
    testing.wait_for(lambda: node.logged("config reload refused") >= 1, 10, "the refusal")
    node.config.write_text(CONFIG + f"secret_file: {node.root.parent / 'no-such-secret'}\n")
    node.proc.send_signal(signal.SIGHUP)
    testing.wait_for(lambda: node.logged("config reload refused") >= 2, 10, "the refusal")
    assert any("secret_file" in str(r.get("message")) for r in node.records())
    node.config.write_text(CONFIG)
    node.alive()
    # And `config check` says so too, before anyone sends the SIGHUP.
    bad = node.root.parent / "bad-secret.yaml"
    bad.write_text(f"secret_file: {node.root.parent / 'no-such-secret'}\n")
    answer = cli("config", "check", str(bad))
    assert answer.returncode == 1 and "secret_file" in answer.stderr


def test_a_followed_file_swapped_for_a_symlink_out_of_the_root_is_not_read(node: Node) -> None:
    testing.wait_for(lambda: node.logged("checking the known files by sweeps") >= 1, 20, "sweeps")
    log = node.root / "swap" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(3)))
    testing.wait_for(lambda: metric(node.port, "lrwatch_run_last_step", run="swap") == 2, 20, "")
    secret = node.outside / "secret.jsonl"
    secret.write_text("".join(json.dumps({"step": s, "loss": 42.0}) + "\n" for s in range(10)))
    tmp_link = log.with_name(".swap")
    tmp_link.symlink_to(secret)
    tmp_link.replace(log)
    refused = {"format": "jsonl", "error": "symlink_outside_root"}
    testing.wait_for(
        lambda: metric(node.port, "lrwatch_source_errors_total", **refused) >= 1, 20, "refusal"
    )
    assert metric(node.port, "lrwatch_run_last_step", run="swap") == 2
    assert metric(node.port, "lrwatch_metric_value", run="swap", metric="loss") == 1.0
    node.alive()


def test_a_symlinked_output_directory_is_not_written_through(node: Node) -> None:
    run = node.root / "hooked"
    (run / ".lrwatch").mkdir(parents=True)  # a hook attached: lrwatch/ output is written
    target = node.outside / "victim"
    target.mkdir()
    (run / "lrwatch").symlink_to(target)
    diverging_jsonl(run / "metrics.jsonl")
    testing.wait_for(lambda: diverged(node.port, "hooked"), 20, "the hooked run's divergence")
    time.sleep(0.5)
    assert list(target.iterdir()) == []
    node.alive()


def test_http_bounds_body_connections_and_idle_time(node: Node) -> None:
    assert node.proc is not None
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/runs/legit/pause HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}"
        )
        assert sock.recv(100).startswith(b"HTTP/1.0 400")
    before = threads_of(node.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(200)]
    try:
        time.sleep(0.5)
        assert threads_of(node.proc.pid) <= before + MAX_CONNECTIONS
        node.alive()
        time.sleep(IDLE_TIMEOUT_SECONDS + 1)
        assert threads_of(node.proc.pid) <= before + 2
        assert all(s.recv(10) == b"" for s in idle[:5])  # closed by the server
    finally:
        for s in idle:
            s.close()
    node.alive()


def test_quarantine_and_restart_over_a_damaged_state_row(node: Node) -> None:
    """Last: stops the shared daemon, damages one run's row, and starts it again."""
    assert node.proc is not None
    testing.wait_for(lambda: diverged(node.port), 30, "the legit divergence")
    testing.stop(node.proc, node.log)
    with contextlib.closing(sqlite3.connect(node.state)) as db:
        db.execute("UPDATE runs SET state = '{not json' WHERE run = 'many_names'")
        db.commit()
    assert not list(node.root.glob("*.lock")) and not list(node.state.parent.glob("*.lock"))
    node.start()
    node.alive(diverging=False)  # (shown again at its next sample)
    errors = {"operation": "restore", "error": "unparseable_row"}
    assert metric(node.port, "lrwatch_state_errors_total", **errors) == 1
    assert node.logged("runs row many_names unparseable") == 1
    rows = {row["run"]: row for row in testing.status(node.port)["runs"]}
    assert rows["legit"]["last_step"] == 43  # restored
    diverging_jsonl(node.root / "legit" / "metrics.jsonl", start=44)
    testing.wait_for(lambda: diverged(node.port), 30, "the divergence after the restart")
    # No lock file to delete, and a second daemon over the same root or state is refused.
    other = node.root.parent / "other-root"
    other.mkdir()
    for root, state in ((node.root, node.root.parent / "other.sqlite"), (other, node.state)):
        argv = ["run", "--logdir", str(root), "--state", str(state), "--metrics-port", "0"]
        answer = cli(*argv)
        assert answer.returncode == 2 and "in use by another lrwatch daemon" in answer.stderr
    node.alive()
    node.records()  # --log-format json: every line so far, tracebacks included, is JSON


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb.write_text("\n".join(lines) + "\n")
    assert len(bomb.read_bytes()) < 400
    started = time.monotonic()
    answer = cli("config", "check", str(bomb))
    assert answer.returncode == 1 and "expands to more than" in answer.stderr
    assert time.monotonic() - started < 15


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)])
    return done.returncode == 0


def test_a_full_disk_under_the_state_file_is_counted_not_fatal(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "4m"):
        pytest.skip("needs to mount a small tmpfs (root)")
    root, log, config = tmp_path / "runs", tmp_path / "daemon.log", tmp_path / "c.yaml"
    root.mkdir()
    config.write_text("checkpoint_interval_seconds: 1\n")
    state = disk / "state.sqlite"
    port = free_port()
    proc = testing.spawn(root, state, port, log, "--config", str(config), "--log-format", "json")
    try:
        testing.wait_ready(proc, port, log)
        filler = disk / "filler"
        with filler.open("wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        diverging_jsonl(root / "legit" / "metrics.jsonl")
        testing.wait_for(lambda: diverged(port), 30, "the divergence, disk full")
        errors = {"operation": "commit", "error": "full"}
        testing.wait_for(lambda: metric(port, "lrwatch_state_errors_total", **errors) >= 1, 20, "")
        text = log.read_text()
        assert "database or disk is full" in text and "cannot rollback" not in text
        assert proc.poll() is None
        filler.unlink()  # space again: the next checkpoint saves what was kept in memory

        def saved() -> bool:
            with contextlib.closing(sqlite3.connect(state)) as db:
                return db.execute("SELECT COUNT(*) FROM runs WHERE run='legit'").fetchone()[0]

        testing.wait_for(saved, 20, "the checkpoint once there is space")
        testing.stop(proc, log)
        proc = testing.spawn(root, state, port, log, "--config", str(config))
        testing.wait_ready(proc, port, log)
        assert testing.status(port)["runs"][0]["last_step"] == 43
        testing.stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_any_error_of_one_run_quarantines_that_run_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, to plant a bug: whatever one run's analysis raises, that run is set aside
    (logged once, counted, shown in status) and the others are watched on."""
    from lrwatch.analysis.monitor import RunMonitor
    from tests.integration import inproc

    observe = RunMonitor.observe

    def buggy(self: RunMonitor, *args: object, **kwargs: object) -> object:
        if self.run == "boom":
            raise RuntimeError("a bug that only this run's data reaches")
        return observe(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RunMonitor, "observe", buggy)
    cfg = inproc.config(tmp_path)
    assert cfg.logdir is not None
    diverging_jsonl(cfg.logdir / "boom" / "metrics.jsonl")
    with inproc.running(cfg) as daemon:
        diverging_jsonl(cfg.logdir / "legit" / "metrics.jsonl")
        active = {"run": "legit", "kind": "divergence"}
        inproc.wait_for(lambda: inproc.value(daemon, "lrwatch_finding_active", **active) == 1)
        errors = {"stage": "ingest", "error": "RuntimeError"}
        assert inproc.value(daemon, "lrwatch_run_errors_total", **errors) == 1
        assert inproc.value(daemon, "lrwatch_runs", state="quarantined") in (0, 1)
        diverging_jsonl(cfg.logdir / "boom" / "metrics.jsonl", start=44)  # not read again
        time.sleep(1.5)
        assert inproc.value(daemon, "lrwatch_run_errors_total", **errors) == 1
        assert inproc.value(daemon, "lrwatch_runs", state="quarantined") == 1
        rows = {row["run"]: row for row in daemon.status()["runs"]}
        assert rows["boom"]["state"] == "quarantined" and "RuntimeError" in rows["boom"]["error"]
        assert rows["legit"]["state"] == "active"
