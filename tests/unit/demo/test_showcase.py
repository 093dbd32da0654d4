"""``lrwatch demo``'s screens: what a new user sees first, and the summary at 80 columns."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lrwatch.demo import showcase
from lrwatch.demo.showcase import RESCUED, UNAIDED, JobView


def render(renderable: object, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    out = console.file.getvalue()
    assert isinstance(out, str)
    return out


def test_the_first_frame_shows_jobs_starting_not_step_minus_one(tmp_path: Path) -> None:
    jobs = {name: JobView(tmp_path / name / "metrics.jsonl") for name in (RESCUED, UNAIDED)}
    frame = render(showcase._view(jobs, [], "http://127.0.0.1:1"))
    assert "-1" not in frame and "nan" not in frame
    assert frame.count("starting") == 2
    # Once a line is logged, the step and loss are the job's.
    (tmp_path / RESCUED).mkdir()
    line = {"step": 0, "loss": 2.5, "lr": 0.01}
    (tmp_path / RESCUED / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    jobs[RESCUED].refresh()
    row = next(r for r in render(showcase._view(jobs, [], "x")).splitlines() if RESCUED in r)
    assert "│ 0 " in row and "2.5" in row


def test_the_summary_keeps_run_names_whole_at_80_columns(tmp_path: Path) -> None:
    jobs = {name: JobView(tmp_path / name / "metrics.jsonl") for name in (RESCUED, UNAIDED)}
    result = {"final_loss": 0.1, "val_loss": 0.2, "val_accuracy": 0.9, "lr_scale": 0.1}
    for name in jobs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(json.dumps(result))
    console = Console(width=80, file=io.StringIO(), color_system=None)
    showcase._summary(console, tmp_path, jobs, "http://127.0.0.1:1")
    out = console.file.getvalue()
    assert f"│ {RESCUED} " in out and f"│ {UNAIDED} " in out


def test_the_opening_line_says_what_is_about_to_happen_in_80_columns() -> None:
    line = showcase.opening_line()
    assert len(line) <= 80 and "\n" not in line
    assert line.startswith("lrwatch demo:") and "diverge" in line and RESCUED in line


@pytest.mark.slow
def test_the_demo_opens_with_that_line(tmp_path: Path) -> None:
    # A short real demo (a daemon and two real jobs), through the console script's module.
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "lrwatch", "demo", "--steps", "60", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == showcase.opening_line()
    assert "Traceback" not in result.stderr
    assert f"│ {RESCUED} " in result.stdout and f"│ {UNAIDED} " in result.stdout
