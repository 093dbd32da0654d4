"""Divergence on the gradient norm: the earliest sign of a step size past the stability edge.

The same detector as the loss's, with other defaults. Gradient norms are noisier than losses and
move a lot early in training (they often grow for a while as the loss falls, so no warm-up
blow-up test): a longer history, and only big sustained jumps, or a creep of 2x before the leap,
count. Their spikes are not reported (gradient norms spike all the time).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from pydantic.fields import FieldInfo

from lrwatch.detectors.divergence import DivergenceConfig, DivergenceDetector
from lrwatch.protocol.types import Role


def _default(name: str, value: Any) -> Any:
    """``DivergenceConfig``'s field ``name`` (bounds, description) with another default."""
    field: FieldInfo = copy.copy(DivergenceConfig.model_fields[name])
    field.default = value
    return field


class GradNormConfig(DivergenceConfig):
    """The ``detectors.grad_norm`` section: :class:`DivergenceConfig`, other defaults."""

    window: int = _default("window", 100)
    min_history: int = _default("min_history", 50)
    big_ratio: float = _default("big_ratio", 10.0)
    creep_ratio: float = _default("creep_ratio", 2.0)
    warmup_rises: int = _default("warmup_rises", 0)
    report_spikes: bool = _default("report_spikes", False)
    anchored_rules: ClassVar[bool] = False


class GradNormDetector(DivergenceDetector):
    roles: ClassVar[tuple[Role, ...]] = (Role.GRAD_NORM,)
    config_model: ClassVar[type[DivergenceConfig]] = GradNormConfig
