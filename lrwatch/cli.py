"""The ``lrwatch`` command line. Each command only builds a config or a request and hands it on
(uvicorn's split): the daemon, replay, the report and the demo live in their own modules."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lrwatch.config import (
    DEFAULT_METRICS_PORT,
    Config,
    ConfigError,
    Mode,
    load_config,
    plugin_problems,
    read_secret_file,
)

app = typer.Typer(
    help="Watch training runs from their logs, detect trouble early, adjust the live LR.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Config file tools.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML file.")]
HostOpt = Annotated[str, typer.Option("--host", help="The daemon's HTTP host.")]
PortOpt = Annotated[int, typer.Option("--port", help="The daemon's HTTP port.")]
TOKEN_ENV = "LRWATCH_API_TOKEN"


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    TABLE = "table"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def run(
    logdir: Annotated[Path, typer.Option("--logdir", help="Root directory of the runs.")],
    config: ConfigOpt = None,
    mode: Annotated[Mode | None, typer.Option(help="act (default) or observe.")] = None,
    metrics_host: Annotated[str | None, typer.Option(help="Default 127.0.0.1.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help=f"Default {DEFAULT_METRICS_PORT}; 0 picks a free one.")
    ] = None,
    state: Annotated[Path | None, typer.Option(help="SQLite state file.")] = None,
    log_format: Annotated[LogFormat, typer.Option(help="text or json logs.")] = LogFormat.TEXT,
) -> None:
    """Run the daemon: tail every run under LOGDIR, detect, act, export /metrics."""
    from lrwatch.daemon import Daemon
    from lrwatch.logs import setup_logging

    setup_logging(json_format=log_format is LogFormat.JSON)
    startup_log = logging.getLogger("lrwatch.daemon")

    def fail(message: str) -> typer.Exit:  # a log record: one JSON line with --log-format json
        startup_log.critical("%s", message)
        return typer.Exit(2)

    if not logdir.is_dir():
        raise fail(f"--logdir {logdir} is not a directory")

    def load() -> Config:  # again on SIGHUP: the file anew, the flags on top as at start
        return load_config(
            config,
            logdir=logdir,
            mode=mode,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            state=state,
        )

    try:
        cfg = load()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        daemon = Daemon(cfg, reload=load)
    except (OSError, ConfigError, ValueError) as exc:  # the port is taken, another daemon
        raise fail(f"cannot start: {exc}") from None  # holds the root or the state; a secret
        # or token file that cannot be read (or is not UTF-8)
    try:
        daemon.run()
    except Exception:  # logged as the daemon logs (JSON with --log-format json), then exit 1
        startup_log.critical("the daemon failed", exc_info=True)
        raise typer.Exit(1) from None


@app.command()
def replay(
    paths: Annotated[list[Path], typer.Argument(help="Run directories or log files.")],
    config: ConfigOpt = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.TABLE,
) -> None:
    """Run the detectors and policy over finished logs; print findings and would-be actions."""
    from lrwatch import replay as replay_mod

    try:
        cfg = load_config(config)
        problems = plugin_problems(cfg)
        results = replay_mod.replay(paths, cfg, problems)
        if format is OutputFormat.JSONL:
            for item in results:
                sys.stdout.write(json.dumps(item.to_json()) + "\n")
        else:
            _print_replay_table([item.to_json() for item in results])
    except (ConfigError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    for problem in dict.fromkeys(problems):  # on stderr: the findings went on without it
        err.print(f"lrwatch: {problem}; replayed without it", style="yellow", highlight=False)


_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_WHY_NOT = (
    ("reported only", "report only"),
    ("cooldown", "- (cooldown)"),
    ("rate limit", "- (rate limit)"),
    ("paused", "- (paused)"),
    ("bound", "- (at LR bound)"),
)


def _why_not(decision: str) -> str:
    """The controller's reason for doing nothing, in two words for a table cell."""
    return next((short for key, short in _WHY_NOT if key in decision), "-")


def _print_replay_table(rows: list[dict[str, Any]]) -> None:
    """One table per run, headed by what was found; each row says when it began (onset), when
    the detector was sure (step), why, and what act mode would have done — or why not."""
    if not rows:
        console.print("no findings")
        return
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        counts = Counter(r["kind"] for r in mine)
        acted = sum(1 for r in mine if r["action"])
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
        title = f"run {run}: {summary}; {acted} LR adjustment{'s' if acted != 1 else ''}"
        table = Table(title=title, title_justify="left", expand=False)
        table.add_column("step", justify="right")
        table.add_column("onset", justify="right")
        for col in ("metric", "kind", "would do", "reason"):
            table.add_column(col, overflow="fold")
        for r in mine:
            action = r["action"]
            if action:
                act = Text(f"{action['type']} x{action['factor']:g}", style="bold")
            else:
                act = Text(_why_not(r.get("decision") or ""), style="dim")
            onset = "" if r["onset_step"] is None else str(r["onset_step"])
            kind = Text(r["kind"], style=_SEVERITY_STYLE.get(r["severity"], ""))
            table.add_row(str(r["step"]), onset, r["metric"], kind, act, r["reason"])
        console.print(table)


