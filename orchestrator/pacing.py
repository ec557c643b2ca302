"""When requests may leave: the clock seam, the token bucket, the shared pause, backoff.

Every limiter reads time through one `Clock`, so tests move a fake clock instead of sleeping.
None of this knows about HTTP: a Retry-After is just a number of seconds handed to `Pause`.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Protocol

import anyio

# A Retry-After beyond this is treated as this: a server asking for an hour is broken or hostile,
# and an operator would rather see retries than a silent hang.
MAX_RETRY_AFTER_S: Final = 300.0


class Clock(Protocol):
    """Monotonic time and sleeping, the one seam through which pacing sees time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's clock."""

    def now(self) -> float:
        # The asyncio loop's own clock, without anyio's backend lookup on every read.
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class TokenBucket:
    """Smooth client-side rate limit shared by every worker.

    GCRA (the "virtual scheduling" form of the generic cell rate algorithm, ITU-T I.371):
    each acquire reserves the next slot `interval` after the previous one, so requests are
    spaced evenly instead of bunching at window edges. `burst` slots may be taken at once
    after an idle spell. A rate of None means no limit.
    """

    def __init__(self, per_second: float | None, clock: Clock, burst: int = 1) -> None:
        self._clock = clock
        self._burst = max(1, burst)
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (self._burst - 1)
        self._next = clock.now()  # the first request goes at once

    @property
    def per_second(self) -> float | None:
        return None if self._interval == 0 else 1.0 / self._interval

    @property
    def unlimited(self) -> bool:
        return self._interval == 0

    def set_rate(self, per_second: float | None) -> None:
        """Change the rate from the next reservation on; slots already handed out stand."""
        was_unlimited = self._interval == 0
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (self._burst - 1)
        if was_unlimited:
            # A limit is learnt from the answer to a request that has just left: count it.
            self._next = self._clock.now() + self._interval

    async def acquire(self) -> None:
        if self._interval == 0:
            return
        now = self._clock.now()
        slot = max(self._next, now - self._tolerance)
        self._next = slot + self._interval
        if slot > now:
            await self._clock.sleep(slot - now)


class Pause:
    """A pause every worker honours, set by whoever hears a Retry-After."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._until = clock.now()

    def pause_for(self, seconds: float) -> None:
        """Hold every worker for `seconds` from now; a shorter pause never cuts a longer one."""
        self._until = max(self._until, self._clock.now() + seconds)

    @property
    def remaining(self) -> float:
        return max(0.0, self._until - self._clock.now())

    async def wait(self) -> None:
        # Loop: the pause may be extended while we sleep.
        while (left := self.remaining) > 0:
            await self._clock.sleep(left)


class Pacer:
    """The one gate every request passes, whatever its endpoint (the API's limit is per
    token): the shared Retry-After pause, the circuit, then the token bucket, whose rate
    the adaptive rate sets from what the answers say."""

    def __init__(self, ceiling: float | None, clock: Clock, *, circuit_threshold: int = 0) -> None:
        self.pause = Pause(clock)
        self.rate = AdaptiveRate(ceiling, clock)
        self.bucket = TokenBucket(ceiling, clock)
        self.circuit = Circuit(circuit_threshold, clock)

    async def turn(self) -> None:
        """Wait until a request may leave."""
        while True:
            await self.pause.wait()
            await self.circuit.wait()
            await self.bucket.acquire()
            if self.pause.remaining == 0:  # a Retry-After may have come while we waited
                return

    def open(self) -> bool:
        """True when a request may leave this instant, with no wait at all: the fast path
        that spares an unlimited run a cancel scope and three awaits per request."""
        return self.bucket.unlimited and not self.circuit.is_open and self.pause.remaining == 0

    def hold_all(self, seconds: float) -> bool:
        """Pause every worker for a Retry-After; True when that lengthened the pause."""
        longer = seconds > self.pause.remaining
        self.pause.pause_for(seconds)
        return longer

    def observe(self, answer: Answer, retry_after: float | None = None) -> PacingEvents:
        """Learn from one answer; what changed, for the log."""
        paused = retry_after is not None and self.hold_all(retry_after)
        change = self.rate.observe(answer, retry_after=retry_after is not None)
        if self.bucket.per_second != self.rate.rate:
            self.bucket.set_rate(self.rate.rate)
        circuit = None if answer.throttled else self.circuit.record(answer.fault)
        return PacingEvents(change, circuit, paused)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential
    Backoff And Jitter", 2015): the delay before retry n is uniform in [0, min(cap, base·2ⁿ⁻¹)]."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def ceiling(self, retry: int) -> float:
        """The largest delay before the `retry`-th retry (1-based)."""
        return min(self.cap_s, self.base_s * 2.0 ** min(retry - 1, 62))

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(retry))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), clamped to
    [0, MAX_RETRY_AFTER_S]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class RateHint:
    """What a server said about its rate limit, in terms free of HTTP."""

    per_second: float | None = None  # the sustained limit, when the server states it
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What pacing needs to know of one answered (or failed) request."""

    throttled: bool = False  # a 429
    fault: bool = False  # 5xx, timeout or connection error: the service looks sick
    hint: RateHint | None = None


