"""The adaptive rate and the circuit: pure control logic on a fake clock, and the whole
pacing loop against the limiter shapes real APIs use, in virtual time (tests/helpers/ratemodel.py),
so no test waits on a real limiter."""

from __future__ import annotations

import math

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.api.headers import RateHint
from orchestrator.api.outcomes import Answer
from orchestrator.pacing.adaptive import AdaptiveRate, Phase
from orchestrator.pacing.circuit import Circuit
from orchestrator.pacing.pacer import LONE_MOST, TIMING_MOST, Pacer
from orchestrator.pacing.proof import proven_rate
from orchestrator.pacing.ramp import Ramp
from orchestrator.simulator.limiters import (
    GCRA,
    Background,
    FixedWindow,
    Limiter,
    SlidingCounter,
    SlidingLog,
)
from tests.helpers.fakeclock import FakeClock
from tests.helpers.ratemodel import ModelRun, Network, run_model, whole_seconds

THROTTLED = Answer(throttled=True)
FAULT = Answer(fault=True)


# ---- the controller's rules, one at a time -----------------------------------------------


def test_a_stated_server_limit_sets_the_rate_under_the_ceiling() -> None:
    rate = AdaptiveRate(ceiling=None, now=0.0)
    change = rate.learn_limit(50.0, 0.0)
    assert rate.rate == 50.0
    assert change is not None
    assert change.reason == "server_headers"
    capped = AdaptiveRate(ceiling=20.0, now=0.0)
    capped.learn_limit(50.0, 0.0)
    assert capped.rate == 20.0


def test_knowing_nothing_the_rate_ramps_up_from_a_modest_start_to_no_limit() -> None:
    rate = AdaptiveRate(ceiling=None, now=0.0)
    assert rate.rate == Ramp.START
    rate.tick(Ramp.DOUBLING_S)
    assert rate.rate == pytest.approx(2 * Ramp.START)
    change = rate.tick(1.0)  # twenty doublings later: past any limit worth pacing at
    assert rate.rate is None
    assert change is not None
    assert change.new is None


def test_with_no_limit_left_answers_are_taken_without_judging_a_window() -> None:
    rate = AdaptiveRate(ceiling=None, now=0.0)
    rate.tick(1.0)
    assert rate.rate is None
    for n in range(100):
        assert rate.observe(1.0 + n / 1000, 1.0 + n / 1000, throttled=False).change is None
    assert rate.phase is Phase.RAMP


def test_a_window_at_a_low_rate_needs_fewer_answers() -> None:
    """Eight answers at 0.25/s would be a 32 s window; a climb from a deep cut would take
    minutes. Below 2/s a window needs 4 s of answers, at least three."""
    rate = _held(lo=0.25)
    rate._hold_windows = 100  # no probe in the way
    end = _window(rate, 0.0, every=4.0, answers=3)
    assert rate._held == 1
    assert end == 12.0


def test_a_429_on_the_ramp_steps_down_to_half_the_rate_it_was_sent_at() -> None:
    rate = AdaptiveRate(ceiling=None, now=0.0)
    for at in (0.0, 0.01, 0.02):  # sent 100/s apart
        rate.sent(at)
    rate.observe(0.025, 0.02, throttled=True)
    assert rate.phase is Phase.DESCEND
    assert rate.hi == pytest.approx(100.0)
    assert rate.rate == pytest.approx(50.0)


def _window(rate: AdaptiveRate, start: float, *, every: float, answers: int) -> float:
    """Clean answers to requests sent from `start`, `every` seconds apart; the end."""
    at = start
    for _ in range(answers):
        at += every
        rate.observe(at, at - every / 2, throttled=False)
    return at


def test_a_clean_window_proves_its_rate_and_the_bracket_is_bisected_in_ratio() -> None:
    rate = AdaptiveRate(ceiling=None, now=0.0)
    rate.sent(0.0)
    rate.sent(0.01)
    rate.observe(0.012, 0.01, throttled=True)  # 100/s is too fast: hi = 100
    assert rate.phase is Phase.DESCEND
    low = rate.rate
    assert low == pytest.approx(50.0)
    _window(rate, 0.02, every=1 / low, answers=int(low * 1.2))
    assert rate.lo == pytest.approx(low)
    assert rate.phase is Phase.TRY
    assert rate.rate == pytest.approx(math.sqrt(low * 100.0))