class ApiError(Exception):
    """A failed call to the daemon's API; the message says why (HTTP status, or no daemon)."""


def _call(host: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"http://{host}:{port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    token = os.environ.get(TOKEN_ENV)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ApiError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"no daemon at {url}: {exc}") from None


def _api(host: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return _call(host, port, path, body)
    except ApiError as exc:
        raise _fail(str(exc)) from None


@app.command()
def status(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = DEFAULT_METRICS_PORT,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep the table live until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between refreshes with --watch.")
    ] = 2.0,
    count: Annotated[
        int | None, typer.Option(min=1, help="With --watch: stop after this many refreshes.")
    ] = None,
) -> None:
    """Runs, state, last step, loss, LR factor, open findings, unacked commands."""
    if watch and as_json:
        raise _fail("--watch shows the table; use --json without it")
    if not watch:
        answer = _api(host, port, "/api/status")
        if as_json:
            console.print_json(data=answer)
        else:
            console.print(status_table(answer))
        return
    if not _watch_status(lambda: _call(host, port, "/api/status"), interval, count):
        raise typer.Exit(2)  # --count ran out while the daemon could not be reached


_STATE_STYLES = {"active": "green", "stale": "yellow", "finished": "dim", "paused": "magenta"}
_KIND_STYLES = {"divergence": "bold red", "stall": "red"}


def status_table(answer: Mapping[str, Any], *, at: float | None = None) -> Table:
    """The daemon's status as a table, colour only where something wants a look: a run going
    wrong (non-finite loss, a divergence, commands the hook has not answered) or lrwatch having
    changed its LR (a factor other than 1)."""
    runs = sorted(answer.get("runs", []), key=lambda r: str(r["run"]))
    counts = Counter(str(r["state"]) for r in runs)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    table = Table(
        title=f"lrwatch ({answer.get('mode', '?')} mode) watching {answer.get('root', '?')}",
        title_justify="left",
        caption=f"{len(runs)} run(s){': ' + summary if summary else ''} · as of {stamp}",
        caption_justify="left",
    )
    for col in ("run", "state", "step", "loss", "LR factor", "LR", "hook", "findings", "unacked"):
        table.add_column(col, justify="right" if col in ("step", "loss", "LR factor") else "left")
    for r in runs:
        loss = r["loss"]
        state = str(r["state"])
        factor = float(r["lr_scale"])
        table.add_row(
            str(r["run"]),
            f"[{_STATE_STYLES.get(state, 'default')}]{state}[/]",
            str(r["last_step"]),
            "-" if loss is None else _loss_cell(float(loss)),
            f"{factor:g}" if factor == 1.0 else f"[bold yellow]{factor:g}[/]",
            ", ".join(f"{x:.3g}" for x in r["lrs"]) or "-",
            "[green]alive[/]" if r["hook_alive"] else "[dim]none[/]",
            ", ".join(f"[{_KIND_STYLES.get(k, 'yellow')}]{k}[/]" for k in r["active_findings"])
            or "-",
            ", ".join(f"[yellow]#{seq}[/]" for seq in r["unacked_commands"]) or "-",
        )
    if not runs:
        table.add_row("[dim]no runs yet[/]", *[""] * 8)
    return table


def _loss_cell(loss: float) -> str:
    return f"{loss:.4g}" if math.isfinite(loss) else f"[bold red]{loss}[/]"


def _watch_status(fetch: Callable[[], Any], interval: float, count: int | None) -> bool:
    """Redraw the table every ``interval`` seconds until Ctrl-C (or ``count`` refreshes).

    A daemon that cannot be reached shows as a message in place of the table, and the watch
    goes on: it may be restarting. Returns whether the last refresh reached it.
    """
    from rich.live import Live

    refreshes, ok = 0, False
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                try:
                    view: Table | Text = status_table(fetch())
                    ok = True
                except ApiError as exc:
                    view = Text(f"{exc} (retrying every {interval:g} s, Ctrl-C stops)", "red")
                    ok = False
                live.update(view, refresh=True)
                refreshes += 1
                if count is not None and refreshes >= count:
                    return ok
                time.sleep(interval)
    except KeyboardInterrupt:
        return True  # the way out of a watch; Live has put the terminal back


def _run_path(run: str, verb: str) -> str:
    return f"/api/runs/{urllib.parse.quote(run, safe='/')}/{verb}"


@app.command("set-lr")
def set_lr(
    run: Annotated[str, typer.Argument(help="The run's name as `lrwatch status` shows it.")],
    value: Annotated[float | None, typer.Option(help="Target LR of the first group.")] = None,
    scale: Annotated[float | None, typer.Option(help="Multiply the current LR by this.")] = None,
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "",
    host: HostOpt = "127.0.0.1",
    port: PortOpt = DEFAULT_METRICS_PORT,
) -> None:
    """Change a run's LR through the daemon (validated against the policy, audited)."""
    if (value is None) == (scale is None):
        raise _fail("give exactly one of --value and --scale")
    body: dict[str, Any] = {"who": _who(), "reason": reason}
    body.update({"value": value} if value is not None else {"scale": scale})
    answer = _api(host, port, _run_path(run, "set-lr"), body)
    console.print(f"command {answer['seq']} sent to {answer['run']}: LR x{answer['factor']:g}")


@app.command()
def pause(
    run: str, reason: str = "", host: HostOpt = "127.0.0.1", port: PortOpt = DEFAULT_METRICS_PORT
) -> None:
    """Stop adjusting RUN (it stays observed)."""
    _api(host, port, _run_path(run, "pause"), {"who": _who(), "reason": reason})
    console.print(f"{run} paused")


@app.command()
def resume(
    run: str, reason: str = "", host: HostOpt = "127.0.0.1", port: PortOpt = DEFAULT_METRICS_PORT
) -> None:
    """Let lrwatch adjust RUN again."""
    _api(host, port, _run_path(run, "resume"), {"who": _who(), "reason": reason})
    console.print(f"{run} resumed")


def _who() -> str:
    try:
        return f"cli:{os.getlogin()}"
    except OSError:
        return f"cli:uid{os.getuid()}"


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run directory.")],
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    html: Annotated[bool, typer.Option("--html", help="A self-contained HTML page.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Plot a run: metrics, findings, actions (finished or live)."""
    from lrwatch.report import write_report

    try:
        out = write_report(path, output, html=html, config=load_config(config))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"wrote {out}")


@config_app.command("check")
def config_check(path: Path) -> None:
    """Validate a config file; errors name the field and the value."""
    try:
        cfg = load_config(path)
        read_secret_file(cfg)  # the daemon reads it at start and at each SIGHUP
    except ConfigError as exc:
        raise _fail(str(exc), code=1) from None
    problems = plugin_problems(cfg)
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise _fail(f"{path}: {len(problems)} plugin(s) cannot be used\n{lines}", code=1)
    console.print(f"{path}: ok")


@app.command()
def plugins() -> None:
    """Installed detectors, policies, sources and notifiers: package, version, whether each loads.

    Built-ins are listed like any plugin (they are entry points of the lrwatch package); the exit
    status is 1 when one cannot be used."""
    from lrwatch import registry

    table = Table("group", "name", "package", "object", "status", box=None)
    broken = 0
    for group in registry.GROUPS:
        for info in registry.available(group):
            try:
                registry.load(group, info.name)
                status = Text("ok", style="green")
            except registry.PluginError as exc:
                broken += 1
                status = Text(exc.problem.message, style="bold red")
            package = f"{info.distribution} {info.version}" + ("" if info.builtin else " (plugin)")
            table.add_row(group, info.name, package, info.value, status)
        for info in registry.shadowed(group):
            broken += 1
            package = f"{info.distribution} {info.version} (plugin)"
            status = Text("refused: a built-in has this name", style="bold red")
            table.add_row(group, info.name, package, info.value, status)
    console.print(table)
    if broken:
        raise typer.Exit(1)


@app.command()
def demo(
    steps: Annotated[int, typer.Option(help="Training steps per job.")] = 500,
    port: Annotated[int, typer.Option(help="Port for /metrics; 0 picks a free one.")] = 0,
    workdir: Annotated[Path | None, typer.Option(help="Keep the runs here.")] = None,
) -> None:
    """A real small PyTorch job that diverges, rescued live by lrwatch, beside one without."""
    from lrwatch.demo.showcase import run_demo

    logging.basicConfig(level=logging.ERROR)
    raise typer.Exit(run_demo(steps=steps, port=port, workdir=workdir, console=console))


if __name__ == "__main__":
    app()
