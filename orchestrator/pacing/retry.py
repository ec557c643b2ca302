"""One API call, paced and retried: the loop every request but a rerun goes through.

A rerun keeps its own loop in the engine, because each of its attempts is written to the
ledger before it leaves. Reads (listing executions, polling a run) need no record: they
are idempotent, so this loop only waits its turn at the shared `Pacer`, and on a
`Retryable` answer honours the Retry-After (which pauses every request of the process)
or else backs off with full jitter, up to `max_attempts` attempts in all. A 429 is pacing,
not a fault: it waits for the next free slot and does not count as an attempt.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from orchestrator.api.outcomes import Retryable, answer_of
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.clock import Clock
from orchestrator.pacing.pacer import Pacer, log_pacing

# Requests one call may make at most, 429s included (they do not count against
# max_attempts: they are pacing), so the loop stays bounded.
MAX_CALLS = 50

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryNote:
    """Told to `on_retry` before the wait that precedes attempt `attempt + 1`."""

    attempt: int  # the attempt that failed, 1-based
    outcome: Retryable
    delay_s: float  # our backoff, or a lone 429's short Retry-After; 0 when all were paused
    paused: bool  # the Retry-After lengthened the shared pause


async def call_with_retries(
    pacer: Pacer,
    fn: Callable[[], Awaitable[T | Retryable]],
    *,
    clock: Clock,
    backoff: Backoff,
    rng: random.Random,
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
        sent_at = await pacer.turn()
        outcome = await fn()
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        # Reads spend the token's one budget, so what their answers say counts too.
        answer = answer_of(outcome)
        events = pacer.observe(answer, retry_after, sent_at)
        log_pacing(events, pacer)
        throttled = answer.throttled
        tries += not throttled
        if not isinstance(outcome, Retryable) or tries >= max_attempts or attempt >= MAX_CALLS:
            return outcome
        # A 429 said "not now": the next free slot of the (now slower) pacer is the wait;
        # so is the pause a Retry-After sets, with every other request, or for a lone
        # 429's short one this request's own. Else our backoff.
        if events.wait_s:
            delay = events.wait_s
        else:
            delay = 0.0 if throttled or retry_after is not None else backoff.delay(tries, rng)
        if on_retry is not None:
            on_retry(RetryNote(attempt, outcome, delay, events.paused))
        if delay > 0:
            await clock.sleep(delay)
