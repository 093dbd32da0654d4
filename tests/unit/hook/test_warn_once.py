"""Failures inside the training loop never raise into it (warn_once.py): a deleted or
read-only run directory is warned about once per kind of failure, said through logging under
``python -W error``, and the hook keeps its state and recovers when the disk does."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest

from lrwatch.hook import metrics_log
from lrwatch.protocol import channel
from tests.unit.hook.job import (
    ack,
    attach,
    make_model,
    send,
    train_step,
)


def test_deleted_run_dir_never_raises(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    model, opt = make_model()
    hook = attach(opt, run_dir, heartbeat_interval=0.5)
    send(run_dir, 1, 0.5)
    hook.step(0)
    shutil.rmtree(run_dir)
    for step in range(1, 10):
        train_step(model, opt)
        hook.step(step)
        hook.log(step, loss=1.0)
    shutil.rmtree(run_dir)
    run_dir.write_text("now a file")  # every path under it now fails with ENOTDIR
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(10, 50):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    messages = [str(w.message) for w in caught]
    assert any("checking the channel" in m for m in messages)
    assert len(messages) == len(set(messages)) <= 3  # reported once per kind, not per step
    assert hook.lr_scale == 0.5 and hook.lrs == (0.05, 0.01)
    run_dir.unlink()
    run_dir.mkdir()
    hook.step(50)  # the directory is back: so is the heartbeat
    beat = channel.read_heartbeat(run_dir)
    assert beat is not None and beat.step == 50


class ReadOnlyOs:
    """``os`` for the channel module as seen on a read-only filesystem (EROFS on every write).

    The tests run as root here, where chmod does not stop writes; this is the same failure
    from the point of view of the code under test.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, *args: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return os.open(path, flags, *args)


def _read_only_open(*args: Any, **kwargs: Any) -> Any:
    raise OSError(30, "Read-only file system")


def make_read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "os", ReadOnlyOs())
    monkeypatch.setattr(metrics_log, "open", _read_only_open, raising=False)


def test_read_only_run_dir_never_raises_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path, heartbeat_interval=0.5)
    send(tmp_path, 1, 0.5)
    make_read_only(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(20):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    messages = [str(w.message) for w in caught]
    assert any("ack" in m for m in messages) and any("heartbeat" in m for m in messages)
    assert any("metrics" in m for m in messages)
    assert len(messages) == len(set(messages)) == 3
    assert hook.lr_scale == 0.5  # applied even though it could not be acked
    monkeypatch.undo()
    send(tmp_path, 2, 0.5)
    hook.step(20)
    hook.log(20, loss=1.0)
    assert ack(tmp_path, 2).lr_scale == 0.25
    # The ack that could not be written is written once the disk takes writes again; the
    # command itself was applied once (the factor is 0.5 x 0.5, not 0.5 x 0.5 x 0.5).
    assert ack(tmp_path, 1).lr_scale == 0.5
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def chmod_protects() -> bool:
    """False for root (or CAP_DAC_OVERRIDE), who writes into a mode-0555 directory anyway."""
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o555)
        try:
            Path(tmp, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(tmp, 0o755)
        return False


@pytest.mark.skipif(not chmod_protects(), reason="this user writes through chmod 0555")
def test_chmod_read_only_run_dir_never_raises(tmp_path: Path) -> None:
    model, opt = make_model()
    hook = attach(opt, tmp_path, heartbeat_interval=0.5)
    send(tmp_path, 1, 0.5)
    dirs = [tmp_path, channel.channel_dir(tmp_path), channel.channel_dir(tmp_path) / "commands"]
    for path in dirs:
        path.chmod(0o555)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(20):
                train_step(model, opt)
                hook.step(step)
                hook.log(step, loss=1.0)
    finally:
        for path in dirs:
            path.chmod(0o755)
    messages = [str(w.message) for w in caught]
    assert any("ack" in m for m in messages) and any("metrics" in m for m in messages)
    assert len(messages) == len(set(messages))
    assert hook.lr_scale == 0.5


def test_warnings_as_errors_do_not_reach_the_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    model, opt = make_model()
    hook = attach(opt, run_dir)
    shutil.rmtree(run_dir)
    run_dir.write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error
        for step in range(5):
            train_step(model, opt)
            hook.step(step)
            hook.log(step, loss=1.0)
    assert "checking the channel failed" in caplog.text  # said through logging instead
