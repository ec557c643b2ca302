"""Sharing a stated limit with other clients of the token (`Phase.SHARE`): the rules on a
fake clock, the fairness they make between two clients, and the pacer's part (requests
scattered in their intervals, a lone Retry-After holding only its own request)."""

from __future__ import annotations

import random

import pytest

from orchestrator.api.headers import RateHint
from orchestrator.api.outcomes import Answer
from orchestrator.pacing.adaptive import AdaptiveRate, Phase, RateChange
from orchestrator.pacing.opening import Opening
from orchestrator.pacing.pacer import Pacer
from orchestrator.pacing.sharing import Sharing
from orchestrator.pacing.window import Window
from tests.helpers.fakeclock import FakeClock

LIMIT = 10.0
HAIR = LIMIT * (1 - AdaptiveRate.HAIR)


def _held_at_the_hair(limit: float = LIMIT) -> AdaptiveRate:
    """Under a stated limit (10/s), held a hair under it after a first 429."""
    rate = AdaptiveRate(ceiling=limit, now=0.0)
    rate.bursty = True
    rate.observe(0.05, 0.02, throttled=True)
    assert rate.phase is Phase.HOLD
    assert rate.rate == pytest.approx(limit * (1 - AdaptiveRate.HAIR))
    return rate


def _sharing() -> tuple[AdaptiveRate, float]:
    """Sharing, just cut from the hair (on its second 429); and the time."""
    rate = _held_at_the_hair()
    at = 0.1
    for n in range(Sharing.MOST * 4):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=n % 4 == 0)
    assert rate.phase is Phase.SHARE
    return rate, at


def test_429s_beyond_timing_under_a_stated_limit_mean_it_is_shared_and_cut_it() -> None:
    rate = _held_at_the_hair()
    at, changes = 0.1, []
    for n in range(Sharing.MOST * 4):
        at += 0.1
        seen = rate.observe(at, at - 0.05, throttled=n % 4 == 0)
        if seen.change is not None:
            changes.append(seen.change)
    assert rate.phase is Phase.SHARE
    assert changes[0].reason == "contended"
    assert changes[0].new == pytest.approx(HAIR * Sharing.CUT)


@pytest.mark.parametrize(("limit", "more"), [(50.0, Sharing.MOST - 2), (10.0, 0)])
def test_a_few_429s_at_the_hair_are_timing_and_cut_nothing(limit: float, more: int) -> None:
    """Above TIMING_ABOVE a second, a strict limiter's timing makes a few 429s at the
    hair (requests under 50 ms apart); at 10/s, a lone one: neither is another client."""
    rate = _held_at_the_hair(limit)
    at = 0.1
    for n in range(40):
        at += 1 / limit
        rate.observe(at, at - 0.01, throttled=n in range(20, 20 + more))  # a few more
    assert rate.phase is Phase.HOLD
    assert rate.rate == pytest.approx(limit * (1 - AdaptiveRate.HAIR))


@pytest.mark.parametrize(("bursty", "shared"), [(None, True), (True, False)])
def test_at_a_few_requests_a_second_a_second_429_means_others_if_they_took_the_opening(
    bursty: bool | None, shared: bool
) -> None:
    """Under TIMING_ABOVE a second no timing makes 429s: where the opening found its burst
    taken, two in the last answers are the others it met. (Held at the hair, a client
    on a steady grid wins the races for the room a bucket gives back and sees few:
    waiting for five, one saw 3 to 4 in 50 for 30 s while the other, sharing, was cut to
    a quarter of the limit.) One that found the burst was alone then: a sliding counter
    refuses a few at the hair by its shape, and five are needed."""
    rate = _held_at_the_hair()
    rate.bursty = bursty
    at = 0.1
    for n in range(40):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=n == 20)  # one more in 40 answers
    assert (rate.phase is Phase.SHARE) is shared


def test_while_sharing_429s_cut_the_rate_once_a_window() -> None:
    """A burst of 429s is one overshoot (or a limiter locked a moment): one cut for it.
    (A cut for each, at 50/s, took a lone client from 48.5/s to 25/s in 0.13 s.)"""
    rate, at = _sharing()
    at, _ = _second(rate, at)
    before = rate.rate
    assert before is not None
    for n in range(5):
        rate.observe(at + 0.2 + n / 100, at + 0.15 + n / 100, throttled=True)
    assert rate.rate == pytest.approx(before * Sharing.CUT)
    end = at + 0.2 + Window.LEAST_S
    rate.observe(end + 0.1, end + 0.05, throttled=True)  # a window later: cut again
    assert rate.rate == pytest.approx(before * Sharing.CUT**2)


