"""``lrwatch report``: one picture of a run — its metrics, what lrwatch found, what it did.

Findings come from replaying the run's logs (the same detectors the daemon runs, so the same
findings at the same steps); actions from the run's channel: each command file says why it was
sent, its ack says whether and at which step the hook applied it. So a report needs no daemon and
works on a finished run as on a live one. Command files are read for display only, unverified:
the hook is what authenticates them.

The picture is for the moment someone asks "what happened to this run?": the loss on a log axis
when it spans decades (a divergence otherwise flattens everything else), the LR with lrwatch's
factor, the gradient norm, each finding shaded in its kind's colour from its onset, each action a
numbered line whose reason is spelled out under the plot, and non-finite values marked where
they happened (a line plot silently skips them).
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrwatch.config import Config
from lrwatch.offline.replay import ReplayedFinding, discover_runs, read_run, replay
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Role, Sample

KIND_COLOURS = {
    "divergence": "tab:red",
    "spike": "tab:orange",
    "oscillation": "tab:purple",
    "plateau": "tab:gray",
    "drift": "tab:brown",
    "stall": "tab:pink",
    "overfit": "tab:cyan",
}
OTHER_KIND_COLOUR = "tab:olive"
MAX_POINTS = 20_000  # per line; more only slows matplotlib down, the eye cannot tell
MAX_ACTION_LINES = 12  # reasons spelled out under the plot; the HTML page lists them all

Points = list[tuple[int, float]]


@dataclass(frozen=True, slots=True)
class Adjustment:
    """One command sent to the run (by the controller or a person) and what became of it."""

    seq: int
    reason: str  # why it was sent, as the command file says
    issuer: str
    factor: float | None
    ack: Ack | None  # None while the hook has not answered

    @property
    def status(self) -> str:
        return self.ack.status.value if self.ack else "pending"

    @property
    def step(self) -> int | None:
        return self.ack.step if self.ack else None


@dataclass(frozen=True, slots=True)
class RunReport:
    name: str
    series: dict[Role, tuple[str, Points]]
    findings: list[ReplayedFinding]
    adjustments: list[Adjustment]


def collect(run_dir: Path, config: Config) -> RunReport:
    """Everything a report shows, gathered from the run directory alone."""
    if run_dir.is_file():
        raise ValueError(f"{run_dir} is a file: give its run's directory ({run_dir.parent})")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such run directory: {run_dir}")
    runs = discover_runs([run_dir])
    if not runs:
        raise ValueError(f"{run_dir} holds no JSONL, CSV or TensorBoard log")
    if len(runs) > 1:  # one picture of several runs would interleave their series
        names = sorted(runs)
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        example = run_dir / names[0]
        raise ValueError(
            f"{run_dir} holds {len(runs)} runs ({shown}); a report draws one: "
            f"give its directory, e.g. lrwatch report {example}"
        )
    ((_, files),) = runs.items()
    name = run_dir.resolve().name
    samples = read_run(name, files)
    return RunReport(
        name,
        samples_by_role(samples, config),
        list(replay([run_dir], config)),
        adjustments_of(run_dir),
    )


def write_report(run_dir: Path, output: Path | None, *, html: bool, config: Config) -> Path:
    report = collect(run_dir, config)
    png = render_png(report)
    out = output or run_dir / ("lrwatch-report.html" if html else "lrwatch-report.png")
    if html:
        out.write_text(render_html(report, png))
    else:
        out.write_bytes(png)
    return out


def samples_by_role(samples: list[Sample], config: Config) -> dict[Role, tuple[str, Points]]:
    """The first configured metric name present for each role, with its points in step order."""
    series: dict[str, Points] = defaultdict(list)
    for s in samples:
        series[s.metric].append((s.step, s.value))
    chosen: dict[Role, tuple[str, Points]] = {}
    for role in Role:
        for name in getattr(config.roles, role.value):
            if name in series:
                chosen[role] = (name, series[name])
                break
    return chosen


def adjustments_of(run_dir: Path) -> list[Adjustment]:
    """Every command in the run's channel, with its reason and its ack if there is one."""
    out = []
    for seq in range(1, channel.highest_command_seq(run_dir) + 1):
        try:
            raw = json.loads(channel.read_regular_file(channel.command_path(run_dir, seq), 4096))
        except (FileNotFoundError, channel.ChannelError, ValueError):
            continue
        if not isinstance(raw, dict):
            continue
        action = raw.get("action") if isinstance(raw.get("action"), dict) else {}
        factor = action.get("factor") if isinstance(action, dict) else None
        try:
            ack = channel.load_ack(run_dir, seq)
        except channel.ChannelError:
            ack = None
        out.append(
            Adjustment(
                seq,
                str(raw.get("reason", ""))[:500],
                str(raw.get("issuer", ""))[:100],
                float(factor) if isinstance(factor, int | float) else None,
                ack,
            )
        )
    return out


# --- the picture -------------------------------------------------------------------------------


