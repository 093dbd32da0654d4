"""The detection scorer's own rules: what counts as an LR cut, as a still-improving run, as a
warnable divergence, where a real log's onset is, and that a log lrwatch did not read is
never scored as a pass."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from benchmarks.detection import splits, unseen
from benchmarks.detection.labelled import Replay, Run, is_cut, still_improving
from benchmarks.detection.reallogs import Folder, onset, probe, verdict
from benchmarks.detection.score import Scores, _warnable, lr_action_scores


def falling(n: int, every: int = 1) -> list[tuple[int, float]]:
    return [(k * every, 10.0 / (1 + k)) for k in range(n)]


def flat(n: int, every: int = 1) -> list[tuple[int, float]]:
    return [(k * every, 1.0 + 0.01 * (-1) ** k) for k in range(n)]


def test_only_scale_lr_below_one_is_a_cut() -> None:
    assert is_cut({"type": "scale_lr", "factor": 0.5})
    assert not is_cut({"type": "scale_lr", "factor": 2.0})
    assert not is_cut({"type": "checkpoint"})
    assert not is_cut(None)


def test_still_improving_scales_with_the_log() -> None:
    # Sparse (every 500 steps, 12 values): a 200-value horizon would never decide.
    assert still_improving(falling(12, every=500), 2000) is True
    assert still_improving(flat(12, every=500), 2000) is False
    assert still_improving(falling(12, every=500), 5000) is None  # too few values after it


def test_early_warning_needs_two_values_between_onset_and_nan() -> None:
    loss = [(0, 1.0), (10, 2.0), (20, 5.0), (30, math.nan)]
    run = Run("r", {"label": "divergence", "onset_step": 10}, {"loss": loss})
    assert _warnable(run, 30)
    assert not _warnable(Run("r", {"label": "divergence", "onset_step": 20}, {"loss": loss}), 30)


def test_onset_from_events_and_overrides() -> None:
    events = [
        {"kind": "lr_too_high", "step": 1000},
        {"kind": "eval_divergence", "step": 264},
        {"kind": "useless_model", "step": 2640},
    ]
    assert onset("any", "divergence", events) == 264
    assert onset("any", "healthy", events) is None
    assert onset("hf_gpt2_lora_plateau", "plateau", [{"kind": "plateau", "step": 7500}]) == 760
    assert onset("any", "plateau", [{"kind": "other", "step": 5}]) == 5


def test_a_log_not_read_is_no_pass() -> None:
    run = Run("x", {"label": "healthy", "read": False}, {})
    folder = Folder(
        "x", "test", ["healthy"], Replay([], 0.1, 0, ""), {"runs": {}, "error": None}, run
    )
    assert folder.status == "not read"
    assert verdict(folder).startswith("not read")
    scores = Scores()
    lr_action_scores([run], scores)
    assert all(cols["lrwatch"] == "—" for _, cols in scores.rows)


def test_the_probe_reads_the_roles_replay_watches_guesses_included(tmp_path: Path) -> None:
    """A loss lrwatch guesses from its name (a Lightning CSV's ``train/nll_loss``) is watched,
    so its findings must be scored as the loss's, not as some other metric's."""
    folder = tmp_path / "opal"
    folder.mkdir()
    rows = [f"{k},{2.0 / (1 + k):.4f},{2.5 / (1 + k):.4f}" for k in range(30)]
    (folder / "metrics.csv").write_text("step,train/nll_loss,val/rmse_loss\n" + "\n".join(rows))
    (run,) = probe([folder], None)["opal"]["runs"].values()
    assert run["roles"] == {"loss": "train/nll_loss", "val_loss": "val/rmse_loss"}
    assert run["guessed"] == ["train/nll_loss", "val/rmse_loss"]
    assert [v for _, v in run["series"]["loss"]][:2] == [2.0, 1.0]


def test_cuts_on_a_flat_healthy_run_are_not_while_improving() -> None:
    cut = {"run": "r", "step": 50, "kind": "plateau", "metric": "loss"}
    cut["action"] = {"type": "scale_lr", "factor": 0.5}
    flat_run = Run("r", {"label": "healthy"}, {"loss": flat(100)}, [cut])
    falling_run = Run("f", {"label": "healthy"}, {"loss": falling(100)}, [{**cut, "run": "f"}])
    scores = Scores()
    lr_action_scores([flat_run, falling_run], scores)
    rows = dict(scores.rows)
    assert (
        rows["LR cuts on healthy runs that were still improving (runs)"]["lrwatch"] == "1 (1 runs)"
    )


def test_splits_check_covers_the_unseen_test_half(tmp_path: Path) -> None:
    reallogs = splits.REALLOGS
    if not reallogs.is_dir():
        pytest.skip(f"no real logs at {reallogs}")
    copy = tmp_path / "unseen"
    shutil.copytree(splits.UNSEEN, copy)
    frozen = json.loads(splits.FROZEN.read_text())["unseen_test"]
    assert splits.unseen_digests(copy) == frozen, "the committed test half is the frozen one"
    metrics = copy / sorted(frozen)[0] / "metrics.jsonl"
    content = bytearray(metrics.read_bytes())
    content[-3] = ord("7") if content[-3] != ord("7") else ord("8")  # one byte of one value
    metrics.write_bytes(bytes(content))
    assert splits.main(["--check", "--reallogs", str(reallogs), "--unseen", str(copy)]) == 1


_NUMBER = r"\d+(?:\.\d+)?"


def _same_description(a: str, b: str) -> bool:
    """The same text, its numbers equal to within 1 %: a full-batch run's LR is a multiple of
    the stability edge, an eigenvalue computed in floating point, and one machine's BLAS
    prints "lr 8.17" where another's prints "lr 8.18"."""
    if re.sub(_NUMBER, "#", a) != re.sub(_NUMBER, "#", b):
        return False
    pairs = zip(re.findall(_NUMBER, a), re.findall(_NUMBER, b), strict=True)
    return all(math.isclose(float(x), float(y), rel_tol=0.01) for x, y in pairs)


def test_unseen_seed_offset_zero_is_the_committed_corpus_and_others_draw_afresh() -> None:
    def specs(offset: int) -> dict[str, str]:
        return {s.name: s.description for family in unseen.FAMILIES for s in family(offset)}

    committed = {
        p.parent.name: json.loads(p.read_text())["description"]
        for p in splits.UNSEEN.glob("*/*/labels.json")
    }
    drawn = specs(0)  # the names carry the seeds, the descriptions the fault steps
    assert drawn.keys() == committed.keys()
    assert all(_same_description(drawn[name], text) for name, text in committed.items())
    fresh = specs(1000)
    assert len(fresh) == len(committed)
    seedless = {n for n in committed if not re.search(r"_s\d+$", n)}  # full-batch GD, unnamed seed
    assert fresh.keys() & committed.keys() == seedless
    assert sorted(fresh.values()) != sorted(committed.values())  # new fault steps
