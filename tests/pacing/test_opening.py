"""The opening burst: a run that knows its rate takes what the limiter saved up, once.

The pure rules first, then the real client against the simulator's limiters over
loopback, in virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ExitCode
from orchestrator.outcome import exit_code
from orchestrator.pacing.opening import Opening, Refusal
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import debug_events
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import known_rate_run, make_ids, rerun
from tests.helpers.sharedkit import pacers_on_one_store


def test_without_the_servers_count_one_goes_over_then_two_more_per_answer() -> None:
    opening = Opening.at(50.0, 0.0)
    assert opening.credit == 50
    opening.note_sent(extra=False)  # the first request, on its slot
    assert opening.may_send(0.0)
    opening.note_sent(extra=True)
    assert not opening.may_send(0.0), "nothing more before an answer"
    assert opening.answer(0.001, 0.0, throttled=False) is Refusal.NOT_OURS
    sent = 0
    while opening.may_send(0.001):
        opening.note_sent(extra=True)
        sent += 1
    assert sent == 2  # 2 + 2 x 1 answer = 4 in all
    opening.answer(0.002, 0.0, throttled=False)
    while opening.may_send(0.002):
        opening.note_sent(extra=True)
        sent += 1
    assert sent == 4


def test_a_second_of_the_rate_at_most_and_for_a_second_at_most() -> None:
    opening = Opening.at(4.0, 0.0)
    for _ in range(10):
        opening.answer(0.0, 0.0, throttled=False)
    taken = 0
    while opening.may_send(0.0):
        opening.note_sent(extra=True)
        taken += 1
    assert taken == 4
    assert not opening.open
    late = Opening.at(50.0, 0.0)
    late.answer(0.5, 0.0, throttled=False)
    assert not late.may_send(1.01)


def test_the_servers_remaining_says_how_many_go() -> None:
    opening = Opening.at(2.0, 0.0, remaining=10)
    taken = 0
    while opening.may_send(0.0):
        opening.note_sent(extra=True)
        taken += 1
    assert taken == 10
    # An answer that says fewer are left holds the rest.
    fewer = Opening.at(50.0, 0.0, remaining=40)
    fewer.note_sent(extra=True)
    fewer.answer(0.001, 0.0, throttled=False, remaining=0)
    assert not fewer.may_send(0.001)


def test_a_429_in_the_opening_says_the_burst_is_spent_and_ends_it() -> None:
    opening = Opening.at(50.0, 0.0)
    opening.note_sent(extra=False)
    opening.note_sent(extra=True)
    opening.answer(0.001, 0.0, throttled=False)
    assert opening.answer(0.002, 0.0, throttled=True) is Refusal.SPENT
    assert not opening.open
    assert not opening.may_send(0.002)


def test_paced_429s_before_the_burst_is_paid_back_are_still_the_bursts() -> None:
    """A window limiter refills only as the window moves: 20 let through at 20/s are
    paid back a second after the opening began, and one interval more (the window may
    have begun a little before)."""
    opening = Opening.at(20.0, 10.0)
    for _ in range(20):
        opening.answer(10.01, 10.0, throttled=False)
    assert opening.answer(10.02, 10.0, throttled=True) is Refusal.SPENT
    assert opening.paid_back() == pytest.approx(11.05)
    # The first could be a token bucket's, which takes the next one on time.
    assert opening.answer(10.1, 10.05, throttled=True) is Refusal.SPENT
    assert opening.answer(10.15, 10.1, throttled=True) is Refusal.PAYBACK
    assert opening.answer(11.2, 11.1, throttled=True) is Refusal.NOT_OURS


def test_a_fault_ends_the_opening() -> None:
    opening = Opening.at(50.0, 0.0)
    opening.fault(0.0)
    assert not opening.may_send(0.0)


async def test_a_known_rate_takes_a_token_buckets_burst_at_once(tmp_path: Path) -> None:
    """GCRA with a burst of 10: 11 go at the first instant, then the rate; the run ends
    the 11 sooner that the limiter allows, with only the opening's overshoot refused."""
    posts, ids = await known_rate_run(tmp_path, 120, limiter="gcra", burst=10)
    start = posts[0][0]
    at_once = [status for at, status in posts if at - start < 0.01 and status == 202]
    assert len(at_once) == 11
    span = posts[-1][0] - start
    ideal = (len(ids) - 11) / 20.0
    assert span <= ideal * 1.02
    assert sum(status == 429 for _, status in posts) <= 8


