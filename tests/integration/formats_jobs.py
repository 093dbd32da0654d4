"""Tiny diverging training jobs whose logs are written by the real libraries, one per native
format (``python -m tests.integration.formats_jobs KIND DIR``), and the formats of libraries
that do not install here, written line for line as those libraries write them.

Every job diverges: plain SGD at a learning rate far above 2/λ of a linear least-squares problem
with inputs of scale 10, so the loss grows geometrically to inf, then NaN, within ~15 steps.
Nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

LR = 0.5
STEPS = 40


def _data() -> Any:
    import torch

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 10
    return x, x.sum(1, keepdim=True)


def hugging_face(out: Path) -> None:
    """transformers' Trainer: checkpoint-*/trainer_state.json, TensorBoard under runs/, and the
    dicts it prints on stdout (the caller sends stdout to a file)."""
    import transformers

    from tests.integration.trainer_model import Tiny

    x, y = _data()
    rows = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: let it diverge
        logging_steps=1,
        logging_nan_inf_filter=False,  # log the inf/NaN losses as they are
        save_steps=10,
        save_only_model=True,
        eval_strategy="steps",
        eval_steps=10,
        report_to=["tensorboard"],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=Tiny(), args=args, train_dataset=rows, eval_dataset=rows[:16]
    )
    trainer.train()


def lightning(out: Path) -> None:
    """Lightning: CSVLogger (train_loss_step/_epoch, sparse rows), TensorBoardLogger,
    LearningRateMonitor (lr-SGD), and TQDMProgressBar on stdout (the caller sends stdout to a
    file; with ``rich`` installed, Lightning's default bar prints only at the end)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    class Lit(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, _: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch: Any, _: int) -> None:
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR)

    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(
        max_epochs=STEPS // len(loader),
        logger=[CSVLogger(out, name="csv"), TensorBoardLogger(out, name="tb")],
        callbacks=[LearningRateMonitor(logging_interval="step"), TQDMProgressBar()],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(Lit(), loader, loader)


def keras_layout(out: Path) -> None:
    """What Keras' TensorBoard callback writes (TensorFlow does not install here): one run
    as ``train/`` and ``validation/`` event files, tags ``epoch_loss`` and
    ``epoch_learning_rate``, TF2 tensor scalars (a 0-d DT_FLOAT tensor, plugin ``scalars``
    metadata with a tag's first value only), written with torch's event writer."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from torch.utils.tensorboard import SummaryWriter

    def scalar(tag: str, value: float, first: bool) -> summary_pb2.Summary:
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(),
            float_val=[value],
        )
        item = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
        if first:
            item.metadata.plugin_data.plugin_name = "scalars"
        return summary_pb2.Summary(value=[item])

    losses = diverging(20)
    for split, shift in (("train", 1.0), ("validation", 1.2)):
        writer = SummaryWriter(log_dir=str(out / split), filename_suffix=".v2")  # as TF2 names
        events = writer._get_file_writer()  # torch's FileWriter: add_summary(summary, step)
        for epoch, loss in enumerate(losses):
            events.add_summary(scalar("epoch_loss", loss * shift, epoch == 0), epoch)
            if split == "train":
                events.add_summary(scalar("epoch_learning_rate", LR, epoch == 0), epoch)
        writer.close()


def keras_stdout(out: Path) -> None:
    """Keras 3's ``fit`` (torch backend), its progress bars on stdout (the caller sends stdout to
    a file): a full batch per epoch, a small LR for 6 epochs, then ``LR`` (a scheduler callback),
    so that the loss falls before it grows to inf and NaN. ``out`` gets its History as JSON."""
    import os

    os.environ["KERAS_BACKEND"] = "torch"
    import keras

    x, y = (t.numpy() for t in _data())
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch: 1e-4 if epoch < 6 else LR)
    keras.utils.set_random_seed(0)
    history = model.fit(
        x, y, epochs=14, batch_size=64, validation_data=(x, y), callbacks=[schedule], verbose=1
    )
    out.write_text(json.dumps(history.history))


def tqdm_loop(out: Path) -> None:
    """A plain training loop under tqdm, as scripts write one: a bar per epoch described
    ``Epoch e/E``, the loss set as its postfix; tqdm draws on stderr (the caller sends it to a
    file, as Slurm's ``slurm-N.out`` gets both streams). ``out`` gets the losses as JSON."""
    import torch
    from tqdm import tqdm

    x, y = _data()
    net = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    epochs, losses = STEPS // len(loader), []
    for epoch in range(1, epochs + 1):
        bar = tqdm(loader, desc=f"Epoch {epoch}/{epochs}")
        for xb, yb in bar:
            loss = torch.nn.functional.mse_loss(net(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            time.sleep(0.11)  # a step as slow as tqdm's redraw interval (see docs/formats.md)
            bar.set_postfix(loss=loss.item())
            losses.append(loss.item())
    out.write_text(json.dumps(losses))


def sacred_run(out: Path) -> None:
    """Sacred: an experiment under a FileStorageObserver, its loss logged with
    ``_run.log_scalar("training.loss", ...)`` and a validation loss every 5 steps, as Sacred's
    docs show: ``<out>/1/metrics.json``."""
    import torch
    from sacred import Experiment
    from sacred.observers import FileStorageObserver

    ex = Experiment("diverging", save_git_info=False)
    ex.observers.append(FileStorageObserver(str(out)))

    @ex.main
    def train(_run: Any) -> None:
        x, y = _data()
        net = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(net.parameters(), lr=LR)
        for step in range(STEPS):
            loss = torch.nn.functional.mse_loss(net(x[:8]), y[:8])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _run.log_scalar("training.loss", loss.item(), step)
            if step % 5 == 0:
                _run.log_scalar("validation.loss", loss.item(), step)

    ex.run()


def diverging(n: int) -> list[float]:
    """A loss that falls for a while, then grows geometrically to inf and NaN."""
    values = [2.0 / (1 + 0.2 * i) for i in range(n // 2)]
    while len(values) < n:
        grown = values[-1] * 50
        values.append(grown if grown < 1e38 else (math.inf if values[-1] < 1e38 else math.nan))
    return values


def copied_formats(root: Path) -> dict[str, str]:
    """The native formats of libraries not installed here, copied line for line from their
    source or a published log; each a diverging run. Returns {run: its loss metric}."""
    losses = diverging(STEPS)
    runs: dict[str, str] = {}

    def write(rel: str, lines: list[str]) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in lines))

    # detectron2 JSONWriter (detectron2/utils/events.py): json.dumps(sort_keys=True) per line,
    # "iteration" for the step, bare NaN as Python writes it (reallogs/detectron2_orbital_*).
    write(
        "detectron2/metrics.json",
        [
            json.dumps(
                {
                    "data_time": 0.26,
                    "iteration": 19 + 20 * i,
                    "loss_cls": v / 2,
                    "lr": 0.02,
                    "total_loss": v,
                },
                sort_keys=True,
            )
            for i, v in enumerate(losses)
        ],
    )
    runs["detectron2"] = "total_loss"
    # LLaMA-Factory LogCallback (src/llamafactory/train/callbacks.py): trainer_log.jsonl
    # (reallogs/llamafactory_7b_cpt_cosine_8k).
    write(
        "llamafactory/trainer_log.jsonl",
        [
            json.dumps(
                {
                    "current_steps": 5 * (i + 1),
                    "total_steps": 5 * STEPS,
                    "loss": v,
                    "eval_loss": None,
                    "predict_loss": None,
                    "reward": None,
                    "learning_rate": 5e-05,
                    "epoch": round(i / STEPS, 2),
                    "percentage": round(100 * (i + 1) / STEPS, 2),
                    "elapsed_time": "0:03:29",
                    "remaining_time": "4 days, 5:06:09",
                }
            )
            for i, v in enumerate(losses)
        ],
    )
    runs["llamafactory"] = "loss"
    # llm.c train_gpt2.cu printf (reallogs/llmc_gpt2_nan_from_step1): a NaN loss prints as
    # "nan (+nanz)".
    write(
        "llmc/train.log",
        ["Multi-GPU support is disabled. Using a single GPU.", "=> setting grad_accum_steps=16"]
        + [
            f"step {i + 1:4d}/{STEPS} | loss {_llmc(v)}| norm {_llmc(v / 3)}| lr 6.00e-04 "
            f"| 3914.05 ms | 34.5% bf16 MFU | 133950 tok/s"
            for i, v in enumerate(losses)
        ],
    )
    runs["llmc"] = "loss"
    # karpathy/nanoGPT train.py: print(f"iter {iter_num}: loss {lossf:.4f}, time ..., mfu ...")
    write(
        "nanogpt/train.log",
        [f"iter {i}: loss {v:.4f}, time 31.02ms, mfu 12.34%" for i, v in enumerate(losses)],
    )
    runs["nanogpt"] = "loss"
    # Stable-Baselines3 CSVOutputFormat: progress.csv, no step column, sorted keys
    # (reallogs/rl_ppo_carracing_sb3).
    write(
        "sb3/progress.csv",
        ["time/total_timesteps,train/learning_rate,train/loss,train/value_loss"]
        + [f"{2048 * (i + 1)},0.0003,{v},{2 * v}" for i, v in enumerate(losses)],
    )
    runs["sb3"] = "train/loss"
    # Keras CSVLogger: "epoch" then the sorted logs keys (reallogs/keras_tomato_csvlogger).
    write(
        "keras_csv/training_log.csv",
        ["epoch,accuracy,loss,val_accuracy,val_loss"]
        + [f"{i},0.5,{v},0.5,{v * 1.1}" for i, v in enumerate(losses)],
    )
    runs["keras_csv"] = "loss"
    # Megatron-LM training_log (megatron/training/training.py): one " | "-separated line per
    # log interval, losses and the LR printed with {:.6E} (so NaN is "NAN"); every fourth, a
    # validation (evaluate_and_print_results), its loss below the training loss.
    write(
        "megatron/train.log",
        [
            line
            for i, v in enumerate(losses)
            for line in (
                f" [2024-05-01 10:00:{i % 60:02d}] iteration {10 * (i + 1):8d}/{10 * STEPS:8d} | "
                f"consumed samples: {2560 * (i + 1):12d} | elapsed time per iteration (ms): "
                f"812.3 | learning rate: {LR:.6E} | global batch size:   256 | lm loss: {v:.6E} | "
                "loss scale: 1.0 | grad norm: 1.234 | number of skipped iterations:   0 | "
                "number of nan iterations:   0 |",
                *(
                    [
                        f" validation loss at iteration {10 * (i + 1)} on validation set | "
                        f"lm loss value: {v / 2:.6E} | lm loss PPL: 1.000000E+03 | "
                    ]
                    if i % 4 == 3
                    else []
                ),
            )
        ],
    )
    runs["megatron"] = "lm_loss"
    # mmdetection 2.x TextLoggerHook: "Epoch [e][i/n]\t" then ", "-separated pairs, behind the
    # logging module's prefix; four lines an epoch of 200 iterations, ten epochs.
    write(
        "mmdet/20240501_100000.log",
        [
            f"2024-05-01 10:00:00,000 - mmdet - INFO - Epoch [{i // 4 + 1}][{50 * (i % 4 + 1)}/200]"
            f"\tlr: 2.000e-02, eta: 1 day, 2:03:04, time: 0.512, data_time: 0.050, memory: 3000, "
            f"loss_cls: {v / 2:.4f}, loss_bbox: {v / 2:.4f}, loss: {v:.4f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["mmdet"] = "loss"
    # mmengine LoggerHook: "Epoch(train)  [e][ i/n]" then double-space-separated pairs.
    write(
        "mmengine/20240501_100000.log",
        [
            f"05/01 10:00:00 - mmengine - INFO - "
            f"Epoch(train)  [{i // 4 + 1}][{50 * (i % 4 + 1):3d}/200]  "
            "base_lr: 2.0000e-02 lr: 2.0000e-02  eta: 1 day, 0:48:16  time: 0.4852  "
            f"data_time: 0.0126  memory: 3463  loss: {v:.4f}  loss_cls: {v / 2:.4f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["mmengine"] = "loss"
    # fairseq's simple progress bar (fairseq/logging/progress_bar.py) under its logging prefix:
    # "epoch 001:    100 / 1000 loss=..., num_updates=100, ..."; three epochs of 15 updates.
    write(
        "fairseq/train.log",
        [
            f"2024-05-01 10:00:00 | INFO | train_inner | epoch {i // 15 + 1:03d}:     "
            f"{i % 15 + 1} / 15 loss={v:.3f}, nll_loss={v:.3f}, ppl=727.5, wps=12345.6, ups=3.1, "
            f"wpb=4000, bsz=128, num_updates={i + 1}, lr={LR}, gnorm=3.321, train_wall=30, wall=35"
            for i, v in enumerate(losses)
        ],
    )
    runs["fairseq"] = "loss"
    # PyTorch Ignite's examples (examples/mnist/mnist.py): "Epoch[e] Iteration[i/n] Loss: {:.2f}".
    write(
        "ignite/train.log",
        [
            f"Epoch[{i // 10 + 1}] Iteration[{i % 10 + 1}/10] Loss: {v:.2f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["ignite"] = "Loss"
    # pytorch/examples imagenet/main.py: ProgressMeter's tab-separated "name value (mean)";
    # ten iterations an epoch, counted from 0.
    write(
        "torch_imagenet/train.log",
        [
            f"Epoch: [{i // 10}][{i % 10:2d}/10]\tTime  0.512 ( 0.601)\tData  0.010 ( 0.020)\t"
            f"Loss {v:.4e} ({v:.4e})\tAcc@1   0.00 (  0.00)\tAcc@5   0.78 (  0.50)"
            for i, v in enumerate(losses)
        ],
    )
    runs["torch_imagenet"] = "Loss"
    # pytorch/examples mnist/main.py: the count within the epoch is of samples (64 a batch).
    write(
        "torch_mnist/train.log",
        [
            f"Train Epoch: {i // 10 + 1} [{64 * (i % 10)}/640 ({10 * (i % 10):.0f}%)]\t"
            f"Loss: {v:.6f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["torch_mnist"] = "Loss"
    # pytorch/examples word_language_model/main.py
    write(
        "torch_wlm/train.log",
        [
            f"| epoch {i // 10 + 1:3d} | {200 * (i % 10 + 1):5d}/ 2000 batches | lr 20.00 | "
            f"ms/batch 45.61 | loss {v:5.2f} | ppl {math.exp(min(v, 700.0)):8.2f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["torch_wlm"] = "loss"
    # timm train.py: "Train: {epoch} [{update_idx:>4d}/{updates_per_epoch} ({percent:>3.0f}%)]"
    write(
        "timm/train.log",
        [
            f"Train: {i // 10} [{i % 10:4d}/10 ({10 * (i % 10):3d}%)]  Loss: {v:#.3g} ({v:#.3g})  "
            "Time: 0.312s,  820.45/s  (0.318s,  805.12/s)  LR: 1.000e-03  Data: 0.010 (0.012)"
            for i, v in enumerate(losses)
        ],
    )
    runs["timm"] = "Loss"
    # torchtune's recipes: the bar's description "{epoch + 1}|{global_step}|Loss: {loss}".
    write(
        "torchtune/train.log",
        [
            f"\r{i // 10 + 1}|{i + 1}|Loss: {v}:  {10 * (i % 10 + 1)}%|#         | "
            f"{i % 10 + 1}/10 [00:01<00:09,  1.02it/s]"
            for i, v in enumerate(losses)
        ],
    )
    runs["torchtune"] = "Loss"
    # PaddleOCR's train loop (ppocr/utils/logging): the epoch over the epochs, its global step.
    write(
        "paddleocr/train.log",
        [
            f"[2024/05/01 10:00:00] ppocr INFO: epoch: [{i // 10 + 1}/500], global_step: {i + 1}, "
            f"lr: 0.001000, loss: {v:.6f}, avg_reader_cost: 0.01 s, avg_batch_cost: 0.2 s, "
            "avg_samples: 8.0, ips: 40.0 samples/s, eta: 1:00:00"
            for i, v in enumerate(losses)
        ],
    )
    runs["paddleocr"] = "loss"
    # DeepSpeed's pipeline engine (runtime/pipe/engine.py), beside its step line.
    write(
        "deepspeed/train.log",
        [
            line
            for i, v in enumerate(losses)
            for line in (
                f"[2024-05-01 10:00:00,000] [INFO] [logging.py:96:log_dist] [Rank 0] "
                f"step={i + 1}, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]",
                f"steps: {i + 1} loss: {v:0.4f} iter time (s): 0.500 samples/sec: 64.000",
            )
        ],
    )
    runs["deepspeed"] = "loss"
    # fastai's console table (fastprogress): a header, then a row an epoch, bars between.
    write(
        "fastai/train.log",
        ["epoch     train_loss  valid_loss  accuracy  time    "]
        + [
            f"{i:<10}{v:<12.6f}{v * 1.1:<12.6f}{0.5:<10.6f}00:05     " for i, v in enumerate(losses)
        ],
    )
    runs["fastai"] = "train_loss"
    # OpenNMT-py's report (onmt/utils/statistics.py): xent is its training loss.
    write(
        "opennmt/train.log",
        [
            f"[2024-05-01 10:00:00,000 INFO] Step {10 * (i + 1)}/100000; acc: 10.20; "
            f"ppl: {math.exp(min(v, 700.0)):.2f}; xent: {v:.2f}; lr: 0.00100; sents:    1234; "
            "bsz: 1000/1200/ 30; 8000/9000 tok/s;     10 sec"
            for i, v in enumerate(losses)
        ],
    )
    runs["opennmt"] = "xent"
    # yunjey/pytorch-tutorial and its heirs: print('Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}')
    write(
        "tutorial/train.log",
        [
            f"Epoch [{i // 10 + 1}/{STEPS // 10}], Step [{100 * (i % 10 + 1)}/1000], Loss: {v:.4f}"
            for i, v in enumerate(losses)
        ],
    )
    runs["tutorial"] = "Loss"
    return runs


def _llmc(value: float) -> str:
    return "    nan (+nanz)" if math.isnan(value) else f"{value:.6f} "


if __name__ == "__main__":
    kind, where = sys.argv[1], Path(sys.argv[2])
    jobs = {
        "hugging_face": hugging_face,
        "lightning": lightning,
        "keras_layout": keras_layout,
        "keras_stdout": keras_stdout,
        "tqdm_loop": tqdm_loop,
        "sacred": sacred_run,
    }
    jobs[kind](where)
