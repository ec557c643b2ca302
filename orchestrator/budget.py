"""The error budget: when so much has failed that sending more is doing harm.

Like GNU parallel's `--halt soon,fail=…`: once the budget is spent, no new request starts,
those in flight finish, and the run exits 3. Failures are counted by class, because the
two call for different people: a `client` failure (404 and other 4xx) says the input is
wrong, a `server` failure (5xx, timeouts, connection errors, after every retry) says the
service is sick. A 429 is pacing, never a failure, even when an ID runs out of attempts
on it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

ErrorClass = Literal["client", "server"]

# A percentage is judged only once this many IDs have settled: the first failure of a
# run is not "100% failed".
MIN_SAMPLE: Final = 20

_CLIENT_ERRORS: Final = frozenset({"not_found", "client_error", "unexpected_status"})
_SERVER_ERRORS: Final = frozenset({"server_error", "timeout", "connection"})
_LIMIT: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


def error_class(error: str) -> ErrorClass | None:
    """The class a failure's error code counts against; None for pacing (rate_limited)."""
    if error in _CLIENT_ERRORS:
        return "client"
    if error in _SERVER_ERRORS:
        return "server"
    return None


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


@dataclass
class ErrorBudget:
    """Counts settled IDs and failures; says when a limit is reached."""

    total: Limit | None = None
    client: Limit | None = None
    server: Limit | None = None
    settled: int = 0
    failed: dict[ErrorClass, int] = field(default_factory=lambda: {"client": 0, "server": 0})

    def succeeded(self) -> None:
        self.settled += 1

    def failed_with(self, error: str) -> str | None:
        """Count a failure; why the budget is spent, or None while it is not."""
        self.settled += 1
        kind = error_class(error)
        if kind is None:
            return None
        self.failed[kind] += 1
        all_failed = sum(self.failed.values())
        checks: list[tuple[str, Limit | None, int]] = [
            ("failures", self.total, all_failed),
            ("client failures (4xx)", self.client, self.failed["client"]),
            (
                "server failures (5xx, timeouts, connection errors)",
                self.server,
                self.failed["server"],
            ),
        ]
        for name, limit, count in checks:
            if limit is not None and limit.spent(count, self.settled):
                return f"{count} {name} of {self.settled} settled IDs reached the limit of {limit}"
        return None
