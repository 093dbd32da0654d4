"""The rescue benchmark: does acting on lrwatch's findings make real training end better?

    python -m benchmarks.rescue.run --seeds 3

Six scenarios (scenarios.py), each trained for real on CPU three ways — a fixed LR, torch's
ReduceLROnPlateau in the loop, and the lrwatch daemon plus the hook — over several seeds, then
the validation loss and accuracy/R²/AUC at the end, mean ± std over seeds, into
``benchmarks/results/rescue.md`` (+ ``rescue.json``) and one ``rescue_<scenario>.png`` each.

Two phases, never more than two busy processes (the machine is shared):

1. the fixed-LR and ReduceLROnPlateau jobs, and a fixed-LR sweep of the reference task, in one
   worker process, two jobs at a time, *unpaced*: nothing watches them from outside, so their
   result does not depend on wall-clock time (each job is deterministic given its seed);
2. the lrwatch jobs, all at once as threads of one worker process, each its own run directory
   under one root watched by one real ``python -m lrwatch run`` daemon, configured by
   ``lrwatch.yaml`` beside this file: lrwatch's defaults, and for the drift (stream) jobs the
   continual policy plugin (``plugins/lrwatch-continual``, which must be installed). These
   are *paced*: each step sleeps ``--step-time`` (20 ms by default), since a real GPU step takes
   tens of milliseconds and the daemon's reaction (it tails the log, the hook checks its channel
   every ~0.1 s) should be a few steps, as in production, not hundreds of 1 ms CPU steps.

The job's log, channel and the daemon's own TensorBoard events stay in ``--workdir`` for
``lrwatch report`` and TensorBoard.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.rescue.job import METHODS, JobSpec
from benchmarks.rescue.plots import plot_scenario
from benchmarks.rescue.scenarios import REFERENCE, SCENARIOS, SWEEP_LRS
from benchmarks.rescue.summary import Stat, markdown, summarise, targets
from lrwatch.testing import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DAEMON_CONFIG = HERE / "lrwatch.yaml"  # defaults, plus the continual plugin for the streams


def main() -> None:
    args = _parse()
    _check_config(args.daemon_config)
    started = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lrwatch-rescue-"))
    work.mkdir(parents=True, exist_ok=True)
    keys = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    if args.reference_too and REFERENCE not in keys:
        keys.append(REFERENCE)
    seeds = range(args.seeds)
    baseline = [
        JobSpec(key, method, seed, str(work / "baselines" / key / method / f"seed{seed}"))
        for key in keys
        for method in METHODS
        if method != "lrwatch"
        for seed in seeds
    ]
    sweep = [
        JobSpec(REFERENCE, "fixed", seed, str(work / "sweep" / f"lr{lr:g}" / f"seed{seed}"), lr=lr)
        for lr in (SWEEP_LRS if args.sweep else ())
        for seed in seeds
    ]
    watched = work / "watched"
    lrwatch_jobs = [
        JobSpec(key, "lrwatch", seed, str(watched / key / f"seed{seed}"), args.step_time)
        for key in keys
        for seed in seeds
    ]
    print(f"phase 1: {len(baseline) + len(sweep)} unpaced jobs, 2 at a time", flush=True)
    _work(work / "baseline-specs.json", baseline + sweep, parallel=2)
    print(f"phase 2: {len(lrwatch_jobs)} paced jobs under one lrwatch daemon", flush=True)
    with _daemon(watched, work, args.daemon_config, args.lrwatch_src):
        _work(work / "lrwatch-specs.json", lrwatch_jobs, parallel=len(lrwatch_jobs))
        time.sleep(2.0)  # the daemon's last turn and ack poll
    results = [_result(spec) for spec in baseline + lrwatch_jobs]
    sweep_results = [_result(spec) for spec in sweep]
    table = summarise(results)
    checks = targets(table)
    args.out.mkdir(parents=True, exist_ok=True)
    for key, cells in table.items():
        plot_scenario(key, cells, table.get(REFERENCE, {}).get("fixed"), _out(args, f"_{key}.png"))
    paced = [r["ms_per_step"] for r in results if r["method"] == "lrwatch" and "ms_per_step" in r]
    sweep_stats = {
        lr: Stat([float(r["val_loss"]) for r in sweep_results if r["lr"] == lr])
        for lr in (SWEEP_LRS if args.sweep else ())
    }
    meta = {
        "command": _command(),
        "minutes": (time.monotonic() - started) / 60,
        "seeds": args.seeds,
        "notes": _notes(args, paced, len(lrwatch_jobs)),
    }
    _out(args, ".md").write_text(markdown(table, checks, sweep_stats, meta))
    raw = {"meta": meta, "results": results, "sweep": sweep_results, "targets": checks}
    _out(args, ".json").write_text(json.dumps(raw, indent=1, default=str))
    print(_out(args, ".md").read_text())
    print(f"runs, logs and the daemon's state are in {work}")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--step-time", type=float, default=0.02, help="seconds per paced step")
    parser.add_argument("--scenarios", default="", help="comma-separated keys; default all")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    parser.add_argument(
        "--no-reference",
        dest="reference_too",
        action="store_false",
        help="with --scenarios: do not add the well-tuned reference run",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="rescue", help="output file prefix")
    parser.add_argument(
        "--daemon-config",
        type=Path,
        default=DAEMON_CONFIG,
        help="the daemon's config (a what-if one); default: lrwatch.yaml beside this file",
    )
    parser.add_argument(
        "--lrwatch-src",
        type=Path,
        default=None,
        help="run the daemon from another lrwatch checkout (a directory holding lrwatch/), "
        "to compare detector or policy versions on the very same jobs",
    )
    return parser.parse_args()


def _check_config(path: Path) -> None:
    """Fail before training anything if the daemon's config names a plugin that is not
    installed: the daemon would go on without it, and the numbers would quietly be another's."""
    from lrwatch.config import load_config, plugin_problems

    problems = plugin_problems(load_config(path))
    if problems:
        listed = "; ".join(str(p) for p in problems)
        sys.exit(f"{path}: {listed} (pip install -e plugins/lrwatch-continual)")


