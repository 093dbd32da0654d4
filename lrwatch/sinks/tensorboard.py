"""lrwatch's own decisions as TensorBoard scalars and text, beside the job's own curves.

For every run whose hook is attached, the daemon appends to one events file in ``RUN/lrwatch/``
(``OUTPUT_DIRNAME``, skipped by the source layout, so the daemon never reads its output back):
``lrwatch/lr_scale``, ``lrwatch/finding/<kind>``, ``lrwatch/action`` and the text
``lrwatch/decisions``, on the job's own step axis. Only runs with an attached hook are written
to: attaching is consent; an observed run may live on a read-only mount.

Each batch of decisions is appended as whole records in one ``write()`` (``O_APPEND``), so
readers see complete records or a tail TensorBoard treats as "not yet", and nothing needs
flushing or stopping. Acks are not read here: the actuator reads and matches them and hands
them over (``acked``). Why not tensorboard's writer, and the tags: docs/architecture.md (sinks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

from lrwatch.analysis.monitor import Outcome, RunMonitor
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Command
from lrwatch.sources.layout import OUTPUT_DIRNAME
from lrwatch.sources.records import frame

log = logging.getLogger(__name__)

TAG_LR_SCALE = "lrwatch/lr_scale"
TAG_ACTION = "lrwatch/action"
TAG_DECISIONS = "lrwatch/decisions"
FINDING_TAG_PREFIX = "lrwatch/finding/"
# The factor is re-written this many steps after its last point even when unchanged, so its line
# in TensorBoard runs on beside the job's curves instead of stopping at the last change.
LR_SCALE_EVERY_STEPS = 100
# Whether a run has a hook attached (``.lrwatch/``: consent to writing there) is looked at again
# after this long, not on every batch: a stat per batch per run adds up over a fleet.
ATTACH_RECHECK_SECONDS = 10.0


def events_path(run_dir: Path, clock: Callable[[], float] = time.time) -> Path:
    """A new events file name in TensorBoard's convention (one per daemon incarnation)."""
    name = f"events.out.tfevents.{int(clock())}.{socket.gethostname()}.{os.getpid()}.lrwatch"
    return run_dir / OUTPUT_DIRNAME / name


def scalar_event(tag: str, step: int, value: float, wall_time: float) -> event_pb2.Event:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


def text_event(tag: str, step: int, text: str, wall_time: float) -> event_pb2.Event:
    """A text-plugin summary (a scalar string tensor), which TensorBoard renders as markdown."""
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[text.encode()],
    )
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text")
    )
    value = summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)
    return event_pb2.Event(
        wall_time=wall_time, step=step, summary=summary_pb2.Summary(value=[value])
    )


@dataclass(slots=True)
class _RunState:
    """What this writer has already shown for one run, so it writes edges, not every batch."""

    path: Path
    started: bool = False
    lr_scale: float | None = None
    lr_scale_step: int = -1
    open_kinds: set[str] = field(default_factory=set)
    pending: dict[int, Command] = field(default_factory=dict)  # sent, ack not yet seen
    acks: list[Ack] = field(default_factory=list)  # of pending commands, drawn at next record
    failed: bool = False


