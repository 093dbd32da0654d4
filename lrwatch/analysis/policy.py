"""The policy contract: what a policy is given and what it may propose.

A policy only *proposes*; the controller decides, holding every proposal to the same bounds
(cooldown, rate limit, min/max LR factor, the per-command change limit, pause and mode), so a
plugin policy can never push a job further than the config allows. Policies are pure like the
detectors: no I/O, no clocks; what one must remember between calls it keeps in ``memory``, a
JSON-able dict of its own that the daemon saves with the run's state.

The built-in policies (policies.py), the controller (controller.py) and plugin policies import
this module, which imports none of them: the contract sits below every implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch.plugins import Group
from lrwatch.protocol.types import ActionType, Finding, Severity

__all__ = ["ControlState", "Policy", "PolicyConfig", "PolicyPlugin", "Proposal"]


class PolicyConfig(BaseModel):
    """Defaults: divergence -> LR x0.1, oscillation -> x0.5, plateau -> x0.5; spikes are only
    reported. A factor of 1 (or leaving a kind out) means "report, do not act"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factors: dict[str, float] = Field(
        default_factory=lambda: {"divergence": 0.1, "oscillation": 0.5, "plateau": 0.5}
    )
    cooldown_steps: int = Field(
        default=50, ge=0, description="steps after an adjustment during which no other is made"
    )
    max_adjustments: int = Field(default=5, ge=1, description="at most this many ...")
    rate_window_steps: int = Field(default=1000, ge=1, description="... within this many steps")
    min_lr_scale: float = Field(default=1e-4, gt=0, description="the factor never goes below")
    max_lr_scale: float = Field(default=1.0, gt=0, description="the factor never goes above")
    max_change: float = Field(
        default=10.0, ge=1.0, description="one command changes the factor at most by this ratio"
    )
    plateau_at_noise_floor: bool = Field(
        default=False,
        description="also cut a plateau whose loss sits at the floor its LR's noise sets (half "
        "its run since the LR last changed bought less than one batch's scatter), though it may "
        "still creep down: ReduceLROnPlateau's annealing; off by default, since such a run is "
        "strictly still improving (docs/detectors.md, 'Do no harm')",
    )
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="policy plugins by registered name (see `lrwatch plugins`), asked in this "
        "order before the factors above; each with the options its own config model takes",
    )
    requests: dict[str, ActionType] = Field(
        default_factory=dict,
        description="with an adjustment for this kind, also ask the job's handler for this "
        "(rollback, checkpoint or stop), e.g. {divergence: rollback}; a job without the "
        "handler acks it as unsupported",
    )

    @model_validator(mode="after")
    def _check(self) -> PolicyConfig:
        if self.min_lr_scale > self.max_lr_scale:
            raise ValueError(
                f"min_lr_scale {self.min_lr_scale} is above max_lr_scale {self.max_lr_scale}"
            )
        for kind, factor in self.factors.items():
            if not factor > 0:
                raise ValueError(f"factors.{kind} must be > 0, got {factor}")
        if "factors" in self.plugins:
            raise ValueError("plugins: 'factors' is built in: configure it as policy.factors")
        for kind, request in self.requests.items():
            if request is ActionType.SCALE_LR:
                raise ValueError(f"requests.{kind}: scale_lr is what factors are for")
        return self


@dataclass(slots=True)
class ControlState:
    """What the controller remembers of one run. ``lr_scale`` is the factor the job runs with,
    as the hook last acknowledged it (the daemon's view; replay assumes every action lands).
    ``actions`` are the (step, severity of the finding) of the adjustments sent, oldest first;
    ``memory`` what each policy keeps of its own, by policy name."""

    lr_scale: float = 1.0
    actions: list[tuple[int, Severity]] = field(default_factory=list)
    paused: bool = False
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # each policy's own

    def forget_from(self, step: int) -> None:
        """Drop the actions at or after ``step``: the job went back to before them."""
        self.actions = [a for a in self.actions if a[0] < step]

    def state_dict(self) -> dict[str, Any]:
        return {
            "lr_scale": self.lr_scale,
            "actions": [[step, severity.value] for step, severity in self.actions],
            "paused": self.paused,
            "memory": self.memory,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lr_scale = float(state["lr_scale"])
        self.actions = [(int(step), Severity(sev)) for step, sev in state.get("actions", [])]
        self.paused = bool(state["paused"])
        self.memory = {str(k): dict(v) for k, v in state.get("memory", {}).items()}


@dataclass(frozen=True, slots=True)
class Proposal:
    """An LR change a policy asks for. ``factor`` multiplies the run's current LR factor (above
    1 raises the LR); ``label`` is the reason label of ``lrwatch_adjustments_total`` (the
    finding's kind, or the policy's own word for a step-driven change); ``severity`` ranks it
    against the cooldown of earlier adjustments."""

    factor: float
    reason: str
    label: str
    severity: Severity = Severity.WARNING
    requests: tuple[ActionType, ...] = ()


@runtime_checkable
class Policy(Protocol):
    def propose(
        self, finding: Finding, state: ControlState, memory: dict[str, Any]
    ) -> Proposal | None:
        """The change ``finding`` calls for, or None to leave it to the next policy."""
        ...

    def on_step(self, step: int, state: ControlState, memory: dict[str, Any]) -> Proposal | None:
        """Called at each new step of the run's loss: a change that is due by now (say, undoing
        a temporary one), or None."""
        ...


@runtime_checkable
class PolicyPlugin(Protocol):
    """What an entry point of ``lrwatch.policies`` names: usually the policy class, built as
    ``plugin(config)`` with its ``policy.plugins.NAME`` section validated by ``config_model``."""

    config_model: ClassVar[type[BaseModel]]

    def __call__(self, config: Any) -> Policy: ...


POLICIES: Group[PolicyPlugin, Policy] = Group("policies")
