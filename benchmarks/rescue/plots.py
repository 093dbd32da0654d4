"""One picture per scenario: validation loss and LR over steps for the three methods, with what
lrwatch found (shaded by kind, from its detectors replayed over the run's log) and did (each
command, at the step the hook applied it). A drift scenario gets an inset of the steps around
the drift, where its recovery is decided (at the full scale it is a few pixels wide).

The first seed is drawn bold, the others faint, so the spread is visible without a legend per
seed; the well-tuned run is the dashed black reference where a scenario is held to it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from benchmarks.rescue.scenarios import DRIFT_KEYS, DRIFT_STEP, REFERENCE, SCENARIOS
from benchmarks.rescue.summary import RECOVERY_TOLERANCE, Cell, load_log, val_curve
from lrwatch.config import Config
from lrwatch.offline.report import KIND_COLOURS, OTHER_KIND_COLOUR, collect

COLOURS = {"fixed": "tab:gray", "plateau": "tab:blue", "lrwatch": "tab:green"}
ZORDER = {"fixed": 1, "plateau": 2, "lrwatch": 3}
NAMES = {"fixed": "fixed LR", "plateau": "ReduceLROnPlateau", "lrwatch": "lrwatch"}


def plot_scenario(key: str, cells: dict[str, Cell], reference: Cell | None, out: Path) -> None:
    scenario = SCENARIOS[key]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.2), sharex=True)
    curves = {
        method: [
            (int(r["seed"]), load_log(Path(r["run_dir"])))
            for r in sorted(cell.results, key=lambda r: int(r["seed"]))
        ]
        for method, cell in cells.items()
    }
    top_limit = _top_limit([val_curve(log) for runs in curves.values() for _, log in runs])
    for method, runs in curves.items():
        for i, (_, log) in enumerate(runs):
            curve = val_curve(log)
            style: dict[str, Any] = {"color": COLOURS[method], "zorder": ZORDER[method]}
            style.update({"lw": 1.6, "alpha": 1.0} if i == 0 else {"lw": 0.7, "alpha": 0.35})
            if method == "fixed":
                style["lw"] += 1.5  # drawn under the others, which follow it until they act
            top.plot([s for s, _ in curve], [_nan(v) for _, v in curve], **style)
            gone = next((s for s, v in curve if not math.isfinite(v)), None)
            if gone is not None:
                top.plot(
                    [gone],
                    [0.96],
                    "x",
                    color=COLOURS[method],
                    ms=8,
                    mew=2,
                    transform=top.get_xaxis_transform(),  # y in axes fraction: at the top
                    clip_on=False,
                )
            bottom.plot([int(r["step"]) for r in log], [r["lr"] for r in log], **style)
    shown = [v for runs in curves.values() for _, log in runs for _, v in val_curve(log)]
    # The well-tuned run is a yardstick only for the scenarios of its own task.
    held_to = reference is not None and key != REFERENCE
    held_to = held_to and scenario.task == SCENARIOS[REFERENCE].task
    if reference is not None and held_to:
        first = min(reference.results, key=lambda r: int(r["seed"]))
        curve = val_curve(load_log(Path(first["run_dir"])))
        top.plot([s for s, _ in curve], [v for _, v in curve], "--", color="black", lw=1.0)
        shown += [v for _, v in curve]
    low = min((v for v in shown if v > 0), default=top_limit / 10)
    top.set_ylim(low * 0.9, top_limit)
    bottom.set_yscale("log")
    handles: list[Any] = [Line2D([], [], color=COLOURS[m], lw=1.6, label=NAMES[m]) for m in cells]
    if held_to:
        handles.append(Line2D([], [], ls="--", color="black", label="well-tuned run"))
    if "lrwatch" in cells:
        handles += _lrwatch_marks(cells["lrwatch"], (top, bottom))
    if scenario.event is not None:
        step, label = scenario.event
        for ax in (top, bottom):
            ax.axvline(step, color="tab:red", ls=":", lw=1.2)
        top.annotate(
            label,
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            color="tab:red",
            fontsize=8,
            va="bottom",
        )
    if key in DRIFT_KEYS:
        _drift_inset(top, curves)
    handles.append(Line2D([], [], ls="", marker="x", color="black", label="first NaN/inf"))
    top.legend(handles=handles, fontsize=8, loc="upper right", framealpha=0.85)
    top.set_ylabel("validation loss")
    bottom.set_ylabel("LR used")
    bottom.set_xlabel("step")
    fig.suptitle(f"{scenario.title}: seed 0 bold, other seeds faint")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _drift_inset(top: Any, curves: dict[str, list[tuple[int, list[dict[str, float]]]]]) -> None:
    """The validation loss from just before the drift to 400 steps after, every seed, with the
    line the recovery is measured against (10 % above the first seed's pre-drift loss)."""
    inset = top.inset_axes((0.1, 0.33, 0.42, 0.6))
    lo, hi = DRIFT_STEP - 60, DRIFT_STEP + 400
    shown = []
    for method, runs in curves.items():
        for i, (_, log) in enumerate(runs):
            part = [(s, v) for s, v in val_curve(log) if lo <= s <= hi and math.isfinite(v)]
            shown += [v for _, v in part]
            inset.plot(
                [s for s, _ in part],
                [v for _, v in part],
                color=COLOURS[method],
                zorder=ZORDER[method],
                lw=1.4 if i == 0 else 0.7,
                alpha=1.0 if i == 0 else 0.4,
            )
    first = curves.get("fixed", next(iter(curves.values())))[0][1]
    before = [v for s, v in val_curve(first) if s < DRIFT_STEP]
    if before:
        inset.axhline(RECOVERY_TOLERANCE * before[-1], color="black", ls=":", lw=0.8)
    inset.axvline(DRIFT_STEP, color="tab:red", ls=":", lw=1.0)
    if shown:
        inset.set_ylim(min(shown) * 0.9, min(max(shown), 4 * min(shown)) * 1.05)
    inset.set_xlim(lo, hi)
    inset.tick_params(labelsize=7)
    inset.set_title(
        f"around the drift; dotted: {RECOVERY_TOLERANCE - 1:.0%} above the pre-drift loss",
        fontsize=7,
    )


def _lrwatch_marks(cell: Cell, axes: tuple[Any, Any]) -> list[Any]:
    """Findings and actions of the first seed's lrwatch run, on both panels."""
    first = min(cell.results, key=lambda r: int(r["seed"]))
    report = collect(Path(first["run_dir"]), Config())
    bottom = axes[1]
    kinds: dict[str, str] = {}
    for item in report.findings:
        f = item.finding
        colour = KIND_COLOURS.get(f.kind, OTHER_KIND_COLOUR)
        kinds[f.kind] = colour
        start = f.onset_step if f.onset_step is not None else f.step
        for ax in axes:
            ax.axvspan(start, f.step + 3, color=colour, alpha=0.18, lw=0)
    applied = [a for a in report.adjustments if a.step is not None]
    for a in applied:
        for ax in axes:
            ax.axvline(a.step, color="tab:green", ls="--", lw=1.0)
        factor = f"x{a.factor:g}" if a.factor is not None else ""
        bottom.annotate(
            f"#{a.seq} {factor}",
            (a.step, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color="tab:green",
            rotation=90,
            ha="right",
            va="bottom",
        )
    marks: list[Any] = [Patch(color=c, alpha=0.3, label=f"lrwatch: {k}") for k, c in kinds.items()]
    if applied:
        marks.append(Line2D([], [], ls="--", color="tab:green", label="lrwatch: LR change applied"))
    return marks


def _nan(v: float) -> float:
    return v if math.isfinite(v) else math.nan


def _top_limit(curves: list[list[tuple[int, float]]]) -> float:
    """Three times the typical first validation loss: a run above that has blown up, and
    letting it set the scale would flatten every other curve into one line."""
    firsts = sorted(c[0][1] for c in curves if c and math.isfinite(c[0][1]))
    return 3.0 * firsts[len(firsts) // 2] if firsts else 1.0
