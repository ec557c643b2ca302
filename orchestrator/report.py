"""Counting what happened, and the summary and exit code that follow from the counts. Pure."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

# The summary names this many in-doubt IDs; the ledger and `in_doubt` count hold the rest.
SHOWN_IN_DOUBT: Final = 20


class ExitCode(enum.IntEnum):
    OK = 0
    INCOMPLETE = 1  # some ID failed, was rejected or is in doubt
    USAGE = 2
    ABORTED = 3
    SIGINT = 130
    SIGTERM = 143


class StopReason(enum.StrEnum):
    COMPLETED = "completed"
    ABORTED = "aborted"  # the server refused the token
    BUDGET = "budget_exhausted"  # the error budget is spent
    SIGINT = "sigint"
    SIGTERM = "sigterm"


@dataclass
class Tally:
    """Counts of one session, kept by the engine as outcomes arrive."""

    lines: int = 0
    sent: int = 0  # IDs for which at least one request left
    succeeded: int = 0
    bad_response: int = 0  # succeeded, but the answer could not be read
    failed: Counter[str] = field(default_factory=Counter)  # by error code
    rejected: int = 0
    duplicates: int = 0
    skipped_succeeded: int = 0
    skipped_failed: int = 0
    skipped_in_doubt: int = 0
    not_sent: int = 0  # read, then left unsent because the run stopped
    requests: int = 0
    retries: int = 0
    by_status: Counter[str] = field(default_factory=Counter)  # "202", "429", "timeout", …
    in_doubt: list[str] = field(default_factory=list)
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

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def note_in_doubt(self, run_id: str) -> None:
        self.in_doubt.append(run_id)


@dataclass(frozen=True)
class RunResult:
    tally: Tally
    reason: StopReason
    elapsed_s: float
    ledger: str
    dry_run: bool = False
    abort_detail: str | None = None
    waited: bool = False  # rerun --wait followed the reruns to their end


def exit_code(result: RunResult) -> ExitCode:
    """The process exit code of a finished run: the stop reason first, then the outcomes."""
    match result.reason:
        case StopReason.ABORTED | StopReason.BUDGET:
            return ExitCode.ABORTED
        case StopReason.SIGINT:
            return ExitCode.SIGINT
        case StopReason.SIGTERM:
            return ExitCode.SIGTERM
        case StopReason.COMPLETED:
            pass
    tally = result.tally
    if tally.failed_total or tally.rejected or tally.in_doubt or tally.skipped_failed:
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
        "succeeded_unreadable_response": tally.bad_response,
        "failed": tally.failed_total,
        "failed_by_error": dict(sorted(tally.failed.items())),
        "rejected": tally.rejected,
        "in_doubt": len(tally.in_doubt),
        "in_doubt_ids": tally.in_doubt[:SHOWN_IN_DOUBT],
        "possibly_duplicated": len(tally.resent_after_doubt),
        "possibly_duplicated_ids": tally.resent_after_doubt[:SHOWN_IN_DOUBT],
        "skipped_done": tally.skipped_succeeded,
        "skipped_failed": tally.skipped_failed,
        "duplicates": tally.duplicates,
        "not_sent": tally.not_sent,
        "requests": tally.requests,
        "retries": tally.retries,
        "requests_by_status": dict(sorted(tally.by_status.items())),
        "circuit_opened": tally.circuit_opened,
        "elapsed_s": round(result.elapsed_s, 3),
        "effective_rate_per_s": round(rate, 3),
        "ledger": result.ledger,
    }
    if result.dry_run:
        fields["would_send"] = tally.would_send
    if tally.finished or result.waited:
        fields["finished_by_outcome"] = dict(sorted(tally.finished.items()))
        fields["polls"] = tally.polls
        for outcome, ids in sorted(tally.unsettled_reruns.items()):
            fields[f"{outcome}_ids"] = ids[:SHOWN_IN_DOUBT]
    if result.abort_detail:
        fields["abort_detail"] = result.abort_detail
    return fields