@dataclass(frozen=True, slots=True)
class PacingEvents:
    rate: RateChange | None = None
    circuit: str | None = None  # "opened" or "closed"
    paused: bool = False  # a Retry-After lengthened the pause of every worker


@dataclass(frozen=True, slots=True)
class RateChange:
    """A change of the send rate worth telling the operator about."""

    old: float | None
    new: float | None
    reason: str  # "server_headers" or "throttled"
    settled: bool = False  # two throttles in a row found about the same limit


class AdaptiveRate:
    """The send rate, under a ceiling, when the server's limit is not known for sure.

    A limit the server states in its headers caps the rate (and sets it, the first time).
    Without one, AIMD on 429s. A 429 means the server's bucket is empty, and while it stays
    empty the server lets exactly its limit through, however fast we send: so a throttle
    cuts the rate to a little under the goodput measured since the overshoot began or the
    last cut, whichever is later (or,
    too early to measure, to a little under the current rate; with no rate at all, to half
    of what was sent). Success climbs back additively, so
    the rate saws just under the limit. The climb is four times slower while 429s carry a
    Retry-After, since each such 429 stops every worker for a second or more.
    """

    CUT: Final = 0.95  # fraction of the measured goodput to fall back to
    CLIMB: Final = 0.01  # fraction of the rate added per second of unthrottled sending
    WINDOW_S: Final = 2.0  # answers are remembered this long
    COOLDOWN_S: Final = 0.25  # at most one cut this often: in-flight 429s are one event
    MIN_SPAN_S: Final = 0.25  # goodput is measured over at least this much of an overshoot
    EPISODE_GAP_S: Final = 1.0  # a 429 after this long without one starts a new overshoot
    FLOOR: Final = 0.05  # requests per second: never stall completely
    SETTLED_WITHIN: Final = 0.10

    def __init__(self, ceiling: float | None, clock: Clock) -> None:
        self._clock = clock
        self._ceiling = ceiling
        self._server_limit: float | None = None
        self.rate: float | None = ceiling
        self._updated = clock.now()
        self._last_cut = -math.inf
        self._last_throttle = -math.inf
        self._overshoot_since = -math.inf
        self._last_cut_rate: float | None = None
        self._slow_climb = False
        self._answers: deque[tuple[float, bool]] = deque()  # (when, accepted)
        self.settled = False

    @property
    def cap(self) -> float | None:
        limits = [x for x in (self._ceiling, self._server_limit) if x is not None]
        return min(limits) if limits else None

    def observe(self, answer: Answer, retry_after: bool = False) -> RateChange | None:
        now = self._clock.now()
        self._answers.append((now, not answer.throttled))
        while self._answers[0][0] < now - self.WINDOW_S:
            self._answers.popleft()
        change = self._learn_limit(answer.hint)
        if answer.throttled:
            self._slow_climb = retry_after
            return self._cut(now) or change
        self._climb(now)
        return change

    def _learn_limit(self, hint: RateHint | None) -> RateChange | None:
        if hint is None or hint.per_second is None or hint.per_second == self._server_limit:
            return None
        old = self.rate
        first = self._server_limit is None
        self._server_limit = hint.per_second
        if first and self._last_cut_rate is None:
            self.rate = self.cap
        elif self.rate is not None and self.cap is not None:
            self.rate = min(self.rate, self.cap)
        return RateChange(old, self.rate, "server_headers") if self.rate != old else None

    def _climb(self, now: float) -> None:
        elapsed, self._updated = now - self._updated, now
        if self.rate is None:
            return
        step = self.CLIMB / (4 if self._slow_climb else 1)
        climbed = self.rate * (1 + step * elapsed)
        self.rate = climbed if self.cap is None else min(self.cap, climbed)

    def _count_since(self, since: float, *, accepted_only: bool) -> int:
        return sum(1 for when, ok in self._answers if when >= since and (ok or not accepted_only))

    def _cut(self, now: float) -> RateChange | None:
        if now - self._last_throttle > self.EPISODE_GAP_S:
            self._overshoot_since = now
        self._last_throttle = now
        if now - self._last_cut < self.COOLDOWN_S:
            return None
        old = self.rate
        # Measure since the overshoot began, or since the last cut took effect: answers from
        # before it (a burst the server had saved up, the stragglers of a faster rate)
        # would make the limit look higher than it is.
        span = min(self.WINDOW_S, now - max(self._overshoot_since, self._last_cut))
        if span >= self.MIN_SPAN_S:
            goodput = self._count_since(now - span, accepted_only=True) / span
            target = goodput * self.CUT
        elif old is not None:
            target = old * self.CUT  # too early to measure: we were only just over
        else:
            # No rate yet, nothing to measure: halve what we have been sending.
            sent = self._count_since(now - self.MIN_SPAN_S, accepted_only=False)
            target = sent / self.MIN_SPAN_S * 0.5
        if old is not None:
            target = min(target, old)
        self.rate = max(self.FLOOR, target)
        self._last_cut, self._updated = now, now
        previous, self._last_cut_rate = self._last_cut_rate, self.rate
        settled = (
            not self.settled
            and span >= self.MIN_SPAN_S
            and previous is not None
            and abs(self.rate - previous) <= self.SETTLED_WITHIN * previous
        )
        self.settled = self.settled or settled
        return RateChange(old, self.rate, "throttled", settled=settled)