def _at_the_hair(*, retry_after: bool) -> AdaptiveRate:
    rate = AdaptiveRate(ceiling=50.0, now=0.0)
    seen = rate.observe(0.05, 0.02, throttled=True, retry_after=retry_after)
    assert seen.change is not None
    assert seen.change.settled
    assert rate.rate == pytest.approx(50.0 * (1 - AdaptiveRate.HAIR))
    return rate


@pytest.mark.parametrize("retry_after", [False, True])
def test_a_stated_limit_holds_a_hair_under_it_through_timing_429s(retry_after: bool) -> None:
    # A limiter with no burst refuses a request that a timer woke a millisecond late: a
    # lone 429 now and then, at any rate near the limit. Retried in the next slot, it
    # costs one slot; a cut would cost minutes of a slower rate, and a probe a 429.
    rate = _at_the_hair(retry_after=retry_after)
    hair = rate.rate
    assert hair is not None
    at = 0.05
    for n in range(1, 1201):  # 24 s at the hair, two 429s in a row in every 200 answers
        at += 1 / hair
        rate.observe(at, at - 0.01, throttled=n % 200 in (0, 1), retry_after=retry_after)
        assert rate.rate == hair
    assert rate.phase is Phase.HOLD


def test_a_stated_limit_held_clean_steps_a_hair_under_it_at_its_first_429() -> None:
    rate = AdaptiveRate(ceiling=50.0, now=0.0)
    end = _window(rate, 0.0, every=0.02, answers=60)
    assert (rate.phase, rate.rate) == (Phase.HOLD, 50.0)
    seen = rate.observe(end + 0.02, end + 0.01, throttled=True, retry_after=True)
    assert seen.change is not None
    assert seen.change.settled
    assert rate.rate == pytest.approx(50.0 * (1 - AdaptiveRate.HAIR))
    assert rate.phase is Phase.HOLD


def test_a_stated_limit_that_another_client_shares_is_left_for_its_share() -> None:
    rate = _at_the_hair(retry_after=False)
    at = 0.05
    for n in range(100):  # every other request refused: half the limit is taken
        at += 0.02
        rate.observe(at, at - 0.01, throttled=n % 2 == 0)
    assert rate.rate is not None
    assert rate.rate < 50.0 * (1 - AdaptiveRate.HAIR) * 0.95


def _trying(rate_per_s: float, lo: float, hi: float, at: float = 0.0) -> AdaptiveRate:
    """A controller trying `rate_per_s` inside the bracket [lo, hi], its window from `at`."""
    rate = AdaptiveRate(ceiling=None, now=0.0)
    rate.lo, rate.hi = lo, hi
    rate.phase, rate.rate = Phase.TRY, rate_per_s
    rate._start_window(at)
    return rate


def test_a_failed_try_goes_back_to_the_proven_rate_at_once() -> None:
    rate = _trying(49.0, 40.0, 60.0)
    rate.observe(0.05, 0.02, throttled=True)
    assert rate.phase is Phase.RECOVER
    assert rate.rate == 40.0
    assert rate.hi == 49.0


def _held(at: float = 0.0, lo: float = 50.0) -> AdaptiveRate:
    rate = AdaptiveRate(ceiling=None, now=at)
    rate.lo, rate.hi, rate.settled = lo, lo * 1.02, True
    rate._hold(lo, at)
    return rate


def test_a_lone_429_while_holding_is_timing_noise() -> None:
    rate = _held()
    rate.observe(0.1, 0.05, throttled=True)
    end = _window(rate, 0.1, every=0.02, answers=60)
    assert rate.rate == 50.0
    assert rate.phase is Phase.HOLD
    assert end > 1.0


def test_a_few_429s_while_holding_trim_the_rate_a_little() -> None:
    rate = _held()
    for n in range(3):
        rate.observe(0.1 + n / 10, 0.05 + n / 10, throttled=True)
    _window(rate, 0.4, every=0.02, answers=60)
    assert rate.rate is not None
    assert 0.9 * 50.0 <= rate.rate <= 50.0 * (1 - AdaptiveRate.TRIM)
    assert rate.hi == 50.0
    assert rate.settled


