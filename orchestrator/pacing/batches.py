"""Sending in batches, once the opening has shown a window limiter.

A fixed window (Laravel's `throttle:60,1`) refills all at once when the window turns, and
a sliding log frees each request's room one window after it was let through. A client
that paces evenly after the opening burst waits out the window that the burst spent and
then sends one request every 1 / rate: the window's room comes back all at once but is
taken a little at a time, and the run loses a whole window (20 s where 19 were possible
for 1,000 requests at 50 a second; 1,000 s where 940 were at 60 a minute).

So once the opening says the limiter holds a window (`opening.Refusal.PAYBACK`), requests
go as a sliding log of what the window let through: at most `size` in any `period`
(`size / rate`) and a margin. With every worker busy that is a batch each period, each
request a period after the one `size` before it: its turn a period after that one's turn,
and (the pacer is told when each really left, after its durable write) never sooner after
it left, so that a batch whose records were written faster than the last one's comes no
sooner for it. It suits every shape the opening can meet: a fixed window (whether it
starts at its first request, as Laravel's does, or on the clock) sees at most a batch in
each window; a sliding log sees each request as the room of the one `size` before it
comes back; and a token bucket that let `size` through at once (a burst of `size - 1`)
holds a batch. The log starts with the opening's requests that were let through: the
first batch goes a period after the opening did, as the window that counted from its
first request turns, or as a sliding log lets the opening's requests go.

A 429 after at least half a batch was let through since the last one says a batch came a
little early (the network bunched it), or was larger than the window (the opening
straddled two): batches shrink to what got through, and the margin doubles; the other
429s of the same early batch say nothing more. A refused request took no room (the
window's turn or a log's entry came a moment later), so it goes again as soon as the log
allows, not a period later: against a sliding log, a refused request pushed to the next
batch would push one request of each batch after it, and the last into a batch of its
own. A 429 sooner, or a margin past MOST_MARGIN of the period, says the limiter is no
window (a sliding counter weighs the last window's requests into this one, and lets one
or two of a batch through): batches end, and even pacing takes over.

Pure: time comes in as numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

# A request leaves this share of the period after the room it takes came back, at least
# MARGIN_S; twice as long after each early batch.
MARGIN: Final = 0.005
MARGIN_S: Final = 0.002
# A margin doubled past this share of the period: the limiter is no window.
MOST_MARGIN: Final = 0.08


@dataclass(slots=True)
class Batches:
    """At most `size` requests in any `period` (`size / rate`) and `margin`, from `start`
    on (the 429s of requests sent before it are the window's, full as batches began)."""

    size: int
    rate: float
    start: float
    margin: float = 0.0
    # [turn, left] of the last requests: when each was given its turn, and when it left
    _sent: deque[list[float]] = field(default_factory=deque)
    _through: int = 0  # answers let through since the last early batch
    _early_at: float = -math.inf  # when the last early batch was judged

    @classmethod
    def after_opening(
        cls, let_through: int, counted_at: Sequence[float], rate: float, now: float
    ) -> Batches | None:
        """Batches of what an opening at `rate` let through, its requests (and those
        refused since) sent at `counted_at`, in any order; None when it let one through,
        which even pacing sends as well."""
        if let_through < 2:
            return None
        batches = cls(let_through, rate, now, max(MARGIN_S, MARGIN * let_through / rate))
        for at in sorted(counted_at):  # (in order: the log keeps the latest 2 * size)
            batches.counted(at)
        return batches

    def counted(self, sent_at: float) -> None:
        """A request sent at `sent_at`, before batches began, that the window may count:
        the batches after it keep a period from it."""
        sent = self._sent
        i = len(sent)
        while i > 0 and sent[i - 1][0] > sent_at:
            i -= 1
        sent.insert(i, [sent_at, sent_at])
        while len(sent) > 2 * self.size:
            sent.popleft()

    @property
    def period(self) -> float:
        return self.size / self.rate

    def slot(self, now: float) -> float:
        """When the next request may be given its turn."""
        if len(self._sent) < self.size:
            return now
        return max(now, self._sent[-self.size][0] + self.period + self.margin)

    def take(self, now: float) -> None:
        """A request is given its turn now; `left` says when it really leaves."""
        self._sent.append([now, now])
        while len(self._sent) > 2 * self.size:
            self._sent.popleft()

    def due(self, turn: float) -> float:
        """The soonest the request given its turn at `turn` may leave: a period and the
        margin after the one `size` before it left."""
        i = self._find(turn)
        if i is None or i < self.size:
            return -math.inf
        return self._sent[i - self.size][1] + self.period + self.margin

    def left(self, turn: float, at: float) -> None:
        """The request given its turn at `turn` left at `at`."""
        if (i := self._find(turn)) is not None:
            self._sent[i][1] = at

    def _find(self, turn: float) -> int | None:
        for i in range(len(self._sent) - 1, -1, -1):
            if self._sent[i][0] == turn:
                return i
        return None

    def let_through(self) -> None:
        self._through += 1

    def refused(self, sent_at: float, now: float) -> bool:
        """A request sent in a batch at `sent_at` met a 429 `now`; False when batches end."""
        if (i := self._find(sent_at)) is not None:
            del self._sent[i]
        if sent_at <= self._early_at:
            return True  # one more of the same early batch
        if 2 * self._through < self.size:
            return False
        self.size = max(1, min(self.size, self._through))
        self._through = 0
        self._early_at = now
        self.margin *= 2
        return self.margin <= MOST_MARGIN * self.period
