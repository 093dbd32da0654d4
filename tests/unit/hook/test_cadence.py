"""How often ``hook.step()`` looks at the channel (cadence.py): the check interval grows
slowly, shrinks at once, is capped, and settles at ``check_interval`` seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrwatch.hook.cadence import MAX_CHECK_EVERY, next_check_every
from lrwatch.protocol import channel
from tests.unit.hook.job import (
    TickClock,
    attach,
    make_model,
    send,
)


def test_next_check_every_grows_slowly_shrinks_at_once_and_is_capped() -> None:
    assert next_check_every(1, calls=1, elapsed=1e-6, interval=0.1) == 2
    assert next_check_every(8, calls=8, elapsed=0.08, interval=0.1) == 10
    assert next_check_every(100, calls=100, elapsed=10.0, interval=0.1) == 1
    assert next_check_every(MAX_CHECK_EVERY, 1000, 1e-4, 0.1) == MAX_CHECK_EVERY
    assert next_check_every(4, calls=4, elapsed=0.0, interval=0.1) == 8


def test_checks_settle_at_check_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = TickClock(tick=0.0)
    _, opt = make_model()
    hook = attach(opt, tmp_path, clock=clock, check_interval=0.1)
    reads: list[int] = []
    real_read = channel.read_regular_file

    def counting_read(path: Path, max_bytes: int) -> bytes:
        reads.append(1)
        return real_read(path, max_bytes)

    monkeypatch.setattr(channel, "read_regular_file", counting_read)
    for step in range(2000):
        clock.now += 0.01  # 10 ms per training step: a check every 10 steps
        hook.step(step)
    reads.clear()
    for step in range(2000, 3000):
        clock.now += 0.01
        hook.step(step)
    assert 95 <= len(reads) <= 105
    send(tmp_path, 1, 0.5)
    for step in range(3000, 3010):
        clock.now += 0.01
        hook.step(step)
    assert hook.lr_scale == 0.5  # picked up within check_interval