def test_at_a_few_per_second_a_429_after_answers_let_through_trims_the_held_rate() -> None:
    # A bucket's saved-up request hid an overshoot of the window that proved 2.2/s against
    # a limit of 2: held there, one request in twelve is refused, and no timing makes a
    # 429 at a few a second. Trimmed at the first, not after a second window of them, by
    # the share refused (at most OVER_TRIM: another 429 trims again).
    rate = _held(lo=2.2)
    end = _window(rate, 0.0, every=1 / 2.2, answers=11)
    seen = rate.observe(end + 0.45, end + 0.4, throttled=True)
    assert seen.change is not None
    assert seen.change.reason == "trim"
    assert rate.rate == pytest.approx(2.2 * (1 - min(1 / 12, AdaptiveRate.OVER_TRIM)))
    assert (rate.phase, rate.hi) == (Phase.HOLD, 2.2)


def test_at_a_few_per_second_a_429_after_a_longer_clean_hold_trims_less() -> None:
    rate = _held(lo=2.2)
    end = _window(rate, 0.0, every=1 / 2.2, answers=30)  # (a probe comes after 32)
    assert rate.phase is Phase.HOLD
    rate.observe(end + 0.45, end + 0.4, throttled=True)
    assert rate.rate == pytest.approx(2.2 * (1 - 1 / 31))


def test_refused_again_while_recovering_after_answers_let_through_trims_the_proven_rate() -> None:
    """A recovery waits out a limiter in debt after a failed try: refusals in a row, then
    clean. Refused again after answers let through, a second on: the rate it recovers at
    is itself over the limit."""
    rate = _trying(2.6, 2.2, 3.0)
    rate.observe(0.5, 0.4, throttled=True)
    assert (rate.phase, rate.rate) == (Phase.RECOVER, 2.2)
    end = _window(rate, 0.5, every=1 / 2.2, answers=5)
    assert rate.phase is Phase.RECOVER
    seen = rate.observe(end + 0.45, end + 0.4, throttled=True)
    assert seen.change is not None
    assert seen.change.reason == "trim"
    assert seen.change.settled  # the bracket closes here: a run learns what it settles on
    assert (rate.phase, rate.hi) == (Phase.HOLD, 2.2)
    # One in six refused: a coarse share of few answers, trimmed by OVER_TRIM at most.
    assert rate.rate == pytest.approx(2.2 * (1 - AdaptiveRate.OVER_TRIM))


def test_a_limiter_in_debt_after_a_failed_try_is_waited_out_not_trimmed() -> None:
    rate = _trying(49.0, 40.0, 60.0)
    rate.observe(0.05, 0.02, throttled=True)
    at = 0.05
    for _ in range(3):  # refused in a row while the limiter refills
        at += 0.025
        rate.observe(at, at - 0.01, throttled=True)
    assert (rate.phase, rate.rate) == (Phase.RECOVER, 40.0)


def test_a_probe_whose_window_is_too_short_to_prove_it_goes_back_where_it_came_from() -> None:
    """At 2/s a window is 8 answers: a request saved up in the bucket hides an overshoot
    of 12%, so a clean window 4% above the held rate proves nothing. When the step after
    it fails, the rate holds where it was, not at the probe's."""
    rate = _held(lo=1.9)
    at = 0.0
    while rate.phase is Phase.HOLD:
        at = _window(rate, at, every=1 / 1.9, answers=1)
    assert rate.phase is Phase.TRY
    probe = rate.rate
    assert probe == pytest.approx(1.9 * (1 + AdaptiveRate.PROBE_STEP))
    at = _window(rate, at, every=1 / probe, answers=8)
    assert rate.phase is Phase.TRY
    assert rate.rate is not None
    assert rate.rate > probe
    rate.observe(at + 0.4, at + 0.3, throttled=True)
    assert (rate.phase, rate.rate) == (Phase.RECOVER, 1.9)
    _window(rate, at + 0.4, every=1 / 1.9, answers=AdaptiveRate.SHORT_ANSWERS)
    assert (rate.phase, rate.rate) == (Phase.HOLD, 1.9)


