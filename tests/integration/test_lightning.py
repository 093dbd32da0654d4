"""Lightning's ``Trainer.fit`` with ``LRWatchCallback``: a command sent mid-fit is applied on top
of the module's own per-step LambdaLR, exactly once, and survives a checkpoint and resume.

The LRs are read by two optimizer pre-hooks registered by test callbacks around ours: the one
registered before lrwatch's sees the schedule alone, the one after sees what the step ran with.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")
CSVLogger = pytest.importorskip("lightning.pytorch.loggers").CSVLogger

from lrwatch.integrations.lightning import LRWatchCallback  # noqa: E402
from lrwatch.protocol import channel  # noqa: E402
from lrwatch.protocol.types import Action, ActionType, Command  # noqa: E402

BASE_LR, WARMUP, K, F = 0.1, 8, 12, 0.25


def schedule(step: int) -> float:
    return BASE_LR * min(1.0, (step + 1) / WARMUP)


class Tiny(pl.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.SGD(self.parameters(), lr=BASE_LR)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s) / BASE_LR)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self) -> torch.utils.data.DataLoader[Any]:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(160, 4, generator=gen)
        data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        return torch.utils.data.DataLoader(data, batch_size=8)


class RecordLR(pl.Callback):  # type: ignore[misc]
    """Registers an optimizer pre-hook at fit start: before or after lrwatch's, by list order."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        opt = trainer.optimizers[0]
        opt.register_step_pre_hook(lambda o, *_: self.lrs.append(float(o.param_groups[0]["lr"])))


class SendAt(pl.Callback):  # type: ignore[misc]
    """Writes a command into the channel, as the daemon does, after a chosen optimizer step."""

    def __init__(self, step: int, factor: float, run_dir: Callable[[], Path]) -> None:
        self.step, self.factor, self.run_dir = step, factor, run_dir

    def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
        if trainer.global_step - 1 == self.step:
            run_dir = self.run_dir()
            cid = channel.channel_id(run_dir)
            assert cid is not None
            action = Action(ActionType.SCALE_LR, self.factor)
            command = Command("lit", channel.highest_command_seq(run_dir) + 1, action, "test", 0.0)
            channel.write_command(run_dir, command, channel=cid, key=None)


def fit(
    tmp_path: Path, max_steps: int, send_at: int | None = None, **fit_kwargs: Any
) -> tuple[list[float], list[float], LRWatchCallback]:
    schedule_alone, used = RecordLR(), RecordLR()
    # A tiny check_interval makes every hook.step() a check, so the step an ack names is exact.
    lrwatch_cb = LRWatchCallback(check_interval=1e-9)
    sender = [] if send_at is None else [SendAt(send_at, F, lambda: run_dir(tmp_path))]
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path, name="lit", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        callbacks=[*sender, schedule_alone, lrwatch_cb, used],
        default_root_dir=tmp_path,
    )
    trainer.fit(Tiny(), **fit_kwargs)
    return schedule_alone.lrs, used.lrs, lrwatch_cb


def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "lit" / "version_0"  # trainer.log_dir: where metrics.csv is written


def acks(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(channel.channel_dir(run_dir(tmp_path)) / "acks"))


def test_command_mid_fit_scales_the_schedule_once(tmp_path: Path) -> None:
    scheduled, used, cb = fit(tmp_path, max_steps=30, send_at=K)

    assert scheduled == pytest.approx([schedule(s) for s in range(30)], rel=1e-12)
    assert acks(tmp_path) == [channel.ack_path(run_dir(tmp_path), 1).name]
    ack = channel.load_ack(run_dir(tmp_path), 1)
    assert ack is not None and ack.step == K and ack.lr_scale == F
    assert used[: K + 1] == scheduled[: K + 1]
    assert used[K + 1 :] == [F * lr for lr in scheduled[K + 1 :]]
    assert (run_dir(tmp_path) / "metrics.csv").is_file()  # the log the daemon reads is here too
    assert cb.hook is None  # closed at the end of fit
    beat = channel.read_heartbeat(run_dir(tmp_path))
    assert beat is not None and beat.lr_scale == F and beat.last_seq == 1


@pytest.mark.filterwarnings("ignore:.*exists and is not empty")  # resuming into the same run
def test_checkpoint_carries_the_factor_into_a_resumed_fit(tmp_path: Path) -> None:
    fit(tmp_path, max_steps=20, send_at=5)
    ckpt = next((run_dir(tmp_path) / "checkpoints").glob("*.ckpt"))
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    assert saved["LRWatchCallback"] == {"lr_scale": F, "last_seq": 1}

    scheduled, used, cb = fit(tmp_path, max_steps=30, ckpt_path=str(ckpt))
    assert len(used) == 10  # steps 20..29, resumed
    assert scheduled == pytest.approx([schedule(s) for s in range(20, 30)], rel=1e-12)
    assert used == [F * lr for lr in scheduled]
    assert cb.state_dict() == {"lr_scale": F, "last_seq": 1}
    assert acks(tmp_path) == [channel.ack_path(run_dir(tmp_path), 1).name]  # not applied again
