"""Logging set-up, done once at start-up: structlog to stderr, JSON off a terminal, and a
processor that scrubs the token out of every event whatever its level or shape.

What a terminal is shown never carries a control character from outside (see `escape`):
console log values are escaped; JSON escapes them itself."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Final, TextIO

import structlog

from orchestrator.escape import escape, escape_lines

REDACTED: Final = "[redacted]"
LEVELS: Final = ("debug", "info", "warning", "error")


# A secret this long is redacted wherever it appears: no innocent text holds it. A shorter
# one only where it stands whole, so that a token `wrong` leaves `/tmp/wrongtok.jsonl` be.
WHOLE_BELOW: Final = 16
# The characters of a bearer token (RFC 6750's b64token, padding aside).
_TOKEN_CHAR: Final = r"A-Za-z0-9._~+/\-"  # noqa: S105 - a character class
# Whatever follows "Bearer" is a credential, whichever token it is.
_BEARER: Final = re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+")


class RedactSecrets:
    """Replaces the given secrets in event values (and nested values), and whatever
    follows `Bearer`: an Authorization header, if one is ever logged, shows no credential."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Secrets of fewer than 4 characters would redact innocent text and protect little.
        kept = [s for s in secrets if len(s) >= 4]
        self._secrets = tuple(s for s in kept if len(s) >= WHOLE_BELOW)
        self._short = tuple(
            re.compile(rf"(?<![{_TOKEN_CHAR}]){re.escape(s)}(?![{_TOKEN_CHAR}])")
            for s in kept
            if len(s) < WHOLE_BELOW
        )

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            for pattern in self._short:
                value = pattern.sub(REDACTED, value)
            if "earer" in value:
                value = _BEARER.sub(rf"\g<1>{REDACTED}", value)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._scrub(repr(value))

    def __call__(
        self, _logger: object, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = self._scrub(value)
        return event_dict


class _Shown:
    """A value as the console shows it: the renderer prints a non-string's `repr`, which
    here is the escaped text itself, so nothing the renderer does can undo the escaping."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# Strings holding these are quoted (as structlog's console renderer does), so a value
# still reads as one value; the rest are shown bare.
_QUOTED: Final = frozenset(" \t=\r\n\"'")
# Keys the renderer lays out itself, all set by our own code: left as they are.
_OWN_KEYS: Final = frozenset({"event", "level", "timestamp", "logger", "logger_name"})


def shown_value(value: object) -> str:
    """How the console shows one log value: a string bare or quoted, anything else as its
    repr; escaped either way."""
    if isinstance(value, str) and not _QUOTED.intersection(value):
        return escape(value)
    return escape(repr(value))


def escape_for_console(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every value of an event made safe for a terminal; a traceback keeps its lines."""
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str):
            event_dict[key] = escape_lines(value)
        elif key not in _OWN_KEYS:
            event_dict[key] = _Shown(shown_value(value))
    return event_dict


def resolve_format(log_format: str, stream: TextIO) -> str:
    """`auto` made concrete: console on a terminal, JSON otherwise."""
    if log_format == "auto":
        return "console" if stream.isatty() else "json"
    return log_format


def configure_logging(
    level: str = "info",
    log_format: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for this process. `log_format` is auto, json or console."""
    out = stream or sys.stderr
    log_format = resolve_format(log_format, out)
    renderer: structlog.typing.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich's pretty ones would print local variables, the token among them.
        renderer = structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    # JSON escapes control characters itself; the console needs it done (after redaction,
    # which looks for the token as it is).
    escaping: list[structlog.typing.Processor] = (
        [] if log_format == "json" else [escape_for_console]
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text before redaction, so they are scrubbed too.
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            *escaping,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        # Bound once: a debug call below the level then costs one no-op method call.
        cache_logger_on_first_use=True,
    )
