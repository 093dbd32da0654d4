"""The daemon's end of one run's channel: the single writer of its commands.

It numbers commands, writes them (after the store has committed them, see store.py), collects
acks and heartbeats, and says whether a live hook is there to act on. It never decides anything:
the controller decides, the actuator delivers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lrwatch import channel
from lrwatch.store import StoredCommand
from lrwatch.types import Ack, Action, Command, Heartbeat

log = logging.getLogger("lrwatch.actuator")

CHANNEL_RECHECK_SECONDS = 10.0


class Actuator:
    def __init__(self, run: str, run_dir: Path, key: bytes | None) -> None:
        self.run = run
        self.run_dir = run_dir
        self.key = key  # replaced when a config reload brings a new secret
        # Read now, not at the first heartbeat poll: a run found with a live hook (a new run, or
        # every run after a daemon restart) must be actionable by the very first batch, or the
        # policy would decide "no live hook" and a restart would change what the daemon does.
        self.heartbeat: Heartbeat | None = channel.read_heartbeat(run_dir)
        self.unacked: dict[int, Command] = {}
        self.acked_seq = 0  # the highest sequence number acknowledged
        self._next_seq = channel.highest_command_seq(run_dir) + 1
        self._bad_acks: set[int] = set()
        self._next_channel_check = 0.0
        self._has_channel = False

    @property
    def channel_id(self) -> str | None:
        # Read each time: the hook creates it on attach, possibly after the daemon found the run.
        return channel.channel_id(self.run_dir)

    def restore(self, stored: list[StoredCommand]) -> None:
        """Start-up reconciliation with the database's view of this run's commands.

        The files decide which numbers are taken; the database decides which commands exist. A
        command committed to the database whose file a crash prevented is written now.
        """
        for item in stored:
            self._next_seq = max(self._next_seq, item.command.seq + 1)
            if item.ack is not None:
                self.acked_seq = max(self.acked_seq, item.command.seq)
            else:
                self.unacked[item.command.seq] = item.command
                if not channel.command_path(self.run_dir, item.command.seq).exists():
                    self.send(item.command)

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

    def new_command(self, action: Action, reason: str, issuer: str, now: float) -> Command:
        command = Command(self.run, self._next_seq, action, reason, now, issuer)
        self._next_seq += 1
        self.unacked[command.seq] = command
        return command

    def send(self, command: Command) -> bool:
        channel_id = self.channel_id
        if channel_id is None:
            log.warning("run %s: no channel id, command %d not written", self.run, command.seq)
            return False
        channel.write_command(self.run_dir, command, channel=channel_id, key=self.key)
        return True

    def poll(self, *, heartbeat: bool) -> list[Ack]:
        """Collect acks for outstanding commands (in order), and refresh the heartbeat."""
        if heartbeat and self.has_channel:
            self.heartbeat = channel.read_heartbeat(self.run_dir) or self.heartbeat
        acks = []
        for seq in sorted(self.unacked):
            try:
                ack = channel.read_ack(self.run_dir, seq)
            except channel.ChannelError as exc:
                if seq not in self._bad_acks:
                    self._bad_acks.add(seq)
                    log.warning("run %s: %s", self.run, exc)
                continue
            if ack is not None:
                del self.unacked[seq]
                self.acked_seq = max(self.acked_seq, seq)
                acks.append(ack)
        return acks

    def heartbeat_is_current(self) -> bool:
        """Whether the last heartbeat was written after every ack the daemon has read.

        Only such a heartbeat may overrule the daemon's view of the factor: one written just
        before the latest ack still carries the factor from before it.
        """
        beat = self.heartbeat
        return beat is not None and not self.unacked and beat.last_seq >= self.acked_seq
