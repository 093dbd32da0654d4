"""The command line as a new user meets it: real ``python -m lrwatch`` processes, their exit
status, stdout and stderr. Never silent: what lrwatch could not read is said, in one line when
it judged nothing, and a user's mistake ends in a message, never in a traceback."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrwatch import __version__
from lrwatch.cli import app, printable
from lrwatch.sources.layout import log_format

pytestmark = pytest.mark.slow  # real processes, about a second each


def lrwatch(
    *args: str | Path, cwd: Path | None = None, block: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``python -m lrwatch ARGS``; ``block``: modules that fail to import in it, as they do
    where they are not installed."""
    code = "from lrwatch.cli import app; app(prog_name='lrwatch')"
    if block:
        code = f"import sys; sys.meta_path.insert(0, _Block({block!r})); " + code
        code = _BLOCKER + code
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


_BLOCKER = """
class _Block:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
"""


def write_log(path: Path, losses: list[float], *, garbage: int = 0, key: str = "loss") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": i, key: v}) for i, v in enumerate(losses)]
    lines += ["{not json"] * garbage
    path.write_text("\n".join(lines) + "\n")
    return path


HEALTHY = [1.0 / (i + 1) for i in range(120)]
DIVERGING = [0.5] * 80 + [math.nan] * 40


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single line of stderr a failed command printed (no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# -- replay: never silent ----------------------------------------------------------------------


def test_replay_of_runs_sharing_a_folder_name_keeps_them_apart(tmp_path: Path) -> None:
    write_log(tmp_path / "a" / "train" / "metrics.jsonl", HEALTHY)
    write_log(tmp_path / "b" / "train" / "metrics.jsonl", DIVERGING)
    result = lrwatch("replay", "a", "b", "-f", "jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    divergences = [r for r in rows if r["kind"] == "divergence"]
    assert [(r["run"], r["step"]) for r in divergences] == [("b/train", 80)]
    assert {r["run"] for r in rows} <= {"a/train", "b/train"}
    # Without a clash, the names are what they always were.
    alone = lrwatch("replay", "b", "-f", "jsonl", cwd=tmp_path)
    assert {json.loads(line)["run"] for line in alone.stdout.splitlines()} == {"train"}


def test_replay_of_an_empty_directory_exits_1_saying_why(tmp_path: Path) -> None:
    (tmp_path / "runs" / "exp").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "notes.md").write_text("hello")
    result = lrwatch("replay", tmp_path / "runs")
    assert (result.returncode, result.stdout) == (1, "")
    line = one_line_error(result)
    assert "holds no log lrwatch reads (" in line and "jsonl" in line
    assert "exp/notes.md" in line


def test_replay_of_a_file_that_is_no_log_exits_1_without_a_traceback(tmp_path: Path) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"\x80\x02}q\x00.")
    result = lrwatch("replay", weights)
    assert result.returncode == 1
    assert f"{weights}: not a log lrwatch reads" in one_line_error(result)


def test_replay_of_garbage_named_like_logs_exits_1_counting_what_it_skipped(
    tmp_path: Path,
) -> None:
    run = tmp_path / "bad"
    run.mkdir()
    (run / "events.out.tfevents.1.host").write_bytes(bytes(range(256)) * 20)
    (run / "metrics.jsonl").write_bytes(b"\x00\xff{{{" * 10 + b"\n")
    result = lrwatch("replay", run)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    *warnings, error = result.stderr.strip().splitlines()
    assert error == "error: run bad: no metric read from its logs, not judged"
    assert any("events.out.tfevents.1.host: skipped" in w for w in warnings), warnings
    assert any("metrics.jsonl: skipped 1 corrupt record" in w for w in warnings), warnings


def test_replay_of_a_run_without_a_loss_exits_1_naming_its_metrics(tmp_path: Path) -> None:
    run = tmp_path / "eval"
    write_log(run / "metrics.jsonl", [0.5] * 30, key="accuracy")
    for fmt in ("jsonl", "table"):
        result = lrwatch("replay", run, "-f", fmt)
        assert result.returncode == 1, result.stderr
        line = one_line_error(result)
        assert "run eval: no loss recognised, not judged (metrics found: accuracy)" in line
        assert "roles: {loss: [NAME, loss]}" in line
    assert "no findings" not in result.stdout  # the table says it was not judged
    assert "run eval: not judged" in result.stdout


