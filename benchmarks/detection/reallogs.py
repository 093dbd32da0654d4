"""The real published logs (``shared/reallogs``) as labelled runs, and what lrwatch read of them.

Every folder is replayed by ``lrwatch replay --format jsonl`` in a subprocess: all in one
call when the run names tell the folders apart, else each on its own (its exit code and stderr
kept; see ``_replay_all``). Replay prints findings only, so a log it could not read looks
exactly like a healthy log it read and found nothing in. What it read is therefore asked
separately, by a probe run in a subprocess of its own (``--probe``), through the same code
replay uses (``lrwatch.offline.replay.discover_runs`` / ``read_run``, and a ``RunMonitor`` for
the roles): the runs found, the metrics read, and which metric plays the ``loss`` and
``val_loss`` role, a role lrwatch guessed from a metric's name included (and marked so: its
findings are lrwatch's findings on that role). A log in which no metric plays either role is
"not read"; it is never scored as a pass (see score.py).
The baselines see the loss series the probe read, so they and lrwatch get the same input.

Hand labels map to the scorer's labels as ``LABELS`` says (the first label of a list is the
primary one, the one scored). The onset of a labelled event is read off ``events[]`` by
``onset()``: the earliest event whose kind names the onset (``ONSET_WORDS``), else the earliest
event; ``ONSET_OVERRIDES`` corrects the logs whose events give the *end* of the evidence, each
with the numbers that place the onset. Steps are in each log's own x-axis (steps, epochs,
iterations, kimg), so delays are in that axis too.

    python -m benchmarks.detection.reallogs --probe DIR [DIR ...]   # JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.detection.labelled import (
    Replay,
    Run,
    first_at_or_after,
    replay,
    still_improving,
)

LABELS = {
    "diverges": "divergence",
    "healthy": "healthy",
    "spike_recovers": "healthy",
    "oscillates": "oscillation",
    "plateau": "plateau",
    "overfits": "overfit",
    "unstable": "unstable",
}
# Event kinds that mark where the labelled trouble starts. For a divergence: the first non-finite
# value or explosion, the evaluation loss leaving its minimum, a saturated or collapsed loss, the
# LR peak blamed for it; for an overfit, the validation minimum.
ONSET_WORDS = {
    "divergence": ("nan", "explosion", "diverg", "lr_too_high", "saturat", "collapse"),
    "plateau": ("plateau", "flat", "no_progress", "no_learning", "stall"),
    "overfit": ("best", "min"),
    "oscillation": ("oscillat", "swing", "cycle"),
}
ONSET_OVERRIDES = {
    # "loss 5.289@10 -> 3.447@760", "then flat ... <2% change": the plateau starts at 760, not
    # at the event's step 7500 (the end of the run).
    "hf_gpt2_lora_plateau": 760,
    # "no downward trend over the run": flat from the first logged step (10).
    "hf_lora_no_learning": 10,
    # "val/rmse_loss ... <1.1% change over the last 6 evals" (of 8, every ~679 steps): 2036.
    "lightning_opal_csv": 2036,
    # "swings between ~36-41 and 100-175: 80.8@752000, 143.7@852000, ...": the first swing.
    "rl_a2c_flappybird_oscillating": 752000,
}


def hand_labels(label: str | list[str]) -> list[str]:
    return [label] if isinstance(label, str) else list(label)


def onset(folder: str, label: str, events: list[dict[str, Any]]) -> int | None:
    if label in ("healthy", "unstable") or not events:
        return None
    if folder in ONSET_OVERRIDES:
        return ONSET_OVERRIDES[folder]
    words = ONSET_WORDS.get(label, ())
    named = [int(e["step"]) for e in events if any(w in str(e["kind"]) for w in words)]
    return min(named or [int(e["step"]) for e in events])


# -- what lrwatch read -------------------------------------------------------------------------


def _probe(folders: list[Path], config: Path | None) -> dict[str, Any]:
    """Runs, metrics and role series lrwatch reads under each folder (in the probe's process)."""
    from lrwatch.analysis.monitor import RunMonitor
    from lrwatch.config import load_config
    from lrwatch.offline.replay import discover_runs, read_run
    from lrwatch.protocol.types import Role
    from lrwatch.sources.formats import build_formats

    cfg = load_config(config)
    out: dict[str, Any] = {}
    for folder in folders:
        try:
            formats, _ = build_formats(cfg.sources)
            runs = {}
            for run, files in sorted(discover_runs([folder], formats).items()):
                samples = read_run(run, files, formats)
                by_metric: dict[str, list[tuple[int, float]]] = defaultdict(list)
                for s in samples:
                    by_metric[s.metric].append((int(s.step), float(s.value)))
                # The roles as replay gives them, a guess from a metric's name included.
                monitor = RunMonitor(run, cfg.for_run(run), assume_landed=True)
                monitor.observe(samples, can_act=None)
                named = {
                    role.value: monitor.role_metric(role) for role in (Role.LOSS, Role.VAL_LOSS)
                }
                runs[run] = {
                    "files": [f.name for f in files],
                    "metrics": {m: len(v) for m, v in by_metric.items()},
                    "roles": named,
                    "guessed": sorted(monitor.inferred_roles.values()),
                    "series": {role: by_metric[m] for role, m in named.items() if m},
                }
            out[folder.name] = {"runs": runs, "error": None}
        except Exception as exc:  # one unreadable folder must not hide the others
            out[folder.name] = {"runs": {}, "error": f"{type(exc).__name__}: {exc}"}
    return out


def probe(folders: list[Path], config: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.detection.reallogs", "--probe"]
    cmd += [str(f) for f in folders] + (["--config", str(config)] if config else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        error = f"probe failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
        return {f.name: {"runs": {}, "error": error} for f in folders}
    return dict(json.loads(done.stdout))


# -- folders as labelled runs ------------------------------------------------------------------


@dataclass
class Folder:
    name: str
    split: str
    hand: list[str]
    replay: Replay
    probe: dict[str, Any]
    run: Run

    @property
    def status(self) -> str:
        """``read``, or why the log cannot be scored."""
        if self.replay.returncode != 0:
            return f"replay failed (exit {self.replay.returncode})"
        if self.run.findings:  # found something, so it was read, whatever the probe says
            return "read"
        if self.probe["error"]:
            return "probe failed"
        runs = self.probe["runs"].values()
        if any(r["roles"]["loss"] or r["roles"]["val_loss"] for r in runs):
            return "read"
        if any(r["metrics"] for r in runs):
            return "no loss metric"
        return "not read"

    def read_cell(self) -> str:
        runs = self.probe["runs"]
        if self.status != "read":
            metrics = sum(len(r["metrics"]) for r in runs.values())
            return f"{self.status}" + (f" ({metrics} other metrics)" if metrics else "")
        named = sorted(
            {
                f"{role}={m}" + (" (guessed)" if m in r["guessed"] else "")
                for r in runs.values()
                for role, m in r["roles"].items()
                if m
            }
        )
        return f"yes ({len(runs)} run{'s' if len(runs) != 1 else ''}; {', '.join(named)})"


def _as_run(name: str, split: str, label_json: dict[str, Any], rep: Replay, seen: Any) -> Run:
    hand = hand_labels(label_json["label"])
    label = LABELS[hand[0]]
    runs = seen["runs"]
    # The folder's series are its longest run's; every run's loss is kept for judging LR cuts.
    main = max(
        runs.values(),
        key=lambda r: (len(r["series"].get("loss", [])), len(r["series"].get("val_loss", []))),
        default={"series": {}},
    )
    series = {role: [(int(s), float(v)) for s, v in pts] for role, pts in main["series"].items()}
    loss = series.get("loss", [])
    nonfinite = next((s for s, v in loss if not math.isfinite(v)), None)
    val = [v for _, v in series.get("val_loss", []) if math.isfinite(v)]
    labels = {
        "label": label,
        "hand_label": hand,
        "onset_step": onset(name, label, label_json.get("events", [])),
        "onset_from": "hand label",
        "first_nonfinite_step": nonfinite,
        "val_rise": (val[-1] / min(val) - 1) if val and min(val) > 0 else 0.0,
        "noisy": False,
        "split": split,
    }
    findings = []
    for f in rep.findings:
        roles = runs.get(f["run"], {}).get("roles", {})
        role = next((r for r, m in roles.items() if m == f["metric"]), f["metric"])
        findings.append({**f, "metric_name": f["metric"], "metric": role})
    parts = {
        run: [(int(s), float(v)) for s, v in r["series"].get("loss", [])] for run, r in runs.items()
    }
    return Run(name, labels, series, findings, parts)


def load(root: Path, split: dict[str, list[str]], config: Path | None) -> tuple[list[Folder], str]:
    """Every folder of both halves, probed and replayed; and how they were replayed."""
    halves = {name: half for half, names in split.items() for name in names}
    names = sorted(halves)
    seen = probe([root / n for n in names], config)
    replays, how = _replay_all(root, names, seen, config)
    folders = []
    for name, rep in zip(names, replays, strict=True):
        label_json = json.loads((root / name / "label.json").read_text())
        run = _as_run(name, halves[name], label_json, rep, seen[name])
        folder = Folder(name, halves[name], hand_labels(label_json["label"]), rep, seen[name], run)
        run.labels["read"] = folder.status == "read"
        folders.append(folder)
    return folders, how


def _replay_all(
    root: Path, names: list[str], seen: dict[str, Any], config: Path | None
) -> tuple[list[Replay], str]:
    """One ``lrwatch replay`` over every folder (a Python start per folder costs more than the
    replays), its findings given back to their folders by the run names the probe saw. Each
    folder is replayed on its own instead, three at a time, when that cannot be trusted: the
    batch failed, a finding names a run the probe did not see, or two folders hold runs of one
    name (a batch would merge them)."""
    owner: dict[str, str] = {}
    for name in names:
        for run in seen[name]["runs"]:
            owner[run] = name if run not in owner else ""
    if all(owner.values()) and not any(seen[n]["error"] for n in names):
        batch = replay([root / n for n in names], config)
        if batch.returncode == 0 and all(owner.get(f["run"]) for f in batch.findings):
            share = batch.seconds / len(names)
            replays = [
                Replay([f for f in batch.findings if owner[f["run"]] == n], share, 0, "")
                for n in names
            ]
            stderr = " ".join(batch.stderr.split())[:300]
            how = f"one replay of the {len(names)} folders, {batch.seconds:.1f} s" + (
                f"; stderr: {stderr}" if stderr else ""
            )
            return replays, how
    with ThreadPoolExecutor(max_workers=3) as pool:
        replays = list(pool.map(lambda n: replay(root / n, config), names))
    return (
        replays,
        f"{len(names)} replays, one per folder, {sum(r.seconds for r in replays):.0f} s summed",
    )


# -- one row per log ---------------------------------------------------------------------------


def findings_cell(run: Run) -> str:
    """Each kind of finding on each metric: how many, and the first step."""
    by: dict[str, list[int]] = defaultdict(list)
    for f in run.findings:
        by[f"{f['kind']}@{f.get('metric_name', f['metric'])}"].append(int(f["step"]))
    return ", ".join(f"{k}: {len(v)} (first {min(v)})" for k, v in sorted(by.items())) or "none"


def cuts_cell(run: Run) -> tuple[str, int]:
    cuts = run.cuts()
    bad = sum(bool(still_improving(run.loss_of(f["run"]), f["step"])) for f in cuts)
    if not cuts:
        return "0", 0
    return f"{len(cuts)} (first {min(f['step'] for f in cuts)}; {bad} while improving)", bad


def verdict(folder: Folder) -> str:
    run, label = folder.run, folder.run.label
    if folder.status != "read":
        scored = label not in ("healthy", "unstable")
        return "not read: counted as a miss" if scored else "not read: not scored"
    at = run.onset
    if label == "divergence":
        assert at is not None
        pages = run.lrwatch_steps("divergence")
        hit = first_at_or_after(pages, at)
        early = " (also paged before the onset)" if any(s < at for s in pages) else ""
        found = f"paged {hit - at} after the onset {at}" if hit is not None else "missed"
        return found + early
    if label == "healthy":
        alarms = run.lrwatch_steps("divergence")
        pages = run.lrwatch_steps("divergence", severity="critical")
        if pages:
            problems = [f"false page at {pages[0]}"]
        else:
            problems = [f"false alarm (a warning, no page) at {alarms[0]}"] if alarms else []
        bad = cuts_cell(run)[1]
        problems += [f"{bad} LR cuts while improving"] if bad else []
        return "; ".join(problems) or "ok"
    if label == "unstable":
        return "not scored (unstable)"
    kind, metric = {
        "oscillation": ("oscillation", None),
        "plateau": ("plateau", "loss"),
        "overfit": ("overfit", "val_loss"),
    }[label]
    steps = run.lrwatch_steps(kind, metric)
    if label == "oscillation":
        return f"found at {steps[0]}" if steps else "missed"
    assert at is not None
    hit = first_at_or_after(steps, at)
    if hit is None:
        lacking = metric not in run.series
        return "missed" + (f" (no {metric} metric read)" if lacking else "")
    return f"flagged {hit - at} after the onset {at}"


def table(folders: list[Folder]) -> list[str]:
    lines = [
        "## The real logs, one by one",
        "",
        "Steps are in each log's own x-axis. *read?*: what lrwatch's readers found (reallogs.py "
        "probe); a log not read is a miss where a detection was due, and no pass anywhere.",
        "",
        "| folder | split | hand label | onset | read? | lrwatch findings | LR cuts | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in sorted(folders, key=lambda f: (f.split != "tune", f.run.label, f.name)):
        at = "" if f.run.onset is None else str(f.run.onset)
        lines.append(
            f"| {f.name} | {f.split} | {' + '.join(f.hand)} | {at} | {f.read_cell()} | "
            f"{findings_cell(f.run)} | {cuts_cell(f.run)[0]} | {verdict(f)} |"
        )
    noisy = [f for f in folders if f.replay.returncode != 0 or f.replay.stderr.strip()]
    noisy += [f for f in folders if f.probe["error"] and f not in noisy]
    if noisy:
        lines += ["", "Replay exit codes and stderr (first line), probe errors:", ""]
        for f in noisy:
            first = (f.replay.stderr.strip().splitlines() or [""])[0][:200]
            probe = f"; probe: {f.probe['error'][:200]}" if f.probe["error"] else ""
            lines.append(f"- {f.name}: exit {f.replay.returncode} {first}{probe}")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", nargs="+", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    json.dump(_probe(args.probe, args.config), sys.stdout)


if __name__ == "__main__":
    main()
