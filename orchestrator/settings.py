"""The validated settings of a rerun, where each value came from, and the token.

One pydantic-settings model, filled from four layers, each overriding the ones before:

    defaults  <  TOML file (--config PATH)  <  environment (ORCHESTRATOR_<KEY>)  <  flags

`ALTOSTRAT_BASE_URL` is read too, just below `ORCHESTRATOR_BASE_URL`. Every mistake is one
line naming the key and where it was set (the flag, the variable, or the key and the file);
unknown keys in a file are errors, not silence, and an unknown `ORCHESTRATOR_*` variable is
a warning with a did-you-mean (the environment is shared with other tools).

The token is never a field here: settings get logged and printed, the token never is.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import structlog
from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from yarl import URL

from orchestrator.api.client import DEFAULT_BASE_URL
from orchestrator.errors import ConfigError
from orchestrator.ledger.writer import FsyncPolicy
from orchestrator.shared.store import StoreSpec, parse_store_spec
from orchestrator.ui.metrics import STDOUT, default_job, job_problem
from orchestrator.units import Limit, format_rate, format_span, parse_rate, parse_span

TOKEN_ENV: Final = "ALTOSTRAT_TOKEN"  # noqa: S105 - the variable's name, not a secret
BASE_URL_ENV: Final = "ALTOSTRAT_BASE_URL"
ENV_PREFIX: Final = "ORCHESTRATOR_"
# The documented limit of the API: 60 requests a minute per token.
DEFAULT_RATE: Final = "60/min"


class RerunSettings(BaseSettings):
    """Every key of a config file, an `ORCHESTRATOR_<KEY>` variable and a flag."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix=ENV_PREFIX, env_ignore_empty=True
    )

    source: str = "-"
    ledger: Path = Path("rerun-ledger.jsonl")
    base_url: str = DEFAULT_BASE_URL
    concurrency: int = Field(default=8, ge=1, le=1024)
    # Requests per second; None means no client-side limit.
    rate: float | None = Field(default_factory=lambda: parse_rate(DEFAULT_RATE))
    # Where the token's rate budget is shared with other processes (see ratestore.py).
    rate_store: str = "auto"
    max_attempts: int = Field(default=5, ge=1, le=100)
    timeout: float = Field(default=30.0, gt=0, le=3600)
    retry_failed: bool = False
    retry_in_doubt: bool = False
    # Send IDs the ledger names as new runs of earlier reruns (skipped as `is_rerun` else).
    include_reruns: bool = False
    dry_run: bool = False
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    # The error budget (see budget.py); None is no limit.
    max_failures: Limit | None = None
    max_client_failures: Limit | None = None
    max_server_failures: Limit | None = None
    # Faults in a row (5xx, timeouts, connection errors) that open the circuit; 0 is off.
    circuit_threshold: int = Field(default=10, ge=0, le=100_000)
    # Stop sending (exit 3) after this long with no HTTP answer, or with the circuit open
    # (seconds); None (`none` or 0) never gives up.
    max_outage: float | None = Field(default=300.0, gt=0, le=7 * 86400)
    # Send without asking first, on a terminal (see commands/rerun.py).
    yes: bool = False
    # --wait: follow each accepted rerun until its new run ends (seconds).
    wait: bool = False
    wait_timeout: float = Field(default=3600.0, gt=0, le=7 * 86400)
    poll_interval: float = Field(default=10.0, gt=0, le=3600)
    token_file: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    # The live progress display, shown only when stderr is a terminal.
    progress: bool = True
    summary_json: Path | None = None  # `-` is stdout
    metrics_file: Path | None = None
    # The `job` label of every metrics series; None is the ledger file's stem.
    metrics_job: str | None = None

    # The rate as the user wrote it (`60/min` stays `60/min`), for `config show`.
    _rate_written: str | None = PrivateAttr(default=None)

    @field_validator("rate", mode="before")
    @classmethod
    def _parse_rate(cls, value: object) -> object:
        return parse_rate(value) if isinstance(value, str) else value

    @model_validator(mode="wrap")
    @classmethod
    def _keep_rate_written(
        cls, data: object, handler: ModelWrapValidatorHandler[RerunSettings]
    ) -> RerunSettings:
        model = handler(data)
        written = data.get("rate", DEFAULT_RATE) if isinstance(data, dict) else None
        if isinstance(written, str):
            model._rate_written = "".join(written.split()).lower()
        return model

    @property
    def rate_written(self) -> str:
        """The rate as the user wrote it, or as they would have."""
        return self._rate_written or format_rate(self.rate)

    @field_validator("metrics_file")
    @classmethod
    def _check_metrics_file(cls, value: Path | None) -> Path | None:
        if value == STDOUT:
            raise ValueError(
                "'-' (stdout) is not supported: the file carries the last success over from"
                " the previous one, so give a path"
            )
        return value

    @field_validator("metrics_job")
    @classmethod
    def _check_metrics_job(cls, value: str | None) -> str | None:
        if value is not None and (problem := job_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @property
    def job(self) -> str:
        """The `job` label of the metrics: --metrics-job, else the ledger file's stem."""
        return self.metrics_job if self.metrics_job is not None else default_job(self.ledger)

    @field_validator("rate_store")
    @classmethod
    def _check_rate_store(cls, value: str) -> str:
        spec = parse_store_spec(value)
        if spec.kind == "redis" and importlib.util.find_spec("redis") is None:
            raise ValueError(
                "a redis:// store needs the optional redis package:"
                " pip install 'orchestrator[redis]'"
            )
        return value.strip()

    @property
    def store_spec(self) -> StoreSpec:
        return parse_store_spec(self.rate_store)

    @field_validator("max_failures", "max_client_failures", "max_server_failures", mode="before")
    @classmethod
    def _parse_limit(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a count, as TOML writes it: max_failures = 50
        return Limit.parse(value) if isinstance(value, str) else value

    @field_validator("timeout", "wait_timeout", "poll_interval", mode="before")
    @classmethod
    def _parse_span(cls, value: object) -> object:
        return parse_span(value) if isinstance(value, str) else value

    @field_validator("max_outage", mode="before")
    @classmethod
    def _parse_outage(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip().lower() in ("none", "off"):
                return None
            value = parse_span(value)
        return None if value == 0 else value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if (problem := base_url_problem(value)) is not None:
            raise ValueError(problem)
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags, ORCHESTRATOR_*, ALTOSTRAT_BASE_URL, the TOML file, then defaults.
        return (
            init_settings,
            env_settings,
            _AltostratBaseUrl(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )


KEYS: Final = tuple(RerunSettings.model_fields)


def base_url_problem(value: str) -> str | None:
    """Why `value` cannot be the API's base URL, or None. The request paths are appended to
    it as text, and it is logged and printed: a password in it would be shown, and a query
    or a fragment would swallow the path. The message never repeats a password."""
    if any(c.isspace() or not c.isprintable() for c in value):
        return "the URL holds whitespace or control characters"
    try:
        parts = urlsplit(value)
        url = URL(value)
    except ValueError:
        return "the URL cannot be parsed"
    if "@" in parts.netloc:
        return (
            "the URL holds a user or password (user:password@host), which would be logged;"
            f" the token comes from {TOKEN_ENV} or --token-file"
        )
    if "?" in value:
        return "the URL holds a query (?...); the API's paths are appended to the base URL"
    if "#" in value:
        return "the URL holds a fragment (#...); the API's paths are appended to the base URL"
    if url.scheme not in ("http", "https") or not url.host:
        # Without a scheme an '@' may still be a user's: then say so without repeating it.
        return "not an http(s) URL" if "@" in value else f"{value!r} is not an http(s) URL"
    return None


class _AltostratBaseUrl(PydanticBaseSettingsSource):
    """`ALTOSTRAT_BASE_URL`, the API's own variable, under `ORCHESTRATOR_BASE_URL`."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(BASE_URL_ENV)
        return {"base_url": value} if value else {}


@dataclass(frozen=True)
class Loaded:
    """Settings, and for each key where its value came from: `default`, `flag --rate`,
    `env ORCHESTRATOR_RATE` or `file configs/cron.toml`."""

    settings: RerunSettings
    origins: Mapping[str, str]
    config: Path | None
    # Unknown ORCHESTRATOR_* variables: each one line, to be logged once logging is set up.
    warnings: tuple[str, ...] = ()

    def warn(self) -> None:
        """Log what loading the settings noticed but did not refuse."""
        for warning in self.warnings:
            structlog.get_logger("orchestrator").warning("config.unknown_variable", detail=warning)

    def invalid(self, key: str, problem: str, value: object = "") -> str:
        """A one-line error about `key` (and its `value`), named as the user set it."""
        return _invalid(key, problem, self.origins, self.config, value)


def load_settings(
    given: Mapping[str, object], flag_names: Mapping[str, str], config: Path | None = None
) -> Loaded:
    """Settings from flags (`given`, by field) over the environment over the TOML file at
    `config` over defaults. `flag_names` maps a field to its flag, so errors name it."""
    file_keys = _read_config(config) if config is not None else {}
    env_names, warnings = _env_names()
    origins: dict[str, str] = {}
    for key in KEYS:
        if key in given:
            origins[key] = f"flag {flag_names.get(key, key)}"
        elif key in env_names:
            origins[key] = f"env {env_names[key]}"
        elif key == "base_url" and os.environ.get(BASE_URL_ENV):
            origins[key] = f"env {BASE_URL_ENV}"
        elif key in file_keys:
            origins[key] = f"file {config}"
        else:
            origins[key] = "default"
    settings_cls = RerunSettings if config is None else _reading(config)
    try:
        settings = settings_cls(**dict[str, Any](given))
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origins, config)) from None
    return Loaded(settings, origins, config, warnings)


def _reading(config: Path) -> type[RerunSettings]:
    """The settings model with its TOML source pointed at `config`."""

    class FromFile(RerunSettings):
        model_config = SettingsConfigDict(toml_file=config)

    return FromFile


def _read_config(path: Path) -> set[str]:
    """The keys of a config file, checked; the values are read by the settings source."""
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r} in {path}{_did_you_mean(key)}")
    return set(data)


def _env_names() -> tuple[dict[str, str], tuple[str, ...]]:
    """Settings keys set by `ORCHESTRATOR_*` variables, and each variable's name; and a
    warning for each unknown one. Kubernetes' service links (a Service named
    `orchestrator` in the pod's namespace sets ORCHESTRATOR_PORT=tcp://…,
    ORCHESTRATOR_SERVICE_HOST and friends) are none of ours and pass in silence."""
    found: dict[str, str] = {}
    warnings: list[str] = []
    for name, value in os.environ.items():
        if not name.upper().startswith(ENV_PREFIX) or not value:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in KEYS:
            found[key] = name
        elif not _SERVICE_LINK.fullmatch(name.upper()):
            warnings.append(f"unknown variable {name} ignored{_did_you_mean(key, ENV_PREFIX)}")
    return found, tuple(warnings)


_SERVICE_LINK: Final = re.compile(r"ORCHESTRATOR_(PORT(_.*)?|SERVICE_.*)")


def _did_you_mean(key: str, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.7)
    if not close:
        return ""
    return f" (did you mean {prefix + close[0].upper() if prefix else close[0]}?)"


def _explain(exc: ValidationError, origins: Mapping[str, str], config: Path | None) -> str:
    """One line naming the key as the user set it, and what is wrong with it."""
    error = exc.errors()[0]
    key = str(error["loc"][0]) if error["loc"] else "settings"
    return _invalid(key, str(error["msg"]).removeprefix("Value error, "), origins, config)


def _invalid(
    key: str, message: str, origins: Mapping[str, str], config: Path | None, value: object = ""
) -> str:
    kind, _, where = origins.get(key, "").partition(" ")
    shown = f" {value}" if value != "" else ""
    if kind in ("flag", "env"):
        return f"invalid {where}{shown}: {message}"
    if kind == "file":
        return f"invalid {key}{shown} in {config}: {message}"
    return f"invalid {key}{shown}: {message}"


def describe(settings: RerunSettings) -> dict[str, str]:
    """Each setting as a user would write it, for `config show`."""
    shown: dict[str, str] = {}
    for key in KEYS:
        value = getattr(settings, key)
        if key == "rate":
            shown[key] = settings.rate_written
        elif key in ("timeout", "wait_timeout", "poll_interval"):
            shown[key] = format_span(value)
        elif key == "rate_store":
            shown[key] = settings.store_spec.describe()
        elif key == "max_outage":
            shown[key] = "none" if value is None else format_span(value)
        elif value is None:
            shown[key] = "unset"
        elif isinstance(value, bool):
            shown[key] = str(value).lower()
        elif isinstance(value, FsyncPolicy):
            shown[key] = value.value
        elif isinstance(value, Limit):
            shown[key] = f"{value.percent:g}%" if value.percent is not None else str(value.count)
        else:
            shown[key] = str(value)
    return shown


def typed(settings: RerunSettings) -> dict[str, object]:
    """Each setting as a JSON value, for `config show --json`: numbers as numbers (a rate
    in requests per second, a duration in seconds), booleans as booleans, unset as null."""
    values: dict[str, object] = {}
    for key in KEYS:
        value = getattr(settings, key)
        if isinstance(value, Path | FsyncPolicy):
            values[key] = str(value.value if isinstance(value, FsyncPolicy) else value)
        elif isinstance(value, Limit):
            values[key] = (
                {"count": value.count} if value.percent is None else {"percent": value.percent}
            )
        else:
            values[key] = value
    return values


def load_token(env: Mapping[str, str], token_file: Path | None) -> str:
    """The API token from `token_file` or the environment; never from a flag value."""
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


# An Altostrat token is a JWT, hundreds of characters long; one shorter than this is
# most likely a placeholder or a paste gone wrong.
PLAUSIBLE_TOKEN_CHARS: Final = 32


def warn_if_short(token: str | None) -> None:
    """Log a warning when the token is implausibly short (never the token itself)."""
    if token is not None and len(token) < PLAUSIBLE_TOKEN_CHARS:
        structlog.get_logger("orchestrator").warning(
            "token.short",
            length=len(token),
            detail="an Altostrat API token is a JWT, far longer: is this the right one?",
        )


def token_status(env: Mapping[str, str], token_file: Path | None) -> tuple[str, str]:
    """Whether a usable token is set, and where from; never the token itself."""
    where = f"token_file {token_file}" if token_file is not None else f"env {TOKEN_ENV}"
    try:
        load_token(env, token_file)
    except ConfigError as exc:
        return "unset", f"{where}: {exc}" if token_file is not None else where
    return "set", where


def known_secrets(env: Mapping[str, str], token_file: Path | None = None) -> list[str]:
    """The token, when one is set, for logging to scrub: also a command that does not use
    it may log an error that quotes it."""
    try:
        return [load_token(env, token_file)]
    except ConfigError:
        return []


def environ() -> Mapping[str, str]:
    return os.environ
