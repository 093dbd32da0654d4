"""One daemon, a fleet of live runs: does it keep up, and what does it cost?

Run: ``python -m benchmarks.fleet.bench_fleet`` (about 4 minutes on 2 CPU cores).
Writes ``benchmarks/results/fleet.md`` (a table) and ``fleet.png``.

For each fleet size (10, 100, 1,000 runs) a writer process keeps every run logging 10 scalars a
second — a JSONL line with ``step``, ``time`` and ``loss`` every 0.1 s per run, spread evenly
over each 0.1 s — while one ``lrwatch run`` daemon (inotify, default settings) watches the root,
and Prometheus is played by one scrape of /metrics every 15 s. After a warm-up, over a measured
window:

- **CPU**: the daemon's user + system time (``/proc/PID/stat``) over the window's wall time, in
  percent of one core; the writer's own, for scale;
- **memory**: the daemon's RSS at the end and its peak (``VmHWM``);
- **ingest lag**: ``lrwatch_ingest_lag_seconds``, the daemon's own histogram of (analysis time -
  the record's ``time``), differenced between the window's first and last scrape; p50/p99 are
  interpolated within buckets, and the share of records under 1 s is exact.

The targets (issue 5): at 1,000 runs, lag p99 under 1 s, at most 25% of one core, 300 MB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lrwatch.testing import daemon_argv

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

WRITER = r"""
import json, os, sys, time
root, runs, rate, width = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
extra = "".join(', "m%d": %%.6f' % k for k in range(1, width))  # metrics that play no role
fds = []
for i in range(runs):
    d = os.path.join(root, f"run{i:04d}")
    fds.append(os.open(os.path.join(d, "metrics.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT))
period = 1.0 / rate
start = time.monotonic()
step = 0
while True:
    for i, fd in enumerate(fds):
        due = start + step * period + period * i / len(fds)  # evenly spread over the period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        values = (step, time.time(), 1.0 / (step + 1)) + (0.5,) * (width - 1)
        line = ('{"step": %d, "time": %.6f, "loss": %.6f' + extra + '}\n') % values
        os.write(fd, line.encode())
    step += 1
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def memory_mb(pid: int) -> tuple[float, float]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("lrwatch_ingest_lag_seconds") or line.startswith("lrwatch_ingested"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def lag_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    buckets = []
    for name, value in after.items():
        if name.startswith("lrwatch_ingest_lag_seconds_bucket"):
            le = name.split('le="')[1].split('"')[0]
            buckets.append((float(le), value - before.get(name, 0.0)))
    buckets.sort()
    total = buckets[-1][1]

    def quantile(q: float) -> float:
        rank, lower, below = q * total, 0.0, 0.0
        for le, count in buckets:
            if count >= rank:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * (rank - below) / max(count - below, 1e-9)
            lower, below = le, count
        return lower

    under_1s = dict(buckets)[1.0] / total if total else float("nan")
    return {"records": total, "p50": quantile(0.5), "p99": quantile(0.99), "under_1s": under_1s}


def measure(runs: int, width: int, warmup: float, window: float, port: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"lrwatch-fleet-{runs}-"))
    root = work / "runs"
    for i in range(runs):
        (root / f"run{i:04d}").mkdir(parents=True)
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        daemon_argv(root, port, work / "state.sqlite"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    rate = 10 / width  # lines per second per run: 10 scalars a second either way
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(runs), str(rate), str(width)]
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, "daemon failed"
                time.sleep(0.2)
        time.sleep(warmup)
        first = scrape(port)
        cpu0, wcpu0, t0 = cpu_seconds(daemon.pid), cpu_seconds(writer.pid), time.monotonic()
        next_scrape = t0 + 15
        while time.monotonic() < t0 + window:
            time.sleep(min(1.0, max(0.0, next_scrape - time.monotonic())))
            if time.monotonic() >= next_scrape:
                scrape(port)  # Prometheus' share of the daemon's work
                next_scrape += 15
        last = scrape(port)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(daemon.pid) - cpu0) / elapsed
        writer_cpu = (cpu_seconds(writer.pid) - wcpu0) / elapsed
        rss, peak = memory_mb(daemon.pid)
        lag = lag_quantiles(first, last)
        ingested = (
            last['lrwatch_ingested_samples_total{format="jsonl"}']
            - first['lrwatch_ingested_samples_total{format="jsonl"}']
        )
    finally:
        writer.kill()
        daemon.terminate()
        daemon.wait(timeout=10)
        writer.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "runs": runs,
        "width": width,
        "cpu_percent": 100 * cpu,
        "writer_cpu_percent": 100 * writer_cpu,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "samples_per_second": ingested / elapsed,
        **{f"lag_{k}": v for k, v in lag.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument(
        "--width",
        type=int,
        nargs="+",
        default=[1, 10],
        help="scalars per line: 1 = ten lines/s of the loss alone (every scalar is analysed), "
        "10 = one line/s of the loss and 9 other metrics",
    )
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--window", type=float, default=45)
    parser.add_argument("--port", type=int, default=19708)
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args()
    rows = []
    for width in args.width:
        for runs in args.runs:
            row = measure(runs, width, args.warmup, args.window, args.port)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if not args.no_write:
        write_results(rows, args)


def write_results(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = os.getloadavg()[0]
    lines = [
        "# Fleet: one daemon, many live runs",
        "",
        f"Machine: {os.cpu_count()} logical CPUs shared with other work (1-minute load average "
        f"{load:.1f} at the end), Python {platform.python_version()}, Linux "
        f"{platform.release()}, inotify (watchdog). Produced by "
        "`python -m benchmarks.fleet.bench_fleet`; every run logs 10 scalars/s, as "
        "10 JSONL lines/s of the loss alone (every scalar goes through the detectors) or as "
        "1 line/s of the loss and 9 other metrics; warm-up "
        f"{args.warmup:g} s, window {args.window:g} s, one /metrics scrape every 15 s. Default "
        "config: above 100 file events/s the daemon sweeps the known files every 0.5 s instead.",
        "",
        "| runs | shape | samples/s | daemon CPU (% of a core) | RSS (MB) | peak RSS (MB) "
        "| lag p50 (s) | lag p99 (s) | records under 1 s | writer CPU (%) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        shape = "10 lines/s x 1" if r["width"] == 1 else f"1 line/s x {r['width']:g}"
        lines.append(
            f"| {r['runs']:,} | {shape} | {r['samples_per_second']:,.0f} "
            f"| {r['cpu_percent']:.1f} | {r['rss_mb']:.0f} | {r['peak_rss_mb']:.0f} "
            f"| {r['lag_p50']:.3f} | {r['lag_p99']:.3f} | {100 * r['lag_under_1s']:.2f}% "
            f"| {r['writer_cpu_percent']:.1f} |"
        )
    lines += [
        "",
        "Targets at 1,000 runs: lag p99 < 1 s, CPU <= 25% of one core, RSS <= 300 MB. The lag is "
        "observed once per read, for its oldest record (conservative); quantiles are "
        "interpolated inside the histogram's buckets (..., 0.25, 0.5, 0.75, 1, 1.5, ... s). "
        "At 10 lines/s of loss per run, about half of the CPU is the detectors (12 µs per "
        "analysed sample: divergence, oscillation, plateau, drift), the rest reading (a stat "
        "per file per sweep; open, read, close per changed file), routing and /metrics. "
        "Under 100 events/s (the first row of each shape, at the edge) the daemon takes an "
        "event per write (lag of milliseconds) and the switch between the modes shows in p99.",
    ]
    (RESULTS / "fleet.md").write_text("\n".join(lines) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, key, label, target in (
        (axes[0], "cpu_percent", "daemon CPU, % of one core", 25),
        (axes[1], "peak_rss_mb", "peak RSS, MB", 300),
        (axes[2], "lag_p99", "ingest lag p99, s", 1),
    ):
        for width in sorted({r["width"] for r in rows}):
            mine = [r for r in rows if r["width"] == width]
            shape = "10 lines/s x 1 scalar" if width == 1 else f"1 line/s x {width:g} scalars"
            ax.plot([r["runs"] for r in mine], [r[key] for r in mine], "o-", label=shape)
        ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target")
        ax.set_xscale("log")
        ax.set_xlabel("live runs (10 scalars/s each)")
        ax.set_title(label)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "fleet.png", dpi=120)


if __name__ == "__main__":
    main()
