"""From one analysed batch to what is sent: decisions become commands, and the turn's news is
committed in one transaction, then sent (the outbox: never a command that is not in the
database; store.py says why in that order).

A decision that acts gives one command per action, the LR change first, then the requests it
carries (a rollback, a checkpoint, a stop), numbered by the run's actuator. Should the commit
fail, the commands are withdrawn, never written: the controller decides again at the next finding.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lrwatch.analysis.monitor import Outcome
from lrwatch.daemon.problems import Problems
from lrwatch.daemon.run import Run
from lrwatch.daemon.runs import RunBook
from lrwatch.protocol.types import ActionType, Command, Decision
from lrwatch.sinks.notify import Notice, Outlet


@dataclass(slots=True)
class News:
    """What one batch of a run found, waiting for the turn's transaction."""

    run: Run
    outcome: Outcome
    commands: list[Command]
    notices: list[Notice]


def issue(run: Run, decisions: Iterable[Decision], now: float) -> list[tuple[Command, Decision]]:
    """The commands ``decisions`` give, each with the decision it comes of."""
    issued: list[tuple[Command, Decision]] = []
    for decision in decisions:
        if decision.action is None:
            continue
        for action in (decision.action, *decision.requests):
            command = run.actuator.new_command(action, decision.reason, "controller", now)
            # Only LR changes count as adjustments; a request's label is empty.
            is_lr = action.type is ActionType.SCALE_LR
            run.labels[command.seq] = decision.label if is_lr else ""
            issued.append((command, decision))
    return issued


def notices(
    outcome: Outcome, issued: Sequence[tuple[Command, Decision]], now: float
) -> list[Notice]:
    """What the notifiers are told of one batch: its findings, and the commands sent."""
    told = [
        Notice(
            "finding",
            f.run,
            f.step,
            f.kind,
            f.severity,
            f.reason,
            now,
            f.metric,
            {**f.detail, "onset_step": f.onset_step},
        )
        for f in outcome.findings
    ]
    for command, decision in issued:
        detail = {"action": command.action.to_json(), "seq": command.seq}
        kind = decision.label or command.action.type.value
        told.append(
            Notice(
                "action",
                command.run,
                decision.step,
                kind,
                decision.severity,
                command.reason,
                now,
                detail=detail,
            )
        )
    return told


def commit_and_send(
    news: list[News], book: RunBook, outlets: Sequence[Outlet], problems: Problems
) -> None:
    """Commit the turn's news in one transaction, with a checkpoint of each run concerned, then
    send the commands and notices. Should the transaction fail, each run's news is tried alone,
    so that one run's bad data costs only that run (quarantined; the others' findings are then
    counted and logged twice, a small price on a path only a bug takes); a failure of the state
    file itself (a full disk) is counted, and those runs' news stay in memory, their commands
    unsent, until a later checkpoint succeeds."""
    store = book.store
    try:
        with store.transaction():
            for item in news:
                _commit(item, book)
            for run in {id(item.run): item.run for item in news}.values():
                book.checkpoint(run)
        committed = news
    except sqlite3.OperationalError as exc:  # full, I/O, locked: the state file's, not a run's
        problems.state("commit", exc)
        withdraw(news)
        committed = []
    except Exception:
        committed = []
        by_run: dict[int, list[News]] = {}
        for item in news:
            by_run.setdefault(id(item.run), []).append(item)
        for items in by_run.values():
            run = items[0].run
            try:
                with store.transaction():
                    for item in items:
                        _commit(item, book)
                    book.checkpoint(run)
                committed += items
            except sqlite3.OperationalError as exc:  # full, I/O, locked: not the run's
                problems.state("commit", exc)
                withdraw(items)
            except Exception as exc:
                withdraw(items)
                book.quarantine(run, "commit", exc)
    for item in committed:
        for command in item.commands:
            item.run.actuator.send(command)
        for outlet in outlets:
            for notice in item.notices:
                outlet.offer(notice)


def withdraw(items: Iterable[News]) -> None:
    """Commands that could not be committed are never sent: forget them (the controller
    decides again on the next finding; a gap in sequence numbers is harmless)."""
    for item in items:
        for command in item.commands:
            item.run.actuator.withdraw(command)


def _commit(news: News, book: RunBook) -> None:
    """Into the open transaction: the findings, the decisions (audited) and commands."""
    run = news.run
    for finding in news.outcome.findings:
        book.record_finding(run, finding)
    for decision in news.outcome.decisions:
        book.store.audit(
            run.name,
            "decision",
            "controller",
            {
                "step": decision.step,
                "reason": decision.reason,
                "action": decision.action.to_json() if decision.action else None,
                "requests": [r.to_json() for r in decision.requests],
            },
        )
    for command in news.commands:
        book.store.add_command(command)
