"""Settings: defaults < TOML file < ORCHESTRATOR_<KEY> < flags, key by key; every mistake is
one clear line naming the key and where it was set; the token loads apart."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ConfigError
from orchestrator.ledger.writer import FsyncPolicy
from orchestrator.settings import KEYS, load_settings, load_token, token_status
from orchestrator.units import Limit

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ORCHESTRATOR_* or ALTOSTRAT_* variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith(("ORCHESTRATOR_", "ALTOSTRAT_")):
            monkeypatch.delenv(name)
    return monkeypatch


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_ones() -> None:
    loaded = load_settings({}, FLAGS)
    settings = loaded.settings
    assert settings.rate == 1.0  # 60/min
    assert settings.concurrency == 8
    assert settings.max_attempts == 5
    assert settings.timeout == 30
    assert settings.base_url == "https://v1.api.altostrat.io"
    assert settings.ledger == Path("rerun-ledger.jsonl")
    assert settings.progress is True
    assert settings.metrics_file is None
    assert settings.max_failures is None
    assert set(loaded.origins.values()) == {"default"}


# key: (in the file as TOML, in the environment, as a flag gives it, and the value each
# layer should leave: file, then file + env, then file + env + flag). Booleans alternate.
LAYERS: dict[str, tuple[str, str, object, tuple[object, object, object]]] = {
    "source": ('"a.txt"', "b.txt", "c.txt", ("a.txt", "b.txt", "c.txt")),
    "ledger": (
        '"a.jsonl"',
        "b.jsonl",
        Path("c.jsonl"),
        (Path("a.jsonl"), Path("b.jsonl"), Path("c.jsonl")),
    ),
    "base_url": (
        '"http://127.0.0.1:1"',
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
        ("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"),
    ),
    "concurrency": ("2", "3", 4, (2, 3, 4)),
    "rate": ('"1/min"', "2/s", "3/s", (1 / 60, 2.0, 3.0)),
    "rate_store": ('"none"', "/tmp/budget", "auto", ("none", "/tmp/budget", "auto")),
    "max_attempts": ("2", "3", 4, (2, 3, 4)),
    "timeout": ("1.5", "2.5", 3.5, (1.5, 2.5, 3.5)),
    "retry_failed": ("true", "false", True, (True, False, True)),
    "retry_in_doubt": ("true", "false", True, (True, False, True)),
    "include_reruns": ("true", "false", True, (True, False, True)),
    "dry_run": ("true", "false", True, (True, False, True)),
    "fsync": (
        '"never"',
        "always",
        "batch",
        (FsyncPolicy.NEVER, FsyncPolicy.ALWAYS, FsyncPolicy.BATCH),
    ),
    "max_failures": ("1", "2%", "3", (Limit(count=1), Limit(percent=2.0), Limit(count=3))),
    "max_client_failures": (
        '"1%"',
        "2",
        "3%",
        (Limit(percent=1.0), Limit(count=2), Limit(percent=3.0)),
    ),
    "max_server_failures": ("7", "8", "9", (Limit(count=7), Limit(count=8), Limit(count=9))),
    "circuit_threshold": ("0", "5", 6, (0, 5, 6)),
    "max_outage": ('"10m"', "none", "90s", (600.0, None, 90.0)),
    "yes": ("true", "false", True, (True, False, True)),
    "wait": ("true", "false", True, (True, False, True)),
    "wait_timeout": ('"30m"', "2h", "90s", (1800.0, 7200.0, 90.0)),
    "poll_interval": ("5", "1m", "2s", (5.0, 60.0, 2.0)),
    "token_file": ('"t1"', "t2", Path("t3"), (Path("t1"), Path("t2"), Path("t3"))),
    "log_level": ('"warning"', "error", "debug", ("warning", "error", "debug")),
    "log_format": ('"json"', "console", "json", ("json", "console", "json")),
    "progress": ("false", "true", False, (False, True, False)),
    "summary_json": (
        '"s1.json"',
        "s2.json",
        Path("s3.json"),
        (Path("s1.json"), Path("s2.json"), Path("s3.json")),
    ),
    "metrics_file": (
        '"m1.prom"',
        "m2.prom",
        Path("m3.prom"),
        (Path("m1.prom"), Path("m2.prom"), Path("m3.prom")),
    ),
    "metrics_job": ('"nightly"', "hourly", "adhoc.1", ("nightly", "hourly", "adhoc.1")),
}


def test_the_precedence_table_covers_every_key() -> None:
    assert set(LAYERS) == set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_each_key_file_then_env_then_flag_each_overriding_the_last(
    key: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    in_file, in_env, as_flag, (after_file, after_env, after_flag) = LAYERS[key]
    config = write_config(tmp_path, f"{key} = {in_file}\n")
    flag = FLAGS[key]

    loaded = load_settings({}, FLAGS, config)
    assert getattr(loaded.settings, key) == after_file
    assert loaded.origins[key] == f"file {config}"

    clean_env.setenv(f"ORCHESTRATOR_{key.upper()}", in_env)
    loaded = load_settings({}, FLAGS, config)
    assert getattr(loaded.settings, key) == after_env
    assert loaded.origins[key] == f"env ORCHESTRATOR_{key.upper()}"

    loaded = load_settings({key: as_flag}, FLAGS, config)
    assert getattr(loaded.settings, key) == after_flag
    assert loaded.origins[key] == f"flag {flag}"
    # Every other key is untouched by it.
    assert {k for k, o in loaded.origins.items() if o != "default"} == {key}


def test_altostrat_base_url_ranks_below_orchestrator_base_url_and_above_the_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, 'base_url = "http://127.0.0.1:1"\n')
    clean_env.setenv("ALTOSTRAT_BASE_URL", "http://127.0.0.1:9/")
    loaded = load_settings({}, FLAGS, config)
    assert loaded.settings.base_url == "http://127.0.0.1:9"
    assert loaded.origins["base_url"] == "env ALTOSTRAT_BASE_URL"
    clean_env.setenv("ORCHESTRATOR_BASE_URL", "http://127.0.0.1:8")
    assert load_settings({}, FLAGS, config).settings.base_url == "http://127.0.0.1:8"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"concurrency": 0}, "invalid --concurrency: Input should be greater than or equal to 1"),
        ({"rate": "lots"}, "invalid --rate: rate 'lots' is not N/s, N/min, N/h or none"),
        ({"timeout": -1.0}, "invalid --timeout"),
        ({"max_attempts": 0}, "invalid --max-attempts"),
        ({"max_failures": "-1"}, "invalid --max-failures: '-1' is not a count like 10"),
        ({"circuit_threshold": -1}, "invalid --circuit-threshold"),
        ({"base_url": "ftp://x"}, "invalid --base-url: 'ftp://x' is not an http(s) URL"),
    ],
)
def test_bad_flag_values_name_the_flag(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(given, FLAGS)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rate = "lots"\n', "invalid rate in {path}: rate 'lots' is not N/s"),
        ("concurrency = 0\n", "invalid concurrency in {path}: Input should be greater"),
        ('log_level = "loud"\n', "invalid log_level in {path}: Input should be 'debug'"),
        ('fsync = "sometimes"\n', "invalid fsync in {path}"),
        ("progress = 3\n", "invalid progress in {path}"),
        ("concurency = 4\n", "unknown key 'concurency' in {path} (did you mean concurrency?)"),
        ("[rerun]\nrate = '1/s'\n", "unknown key 'rerun' in {path}"),
        ("rate = \n", "{path} is not valid TOML: "),
    ],
)
def test_bad_config_files_name_the_key_and_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, FLAGS, path)
    assert str(caught.value).startswith(message.format(path=path))
    assert "\n" not in str(caught.value)


def test_a_missing_config_file_is_an_error_not_silence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read --config .*absent.toml: No such file"):
        load_settings({}, FLAGS, tmp_path / "absent.toml")


def test_bad_and_unknown_variables_are_named(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ORCHESTRATOR_RATE", "fast")
    with pytest.raises(ConfigError, match=r"^invalid ORCHESTRATOR_RATE: rate 'fast'"):
        load_settings({}, FLAGS)
    clean_env.delenv("ORCHESTRATOR_RATE")
    clean_env.setenv("ORCHESTRATOR_CONCURENCY", "4")
    loaded = load_settings({}, FLAGS)  # a warning, not an error: the run goes on
    assert loaded.warnings == (
        "unknown variable ORCHESTRATOR_CONCURENCY ignored (did you mean ORCHESTRATOR_CONCURRENCY?)",
    )
    assert loaded.settings.concurrency == 8


@pytest.mark.parametrize(
    "name",
    ["ORCHESTRATOR_PORT", "ORCHESTRATOR_PORT_80_TCP_ADDR", "ORCHESTRATOR_SERVICE_HOST"],
)
def test_kubernetes_service_links_pass_in_silence(clean_env: pytest.MonkeyPatch, name: str) -> None:
    """A Service named `orchestrator` in a pod's namespace sets these; none is ours."""
    clean_env.setenv(name, "tcp://10.0.0.1:80")
    assert load_settings({}, FLAGS).warnings == ()


