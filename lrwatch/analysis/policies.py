"""Policies: which LR change a finding (or the passing of steps) calls for.

A policy only *proposes*; the controller decides, holding every proposal to the same bounds —
cooldown, rate limit, min/max LR factor, the per-command change limit, pause and mode — so a
plugin policy can never push a job further than the config allows. Policies are pure like the
detectors: no I/O, no clocks. What one must remember between calls (say, when it raised the LR)
it keeps in ``memory``, a JSON-able dict of its own that the daemon saves with the run's state.

The built-in ``factors`` policy is :class:`FactorPolicy`. Plugin policies (entry points of the
``lrwatch.policies`` group, configured under ``policy.plugins``) are asked first, in the order
listed; the first proposal wins, and ``factors`` answers what none of them takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from lrwatch.protocol.types import ActionType, Finding, Severity

if TYPE_CHECKING:
    from lrwatch.analysis.controller import ControlState, PolicyConfig


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


class FactorPolicy:
    """The built-in policy: a fixed factor per finding kind (``policy.factors``), with the
    requests of ``policy.requests``. A factor of 1, or a kind left out, means "report only"."""

    def __init__(self, config: PolicyConfig) -> None:
        self.factors = config.factors
        self.requests = config.requests

    def propose(
        self, finding: Finding, state: ControlState, memory: dict[str, Any]
    ) -> Proposal | None:
        factor = self.factors.get(finding.kind)
        if factor is None or factor == 1.0:
            return None
        request = self.requests.get(finding.kind)
        return Proposal(
            factor,
            f"{finding.kind} at step {finding.step}",
            finding.kind,
            finding.severity,
            (request,) if request is not None else (),
        )

    def on_step(self, step: int, state: ControlState, memory: dict[str, Any]) -> Proposal | None:
        return None