def render_png(report: RunReport) -> bytes:
    import matplotlib.pyplot as plt

    fig = build_figure(report)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def build_figure(report: RunReport) -> Any:
    """The report's matplotlib Figure (the caller closes it); headless, whatever the backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    series = report.series
    last_step = max((pts[-1][0] for _, pts in series.values() if pts), default=0)
    lr_factor = _factor_steps(report.adjustments, last_step)
    panels: list[Role] = [r for r in (Role.LOSS, Role.LR, Role.GRAD_NORM) if r in series]
    if Role.LOSS not in series and Role.VAL_LOSS in series:
        panels.insert(0, Role.VAL_LOSS)
    if Role.LR not in panels and lr_factor:
        panels.insert(1 if panels else 0, Role.LR)  # lrwatch's factor alone, on its own panel
    if not panels:
        raise ValueError("no loss, validation loss, LR or grad norm metric found to plot")
    shown = [a for a in report.adjustments if a.step is not None]
    notes = min(len(shown), MAX_ACTION_LINES + 1)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, 2.5 * len(panels) + 0.7 + 0.16 * notes),
        sharex=True,
        squeeze=False,
    )
    for ax, role in zip(axes[:, 0], panels, strict=True):
        if role in series:
            name, points = series[role]
            _line(ax, points, "tab:blue", name, smooth=role is Role.LOSS)
            ax.set_ylabel(name)
        if role is Role.LOSS and Role.VAL_LOSS in series:
            name, points = series[Role.VAL_LOSS]
            _line(ax, points, "tab:green", name, smooth=False)
        if role is Role.LR and lr_factor:
            _factor_axis(ax, lr_factor, alone=Role.LR not in series)
        _log_if_decades(ax, [v for line in ax.get_lines() for v in line.get_ydata()])
        _mark_nonfinite(ax, series.get(role, ("", []))[1])
        _shade_findings(ax, report.findings)
        _mark_actions(ax, shown)
    top = axes[0, 0]
    kinds = dict.fromkeys(f.finding.kind for f in report.findings)
    handles: list[Any] = [
        Patch(color=KIND_COLOURS.get(k, OTHER_KIND_COLOUR), alpha=0.3, label=k) for k in kinds
    ]
    if any(not math.isfinite(v) for _, pts in series.values() for _, v in pts):
        handles.append(Line2D([], [], ls="", marker="x", color="tab:red", label="non-finite"))
    if any(a.status == AckStatus.APPLIED.value for a in shown):
        handles.append(Line2D([], [], ls="--", color="tab:green", label="LR change (ack)"))
    if any(a.status != AckStatus.APPLIED.value for a in shown):
        handles.append(Line2D([], [], ls="--", color="tab:red", label="command refused"))
    lines, _ = top.get_legend_handles_labels()
    top.legend(handles=lines + handles, loc="upper right", fontsize=8, framealpha=0.85)
    for a in shown:
        top.annotate(
            f"#{a.seq}",
            (a.step, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            ha="center",
            va="bottom",
            color=_action_colour(a),
        )
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(f"lrwatch report: {report.name}")
    bottom = (0.16 * notes + 0.1) / fig.get_figheight() if notes else 0.0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    if notes:
        fig.text(0.01, 0.01, _action_notes(shown), family="monospace", fontsize=8, va="bottom")
    return fig


def _thin(points: Points) -> Points:
    """At most MAX_POINTS points, always keeping the non-finite ones (they are the story)."""
    if len(points) <= MAX_POINTS:
        return points
    stride = math.ceil(len(points) / MAX_POINTS)
    return [p for i, p in enumerate(points) if i % stride == 0 or not math.isfinite(p[1])]


def _line(ax: Any, points: Points, colour: str, label: str, *, smooth: bool) -> None:
    points = _thin(points)
    steps = [s for s, _ in points]
    values = [v if math.isfinite(v) else math.nan for _, v in points]
    if not smooth or len(points) < 50:
        ax.plot(steps, values, lw=1.0, color=colour, label=label)
        return
    # Minibatch losses are noise around a trend: the raw curve faint, an EMA on top.
    ax.plot(steps, values, lw=0.6, color=colour, alpha=0.3)
    alpha, ema, smoothed = 2.0 / (max(5, len(points) // 100) + 1), math.nan, []
    for v in values:
        if not math.isnan(v):  # a gap in the data stays a gap in the average
            ema = v if math.isnan(ema) else ema + alpha * (v - ema)
        smoothed.append(v if math.isnan(v) else ema)
    ax.plot(steps, smoothed, lw=1.3, color=colour, label=f"{label} (EMA)")


def _log_if_decades(ax: Any, values: list[float]) -> None:
    finite = [float(v) for v in values if math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 100:
        ax.set_yscale("log")  # a loss spanning decades is unreadable on a linear axis


def _mark_nonfinite(ax: Any, points: Points) -> None:
    bad = [s for s, v in points if not math.isfinite(v)]
    if bad:
        ax.plot(
            bad,
            [0.97] * len(bad),
            "x",
            color="tab:red",
            ms=5,
            transform=ax.get_xaxis_transform(),  # x in steps, y in axes fraction: at the top
            clip_on=False,
        )


def _shade_findings(ax: Any, findings: list[ReplayedFinding]) -> None:
    for item in findings:
        f = item.finding
        colour = KIND_COLOURS.get(f.kind, OTHER_KIND_COLOUR)
        start = f.onset_step if f.onset_step is not None else f.step
        ax.axvspan(start, f.step + 0.5, color=colour, alpha=0.2, lw=0)
        ax.axvline(f.step, color=colour, lw=0.8, alpha=0.7)  # visible even for a short one


def _mark_actions(ax: Any, shown: list[Adjustment]) -> None:
    for a in shown:
        ax.axvline(a.step, color=_action_colour(a), ls="--", lw=1.2)


def _action_colour(a: Adjustment) -> str:
    return "tab:green" if a.status == AckStatus.APPLIED.value else "tab:red"


def _factor_steps(adjustments: list[Adjustment], last_step: int) -> Points:
    """lrwatch's factor as a step function: 1 until the first applied command, then each ack's,
    drawn on to the run's last step."""
    points: Points = []
    for a in adjustments:
        if a.ack is not None and a.ack.status is AckStatus.APPLIED:
            points.append((a.ack.step, a.ack.lr_scale))
    if not points:
        return []
    return [(0, 1.0), *points, (max(last_step, points[-1][0]), points[-1][1])]


