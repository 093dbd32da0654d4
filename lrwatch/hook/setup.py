"""Checks made once, when the hook is attached: these may raise, since training has not started.

Everything the hook does later, inside the training loop, must not raise; so whatever can be
found wrong with the arguments and the run directory is found here, naming the bad value.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lrwatch.protocol import channel


def check_optimizer(optimizer: object) -> None:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)!r}")
    for i, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(f"param group {i} has no 'lr'")


def positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def load_key(secret: str | bytes | None) -> bytes | None:
    key = channel.load_secret(secret)
    if key is not None and not key.strip():
        raise ValueError("the secret is empty; unset it or give a real one")
    return key


def open_channel(run_dir: Path) -> str:
    channel_id = channel.channel_id(run_dir, create=True)
    if channel_id is None:
        path = channel.channel_dir(run_dir) / "id"
        raise ValueError(f"{path} is not a regular file holding a channel id; remove it")
    return channel_id


def world_size() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1
