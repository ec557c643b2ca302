"""The rerun pipeline: input → resume state → bounded stream → workers → ledger → result.

The only module that knows every other one. A daemon thread reads input lines in batches
(back-pressured by a bounded stream, and never keeping the process alive if stdin blocks);
one task parses them, drops what the ledger says is done, and feeds IDs through a bounded
stream to `concurrency` workers; each worker waits its turn at the shared pause and token
bucket, makes its `dispatched` record durable, sends, and records the outcome.

Stopping: a signal, an auth failure, a ledger that fails or `request_stop` stops reading
and cancels every wait, so no new request starts; requests in flight finish (bounded by the
request timeout). A second signal cancels everything at once: what was in flight is then in
doubt. When the ledger fails, the outcomes it cannot take are kept for the summary, and a
request whose `dispatched` record is not durable never leaves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO, Final, TextIO

import aiohttp
import anyio
import structlog
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator import __version__
from orchestrator.api.client import AltostratClient
from orchestrator.api.outcomes import Abort, Accepted, Failed, Outcome, Retryable, answer_of
from orchestrator.errors import ConfigError, InputError, LedgerUnwritable, OutageError
from orchestrator.ids import Rejected, parse_line
from orchestrator.ledger.idstore import IdSet, IdState
from orchestrator.ledger.records import (
    AttemptFailed,
    Dispatched,
    Finished,
    Record,
    SessionEnded,
    SessionStarted,
    Skipped,
    Succeeded,
    utc_now,
)
from orchestrator.ledger.records import Failed as FailedRecord
from orchestrator.ledger.records import Rejected as RejectedRecord
from orchestrator.ledger.replay import ResumeState, replay_file
from orchestrator.ledger.writer import FileOps, LedgerWriter
from orchestrator.outcome import (
    Estimate,
    RunResult,
    Snapshot,
    StopReason,
    Tally,
    effective_rate,
    exit_code,
)
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.bucket import SendTimer
from orchestrator.pacing.clock import Clock, RealClock
from orchestrator.pacing.pacer import Pacer, log_pacing
from orchestrator.rerun.budget import ErrorBudget
from orchestrator.rerun.source import Batches, InputFailed, open_source, read_in_background
from orchestrator.rerun.wait import Waiter, WaitPolicy
from orchestrator.settings import RerunSettings
from orchestrator.shared.schedule import SharedSchedule, open_shared, peek_limit
from orchestrator.units import format_span

log = structlog.get_logger("orchestrator")

# 429s an ID may meet before it fails as rate_limited: they are pacing, so they do not
# count against --max-attempts, but the loop stays bounded.
MAX_THROTTLES = 50
# Signals that drain the run: no new request, those in flight finish. SIGHUP is a dropped
# terminal or SSH session.
_STOP_SIGNALS = {
    signal.SIGINT: StopReason.SIGINT,
    signal.SIGTERM: StopReason.SIGTERM,
    signal.SIGHUP: StopReason.SIGHUP,
}


@dataclass(frozen=True)
class Plumbing:
    """What the engine is given rather than makes, so tests can swap it."""

    clock: Clock
    rng: random.Random
    backoff: Backoff = field(default_factory=Backoff)
    handle_signals: bool = True
    stdin: BinaryIO | None = None
    stdout: TextIO | None = None
    # Watches a sending session from start to end, such as the live progress display;
    # it is handed a function it may call from any thread for the counts so far.
    monitor: Callable[[Callable[[], Snapshot]], AbstractContextManager[object]] | None = None
    # The ledger's system calls; tests fill the disk or fail an fsync here.
    ledger_ops: FileOps | None = None
    # Asked, before a real run sends anything, whether to go on with this plan (the
    # terminal's y/N); None sends without asking.
    confirm: Callable[[Plan], bool] | None = None
    # Dry run: the token, when one is set, to read a limit learned for it from the store.
    token: str | None = field(default=None, repr=False)

    @classmethod
    def default(cls) -> Plumbing:
        return cls(clock=RealClock(), rng=random.Random())


@dataclass(frozen=True)
class Plan:
    """What a real run is about to do, for the operator to confirm."""

    count: int | None  # IDs to send; None when not known ahead (stdin, or too many lines)
    source: str
    base_url: str
    per_s: float | None  # the rate it paces at; None for no limit

    @property
    def estimate(self) -> Estimate | None:
        return None if self.count is None else Estimate(self.count, self.per_s)


class Rerun:
    """One session of `orchestrator rerun` over one source and one ledger."""

    def __init__(
        self,
        settings: RerunSettings,
        client: AltostratClient | None,
        writer: LedgerWriter | None,
        resume: ResumeState,
        plumbing: Plumbing,
        *,
        shared: SharedSchedule | None = None,
        learned_per_s: float | None = None,
    ) -> None:
        self.settings = settings
        self._learned_per_s = learned_per_s  # dry run: a limit the store knows, for the estimate
        self.tally = Tally()
        self._client = client
        self._writer = writer
        self._ids = resume.ids
        self._reruns = resume.reruns
        self._plumbing = plumbing
        self._clock = plumbing.clock
        self._pacer = Pacer(
            settings.rate,
            plumbing.clock,
            circuit_threshold=settings.circuit_threshold,
            shared=shared,
            max_outage=settings.max_outage,
        )
        self._budget = ErrorBudget(
            settings.max_failures, settings.max_client_failures, settings.max_server_failures
        )
        self._stop_reason: StopReason | None = None
        self._abort_detail: str | None = None
        self._waits: set[anyio.CancelScope] = set()
        self._reading = anyio.CancelScope()
        self._task_group: TaskGroup | None = None
        self._input_error: str | None = None
        self._ledger_error: str | None = None
        self._in_flight: set[str] = set()
        self._send_timer = SendTimer()
        self._pending = 0  # IDs handed to the workers and not yet settled
        self._input_done = False
        self._sending = False
        self._waiter: Waiter | None = None
        if settings.wait and client is not None:
            self._waiter = Waiter(
                client,
                self._pacer,
                WaitPolicy(
                    timeout_s=settings.wait_timeout,
                    poll_s=settings.poll_interval,
                    max_attempts=settings.max_attempts,
                    backoff=plumbing.backoff,
                ),
                plumbing.clock,
                plumbing.rng,
                finished=self._record_finished,
                refused=self._refused,
                sending=lambda: self._sending,
                unless_stopped=self._unless_stopped,
            )
            for original, new_run_id in (resume.unfinished or {}).items():
                self._waiter.follow(original, new_run_id)
            if resume.unfinished:
                log.info("wait.resuming", unfinished=len(resume.unfinished))

    # ---- stopping -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: StopReason, detail: str | None = None) -> None:
        """Start no new request: stop reading, cancel every wait; in-flight requests finish.

        A second signal stops at once, cancelling the requests in flight too."""
        if self._stop_reason is not None:
            if reason in _STOP_SIGNALS.values() and self._task_group:
                log.warning("rerun.forced_stop", signal=reason.value)
                self._task_group.cancel_scope.cancel()
            return
        self._stop_reason = reason
        self._abort_detail = detail
        self._reading.cancel()
        for scope in self._waits:
            scope.cancel()

    async def _watch_signals(self) -> None:
        watched = [
            signum
            for signum in _STOP_SIGNALS
            # Started under nohup: the operator asked to outlive the terminal.
            if not (signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN)
        ]
        with anyio.open_signal_receiver(*watched) as signals:
            async for signum in signals:
                reason = _STOP_SIGNALS[signal.Signals(signum)]
                if not self.stopping:
                    log.warning(
                        "rerun.stopping",
                        signal=reason.value,
                        detail="finishing requests in flight; signal again to stop at once",
                    )
                self.request_stop(reason)

    def snapshot(self) -> Snapshot:
        """The counts so far; cheap, and safe to call from another thread."""
        tally = self.tally
        return Snapshot(
            lines=tally.lines,
            done=tally.lines - self._pending,
            input_done=self._input_done,
            succeeded=tally.succeeded,
            failed=tally.failed_total,
            in_flight=len(self._in_flight),
            requests=tally.requests,
            rate_limited=tally.by_status.get("429", 0),
            target_rate=self._pacer.bucket.per_second,  # as adaptive pacing has set it
            following=None if self._waiter is None else self._waiter.following,
            ended=sum(tally.finished.values()),
        )

    # ---- the pipeline ---------------------------------------------------------------------

    async def run(self, source: BinaryIO) -> RunResult:
        started = self._clock.now()
        if self._writer is not None:
            # A ledger that takes not even this stops the run before a line is read.
            self._record(
                SessionStarted(
                    at=utc_now(),
                    version=__version__,
                    source=self.settings.source,
                    pid=os.getpid(),
                )
            )
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                if self._plumbing.handle_signals:
                    tg.start_soon(self._watch_signals)
                await self._pipeline(source)
                tg.cancel_scope.cancel()  # the signal watcher has nothing more to watch
        finally:
            self._task_group = None
        # Left in flight only by a forced stop: the server may or may not have them.
        self.tally.in_doubt.extend(sorted(self._in_flight))
        # Read, and stopped before any worker took them (workers settle what they take).
        self.tally.not_sent += self._pending
        self._pending = 0
        if self._waiter is not None:
            self.tally.polls = self._waiter.polls
        if self._input_error is not None:
            if self._ledger_error is None:
                raise InputError(self._input_error)
            # The ledger's failure decides the exit code; this one is only told.
            log.error("input.unreadable", source=self.settings.source, error=self._input_error)
        if self._writer is None:
            return self._result(started)
        await self._writer.sync()
        if self._writer.failed is not None:
            self._ledger_failed(self._writer.failed)
        result = self._result(started)
        ended = SessionEnded(
            at=utc_now(),
            exit_code=int(exit_code(result)),
            reason=result.reason,
            input_unread=not result.input_done,
        )
        if not self._record(ended):
            result = self._result(started)
        return result

    def _result(self, started: float) -> RunResult:
        return RunResult(
            tally=self.tally,
            reason=self._stop_reason or StopReason.COMPLETED,
            elapsed_s=self._clock.now() - started,
            ledger=str(self.settings.ledger),
            dry_run=self.settings.dry_run,
            waited=self._waiter is not None,
            abort_detail=self._abort_detail,
            budget=None if self._pacer.shared is None else self._pacer.shared.report(),
            ledger_error=self._ledger_error,
            input_done=self._input_done,
            base_url=self.settings.base_url,
            estimate=Estimate(
                self.tally.would_send, effective_rate(self.settings.rate, self._learned_per_s)
            )
            if self.settings.dry_run
            else None,
        )

    # ---- the ledger -----------------------------------------------------------------------

    def _record(self, record: Record) -> bool:
        """Append a record; False when the ledger could not take it (the run then stops)."""
        assert self._writer is not None
        try:
            self._writer.append(record)
        except LedgerUnwritable as exc:
            self._ledger_failed(exc)
            return False
        return True

    def _ledger_failed(self, exc: LedgerUnwritable) -> None:
        """Stop as a signal does; what the ledger cannot take is kept for the summary."""
        if self._ledger_error is None:
            self._ledger_error = str(exc)
            log.error(
                "ledger.unwritable",
                ledger=str(self.settings.ledger),
                error=self._ledger_error,
                detail="no new request starts; requests in flight finish, and outcomes the "
                "ledger cannot take are listed in the summary",
            )
        self.request_stop(StopReason.LEDGER, f"ledger: {self._ledger_error}")

    async def _pipeline(self, source: BinaryIO) -> None:
        concurrency = self.settings.concurrency
        lines_receive = read_in_background(source)
        ids_send, ids_receive = anyio.create_memory_object_stream[str](concurrency)
        async with anyio.create_task_group() as following:
            if self._waiter is not None:
                following.start_soon(self._waiter.run)
            self._sending = True
            async with anyio.create_task_group() as tg:
                for _ in range(0 if self.settings.dry_run else concurrency):
                    tg.start_soon(self._worker, ids_receive.clone())
                ids_receive.close()
                await self._feed(lines_receive, ids_send)
            self._sending = False
            if self._waiter is not None:
                log.info("wait.following", reruns=self._waiter.following)
                self._waiter.close()

    async def _feed(self, lines: Batches, ids: MemoryObjectSendStream[str]) -> None:
        async with lines, ids:
            with self._reading:
                async for batch in lines:
                    if isinstance(batch, InputFailed):
                        # What was read is still sent; the error is raised once it is.
                        self._input_error = batch.message
                        return
                    for raw in batch:
                        self.tally.lines += 1
                        run_id = self._admit(parse_line(raw, self.tally.lines))
                        if run_id is not None:
                            self._pending += 1
                            await _send(ids, run_id)
                self._input_done = True

    def _admit(self, parsed: str | Rejected | None) -> str | None:
        """Decide what to do with one parsed line; the ID to send, or None."""
        if parsed is None:
            self.tally.blank += 1
            return None
        if isinstance(parsed, Rejected):
            self._reject(parsed)
            return None
        state = self._ids.get(parsed)
        skip = skip_reason(state, parsed in self._reruns, self.settings)
        if skip == "duplicate":
            self.tally.duplicates += 1
        elif skip == "is_rerun":
            self._skip_rerun(parsed)
        elif skip == "succeeded":
            self.tally.skipped_succeeded += 1
        elif skip == "failed":
            self.tally.skipped_failed += 1
        elif skip == "in_doubt":
            self.tally.skipped_in_doubt += 1
            self.tally.in_doubt.append(parsed)
        if skip is not None:
            self._plan("skip", parsed, skip)
            return None
        self._ids[parsed] = IdState.QUEUED
        if self.settings.dry_run:
            self.tally.would_send += 1
            why = state.name.lower() if state is not None else None
            self._plan("send", parsed, why or ("is_rerun" if parsed in self._reruns else "new"))
            return None
        return parsed

    def _reject(self, rejected: Rejected) -> None:
        self.tally.rejected += 1
        self._plan("reject", f"line {rejected.line}", rejected.reason)
        log.warning("input.rejected", line=rejected.line, reason=rejected.reason)
        if self._writer:
            self._record(
                RejectedRecord(
                    at=utc_now(), line=rejected.line, reason=rejected.reason, input=rejected.input
                )
            )

    def _skip_rerun(self, run_id: str) -> None:
        self.tally.skipped_is_rerun += 1
        if self._writer:
            # Recorded, so that `report` can say why the line went unsent; replay ignores it.
            self._record(
                Skipped(at=utc_now(), line=self.tally.lines, run_id=run_id, reason="is_rerun")
            )

    def _plan(self, action: str, subject: str, why: str) -> None:
        """In a dry run, say on stdout what would happen to a line: tab-separated, for grep/cut."""
        if self.settings.dry_run and not self.stopping:
            out = self._plumbing.stdout or sys.stdout
            try:
                out.write(f"{action}\t{subject}\t{why}\n")
            except BrokenPipeError:
                # The reader has seen enough (`| head`): the plan ends here, quietly.
                self.request_stop(StopReason.OUTPUT_CLOSED)

    # ---- the workers ----------------------------------------------------------------------

    async def _worker(self, ids: MemoryObjectReceiveStream[str]) -> None:
        async with ids:
            while (run_id := await _receive(ids)) is not None:
                try:
                    if self.stopping:
                        self.tally.not_sent += 1  # read, but the run stopped before its turn
                        continue
                    await self._rerun_one(run_id)
                finally:
                    self._pending -= 1

    async def _unless_stopped(self, wait: Callable[[], Awaitable[None]]) -> bool:
        """Run a wait that a stop cancels; True when it ran to its end and no stop came."""
        if self.stopping:
            return False
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                await wait()
            except OutageError as exc:  # from the pacer, in a worker's turn or a poll
                self._outage(exc)
            finally:
                self._waits.discard(scope)
        return not self.stopping

    def _outage(self, exc: OutageError) -> None:
        """The API has been down for --max-outage: stop as a signal does. Requests in
        flight finish; whatever is not settled stays resendable (or in doubt, when a
        request may have been accepted unseen)."""
        if self.stopping:
            return
        what = (
            "no HTTP answer"
            if exc.kind == "no_answer"
            else "the circuit open (the service kept failing)"
        )
        detail = (
            f"outage: {what} from {self.settings.base_url} for {format_span(exc.seconds)} "
            f"(--max-outage); last error: {exc.last_error or 'none'}"
        )
        log.error(
            "rerun.outage",
            base_url=self.settings.base_url,
            last_error=exc.last_error,
            max_outage_s=exc.seconds,
            detail=detail + "; no new request starts, and the same command resends "
            "what is not settled once the API is back",
        )
        self.request_stop(StopReason.OUTAGE, detail)

    async def _rerun_one(self, run_id: str) -> None:
        assert self._client is not None
        assert self._writer is not None
        last: Retryable | None = None
        flagged = False  # as possibly duplicated
        attempt = 0  # requests sent for this ID
        tries = 0  # of them, those that count against --max-attempts (not 429s)
        throttles = 0
        unreached_in_row = 0  # attempts that never reached the server, lately: for backoff
        while True:
            if self.stopping:
                self._stopped_between_attempts(run_id, last)
                return
            turn = await self._take_turn()
            if turn is None:
                self._stopped_between_attempts(run_id, last)
                return
            sent_at, paced = turn
            attempt += 1
            self._in_flight.add(run_id)
            try:
                await self._writer.append_durable(
                    Dispatched(at=utc_now(), original_run_id=run_id, attempt=attempt)
                )
            except LedgerUnwritable as exc:
                self._in_flight.discard(run_id)
                self._not_sent(run_id, attempt, last, exc)
                return
            if paced and not self._pacer.bucket.unlimited:
                await self._send_on_time(sent_at)
            if attempt == 1:
                self.tally.sent += 1
            elif last is not None and not last.resendable and not flagged:
                flagged = True
                self.tally.resent_after_doubt.append(run_id)
            outcome = await self._client.rerun(run_id)
            self._in_flight.discard(run_id)
            self.tally.requests += 1
            self.tally.by_status[_status_key(outcome)] += 1
            throttled, alone_s = self._learn(outcome, sent_at)
            # A connection that never opened tells of the service, not of this ID: while
            # --max-outage bounds the outage, it spends no attempt (MAX_THROTTLES caps it),
            # so a dead API leaves the ID resendable, not failed.
            unreached = self._unreached(outcome)
            unreached_in_row = unreached_in_row + 1 if unreached else 0
            throttles += throttled or unreached
            tries += not (throttled or unreached)
            if (
                not isinstance(outcome, Retryable)
                or tries >= self.settings.max_attempts
                or throttles >= MAX_THROTTLES
                # The server may have accepted it: only the operator may resend it.
                or (not outcome.resendable and not self.settings.retry_in_doubt)
            ):
                self._settle(run_id, attempt, outcome)
                return
            last = outcome
            self._retry_later(run_id, attempt, outcome)
            # A 429 said "not now": the pacer, now slower, gives the next free slot. With a
            # Retry-After the shared pause is the wait, or for a lone 429's short one this
            # request's own; otherwise our own backoff.
            if (throttled or outcome.retry_after is not None) and not alone_s:
                continue
            delay = alone_s or self._plumbing.backoff.delay(
                tries + unreached_in_row, self._plumbing.rng
            )
            if not await self._unless_stopped(functools.partial(self._clock.sleep, delay)):
                self._stopped_between_attempts(run_id, last)
                return

    def _unreached(self, outcome: Outcome) -> bool:
        """The request provably never reached the server (the connection was refused or
        never opened), and an outage is watched for."""
        return (
            self._pacer.max_outage is not None
            and isinstance(outcome, Retryable)
            and outcome.http_status is None
            and outcome.resendable
        )

    async def _send_on_time(self, slot: float) -> None:
        """Leave when `SendTimer` says: the server sees the spacing the pacer chose."""
        timer = self._send_timer
        at = slot + timer.lag(slot, self._clock.now())
        while (due := timer.due(at, self._pacer.min_gap())) > self._clock.now():
            await self._clock.sleep_until(due)
        timer.left(self._clock.now())

    async def _take_turn(self) -> tuple[float, bool] | None:
        """When this request may leave, and whether it is paced (it keeps to the pacing's
        grid once its record is durable; one with no limit, or in the opening burst,
        leaves at once); None if a stop came first."""
        if self._pacer.open():
            return self._clock.now(), False
        if (extra := self._pacer.extra()) is not None:
            return extra, False
        slot = await self._turn()
        return None if slot is None else (slot, True)

    async def _turn(self) -> float | None:
        """Wait for the pacer; when the request may leave, or None if a stop came first."""
        left: list[float] = []

        async def wait() -> None:
            left.append(await self._pacer.turn())

        if not await self._unless_stopped(wait) or not left:
            return None
        return left[0]

    def _not_sent(
        self, run_id: str, attempt: int, last: Retryable | None, exc: LedgerUnwritable
    ) -> None:
        """The `dispatched` record is not durable, so the request does not leave."""
        self._ledger_failed(exc)
        if exc.written:
            # Its line is in the ledger all the same: say the attempt never left, or the
            # next run would hold the ID in doubt. Resendable unless an earlier attempt
            # may have been accepted.
            resendable = last is None or last.resendable
            marker = AttemptFailed(
                at=utc_now(),
                original_run_id=run_id,
                attempt=attempt,
                http_status=None,
                error="not_sent",
                resendable=resendable,
            )
            if not self._record(marker):
                self.tally.unrecorded_outcomes[run_id] = "resendable" if resendable else "in_doubt"
        self._stopped_between_attempts(run_id, last)

    def _stopped_between_attempts(self, run_id: str, last: Retryable | None) -> None:
        if last is None:
            self.tally.not_sent += 1
        elif last.resendable:
            # Mid-retry: a definite "not now" (429, 500, 503) and no request in flight. The
            # same command sends it again.
            self._ids[run_id] = IdState.RESENDABLE
            self.tally.unsettled.append(run_id)
        else:
            self._ids[run_id] = IdState.IN_DOUBT
            self.tally.in_doubt.append(run_id)

    def _retry_later(self, run_id: str, attempt: int, outcome: Retryable) -> None:
        self._record_attempt(
            run_id, attempt, outcome.http_status, outcome.error, resendable=outcome.resendable
        )
        self.tally.retries += 1
        log.info(
            "rerun.retry",
            run_id=run_id,
            attempt=attempt,
            http_status=outcome.http_status,
            error=outcome.error,
        )

    def _learn(self, outcome: Outcome, sent_at: float) -> tuple[bool, float]:
        """Tell pacing what this answer says of the server's limit and health: whether it
        was a 429 (pacing, not a fault), and how long this request alone must wait before
        it goes again (a lone 429's short Retry-After; 0 otherwise)."""
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        answer = answer_of(outcome)
        events = self._pacer.observe(answer, retry_after, sent_at)
        if events.paused:
            log.info("rerun.paused", seconds=retry_after, detail="Retry-After: every worker waits")
        log_pacing(events, self._pacer)
        if events.circuit == "opened":
            self.tally.circuit_opened += 1
        return answer.throttled, events.wait_s

    def _record_attempt(
        self,
        run_id: str,
        attempt: int,
        http_status: int | None,
        error: str,
        *,
        resendable: bool,
        raw: str | None = None,
    ) -> None:
        """An attempt that did not settle the ID: a retry follows, the run stops, or (not
        resendable) the ID is in doubt."""
        record = AttemptFailed(
            at=utc_now(),
            original_run_id=run_id,
            attempt=attempt,
            http_status=http_status,
            error=error,
            resendable=resendable,
            raw=raw,
        )
        if not self._record(record):
            self.tally.unrecorded_outcomes[run_id] = "resendable" if resendable else "in_doubt"

    def _refused(self, outcome: Abort) -> None:
        """The API refused the token (to a rerun or a poll): stop everything."""
        if not self.stopping:
            log.error(
                "rerun.aborted",
                http_status=outcome.http_status,
                error=outcome.error,
                detail="the API refused the token; no further requests are sent",
            )
        self.request_stop(StopReason.ABORTED, f"HTTP {outcome.http_status} {outcome.error}")

    def _record_finished(self, record: Finished) -> None:
        if not self._record(record):
            self.tally.unrecorded_outcomes[record.original_run_id] = record.outcome
        self.tally.finished[record.outcome] += 1
        if record.outcome != "completed":
            self.tally.unsettled_reruns.setdefault(record.outcome, []).append(
                record.original_run_id
            )
        level = "debug" if record.outcome == "completed" else "warning"
        getattr(log, level)(
            "wait.finished",
            run_id=record.original_run_id,
            new_run_id=record.new_run_id,
            outcome=record.outcome,
            final_status=record.final_status,
            error_message=record.error_message,
        )

    def _in_doubt(self, run_id: str, attempt: int, outcome: Accepted | Retryable) -> None:
        """The last attempt got no answer that says what the server did (a timeout, a
        connection cut after sending, a gateway's 502 or 504, a 2xx naming no valid new
        run): the rerun may exist. Recorded so, and never resent unless the operator asks
        (`--retry-in-doubt`)."""
        error = "bad_response" if isinstance(outcome, Accepted) else outcome.error
        raw = outcome.raw if isinstance(outcome, Accepted) else None
        self._record_attempt(run_id, attempt, outcome.http_status, error, resendable=False, raw=raw)
        self._ids[run_id] = IdState.IN_DOUBT
        self.tally.in_doubt.append(run_id)
        if isinstance(outcome, Accepted):
            self.tally.bad_response += 1
        log.warning(
            "rerun.in_doubt",
            run_id=run_id,
            http_status=outcome.http_status,
            error=error,
            detail="the server may have accepted it; check it in the API, then resend with "
            "--retry-in-doubt if it did not",
        )
        if isinstance(outcome, Retryable):
            self._spend(error)  # a sick service, whether or not it did the work

    def _spend(self, error: str) -> None:
        """Count a failure against the error budget; stop once it is spent."""
        if (spent := self._budget.failed_with(error)) and not self.stopping:
            log.error("rerun.budget_exhausted", detail=spent)
            self.request_stop(StopReason.BUDGET, spent)

    def _settle(self, run_id: str, attempt: int, outcome: Outcome) -> None:
        """Record the last word on an ID: accepted, failed for good, or the run aborts."""
        at = utc_now()
        match outcome:
            case Accepted(bad_response=True) | Retryable(resendable=False):
                self._in_doubt(run_id, attempt, outcome)
            case Accepted():
                recorded = self._record(
                    Succeeded(
                        at=at,
                        original_run_id=run_id,
                        new_run_id=outcome.new_run_id,
                        new_run_status=outcome.new_run_status,
                        http_status=outcome.http_status,
                        attempts=attempt,
                    )
                )
                if not recorded:
                    self.tally.unrecorded_mappings[run_id] = outcome.new_run_id
                self._ids[run_id] = IdState.SUCCEEDED
                if outcome.new_run_id is not None:
                    self._reruns.add(outcome.new_run_id)  # never rerun it later in this input
                self.tally.succeeded += 1
                self._budget.succeeded()
                log.debug("rerun.succeeded", run_id=run_id, new_run_id=outcome.new_run_id)
                if self._waiter is not None and outcome.new_run_id is not None:
                    self._waiter.follow(run_id, outcome.new_run_id)
            case Abort():
                # Refused, not done: the ID is sent again once the token is fixed.
                self._record_attempt(
                    run_id, attempt, outcome.http_status, outcome.error, resendable=True
                )
                self._ids[run_id] = IdState.RESENDABLE
                self.tally.unsettled.append(run_id)
                self._refused(outcome)
            case Failed() | Retryable():
                recorded = self._record(
                    FailedRecord(
                        at=at,
                        original_run_id=run_id,
                        http_status=outcome.http_status,
                        error=outcome.error,
                        attempts=attempt,
                    )
                )
                if not recorded:
                    self.tally.unrecorded_outcomes[run_id] = "failed"
                self._ids[run_id] = IdState.FAILED
                self.tally.failed[outcome.error] += 1
                log.warning(
                    "rerun.failed",
                    run_id=run_id,
                    http_status=outcome.http_status,
                    error=outcome.error,
                    attempts=attempt,
                )
                self._spend(outcome.error)


# anyio's send and receive always go through the event loop, even when an item or a
# place is ready; trying without waiting first saves that on the hot path.


async def _send(stream: MemoryObjectSendStream[str], item: str) -> None:
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)