def test_a_flag_fixes_a_bad_value_below_it(tmp_path: Path) -> None:
    """Validation sees the merged settings: a good flag over a bad file value is fine."""
    path = write_config(tmp_path, "concurrency = 0\n")
    assert load_settings({"concurrency": 2}, FLAGS, path).settings.concurrency == 2


# ---- the shipped profiles ----------------------------------------------------------------


def _uncommented_keys(text: str) -> str:
    """default.toml with every `# key = value` line uncommented."""
    keys = "|".join(KEYS)
    return "\n".join(re.sub(rf"^# ({keys}) = ", r"\1 = ", line) for line in text.splitlines())


# Keys unset by default: default.toml shows each with an example value instead.
UNSET_BY_DEFAULT = {
    "token_file",
    "summary_json",
    "metrics_file",
    "metrics_job",
    "max_failures",
    "max_client_failures",
    "max_server_failures",
}


def test_default_toml_names_every_key_with_its_default() -> None:
    text = (CONFIGS / "default.toml").read_text()
    assert tomllib.loads(text) == {}  # every key is commented out
    values = tomllib.loads(_uncommented_keys(text))
    assert set(values) == set(KEYS)
    defaults = load_settings({}, FLAGS).settings
    for key, value in values.items():
        shown = load_settings({key: value}, FLAGS).settings
        if key in UNSET_BY_DEFAULT:
            assert getattr(defaults, key) is None
            assert getattr(shown, key) is not None
        else:
            assert shown == defaults, key