def _factor_axis(ax: Any, factor: Points, *, alone: bool) -> None:
    target = ax if alone else ax.twinx()
    target.step([s for s, _ in factor], [v for _, v in factor], where="post", color="tab:green")
    target.set_ylabel("lrwatch LR factor", color="tab:green")
    if max(v for _, v in factor) / min(v for _, v in factor) > 100:
        target.set_yscale("log")


def _action_notes(shown: list[Adjustment]) -> str:
    lines = [_action_text(a) for a in shown[:MAX_ACTION_LINES]]
    if len(shown) > MAX_ACTION_LINES:
        lines.append(f"... and {len(shown) - MAX_ACTION_LINES} more (see --html)")
    return "\n".join(lines)


def _action_text(a: Adjustment) -> str:
    factor = f"x{a.factor:g}" if a.factor is not None else "?"
    after = f", LR factor now {a.ack.lr_scale:g}" if a.ack else ""
    return f"#{a.seq} step {a.step}: {a.status} {factor}{after} <- {a.reason}"[:150]


# --- the page ----------------------------------------------------------------------------------


def render_html(report: RunReport, png: bytes) -> str:
    """A single self-contained page: the picture embedded, and every finding and action."""
    esc = html_lib.escape
    findings = "".join(
        _row(
            f.finding.step,
            "" if f.finding.onset_step is None else f.finding.onset_step,
            f.finding.metric,
            f.finding.kind,
            f.finding.severity.value,
            f.finding.reason,
            f.decision.reason if f.decision else "",
        )
        for f in report.findings
    )
    actions = "".join(
        _row(
            a.seq,
            a.issuer,
            a.reason,
            "" if a.factor is None else f"x{a.factor:g}",
            a.status,
            "" if a.step is None else a.step,
            "" if a.ack is None else f"{a.ack.lr_scale:g}",
            "" if a.ack is None else ", ".join(f"{lr:.4g}" for lr in a.ack.lrs),
            "" if a.ack is None else a.ack.reason,
        )
        for a in report.adjustments
    )
    image = base64.b64encode(png).decode()
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>lrwatch: {esc(report.name)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}img{max-width:100%}"
        "table{border-collapse:collapse;font-size:90%}td,th{padding:3px 8px;"
        "border-bottom:1px solid #ddd;text-align:left;vertical-align:top}</style></head><body>"
        f"<h1>lrwatch report: {esc(report.name)}</h1>{_summary(report)}"
        f"<img alt='metrics, findings and actions' src='data:image/png;base64,{image}'>"
        f"<h2>Findings ({len(report.findings)})</h2>"
        "<p>From replaying the run's logs through lrwatch's detectors and policy.</p><table>"
        + _header("step", "onset", "metric", "kind", "severity", "reason", "policy")
        + findings
        + f"</table><h2>Actions ({len(report.adjustments)})</h2>"
        "<p>Commands in the run's channel and the hook's acknowledgements.</p><table>"
        + _header(
            "#", "issuer", "sent because", "change", "status", "at step", "LR factor", "LRs", "hook"
        )
        + actions
        + "</table></body></html>"
    )


def _summary(report: RunReport) -> str:
    parts = []
    for role, (name, points) in report.series.items():
        bad = sum(1 for _, v in points if not math.isfinite(v))
        last = points[-1]
        extra = f", {bad} non-finite" if bad else ""
        parts.append(
            f"<li>{html_lib.escape(role.value)} <code>{html_lib.escape(name)}</code>: "
            f"{len(points)} points to step {last[0]}, last {last[1]:.4g}{extra}</li>"
        )
    return f"<ul>{''.join(parts)}</ul>"


def _header(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{html_lib.escape(n)}</th>" for n in names) + "</tr>"


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{html_lib.escape(str(c))}</td>" for c in cells) + "</tr>"