def test_a_probe_whose_window_proves_it_is_kept() -> None:
    """At 50/s a window is 50 answers and proves a rate 4% up: a clean probe holds."""
    rate = _held(lo=48.0)
    at = 0.0
    while rate.phase is Phase.HOLD:
        at = _window(rate, at, every=1 / 48.0, answers=1)
    probe = rate.rate
    assert probe is not None
    at = _window(rate, at, every=1 / probe, answers=60)
    rate.observe(at + 0.02, at + 0.01, throttled=True)
    assert (rate.phase, rate.rate) == (Phase.RECOVER, probe)


def test_most_requests_refused_at_a_proven_rate_means_the_limit_fell() -> None:
    rate = _held()
    for n in range(8):
        rate.observe(0.1 + n / 100, 0.05 + n / 100, throttled=n % 2 == 0)
    assert rate.phase is Phase.DESCEND
    assert rate.rate is not None
    assert rate.rate < 50.0
    assert not rate.settled


def test_429s_in_a_row_ask_for_a_pause_that_doubles() -> None:
    rate = _held()
    rate.phase = Phase.DESCEND
    pauses = [rate.observe(0.1 + n, 0.05 + n, throttled=True).holdoff_s for n in range(4)]
    assert pauses[0] == 0.0
    assert pauses[2] == pytest.approx(2 * pauses[1])
    assert pauses[3] == pytest.approx(2 * pauses[2])


def test_no_cut_goes_below_a_twentieth_of_the_best_second_of_the_last_minute() -> None:
    rate = _held(lo=100.0)
    for n in range(100):  # a second at 100/s
        rate.observe(n / 100, n / 100 - 0.005, throttled=False)
    for n in range(400):  # then everything refused
        rate.observe(1 + n / 10, 1 + n / 10 - 0.005, throttled=True)
    assert rate.rate is not None
    assert rate.rate >= 100 * AdaptiveRate.FLOOR_SHARE - 1e-9


def test_an_answer_to_a_request_sent_before_a_change_says_nothing_of_the_new_rate() -> None:
    rate = _trying(49.0, 40.0, 60.0, at=1.0)
    assert rate.observe(1.1, 0.9, throttled=True).change is None
    assert rate.phase is Phase.TRY


# ---- the whole loop against each limiter shape, in virtual time -------------------------


def _efficiency(run: ModelRun, ids: int, allowance: int, limit: float) -> float:
    """The ideal span (what the limiter allows at once goes at once, then one every
    1 / limit) over the span the limiter saw."""
    assert run.finished
    return (ids - allowance) / limit / run.span


SHAPES_50 = {
    "gcra burst 1": (lambda: GCRA(50, 1), 2),
    "gcra burst 10": (lambda: GCRA(50, 10), 11),
    "gcra burst = rate": (lambda: GCRA(50, 50), 51),
    "sliding counter": (lambda: SlidingCounter(50, 1.0), 50),
}


@pytest.mark.parametrize("shape", SHAPES_50)
def test_an_unknown_limit_of_50_per_s_is_found_and_held(shape: str) -> None:
    make, allowance = SHAPES_50[shape]
    limiter = make()
    run = run_model(limiter, ids=1000)
    sustained = 49.0 if isinstance(limiter, SlidingCounter) else 50.0  # (limit - 1) / window
    assert _efficiency(run, 1000, allowance, sustained) >= 0.93
    assert run.throttled_share <= 0.03


@pytest.mark.parametrize(
    "make",
    [lambda: GCRA(50, 0), lambda: FixedWindow(50, 1.0), lambda: SlidingLog(50, 1.0)],
    ids=["gcra burst 0", "fixed window", "sliding log"],
)
def test_strict_limiters_are_held_within_a_tenth_of_their_limit(make: type[Limiter]) -> None:
    """No burst to absorb timing noise, or a window spent at once: the rate holds a little
    lower, but holds, with few 429s."""
    run = run_model(make(), ids=1000)
    assert _efficiency(run, 1000, 50, 50.0) >= 0.8
    late = [ok for at, ok in run.arrivals if at > 10.0]
    assert len(late) / (run.arrivals[-1][0] - 10.0) >= 0.9 * 50
    assert run.throttled_share <= 0.04