@pytest.mark.parametrize("name", ["default.toml", "incident.toml", "cron.toml"])
def test_shipped_configs_load_clean(name: str) -> None:
    load_settings({}, FLAGS, CONFIGS / name)


def test_cron_profile_is_quiet_machine_readable_and_budgeted() -> None:
    settings = load_settings({}, FLAGS, CONFIGS / "cron.toml").settings
    assert settings.log_format == "json"
    assert settings.progress is False
    assert settings.metrics_file is not None
    assert settings.metrics_file.suffix == ".prom"
    assert settings.max_failures is not None


def test_incident_profile_keeps_at_most_once_and_durability() -> None:
    settings = load_settings({}, FLAGS, CONFIGS / "incident.toml").settings
    assert not settings.retry_in_doubt
    assert settings.fsync is not FsyncPolicy.NEVER


# ---- the token -----------------------------------------------------------------------------


def test_token_from_env_or_file(tmp_path: Path) -> None:
    assert load_token({"ALTOSTRAT_TOKEN": " abc123 \n"}, None) == "abc123"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert load_token({"ALTOSTRAT_TOKEN": "env"}, token_file) == "from-file"


@pytest.mark.parametrize(
    ("env", "file_text", "message"),
    [
        ({}, None, "no API token"),
        ({"ALTOSTRAT_TOKEN": "  "}, None, "no API token"),
        ({}, "", "is empty"),
        ({"ALTOSTRAT_TOKEN": "a b"}, None, "whitespace"),
    ],
)
def test_token_problems_are_one_line_and_never_echo_the_token(
    tmp_path: Path, env: dict[str, str], file_text: str | None, message: str
) -> None:
    token_file = None
    if file_text is not None:
        token_file = tmp_path / "token"
        token_file.write_text(file_text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_token(env, token_file)
    assert "a b" not in str(caught.value)


def test_missing_token_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read --token-file"):
        load_token({}, tmp_path / "absent")


def test_token_status_says_set_or_unset_and_never_the_token(tmp_path: Path) -> None:
    assert token_status({"ALTOSTRAT_TOKEN": "s3cret-value"}, None) == (
        "set",
        "env ALTOSTRAT_TOKEN",
    )
    assert token_status({}, None) == ("unset", "env ALTOSTRAT_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-value\n")
    assert token_status({}, token_file) == ("set", f"token_file {token_file}")
    status, origin = token_status({}, tmp_path / "absent")
    assert status == "unset"
    assert "s3cret" not in origin
