"""The controller: every policy's proposal held to the same bounds, and made a decision.

Pure like the detectors (no I/O, no clocks): cooldowns and rate limits count training steps,
not seconds, so ``lrwatch replay`` over finished logs makes the very decisions the daemon made
live. The decision is a function of (finding, run state, can_act); acting on it is the daemon's
job — the split Lightning's EarlyStopping makes between deciding and stopping. What a policy is
given and may propose is policy.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lrwatch import plugins
from lrwatch.analysis.policy import POLICIES, ControlState, Policy, PolicyConfig, Proposal
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Action, ActionType, Decision, Finding, Severity


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
    if not isinstance(proposal.severity, Severity):
        raise ValueError(f"proposed severity {proposal.severity!r} is not a Severity")
    for request in proposal.requests:
        if not isinstance(request, ActionType) or request is ActionType.SCALE_LR:
            raise ValueError(f"proposed request {request!r}: rollback, checkpoint or stop")
    if not isinstance(proposal.reason, str) or not isinstance(proposal.label, str):
        raise TypeError("a proposal's reason and label must be strings")


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
                self.policies[name] = plugins.build(POLICIES, name, raw)
            except plugins.PluginError as exc:
                self.problems.append(exc.problem)
        self.policies["factors"] = plugins.load(POLICIES, "factors")(policy)

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
        rank = proposal.severity.rank
        last = max((s for s, sev in state.actions if sev.rank >= rank), default=None)
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
