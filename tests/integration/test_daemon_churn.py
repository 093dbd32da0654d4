"""File churn under a running daemon: torn lines, copytruncate and rename rotation, a file replaced
under its name, a run directory deleted and recreated, garbage lines, a corrupt TensorBoard
record, a restarted writer's new event file going back in time. Each is handled, counted in
``lrwatch_source_errors_total{format,error}``, logged once, and never stops the daemon."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from tests.integration import inproc

pytestmark = pytest.mark.slow


def line(step: int, t0: float = 1.7e9, loss: float | None = None) -> str:
    value = 1.0 / (step + 1) if loss is None else loss
    return json.dumps({"step": step, "time": t0 + step, "loss": value}) + "\n"


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_jsonl_churn_is_counted_logged_once_and_survived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lrwatch")
    cfg = inproc.config(tmp_path)
    run_dir = cfg.logdir / "exp"  # type: ignore[operator]
    run_dir.mkdir()
    log = run_dir / "metrics.jsonl"
    log.write_text("".join(line(s) for s in range(10)))
    with inproc.running(cfg) as daemon:

        def last_step() -> float | None:
            return inproc.value(daemon, "lrwatch_run_last_step", run="exp")

        def errors(error: str) -> float:
            got = inproc.value(daemon, "lrwatch_source_errors_total", format="jsonl", error=error)
            return got or 0.0

        def reach(step: int) -> None:
            inproc.wait_for(lambda: last_step() == step, what=f"step {step}", show=last_step)

        reach(9)
        # A torn last line is "not yet": nothing read, nothing counted, until it is whole.
        append(log, line(10)[:15])
        append(log, line(10)[15:])
        reach(10)
        # copytruncate, twice, seen before the writer goes on (seen after the file regrew past
        # the offset, it is a rewrite: the bytes before the offset changed).
        for step in (11, 12):
            shutil.copy(log, run_dir / "metrics.jsonl.1")
            with log.open("r+") as f:
                f.truncate(0)
            count = step - 10
            inproc.wait_for(lambda n=count: errors("truncations") == n, what="the truncation")
            append(log, line(step))
            reach(step)
        # Rename rotation: the old file moves away, a new one takes the name.
        os.rename(log, run_dir / "metrics.jsonl.2")
        log.write_text(line(13) + line(14))
        reach(14)
        # Replaced under its name by the whole history and more (a sync tool, say): the
        # repeated steps are repeats, not a rewind; the new ones are read.
        tmp = run_dir / ".metrics.tmp"
        tmp.write_text("".join(line(s) for s in range(21)))
        os.replace(tmp, log)
        reach(20)
        assert errors("replacements") == 2
        # Garbage lines are skipped and counted.
        append(log, "not json\n" + '{"no": "step"}\n' + line(21))
        reach(21)
        assert errors("corrupt_records") == 2
        # The run directory deleted and recreated: a new training from step 0.
        shutil.rmtree(run_dir)
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text("".join(line(s, t0=1.8e9) for s in range(6)))
        reach(5)
        run = daemon.book.runs["exp"]
        assert run.monitor.series["loss"].rewinds == 1
        assert not inproc.value(daemon, "lrwatch_findings_total", run="exp", kind="divergence")

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("truncations" in m for m in warnings) == 1, warnings  # logged once per file
    assert sum("corrupt records" in m for m in warnings) == 1, warnings
    assert any("went back from step 21 to 0" in m for m in warnings), warnings
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def write_tb(log_dir: Path, steps: range, t0: float) -> Path:
    """A real SummaryWriter file (its own new file, as a restarted writer makes)."""
    before = set(log_dir.glob("*tfevents*"))
    writer = SummaryWriter(str(log_dir))
    for step in steps:
        writer.add_scalar("loss", 3 * math.exp(-step / 100) + 0.1, step, walltime=t0 + step)
    writer.close()
    [path] = set(log_dir.glob("*tfevents*")) - before
    return path


def test_tensorboard_restart_and_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = inproc.config(tmp_path)
    run_dir = cfg.logdir / "tb"  # type: ignore[operator]
    run_dir.mkdir()
    first = write_tb(run_dir, range(400), t0=1.7e9)
    with inproc.running(cfg) as daemon:

        def last_step() -> float | None:
            return inproc.value(daemon, "lrwatch_run_last_step", run="tb")

        inproc.wait_for(lambda: last_step() == 399, what="the first file", show=last_step)
        # The job restarts from its checkpoint at step 200: a new event file, steps back in
        # time, a loss 3x higher than at 399. A rewind: no divergence, no plateau.
        write_tb(run_dir, range(200, 450), t0=1.8e9)
        inproc.wait_for(lambda: last_step() == 449, what="the restarted writer", show=last_step)
        found = daemon.store.findings("tb")
        assert not [f for f in found if f["kind"] in ("divergence", "plateau", "drift")], found
        assert daemon.book.runs["tb"].monitor.series["loss"].rewinds == 1
        assert inproc.value(daemon, "lrwatch_rewinds_total", run="tb") == 1  # countably
        # A record whose CRC fails (bit rot in the first file, appended records after it):
        # skipped and counted, the rest read.
        tail = write_tb(tmp_path, range(450, 460), t0=1.9e9).read_bytes()
        damaged = bytearray(tail)
        damaged[len(damaged) // 2] ^= 0xFF
        with first.open("ab") as f:
            f.write(bytes(damaged))
        inproc.wait_for(
            lambda: (
                inproc.value(
                    daemon,
                    "lrwatch_source_errors_total",
                    format="tensorboard",
                    error="corrupt_records",
                )
                == 1
            ),
            what="the corrupt record to be counted",
        )
        inproc.wait_for(lambda: last_step() == 459, what="the records after the damage")
        # A half-written record is "not yet": not read, not counted, until it is whole.
        more = write_tb(tmp_path / "more", range(460, 462), t0=1.9e9).read_bytes()
        with first.open("ab") as f:
            f.write(more[:-10])
        time.sleep(0.3)
        assert last_step() == 460
        with first.open("ab") as f:
            f.write(more[-10:])
        inproc.wait_for(lambda: last_step() == 461, what="the completed record")
        assert (
            inproc.value(
                daemon, "lrwatch_source_errors_total", format="tensorboard", error="corrupt_records"
            )
            == 1
        )
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
