"""What lrwatch really exports, and which of its metric names a PromQL expression uses."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from lrwatch.sinks.prometheus import Metrics

# Names a family is exposed under, by type (the text format adds these suffixes).
_SUFFIXES = {
    "gauge": ("",),
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"(?<![A-Za-z0-9_:])lrwatch_[A-Za-z0-9_:]*")
_SELECTOR = re.compile(r"(lrwatch_[A-Za-z0-9_:]*|\bup)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


def exported() -> dict[str, frozenset[str]]:
    """Every series name lrwatch's exporter can expose, with its label names."""
    metrics = Metrics(CollectorRegistry())
    names: dict[str, frozenset[str]] = {}
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        # A labelled metric with no children yet has no samples to read its labels from, and
        # prometheus_client has no public accessor for them.
        labels = frozenset(wrapper._labelnames)
        for family in wrapper.describe():
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                names[family.name + suffix] = labels | extra
    return names


def metric_names(expr: str) -> set[str]:
    """The ``lrwatch_*`` metric names an expression reads (string literals ignored)."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched in its braces) for each ``name{...}`` selector."""
    return [(name, set(_MATCHER.findall(body))) for name, body in _SELECTOR.findall(expr)]
