"""The daemon's own lifecycle: SIGTERM (prompt, state flushed, JSON logs), a second signal, SIGHUP
reloading the config without losing state, runs going stale, finished and forgotten, one daemon
per log root and per state file."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from lrwatch import testing
from lrwatch.daemon.service import Daemon
from lrwatch.daemon.store import StateInUse
from lrwatch.protocol import channel
from lrwatch.protocol.types import Heartbeat
from lrwatch.testing import free_port
from tests.integration import inproc

pytestmark = pytest.mark.slow


def lines(steps: range, t0: float = 1.7e9) -> str:
    return "".join(
        json.dumps({"step": s, "time": t0 + s, "loss": 1.0 / (s + 1)}) + "\n" for s in steps
    )


def test_sigterm_stops_within_5s_with_state_flushed_and_json_logs(tmp_path: Path) -> None:
    root, state, log = tmp_path / "runs", tmp_path / "state.sqlite", tmp_path / "daemon.log"
    (root / "a").mkdir(parents=True)
    metrics = root / "a" / "metrics.jsonl"
    metrics.write_text(lines(range(100)))
    port = free_port()
    proc = testing.spawn(root, state, port, log, "--log-format", "json")
    try:
        testing.wait_ready(proc, port, log)
        metrics.open("a").write(lines(range(100, 150)))
        testing.wait_for(
            lambda: testing.scrape(port).get('lrwatch_run_last_step{run="a"}') == 149,
            10,
            "the daemon to catch up",
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Flushed: the WAL folded into the database file, every offset committed.
    wal = state.with_name(state.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    db = sqlite3.connect(state)
    [(saved,)] = db.execute("SELECT state FROM readers").fetchall()
    assert json.loads(saved)["offset"] == metrics.stat().st_size
    db.close()
    # Structured logs: one JSON object per line, from start-up to "stopped".
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    assert records[-1]["message"] == "stopped"


def test_a_second_signal_forces_the_exit(tmp_path: Path) -> None:
    """The handlers as installed in the main thread (here, pytest's): the first signal asks the
    loop to stop, the second raises SystemExit wherever the daemon is stuck."""
    assert threading.current_thread() is threading.main_thread()
    daemon = Daemon(inproc.config(tmp_path), registry=CollectorRegistry())
    previous = daemon._install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between two bytecodes of this thread
        assert daemon._stop.is_set()
        with pytest.raises(SystemExit, match="forced exit"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        daemon.shutdown()


def test_sighup_reloads_the_config_and_keeps_every_run(tmp_path: Path) -> None:
    root, state, log = tmp_path / "runs", tmp_path / "state.sqlite", tmp_path / "daemon.log"
    (root / "a").mkdir(parents=True)
    (root / "a" / "metrics.jsonl").write_text(lines(range(300)))
    config = tmp_path / "lrwatch.yaml"
    config.write_text("mode: act\npolicy: {cooldown_steps: 50}\n")
    port = free_port()
    proc = testing.spawn(root, state, port, log, "--config", str(config))
    try:
        testing.wait_ready(proc, port, log)
        testing.wait_for(lambda: testing.status(port)["runs"], 10, "the run")
        before = testing.status(port)["runs"]
        config.write_text("mode: observe\npolicy: {cooldown_steps: 500}\n")
        proc.send_signal(signal.SIGHUP)
        testing.wait_for(lambda: testing.status(port)["mode"] == "observe", 10, "the reload")
        assert testing.status(port)["runs"] == before  # same runs, same state
        # A broken file is refused; the running config stays.
        config.write_text("mode: sideways\n")
        proc.send_signal(signal.SIGHUP)
        testing.wait_for(lambda: "reload refused" in log.read_text(), 10, "the refusal")
        assert testing.status(port)["mode"] == "observe"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "mode: Input should be 'act' or 'observe' (got 'sideways')" in log.read_text()


def beat(run_dir: Path) -> None:
    now = time.time()
    channel.write_heartbeat(run_dir, Heartbeat(os.getpid(), "host", 9, 1.0, 0, (0.1,), now))


def test_runs_go_stale_stall_finish_and_leave_metrics(tmp_path: Path) -> None:
    cfg = inproc.config(
        tmp_path, stale_after_seconds=0.5, run_ttl_seconds=2.0, heartbeat_timeout_seconds=1.0
    )
    root = cfg.logdir
    assert root is not None
    for name in ("hooked", "plain"):
        (root / name).mkdir()
        (root / name / "metrics.jsonl").write_text(lines(range(10)))
    beat(root / "hooked")
    with inproc.running(cfg) as daemon:

        def runs(state: str) -> float | None:
            return inproc.value(daemon, "lrwatch_runs", state=state)

        def stall(run: str = "hooked") -> float | None:
            return inproc.value(daemon, "lrwatch_finding_active", run=run, kind="stall")

        def keep_beating() -> bool:
            beat(root / "hooked")
            return stall() == 1

        # Both silent: the hooked run (its job steps, its logs stopped) stalls; the plain one,
        # with no hook to say the job is alive, is finished.
        inproc.wait_for(keep_beating, 5, "the stall", show=lambda: daemon.status())
        assert runs("stale") == 1 and runs("finished") == 1
        assert inproc.value(daemon, "lrwatch_findings_total", run="hooked", kind="stall") == 1
        assert inproc.value(daemon, "lrwatch_findings_total", run="plain", kind="stall") is None
        # Data again: the stall is over, at once.
        (root / "hooked" / "metrics.jsonl").open("a").write(lines(range(10, 12)))
        inproc.wait_for(lambda: stall() == 0, 2, "the end of the stall")
        # The plain run leaves /metrics after the TTL; the hooked one stays while it beats.
        inproc.wait_for(
            lambda: (
                beat(root / "hooked")
                or inproc.value(daemon, "lrwatch_run_last_step", run="plain") is None
            ),
            10,
            "the plain run to expire",
        )
        assert [r["run"] for r in daemon.status()["runs"]] == ["hooked"]
    db = sqlite3.connect(cfg.state)  # type: ignore[arg-type]
    stalls = db.execute("SELECT step, severity FROM findings WHERE kind = 'stall' ORDER BY id")
    # At the run's last step when it stalled; the silence while the plain run expired (the
    # test kept the hook beating) was a second episode.
    assert stalls.fetchall() in ([(9, "warning")], [(9, "warning"), (11, "warning")])
    assert [r for (r,) in db.execute("SELECT run FROM runs")] == ["hooked"]
    assert db.execute("SELECT COUNT(*) FROM readers").fetchone() == (2,)  # files still there
    db.close()


def test_one_daemon_per_log_root_and_per_state_file(tmp_path: Path) -> None:
    """Two daemons over one root would both write commands into the same channels; two over one
    state file would corrupt each other's offsets. Either is refused at start, naming why."""
    cfg = inproc.config(tmp_path)
    with inproc.running(cfg):
        with pytest.raises(StateInUse, match=r"log root .* in use by another lrwatch daemon"):
            Daemon(cfg.model_copy(update={"state": tmp_path / "other.sqlite"})).acquire()
        other_root = tmp_path / "elsewhere"
        other_root.mkdir()
        with pytest.raises(StateInUse, match=r"state file .* in use by another lrwatch daemon"):
            Daemon(cfg.model_copy(update={"logdir": other_root})).acquire()
    with inproc.running(cfg):  # and the locks went with the daemon
        pass


def test_scale_out_is_a_daemon_per_root_each_exporting_its_own_runs(tmp_path: Path) -> None:
    """The supported scale-out: one daemon per node or log root, each with its own state and
    port; Prometheus scrapes them all (the ``instance`` label tells them apart)."""
    configs = []
    for node in ("node1", "node2"):
        (tmp_path / node).mkdir()
        cfg = inproc.config(tmp_path / node)
        assert cfg.logdir is not None
        (cfg.logdir / f"job-on-{node}").mkdir()
        (cfg.logdir / f"job-on-{node}" / "metrics.jsonl").write_text(lines(range(5)))
        configs.append(cfg)
    with inproc.running(configs[0]) as first, inproc.running(configs[1]) as second:
        for daemon, mine, theirs in ((first, "node1", "node2"), (second, "node2", "node1")):
            inproc.wait_for(
                lambda d=daemon, m=mine: (
                    inproc.value(d, "lrwatch_run_last_step", run=f"job-on-{m}") == 4
                ),
                what=f"{mine}'s run",
            )
            assert inproc.value(daemon, "lrwatch_run_last_step", run=f"job-on-{theirs}") is None


def test_health_readiness_and_ingest_metrics_over_http(tmp_path: Path) -> None:
    cfg = inproc.config(tmp_path)
    root = cfg.logdir
    assert root is not None
    (root / "a").mkdir()
    (root / "a" / "metrics.jsonl").write_text(lines(range(50), t0=time.time() - 100))
    daemon = Daemon(cfg, registry=CollectorRegistry())
    daemon.acquire()
    daemon.server.start()
    try:
        url = daemon.server.url
        assert urllib.request.urlopen(f"{url}/healthz").read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/readyz")
        assert err.value.code == 503  # alive, not ready: state not restored yet
    finally:
        daemon.server.stop()
        daemon.shutdown()
    with inproc.running(cfg) as daemon:
        url = daemon.server.url
        assert urllib.request.urlopen(f"{url}/readyz").read() == b"ready\n"
        text = urllib.request.urlopen(f"{url}/metrics").read().decode()
        assert 'lrwatch_build_info{python="' in text and 'version="' in text
        samples = {
            line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert samples['lrwatch_ingested_samples_total{format="jsonl"}'] == 50
        assert samples["lrwatch_ingest_lag_seconds_count"] >= 1  # one per batch read
        assert samples['lrwatch_ingest_lag_seconds_bucket{le="60.0"}'] == 0  # 100 s old
        assert samples['lrwatch_runs{state="active"}'] == 1
        assert samples['lrwatch_metric_value{metric="loss",run="a"}'] == pytest.approx(1 / 50)
