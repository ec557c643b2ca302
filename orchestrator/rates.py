"""The rate syntax shared by the client and the simulator: `N/s`, `N/min`, `N/h` or `none`."""

from __future__ import annotations

import math
import re
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
