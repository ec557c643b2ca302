"""The rate limiters real APIs put in front of themselves, as pure state machines.

Each takes the arrival time of one request and answers allow or refuse, with what a
server would put in its headers. Time comes in as numbers, so a test or a benchmark model
can drive them in virtual time; the simulator drives them with its injected clock.

    GCRA            nginx `limit_req ... nodelay`, most API gateways, redis-cell: a request
                    is let through when it is no earlier than its slot minus the tolerance
                    `burst / rate`. Burst 0 spaces requests by exactly 1 / rate.
    FixedWindow     Laravel's `throttle:60,1`: N per window, the window starting at the
                    first request after the last one ended.
    SlidingLog      N in any window ending now, from a log of arrival times.
    SlidingCounter  Cloudflare's approximation: this window's count plus the last
                    window's, weighted by how much of it still overlaps.

The two sliding shapes can count refused requests too (`count_refused`), as some gateways
do: a client that keeps sending while refused stays locked out.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

# Float slack, so that a request exactly on its slot is let through.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Decision:
    """A limiter's answer to one request."""

    allowed: bool
    limit: int  # requests per window (for a GCRA: the burst allowance, burst + 1)
    remaining: int  # requests that would be let through right now, after this one
    retry_after_s: float  # when refused: seconds until one would be let through; else 0
    reset_s: float  # seconds until the limiter is back to its full allowance
    window_s: float  # the period `limit` counts over (for a GCRA: (burst + 1) / rate)


class Limiter(Protocol):
    rate: float  # the sustained limit, requests per second

    def decide(self, now: float) -> Decision: ...


class GCRA:
    """The generic cell rate algorithm, virtual-scheduling form (ITU-T I.371): one
    timestamp, the theoretical arrival time of the next request."""

    def __init__(self, rate: float, burst: int) -> None:
        if not (rate > 0 and math.isfinite(rate)) or burst < 0:
            raise ValueError(f"a GCRA needs rate > 0 and burst >= 0, got {rate!r}, {burst!r}")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._tolerance = burst * self._interval
        self._tat = -math.inf

    def decide(self, now: float) -> Decision:
        tat = max(self._tat, now)
        limit = self.burst + 1
        window = limit * self._interval
        if tat - now > self._tolerance + _EPSILON:
            wait = tat - self._tolerance - now
            return Decision(False, limit, 0, wait, tat - now, window)
        self._tat = tat + self._interval
        ahead = self._tat - now  # how far the schedule runs ahead of the clock
        remaining = max(
            0, math.floor((self._tolerance + self._interval - ahead) / self._interval + _EPSILON)
        )
        return Decision(True, limit, remaining, 0.0, ahead, window)


class FixedWindow:
    """`limit` requests per `window_s`, counted from the first request of each window."""

    def __init__(self, rate: float, window_s: float) -> None:
        self.window_s = window_s
        self.limit = _per_window(rate, window_s)
        self.rate = self.limit / window_s  # what is enforced, when rate * window is not whole
        self._end = -math.inf
        self._count = 0

    def decide(self, now: float) -> Decision:
        if now + _EPSILON >= self._end:  # a client back after exactly its Retry-After is in
            self._end, self._count = now + self.window_s, 0
        reset = self._end - now
        if self._count >= self.limit:
            return Decision(False, self.limit, 0, reset, reset, self.window_s)
        self._count += 1
        return Decision(True, self.limit, self.limit - self._count, 0.0, reset, self.window_s)


class SlidingLog:
    """At most `limit` requests in any `window_s`, judged from the arrival log."""

    def __init__(self, rate: float, window_s: float, *, count_refused: bool = False) -> None:
        self.window_s = window_s
        self.limit = _per_window(rate, window_s)
        self.rate = self.limit / window_s  # what is enforced, when rate * window is not whole
        self.count_refused = count_refused
        self._log: deque[float] = deque()

    def decide(self, now: float) -> Decision:
        log = self._log
        while log and log[0] + self.window_s <= now + _EPSILON:
            log.popleft()
        allowed = len(log) < self.limit
        if allowed or self.count_refused:
            log.append(now)
        remaining = max(0, self.limit - len(log))
        reset = log[-1] + self.window_s - now if log else 0.0
        if allowed:
            return Decision(True, self.limit, remaining, 0.0, reset, self.window_s)
        # The oldest entries must leave until there is room for one more.
        freeing = log[len(log) - self.limit] if self.count_refused else log[0]
        return Decision(False, self.limit, 0, freeing + self.window_s - now, reset, self.window_s)


