"""``lrwatch status`` against a real ``lrwatch run`` daemon process watching a real job.

The job is the demo's (an LR warm-up to a peak 10x too high), run unpaced to NaN just before the
daemon starts, so its hook still counts as alive (its last heartbeat is seconds old): the daemon
reads the whole log at start-up, finds the divergence and sends a cut the finished job never
answers — the same state every time, unlike a race between a job and a daemon. The table must
show all of that, once and in --watch mode, and the daemon must have written its decisions as
TensorBoard events beside the job's log.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from lrwatch import cli
from lrwatch.sinks.tensorboard import TAG_DECISIONS, TAG_LR_SCALE
from lrwatch.testing import free_port

pytestmark = pytest.mark.slow


def status_json(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("status")
    root = tmp / "runs"
    root.mkdir()
    port = free_port()
    job = [sys.executable, "-m", "lrwatch.demo.train", str(root / "exp1"), "--step-time", "0"]
    subprocess.run(job, check=True, timeout=120)
    log = (tmp / "daemon.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "lrwatch", "run", "--logdir", str(root)),
            *("--metrics-port", str(port), "--state", str(tmp / "state.sqlite")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status_json(port)
                break
            except OSError:
                assert proc.poll() is None, (tmp / "daemon.log").read_text()
                assert time.monotonic() < deadline, "daemon not up in 30 s"
                time.sleep(0.1)
        deadline = time.monotonic() + 20
        while not any(
            r["last_step"] == 499 and r["unacked_commands"] for r in status_json(port)["runs"]
        ):
            assert time.monotonic() < deadline, status_json(port)
            time.sleep(0.2)
        yield port, root
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that no cell is folded, whatever the test runner's is."""
    monkeypatch.setattr(cli.console, "width", 200)


def test_status_shows_the_run_as_a_table(daemon: tuple[int, Path], wide: None) -> None:
    port, root = daemon
    result = CliRunner().invoke(cli.app, ["status", "--port", str(port)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"lrwatch (act mode) watching {root.resolve()}" in out
    row = next(line for line in out.splitlines() if "exp1" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[1:3] == ["exp1", "active"]
    assert cells[3] == "499"
    assert cells[4] == "nan"  # the last loss, as it is
    assert cells[7] == "alive"
    assert cells[8].startswith("divergence")  # (other kinds may open on the way to NaN)
    assert cells[9].startswith("#1")  # the cut the finished job never answered
    assert "1 run(s): 1 active" in out


def test_status_json_is_the_api_answer(daemon: tuple[int, Path]) -> None:
    port, _ = daemon
    result = CliRunner().invoke(cli.app, ["status", "--port", str(port), "--json"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.output)["runs"]
    assert run["run"] == "exp1" and run["loss"] == "nan"  # strict JSON: spelled as replay does
    assert math.isnan(float(run["loss"]))


def test_watch_refreshes_then_stops_after_count(daemon: tuple[int, Path], wide: None) -> None:
    port, _ = daemon
    started = time.monotonic()
    result = CliRunner().invoke(
        cli.app, ["status", "--port", str(port), "--watch", "--interval", "0.2", "--count", "3"]
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.4  # two pauses between three refreshes
    assert "exp1" in result.output and "divergence" in result.output


def test_watch_without_a_daemon_keeps_trying_then_fails(wide: None) -> None:
    args = ["status", "--port", str(free_port()), "--watch", "--interval", "0.1", "--count", "2"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    assert "no daemon at" in result.output and "retrying every 0.1 s" in result.output


def test_the_daemon_wrote_its_decisions_for_tensorboard(daemon: tuple[int, Path]) -> None:
    _, root = daemon
    acc = EventAccumulator(str(root / "exp1" / "lrwatch"))
    acc.Reload()
    assert TAG_LR_SCALE in acc.Tags()["scalars"]
    assert "lrwatch/finding/divergence" in acc.Tags()["scalars"]
    text = " ".join(
        s.decode() for e in acc.Tensors(TAG_DECISIONS) for s in e.tensor_proto.string_val
    )
    assert "**divergence**" in text and "command #1 sent" in text
