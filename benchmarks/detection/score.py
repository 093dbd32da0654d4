"""Score lrwatch's detectors on seven labelled corpora, side by side with the usual baselines.

Run from the repository root (a minute or two; nothing is trained):

    python -m benchmarks.detection.score [--config lrwatch.yaml] [--draw DIR ...]

The corpora, one column each: the **synthetic** generator's tune and frozen test halves
(synthetic.py, written to a temp dir each run), the **real published logs**' tune and frozen
test halves (``shared/reallogs``, split by splits.py), the **development corpus** (the 123
committed small PyTorch runs, tuned on in the past), and the **unseen real runs**' tune and
frozen test halves (unseen.py: committed real PyTorch runs of model families the development
corpus never had, split by splits.py); with ``--draw DIR``, a **fresh draw** of the unseen
generator with new seeds (``unseen.py --seed-offset N --out DIR``: new inits, batches and fault
steps, never committed), or of families.py (model families, optimizers and fault mechanics
neither unseen.py nor the development corpus has), a column each. Before anything is scored,
``splits.py --check`` must pass: a frozen half that changed since it was committed is not
reported. Tune on the tune columns; the test columns are the figures to quote.

lrwatch is scored through its contract: ``lrwatch replay --format jsonl`` in a subprocess,
default config unless ``--config``, exactly as a user tuning thresholds would run it (the
findings and the ``action`` act mode would have taken). The baselines see the same ``loss``
series (for a real log: the series lrwatch read, see reallogs.py):

- **NaN-only** (Keras ``TerminateOnNaN``): an alarm at the first non-finite loss;
- **2x running minimum**: an alarm when the loss exceeds twice the lowest loss seen so far (or
  is non-finite);
- **ReduceLROnPlateau(patience=10)**: torch's scheduler stepped with each logged loss; a "flag"
  (an LR cut) is each step at which it would cut the LR;
- **EarlyStopping(patience=10)** (Keras) on the validation loss, for overfitting.

Definitions (every delay is in the steps of the log's own x-axis: steps, epochs, iterations):

- *Divergence recall*: diverging runs with an alarm at or after the onset (for an onset read off
  the curve in hindsight, up to 10 steps before it counts too, with delay 0), over all
  diverging runs. *Delay*: first such alarm minus the onset; also counted in logged values
  (a log written every 50 steps cannot be answered in fewer than 50 steps by anything that
  reads it), and in steps over the runs logged at every step alone. *Alarm before the onset*:
  any alarm earlier than that.
- *Early warning*: of the diverging runs whose first non-finite loss comes at least 2 logged
  values after the onset (a run non-finite from its first values cannot be warned about), the
  share with an alarm at or after the onset and strictly before that first non-finite value.
- *False divergence alarms*: non-diverging runs (healthy, oscillation, plateau, drift, overfit)
  with any divergence alarm, any metric, warnings included. *Paged*: of those, the runs with a
  critical one (lrwatch reports a divergence on a guessed loss or an RL run's loss as a warning
  that neither pages nor cuts; every baseline alarm counts as a page). *Oscillation*: recall
  over oscillating runs; false alarms over healthy runs. *Plateau*: first ``plateau`` flag on
  the loss at or after the onset (and before the plateau's end, where labelled). *Overfit*:
  first ``overfit`` flag on the validation loss at or after the validation minimum; false when
  flagged on a non-diverging, non-overfit run whose validation loss ends < 5 % above its
  minimum.
- *LR cuts*: a replayed finding whose ``action`` is ``scale_lr`` with a factor < 1, under the
  config scored (the default config unless ``--config``); ReduceLROnPlateau's flags on the same
  runs for comparison. Counted on healthy runs (a hand label ``spike_recovers`` is healthy).
- *Still improving*: a cut or flag at step s is on a run still improving when the loss went on
  to fall: with ``h`` = as many logged values as the run had up to s (capped by what is left),
  the mean of the ``h`` values after s is ≥ 5 % (of its magnitude) below the mean of the last
  ``max(1, h // 4)`` values up to s. A cut with fewer than 3 values after it is not counted.
  The horizon grows with the run, because logs are sampled from every step to every epoch.
- *Real logs*: a log lrwatch does not read (no metric of it plays the ``loss`` or ``val_loss``
  role; see reallogs.py) is *not read*. It counts as a miss in every recall (lrwatch would not
  have caught it), and is left out of every false-alarm and LR-cut denominator (nothing was
  watched, so nothing passed). ``unstable`` logs are shown apart, in no denominator. Hand labels
  map as reallogs.LABELS says, onsets as reallogs.onset() says.

Writes ``benchmarks/results/detection.md`` (the tables, and one row per real log),
``detection_runs.csv`` (one row per run of every corpus) and ``detection.png``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.detection import reallogs, splits, synthetic
from benchmarks.detection.baselines import DIVERGENCE, early_stopping, reduce_on_plateau, twice_min
from benchmarks.detection.labelled import (
    Run,
    attach,
    first_at_or_after,
    load,
    replay,
    still_improving,
)

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
RESULTS = HERE.parent / "results"
NON_DIVERGING = ("healthy", "oscillation", "plateau", "drift", "overfit")
# An onset read off the curve in hindsight is where the loss had visibly left its level; an
# alarm up to this many steps before it counts as a detection (with delay 0), not a false alarm.
HINDSIGHT_SLACK = 10
RLROP = "ReduceLROnPlateau(10)"
ES = "EarlyStopping(10) on val"
METHODS = ("lrwatch", "NaN-only", "2x running min", RLROP, ES)


@dataclass
class Corpus:
    title: str
    runs: list[Run]
    replayed: float | str  # lrwatch replay's wall time, or how the real logs were replayed
    about: str = ""


def readable(r: Run) -> bool:
    return bool(r.labels.get("read", True))


@cache
def _rlrop(series: tuple[tuple[int, float], ...]) -> list[int]:
    return reduce_on_plateau(list(series))


def rlrop(r: Run) -> list[int]:
    return _rlrop(tuple(r.loss()))


def pct(xs: list[int], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def frac(num: int, den: int) -> str:
    return f"{num / den:.2f} ({num}/{den})" if den else "—"


def count(num: int, den: int) -> str:
    return f"{num}/{den}" if den else "—"


def index_at(series: list[tuple[int, float]], step: int) -> int | None:
    return next((k for k, (s, _) in enumerate(series) if s >= step), None)


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Scores:
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, **cols: str) -> None:
        self.rows.append((metric, cols))


def coverage_scores(runs: list[Run], scores: Scores) -> None:
    if any("read" in r.labels for r in runs):
        value = frac(sum(readable(r) for r in runs), len(runs))
    else:
        value = f"all {len(runs)} (JSONL)"
    scores.add("runs lrwatch read (a loss or val_loss metric found)", lrwatch=value, target="")


def divergence_scores(runs: list[Run], scores: Scores) -> None:
    diverging = [r for r in runs if r.label == "divergence"]
    quiet = [r for r in runs if r.label in NON_DIVERGING and readable(r)]
    methods: dict[str, Callable[[Run], list[int]]] = {
        "lrwatch": lambda r: r.lrwatch_steps("divergence"),
        **{name: (lambda r, fn=fn: fn(r.loss())) for name, fn in DIVERGENCE.items()},
    }
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    delays_by_method: dict[str, list[int]] = {}
    for method, alarms in methods.items():
        delays, early, warnable, before_onset = [], 0, 0, 0
        in_values: list[int] = []  # the delays counted in logged values
        every_step: list[int] = []  # the delays of the runs logged at every step
        for r in diverging:
            assert r.onset is not None
            steps = alarms(r)
            start = r.onset - (HINDSIGHT_SLACK if r.labels["onset_from"] == "hindsight" else 0)
            hit = first_at_or_after(steps, start)
            before_onset += any(s < start for s in steps)
            if hit is not None:
                delays.append(max(0, hit - r.onset))
                in_values.append(_values_between(r, r.onset, hit))
                if _log_every(r) == 1:
                    every_step.append(delays[-1])
            nonfinite = r.labels["first_nonfinite_step"]
            if nonfinite is not None and _warnable(r, nonfinite):
                warnable += 1
                early += hit is not None and hit < nonfinite
        false = sum(bool(alarms(r)) for r in quiet)
        # Pages: a baseline's every alarm is one; lrwatch's divergence on a loss it only
        # guessed, or on an RL run's loss, is a warning that neither pages nor cuts.
        paged = [r for r in quiet if alarms(r)]
        if method == "lrwatch":
            paged = [r for r in paged if r.lrwatch_steps("divergence", severity="critical")]
        delays_by_method[method] = delays
        c = cols[method]
        c["recall"] = frac(len(delays), len(diverging))
        c["median"] = fmt(pct(delays, 0.5))
        c["median_values"] = fmt(pct(in_values, 0.5))
        every = sum(_log_every(r) == 1 for r in diverging)
        c["median_every_step"] = f"{fmt(pct(every_step, 0.5))} ({len(every_step)} of {every} runs)"
        c["p90"] = fmt(pct(delays, 0.9))
        c["early"] = frac(early, warnable)
        c["false"] = frac(false, len(quiet))
        c["paged"] = frac(len(paged), len(quiet))
        c["pre"] = count(before_onset, len(diverging))
        for label in NON_DIVERGING:
            group = [r for r in quiet if r.label == label]
            c[f"false_{label}"] = count(sum(bool(alarms(r)) for r in group), len(group))
    targets = {"recall": "≥ 0.97", "median": "≤ 5", "early": "≥ 0.95", "false": "≤ 0.02"}
    names = {
        "recall": "divergence recall (diverging runs)",
        "median": "median delay after onset (steps)",
        "median_values": "… in logged values (the alarm's value counted from the first value "
        "at or after the onset: 0 is an alarm on that value)",
        "median_every_step": "… in steps, on the runs logged at every step (runs caught of those)",
        "p90": "p90 delay after onset (steps)",
        "early": "early warning: alarm before the first non-finite value (runs going "
        "non-finite ≥ 2 logged values after the onset)",
        "false": "false divergence alarms (non-diverging runs)",
        "paged": "… of which paged (critical: not a warning on a guessed or an RL run's loss)",
        "pre": "diverging runs with an alarm before the onset",
    }
    for key, title in names.items():
        scores.add(title, **{m: cols[m][key] for m in methods}, target=targets.get(key, ""))
    for label in NON_DIVERGING:
        scores.add(f"… of which {label}", **{m: cols[m][f"false_{label}"] for m in methods})
    scores.plot["divergence_delays"] = delays_by_method


def _values_between(r: Run, onset: int, hit: int) -> int:
    """Logged loss values from the first at or after ``onset`` to the one at ``hit``."""
    steps = [s for s, _ in r.loss()]
    return max(0, bisect.bisect_left(steps, hit) - bisect.bisect_left(steps, onset))


def _warnable(r: Run, nonfinite: int) -> bool:
    """Does the first non-finite loss come at least 2 logged values after the onset?"""
    assert r.onset is not None
    start, bad = index_at(r.loss(), r.onset), index_at(r.loss(), nonfinite)
    return start is not None and bad is not None and bad - start >= 2


def _log_every(r: Run) -> int:
    steps = [s for s, _ in r.loss()]
    gaps = [b - a for a, b in pairwise(steps)]
    return int(statistics.median(gaps)) if gaps else 1


def oscillation_scores(runs: list[Run], scores: Scores) -> None:
    osc = [r for r in runs if r.label == "oscillation"]
    healthy = [r for r in runs if r.label == "healthy" and readable(r)]
    found = sum(bool(r.lrwatch_steps("oscillation")) for r in osc)
    false = sum(bool(r.lrwatch_steps("oscillation")) for r in healthy)
    twice = sum(bool(twice_min(r.loss())) for r in osc)
    scores.add(
        "oscillation recall (oscillating runs)",
        lrwatch=frac(found, len(osc)),
        target="≥ 0.9",
        **{"2x running min": f"({frac(twice, len(osc))} as divergence)" if osc else "—"},
    )
    scores.add(
        "oscillation false alarms (healthy runs)",
        lrwatch=frac(false, len(healthy)),
        target="≤ 0.05",
    )


def plateau_scores(runs: list[Run], scores: Scores) -> None:
    plateaus = [r for r in runs if r.label == "plateau"]
    ours, theirs, ours_pre, theirs_pre, ours_missed, theirs_missed = [], [], 0, 0, 0, 0
    for r in plateaus:
        assert r.onset is not None
        end = r.labels.get("plateau_end")
        mine, flags = r.lrwatch_steps("plateau", "loss"), rlrop(r)
        a, b = first_at_or_after(mine, r.onset, end), first_at_or_after(flags, r.onset, end)
        ours_pre += any(s < r.onset for s in mine)
        theirs_pre += any(s < r.onset for s in flags)
        if a is None:
            ours_missed += 1
        else:
            ours.append(a - r.onset)
        if b is None:
            theirs_missed += 1
        else:
            theirs.append(b - r.onset)
    scores.add(
        "plateau: median steps from onset to flag",
        lrwatch=fmt(pct(ours, 0.5), 1),
        **{RLROP: fmt(pct(theirs, 0.5), 1)},
        target="≤ ReduceLROnPlateau",
    )
    scores.add(
        "plateau: p90 steps from onset to flag",
        lrwatch=fmt(pct(ours, 0.9)),
        **{RLROP: fmt(pct(theirs, 0.9))},
    )
    n = len(plateaus)
    scores.add(
        "plateau runs never flagged / flagged before the onset (of the plateau runs)",
        lrwatch=f"{ours_missed} / {ours_pre} of {n}" if n else "—",
        **{RLROP: f"{theirs_missed} / {theirs_pre} of {n}" if n else "—"},
    )
    noisy = [r for r in runs if r.label == "healthy" and r.labels.get("noisy") and readable(r)]
    mine_flags = [(r, s) for r in noisy for s in r.lrwatch_steps("plateau", "loss")]
    their_flags = [(r, s) for r in noisy for s in rlrop(r)]
    mine_bad = [(r, s) for r, s in mine_flags if still_improving(r.loss(), s)]
    their_bad = [(r, s) for r, s in their_flags if still_improving(r.loss(), s)]
    scores.add(
        "plateau flags on noisy healthy runs (batch ≤ 32) while still improving (all flags; "
        "runs with any such flag)",
        lrwatch=f"{len(mine_bad)} ({len(mine_flags)}; {len({r.name for r, _ in mine_bad})} runs)"
        if noisy
        else "—",
        **{
            RLROP: f"{len(their_bad)} ({len(their_flags)}; "
            f"{len({r.name for r, _ in their_bad})} runs)"
            if noisy
            else "—"
        },
        target="fewer",
    )
    scores.plot["plateau"] = (ours, theirs)


def lr_action_scores(runs: list[Run], scores: Scores) -> None:
    """What act mode would have done to healthy runs, against ReduceLROnPlateau's flags."""
    healthy = [r for r in runs if r.label == "healthy" and readable(r)]
    ours = [(r, f["step"], r.loss_of(f["run"])) for r in healthy for f in r.cuts()]
    theirs = [(r, s, r.loss()) for r in healthy for s in rlrop(r)]
    n = len(healthy)

    def runs_with(cuts: list[tuple[Run, int, Any]]) -> str:
        return frac(len({r.name for r, _, _ in cuts}), n)

    def total(cuts: list[tuple[Run, int, Any]]) -> str:
        return f"{len(cuts)} ({len(cuts) / n:.2f} per run)" if n else "—"

    def improving(cuts: list[tuple[Run, int, Any]]) -> str:
        bad = [(r, s) for r, s, series in cuts if still_improving(series, s)]
        return f"{len(bad)} ({len({r.name for r, _ in bad})} runs)" if n else "—"

    scores.add("healthy runs with an LR cut", lrwatch=runs_with(ours), **{RLROP: runs_with(theirs)})
    scores.add("LR cuts on healthy runs", lrwatch=total(ours), **{RLROP: total(theirs)})
    scores.add(
        "LR cuts on healthy runs that were still improving (runs)",
        lrwatch=improving(ours),
        **{RLROP: improving(theirs)},
        target="0",
    )