class SlidingCounter:
    """Two fixed windows, the previous one weighted by how much of it the sliding window
    still covers: estimate = previous * (1 - elapsed / window) + current."""

    def __init__(self, rate: float, window_s: float, *, count_refused: bool = False) -> None:
        self.window_s = window_s
        self.limit = _per_window(rate, window_s)
        self.rate = self.limit / window_s  # what is enforced, when rate * window is not whole
        self.count_refused = count_refused
        self._start = -math.inf  # of the current window, on a grid from the first request
        self._current = 0
        self._previous = 0

    def decide(self, now: float) -> Decision:
        if self._start == -math.inf:
            self._start = now
        windows = math.floor((now - self._start + _EPSILON) / self.window_s)
        if windows >= 1:
            self._previous = self._current if windows == 1 else 0
            self._current = 0
            self._start += windows * self.window_s
        elapsed = now - self._start
        weight = 1.0 - elapsed / self.window_s
        estimate = self._previous * weight + self._current
        allowed = estimate + 1 <= self.limit + _EPSILON
        if allowed or self.count_refused:
            self._current += 1
        left = self.limit - (self._previous * weight + self._current)
        remaining = max(0, math.floor(left + _EPSILON))
        reset = self.window_s - elapsed + (self.window_s if self._current else 0.0)
        if allowed:
            return Decision(True, self.limit, remaining, 0.0, reset, self.window_s)
        return Decision(False, self.limit, 0, self._wait(elapsed), reset, self.window_s)

    def _wait(self, elapsed: float) -> float:
        """Seconds until one more request fits, if no other arrives: later in this window,
        as the previous window's weight fades, or else in the next, as this one's does.
        (The end of this window is not enough: a full current window weighs fully then.)"""
        room = self.limit - 1 - self._current
        if room >= 0:  # refused with room left means the previous window still weighs
            return self.window_s * (1 - room / self._previous) - elapsed
        fits_at = self.window_s * (1 - (self.limit - 1) / self._current)
        return self.window_s - elapsed + fits_at


class Background:
    """Another client of the same token: from the first request the limiter sees until
    `stop_after_s` later (None: never stops), it sends `load` new requests a second,
    evenly, and sends each refused one again after exactly its `retry_after_s`, as a
    client honouring Retry-After would. So it takes its share of the budget even beside a
    client that sends as fast as it is let (one whose refused requests were simply lost
    would win few slots from it), and stops at once, retries and all, when it stops.
    Its requests are fed to the limiter in time order before each of ours, ties included."""

    def __init__(self, limiter: Limiter, load: float, stop_after_s: float | None = None) -> None:
        if not (load > 0 and math.isfinite(load)):
            raise ValueError(f"background load must be above zero, got {load!r}")
        if stop_after_s is not None and not stop_after_s >= 0:
            raise ValueError(f"background stop must be >= 0 seconds, got {stop_after_s!r}")
        self.limiter = limiter
        self.rate = limiter.rate
        self.load = load
        self.stop_after_s = stop_after_s
        self.started_at: float | None = None  # the first request the limiter saw
        self._sent = 0  # new requests sent so far
        self._retries: list[float] = []  # a heap of when refused requests go again
        self.accepted = 0
        self.refused = 0

    @property
    def stops_at(self) -> float | None:
        """When the background stops sending; None before it starts, or if it never does."""
        if self.started_at is None or self.stop_after_s is None:
            return None
        return self.started_at + self.stop_after_s

    def advance(self, now: float) -> None:
        """Send the background's requests due by `now` (for a look at its counts between
        two of ours; `decide` does it itself)."""
        if self.started_at is None:
            return
        stops_at = math.inf if (at_stop := self.stops_at) is None else at_stop
        while True:
            fresh = self.started_at + self._sent / self.load
            at = min(fresh, self._retries[0]) if self._retries else fresh
            # A tie with ours goes to the background: its retry lands exactly as a slot
            # frees, and a client of ours on the same grid would otherwise always win it.
            if at > now or at >= stops_at:
                return
            if at == fresh:
                self._sent += 1
            else:
                heapq.heappop(self._retries)
            decision = self.limiter.decide(at)
            if decision.allowed:
                self.accepted += 1
            else:
                self.refused += 1
                heapq.heappush(self._retries, at + decision.retry_after_s)

    def decide(self, now: float) -> Decision:
        if self.started_at is None:
            self.started_at = now
        self.advance(now)
        return self.limiter.decide(now)


def _per_window(rate: float, window_s: float) -> int:
    if not (rate > 0 and math.isfinite(rate)) or not (window_s > 0 and math.isfinite(window_s)):
        raise ValueError(
            f"a window limiter needs rate > 0 and window > 0, got {rate!r}, {window_s!r}"
        )
    return max(1, round(rate * window_s))
