"""A training job for the daemon's failure-injection tests: a predetermined loss series with a
spike and two divergences, logged progressively (JSONL through ``hook.log`` or TensorBoard
through torch's SummaryWriter), with the hook attached to a tiny torch optimizer.

The series does not depend on the LR, so what the detectors find is known in advance and can be
compared with ``lrwatch replay`` over the finished log. After the last step the job keeps its
hook alive (acking late commands) until ``--done`` appears, then writes the hook's state.

    python -m tests.integration.crash_job RUN_DIR --format jsonl|tensorboard --done F --out F
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

import lrwatch

STEPS = 600


def series(steps: int = STEPS, seed: int = 0) -> list[float]:
    """Replay finds in it: a spike at 200, a divergence at ~308 (an excursion long enough, which
    then comes back) and one at ~490 (the run away, NaN from 580)."""
    rng = random.Random(seed)
    out = []
    for s in range(steps):
        v = 0.5 + 2 * math.exp(-s / 150)
        if 200 <= s < 202:
            v *= 5
        if 300 <= s < 330:
            v *= 1.15 ** (s - 299)
        if s >= 480:
            v *= 1.1 ** (s - 479)
        if s >= 580:
            v = math.nan
        out.append(v * (1 + 0.03 * rng.uniform(-1, 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--format", choices=["jsonl", "tensorboard"], required=True)
    parser.add_argument("--step-time", type=float, default=0.05)
    parser.add_argument("--done", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    hook = lrwatch.attach(optimizer, args.run_dir, heartbeat_interval=0.5, check_interval=0.02)
    writer = None
    if args.format == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(args.run_dir))
    for step, value in enumerate(series()):
        optimizer.step()
        hook.step(step)
        if writer is None:
            hook.log(step, loss=value)
        else:
            writer.add_scalar("loss", value, step)
            writer.flush()
        time.sleep(args.step_time)
    while not args.done.exists():
        optimizer.step()
        hook.step(STEPS - 1)
        time.sleep(0.02)
    if writer is not None:
        writer.close()
    hook.close()
    args.out.write_text(json.dumps(hook.state_dict()))


if __name__ == "__main__":
    main()
