"""Score lrwatch's detectors on the labelled corpus, side by side with the usual baselines.

Run from the repository root (about a minute; the corpus is committed, so no training):

    .venv/bin/python -m benchmarks.detection.score [--corpus DIR] [--config lrwatch.yaml]

lrwatch is scored through its contract: ``lrwatch replay --format jsonl`` over the corpus, in a
subprocess, exactly as a user tuning thresholds would run it. The baselines see the same loss
series (the ``loss`` metric of each run):

- **NaN-only** (Keras ``TerminateOnNaN``): an alarm at the first non-finite loss;
- **2x running minimum**: an alarm when the loss exceeds twice the lowest loss seen so far (or
  is non-finite);
- **ReduceLROnPlateau(patience=10)**: torch's scheduler stepped with each loss; a "flag" is each
  step at which it would cut the LR;
- **EarlyStopping(patience=10)** (Keras) on the validation loss, for overfitting.

Writes ``benchmarks/results/detection.md`` (the tables), ``detection_runs.csv`` (per run) and
``detection.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
RESULTS = HERE.parent / "results"
NON_DIVERGING = ("healthy", "oscillation", "plateau", "drift", "overfit")
# An onset read off the curve in hindsight is where the loss had visibly left its level; an
# alarm up to this many steps before it counts as a detection (with delay 0), not a false alarm.
HINDSIGHT_SLACK = 10


@dataclass
class Run:
    name: str  # <label>/<name>, as lrwatch replay names it
    labels: dict[str, Any]
    series: dict[str, list[tuple[int, float]]]
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.labels["label"])

    @property
    def onset(self) -> int | None:
        onset = self.labels.get("onset_step")
        return None if onset is None else int(onset)

    def loss(self) -> list[tuple[int, float]]:
        return self.series["loss"]

    def lrwatch_steps(self, kind: str, metric: str | None = None) -> list[int]:
        return sorted(
            f["step"]
            for f in self.findings
            if f["kind"] == kind and (metric is None or f["metric"] == metric)
        )


def load(corpus: Path) -> list[Run]:
    runs = []
    for labels_path in sorted(corpus.glob("*/*/labels.json")):
        directory = labels_path.parent
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        with (directory / "metrics.jsonl").open() as f:
            for line in f:
                record = json.loads(line)
                step = int(record.pop("step"))
                for key, value in record.items():
                    series[key].append((step, float(value)))
        name = f"{directory.parent.name}/{directory.name}"
        runs.append(Run(name, json.loads(labels_path.read_text()), dict(series)))
    return runs


def replay(corpus: Path, config: Path | None) -> tuple[list[dict[str, Any]], float]:
    """lrwatch's findings over the whole corpus, through the CLI's JSONL contract."""
    cmd = [sys.executable, "-m", "lrwatch", "replay", "--format", "jsonl", str(corpus)]
    if config is not None:
        cmd += ["--config", str(config)]
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line], time.perf_counter() - started


# -- baselines ---------------------------------------------------------------------------------


def nan_only(series: list[tuple[int, float]]) -> list[int]:
    return [s for s, v in series if not math.isfinite(v)][:1]


def twice_min(series: list[tuple[int, float]]) -> list[int]:
    """Every step at which the rule holds (a stateless threshold fires again and again)."""
    low, alarms = math.inf, []
    for step, value in series:
        if not math.isfinite(value) or value > 2.0 * low:
            alarms.append(step)
        if math.isfinite(value):
            low = min(low, value)
    return alarms


def reduce_on_plateau(series: list[tuple[int, float]], patience: int = 10) -> list[int]:
    import torch

    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=patience, min_lr=0.0)
    flags = []
    for step, value in series:
        before = opt.param_groups[0]["lr"]
        sched.step(value)
        if opt.param_groups[0]["lr"] < before:
            flags.append(step)
            opt.param_groups[0]["lr"] = 1.0  # count every flag, not just until the LR underflows
    return flags


def early_stopping(series: list[tuple[int, float]], patience: int = 10) -> list[int]:
    best, wait = math.inf, 0
    for step, value in series:
        if value < best:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return [step]
    return []


BASELINES: dict[str, Callable[[list[tuple[int, float]]], list[int]]] = {
    "NaN-only": nan_only,
    "2x running min": twice_min,
}


# -- scoring helpers ---------------------------------------------------------------------------


def first_at_or_after(steps: Iterable[int], onset: int, end: int | None = None) -> int | None:
    return next((s for s in steps if s >= onset and (end is None or s <= end)), None)


def pct(xs: list[int], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}f}"


def frac(num: int, den: int) -> str:
    return f"{num / den:.2f} ({num}/{den})" if den else "—"


def still_improving(series: list[tuple[int, float]], step: int) -> bool | None:
    """Was a plateau flag at ``step`` wrong? The loss went on to fall 5 % or more: the mean of
    the next 200 values is 5 % below the mean of the 51 up to the flag. None if the run ends
    too soon after the flag to tell (fewer than 100 values left)."""
    values = [v for _, v in series]
    i = next(k for k, (s, _) in enumerate(series) if s >= step)
    future = [v for v in values[i + 1 : i + 201] if math.isfinite(v)]
    past = [v for v in values[max(0, i - 50) : i + 1] if math.isfinite(v)]
    if len(future) < 100 or not past:
        return None
    return statistics.fmean(future) <= 0.95 * statistics.fmean(past)


# -- the benchmark -----------------------------------------------------------------------------


@dataclass
class Scores:
    rows: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    per_run: list[dict[str, Any]] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)

    def add(self, metric: str, **cols: str) -> None:
        self.rows.append((metric, cols))


def divergence_scores(runs: list[Run], scores: Scores) -> None:
    diverging = [r for r in runs if r.label == "divergence"]
    quiet = [r for r in runs if r.label in NON_DIVERGING]
    methods: dict[str, Callable[[Run], list[int]]] = {
        "lrwatch": lambda r: r.lrwatch_steps("divergence"),
        **{name: (lambda r, fn=fn: fn(r.loss())) for name, fn in BASELINES.items()},
    }
    cols: dict[str, dict[str, str]] = defaultdict(dict)
    delays_by_method: dict[str, list[int]] = {}
    for method, alarms in methods.items():
        delays, early, went_nan, before_onset = [], 0, 0, 0
        for r in diverging:
            assert r.onset is not None
            steps = alarms(r)
            start = r.onset - (HINDSIGHT_SLACK if r.labels["onset_from"] == "hindsight" else 0)
            hit = first_at_or_after(steps, start)
            before_onset += any(s < start for s in steps)
            if hit is not None:
                delays.append(max(0, hit - r.onset))
            nonfinite = r.labels["first_nonfinite_step"]
            if nonfinite is not None:
                went_nan += 1
                early += hit is not None and hit < nonfinite
        false = sum(bool(alarms(r)) for r in quiet)
        delays_by_method[method] = delays
        c = cols[method]
        c["recall"] = frac(len(delays), len(diverging))
        c["median"] = fmt(pct(delays, 0.5))
        c["p90"] = fmt(pct(delays, 0.9))
        c["early"] = frac(early, went_nan)
        c["false"] = frac(false, len(quiet))
        c["pre"] = str(before_onset)
        for label in NON_DIVERGING:
            group = [r for r in quiet if r.label == label]
            c[f"false_{label}"] = f"{sum(bool(alarms(r)) for r in group)}/{len(group)}"
    targets = {
        "recall": "≥ 0.97",
        "median": "≤ 5",
        "p90": "",
        "early": "≥ 0.95",
        "false": "≤ 0.02",
        "pre": "",
    }
    names = {
        "recall": f"divergence recall ({len(diverging)} diverging runs)",
        "median": "median delay after onset (steps)",
        "p90": "p90 delay after onset (steps)",
        "early": "early warning: alarm strictly before the first non-finite value",
        "false": f"false divergence alarms ({len(quiet)} non-diverging runs)",
        "pre": "diverging runs with an alarm before the onset",
    }
    for key, title in names.items():
        scores.add(title, **{m: cols[m][key] for m in methods}, target=targets[key])
    for label in NON_DIVERGING:
        scores.add(
            f"… of which {label}", **{m: cols[m][f"false_{label}"] for m in methods}, target=""
        )
    scores.plot["divergence_delays"] = delays_by_method


def oscillation_scores(runs: list[Run], scores: Scores) -> None:
    osc = [r for r in runs if r.label == "oscillation"]
    healthy = [r for r in runs if r.label == "healthy"]
    found = sum(bool(r.lrwatch_steps("oscillation")) for r in osc)
    false = sum(bool(r.lrwatch_steps("oscillation")) for r in healthy)
    twice = sum(bool(twice_min(r.loss())) for r in osc)
    scores.add(
        f"oscillation recall ({len(osc)} oscillating runs)",
        lrwatch=frac(found, len(osc)),
        target="≥ 0.9",
        **{"2x running min": f"({frac(twice, len(osc))} as divergence)"},
    )
    scores.add(
        f"oscillation false alarms ({len(healthy)} healthy runs)",
        lrwatch=frac(false, len(healthy)),
        target="≤ 0.05",
    )


def plateau_scores(runs: list[Run], scores: Scores) -> None:
    plateaus = [r for r in runs if r.label == "plateau"]
    ours, theirs, ours_pre, theirs_pre, ours_missed, theirs_missed = [], [], 0, 0, 0, 0
    for r in plateaus:
        assert r.onset is not None
        end = r.labels.get("plateau_end")
        mine, rlrop = r.lrwatch_steps("plateau", "loss"), reduce_on_plateau(r.loss())
        a, b = first_at_or_after(mine, r.onset, end), first_at_or_after(rlrop, r.onset, end)
        ours_pre += any(s < r.onset for s in mine)
        theirs_pre += any(s < r.onset for s in rlrop)
        if a is None:
            ours_missed += 1
        else:
            ours.append(a - r.onset)
        if b is None:
            theirs_missed += 1
        else:
            theirs.append(b - r.onset)
        r.labels["_plateau"] = (a, b)
    rl = "ReduceLROnPlateau(10)"
    scores.add(
        f"plateau: median steps from onset to flag ({len(plateaus)} plateau runs)",
        lrwatch=fmt(pct(ours, 0.5), 1),
        **{rl: fmt(pct(theirs, 0.5), 1)},
        target="≤ ReduceLROnPlateau",
    )
    scores.add(
        "plateau: p90 steps from onset to flag",
        lrwatch=fmt(pct(ours, 0.9)),
        **{rl: fmt(pct(theirs, 0.9))},
        target="",
    )
    scores.add(
        "plateau runs never flagged / flagged before the onset",
        lrwatch=f"{ours_missed} / {ours_pre}",
        **{rl: f"{theirs_missed} / {theirs_pre}"},
        target="",
    )
    noisy = [r for r in runs if r.label == "healthy" and r.labels.get("noisy")]
    mine_flags = [(r, s) for r in noisy for s in r.lrwatch_steps("plateau", "loss")]
    their_flags = [(r, s) for r in noisy for s in reduce_on_plateau(r.loss())]
    mine_bad = sum(bool(still_improving(r.loss(), s)) for r, s in mine_flags)
    their_bad = sum(bool(still_improving(r.loss(), s)) for r, s in their_flags)
    samples = sum(len(r.loss()) for r in noisy)
    scores.add(
        f"spurious plateau flags on noisy healthy runs ({len(noisy)} runs, batch ≤ 32): "
        "flags while the loss went on to fall ≥ 5 % (all flags)",
        lrwatch=f"{mine_bad} ({len(mine_flags)})",
        **{rl: f"{their_bad} ({len(their_flags)})"},
        target="fewer",
    )
    scores.add(
        "… runs with any such flag",
        lrwatch=f"{len({r.name for r, s in mine_flags if still_improving(r.loss(), s)})}",
        **{rl: f"{len({r.name for r, s in their_flags if still_improving(r.loss(), s)})}"},
        target="",
    )
    scores.plot["plateau"] = (ours, theirs)
    scores.plot["noisy_samples"] = samples


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
    others = [r for r in runs if r.label in ("healthy", "plateau", "oscillation", "overfit")]
    false = sum(bool(r.lrwatch_steps("drift")) for r in others)
    scores.add(
        f"drift detected ({len(drifts)} concept-shift streams)",
        lrwatch=frac(len(delays), len(drifts)),
        target="",
    )
    scores.add(
        "drift: median / p90 delay after the shift (steps)",
        lrwatch=f"{fmt(pct(delays, 0.5))} / {fmt(pct(delays, 0.9))}",
        target="",
    )
    scores.add(
        f"drift flagged before the shift / on the {len(others)} other non-diverging runs",
        lrwatch=f"{pre}/{len(drifts)} / {false}/{len(others)}",
        target="",
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
        and "val_loss" in r.series
        and r.labels["val_rise"] < 0.05
    ]
    ours, theirs = [], []
    for r in over:
        assert r.onset is not None
        a = first_at_or_after(r.lrwatch_steps("overfit", "val_loss"), r.onset)
        b = first_at_or_after(early_stopping(r.series["val_loss"]), r.onset)
        if a is not None:
            ours.append(a - r.onset)
        if b is not None:
            theirs.append(b - r.onset)
    false_ours = sum(bool(r.lrwatch_steps("overfit")) for r in with_val)
    false_theirs = sum(bool(early_stopping(r.series["val_loss"])) for r in with_val)
    es = "EarlyStopping(10) on val"
    scores.add(
        f"overfit detected on val_loss ({len(over)} overfitting runs)",
        lrwatch=frac(len(ours), len(over)),
        **{es: frac(len(theirs), len(over))},
        target="",
    )
    scores.add(
        "overfit: median delay after the validation minimum (steps)",
        lrwatch=fmt(pct(ours, 0.5)),
        **{es: fmt(pct(theirs, 0.5))},
        target="",
    )
    scores.add(
        f"overfit flagged on non-diverging runs that do not overfit ({len(with_val)} runs "
        "whose val_loss ends < 5 % above its minimum)",
        lrwatch=frac(false_ours, len(with_val)),
        **{es: frac(false_theirs, len(with_val))},
        target="",
    )
    divergence_on_val = sum(
        bool(r.lrwatch_steps("divergence", "val_loss")) for r in runs if r.label == "overfit"
    )
    scores.add(
        "overfitting runs paged as a divergence (any metric)",
        lrwatch=f"{sum(bool(r.lrwatch_steps('divergence')) for r in over)}/{len(over)}"
        + (f" ({divergence_on_val} on val_loss)" if divergence_on_val else ""),
        target="0",
    )


def spike_scores(runs: list[Run], scores: Scores) -> None:
    spiky = [r for r in runs if r.label == "healthy" and r.labels.get("spikes_at")]
    seen = 0
    for r in spiky:
        spikes = r.lrwatch_steps("spike")
        seen += any(any(abs(s - at) <= 20 for s in spikes) for at in r.labels["spikes_at"])
    paged = sum(bool(r.lrwatch_steps("divergence")) for r in spiky)
    scores.add(
        f"healthy runs with injected bad batches ({len(spiky)}): reported as spike / paged",
        lrwatch=f"{seen} / {paged}",
        target="page 0",
    )
    transient = [r for r in runs if r.label == "transient"]
    if transient:
        scores.add(
            f"LR faults the run survived by itself ({len(transient)}, not scored): "
            "divergence / spike",
            lrwatch=f"{sum(bool(r.lrwatch_steps('divergence')) for r in transient)} / "
            f"{sum(bool(r.lrwatch_steps('spike')) for r in transient)}",
            target="",
        )


def per_run(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        kinds: dict[str, list[int]] = defaultdict(list)
        for f in r.findings:
            kinds[f"{f['kind']}@{f['metric']}"].append(f["step"])
        rows.append(
            {
                "run": r.name,
                "label": r.label,
                "onset": r.onset,
                "nonfinite": r.labels["first_nonfinite_step"],
                "lrwatch": " ".join(f"{k}:{','.join(map(str, v[:5]))}" for k, v in kinds.items()),
                "2x_min": ",".join(map(str, twice_min(r.loss()))),
                "rlrop_first": ",".join(map(str, reduce_on_plateau(r.loss())[:3])),
            }
        )
    return rows


# -- throughput --------------------------------------------------------------------------------


def throughput(runs: list[Run], n: int = 400_000) -> list[tuple[str, float]]:
    """Values per second of each detector on one core, fed real loss values (finite ones, looped
    to ``n``), the way a series feeds it: one ``update`` per value."""
    from lrwatch.detectors import DetectorsConfig, build_detectors
    from lrwatch.types import Role

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


def markdown(scores: Scores, tput: list[tuple[str, float]], meta: dict[str, Any]) -> str:
    methods = [
        "lrwatch",
        "NaN-only",
        "2x running min",
        "ReduceLROnPlateau(10)",
        "EarlyStopping(10) on val",
        "target",
    ]
    used = [m for m in methods if any(m in cols for _, cols in scores.rows)]
    lines = [
        "# Detection quality on the labelled corpus",
        "",
        f"Corpus: {meta['runs']} real PyTorch runs ({meta['composition']}), "
        f"{meta['samples']:,} logged values. Reproduce: "
        "`.venv/bin/python -m benchmarks.detection.score` (regenerate the corpus first with "
        "`.venv/bin/python -m benchmarks.detection.corpus`).",
        f"lrwatch: `lrwatch replay --format jsonl` over the corpus, default config "
        f"({meta['replay_seconds']:.1f} s). Baselines see the same `loss` series.",
        "",
        "| metric | " + " | ".join(used) + " |",
        "| --- | " + " | ".join("---" for _ in used) + " |",
    ]
    for metric, cols in scores.rows:
        lines.append(f"| {metric} | " + " | ".join(cols.get(m, "") for m in used) + " |")
    lines += [
        "",
        "Throughput, one core, one `update()` per value (target ≥ 200,000 values/s):",
        "",
        "| detector | values/s |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in tput]
    lines += ["", "Definitions: see the docstring of `benchmarks/detection/score.py`.", ""]
    return "\n".join(lines)


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
    ax.set_title("divergence: detection delay (detected runs)")
    ax = axes[0][1]
    ours, theirs = scores.plot["plateau"]
    ax.boxplot(
        [[max(d, 0.5) for d in ours] or [math.nan], [max(d, 0.5) for d in theirs] or [math.nan]],
        whis=(0, 100),
    )
    ax.set_xticks([1, 2], ["lrwatch", "ReduceLROnPlateau(10)"])
    ax.set_yscale("log")
    ax.set_title("plateau: steps from onset to first flag")
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
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-throughput", action="store_true")
    args = parser.parse_args(argv)
    runs = load(args.corpus)
    findings, seconds = replay(args.corpus, args.config)
    by_run = {r.name: r for r in runs}
    for f in findings:
        by_run[f["run"]].findings.append(f)
    scores = Scores()
    divergence_scores(runs, scores)
    oscillation_scores(runs, scores)
    plateau_scores(runs, scores)
    drift_scores(runs, scores)
    overfit_scores(runs, scores)
    spike_scores(runs, scores)
    tput = [] if args.no_throughput else throughput(runs)
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        counts[r.label] += 1
    meta = {
        "runs": len(runs),
        "composition": ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        "samples": sum(len(s) for r in runs for s in r.series.values()),
        "replay_seconds": seconds,
    }
    text = markdown(scores, tput, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.md").write_text(text)
    rows = per_run(runs)
    with (args.out / "detection_runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(runs, scores, args.out / "detection.png")


if __name__ == "__main__":
    main()
