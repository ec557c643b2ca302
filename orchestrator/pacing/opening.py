"""The limiter's first burst, taken at the start of a run whose rate is known.

A limiter that allows a burst (nginx `limit_req burst=`, a token bucket, a fixed or sliding
window) lets that much through at once from idle, and a client that paces evenly from its
first request never takes it: against a bucket of one second at 50/s, 1,000 requests take
20 s where 19 were possible. So a run that knows its rate (a `--rate`, or the limit the
server states on its first answer) sends requests above the pacing at the start, as
aiolimiter and client-go's QPS/burst allow a second's worth at once, until the limiter
refuses one:

- it never sends more than the server's `Remaining` allows, when it says, and otherwise
  no more than one second of the rate;
- without the server's count it starts with one request over the first and lets two more
  go for each answer let through (TCP's slow start): against a limiter with no burst the
  opening costs one 429;
- the 429 that ends it says the burst is spent, not that the rate is too high: it cuts
  nothing, and its request goes again at its next slot;
- a window limiter (fixed or sliding) refills only when the window moves on, so paced
  requests refused soon after the burst are still the burst's: at the second (the first
  is as likely a token bucket's, which takes the next request on time), every request
  waits until the burst is paid back at the rate, and those 429s cut nothing either.

Pure: time comes in as numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

# Without the server's count, the opening sends at most this many seconds of the rate
# above it, and lasts at most this long.
OPENING_S: Final = 1.0


class Refusal(Enum):
    """What a 429 says, as the opening judges it."""

    NOT_OURS = "not_ours"  # judged as any 429: the opening has nothing to say of it
    SPENT = "spent"  # the burst is spent: its request goes again at its next slot
    PAYBACK = "payback"  # a window still holds the burst: wait until it is paid back


@dataclass(slots=True)
class Opening:
    """One run's opening burst, from `started` at `rate` requests/s, at most `credit`
    requests above the pacing."""

    rate: float
    credit: int
    started: float
    extras: int = 0  # requests sent above the pacing
    sent: int = 0  # requests sent while the opening lasted, paced or above
    clean: int = 0  # ... answered and let through
    allows: int | None = None  # ... that the server's Remaining lets go in all
    late: int = 0  # 429s after the opening, before its burst is paid back
    before: int = 0  # requests let through in the same window before it started
    through_at: list[float] = field(default_factory=list)  # when the `clean` ones were sent
    refused_at: list[float] = field(default_factory=list)  # ... and those it refused since
    ended_at: float | None = None

    @classmethod
    def at(cls, rate: float, now: float, remaining: int | None = None, before: int = 0) -> Opening:
        """An opening at `rate` from `now`; with the server's `remaining` (counted after
        `before` requests it let through), that many may go."""
        credit = max(1, math.floor(rate * OPENING_S)) if remaining is None else remaining
        return cls(rate=rate, credit=credit, started=now, allows=remaining, before=before)

    @property
    def window(self) -> int:
        """What the limiter let through at once: the opening's, and those before it."""
        return self.before + self.clean

    def counted_at(self) -> list[float]:
        """When every request the limiter may count in its window was sent: those it let
        through (the ones before the opening taken as sent when it started, the latest
        they can have), and those it refused since, which a log that counts refused
        requests holds too."""
        return [self.started] * self.before + self.through_at + self.refused_at

    @property
    def burst(self) -> int:
        """How many more than the pacing alone the limiter let through at once."""
        return self.clean - (self.sent - self.extras)

    @property
    def open(self) -> bool:
        return self.ended_at is None

    def may_send(self, now: float) -> bool:
        """Whether one more request may leave now above the pacing."""
        self._end_by(now)
        if self.ended_at is not None:
            return False
        if self.extras >= self.credit:
            self.ended_at = now
            return False
        # Slow start: one over at first, two more for each answer let through; or what
        # the server says it lets through.
        allowed = 2 * (1 + self.clean) if self.allows is None else self.allows
        return self.sent < allowed

    def note_sent(self, *, extra: bool) -> None:
        if self.ended_at is None:
            self.sent += 1
            self.extras += extra

    def paid_back(self) -> float:
        """When the requests let through in the opening are paid back at the rate, and
        one more: the window may have begun a little before (with the request whose
        answer stated the limit, or as the first one's record was written)."""
        return self.started + (self.clean + 1) / self.rate

    def answer(
        self, now: float, sent_at: float, *, throttled: bool, remaining: int | None = None
    ) -> Refusal:
        """One answer to a request sent at `sent_at`; for a 429, what it says."""
        self._end_by(now)
        during = sent_at >= self.started and (self.ended_at is None or sent_at <= self.ended_at)
        if not throttled:
            if during:
                self.clean += 1
                self.through_at.append(sent_at)
                if remaining is not None and self.ended_at is None:
                    # The server has seen at least the answered ones; `remaining` more.
                    self.allows = self.clean + remaining
            return Refusal.NOT_OURS
        if sent_at >= self.started:
            self.refused_at.append(sent_at)
        if during:
            if self.ended_at is None:
                self.ended_at = now
            return Refusal.SPENT
        if sent_at >= self.started and now < self.paid_back():
            # The first such 429 is as likely a token bucket's (the paced requests that
            # went beside the burst took a request or two past it) as a window's.
            self.late += 1
            return Refusal.PAYBACK if self.late > 1 else Refusal.SPENT
        return Refusal.NOT_OURS

    def fault(self, now: float) -> None:
        """The service failed a request: no burst into a sick service."""
        if self.ended_at is None:
            self.ended_at = now

    def _end_by(self, now: float) -> None:
        if self.ended_at is None and now - self.started > OPENING_S:
            self.ended_at = self.started + OPENING_S
