"""Plugins through real entry points: the guide's detector, broken plugins isolated, built-ins
registered like any plugin."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import lrwatch
from lrwatch import cli, plugins
from lrwatch.analysis.monitor import RunMonitor
from lrwatch.cli import app
from lrwatch.config import Config, load_config, plugin_problems
from lrwatch.offline.replay import replay
from lrwatch.protocol.types import Sample
from tests import fake_dist

DIVERGENCE = "lrwatch.detectors.divergence:DivergenceDetector"
GUIDE = Path(__file__).parents[2] / "docs" / "plugins.md"

RAISER = '''
from typing import Any, ClassVar
from lrwatch.protocol.types import Role

class Raiser:
    """Raises on its fifth value: a plugin's bug, inside update()."""
    kinds: ClassVar[tuple[str, ...]] = ("raiser",)
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model = None
    active = None

    def __init__(self, config: Any) -> None:
        self.seen = 0

    def update(self, step: int, value: float) -> None:
        self.seen += 1
        if self.seen == 5:
            raise ZeroDivisionError("the plugin's own bug")

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]
'''

ODD = '''
import math
from typing import Any, ClassVar
from lrwatch.protocol.types import Finding, Role, Severity

class Odd:
    """Whatever ``mode`` says is wrong with it, from its fifth value (or its saved state) on."""
    kinds: ClassVar[tuple[str, ...]] = ("odd",)
    roles: ClassVar[tuple[Role, ...]] = (Role.LOSS,)
    config_model = None
    mode = "active"

    def __init__(self, config: Any) -> None:
        self.seen = 0

    @property
    def active(self) -> str | None:
        if self.mode == "active" and self.seen >= 5:
            raise AttributeError("no active today")
        return None

    def update(self, step: int, value: float) -> Any:
        self.seen += 1
        if self.mode == "finding" and self.seen == 5:
            return Finding("odd", Severity.WARNING, step, "odd", {"not json": {1, 2}})
        if self.mode == "dict" and self.seen == 5:
            return {"kind": "odd"}
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"seen": {self.seen} if self.mode == "state" else self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mode == "load":
            raise AttributeError("load bug")
        self.seen = state["seen"]
