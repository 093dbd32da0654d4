"""One run's analysis: samples in, findings and decisions out.

The daemon and ``lrwatch replay`` both drive this object, which is what makes replay an honest
rehearsal of the daemon: same role mapping, same detectors, same policy, same order. It is pure
(no I/O, no clocks), and its whole state round-trips through ``state_dict()`` so the daemon can
persist it in the same transaction as the tail offsets that produced it. Each step has its own
module: series.py (rewinds), guard.py (failing plugin detectors), arbitration.py (explained
away), plateau_judge.py (plateau cuts) and the policies' controller.py.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lrwatch.analysis.arbitration import (
    explained_away,
    garbage_explains,
    reported_only,
    unexplained_hold,
)
from lrwatch.analysis.controller import Controller
from lrwatch.analysis.guard import DetectorGuard, describe
from lrwatch.analysis.plateau_judge import PlateauJudge
from lrwatch.analysis.policy import ControlState
from lrwatch.analysis.progress import Progress
from lrwatch.analysis.series import Rewind, Series, is_rewind
from lrwatch.config import RunSettings
from lrwatch.detectors import build_detectors
from lrwatch.detectors.schedule import ScheduleConfig, ScheduleMotion
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Decision, Finding, Role, Sample, Severity

_HOOK_SCHEDULE = ScheduleConfig(span=2)  # heartbeats: a change within the last two is moving


Record = tuple[int, float | None, Mapping[str, float]]
"""A reader's record (``Batch.records()``): a step, its wall time, ``{metric: value}``."""


@dataclass(slots=True)
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rewinds: list[Rewind] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)  # plugins that failed here