def drift_scores(runs: list[Run], scores: Scores) -> None:
    drifts = [r for r in runs if r.label == "drift"]
    delays, pre = [], 0
    for r in drifts:
        assert r.onset is not None
        steps = r.lrwatch_steps("drift")
        hit = first_at_or_after(steps, r.onset)
        pre += any(s < r.onset for s in steps)
        if hit is not None:
            delays.append(hit - r.onset)
    others = [
        r
        for r in runs
        if r.label in ("healthy", "plateau", "oscillation", "overfit") and readable(r)
    ]
    false = sum(bool(r.lrwatch_steps("drift")) for r in others)
    scores.add("drift detected (concept-shift streams)", lrwatch=frac(len(delays), len(drifts)))
    scores.add(
        "drift: median / p90 delay after the shift (steps)",
        lrwatch=f"{fmt(pct(delays, 0.5))} / {fmt(pct(delays, 0.9))}" if drifts else "—",
    )
    scores.add(
        "drift flagged before the shift / on other non-diverging runs",
        lrwatch=f"{count(pre, len(drifts))} / {count(false, len(others))}",
    )


def overfit_scores(runs: list[Run], scores: Scores) -> None:
    over = [r for r in runs if r.label == "overfit"]
    # Runs whose validation loss does not end 5 % above its minimum (the corpus' overfit rule;
    # some healthy runs do overfit a little, and saying so is no false alarm).
    with_val = [
        r
        for r in runs
        if r.label in NON_DIVERGING
        and r.label != "overfit"
        and r.series.get("val_loss")
        and r.labels["val_rise"] < 0.05
        and readable(r)
    ]
    ours, theirs = [], []
    for r in over:
        assert r.onset is not None
        a = first_at_or_after(r.lrwatch_steps("overfit", "val_loss"), r.onset)
        b = first_at_or_after(early_stopping(r.series.get("val_loss", [])), r.onset)
        if a is not None:
            ours.append(a - r.onset)
        if b is not None:
            theirs.append(b - r.onset)
    false_ours = sum(bool(r.lrwatch_steps("overfit")) for r in with_val)
    false_theirs = sum(bool(early_stopping(r.series["val_loss"])) for r in with_val)
    scores.add(
        "overfit detected on val_loss (overfitting runs)",
        lrwatch=frac(len(ours), len(over)),
        **{ES: frac(len(theirs), len(over))},
    )
    scores.add(
        "overfit: median delay after the validation minimum (steps)",
        lrwatch=fmt(pct(ours, 0.5)),
        **{ES: fmt(pct(theirs, 0.5))},
    )
    scores.add(
        "overfit flagged on non-diverging runs that do not overfit (val_loss ends < 5 % above "
        "its minimum)",
        lrwatch=frac(false_ours, len(with_val)),
        **{ES: frac(false_theirs, len(with_val))},
    )
    paged = sum(bool(r.lrwatch_steps("divergence")) for r in over)
    on_val = sum(bool(r.lrwatch_steps("divergence", "val_loss")) for r in over)
    scores.add(
        "overfitting runs paged as a divergence (any metric)",
        lrwatch=count(paged, len(over)) + (f" ({on_val} on val_loss)" if on_val else ""),
        target="0",
    )


