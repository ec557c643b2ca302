"""Token bucket, shared pause, backoff and Retry-After arithmetic, on a fake clock."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.api.headers import MAX_RETRY_AFTER_S, parse_retry_after
from orchestrator.pacing.backoff import Backoff, Pause
from orchestrator.pacing.bucket import MAX_SEND_LAG_S, SendTimer, TokenBucket
from orchestrator.pacing.clock import RealClock
from orchestrator.pacing.pacer import CAP_MARGIN, SEND_SLACK, Pacer
from orchestrator.units import format_rate, parse_rate
from tests.helpers.fakeclock import FakeClock


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("60/min", 1.0), ("5/s", 5.0), ("3600/h", 1.0), ("none", None), (" 90 / MIN ", 1.5)],
)
def test_parse_rate_accepts_every_unit(text: str, per_second: float | None) -> None:
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("text", ["", "60", "60/day", "-1/s", "0/s", "fast", "1e3/s"])
def test_parse_rate_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_format_rate_reads_back() -> None:
    assert format_rate(parse_rate("60/min")) == "1/s"
    assert format_rate(parse_rate("30/min")) == "30/min"
    assert format_rate(None) == "none"
    assert format_rate(4.812234, digits=3) == "4.81/s"
    assert format_rate(1234.5, digits=3) == "1230/s"
    assert format_rate(0.8333333, digits=3) == "50/min"


async def test_token_bucket_spaces_requests_evenly() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=4.0, clock=clock)
    times = []
    for _ in range(9):
        await bucket.acquire()
        times.append(clock.now())
    gaps = [round(b - a, 9) for a, b in itertools.pairwise(times)]
    assert gaps == [0.25] * 8


async def test_token_bucket_burst_allows_that_many_at_once_after_idle() -> None:
    clock = FakeClock()
    bucket = TokenBucket(per_second=2.0, clock=clock, burst=3)
    clock.advance(10)
    start = clock.now()
    for _ in range(3):
        await bucket.acquire()
    assert clock.now() == start
    await bucket.acquire()
    assert clock.now() == pytest.approx(start + 0.5)


async def test_token_bucket_shared_by_concurrent_workers_never_exceeds_rate() -> None:
    clock = FakeClock(autojump=False)
    bucket = TokenBucket(per_second=10.0, clock=clock)
    granted: list[float] = []
    start = clock.now()

    async def worker() -> None:
        for _ in range(5):
            await bucket.acquire()
            granted.append(clock.now())

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(worker)
        while len(granted) < 20:
            await anyio.wait_all_tasks_blocked()
            clock.advance(0.05)
    # The n-th grant, whichever worker takes it, never comes before start + n / rate.
    for n, t in enumerate(sorted(granted)):
        assert t >= start + n * 0.1 - 1e-9


def test_no_rate_means_no_wait() -> None:
    assert TokenBucket(None, FakeClock()).per_second is None


async def test_the_first_request_goes_at_once() -> None:
    clock = FakeClock()
    await TokenBucket(per_second=0.1, clock=clock).acquire()
    assert clock.slept == []


async def test_pause_holds_until_its_end_and_never_shortens() -> None:
    clock = FakeClock()
    pause = Pause(clock)
    pause.pause_for(30)
    pause.pause_for(5)
    assert pause.remaining == 30
    start = clock.now()
    await pause.wait()
    assert clock.now() == start + 30
    assert pause.remaining == 0


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_is_full_jitter_under_a_growing_cap(retry: int, seed: int) -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    delay = backoff.delay(retry, random.Random(seed))
    assert 0.0 <= delay <= backoff.ceiling(retry) <= 30.0
    assert backoff.ceiling(1) == 0.5
    assert backoff.ceiling(3) == 2.0


NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        (" 2 ", 2.0),
        ("0", 0.0),
        ("Mon, 30 Nov 2026 12:00:45 GMT", 45.0),
        ("Mon, 30 Nov 2026 11:00:00 GMT", 0.0),  # in the past: go now
        ("99999", MAX_RETRY_AFTER_S),
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_both_forms_and_clamps(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


def test_a_request_leaves_a_steady_lag_after_its_slot() -> None:
    timer = SendTimer()
    assert timer.lag(10.0, 10.004) == pytest.approx(0.004)
    assert timer.lag(10.02, 10.021) == pytest.approx(0.004)  # the slowest recent write
    assert timer.lag(10.04, 10.04 + 1.0) == MAX_SEND_LAG_S  # never more than this


def test_a_request_never_leaves_sooner_than_the_gap_after_a_late_one() -> None:
    """At a stated 50/s held 3% under, a strict limiter wants 20 ms between arrivals:
    one that left 3 ms late moves the next ones (due on the grid), and the slots, 20.6 ms
    apart, catch the grid up."""
    timer = SendTimer()
    timer.left(10.003)  # due at 10.000, the machine busy a moment
    left = [10.003]
    for n in range(1, 12):
        left.append(timer.due(10.0 + n / 48.5, 1 / 50.0))
        timer.left(left[-1])
    gaps = [b - a for a, b in itertools.pairwise(left)]
    assert min(gaps) == pytest.approx(0.02)
    assert left[-1] == pytest.approx(10.0 + 11 / 48.5)  # back on the grid


def test_the_least_gap_is_nearly_the_rates_interval_and_never_under_a_stated_limits() -> None:
    pacer = Pacer(None, FakeClock())
    pacer.bucket.set_rate(40.0)
    pacer.rate.rate = 40.0
    assert pacer.min_gap() == pytest.approx((1 - SEND_SLACK) / 40.0)
    stated = Pacer(50.0, FakeClock())
    stated.bucket.set_rate(48.5)  # a hair under the stated limit
    assert stated.min_gap() == pytest.approx((1 + CAP_MARGIN) / 50.0)
    stated.bucket.set_rate(50.0)  # at it: its interval, no more
    assert stated.min_gap() == pytest.approx(1 / 50.0)
    stated.bucket.set_rate(20.0)  # far under it: the rate's own
    assert stated.min_gap() == pytest.approx((1 - SEND_SLACK) / 20.0)
    pacer.bucket.set_rate(None)  # the ramp past any limit: nothing to space
    assert pacer.min_gap() == 0.0


async def test_a_precise_sleep_never_wakes_before_its_deadline() -> None:
    clock = RealClock()
    for ahead in (0.0, 0.0005, 0.003):
        deadline = clock.now() + ahead
        await clock.sleep_until(deadline)
        assert clock.now() >= deadline
