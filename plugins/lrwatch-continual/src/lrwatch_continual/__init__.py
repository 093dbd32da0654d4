"""An lrwatch policy for continual-learning jobs: after a concept drift, warm the LR back up.

Why
---
A model trained on a stream (a fraud model retrained on the day's transactions) has usually
annealed its LR, or been cut by lrwatch on a plateau, by the time the data change under it. The
loss then steps up (lrwatch's ``drift`` finding) and the small LR re-learns the new concept
slowly. The remedy continual-pretraining practice settled on is to *re-warm* the LR, then let it
decay again (Gupta et al. 2023, "Continual pre-training of large language models: how to
(re)warm your model?"; Ibrahim et al. 2024). This policy does that on top of the job's schedule:

1. on a ``drift`` finding, ask for ``boost`` times the job's own LR (a factor of ``boost``,
   which gives back earlier cuts unless ``restore_cuts`` is off);
2. hold it for ``hold_steps`` steps, ignoring further drift meanwhile (the loss keeps moving
   while the model adapts: that is one episode, not a new one);
3. hand the LR back to the schedule in ``decay_stages`` geometric steps ``decay_every`` apart.

What it never does
------------------
It never answers anything but ``drift``: a divergence, a plateau or an oscillation falls through
to lrwatch's ``factors`` policy, which cuts as usual, also mid-boost (a divergence is critical,
so the boost's mild cooldown does not hold its cut back). And the return only ever *lowers*
the factor: it undoes what is left of the boost and never raises a factor someone else cut. That
is why the policy reads the factor the run is at (``state.lr_scale``, the hook's word) instead
of remembering what it asked for: the controller may have capped the boost (``max_lr_scale``),
refused it (cooldown, observe mode) or a divergence cut may have followed it.

Like every lrwatch policy it only proposes; the controller holds each proposal to the config's
bounds (``max_lr_scale`` defaults to 1, so a boost needs it raised to ``boost``), and it is
pure: its state is the JSON-able ``memory`` the daemon saves with the run's.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from lrwatch.analysis.policy import ControlState, Proposal
from lrwatch.protocol.types import Finding, Severity

__all__ = ["RETURN_LABEL", "ContinualConfig", "ContinualPolicy"]

RETURN_LABEL = "continual"  # lrwatch_adjustments_total{reason=...} of the steps back down
_EPISODE = "episode"  # the key of the ongoing episode in ``memory`` (absent when idle)
_TOLERANCE = 1e-9  # relative: a factor this close to a target is at it


class ContinualConfig(BaseModel):
    """Options of ``policy.plugins.continual`` in lrwatch's config."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    boost: float = Field(
        default=3.0,
        gt=1.0,
        le=100.0,
        description="after a drift, the LR factor to run at, relative to the job's own schedule "
        "(policy.max_lr_scale must be at least this, or the controller caps it there)",
    )
    hold_steps: int = Field(
        default=300,
        ge=1,
        description="steps the boost is held, from the step it was sent",
    )
    decay_stages: int = Field(
        default=1,
        ge=1,
        le=20,
        description="the boost is handed back in this many geometric steps (1: at once)",
    )
    decay_every: int = Field(
        default=100,
        ge=1,
        description="steps between two of those (below policy.cooldown_steps, the controller's "
        "cooldown spaces them instead)",
    )
    retry_steps: int = Field(
        default=20,
        ge=1,
        description="an adjustment the controller did not send (held back by the cooldown of "
        "another) is asked again after this many steps",
    )
    retries: int = Field(
        default=3,
        ge=0,
        description="... the boost at most this many times (the way back down until it lands)",
    )
    restore_cuts: bool = Field(
        default=True,
        description="boost from the job's own LR, giving back earlier cuts (a plateau cut made "
        "for the old concept holds the new one back); false: from the factor the run is at",
    )