'''

NAN_POLICY = """
import math
from lrwatch.analysis.policy import Proposal
class NanPolicy:
    config_model = None
    def __init__(self, config): pass
    def propose(self, finding, state, memory):
        memory["seen"] = {finding.step}  # not JSON either
        return Proposal(math.nan, "nan", finding.kind)
    def on_step(self, step, state, memory): return None
"""

BAD_POLICY = """
class BadPolicy:
    config_model = None
    def __init__(self, config): pass
    def propose(self, finding, state, memory): raise RuntimeError("policy bug")
    def on_step(self, step, state, memory): return None
"""


def guide_detector() -> str:
    """The guide's first Python block, verbatim."""
    block = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S)
    assert block is not None
    return block.group(1)


def guide_config() -> dict[str, object]:
    block = re.search(r"```yaml\n(detectors:.*?)```", GUIDE.read_text(), re.S)
    assert block is not None
    loaded: dict[str, object] = yaml.safe_load(block.group(1))
    return loaded


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """Third-party plugins, installed the way pip leaves them: the guide's detector, one that
    raises in update(), one that cannot be imported, a policy that raises, and a package that
    tries to take the built-in name "divergence"."""
    site = tmp_path / "site"
    fake_dist.install(
        site,
        "guide-plugin",
        {"lrwatch.detectors": {"ceiling": "my_detectors:CeilingDetector"}},
        {"my_detectors": guide_detector()},
    )
    fake_dist.install(
        site,
        "shaky-plugins",
        {
            "lrwatch.detectors": {
                "raiser": "shaky:Raiser",
                "odd": "shaky:Odd",
                "broken": "shaky_broken:Detector",
                "divergence": "shaky:Raiser",
            },
            "lrwatch.policies": {"bad": "shaky_policy:BadPolicy", "nan": "shaky_policy:NanPolicy"},
        },
        {
            "shaky": RAISER + ODD,
            "shaky_broken": "import a_module_that_is_not_installed\n",
            "shaky_policy": BAD_POLICY + NAN_POLICY,
        },
        version="0.3",
    )
    with fake_dist.on_path(site):
        yield site


def diverging(run: str = "r") -> list[Sample]:
    """A healthy falling loss for 100 steps, then a blow-up."""
    values = [1.0 / (1 + 0.05 * s) + 0.01 * ((s * 7919) % 13) / 13 for s in range(100)]
    values += [values[-1] * 1.5**k for k in range(1, 30)]
    return [Sample(run, "loss", s, v) for s, v in enumerate(values)]


def test_the_builtins_are_lrwatch_entry_points_like_any_plugin() -> None:
    for group in plugins.GROUPS:
        installed = {
            ep.name: ep.value
            for ep in metadata.entry_points(group=f"lrwatch.{group}")
            if ep.dist is not None and ep.dist.metadata["Name"] == "lrwatch"
        }
        assert installed == dict(zip(plugins.builtin_names(group), _values(group), strict=True))
        for info in plugins.available(group):
            if info.builtin:
                plugins.load(group, info.name)  # every built-in loads


def _values(group: str) -> list[str]:
    return [info.value for info in plugins.available(group) if info.builtin]


def test_the_guide_detector_is_under_30_lines_and_runs_from_its_config(
    site: Path, tmp_path: Path
) -> None:
    code = [line for line in guide_detector().splitlines() if line.strip()]
    assert len(code) < 30
    run = tmp_path / "logs" / "job"
    run.mkdir(parents=True)
    losses = [8.0, 6.0, 4.0, 3.0, 7.0, 7.5, 2.0, 6.0]
    (run / "m.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in enumerate(losses))
    )
    config = Config.model_validate(guide_config())
    assert plugin_problems(config) == []
    found = [f.finding for f in replay([tmp_path / "logs"], config) if f.finding.kind == "ceiling"]
    # Episodes above 5.0 start at steps 0, 4 and 7: one finding each, with the guide's reason.
    assert [f.step for f in found] == [0, 4, 7]
    assert found[1].reason == "loss 7 is above the ceiling 5"
    assert found[1].run == "job" and found[1].metric == "loss"


def test_lrwatch_plugins_lists_each_with_its_package_and_what_is_broken(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli.console, "width", 250)  # one row per line, nothing cut
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 1, result.output  # something is broken: say so in the status
    rows: dict[tuple[str, ...], list[str]] = {}
    for line in result.output.splitlines():
        rows.setdefault(tuple(line.split()[:2]), []).append(" ".join(line.split()))
    assert rows[("detectors", "ceiling")] == [
        "detectors ceiling guide-plugin 1.0 (plugin) my_detectors:CeilingDetector ok"
    ]
    builtin, impostor = rows[("detectors", "divergence")]
    assert builtin.endswith(f"lrwatch {lrwatch.__version__} {DIVERGENCE} ok")
    assert impostor.endswith(
        "shaky-plugins 0.3 (plugin) shaky:Raiser refused: a built-in has this name"
    )
    assert "No module named 'a_module_that_is_not_installed'" in rows[("detectors", "broken")][0]
    assert "shaky-plugins 0.3 (plugin) shaky_policy:BadPolicy ok" in rows[("policies", "bad")][0]


def test_the_builtin_keeps_its_name_against_a_plugin(site: Path) -> None:
    assert plugins.info("detectors", "divergence").builtin
    assert [i.name for i in plugins.shadowed("detectors")] == ["divergence"]
    monitor = RunMonitor("r", Config().for_run("r"))
    outcome = monitor.observe(diverging(), can_act=None)
    assert "divergence" in {f.kind for f in outcome.findings}
    assert not outcome.problems


def test_a_detector_that_raises_is_dropped_from_the_series_and_the_rest_go_on(site: Path) -> None:
    config = Config.model_validate({"detectors": {"plugins": {"raiser": {}}}})
    monitor = RunMonitor("r", config.for_run("r"))
    samples = diverging()
    first = monitor.observe(samples[:3], can_act=None)
    assert not first.problems
    outcome = monitor.observe(samples[3:], can_act=None)
    (problem,) = outcome.problems
    assert (problem.group, problem.name, problem.stage) == ("detectors", "raiser", "run")
    assert "ZeroDivisionError: the plugin's own bug at step 4 on r/loss" in problem.message
    # The built-ins saw every sample, the failing one included: the divergence is still found.
    assert "divergence" in {f.kind for f in outcome.findings}
    assert list(monitor.series["loss"].detectors) == [
        "divergence",
        "oscillation",
        "plateau",
        "drift",
    ]
    # Its state saves and loads without it; a later series of the same run gets it again.
    # Its state saves and loads without it (the restarted daemon's series gets a fresh one).
    twin = RunMonitor("r", config.for_run("r"))
    twin.load_state_dict(json.loads(json.dumps(monitor.state_dict())))
    assert "raiser" in twin.series["loss"].detectors
    assert twin.series["loss"].detectors["divergence"].state_dict() == (
        monitor.series["loss"].detectors["divergence"].state_dict()
    )
    assert not monitor.observe([Sample("r", "loss", 500, 1.0)], can_act=None).problems


def test_broken_plugins_fail_config_check_by_name_and_replay_goes_on_without_them(
    site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "lrwatch.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "detectors": {"plugins": {"broken": {}, "ceiling": {"ceilling": 3}}},
                "policy": {"plugins": {"absent": {}}},
            }
        )
    )
    problems = {(p.name, p.stage): p.message for p in plugin_problems(load_config(path))}
    assert "No module named 'a_module_that_is_not_installed'" in problems[("broken", "load")]
    assert "ceilling: Extra inputs are not permitted" in problems[("ceiling", "config")]
    assert problems[("absent", "load")].startswith("not installed (installed: factors, ")
    assert "bad" in problems[("absent", "load")]

    checked = CliRunner().invoke(app, ["config", "check", str(path)])
    assert checked.exit_code == 1
    said = " ".join(checked.output.split())
    assert "3 plugin(s) cannot be used" in said
    assert "detectors plugin 'ceiling' (config): ceilling: Extra inputs are not permitted" in said

    run = tmp_path / "logs" / "job"
    run.mkdir(parents=True)
    (run / "m.jsonl").write_text(
        "".join(json.dumps({"step": s.step, "loss": s.value}) + "\n" for s in diverging())
    )
    replayed = CliRunner().invoke(app, ["replay", str(run), "--config", str(path), "-f", "jsonl"])
    assert replayed.exit_code == 0, replayed.output
    kinds = {json.loads(line)["kind"] for line in replayed.stdout.splitlines()}
    assert "divergence" in kinds
    assert "detectors plugin 'broken' (load)" in replayed.stderr


def test_a_policy_that_raises_is_dropped_and_factors_still_act(site: Path) -> None:
    config = Config.model_validate({"policy": {"plugins": {"bad": {}}}})
    monitor = RunMonitor("r", config.for_run("r"))
    outcome = monitor.observe(diverging(), can_act=None)
    (cut,) = [d for d in outcome.decisions if d.action is not None and d.label == "divergence"]
    assert cut.action is not None and cut.action.factor == 0.1
    (problem,) = outcome.problems
    assert (problem.group, problem.name, problem.stage) == ("policies", "bad", "run")
    assert "RuntimeError: policy bug" in problem.message


@pytest.mark.parametrize("mode", ["active", "finding", "dict"])
def test_a_detector_that_misbehaves_outside_update_is_dropped_too(site: Path, mode: str) -> None:
    """``active`` raising, a finding whose detail is not JSON, a return that is no Finding:
    each would break a later stage (the gauge, the store, the policy); the detector goes."""
    import shaky  # type: ignore[import-not-found]

    shaky.Odd.mode = mode
    config = Config.model_validate({"detectors": {"plugins": {"odd": {}}}})
    monitor = RunMonitor("r", config.for_run("r"))
    outcome = monitor.observe(diverging(), can_act=None)
    monitor.active_kinds()
    problems = outcome.problems + monitor.observe([], can_act=None).problems
    assert [(p.name, p.stage) for p in problems] == [("odd", "run")]
    assert "odd" not in monitor.series["loss"].detectors
    assert "divergence" in {f.kind for f in outcome.findings}
    assert "odd" not in {f.kind for f in outcome.findings}


def test_state_a_plugin_cannot_save_or_load_costs_only_that_plugin(site: Path) -> None:
    import shaky

    config = Config.model_validate({"detectors": {"plugins": {"odd": {}}}})
    monitor = RunMonitor("r", config.for_run("r"))
    monitor.observe(diverging()[:20], can_act=None)
    monitor.control.paused = True
    shaky.Odd.mode = "state"  # a set: not JSON
    with pytest.raises(TypeError):
        json.dumps(monitor.state_dict())
    saved = json.loads(json.dumps(monitor.state_dict(sanitize=True)))
    (problem,) = monitor.observe([], can_act=None).problems
    assert (problem.name, problem.stage) == ("odd", "run") and "not JSON" in problem.message
    assert "odd" not in saved["series"]["loss"]["detectors"]
    shaky.Odd.mode = "load"  # restarted: its load_state_dict raises
    saved["series"]["loss"]["detectors"]["odd"] = {"seen": 3}
    restarted = RunMonitor("r", config.for_run("r"))
    restarted.load_state_dict(saved)
    (problem,) = restarted.observe([], can_act=None).problems
    assert "AttributeError: load bug" in problem.message and "starts afresh" in problem.message
    assert restarted.control.paused  # the run's control state survives the plugin
    assert restarted.series["loss"].detectors["divergence"].state_dict() == (
        monitor.series["loss"].detectors["divergence"].state_dict()
    )


def test_a_policy_proposing_nonsense_is_dropped_before_anything_trusts_it(site: Path) -> None:
    config = Config.model_validate({"policy": {"plugins": {"nan": {}}}})
    monitor = RunMonitor("r", config.for_run("r"), assume_landed=True)
    outcome = monitor.observe(diverging(), can_act=None)
    (problem,) = outcome.problems
    assert (problem.group, problem.name, problem.stage) == ("policies", "nan", "run")
    assert "must be finite" in problem.message
    cuts = [d.action.factor for d in outcome.decisions if d.action is not None]
    assert cuts and all(math.isfinite(f) for f in cuts if f is not None)
    assert math.isfinite(monitor.control.lr_scale)
    json.dumps(monitor.state_dict(sanitize=True), allow_nan=False)


def test_a_broken_plugin_module_is_imported_once(site: Path) -> None:
    counter = site / "imports.txt"
    (site / "counted_broken.py").write_text(
        f"open({str(counter)!r}, 'a').write('x')\nraise ImportError('still broken')\n"
    )
    fake_dist.install(
        site / "more", "counted", {"lrwatch.detectors": {"counted": "counted_broken:D"}}, {}
    )
    import sys

    sys.path.insert(0, str(site / "more"))
    try:
        fake_dist.clear_caches()
        config = Config.model_validate({"detectors": {"plugins": {"counted": {}}}})
        for run in range(20):
            RunMonitor(f"r{run}", config.for_run("x")).observe(diverging()[:3], can_act=None)
        assert counter.read_text() == "x"
    finally:
        sys.path.remove(str(site / "more"))


BAD_SOURCES = '''
from pathlib import PurePath

