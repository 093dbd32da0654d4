"""The plateau judge: whether a plateau may cut the LR, and giving back a cut that did not help.

The plateau detector says the loss is flat at a fixed rate; a long, healthy run fails that rate
for most of its life. So a plateau is cut only when the run has stopped making progress
relative to its own progress so far (progress.py), over a horizon that grows with the run and
doubles with each cut given back. Every cut is then judged: no progress resumed over twice as
long as the evidence that asked for it, and it is given back. What the judge remembers lives
in the run's control memory (persisted with it). Pure: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lrwatch.analysis.controller import Controller
from lrwatch.analysis.policy import ControlState, Proposal
from lrwatch.analysis.progress import Progress, Verdict
from lrwatch.detectors.base import Detector
from lrwatch.protocol.types import Decision, Finding, Severity

# The key of the judge's memory: the step the LR last changed ("since"), the plateau cut
# awaiting its verdict ("cut"), the evidence (steps) the next cut needs after cuts given back
# ("wait"), and when to ask again ("next").
_JUDGE = "lrwatch.plateau"


class PlateauJudge:
    """One run's plateau judge over its loss's ``progress``. It keeps nothing else: what it
    remembers is in the ``control`` state each call is given (the daemon may swap that object
    on a config reload)."""

    def __init__(
        self,
        run: str,
        controller: Controller,
        progress: Progress,
        cooldown_steps: int,
        *,
        noise_floor: bool = False,
    ) -> None:
        self.run = run
        self.controller = controller
        self.progress = progress
        self.cooldown_steps = cooldown_steps
        self.noise_floor = noise_floor  # the policy's plateau_at_noise_floor

    def lr_changed(self, step: int, control: ControlState) -> None:
        """An LR change was sent at ``step``: progress counts from here."""
        _memory(control)["since"] = step

    def decide(self, found: Finding, control: ControlState, can_act: str | None) -> Decision:
        """The decision on a plateau finding: the policy's, if the run has stalled."""
        verdict, why_not = self._stall(found.step, control)
        if why_not is not None:
            why = f"plateau: reported only: {why_not}"
            return Decision(self.run, found.step, None, why, found, label="plateau")
        decision = self.controller.decide(found, control, can_act=can_act)
        factor = decision.action.factor if decision.action is not None else None
        if factor is not None:
            decision = replace(decision, reason=f"{decision.reason} ({verdict.why})")
            _memory(control)["cut"] = [found.step, factor, verdict.horizon]
        return decision

    def gaining(self, step: int, control: ControlState) -> bool:
        """Whether the loss is known to gain at ``step`` (``Verdict.gaining``: by anything at
        all over the last half of the stretch since the LR last changed, with confidence): the
        plateau detector's fixed rate says flat, but the run is not on a plateau, and lrwatch
        does not show it as one (``RunMonitor.active_kinds``)."""
        since = self._since(step, control)
        return self.progress.verdict(since, step, noise_floor=self.noise_floor).gaining

    def spare_oscillation(self, found: Finding, control: ControlState) -> str | None:
        """Why the oscillation ``found`` is reported but not cut (None: it may be cut). Not
        while the loss still improves with confidence since the LR last changed: a loss that
        repeats a cycle as it falls is learning, not bouncing off the stability edge, which
        stops all progress. A cycle (alternating or recurring; not bursts, which by
        construction stand far out of the noise) in a loss below where the run started is
        cut only once the run has stalled: momentum's underdamped ringing repeats one in
        healthy minibatch runs (Nesterov at batch 128: a 4-step cycle, 70 % of its level 0.05,
        as the loss went on falling from 0.69), and minibatch noise alternates by chance
        (another such run: 27 of 29 changes flipping sign, lag-1 autocorrelation -0.85, its
        loss falling on; one healthy run in 25 of a fresh draw), while full-batch descent
        chaotic past the edge holds its loss at or above its start (0.93-0.99 from 0.69)."""
        step, since = found.step, self._since(found.step, control)
        improving = self.progress.improving(since, step)
        if improving is not None:
            return improving
        level = found.detail.get("level")
        if "regularity" in found.detail or not isinstance(level, float):  # (bursts)
            return None
        if self.progress.below_start(level) is not True:
            return None  # at or above where the run started (or not known): no progress
        _, why_not = self._stall(step, control)
        return None if why_not is None else f"a cycle below the run's start, and {why_not}"

    def recheck(self, plateau: Detector | None, step: int, control: ControlState) -> list[Finding]:
        """While the ``plateau`` detector still calls the loss flat, ask again every quarter
        horizon: a plateau found too early to cut becomes a cut once the run has really stopped
        (a finding of its own, so replay and the audit show why)."""
        if plateau is None or plateau.active != "plateau":
            return []
        judge = _memory(control)
        if judge["cut"] is not None or step < judge.get("next", 0):
            return []
        verdict, why_not = self._stall(step, control)
        judge["next"] = step + max(1, verdict.horizon // 4)
        if why_not is not None:
            return []
        found = Finding(
            kind="plateau",
            severity=Severity.INFO,
            step=step,
            reason=f"loss has stopped improving relative to its own progress: {verdict.why}",
            detail={"judge": "progress", "horizon": verdict.horizon},
            onset_step=step - verdict.horizon,
        )
        return [found]

    def give_back(self, step: int, control: ControlState, can_act: str | None) -> Decision | None:
        """Undo the cut awaiting its verdict if no progress resumed over twice as long as the
        evidence that asked for it (at least two cooldowns); the next cut then waits twice as
        long."""
        judge = control.memory.get(_JUDGE)
        if not judge or not judge.get("cut"):
            return None
        cut_at, factor, horizon = judge["cut"]
        if step - cut_at < 2 * max(horizon, self.cooldown_steps):
            return None
        judge["cut"] = None
        helped, why = self.progress.helped(cut_at, step)
        if helped:
            return None
        judge["wait"] = 2 * max(horizon, judge.get("wait", 0))
        proposal = Proposal(
            1.0 / factor,
            f"plateau cut at step {cut_at} did not help ({why}): given back",
            "plateau",
            Severity.INFO,
        )
        return self.controller.bounded(proposal, self.run, step, control, can_act=can_act)

    def _stall(self, step: int, control: ControlState) -> tuple[Verdict, str | None]:
        """The verdict at ``step`` on the progress since the LR last changed, and why no cut may
        be made (None: one may): not stalled, or stalled over a horizon shorter than a cooldown
        or than the evidence the cuts given back ask for."""
        judge = _memory(control)
        verdict = self.progress.verdict(
            self._since(step, control), step, noise_floor=self.noise_floor
        )
        wait = max(self.cooldown_steps, judge.get("wait", 0))
        if not verdict.stalled:
            return verdict, verdict.why
        return verdict, None if verdict.horizon >= wait else f"horizon {verdict.horizon} < {wait}"

    def _since(self, step: int, control: ControlState) -> int:
        """Where progress counts from at ``step``: the LR's last change, else the run's first
        block, else ``step`` itself (nothing to judge yet)."""
        since = _memory(control)["since"]
        if since is None:
            since = self.progress.first_step
        return since if since is not None else step


def _memory(control: ControlState) -> dict[str, Any]:
    return control.memory.setdefault(_JUDGE, {"since": None, "cut": None, "wait": 0})
