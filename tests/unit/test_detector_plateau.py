from __future__ import annotations

import itertools
import json
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lrwatch.detectors import (
    Detector,
    DetectorsConfig,
    DivergenceDetector,
    PlateauConfig,
    PlateauDetector,
    build_detectors,
)
from lrwatch.types import Severity
from tests.unit import curves
from tests.unit.curves import feed, resumed_trace, trace

# -- real curves ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_a_run_that_converges_then_flattens_plateaus(seed: int) -> None:
    curve = curves.converging_regression(seed, steps=1500)
    cfg = PlateauConfig()
    detector = PlateauDetector(cfg)
    found = feed(detector, curve[:600])

    assert len(found) == 1
    (finding,) = found
    assert (finding.kind, finding.severity) == ("plateau", Severity.INFO)
    # It dates the plateau from the last real improvement, after the fast early descent...
    assert finding.onset_step is not None and 100 <= finding.onset_step <= 250
    assert finding.step == finding.onset_step + cfg.patience
    # ...where the loss already sat at its floor (the mean of the last 500 samples).
    floor = statistics.fmean(curve[-500:])
    assert finding.detail["smoothed"] == pytest.approx(floor, rel=0.1)
    assert "has not fallen below its best" in finding.reason
    assert detector.active == "plateau"
    json.dumps(finding.detail, allow_nan=False)


def test_a_lasting_plateau_is_reported_again_only_after_cooldown_and_patience() -> None:
    curve = curves.converging_regression(0, steps=1500)
    cfg = PlateauConfig(patience=200, cooldown=200)
    found = feed(PlateauDetector(cfg), curve)
    assert len(found) >= 2
    gaps = [b.step - a.step for a, b in itertools.pairwise(found)]
    assert all(gap >= cfg.patience + cfg.cooldown for gap in gaps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_none_while_still_improving_fast(seed: int) -> None:
    # The digits MLP still sheds ~30 % of its loss every 100 steps at step 600.
    assert feed(PlateauDetector(), curves.healthy(seed, steps=600)) == []


def test_a_saddle_plateau_is_found_and_clears_when_the_loss_escapes() -> None:
    curve = curves.saddle(0)
    states = trace(PlateauDetector(), curve)
    found = [f for f, _ in states if f is not None]

    # Found as early as the warm-up and patience allow, and never again: the escape is fast.
    cfg = PlateauConfig()
    assert [f.step for f in found] == [cfg.smoothing + cfg.patience - 1]
    assert found[0].detail["smoothed"] == pytest.approx(math.log(10), rel=0.01)
    cleared = next(i for i, (_, active) in enumerate(states) if i > found[0].step and not active)
    assert 350 <= cleared <= 550
    # It clears because the loss really left the saddle, and it stays clear as it falls.
    assert statistics.fmean(curve[cleared - 200 : cleared - 100]) > 2.29
    assert statistics.fmean(curve[cleared : cleared + 100]) < 2.2
    assert all(active is None for _, active in states[cleared:])


def test_max_mode_mirrors_min_mode() -> None:
    curve = curves.converging_regression(1, steps=1000)
    as_min = feed(PlateauDetector(), curve)
    as_max = feed(PlateauDetector(PlateauConfig(mode="max")), [-v for v in curve])
    assert [f.step for f in as_max] == [f.step for f in as_min] != []
    assert as_max[0].detail["best"] == -as_min[0].detail["best"]
    assert "risen above" in as_max[0].reason


def test_an_absolute_threshold_is_in_loss_units() -> None:
    # Late in the healthy run the loss falls ~0.04 per 200 steps: not 0.3.
    curve = curves.healthy(0, steps=600)
    cfg = PlateauConfig(threshold=0.3, threshold_mode="abs")
    found = feed(PlateauDetector(cfg), curve)
    assert found and found[0].detail["margin"] >= 0.3


@pytest.mark.parametrize("seed", [0, 1])
def test_without_the_noise_margin_lucky_batches_delay_the_finding(seed: int) -> None:
    # Each lucky dip of the average counts as an improvement and restarts the patience.
    curve = curves.converging_regression(seed, steps=1000)
    with_margin = feed(PlateauDetector(), curve)[0]
    without = feed(PlateauDetector(PlateauConfig(noise_z=0.0)), curve)[0]
    assert without.step > with_margin.step


def test_nonfinite_values_are_skipped() -> None:
    curve = list(curves.saddle(0)[:300])
    with_nans = [*curve[:100], math.nan, math.inf, *curve[100:]]
    plain = [(f.step, f.detail["smoothed"]) for f in feed(PlateauDetector(), curve)]
    skipped = [(f.step - 2, f.detail["smoothed"]) for f in feed(PlateauDetector(), with_nans)]
    assert skipped == plain != []


# -- config --------------------------------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="mode"):
        PlateauConfig(mode="lowest")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="patience"):
        PlateauConfig(patience=0)
    with pytest.raises(ValidationError, match="threshold"):
        PlateauConfig(threshold=-0.1)
    with pytest.raises(ValidationError, match="factor"):
        PlateauConfig.model_validate({"factor": 0.5})  # that is the controller's knob


def test_it_keeps_the_detector_contract() -> None:
    assert isinstance(PlateauDetector(), Detector)
    assert PlateauDetector.kinds == ("plateau",)


def test_build_detectors_builds_it_fresh_unless_disabled() -> None:
    cfg = DetectorsConfig()
    first, second = build_detectors(cfg), build_detectors(cfg)
    (mine,) = [d for d in first if isinstance(d, PlateauDetector)]
    assert mine.config is cfg.plateau
    assert not any(d is mine for d in second), "every series gets its own state"
    off = DetectorsConfig.model_validate({"plateau": {"enabled": False}})
    assert not any(isinstance(d, PlateauDetector) for d in build_detectors(off))
    assert len(build_detectors(off)) == len(first) - 1


# -- properties ----------------------------------------------------------------------------

any_float = st.floats(allow_nan=True, allow_infinity=True)
flat_ish = st.lists(st.floats(0.99, 1.01), max_size=120)  # so that findings do happen
values = st.one_of(st.lists(any_float, max_size=120), flat_ish)
small = PlateauConfig(patience=10, cooldown=5, smoothing=5)


@settings(max_examples=200, deadline=None)
@given(values)
def test_update_never_raises_and_details_are_strict_json(xs: list[float]) -> None:
    for f in feed(PlateauDetector(small), xs):
        json.dumps(f.detail, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(values, st.integers(1, 30), st.integers(1, 30))
def test_no_finding_before_warmup_and_patience(
    xs: list[float], smoothing: int, patience: int
) -> None:
    cfg = PlateauConfig(smoothing=smoothing, patience=patience, noise_z=0.0, threshold=1.0)
    assert feed(PlateauDetector(cfg), xs[: smoothing + patience - 1]) == []


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_state_round_trips_through_json(xs: list[float], data: st.DataObject) -> None:
    split = data.draw(st.integers(0, len(xs)))
    expected = trace(PlateauDetector(small), xs)
    assert resumed_trace(lambda: PlateauDetector(small), xs, split) == expected


@pytest.mark.parametrize("split", [40, 249, 250, 400, 600])
def test_state_round_trips_on_a_real_saddle(split: int) -> None:
    curve = curves.saddle(0)
    expected = trace(PlateauDetector(), curve)
    assert resumed_trace(PlateauDetector, curve, split) == expected


def test_a_state_of_another_detector_is_refused() -> None:
    with pytest.raises(ValueError, match="not a plateau detector state"):
        PlateauDetector().load_state_dict(DivergenceDetector().state_dict())
