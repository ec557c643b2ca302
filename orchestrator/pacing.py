"""When requests may leave: the clock seam, the token bucket, the shared pause, backoff.

Every limiter reads time through one `Clock`, so tests move a fake clock instead of sleeping.
None of this knows about HTTP: a Retry-After is just a number of seconds handed to `Pause`.
"""

from __future__ import annotations

import math
import random
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
        return anyio.current_time()

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
        self._interval = 0.0 if per_second is None else 1.0 / per_second
        self._tolerance = self._interval * (max(1, burst) - 1)
        self._next = clock.now()

    @property
    def per_second(self) -> float | None:
        return None if self._interval == 0 else 1.0 / self._interval

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
    token): first the shared pause, then the token bucket."""

    def __init__(self, per_second: float | None, clock: Clock, burst: int = 1) -> None:
        self.pause = Pause(clock)
        self.bucket = TokenBucket(per_second, clock, burst)

    async def turn(self) -> None:
        """Wait until a request may leave."""
        while True:
            await self.pause.wait()
            await self.bucket.acquire()
            if self.pause.remaining == 0:  # a Retry-After may have come while we waited
                return

    def hold_all(self, seconds: float) -> bool:
        """Pause every worker for a Retry-After; True when that lengthened the pause."""
        longer = seconds > self.pause.remaining
        self.pause.pause_for(seconds)
        return longer


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
