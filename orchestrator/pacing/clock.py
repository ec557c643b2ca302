"""The clock seam: monotonic time and sleeping. Every limiter reads time through one
`Clock`, so tests move a fake clock instead of sleeping; `RealClock` sleeps precisely."""

from __future__ import annotations

import time
from typing import Final, Protocol

import anyio
import anyio.lowlevel

# The last stretch of a precise sleep, given to other tasks a turn at a time rather than
# to a timer: a little over epoll's millisecond.
SPIN_S: Final = 0.0012


class Clock(Protocol):
    """Monotonic time and sleeping, the one seam through which pacing sees time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, deadline: float) -> None:
        """Return at `deadline` as `now()` reads it, as nearly as the clock can."""
        ...


class RealClock:
    """The event loop's clock."""

    def now(self) -> float:
        # The asyncio loop's own clock, without anyio's backend lookup on every read.
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        # The loop's timers wake up to a millisecond late (epoll counts whole ones), and
        # a limiter with no burst refuses a request that comes a fraction of one early
        # after a late one: sleep to just short of the deadline, then yield until it.
        if (left := deadline - time.monotonic()) > SPIN_S:
            await anyio.sleep(left - SPIN_S)
        while time.monotonic() < deadline:
            await anyio.lowlevel.checkpoint()
