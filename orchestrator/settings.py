"""The validated settings of a rerun, and the token, which is kept apart from them.

The token is never a field here: settings get logged and printed, the token never is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from yarl import URL

from .api import DEFAULT_BASE_URL
from .budget import Limit
from .ledger import FsyncPolicy
from .rates import parse_rate
from .spans import parse_span

TOKEN_ENV: Final = "ALTOSTRAT_TOKEN"  # noqa: S105 - the variable's name, not a secret
BASE_URL_ENV: Final = "ALTOSTRAT_BASE_URL"


class ConfigError(Exception):
    """A usage or configuration problem, told to the user in one line (exit 2)."""


class RerunSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = "-"
    ledger: Path = Path("rerun-ledger.jsonl")
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = Field(default=8, ge=1, le=1024)
    # Requests per second; None means no client-side limit.
    rate: float | None = Field(default=1.0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    timeout: float = Field(default=30.0, gt=0, le=3600)
    retry_failed: bool = False
    retry_in_doubt: bool = False
    dry_run: bool = False
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    # The error budget (see budget.py); None is no limit.
    max_failures: Limit | None = None
    max_client_failures: Limit | None = None
    max_server_failures: Limit | None = None
    # Faults in a row (5xx, timeouts, connection errors) that open the circuit; 0 is off.
    circuit_threshold: int = Field(default=10, ge=0, le=100_000)
    # --wait: follow each accepted rerun until its new run ends (seconds).
    wait: bool = False
    wait_timeout: float = Field(default=3600.0, gt=0, le=7 * 86400)
    poll_interval: float = Field(default=10.0, gt=0, le=3600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("rate", mode="before")
    @classmethod
    def _parse_rate(cls, value: object) -> object:
        return parse_rate(value) if isinstance(value, str) else value

    @field_validator("max_failures", "max_client_failures", "max_server_failures", mode="before")
    @classmethod
    def _parse_limit(cls, value: object) -> object:
        return Limit.parse(value) if isinstance(value, str) else value

    @field_validator("wait_timeout", "poll_interval", mode="before")
    @classmethod
    def _parse_span(cls, value: object) -> object:
        return parse_span(value) if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


def build_settings(
    given: Mapping[str, object], env: Mapping[str, str], flag_names: Mapping[str, str]
) -> RerunSettings:
    """Settings from flags given on the command line over the environment over defaults.

    `flag_names` maps a field to the flag that sets it, so errors name what the user typed.
    """
    values = dict(given)
    if "base_url" not in values and env.get(BASE_URL_ENV):
        values["base_url"] = env[BASE_URL_ENV]
    try:
        return RerunSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = flag_names.get(field, field)
        if field == "base_url" and "base_url" not in given:
            name = BASE_URL_ENV
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {name}: {message}") from None


def load_token(env: Mapping[str, str], token_file: Path | None) -> str:
    """The API token from `--token-file` or the environment; never from a flag value."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigError(f"cannot read --token-file {token_file}: {reason}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
    else:
        token = env.get(TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(f"no API token: set {TOKEN_ENV} or pass --token-file PATH")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError("the API token holds whitespace or control characters")
    return token


def environ() -> Mapping[str, str]:
    return os.environ
