"""Counting what happened, and the summary and exit code that follow from the counts; and
the same summary read back from a ledger, for `orchestrator report`. Pure: no I/O here."""

from __future__ import annotations

import enum
import itertools
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from .idstore import IdSet, IdState
from .ledger import ResumeState, read_records
from .rates import format_rate
from .ratestore import BudgetReport
from .spans import format_duration

# The summary names this many in-doubt IDs; the ledger and `in_doubt` count hold the rest.
SHOWN_IN_DOUBT: Final = 20
# `report` names the first this many corrupt line numbers; the count is whole.
SHOWN_CORRUPT: Final = 5
# How a followed rerun can end other than `completed` (see waiting.py); each names its IDs.
UNSETTLED_OUTCOMES: Final = frozenset({"failed_again", "needs_person", "timed_out", "lost"})


class ExitCode(enum.IntEnum):
    OK = 0
    INCOMPLETE = 1  # some ID failed, was rejected or is in doubt
    USAGE = 2
    ABORTED = 3
    SOFTWARE = 70  # EX_SOFTWARE (sysexits.h): an internal error, a bug to report
    CANTCREAT = 73  # sysexits' EX_CANTCREAT: --summary-json or --metrics-file not written
    IOERR = 74  # sysexits' EX_IOERR: the ledger could not be written
    SIGHUP = 129  # 128 + the signal, as a shell reports it
    SIGINT = 130
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)
    SIGTERM = 143


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


# ---- a ledger read back: `orchestrator report` ------------------------------------------

# Latencies kept for the percentiles: a uniform sample of this many (Algorithm R), so a
# ledger of any size is read in bounded memory beyond its one entry per run ID.
LATENCY_SAMPLE: Final = 10_000


def _seconds(at: object) -> float | None:
    if not isinstance(at, str):
        return None
    try:
        return datetime.fromisoformat(at).timestamp()
    except (ValueError, OverflowError, OSError):  # not a time, or one no clock can hold
        return None


