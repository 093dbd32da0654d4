"""The ``lrwatch`` command line. Each command only builds a config or a request and hands it on
(uvicorn's split): the daemon, replay, the report and the demo live in their own modules; what
the commands print is views.py, how they reach a running daemon is client.py."""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from lrwatch import __version__
from lrwatch.analysis import coverage
from lrwatch.cli.client import ApiError, call, run_path, who
from lrwatch.cli.views import (
    PlainCommand,
    PlainGroup,
    holds,
    nonfinite,
    printable,
    replay_view,
    status_table,
)
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
    cls=PlainGroup,
    help="Watch training runs from their logs, detect trouble early, adjust the live LR.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(cls=PlainGroup, help="Config file tools.", no_args_is_help=True)
app.add_typer(config_app, name="config")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # a message is one line, whatever the terminal

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="FILE", help="YAML or TOML file.")
]
HostOpt = Annotated[str, typer.Option("--host", metavar="HOST", help="The daemon's HTTP host.")]
PortOpt = Annotated[int, typer.Option("--port", metavar="PORT", help="The daemon's HTTP port.")]


class OutputFormat(StrEnum):
    JSONL = "jsonl"
    TABLE = "table"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(printable(message))}", highlight=False)
    return typer.Exit(code)


def _warn(message: str) -> None:
    err.print(f"lrwatch: {printable(message)}", style="yellow", markup=False, highlight=False)


def _say(message: str) -> None:
    """One line on stdout; names in it (runs, paths) are text, not markup."""
    console.print(printable(message), markup=False, highlight=False)


