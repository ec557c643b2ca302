"""What pacing decided about one answer (`PacingEvents`), and the one place that tells the
operator of it, so the log says the same whoever sent the request."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from orchestrator.pacing.adaptive import RateChange
from orchestrator.pacing.circuit import Circuit

log = structlog.get_logger("orchestrator")


@dataclass(frozen=True, slots=True)
class PacingEvents:
    rate: RateChange | None = None
    circuit: str | None = None  # "opened" or "closed"
    paused: bool = False  # a Retry-After lengthened the pause of every worker
    holdoff_s: float = 0.0  # 429s in a row: every worker waits this long of our own accord
    wait_s: float = 0.0  # a lone 429's short Retry-After: only its request waits this long


def log_pacing(events: PacingEvents, circuit: Circuit) -> None:
    """Tell the operator what pacing decided: one place, whoever sent the request (a
    rerun, a poll or a page)."""
    if (change := events.rate) is not None:
        if change.settled:
            log.info("rate.settled", per_s=rounded(change.new))
        elif change.reason == "server_headers":
            log.info(
                "rate.from_server", old_per_s=rounded(change.old), new_per_s=rounded(change.new)
            )
        else:
            log.debug(
                "rate.changed",
                reason=change.reason,
                old_per_s=rounded(change.old),
                new_per_s=rounded(change.new),
            )
    if events.holdoff_s:
        log.debug("rate.holdoff", seconds=round(events.holdoff_s, 3))
    if events.circuit == "opened":
        log.warning(
            "circuit.opened",
            pause_s=circuit.backoff_s,
            detail="the service keeps failing; sending pauses, then one probe request",
        )
    elif events.circuit == "closed":
        log.info("circuit.closed")


def rounded(rate: float | None) -> float | None:
    """A rate as every pacing log line gives it."""
    return None if rate is None else round(rate, 3)