def test_a_window_that_counts_refused_requests_does_not_lock_the_client_out() -> None:
    run = run_model(SlidingLog(50, 1.0, count_refused=True), ids=1000)
    assert _efficiency(run, 1000, 50, 50.0) >= 0.75
    assert run.throttled_share <= 0.05


@pytest.mark.parametrize("burst", [0, 1, 2])
def test_an_unknown_limit_of_2_per_s_is_found_within_30_seconds(burst: int) -> None:
    run = run_model(GCRA(2, burst), ids=150)
    assert run.accepted_between(30.0, 60.0) >= 0.9 * 2 * 30
    assert _efficiency(run, 150, burst + 1, 2.0) >= 0.9


@pytest.mark.parametrize("burst", [1, 2, 10])
def test_an_unknown_limit_of_2_per_s_once_found_costs_few_429s(burst: int) -> None:
    """A clean window of eight answers at 2/s cannot prove a rate within a bucket's burst:
    once the limit is found, a rate it let a little over is trimmed at its first 429, and
    a probe it cannot prove costs one 429, not a search above it."""
    run = run_model(GCRA(2, burst), ids=300)
    late = [ok for at, ok in run.arrivals if at >= 10.0]
    assert late.count(False) <= 0.04 * len(late)
    assert run.accepted_between(30.0, 150.0) >= 0.9 * 2 * 120


def test_retry_after_pauses_cost_a_run_but_do_not_stall_it() -> None:
    run = run_model(GCRA(50, 50), ids=1000, retry_after=whole_seconds)
    assert _efficiency(run, 1000, 51, 50.0) >= 0.93
    assert run.throttled_share <= 0.02


@pytest.mark.parametrize(
    "case",
    [(50.0, 10, 25.0, 8.0, 1000, 10.0), (2.0, 1, 1.0, 30.0, 150, 60.0)],
    ids=["50 per s", "2 per s"],
)
def test_capacity_another_client_frees_is_found_again(
    case: tuple[float, int, float, float, int, float],
) -> None:
    """Beside another client using part of the limit, then alone once it stops: back to
    0.9 of the whole limit within `within_s` seconds of the stop."""
    limit, burst, load, stop_s, ids, within_s = case
    background = Background(GCRA(limit, burst), load, stop_s)
    run = run_model(background, ids=ids)
    window = max(1.0, 10 / limit)
    start = stop_s + within_s - window
    assert run.accepted_between(start, start + window) >= 0.9 * limit * window
    assert run.throttled_share <= 0.10


def test_a_stated_ceiling_bounds_the_rate_and_429s_slow_it_until_they_stop() -> None:
    """--rate equal to the limit, another client taking half of it for 10 s: the rate
    falls to what is left, never rises above the ceiling, and climbs back to it."""
    run = run_model(Background(GCRA(50, 10), 25.0, 10.0), ids=1000, ceiling=50.0)
    assert all(rate is not None and rate <= 50.0 for _, rate in run.rates)
    assert min(rate for at, rate in run.rates if rate is not None and at < 10.0) < 40.0
    assert run.accepted_between(19.0, 20.0) >= 0.9 * 50


def test_a_known_limit_is_held_exactly_on_a_limiter_with_a_burst() -> None:
    run = run_model(GCRA(50, 10), ids=1000, ceiling=50.0)
    assert _efficiency(run, 1000, 11, 50.0) >= 0.99
    assert run.throttled_share < 0.01


