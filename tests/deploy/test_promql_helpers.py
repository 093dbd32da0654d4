"""The deploy tests' PromQL helpers must themselves be right, or the name checks prove nothing."""

from __future__ import annotations

from tests.deploy.promql import exported, metric_names, selector_labels


def test_exported_names_include_the_suffix_forms_prometheus_sees() -> None:
    names = exported()
    assert "lrwatch_findings_total" in names
    assert "lrwatch_findings" not in names  # counters are exposed with _total only
    assert {"lrwatch_ingest_lag_seconds_bucket", "lrwatch_ingest_lag_seconds_sum"} <= set(names)
    assert names["lrwatch_finding_active"] == {"run", "kind"}
    assert names["lrwatch_ingest_lag_seconds_bucket"] == {"le"}


def test_metric_names_skips_strings_and_other_identifiers() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(lrwatch_ingest_lag_seconds_bucket[5m])))"
        ' + on(run) lrwatch_lr_scale{run="lrwatch_not_a_metric"} + up{job="lrwatch"}'
    )
    assert metric_names(expr) == {"lrwatch_ingest_lag_seconds_bucket", "lrwatch_lr_scale"}


def test_selector_labels() -> None:
    expr = 'lrwatch_finding_active{kind="stall", run=~"$run"} and up{job="lrwatch"}'
    assert selector_labels(expr) == [
        ("lrwatch_finding_active", {"kind", "run"}),
        ("up", {"job"}),
    ]
