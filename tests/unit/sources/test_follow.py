"""Following every log under a root: file order within a run, the turn budget and the backlog,
re-reads after churn, sweeps, restoration into the saved run, a failing reader."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from lrwatch.sources import follow
from lrwatch.sources.follow import Follower


def write(path: Path, steps: range, t0: float = 1.7e9) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "time": t0 + step, "loss": 1.0}) + "\n")


def steps(reads: list[follow.FileRead]) -> list[tuple[str, int]]:
    return [(r.source, s.step) for r in reads for batch, _ in r.batches for s in batch]


def test_a_run_with_a_backlog_keeps_its_later_files_waiting(tmp_path: Path) -> None:
    old, new = tmp_path / "run" / "a.jsonl", tmp_path / "run" / "b.jsonl"
    write(old, range(3000))
    write(new, range(100, 110))
    follower = Follower(tmp_path)
    for reader_path in (old, new):
        follower._reader(reader_path)
        follower.readers[reader_path].tail.chunk_bytes = 4096  # type: ignore[attr-defined]
    got: list[tuple[str, int]] = []
    deadline = time.monotonic() - 1  # already passed: one batch a file, then the backlog
    got += steps(list(follower.turn({old, new}, deadline, lambda: False)))
    assert {source for source, _ in got} == {"run/a.jsonl"}  # b waits while a has more
    assert follower.backlog == {old, new}
    while follower.backlog:
        got += steps(list(follower.turn(set(), time.monotonic() + 10, lambda: False)))
    assert [s for source, s in got if source == "run/a.jsonl"] == list(range(3000))
    assert [s for source, s in got if source == "run/b.jsonl"] == list(range(100, 110))
    assert got.index(("run/b.jsonl", 100)) > got.index(("run/a.jsonl", 2999))


def test_stop_leaves_everything_for_later(tmp_path: Path) -> None:
    write(tmp_path / "r" / "m.jsonl", range(5))
    follower = Follower(tmp_path)
    assert (
        list(follower.turn({tmp_path / "r" / "m.jsonl"}, time.monotonic() + 5, lambda: True)) == []
    )
    assert follower.backlog == {tmp_path / "r" / "m.jsonl"}


def test_batches_after_churn_are_marked_as_re_reads(tmp_path: Path) -> None:
    path = tmp_path / "r" / "m.jsonl"
    write(path, range(10))
    follower = Follower(tmp_path)
    [read] = follower.turn({path}, time.monotonic() + 5, lambda: False)
    assert [reread for _, reread in read.batches] == [False]
    replacement = tmp_path / "r" / ".new"
    write(replacement, range(12))
    os.replace(replacement, path)
    [read] = follower.turn({path}, time.monotonic() + 5, lambda: False)
    assert [reread for _, reread in read.batches] == [True]
    assert read.errors == {"replacements": 1}


def test_sweep_finds_the_grown_and_the_replaced_files_only(tmp_path: Path) -> None:
    paths = [tmp_path / f"r{i}" / "m.jsonl" for i in range(3)]
    for path in paths:
        write(path, range(5))
    follower = Follower(tmp_path)
    list(follower.turn(set(paths), time.monotonic() + 5, lambda: False))
    assert follower.sweep() == set()
    write(paths[0], range(5, 6))
    replacement = paths[1].with_name(".tmp")
    write(replacement, range(5))  # same size, another file
    os.replace(replacement, paths[1])
    paths[2].unlink()
    assert follower.sweep() == {paths[0], paths[1]}


def test_restored_readers_keep_their_run_and_position(tmp_path: Path) -> None:
    path = tmp_path / "job" / "tb" / "m.jsonl"
    write(path, range(10))
    first = Follower(tmp_path)
    [read] = first.turn({path}, time.monotonic() + 5, lambda: False)
    assert read.reader.run == "job/tb"
    saved = {str(path): (read.reader.run, read.reader.state_dict())}
    (tmp_path / "job" / ".lrwatch").mkdir()  # a hook attached above: new files name run "job"
    write(path, range(10, 12))
    second = Follower(tmp_path)
    second.restore(saved)
    [read] = second.turn({path}, time.monotonic() + 5, lambda: False)
    assert read.reader.run == "job/tb"  # the rest of the file feeds the same detectors
    assert steps([read]) == [("job/tb/m.jsonl", 10), ("job/tb/m.jsonl", 11)]
    assert [r.path for r in second.readers_of("job/tb")] == [path]


def test_a_reader_that_raises_is_counted_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = tmp_path / "a" / "m.jsonl", tmp_path / "b" / "m.jsonl"
    write(bad, range(3))
    write(good, range(3))
    follower = Follower(tmp_path)
    follower._reader(bad)

    def boom() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(follower.readers[bad], "read", boom)
    reads = {r.source: r for r in follower.turn({bad, good}, time.monotonic() + 5, lambda: False)}
    assert reads["a/m.jsonl"].errors == {"reader_errors": 1} and not reads["a/m.jsonl"].batches
    assert len(reads["b/m.jsonl"].batches) == 1


def test_a_file_swapped_for_a_symlink_out_of_the_root_is_not_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.jsonl"
    log = root / "run" / "m.jsonl"
    write(log, range(3))
    write(outside, range(3, 10))
    follower = Follower(root)
    assert len(steps(list(follower.turn({log}, time.monotonic() + 5, lambda: False)))) == 3
    link = log.with_name(".tmp")
    link.symlink_to(outside)
    link.replace(log)
    assert follower.sweep() == {log}  # a stat follows the link: it "changed"
    reads = list(follower.turn({log}, time.monotonic() + 5, lambda: False))
    assert steps(reads) == [] and reads[0].errors == {"symlink_outside_root": 1}
    # counted once per swap, not at every sweep that sees the link "changed"
    assert follower.sweep() == {log}
    assert list(follower.turn({log}, time.monotonic() + 5, lambda: False)) == []


def test_a_paused_run_is_not_read_and_orphan_readers_are_pruned(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "m.jsonl", tmp_path / "b" / "m.jsonl"
    write(a, range(3))
    write(b, range(3))
    follower = Follower(tmp_path)
    follower.pause("a")
    reads = list(follower.turn({a, b}, time.monotonic() + 5, lambda: False))
    assert {r.source for r in reads} == {"b/m.jsonl"}
    a.unlink()
    b.unlink()
    assert follower._reader(a) is not None  # known: kept until pruned
    assert follower.prune({"b"}) == [a]  # b's run still exists: forgotten with it, later
    assert set(follower.readers) == {b} and "a" not in follower._by_run
    assert follower._reader(tmp_path / "gone" / "m.jsonl") is None  # no reader for a ghost
