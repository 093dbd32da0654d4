"""False divergence alarms on pure noise: the rate the divergence detector pages a loss that is
only noise around a constant level, from simulation rather than from any corpus.

A healthy loss late in training is a level plus noise; how often the detector calls such a
series diverging depends on the noise alone: its size (log-space SD), its memory (AR(1)
coefficient: a logged running average is strongly autocorrelated) and its tails (Student t with
3 degrees of freedom: bad batches). This drives the real ``DivergenceDetector`` with
``RUNS`` series of ``LENGTH`` values for each combination and reports the share of series with
any divergence finding.

    python -m benchmarks.detection.noise      # ~1 min; writes benchmarks/results/detection_noise.md
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np

from lrwatch.detectors import DivergenceDetector

RESULTS = Path(__file__).resolve().parents[1] / "results"
SIGMAS = (0.02, 0.05, 0.1, 0.2, 0.3)
PHIS = (0.0, 0.5, 0.8, 0.95)
RUNS, LENGTH = 20, 5000
# (log-noise SD, AR, heavy tails) of the cells also logged sparsely, every EVERY steps
SPARSE = (
    (0.3, 0.0, False),
    (0.3, 0.0, True),
    (0.5, 0.0, False),
    (0.5, 0.0, True),
    (0.3, 0.8, True),
)
EVERY = (1, 5, 50)


def _sparse_name(sigma: float, phi: float, heavy: bool) -> str:
    return f"SD {sigma:g}, AR {phi:g}, {'t3' if heavy else 'normal'}"


def series(rng: np.random.Generator, sigma: float, phi: float, heavy: bool) -> np.ndarray:
    shocks = rng.standard_t(3, LENGTH) / math.sqrt(3) if heavy else rng.standard_normal(LENGTH)
    out, acc, scale = np.empty(LENGTH), 0.0, math.sqrt(1 - phi * phi)
    for i in range(LENGTH):
        acc = phi * acc + scale * shocks[i]
        out[i] = acc
    return np.exp(math.log(0.5) + sigma * out)


def uniform(rng: np.random.Generator) -> np.ndarray:
    """Values uniform on (0, 1), the loss of the ingest benchmark's file: no level times
    log-normal noise, but a log with a long lower tail (quartile spreads 0.6 up, 1.03 down)."""
    return rng.random(LENGTH)


def found(values: np.ndarray, every: int = 1) -> tuple[bool, bool]:
    """(paged, any divergence finding at all). A level held far above its lowest (trigger
    "held") pages only when the run's LR rose just before it; a noise series has no LR, so
    the monitor reports it as a warning (arbitration.unexplained_hold)."""
    detector = DivergenceDetector()
    kinds = [
        f.detail.get("trigger")
        for i, v in enumerate(values)
        if (f := detector.update(every * i, float(v))) is not None and f.kind == "divergence"
    ]
    return any(k != "held" for k in kinds), bool(kinds)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    rng = np.random.default_rng(0)
    header = "| log-noise SD | " + " | ".join(
        f"AR {phi:g}, {'t3' if heavy else 'normal'}"
        for phi, heavy in itertools.product(PHIS, (False, True))
    )
    columns = list(itertools.product(PHIS, (False, True)))
    rows = []
    for sigma in SIGMAS:
        hits = [
            [found(series(rng, sigma, phi, heavy)) for _ in range(RUNS)] for phi, heavy in columns
        ]
        rows.append((sigma, hits))
        print(sigma, file=sys.stderr)
    lines = [
        "# False divergence alarms on simulated noise",
        "",
        f"Share of {RUNS} series of {LENGTH} values, a constant level times exp(SD x AR(1) "
        "noise), that the default `DivergenceDetector` pages at least once (then: that gets "
        "any divergence finding, the warnings of a held level included: with no LR rise before "
        "it, the monitor reports a held level but neither pages nor cuts). Reproduce: "
        "`python -m benchmarks.detection.noise`.",
    ]
    for title, which in (("Paged", 0), ("Any divergence finding (warnings included)", 1)):
        lines += ["", f"**{title}**", "", header + " |", "| --- " * (1 + len(columns)) + "|"]
        for sigma, hits in rows:
            cells = [f"{sum(h[which] for h in cell) / RUNS:.2f}" for cell in hits]
            lines.append(f"| {sigma:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "**Logged sparsely** (paged; 20 series of 5000 values per cell, drawn afresh for each "
        "row, each value standing for `every` steps: a stretch up is measured in steps, so "
        "two values up can be enough)",
        "",
        "| logged every | " + " | ".join(_sparse_name(*cell) for cell in SPARSE) + " |",
        "| --- " * (1 + len(SPARSE)) + "|",
    ]
    sparse = np.random.default_rng(1)  # its own draws: the uniform rows below keep theirs
    for every in EVERY:
        cells = [
            sum(found(series(sparse, *cell), every)[0] for _ in range(RUNS)) / RUNS
            for cell in SPARSE
        ]
        lines.append(f"| {every} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
        print("every", every, file=sys.stderr)
    for every in (1, 5):
        hits = [found(uniform(rng), every) for _ in range(RUNS)]
        lines += [
            "",
            f"Values uniform on (0, 1), logged every {every} step{'s' if every > 1 else ''} "
            "(the ingest benchmark's loss: a log with a long lower tail, which a best level "
            f"reaches by chance): paged {sum(h[0] for h in hits) / RUNS:.2f}, any divergence "
            f"finding {sum(h[1] for h in hits) / RUNS:.2f}.",
        ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_noise.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