def test_a_known_limit_on_a_strict_limiter_is_not_cut_below_it_by_timing_noise() -> None:
    # (The opening found it strict: no request above the pacing let through.)
    run = run_model(GCRA(50, 0), ids=1000, ceiling=50.0, bursty=False)
    assert _efficiency(run, 1000, 1, 50.0) >= 0.8
    assert min(rate for at, rate in run.rates if rate is not None and at > 5.0) >= 0.9 * 50


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.floats(min_value=0.5, max_value=500.0),
    burst_share=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_the_held_rate_stays_within_a_tenth_under_the_limit(
    limit: float, burst_share: float, seed: int
) -> None:
    """Steady state, for any limit from 0.5 to 500/s and any burst from 0 to the limit:
    over the second half of a long run, what gets through is 0.9 to 1.0 of the limit
    (plus what a burst saved up lets through at once), with few 429s."""
    burst = round(burst_share * limit)
    seconds = max(60.0, 400 / limit)
    network = Network(one_way_s=min(0.0005, 0.05 / limit), jitter_s=min(0.00005, 0.005 / limit))
    run = run_model(
        GCRA(limit, burst),
        ids=math.ceil(limit * seconds * 2),
        network=network,
        seed=seed,
        max_seconds=seconds,
    )
    end = run.arrivals[-1][0]
    half = end / 2
    through = run.accepted_between(half, end + 1e-9)
    assert through >= 0.9 * limit * (end - half)
    assert through <= limit * (end - half) + burst + 1
    late = [ok for at, ok in run.arrivals if at >= half]
    assert late.count(False) <= 0.10 * len(late)


# ---- the circuit and the pacer that composes them ---------------------------------------


def test_circuit_opens_after_threshold_faults_in_a_row() -> None:
    circuit = Circuit(threshold=3, clock=FakeClock())
    assert [circuit.record(fault=True) for _ in range(2)] == [None, None]
    assert circuit.record(fault=False) is None  # a success in between starts over
    assert [circuit.record(fault=True) for _ in range(3)] == [None, None, "opened"]
    assert circuit.is_open


async def test_open_circuit_lets_one_probe_through_after_its_backoff() -> None:
    clock = FakeClock(autojump=False)
    circuit = Circuit(threshold=1, clock=clock, base_s=2.0)
    circuit.record(fault=True)
    passed: list[int] = []

    async def worker(n: int) -> None:
        await circuit.wait()
        passed.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(worker, n)
        await anyio.wait_all_tasks_blocked()
        assert passed == []
        clock.advance(2.0)
        await anyio.wait_all_tasks_blocked()
        assert len(passed) == 1  # the probe
        assert circuit.record(fault=True) == "opened"  # the probe failed: open for longer
        assert circuit.backoff_s == 4.0
        clock.advance(4.0)
        await anyio.wait_all_tasks_blocked()
        assert len(passed) == 2  # the next probe
        assert circuit.record(fault=False) == "closed"
    assert len(passed) == 3


def test_circuit_threshold_zero_is_off() -> None:
    circuit = Circuit(threshold=0, clock=FakeClock())
    assert all(circuit.record(fault=True) is None for _ in range(100))
    assert not circuit.is_open


async def test_pacer_takes_the_server_limit_into_its_bucket() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock)
    sent_at = await pacer.turn()
    events = pacer.observe(Answer(hint=RateHint(per_second=4.0)), sent_at=sent_at)
    assert events.rate is not None
    assert pacer.bucket.per_second == 4.0
    start = clock.now()
    for _ in range(5):
        await pacer.turn()
    # The answer that told the limit was to a request just sent: the next waits its turn.
    assert clock.now() - start == pytest.approx(5 * 0.25)


async def test_pacer_a_cut_applies_to_the_next_request_not_after_every_slot_given() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock)
    for _ in range(3):
        await pacer.turn()
    pacer.bucket.set_rate(1.0)
    before = clock.now()
    await pacer.turn()
    assert clock.now() - before == pytest.approx(1.0 - 0.01, abs=0.011)


def test_pacer_retry_after_pauses_and_says_so_once() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock)
    assert pacer.observe(THROTTLED, retry_after=3.0).paused
    assert not pacer.observe(THROTTLED, retry_after=1.0).paused
    assert pacer.pause.remaining == 3.0


