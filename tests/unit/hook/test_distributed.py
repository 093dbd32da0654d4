"""The hook under torch.distributed (distributed.py), for what one process can check: a
process group it cannot coordinate is refused commands, with a warning. The ranks' broadcast
itself is tested across real processes in tests/integration/test_distributed.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lrwatch.protocol import channel
from tests.unit.hook.job import (
    attach,
    make_model,
)


def test_distributed_group_it_cannot_coordinate_refuses_commands_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 4)
    _, opt = make_model()
    with pytest.warns(RuntimeWarning, match="world size 4"):
        attach(opt, tmp_path)
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.world_size == 4
