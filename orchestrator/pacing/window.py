"""One window of sending at one rate, and what its answers said: the unit in which the
adaptive rate proves a rate clean. A window lasts at least a second and enough answers
to mean something; at a few requests a second it cannot tell rates a few percent apart.

Pure: time comes in as numbers."""

from __future__ import annotations

import math
from typing import Final


class Window:
    """The answers to requests sent at `rate` since `start`, and how long it must last."""

    LEAST_S: Final = 1.0  # a window lasts at least this long ...
    ANSWERS: Final = 8  # ... and this many answers
    FEWEST_ANSWERS: Final = 3  # ... or, at rates so low that 8 take over 4 s, this many

    __slots__ = ("answers", "paused_s", "rate", "room", "start", "throttled")

    def __init__(self, start: float, rate: float | None) -> None:
        self.start = start
        self.rate = math.inf if rate is None else rate
        self.answers = 0
        self.throttled = 0
        self.paused_s = 0.0  # every request waited this long (a Retry-After): no part of it
        self.room: bool | None = None  # room left after an answer (`AdaptiveRate.room`)

    def span(self, now: float) -> float:
        """How long it has lasted, its pauses left out."""
        return now - self.start - self.paused_s

    def needed(self) -> int:
        """Answers it needs: ANSWERS, fewer (down to FEWEST_ANSWERS) below 2/s, where
        eight would make a window of many seconds and a climb from a deep cut of minutes;
        at most 4 s of answers."""
        if self.rate >= self.ANSWERS / 4:
            return self.ANSWERS
        return max(self.FEWEST_ANSWERS, math.floor(self.rate * 4))

    def length_s(self) -> float:
        """The least it lasts at its rate."""
        return max(self.LEAST_S, self.needed() / self.rate)

    def resolution(self) -> float:
        """The least step up that a clean window at this rate proves: one answer of its
        answers (a request the limiter saved up hides an overshoot of one a window)."""
        return 1 / max(self.needed(), self.rate * self.LEAST_S)

    def full(self, now: float, patience: int) -> bool:
        """Whether it has lasted `patience` times its least, in time and in answers."""
        answers = self.needed() * patience
        needed = max(self.LEAST_S * patience, answers / self.rate)
        return self.span(now) >= needed and self.answers >= answers