def test_a_lone_429s_one_second_retry_after_holds_only_its_request() -> None:
    """A token bucket that refused one request a hair early says `Retry-After: 1`, the
    least a whole-second header can: the next request is on time, so only the refused
    one waits; a second 429 in a row means the limiter is spent, and pauses every one."""
    clock = FakeClock()
    pacer = Pacer(50.0, clock)  # at a stated rate: a 429 there is timing, or another client
    pacer.observe(Answer())
    lone = pacer.observe(THROTTLED, retry_after=1.0)
    assert (lone.paused, lone.wait_s, pacer.pause.remaining) == (False, 1.0, 0.0)
    again = pacer.observe(THROTTLED, retry_after=1.0)
    assert (again.paused, again.wait_s, pacer.pause.remaining) == (True, 0.0, 1.0)


def test_under_a_stated_ceiling_a_lone_429_at_the_hair_holds_one_request() -> None:
    """A stated rate that meets a 429 holds a hair under it: a 429 there is timing at a
    strict limiter, not a spent one, so it pauses nothing else."""
    clock = FakeClock()
    pacer = Pacer(50.0, clock)
    pacer.observe(Answer())
    pacer.observe(THROTTLED)  # no Retry-After: the stated rate steps a hair under
    assert pacer.rate.phase is Phase.HOLD
    pacer.observe(Answer())
    events = pacer.observe(THROTTLED, retry_after=1.0)
    assert (events.paused, events.wait_s, pacer.pause.remaining) == (False, 1.0, 0.0)


@pytest.mark.parametrize(("stated", "most"), [(50.0, TIMING_MOST), (10.0, LONE_MOST)])
def test_429s_that_are_not_rare_pause_every_request_even_lone(stated: float, most: int) -> None:
    """Under a known limit, timing makes a 429 now and then; several among the last
    answers say another client shares the limit, and pausing everyone is how
    uncoordinated clients make room. Over 20/s timing 429s come bunched by a busy
    machine, so more of them are rare there. (At a strict limiter: at one that lets
    bursts through, they start sharing the limit, tests/pacing/test_share.py.)"""
    clock = FakeClock()
    pacer = Pacer(stated, clock)
    pacer.rate.bursty = False
    held = []
    for _ in range(most + 1):
        pacer.observe(Answer())
        held.append(pacer.observe(THROTTLED, retry_after=1.0).wait_s)
    assert held == [1.0] * most + [0.0]
    assert pacer.pause.remaining == 1.0


def test_with_no_limit_known_lone_429s_of_the_search_hold_only_their_request() -> None:
    """With no limit stated or learned, 429s inside the bracket are this client's own
    tries above the limit: each holds only its request, however many, for a pause of
    everyone would let the limiter save up a burst that passes for a higher rate."""
    clock = FakeClock()
    pacer = Pacer(None, clock)
    pacer.observe(Answer())
    pacer.observe(THROTTLED)  # the ramp's overshoot: a descent from it
    while pacer.rate.phase is Phase.DESCEND:  # until a window comes back clean
        pacer.observe(Answer())
        clock.advance(0.1)
    assert pacer.rate.cap is None
    held = []
    for _ in range(3):
        pacer.observe(Answer())
        events = pacer.observe(THROTTLED, retry_after=1.0)
        held.append((events.paused, events.wait_s))
        clock.advance(0.1)
    assert held == [(False, 1.0)] * 3
    assert pacer.pause.remaining == 0.0


def test_a_trusted_limit_holds_with_no_probe_until_its_trust_ends() -> None:
    """A limit learned by an earlier run: held at once, and probed above only after the
    trust (so the next run's first minute meets no 429 of its own making)."""
    rate = AdaptiveRate(None, 0.0)
    rate.trust(8.0, 0.0, 60.0)
    assert (rate.rate, rate.phase, rate.cap) == (8.0, Phase.HOLD, None)
    now, changes = 0.0, []
    while now < 90.0:
        now += 1 / 8.0
        seen = rate.observe(now, now, throttled=False)
        if seen.change is not None:
            changes.append((now, seen.change.reason, seen.change.new))
    assert changes
    assert changes[0][0] >= 60.0
    assert changes[0][1:] == ("probe", pytest.approx(8.0 * (1 + AdaptiveRate.PROBE_STEP)))


def test_a_trusted_limit_is_capped_by_a_stated_ceiling() -> None:
    rate = AdaptiveRate(5.0, 0.0)
    rate.trust(8.0, 0.0, 60.0)
    assert (rate.rate, rate.trusted) == (5.0, 8.0)


