"""Spans of time as people write them: `90s`, `30m`, `2h`, `1d`, `1w`, `1h30m`. Pure."""

from __future__ import annotations

import re
from typing import Final

_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SPAN: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SPANS: Final = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")


def is_span(text: str) -> bool:
    return _SPANS.fullmatch(text.strip().lower()) is not None


def parse_span(text: str) -> float:
    """Seconds in a span such as `90s` or `1h30m` (a bare number is seconds).

    Raises ValueError with a message fit for the user."""
    raw = text.strip().lower()
    try:
        return float(raw) if raw and raw.replace(".", "", 1).isdigit() else _sum(raw, text)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a span") from None


def _sum(raw: str, text: str) -> float:
    if not _SPANS.fullmatch(raw):
        raise ValueError(f"{text!r} is not a span such as 90s, 30m, 2h, 1d or 1h30m")
    return sum(float(n) * _UNIT_S[unit] for n, unit in _SPAN.findall(raw))


def format_span(seconds: float) -> str:
    """The inverse of parse_span, as a person would write it: `30s`, `1h`, `1h30m`,
    `0.5s`; whole units where they divide evenly."""
    if seconds <= 0 or seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            count, left = divmod(left, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_duration(seconds: float) -> str:
    """A duration as a person reads it, to the unit that matters: `45 s`, `12 min`,
    `2 h 47 min`, `3 d 4 h`. Rounded, never exact: it is for estimates."""
    if seconds < 1:
        return "under 1 s"
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d" + (f" {hours} h" if hours else "")