class RunMonitor:
    """Everything lrwatch knows about one run, minus its files and its channel."""

    def __init__(self, run: str, settings: RunSettings, *, assume_landed: bool = False) -> None:
        """``assume_landed``: each LR action is taken to land at once (replay, which has no
        hook to ack it); the daemon leaves it False and learns the factor from the acks."""
        self.run = run
        self.settings = settings
        self.assume_landed = assume_landed
        self.controller = Controller(settings.policy)
        self.control = ControlState()
        self.progress = Progress()  # of the run's loss: may a plateau be cut? (progress.py)
        # The schedule's own LR as the hook reports it (exact, unlike a rounded logged LR):
        # when there is one, it says whether the schedule still moves the LR.
        self.hook_schedule: ScheduleMotion | None = None
        self.series: dict[str, Series] = {}
        # The kinds each series raised (not explained away) in the episode still open: only
        # those are active, so status and /metrics never show a finding that was not reported.
        self.raised: dict[str, set[str]] = {}
        # Roles given by name alone (RolesConfig.infer_role), e.g. {Role.LOSS: "mean_loss"}:
        # see _series. Read by replay and status to say the role was guessed.
        self.inferred_roles: dict[Role, str] = {}
        # Plugins that failed (not installed, bad config, raised), until the next observe()
        # hands them to its caller: the daemon logs and counts them, replay prints them.
        self._problems: list[PluginProblem] = list(self.controller.problems)
        self.controller.problems = self._problems
        self.guard = DetectorGuard(run, self._problems)
        policy = settings.policy
        self.judge = PlateauJudge(
            run,
            self.controller,
            self.progress,
            policy.cooldown_steps,
            noise_floor=policy.plateau_at_noise_floor,
        )

    def _series(self, metric: str) -> Series:
        """The series of ``metric``, built with its role's detectors at first sight (which role
        gets which: ``lrwatch.detectors.build_detectors``; a metric without a role gets none).

        A run that logs none of the configured names of a role gets one by inference
        (``RolesConfig.infer_role``): the *first* metric seen whose name says "loss" takes the
        loss (or validation-loss) role, and ``inferred_roles`` records it. Deciding at first
        sight keeps each series' detectors built once, at the cost of not weighing the
        candidates (which is why the configured names always win): if a configured name of
        the role shows up later, it takes the role and the inferred series is demoted to a
        plain metric (its detectors dropped; what it found stays found).
        """
        series = self.series.get(metric)
        if series is None:
            roles = self.settings.roles
            role = roles.role_of(metric)
            if role is None:
                guess = roles.infer_role(metric)
                if (
                    guess is not None
                    and self.inferred_roles.get(guess, metric) == metric  # (a rewind rebuilds)
                    and not any(name in self.series for name in getattr(roles, guess.value))
                ):
                    role = guess
                    self.inferred_roles[guess] = metric
            elif role in self.inferred_roles:
                demoted = self.series.get(self.inferred_roles.pop(role))
                if demoted is not None:
                    demoted.role, demoted.detectors = None, {}
            detectors = build_detectors(self.settings.detectors, role, self._problems)
            series = self.series[metric] = Series(role, detectors)
        return series

    def observe(
        self,
        samples: Iterable[Sample],
        *,
        can_act: str | None,
        source: str = "",
        reread: bool = False,
    ) -> Outcome:
        """Feed new samples (any metrics, in file order) through the detectors and the policy.

        ``source`` names the file the samples come from; ``reread`` says that file is being read
        again from its start. A sample at a step its series already passed is a rewind (the
        series starts over) or a repeat (skipped): see ``series.is_rewind``.
        """
        outcome = Outcome()
        known, loss = self.series, Role.LOSS  # hoisted: this loop runs once per scalar
        for sample in samples:
            series = known.get(sample.metric) or self._series(sample.metric)
            if sample.step <= series.last_step:
                if not is_rewind(series, sample, source, reread):
                    series.out_of_order += 1
                    continue
                series = self._rewind(series, sample, outcome)
            series.advance(sample, source)
            findings = self.guard.update(series.detectors, sample)
            if series.role is loss:
                self._loss_step(sample, can_act, outcome)
                if not findings:
                    plateau = series.detectors.get("plateau")
                    findings = self.judge.recheck(plateau, sample.step, self.control)
            if findings:  # the rare case
                self._answer(series, sample.metric, findings, can_act, outcome)
        if self._problems:
            outcome.problems, self._problems[:] = list(self._problems), []
        return outcome

    def _loss_step(self, sample: Sample, can_act: str | None, outcome: Outcome) -> None:
        """A new step of the loss: the run's progress, then a change due by now (a policy's
        step-driven one, else giving back a plateau cut that did not help)."""
        if sample.metric == self.role_metric(Role.LOSS):  # one loss, if two are logged
            self.progress.update(sample.step, sample.value)
        due = self.controller.on_step(self.run, sample.step, self.control, can_act=can_act)
        if due is None:
            due = self.judge.give_back(sample.step, self.control, can_act)
        if due is not None:
            self._record(due)
            outcome.decisions.append(due)

    def _answer(
        self,
        series: Series,
        metric: str,
        findings: list[Finding],
        can_act: str | None,
        outcome: Outcome,
    ) -> None:
        """The findings that stand (arbitration.py), each with its decision."""
        lr_series = self.series.get(self.role_metric(Role.LR) or "")
        watch = lr_series.detectors.get("schedule") if lr_series is not None else None
        schedule = watch if isinstance(watch, ScheduleMotion) else None
        kinds = self.guard.active(series.detectors)
        kept = explained_away(findings, kinds, schedule, self._loss_kinds)
        if self.hook_schedule is not None:  # exact, unlike a logged LR
            schedule = self.hook_schedule
        kept = [f for f in kept if not garbage_explains(f, schedule)]
        if series.role is Role.GRAD_NORM:
            kept = [f for f in kept if not self._learning(f)]
        raised = self.raised.setdefault(metric, set())
        raised -= {f.kind for f in findings}
        raised |= {f.kind for f in kept}
        held = schedule is not None and schedule.moving
        for found in kept:
            found = replace(found, run=self.run, metric=metric)
            doubt = self._doubt(series, metric, found) or unexplained_hold(found, schedule)
            if doubt is not None and found.severity is Severity.CRITICAL:
                found = replace(found, severity=Severity.WARNING)  # a doubt does not page,
                raised.discard(found.kind)  # ... nor show as ongoing (the alert would page)
            outcome.findings.append(found)
            why_not = reported_only(found, doubt, held)
            if why_not is None and found.kind == "oscillation":
                spared = self.judge.spare_oscillation(found, self.control)
                why_not = None if spared is None else f"oscillation: reported only: {spared}"
            if why_not is not None:
                decision = Decision(self.run, found.step, None, why_not, found, label=found.kind)
            elif found.kind == "plateau":
                decision = self.judge.decide(found, self.control, can_act)
            else:
                decision = self.controller.decide(found, self.control, can_act=can_act)
            if found.kind == "plateau" and self.judge.gaining(found.step, self.control):
                # Reported, but not ongoing (no alert) until the detector's next finding or
                # the judge's re-check says otherwise: a snapshot at this finding.
                raised.discard("plateau")
            self._record(decision)
            outcome.decisions.append(decision)

    def _loss_kinds(self) -> Collection[str]:
        loss = self.series.get(self.role_metric(Role.LOSS) or "")
        return self.guard.active(loss.detectors) if loss is not None else ()

    def observe_records(
        self,
        records: Iterable[Record],
        *,
        can_act: str | None,
        source: str = "",
        reread: bool = False,
    ) -> Outcome:
        """``observe`` of the records' samples in order, with the same outcome and state, but
        without making a ``Sample`` of most scalars (``lrwatch replay``'s path).

        A series no detector watches (and not the loss, whose steps pace the policy) only keeps
        its last point, and nothing else reads it: its scalar at a new step is taken here in
        place. Everything else goes through ``observe`` in order: the watched series' samples,
        gathered, and, with those before it, a scalar that may do more (a new metric, whose
        series must exist in order; a step already passed: a repeat or a rewind).
        """
        outcome = Outcome()
        pending: list[Sample] = []
        known, run, loss = self.series, self.run, Role.LOSS

        def flush() -> None:
            if pending:
                more = self.observe(pending, can_act=can_act, source=source, reread=reread)
                outcome.findings += more.findings
                outcome.decisions += more.decisions
                outcome.rewinds += more.rewinds
                outcome.problems += more.problems
                pending.clear()

        for step, wall_time, values in records:
            for metric, value in values.items():
                series = known.get(metric)
                if series is not None and not series.detectors and series.role is not loss:
                    if step > series.last_step:
                        series.last_step, series.last_value = step, value
                        series.last_wall_time, series.source = wall_time, source
                        continue
                    series = None  # a repeat or a rewind: in order, now
                pending.append(Sample(run, metric, step, value, wall_time))
                if series is None:
                    flush()
        flush()
        if self._problems:
            outcome.problems += self._problems
            self._problems[:] = []
        return outcome

    def _record(self, decision: Decision) -> None:
        self.controller.record(self.control, decision)
        action = decision.action
        if action is not None and action.factor is not None:
            self.judge.lr_changed(decision.step, self.control)
        if self.assume_landed and action is not None and action.factor is not None:
            self.control.lr_scale *= action.factor

    def observe_schedule(self, step: int, lr: float) -> None:
        """The LR the job's schedule set at ``step`` (unscaled), read by the hook from its
        optimizer: each heartbeat is a sample; a change within the last two is "moving"."""
        if self.hook_schedule is None:
            self.hook_schedule = ScheduleMotion(_HOOK_SCHEDULE)
        if step > self.hook_schedule.last_step:
            self.hook_schedule.update(step, lr)

    def _learning(self, found: Finding) -> bool:
        """Whether a gradient norm's divergence is a model learning: the loss fell with
        confidence since the norm rose (``Progress.fell_since``), as it does when embeddings
        leave zero or a net leaves its initial plateau. That is no divergence, and it is not
        reported: a step past the stability edge sends the loss up within a few steps. A
        non-finite norm always is one."""
        if found.kind != "divergence" or found.detail.get("nonfinite"):
            return False
        return self.progress.fell_since(
            found.step if found.onset_step is None else found.onset_step
        )

    def _doubt(self, series: Series, metric: str, found: Finding) -> str | None:
        """Why ``found`` on ``metric`` is reported (as a warning, not ongoing) but not acted on:
        its role was only guessed from its name (a GAN's discriminator loss is no loss to
        minimise), or it is the loss of an RL run (``RolesConfig.marks_rl``). A non-finite value
        is no doubt: NaN weights are broken whatever the objective."""
        for role, name in self.inferred_roles.items():
            if name == metric:
                return (
                    f"its {role.value} role was inferred from the name {metric!r}; name it "
                    f"under roles.{role.value} in the config to let lrwatch act on it"
                )
        if found.detail.get("nonfinite"):
            return None
        if series.role not in (Role.LOSS, Role.VAL_LOSS):
            return None
        roles = self.settings.roles
        marker = next((name for name in self.series if roles.marks_rl(name)), None)
        if marker is None:
            return None
        return (
            f"an RL run (it logs {marker!r}): its losses are no objective to minimise; set "
            "roles.rl_markers to [] in the config to let lrwatch act on them"
        )

    def _rewind(self, old: Series, sample: Sample, outcome: Outcome) -> Series:
        """Start ``sample.metric`` over at ``sample.step`` (see ``observe``)."""
        outcome.rewinds.append(Rewind(sample.metric, old.last_step, sample.step))
        del self.series[sample.metric]
        self.raised.pop(sample.metric, None)
        series = self._series(sample.metric)
        series.out_of_order, series.rewinds = old.out_of_order, old.rewinds + 1
        self.control.forget_from(sample.step)
        return series

    def active_kinds(self) -> set[str]:
        """The kinds ongoing that were raised: one explained away (arbitration.py) is not open,
        whatever its detector says."""
        active: set[str] = set()
        for metric, series in self.series.items():
            raised = self.raised.get(metric)
            if raised:
                raised &= set(
                    self.guard.active(series.detectors)
                )  # an episode that ended is forgotten
                active |= raised
        return active

    def role_metric(self, role: Role) -> str | None:
        """The metric playing ``role`` in this run: the first configured name it logs, else
        the one inferred from its name (``inferred_roles``)."""
        for name in getattr(self.settings.roles, role.value):
            if name in self.series:
                return str(name)
        return self.inferred_roles.get(role)

    def last_step(self) -> int:
        return max((s.last_step for s in self.series.values()), default=-1)

    def state_dict(self, *, sanitize: bool = False) -> dict[str, Any]:
        """The whole analysis state. ``sanitize``: leave out (and say in ``problems``) any
        detector state or policy memory that is not JSON — a plugin's bug that must not stop
        the rest from being saved. (Checked only then: the store finds out by serialising.)"""
        state: dict[str, Any] = {
            "control": self.control.state_dict(),
            "series": {name: s.state_dict() for name, s in self.series.items()},
            "progress": self.progress.state_dict(),
            "hook_schedule": None
            if self.hook_schedule is None
            else self.hook_schedule.state_dict(),
            "raised": {name: sorted(kinds) for name, kinds in self.raised.items() if kinds},
        }
        if sanitize:
            for metric, sub in state["series"].items():
                for name, detector_state in list(sub["detectors"].items()):
                    if not _is_json(detector_state):
                        del sub["detectors"][name]
                        self._problems.append(
                            PluginProblem(
                                "detectors",
                                name,
                                "run",
                                f"state_dict() of {self.run}/"
                                f"{metric} is not JSON: not saved, restarts afresh",
                            )
                        )
            memory = state["control"]["memory"]
            for name, kept in list(memory.items()):
                if not _is_json(kept):
                    memory[name] = {}
                    self.control.memory[name] = {}
                    self._problems.append(
                        PluginProblem(
                            "policies", name, "run", f"memory of {self.run} is not JSON: cleared"
                        )
                    )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()``. A detector whose saved state it cannot take (its format
        changed, or a plugin's bug) starts afresh, said in ``problems``; the rest, and the
        run's control state (LR factor, pause, cooldowns), are restored."""
        self.control.load_state_dict(state["control"])
        if "progress" in state:  # saved by lrwatch 0.1.x without it: starts from here
            self.progress.load_state_dict(state["progress"])
        if state.get("hook_schedule") is not None:
            self.hook_schedule = ScheduleMotion(_HOOK_SCHEDULE)
            self.hook_schedule.load_state_dict(state["hook_schedule"])
        for metric, sub in state["series"].items():
            series = self._series(metric)
            for name, exc in series.load_state_dict(sub):
                fresh = build_detectors(self.settings.detectors, series.role)
                if name in fresh:
                    series.detectors[name] = fresh[name]
                why = (
                    f"saved state of {self.run}/{metric} unusable ({describe(exc)}): starts afresh"
                )
                self._problems.append(PluginProblem("detectors", name, "run", why))
        raised = state.get("raised")
        if raised is None:  # saved before lrwatch kept it: what is active was raised
            raised = {metric: self.guard.active(s.detectors) for metric, s in self.series.items()}
        self.raised = {metric: set(kinds) for metric, kinds in raised.items()}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
