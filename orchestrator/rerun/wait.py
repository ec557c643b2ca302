"""Following accepted reruns to their end: the poller behind `rerun --wait`.

A 202 only means "queued". One task polls `GET /workflows/runs/{new}` for every accepted
rerun, the one due soonest first: `poll_s` after acceptance, then at intervals growing by
half each time (to at most a minute), until the new run's status is final or `timeout_s`
has passed since it was accepted. New runs reach it on one memory stream, and each
ends in a `Finished` record sent back on another, for the session to write.

Polls pass the one Pacer with the reruns (the API's limit is per token, not per
endpoint), and while reruns are still being sent the poller takes at most a quarter of
the rate, so waiting never starves new reruns; once all are sent, it has the whole rate.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Final

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from orchestrator.api.client import AltostratClient
from orchestrator.api.models import RunObject
from orchestrator.api.outcomes import Abort, Failed, Retryable
from orchestrator.errors import OutageError
from orchestrator.ledger.records import Finished, utc_now
from orchestrator.pacing.clock import Clock
from orchestrator.pacing.retry import Retrying, call_with_retries
from orchestrator.rerun.stop import Stop

log = structlog.get_logger("orchestrator")

# The status that ends a wait, and what it means for the recovery.
OUTCOMES: Final = {
    "completed": "completed",
    "failed": "failed_again",
    "awaiting_ui_interaction": "needs_person",
}
GROWTH: Final = 1.5
MAX_POLL_S: Final = 60.0
POLL_SHARE: Final = 0.25  # of the rate, at most, while reruns are still being sent


@dataclass(frozen=True)
class WaitPolicy:
    timeout_s: float
    poll_s: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class NewRun:
    """An accepted rerun to follow: the original run, and the new run it made."""

    original: str
    new_run_id: str


def new_run_stream() -> tuple[MemoryObjectSendStream[NewRun], MemoryObjectReceiveStream[NewRun]]:
    """The stream new runs reach the waiter on: never full, so a worker never waits on it."""
    return anyio.create_memory_object_stream[NewRun](math.inf)


@dataclass(order=True)
class _Follow:
    due: float
    seq: int
    original: str = field(compare=False)
    new_run_id: str = field(compare=False)
    deadline: float = field(compare=False)
    interval: float = field(compare=False)


class Waiter:
    """Polls accepted reruns until each is finished: `run` follows the new runs that
    arrive on one stream until it ends, sends each one's `Finished` record on another,
    and returns once every one is finished (or at a stop)."""

    def __init__(
        self,
        client: AltostratClient,
        retrying: Retrying,
        policy: WaitPolicy,
        clock: Clock,
        stop: Stop,
        *,
        new_runs: MemoryObjectReceiveStream[NewRun],
        finished: MemoryObjectSendStream[Finished],
    ) -> None:
        self._client = client
        self._retrying = retrying
        self._policy = policy
        self._clock = clock
        self._stop = stop
        self._new_runs = new_runs
        self._finished = finished
        self._queue: list[_Follow] = []
        self._seq = itertools.count()
        self._sending = True  # more new runs may come: reruns are still being sent
        self._changed = anyio.Event()
        self._nap: anyio.CancelScope | None = None
        self._nap_until = 0.0
        self.polls = 0

    @property
    def following(self) -> int:
        """New runs being followed, and those on their way."""
        return len(self._queue) + self._new_runs.statistics().current_buffer_used

    async def run(self) -> None:
        async with self._finished, anyio.create_task_group() as tg:
            tg.start_soon(self._take)
            await self._follow_all()
            tg.cancel_scope.cancel()  # a stop: what is still on its way is not followed

    async def _take(self) -> None:
        async with self._new_runs:
            async for new_run in self._new_runs:
                self._follow(new_run)
        self._sending = False
        self._wake()

    def _follow(self, new_run: NewRun) -> None:
        now = self._clock.now()
        policy = self._policy
        item = _Follow(
            due=now + policy.poll_s,
            seq=next(self._seq),
            original=new_run.original,
            new_run_id=new_run.new_run_id,
            deadline=now + policy.timeout_s,
            interval=policy.poll_s,
        )
        heapq.heappush(self._queue, item)
        if self._nap is not None and item.due < self._nap_until:
            self._nap.cancel()  # it is due before the one we sleep for
        self._wake()

    async def _follow_all(self) -> None:
        """Poll each followed run when it is due; a stop cancels this wherever it waits."""
        while True:
            if not self._queue:
                if not self._sending:
                    return
                await self._changed.wait()
                continue
            head = self._queue[0]
            if head.due > self._clock.now():
                await self._nap_for(head.due)
                continue
            heapq.heappop(self._queue)
            try:
                await self._poll(head)
            except OutageError as exc:
                self._stop.outage(exc)
                return

    async def _nap_for(self, until: float) -> None:
        with anyio.CancelScope() as self._nap:
            self._nap_until = until
            await self._clock.sleep(until - self._clock.now())
        self._nap = None

    async def _poll(self, item: _Follow) -> None:
        answer = await call_with_retries(
            self._retrying,
            lambda: self._client.get_run(item.new_run_id),
            clock=self._clock,
            max_attempts=self._policy.max_attempts,
        )
        self.polls += 1
        match answer:
            case RunObject(status=status) if status in OUTCOMES:
                self._finish(item, OUTCOMES[status], answer)
            case RunObject():
                self._again_or_give_up(item, answer)
            case Failed(http_status=404):
                self._finish(item, "lost", None)
            case Abort():
                self._stop.refused(answer)
            case Failed() | Retryable():
                # Not knowing is no answer: ask again later, until the wait times out.
                log.warning("wait.poll_failed", new_run_id=item.new_run_id, error=answer.error)
                self._again_or_give_up(item, None)
        await self._yield_to_reruns()

    def _again_or_give_up(self, item: _Follow, seen: RunObject | None) -> None:
        now = self._clock.now()
        if now >= item.deadline:
            self._finish(item, "timed_out", seen)
            return
        item.interval = min(MAX_POLL_S, item.interval * GROWTH)
        item.due = min(item.deadline, now + item.interval)
        item.seq = next(self._seq)
        heapq.heappush(self._queue, item)

    def _finish(self, item: _Follow, outcome: str, run: RunObject | None) -> None:
        self._finished.send_nowait(
            Finished(
                at=utc_now(),
                original_run_id=item.original,
                new_run_id=item.new_run_id,
                outcome=outcome,
                final_status=run.status if run else None,
                error_message=run.error_message if run else None,
                duration_in_seconds=run.duration_in_seconds if run else None,
            )
        )

    async def _yield_to_reruns(self) -> None:
        """While reruns are still being sent, leave them three slots in four."""
        rate = self._retrying.pacer.rate.rate
        if self._sending and rate:
            await self._clock.sleep((1 / POLL_SHARE - 1) / rate)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
