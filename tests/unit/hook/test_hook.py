"""The training-side hook (hook.py): its acks, exactly once across restarts and checkpoints,
the handlers of the other actions, ``close()``, and what ``import lrwatch`` pulls in."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrwatch.protocol import channel
from lrwatch.protocol.types import AckStatus, ActionType, Command
from tests.unit.hook.job import (
    LRS,
    F,
    ack,
    attach,
    make_model,
    record_used,
    rejected,
    send,
    train_step,
)

# --- acks, exactly once, checkpoints ------------------------------------------------------------


def test_ack_reports_the_applied_state(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, F)
    hook.step(17)
    got = ack(tmp_path, 1)
    assert (got.seq, got.status, got.step, got.lr_scale) == (1, AckStatus.APPLIED, 17, F)
    assert got.lrs == pytest.approx((F * 0.1, F * 0.02))
    assert hook.lr_scale == F
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and (beat.last_seq, beat.lr_scale, beat.step) == (1, F, 17)


def test_attach_announces_itself(tmp_path: Path) -> None:
    _, opt = make_model()
    attach(opt, tmp_path / "new" / "run")
    beat = channel.read_heartbeat(tmp_path / "new" / "run")
    assert beat is not None and beat.pid == os.getpid() and beat.lrs == LRS
    assert channel.channel_id(tmp_path / "new" / "run") is not None


def test_several_pending_commands_are_drained_in_order(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    for seq, factor in enumerate((0.5, 0.5, 2.0), start=1):
        send(tmp_path, seq, factor)
    hook.step(0)
    assert hook.lr_scale == 0.5
    assert [ack(tmp_path, s).lr_scale for s in (1, 2, 3)] == [0.5, 0.25, 0.5]


def test_a_command_file_seen_twice_is_applied_once(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    hook.step(0)
    first = ack(tmp_path, 1)
    send(tmp_path, 1, 0.5)  # the daemon rewrites it, e.g. after a crash
    for step in range(1, 5):
        hook.step(step)
    assert hook.lr_scale == 0.5 and ack(tmp_path, 1) == first
    # A new incarnation of the job on the same run directory finds the ack and skips it.
    _, opt2 = make_model()
    fresh = attach(opt2, tmp_path)
    fresh.step(0)
    assert fresh.lr_scale == 1.0 and ack(tmp_path, 1) == first
    assert fresh.state_dict() == {"lr_scale": 1.0, "last_seq": 1}


def test_restored_checkpoint_skips_commands_handled_since(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    send(tmp_path, 1, 0.5)
    hook.step(10)
    checkpoint = hook.state_dict()
    send(tmp_path, 2, 0.5)
    hook.step(20)
    assert hook.lr_scale == 0.25
    hook.close()

    _, opt2 = make_model()
    restored = attach(opt2, tmp_path)
    restored.load_state_dict(checkpoint)
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and (beat.lr_scale, beat.last_seq) == (0.5, 1)
    ack2 = ack(tmp_path, 2)
    send(tmp_path, 3, 4.0)
    restored.step(11)
    assert ack(tmp_path, 2) == ack2  # skipped, not re-applied nor re-acked
    assert restored.lr_scale == 2.0 and ack(tmp_path, 3).lr_scale == 2.0


def test_state_dict_round_trip_and_validation(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    hook.load_state_dict({"lr_scale": 0.125, "last_seq": 7})
    assert hook.state_dict() == {"lr_scale": 0.125, "last_seq": 7}
    assert hook.lrs == (0.0125, 0.0025)
    with pytest.raises(ValueError, match="lr_scale"):
        hook.load_state_dict({"lr_scale": math.nan, "last_seq": 1})
    with pytest.raises(ValueError, match="last_seq"):
        hook.load_state_dict({"lr_scale": 1.0, "last_seq": -1})


# --- handlers -----------------------------------------------------------------------------------


def test_handlers_run_and_unregistered_events_are_unsupported(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    seen: list[tuple[int, Command]] = []
    hook.on("checkpoint", lambda step, command: seen.append((step, command)))
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.handlers == ("checkpoint",)
    send(tmp_path, 1, kind=ActionType.CHECKPOINT)
    send(tmp_path, 2, kind=ActionType.ROLLBACK)
    hook.step(42)
    assert [(s, c.seq, c.action.type) for s, c in seen] == [(42, 1, ActionType.CHECKPOINT)]
    assert ack(tmp_path, 1).status is AckStatus.APPLIED
    assert ack(tmp_path, 2).status is AckStatus.UNSUPPORTED
    assert "rollback" in ack(tmp_path, 2).reason


def test_a_failing_handler_is_acked_rejected(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)

    def broken(step: int, command: Command) -> None:
        raise OSError("disk full")

    hook.on("rollback", broken)
    send(tmp_path, 1, kind=ActionType.ROLLBACK)
    rejected(tmp_path, 1, hook, "disk full")


def test_a_stop_handler_may_exit_the_job(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    hook.on("stop", lambda step, command: sys.exit(3))
    send(tmp_path, 1, kind=ActionType.STOP)
    with pytest.raises(SystemExit):
        hook.step(5)
    assert ack(tmp_path, 1).status is AckStatus.APPLIED


def test_on_validates_the_event(tmp_path: Path) -> None:
    _, opt = make_model()
    hook = attach(opt, tmp_path)
    with pytest.raises(ValueError, match="'rollback', 'checkpoint', 'stop'"):
        hook.on("scale_lr", lambda step, command: None)
    with pytest.raises(TypeError):
        hook.on("stop", "not callable")  # type: ignore[arg-type]


# --- close --------------------------------------------------------------------------------------


def test_close_removes_the_optimizer_hooks_and_says_goodbye(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path)
    used = record_used(opt)
    send(tmp_path, 1, 0.5)
    hook.step(7)
    hook.close()
    train_step(model, opt)
    assert used[-1] == LRS
    send(tmp_path, 2, 0.5)
    hook.step(8)
    hook.close()
    assert channel.load_ack(tmp_path, 2) is None
    beat = channel.read_heartbeat(tmp_path)
    assert beat is not None and beat.step == 7 and beat.last_seq == 1


# --- import isolation ---------------------------------------------------------------------------


def test_import_lrwatch_imports_neither_torch_nor_daemon_deps() -> None:
    code = (
        "import sys, lrwatch\n"
        "assert lrwatch.__version__ == '0.2.0'\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "import lrwatch.hook\n"
        "banned = ('pydantic', 'typer', 'prometheus_client', 'watchdog', 'rich', 'yaml')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))\n"
        "print(lrwatch.attach is lrwatch.hook.attach, lrwatch.Hook is lrwatch.hook.Hook)\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[:2] == ["[]", "True True"]
