"""From a line appended to a log to the finding on /metrics: how long?

Run: ``python -m benchmarks.latency.bench_latency`` (about 2 minutes).
Writes ``benchmarks/results/latency.md`` and ``latency.png``.

A ``lrwatch run`` daemon watches 100 runs, each with a healthy JSONL history the daemon has
read. Each trial appends one line with a NaN loss to one run (a divergence the detector reports
on that very sample) and polls /metrics, as fast as it answers, until
``lrwatch_findings_total{kind="divergence",run=...}`` appears. The latency is from just before
the ``write()`` to the scrape that shows it, so it includes one scrape (about a millisecond).
Trials are 50-150 ms apart: the daemon is otherwise idle.

Twice: with the native watcher (inotify through watchdog, the default), and with the polling
fallback (``use_polling_observer: true``, watchdog's PollingObserver every second), which is
what runs where inotify is unavailable (some network and container filesystems).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from lrwatch.testing import daemon_argv

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = 100


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def trials(polling: bool, count: int, port: int) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="lrwatch-latency-"))
    root = work / "runs"
    t0 = time.time() - 100
    for i in range(RUNS):
        (root / f"run{i:03d}").mkdir(parents=True)
        with (root / f"run{i:03d}" / "metrics.jsonl").open("w") as f:
            for step in range(30):
                f.write(json.dumps({"step": step, "time": t0 + step, "loss": 1 / (step + 1)}))
                f.write("\n")
    config = work / "lrwatch.yaml"
    config.write_text(f"use_polling_observer: {'true' if polling else 'false'}\n")
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        daemon_argv(root, port, work / "state.sqlite", "--config", str(config)),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    out = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if scrape(port).count("lrwatch_run_last_step{") >= RUNS:
                    break
            except OSError:
                pass
            assert daemon.poll() is None and time.monotonic() < deadline, "daemon failed"
            time.sleep(0.2)
        rng = random.Random(0)
        for i in range(count):
            run = f"run{i % RUNS:03d}"
            needle = f'lrwatch_findings_total{{kind="divergence",run="{run}"}}'
            fd = os.open(root / run / "metrics.jsonl", os.O_WRONLY | os.O_APPEND)
            line = json.dumps({"step": 30 + i // RUNS, "time": time.time(), "loss": math.nan})
            start = time.perf_counter()
            os.write(fd, (line + "\n").encode())
            os.close(fd)
            while needle not in scrape(port):
                if time.perf_counter() - start > 10:
                    raise SystemExit(f"no finding for {run} after 10 s")
            out.append(time.perf_counter() - start)
            time.sleep(rng.uniform(0.05, 0.15))
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(q * len(s)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--polling-trials", type=int, default=40)
    parser.add_argument("--port", type=int, default=19709)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = {
        "inotify (watchdog)": trials(False, args.trials, args.port),
        "polling fallback (1 s)": trials(True, args.polling_trials, args.port),
    }
    rows = []
    for name, xs in results.items():
        row = {
            "watcher": name,
            "trials": len(xs),
            "p50_ms": 1000 * statistics.median(xs),
            "p90_ms": 1000 * quantile(xs, 0.9),
            "p99_ms": 1000 * quantile(xs, 0.99),
            "max_ms": 1000 * max(xs),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.no_write:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# Latency: a line appended to a log -> the finding on /metrics",
        "",
        f"Machine: {os.cpu_count()} logical CPUs shared with other work (1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}, Linux "
        f"{platform.release()}. Produced by `python -m benchmarks.latency.bench_latency`"
        f"; {RUNS} watched runs, one NaN line appended per trial, /metrics polled until the "
        "finding shows (each latency includes that one scrape).",
        "",
        "| watcher | trials | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['watcher']} | {r['trials']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} |"
        )
    lines += [
        "",
        "Target: p99 <= 50 ms with inotify on an idle machine. The polling fallback's latency is "
        "its interval (1 s) plus a scan of the tree: expect up to about a second, more on big "
        "trees. A busy daemon (above `max_file_events_per_second`, 100 by default) switches "
        "from file events to sweeps of the known files every `sweep_interval_seconds` (0.5 s), "
        "so its latency is then up to that interval plus a turn: see fleet.md.",
    ]
    (RESULTS / "latency.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, (name, xs) in zip(axes, results.items(), strict=True):
        ax.hist([1000 * x for x in xs], bins=40, color="#4c72b0")
        ax.set_title(name)
        ax.set_xlabel("append -> finding on /metrics (ms)")
        ax.set_ylabel("trials")
    axes[0].axvline(50, color="red", linestyle="--", linewidth=1, label="p99 target")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=120)


if __name__ == "__main__":
    main()
