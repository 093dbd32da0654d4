"""Has a run stopped making progress, relative to its own progress so far? What a plateau cut
must answer yes to before lrwatch touches a healthy run's LR (plateau_judge.py asks).

Over the last half of the stretch since the LR last changed (or the run began), did the loss
improve by at least ``SHARE`` of what it improved since the start, or by anything at all?
Stalled means neither, each with confidence (``Z`` standard errors of its own noise): a loss
nearing an irreducible floor gains an ever smaller share of its progress, yet a gain known to
be more than none is a run still learning, which is never cut. The loss is kept as
medians of blocks of samples (log space), at a resolution that halves as the run grows: bounded
memory, and one bad batch never moves a block. The reasoning and figures: docs/detectors.md,
"Do no harm: when a plateau may be cut". Pure: no I/O, no clocks.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrwatch.detectors._robust import plain_median, run_together

SHARE = 0.05  # the share of its progress so far a run must still make over the horizon
Z = 2.0  # standard errors of confidence that it did not (and that it gained at all)
NOISE_SHARE = 1.0  # ... or less than this many times its sample-to-sample noise (see verdict)
NOISE_PROGRESS = 0.2  # ... and less than this share of its progress so far
# ... measured to within this share of that noise (Z standard errors): "half its life bought
# less than one batch's scatter" says nothing before the gain is known better than the
# scatter, as 60 steps into a run it is not (see verdict).
NOISE_PRECISION = 0.5
_MAX_BLOCKS = 256
_RECENT = 256
_MIN_BLOCKS = 4  # in each of the two windows compared
# fell_since: the values before a step that make the level the loss fell from, and the fewest
# values since that say where it went.
_FELL_BEFORE = 16
_FELL_AFTER = 4


@dataclass(frozen=True, slots=True)
class Verdict:
    stalled: bool
    why: str  # a reason a person can read, with the numbers
    horizon: int  # steps the improvement was measured over
    gaining: bool = False  # known to gain at all (Z SEs): no plateau to show, let alone cut


class Progress:
    """One loss series' level over its whole run, in blocks."""

    def __init__(self) -> None:
        self._blocks: list[tuple[int, float]] = []  # (last step, median log value)
        self._recent: deque[float] = deque(maxlen=_RECENT)  # the last raw log values: noise
        self._recent_steps: deque[int] = deque(maxlen=_RECENT)  # ... and their steps
        self._pending: list[float] = []
        self._size = 1  # samples per block
        self._usable = True  # False once a value <= 0 is seen: no log, no judgement
        self._first: float | None = None  # the log of the first value: where the run started

    def update(self, step: int, value: float) -> None:
        if not self._usable or not math.isfinite(value):
            return
        if value <= 0:
            self._usable = False
            return
        self._pending.append(math.log(value))
        if self._first is None:
            self._first = self._pending[-1]
        self._recent.append(self._pending[-1])
        self._recent_steps.append(step)
        if len(self._pending) < self._size:
            return
        self._blocks.append((step, plain_median(self._pending)))
        self._pending = []
        if len(self._blocks) > _MAX_BLOCKS:
            pairs = zip(self._blocks[0::2], self._blocks[1::2], strict=False)
            self._blocks = [(b[0], (a[1] + b[1]) / 2) for a, b in pairs]
            self._size *= 2

    @property
    def first_step(self) -> int | None:
        """The step the first block ends at (None before any): where the run's progress counts
        from until its LR first changes."""
        return self._blocks[0][0] if self._blocks else None

    def below_start(self, level: float) -> bool | None:
        """Whether ``level`` is below the run's first value, the loss before any update (None
        before it, or with a value <= 0). Not the median of its first blocks: an LR too high
        from step 0 throws the next few values far up before the loss settles into a cycle."""
        if not self._usable or self._first is None or not level > 0:
            return None
        return math.log(level) < self._first

    def _window(self, lo: float, hi: float) -> list[float]:
        return [v for s, v in self._blocks if lo < s <= hi]

    def _noise(self, values: list[float]) -> float:
        """The blocks' own noise: the median absolute successive difference, as an SD."""
        diffs = [abs(b - a) for a, b in itertools.pairwise(values)]
        return plain_median(diffs) / (0.6745 * math.sqrt(2.0)) if diffs else math.inf

    def improvement(self, since: int, now: int) -> tuple[float, float, float] | None:
        """(log improvement over the last half of [since, now], its standard error, the log
        improvement since the run's start), or None with too few blocks to say."""
        if not self._usable or len(self._blocks) < 2 * _MIN_BLOCKS:
            return None
        span = now - since
        mid = since + span / 2
        then = self._window(mid - span / 4, mid)
        recent = self._window(now - span / 4, now)
        if len(then) < _MIN_BLOCKS or len(recent) < _MIN_BLOCKS:
            return None
        sigma = self._noise(then + recent)
        # Blocks that run together (a momentum run's loss wanders for longer than a block)
        # are worth fewer independent ones: a bump is one bump, not many small gains.
        together = run_together(self._window(mid - span / 4, now))
        se = together * _median_gap_se(sigma, len(then), len(recent))
        start = plain_median([v for _, v in self._blocks[:_MIN_BLOCKS]])
        level = plain_median(recent)
        return plain_median(then) - level, se, start - level

    def verdict(self, since: int, now: int, *, noise_floor: bool = False) -> Verdict:
        """Stalled only with confidence; "not yet judged" is not stalled. ``noise_floor``: a
        loss at the floor its LR's noise sets counts as stalled too (see below), though it
        may still creep down (the policy's opt-in ``plateau_at_noise_floor``)."""
        horizon = max(1, (now - since) // 2)
        found = self.improvement(since, now)
        if found is None:
            why = f"too little loss history since step {since} to judge the progress"
            return Verdict(False, why, horizon)
        gained, se, total = found
        need = SHARE * total if total > 0 else math.log1p(0.01)
        moved = _moved(gained)
        # A share alone is no stall: near an irreducible floor a learning run gains an ever
        # smaller share of its progress. A gain known to be more than none, however small, is
        # a run still learning (a floor on it, fixed over horizons that shrink after each LR
        # change, cut a loss creeping 1 % per 10k steps ten times in a row).
        gaining = gained - Z * se > 0.0
        if gained + Z * se < need and not gaining:
            of = _share(gained, total)
            why = f"the loss {moved} over the last {horizon} steps ({of})"
            return Verdict(True, why, horizon)
        noise = self._noise(list(self._recent))
        if (
            noise_floor
            and gained + Z * se < NOISE_SHARE * noise
            and gained < NOISE_PROGRESS * total
            and Z * se <= NOISE_PRECISION * noise
        ):
            # Half its life bought less than one batch's scatter: the loss sits at the floor
            # its LR's noise sets (SGD's noise floor), which only a lower LR gets below.
            why = (
                f"the loss {moved} over the last {horizon} steps, less than its "
                f"sample-to-sample noise ({100 * math.expm1(noise):.2g} %): at its noise floor"
            )
            return Verdict(True, why, horizon)
        if gaining:
            return Verdict(False, _still_improves(gained, total, horizon), horizon, gaining=True)
        bar = f"{SHARE:.0%} of its progress so far" if total > 0 else "1 %"
        why = (
            f"the loss {moved} over the last {horizon} steps: not known to have "
            f"stopped ({Z:g} standard errors are {100 * math.expm1(Z * se):.2g} %; the bar is "
            f"{bar})"
        )
        return Verdict(False, why, horizon)

    def improving(self, since: int, now: int) -> str | None:
        """Why the loss still improves with confidence: over the last half of [since, now], by
        more than ``SHARE`` of its progress so far plus ``Z`` standard errors, a stronger bar
        than the verdict's ``gaining``: an oscillation is spared only while the loss clearly
        improves. None when it does not, or when too little history says."""
        found = self.improvement(since, now)
        if found is None:
            return None
        gained, se, total = found
        if not gained - Z * se > SHARE * max(total, 0.0):
            return None
        return _still_improves(gained, total, max(1, (now - since) // 2))

    def fell_since(self, step: int) -> bool:
        """Whether the loss fell from ``step`` on, with confidence: the median of its values
        since (at least ``_FELL_AFTER``) is ``Z`` standard errors below the median of the
        ``_FELL_BEFORE`` before. A gradient norm that grows meanwhile is a model starting to
        learn (embeddings leaving zero, a net leaving its initial plateau), not a step past the
        stability edge, which sends the loss up within a few steps. A loss that only holds
        proves nothing either way: it has not fallen."""
        steps, values = list(self._recent_steps), list(self._recent)
        since = next((i for i, s in enumerate(steps) if s >= step), len(steps))
        before, after = values[max(0, since - _FELL_BEFORE) : since], values[since:]
        if len(before) < _FELL_AFTER or len(after) < _FELL_AFTER:
            return False
        level = plain_median(before)
        sigma = plain_median([abs(v - level) for v in before]) / 0.6745
        se = _median_gap_se(sigma, len(before), len(after))
        return level - plain_median(after) > Z * se

    def helped(self, cut_at: int, now: int) -> tuple[bool, str]:
        """Did progress resume after a cut at ``cut_at``: is the loss over the second half of
        [cut_at, now] lower than before the cut? A cut after which the loss is no lower is
        given back (do no harm); the cut's evidence was proven, so its outcome need only be
        seen (a noise floor's loss scatters by a third from batch to batch)."""
        before = self._window(-math.inf, cut_at)[-_MIN_BLOCKS * 2 :]
        after = self._window(cut_at + (now - cut_at) / 2, now)
        if len(before) < _MIN_BLOCKS or len(after) < _MIN_BLOCKS:
            return True, "too little loss history since the cut to judge it"
        gained = plain_median(before) - plain_median(after)
        return gained > 0, f"the loss {_moved(gained)} in the {now - cut_at} steps since"

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "blocks": [[s, v] for s, v in self._blocks],
            "pending": list(self._pending),
            "size": self._size,
            "usable": self._usable,
            "recent": list(self._recent),
            "recent_steps": list(self._recent_steps),
            "first": self._first,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"not a progress state (version 1): {state.get('version')!r}")
        self._blocks = [(int(s), float(v)) for s, v in state["blocks"]]
        self._pending = [float(v) for v in state["pending"]]
        self._size = int(state["size"])
        self._usable = bool(state["usable"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=_RECENT)
        # (states before 0.3 kept no steps: their values count as before any step asked)
        steps = state.get("recent_steps", [-1] * len(self._recent))
        self._recent_steps = deque((int(s) for s in steps), maxlen=_RECENT)
        if len(self._recent_steps) != len(self._recent):
            raise ValueError("progress state: recent and recent_steps differ in length")
        first = state.get("first")  # (kept since 0.2; earlier states start from here)
        self._first = None if first is None else float(first)


def _median_gap_se(sigma: float, n: int, m: int) -> float:
    """The standard error of the difference of the medians of ``n`` and ``m`` values of noise
    SD ``sigma`` (a median's is 1.2533 sigma / sqrt(n) for normal noise)."""
    return 1.2533 * sigma * math.sqrt(1 / n + 1 / m)


def _share(gained: float, total: float) -> str:
    """What ``gained`` is of the run's progress so far (``total``), both log improvements."""
    return f"{100 * gained / total:.0f} % of its progress so far" if total > 0 else "no progress"


def _still_improves(gained: float, total: float, horizon: int) -> str:
    """The reason both judgements give for a loss that still improves."""
    return f"the loss still improves: it {_moved(gained)} over the last {horizon} steps " + (
        f"({_share(gained, total)})"
    )


def _moved(gained: float) -> str:
    """A log improvement in words: "fell 12 %", "rose 30 %" (of the earlier level)."""
    change = 100 * math.expm1(-gained)
    if abs(change) < 0.05:
        return "stayed level"
    return f"{'fell' if change < 0 else 'rose'} {abs(change):.2g} %"
