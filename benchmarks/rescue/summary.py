"""From the jobs' results and logs to numbers: per scenario and method, mean and spread over
seeds, drift recovery, lrwatch's reaction time, and whether each target holds.

A seed whose final validation loss is not finite *diverged*. It is left out of the mean (a mean
over NaN says nothing) but counted, and in the target checks a method with a diverged seed
loses to one without: ending in NaN is the worst outcome there is.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.rescue.job import METHODS
from benchmarks.rescue.scenarios import DRIFT_KEYS, DRIFT_STEP, REFERENCE, SCENARIOS

RECOVERY_TOLERANCE = 1.10  # "recovered" = validation loss back within 10 % of its pre-drift value
SCORE_AFTER = 100  # the AUC this many steps after the drift: how well it catches the new fraud


@dataclass
class Stat:
    values: list[float]

    @property
    def finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]

    @property
    def diverged(self) -> int:
        return len(self.values) - len(self.finite)

    @property
    def mean(self) -> float:
        """The mean over finite seeds, or +inf if any seed diverged (for comparisons)."""
        return statistics.fmean(self.finite) if self.finite and not self.diverged else math.inf

    def show(self, digits: int = 4) -> str:
        if not self.finite:
            return f"diverged ({self.diverged}/{len(self.values)})"
        spread = statistics.stdev(self.finite) if len(self.finite) > 1 else 0.0
        text = f"{statistics.fmean(self.finite):.{digits}g} ± {spread:.2g}"
        return text + (f" ({self.diverged}/{len(self.values)} diverged)" if self.diverged else "")


@dataclass
class Cell:
    """One scenario x method over seeds."""

    val_loss: Stat
    score: Stat
    results: list[dict[str, Any]]
    recovery: Stat = field(default_factory=lambda: Stat([]))
    score_after: Stat = field(default_factory=lambda: Stat([]))  # drift: AUC at +SCORE_AFTER
    commands: list[int] = field(default_factory=list)
    reactions: list[int] = field(default_factory=list)  # steps from finding to applied ack


def load_log(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def val_curve(log: list[dict[str, float]]) -> list[tuple[int, float]]:
    return [(int(r["step"]), r["val/loss"]) for r in log if "val/loss" in r]


def recovery_steps(log: list[dict[str, float]]) -> float:
    """Steps after the drift until the validation loss (on the new concept) is back within
    ``RECOVERY_TOLERANCE`` of the last one before it (on the old); inf if never in the run."""
    curve = val_curve(log)
    before = [v for s, v in curve if s < DRIFT_STEP]
    if not before or not math.isfinite(before[-1]):
        return math.inf
    for step, value in curve:
        if step >= DRIFT_STEP and value <= RECOVERY_TOLERANCE * before[-1]:
            return float(step - DRIFT_STEP + 1)
    return math.inf


def score_after_drift(log: list[dict[str, float]]) -> float:
    """The validation score (AUC) at the first evaluation ``SCORE_AFTER`` steps or more after
    the drift: the final score says where a stream job ends, this one what it missed meanwhile."""
    for r in log:
        if "val/score" in r and r["step"] >= DRIFT_STEP + SCORE_AFTER - 1:
            return float(r["val/score"])
    return math.nan


def lrwatch_actions(run_dir: Path) -> tuple[int, list[int]]:
    """How many commands the daemon sent, and for each applied one answering a finding the steps
    from the finding (named at the start of the command's reason, "divergence at step 143: LR
    x0.1") to the hook's ack. A step-driven command (the continual policy's return after its
    boost, "boost for the drift of step 1520 over: ...") is counted, but is no reaction."""
    from lrwatch.offline.report import adjustments_of

    reactions = []
    adjustments = adjustments_of(run_dir)
    for a in adjustments:
        found = re.match(r"[\w-]+ at step (\d+)", a.reason)
        if a.step is not None and found:
            reactions.append(a.step - int(found.group(1)))
    return len(adjustments), reactions


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, Cell]]:
    table: dict[str, dict[str, Cell]] = {}
    for key in SCENARIOS:
        for method in METHODS:
            rows = [
                r
                for r in results
                if r["scenario"] == key and r["method"] == method and "val_loss" in r
            ]
            if not rows:
                continue
            cell = Cell(
                Stat([float(r["val_loss"]) for r in rows]),
                Stat([float(r["score"]) for r in rows]),
                rows,
            )
            if key in DRIFT_KEYS:
                logs = [load_log(Path(r["run_dir"])) for r in rows]
                cell.recovery = Stat([recovery_steps(log) for log in logs])
                cell.score_after = Stat([score_after_drift(log) for log in logs])
            if method == "lrwatch":
                for r in rows:
                    count, reactions = lrwatch_actions(Path(r["run_dir"]))
                    cell.commands.append(count)
                    cell.reactions += reactions
            table.setdefault(key, {})[method] = cell
    return table


def targets(table: dict[str, dict[str, Cell]]) -> list[tuple[str, bool, str]]:
    """Each target of the issue: (scenario, holds, the numbers that decide it)."""
    out = []
    ref = table.get(REFERENCE, {}).get("fixed")
    for key in ("too-high-lr", "lr-spike"):
        cells = table.get(key, {})
        if ref is None or "lrwatch" not in cells or "plateau" not in cells:
            continue
        lw, rl = cells["lrwatch"].val_loss.mean, cells["plateau"].val_loss.mean
        ratio = lw / ref.val_loss.mean
        holds = ratio <= 1.10 and lw < rl
        out.append(
            (
                key,
                holds,
                f"lrwatch {_num(lw)} = {ratio:.3f}x the well-tuned {_num(ref.val_loss.mean)} "
                f"(target <= 1.10x); ReduceLROnPlateau {_num(rl)}",
            )
        )
    if {"lrwatch", "plateau"} <= set(table.get("plateau", {})):
        lw, rl = (table["plateau"][m].val_loss.mean for m in ("lrwatch", "plateau"))
        out.append(
            ("plateau", lw <= rl, f"lrwatch {_num(lw)} vs ReduceLROnPlateau {_num(rl)} (<=)")
        )
    for key in DRIFT_KEYS:
        if {"lrwatch", "fixed"} <= set(table.get(key, {})):
            lw, fx = (table[key][m].recovery.mean for m in ("lrwatch", "fixed"))
            auc = (table[key][m].score_after.show(3) for m in ("lrwatch", "fixed"))
            out.append(
                (
                    key,
                    lw < fx,
                    f"recovery in {_steps(lw)} with lrwatch vs {_steps(fx)} with the fixed LR "
                    f"(<); AUC {SCORE_AFTER} steps after the drift {' vs '.join(auc)}",
                )
            )
    if {"lrwatch", "fixed"} <= set(table.get("healthy", {})):
        lw, fx = (table["healthy"][m].val_loss.mean for m in ("lrwatch", "fixed"))
        change = (lw - fx) / fx
        out.append(
            (
                "healthy",
                abs(change) <= 0.01,
                f"lrwatch {_num(lw)} vs fixed {_num(fx)}: {change:+.2%} (within ±1%)",
            )
        )
    return out


def _steps(x: float) -> str:
    return f"{x:.0f} steps" if math.isfinite(x) else "never (in at least one seed)"


def _num(x: float) -> str:
    return "diverged" if not math.isfinite(x) else f"{x:.4g}"


def markdown(
    table: dict[str, dict[str, Cell]],
    checks: list[tuple[str, bool, str]],
    sweep: dict[float, Stat],
    meta: dict[str, Any],
) -> str:
    """The results page: the table, the targets with their numbers, how it was run."""
    names = {"fixed": "fixed LR", "plateau": "ReduceLROnPlateau", "lrwatch": "lrwatch"}
    lines = [
        "# lrwatch rescue benchmark",
        "",
        f"Generated by `{meta['command']}` in {meta['minutes']:.1f} min "
        f"({meta['seeds']} seeds; mean ± standard deviation over seeds).",
        "",
        *compact_table(table, checks),
        "",
        "## All numbers",
        "",
        "| scenario | method | final val loss | accuracy / R² / AUC | lrwatch commands "
        f"| drift: recovery of the pre-drift loss; AUC {SCORE_AFTER} steps after |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, cells in table.items():
        scenario = SCENARIOS[key]
        for method, cell in cells.items():
            score_name = cell.results[0]["score_name"]
            commands = (
                f"{statistics.fmean(cell.commands):.1f} per run" if method == "lrwatch" else ""
            )
            recovery = ""
            if key in DRIFT_KEYS:
                recovery = f"{_recovery(cell.recovery)}; AUC {cell.score_after.show(3)}"
            lines.append(
                f"| {scenario.title} | {names[method]} | {cell.val_loss.show()} "
                f"| {score_name} {cell.score.show(3)} | {commands} | {recovery} |"
            )
    lines += ["", "## Targets", ""]
    for key, holds, numbers in checks:
        lines.append(f"- **{key}**: {'holds' if holds else 'MISSED'}: {numbers}")
    lines += ["", "## Reference: fixed-LR sweep of the classification task", ""]
    lines += ["| peak LR | final val loss |", "| --- | --- |"]
    lines += [f"| {lr:g} | {stat.show()} |" for lr, stat in sweep.items()]
    lines += ["", "## Scenarios", ""]
    lines += [f"- **{SCENARIOS[k].title}**: {SCENARIOS[k].story}." for k in table]
    reactions = [r for c in table.values() if "lrwatch" in c for r in c["lrwatch"].reactions]
    lines += ["", "## How it ran", ""] + [f"- {note}" for note in meta["notes"]]
    if reactions:
        lines.append(
            f"- lrwatch's reaction, from the step a detector fired to the step the hook applied "
            f"the command answering it: median {statistics.median(reactions):g} steps, "
            f"max {max(reactions)} ({len(reactions)} applied commands)."
        )
    return "\n".join(lines) + "\n"


def _recovery(stat: Stat) -> str:
    finite = stat.finite
    never = len(stat.values) - len(finite)
    if not finite:
        return f"none within the run ({never}/{len(stat.values)})"
    spread = statistics.stdev(finite) if len(finite) > 1 else 0.0
    text = f"{statistics.fmean(finite):.0f} ± {spread:.0f} steps"
    return text + (f" ({never} never)" if never else "")


def compact_table(
    table: dict[str, dict[str, Cell]], checks: list[tuple[str, bool, str]]
) -> list[str]:
    """One row per scenario, the methods' final validation loss side by side (the table the
    README shows; the scores are in the full table)."""
    verdict = {key: "holds" if holds else "**missed**" for key, holds, _ in checks}
    lines = [
        "| scenario | fixed LR | ReduceLROnPlateau | lrwatch | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, cells in table.items():
        shown = []
        for method in METHODS:
            cell = cells.get(method)
            if cell is None:
                shown.append("")
                continue
            text = cell.val_loss.show()
            if key in DRIFT_KEYS:
                text += f"; recovery {_recovery(cell.recovery)}"
            shown.append(text)
        target = SCENARIOS[key].target
        lines.append(
            f"| {SCENARIOS[key].title} | {' | '.join(shown)} | {target} | {verdict.get(key, '')} |"
        )
    return lines
