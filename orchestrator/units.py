"""The quantities people write on a command line or in a config file: rates (`N/s`,
`N/min`, `N/h` or `none`, shared by the client and the simulator) and spans of time
(`90s`, `30m`, `2h`, `1d`, `1w`, `1h30m`). Pure."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

_UNITS: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*")


def parse_rate(text: str) -> float | None:
    """Requests per second for a rate such as `60/min`, or None for `none` (no limit).

    Raises ValueError with a message fit for the user on anything else.
    """
    if text.strip().lower() == "none":
        return None
    match = _RATE.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"rate {text!r} is not N/s, N/min, N/h or none")
    per_second = float(match.group(1)) / _UNITS[match.group(2)]
    if per_second <= 0:
        raise ValueError(f"rate {text!r} must be above zero")
    return per_second


def format_rate(per_second: float | None, *, digits: int | None = None) -> str:
    """The inverse of parse_rate, in the unit that reads best; with `digits`, rounded to
    that many significant digits for display (4.81223/s reads 4.81/s)."""
    if per_second is None:
        return "none"
    value, unit = (per_second, "s") if per_second >= 1 else (per_second * 60, "min")
    if digits is not None and value > 0:
        value = round(value, digits - 1 - math.floor(math.log10(value)))
    return f"{value:g}/{unit}"


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


# A percentage is judged only once this many IDs have settled: the first failure of a
# run is not "100% failed".
MIN_SAMPLE: Final = 20
_LIMIT: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `count` failures, or at most `percent` of the IDs settled so far."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> Limit:
        match = _LIMIT.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a count like 10 or a share like 5%")
        number, percent = float(match.group(1)), match.group(2) == "%"
        if percent:
            if not 0 < number <= 100:
                raise ValueError(f"{text!r} must be above 0% and at most 100%")
            return cls(percent=number)
        if number != int(number) or number < 1:
            raise ValueError(f"{text!r} must be a whole number of at least 1")
        return cls(count=int(number))

    def spent(self, failed: int, settled: int) -> bool:
        if self.count is not None:
            return failed >= self.count
        assert self.percent is not None
        return settled >= MIN_SAMPLE and failed * 100 >= self.percent * settled

    def __str__(self) -> str:
        return f"{self.count}" if self.count is not None else f"{self.percent:g}%"
