"""The control API handler: ``lrwatch status``, ``set-lr``, ``pause`` and ``resume``.

The requests come in on the HTTP server's threads (http.py) and are answered here, on the
daemon's main thread (the only one that touches runs and the store), so a manual command is
numbered, committed and written exactly like the controller's: in one transaction with its audit
record, the file after the commit. README.md, "Command line" and "How it works" (modes), says
what a user may ask and when lrwatch refuses.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from lrwatch.config import Config, Mode
from lrwatch.daemon.http import ControlRequest
from lrwatch.daemon.run import Run
from lrwatch.daemon.runs import RunBook
from lrwatch.protocol.types import Action, ActionType

log = logging.getLogger(__name__)


def serve(
    requests: queue.Queue[ControlRequest],
    book: RunBook,
    config: Config,
    clock: Callable[[], float],
) -> None:
    """Answer every request waiting, on the main loop's turn."""
    while True:
        try:
            request = requests.get_nowait()
        except queue.Empty:
            return
        if not request.reply.set_running_or_notify_cancel():
            continue  # withdrawn by the HTTP thread after its timeout (see http._withdraw)
        answer: tuple[int, dict[str, Any]]
        try:
            if request.verb == "status":
                answer = (HTTPStatus.OK, book.status(clock()))
            else:
                answer = handle(request, book, config, clock())
        except Exception as exc:  # a bad request must not take the daemon down
            log.exception("control request failed")
            answer = (HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
        request.reply.set_result(answer)


def handle(
    req: ControlRequest, book: RunBook, config: Config, now: float
) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to one ``set-lr``, ``pause`` or ``resume``; the command is sent when
    there is one."""
    run, store = book.runs.get(req.run), book.store
    if run is None:
        return HTTPStatus.NOT_FOUND, {"error": f"no run named {req.run!r}"}
    control = run.monitor.control
    if req.verb in ("pause", "resume"):
        with store.transaction():
            control.paused = req.verb == "pause"
            book.checkpoint(run)
            store.audit(run.name, req.verb, req.who, dict(req.body))
        return HTTPStatus.OK, {"run": run.name, "paused": control.paused}
    if config.mode is Mode.OBSERVE:
        # Observe mode never writes a command, whoever asks (README.md, "How it works": Modes).
        # Pause does not stop a human: it holds back lrwatch's own adjustments only.
        return HTTPStatus.CONFLICT, {"error": "observe mode: lrwatch writes no commands"}
    factor, error = manual_factor(run, req.body)
    if error:
        return HTTPStatus.BAD_REQUEST, {"error": error}
    if not run.alive(now, config):
        return HTTPStatus.CONFLICT, {"error": f"run {run.name} has no live hook"}
    reason = str(req.body.get("reason") or f"manual set-lr by {req.who}")[:200]
    with store.transaction():
        command = run.actuator.new_command(
            Action(ActionType.SCALE_LR, factor), reason, req.who, now
        )
        run.labels[command.seq] = "manual"
        store.add_command(command)
        book.checkpoint(run)  # restore() gives commands back only to runs with a saved state
        store.audit(run.name, "set-lr", req.who, {**req.body, "factor": factor})
    # Not written (a full disk): committed all the same, retried every second (runbooks.md).
    written = run.actuator.send(command)
    answer = {"run": run.name, "seq": command.seq, "factor": factor, "written": written}
    return HTTPStatus.ACCEPTED, answer


def manual_factor(run: Run, body: dict[str, Any]) -> tuple[float, str | None]:
    """A manual --scale or --value as a factor on the current one, within the policy."""
    policy = run.monitor.settings.policy
    current = run.monitor.control.lr_scale
    beat = run.actuator.heartbeat
    try:
        if "scale" in body:
            target = current * float(body["scale"])
        elif "value" in body and beat and beat.lrs and beat.lrs[0] > 0:
            # The heartbeat's LR goes with the heartbeat's factor, not with the daemon's (which
            # an ack may have moved since): the schedule alone gives lrs[0] / beat.lr_scale.
            target = beat.lr_scale * float(body["value"]) / beat.lrs[0]
        else:
            return 1.0, "give 'scale', or 'value' for a run whose hook reports its LR"
    except (TypeError, ValueError):
        return 1.0, "scale and value must be numbers"
    if not (policy.min_lr_scale <= target <= policy.max_lr_scale) or target != target:
        return 1.0, (
            f"resulting LR factor {target:g} is outside "
            f"[{policy.min_lr_scale:g}, {policy.max_lr_scale:g}]"
        )
    factor = target / current
    if not (1 / policy.max_change <= factor <= policy.max_change):
        return 1.0, f"change x{factor:g} exceeds the per-command limit {policy.max_change:g}"
    return factor, None