@dataclass
class LedgerReport:
    """What a whole ledger says, folded one record at a time (`feed`), streamed."""

    state: ResumeState = field(default_factory=ResumeState)
    failed_error: dict[str, str] = field(default_factory=dict)  # failed IDs: their error
    bad_response: int = 0
    rejected: dict[tuple[object, object], str] = field(default_factory=dict)  # (line, input)
    finished: dict[str, str] = field(default_factory=dict)  # --wait: original -> outcome
    requests: int = 0
    retries: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    last_reason: str | None = None  # of the last session_ended, None while one is open
    last_exit_code: int | None = None
    last_input_unread: bool = False  # the last session stopped before its input's end
    # IDs a session skipped as new runs of earlier reruns (`skipped` records).
    skipped_reruns: IdSet = field(default_factory=IdSet)
    first_at: str | None = None
    last_at: str | None = None
    session_s: float = 0.0  # time spent inside sessions, summed
    _session_start: float | None = None
    _session_last: float | None = None
    _dispatched_at: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    _latency_count: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def feed_lines(self, lines: Iterable[bytes]) -> None:
        """Fold ledger lines in; torn or corrupt lines are counted and skipped, as in replay."""
        for number, record in read_records(lines):
            if record is None:
                self.state.corrupt_lines += 1
                if len(self.state.corrupt_shown) < SHOWN_CORRUPT:
                    self.state.corrupt_shown.append(number)
            else:
                self.feed(record)

    def feed(self, record: dict[str, object]) -> None:
        self.state.records += 1
        event = record.get("event")
        when = self._timed(record.get("at"))
        run_id = record.get("original_run_id")
        before = self.state.ids.get(run_id) if isinstance(run_id, str) else None
        self.state.apply(record)
        match event:
            case "session_started":
                self._close_session()
                self.sessions += 1
                self._session_start = self._session_last = when
                self.last_reason = None
                self.last_exit_code = None
                self.last_input_unread = False
            case "session_ended":
                self._session_ended(record)
            case "skipped" if isinstance(skipped := record.get("run_id"), str):
                if record.get("reason") == "is_rerun":
                    self.skipped_reruns.add(skipped)
            case "rejected":
                self.rejected[(record.get("line"), record.get("input"))] = str(
                    record.get("input", "")
                )
            case "finished" if isinstance(run_id, str):
                self.finished[run_id] = str(record.get("outcome"))
            case "dispatched" if isinstance(run_id, str):
                self.requests += 1
                if when is not None:
                    self._dispatched_at[run_id] = when
            case "attempt_failed" | "succeeded" | "failed" if isinstance(run_id, str):
                self._answered(run_id, record, when)
                if record.get("error") == "bad_response":
                    # A 2xx naming no valid new run: in doubt (a `succeeded` with no new
                    # run in ledgers written before that).
                    self.bad_response += 1
                if event == "attempt_failed":
                    self.retries += 1
                elif before is not IdState.SUCCEEDED:
                    self._settled(run_id, record)

    def _timed(self, at: object) -> float | None:
        """Note a record's time; it in seconds, when it is one."""
        when = _seconds(at)
        if isinstance(at, str):
            self.first_at = self.first_at or at
            self.last_at = at
        if when is not None and self._session_start is not None:
            self._session_last = when
        return when

    def _session_ended(self, record: dict[str, object]) -> None:
        self._close_session()
        self.last_reason = str(record.get("reason"))
        code = record.get("exit_code")
        self.last_exit_code = code if isinstance(code, int) else None
        self.last_input_unread = record.get("input_unread") is True

    def _answered(self, run_id: str, record: dict[str, object], when: float | None) -> None:
        status = record.get("http_status")
        self.by_status[str(status) if isinstance(status, int) else str(record.get("error"))] += 1
        sent = self._dispatched_at.pop(run_id, None)
        if sent is None or when is None:
            return
        self._latency_count += 1
        latency = max(0.0, when - sent)
        if len(self.latencies) < LATENCY_SAMPLE:
            self.latencies.append(latency)
        else:
            slot = self._rng.randrange(self._latency_count)
            if slot < LATENCY_SAMPLE:
                self.latencies[slot] = latency

    def _settled(self, run_id: str, record: dict[str, object]) -> None:
        if record.get("event") == "succeeded":
            self.failed_error.pop(run_id, None)
        else:
            self.failed_error[run_id] = str(record.get("error"))

    def _close_session(self) -> None:
        if self._session_start is not None and self._session_last is not None:
            self.session_s += max(0.0, self._session_last - self._session_start)
        self._session_start = self._session_last = None

    @property
    def session_open(self) -> bool:
        return self._session_start is not None

    def ids(self, state: IdState) -> Iterator[str]:
        return self.state.ids.with_state(state)

    def count(self, state: IdState) -> int:
        return sum(1 for _ in self.state.ids.with_state(state))

    def is_rerun_skips(self) -> Iterator[str]:
        """IDs skipped as new runs of earlier reruns and never sent since."""
        return (i for i in self.skipped_reruns if i not in self.state.ids)

    def exit_code(self) -> ExitCode:
        """As a run would end now: 1 while anything failed, was rejected, is in doubt or
        unsettled (a next run sends it again)."""
        if self.failed_error or self.rejected or self.count(IdState.IN_DOUBT):
            return ExitCode.INCOMPLETE
        if self.count(IdState.RESENDABLE):
            return ExitCode.INCOMPLETE
        if {"failed_again", "timed_out"} & set(self.finished.values()):
            return ExitCode.INCOMPLETE
        return ExitCode.OK

    def summary(self, ledger: str, running: bool) -> dict[str, object]:
        """The same fields as a run's summary, where a ledger can tell them, plus timing."""
        in_doubt = list(itertools.islice(self.ids(IdState.IN_DOUBT), SHOWN_IN_DOUBT))
        session_s = self.session_s
        if self._session_start is not None and self._session_last is not None:
            session_s += max(0.0, self._session_last - self._session_start)
        rate = self.requests / session_s if session_s > 0 else 0.0
        if running:
            outcome = "running"
        elif self.session_open:
            outcome = "interrupted"  # a session started and never ended: a crash or kill -9
        else:
            outcome = self.last_reason or "empty"
        fields: dict[str, object] = {
            "outcome": outcome,
            "exit_code": int(self.exit_code()),
            "last_session_exit_code": self.last_exit_code,
            "succeeded": self.count(IdState.SUCCEEDED),
            "in_doubt_unreadable_response": self.bad_response,
            "failed": len(self.failed_error),
            "failed_by_error": dict(sorted(Counter(self.failed_error.values()).items())),
            "rejected": len(self.rejected),
            "in_doubt": self.count(IdState.IN_DOUBT),
            "in_doubt_ids": in_doubt,
            "unsettled": self.count(IdState.RESENDABLE),
            "unsettled_ids": list(itertools.islice(self.ids(IdState.RESENDABLE), SHOWN_IN_DOUBT)),
            "skipped_is_rerun": sum(1 for _ in self.is_rerun_skips()),
            "last_session_input_unread": self.last_input_unread,
            "requests": self.requests,
            "retries": self.retries,
            "requests_by_status": dict(sorted(self.by_status.items())),
            "elapsed_s": round(session_s, 3),
            "effective_rate_per_s": round(rate, 3),
            "sessions": self.sessions,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "latency_ms": _percentiles(self.latencies),
            "corrupt_lines": self.state.corrupt_lines,
            "corrupt_line_numbers": list(self.state.corrupt_shown),
            "ledger": ledger,
        }
        if self.finished:
            fields["finished_by_outcome"] = dict(sorted(Counter(self.finished.values()).items()))
            # Only the outcomes a run writes name a field: a ledger's own words cannot
            # overwrite another (an outcome "in_doubt" would replace `in_doubt_ids`).
            for outcome in sorted(set(self.finished.values()) & UNSETTLED_OUTCOMES):
                ids = (i for i, o in self.finished.items() if o == outcome)
                fields[f"{outcome}_ids"] = list(itertools.islice(ids, SHOWN_IN_DOUBT))
        return fields


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}
