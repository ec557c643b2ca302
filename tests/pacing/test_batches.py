"""Batches: after a window limiter's opening, its room goes as it comes back.

The pure rules first, then the real client against the simulator's window limiters over
loopback, in virtual time."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from orchestrator.api.outcomes import Answer
from orchestrator.pacing.batches import MOST_MARGIN, Batches
from orchestrator.pacing.pacer import Pacer
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import debug_events
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import known_rate_run, make_ids


def _batches() -> Batches:
    """After an opening of 20 at 20/s, all sent at 0.04: the first batch from 1.045 (a
    period and the margin, 5 ms, after)."""
    batches = Batches.after_opening(20, [0.04] * 20, 20.0, now=0.2)
    assert batches is not None
    assert batches.slot(0.5) == pytest.approx(1.045)
    return batches


def test_an_opening_that_let_one_through_calls_for_no_batches() -> None:
    assert Batches.after_opening(1, [0.0], 2.0, now=0.5) is None


def test_each_request_of_the_first_batch_goes_a_period_after_one_of_the_opening() -> None:
    """A window that counts from its first request turns a period after it; a sliding
    log lets each of the opening's requests go a period after it came."""
    opening = [0.01 * i for i in range(20)]
    batches = Batches.after_opening(20, list(reversed(opening)), 20.0, now=0.3)
    assert batches is not None
    assert (batches.size, batches.period, batches.start) == (20, 1.0, 0.3)
    for sent in opening:
        turn = batches.slot(0.3)
        assert turn == pytest.approx(sent + 1.0 + batches.margin)
        batches.take(turn)


def test_requests_refused_after_the_opening_hold_their_room_too() -> None:
    """A sliding log that counts refused requests holds them a period as well: the last
    requests of the first batch keep a period from them."""
    opening = [0.005 * i for i in range(20)]
    batches = Batches.after_opening(20, [*opening, 0.12, 0.14], 20.0, now=0.15)
    assert batches is not None
    batches.counted(0.16)  # refused after batches began, before their first request
    turns = []
    for _ in range(20):
        turn = batches.slot(0.2)
        batches.take(turn)
        turns.append(turn)
    assert turns[0] == pytest.approx(opening[3] + 1.0 + batches.margin)
    assert turns[-3:] == pytest.approx([t + 1.0 + batches.margin for t in (0.12, 0.14, 0.16)])


def _send_batch(batches: Batches, at: float, *, write_s: float = 0.0) -> None:
    """A batch's turns from `at`, a millisecond apart, each leaving `write_s` after."""
    for i in range(batches.size):
        turn = at + i * 0.001
        assert batches.slot(turn) == turn
        batches.take(turn)
        batches.left(turn, turn + write_s)


def test_a_batch_goes_at_once_and_each_request_a_period_after_the_one_a_batch_before() -> None:
    batches = _batches()
    assert (batches.size, batches.period) == (20, 1.0)
    _send_batch(batches, 1.05)
    margin = batches.margin
    assert batches.slot(1.1) == pytest.approx(2.05 + margin)
    batches.take(2.3)  # late: the next one a period after the second of the last batch
    assert batches.slot(2.0) == pytest.approx(2.051 + margin)


def test_a_request_leaves_no_sooner_than_a_period_after_the_one_a_batch_before_left() -> None:
    """The records of the first batch took 30 ms to write, the next one's none: its turns
    come a period after the first's turns, but it leaves a period after they left."""
    batches = _batches()
    _send_batch(batches, 1.05, write_s=0.03)
    turn = batches.slot(1.2)
    batches.take(turn)
    assert batches.due(turn) == pytest.approx(1.05 + 0.03 + 1.0 + batches.margin)
    assert batches.due(1.06) == pytest.approx(1.045), "a period after the opening left"
    assert batches.due(9.0) == -math.inf, "no such turn"


def test_a_429_after_half_a_batch_got_through_widens_the_margin_once_per_batch() -> None:
    batches = _batches()
    first = batches.margin
    for _ in range(25):
        batches.let_through()
    assert batches.refused(sent_at=2.05, now=2.06)
    assert batches.margin == 2 * first
    assert batches.size == 20
    assert batches.refused(sent_at=2.055, now=2.061), "the same early batch"
    assert batches.margin == 2 * first


def test_a_refused_request_took_no_room_and_goes_again_before_the_next_batch() -> None:
    """Pushed to the next batch, it would push one request of every batch after it."""
    batches = _batches()
    _send_batch(batches, 1.05)
    for _ in range(20):
        batches.let_through()
    _send_batch(batches, 2.06)
    assert batches.slot(2.1) == pytest.approx(3.06 + batches.margin)
    assert batches.refused(sent_at=2.079, now=2.09)  # the last of the second batch
    # Its place is free again: it may go at once, a period after the first batch's last.
    assert batches.slot(2.1) == 2.1


