from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.analysis.monitor import RunMonitor
from lrwatch.config import Config
from lrwatch.detectors import (
    Detector,
    DetectorsConfig,
    DivergenceDetector,
    DriftConfig,
    DriftDetector,
    build_detectors,
)
from lrwatch.protocol.types import Finding, Role, Sample, Severity
from tests.unit import curves
from tests.unit.curves import feed, resumed_trace, trace

# -- real curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_concept_shift_in_a_fraud_stream_is_found_soon_and_dated_at_the_shift(
    seed: int,
) -> None:
    curve = curves.fraud_stream(seed, shift_at=1200)
    detector = DriftDetector()
    found = feed(detector, curve)

    assert found, "the shift is found"
    first = found[0]
    assert (first.kind, first.severity) == ("drift", Severity.INFO)
    assert 1200 <= first.step <= 1240
    assert first.onset_step is not None and abs(first.onset_step - 1200) <= 5
    assert first.detail["factor"] > 1.3
    assert "moved up" in first.reason
    json.dumps(first.detail, allow_nan=False)
    # Nothing before the shift, and the stream's new normal is not reported over and over.
    assert all(f.step >= 1200 for f in found)
    assert len(found) <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_shift_itself_does_not_page(seed: int) -> None:
    # The concept shift is the drift detector's, not a divergence: not at once. (Once the
    # elevated loss has crept into the divergence detector's window, a burst above it can still
    # read as a creeping rise: a known limit, measured by benchmarks/detection.)
    curve = curves.fraud_stream(seed, shift_at=1200)
    found = feed(DivergenceDetector(), curve[:1225])
    assert not [f for f in found if f.kind == "divergence"]