class DecisionWriter:
    """Appends each watched run's lrwatch decisions to ``RUN/lrwatch/events.out.tfevents.*``.

    Never raises into the daemon: a directory it cannot write is reported once and skipped.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs: dict[Path, _RunState] = {}
        self._attached: dict[Path, tuple[bool, float]] = {}  # run dir -> (attached, next look)

    def record(
        self,
        run_dir: Path,
        monitor: RunMonitor,
        outcome: Outcome,
        commands: Sequence[Command] = (),
    ) -> None:
        """Called once per analysed batch of a run's samples, with the findings, decisions and
        commands it led to: writes what changed since the last call, if anything.

        The daemon calls this inside the transaction that commits them; should the daemon die
        before the commit, it analyses the batch again and TensorBoard shows the finding twice,
        which is harmless (nothing here is read back)."""
        if not self._is_attached(run_dir):
            return  # no hook attached: observed only, and its directory is not ours to write
        state = self._runs.get(run_dir)
        if state is None:
            state = self._runs[run_dir] = _RunState(events_path(run_dir, self._clock))
        if state.failed:
            return
        events = self._events(state, monitor, outcome, commands)
        if not events:
            return
        try:
            self._append(state, events)
        except OSError as exc:
            state.failed = True
            log.warning("cannot write lrwatch's TensorBoard events into %s: %s", run_dir, exc)

    def acked(self, run_dir: Path, acks: Sequence[Ack]) -> None:
        """Acks the daemon has read from the run's channel: those of commands this writer
        showed are drawn at the run's next ``record``."""
        state = self._runs.get(run_dir)
        if state is not None and not state.failed:
            state.acks += [ack for ack in acks if ack.seq in state.pending]

    def _is_attached(self, run_dir: Path) -> bool:
        attached, next_look = self._attached.get(run_dir, (False, 0.0))
        now = time.monotonic()
        if now >= next_look:
            attached = channel.channel_dir(run_dir).is_dir()
            self._attached[run_dir] = (attached, now + ATTACH_RECHECK_SECONDS)
        return attached

    def _events(
        self,
        state: _RunState,
        monitor: RunMonitor,
        outcome: Outcome,
        commands: Sequence[Command],
    ) -> list[event_pb2.Event]:
        now = self._clock()
        step = monitor.last_step()
        events: list[event_pb2.Event] = []
        lines: list[str] = []
        for finding in outcome.findings:
            onset = finding.onset_step if finding.onset_step is not None else finding.step
            tag = FINDING_TAG_PREFIX + finding.kind
            if finding.kind not in state.open_kinds:
                events.append(scalar_event(tag, max(onset - 1, 0), 0.0, now))
            events += [
                scalar_event(tag, onset, 1.0, now),
                scalar_event(tag, finding.step, 1.0, now),
            ]
            state.open_kinds.add(finding.kind)
            lines.append(
                f"**{finding.kind}** ({finding.severity.value}) at step {finding.step} "
                f"on `{finding.metric}`: {finding.reason}"
            )
        for decision in outcome.decisions:
            if decision.action is None:
                lines.append(f"no action: {decision.reason}")
        for command in commands:
            state.pending[command.seq] = command
            lines.append(f"command #{command.seq} sent: {command.reason}")
        # Kinds whose episode ended: a spike is never "active", so it closes right after it.
        active = monitor.active_kinds()
        for kind in sorted(state.open_kinds - active):
            events += [
                scalar_event(FINDING_TAG_PREFIX + kind, step, 1.0, now),
                scalar_event(FINDING_TAG_PREFIX + kind, step + 1, 0.0, now),
            ]
            state.open_kinds.discard(kind)
        acks = sorted(state.acks, key=lambda ack: ack.seq)
        state.acks.clear()
        for ack in acks:
            events += self._ack_events(state, ack, now)
            lines.append(_ack_line(ack, state.pending.pop(ack.seq, None)))
        # The factor is the one the hook acknowledged. The daemon's own view is read once, at
        # first sight of the run (it may have been restored from the store); after that it is
        # not trusted: it lags an ack this call has just read, and for up to a heartbeat
        # interval after an ack it may show the previous heartbeat's factor again.
        if not acks and state.lr_scale is None:
            state.lr_scale = monitor.control.lr_scale
            events.append(scalar_event(TAG_LR_SCALE, max(step, 0), state.lr_scale, now))
            state.lr_scale_step = step
        elif not acks and step - state.lr_scale_step >= LR_SCALE_EVERY_STEPS:
            scale = state.lr_scale if state.lr_scale is not None else 1.0
            events.append(scalar_event(TAG_LR_SCALE, step, scale, now))  # keep the line going
            state.lr_scale_step = step
        if lines:
            events.append(text_event(TAG_DECISIONS, max(step, 0), "\n\n".join(lines), now))
        return events

    @staticmethod
    def _ack_events(state: _RunState, ack: Ack, now: float) -> list[event_pb2.Event]:
        if ack.status is not AckStatus.APPLIED:
            return []
        command = state.pending.get(ack.seq)
        factor = command.action.factor if command and command.action.factor else ack.lr_scale
        before = state.lr_scale if state.lr_scale is not None else 1.0
        state.lr_scale, state.lr_scale_step = ack.lr_scale, ack.step
        return [
            # The old factor up to the step before, the new one from the ack's step: a step
            # function in TensorBoard's line plot rather than a ramp between two points.
            scalar_event(TAG_LR_SCALE, max(ack.step - 1, 0), before, now),
            scalar_event(TAG_LR_SCALE, ack.step, ack.lr_scale, now),
            scalar_event(TAG_ACTION, ack.step, factor, now),
        ]

    def forget(self, run_dir: Path) -> None:
        """The run expired: what this writer kept of it goes too."""
        self._runs.pop(run_dir, None)
        self._attached.pop(run_dir, None)

    def _append(self, state: _RunState, events: list[event_pb2.Event]) -> None:
        """Append to the events file. Neither ``lrwatch/`` nor the file may be a symlink: a job
        (or anyone who can write the run directory) could otherwise point them anywhere, and
        the daemon would write there with its own rights. Opened with O_NOFOLLOW, the file
        through a descriptor of the directory, so nothing can be swapped in between."""
        folder = state.path.parent
        if not state.started:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o755)
            version = event_pb2.Event(wall_time=self._clock(), file_version="brain.Event:2")
            events = [version, *events]
        data = b"".join(frame(e.SerializeToString()) for e in events)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(state.path.name, flags, 0o644, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        state.started = True


def _ack_line(ack: Ack, command: Command | None) -> str:
    what = command.reason if command else f"command #{ack.seq}"
    lrs = ", ".join(f"{lr:.4g}" for lr in ack.lrs)
    return (
        f"ack #{ack.seq} **{ack.status.value}** at step {ack.step} ({what}): "
        f"LR factor {ack.lr_scale:g}, LR {lrs or '-'}; {ack.reason}"
    )
