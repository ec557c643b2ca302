"""The limiter shapes as pure state machines: what each lets through, and what it says."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.simulator.limiters import (
    GCRA,
    Background,
    FixedWindow,
    Limiter,
    SlidingCounter,
    SlidingLog,
)

START = 1000.0  # a clock far from zero, as a monotonic one is: float error shows there
SLACK = 1e-6

rates = st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0, 50.0, 120.0])
windows = st.sampled_from([0.5, 1.0, 2.0, 3.0])
bursts = st.integers(min_value=0, max_value=20)
# Gaps between arrivals, in units of the limiter's interval: mostly faster than allowed.
gaps = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=3.0)), min_size=1, max_size=150
)


def arrivals(rate: float, steps: Sequence[float]) -> list[float]:
    return list(itertools.accumulate((step / rate for step in steps), initial=START))[1:]


def feed(limiter: Limiter, times: Sequence[float]) -> list[float]:
    """The arrival times the limiter let through."""
    return [now for now in times if limiter.decide(now).allowed]


@st.composite
def any_limiter(draw: st.DrawFn) -> Limiter:
    rate, window = draw(rates), draw(windows)
    counting = draw(st.booleans())
    makers: list[Callable[[], Limiter]] = [
        lambda: GCRA(rate, draw(bursts)),
        lambda: FixedWindow(rate, window),
        lambda: SlidingLog(rate, window, count_refused=counting),
        lambda: SlidingCounter(rate, window, count_refused=counting),
    ]
    return draw(st.sampled_from(makers))()


# -- GCRA ----------------------------------------------------------------------------


def test_gcra_lets_burst_plus_one_through_at_once_then_spaces_them() -> None:
    gcra = GCRA(rate=2.0, burst=3)
    first = [gcra.decide(START) for _ in range(5)]
    assert [d.allowed for d in first] == [True] * 4 + [False]
    assert [d.remaining for d in first] == [3, 2, 1, 0, 0]
    assert first[0].limit == 4
    assert first[-1].retry_after_s == pytest.approx(0.5)
    assert first[-1].reset_s == pytest.approx(2.0)  # four slots owed, at 0.5 s each
    assert not gcra.decide(START + 0.49).allowed
    assert gcra.decide(START + 0.5).allowed


def test_gcra_burst_zero_spaces_requests_exactly() -> None:
    gcra = GCRA(rate=1 / 3, burst=0)  # float arithmetic must not make 3 s fall short
    assert all(gcra.decide(START + 3.0 * n).allowed for n in range(100))
    assert not gcra.decide(START + 300.0 - 0.01).allowed


@given(rate=rates, burst=bursts, steps=gaps)
def test_gcra_never_passes_more_than_burst_plus_one_plus_rate_times_span(
    rate: float, burst: int, steps: list[float]
) -> None:
    allowed = feed(GCRA(rate, burst), arrivals(rate, steps))
    for i, j in itertools.combinations(range(len(allowed)), 2):
        assert j - i + 1 <= burst + 1 + rate * (allowed[j] - allowed[i]) + SLACK


@given(rate=rates, burst=bursts, steps=gaps)
def test_gcra_full_again_after_its_reset(rate: float, burst: int, steps: list[float]) -> None:
    gcra = GCRA(rate, burst)
    times = arrivals(rate, steps)
    decisions = [gcra.decide(now) for now in times]
    later = times[-1] + decisions[-1].reset_s
    assert [gcra.decide(later).allowed for _ in range(burst + 2)] == [True] * (burst + 1) + [False]


def test_gcra_float_arithmetic_never_falls_short_of_a_slot() -> None:
    gcra = GCRA(1 / 3, 0)  # 3 s a request: 50 steps of 3.0 must each be let through
    assert all(gcra.decide(3.0 * n).allowed for n in range(50))


def test_gcra_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="burst"):
        GCRA(rate=1.0, burst=-1)
    with pytest.raises(ValueError, match="rate"):
        GCRA(rate=0.0, burst=0)


# -- fixed window ----------------------------------------------------------------------


def test_fixed_window_counts_from_its_first_request_and_resets() -> None:
    window = FixedWindow(rate=3.0, window_s=1.0)
    assert [window.decide(START + 0.2).allowed for _ in range(4)] == [True] * 3 + [False]
    refused = window.decide(START + 0.7)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after_s == pytest.approx(0.5)  # the window began at 0.2
    assert refused.reset_s == pytest.approx(0.5)
    assert not window.decide(START + 1.19).allowed
    again = [window.decide(START + 1.2) for _ in range(4)]
    assert [d.allowed for d in again] == [True] * 3 + [False]
    assert [d.remaining for d in again[:3]] == [2, 1, 0]


@given(rate=rates, window_s=windows, steps=gaps)
def test_fixed_window_passes_at_most_its_limit_per_window(
    rate: float, window_s: float, steps: list[float]
) -> None:
    window = FixedWindow(rate, window_s)
    per_window: dict[float, int] = {}
    for now in arrivals(rate, steps):
        decision = window.decide(now)
        if decision.allowed:
            end = round(now + decision.reset_s, 6)
            per_window[end] = per_window.get(end, 0) + 1
    assert all(count <= window.limit for count in per_window.values())


def test_window_limit_is_rate_times_window_and_rate_is_what_it_enforces() -> None:
    assert FixedWindow(rate=50.0, window_s=1.0).limit == 50
    assert SlidingLog(rate=2.0, window_s=3.0).limit == 6
    odd = SlidingCounter(rate=100 / 60, window_s=1.0)  # 1.67 a second rounds to 2
    assert (odd.limit, odd.rate) == (2, 2.0)
    assert FixedWindow(rate=0.1, window_s=1.0).limit == 1  # never zero
    with pytest.raises(ValueError, match="window"):
        SlidingLog(rate=1.0, window_s=0.0)


# -- sliding log ----------------------------------------------------------------------


@given(rate=rates, window_s=windows, counting=st.booleans(), steps=gaps)
def test_sliding_log_never_more_than_its_limit_in_any_window(
    rate: float, window_s: float, counting: bool, steps: list[float]
) -> None:
    log = SlidingLog(rate, window_s, count_refused=counting)
    allowed = feed(log, arrivals(rate, steps))
    for i, j in zip(allowed, allowed[log.limit :], strict=False):
        assert j - i >= window_s - SLACK


def test_sliding_log_counting_refused_keeps_a_hammering_client_out() -> None:
    times = [START + 0.4 * n for n in range(30)]  # 2.5 a second against 2 a second
    strict = SlidingLog(rate=2.0, window_s=1.0, count_refused=True)
    assert feed(strict, times) == times[:2]
    lenient = SlidingLog(rate=2.0, window_s=1.0)
    assert len(feed(lenient, times)) >= 20


# -- sliding counter ------------------------------------------------------------------


def test_sliding_counter_weighs_the_previous_window_as_it_fades() -> None:
    counter = SlidingCounter(rate=10.0, window_s=1.0)
    assert len(feed(counter, [START + 0.1 * n for n in range(10)])) == 10
    refused = counter.decide(START + 1.0)  # the last window still weighs fully
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.1)  # 10 * 0.9 + 1 fits
    assert not counter.decide(START + 1.09).allowed
    assert counter.decide(START + 1.1).allowed


def test_sliding_counter_full_window_waits_into_the_next() -> None:
    counter = SlidingCounter(rate=4.0, window_s=1.0)
    assert len(feed(counter, [START] * 4)) == 4
    refused = counter.decide(START + 0.5)
    # Not at the window's end (4 would weigh fully then) but once 4 * (1 - e) + 1 <= 4.
    assert refused.retry_after_s == pytest.approx(0.5 + 0.25)
    assert not counter.decide(START + 1.2).allowed
    assert counter.decide(START + 1.25).allowed


@given(rate=rates, window_s=windows, steps=gaps)
def test_sliding_counter_passes_at_most_twice_its_limit_in_any_window(
    rate: float, window_s: float, steps: list[float]
) -> None:
    counter = SlidingCounter(rate, window_s)
    allowed = feed(counter, arrivals(rate, steps))
    for i, j in zip(allowed, allowed[2 * counter.limit :], strict=False):
        assert j - i >= window_s - SLACK


# -- every shape --------------------------------------------------------------------------


@given(limiter=any_limiter(), steps=gaps)
def test_retry_after_is_exact(limiter: Limiter, steps: list[float]) -> None:
    """A refused client that comes back after exactly retry_after_s, and sends nothing
    meanwhile, is let through; a little earlier, it is not."""
    for now in arrivals(limiter.rate, steps):
        decision = limiter.decide(now)
        if decision.allowed:
            assert decision.retry_after_s == 0.0
            continue
        assert decision.retry_after_s > 0
        assert copy.deepcopy(limiter).decide(now + decision.retry_after_s).allowed
        early = now + decision.retry_after_s - min(decision.retry_after_s / 2, 1e-3)
        assert not copy.deepcopy(limiter).decide(early).allowed


@given(limiter=any_limiter(), steps=gaps)
def test_remaining_is_what_gets_through_at_once(limiter: Limiter, steps: list[float]) -> None:
    times = arrivals(limiter.rate, steps)
    decisions = [limiter.decide(now) for now in times]
    last = decisions[-1]
    assert 0 <= last.remaining <= last.limit
    burst = [limiter.decide(times[-1]) for _ in range(last.remaining + 1)]
    assert [d.allowed for d in burst] == [True] * last.remaining + [False]


@pytest.mark.parametrize(
    "limiter",
    [
        GCRA(5.0, 0),
        GCRA(5.0, 5),
        FixedWindow(5.0, 1.0),
        SlidingLog(5.0, 1.0),
        SlidingLog(5.0, 1.0, count_refused=True),
    ],
    ids=repr,
)
def test_a_client_at_exactly_the_rate_is_never_refused(limiter: Limiter) -> None:
    assert all(limiter.decide(START + n / 5.0).allowed for n in range(500))


def test_a_sliding_counter_refuses_a_client_at_exactly_the_rate_once_a_window() -> None:
    """The weighted estimate counts the request of exactly one window ago in full."""
    counter = SlidingCounter(5.0, 1.0)
    refused = [n for n in range(50) if not counter.decide(START + n / 5.0).allowed]
    assert sorted(n // 5 for n in refused) == list(
        range(1, 10)
    )  # one in every window but the first


# -- background load ----------------------------------------------------------------------


def test_background_takes_its_load_beside_a_greedy_client_then_stops() -> None:
    background = Background(GCRA(rate=10.0, burst=0), load=5.0, stop_after_s=10.0)
    ours = [START + 0.05 * n for n in range(400)]  # 20 a second against 10 allowed
    allowed = feed(background, ours)
    assert (background.started_at, background.stops_at) == (START, START + 10.0)
    assert (background.accepted, background.refused) == (50, 0)
    assert len([t for t in allowed if t < START + 10.0]) == 50  # what it leaves
    assert len([t for t in allowed if t >= START + 10.0]) == 100  # all of it, once it stops


def test_background_retries_what_is_refused_until_it_stops() -> None:
    background = Background(FixedWindow(rate=10.0, window_s=1.0), load=5.0, stop_after_s=10.0)
    ours = feed(background, [START + 0.05 * n for n in range(200)])
    assert background.refused > 0
    # Ten windows of ten: the two clients share them, and the one retrying after
    # Retry-After gets most of its load (what is still refused at the stop is dropped).
    assert background.accepted + len(ours) == 100
    assert background.accepted >= 45


def test_background_advance_catches_up_between_our_requests() -> None:
    background = Background(FixedWindow(rate=10.0, window_s=1.0), load=4.0)
    background.advance(START + 5.0)  # not started: it starts with our first request
    assert (background.accepted, background.refused) == (0, 0)
    assert background.decide(START).allowed
    background.advance(START + 2.0)
    assert (background.accepted, background.refused) == (9, 0)  # at 0, 0.25, ... 2.0
    assert background.stops_at is None


def test_background_overload_takes_what_is_left() -> None:
    background = Background(SlidingLog(rate=2.0, window_s=1.0), load=4.0, stop_after_s=5.0)
    assert background.decide(START).allowed
    background.advance(START + 100.0)
    assert background.accepted == 9  # 2 a second for 5 s, less the one we took
    assert background.refused > 0


def test_background_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="load"):
        Background(GCRA(1.0, 0), load=0.0)
    with pytest.raises(ValueError, match="stop"):
        Background(GCRA(1.0, 0), load=1.0, stop_after_s=-1.0)
