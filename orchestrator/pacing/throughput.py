"""What the limiter let through: the times of the last second's answers, and a count for
each second of the last minute. The first bounds a cut from below (what the server
demonstrably gives this client now), the second sets the floor no cut goes under.

Pure: time comes in as numbers."""

from __future__ import annotations

import math
from collections import deque


class Throughput:
    """Answers let through, recent enough to judge a cut by."""

    def __init__(self) -> None:
        self._recent: deque[float] = deque()  # times of answers let through, last second
        self._seconds: deque[list[int]] = deque()  # [second, let through], last minute

    def add(self, now: float) -> None:
        """An answer let through now."""
        recent = self._recent
        recent.append(now)
        while recent[0] <= now - 1.0:
            recent.popleft()
        second = math.floor(now)
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1][1] += 1
        else:
            seconds.append([second, 1])
            while seconds[0][0] <= second - 60:
                seconds.popleft()

    def since(self, start: float, now: float) -> float:
        """Answers let through since `start` (at most a second ago), per second, over a
        second at least: a burst the limiter had saved up is not what it lets through."""
        since = max(start, now - 1.0)
        return sum(1 for at in self._recent if at > since) / max(1.0, now - since)

    def best_second(self, now: float) -> int:
        """The most let through in one second of the last minute."""
        return max((count for second, count in self._seconds if second > now - 60), default=0)
