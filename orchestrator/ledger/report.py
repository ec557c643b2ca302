"""The run's summary read back from a ledger, for `orchestrator report`: the same counts
and exit code as a live run's (see `outcome`), with latencies and sessions. Pure: it is fed
lines and records, and opens nothing."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from orchestrator.errors import ExitCode
from orchestrator.ledger.idstore import IdSet, IdState
from orchestrator.ledger.records import read_records
from orchestrator.ledger.replay import ResumeState
from orchestrator.outcome import (
    UNSETTLED_OUTCOMES,
    LedgerHistory,
    Summary,
    first_shown,
    in_key_order,
    pace,
    status_key,
)

# `report` names the first this many corrupt line numbers; the count is whole.
SHOWN_CORRUPT: Final = 5


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
                attempt = record.get("attempt")
                if isinstance(attempt, int) and attempt > 1:
                    self.retries += 1  # as a live run counts them: a retry that was sent
                if when is not None:
                    self._dispatched_at[run_id] = when
            case "attempt_failed" | "succeeded" | "failed" if isinstance(run_id, str):
                self._answered(run_id, record, when)
                if record.get("error") == "bad_response":
                    # A 2xx naming no valid new run: in doubt (a `succeeded` with no new
                    # run in ledgers written before that).
                    self.bad_response += 1
                if event != "attempt_failed" and before is not IdState.SUCCEEDED:
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
        self.by_status[
            status_key(status if isinstance(status, int) else None, record.get("error"))
        ] += 1
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

    def summary(self, ledger: str, running: bool) -> Summary:
        """The same summary as a run's, where a ledger can tell it, with its history."""
        session_s = self.session_s
        if self._session_start is not None and self._session_last is not None:
            session_s += max(0.0, self._session_last - self._session_start)
        elapsed_s, rate = pace(self.requests, session_s)
        if running:
            outcome = "running"
        elif self.session_open:
            outcome = "interrupted"  # a session started and never ended: a crash or kill -9
        else:
            outcome = self.last_reason or "empty"
        ended = Counter(self.finished.values())  # --wait: how the new runs ended
        return Summary(
            outcome=outcome,
            exit_code=int(self.exit_code()),
            ledger=ledger,
            succeeded=self.count(IdState.SUCCEEDED),
            in_doubt_unreadable_response=self.bad_response,
            failed_by_error=in_key_order(Counter(self.failed_error.values())),
            rejected=len(self.rejected),
            in_doubt=self.count(IdState.IN_DOUBT),
            in_doubt_ids=first_shown(self.ids(IdState.IN_DOUBT)),
            unsettled=self.count(IdState.RESENDABLE),
            unsettled_ids=first_shown(self.ids(IdState.RESENDABLE)),
            skipped_is_rerun=sum(1 for _ in self.is_rerun_skips()),
            requests=self.requests,
            retries=self.retries,
            requests_by_status=in_key_order(self.by_status),
            elapsed_s=elapsed_s,
            effective_rate_per_s=rate,
            finished_by_outcome=in_key_order(ended) if ended else None,
            # Only the outcomes a run writes name a field: a ledger's own words cannot
            # overwrite another (an outcome "in_doubt" would replace `in_doubt_ids`).
            finished_ids={
                outcome: first_shown(i for i, o in self.finished.items() if o == outcome)
                for outcome in sorted(ended.keys() & UNSETTLED_OUTCOMES)
            },
            history=LedgerHistory(
                sessions=self.sessions,
                last_session_exit_code=self.last_exit_code,
                last_session_input_unread=self.last_input_unread,
                first_at=self.first_at,
                last_at=self.last_at,
                latency_ms=_percentiles(self.latencies),
                corrupt_lines=self.state.corrupt_lines,
                corrupt_line_numbers=tuple(self.state.corrupt_shown),
            ),
        )


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}
