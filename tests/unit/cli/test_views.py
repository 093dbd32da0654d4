"""The status and replay tables as text: names from files shown, never obeyed."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from lrwatch.cli.views import replay_view, status_table
from lrwatch.offline.replay import ReplayedRun


def render(renderable: Any) -> str:
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(renderable)
    out = console.file.getvalue()
    assert isinstance(out, str)
    return out


def row(run: str, **extra: Any) -> dict[str, Any]:
    base = {
        "run": run, "state": "active", "last_step": 10, "loss": 0.5, "lr_scale": 1.0,
        "lrs": [], "hook_alive": False, "active_findings": [], "unacked_commands": [],
        "loss_metric": "loss", "loss_inferred": False, "metrics": ["loss"], "skipped_records": 0,
    }  # fmt: skip
    return base | extra


def test_status_names_are_text_and_escapes_are_spelled_out() -> None:
    answer = {
        "root": "/runs\x1b[2J",
        "mode": "act",
        "runs": [
            row("we[/]ird", active_findings=["[bold]x"]),
            row("\x1b]0;owned\x07evil", loss="nan"),
        ],
    }
    out = render(status_table(answer))
    assert "│ we[/]ird " in out and "[bold]x" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "watching /runs\\x1b[2J" in out and "│ \\x1b]0;owned\\x07evil " in out
    evil_row = next(line for line in out.splitlines() if "evil" in line)
    cells = [cell.strip() for cell in evil_row.split("│")]
    assert cells[4] == "nan"  # /api/status spells a NaN loss "nan"


def test_status_says_which_runs_it_cannot_judge() -> None:
    answer = {
        "runs": [
            row("eval", loss=None, loss_metric=None, metrics=["acc"]),
            row("guess", loss_metric="my_loss", loss_inferred=True, skipped_records=3),
            row("old", loss=None, metrics=[]),  # a rebuilt monitor, nothing seen yet: no claim
        ]
    }
    out = render(status_table(answer))
    assert "run eval: no loss recognised, not judged (metrics found: acc)" in out
    assert "run guess: using `my_loss` as the loss (its name contains 'loss')" in out
    assert "run guess: 3 corrupt record(s) skipped in its logs" in out
    assert "run old" not in out
    eval_row = next(line for line in out.splitlines() if "│ eval" in line)
    old_row = next(line for line in out.splitlines() if "│ old" in line)
    assert "no loss" in eval_row and "no loss" not in old_row


def test_a_replayed_run_without_findings_still_says_what_was_read() -> None:
    healthy = ReplayedRun("a/train", [], ["loss"], 120, "loss", skipped={"m.jsonl": 1})
    assert render(replay_view(healthy, [])).splitlines()[:2] == [
        "run a/train: no findings",
        "  read 120 steps; loss `loss`; 1 corrupt record skipped",
    ]
    unread = ReplayedRun("eval", [], ["acc"], 30, None, first_nonfinite=("acc", 7, float("inf")))
    assert render(replay_view(unread, [])).splitlines()[:2] == [
        "run eval: not judged",
        "  read 30 steps; no loss recognised, not judged (metrics: acc); "
        "first non-finite value at step 7 (acc=inf)",
    ]
