"""What the simulator's request log says of a rate-limit row, from the server's side. Pure.

The log comes from `GET /_sim/requests`: rows of at (the simulator's monotonic clock, which
on Linux is the benchmark's too), method, path, run ID, status and fault.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Arrival:
    """One rerun request as the server saw it."""

    at: float
    run_id: str
    status: int | str  # "drop" for a dropped connection


def reruns(log: Mapping[str, Any]) -> list[Arrival]:
    """The rerun requests of a `/_sim/requests` answer, in arrival order.

    Raises ValueError when the log lost its oldest rows: a span taken from it would be short."""
    fields = list(log["fields"])
    rows = log["rows"]
    if len(rows) < log["total"]:
        raise ValueError(f"the request log kept {len(rows)} of {log['total']} requests")
    at, method, path = fields.index("at"), fields.index("method"), fields.index("path")
    run_id, status = fields.index("run_id"), fields.index("status")
    return [
        Arrival(float(row[at]), str(row[run_id]), row[status])
        for row in rows
        if row[method] == "POST" and str(row[path]).endswith("/rerun")
    ]


@dataclass(frozen=True)
class Seen:
    """A set of arrivals (one process's, or all of a row's), summed up."""

    requests: int
    refused: int  # answered 429
    accepted_ids: int  # distinct run IDs answered 202
    first: float | None
    last: float | None

    @property
    def share_429(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    def span_s(self, until: float | None = None) -> float:
        """First to last arrival; to `until` instead of the last when given (a row cut short
        by its timeout ran at least that long)."""
        if self.first is None or self.last is None:
            return 0.0
        return (self.last if until is None else max(until, self.last)) - self.first


def seen(arrivals: Sequence[Arrival], ids: Collection[str] | None = None) -> Seen:
    """The arrivals of `ids` (all of them when None), summed up."""
    mine = [a for a in arrivals if ids is None or a.run_id in ids]
    return Seen(
        requests=len(mine),
        refused=sum(1 for a in mine if a.status == 429),
        accepted_ids=len({a.run_id for a in mine if a.status == 202}),
        first=min((a.at for a in mine), default=None),
        last=max((a.at for a in mine), default=None),
    )


def seen_during(
    arrivals: Sequence[Arrival], start: float, seconds: float, ids: Collection[str] | None = None
) -> Seen:
    """The arrivals of `ids` (all when None) from `start` for `seconds` (end excluded)."""
    end = start + seconds
    return seen([a for a in arrivals if start <= a.at < end], ids)


def recovery_s(
    arrivals: Sequence[Arrival], stopped_at: float, limit: float, window_s: float, level: float
) -> float | None:
    """How long after `stopped_at` (the background load's end) the client's accepted rate,
    over the sliding `window_s` ending at an accepted arrival, first reaches `level` of
    `limit`; None if it never does. The window may reach back before the stop: what was
    accepted then counts too, so the figure can be shorter than the window itself."""
    accepted = sorted(a.at for a in arrivals if a.status == 202)
    return recovery_after(accepted, stopped_at, limit, window_s, level)


def recovery_after(
    accepted: Sequence[float], stopped_at: float, limit: float, window_s: float, level: float
) -> float | None:
    """`recovery_s` over the times of the accepted requests, in increasing order."""
    needed = level * limit * window_s
    for end, at in enumerate(accepted, start=1):
        if at < stopped_at:
            continue
        inside = end - bisect.bisect_right(accepted, at - window_s)
        if inside >= needed - 1e-9:
            return at - stopped_at
    return None
