"""A labelled corpus of synthetic loss curves, of another family than the trained corpus.

The trained corpus (corpus.py) is real PyTorch runs of a few small models; a detector tuned on
it can learn those models' curves. This generator draws curves from a different family: a
power-law or exponential decay toward a floor, under a drawn LR schedule, with AR(1) noise in
log space (light or heavy-tailed), bad batches, warm restarts, logging every 1 to 50 steps and
levels from 1e-3 to 1e1. Onto that it injects the faults of the issue tracker's misses: a loss
that leaves its start at once and never returns, a constant-rate geometric climb, an LR jump
that leaves the loss several times higher for good, a slow creep, a burst into NaN, NaN from
the first step, period-2 and longer oscillation, and plateaus.

Two splits from disjoint seed ranges: ``tune`` (seeds 0..) may be looked at and tuned on;
``test`` (seeds 100000..) is frozen: its run list and content hash are committed in
``frozen_test.json`` before any tuning, and ``splits.py --check`` fails if they change.

    python -m benchmarks.detection.synthetic --split tune --out /tmp/synth-tune

writes ``<out>/<label>/<name>/{metrics.jsonl,labels.json}``, the layout ``score.py`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEED_BASE = {"tune": 0, "test": 100_000}
# Runs per label in each split: (label, fault, count).
PLAN: tuple[tuple[str, str, int], ...] = (
    ("healthy", "none", 30),
    ("healthy", "bad_batches", 8),
    ("healthy", "warm_restarts", 6),
    ("divergence", "blowup_at_start", 6),
    ("divergence", "geometric_climb", 7),
    ("divergence", "level_jump", 7),
    ("divergence", "slow_creep", 4),
    ("divergence", "burst_to_nan", 6),
    ("divergence", "nan_from_start", 3),
    ("oscillation", "period2", 6),
    ("oscillation", "cycle", 6),
    ("plateau", "flat", 10),
    ("overfit", "sparse_eval", 6),
)
FLOAT32_MAX = 3.4e38


@dataclass
class Curve:
    steps: np.ndarray  # logged steps
    loss: np.ndarray
    lr: np.ndarray
    labels: dict[str, Any]
    val: list[tuple[int, float]] | None = None


def _schedule(rng: np.random.Generator, total: int) -> tuple[np.ndarray, str]:
    """The LR at every step, and its name. Peak 1 (the curve only needs its shape)."""
    t = np.arange(total, dtype=float)
    kind = str(rng.choice(["constant", "cosine", "step", "linear", "warmup_constant"]))
    warm = int(rng.uniform(0.0, 0.1) * total) if kind != "constant" else 0
    ramp = np.minimum(1.0, (t + 1) / warm) if warm else np.ones(total)
    if kind == "cosine":
        frac = np.clip((t - warm) / max(1, total - warm), 0, 1)
        lr = 0.05 + 0.95 * 0.5 * (1 + np.cos(math.pi * frac))
    elif kind == "step":
        every = int(total / rng.integers(2, 5))
        lr = 0.1 ** (t // every)
    elif kind == "linear":
        lr = 1.0 - 0.95 * np.clip((t - warm) / max(1, total - warm), 0, 1)
    else:
        lr = np.ones(total)
    return ramp * lr, kind


def _healthy(rng: np.random.Generator, total: int, lr: np.ndarray) -> np.ndarray:
    """A decreasing log-loss at every step: a decay toward a floor, driven by the LR given."""
    floor = math.exp(rng.uniform(math.log(1e-3), math.log(5.0)))
    start = floor * math.exp(rng.uniform(math.log(1.5), math.log(50.0)))
    progress = np.cumsum(lr) / max(1.0, float(lr.sum())) * total  # LR-weighted time
    if rng.random() < 0.5:
        alpha = rng.uniform(0.3, 1.2)
        t0 = rng.uniform(0.005, 0.05) * total
        shape = ((progress + t0) / t0) ** -alpha
    else:
        tau = rng.uniform(0.05, 0.6) * total
        shape = np.exp(-progress / tau)
    # A still-learning run keeps a slow tail: the floor itself is approached, never reached.
    return np.log(floor + (start - floor) * shape)


def _noise(rng: np.random.Generator, total: int, heavy: bool) -> np.ndarray:
    sigma = math.exp(rng.uniform(math.log(0.003), math.log(0.25)))
    phi = rng.uniform(0.0, 0.9)
    shocks = rng.standard_t(3, total) / math.sqrt(3) if heavy else rng.standard_normal(total)
    out = np.empty(total)
    acc = 0.0
    scale = sigma * math.sqrt(1 - phi * phi)
    for i in range(total):
        acc = phi * acc + scale * shocks[i]
        out[i] = acc
    return out


def _base(rng: np.random.Generator) -> tuple[int, int, np.ndarray, np.ndarray, dict[str, Any]]:
    every = int(rng.choice([1, 1, 1, 2, 5, 10, 25, 50]))
    points = int(rng.integers(150, 1200))
    total = points * every
    lr, sched = _schedule(rng, total)
    log_loss = _healthy(rng, total, lr) + _noise(rng, total, heavy=bool(rng.random() < 0.3))
    meta = {"log_every": every, "schedule": sched, "steps": total, "first_step": 0}
    return total, every, lr, log_loss, meta


def _curve(
    rng: np.random.Generator, label: str, fault: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any], list[tuple[int, float]] | None]:
    """Every step's loss (natural values, may hold inf/NaN), LR, and labels before sampling."""
    total, every, lr, log_loss, meta = _base(rng)
    labels: dict[str, Any] = {"label": label, "fault": fault, **meta}
    val: list[tuple[int, float]] | None = None
    onset: int | None = None
    onset_at = int(rng.uniform(0.2, 0.7) * total)
    if fault == "bad_batches":
        at = sorted(int(x) for x in rng.choice(np.arange(total // 10, total), 3, replace=False))
        at = [s - s % every for s in at]  # on a logged step, so it is seen
        for s in at:
            log_loss[s] += math.log(rng.uniform(2.0, 30.0))
        labels["spikes_at"] = at
    elif fault == "warm_restarts":
        cycles = int(rng.integers(2, 5))
        period = total // cycles
        t = np.arange(total)
        lr = 0.05 + 0.95 * 0.5 * (1 + np.cos(math.pi * (t % period) / period))
        # Each restart costs some progress, regained as the LR decays again.
        bump = np.log(rng.uniform(1.2, 2.5)) * np.exp(-(t % period) / (0.15 * period))
        bump[:period] = 0.0
        log_loss = log_loss + bump
        labels["schedule"] = "sgdr"
    elif fault == "blowup_at_start":
        onset = every  # the first logged step after the start
        if rng.random() < 0.5:
            jump = math.log(10.0) * rng.uniform(2.0, 10.0)  # x1e2 .. x1e10, stays there
            log_loss[onset:] = log_loss[0] + jump + _noise(rng, total - onset, heavy=True) * 4
        else:  # leaves to x20-x50, then settles a few times above the start, for good
            settle = math.log(rng.uniform(3.0, 6.0))
            peak = math.log(rng.uniform(20.0, 50.0))
            n = total - onset
            decay = np.exp(-np.arange(n) / max(3.0, 0.02 * n))
            log_loss[onset:] = log_loss[0] + settle + (peak - settle) * decay
            log_loss[onset:] += _noise(rng, n, heavy=False)
    elif fault == "geometric_climb":
        onset = onset_at
        rate = rng.uniform(0.01, 0.12)  # per step in log space: +1 % .. +13 % a step
        log_loss[onset:] += rate * np.arange(total - onset)
    elif fault == "level_jump":
        onset = onset_at
        log_loss[onset:] = log_loss[onset] + math.log(rng.uniform(4.0, 12.0))
        log_loss[onset:] += _noise(rng, total - onset, heavy=True) * 3
    elif fault == "slow_creep":
        onset = onset_at
        rate = rng.uniform(0.003, 0.01)
        log_loss[onset:] += rate * np.arange(total - onset)
    elif fault == "burst_to_nan":
        onset = onset_at
        ramp = int(rng.integers(3, 8)) * every  # at least three logged points of blow-up
        growth = math.log(rng.uniform(3.0, 30.0)) / every
        log_loss[onset : onset + ramp] += growth * np.arange(1, ramp + 1)
        log_loss[onset + ramp :] = math.nan
    elif fault == "nan_from_start":
        onset = every
        log_loss[onset:] = math.nan
    elif fault == "period2":
        onset = onset_at - onset_at % every
        amp = math.log(rng.uniform(1.5, 10.0)) / 2
        idx = np.arange(total - onset) // every
        log_loss[onset:] = log_loss[onset] + amp * np.where(idx % 2 == 0, 1.0, -1.0)
        log_loss[onset:] += _noise(rng, total - onset, heavy=False) * 0.3
    elif fault == "cycle":
        onset = onset_at - onset_at % every
        period = int(rng.integers(4, 16)) * every
        amp = math.log(rng.uniform(2.0, 10.0)) / 2
        phase = 2 * math.pi * np.arange(total - onset) / period
        log_loss[onset:] = log_loss[onset] + amp * np.sin(phase)
        log_loss[onset:] += _noise(rng, total - onset, heavy=False) * 0.3
    elif fault == "flat":
        lr = np.ones(total)
        labels["schedule"] = "constant"
        floor, start = math.exp(log_loss[-1]), math.exp(log_loss[0])
        onset = int(rng.uniform(0.15, 0.4) * total)
        t = np.arange(total)
        shape = np.exp(-5.0 * t / onset)  # within 1 % of the floor by the onset
        log_loss = np.log(floor + (start - floor) * shape) + _noise(rng, total, heavy=False)
    elif fault == "sparse_eval":
        evals = int(rng.integers(5, 9))
        eval_every = total // evals
        best = int(rng.integers(1, evals - 3))  # at least three evaluations after the minimum
        floor = math.exp(log_loss[-1])
        val = []
        for k in range(1, evals + 1):
            v = floor * (1.5 + 2.0 / k) if k <= best else floor * (1.5 + 2.0 / best)
            if k > best:
                v *= 1.0 + rng.uniform(0.08, 0.2) * (k - best)
            at = k * eval_every - (k * eval_every) % every  # evaluated at a logged step
            val.append((min(at, total - every), float(v * math.exp(rng.normal(0, 0.01)))))
        onset = val[best - 1][0]
        labels["val_minimum_step"] = onset
        labels["val_rise"] = val[-1][1] / val[best - 1][1] - 1
    if onset is not None:
        labels["onset_step"] = int(onset)
        labels["onset_from"] = "injection"
    loss = np.exp(np.minimum(log_loss, 700.0))
    loss[loss > FLOAT32_MAX] = math.inf  # float32 training overflows here
    return lr, loss, np.arange(total), labels, val


def generate(split: str) -> Iterator[tuple[str, Curve]]:
    """Every run of ``split``, as (label/name, curve), in a fixed order."""
    seed = SEED_BASE[split]
    for label, fault, count in PLAN:
        for k in range(count):
            rng = np.random.default_rng(seed)
            lr, loss, steps, labels, val = _curve(rng, label, fault)
            every = labels["log_every"]
            logged = steps[::every]
            labels["seed"] = seed
            curve = Curve(logged, loss[::every], lr[::every], labels, val)
            nonfinite = np.flatnonzero(~np.isfinite(curve.loss))
            labels["first_nonfinite_step"] = int(logged[nonfinite[0]]) if nonfinite.size else None
            labels.setdefault("val_minimum_step", None)
            labels.setdefault("val_rise", 0.0)
            labels["noisy"] = False
            seed += 1
            yield f"{label}/{fault}_{k:02d}_s{labels['seed']}", curve


def _value(x: float) -> Any:
    return float(f"{x:.6g}") if math.isfinite(x) else x


def write(split: str, out: Path) -> str:
    """Write ``split`` under ``out``; return the sha256 over every file written, in order."""
    digest = hashlib.sha256()
    for name, curve in generate(split):
        directory = out / name
        directory.mkdir(parents=True, exist_ok=True)
        val = dict(curve.val or [])
        lines = []
        for step, loss, lr in zip(curve.steps, curve.loss, curve.lr, strict=True):
            record: dict[str, Any] = {"step": int(step), "loss": _value(float(loss))}
            record["lr"] = _value(float(lr))
            if int(step) in val:
                record["val_loss"] = _value(val.pop(int(step)))
            lines.append(json.dumps(record))
        text = "\n".join(lines) + "\n"
        labels = json.dumps({**curve.labels, "name": name}, indent=1, sort_keys=True)
        (directory / "metrics.jsonl").write_text(text)
        (directory / "labels.json").write_text(labels)
        digest.update(name.encode() + b"\0" + text.encode() + labels.encode())
    return digest.hexdigest()


def names(split: str) -> list[str]:
    return [name for name, _ in generate(split)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SEED_BASE), required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(f"{args.split}: sha256 {write(args.split, args.out)}")


if __name__ == "__main__":
    main()
