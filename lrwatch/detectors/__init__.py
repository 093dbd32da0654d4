"""Detectors: pure functions of one series, from values to findings.

Each detector module owns its config model, so a knob is defined in exactly one place;
:class:`DetectorsConfig` only gathers them for the daemon's config file, and
:func:`build_detectors` turns it into fresh runtime objects (Vector's config -> ``build()``)
for a series of a given role. The built-ins are entry points of the ``lrwatch.detectors`` group
like any plugin (plugins.py); each says which roles it watches:

=============  =========================================================================
role           detectors (in this order)
=============  =========================================================================
``loss``       divergence (and spike), oscillation, plateau, drift
``grad_norm``  grad_norm: divergence with its own defaults (grad_norm.py); an exploding
               gradient norm is the earliest sign of a step size past the stability edge
``val_loss``   overfit: a rising validation loss is overfitting, not a training divergence
``lr``         schedule: no findings, it says whether the job's own schedule is still moving
               the LR (a plateau is then not acted on: schedule.py)
=============  =========================================================================

then the plugins named under ``detectors.plugins``, in the order they are listed there.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lrwatch import plugins
from lrwatch.detectors.base import DETECTORS, Detector, DetectorPlugin
from lrwatch.detectors.divergence import DivergenceConfig, DivergenceDetector
from lrwatch.detectors.drift import DriftConfig, DriftDetector
from lrwatch.detectors.grad_norm import GradNormConfig, GradNormDetector
from lrwatch.detectors.oscillation import OscillationConfig, OscillationDetector
from lrwatch.detectors.overfit import OverfitConfig, OverfitDetector
from lrwatch.detectors.plateau import PlateauConfig, PlateauDetector
from lrwatch.detectors.schedule import ScheduleConfig, ScheduleMotion
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Role

# The built-ins, in the order a series runs them; each is a section of DetectorsConfig.
BUILTIN = plugins.builtin_names("detectors")

__all__ = [
    "BUILTIN",
    "Detector",
    "DetectorPlugin",
    "DetectorsConfig",
    "DivergenceConfig",
    "DivergenceDetector",
    "DriftConfig",
    "DriftDetector",
    "GradNormConfig",
    "GradNormDetector",
    "OscillationConfig",
    "OscillationDetector",
    "OverfitConfig",
    "OverfitDetector",
    "PlateauConfig",
    "PlateauDetector",
    "ScheduleConfig",
    "ScheduleMotion",
    "build_detectors",
]


class DetectorsConfig(BaseModel):
    """The ``detectors:`` section of the config file: one sub-section per detector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    divergence: DivergenceConfig = DivergenceConfig()
    grad_norm: GradNormConfig = GradNormConfig()
    oscillation: OscillationConfig = OscillationConfig()
    plateau: PlateauConfig = PlateauConfig()
    drift: DriftConfig = DriftConfig()
    overfit: OverfitConfig = OverfitConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="detector plugins by registered name (see `lrwatch plugins`), each with "
        "the options its own config model takes",
    )

    @field_validator("plugins")
    @classmethod
    def _not_builtin(cls, plugins: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in plugins:
            if name in BUILTIN:
                raise ValueError(f"{name!r} is built in: configure it as detectors.{name}")
        return plugins


def build_detectors(
    cfg: DetectorsConfig,
    role: Role | None = Role.LOSS,
    problems: list[PluginProblem] | None = None,
) -> dict[str, Detector]:
    """Fresh detectors for one series of ``role``, by registered name: the enabled built-ins in
    their fixed order, then the configured plugins. A plugin that cannot be built (not
    installed, bad config, its constructor raised) is left out and said in ``problems``.
    """
    detectors: dict[str, Detector] = {}
    if role is None:
        return detectors
    for name in BUILTIN:
        section = getattr(cfg, name)
        plugin = plugins.load(DETECTORS, name)
        if section.enabled and role in plugin.roles:
            detectors[name] = plugin(section)
    for name, raw in cfg.plugins.items():
        try:
            if role in plugins.load(DETECTORS, name).roles:
                detectors[name] = plugins.build(DETECTORS, name, raw)
        except plugins.PluginError as exc:
            if problems is not None:
                problems.append(exc.problem)
        except AttributeError as exc:  # no ``roles``: the plugin's own bug
            if problems is not None:
                message = f"has no roles: {exc}"
                problems.append(PluginProblem("detectors", name, "load", message))
    return detectors