def test_replay_of_a_missing_path_exits_2(tmp_path: Path) -> None:
    result = lrwatch("replay", tmp_path / "nope")
    assert result.returncode == 2
    assert "no such file or directory" in one_line_error(result)


def test_replay_warns_on_every_run_and_file_it_could_not_read(tmp_path: Path) -> None:
    write_log(tmp_path / "runs" / "good" / "metrics.jsonl", DIVERGING, garbage=3)
    write_log(tmp_path / "runs" / "eval" / "metrics.jsonl", [0.9] * 30, key="acc")
    (tmp_path / "model.pt").write_bytes(b"\x00")
    result = lrwatch("replay", "runs", "model.pt", "-f", "jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # one run was judged
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # stdout stays JSONL
    assert rows and {r["run"] for r in rows} == {"good"}
    warnings = result.stderr.splitlines()
    assert all(w.startswith("lrwatch: ") for w in warnings), warnings
    said = "\n".join(warnings)
    assert "model.pt: not a log lrwatch reads" in said
    assert "run eval: no loss recognised, not judged (metrics found: acc)" in said
    assert "run good: runs/good/metrics.jsonl: skipped 3 corrupt records" in said
    assert "run good: first non-finite value at step 80 (loss=nan)" in said
    assert "Traceback" not in said


def test_replay_says_when_a_files_step_went_back(tmp_path: Path) -> None:
    # minGPT's old trainer: "epoch 1 iter 0: train loss ...", the iteration restarting every
    # epoch and no count of them to go by: merged by step, the later epochs are repeats.
    run = tmp_path / "mingpt"
    run.mkdir()
    (run / "train.log").write_text(
        "".join(
            f"epoch {e} iter {i}: train loss {2.0 - 0.01 * i:.5f}\n"
            for e in (1, 2, 3)
            for i in range(40)
        )
    )
    result = lrwatch("replay", run, "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    said = result.stderr
    assert "run mingpt: " in said and "train.log: its step went back 2 times" in said
    assert "a step counted within each epoch" in said
    # a log whose steps only go forward is not warned about
    (run / "train.log").write_text("".join(f"iter {i}: loss 2.0\n" for i in range(40)))
    assert "went back" not in lrwatch("replay", run, "-f", "jsonl").stderr


def test_replay_names_files_that_look_like_logs_it_cannot_read(tmp_path: Path) -> None:
    run = write_log(tmp_path / "exp" / "metrics.jsonl", HEALTHY).parent
    (run / "train.log").write_text("step 1 loss 2.0\n")
    (run / "config.json").write_text("{}")  # beside logs, not a log: not worth a word
    (run / "model.pt").write_bytes(b"\x00")
    result = lrwatch("replay", run, "-f", "jsonl")
    assert result.returncode == 0, result.stderr
    said = result.stderr
    warning = f"{run / 'train.log'}: named like a log, but no format lrwatch reads claims it"
    # Said unless a plain-text reader is installed, which reads it.
    assert (warning in said) == (log_format(run / "train.log") is None)
    assert "config.json" not in said and "model.pt" not in said


def test_replay_table_heads_each_run_with_what_was_read(tmp_path: Path) -> None:
    write_log(tmp_path / "a" / "train" / "metrics.jsonl", HEALTHY, garbage=1)
    write_log(tmp_path / "b" / "train" / "metrics.jsonl", DIVERGING)
    result = lrwatch("replay", "a", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "run a/train: no findings" in out
    assert "read 120 steps; loss `loss`; 1 corrupt record skipped" in out
    assert "run b/train: " in out and "divergence" in out
    assert "first non-finite value at step 80 (loss=nan)" in out


# -- help, version, config -----------------------------------------------------------------------


def test_version() -> None:
    result = lrwatch("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"lrwatch {__version__}")


@pytest.mark.parametrize(
    "command", ["", "config", "replay", "run", "report", "status", "set-lr", "demo"]
)
def test_help_shows_plain_metavars_not_python_types(command: str) -> None:
    result = lrwatch(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for python_type in ("<list[", "<bool>", "<path>", "<int>", "<float>", "<str>", "Path]"):
        assert python_type not in out, f"{python_type} in:\n{out}"
    if command == "replay":
        assert "PATH" in out and "--format" in out and "jsonl|table" in out
    if command == "run":
        assert "--metrics-port" in out and "INTEGER" in out
    if command == "set-lr":
        assert "{RUN}" in out


def test_config_typos_get_did_you_mean_and_detectors_are_listed(tmp_path: Path) -> None:
    config = tmp_path / "lrwatch.yaml"
    config.write_text(
        "metrics_prot: 9000\n"
        "policy: {cooldwon_steps: 3}\n"
        "detectors: {divergense: {}}\n"
        "overrides: [{glob: 'a*', roles: {los: [x]}}]\n"
    )
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert result.exit_code == 1
    out = result.output
    assert "metrics_prot: unknown setting (got 9000), did you mean 'metrics_port'?" in out
    assert "policy.cooldwon_steps: unknown setting (got 3), did you mean 'cooldown_steps'?" in out
    assert "overrides.0.roles.los: unknown setting (got ['x']), did you mean 'loss'?" in out
    assert "detectors.divergense: unknown detector, did you mean 'divergence'?" in out
    assert "(detectors: divergence, grad_norm, oscillation, plateau, drift" in out
    # A name with nothing close lists the valid ones instead.
    config.write_text("policy: {zzz: 1}\n")
    result = CliRunner().invoke(app, ["config", "check", str(config)])
    assert "policy.zzz: unknown setting (got 1) (valid: factors, cooldown_steps," in result.output


# -- run, report, demo ---------------------------------------------------------------------------


def test_a_busy_port_names_the_port_and_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = lrwatch(
            "run", "--logdir", tmp_path, "--metrics-port", str(port),
            "--state", tmp_path / "state.sqlite",
        )  # fmt: skip
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert "--metrics-port" in line


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_log(tmp_path / "runs" / "exp1" / "metrics.jsonl", DIVERGING).parent


def test_report_follows_the_suffix_of_its_output(run_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "x.html"
    result = lrwatch("report", run_dir, "-o", page)
    assert result.returncode == 0, result.stderr
    assert page.read_text().startswith("<!doctype html>")
    picture = tmp_path / "x.png"
    assert lrwatch("report", run_dir, "-o", picture).returncode == 0
    assert picture.read_bytes().startswith(b"\x89PNG")
    wrong = lrwatch("report", run_dir, "-o", tmp_path / "x.jpg")
    assert wrong.returncode == 2
    assert "writes .png (a picture) or .html (a page)" in one_line_error(wrong)
    clash = lrwatch("report", run_dir, "--html", "-o", picture)
    assert clash.returncode == 2 and "name it .html" in one_line_error(clash)


def test_report_of_a_root_with_several_runs_lists_them(run_dir: Path) -> None:
    write_log(run_dir.parent / "exp2" / "metrics.jsonl", HEALTHY)
    result = lrwatch("report", run_dir.parent)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "holds 2 runs (exp1, exp2); a report draws one" in line
    assert f"lrwatch report {run_dir}" in line
    assert not list(run_dir.parent.glob("lrwatch-report.*"))


def test_report_of_a_log_file_names_its_directory(run_dir: Path) -> None:
    result = lrwatch("report", run_dir / "metrics.jsonl")
    assert result.returncode == 2
    assert f"is a file: give its run's directory ({run_dir})" in one_line_error(result)


def test_report_without_matplotlib_says_what_to_install(run_dir: Path) -> None:
    result = lrwatch("report", run_dir, block=("matplotlib",))
    assert result.returncode == 2
    assert "pip install matplotlib" in one_line_error(result)


def test_demo_without_torch_names_the_extra_in_one_line() -> None:
    result = lrwatch("demo", block=("torch",))
    assert result.returncode == 1
    line = one_line_error(result)
    assert "needs torch" in line and "pip install 'lrwatch[demo]'" in line


def test_names_from_files_cannot_drive_the_terminal() -> None:
    assert printable("exp1/a b") == "exp1/a b"
    assert printable("\x1b]0;owned\x07x\u202ey\r") == "\\x1b]0;owned\\x07x\\u202ey\\r"