def test_while_sharing_each_clean_second_steps_up_by_a_share_of_the_limit() -> None:
    rate, at = _sharing()
    steps = []
    for _ in range(Sharing.CALM + 3):  # (the first second, begun at the cut)
        at, changes = _second(rate, at)
        steps += [c.new - c.old for c in changes if c.new is not None and c.old is not None]
    step, calm = LIMIT * Sharing.STEP, Sharing.CALM
    assert steps[:calm] == pytest.approx([step] * calm)  # additive: the same for every client
    assert steps[calm : calm + 2] == pytest.approx([2 * step, 4 * step])  # alone, it seems


@pytest.mark.parametrize(("remaining", "doubled"), [(0, False), (2, True)])
def test_while_the_server_says_no_room_is_left_the_step_never_doubles(
    remaining: int, doubled: bool
) -> None:
    """No room left, answer after answer: the others still take what this client leaves,
    and a faster step would be a deeper overshoot for all. Room: they are gone."""
    rate, at = _sharing()
    steps = []
    for _ in range(Sharing.CALM + 3):
        at, changes = _second(rate, at, remaining=remaining)
        steps += [c.new - c.old for c in changes if c.new is not None and c.old is not None]
    step = LIMIT * Sharing.STEP
    assert (max(steps) > step * 1.5) is doubled
    assert min(steps) == pytest.approx(step)


def test_sharing_climbs_back_to_the_hair_and_holds_there_once_alone() -> None:
    rate, at = _sharing()
    for _ in range(60):
        at, _ = _second(rate, at)
    assert rate.rate == pytest.approx(HAIR)
    assert rate.phase is Phase.HOLD


def test_two_clients_sharing_a_limit_end_with_nearly_equal_shares() -> None:
    """AIMD's promise: from one client with nearly all of the limit and one with almost
    none, each meeting 429s in proportion to what it sends, they end nearly even."""
    rng = random.Random(7)
    clients = [AdaptiveRate(ceiling=LIMIT, now=0.0) for _ in range(2)]
    credit, through = [0.0, 0.0], [0, 0]
    for client, value in zip(clients, (HAIR, 0.5), strict=True):
        client.bursty, client.phase, client.rate = True, Phase.SHARE, value
        client._start_window(0.0)
    step = 0.01
    for tick in range(int(120 / step)):
        now = tick * step
        rates = [c.rate or 0.0 for c in clients]
        # Over the limit, every request is equally likely refused: scattered in their
        # intervals, neither client wins the races for the room the limiter gives back.
        refused = max(0.0, 1 - LIMIT / sum(rates))
        for n, client in enumerate(clients):
            credit[n] += rates[n] * step
            while credit[n] >= 1:
                credit[n] -= 1
                throttled = rng.random() < refused
                client.observe(now + 0.001, now, throttled=throttled)
                through[n] += now >= 60 and not throttled
    low, high = sorted(through)  # over the last minute
    assert high / low < 1.3
    assert low + high >= 0.9 * LIMIT * 60


def test_a_lone_retry_after_while_sharing_holds_only_its_own_request() -> None:
    clock = FakeClock()
    pacer = Pacer(LIMIT, clock)
    pacer.rate.phase, pacer.rate.rate = Phase.SHARE, 5.0
    events = pacer.observe(Answer(throttled=True), retry_after=1.0, sent_at=clock.now())
    assert events.wait_s == 1.0
    assert not events.paused
    assert pacer.pause.remaining == 0


def test_sharing_a_limiter_with_room_requests_are_scattered_in_their_intervals() -> None:
    clock = FakeClock()
    pacer = Pacer(LIMIT, clock)
    room = Answer(hint=RateHint(per_second=LIMIT, remaining=3))
    pacer.observe(room, sent_at=clock.now())
    assert pacer.rate.bursty
    pacer.rate.phase, pacer.rate.rate = Phase.SHARE, 5.0
    pacer.observe(Answer(), sent_at=clock.now())  # the bucket follows the rate
    interval = 1 / 5.0
    slots = [100.0 + n * interval for n in range(50)]
    offsets = [(pacer.due(slot) - slot) / interval for slot in slots]
    assert all(0 <= x < 1 for x in offsets)
    assert pacer.due(slots[0]) == pacer.due(slots[0])  # the same each time it is asked
    assert max(offsets) - min(offsets) > 0.8  # spread over the interval, not bunched
    assert pacer.min_gap() == 0.0


