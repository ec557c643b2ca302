"""Counting what happened, and the summary and exit code that follow from the counts.
Pure: no I/O here. (The same summary read back from a ledger is `ledger.report`.)"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from orchestrator.errors import ExitCode
from orchestrator.shared.store import BudgetReport
from orchestrator.units import format_duration, format_rate

# The summary names this many in-doubt IDs; the ledger and `in_doubt` count hold the rest.
SHOWN_IN_DOUBT: Final = 20
# How a followed rerun can end other than `completed` (see waiting.py); each names its IDs.
UNSETTLED_OUTCOMES: Final = frozenset({"failed_again", "needs_person", "timed_out", "lost"})


class StopReason(enum.StrEnum):
    COMPLETED = "completed"
    ABORTED = "aborted"  # the server refused the token
    BUDGET = "budget_exhausted"  # the error budget is spent
    LEDGER = "ledger_unwritable"  # a ledger write or fsync failed
    OUTAGE = "outage"  # no answer, or the circuit open, for --max-outage
    DECLINED = "declined"  # the operator answered no at the prompt: nothing was sent
    OUTPUT_CLOSED = "output_closed"  # dry run: the reader of the plan went away
    SIGHUP = "sighup"
    SIGINT = "sigint"
    SIGTERM = "sigterm"


@dataclass
class Tally:
    """Counts of one session, kept by the engine as outcomes arrive."""

    lines: int = 0  # input lines read
    blank: int = 0  # of them, blank lines and `#` comments: nothing to send
    sent: int = 0  # IDs for which at least one request left
    succeeded: int = 0
    bad_response: int = 0  # in doubt: a 2xx whose answer named no valid new run
    failed: Counter[str] = field(default_factory=Counter)  # by error code
    rejected: int = 0
    duplicates: int = 0
    skipped_succeeded: int = 0
    skipped_failed: int = 0
    skipped_in_doubt: int = 0
    skipped_is_rerun: int = 0  # the ledger names the ID as a new run of an earlier rerun
    not_sent: int = 0  # read, then left unsent because the run stopped
    requests: int = 0
    retries: int = 0
    by_status: Counter[str] = field(default_factory=Counter)  # "202", "429", "timeout", …
    in_doubt: list[str] = field(default_factory=list)
    # Sent, answered "not now" (429, 500, 503) or refused (401/403), and the run stopped
    # before the next attempt: nothing in flight, and the same command sends them again.
    unsettled: list[str] = field(default_factory=list)
    circuit_opened: int = 0
    # --wait: how accepted reruns ended, by outcome; the original IDs of those that did
    # not complete, by outcome.
    finished: Counter[str] = field(default_factory=Counter)
    polls: int = 0
    unsettled_reruns: dict[str, list[str]] = field(default_factory=dict)
    # Sent again after an attempt the server may have accepted unseen (a timeout, a cut
    # connection, a 504): these may have been rerun twice.
    resent_after_doubt: list[str] = field(default_factory=list)
    would_send: int = 0  # dry run only
    # Outcomes the ledger could not take (it failed mid-run), kept for the summary: accepted
    # reruns (original -> new run ID), and the others' true state (`failed`, `resendable`,
    # `in_doubt`, or how a followed new run ended). The ledger's last word on these is
    # older than the truth.
    unrecorded_mappings: dict[str, str | None] = field(default_factory=dict)
    unrecorded_outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A running session's counts at one instant, for the live progress display."""

    lines: int  # input lines read so far
    done: int  # of those, lines whose fate is settled (sent and answered, skipped, rejected)
    input_done: bool  # every line has been read: `lines` is the total
    succeeded: int
    failed: int
    in_flight: int
    requests: int
    rate_limited: int  # 429 answers
    target_rate: float | None  # requests/s the pacing allows now, None for no limit
    following: int | None = None  # --wait: new runs still being followed (None: no --wait)
    ended: int = 0  # --wait: new runs whose end was recorded


@dataclass(frozen=True)
class RunResult:
    tally: Tally
    reason: StopReason
    elapsed_s: float
    ledger: str
    dry_run: bool = False
    abort_detail: str | None = None
    waited: bool = False  # rerun --wait followed the reruns to their end
    budget: BudgetReport | None = None  # the token's rate budget, when a store was open
    ledger_error: str | None = None  # why the ledger could not be written, if it could not
    input_done: bool = True  # every input line was read; False when the run stopped first
    unread_lines: int | None = None  # lines never read, when known (a file, not stdin)
    base_url: str | None = None  # where the requests went (or would go)
    # Dry run: how long sending `would_send` would take at `estimate_rate_per_s` (None: no
    # rate is known, so neither is the time).
    estimate: Estimate | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """How long sending `count` requests takes at `per_s` (None: unknown)."""

    count: int
    per_s: float | None

    @property
    def seconds(self) -> float | None:
        return estimated_seconds(self.count, self.per_s)


def estimate_text(seconds: float | None, per_s: float | None, base_url: str) -> str:
    """The estimate as a console line reads it: `about 2 h 47 min at 60/min to URL`."""
    if seconds is None:
        return f"time unknown (no rate limit set or learned) to {base_url}"
    return f"about {format_duration(seconds)} at {rate_text(per_s)} to {base_url}"


