"""Counting what happened, and the summary and exit code that follow from the counts.
Pure: no I/O here. (The same summary read back from a ledger is `ledger.report`.)"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
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

    @property
    def rounded_seconds(self) -> float | None:
        """`seconds` as the summary states it: to the tenth."""
        seconds = self.seconds
        return None if seconds is None else round(seconds, 1)

    @property
    def rounded_per_s(self) -> float | None:
        """`per_s` as the summary states it: to the millionth."""
        return None if self.per_s is None else round(self.per_s, 6)


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


@dataclass(frozen=True, slots=True)
class LedgerHistory:
    """What only a ledger read back tells (`orchestrator report`): its sessions, their
    timing, and the lines in it that are no record."""

    sessions: int = 0
    last_session_exit_code: int | None = None  # None: no session has ended (yet)
    last_session_input_unread: bool = False  # the last session stopped before its input's end
    first_at: str | None = None  # the first and last record's time, as written
    last_at: str | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    corrupt_lines: int = 0
    corrupt_line_numbers: tuple[int, ...] = ()  # the first few


@dataclass(frozen=True, slots=True)
class Summary:
    """How a run went: the end-of-run summary, and `orchestrator report`'s.

    A live run gives one (`summary`), and so does a ledger read back (`ledger.report`),
    which knows less: the input's counts (lines, duplicates, not sent, …) stay 0 there and
    `history` is set, while a live run's `history` is None. What neither may have (a dry
    run's `would_send`, a rate budget, a ledger error) is None. Counts by key are sorted,
    the elapsed time and rates rounded, and ID lists cut to their first `SHOWN_IN_DOUBT`,
    as the summary states them. `as_fields` is its JSON and log form."""

    outcome: str  # a StopReason's value; from a ledger also running, interrupted or empty
    exit_code: int
    ledger: str
    succeeded: int = 0
    in_doubt_unreadable_response: int = 0  # in doubt: a 2xx naming no valid new run
    failed_by_error: Mapping[str, int] = field(default_factory=dict)
    rejected: int = 0
    in_doubt: int = 0
    in_doubt_ids: tuple[str, ...] = ()
    unsettled: int = 0  # mid-retry when a run stopped: the same command sends them again
    unsettled_ids: tuple[str, ...] = ()
    skipped_is_rerun: int = 0
    requests: int = 0
    retries: int = 0
    requests_by_status: Mapping[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    effective_rate_per_s: float = 0.0
    # --wait: how the new runs ended (None: not followed), and the original IDs of those
    # that did not complete, by outcome.
    finished_by_outcome: Mapping[str, int] | None = None
    finished_ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # A live run's alone: a ledger does not say them, and its summary leaves them out.
    possibly_duplicated: int = 0  # sent again after an attempt the server may have taken
    possibly_duplicated_ids: tuple[str, ...] = ()
    skipped_done: int = 0
    skipped_failed: int = 0
    duplicates: int = 0
    not_sent: int = 0
    blank_lines: int = 0
    lines: int = 0
    input_unread: bool = False
    unread_lines: int | None = 0  # None: the run stopped, and how much was left is unknown
    circuit_opened: int = 0
    polls: int = 0
    # A live run's, when they apply.
    base_url: str | None = None
    would_send: int | None = None  # a dry run's
    estimate: Estimate | None = None  # a dry run's
    abort_detail: str | None = None
    ledger_error: str | None = None  # why the ledger could not be written
    unrecorded_mappings: Mapping[str, str | None] = field(default_factory=dict)
    unrecorded_outcomes: Mapping[str, str] = field(default_factory=dict)
    budget: BudgetReport | None = None
    # The next step the summary ends with: `rerun` adds one (see `commands.rerun`).
    resume_command: str | None = None
    retry_command: str | None = None
    history: LedgerHistory | None = None  # a ledger read back; None: a live run

    @property
    def failed(self) -> int:
        return sum(self.failed_by_error.values())

    @property
    def unrecorded(self) -> int:
        """Outcomes the ledger could not take."""
        return len(self.unrecorded_mappings) + len(self.unrecorded_outcomes)

    def as_fields(self) -> dict[str, object]:
        """The summary as flat, JSON-ready fields, in the order they are written: what the
        `rerun.summary` log event, `--summary-json` and `report --json` say."""
        run, history = self.history is None, self.history
        fields: dict[str, object] = {"outcome": self.outcome, "exit_code": self.exit_code}
        if history is not None:
            fields["last_session_exit_code"] = history.last_session_exit_code
        fields |= {
            "succeeded": self.succeeded,
            "in_doubt_unreadable_response": self.in_doubt_unreadable_response,
            "failed": self.failed,
            "failed_by_error": dict(self.failed_by_error),
            "rejected": self.rejected,
            "in_doubt": self.in_doubt,
            "in_doubt_ids": list(self.in_doubt_ids),
            "unsettled": self.unsettled,
            "unsettled_ids": list(self.unsettled_ids),
        }
        if run:
            fields |= {
                "possibly_duplicated": self.possibly_duplicated,
                "possibly_duplicated_ids": list(self.possibly_duplicated_ids),
                "skipped_done": self.skipped_done,
                "skipped_failed": self.skipped_failed,
            }
        fields["skipped_is_rerun"] = self.skipped_is_rerun
        if history is not None:
            fields["last_session_input_unread"] = history.last_session_input_unread
        if run:
            fields |= {
                "duplicates": self.duplicates,
                "not_sent": self.not_sent,
                "blank_lines": self.blank_lines,
                "lines": self.lines,
                "input_unread": self.input_unread,
                "unread_lines": self.unread_lines,
            }
        fields |= {
            "requests": self.requests,
            "retries": self.retries,
            "requests_by_status": dict(self.requests_by_status),
        }
        if run:
            fields["circuit_opened"] = self.circuit_opened
        fields |= {"elapsed_s": self.elapsed_s, "effective_rate_per_s": self.effective_rate_per_s}
        if history is not None:
            fields |= {
                "sessions": history.sessions,
                "first_at": history.first_at,
                "last_at": history.last_at,
                "latency_ms": dict(history.latency_ms),
                "corrupt_lines": history.corrupt_lines,
                "corrupt_line_numbers": list(history.corrupt_line_numbers),
            }
        fields["ledger"] = self.ledger
        self._add_ending(fields)
        return fields

    def _add_ending(self, fields: dict[str, object]) -> None:
        """The fields that only some summaries have, in their order."""
        if self.base_url is not None:
            fields["base_url"] = self.base_url
        if self.would_send is not None:
            fields["would_send"] = self.would_send
        if self.estimate is not None:
            fields["estimated_duration_s"] = self.estimate.rounded_seconds
            fields["estimate_rate_per_s"] = self.estimate.rounded_per_s
        if self.finished_by_outcome is not None:
            fields["finished_by_outcome"] = dict(self.finished_by_outcome)
            if self.history is None:
                fields["polls"] = self.polls
            for outcome, ids in self.finished_ids.items():
                fields[f"{outcome}_ids"] = list(ids)
        if self.abort_detail:
            fields["abort_detail"] = self.abort_detail
        if self.ledger_error is not None:
            # Every one of them, not the first 20: this is the only place they are kept.
            fields["ledger_error"] = self.ledger_error
            fields["unrecorded"] = self.unrecorded
            fields["unrecorded_mappings"] = dict(self.unrecorded_mappings)
            fields["unrecorded_outcomes"] = dict(self.unrecorded_outcomes)
        if self.budget is not None:
            fields.update(self.budget.fields())
        if self.resume_command is not None:
            fields["resume_command"] = self.resume_command
        if self.retry_command is not None:
            fields["retry_command"] = self.retry_command


def in_key_order(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts by key, sorted by key, as a summary lists them."""
    return dict(sorted(counts.items()))


