"""Waits that are not pacing: the exponential backoff between attempts after a fault,
and the shared pause every request honours while a Retry-After runs. None of this knows
about HTTP: a Retry-After is just a number of seconds handed to `Pause`."""

from __future__ import annotations

import random
from dataclasses import dataclass

from orchestrator.pacing.clock import Clock


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

    async def wait(self, until: float | None = None) -> None:
        """Return when the pause is over, or at `until` if that comes first."""
        # Loop: the pause may be extended while we sleep.
        while (left := self.remaining) > 0:
            if until is not None:
                if (cap := until - self._clock.now()) <= 0:
                    return
                left = min(left, cap)
            await self._clock.sleep(left)


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