def _version(value: bool) -> None:
    if value:
        console.print(f"lrwatch {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Watch training runs from their logs, detect trouble early, adjust the live LR."""


@app.command(cls=PlainCommand)
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
    from lrwatch.daemon.service import Daemon
    from lrwatch.logs import setup_logging

    setup_logging(json_format=log_format is LogFormat.JSON)
    startup_log = logging.getLogger("lrwatch.daemon.service")

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
    daemon = Daemon(cfg, reload=load)
    try:
        daemon.run()
    except OSError as exc:  # the port is taken, or another daemon holds the root or the state
        if exc.errno == errno.EADDRINUSE:
            raise fail(
                f"cannot start: port {cfg.metrics_port} on {cfg.metrics_host} is already in use "
                "(another lrwatch?); choose another with --metrics-port "
                "(or metrics_port in the config; 0 picks a free one)"
            ) from None
        raise fail(f"cannot start: {exc}") from None
    except (ConfigError, ValueError) as exc:  # a secret or token file that cannot be read
        raise fail(f"cannot start: {exc}") from None  # (or is not UTF-8)
    except Exception:  # logged as the daemon logs (JSON with --log-format json), then exit 1
        startup_log.critical("the daemon failed", exc_info=True)
        raise typer.Exit(1) from None


@app.command(cls=PlainCommand)
def replay(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH", help="Run directories or log files.")
    ],
    config: ConfigOpt = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.TABLE,
) -> None:
    """Run the detectors and policy over finished logs; print findings and would-be actions.

    Exit status 1 when nothing could be judged: no log it reads under PATH, or no run whose
    loss it recognises (stderr says why); 2 for a bad argument or config."""
    from lrwatch.offline import replay as replay_mod
    from lrwatch.sources.formats import build_formats

    try:
        cfg = load_config(config)
        problems = plugin_problems(cfg)
        formats, more = build_formats(cfg.sources)
        problems += more
        found = replay_mod.discover(paths, formats)
    except (ConfigError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    known = ", ".join(name for name, _ in formats.entries)
    unread = [f"{path}: not a log lrwatch reads ({known})" for path in found.unrecognised]
    empty = found.empty
    unread += [f"{path}: holds no log lrwatch reads ({known}){holds(path)}" for path in empty]
    if not found.runs:
        raise _fail("nothing to replay: " + "; ".join(unread), code=1)
    unread += [
        f"{path}: named like a log, but no format lrwatch reads claims it"
        for path in found.unread_logs
    ]
    for line in unread:
        _warn(line + "; skipped")
    runs: list[tuple[str, list[str]]] = []  # (name, metrics) of each run read
    judged = 0
    try:
        for run in replay_mod.replay_runs(found, cfg, formats, problems):
            runs.append((run.name, run.metrics))
            judged += run.judged
            warnings = run.warnings()
            if not run.judged and len(found.runs) == 1:
                warnings = warnings[1:]  # "no loss": the one-line error below says it
            for line in warnings:
                _warn(line)
            rows = [item.to_json() for item in run.findings]
            if format is OutputFormat.JSONL:
                for row in rows:
                    sys.stdout.write(json.dumps(row) + "\n")
                if run.first_nonfinite is not None:
                    _warn(f"run {run.name}: {nonfinite(run.first_nonfinite)}")
            else:
                console.print(replay_view(run, rows), highlight=False)
    except (OSError, ValueError) as exc:  # a file that vanished or cannot be read
        raise _fail(f"cannot read: {exc}") from None
    for problem in dict.fromkeys(problems):  # on stderr: the findings went on without it
        _warn(f"{problem}; replayed without it")
    if not judged:
        if len(runs) == 1:
            raise _fail(coverage.no_loss(*runs[0]), code=1)
        raise _fail(
            f"nothing judged: none of the {len(runs)} runs has a loss lrwatch recognises "
            f"(see the warnings above); {coverage.ROLE_HINT}",
            code=1,
        )


def _api(host: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return call(host, port, path, body)
    except ApiError as exc:
        raise _fail(str(exc)) from None


@app.command(cls=PlainCommand)
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
    if not _watch_status(lambda: call(host, port, "/api/status"), interval, count):
        raise typer.Exit(2)  # --count ran out while the daemon could not be reached


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
                    view: Table | Group | Text = status_table(fetch())
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


@app.command("set-lr", cls=PlainCommand)
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
    body: dict[str, Any] = {"who": who(), "reason": reason}
    body.update({"value": value} if value is not None else {"scale": scale})
    answer = _api(host, port, run_path(run, "set-lr"), body)
    _say(f"command {answer['seq']} sent to {answer['run']}: LR x{answer['factor']:g}")


@app.command(cls=PlainCommand)
def pause(
    run: str, reason: str = "", host: HostOpt = "127.0.0.1", port: PortOpt = DEFAULT_METRICS_PORT
) -> None:
    """Stop adjusting RUN (it stays observed)."""
    _api(host, port, run_path(run, "pause"), {"who": who(), "reason": reason})
    _say(f"{run} paused")


@app.command(cls=PlainCommand)
def resume(
    run: str, reason: str = "", host: HostOpt = "127.0.0.1", port: PortOpt = DEFAULT_METRICS_PORT
) -> None:
    """Let lrwatch adjust RUN again."""
    _api(host, port, run_path(run, "resume"), {"who": who(), "reason": reason})
    _say(f"{run} resumed")


@app.command(cls=PlainCommand)
def report(
    path: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run directory.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", metavar="FILE", help="FILE.png, or FILE.html for the HTML page."
        ),
    ] = None,
    html: Annotated[bool, typer.Option("--html", help="A self-contained HTML page.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Plot a run: metrics, findings, actions (finished or live)."""
    if _missing("matplotlib"):
        raise _fail("lrwatch report draws with matplotlib, not installed: pip install matplotlib")
    from lrwatch.offline.report import write_report

    suffix = output.suffix.lower() if output is not None else ""
    if suffix in (".html", ".htm"):
        html = True  # the name says what the user wants
    elif suffix not in ("", ".png"):
        raise _fail(f"-o {output}: lrwatch report writes .png (a picture) or .html (a page)")
    elif html and suffix == ".png":
        raise _fail(f"--html writes a page: name it .html, not {output}")
    try:
        out = write_report(path, output, html=html, config=load_config(config))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None
    _say(f"wrote {out}")


@config_app.command("check", cls=PlainCommand)
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
    _say(f"{path}: ok")


@app.command("plugins", cls=PlainCommand)
def list_plugins() -> None:
    """Installed detectors, policies, sources and notifiers: package, version, whether each loads.

    Built-ins are listed like any plugin (they are entry points of the lrwatch package); the exit
    status is 1 when one cannot be used."""
    from lrwatch import plugins

    table = Table("group", "name", "package", "object", "status", box=None)
    broken = 0
    for group in plugins.GROUPS:
        for info in plugins.available(group):
            try:
                plugins.load(group, info.name)
                status = Text("ok", style="green")
            except plugins.PluginError as exc:
                broken += 1
                status = Text(exc.problem.message, style="bold red")
            package = f"{info.distribution} {info.version}" + ("" if info.builtin else " (plugin)")
            table.add_row(group, info.name, package, info.value, status)
        for info in plugins.shadowed(group):
            broken += 1
            package = f"{info.distribution} {info.version} (plugin)"
            status = Text("refused: a built-in has this name", style="bold red")
            table.add_row(group, info.name, package, info.value, status)
    console.print(table)
    if broken:
        raise typer.Exit(1)


def _missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or a finder that refuses it
            found = False
        if not found:
            out.append(name)
    return out


@app.command(cls=PlainCommand)
def demo(
    steps: Annotated[int, typer.Option(help="Training steps per job.")] = 500,
    port: Annotated[int, typer.Option(help="Port for /metrics; 0 picks a free one.")] = 0,
    workdir: Annotated[Path | None, typer.Option(help="Keep the runs here.")] = None,
) -> None:
    """A real small PyTorch job that diverges, rescued live by lrwatch, beside one without."""
    missing = _missing("torch", "sklearn")
    if missing:
        raise _fail(
            f"lrwatch demo trains a real PyTorch job and needs {' and '.join(missing)}: "
            "pip install 'lrwatch[demo]'",
            code=1,
        )
    from lrwatch.demo.showcase import run_demo

    logging.basicConfig(level=logging.ERROR)
    raise typer.Exit(run_demo(steps=steps, port=port, workdir=workdir, console=console))


if __name__ == "__main__":
    app()
