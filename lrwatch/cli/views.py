"""What the command line shows: the replay and status tables, help without Python types, and
names from other people's files made safe to print.

Kept apart from the commands (cli/__init__.py), which only parse arguments and hand them on:
everything here turns data into text or rich renderables and prints nothing itself.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from lrwatch.analysis import coverage

if TYPE_CHECKING:  # (replay pulls in the log readers; status has no use for them)
    from lrwatch.offline.replay import ReplayedRun


class PlainCommand(TyperCommand):
    """A command whose help shows plain metavars (PATH, INTEGER, act|observe) rather than
    Python types (``<list[Path]>``), and nothing after a flag (``<bool>``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


class PlainGroup(TyperGroup):
    """The same for a group's own options (``lrwatch --help``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))


def _plain(params: list[Any]) -> list[Any]:
    for param in params:
        if param.param_type_name == "argument" and param.metavar is None:
            param.metavar = param.name.upper()  # `{run}` reads as RUN, as in the docs
        shown = _metavar(param)
        param.display_type_rich = lambda ctx, shown=shown: shown
    return params


_METAVARS = {Path: "PATH", int: "INTEGER", float: "FLOAT", str: "TEXT"}


def _metavar(param: Any) -> str | None:
    if param.param_type_name == "argument" or getattr(param, "is_flag", False):
        return None  # an argument's name is its metavar; a flag takes no value
    if param.metavar is not None:
        return str(param.metavar)
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    annotation = desc.annotation
    return _METAVARS.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escape sequences, carriage
    returns, bidi overrides) spelled as its Python escape: run and metric names come from
    other people's files and must not drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def holds(path: Path, limit: int = 3) -> str:
    """What a directory with no log holds instead, for the message that says so."""
    others: list[str] = []
    for folder, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        others += [
            os.path.relpath(os.path.join(folder, n), path)
            for n in sorted(filenames)
            if not n.startswith(".")
        ]
        if len(others) > 100:
            break
    if not others:
        return "; it is empty"
    listed = ", ".join(others[:limit]) + (", ..." if len(others) > limit else "")
    return f"; it holds {len(others)}{'+' if len(others) > 100 else ''} other file(s): {listed}"


def nonfinite(first: tuple[str, int, float]) -> str:
    metric, step, value = first
    return f"first non-finite value at step {step} ({metric}={value})"


_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_WHY_NOT = (
    ("reported only", "report only"),
    ("cooldown", "- (cooldown)"),
    ("rate limit", "- (rate limit)"),
    ("paused", "- (paused)"),
    ("bound", "- (at LR bound)"),
)


def _why_not(decision: str) -> str:
    """The controller's reason for doing nothing, in two words for a table cell."""
    return next((short for key, short in _WHY_NOT if key in decision), "-")


def read_line(run: ReplayedRun) -> str:
    """What replay read of a run, for its table's header: the steps, which metric was taken as
    the loss, where a value first went non-finite, records skipped."""
    facts = [f"{run.steps} step{'s' if run.steps != 1 else ''}"]
    if run.loss is None:
        listed = coverage.names(run.metrics)
        facts.append(f"no loss recognised, not judged (metrics: {listed or 'none read'})")
    else:
        inferred = " (inferred from its name)" if run.loss_inferred else ""
        facts.append(f"loss `{run.loss}`{inferred}")
    if run.first_nonfinite is not None:
        facts.append(nonfinite(run.first_nonfinite))
    skipped = sum(run.skipped.values())
    if skipped:
        facts.append(f"{skipped} corrupt record{'s' if skipped != 1 else ''} skipped")
    return "read " + "; ".join(facts)


def replay_view(run: ReplayedRun, rows: list[dict[str, Any]]) -> Table | Text:
    """One table per run, headed by what was read and what was found; each row says when it
    began (onset), when the detector was sure (step), why, and what act mode would have done —
    or why not. A run without findings gets its header alone: read, and healthy."""
    name = printable(run.name)
    read = printable(read_line(run))
    if not rows:
        verdict = "not judged" if run.loss is None else "no findings"
        return Text(f"run {name}: {verdict}\n  {read}")
    counts = Counter(r["kind"] for r in rows)
    acted = sum(1 for r in rows if r["action"])
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    title = f"run {name}: {summary}; {acted} LR adjustment{'s' if acted != 1 else ''}"
    table = Table(title=Text(f"{printable(title)}\n  {read}"), title_justify="left", expand=False)
    table.add_column("step", justify="right")
    table.add_column("onset", justify="right")
    for col in ("metric", "kind", "would do", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        action = r["action"]
        if action:
            act = Text(f"{action['type']} x{action['factor']:g}", style="bold")
        else:
            act = Text(_why_not(r.get("decision") or ""), style="dim")
        onset = "" if r["onset_step"] is None else str(r["onset_step"])
        kind = Text(printable(r["kind"]), style=_SEVERITY_STYLE.get(r["severity"], ""))
        table.add_row(
            str(r["step"]), onset, Text(printable(r["metric"])), kind, act,
            Text(printable(r["reason"])),
        )  # fmt: skip
    return table


_STATE_STYLES = {"active": "green", "stale": "yellow", "finished": "dim", "paused": "magenta"}
_KIND_STYLES = {"divergence": "bold red", "stall": "red"}


def status_table(answer: Mapping[str, Any], *, at: float | None = None) -> Table | Group:
    """The daemon's status as a table, colour only where something wants a look: a run going
    wrong (non-finite loss, a divergence, commands the hook has not answered), lrwatch having
    changed its LR (a factor other than 1), or a run lrwatch cannot judge (no loss recognised:
    said under the table, a line a run, with the metrics it has and how to name the loss).
    Names come from other people's files: shown as text, never as markup or terminal
    controls."""
    runs = sorted(answer.get("runs", []), key=lambda r: str(r["run"]))
    counts = Counter(str(r["state"]) for r in runs)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    caption = f"{len(runs)} run(s){': ' + summary if summary else ''} · as of {stamp}"
    mode, root = printable(str(answer.get("mode", "?"))), printable(str(answer.get("root", "?")))
    table = Table(
        title=Text(f"lrwatch ({mode} mode) watching {root}"),
        title_justify="left",
        caption=Text(caption),
        caption_justify="left",
    )
    for col in ("run", "state", "step", "loss", "LR factor", "LR", "hook", "findings", "unacked"):
        table.add_column(col, justify="right" if col in ("step", "loss", "LR factor") else "left")
    for r in runs:
        state = printable(str(r["state"]))
        factor = float(r["lr_scale"])
        table.add_row(
            Text(printable(str(r["run"]))),
            Text(state, style=_STATE_STYLES.get(state, "default")),
            str(r["last_step"]),
            _loss_cell(r),
            Text(f"{factor:g}", style="" if factor == 1.0 else "bold yellow"),
            ", ".join(f"{float(x):.3g}" for x in r["lrs"]) or "-",
            Text("alive", style="green") if r["hook_alive"] else Text("none", style="dim"),
            Text(", ").join(
                Text(printable(str(k)), style=_KIND_STYLES.get(str(k), "yellow"))
                for k in r["active_findings"]
            )
            or "-",
            Text(", ").join(Text(f"#{seq}", style="yellow") for seq in r["unacked_commands"])
            or "-",
        )
    if not runs:
        table.add_row(Text("no runs yet", style="dim"), *[""] * 8)
    notes = _status_notes(runs)
    if not notes:
        return table
    return Group(table, *(Text(printable(note), style="yellow") for note in notes))


def _status_notes(runs: list[Mapping[str, Any]]) -> list[str]:
    """What the daemon could not read, one line per run: the same words as replay's."""
    notes = []
    for r in runs:
        name = str(r["run"])
        if r.get("metrics") and r.get("loss_metric", "") is None:  # (older daemons: no key)
            notes.append(coverage.no_loss(name, r["metrics"]))
        elif r.get("loss_inferred"):
            notes.append(coverage.inferred_loss(name, str(r["loss_metric"])))
        skipped = int(r.get("skipped_records", 0))
        if skipped:
            notes.append(f"run {name}: {skipped} corrupt record(s) skipped in its logs")
    return notes


def _loss_cell(row: Mapping[str, Any]) -> Text:
    loss = row["loss"]
    if loss is None:
        unjudged = row.get("metrics") and row.get("loss_metric", "") is None
        return Text("no loss", style="yellow") if unjudged else Text("-")
    value = float(loss)  # (a non-finite loss comes as a string, "nan": strict JSON)
    return Text(f"{value:.4g}") if math.isfinite(value) else Text(str(value), style="bold red")
