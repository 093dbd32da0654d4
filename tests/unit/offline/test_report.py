"""``lrwatch report`` on a real run directory: the demo job, really trained (no pacing), diverging
to NaN, with a command and its ack in the channel as the daemon and the hook write them."""

from __future__ import annotations

import re
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from typer.testing import CliRunner

from lrwatch.cli import app
from lrwatch.config import Config
from lrwatch.demo.train import train
from lrwatch.offline.report import build_figure, collect, render_html, render_png, write_report
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command, Role

REASON = "divergence at step 331: LR x0.1"
HOSTILE = "manual <script>alert(1)</script> by cli:me"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's job (warm-up to an LR 10x too high) runs to NaN in about a second."""
    run = tmp_path_factory.mktemp("runs") / "exp1"
    result = train(run, use_lrwatch=True, steps=450, step_time=0.0)
    assert result["final_loss"] != result["final_loss"]  # NaN: it diverged, nobody helped
    cid = channel.channel_id(run)
    assert cid is not None
    now = time.time()
    for seq, factor, reason in ((1, 0.1, REASON), (2, 0.5, HOSTILE), (3, 0.5, "pending one")):
        command = Command("exp1", seq, Action(ActionType.SCALE_LR, factor), reason, now)
        channel.write_command(run, command, channel=cid, key=None)
    channel.write_ack(run, Ack(1, AckStatus.APPLIED, 336, 0.1, (0.25,), "scaled", now))
    channel.write_ack(run, Ack(2, AckStatus.REJECTED, 400, 0.1, (0.25,), "below min_lr", now))
    return run


def test_collect_gathers_metrics_findings_and_every_action(run_dir: Path) -> None:
    report = collect(run_dir, Config())
    assert report.name == "exp1"
    assert {Role.LOSS, Role.LR} <= set(report.series)
    assert any(f.finding.kind == "divergence" for f in report.findings)
    first = min(f.finding.step for f in report.findings if f.finding.kind == "divergence")
    nan_at = next(s for s, v in report.series[Role.LOSS][1] if v != v)
    assert first < nan_at  # lrwatch saw it coming
    by_seq = {a.seq: a for a in report.adjustments}
    assert (by_seq[1].reason, by_seq[1].status, by_seq[1].step) == (REASON, "applied", 336)
    assert by_seq[2].status == "rejected"
    assert (by_seq[3].status, by_seq[3].step) == ("pending", None)


def test_the_figure_shows_what_happened(run_dir: Path) -> None:
    fig = build_figure(collect(run_dir, Config()))
    try:
        loss_ax, lr_ax = fig.axes[0], fig.axes[1]
        assert loss_ax.get_ylabel() == "loss" and lr_ax.get_ylabel() == "lr"
        assert loss_ax.get_yscale() == "log"  # the loss spans decades on its way to NaN
        labels = [t.get_text() for t in loss_ax.get_legend().get_texts()]
        assert {"divergence", "non-finite", "LR change (ack)", "command refused"} <= set(labels)
        assert any(ax.get_ylabel() == "lrwatch LR factor" for ax in fig.axes)
        notes = " ".join(t.get_text() for t in fig.texts)
        assert f"#1 step 336: applied x0.1, LR factor now 0.1 <- {REASON}" in notes
        assert "#2 step 400: rejected" in notes
    finally:
        plt.close(fig)


def test_png_and_self_contained_html(run_dir: Path, tmp_path: Path) -> None:
    png = write_report(run_dir, tmp_path / "r.png", html=False, config=Config())
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = write_report(run_dir, None, html=True, config=Config()).read_text()
    assert (run_dir / "lrwatch-report.html").exists()
    assert "data:image/png;base64," in page
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)
    assert "<h2>Findings" in page and ">divergence<" in page
    assert f"<td>{REASON}</td>" in page and "<td>applied</td>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # reasons are escaped


def test_a_run_with_findings_but_no_actions(tmp_path: Path) -> None:
    run = tmp_path / "plain"
    run.mkdir()
    lines = [f'{{"step": {i}, "loss": {1.0 / (i + 1)}}}' for i in range(50)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    report = collect(run, Config())
    assert report.adjustments == []
    assert render_png(report).startswith(b"\x89PNG")
    assert "<h2>Actions (0)</h2>" in render_html(report, b"")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        collect(tmp_path / "missing", Config())
    with pytest.raises(ValueError, match="holds no JSONL, CSV or TensorBoard log"):
        collect(tmp_path, Config())


def test_the_cli_writes_the_report(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("<!doctype html>")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2