@pytest.mark.parametrize("batch", [16, 32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_run_that_keeps_falling_has_no_drift(seed: int, batch: int) -> None:
    assert feed(DriftDetector(), curves.healthy(seed, batch=batch)) == []


def test_a_lasting_rise_of_a_healthy_level_is_a_drift() -> None:
    healthy = curves.healthy(0, batch=32)
    curve = healthy[300:500] + tuple(1.8 * v for v in healthy[500:600])
    found = feed(DriftDetector(), curve)
    assert [f.kind for f in found] == ["drift"]
    assert 200 <= found[0].step <= 240


def test_a_sharp_rise_is_held_back_for_the_divergence_detector() -> None:
    # 5x and flat: a level shift, reported, but held back while its samples stay 2x above the
    # baseline, for at most ``sharp_wait`` samples, so that the divergence detector may call it
    # first; a 1.8x shift (above) is reported as soon as found.
    healthy = curves.healthy(0, batch=32)
    curve = healthy[300:500] + tuple(5.0 * v for v in healthy[500:600])
    found = feed(DriftDetector(), curve)
    assert [f.kind for f in found] == ["drift"]
    assert found[0].onset_step is not None and 200 <= found[0].onset_step <= 202
    prompt = feed(DriftDetector(DriftConfig(sharp_wait=0)), curve)
    assert prompt[0].step < found[0].step <= prompt[0].step + DriftConfig().sharp_wait


# -- what the pipeline knows besides the loss: the LR, and the other detectors -----------------

CORPUS = Path(__file__).resolve().parents[3] / "benchmarks" / "detection" / "corpus"


def _replay(
    records: list[dict[str, float]], metrics: tuple[str, ...], config: Config | None = None
) -> list[Finding]:
    """What the pipeline (``config``, default the defaults) finds in ``records``, fed
    ``metrics`` of each."""
    samples = [
        Sample("r", metric, int(r["step"]), float(r[metric]), None)
        for r in records
        for metric in metrics
        if metric in r
    ]
    monitor = RunMonitor("r", (config or Config()).for_run("r"))
    return monitor.observe(samples, can_act=None).findings


def _corpus_run(name: str) -> list[dict[str, float]]:
    """A run of the detection corpus: the per-step log of real PyTorch training."""
    lines = (CORPUS / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "name",
    ["char_lm_sgdr_momentum_s0", "char_lm_sgdr_adam_s1", "blobs_mlp_sgdr_s1"],
)
def test_a_loss_lifted_by_a_warm_restart_of_the_lr_is_no_drift(name: str) -> None:
    # SGDR (T_0 250, T_mult 2) restarts the LR at steps 250 and 750, and the loss climbs to a
    # new level for a while after each: the schedule's doing, not the data's.
    records = _corpus_run(f"healthy/{name}")
    assert [f for f in _replay(records, ("loss",)) if f.kind == "drift"], "blind, it is one"
    assert not [f for f in _replay(records, ("lr", "loss")) if f.kind == "drift"]
    # ``rise_window: 0`` turns the check off.
    off = Config.model_validate({"detectors": {"schedule": {"rise_window": 0}}})
    assert [f for f in _replay(records, ("lr", "loss"), off) if f.kind == "drift"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "lr",
    [lambda step: 0.02, lambda step: 0.02 / math.sqrt(1 + step / 100)],
    ids=["constant", "decaying"],
)
def test_a_drift_under_a_constant_or_decaying_lr_is_still_found(
    seed: int, lr: Callable[[int], float]
) -> None:
    records = [{"step": s, "loss": v, "lr": lr(s)} for s, v in enumerate(curves.fraud_stream(seed))]
    drifts = [f for f in _replay(records, ("lr", "loss")) if f.kind == "drift"]
    assert drifts and 1200 <= drifts[0].step <= 1240


@pytest.mark.parametrize(
    "name", ["breast_cancer_2f_logistic_gd_1.5edge", "breast_cancer_2f_logistic_gd_2.5edge"]
)
def test_a_swinging_loss_is_an_oscillation_not_a_drift(name: str) -> None:
    # Full-batch GD past the stability edge: the loss swings up and down around a higher level.
    records = _corpus_run(f"oscillation/{name}")
    assert feed(DriftDetector(), [r["loss"] for r in records]), "alone, the detector calls it"
    kinds = [f.kind for f in _replay(records, ("loss",))]
    assert "oscillation" in kinds and "drift" not in kinds


def test_spikes_are_clipped_so_bad_batches_are_no_drift() -> None:
    curve = curves.with_spike(curves.healthy(0, batch=32), at=400, factor=50.0, length=2)
    assert feed(DriftDetector(), curve) == []


# -- config --------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="threshold"):
        DriftConfig(threshold=0)
    with pytest.raises(ValidationError, match="slack"):
        DriftConfig(slack=-1)
    with pytest.raises(ValidationError, match="lamda"):
        DriftConfig.model_validate({"lamda": 5})


def test_it_keeps_the_detector_contract() -> None:
    assert isinstance(DriftDetector(), Detector)
    assert DriftDetector.kinds == ("drift",)


def test_the_loss_gets_it_and_other_roles_do_not() -> None:
    cfg = DetectorsConfig()
    assert any(isinstance(d, DriftDetector) for d in build_detectors(cfg, Role.LOSS).values())
    for role in (Role.GRAD_NORM, Role.VAL_LOSS, Role.LR, None):
        assert not any(isinstance(d, DriftDetector) for d in build_detectors(cfg, role).values())
    off = DetectorsConfig.model_validate({"drift": {"enabled": False}})
    assert not any(isinstance(d, DriftDetector) for d in build_detectors(off).values())


def test_a_state_of_another_detector_is_refused() -> None:
    with pytest.raises(ValueError, match="not a drift detector state"):
        DriftDetector().load_state_dict(DivergenceDetector().state_dict())


# -- properties ----------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
levels = st.lists(
    st.tuples(st.sampled_from([0.1, 1.0, 3.0, 1e-6, 1e6]), st.integers(1, 40)), max_size=6
).map(lambda parts: [lvl * (1.0 + 0.1 * math.sin(i)) for lvl, n in parts for i in range(n)])
values = st.one_of(st.lists(any_float, max_size=150), levels)
small = DriftConfig(min_history=5, baseline_span=10, threshold=3.0)


@settings(max_examples=200, deadline=None)
@given(values)
def test_update_never_raises_and_details_are_strict_json(xs: list[float]) -> None:
    for f in feed(DriftDetector(small), xs):
        json.dumps(f.detail, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(2, 60))
def test_no_finding_before_min_history(xs: list[float], min_history: int) -> None:
    cfg = DriftConfig(min_history=min_history, baseline_span=10, threshold=0.1)
    assert feed(DriftDetector(cfg), xs[: min_history - 1]) == []


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_state_round_trips_through_json(xs: list[float], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(xs)))
    expected = trace(DriftDetector(small), xs)
    assert resumed_trace(lambda: DriftDetector(small), xs, split) == expected


@pytest.mark.parametrize("split", [100, 1199, 1203, 1500])
def test_state_round_trips_on_a_real_stream(split: int) -> None:
    curve = curves.fraud_stream(0)
    expected = trace(DriftDetector(), curve)
    assert resumed_trace(DriftDetector, curve, split) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_a_validation_loss_that_rises_with_a_drift_is_no_overfit(seed: int) -> None:
    # The stream's validation loss every 5 steps: its next 5 batches, which the model has not
    # trained on yet. At the shift it jumps with the training loss, and stays up a while.
    loss = curves.fraud_stream(seed, shift_at=1200)
    records: list[dict[str, float]] = [{"step": s, "loss": v} for s, v in enumerate(loss)]
    for s in range(4, len(loss) - 5, 5):
        records[s]["val_loss"] = sum(loss[s + 1 : s + 6]) / 5
    alone = _replay(records, ("val_loss",))
    assert [f for f in alone if f.kind == "overfit" and f.step >= 1200], "alone, it reads so"
    both = _replay(records, ("loss", "val_loss"))
    assert "drift" in [f.kind for f in both]
    assert not [f for f in both if f.kind == "overfit" and f.step >= 1200]


# -- what is active is what was raised (status, /metrics) ------------------------------------------


def _monitor_over(records: list[dict[str, float]]) -> tuple[RunMonitor, list[Finding]]:
    monitor = RunMonitor("r", Config().for_run("r"))
    samples = [
        Sample("r", metric, int(r["step"]), float(value), None)
        for r in records
        for metric, value in r.items()
        if metric != "step"
    ]
    return monitor, monitor.observe(samples, can_act=None).findings


def test_a_drift_explained_away_is_not_active() -> None:
    # SGDR's first warm restart (step 250) lifts the loss: the drift detector sees a lasting
    # rise and says so (``active``), the pipeline explains it by the schedule and raises
    # nothing; status and /metrics must not show a drift either.
    records = _corpus_run("healthy/char_lm_sgdr_momentum_s0")[:401]
    monitor, findings = _monitor_over(records)
    assert monitor.series["loss"].detectors["drift"].active == "drift", "the premise"
    assert "drift" not in [f.kind for f in findings]
    assert "drift" not in monitor.active_kinds()
    # Without the LR it is a drift, raised, and active.
    blind, findings = _monitor_over([{"step": r["step"], "loss": r["loss"]} for r in records])
    assert "drift" in [f.kind for f in findings] and "drift" in blind.active_kinds()


def test_what_was_raised_round_trips_and_an_older_state_keeps_its_active_kinds() -> None:
    records = [{"step": r["step"], "loss": r["loss"]} for r in _corpus_run(
        "healthy/char_lm_sgdr_momentum_s0"
    )[:401]]  # fmt: skip
    monitor, _ = _monitor_over(records)
    state = json.loads(json.dumps(monitor.state_dict()))
    restored = RunMonitor("r", Config().for_run("r"))
    restored.load_state_dict(state)
    assert restored.active_kinds() == monitor.active_kinds() and "drift" in monitor.active_kinds()
    explained, _ = _monitor_over(_corpus_run("healthy/char_lm_sgdr_momentum_s0")[:401])
    older = json.loads(json.dumps(explained.state_dict()))
    del older["raised"]  # saved by lrwatch 0.1.0: what its detectors said was active
    restored = RunMonitor("r", Config().for_run("r"))
    restored.load_state_dict(older)
    assert "drift" in restored.active_kinds()
