"""One API call, paced and retried: the loop every request but a rerun goes through.

A rerun keeps its own loop in the engine, because each of its attempts is written to the
ledger before it leaves. Reads (listing executions, polling a run) need no record: they
are idempotent, so this loop only waits its turn at the shared `Pacer`, and on a
`Retryable` answer honours the Retry-After (which pauses every request of the process)
or else backs off with full jitter, up to `max_attempts` attempts in all.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .api import Retryable, answer_of
from .pacing import Backoff, Clock, Pacer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryNote:
    """Told to `on_retry` before the wait that precedes attempt `attempt + 1`."""

    attempt: int  # the attempt that failed, 1-based
    outcome: Retryable
    delay_s: float  # our own backoff; 0 when a Retry-After paused every request instead
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
    attempt = 0
    while True:
        attempt += 1
        await pacer.turn()
        outcome = await fn()
        retry_after = outcome.retry_after if isinstance(outcome, Retryable) else None
        # Reads spend the token's one budget, so what their answers say counts too.
        paused = pacer.observe(answer_of(outcome), retry_after).paused
        if not isinstance(outcome, Retryable) or attempt >= max_attempts:
            return outcome
        # With a Retry-After the pause is the wait: the next `turn` sits it out, with
        # every other request; without, our own backoff.
        delay = 0.0 if retry_after is not None else backoff.delay(attempt, rng)
        if on_retry is not None:
            on_retry(RetryNote(attempt, outcome, delay, paused))
        if delay > 0:
            await clock.sleep(delay)
