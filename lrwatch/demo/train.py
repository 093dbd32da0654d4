"""A real small training job whose learning rate diverges without help.

An MLP (tanh) learns scikit-learn's digits with SGD + momentum under a linear warm-up
(``LambdaLR``, the closed-form schedule Hugging Face uses by default) over 400 steps towards a
peak LR of 3.0, which is too high: past step ~300 the loss starts to climb and, around step 370,
it overflows to inf/NaN. lrwatch sees the climb in the JSONL log and cuts the LR before the NaN.
(A faster warm-up blows up within a handful of steps of the first sign, faster than any
out-of-process watcher that reads logs can answer; this one leaves it ~40 steps, ~1 s.)

Each step sleeps ``--step-time`` seconds so that the job runs at the pace of a real GPU step
(tens of milliseconds) instead of the ~0.3 ms this tiny model takes on a CPU; without it the
whole run would be over before any out-of-process watcher could act. This is the training loop
of the README's two-line integration, used by ``lrwatch demo`` and the end-to-end tests.

    python -m lrwatch.demo.train RUN_DIR [--no-lrwatch] [--steps 500] [--step-time 0.02]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch import nn


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    x = torch.tensor(features, dtype=torch.float32)
    y = nn.functional.one_hot(torch.tensor(labels), 10).float()
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def train(
    run_dir: Path,
    *,
    use_lrwatch: bool,
    steps: int,
    step_time: float,
    peak_lr: float = 3.0,
    warmup: int = 400,
    seed: int = 0,
) -> dict[str, float]:
    run_dir.mkdir(parents=True, exist_ok=True)
    # Jobs share the machine with lrwatch and with each other (the demo runs two at once); one
    # intra-op thread each keeps them from spinning against one another on 2 cores.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    x_train, y_train, x_val, y_val = load_data()
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=peak_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    batches = torch.Generator().manual_seed(seed)

    hook = None
    if use_lrwatch:
        import lrwatch

        hook = lrwatch.attach(optimizer, run_dir)
    log = (run_dir / "metrics.jsonl").open("a")
    loss_value = math.nan
    for step in range(steps):
        idx = torch.randint(0, len(x_train), (64,), generator=batches)
        loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        if hook is not None:
            hook.step(step)
        loss_value = loss.item()
        lr = hook.lrs[0] if hook is not None else optimizer.param_groups[0]["lr"]
        record = {"step": step, "loss": loss_value, "lr": lr, "time": time.time()}
        log.write(json.dumps(record) + "\n")  # json writes NaN/Infinity, which lrwatch reads
        log.flush()
        time.sleep(step_time)
    log.close()
    with torch.no_grad():
        val_out = model(x_val)
        val_loss = nn.functional.mse_loss(val_out, y_val).item()
        accuracy = (val_out.argmax(1) == y_val.argmax(1)).float().mean().item()
    result = {"final_loss": loss_value, "val_loss": val_loss, "val_accuracy": accuracy}
    if hook is not None:
        result["lr_scale"] = hook.lr_scale
        hook.close()
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--no-lrwatch", action="store_true", help="run without the hook")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--step-time", type=float, default=0.02)
    parser.add_argument("--peak-lr", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train(
        args.run_dir,
        use_lrwatch=not args.no_lrwatch,
        steps=args.steps,
        step_time=args.step_time,
        peak_lr=args.peak_lr,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
