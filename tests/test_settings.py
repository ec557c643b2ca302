"""Settings validation and token loading: every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.commands.rerun import FLAGS
from orchestrator.settings import ConfigError, build_settings, load_token


def test_defaults_match_the_documented_ones() -> None:
    settings = build_settings({}, {}, FLAGS)
    assert settings.rate == 1.0  # 60/min
    assert settings.concurrency == 8
    assert settings.max_attempts == 5
    assert settings.timeout == 30
    assert settings.base_url == "https://v1.api.altostrat.io"
    assert settings.ledger == Path("rerun-ledger.jsonl")


def test_base_url_from_env_unless_the_flag_is_given() -> None:
    env = {"ALTOSTRAT_BASE_URL": "http://127.0.0.1:9/"}
    assert build_settings({}, env, FLAGS).base_url == "http://127.0.0.1:9"
    given = {"base_url": "http://127.0.0.1:8"}
    assert build_settings(given, env, FLAGS).base_url == "http://127.0.0.1:8"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"concurrency": 0}, "invalid --concurrency: Input should be greater than or equal to 1"),
        ({"rate": "lots"}, "invalid --rate: rate 'lots' is not N/s, N/min, N/h or none"),
        ({"timeout": -1.0}, "invalid --timeout"),
        ({"max_attempts": 0}, "invalid --max-attempts"),
        ({"base_url": "ftp://x"}, "invalid --base-url: 'ftp://x' is not an http(s) URL"),
    ],
)
def test_bad_values_name_the_flag(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(given, {}, FLAGS)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_bad_base_url_from_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="invalid ALTOSTRAT_BASE_URL"):
        build_settings({}, {"ALTOSTRAT_BASE_URL": "nonsense"}, FLAGS)


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