def test_sharing_a_strict_limiter_requests_keep_to_their_grid() -> None:
    """With no room ever seen (nginx limit_req with no burst), a scattered request would
    be refused for coming early: the grid stays."""
    clock = FakeClock()
    pacer = Pacer(LIMIT, clock)
    pacer.rate.bursty = False  # as the opening found it
    pacer.rate.phase, pacer.rate.rate = Phase.SHARE, 5.0
    pacer.observe(Answer(), sent_at=clock.now())
    assert pacer.due(100.0) == -float("inf")
    assert pacer.min_gap() > 0


def _second(
    rate: AdaptiveRate, start: float, *, remaining: int | None = None
) -> tuple[float, list[RateChange]]:
    """A clean second of answers at the rate, each with the server's `remaining` if given;
    its end, and the changes they made."""
    assert rate.rate is not None
    every = 1 / rate.rate
    at, changes = start, []
    while at < start + Window.LEAST_S:
        at += every
        if remaining is not None:
            rate.room(remaining)
        seen = rate.observe(at, at - every / 2, throttled=False)
        if seen.change is not None:
            changes.append(seen.change)
            break
    return at, changes


def test_at_a_strict_limiter_429s_at_the_hair_are_timing_not_other_clients() -> None:
    rate = _held_at_the_hair()
    rate.bursty = False
    at = 0.1
    for n in range(40):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=n % 8 == 0)  # 5 in 40: a busy machine's timing
    assert rate.phase is Phase.HOLD


def test_429s_beyond_timing_under_a_stated_limit_hold_only_their_own_requests() -> None:
    """Once the limit is seen to be shared at a limiter that lets bursts through, the
    rate's cuts make room for the others; a pause of every worker would hand them it."""
    clock = FakeClock()
    pacer = Pacer(LIMIT, clock)
    pacer.rate.bursty = True
    held = []
    for _ in range(Sharing.MOST + 2):
        pacer.observe(Answer())
        events = pacer.observe(Answer(throttled=True), retry_after=1.0)
        held.append((events.wait_s, events.paused))
    assert pacer.rate.phase is Phase.SHARE
    assert held[-2:] == [(1.0, False)] * 2  # each waits its own Retry-After, alone


@pytest.mark.parametrize(
    ("sent", "extras", "clean", "bursty"),
    [
        (12, 10, 8, True),  # six let through above the pacing: a burst
        (12, 10, 3, False),  # the paced ones and one more: strict
        (12, 10, 0, None),  # nothing let through: others took the burst, nothing known
        (5, 0, 5, None),  # nothing sent above the pacing (no room said): nothing known
    ],
)
def test_the_opening_tells_whether_the_limiter_lets_bursts_through(
    sent: int, extras: int, clean: int, bursty: bool | None
) -> None:
    clock = FakeClock()
    pacer = Pacer(LIMIT, clock)
    opening = Opening.at(LIMIT, clock.now())
    opening.sent, opening.extras, opening.clean = sent, extras, clean
    opening.ended_at = clock.now()
    pacer._judge_burst(opening)
    assert pacer.rate.bursty is bursty


def test_no_room_left_answer_after_answer_under_a_stated_limit_means_it_is_shared() -> None:
    """Beside a client that sends on a steady grid, others meet nearly all the 429s: it
    sees them only as a Remaining that never grows back, which alone a hair under the
    limit of a token bucket it does within 1 / HAIR answers."""
    rate = _held_at_the_hair()
    rate.room(3)  # the limiter had room once: it lets bursts through
    at = 0.1
    for _ in range(Sharing.ROOMLESS):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=False)
        rate.room(0)
    rate.observe(at + 0.1, at + 0.05, throttled=True)
    assert rate.phase is Phase.SHARE


def test_room_growing_back_at_the_hair_is_a_client_alone() -> None:
    rate = _held_at_the_hair()
    at = 0.1
    for n in range(Sharing.ROOMLESS * 2):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=False)
        rate.room(1 if n % 30 == 29 else 0)
    rate.observe(at + 0.1, at + 0.05, throttled=True)
    assert rate.phase is Phase.HOLD
    assert rate.bursty is True


@pytest.mark.parametrize("bursty", [False, None])
def test_a_strict_limiter_never_has_room_and_that_says_nothing_of_others(
    bursty: bool | None,
) -> None:
    """Known to be strict, or never seen with room (others took the opening's burst, or
    it is strict): no room left is no sign of others."""
    rate = _held_at_the_hair()
    rate.bursty = bursty
    at = 0.1
    for _ in range(Sharing.ROOMLESS * 2):
        at += 0.1
        rate.observe(at, at - 0.05, throttled=False)
        rate.room(0)
    rate.observe(at + 0.1, at + 0.05, throttled=True)
    assert rate.phase is Phase.HOLD