def spike_scores(runs: list[Run], scores: Scores) -> None:
    spiky = [r for r in runs if r.label == "healthy" and r.labels.get("spikes_at")]
    seen = 0
    for r in spiky:
        spikes = r.lrwatch_steps("spike")
        near = max(20, 2 * _log_every(r))  # a sparse log sees the spike a sample later
        seen += any(any(abs(s - at) <= near for s in spikes) for at in r.labels["spikes_at"])
    paged = sum(bool(r.lrwatch_steps("divergence", severity="critical")) for r in spiky)
    scores.add(
        "healthy runs with injected bad batches: reported as spike / paged",
        lrwatch=f"{seen} / {paged} of {len(spiky)}" if spiky else "—",
        target="page 0",
    )
    transient = [r for r in runs if r.label == "transient"]
    scores.add(
        "LR faults the run survived by itself (not scored): divergence / spike",
        lrwatch=f"{sum(bool(r.lrwatch_steps('divergence')) for r in transient)} / "
        f"{sum(bool(r.lrwatch_steps('spike')) for r in transient)} of {len(transient)}"
        if transient
        else "—",
    )
    unstable = [r for r in runs if r.label == "unstable"]
    scores.add(
        "unstable logs (not scored): paged / LR cuts / not read",
        lrwatch=f"{sum(bool(r.lrwatch_steps('divergence')) for r in unstable)} / "
        f"{sum(len(r.cuts()) for r in unstable)} / "
        f"{sum(not readable(r) for r in unstable)} of {len(unstable)}"
        if unstable
        else "—",
    )