class OpenFails:
    """Claims ``*.boom`` files, and cannot open them."""
    def __init__(self, config): pass
    def claims(self, path): return path.name.endswith(".boom")
    def run_dir(self, path): return path.parent
    def open(self, path, run): raise RuntimeError("open bug")

class ClaimsFails:
    def __init__(self, config): pass
    def claims(self, path):
        if path.name.endswith(".bang"):
            raise KeyError("claims bug")
        return False
    def run_dir(self, path): return path.parent
    def open(self, path, run): raise AssertionError("never claims")
'''


def test_a_source_that_cannot_open_or_claim_costs_its_files_only(tmp_path: Path) -> None:
    from lrwatch.sources.follow import Follower
    from lrwatch.sources.formats import build_formats
    from lrwatch.sources.layout import log_format, scan

    site = tmp_path / "site"
    fake_dist.install(
        site,
        "bad-sources",
        {"lrwatch.sources": {"boom": "bad_sources:OpenFails", "bang": "bad_sources:ClaimsFails"}},
        {"bad_sources": BAD_SOURCES},
    )
    root = tmp_path / "logs"
    (root / "job").mkdir(parents=True)
    (root / "job" / "m.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    (root / "job" / "x.boom").write_text("?")
    (root / "job" / "y.bang").write_text("?")
    with fake_dist.on_path(site):
        formats, problems = build_formats({})
        assert problems == []
        follower = Follower(root, formats)
        paths = set(scan(root, formats))
        read = list(follower.turn(paths, float("inf"), lambda: False))
        assert [r.source for r in read] == ["job/m.jsonl"]  # the others are skipped, not fatal
        (problem,) = formats.take_problems()
        assert (problem.name, problem.stage) == ("bang", "run")
        assert "KeyError" in problem.message
        jsonl = root / "job" / "m.jsonl"
        assert log_format(jsonl, formats=formats) == "jsonl"  # the rest still read


def test_a_state_saved_by_lrwatch_0_1_0_still_loads() -> None:
    """0.1.0 saved a series' detectors as a list in building order; now they are keyed by
    registered name (so installing a plugin cannot shift them). The old form still loads."""
    monitor = RunMonitor("r", Config().for_run("r"))
    monitor.observe(diverging()[:90], can_act=None)
    monitor.control.paused = True
    state = json.loads(json.dumps(monitor.state_dict()))
    for series in state["series"].values():
        series["detectors"] = list(series["detectors"].values())
    del state["control"]["memory"]
    restored = RunMonitor("r", Config().for_run("r"))
    restored.load_state_dict(state)
    assert restored.control.paused
    expected = monitor.state_dict()
    expected["control"]["memory"] = {}  # 0.1.0 kept no policy memory: it starts empty
    assert restored.state_dict() == expected
    assert not restored.observe([], can_act=None).problems
