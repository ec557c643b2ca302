"""What the server says of its rate limit: `Retry-After` (seconds or an HTTP date,
capped), and the limit from `RateLimit-Policy`, `RateLimit-*` or `X-RateLimit-*` headers,
read only when sane. Headers this client cannot use are logged once at debug."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, TypeVar

import structlog
from pydantic import BaseModel

from orchestrator.escape import excerpt

log = structlog.get_logger("orchestrator")

# A Retry-After beyond this is treated as this: a server asking for an hour is broken or hostile,
# and an operator would rather see retries than a silent hang.
MAX_RETRY_AFTER_S: Final = 300.0

# Digits of a delta-seconds Retry-After read as a number; more is past any cap.
_DIGITS: Final = 12


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), clamped to
    [0, MAX_RETRY_AFTER_S]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: it takes "²"
        # However many digits: past the cap is the cap, and float() never sees a monster.
        digits = value.lstrip("0") or "0"
        seconds = float(digits) if len(digits) <= _DIGITS else MAX_RETRY_AFTER_S
    else:
        try:
            when = parsedate_to_datetime(value)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


_M = TypeVar("_M", bound=BaseModel)

# X-RateLimit-Limit states no window; Laravel's, and so Altostrat's, is one minute.
_X_RATELIMIT_WINDOW_S: Final = 60.0
# A count in a header: ASCII digits only (int() takes other scripts' digits too), and
# few enough of them that no header can make int() work hard or fail.
_QUOTA: Final = re.compile(r"^\s*([0-9]{1,12})\s*$", re.ASCII)
# A stated limit outside this range is a broken or hostile header, not a limit.
_SANE_PER_S: Final = (1e-4, 1e5)


def _whole(value: str | None) -> int | None:
    if value is None or (match := _QUOTA.match(value)) is None:
        return None
    return int(match.group(1))


def _sane(per_second: float | None) -> float | None:
    low, high = _SANE_PER_S
    return per_second if per_second is not None and low <= per_second <= high else None


def _policy_rate(policy: str) -> float | None:
    """The sustained rate of an IETF RateLimit-Policy header: the strictest q/w of its
    policies. Reads both `100;w=60` (drafts up to -06) and `"p";q=100;w=60` (later)."""
    rates = []
    for item in policy.split(","):
        head, *params = (part.strip() for part in item.split(";"))
        named = dict(p.split("=", 1) for p in params if "=" in p)
        quota = _whole(named.get("q", head))
        window = _whole(named.get("w"))
        if quota is not None and window:
            rates.append(quota / window)
    return min(rates) if rates else None


def _ietf_remaining(field: str) -> int | None:
    """`r=` of a structured `RateLimit` header (draft -07 on), or `remaining=` (earlier)."""
    match = re.search(r"(?:^|[;,\s])(?:r|remaining)=([0-9]{1,12})(?![0-9])", field, re.ASCII)
    return int(match.group(1)) if match else None


def rate_hint(headers: Mapping[str, str]) -> RateHint | None:
    """What the answer's headers say of the rate limit, or None when they say nothing."""
    per_second = None
    if (policy := headers.get("RateLimit-Policy")) is not None:
        per_second = _sane(_policy_rate(policy))
    if per_second is None and (limit := headers.get("X-RateLimit-Limit")) is not None:
        per_second = _x_limit_rate(limit)
    remaining = _whole(headers.get("X-RateLimit-Remaining"))
    if remaining is None:
        remaining = _whole(headers.get("RateLimit-Remaining"))
    if remaining is None and (field := headers.get("RateLimit")) is not None:
        remaining = _ietf_remaining(field)
    if per_second is None and remaining is None:
        return None
    return RateHint(per_second, remaining)


def _x_limit_rate(value: str) -> float | None:
    quota = _whole(value)
    return _sane(quota / _X_RATELIMIT_WINDOW_S) if quota else None


# How each rate-limit header is read; None means it can't be, or says something absurd.
_HEADER_READERS: Final[dict[str, Callable[[str], object]]] = {
    "Retry-After": parse_retry_after,
    "RateLimit-Policy": lambda value: _sane(_policy_rate(value)),
    "X-RateLimit-Limit": _x_limit_rate,
    "X-RateLimit-Remaining": _whole,
    "RateLimit-Remaining": _whole,
    "RateLimit": _ietf_remaining,
}


def ignored_headers(headers: Mapping[str, str]) -> list[str]:
    """The names of the rate-limit headers present whose values could not be read, or
    were absurd, and so are ignored."""
    return [
        name
        for name, read in _HEADER_READERS.items()
        if (value := headers.get(name)) is not None and read(value) is None
    ]


class _IgnoredHeaderLog:
    """Logs each rate-limit header that had to be ignored, once per name and process:
    a server that sends garbage sends it on every answer."""

    def __init__(self) -> None:
        self._logged: set[str] = set()

    def note(self, headers: Mapping[str, str]) -> None:
        if len(self._logged) == len(_HEADER_READERS):
            return
        for name in ignored_headers(headers):
            if name not in self._logged:
                self._logged.add(name)
                value = headers[name].encode("utf-8", "surrogateescape")
                log.debug("api.header_ignored", header=name, value=excerpt(value))


_ignored_header_log = _IgnoredHeaderLog()


@dataclass(frozen=True, slots=True)
class RateHint:
    """What a server said about its rate limit, in terms free of HTTP."""

    per_second: float | None = None  # the sustained limit, when the server states it
    remaining: int | None = None
