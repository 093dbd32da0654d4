"""What ``attach()`` checks before training starts (setup.py): it fails fast, naming the bad
value, the planted channel id, or the object that is not an optimizer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import lrwatch
from lrwatch.protocol import channel
from tests.unit.hook.job import (
    make_model,
)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_lr": -1.0}, "min_lr"),
        ({"max_lr": math.inf}, "max_lr"),
        ({"min_lr": 0.5, "max_lr": 0.1}, "above max_lr"),
        ({"max_change": 1.0}, "max_change"),
        ({"check_interval": 0.0}, "check_interval"),
        ({"heartbeat_interval": math.nan}, "heartbeat_interval"),
        ({"secret": ""}, "secret"),
    ],
)
def test_attach_fails_fast_naming_the_bad_value(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    _, opt = make_model()
    with pytest.raises(ValueError, match=match):
        lrwatch.attach(opt, tmp_path, **kwargs)


def test_attach_refuses_a_planted_channel_id(tmp_path: Path) -> None:
    (tmp_path / "theirs").write_text("attacker-chosen-id")
    channel.channel_dir(tmp_path).mkdir()
    (channel.channel_dir(tmp_path) / "id").symlink_to(tmp_path / "theirs")
    _, opt = make_model()
    with pytest.raises(ValueError, match="not a regular file holding a channel id"):
        lrwatch.attach(opt, tmp_path)


def test_attach_wants_an_optimizer(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        lrwatch.attach(object(), tmp_path)  # type: ignore[arg-type]