class Circuit:
    """Stops dispatching while the service looks down, instead of burning every ID's
    attempts on it. After `threshold` faults in a row (5xx, timeouts, connection errors,
    from any worker) it opens: nothing leaves for a growing while; then one probe request
    goes out, and its answer closes the circuit or opens it again for longer."""

    def __init__(
        self, threshold: int, clock: Clock, base_s: float = 1.0, cap_s: float = 60.0
    ) -> None:
        self._threshold = threshold
        self._clock = clock
        self._base_s = base_s
        self._cap_s = cap_s
        self._faults = 0
        self._opened = 0  # how many times in a row it opened: the backoff grows with it
        self._reopen_at: float | None = None  # set while open
        self._probing = False
        self._changed = anyio.Event()

    @property
    def is_open(self) -> bool:
        return self._reopen_at is not None

    async def wait(self) -> None:
        """Return when a request may leave: the circuit is closed, or this is the probe."""
        while self._reopen_at is not None:
            left = self._reopen_at - self._clock.now()
            if left > 0:
                await self._clock.sleep(left)
            elif not self._probing:
                self._probing = True
                return
            else:
                await self._changed.wait()

    def record(self, fault: bool) -> str | None:
        """Count one answer; "opened" or "closed" when that changed the circuit."""
        if self._threshold <= 0:
            return None
        if not fault:
            self._faults = 0
            if self._reopen_at is None:
                return None
            self._reopen_at, self._probing, self._opened = None, False, 0
            self._notify()
            return "closed"
        self._faults += 1
        if self._reopen_at is None and self._faults < self._threshold:
            return None
        if self._reopen_at is not None and not self._probing:
            return None  # a straggler from before the circuit opened
        self._opened += 1
        self._reopen_at = self._clock.now() + self.backoff_s
        self._probing = False
        self._notify()
        return "opened"

    @property
    def backoff_s(self) -> float:
        return min(self._cap_s, self._base_s * 2.0 ** min(self._opened - 1, 30))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
