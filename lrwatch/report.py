"""``lrwatch report``: one picture of a run — its metrics, what lrwatch found, what it did.

Findings come from replaying the run's logs (the same detectors as the daemon), actions from
the acks the hook wrote into the run's channel, so a report works on a finished run and on a
live one, with or without a daemon.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import math
from collections import defaultdict
from pathlib import Path

from lrwatch import channel
from lrwatch.config import Config
from lrwatch.replay import ReplayedFinding, read_run, replay
from lrwatch.sources.discovery import scan
from lrwatch.types import Ack, AckStatus, Role, Sample

KIND_COLOURS = {
    "divergence": "tab:red",
    "spike": "tab:orange",
    "oscillation": "tab:purple",
    "plateau": "tab:gray",
    "drift": "tab:brown",
    "stall": "tab:pink",
}


def acks_of(run_dir: Path) -> list[Ack]:
    acks = []
    for seq in range(1, channel.highest_command_seq(run_dir) + 1):
        try:
            ack = channel.read_ack(run_dir, seq)
        except channel.ChannelError:
            continue
        if ack is not None:
            acks.append(ack)
    return acks


def write_report(run_dir: Path, output: Path | None, *, html: bool, config: Config) -> Path:
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such run directory: {run_dir}")
    files = scan(run_dir)
    if not files:
        raise ValueError(f"{run_dir} holds no JSONL, CSV or TensorBoard log")
    samples = read_run(run_dir.resolve().name, files)
    findings = list(replay([run_dir], config))
    acks = acks_of(run_dir)
    png = _plot(run_dir.name, samples_by_role(samples, config), findings, acks)
    out = output or run_dir / ("lrwatch-report.html" if html else "lrwatch-report.png")
    if html:
        out.write_text(_html(run_dir.name, png, findings, acks))
    else:
        out.write_bytes(png)
    return out


def samples_by_role(
    samples: list[Sample], config: Config
) -> dict[Role, tuple[str, list[tuple[int, float]]]]:
    roles = config.roles
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for s in samples:
        series[s.metric].append((s.step, s.value))
    chosen: dict[Role, tuple[str, list[tuple[int, float]]]] = {}
    for role in Role:
        for name in getattr(roles, role.value):
            if name in series:
                chosen[role] = (name, series[name])
                break
    return chosen


def _plot(
    title: str,
    series: dict[Role, tuple[str, list[tuple[int, float]]]],
    findings: list[ReplayedFinding],
    acks: list[Ack],
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [r for r in (Role.LOSS, Role.VAL_LOSS, Role.LR, Role.GRAD_NORM) if r in series]
    if not panels:
        raise ValueError("no loss, validation loss, LR or grad norm metric found to plot")
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, 2.6 * len(panels) + 0.6), sharex=True, squeeze=False
    )
    for ax, role in zip(axes[:, 0], panels, strict=True):
        name, points = series[role]
        steps = [p[0] for p in points]
        values = [p[1] for p in points]
        ax.plot(steps, values, lw=1.0, color="tab:blue")
        finite = [v for v in values if math.isfinite(v) and v > 0]
        if finite and max(finite) / min(finite) > 100:
            ax.set_yscale("log")  # losses spanning decades are unreadable on a linear axis
        for step, v in zip(steps, values, strict=True):
            if not math.isfinite(v):
                ax.axvline(step, color="black", lw=0.5, alpha=0.3)
        ax.set_ylabel(name)
        for item in findings:
            f = item.finding
            start = f.onset_step if f.onset_step is not None else f.step
            ax.axvspan(
                start, f.step + 0.5, color=KIND_COLOURS.get(f.kind, "tab:olive"), alpha=0.25, lw=0
            )
        for ack in acks:
            if ack.status is AckStatus.APPLIED:
                ax.axvline(ack.step, color="tab:green", ls="--", lw=1.2)
    top = axes[0, 0]
    for item in findings:
        f = item.finding
        top.annotate(
            f.kind,
            (f.step, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            color=KIND_COLOURS.get(f.kind, "tab:olive"),
            va="bottom",
        )
    for ack in acks:
        if ack.status is AckStatus.APPLIED:
            top.annotate(
                f"LR x{ack.lr_scale:g}",
                (ack.step, 0.9),
                xycoords=("data", "axes fraction"),
                fontsize=8,
                color="tab:green",
            )
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"lrwatch report: {title}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _html(title: str, png: bytes, findings: list[ReplayedFinding], acks: list[Ack]) -> str:
    esc = html_lib.escape
    rows = "".join(
        f"<tr><td>{f.finding.step}</td><td>{esc(f.finding.kind)}</td>"
        f"<td>{esc(f.finding.severity.value)}</td><td>{esc(f.finding.reason)}</td></tr>"
        for f in findings
    )
    actions = "".join(
        f"<tr><td>{a.seq}</td><td>{a.step}</td><td>{esc(a.status.value)}</td>"
        f"<td>{a.lr_scale:g}</td><td>{esc(a.reason)}</td></tr>"
        for a in acks
    )
    image = base64.b64encode(png).decode()
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lrwatch: {esc(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        f"<h1>lrwatch report: {esc(title)}</h1><img src='data:image/png;base64,{image}'>"
        "<h2>Findings</h2><table><tr><th>step</th><th>kind</th><th>severity</th>"
        f"<th>reason</th></tr>{rows}</table>"
        "<h2>Actions (acknowledged by the hook)</h2><table><tr><th>#</th><th>step</th>"
        f"<th>status</th><th>LR factor</th><th>reason</th></tr>{actions}</table></body></html>"
    )
