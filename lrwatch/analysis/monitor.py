"""One run's analysis: samples in, findings and decisions out.

The daemon and ``lrwatch replay`` both drive this object, which is what makes replay an honest
rehearsal of the daemon: same role mapping, same detectors, same policy, same order. It is pure
(no I/O, no clocks), and its whole state round-trips through ``state_dict()`` so the daemon can
persist it in the same transaction as the tail offsets that produced it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lrwatch.analysis.controller import Controller
from lrwatch.analysis.policy import ControlState, Proposal
from lrwatch.analysis.progress import Progress, Verdict
from lrwatch.config import RunSettings
from lrwatch.detectors import build_detectors
from lrwatch.detectors.base import Detector
from lrwatch.detectors.schedule import ScheduleConfig, ScheduleMotion
from lrwatch.plugins import PluginProblem
from lrwatch.protocol.types import Decision, Finding, Role, Sample, Severity

# Which detectors look at which role is decided in lrwatch.detectors.build_detectors (the loss
# gets divergence, oscillation, plateau and drift; the gradient norm an early divergence signal;
# the validation loss an overfit detector). Unrecognised metrics get none.
_MASKED_BY_DIVERGENCE = frozenset({"plateau", "oscillation", "drift"})
# What the plateau judge keeps in the run's control memory (persisted with it): the step the LR
# last changed, the plateau cut awaiting its verdict, the evidence (steps) the next cut needs
# after cuts given back, and when to ask again.
_JUDGE = "lrwatch.plateau"
_HOOK_SCHEDULE = ScheduleConfig(span=2)  # heartbeats: a change within the last two is moving


@dataclass(slots=True)
class Series:
    """The last point of one metric, and the detectors watching it (if it has a role)."""

    role: Role | None
    detectors: dict[str, Detector]  # by registered name (lrwatch.detectors)
    last_step: int = -1
    last_value: float = math.nan
    out_of_order: int = 0
    # Where the last step came from, to tell a restart from a repeat (see RunMonitor.observe).
    last_wall_time: float | None = None
    source: str = ""
    rewinds: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "last_value": self.last_value,
            "out_of_order": self.out_of_order,
            "last_wall_time": self.last_wall_time,
            "source": self.source,
            "rewinds": self.rewinds,
            "detectors": {name: d.state_dict() for name, d in self.detectors.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[tuple[str, Exception]]:
        """Restore ``state_dict()``; the detectors that could not take theirs, and why."""
        self.last_step = int(state["last_step"])
        self.last_value = float(state["last_value"])
        self.out_of_order = int(state["out_of_order"])
        wall_time = state.get("last_wall_time")
        self.last_wall_time = None if wall_time is None else float(wall_time)
        self.source = str(state.get("source", ""))
        self.rewinds = int(state.get("rewinds", 0))
        saved = state["detectors"]
        if isinstance(saved, list):  # lrwatch 0.1.0 saved them as a list in building order
            saved = dict(zip(self.detectors, saved, strict=False))
        failed: list[tuple[str, Exception]] = []
        for name, detector in self.detectors.items():
            if name in saved:  # else a plugin installed since: it starts fresh
                try:
                    detector.load_state_dict(saved[name])
                except Exception as exc:
                    failed.append((name, exc))
        return failed


Record = tuple[int, float | None, Mapping[str, float]]
"""A reader's record (``Batch.records()``): a step, its wall time, ``{metric: value}``."""


@dataclass(frozen=True, slots=True)
class Rewind:
    """A series that went back in time: the job restarted from a checkpoint."""

    metric: str
    from_step: int
    to_step: int


@dataclass(slots=True)
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    rewinds: list[Rewind] = field(default_factory=list)
    problems: list[PluginProblem] = field(default_factory=list)  # plugins that failed here