def test_a_429_while_ramping_pauses_every_request_lone_or_not() -> None:
    """Over the limit from a ramp, the limiter is spent: the pause lets it refill."""
    clock = FakeClock()
    pacer = Pacer(None, clock)
    pacer.observe(Answer())
    events = pacer.observe(THROTTLED, retry_after=1.0)
    assert (events.paused, events.wait_s, pacer.pause.remaining) == (True, 0.0, 1.0)


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [(THROTTLED, 2.0), (Answer(fault=True), 1.0)],
    ids=["a longer Retry-After", "a 503's"],
)
def test_a_longer_retry_after_or_a_503s_pauses_every_request(
    answer: Answer, retry_after: float
) -> None:
    clock = FakeClock()
    pacer = Pacer(50.0, clock)
    pacer.observe(Answer())
    events = pacer.observe(answer, retry_after=retry_after)
    assert (events.paused, events.wait_s, pacer.pause.remaining) == (True, 0.0, retry_after)


# ---- the limit a run publishes: what the limiter proved ----------------------------------


def test_proven_rate_is_what_got_through_between_two_429s() -> None:
    # 429s at 0 and 10 s; 101 let through strictly between: at least 10/s.
    through = [0.05 + i * 0.099 for i in range(101)]
    assert proven_rate(through, [0.0, 10.0], min_span_s=5.0) == pytest.approx(10.0)
    # Too close together to say anything, or only one 429: nothing proven.
    assert proven_rate(through, [0.0, 4.0], min_span_s=5.0) is None
    assert proven_rate(through, [3.0], min_span_s=5.0) is None


def test_proven_rate_takes_the_best_span() -> None:
    # A slow stretch (5/s over 0-10 s) proves less than a pushed one (10/s over 10-20 s).
    through = [i * 0.2 + 0.1 for i in range(50)] + [10.05 + i * 0.1 for i in range(99)]
    assert proven_rate(through, [0.0, 10.0, 20.0], min_span_s=5.0) == pytest.approx(9.8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limiter=st.sampled_from(["gcra", "fixed", "sliding"]),
    rate=st.floats(0.5, 100.0),
    burst=st.integers(0, 20),
    gaps=st.lists(st.floats(0.0001, 3.0), min_size=20, max_size=400),
    pauses=st.lists(st.integers(0, 399), max_size=10),
)
def test_proven_rate_never_claims_more_than_a_token_bucket_allows(
    limiter: str, rate: float, burst: int, gaps: list[float], pauses: list[int]
) -> None:
    """Whatever the client does (bursts, slow spells, pauses), what two 429s bracket is a
    lower bound on a GCRA's rate; on window limiters, within what one window can hold."""
    shapes: dict[str, Limiter] = {
        "gcra": GCRA(rate, burst),
        "fixed": FixedWindow(rate, 1.0),
        "sliding": SlidingLog(rate, 1.0),
    }
    shape = shapes[limiter]
    now, through, refused = 0.0, [], []
    for i, gap in enumerate(gaps):
        now += gap + (2.0 if i in pauses else 0.0)
        (through if shape.decide(now).allowed else refused).append(now)
    proven = proven_rate(through, refused, min_span_s=10.0)
    if proven is None:
        return
    # A window limiter may let a whole window's worth through on each side of a span.
    slack = 0.0 if limiter == "gcra" else (math.ceil(rate) + 1) / 10.0
    assert proven <= rate + slack + 1e-9


def test_a_held_rate_steps_down_at_the_second_429_with_retry_after_not_the_first() -> None:
    """A lone 429's short Retry-After holds only its own request, so the first in a hold
    is timing, judged with the window; a second says the hold is over the limit."""
    rate = _held(lo=50.0)
    rate.observe(0.1, 0.09, throttled=False)
    rate.observe(0.12, 0.11, throttled=True, retry_after=True)
    assert rate.rate == 50.0
    rate.observe(0.14, 0.13, throttled=False)
    rate.observe(0.16, 0.15, throttled=True, retry_after=True)
    assert rate.rate == pytest.approx(50.0 * (1 - AdaptiveRate.COSTLY_TRIM))