class ContinualPolicy:
    """Boosts the LR after a ``drift`` finding, hands it back after ``hold_steps``.

    The episode lives in ``memory["episode"]``: the drift's step, the factor to return to
    (``base``) and the boost asked for, the step the boost was last asked at and the step it was
    sent at (None until then), and the last step back down asked for (stage and step).

    Whether an ask was *sent* the policy reads from the controller's own record of the run's
    adjustments (``state.actions``, by step): one refused (held back by the cooldown of a
    plateau cut made just before the drift, say) is asked again after ``retry_steps``; one sent
    is not repeated, and its effect is read from ``state.lr_scale`` once the hook acknowledged
    it. Re-asking sooner would risk a second command before the first one's ack.
    """

    config_model: ClassVar[type[ContinualConfig]] = ContinualConfig

    def __init__(self, config: ContinualConfig | None = None) -> None:
        self.config = config or ContinualConfig()

    def propose(
        self, finding: Finding, state: ControlState, memory: dict[str, Any]
    ) -> Proposal | None:
        if finding.kind != "drift" or _EPISODE in memory:
            return None  # not ours, or the drift of an episode already being answered
        base = 1.0 if self.config.restore_cuts else state.lr_scale
        episode = {
            "drift_step": finding.step,
            "base": base,
            "target": base * self.config.boost,
            "asked_at": finding.step,
            "asks": 1,
            "boosted_at": None,
            "back_stage": 0,
            "back_asked_at": None,
        }
        proposal = self._boost(episode, state)
        if proposal is not None:
            memory[_EPISODE] = episode
        return proposal

    def on_step(self, step: int, state: ControlState, memory: dict[str, Any]) -> Proposal | None:
        episode = memory.get(_EPISODE)
        if episode is None:
            return None
        if step < episode["drift_step"]:
            # The job went back to before the drift (it restored a checkpoint): the episode
            # belongs to an abandoned future, and the job restored its own factor with it.
            del memory[_EPISODE]
            return None
        cfg = self.config
        if episode["boosted_at"] is None:
            if _sent(state, episode["asked_at"]):
                episode["boosted_at"] = episode["asked_at"]
            elif episode["asks"] > cfg.retries or _sent_since(state, episode["drift_step"]):
                # Never sent (observe mode, paused, rate limit): give up. Or something else
                # changed the factor since the drift (a divergence cut, say): the boost would
                # fight it, so it gives way.
                del memory[_EPISODE]
                return None
            elif step - episode["asked_at"] >= cfg.retry_steps and not state.paused:
                episode["asked_at"], episode["asks"] = step, episode["asks"] + 1
                return self._boost(episode, state)
            else:
                return None
        hold_until = episode["boosted_at"] + cfg.hold_steps
        if step < hold_until:
            return None
        stage = min(1 + (step - hold_until) // cfg.decay_every, cfg.decay_stages)
        ratio = episode["target"] / episode["base"]
        goal = episode["base"] * ratio ** (1.0 - stage / cfg.decay_stages)
        if not state.lr_scale > goal * (1.0 + _TOLERANCE):
            # Nothing of the boost left above this stage's goal: it landed lower (capped), was
            # cut (a divergence), or this stage is done.
            if stage == cfg.decay_stages:
                del memory[_EPISODE]
            return None
        if state.paused:
            return None  # the operator has the run: the way back down waits for the resume
        asked_at = episode["back_asked_at"]
        if episode["back_stage"] == stage and asked_at is not None:
            # Sent: its ack is what we wait for (the hold, to be sure it is not coming). Not
            # sent (a cooldown): ask again sooner.
            wait = cfg.hold_steps if _sent(state, asked_at) else cfg.retry_steps
            if step - asked_at < wait:
                return None
        episode["back_stage"], episode["back_asked_at"] = stage, step
        last = stage == cfg.decay_stages
        return Proposal(
            goal / state.lr_scale,
            f"boost for the drift of step {episode['drift_step']} "
            + ("over" if last else f"decaying ({stage}/{cfg.decay_stages})")
            + f": LR back to {_show(goal)}x the job's own",
            RETURN_LABEL,
            Severity.INFO,
        )

    def _boost(self, episode: dict[str, Any], state: ControlState) -> Proposal | None:
        target = float(episode["target"])
        if target <= state.lr_scale * (1.0 + _TOLERANCE):
            return None  # already running at least this fast: nothing to warm up
        return Proposal(
            target / state.lr_scale,
            f"drift at step {episode['drift_step']}: LR warmed up to {_show(target)}x the "
            f"job's own for {self.config.hold_steps} steps",
            "drift",
            Severity.INFO,
        )


def _sent(state: ControlState, step: int) -> bool:
    """Whether the controller sent an adjustment at ``step`` (it records each one it sends)."""
    return any(at == step for at, _ in state.actions)


def _sent_since(state: ControlState, step: int) -> bool:
    return any(at >= step for at, _ in state.actions)


def _show(factor: float) -> str:
    """A factor for a reason text: 1 stays "1", 1.7320508 becomes "1.73"."""
    return f"{factor:.3g}" if math.isfinite(factor) else str(factor)