def _is_rewind(series: Series, sample: Sample, source: str, reread: bool) -> bool:
    """Whether a sample at a step already passed means the job went back (see ``observe``)."""
    if sample.step == series.last_step:
        return False
    if sample.wall_time is not None and series.last_wall_time is not None:
        return sample.wall_time > series.last_wall_time
    return not reread and bool(source) and source == series.source


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

    def _series(self, metric: str) -> Series:
        """The series of ``metric``, built with its role's detectors at first sight.

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
        again from its start (it was rotated, rewritten or replaced). A run's logs may be several
        files; each series keeps its last step, the wall time it was written at and its file.
        A sample at a step already passed is one of two things:

        - a **rewind** when the job went back in time, i.e. restarted from a checkpoint: the
          sample was written *later* than the series' last one (when both carry wall times,
          as TensorBoard events and the hook's JSONL do), or else it was *appended* to the very
          file that wrote the last one. The series starts over from that step: its detectors
          are rebuilt (their windows describe a future that was abandoned, and would read the
          older, higher loss as a divergence or the lost progress as a plateau; they warm up
          again as on a new run, a non-finite value still being caught at once), and the
          policy forgets its actions at or after that step (cooldown and rate limit count
          steps of the timeline the job is now on).
        - a **repeat** otherwise, and always at the same step: another file logging the same
          metric, or a file read again from its start. It is skipped (``out_of_order``).

        Without wall times, a job that truncates its log and starts over looks like a file
        read again, so its steps count only from past the last one seen.
        """
        outcome = Outcome()
        known, loss = self.series, Role.LOSS  # hoisted: this loop runs once per scalar
        for sample in samples:
            series = known.get(sample.metric) or self._series(sample.metric)
            if sample.step <= series.last_step:
                if not _is_rewind(series, sample, source, reread):
                    series.out_of_order += 1
                    continue
                series = self._rewind(series, sample, outcome)
            series.last_step = sample.step
            series.last_value = sample.value
            series.last_wall_time = sample.wall_time
            series.source = source
            found_here: list[tuple[str, Finding]] = []  # (detector, what it found)
            ran, step, value = 0, sample.step, sample.value
            try:
                for name, detector in series.detectors.items():
                    found = detector.update(step, value)
                    ran += 1
                    if found is not None:
                        found_here.append((name, found))
            except Exception as exc:
                found_here += self._isolate(series, sample, ran, exc)
            findings = self._checked(series, sample, found_here) if found_here else []
            if series.role is loss:
                if sample.metric == self.role_metric(loss):  # one loss, if two are logged
                    self.progress.update(sample.step, sample.value)
                due = self.controller.on_step(self.run, sample.step, self.control, can_act=can_act)
                if due is None:
                    due = self._judge_cut(sample.step, can_act)
                if due is not None:
                    self._record(due)
                    outcome.decisions.append(due)
            if series.role is loss and not findings:
                again = self._plateau_recheck(series, sample.step)
                findings = [again] if again is not None else findings
            if not findings:
                continue  # the common case; what follows only sorts out findings
            lr_series = self.series.get(self.role_metric(Role.LR) or "")
            watch = lr_series.detectors.get("schedule") if lr_series is not None else None
            schedule = watch if isinstance(watch, ScheduleMotion) else None
            kept = self._explained_away(series, findings, schedule)
            raised = self.raised.setdefault(sample.metric, set())
            raised -= {f.kind for f in findings}
            raised |= {f.kind for f in kept}
            findings = kept
            # A plateau while the run's own schedule is still moving its LR (warm-up, cosine)
            # is reported, not acted on: the schedule is already doing the plateau's job.
            if self.hook_schedule is not None:
                schedule = self.hook_schedule
            held = schedule is not None and schedule.moving
            for found in findings:
                found = replace(found, run=self.run, metric=sample.metric)
                guessed = self._guessed(sample.metric)
                if guessed is not None and found.severity is Severity.CRITICAL:
                    found = replace(found, severity=Severity.WARNING)  # a guess does not page
                outcome.findings.append(found)
                if guessed is not None:
                    why = f"{found.kind}: reported only: {guessed}"
                    decision = Decision(self.run, found.step, None, why, found, label=found.kind)
                elif held and found.kind == "plateau":
                    why = "plateau: reported only while the LR schedule is still moving the LR"
                    decision = Decision(self.run, found.step, None, why, found, label=found.kind)
                elif found.kind == "plateau":
                    decision = self._plateau(found, can_act)
                else:
                    decision = self.controller.decide(found, self.control, can_act=can_act)
                self._record(decision)
                outcome.decisions.append(decision)
        if self._problems:
            outcome.problems, self._problems[:] = list(self._problems), []
        return outcome

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
            self._judge()["since"] = decision.step  # the LR changed: progress counts from here
        if self.assume_landed and action is not None and action.factor is not None:
            self.control.lr_scale *= action.factor

    def observe_schedule(self, step: int, lr: float) -> None:
        """The LR the job's schedule set at ``step`` (unscaled), read by the hook from its
        optimizer: each heartbeat is a sample; a change within the last two is "moving"."""
        if self.hook_schedule is None:
            self.hook_schedule = ScheduleMotion(_HOOK_SCHEDULE)
        if step > self.hook_schedule.last_step:
            self.hook_schedule.update(step, lr)

    def _guessed(self, metric: str) -> str | None:
        """Why findings on ``metric`` are not acted on, if its role was only guessed from its
        name (an RL policy loss or a GAN's discriminator loss is no loss to minimise): lrwatch
        reports them, as warnings, but pages on none and touches no LR on a guess."""
        for role, name in self.inferred_roles.items():
            if name == metric:
                return (
                    f"its {role.value} role was inferred from the name {metric!r}; name it "
                    f"under roles.{role.value} in the config to let lrwatch act on it"
                )
        return None

    def _judge(self) -> dict[str, Any]:
        return self.control.memory.setdefault(_JUDGE, {"since": None, "cut": None, "wait": 0})

    def _stall(self, step: int) -> tuple[Verdict, str | None]:
        """The judge's verdict at ``step`` on the progress since the LR last changed, and why
        no plateau cut may be made (None: one may): not stalled, or stalled over a horizon
        shorter than a cooldown or than the evidence the cuts given back ask for."""
        judge = self._judge()
        since = judge["since"] if judge["since"] is not None else self.progress.first_step
        verdict = self.progress.verdict(since if since is not None else step, step)
        wait = max(self.settings.policy.cooldown_steps, judge.get("wait", 0))
        if not verdict.stalled:
            return verdict, verdict.why
        return verdict, None if verdict.horizon >= wait else f"horizon {verdict.horizon} < {wait}"

    def _plateau(self, found: Finding, can_act: str | None) -> Decision:
        """A plateau is cut only if the run has stopped making progress relative to its own
        progress so far (progress.py), over a horizon that grows with the run and doubles with
        each cut given back; the cut is then judged (``_judge_cut``)."""
        verdict, why_not = self._stall(found.step)
        if why_not is not None:
            why = f"plateau: reported only: {why_not}"
            return Decision(self.run, found.step, None, why, found, label="plateau")
        decision = self.controller.decide(found, self.control, can_act=can_act)
        factor = decision.action.factor if decision.action is not None else None
        if factor is not None:
            decision = replace(decision, reason=f"{decision.reason} ({verdict.why})")
            self._judge()["cut"] = [found.step, factor, verdict.horizon]
        return decision

    def _plateau_recheck(self, series: Series, step: int) -> Finding | None:
        """While the plateau detector still calls the loss flat, ask the judge again every
        quarter horizon: a plateau found too early to cut becomes a cut once the run has
        really stopped (a finding of its own, so replay and the audit show why)."""
        plateau = series.detectors.get("plateau")
        if plateau is None or plateau.active != "plateau":
            return None
        judge = self._judge()
        if judge["cut"] is not None or step < judge.get("next", 0):
            return None
        verdict, why_not = self._stall(step)
        judge["next"] = step + max(1, verdict.horizon // 4)
        if why_not is not None:
            return None
        return Finding(
            kind="plateau",
            severity=Severity.INFO,
            step=step,
            reason=f"loss has stopped improving relative to its own progress: {verdict.why}",
            detail={"judge": "progress", "horizon": verdict.horizon},
            onset_step=step - verdict.horizon,
        )

    def _judge_cut(self, step: int, can_act: str | None) -> Decision | None:
        """Give back a plateau cut that did not help: no progress resumed over twice as long as
        the evidence that asked for it (at least two cooldowns). The next cut waits twice as
        long."""
        judge = self.control.memory.get(_JUDGE)
        if not judge or not judge.get("cut"):
            return None
        cut_at, factor, horizon = judge["cut"]
        if step - cut_at < 2 * max(horizon, self.settings.policy.cooldown_steps):
            return None
        judge["cut"] = None
        helped, why = self.progress.helped(cut_at, step)
        if helped:
            return None
        # Backing off: the next plateau cut needs twice the evidence this one had.
        judge["wait"] = 2 * max(horizon, judge.get("wait", 0))
        proposal = Proposal(
            1.0 / factor,
            f"plateau cut at step {cut_at} did not help ({why}): given back",
            "plateau",
            Severity.INFO,
        )
        return self.controller.bounded(proposal, self.run, step, self.control, can_act=can_act)

    def _isolate(
        self, series: Series, sample: Sample, ran: int, error: Exception
    ) -> list[tuple[str, Finding]]:
        """The detector after the first ``ran`` raised ``error`` on ``sample``: drop it from
        this series (said in ``problems``); run the rest one by one, dropping any that raises."""
        found: list[tuple[str, Finding]] = []
        rest = list(series.detectors.items())[ran:]
        self._drop(
            series, rest[0][0], sample.metric, f"raised {_error(error)} at step {sample.step}"
        )
        for name, detector in rest[1:]:
            try:
                finding = detector.update(sample.step, sample.value)
            except Exception as exc:
                self._drop(
                    series, name, sample.metric, f"raised {_error(exc)} at step {sample.step}"
                )
                continue
            if finding is not None:
                found.append((name, finding))
        return found

    def _checked(
        self, series: Series, sample: Sample, found: list[tuple[str, Finding]]
    ) -> list[Finding]:
        """What the detectors found, minus what no later stage could use (a plugin's return
        that is not a Finding, or whose detail is not JSON): its detector is dropped."""
        good = []
        for name, finding in found:
            try:
                if not isinstance(finding, Finding):
                    raise TypeError(f"returned {type(finding).__name__}, not a Finding")
                json.dumps(dict(finding.detail))
                if not isinstance(finding.severity, Severity):
                    finding = replace(finding, severity=Severity(finding.severity))
            except Exception as exc:
                if name in series.detectors:
                    self._drop(series, name, sample.metric, f"at step {sample.step}: {_error(exc)}")
                continue
            good.append(finding)
        return good

    def _kinds(self, series: Series) -> list[str]:
        """The kinds ``series``' detectors say are ongoing; a detector whose ``active`` raises
        is dropped."""
        kinds = []
        for name, detector in list(series.detectors.items()):
            try:
                kind = detector.active
            except Exception as exc:
                self._drop(series, name, "", f"active raised {_error(exc)}")
                continue
            if kind:
                kinds.append(kind)
        return kinds

    def _drop(self, series: Series, name: str, metric: str, why: str) -> None:
        del series.detectors[name]
        where = f"{self.run}/{metric}" if metric else self.run
        message = f"{why} on {where}; no longer run on that series"
        self._problems.append(PluginProblem("detectors", name, "run", message))

    def _rewind(self, old: Series, sample: Sample, outcome: Outcome) -> Series:
        """Start ``sample.metric`` over at ``sample.step`` (see ``observe``)."""
        outcome.rewinds.append(Rewind(sample.metric, old.last_step, sample.step))
        del self.series[sample.metric]
        self.raised.pop(sample.metric, None)
        series = self._series(sample.metric)
        series.out_of_order, series.rewinds = old.out_of_order, old.rewinds + 1
        self.control.forget_from(sample.step)
        return series

    def _explained_away(
        self, series: Series, findings: list[Finding], schedule: ScheduleMotion | None
    ) -> list[Finding]:
        """``findings`` minus those another cause explains better:

        - a diverging loss also "stops improving" and may swing: those findings would only
          repeat the divergence in a weaker voice, and must not win the policy;
        - a swinging loss is far above its best in every high phase: the swing explains it;
        - a loss that rises while it swings, or after the run's own schedule raised the LR (a
          warm restart), has a cause other than the data: not a drift;
        - a validation loss that rises while the training loss drifts: the data changed (the
          validation set follows the stream), the model did not memorise its own: no overfit.
        """
        kinds = self._kinds(series)
        if "divergence" in kinds:
            findings = [f for f in findings if f.kind not in _MASKED_BY_DIVERGENCE]
        if "oscillation" in kinds:
            # A swinging loss's high phase sits far above its low one: not the anchored rule's
            # "far above its best". A non-finite value or a climb still pages.
            findings = [f for f in findings if f.detail.get("trigger") != "anchored"]

        def drift_explained(found: Finding) -> bool:
            step = found.onset_step if found.onset_step is not None else found.step
            return "oscillation" in kinds or (schedule is not None and schedule.raised_before(step))

        findings = [f for f in findings if f.kind != "drift" or not drift_explained(f)]
        if any(f.kind == "overfit" for f in findings):
            loss = self.series.get(self.role_metric(Role.LOSS) or "")
            if loss is not None and "drift" in self._kinds(loss):
                findings = [f for f in findings if f.kind != "overfit"]
        return findings

    def active_kinds(self) -> set[str]:
        """The kinds ongoing that were raised: one explained away (``_explained_away``) is
        not open, whatever its detector says."""
        active: set[str] = set()
        for metric, series in self.series.items():
            raised = self.raised.get(metric)
            if raised:
                raised &= set(self._kinds(series))  # an episode that ended is forgotten
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
                why = f"saved state of {self.run}/{metric} unusable ({_error(exc)}): starts afresh"
                self._problems.append(PluginProblem("detectors", name, "run", why))
        raised = state.get("raised")
        if raised is None:  # saved before lrwatch kept it: what is active was raised
            raised = {metric: self._kinds(s) for metric, s in self.series.items()}
        self.raised = {metric: set(kinds) for metric, kinds in raised.items()}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
