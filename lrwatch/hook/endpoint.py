"""The training job's end of the channel: ``attach(optimizer, run_dir)`` returns a ``Hook``.

The training loop calls ``hook.step(step)`` once per optimizer step. Almost always that is a
counter bump; every few calls (see cadence.py) it checks the run's channel for the next command,
applies it, and acknowledges it. Under torch.distributed, rank 0 alone reads the channel, acks
and heartbeats, and every rank applies what rank 0 read at the same call (see distributed.py).

Nothing in ``step()`` or ``log()`` raises into the loop: the hook is an optional helper and must
never be the reason a week-long run dies. Argument errors do raise, but in ``attach()``, before
training starts.

Imports: the standard library, torch, and lrwatch's stdlib-only ``types`` and ``channel``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrwatch.hook import distributed, setup
from lrwatch.hook.cadence import next_check_every
from lrwatch.hook.metrics_log import MetricsLog, default_path
from lrwatch.hook.scaling import Bounds, LRScaler, judge_scale
from lrwatch.hook.warn_once import WarnOnce
from lrwatch.protocol import channel
from lrwatch.protocol.channel import ChannelError
from lrwatch.protocol.types import Ack, AckStatus, ActionType, Command, Heartbeat

log = logging.getLogger(__name__)

Handler = Callable[[int, Command], object]
# Commands handled per check at most, so that a flood cannot stall one training step for long.
_MAX_PER_CHECK = 64
_EVENTS = (ActionType.ROLLBACK, ActionType.CHECKPOINT, ActionType.STOP)


@dataclass(frozen=True, slots=True)
class Incoming:
    """The next command as read from the channel, before anything is done about it.

    Reading and applying are separate so that, under torch.distributed, rank 0 alone can read
    and broadcast this object and every rank applies it at the same step. Pickled for that.
    """

    seq: int
    command: Command | None = None
    refusal: str = ""  # why the file was refused; set when command is None
    already_acked: bool = False  # handled by an earlier incarnation of the job
    digest: str = ""  # of the file's bytes, named in the ack (see channel.ack_answers)


class Hook:
    """A live training job's end of the channel: ``lrwatch.attach(optimizer, run_dir)``.

    Creates ``<run_dir>/.lrwatch/`` with the channel id and a first heartbeat. ``secret``
    (default: ``$LRWATCH_SECRET`` or the file named by ``$LRWATCH_SECRET_FILE``) makes the hook
    accept only commands signed with it. Raises on bad arguments; never once training runs.

    ``min_lr``/``max_lr`` bound the LR lrwatch may cause (see ``scaling.bounded_lr``);
    ``max_change`` limits one command's factor to ``[1/max_change, max_change]``;
    ``check_interval`` is the target seconds between channel checks; ``heartbeat_interval`` the
    seconds between heartbeats; ``clock`` a monotonic clock, replaceable in tests.

    Under torch.distributed (attach after ``init_process_group``), every rank attaches and calls
    ``step()`` equally often; only rank 0 touches the run directory (the channel, acks, the
    heartbeat, ``log()``), so the other ranks need neither the directory nor the secret.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        run_dir: str | os.PathLike[str],
        *,
        secret: str | bytes | None = None,
        min_lr: float | None = None,
        max_lr: float | None = None,
        max_change: float = 10.0,
        check_interval: float = 0.1,
        heartbeat_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        setup.check_optimizer(optimizer)
        self.bounds = Bounds(min_lr, max_lr, max_change)
        self._check_interval = setup.positive("check_interval", check_interval)
        self._heartbeat_interval = setup.positive("heartbeat_interval", heartbeat_interval)
        self.run_dir = Path(run_dir)
        self._report = WarnOnce()
        self._ranks = distributed.coordinator(self._report)
        self._leader = self._ranks.rank == 0
        self._key = setup.load_key(secret) if self._leader else None
        self._channel = setup.open_channel(self.run_dir) if self._leader else ""
        self._clock = clock
        self._scaler = LRScaler(optimizer, self.bounds, self._report)
        self._metrics = MetricsLog(default_path(self.run_dir), self._report)
        self._handlers: dict[ActionType, Handler] = {}
        self._host = socket.gethostname()
        self._last_seq = 0
        self._step: Any = 0
        self._calls = 0
        self._check_every = 1  # check at the first call: a resumed job finds commands at once
        self._last_check = self._last_beat = clock()
        self._exit: BaseException | None = None
        # Acks whose write failed (disk full, say): retried at each check, since the daemon
        # counts a command as outstanding until its ack appears.
        self._unwritten_acks: list[Ack] = []
        self._closed = False
        self._beat()  # the daemon acts only on runs whose hook it sees

    # --- the training loop's API ----------------------------------------------------------------

    def step(self, step: int) -> None:
        """Call after ``optimizer.step()`` (and ``scheduler.step()``); never raises.

        A command found here takes effect from the next ``optimizer.step()`` on.
        """
        self._step = step
        self._calls += 1
        if self._calls >= self._check_every:
            self._check()

    def log(self, step: int, **metrics: object) -> None:
        """Append one line to ``<run_dir>/metrics.jsonl``; never raises.

        Under torch.distributed only rank 0 writes (one log per run; reduce the values across
        ranks first if rank 0's own are not representative); other ranks' calls do nothing.
        """
        if not self._leader:
            return
        try:
            self._metrics.write(step, metrics)
        except Exception as exc:
            self._report("logging metrics", exc)

    @property
    def lr_scale(self) -> float:
        return self._scaler.factor

    @property
    def lrs(self) -> tuple[float, ...]:
        """The LRs the next step uses per param group: the schedule's, times the factor, bounded.

        ``group["lr"]`` shows the schedule's value only, so LR monitors should log these.
        """
        return self._scaler.effective_lrs()

    def on(self, event: str, fn: Handler) -> Handler:
        """Run ``fn(step, command)`` for ``rollback``, ``checkpoint`` or ``stop`` commands.

        Without a handler such commands are acked ``unsupported``; the heartbeat lists the
        registered events so the daemon knows beforehand. An exception from ``fn`` is caught and
        acked ``rejected``; SystemExit and KeyboardInterrupt are acked ``applied`` and propagate,
        since raising them is how a handler stops the job.
        """
        kind = ActionType(event) if event in {e.value for e in _EVENTS} else None
        if kind is None:
            names = ", ".join(repr(e.value) for e in _EVENTS)
            raise ValueError(f"event must be one of {names}, got {event!r}")
        if not callable(fn):
            raise TypeError(f"handler for {event!r} must be callable, got {fn!r}")
        self._handlers[kind] = fn
        self._beat()
        return fn

    def state_dict(self) -> dict[str, Any]:
        return {"lr_scale": self._scaler.factor, "last_seq": self._last_seq}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the factor and the last handled command from a checkpoint.

        Commands after ``last_seq`` whose acks exist were handled by the incarnation that wrote
        them; they are skipped, not applied again. The heartbeat says so at once.
        """
        scale, last_seq = state["lr_scale"], state["last_seq"]
        scale = setup.positive("lr_scale", scale)
        if type(last_seq) is not int or last_seq < 0:
            raise ValueError(f"last_seq must be an int >= 0, got {last_seq!r}")
        self._scaler.factor = scale
        self._last_seq = last_seq
        self._beat()

    def close(self) -> None:
        """Stop listening: remove the optimizer hooks, write a last heartbeat. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._check_every = sys.maxsize  # step() is now only a counter
        try:
            self._scaler.remove()
        except Exception as exc:
            self._report("removing the optimizer hooks", exc)
        self._beat()
        self._metrics.close()

    def __enter__(self) -> Hook:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- a check ------------------------------------------------------------------------------

    def _check(self) -> None:
        calls, self._calls = self._calls, 0
        every = self._check_every
        batch: list[Incoming] = []
        read_ok = False
        try:
            now = self._clock()
            every = next_check_every(every, calls, now - self._last_check, self._check_interval)
            self._last_check = now
            if self._unwritten_acks:
                self._write_acks([])
            batch, read_ok = self._read_batch() if self._leader else ([], True)
        except Exception as exc:
            self._report("checking the channel", exc)
        # Every rank reaches this call at the same check, whatever happened above.
        agreed = self._ranks.agree(every, batch)
        if agreed is None:
            return  # reported; the cadence stays the last agreed one, so ranks stay in step
        self._check_every, batch = agreed
        try:
            handled = self._handle_all(batch)
            # No heartbeat after a failed read: a hook that cannot read its commands should not
            # look alive to the daemon, which acts only on runs with a live hook.
            if read_ok and (
                handled or self._last_check - self._last_beat >= self._heartbeat_interval
            ):
                self._beat()
        except Exception as exc:
            self._report("checking the channel", exc)
        if self._exit is not None:
            stop, self._exit = self._exit, None
            raise stop

    def _read_batch(self) -> tuple[list[Incoming], bool]:
        """The pending commands in order, up to a limit, and whether reading ended cleanly.

        What was read before a failure is still handled. The failure is reported here rather
        than returned: a kept exception holds its traceback, whose frames hold the hook.
        """
        batch: list[Incoming] = []
        try:
            while len(batch) < _MAX_PER_CHECK:
                incoming = self._read_next(self._last_seq + len(batch) + 1)
                if incoming is None:
                    break
                batch.append(incoming)
        except Exception as exc:
            self._report("checking the channel", exc)
            return batch, False
        return batch, True

    def _handle_all(self, batch: list[Incoming]) -> bool:
        for incoming in batch:
            self._handle(incoming)
            if self._exit is not None:
                break  # the rest stay pending for whoever resumes the job
        return bool(batch)

    def _read_next(self, seq: int) -> Incoming | None:
        """Command ``seq``, if its file exists. The common case is one failed ``open()``."""
        path = channel.command_path(self.run_dir, seq)
        refusal = ""
        data = b""
        try:
            data = channel.read_regular_file(path, channel.MAX_COMMAND_BYTES)
        except FileNotFoundError:
            return None
        except ChannelError as exc:
            if not os.path.lexists(path):
                raise  # the directory is unreadable, not the command hostile: try again later
            refusal = str(exc)  # a symlink, a FIFO, an oversized or unreadable file
        digest = channel.digest(data)
        if channel.ack_answers(self.run_dir, seq, digest):
            return Incoming(seq, already_acked=True, digest=digest)
        if refusal:
            return Incoming(seq, refusal=refusal, digest=digest)
        try:
            command = channel.decode_command(
                data, expected_seq=seq, channel=self._channel, key=self._key
            )
        except ChannelError as exc:
            return Incoming(seq, refusal=str(exc), digest=digest)
        return Incoming(seq, command=command, digest=digest)

    def _handle(self, incoming: Incoming) -> None:
        # Advance first: whatever happens below, a command is handled at most once and a bad
        # one cannot wedge the channel.
        self._last_seq = incoming.seq
        if incoming.already_acked:
            if self._leader:
                log.info("lrwatch: command %d was handled before (ack exists)", incoming.seq)
            return
        status, reason = self._apply(incoming)
        if not self._leader:
            return
        log.log(
            logging.INFO if status is AckStatus.APPLIED else logging.WARNING,
            "lrwatch: command %d %s: %s",
            incoming.seq,
            status.value,
            reason,
        )
        step, lrs = self._step_int(), self.lrs
        ack = Ack(
            incoming.seq, status, step, self.lr_scale, lrs, reason, time.time(), incoming.digest
        )
        self._write_acks([ack])

    def _write_acks(self, new: list[Ack]) -> None:
        """Write the acks still owed, oldest first; keep those that fail for the next check."""
        pending, self._unwritten_acks = [*self._unwritten_acks, *new], []
        for i, ack in enumerate(pending):
            try:
                channel.write_ack(self.run_dir, ack)
            except OSError as exc:
                self._report("writing an ack", exc)
                self._unwritten_acks = pending[i:][-_MAX_PER_CHECK * 16 :]
                return

    def _apply(self, incoming: Incoming) -> tuple[AckStatus, str]:
        command = incoming.command
        if command is None:
            return AckStatus.REJECTED, incoming.refusal
        if self._ranks.refusal:
            return AckStatus.REJECTED, self._ranks.refusal
        try:
            if command.action.type is ActionType.SCALE_LR:
                return self._scale(command)
            return self._run_handler(command)
        except Exception as exc:
            self._report("applying a command", exc)
            return AckStatus.REJECTED, f"hook error: {exc!r}"

    def _scale(self, command: Command) -> tuple[AckStatus, str]:
        change = command.action.factor
        if change is None:  # decode_command guarantees one; kept for the type checker
            return AckStatus.REJECTED, "scale_lr without a factor"
        scaler = self._scaler
        verdict = judge_scale(change, scaler.factor, scaler.scheduled_lrs(), self.bounds)
        if not verdict.accepted:
            return AckStatus.REJECTED, verdict.reason
        scaler.factor = verdict.factor
        return AckStatus.APPLIED, verdict.reason

    def _run_handler(self, command: Command) -> tuple[AckStatus, str]:
        kind = command.action.type
        handler = self._handlers.get(kind)
        if handler is None:
            return AckStatus.UNSUPPORTED, f"no handler registered for {kind.value!r} (hook.on)"
        try:
            handler(self._step_int(), command)
        except (SystemExit, KeyboardInterrupt) as exc:
            self._exit = exc  # re-raised by _check once the ack is written
            return AckStatus.APPLIED, f"{kind.value} handler stopped the job ({exc!r})"
        except Exception as exc:
            return AckStatus.REJECTED, f"{kind.value} handler raised {exc!r}"
        return AckStatus.APPLIED, f"{kind.value} handler ran"

    # --- heartbeat ------------------------------------------------------------------------------

    def _beat(self) -> None:
        if not self._leader:
            return
        try:
            self._last_beat = self._clock()
            step = self._step_int()
            beat = Heartbeat(
                pid=os.getpid(),
                host=self._host,
                step=step,
                lr_scale=self.lr_scale,
                last_seq=self._last_seq,
                lrs=self.lrs,
                written_at=time.time(),
                handlers=tuple(sorted(kind.value for kind in self._handlers)),
                world_size=self._ranks.world_size,
                channel=self._channel,
                # Read here, between optimizer steps, where param_groups hold exactly what the
                # schedule set (the factor lives only inside a step: see scaling.py).
                schedule_lrs=self._scaler.scheduled_lrs(),
                schedule_step=step,
            )
            channel.write_heartbeat(self.run_dir, beat)
        except Exception as exc:
            self._report("writing the heartbeat", exc)

    def _step_int(self) -> int:
        try:
            return int(self._step)  # the loop may pass a tensor or a numpy integer
        except (TypeError, ValueError, RuntimeError):
            return -1


# One signature, not a copy: ``lrwatch.attach(optimizer, run_dir, *, secret=None, min_lr=None,
# ...)`` is the Hook constructor under the name the docs and DESIGN.md use.
attach = Hook
