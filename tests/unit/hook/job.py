"""A tiny training job with the hook attached, and commands sent to it as the daemon sends them.

The LR "used" at a step is read by an optimizer pre-hook registered after ``attach``, i.e. what
``optimizer.step()`` itself reads. Commands are real files written with
``channel.write_command``, as the daemon writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import lrwatch
from lrwatch.protocol import channel
from lrwatch.protocol.types import Ack, AckStatus, Action, ActionType, Command

LRS = (0.1, 0.02)
F = 0.3  # the factor a test sends when any factor will do


class TickClock:
    """A monotonic clock that moves ``tick`` seconds per reading.

    With a tick above ``check_interval`` every ``hook.step()`` checks the channel, which makes
    the step a command takes effect at exact, as the tests need; the real cadence is tested apart.
    """

    def __init__(self, tick: float = 1.0) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def attach(optimizer: torch.optim.Optimizer, run_dir: Path, **kwargs: Any) -> lrwatch.Hook:
    kwargs.setdefault("clock", TickClock())
    return lrwatch.attach(optimizer, run_dir, **kwargs)


def send(
    run_dir: Path,
    seq: int,
    factor: float | None = None,
    kind: ActionType = ActionType.SCALE_LR,
    *,
    key: bytes | None = None,
    channel_id: str | None = None,
) -> Path:
    cid = channel_id or channel.channel_id(run_dir)
    assert cid is not None
    command = Command("exp", seq, Action(kind, factor), "test", 1.0)
    return channel.write_command(run_dir, command, channel=cid, key=key)


def ack(run_dir: Path, seq: int) -> Ack:
    found = channel.load_ack(run_dir, seq)
    assert found is not None, f"no ack for command {seq}"
    return found


def make_model(lrs: tuple[Any, ...] = LRS, **sgd: Any) -> tuple[torch.nn.Module, torch.optim.SGD]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    params = [model.weight, model.bias]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs, strict=True)]
    return model, torch.optim.SGD(groups, lr=0.1, **sgd)


def record_used(optimizer: torch.optim.Optimizer) -> list[tuple[float, ...]]:
    """The LRs each optimizer step runs with (registered after attach, so after its scaling)."""
    used: list[tuple[float, ...]] = []

    def grab(opt: torch.optim.Optimizer, *_: Any) -> None:
        used.append(tuple(float(group["lr"]) for group in opt.param_groups))

    optimizer.register_step_pre_hook(grab)
    return used


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.linspace(-1, 1, 12).reshape(4, 3)).pow(2).mean().backward()
    optimizer.step()


def rejected(run_dir: Path, seq: int, hook: lrwatch.Hook, match: str) -> None:
    before = hook.lr_scale
    hook.step(seq)
    got = ack(run_dir, seq)
    assert got.status is AckStatus.REJECTED
    assert match in got.reason
    assert hook.lr_scale == before
