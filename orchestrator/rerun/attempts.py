"""One ID sent until it settles: the attempt loop of `orchestrator rerun`.

Each attempt waits its turn at the pacer, makes its `dispatched` record durable (a request
whose record is not durable never leaves), sends, tells pacing what the answer says, and
records the outcome. A 429 is pacing: the next free slot of the (now slower) pacer is its
wait. Other faults back off with jitter, up to `--max-attempts`. An answer that leaves
the server's side unknown (a timeout after sending, a gateway's 502 or 504, a 2xx naming
no valid new run) puts the ID in doubt, and it is never resent unless the operator asks.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import structlog
from anyio.streams.memory import MemoryObjectSendStream

from orchestrator.api.client import AltostratClient
from orchestrator.api.outcomes import Abort, Accepted, Failed, Outcome, Retryable
from orchestrator.errors import LedgerUnwritable, OutageError
from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.records import AttemptFailed, Dispatched, Succeeded, utc_now
from orchestrator.ledger.records import Failed as FailedRecord
from orchestrator.ledger.replay import ResumeState
from orchestrator.outcome import StopReason, Tally, status_key
from orchestrator.pacing.bucket import SendTimer
from orchestrator.pacing.retry import Heard, Retrying
from orchestrator.rerun.budget import ErrorBudget
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.recorder import Recorder
from orchestrator.rerun.stop import Stop
from orchestrator.rerun.wait import NewRun
from orchestrator.settings import RerunSettings

log = structlog.get_logger("orchestrator")

# 429s an ID may meet before it fails as rate_limited: they are pacing, so they do not
# count against --max-attempts, but the loop stays bounded.
MAX_THROTTLES = 50


@dataclass(slots=True)
class _Tried:
    """What one ID's attempts have said so far, for a stop to tell its state by."""

    last: Retryable | None = None  # the last answer, when one came and a retry was due
    flagged: bool = False  # counted as possibly duplicated (resent after a doubt)