def first_shown(ids: Iterable[str]) -> tuple[str, ...]:
    """The IDs a summary names: the first `SHOWN_IN_DOUBT`; its count holds the rest."""
    return tuple(itertools.islice(ids, SHOWN_IN_DOUBT))


def pace(requests: int, elapsed_s: float) -> tuple[float, float]:
    """The elapsed seconds and the requests per second over them, as a summary states
    them: to the millisecond (no time, no rate)."""
    rate = requests / elapsed_s if elapsed_s > 0 else 0.0
    return round(elapsed_s, 3), round(rate, 3)


def summary(result: RunResult) -> Summary:
    """The end-of-run summary of a live run (or a dry run)."""
    tally = result.tally
    elapsed_s, rate = pace(tally.requests, result.elapsed_s)
    followed = bool(tally.finished) or result.waited
    return Summary(
        outcome=result.reason.value,
        exit_code=int(exit_code(result)),
        ledger=result.ledger,
        succeeded=tally.succeeded,
        in_doubt_unreadable_response=tally.bad_response,
        failed_by_error=in_key_order(tally.failed),
        rejected=tally.rejected,
        in_doubt=len(tally.in_doubt),
        in_doubt_ids=first_shown(tally.in_doubt),
        unsettled=len(tally.unsettled),
        unsettled_ids=first_shown(tally.unsettled),
        skipped_is_rerun=tally.skipped_is_rerun,
        requests=tally.requests,
        retries=tally.retries,
        requests_by_status=in_key_order(tally.by_status),
        elapsed_s=elapsed_s,
        effective_rate_per_s=rate,
        finished_by_outcome=in_key_order(tally.finished) if followed else None,
        finished_ids={
            outcome: first_shown(ids) for outcome, ids in sorted(tally.unsettled_reruns.items())
        },
        possibly_duplicated=len(tally.resent_after_doubt),
        possibly_duplicated_ids=first_shown(tally.resent_after_doubt),
        skipped_done=tally.skipped_succeeded,
        skipped_failed=tally.skipped_failed,
        duplicates=tally.duplicates,
        not_sent=tally.not_sent,
        blank_lines=tally.blank,
        lines=tally.lines,
        input_unread=not result.input_done,
        unread_lines=0 if result.input_done else result.unread_lines,
        circuit_opened=tally.circuit_opened,
        polls=tally.polls,
        base_url=result.base_url,
        would_send=tally.would_send if result.dry_run else None,
        estimate=result.estimate,
        abort_detail=result.abort_detail,
        ledger_error=result.ledger_error,
        unrecorded_mappings=dict(tally.unrecorded_mappings),
        unrecorded_outcomes=dict(tally.unrecorded_outcomes),
        budget=result.budget,
    )


def status_key(http_status: int | None, error: object = None) -> str:
    """How a request is counted: its HTTP status, or the error when no answer came."""
    return str(http_status) if http_status is not None else str(error)
