"""The policy: which finding earns which adjustment, and when to hold back.

Pure like the detectors (no I/O, no clocks): cooldowns and rate limits count training steps,
not seconds, so ``lrwatch replay`` over finished logs makes the very decisions the daemon made
live. The decision is a function of (finding, run state, can_act); acting on it is the daemon's
job — the split Lightning's EarlyStopping makes between deciding and stopping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lrwatch import plugins
from lrwatch.analysis.policies import Policy, Proposal
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Action, ActionType, Decision, Finding, Severity


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


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def _check(proposal: Any) -> None:
    """A plugin's proposal is data from outside: a TypeError or ValueError unless well-formed
    (a finite factor above 0, a severity, requests lrwatch knows), before anything trusts it."""
    if not isinstance(proposal, Proposal):
        raise TypeError(f"returned {type(proposal).__name__}, not a Proposal")
    factor = proposal.factor
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise TypeError(f"proposed factor {factor!r} is not a number")
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"proposed factor {factor!r}: must be finite and above 0")
    if proposal.severity not in _RANK:
        raise ValueError(f"proposed severity {proposal.severity!r} is not a Severity")
    for request in proposal.requests:
        if not isinstance(request, ActionType) or request is ActionType.SCALE_LR:
            raise ValueError(f"proposed request {request!r}: rollback, checkpoint or stop")
    if not isinstance(proposal.reason, str) or not isinstance(proposal.label, str):
        raise TypeError("a proposal's reason and label must be strings")


@dataclass(slots=True)
class ControlState:
    """What the controller remembers of one run. ``lr_scale`` is the factor the job runs with,
    as the hook last acknowledged it (the daemon's view; replay assumes every action lands).
    ``actions`` are the (step, severity of the finding) of the adjustments sent, oldest first;
    ``memory`` what each policy keeps of its own (policies.py)."""

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


class Controller:
    """Turns findings into decisions under one run's policy: the policies propose (the plugins
    listed under ``policy.plugins`` first, then ``factors``), the controller bounds.

    A plugin policy that raises is dropped from this controller and said in ``problems`` (the
    daemon logs and counts it); the others go on.
    """

    def __init__(self, policy: PolicyConfig) -> None:
        self.policy = policy
        self.problems: list[PluginProblem] = []
        self.policies: dict[str, Policy] = {}
        for name, raw in policy.plugins.items():
            try:
                self.policies[name] = plugins.build("policies", name, raw)
            except plugins.PluginError as exc:
                self.problems.append(exc.problem)
        self.policies["factors"] = plugins.load("policies", "factors")(policy)

    def decide(self, finding: Finding, state: ControlState, *, can_act: str | None) -> Decision:
        """``can_act`` is None when the daemon may write to this run, else why it may not
        ("observe mode", "no live hook", "paused"): the decision still says what it would do."""
        proposal = self._ask(lambda p, memory: p.propose(finding, state, memory), state)
        if proposal is None:
            return self._none(finding, f"{finding.kind}: reported only (no action in policy)")
        return self._bound(proposal, finding.run, finding.step, state, can_act, finding)

    def on_step(
        self, run: str, step: int, state: ControlState, *, can_act: str | None
    ) -> Decision | None:
        """A step-driven change some policy wants by ``step`` (None: nothing due)."""
        if len(self.policies) == 1:  # only ``factors``, which never acts on steps alone
            return None
        proposal = self._ask(lambda p, memory: p.on_step(step, state, memory), state)
        if proposal is None:
            return None
        return self._bound(proposal, run, step, state, can_act, None)

    def bounded(
        self, proposal: Proposal, run: str, step: int, state: ControlState, *, can_act: str | None
    ) -> Decision:
        """A change lrwatch's own analysis asks for (giving back a plateau cut that did not
        help), held to the same bounds as any policy's."""
        _check(proposal)
        return self._bound(proposal, run, step, state, can_act, None)

    def _ask(
        self, call: Callable[[Policy, dict[str, Any]], Proposal | None], state: ControlState
    ) -> Proposal | None:
        for name, policy in list(self.policies.items()):
            try:
                proposal = call(policy, state.memory.setdefault(name, {}))
                if proposal is not None:
                    _check(proposal)
            except Exception as exc:
                if name == "factors":
                    raise  # lrwatch's own bug: let it be seen
                self._failed(name, exc)
                continue
            if proposal is not None:
                return proposal
        return None

    def _failed(self, name: str, exc: Exception) -> None:
        self.policies.pop(name, None)
        message = f"{type(exc).__name__}: {exc}; no longer asked for this run"
        self.problems.append(PluginProblem("policies", name, "run", message))

    def _bound(
        self,
        proposal: Proposal,
        run: str,
        step: int,
        state: ControlState,
        can_act: str | None,
        finding: Finding | None,
    ) -> Decision:
        """The proposal held to the config's bounds: pause, cooldown, rate limit, LR bounds."""
        policy = self.policy

        def none(reason: str) -> Decision:
            return Decision(run, step, None, reason, finding, label=proposal.label)

        if state.paused:
            return none("run is paused: observed only")
        # The cooldown holds back proposals no more severe than the action that started it: a
        # plateau cut must not stop the divergence that follows it from being answered.
        rank = _RANK[proposal.severity]
        last = max((s for s, sev in state.actions if _RANK[sev] >= rank), default=None)
        if last is not None and step - last < policy.cooldown_steps:
            return none(f"cooldown: last adjustment at step {last}, {policy.cooldown_steps} apart")
        recent = [s for s, _ in state.actions if step - s < policy.rate_window_steps]
        if len(recent) >= policy.max_adjustments:
            return none(
                f"rate limit: {len(recent)} adjustments in the last "
                f"{policy.rate_window_steps} steps"
            )
        factor = min(max(proposal.factor, 1.0 / policy.max_change), policy.max_change)
        target = min(max(state.lr_scale * factor, policy.min_lr_scale), policy.max_lr_scale)
        effective = target / state.lr_scale
        if abs(effective - 1.0) < 1e-9:
            return none(f"LR factor already at its bound {state.lr_scale:g}")
        action = Action(ActionType.SCALE_LR, round(effective, 12))
        requests = tuple(Action(r) for r in proposal.requests)
        reason = f"{proposal.reason}: LR x{effective:g}" + "".join(
            f" and {r.type.value}" for r in requests
        )
        if can_act is not None:
            return none(f"{reason} not sent: {can_act}")
        return Decision(
            run, step, action, reason, finding, requests, proposal.label, proposal.severity
        )

    @staticmethod
    def record(state: ControlState, decision: Decision) -> None:
        """Account for an adjustment that is being sent (cooldown and rate limit)."""
        if decision.action is not None:
            state.actions.append((decision.step, decision.severity))
            del state.actions[:-64]  # the rate limit never needs more than this

    @staticmethod
    def _none(finding: Finding, reason: str) -> Decision:
        return Decision(finding.run, finding.step, None, reason, finding, label=finding.kind)