class Attempts:
    """Sends IDs, each until it settles; `in_flight` holds those whose request is out."""

    def __init__(
        self,
        settings: RerunSettings,
        client: AltostratClient,
        *,
        recorder: Recorder,
        retrying: Retrying,
        stop: Stop,
        tally: Tally,
        resume: ResumeState,
        plumbing: Plumbing,
        new_runs: MemoryObjectSendStream[NewRun] | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._recorder = recorder
        self._retrying = retrying
        self._pacer = retrying.pacer
        self._stop = stop
        self._tally = tally
        self._ids = resume.ids
        self._reruns = resume.reruns  # a new run accepted here is never rerun later
        self._clock = plumbing.clock
        self._new_runs = new_runs  # `--wait`: each accepted rerun's new run, to follow
        self._budget = ErrorBudget(
            settings.max_failures, settings.max_client_failures, settings.max_server_failures
        )
        self._send_timer = SendTimer()
        self.in_flight: set[str] = set()

    async def send(self, run_id: str) -> None:
        """Send one ID until it settles; at a stop, it is told as not sent, resendable or
        in doubt, by what its attempts so far say."""
        tried = _Tried()
        try:
            await self._until_settled(run_id, tried)
        except anyio.get_cancelled_exc_class():
            # A stop between attempts; one mid-request (a second signal) leaves the ID
            # in flight, and the session holds it in doubt.
            if run_id not in self.in_flight:
                self._stopped_between_attempts(run_id, tried.last)
            raise

    async def _until_settled(self, run_id: str, tried: _Tried) -> None:
        attempt = 0  # requests sent for this ID
        tries = 0  # of them, those that count against --max-attempts (not 429s)
        throttles = 0
        unreached_in_row = 0  # attempts that never reached the server, lately: for backoff
        while True:
            if self._stop.stopping:
                self._stopped_between_attempts(run_id, tried.last)
                return
            turn = await self._take_turn()
            if turn is None:
                self._stopped_between_attempts(run_id, tried.last)
                return
            sent_at, paced = turn
            attempt += 1
            # A stop lets the request and its records finish; a second signal does not.
            with self._stop.shielded() as shield:
                outcome = await self._send_once(run_id, attempt, sent_at if paced else None, tried)
            if shield.cancelled_caught:
                # Cut short by a second signal: the ID stays in flight, and the session
                # holds it in doubt. The stop's own cancellation takes it from here.
                await anyio.lowlevel.checkpoint()
                return
            if outcome is None:
                return
            self._tally.requests += 1
            error = outcome.error if isinstance(outcome, Retryable | Failed) else None
            self._tally.by_status[status_key(outcome.http_status, error)] += 1
            heard = self._hear(outcome, sent_at)
            throttled = heard.throttled
            # A connection that never opened tells of the service, not of this ID: while
            # --max-outage bounds the outage, it spends no attempt (MAX_THROTTLES caps it),
            # so a dead API leaves the ID resendable, not failed.
            unreached = self._unreached(outcome)
            unreached_in_row = unreached_in_row + 1 if unreached else 0
            throttles += throttled or unreached
            tries += not (throttled or unreached)
            if (
                not isinstance(outcome, Retryable)
                or tries >= self._settings.max_attempts
                or throttles >= MAX_THROTTLES
                # The server may have accepted it: only the operator may resend it.
                or (not outcome.resendable and not self._settings.retry_in_doubt)
            ):
                self._settle(run_id, attempt, outcome)
                return
            tried.last = outcome
            self._retry_later(run_id, attempt, outcome)
            # A 429 said "not now": the pacer, now slower, gives the next free slot. With a
            # Retry-After the shared pause is the wait, or for a lone 429's short one this
            # request's own; otherwise our own backoff.
            if delay := self._retrying.delay(heard, tries + unreached_in_row):
                await self._clock.sleep(delay)

    async def _send_once(
        self, run_id: str, attempt: int, slot: float | None, tried: _Tried
    ) -> Outcome | None:
        """One request, whose `dispatched` record is durable before it leaves (at its
        paced `slot`, when it has one); None when the record could not be made so."""
        self.in_flight.add(run_id)
        try:
            await self._recorder.durable(
                Dispatched(at=utc_now(), original_run_id=run_id, attempt=attempt)
            )
        except LedgerUnwritable as exc:
            self.in_flight.discard(run_id)
            self._not_sent(run_id, attempt, tried.last, exc)
            return None
        if slot is not None and not self._pacer.bucket.unlimited:
            await self._send_on_time(slot)
        last = tried.last
        if attempt == 1:
            self._tally.sent += 1
        else:
            # Counted as it leaves, as `report` counts it from the ledger: a retry that a
            # stop kept from being sent is none.
            self._tally.retries += 1
            if last is not None and not last.resendable and not tried.flagged:
                tried.flagged = True
                self._tally.resent_after_doubt.append(run_id)
        outcome = await self._client.rerun(run_id)
        self.in_flight.discard(run_id)
        return outcome

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
        while (
            due := max(timer.due(at, self._pacer.min_gap()), self._pacer.due(slot))
        ) > self._clock.now():
            await self._clock.sleep_until(due)
        now = self._clock.now()
        timer.left(now)
        self._pacer.left(slot, now)

    async def _take_turn(self) -> tuple[float, bool] | None:
        """When this request may leave, and whether it is paced (it keeps to the pacing's
        grid once its record is durable; one with no limit, or in the opening burst,
        leaves at once); None if a stop came first."""
        if self._pacer.open():
            return self._clock.now(), False
        if (extra := self._pacer.extra()) is not None:
            return extra, False
        try:
            return await self._pacer.turn(), True
        except OutageError as exc:
            self._stop.outage(exc)
            return None

    def _not_sent(
        self, run_id: str, attempt: int, last: Retryable | None, exc: LedgerUnwritable
    ) -> None:
        """The `dispatched` record is not durable, so the request does not leave."""
        if exc.written:
            # Its line is in the ledger all the same: say the attempt never left, or the
            # next run would hold the ID in doubt. Resendable unless an earlier attempt
            # may have been accepted.
            resendable = last is None or last.resendable
            self._record_attempt(run_id, attempt, None, "not_sent", resendable=resendable)
        self._stopped_between_attempts(run_id, last)

    def _stopped_between_attempts(self, run_id: str, last: Retryable | None) -> None:
        if last is None:
            self._tally.not_sent += 1
        elif last.resendable:
            # Mid-retry: a definite "not now" (429, 500, 503) and no request in flight. The
            # same command sends it again.
            self._ids[run_id] = IdState.RESENDABLE
            self._tally.unsettled.append(run_id)
        else:
            self._ids[run_id] = IdState.IN_DOUBT
            self._tally.in_doubt.append(run_id)

    def _retry_later(self, run_id: str, attempt: int, outcome: Retryable) -> None:
        self._record_attempt(
            run_id, attempt, outcome.http_status, outcome.error, resendable=outcome.resendable
        )
        log.info(
            "rerun.retry",
            run_id=run_id,
            attempt=attempt,
            http_status=outcome.http_status,
            error=outcome.error,
        )

    def _hear(self, outcome: Outcome, sent_at: float) -> Heard:
        """Tell pacing what this answer says of the server's limit and health."""
        heard = self._retrying.hear(outcome, sent_at)
        if heard.paused:
            log.info(
                "rerun.paused", seconds=heard.retry_after, detail="Retry-After: every worker waits"
            )
        return heard

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
        if not self._recorder.record(record):
            self._tally.unrecorded_outcomes[run_id] = "resendable" if resendable else "in_doubt"

    def _in_doubt(self, run_id: str, attempt: int, outcome: Accepted | Retryable) -> None:
        """The last attempt got no answer that says what the server did (a timeout, a
        connection cut after sending, a gateway's 502 or 504, a 2xx naming no valid new
        run): the rerun may exist. Recorded so, and never resent unless the operator asks
        (`--retry-in-doubt`)."""
        error = "bad_response" if isinstance(outcome, Accepted) else outcome.error
        raw = outcome.raw if isinstance(outcome, Accepted) else None
        self._record_attempt(run_id, attempt, outcome.http_status, error, resendable=False, raw=raw)
        self._ids[run_id] = IdState.IN_DOUBT
        self._tally.in_doubt.append(run_id)
        if isinstance(outcome, Accepted):
            self._tally.bad_response += 1
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
        if (spent := self._budget.failed_with(error)) and not self._stop.stopping:
            log.error("rerun.budget_exhausted", detail=spent)
            self._stop.request(StopReason.BUDGET, spent)

    def _settle(self, run_id: str, attempt: int, outcome: Outcome) -> None:
        """Record the last word on an ID: accepted, failed for good, or the run aborts."""
        match outcome:
            case Accepted(bad_response=True) | Retryable(resendable=False):
                self._in_doubt(run_id, attempt, outcome)
            case Accepted():
                self._succeeded(run_id, attempt, outcome)
            case Abort():
                # Refused, not done: the ID is sent again once the token is fixed.
                self._record_attempt(
                    run_id, attempt, outcome.http_status, outcome.error, resendable=True
                )
                self._ids[run_id] = IdState.RESENDABLE
                self._tally.unsettled.append(run_id)
                self._stop.refused(outcome)
            case Failed() | Retryable():
                self._failed(run_id, attempt, outcome)

    def _succeeded(self, run_id: str, attempt: int, outcome: Accepted) -> None:
        recorded = self._recorder.record(
            Succeeded(
                at=utc_now(),
                original_run_id=run_id,
                new_run_id=outcome.new_run_id,
                new_run_status=outcome.new_run_status,
                http_status=outcome.http_status,
                attempts=attempt,
            )
        )
        if not recorded:
            self._tally.unrecorded_mappings[run_id] = outcome.new_run_id
        self._ids[run_id] = IdState.SUCCEEDED
        if outcome.new_run_id is not None:
            self._reruns.add(outcome.new_run_id)  # never rerun it later in this input
        self._tally.succeeded += 1
        self._budget.succeeded()
        log.debug("rerun.succeeded", run_id=run_id, new_run_id=outcome.new_run_id)
        if self._new_runs is not None and outcome.new_run_id is not None:
            # After a stop the waiter takes no more: the next `--wait` run follows it.
            with contextlib.suppress(anyio.BrokenResourceError):
                self._new_runs.send_nowait(NewRun(run_id, outcome.new_run_id))

    def _failed(self, run_id: str, attempt: int, outcome: Failed | Retryable) -> None:
        recorded = self._recorder.record(
            FailedRecord(
                at=utc_now(),
                original_run_id=run_id,
                http_status=outcome.http_status,
                error=outcome.error,
                attempts=attempt,
            )
        )
        if not recorded:
            self._tally.unrecorded_outcomes[run_id] = "failed"
        self._ids[run_id] = IdState.FAILED
        self._tally.failed[outcome.error] += 1
        log.warning(
            "rerun.failed",
            run_id=run_id,
            http_status=outcome.http_status,
            error=outcome.error,
            attempts=attempt,
        )
        self._spend(outcome.error)
