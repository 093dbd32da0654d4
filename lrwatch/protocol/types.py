"""The shared vocabulary of lrwatch: what flows from one stage to the next.

Everything here is a frozen dataclass (``Sample`` a NamedTuple, for speed) built from the
standard library only, because the training-side hook imports this module and must not pull in
the daemon's dependencies.

The data flow is ``Sample`` (sources) -> ``Finding`` (detectors) -> ``Decision`` (controller)
-> ``Command`` (channel, daemon side) -> ``Ack`` (channel, hook side).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [  # the plugin API (docs/plugins.md): what detectors, policies and sources exchange
    "Ack",
    "AckStatus",
    "Action",
    "ActionType",
    "Command",
    "Decision",
    "Finding",
    "Heartbeat",
    "Role",
    "Sample",
    "Severity",
]


class Severity(enum.StrEnum):
    """How loudly a finding should be heard; values are the replay/alert contract."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Its place in the order info < warning < critical, which a notifier's
        ``min_severity`` and the controller's cooldown compare by (the strings sort otherwise)."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {severity: rank for rank, severity in enumerate(Severity)}


class Role(enum.StrEnum):
    """What a metric means to the detectors. Unrecognised metrics are exported, not analysed."""

    LOSS = "loss"
    VAL_LOSS = "val_loss"
    GRAD_NORM = "grad_norm"
    LR = "lr"


class Sample(NamedTuple):
    """One scalar read from a log: the unit the pipeline consumes.

    ``value`` keeps NaN and +-Inf: a non-finite loss is the strongest divergence signal there is.
    ``wall_time`` is the writer's Unix time when the log carries one, else None.

    A NamedTuple rather than a frozen dataclass like the rest of this module: it is made once
    per scalar ingested, and a frozen dataclass costs twice as much to build (its ``__init__``
    goes through ``object.__setattr__`` per field). Same fields, same immutability.
    """

    run: str
    metric: str
    step: int
    value: float
    wall_time: float | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a detector noticed about one series, with the evidence to explain it.

    Detectors know nothing of runs and metric names (they see a bare series), so they leave
    ``run`` and ``metric`` empty and the pipeline fills them in with ``dataclasses.replace``.
    ``onset_step`` is the detector's estimate of where the trouble began, which can be earlier
    than ``step``, the sample at which it became sure.
    """

    kind: str
    severity: Severity
    step: int
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    onset_step: int | None = None
    run: str = ""
    metric: str = ""


class ActionType(enum.StrEnum):
    SCALE_LR = "scale_lr"
    ROLLBACK = "rollback"
    CHECKPOINT = "checkpoint"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class Action:
    """What the controller wants done to a run. ``factor`` is used by ``scale_lr`` only."""

    type: ActionType
    factor: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type.value}
        if self.factor is not None:
            out["factor"] = self.factor
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """The controller's answer to a finding: an action, or None with the reason why not.

    A decision is made even when nothing is done (cooldown, bounds, observe mode, no live hook),
    so that replay and the audit log can say *why* a run was left alone.
    """

    run: str
    step: int
    action: Action | None
    reason: str
    finding: Finding | None = None
    # Requests to the job's own handlers that go with ``action`` (rollback, checkpoint, stop),
    # each sent as a command of its own after the LR change.
    requests: tuple[Action, ...] = ()
    # The reason label of lrwatch_adjustments_total: the finding's kind, or a policy's own word
    # for a change no finding caused (Proposal.label, analysis/policy.py); and the severity its
    # cooldown ranks.
    label: str = ""
    severity: Severity = Severity.CRITICAL


class AckStatus(enum.StrEnum):
    APPLIED = "applied"
    REJECTED = "rejected"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class Command:
    """An adjustment addressed to one run's hook, numbered so it is applied at most once.

    ``seq`` starts at 1 and increases by one per command in a run's channel; the hook applies
    commands strictly in order. ``signature`` is an HMAC-SHA256 over the canonical payload when a
    secret is configured, else None.
    """

    run: str
    seq: int
    action: Action
    reason: str
    issued_at: float
    issuer: str = "lrwatch"
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The hook's answer to one command.

    ``step`` is the training step at which the hook handled the command (the new factor is used
    from the next optimizer step on); ``lrs`` are the effective learning rates per param group
    right after it, i.e. the job's own schedule times ``lr_scale``.
    """

    seq: int
    status: AckStatus
    step: int
    lr_scale: float
    lrs: tuple[float, ...]
    reason: str
    acked_at: float
    # The digest (channel.digest) of the command file the hook read: the daemon takes an ack as
    # the answer to its command only if it names the very bytes the daemon wrote, so a stale
    # ack (of a junk file once at that number) or a planted one is never mistaken for it.
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The hook's periodic "I am alive" with the state the daemon reconciles against."""

    pid: int
    host: str
    step: int
    lr_scale: float
    last_seq: int
    lrs: tuple[float, ...]
    written_at: float
    handlers: tuple[str, ...] = ()
    world_size: int = 1
    # The channel id the hook attached to: a new one means a new job in a re-created directory.
    channel: str = ""
    # The LRs the job's own schedule set (param_groups' lr between optimizer steps, i.e. without
    # lrwatch's factor) and the training step they were read at; empty/None from older hooks.
    schedule_lrs: tuple[float, ...] = ()
    schedule_step: int | None = None
