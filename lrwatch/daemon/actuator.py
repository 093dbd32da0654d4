"""The daemon's end of one run's channel: the single writer of its commands.

It numbers commands, writes them (after the store has committed them, see store.py), collects
acks and heartbeats, and says whether a live hook is there to act on. It never decides anything:
the controller decides, the actuator delivers.

A command has an **id** that only ever grows (``Command.seq``, the database key) and a **slot**,
the file number, where the hook will look next; an ack counts only if it names the digest of the
bytes written to its slot. Why two numbers: docs/architecture.md (the channel). Everything read
passes the boundary (channel_input.py); whatever is wrong is reported through ``report(kind,
message)`` and never raised: one run's hostile or full directory leaves every other run watched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lrwatch.daemon.store import StoredCommand
from lrwatch.protocol import channel
from lrwatch.protocol.channel_input import ChannelError
from lrwatch.protocol.types import Ack, AckStatus, Action, Command, Heartbeat

log = logging.getLogger(__name__)

CHANNEL_RECHECK_SECONDS = 10.0
MAX_SKIPPED_SLOTS = 1000  # taken slots passed over per write, at most (a directory of junk)

Report = Callable[[str, str], None]


@dataclass(slots=True)
class Outstanding:
    """A command written (``slot`` set) or still to be written (``slot`` None: the write
    failed, say on a full disk, and is retried each tick)."""

    command: Command
    slot: int | None = None
    digest: str = ""


class Actuator:
    def __init__(
        self, run: str, run_dir: Path, key: bytes | None, report: Report | None = None
    ) -> None:
        self.run = run
        self.run_dir = run_dir
        self.key = key  # replaced when a config reload brings a new secret
        self._report = report or (lambda kind, msg: log.warning("run %s: %s", run, msg))
        self.trouble: dict[str, str] = {}  # what is wrong now, by kind: the run is unhealthy
        self._out: dict[int, Outstanding] = {}
        self.acked_slot = 0  # the highest slot acknowledged in this channel
        self._next_id = 1
        self._last_slot = 0
        self._bad_acks: set[tuple[int, str]] = set()
        # The channel this numbering is for (persisted with the run, see runs.py).
        self.channel: str | None = channel.channel_id(run_dir)
        self._next_channel_check = 0.0
        self._has_channel = False
        # Read now, not at the first heartbeat poll: a run found with a live hook (a new run, or
        # every run after a daemon restart) must be actionable by the very first batch, or the
        # policy would decide "no live hook" and a restart would change what the daemon does.
        self.heartbeat: Heartbeat | None = self._read_heartbeat()

    @property
    def unacked(self) -> dict[int, Command]:
        return {ident: out.command for ident, out in self._out.items()}

    # --- start-up ------------------------------------------------------------------------------

    def restore(self, stored: list[StoredCommand]) -> list[Ack]:
        """Start-up reconciliation with the database's view of this run's commands.

        A command committed but never written (a crash, a full disk) is written now; one
        written is found again by its id among the files; one owed to a channel that has since
        been replaced comes back as a "superseded" ack, for the caller to record.
        """
        current = channel.channel_id(self.run_dir)
        replaced = self.channel is not None and current is not None and current != self.channel
        superseded: list[Ack] = []
        waiting: list[Outstanding] = []
        for item in stored:
            self._next_id = max(self._next_id, item.command.seq + 1)
            if item.ack is None:
                if replaced:
                    superseded.append(self._superseded(item.command, "job relaunched"))
                else:
                    waiting.append(Outstanding(item.command))
        if current is not None:
            self.channel = current
        found = self._find_written({o.command.seq for o in waiting}) if waiting else {}
        for out in waiting:
            out.slot, out.digest = found.get(out.command.seq, (None, ""))
            if out.slot is not None:
                self._last_slot = max(self._last_slot, out.slot)
            self._out[out.command.seq] = out
        self._flush()
        return superseded

    def _find_written(self, ids: set[int]) -> dict[int, tuple[int, str]]:
        """Slot and digest of each of our command files in this channel, by command id."""
        found: dict[int, tuple[int, str]] = {}
        try:
            names = os.listdir(channel.channel_dir(self.run_dir) / "commands")
        except OSError:
            return found
        for name in names:
            stem, _, ext = name.partition(".")
            if ext != "json" or not (stem.isascii() and stem.isdigit()):
                continue
            path = channel.command_path(self.run_dir, int(stem))
            try:
                data = channel.read_regular_file(path, channel.MAX_COMMAND_BYTES)
                payload = json.loads(data)
            except (OSError, ChannelError, ValueError, RecursionError):
                continue
            if not isinstance(payload, dict) or payload.get("channel") != self.channel:
                continue
            # Files written before ids existed sit at the slot equal to their id.
            ident = payload.get("id", payload.get("seq"))
            if type(ident) is int and ident in ids and payload.get("seq") == int(stem):
                found[ident] = (int(stem), channel.digest(data))
        return found

    @property
    def has_channel(self) -> bool:
        """Whether a hook ever attached (its ``.lrwatch/`` directory exists). Most runs of a big
        fleet have none, and looking for one per run per batch or per second adds up, so the
        answer is cached and looked at again every CHANNEL_RECHECK_SECONDS until it is yes (a
        hook attaching later is seen within that time)."""
        if self._has_channel or self.heartbeat is not None:
            return True
        now = time.monotonic()
        if now >= self._next_channel_check:
            self._next_channel_check = now + CHANNEL_RECHECK_SECONDS
            self._has_channel = channel.channel_dir(self.run_dir).is_dir()
        return self._has_channel

    def alive(self, now: float, timeout: float) -> bool:
        beat = self.heartbeat
        return beat is not None and now - beat.written_at <= timeout

    # --- commands --------------------------------------------------------------------------------

    def new_command(self, action: Action, reason: str, issuer: str, now: float) -> Command:
        command = Command(self.run, self._next_id, action, reason, now, issuer)
        self._next_id += 1
        self._out[command.seq] = Outstanding(command)
        return command

    def withdraw(self, command: Command) -> None:
        """Forget a command made but never committed (the state file failed): it is never
        written; the controller decides again at the next finding."""
        out = self._out.get(command.seq)
        if out is not None and out.slot is None:
            del self._out[command.seq]

    def send(self, command: Command) -> bool:
        """Write ``command`` (and any older one still unwritten, first: the hook applies in
        slot order). False if it is not written yet; it stays outstanding and is retried."""
        self._flush()
        out = self._out.get(command.seq)
        return out is not None and out.slot is not None

    def _flush(self) -> None:
        unwritten = sorted(i for i, out in self._out.items() if out.slot is None)
        if not unwritten:
            return
        channel_id = channel.channel_id(self.run_dir)
        if channel_id is None:
            log.warning("run %s: no channel id, %d command(s) wait", self.run, len(unwritten))
            return
        if self.channel is None:
            self.channel = channel_id
        elif channel_id != self.channel:
            return  # a relaunched job: written once poll() has started its numbering afresh
        for ident in unwritten:
            if not self._write(self._out[ident], channel_id):
                return  # keep the order: the later ones wait for this one
        self.trouble.pop("write_failed", None)

    def _write(self, out: Outstanding, channel_id: str) -> bool:
        beat = self.heartbeat
        hook_at = beat.last_seq if beat is not None and beat.channel in ("", channel_id) else 0
        slot = max(self._last_slot, hook_at) + 1
        for _ in range(MAX_SKIPPED_SLOTS):
            as_filed = dataclasses.replace(out.command, seq=slot)
            try:
                data = channel.encode_command(as_filed, channel_id, self.key, ident=out.command.seq)
                if channel.create_command(self.run_dir, slot, data):
                    out.slot, out.digest, self._last_slot = slot, channel.digest(data), slot
                    return True
            except (OSError, ValueError) as exc:  # ENOSPC, EACCES, a NaN that slipped through
                self._trouble("write_failed", f"command {out.command.seq} not written: {exc}")
                return False
            self._report("slot_taken", f"command file {slot} exists (not ours): skipped")
            slot += 1
        self._trouble("write_failed", f"{MAX_SKIPPED_SLOTS} command slots taken by other files")
        return False

    # --- what the hook says -----------------------------------------------------------------------

    def poll(self, *, heartbeat: bool) -> list[Ack]:
        """Acks for outstanding commands (by id, in order), the heartbeat refreshed, unwritten
        commands retried; "superseded" acks for the commands of a replaced channel."""
        superseded: list[Ack] = []
        if heartbeat and self.has_channel:
            beat = self._read_heartbeat()
            if beat is not None:
                self.heartbeat = beat
                # Hooks older than the heartbeat's channel field: the id file says it.
                current = beat.channel or channel.channel_id(self.run_dir)
                if current and self.channel and current != self.channel:
                    superseded = self._relaunched(current)
                elif current and self.channel is None:
                    self.channel = current
            self._flush()
        return superseded + self._collect_acks()

    def _collect_acks(self) -> list[Ack]:
        acks = []
        beat = self.heartbeat
        legacy_hook = beat is not None and not beat.channel  # its acks carry no digest
        for ident in sorted(self._out):
            out = self._out[ident]
            if out.slot is None:
                continue
            try:
                ack = channel.load_ack(self.run_dir, out.slot)
            except (ChannelError, OSError) as exc:
                self._once(out.slot, getattr(exc, "kind", "unreadable"), f"ack {out.slot}: {exc}")
                continue
            if ack is None:
                continue
            if not _answers(ack, out.digest, legacy_hook):
                # The hook overwrites it once it handles our file, which it has not yet.
                self._once(out.slot, "stale_ack", f"ack {out.slot} answers another file")
                continue
            del self._out[ident]
            self.acked_slot = max(self.acked_slot, out.slot)
            acks.append(dataclasses.replace(ack, seq=ident))
        return acks

    def _relaunched(self, new_channel: str) -> list[Ack]:
        """A new job in this run's directory: number afresh for it; close what was written to
        the old one. Commands not written yet were decided on what the daemon read last,
        which may already be the new job's logs: they go to the new channel."""
        written = [ident for ident, out in self._out.items() if out.slot is not None]
        self._report(
            "channel_replaced",
            f"new channel {new_channel} (a relaunched job): numbering starts over, "
            f"{len(written)} command(s) owed to the old job superseded",
        )
        superseded = [self._superseded(self._out.pop(i).command, "job relaunched") for i in written]
        self.channel, self._last_slot, self.acked_slot = new_channel, 0, 0
        self._bad_acks.clear()
        return superseded

    def _superseded(self, command: Command, why: str) -> Ack:
        scale = self.heartbeat.lr_scale if self.heartbeat else 1.0
        return Ack(
            command.seq, AckStatus.REJECTED, -1, scale, (), f"superseded: {why}", time.time()
        )

    def _read_heartbeat(self) -> Heartbeat | None:
        try:
            beat = channel.load_heartbeat(self.run_dir)
        except (ChannelError, OSError) as exc:
            self._trouble(getattr(exc, "kind", "unreadable"), f"heartbeat refused: {exc}")
            return None
        for kind in ("not_json", "malformed", "out_of_range", "unreadable"):
            self.trouble.pop(kind, None)
        return beat

    def _trouble(self, kind: str, message: str) -> None:
        self.trouble[kind] = message
        self._report(kind, message)

    def _once(self, slot: int, kind: str, message: str) -> None:
        if (slot, kind) not in self._bad_acks:
            self._bad_acks.add((slot, kind))
            self._report(kind, message)

    def heartbeat_is_current(self) -> bool:
        """Whether the last heartbeat was written after every ack the daemon has read.

        Only such a heartbeat may overrule the daemon's view of the factor: one written just
        before the latest ack still carries the factor from before it.
        """
        beat = self.heartbeat
        return beat is not None and not self._out and beat.last_seq >= self.acked_slot


def _answers(ack: Ack, digest: str, legacy_hook: bool) -> bool:
    """Whether ``ack`` answers the command file with ``digest``. A hook older than digests
    (its heartbeat names no channel) writes acks without one: taken at their word."""
    return ack.digest == digest or (legacy_hook and not ack.digest)
