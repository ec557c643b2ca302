"""`call_with_retries`: the paced, retried loop that reads (listing, polling) go through."""

from __future__ import annotations

import itertools
import random

import pytest
from structlog.testing import capture_logs

from orchestrator.api.headers import RateHint
from orchestrator.api.outcomes import Failed, Retryable
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.pacer import Pacer
from orchestrator.pacing.retry import Retrying, RetryNote, call_with_retries
from tests.helpers.fakeclock import FakeClock

BUSY = Retryable(503, "server_error", True)


async def call(
    *answers: object, max_attempts: int = 5, rate: float | None = None
) -> tuple[object, list[float], list[RetryNote], FakeClock]:
    """Call something that gives `answers` in turn; what came back, the clock time of each
    attempt, the retry notes and the clock."""
    clock = FakeClock()
    times: list[float] = []
    queue = list(answers)

    async def fn() -> object:
        times.append(clock.now())
        return queue.pop(0)

    notes: list[RetryNote] = []
    result = await call_with_retries(
        Retrying(Pacer(rate, clock), Backoff(base_s=1.0, cap_s=8.0), random.Random(0)),
        fn,
        clock=clock,
        max_attempts=max_attempts,
        on_retry=notes.append,
    )
    return result, times, notes, clock


async def test_a_retryable_answer_is_retried_with_backoff_until_an_answer() -> None:
    result, times, notes, clock = await call(BUSY, BUSY, "page")
    assert result == "page"
    assert [n.attempt for n in notes] == [1, 2]
    assert all(0 <= n.delay_s <= Backoff(1.0, 8.0).ceiling(n.attempt) for n in notes)
    assert clock.slept == [n.delay_s for n in notes if n.delay_s > 0]
    assert len(times) == 3


async def test_a_final_answer_is_returned_at_once() -> None:
    result, times, notes, _ = await call(Failed(404, "not_found"), "never asked")
    assert result == Failed(404, "not_found")
    assert (len(times), notes) == (1, [])


async def test_the_last_retryable_answer_is_returned_when_attempts_run_out() -> None:
    last = Retryable(502, "server_error", True)
    result, times, notes, _ = await call(BUSY, last, "never asked", max_attempts=2)
    assert result == last
    assert len(times) == 2
    assert len(notes) == 1


async def test_retry_after_pauses_every_request_instead_of_backing_off() -> None:
    throttled = Retryable(429, "rate_limited", True, retry_after=7.0)
    result, times, notes, _ = await call(throttled, "page")
    assert result == "page"
    assert notes == [RetryNote(1, throttled, 0.0, True)]
    assert times[1] - times[0] == pytest.approx(7.0)


async def test_every_attempt_waits_its_turn_at_the_rate() -> None:
    _, times, _, _ = await call(
        Retryable(None, "timeout", True), Retryable(None, "timeout", True), "page", rate=0.5
    )
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 2.0 - 1e-9 for gap in gaps)


async def test_fewer_than_one_attempt_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await call("page", max_attempts=0)


async def test_a_circuit_opened_by_a_read_is_logged_and_counted() -> None:
    """Polls and pages go through the same `Retrying` as reruns: a circuit they open is
    told and counted like one a rerun opens."""
    clock = FakeClock()
    retrying = Retrying(Pacer(None, clock, circuit_threshold=2), Backoff(), random.Random(0))
    answers = [BUSY, BUSY, "run"]

    async def fn() -> object:
        return answers.pop(0)

    with capture_logs() as logs:
        result = await call_with_retries(retrying, fn, clock=clock, max_attempts=5)
    assert result == "run"
    assert retrying.circuit_opened == 1
    assert [e["event"] for e in logs if e["event"].startswith("circuit.")] == [
        "circuit.opened",
        "circuit.closed",
    ]


async def test_a_stated_limit_read_by_a_read_is_logged() -> None:
    clock = FakeClock()
    retrying = Retrying(Pacer(None, clock), Backoff(), random.Random(0))
    stated = Failed(404, "not_found", hint=RateHint(per_second=5.0))

    async def fn() -> object:
        return stated

    with capture_logs() as logs:
        await call_with_retries(retrying, fn, clock=clock, max_attempts=1)
    assert [e["new_per_s"] for e in logs if e["event"] == "rate.from_server"] == [5.0]
