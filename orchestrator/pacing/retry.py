"""The attempt loop every request goes through: a rerun, a `--wait` poll, a `select` page.

`Retrying` makes the loop's decisions, one for every request of a process: what an answer
tells pacing (logged once here, and a circuit that opens counted, whoever sent the
request), and how long the next attempt waits. A 429 is pacing, not a fault: the next
free slot of the (now slower) pacer is its wait, and it does not count as an attempt; a
Retry-After pauses every request of the process, or for a lone 429's short one only its
own; anything else backs off with full jitter.

`call_with_retries` is the whole loop for reads (listing, polling): they are idempotent,
so they need no record. A rerun keeps its own loop (`rerun.attempts`), because each of its
attempts is written to the ledger before it leaves, over the same `Retrying`.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from orchestrator.api.outcomes import Retryable, answer_of
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.clock import Clock
from orchestrator.pacing.events import log_pacing
from orchestrator.pacing.pacer import Pacer

# Requests one call may make at most, 429s included (they do not count against
# max_attempts: they are pacing), so the loop stays bounded.
MAX_CALLS = 50

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Heard:
    """What one answer did to pacing."""

    throttled: bool  # a 429
    retry_after: float | None  # seconds, when a Retryable answer carried one
    wait_s: float  # a lone 429's short Retry-After: only its request waits this long
    paused: bool  # the Retry-After lengthened the pause of every request


class Retrying:
    """The attempt loop's decisions, shared by every request of a process."""

    def __init__(self, pacer: Pacer, backoff: Backoff, rng: random.Random) -> None:
        self.pacer = pacer
        self._backoff = backoff
        self._rng = rng
        self.circuit_opened = 0  # times the circuit opened, on any request's answer

    def hear(self, outcome: object, sent_at: float) -> Heard:
        """Tell pacing what an answer to a request sent at `sent_at` says of the server's
        limit and health, and the operator what pacing decided."""
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        # Reads spend the token's one budget, so what their answers say counts too.
        answer = answer_of(outcome)
        events = self.pacer.observe(answer, retry_after, sent_at)
        log_pacing(events, self.pacer.circuit)
        if events.circuit == "opened":
            self.circuit_opened += 1
        return Heard(answer.throttled, retry_after, events.wait_s, events.paused)

    def delay(self, heard: Heard, tries: int) -> float:
        """How long a request waits before it goes again, after `tries` attempts that
        counted: a lone 429's own short Retry-After; nothing more after a 429 or a
        Retry-After (the pacer's next slot, or the shared pause, is the wait); else our
        backoff."""
        if heard.wait_s:
            return heard.wait_s
        if heard.throttled or heard.retry_after is not None:
            return 0.0
        return self._backoff.delay(tries, self._rng)


@dataclass(frozen=True, slots=True)
class RetryNote:
    """Told to `on_retry` before the wait that precedes attempt `attempt + 1`."""

    attempt: int  # the attempt that failed, 1-based
    outcome: Retryable
    delay_s: float  # our backoff, or a lone 429's short Retry-After; 0 when all were paused
    paused: bool  # the Retry-After lengthened the shared pause


async def call_with_retries(
    retrying: Retrying,
    fn: Callable[[], Awaitable[T | Retryable]],
    *,
    clock: Clock,
    max_attempts: int,
    on_retry: Callable[[RetryNote], None] | None = None,
) -> T | Retryable:
    """Call `fn` until it answers anything but `Retryable`, or `max_attempts` are spent;
    the last answer either way."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    attempt = tries = 0
    while True:
        attempt += 1
        sent_at = await retrying.pacer.turn()
        outcome = await fn()
        heard = retrying.hear(outcome, sent_at)
        tries += not heard.throttled
        if not isinstance(outcome, Retryable) or tries >= max_attempts or attempt >= MAX_CALLS:
            return outcome
        delay = retrying.delay(heard, tries)
        if on_retry is not None:
            on_retry(RetryNote(attempt, outcome, delay, heard.paused))
        if delay > 0:
            await clock.sleep(delay)