def test_a_batch_larger_than_the_window_shrinks_to_what_got_through() -> None:
    """An opening that straddled a fixed window's turn let two windows' room through."""
    batches = Batches.after_opening(40, [0.05] * 40, 20.0, now=0.2)
    assert batches is not None
    for _ in range(20):
        batches.let_through()
    assert batches.refused(sent_at=2.1, now=2.11)
    assert (batches.size, batches.period) == (20, 1.0)


def test_a_429_before_half_a_batch_got_through_says_no_window() -> None:
    batches = _batches()
    for _ in range(9):
        batches.let_through()
    assert not batches.refused(sent_at=1.06, now=1.07)


def test_a_margin_past_its_most_says_no_window() -> None:
    batches = _batches()
    kept: list[float] = []
    at = 2.0
    while True:
        for _ in range(10):
            batches.let_through()
        at += 1.0
        if not batches.refused(sent_at=at, now=at + 0.01):
            break
        kept.append(batches.margin)
    most = MOST_MARGIN * batches.period
    assert len(kept) >= 3
    assert all(margin <= most for margin in kept)
    assert batches.margin > most


async def test_batches_end_when_the_limit_changes() -> None:
    """Pacing alone (no server): an opening at 20/s that a window held, then another limit
    (the server's, or another process's through the shared schedule): even pacing again."""
    clock = FakeClock()
    pacer = Pacer(20.0, clock)
    unanswered = [await pacer.turn()]
    for _ in range(20):  # 20 above the rate, each let through
        while (extra := pacer.extra()) is None:
            pacer.observe(Answer(), sent_at=unanswered.pop(0))
        unanswered.append(extra)
    for sent_at in unanswered:
        pacer.observe(Answer(), sent_at=sent_at)
    assert pacer.extra() is None, "the opening took its 20"
    for _ in range(2):  # two paced requests refused: the window holds the burst
        pacer.observe(Answer(throttled=True), sent_at=await pacer.turn())
    await pacer.turn()
    assert pacer.min_gap() == 0, "in batches: a batch goes at once"
    # (Asserted on behaviour, not on the debug log: an in-process run before this test
    # may have left structlog filtering at info.)
    pacer.rate.learn_limit(10.0, clock.now())
    await pacer.turn()
    assert pacer.min_gap() > 0, "paced evenly again"


@pytest.mark.parametrize("limiter", ["fixed-window", "sliding-log"])
async def test_a_windows_room_goes_in_batches_and_the_run_loses_no_window(
    tmp_path: Path, limiter: str
) -> None:
    """200 IDs against 20 a second: the first 20 at once, then 20 a window, each batch as
    the room comes back. Paced evenly, the last request went at 10.0 s; the ideal, 9.0."""
    posts, _ = await known_rate_run(tmp_path, 200, limiter=limiter, window_s=1.0)
    start = posts[0][0]
    span = posts[-1][0] - start
    assert span <= (200 - 20) / 20.0 * 1.02
    assert sum(status == 429 for _, status in posts) <= 5  # the opening's, as before
    # Every window after the first but the last takes its room in one batch, nearly all
    # at once.
    through = [at - start for at, status in posts if status == 202]
    per_second = Counter(int(at) for at in through)
    assert all(per_second[s] == 20 for s in range(1, int(span)))
    first_of = {int(at): at for at in reversed(through)}
    at_once = [
        sum(1 for at in through if first_of[s] <= at < first_of[s] + 0.05)
        for s in range(1, int(span))
    ]
    # (A request refused after the opening keeps its place a period on: a log that counts
    # refused requests holds it too.)
    assert all(n >= 18 for n in at_once)


async def test_a_sliding_counter_ends_batches_and_is_paced_evenly(tmp_path: Path) -> None:
    """A sliding counter weighs the last window into this one: its first batch gets one
    or two requests through, and even pacing takes over at the rate, uncut."""
    posts, _ = await known_rate_run(tmp_path, 200, limiter="sliding-counter", window_s=1.0)
    span = posts[-1][0] - posts[0][0]
    assert span <= (200 - 20) / 20.0 / 0.75
    assert sum(status == 429 for _, status in posts) <= 20


async def test_batches_are_logged_at_debug(tmp_path: Path) -> None:
    """The real CLI at --log-level debug, against a fixed window of 20 a second."""
    config = SimConfig(
        accept_any=True, rate=20.0, limiter="fixed-window", window_s=1.0, rate_limit_headers="none"
    )
    async with RunningSimulator(config) as sim:
        events = await debug_events(tmp_path, make_ids(60), sim, "20/s")
    batches = [e for e in events if e["event"] == "rate.batches"]
    assert len(batches) == 1
    # 20 a window; up to twice that when the opening straddled a turn of the window.
    assert 20 <= batches[0]["size"] <= 40
    assert batches[0]["period_s"] == batches[0]["size"] / 20
