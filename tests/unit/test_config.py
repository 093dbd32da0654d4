"""Config files: YAML and TOML, unknown fields refused, errors naming field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrwatch.config import Config, ConfigError, Mode, load_config


def test_defaults_bind_localhost_and_act() -> None:
    config = Config()
    assert config.metrics_host == "127.0.0.1"
    assert config.mode is Mode.ACT


def test_yaml_with_override(tmp_path: Path) -> None:
    path = tmp_path / "lrwatch.yaml"
    path.write_text(
        "mode: observe\n"
        "policy:\n  cooldown_steps: 10\n"
        "overrides:\n"
        "  - glob: 'llm/*'\n"
        "    roles: {loss: [train/lm_loss]}\n"
        "    policy: {factors: {divergence: 0.5}}\n"
    )
    config = load_config(path)
    assert config.mode is Mode.OBSERVE
    assert config.for_run("vision/a").policy.cooldown_steps == 10
    llm = config.for_run("llm/big")
    assert llm.policy.factors == {"divergence": 0.5}
    assert llm.roles.loss == ("train/lm_loss",)


def test_toml(tmp_path: Path) -> None:
    path = tmp_path / "lrwatch.toml"
    path.write_text('mode = "observe"\n[policy]\nmax_change = 4.0\n')
    assert load_config(path).policy.max_change == 4.0


def test_cli_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("metrics_port: 1234\n")
    assert load_config(path, metrics_port=5678).metrics_port == 5678
    assert load_config(path, metrics_port=None).metrics_port == 1234


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mode: maybe\n", "mode"),
        ("metrics_port: 99999\n", "metrics_port"),
        ("policy:\n  cooldown_steps: -1\n", "policy.cooldown_steps"),
        ("polcy: {}\n", "polcy"),
        ("- a list\n", "top level must be a mapping"),
        ("mode: [unclosed\n", "not valid yaml"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_bad_value_is_shown(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("heartbeat_timeout_seconds: -5\n")
    with pytest.raises(ConfigError, match=r"heartbeat_timeout_seconds.*got -5"):
        load_config(path)


def test_a_bad_notifier_entry_is_named_but_its_secret_url_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "lrwatch.yaml"
    path.write_text('notifiers:\n  ops: "https://hooks.slack.com/services/T0/B0/s3cr3t"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "notifiers.ops" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_hostile_config_files_are_config_errors(tmp_path: Path) -> None:
    """Whatever the file holds, loading it raises ConfigError naming the problem (a SIGHUP
    then keeps the running config), and never runs for minutes."""
    from lrwatch.config import MAX_CONFIG_BYTES, read_secret_file

    cases = {
        "latin1.yaml": b"mode: observe\nroles: {loss: [\xff\xfe]}\n",
        "big.yaml": b"#" * (MAX_CONFIG_BYTES + 1),
        "deep.yaml": b"[" * 5_000,
        "bomb.yaml": b"a: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + b"".join(
            f"{n}: &{n} [{','.join([f'*{p}'] * 10)}]\n".encode()
            for p, n in zip("abcdefg", "bcdefgh", strict=True)
        ),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=str(path)):
            load_config(path)
    ok = tmp_path / "aliases.yaml"  # an alias or two is fine
    ok.write_text("roles: &r {loss: [l]}\noverrides: [{glob: 'x*', roles: *r}]\n")
    assert load_config(ok).overrides[0].roles == load_config(ok).roles
    missing = tmp_path / "secret.yaml"
    missing.write_text(f"secret_file: {tmp_path / 'nope'}\n")
    with pytest.raises(ConfigError, match="secret_file"):
        read_secret_file(load_config(missing))
