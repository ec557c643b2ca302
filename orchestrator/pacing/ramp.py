"""The ramp of a run that starts knowing nothing of the limit: from a modest rate,
doubling every few tens of milliseconds, so that the first overshoot is a few requests,
not a flood. A 429 then is judged by the rate its request was sent at, which the gap
before it tells better than the ramp's rate at the time (requests wait their turn).

Pure: time comes in as numbers."""

from __future__ import annotations

import math
from collections import deque
from typing import Final


class Ramp:
    """The ramp's rate at any time, and when its requests left."""

    START: Final = 20.0  # requests/s: where a ramp from nothing begins
    DOUBLING_S: Final = 0.05
    UNLIMITED_ABOVE: Final = 5000.0  # a ramp past this lets the concurrency limit alone

    def __init__(self, start: float) -> None:
        self._from = start
        self._sends: deque[float] = deque(maxlen=64)  # when requests left

    def rate(self, at: float) -> float:
        doublings = min(30.0, (at - self._from) / self.DOUBLING_S)
        return min(self.START * math.pow(2.0, doublings), self.UNLIMITED_ABOVE * 2)

    def sent(self, at: float) -> None:
        self._sends.append(at)

    def spacing_rate(self, sent_at: float) -> float:
        """The rate a request was sent at, from the gap before it."""
        before = [at for at in self._sends if at < sent_at]
        if before and sent_at > before[-1]:
            return 1.0 / (sent_at - before[-1])
        return self.rate(sent_at)