async def _receive(stream: MemoryObjectReceiveStream[str]) -> str | None:
    """The next item, or None at the end of the stream."""
    try:
        return stream.receive_nowait()
    except anyio.WouldBlock:
        try:
            return await stream.receive()
        except anyio.EndOfStream:
            return None
    except anyio.EndOfStream:
        return None


def _status_key(outcome: Outcome) -> str:
    """How a request is counted: its HTTP status, or the error when no answer came."""
    if outcome.http_status is not None:
        return str(outcome.http_status)
    assert not isinstance(outcome, Accepted | Abort)
    return outcome.error


def _open_ledger(settings: RerunSettings, ops: FileOps | None) -> LedgerWriter:
    try:
        return LedgerWriter(settings.ledger, settings.fsync, ops)
    except OSError as exc:
        raise ConfigError(f"cannot open ledger {settings.ledger}: {exc.strerror or exc}") from None


async def run_rerun(
    settings: RerunSettings, token: str | None, plumbing: Plumbing | None = None
) -> RunResult:
    """Run one `orchestrator rerun` session.

    Raises ConfigError (bad source or ledger path), LedgerLocked or InputError."""
    plumbing = plumbing or Plumbing.default()
    source = open_source(settings.source, plumbing.stdin)
    async with contextlib.AsyncExitStack() as cleanup:
        if settings.source != "-":
            cleanup.callback(source.close)
        if settings.dry_run:
            resume = _resume(settings)
            learned = None
            if plumbing.token is not None:
                learned = await peek_limit(settings.store_spec, settings.base_url, plumbing.token)
            rerun = Rerun(settings, None, None, resume, plumbing, learned_per_s=learned)
            return await rerun.run(source)
        assert token is not None
        writer = _open_ledger(settings, plumbing.ledger_ops)
        cleanup.callback(writer.close)
        resume = _resume(settings)
        shared = await open_shared(
            settings.store_spec, settings.base_url, token, settings.rate, plumbing.clock.now
        )
        if shared is not None:
            cleanup.push_async_callback(shared.close)
        if plumbing.confirm is not None:
            plan = _plan(settings, resume, shared)
            # Nothing runs yet that blocking on the terminal could hold up.
            if not plumbing.confirm(plan):
                log.info("rerun.declined", detail="nothing was sent")
                return RunResult(
                    tally=Tally(),
                    reason=StopReason.DECLINED,
                    elapsed_s=0.0,
                    ledger=str(settings.ledger),
                    abort_detail="declined at the prompt: nothing was sent",
                    base_url=settings.base_url,
                )
        connector = aiohttp.TCPConnector(limit=settings.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = AltostratClient(session, settings.base_url, token, settings.timeout)
            rerun = Rerun(settings, client, writer, resume, plumbing, shared=shared)
            with plumbing.monitor(rerun.snapshot) if plumbing.monitor else contextlib.nullcontext():
                result = await rerun.run(source)
        writer.close()
        if writer.failed is not None and result.ledger_error is None:
            # The last fsync failed: what this session wrote may not be on disk.
            log.error("ledger.unwritable", ledger=str(settings.ledger), error=str(writer.failed))
            result = dataclasses.replace(result, ledger_error=str(writer.failed))
        return result


def _resume(settings: RerunSettings) -> ResumeState:
    """Replay the ledger, and say what this session starts from."""
    resume = replay_file(settings.ledger, unfinished=settings.wait and not settings.dry_run)
    if resume.corrupt_lines:
        log.warning(
            "ledger.corrupt_lines",
            ledger=str(settings.ledger),
            count=resume.corrupt_lines,
            lines=resume.corrupt_shown,
            detail="skipped; an ID whose last record was lost counts as in doubt or new",
        )
    log.info(
        "rerun.starting",
        source=settings.source,
        ledger=str(settings.ledger),
        ledger_ids=len(resume.ids),
        base_url=settings.base_url,
        concurrency=settings.concurrency,
        rate_per_s=settings.rate,
        dry_run=settings.dry_run,
    )
    return resume


# Lines a plan counts ahead at most; past that, the count is not worth the wait (nor the
# memory of its duplicate check: a compact set, about 35 bytes an ID).
PLAN_MAX_LINES: Final = 1_000_000


def skip_reason(state: IdState | None, is_rerun: bool, settings: RerunSettings) -> str | None:
    """Why an ID read from the input is not sent, by its state in the ledger (QUEUED: seen
    earlier in this input) and whether the ledger names it as a rerun's new run; None to
    send it. Pure: a run's admission and its plan's count decide alike."""
    if state == IdState.QUEUED:
        return "duplicate"
    if is_rerun and not settings.include_reruns:
        # A new run made by an earlier rerun (`select` output lists them too): rerunning
        # it would rerun the rerun. Before the ID's own states: it is not an original.
        return "is_rerun"
    if state == IdState.SUCCEEDED:
        return "succeeded"
    if state == IdState.FAILED and not settings.retry_failed:
        return "failed"
    if state == IdState.IN_DOUBT and not settings.retry_in_doubt:
        return "in_doubt"
    return None


def _plan(settings: RerunSettings, resume: ResumeState, shared: SharedSchedule | None) -> Plan:
    learned = None if shared is None or shared.limit is None else shared.limit.known_per_s
    count = None if settings.source == "-" else _count_to_send(settings, resume)
    return Plan(count, settings.source, settings.base_url, effective_rate(settings.rate, learned))


def _count_to_send(settings: RerunSettings, resume: ResumeState) -> int | None:
    """IDs in the source file that the run would send, by the ledger as it stands: one
    streaming pass, as `_admit` decides (None past PLAN_MAX_LINES, or unreadable: the run
    itself says why)."""
    seen = IdSet()
    count = 0
    try:
        with open(settings.source, "rb") as stream:
            for number, raw in enumerate(stream, 1):
                if number > PLAN_MAX_LINES:
                    return None
                parsed = parse_line(raw, number)
                if not isinstance(parsed, str) or parsed in seen:
                    continue
                seen.add(parsed)
                if skip_reason(resume.ids.get(parsed), parsed in resume.reruns, settings) is None:
                    count += 1
    except OSError:
        return None
    return count