SCORERS = (
    coverage_scores,
    divergence_scores,
    oscillation_scores,
    plateau_scores,
    lr_action_scores,
    drift_scores,
    overfit_scores,
    spike_scores,
)


def score(runs: list[Run]) -> Scores:
    scores = Scores()
    for scorer in SCORERS:
        scorer(runs, scores)
    return scores


def per_run(corpus: str, runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        kinds: dict[str, list[int]] = defaultdict(list)
        for f in r.findings:
            kinds[f"{f['kind']}@{f['metric']}"].append(f["step"])
        rows.append(
            {
                "corpus": corpus,
                "run": r.name,
                "label": r.label,
                "read": readable(r),
                "onset": r.onset,
                "nonfinite": r.labels.get("first_nonfinite_step"),
                "lrwatch": " ".join(f"{k}:{','.join(map(str, v[:5]))}" for k, v in kinds.items()),
                "lr_cuts": ",".join(str(f["step"]) for f in r.cuts()),
                "2x_min": ",".join(map(str, twice_min(r.loss())[:20])),
                "rlrop_first": ",".join(map(str, rlrop(r)[:3])),
            }
        )
    return rows


# -- throughput --------------------------------------------------------------------------------


def throughput(runs: list[Run], n: int = 400_000) -> list[tuple[str, float]]:
    """Values per second of each detector on one core, fed real loss values (finite ones, looped
    to ``n``), the way a series feeds it: one ``update`` per value."""
    from lrwatch.detectors import DetectorsConfig, build_detectors
    from lrwatch.protocol.types import Role

    values = [v for r in runs for _, v in r.loss() if math.isfinite(v)]
    values = (values * (n // len(values) + 1))[:n]
    out = []
    cfg = DetectorsConfig()
    seen: set[str] = set()
    for role in (Role.LOSS, Role.GRAD_NORM, Role.VAL_LOSS):
        built = build_detectors(cfg, role)
        for det in built.values() if isinstance(built, dict) else built:
            name = f"{type(det).__name__} ({role.value})"
            if type(det).__name__ in seen and role is not Role.GRAD_NORM:
                continue
            seen.add(type(det).__name__)
            update = det.update
            started = time.perf_counter()
            for i, v in enumerate(values):
                update(i, v)
            out.append((name, n / (time.perf_counter() - started)))
    return out


# -- output ------------------------------------------------------------------------------------


def markdown(
    corpora: list[Corpus],
    tables: list[Scores],
    extra: list[str],
    config: Path | None,
    draws: list[Path],
) -> str:
    titles = [c.title for c in corpora]
    used = "the default config" if config is None else f"config `{config}`"
    command = "python -m benchmarks.detection.score" + "".join(f" --draw {d}" for d in draws)
    drawn = (
        " after drawing each DIR with `python -m benchmarks.detection.unseen --seed-offset N "
        "--out DIR` or `python -m benchmarks.detection.families --seed-offset N --out DIR` "
        "(N: the offset its run names' seeds carry)"
        if draws
        else ""
    )
    lines = [
        "# Detection quality: tuning and frozen test halves side by side",
        "",
        f"Reproduce: `{command}`{drawn} (checks the frozen halves first with "
        "`python -m benchmarks.detection.splits --check`). lrwatch is `lrwatch replay --format "
        f"jsonl` with {used}; the baselines see the same `loss` series. Tune on the *tune* "
        "columns; quote the *test (frozen)* ones. Definitions: the docstring of "
        "`benchmarks/detection/score.py`.",
        "",
    ]
    for c in corpora:
        took = c.replayed if isinstance(c.replayed, str) else f"replay {c.replayed:.1f} s"
        lines.append(f"- **{c.title}**: {c.about} ({took})")
    lines += [
        "",
        "| metric | method | " + " | ".join(titles) + " | target |",
        "| --- | --- | " + " | ".join("---" for _ in titles) + " | --- |",
    ]
    order: dict[str, dict[str, None]] = {}
    targets: dict[str, str] = {}
    cells: dict[tuple[str, str, int], str] = {}
    for k, scores in enumerate(tables):
        for metric, cols in scores.rows:
            methods = order.setdefault(metric, {})
            for method in METHODS:
                if method in cols:
                    methods[method] = None
                    cells[(metric, method, k)] = cols[method]
            targets[metric] = targets.get(metric) or cols.get("target", "")
    for metric, methods in order.items():
        ranked = sorted(methods, key=METHODS.index)
        for j, method in enumerate(ranked):
            values = [cells.get((metric, method, k), "") for k in range(len(tables))]
            head = f"{metric} | " if j == 0 else " | "
            tail = targets[metric] if j == 0 else ""
            lines.append(f"| {head}{method} | " + " | ".join(values) + f" | {tail} |")
    return "\n".join([*lines, "", *extra])


def fault_table(tune: list[Run], test: list[Run]) -> list[str]:
    """The synthetic runs by injected fault: which findings lrwatch made on how many runs, and
    how many runs it would have cut the LR of (of which while still improving)."""
    kinds = ("divergence", "oscillation", "plateau", "overfit", "spike")
    lines = [
        "## The synthetic runs by injected fault (tune | test)",
        "",
        "Runs of each fault with at least one lrwatch finding of each kind, and with an LR cut "
        "(in brackets: with a cut while still improving).",
        "",
        "| label / fault | runs | " + " | ".join(kinds) + " | LR cut |",
        "| --- | --- | " + " | ".join("---" for _ in kinds) + " | --- |",
    ]
    groups: dict[str, list[list[Run]]] = defaultdict(lambda: [[], []])
    for k, runs in enumerate((tune, test)):
        for r in runs:
            groups[f"{r.label} / {r.labels.get('fault', '?')}"][k].append(r)

    def cut(r: Run) -> bool:
        return any(still_improving(r.loss_of(f["run"]), f["step"]) for f in r.cuts())

    for name, halves in groups.items():
        cells = [" \\| ".join(str(len(h)) for h in halves)]
        for kind in kinds:
            cells.append(
                " \\| ".join(str(sum(bool(r.lrwatch_steps(kind)) for r in h)) for h in halves)
            )
        cells.append(
            " \\| ".join(
                f"{sum(bool(r.cuts()) for r in h)} ({sum(cut(r) for r in h)})" for h in halves
            )
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def throughput_md(tput: list[tuple[str, float]]) -> list[str]:
    if not tput:
        return []
    lines = [
        "Throughput, one core, one `update()` per value (target ≥ 200,000 values/s):",
        "",
        "| detector | values/s |",
        "| --- | --- |",
    ]
    return lines + [f"| {name} | {rate:,.0f} |" for name, rate in tput] + [""]


def about(runs: list[Run], what: str) -> str:
    counts = Counter(r.label for r in runs)
    composition = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    samples = sum(len(s) for r in runs for s in r.series.values())
    if any("read" in r.labels for r in runs):
        read = f"{samples:,} loss and val_loss values lrwatch read"
        return f"{what}: {len(runs)} logs ({composition}), {read}"
    return f"{what}: {len(runs)} runs ({composition}), {samples:,} values"


def plot(runs: list[Run], scores: Scores, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0][0]
    delays = scores.plot["divergence_delays"]
    names = list(delays)
    ax.boxplot([[max(d, 0.5) for d in delays[n]] or [math.nan] for n in names], whis=(0, 100))
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_yscale("log")
    ax.set_ylabel("steps from onset to alarm")
    ax.set_title("divergence: detection delay (detected runs, development corpus)")
    ax = axes[0][1]
    ours, theirs = scores.plot["plateau"]
    ax.boxplot(
        [[max(d, 0.5) for d in ours] or [math.nan], [max(d, 0.5) for d in theirs] or [math.nan]],
        whis=(0, 100),
    )
    ax.set_xticks([1, 2], ["lrwatch", RLROP])
    ax.set_yscale("log")
    ax.set_title("plateau: steps from onset to first flag (development corpus)")
    for ax, name in zip(axes[1], _examples(runs), strict=False):
        run = next(r for r in runs if r.name == name)
        steps = [s for s, _ in run.loss()]
        ax.semilogy(steps, [v for _, v in run.loss()], lw=0.6, label="loss")
        if "grad_norm" in run.series:
            ax.semilogy(
                *zip(*run.series["grad_norm"], strict=True), lw=0.5, alpha=0.5, label="grad_norm"
            )
        if run.onset is not None:
            ax.axvline(run.onset, color="k", ls=":", lw=1, label="onset")
        for f in run.findings:
            colour = {
                "divergence": "r",
                "spike": "orange",
                "plateau": "g",
                "oscillation": "m",
                "drift": "b",
            }.get(f["kind"], "grey")
            ax.axvline(f["step"], color=colour, lw=1, alpha=0.8)
        twice = twice_min(run.loss())
        if twice:
            ax.axvline(twice[0], color="grey", ls="--", lw=1, label="2x running min")
        ax.set_title(f"{name} (lines: lrwatch findings)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def _examples(runs: list[Run]) -> list[str]:
    prefer = [
        "divergence/digits_tanh_mse_warmup_too_high_s0",
        "healthy/char_lm_spikes_adam_warmup_s0",
    ]
    names = {r.name for r in runs}
    return [n for n in prefer if n in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the development corpus")
    parser.add_argument("--reallogs", type=Path, default=None)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument(
        "--draw",
        type=Path,
        action="append",
        default=[],
        help="also score a fresh draw (unseen.py or families.py --seed-offset N --out DIR), "
        "a column of its own: runs no rule was ever tuned on; repeatable",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root = args.reallogs or splits.REALLOGS
    if splits.main(["--check", "--reallogs", str(root)]) != 0:
        sys.exit("refusing to report: the frozen test half changed (splits.py --check)")
    halves = splits.reallog_split(root)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        synth = {split: Path(tmp) / split for split in ("tune", "test")}
        for split, out in synth.items():
            synthetic.write(split, out)
        paths = [synth["tune"], synth["test"], args.corpus, splits.UNSEEN, *args.draw]
        pending = [pool.submit(replay, path, args.config) for path in paths]
        folders, replayed = reallogs.load(root, halves, args.config)
        replays = [p.result() for p in pending]
        loaded = [load(path) for path in paths]
    for path, rep, runs in zip(paths, replays, loaded, strict=True):
        if rep.returncode != 0:
            sys.exit(f"lrwatch replay {path} failed ({rep.returncode}):\n{rep.stderr}")
        attach(runs, rep.findings)
    real = {half: [f.run for f in folders if f.split == half] for half in ("tune", "test")}
    corpora = [
        Corpus("synthetic tune", loaded[0], replays[0].seconds),
        Corpus("synthetic test (frozen)", loaded[1], replays[1].seconds),
        Corpus("reallogs tune", real["tune"], replayed),
        Corpus("reallogs test (frozen)", real["test"], replayed),
        Corpus("development corpus", loaded[2], replays[2].seconds),
    ]
    unseen = splits.unseen_split(splits.UNSEEN)
    for half in ("tune", "test"):
        runs = [r for r in loaded[3] if r.name in unseen[half]]
        title = "unseen real runs " + ("tune" if half == "tune" else "test (frozen)")
        corpora.append(Corpus(title, runs, replays[3].seconds))
        what = f"{splits.UNSEEN.name}/ (unseen.py), real PyTorch runs of new families, {half} half"
        corpora[-1].about = about(runs, what)
    for path, rep, runs in zip(args.draw, replays[4:], loaded[4:], strict=True):
        stamp = path / "GENERATOR"  # (draws made before it existed are unseen.py's)
        made = stamp.read_text().strip() if stamp.exists() else "unseen.py"
        what = f"{made}, drawn afresh into {path} (the offset is in the run names' seeds)"
        corpora.append(Corpus(f"fresh draw {path.name}", runs, rep.seconds, about(runs, what)))
    corpora[0].about = about(loaded[0], "synthetic.py --split tune (seeds 0..)")
    corpora[1].about = about(loaded[1], "synthetic.py --split test (seeds 100000..)")
    corpora[2].about = about(real["tune"], f"{root.name}, tune half")
    corpora[3].about = about(real["test"], f"{root.name}, test half")
    corpora[4].about = about(loaded[2], f"{args.corpus.name}/, real small PyTorch runs")
    tables = [score(c.runs) for c in corpora]
    tput = [] if args.no_throughput else throughput(loaded[2])
    extra = fault_table(loaded[0], loaded[1]) + throughput_md(tput) + reallogs.table(folders)
    extra.append(f"Whole command: {time.perf_counter() - started:.0f} s.")
    text = markdown(corpora, tables, extra, args.config, args.draw) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "detection.md", text)
    rows = [row for c in corpora for row in per_run(c.title, c.runs)]
    tmp_csv = args.out / ".detection_runs.csv.tmp"
    with tmp_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp_csv.replace(args.out / "detection_runs.csv")
    plot(loaded[2], tables[4], args.out / "detection.png")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    main()
