"""The token bucket that spaces requests, and the send timer that allows for the lag
between a slot and the moment its request really leaves."""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import anyio
import anyio.lowlevel

from orchestrator.pacing.clock import Clock

# A paced request leaves a lag after its slot: the slowest of the last SEND_LAGS durable
# writes, at most MAX_SEND_LAG_S; and at least Pacer.min_gap after the one before it
# (see SendTimer).
SEND_LAGS: Final = 32
MAX_SEND_LAG_S: Final = 0.05

# How late a sleep may wake (epoll rounds timeouts up to the millisecond) and still be
# taken as on time by the bucket.
LATE_S: Final = 0.005


class TokenBucket:
    """Smooth client-side rate limit shared by every worker.

    GCRA (the "virtual scheduling" form of the generic cell rate algorithm, ITU-T I.371):
    a request may leave `interval` after the one before it, so requests are spaced evenly
    instead of bunching at window edges; `burst` may leave at once after an idle spell.
    Workers wait in line, and the one at the head computes its slot from the rate as it
    is when it gets there, so a cut takes effect at the next request, not after every
    slot already handed out. A rate of None means no limit.
    """

    def __init__(self, per_second: float | None, clock: Clock, burst: int = 1) -> None:
        self._clock = clock
        self._burst = max(1, burst)
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (self._burst - 1)
        self._last = -math.inf  # when the last request left
        self._tat = clock.now()  # the first request goes at once
        self._line = anyio.Lock()

    @property
    def per_second(self) -> float | None:
        return None if self._interval == 0 else 1.0 / self._interval

    @property
    def unlimited(self) -> bool:
        return self._interval == 0

    def set_rate(self, per_second: float | None) -> None:
        """Change the rate from the next request on: it leaves one new interval after the
        last one did."""
        was_unlimited = self._interval == 0
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (self._burst - 1)
        if was_unlimited:
            # A limit is learnt from the answer to a request that has just left: count it.
            self._tat = self._clock.now() + self._interval
        elif self._last > -math.inf:
            self._tat = self._last + self._interval

    def slot(self, now: float) -> float:
        """When the next request may leave, as the rate stands now."""
        return max(self._tat, now - self._tolerance)

    def take(self, now: float) -> float:
        """A request leaves now; the time its slot was, on the bucket's grid."""
        self._last = now
        if 0 <= now - self._tat < min(self._interval, LATE_S):
            # Woken a little late by the event loop: keep to the grid, so that lateness
            # never adds up into a slower rate than asked.
            base = self._tat
        else:
            base = max(self._tat, now - self._tolerance)
        self._tat = base + self._interval
        return min(base, now)

    async def acquire(self) -> float | None:
        """Wait for a slot; when it was (see `take`), or None when there is no limit."""
        if self._interval == 0:
            return None
        async with self._line:
            while True:
                now = self._clock.now()
                slot = self.slot(now)
                if slot <= now or self._interval == 0:
                    return self.take(now)
                await self._clock.sleep(slot - now)


class SendTimer:
    """When a paced request leaves, once its `dispatched` record is durable.

    The write between a request's slot and its sending takes from under a millisecond to
    tens of them, and a strict limiter (nginx `limit_req` with no burst) refuses a request
    that comes even a little early. So a request leaves a fixed lag after its slot, the
    slowest of the recent writes, and only its answer comes that much later. And not
    sooner after the request before it than `Pacer.min_gap`: one that left late (the
    machine busy a moment) moves the next ones, which the slots then catch up, rather
    than two reaching the server close together and the second refused."""

    def __init__(self) -> None:
        self._lags: deque[float] = deque(maxlen=SEND_LAGS)  # slot to durable record, s
        self._last = -math.inf  # when the last paced request left

    def lag(self, slot: float, now: float) -> float:
        """This request's durable write ended `now`: the lag every request keeps."""
        self._lags.append(now - slot)
        return min(MAX_SEND_LAG_S, max(self._lags))

    def due(self, at: float, gap: float) -> float:
        """When a request meant to leave `at` may leave, `gap` after the one before."""
        return max(at, self._last + gap)

    def left(self, now: float) -> None:
        self._last = max(self._last, now)