def rate_text(per_s: float | None) -> str:
    """A rate as an operator states it: per minute below 10/s (the API's limits are per
    minute), else per second; three significant digits."""
    if per_s is not None and 0 < per_s < 10:
        return f"{per_s * 60:.3g}/min"
    return format_rate(per_s, digits=3)


def effective_rate(stated: float | None, learned: float | None) -> float | None:
    """The rate a run paces at: its --rate, and no faster than a limit learned for the
    token (or stated by the server) that the rate store knows; None for no limit."""
    if learned is None:
        return stated
    return learned if stated is None else min(stated, learned)


def estimated_seconds(count: int, per_s: float | None) -> float | None:
    """Seconds to send `count` requests paced at `per_s`; None with no rate (unknown).
    The pacer spaces requests 1/per_s apart, and the last one's answer comes about one
    interval after it leaves: count/per_s."""
    if per_s is None or per_s <= 0:
        return None
    return count / per_s


def exit_code(result: RunResult) -> ExitCode:
    """The process exit code of a finished run: a ledger that failed first (whatever else
    stopped the run, outcomes are missing from it), then the stop reason, then the outcomes."""
    if result.ledger_error is not None:
        return ExitCode.IOERR
    match result.reason:
        case StopReason.ABORTED | StopReason.BUDGET | StopReason.OUTAGE | StopReason.DECLINED:
            return ExitCode.ABORTED
        case StopReason.SIGHUP:
            return ExitCode.SIGHUP
        case StopReason.SIGINT:
            return ExitCode.SIGINT
        case StopReason.SIGTERM:
            return ExitCode.SIGTERM
        case StopReason.OUTPUT_CLOSED:
            return ExitCode.BROKEN_PIPE
        case StopReason.LEDGER | StopReason.COMPLETED:
            pass
    tally = result.tally
    if tally.failed_total or tally.rejected or tally.in_doubt or tally.skipped_failed:
        return ExitCode.INCOMPLETE
    if tally.unsettled:
        return ExitCode.INCOMPLETE
    if tally.finished["failed_again"] or tally.finished["timed_out"]:
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def summary(result: RunResult) -> dict[str, object]:
    """The end-of-run summary as flat, JSON-ready fields."""
    tally = result.tally
    rate = tally.requests / result.elapsed_s if result.elapsed_s > 0 else 0.0
    fields: dict[str, object] = {
        "outcome": result.reason.value,
        "exit_code": int(exit_code(result)),
        "succeeded": tally.succeeded,
        "in_doubt_unreadable_response": tally.bad_response,
        "failed": tally.failed_total,
        "failed_by_error": dict(sorted(tally.failed.items())),
        "rejected": tally.rejected,
        "in_doubt": len(tally.in_doubt),
        "in_doubt_ids": tally.in_doubt[:SHOWN_IN_DOUBT],
        "unsettled": len(tally.unsettled),
        "unsettled_ids": tally.unsettled[:SHOWN_IN_DOUBT],
        "possibly_duplicated": len(tally.resent_after_doubt),
        "possibly_duplicated_ids": tally.resent_after_doubt[:SHOWN_IN_DOUBT],
        "skipped_done": tally.skipped_succeeded,
        "skipped_failed": tally.skipped_failed,
        "skipped_is_rerun": tally.skipped_is_rerun,
        "duplicates": tally.duplicates,
        "not_sent": tally.not_sent,
        "blank_lines": tally.blank,
        "lines": tally.lines,
        "input_unread": not result.input_done,
        "unread_lines": 0 if result.input_done else result.unread_lines,
        "requests": tally.requests,
        "retries": tally.retries,
        "requests_by_status": dict(sorted(tally.by_status.items())),
        "circuit_opened": tally.circuit_opened,
        "elapsed_s": round(result.elapsed_s, 3),
        "effective_rate_per_s": round(rate, 3),
        "ledger": result.ledger,
    }
    if result.base_url is not None:
        fields["base_url"] = result.base_url
    if result.dry_run:
        fields["would_send"] = tally.would_send
    if result.estimate is not None:
        seconds = result.estimate.seconds
        fields["estimated_duration_s"] = None if seconds is None else round(seconds, 1)
        per_s = result.estimate.per_s
        fields["estimate_rate_per_s"] = None if per_s is None else round(per_s, 6)
    if tally.finished or result.waited:
        fields["finished_by_outcome"] = dict(sorted(tally.finished.items()))
        fields["polls"] = tally.polls
        for outcome, ids in sorted(tally.unsettled_reruns.items()):
            fields[f"{outcome}_ids"] = ids[:SHOWN_IN_DOUBT]
    if result.abort_detail:
        fields["abort_detail"] = result.abort_detail
    if result.ledger_error is not None:
        # Every one of them, not the first 20: this is the only place they are kept.
        fields["ledger_error"] = result.ledger_error
        fields["unrecorded"] = len(tally.unrecorded_mappings) + len(tally.unrecorded_outcomes)
        fields["unrecorded_mappings"] = dict(tally.unrecorded_mappings)
        fields["unrecorded_outcomes"] = dict(tally.unrecorded_outcomes)
    if result.budget is not None:
        fields.update(result.budget.fields())
    return fields


def status_key(http_status: int | None, error: object = None) -> str:
    """How a request is counted: its HTTP status, or the error when no answer came."""
    return str(http_status) if http_status is not None else str(error)
