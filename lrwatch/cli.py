"""The ``lrwatch`` command line. Each command only builds a config or a request and hands it on
(uvicorn's split): the daemon, replay, the report and the demo live in their own modules."""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lrwatch.config import DEFAULT_METRICS_PORT, ConfigError, Mode, load_config

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
    if not logdir.is_dir():
        raise _fail(f"--logdir {logdir} is not a directory")
    try:
        cfg = load_config(
            config,
            logdir=logdir,
            mode=mode,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            state=state,
        )
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    try:
        daemon = Daemon(cfg)
    except OSError as exc:
        raise _fail(f"cannot start: {exc}") from None
    daemon.run()


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
        results = replay_mod.replay(paths, cfg)
        if format is OutputFormat.JSONL:
            for item in results:
                sys.stdout.write(json.dumps(item.to_json()) + "\n")
            return
        _print_replay_table([item.to_json() for item in results])
    except (ConfigError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None


def _print_replay_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no findings")
        return
    for run in dict.fromkeys(r["run"] for r in rows):
        table = Table(title=f"run {run}", title_justify="left", expand=False)
        for col in ("step", "onset", "metric", "kind", "severity", "would do", "reason"):
            table.add_column(col, overflow="fold")
        for r in (r for r in rows if r["run"] == run):
            action = r["action"]
            act = f"{action['type']} x{action['factor']:g}" if action else "-"
            onset = "" if r["onset_step"] is None else str(r["onset_step"])
            table.add_row(
                str(r["step"]), onset, r["metric"], r["kind"], r["severity"], act, r["reason"]
            )
        console.print(table)


def _api(host: str, port: int, path: str, body: dict[str, Any] | None = None) -> Any:
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
        raise _fail(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _fail(f"no daemon at {url}: {exc}") from None


@app.command()
def status(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = DEFAULT_METRICS_PORT,
    as_json: Annotated[bool, typer.Option("--json", help="Raw JSON.")] = False,
) -> None:
    """Runs, state, last step, loss, LR factor, open findings, unacked commands."""
    answer = _api(host, port, "/api/status")
    if as_json:
        console.print_json(data=answer)
        return
    table = Table(title=f"lrwatch {answer.get('mode', '')} — {answer.get('root', '')}")
    for col in ("run", "state", "step", "loss", "LR factor", "LR", "hook", "findings", "unacked"):
        table.add_column(col)
    for r in answer["runs"]:
        loss = "-" if r["loss"] is None else f"{r['loss']:.4g}"
        lr = ", ".join(f"{x:.3g}" for x in r["lrs"]) or "-"
        table.add_row(
            r["run"],
            r["state"],
            str(r["last_step"]),
            loss,
            f"{r['lr_scale']:g}",
            lr,
            "alive" if r["hook_alive"] else "-",
            ", ".join(r["active_findings"]) or "-",
            ", ".join(map(str, r["unacked_commands"])) or "-",
        )
    console.print(table)


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
        load_config(path)
    except ConfigError as exc:
        raise _fail(str(exc), code=1) from None
    console.print(f"{path}: ok")


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