def _out(args: argparse.Namespace, suffix: str) -> Path:
    out: Path = args.out / f"{args.name}{suffix}"
    return out


def _work(path: Path, specs: list[JobSpec], *, parallel: int) -> None:
    if not specs:
        return
    path.write_text(json.dumps([asdict(s) for s in specs]))
    subprocess.run(
        [sys.executable, "-m", "benchmarks.rescue.job", str(path), "--parallel", str(parallel)],
        check=True,
    )


def _result(spec: JobSpec) -> dict[str, Any]:
    path = Path(spec.run_dir) / "result.json"
    if not path.exists():
        return {**asdict(spec), "error": "no result.json"}
    result: dict[str, Any] = json.loads(path.read_text())
    return result


class _daemon:
    """A real ``python -m lrwatch run`` over ``root``, ready on entry, stopped on exit."""

    def __init__(self, root: Path, work: Path, config: Path, src: Path | None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "lrwatch", "run", "--logdir", str(root)]
        self.cmd += ["--metrics-port", str(self.port), "--state", str(work / "lrwatch.sqlite")]
        self.cmd += ["--config", str(config.resolve())]
        self.log_path = work / "daemon.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.cwd: Path | None = None
        if src is not None:  # first on sys.path, ahead of the installed (editable) package
            self.env["PYTHONPATH"] = str(src.resolve())
            self.cwd = src.resolve()

    def __enter__(self) -> _daemon:
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not start; see {self.log_path}") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _command() -> str:
    """The command that reproduces the results (where the runs' files went is not part of it)."""
    argv, kept = sys.argv[1:], []
    while argv:
        arg = argv.pop(0)
        if arg == "--workdir":
            argv = argv[1:]
        elif not arg.startswith("--workdir="):
            kept.append(arg)
    return " ".join(["python -m benchmarks.rescue.run", *kept])


def _notes(args: argparse.Namespace, paced: list[float], jobs: int) -> list[str]:
    ms = sum(paced) / len(paced) if paced else float("nan")
    return [
        f"lrwatch jobs: {jobs} at once, threads of one process, each step sleeping "
        f"{1000 * args.step_time:g} ms (a real GPU step's pace); measured {ms:.1f} ms/step "
        "on average including the CPU work of all jobs on a shared 2-core machine.",
        "lrwatch: one `python -m lrwatch run` daemon over all of them, "
        + _config_note(args.daemon_config)
        + (f", lrwatch from `{args.lrwatch_src}`." if args.lrwatch_src else "."),
        "fixed LR and ReduceLROnPlateau jobs: unpaced (nothing watches them; each job is "
        "deterministic given its seed). ReduceLROnPlateau: torch's defaults (factor 0.1, "
        "patience 10, threshold 1e-4), stepped every 20 steps on the validation loss "
        "(streams: on the prequential loss, the mean training loss of the last 20 batches). "
        "Validation: every 20 steps; the streams every 5, so that a recovery of tens of steps "
        "is resolved.",
        "all: SGD with momentum 0.9, one torch thread per job; data from scikit-learn's "
        "generators (fixed), the seed sets initialisation and batch order.",
    ]


def _config_note(config: Path) -> str:
    if config.resolve() != DAEMON_CONFIG:
        return f"config `{config}` (a what-if)"
    return (
        f"config `{DAEMON_CONFIG.relative_to(REPO)}`: lrwatch's defaults, and for the two "
        "stream jobs (d) and (f) (runs `drift*/*`), as a continual-learning pipeline would "
        "configure its stream jobs, the continual policy plugin (`plugins/lrwatch-continual`: "
        "after a drift, the LR at 3x the job's own for 300 steps, then back to the job's "
        "schedule), `max_lr_scale: 3` so that the boost is let through, and plateaus reported "
        "but not cut (a stream's loss floor is its data's; a cut LR cannot re-learn)"
    )


if __name__ == "__main__":
    main()
