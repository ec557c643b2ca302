"""What the adaptive rate knows, and the moves its decisions make (`adaptive` decides).

It knows the bracket around the limit (`lo`, `hi`), the window of answers at the rate
being judged, what got through in the last minute, the ramp of a run that started
knowing nothing, and what a stated limit shared with other clients has seen. The moves:
set a rate for a phase (a new window begins), hold at one, narrow the bracket, cut from
the window's rate, and descend, never below what the answers prove nor the floor.

Pure: time comes in as numbers.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from orchestrator.pacing.ramp import Ramp
from orchestrator.pacing.sharing import Sharing
from orchestrator.pacing.throughput import Throughput
from orchestrator.pacing.window import Window


class Phase(Enum):
    RAMP = "ramp"  # nothing known: the rate doubles until the first 429
    DESCEND = "descend"  # a 429 before anything was proven: step down until clean
    TRY = "try"  # one window at a rate inside the bracket
    RECOVER = "recover"  # a few answers at lo after a failed try, while the limiter refills
    HOLD = "hold"  # settled at lo
    SHARE = "share"  # a stated limit that other clients take part of: cut and step, fairly


@dataclass(frozen=True, slots=True)
class RateChange:
    """A change of the send rate worth telling the operator about."""

    old: float | None
    new: float | None
    # "server_headers", "throttled", "probe", "clean", "ramp", "trim", "fell", "contended"
    reason: str
    settled: bool = False  # the bracket closed: this rate holds


class RateState:
    """The adaptive rate's state and moves; `AdaptiveRate` adds the decisions."""

    SHORT_ANSWERS: Final = 8  # clean answers in a row that end a recovery
    SETTLE: Final = 0.04  # hi / lo under 1 + this: settled
    COSTLY_CUT: Final = 0.7  # a descent steps down at least this much then (botocore's)
    HOLD_WINDOWS: Final = 4  # clean windows held before probing again
    PROVEN: Final = 0.9  # of the last second's goodput: no cut goes below it
    HOLDOFF_CAP_S: Final = 5.0
    FLOOR_SHARE: Final = 1 / 20  # never below this share of the best second of a minute
    MIN_RATE: Final = 0.01  # requests/s, when nothing at all has got through
    SEEN: Final = 50  # the last answers in which 429s show other clients (`Sharing`)

    def __init__(self, ceiling: float | None, now: float) -> None:
        self._ceiling = ceiling
        self._stated: float | None = None
        self.lo: float | None = None
        self.hi: float | None = ceiling
        self._hi_at = now
        self.settled = False
        self._settled_rate: float | None = None  # where the bracket last closed
        # A limit an earlier run learned, held from `trust` on; no probe above it before:
        self.trusted: float | None = None
        self._probe_not_before = -math.inf
        self._ramp = Ramp(now)
        self._growth = 0  # clean tries in a row with no hi above (GROWTH)
        self._held = self._held_answers = self._held_throttled = 0  # this hold's windows
        self._misses = 0  # 429s while recovering
        self._recover_from = now  # when the last try failed
        self._hold_windows = self.HOLD_WINDOWS  # clean windows held before the next probe
        self._probe_from: float | None = None  # lo, while a probe above it is unproven
        self._costly = False  # a 429 came with a Retry-After: each one pauses every request
        self._haired = False  # held a hair under a stated limit that met a 429
        self._patience = 1  # windows last this many times their least
        self._episode = now  # when the overshoot being descended from began
        self._streak = 0  # fresh 429s in a row, nothing let through between them
        self._through = Throughput()
        self._seen: deque[bool] = deque(maxlen=self.SEEN)  # last answers: a 429?
        # Whether the limiter lets bursts through, as the pacer saw: True, timing at the
        # hair makes no 429 there, so 429s mean other clients and the limit is shared
        # (Phase.SHARE); False, a strict one, which refuses a request that a timer woke
        # a little early, so its 429s are judged as timing first (`_judge_hold`); None,
        # not known (other clients took the opening's burst): its 429s are taken as
        # others', but neither its lack of room nor (the pacer's) its requests scattered.
        self.bursty: bool | None = None
        self._sharing = Sharing()
        if ceiling is None:
            self.rate: float | None = Ramp.START
            self.phase = Phase.RAMP
        else:
            self.rate, self.phase = ceiling, Phase.TRY
        self._start_window(now)

    @property
    def streak(self) -> int:
        """429s in a row, with nothing let through between them."""
        return self._streak

    @property
    def recent_429s(self) -> int:
        """429s among the last SEEN answers."""
        return sum(self._seen)

    @property
    def cap(self) -> float | None:
        limits = [x for x in (self._ceiling, self._stated) if x is not None]
        return min(limits) if limits else None

    def tick(self, now: float) -> RateChange | None:
        """Move the ramp on; called before each request is given its slot."""
        if self.phase is not Phase.RAMP or self.rate is None:
            return None
        rate = self._ramp.rate(now)
        if rate <= self.rate:
            return None
        old = self.rate
        self.rate = None if rate > Ramp.UNLIMITED_ABOVE else rate
        return RateChange(old, None, "ramp") if self.rate is None else None

    def learn_limit(
        self, per_second: float, now: float, reason: str = "server_headers"
    ) -> RateChange | None:
        """A limit the server states in its headers (or the token's shared schedule runs
        at): a ceiling, and the first guess."""
        if per_second == self._stated:
            return None
        old = self.rate
        self._stated = per_second
        cap = self.cap
        assert cap is not None
        if self.hi is None or self.hi > cap:
            self.hi = cap
        if self.lo is not None and self.lo > cap:
            self.lo = cap
        if self.phase is Phase.RAMP or self.rate is None or self.rate > cap:
            self._set(cap, Phase.TRY, now)
        return RateChange(old, self.rate, reason) if self.rate != old else None

    def forget_limit(self) -> None:
        """The limit stated through the token's shared schedule lapsed (the process that
        stated it stopped): this process's own ceiling bounds it again, and a hold at
        the old limit probes above it in time."""
        old, self._stated = self._stated, None
        if old is not None and self.hi == old:
            self.hi = self._ceiling

    def trust(self, per_second: float, now: float, trust_s: float) -> RateChange | None:
        """A limit that a run learned and shared: a lower bound that 429s proved, not a
        ceiling. Hold at it (under a stated ceiling, at most that), and probe above it
        only once it has held `trust_s`: the limit may have been raised, or learned
        while another client took a share of it."""
        old = self.rate
        cap = self.cap
        rate = per_second if cap is None else min(cap, per_second)
        self.trusted = per_second
        self.lo, self.hi = rate, None
        self._probe_not_before = now + trust_s
        self._hold(rate, now)
        self._settled_rate = rate  # not news: it was settled by the run that learned it
        return RateChange(old, self.rate, "shared") if self.rate != old else None

    def room(self, remaining: int) -> None:
        """The server's Remaining after a request it let through. Room says the limiter lets
        bursts through (a strict one has none). None, answer after answer, while held
        under a stated limit, says others take what this client leaves: alone a hair
        under the limit of a token bucket, its room grows back within 1 / HAIR answers;
        other clients at a bucket see few 429s beside one that sends on a steady grid,
        which wins the room as it comes back, so this is how such a client sees them."""
        window = self._window
        if remaining >= 1:
            self.bursty = True
            self._sharing.roomless = 0
            window.room = True
        else:
            self._sharing.roomless += 1
            if window.room is None:
                window.room = False

    def sent(self, now: float) -> None:
        """A request leaves now (the ramp judges a 429 by how closely it followed)."""
        if self.phase is Phase.RAMP:
            self._ramp.sent(now)

    def paused(self, seconds: float) -> None:
        """Every request waits `seconds` (a Retry-After): that time is no part of a window."""
        self._window.paused_s += seconds

    def _hold(self, rate: float, now: float) -> bool:
        """Hold at `rate`; True when that settles the rate anew: the first time, or at a
        rate that a probe found above (or a fall found below) the last one."""
        last = self._settled_rate
        news = last is None or abs(rate - last) > self.SETTLE * last
        self.settled = True
        self._settled_rate = rate
        self._held = self._held_answers = self._held_throttled = 0
        self._set(rate, Phase.HOLD, now)
        return news

    def _narrow(self, failed: float) -> None:
        self.hi = failed if self.hi is None else min(self.hi, failed)
        self._hi_at = self._window.start

    def _cut(self) -> float:
        """Down by the share of this window's requests that got through, at least by a
        tenth and at most by half."""
        share = (self._window.answers - self._window.throttled) / max(1, self._window.answers)
        # When every 429 pauses everything, a small step costs a pause a step.
        most = self.COSTLY_CUT if self._costly else 0.9
        return self._window.rate * min(most, max(0.5, share))

    def _descend(self, target: float, now: float, failed: float | None = None) -> float:
        """Down to `target`, but never below what the answers since the overshoot began
        prove the server lets through, nor the floor; and never up."""
        if self.phase is not Phase.DESCEND:
            self._episode = now  # an overshoot begins: the limiter is spent from here
        proven = self._through.since(self._episode, now) * self.PROVEN
        ceiling = self._window.rate if failed is None else failed
        return min(ceiling, max(target, proven, self._floor(now)))

    def _holdoff(self) -> float:
        if self._streak < 2:
            return 0.0
        interval = 1.0 / self.rate if self.rate else 0.0
        if self.phase is Phase.SHARE:
            # Refused in a row while sharing: the others took the room, which a pause
            # growing with the streak would leave to them for good.
            return interval
        return min(self.HOLDOFF_CAP_S, interval * 2.0 ** min(self._streak - 2, 20))

    def _set(self, rate: float, phase: Phase, now: float) -> None:
        self.rate = max(rate, self.MIN_RATE)
        self.phase = phase
        self._start_window(now)

    def _start_window(self, now: float) -> None:
        self._window = Window(now, self.rate)

    def _window_done(self, now: float) -> bool:
        window = self._window
        if self.phase is Phase.RECOVER:
            return window.answers >= self.SHORT_ANSWERS
        if self.phase is Phase.SHARE:
            # A second, however few its answers: every client sharing the limit steps up
            # as often as every other, or the one sending least would climb slowest.
            return window.span(now) >= Window.LEAST_S
        return window.full(now, self._patience)

    def _floor(self, now: float) -> float:
        return max(self.MIN_RATE, self._through.best_second(now) * self.FLOOR_SHARE)
