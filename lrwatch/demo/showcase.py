"""``lrwatch demo``: the whole loop, for real, in under a minute.

Two copies of the same diverging job (``lrwatch.demo.train``) run side by side under one
watched root: one with the hook attached, one without. A real ``lrwatch run`` daemon process
watches both; in act mode it may only write to the run whose hook heartbeats, so the other one
is observed only and shows what happens without help.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lrwatch.testing import daemon_argv, free_port

RESCUED, UNAIDED = "with-lrwatch", "without-lrwatch"


@dataclass
class JobView:
    """What the demo shows of one job: the tail of its JSONL log."""

    path: Path
    offset: int = 0
    step: int = -1
    loss: float = math.nan
    lr: float = math.nan
    first_nonfinite: int | None = None
    history: list[float] = field(default_factory=list)

    def refresh(self) -> None:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            record = json.loads(line)
            self.step, self.loss, self.lr = record["step"], record["loss"], record["lr"]
            self.history.append(self.loss)
            if self.first_nonfinite is None and not math.isfinite(self.loss):
                self.first_nonfinite = self.step


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def _events(state: Path) -> list[str]:
    """Findings, commands and acks, from the daemon's own store (read-only, WAL)."""
    try:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1)
        findings = db.execute("SELECT run, step, kind, reason FROM findings ORDER BY id").fetchall()
        commands = db.execute(
            "SELECT run, seq, action, reason, ack FROM commands ORDER BY run, seq"
        ).fetchall()
        db.close()
    except sqlite3.Error:
        return []
    lines = [
        f"[yellow]{run}[/] step {step}: [bold red]{kind}[/] — {reason}"
        for run, step, kind, reason in findings
    ]
    for run, seq, action, reason, ack in commands:
        factor = json.loads(action).get("factor")
        lines.append(f"[yellow]{run}[/] command #{seq} sent: LR x{factor:g} ({reason})")
        if ack:
            a = json.loads(ack)
            lrs = ", ".join(f"{x:.4g}" for x in a["lrs"])
            lines.append(
                f"[yellow]{run}[/] ack #{seq}: [green]{a['status']}[/] at step "
                f"{a['step']}, LR factor {a['lr_scale']:g}, LR now {lrs}"
            )
    return lines


def _view(jobs: dict[str, JobView], events: list[str], url: str) -> Group:
    table = Table(title=f"lrwatch demo — daemon at {url}", title_justify="left")
    for col in ("run", "step", "loss", "LR used", "trend"):
        table.add_column(col)
    for name, job in jobs.items():
        if job.step < 0:  # nothing logged yet: no step -1, no "nan" that is not the job's
            table.add_row(name, "[dim]starting[/]", "-", "-", "")
            continue
        recent = [v for v in job.history[-40:] if math.isfinite(v)]
        trend = _sparkline(recent)
        loss = f"{job.loss:.4g}" if math.isfinite(job.loss) else f"[bold red]{job.loss}[/]"
        table.add_row(name, str(job.step), loss, f"{job.lr:.4g}", trend)
    return Group(table, Text.from_markup("\n".join(events[-8:]) or "[dim]no findings yet[/]"))


def _sparkline(values: list[float]) -> str:
    if not values:
        return ""
    logs = [math.log10(max(v, 1e-12)) for v in values]
    lo, hi = min(logs), max(logs)
    bars = "▁▂▃▄▅▆▇█"
    return "".join(bars[int((v - lo) / (hi - lo + 1e-12) * 7)] for v in logs)


def run_demo(*, steps: int, port: int, workdir: Path | None, console: Console) -> int:
    root = workdir or Path(tempfile.mkdtemp(prefix="lrwatch-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    console.print(opening_line(), highlight=False)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    state = root / "lrwatch-state.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    daemon_log = (root / "daemon.log").open("w")
    daemon = subprocess.Popen(
        daemon_argv(root, port, state),
        stdout=daemon_log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while _get(f"{url}/readyz") is None:
            if daemon.poll() is not None or time.monotonic() > deadline:
                console.print(f"[red]the daemon did not start; see {root / 'daemon.log'}[/]")
                return 1
            time.sleep(0.1)
        jobs = {name: JobView(root / name / "metrics.jsonl") for name in (RESCUED, UNAIDED)}
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lrwatch.demo.train",
                    str(root / name),
                    "--steps",
                    str(steps),
                    *(["--no-lrwatch"] if name == UNAIDED else []),
                ],
                env=env,
            )
            for name in jobs
        ]
        with Live(console=console, refresh_per_second=8) as live:
            while any(p.poll() is None for p in procs):
                for job in jobs.values():
                    job.refresh()
                live.update(_view(jobs, _events(state), url))
                time.sleep(0.125)
            for job in jobs.values():
                job.refresh()
            time.sleep(0.5)  # let the daemon read the last lines before the final view
            live.update(_view(jobs, _events(state), url))
        console.print()
        if any(p.returncode for p in procs):
            console.print("[red]a training job failed[/]")
            return 1
        _summary(console, root, jobs, url)
        return 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
        daemon_log.close()


def opening_line() -> str:
    """What the demo is about to do, in one line (of 80 columns), before anything moves."""
    return f"lrwatch demo: a PyTorch job that diverges, twice; lrwatch rescues {RESCUED}"


def _summary(console: Console, root: Path, jobs: dict[str, JobView], url: str) -> None:
    table = Table(title="the same job, with and without lrwatch", title_justify="left")
    # The run names whole at 80 columns; the headers fold instead.
    table.add_column("run", no_wrap=True, min_width=max(len(name) for name in jobs))
    for col in ("first NaN/Inf at step", "final train loss", "val loss", "val acc", "LR factor"):
        table.add_column(col, overflow="fold")
    for name, job in jobs.items():
        result: dict[str, Any] = json.loads((root / name / "result.json").read_text())
        table.add_row(
            name,
            "-" if job.first_nonfinite is None else str(job.first_nonfinite),
            f"{result['final_loss']:.4g}",
            f"{result['val_loss']:.4g}",
            f"{result['val_accuracy']:.1%}",
            f"{result.get('lr_scale', 1.0):g}",
        )
    console.print(table)
    scrape = (_get(f"{url}/metrics") or b"").decode()
    shown = [
        line
        for line in scrape.splitlines()
        if line.startswith(
            ("lrwatch_findings_total", "lrwatch_lr_scale", "lrwatch_adjustments_total")
        )
    ]
    console.print(f"/metrics was served at {url}/metrics; from its last scrape:")
    for line in shown:
        console.print(f"  {line}", highlight=False)
    console.print(f"logs and the daemon's state are in {root}")
