"""The adaptive rate and the circuit: pure control logic, on a fake clock, against a pure
token-bucket server (the simulator's own arithmetic), so no test waits on a real one."""

from __future__ import annotations

import anyio
import pytest

from orchestrator.pacing import AdaptiveRate, Answer, Circuit, Pacer, RateHint
from orchestrator.simulator.bucket import full_bucket, take
from tests.fakeclock import FakeClock

OK = Answer()
THROTTLED = Answer(throttled=True)
FAULT = Answer(fault=True)


def test_a_stated_server_limit_sets_the_rate_under_the_ceiling() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(ceiling=None, clock=clock)
    change = rate.observe(Answer(hint=RateHint(per_second=50.0)))
    assert rate.rate == 50.0
    assert change is not None
    assert change.reason == "server_headers"
    capped = AdaptiveRate(ceiling=20.0, clock=clock)
    capped.observe(Answer(hint=RateHint(per_second=50.0)))
    assert capped.rate == 20.0


def test_an_overshoot_cuts_to_just_under_the_goodput_it_measured() -> None:
    """Sending 100/s where the server lets 50/s through: every other answer is a 429."""
    clock = FakeClock()
    rate = AdaptiveRate(ceiling=100.0, clock=clock)
    changes = []
    for n in range(60):
        clock.advance(0.01)
        changes.append(rate.observe(THROTTLED if n % 2 else OK))
    first, measured = [c for c in changes if c is not None][:2]
    assert first.new == pytest.approx(100.0 * AdaptiveRate.CUT)  # too early to measure
    assert measured.new == pytest.approx(50.0 * AdaptiveRate.CUT, rel=0.05)


def test_with_no_rate_the_first_throttle_halves_what_was_sent() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(ceiling=None, clock=clock)
    for _ in range(100):  # 40 answers a second
        clock.advance(0.025)
        rate.observe(OK)
    rate.observe(THROTTLED)
    # Half of the ~40/s sent over the last quarter second (its edges and the 429 included).
    assert rate.rate is not None
    assert 20.0 <= rate.rate <= 25.0


def test_throttles_within_the_cooldown_are_one_overshoot() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(ceiling=100.0, clock=clock)
    for _ in range(100):
        clock.advance(0.02)
        rate.observe(OK)
    rate.observe(THROTTLED)
    after_first = rate.rate
    clock.advance(0.1)
    assert rate.observe(THROTTLED) is None
    assert rate.rate == after_first


def test_success_climbs_back_slowly_and_slower_under_retry_after() -> None:
    clock = FakeClock()
    fast = AdaptiveRate(ceiling=100.0, clock=clock)
    slow = AdaptiveRate(ceiling=100.0, clock=clock)
    for limiter, retry_after in ((fast, False), (slow, True)):
        limiter.rate = 40.0
        limiter.observe(THROTTLED, retry_after=retry_after)
    start_fast, start_slow = fast.rate, slow.rate
    for _ in range(10):
        clock.advance(1.0)
        fast.observe(OK)
        slow.observe(OK)
    assert start_fast is not None
    assert fast.rate is not None
    assert start_slow is not None
    assert slow.rate is not None
    assert fast.rate / start_fast == pytest.approx(1.01**10, rel=0.01)
    assert slow.rate / start_slow < fast.rate / start_fast
    assert fast.rate <= 100.0


def test_the_rate_never_stalls_below_the_floor() -> None:
    clock = FakeClock()
    rate = AdaptiveRate(ceiling=1.0, clock=clock)
    for _ in range(200):
        clock.advance(5.0)
        rate.observe(THROTTLED)
    assert rate.rate == AdaptiveRate.FLOOR


def run_against_token_bucket(
    limit: float, *, ceiling: float | None, seconds: float, burst: int, retry_after: bool
) -> tuple[int, int]:
    """Send as fast as the adaptive rate allows (one in flight, answers take 5 ms) to a
    server that is a token bucket; (accepted, throttled) after `seconds` of virtual time."""
    clock = FakeClock(start=0.0)
    rate = AdaptiveRate(ceiling=ceiling, clock=clock)
    bucket = full_bucket(burst, 0.0)
    accepted = throttled = 0
    pause_until = 0.0
    next_slot = 0.0
    while clock.now() < seconds:
        current = rate.rate
        slot = max(next_slot, pause_until, clock.now())
        next_slot = slot + (1 / current if current else 0.005)
        clock.advance(slot - clock.now() + 0.005)
        verdict, bucket = take(bucket, slot, rate=limit, size=burst)
        if verdict.allowed:
            accepted += 1
            rate.observe(OK)
        else:
            throttled += 1
            rate.observe(THROTTLED, retry_after=retry_after)
            if retry_after:
                pause_until = clock.now() + max(1.0, verdict.wait_s)
    return accepted, throttled


@pytest.mark.parametrize("retry_after", [False, True])
@pytest.mark.parametrize("ceiling", [None, 200.0])
def test_aimd_finds_an_unknown_limit_with_few_429s(
    retry_after: bool, ceiling: float | None
) -> None:
    """Against a 50/s bucket that states nothing, a minute of sending gets at least 90%
    of the ideal through with at most 5% of requests answered 429."""
    accepted, throttled = run_against_token_bucket(
        50.0, ceiling=ceiling, seconds=60.0, burst=50, retry_after=retry_after
    )
    ideal = 50.0 * 60.0
    assert accepted >= 0.90 * ideal
    assert throttled <= 0.05 * (accepted + throttled)


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
    events = pacer.observe(Answer(hint=RateHint(per_second=4.0)))
    assert events.rate is not None
    assert pacer.bucket.per_second == 4.0
    start = clock.now()
    for _ in range(5):
        await pacer.turn()
    # The answer that told the limit was to a request just sent: the next waits its turn.
    assert clock.now() - start == pytest.approx(5 * 0.25)


def test_pacer_retry_after_pauses_and_says_so_once() -> None:
    clock = FakeClock()
    pacer = Pacer(None, clock)
    assert pacer.observe(THROTTLED, retry_after=3.0).paused
    assert not pacer.observe(THROTTLED, retry_after=1.0).paused
    assert pacer.pause.remaining == 3.0
