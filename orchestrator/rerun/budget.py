"""The error budget: when so much has failed that sending more is doing harm.

Like GNU parallel's `--halt soon,fail=…`: once the budget is spent, no new request starts,
those in flight finish, and the run exits 3. Failures are counted by class, because the
two call for different people: a `client` failure (404 and other 4xx) says the input is
wrong, a `server` failure (5xx, timeouts, connection errors, after every retry) says the
service is sick. A 429 is pacing, never a failure, even when an ID runs out of attempts
on it. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from orchestrator.api.outcomes import ErrorKind, codes_of
from orchestrator.units import Limit

ErrorClass = Literal["client", "server"]


_CLIENT_ERRORS: Final = codes_of(ErrorKind.CLIENT)
_SERVER_ERRORS: Final = codes_of(ErrorKind.SERVER)


def error_class(error: str) -> ErrorClass | None:
    """The class a failure's error code counts against; None for pacing (rate_limited)."""
    if error in _CLIENT_ERRORS:
        return "client"
    if error in _SERVER_ERRORS:
        return "server"
    return None


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
