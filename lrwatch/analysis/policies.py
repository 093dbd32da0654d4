"""The built-in policy: a fixed LR factor per finding kind (``policy.factors``).

Plugin policies (entry points of the ``lrwatch.policies`` group, configured under
``policy.plugins``) are asked first, in the order listed; the first proposal wins, and
``factors`` answers what none of them takes. The contract every policy meets is policy.py.
"""

from __future__ import annotations

from typing import Any

from lrwatch.analysis.policy import ControlState, Policy, PolicyConfig, PolicyPlugin, Proposal
from lrwatch.protocol.types import Finding

# The contract's names stay reachable here because third-party plugins import them from
# ``lrwatch.policies`` (an alias of this module, see lrwatch/_moved.py) until lrwatch 0.3.
__all__ = ["FactorPolicy", "Policy", "PolicyPlugin", "Proposal"]


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
