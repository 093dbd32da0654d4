"""What a real ``lrwatch run`` daemon says about runs it cannot fully read, through
``lrwatch status``, /api/status and /metrics: a run without a recognised loss, records skipped
as corrupt, run names that are markup or terminal escapes, a NaN loss, a drift that the
pipeline explained away (so never raised) while its detector still holds it, and a plateau
the detector calls on a loss still known to improve."""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lrwatch import cli, testing
from lrwatch.sources.boundary import escape_name
from lrwatch.testing import free_port
from tests.unit.curves import tenfold_fall

pytestmark = pytest.mark.slow

CORPUS = Path(__file__).resolve().parents[2] / "benchmarks" / "detection" / "corpus"
WEIRD = "we[/]ird"  # a directory `we[` holding `]ird`: markup to rich
ESCAPE = "\x1b[31mred\x1b]0;owned\x07"  # a colour and a window title, in a directory name
LONG = 12_000  # steps of the two long runs, one still learning slowly, one stopped


def write(path: Path, records: list[dict[str, Any]], garbage: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + ["{torn"] * garbage
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("silent")
    root = tmp / "runs"
    losses = [1.0 / (i + 1) for i in range(60)] + [math.nan]
    good = [{"step": i, "loss": v} for i, v in enumerate(losses)]
    write(root / "good" / "metrics.jsonl", good, garbage=2)
    write(root / "eval" / "metrics.jsonl", [{"step": i, "acc": 0.5, "bleu": 20} for i in range(30)])
    write(root / WEIRD / "metrics.jsonl", [{"step": i, "loss": 1.0} for i in range(30)])
    write(root / ESCAPE / "metrics.jsonl", [{"step": i, "loss": 1.0} for i in range(30)])
    sgdr = (CORPUS / "healthy" / "char_lm_sgdr_momentum_s0" / "metrics.jsonl").read_text()
    (root / "sgdr").mkdir()
    (root / "sgdr" / "metrics.jsonl").write_text("\n".join(sgdr.splitlines()[:401]) + "\n")
    for run, creep in (("learning", 1e-6), ("stopped", 0.0)):
        long = [{"step": i, "loss": v} for i, v in enumerate(tenfold_fall(creep, LONG))]
        write(root / run / "metrics.jsonl", long)
    port, log = free_port(), tmp / "daemon.log"
    proc = testing.spawn(root, tmp / "state.sqlite", port, log, "--mode", "observe")
    try:
        testing.wait_ready(proc, port, log)
        testing.wait_for(
            lambda: (
                {r["last_step"] for r in testing.status(port)["runs"]} == {60, 29, 400, LONG - 1}
            ),
            20,
            "every run read to its end",
            show=lambda: testing.status(port),
        )
        yield port
    finally:
        testing.stop(proc, log)


def strict_status(port: int) -> dict[str, Any]:
    """/api/status through a parser that refuses NaN and Infinity, as most outside JSON does."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    answer: dict[str, Any] = json.loads(testing.get(port, "/api/status"), parse_constant=refuse)
    return answer


def test_api_status_is_strict_json_with_what_each_run_lacks(daemon: int) -> None:
    runs = {r["run"]: r for r in strict_status(daemon)["runs"]}
    assert runs["good"]["loss"] == "nan"  # spelled as replay spells it
    assert (runs["good"]["loss_metric"], runs["good"]["skipped_records"]) == ("loss", 2)
    assert runs["eval"]["loss_metric"] is None and runs["eval"]["loss"] is None
    assert runs["eval"]["metrics"] == ["acc", "bleu"]
    # Control characters come escaped, as everywhere (boundary.escape_name): lossless, inert.
    assert {WEIRD, escape_name(ESCAPE)} <= runs.keys()


def test_status_says_what_it_could_not_read(daemon: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 250)
    result = CliRunner().invoke(cli.app, ["status", "--port", str(daemon)])
    assert result.exit_code == 0, result.output  # no MarkupError on we[/]ird
    out = result.output
    eval_row = next(line for line in out.splitlines() if "│ eval" in line)
    assert "no loss" in eval_row
    assert (
        "run eval: no loss recognised, not judged (metrics found: acc, bleu); "
        "name the loss in a config file (--config): roles: {loss: [NAME, loss]}"
    ) in out
    assert "run good: 2 corrupt record(s) skipped in its logs" in out
    assert f"│ {WEIRD} " in out
    # The escape sequences are shown, not obeyed.
    assert "\x1b" not in out and "\x07" not in out
    assert "│ \\x1b[31mred\\x1b]0;owned\\x07 " in out


def test_metrics_show_which_runs_have_no_loss(daemon: int) -> None:
    scraped = testing.scrape(daemon)
    assert scraped['lrwatch_run_loss_role{run="eval"}'] == 0
    assert scraped['lrwatch_run_loss_role{run="good"}'] == 1
    assert scraped['lrwatch_run_loss_role{run="sgdr"}'] == 1


def test_a_drift_never_raised_is_not_shown_active(daemon: int) -> None:
    # The schedule's warm restart explains the rise (see detectors/test_drift.py): no finding, and
    # so no active drift in status or on /metrics, though the detector itself still holds one.
    (sgdr,) = [r for r in strict_status(daemon)["runs"] if r["run"] == "sgdr"]
    assert sgdr["last_step"] == 400
    assert "drift" not in sgdr["active_findings"]
    assert testing.scrape(daemon).get('lrwatch_finding_active{kind="drift",run="sgdr"}', 0) == 0


def test_naming_the_loss_in_the_config_and_reloading_clears_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write(root / "eval" / "metrics.jsonl", [{"step": i, "objective": 1.0} for i in range(30)])
    write(root / "done" / "metrics.jsonl", [{"step": i, "loss": 1.0} for i in range(30)])
    config = tmp_path / "lrwatch.yaml"
    config.write_text("mode: observe\n")
    port, log = free_port(), tmp_path / "daemon.log"
    proc = testing.spawn(root, tmp_path / "state.sqlite", port, log, "--config", config)
    name = 'lrwatch_run_loss_role{run="eval"}'
    try:
        testing.wait_ready(proc, port, log)
        done = 'lrwatch_run_loss_role{run="done"}'
        testing.wait_for(
            lambda: (testing.scrape(port).get(name), testing.scrape(port).get(done)) == (0, 1),
            20,
            "one run unjudged, one judged",
        )
        config.write_text("mode: observe\nroles: {loss: [objective, loss]}\n")
        proc.send_signal(signal.SIGHUP)
        testing.wait_for(lambda: "config reloaded" in log.read_text(), 20, "the reload")
        time.sleep(1.5)  # a tick or so: the finished run, rebuilt by the reload, keeps its 1
        assert testing.scrape(port)[done] == 1
        # New roles restart the run's detectors: they judge what the run logs from now on.
        with (root / "eval" / "metrics.jsonl").open("a") as out:
            out.write(json.dumps({"step": 30, "objective": 0.9}) + "\n")
        testing.wait_for(lambda: testing.scrape(port).get(name) == 1, 20, "the loss recognised")
        row = next(r for r in strict_status(port)["runs"] if r["run"] == "eval")
        assert (row["loss_metric"], row["loss"]) == ("objective", 0.9)
    finally:
        testing.stop(proc, log)


def test_pause_and_resume_echo_a_markup_name_as_text(daemon: int) -> None:
    for verb in ("pause", "resume"):
        result = CliRunner().invoke(cli.app, [verb, WEIRD, "--port", str(daemon)])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{WEIRD} {verb}d"


def test_a_plateau_on_a_loss_still_improving_is_reported_but_not_ongoing(daemon: int) -> None:
    # A tenfold fall, then 2 % per 20,000 steps: the plateau detector's fixed rate calls it flat
    # again and again, but the loss is known to improve, so no plateau is ongoing and the
    # LRWatchRunPlateaued alert (lrwatch_finding_active{kind="plateau"} == 1) cannot fire. The
    # same run stopped after its fall is shown on a plateau.
    scraped = testing.scrape(daemon)
    for run in ("learning", "stopped"):
        assert scraped[f'lrwatch_findings_total{{kind="plateau",run="{run}"}}'] > 0
    assert scraped.get('lrwatch_finding_active{kind="plateau",run="learning"}', 0) == 0
    assert scraped['lrwatch_finding_active{kind="plateau",run="stopped"}'] == 1
