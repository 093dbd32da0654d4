"""The six scenarios: what goes wrong, when, and what lrwatch is expected to achieve.

Each is a job's *own* configuration (its peak LR and its schedule, as a user would have written
it); the three methods then run the very same job: unchanged (fixed), with torch's
``ReduceLROnPlateau`` in the loop, and under the lrwatch daemon with the hook attached. An LR
change, whoever makes it, is a factor on top of this schedule.

The well-tuned LR of the classification task, 0.2, is the best of a sweep over
{0.1, 0.2, 0.3, 0.5} with this schedule (``run.py`` repeats the sweep and reports it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

WELL_TUNED_LR = 0.2
SWEEP_LRS = (0.1, 0.2, 0.3, 0.5)
SPIKE_STEP, SPIKE_FACTOR = 700, 8.0
DRIFT_STEP = 1500
DRIFT_KEYS = ("drift", "drift-annealed")  # the stream scenarios, measured by their recovery
REFERENCE = "healthy"  # the well-tuned run the too-high-LR and spike scenarios are held to


def warmup_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero: the usual recipe."""

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return schedule


def constant(warmup: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup)


def inverse_sqrt(warmup: int) -> Callable[[int], float]:
    """Linear warm-up, then 1/sqrt(t) decay: the classic online-learning schedule (Vowpal
    Wabbit's default ``power_t`` of 0.5), which anneals a stream job's LR as it goes."""
    return lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))


def with_spike(base: Callable[[int], float], at: int, factor: float) -> Callable[[int], float]:
    return lambda step: base(step) * (factor if step >= at else 1.0)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    task: str
    steps: int
    lr: float  # the job's peak LR
    schedule: Callable[[int], float]  # multiplier of ``lr`` per step
    story: str
    target: str
    event: tuple[int, str] | None = None  # a known step worth marking on the plots


_CLS_STEPS = 1500
_CLS_SCHEDULE = warmup_cosine(_CLS_STEPS, 300)

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario(
            "too-high-lr",
            "(a) LR 10x too high from the start",
            "classification",
            _CLS_STEPS,
            10 * WELL_TUNED_LR,
            _CLS_SCHEDULE,
            "peak LR 2.0 (the well-tuned one is 0.2) with the usual 300-step warm-up and cosine "
            "decay: the loss runs away once the warm-up crosses the stability edge, ~step 100",
            "within 10% of the well-tuned run's val loss, and better than ReduceLROnPlateau",
        ),
        Scenario(
            "lr-spike",
            f"(b) LR x{SPIKE_FACTOR:g} from step {SPIKE_STEP} on",
            "classification",
            _CLS_STEPS,
            WELL_TUNED_LR,
            with_spike(_CLS_SCHEDULE, SPIKE_STEP, SPIKE_FACTOR),
            f"the well-tuned job, until at step {SPIKE_STEP} its LR jumps x{SPIKE_FACTOR:g} for "
            "the rest of the run (say, a resume that restored another recipe's schedule)",
            "within 10% of the well-tuned run's val loss, and better than ReduceLROnPlateau",
            (SPIKE_STEP, f"LR x{SPIKE_FACTOR:g}"),
        ),
        Scenario(
            "plateau",
            "(c) plateau at SGD's noise floor",
            "regression",
            2000,
            0.1,
            constant(50),
            "a constant LR of 0.1 on a noisy regression: fast at first, then the loss hovers "
            "at a floor set by the LR's noise, which only a lower LR gets below",
            "at least as good as ReduceLROnPlateau",
        ),
        Scenario(
            "drift",
            f"(d) concept drift at step {DRIFT_STEP} (fraud stream)",
            "fraud-stream",
            2500,
            0.05,
            constant(50),
            f"online training on a 3%-positive transaction stream; at step {DRIFT_STEP} the "
            "fraud pattern changes and the model must re-learn it",
            "recovers its pre-drift loss faster than the fixed LR",
            (DRIFT_STEP, "concept drift"),
        ),
        Scenario(
            "drift-annealed",
            f"(f) concept drift at step {DRIFT_STEP} under an annealed LR (fraud stream)",
            "fraud-stream",
            2500,
            0.05,
            inverse_sqrt(50),
            f"the stream of (d) under the classic online-learning schedule, 1/sqrt(t) decay: "
            f"by step {DRIFT_STEP} the LR is down to 18% of its peak when the fraud pattern "
            "changes, and re-learning it takes the small LR a while",
            "recovers its pre-drift loss faster than the fixed LR",
            (DRIFT_STEP, "concept drift"),
        ),
        Scenario(
            "healthy",
            "(e) healthy, well-tuned run",
            "classification",
            _CLS_STEPS,
            WELL_TUNED_LR,
            _CLS_SCHEDULE,
            "the well-tuned job (LR 0.2, warm-up and cosine): nothing goes wrong",
            "final val loss within 1% of the run without lrwatch (no harm)",
        ),
    )
}