async def test_against_a_limiter_with_no_burst_the_opening_costs_one_429(tmp_path: Path) -> None:
    posts, ids = await known_rate_run(tmp_path, 60, limiter="gcra", burst=0)
    assert sum(status == 429 for _, status in posts) == 1
    span = posts[-1][0] - posts[0][0]
    assert span <= (len(ids) - 1) / 20.0 * 1.04  # held a hair under the rate at most


@pytest.mark.parametrize("limiter", ["fixed-window", "sliding-log"])
async def test_a_window_holds_the_burst_until_it_is_paid_back(tmp_path: Path, limiter: str) -> None:
    """A window's first 20 go at once; the paced requests it refuses after them wait for
    the window, not a backoff, and cut nothing: the run is no longer than an even one."""
    posts, ids = await known_rate_run(tmp_path, 80, limiter=limiter, window_s=1.0)
    start = posts[0][0]
    assert sum(1 for at, status in posts if at - start < 0.01 and status == 202) == 20
    assert sum(status == 429 for _, status in posts) <= 5
    assert posts[-1][0] - start <= (len(ids) - 1) / 20.0 * 1.04


async def test_the_servers_stated_limit_and_remaining_open_the_burst_with_no_429(
    tmp_path: Path,
) -> None:
    """No --rate: the first answer states the limit (X-RateLimit-*) and what is left, and
    exactly that much goes at once: no request is refused."""
    run_ids = make_ids(60)
    config = SimConfig(
        accept_any=True, rate=20.0, burst=10, rate_limit_headers="x", request_log_limit=10_000
    )
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, tmp_path / "ledger.jsonl", run_ids, clock=clock)
    assert exit_code(done.result) == ExitCode.OK
    posts = [(e.at, e.status) for e in sim.state.request_log if e.method == "POST"]
    assert [status for _, status in posts] == [202] * len(run_ids)
    start = posts[0][0]
    assert sum(1 for at, _ in posts if at - start < 0.01) == 11
    assert posts[-1][0] - start <= (len(run_ids) - 11) / 20.0 * 1.02


async def test_no_opening_while_another_process_sends_on_the_shared_schedule(
    tmp_path: Path,
) -> None:
    """A limiter that another process keeps busy has saved up no burst: only the process
    that found the token's schedule idle opens with one."""
    clock = FakeClock()
    first, second = await pacers_on_one_store(tmp_path, clock, 10.0, 2)
    await first.turn()
    await second.turn()
    assert first.extra() is not None
    assert second.extra() is None


async def test_the_opening_is_logged_at_debug_when_it_starts_and_ends(tmp_path: Path) -> None:
    """The real CLI at --log-level debug, against a limiter with a burst of 10 at 20/s:
    rate.opening says the rate and the most it sends above it, rate.opened what went."""
    config = SimConfig(accept_any=True, rate=20.0, burst=10, rate_limit_headers="none")
    async with RunningSimulator(config) as sim:
        events = await debug_events(tmp_path, make_ids(30), sim, "20/s")
    opening = [e for e in events if e["event"] == "rate.opening"]
    opened = [e for e in events if e["event"] == "rate.opened"]
    assert [(e["per_s"], e["most"]) for e in opening] == [(20.0, 20)]
    assert len(opened) == 1
    # The first request and the burst of 10, and a paced one or two if the machine is slow.
    assert 11 <= opened[0]["let_through"] <= 13
    assert 10 <= opened[0]["above"] <= 20
