"""The send rate when the server's limit is not known for sure: what the answers prove.

The limit the server gives this client is bracketed between two rates:

    lo  the fastest rate that a whole window of sending showed clean (no 429)
    hi  the slowest rate at which a request met a 429, or the stated ceiling

While the bracket is wide, each window tries one rate inside it (a bisection in ratio);
a 429 ends a try at once, so a try above the limit costs a request or two, not a window of
them. Once the bracket is narrow the rate holds at `lo`, and every so often a gentle
probe above it looks for capacity that another client has freed. (At a few requests a
second a window is too few answers to prove a rate within what a bucket saves up: there
a 429 at lo after answers let through trims lo, and a clean probe counts only once the
step above it is clean too.) A run that starts knowing nothing ramps up from a modest
rate, doubling every few tens of milliseconds, so the first overshoot is a few requests,
not a flood; a 429 before anything is proven steps down by the share of requests that
got through, but never below what got through in the last second: that much the server
demonstrably lets this client have.

Why a bracket and not goodput alone: goodput measured while throttled is a lower bound
on the limit, and a poor one on a strict limiter (nginx `limit_req` with no burst lets
only every other request through at 1.1x its rate: goodput 0.55x), and a sliding window
that counts refused requests lets nothing through at all while a client keeps sending.
What was sent cleanly and what met a 429 tell the limit on every shape.

Under a stated limit, 429s beyond timing (or no room left, answer after answer) mean other
clients of the token take part of it, with no shared budget between them: the rate then
shares it as TCP shares a link, cutting by 30% on a 429 (once a second) and stepping up by
a hundredth of the limit each clean second, so that clients that start unequal end nearly
equal (`Phase.SHARE`).

429s in a row with nothing let through in between mean the limiter is locked (a fixed
window spent, a log full of refusals): sending on only prolongs it, so each such 429 asks
for a short pause, doubling with the streak (`Observed.holdoff_s`).

Pure: time comes in as numbers, so a virtual-time model drives it as the pacer does.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final


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


@dataclass(frozen=True, slots=True)
class Observed:
    """What one answer changed: the rate, and a pause the limiter's lock calls for."""

    change: RateChange | None = None
    holdoff_s: float = 0.0


_NOTHING: Final = Observed()


class AdaptiveRate:
    """Chooses the pacing rate from what each answer says; see the module docstring."""

    START: Final = 20.0  # requests/s: where a ramp from nothing begins
    RAMP_DOUBLING_S: Final = 0.05
    UNLIMITED_ABOVE: Final = 5000.0  # a ramp past this lets the concurrency limit alone
    WINDOW_S: Final = 1.0  # a window lasts at least this long ...
    WINDOW_ANSWERS: Final = 8  # ... and this many answers
    FEWEST_ANSWERS: Final = 3  # ... or, at rates so low that 8 take over 4 s, this many
    SHORT_ANSWERS: Final = 8  # clean answers in a row that end a recovery
    SETTLE: Final = 0.04  # hi / lo under 1 + this: settled
    COSTLY_SETTLE: Final = 0.08  # ... when each 429 costs a Retry-After pause
    COSTLY_TRIM: Final = 0.05  # a held rate that met a Retry-After steps down this much
    COSTLY_CUT: Final = 0.7  # a descent steps down at least this much then (botocore's)
    HOLD_WINDOWS: Final = 4  # clean windows held before probing again
    MAX_PATIENCE: Final = 4
    HI_TTL_S: Final = 10.0  # a 429 older than this (and than 5 windows) no longer bounds
    HI_TTL_WINDOWS: Final = 5
    PROBE_MAX_S: Final = 6.0  # the hold before a probe grows to this after failed ones
    PROBE_STEP: Final = 0.04  # the first probe after holding goes this much above lo
    GROWTH: Final = (1.25, 1.5, 2.0)  # successive clean tries with no hi above
    DROP_THROTTLES: Final = 4  # 429s in a held window that mean at once the limit fell
    DROP_SHARE: Final = 0.25  # ... when they are also at least this share of it
    NOISE: Final = 0.01  # a hold with at most this share of 429s is clean ...
    TRIM: Final = 0.02  # ... and with more, lo steps down by that share, at least this
    OVER_TRIM: Final = 0.05  # at most this much a 429 at a rate lo that it shows over
    FELL: Final = 0.10  # a held window with more than this share of 429s ...
    FELL_THROTTLES: Final = 3  # ... and at least this many: the limit fell
    HAIR: Final = 0.03  # under a stated limit that met a 429, first
    JITTER: Final = 0.05  # a hold a hair under a stated limit takes this share as timing
    JITTER_ANSWERS: Final = 200  # ... over at least this many answers
    PROVEN: Final = 0.9  # of the last second's goodput: no cut goes below it
    HOLDOFF_CAP_S: Final = 5.0
    FLOOR_SHARE: Final = 1 / 20  # never below this share of the best second of a minute
    MIN_RATE: Final = 0.01  # requests/s, when nothing at all has got through
    # Sharing a stated limit with other clients (Phase.SHARE): see `_share_cut`.
    SEEN: Final = 50  # the last answers in which 429s show other clients ...
    SHARE_MOST: Final = 5  # ... at this many ...
    SHARE_MOST_SLOW: Final = 2  # ... or this many at TIMING_ABOVE a second or less, when
    # the opening found its burst taken (`bursty` None) ...
    TIMING_ABOVE: Final = 20.0  # ... above which a strict limiter's timing makes 429s
    SHARE_ROOMLESS: Final = 50  # or answers in a row with no room left (see `room`)
    # A 429 cuts the rate to this share of it, once a window. Shallower cuts come more
    # often: at 0.8, four clients at 50/s refused 7% of requests in the model
    # (benchmarks.share_model), 4.6% at 0.7, with no less of the limit used.
    SHARE_CUT: Final = 0.7
    SHARE_STEP: Final = 0.01  # of the limit: a clean window's step up (a window a second)
    SHARE_CALM: Final = 3  # clean windows in a row after which the step doubles ...
    SHARE_DOUBLINGS: Final = 4  # ... with each more, this many times
    SHARE_ALONE: Final = 10  # clean windows at the hair: the others are gone

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
        self._ramp_from = now
        self._growth = 0
        self._held = self._held_answers = self._held_throttled = 0
        self._misses = 0
        self._recover_from = now
        self._hold_windows = self.HOLD_WINDOWS
        self._probe_from: float | None = None
        self._costly = False
        self._haired = False
        self._patience = 1  # windows last this many times their least
        self._episode = now  # a 429 came with a Retry-After: each one pauses every request
        self._streak = 0  # fresh 429s in a row, nothing let through between them
        self._recent: deque[float] = deque()  # times of answers let through, last second
        self._seconds: deque[list[int]] = deque()  # [second, let through], last minute
        self._sends: deque[float] = deque(maxlen=64)  # while ramping: when requests left
        self._seen: deque[bool] = deque(maxlen=self.SEEN)  # last answers: a 429?
        # Whether the limiter lets bursts through, as the pacer saw: True, timing at the
        # hair makes no 429 there, so 429s mean other clients and the limit is shared
        # (Phase.SHARE); False, a strict one, which refuses a request that a timer woke
        # a little early, so its 429s are judged as timing first (`_judge_hold`); None,
        # not known (other clients took the opening's burst): its 429s are taken as
        # others', but neither its lack of room nor (the pacer's) its requests scattered.
        self.bursty: bool | None = None
        self._clean_windows = 0  # sharing: clean windows in a row
        self._roomless = 0  # answers let through in a row that left no room
        self._roomy_windows = 0  # ... of which had room left, in a row
        self._share_cut_at = -math.inf  # the last cut while sharing
        self._window_room: bool | None = None
        if ceiling is None:
            self.rate: float | None = self.START
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
        rate = self._ramp_rate(now)
        if rate <= self.rate:
            return None
        old = self.rate
        self.rate = None if rate > self.UNLIMITED_ABOVE else rate
        return RateChange(old, None, "ramp") if self.rate is None else None

    # ---- what the answers say ---------------------------------------------------------

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

    def observe(
        self, now: float, sent_at: float, *, throttled: bool, retry_after: bool = False
    ) -> Observed:
        """One answer to a request sent at `sent_at`; `retry_after` when a 429 carried one."""
        self._seen.append(throttled)
        if not throttled:
            self._count_through(now)
            self._streak = 0
        if sent_at < self._window_start:
            return _NOTHING  # sent at an earlier rate: it says nothing of this one
        self._answers += 1
        if not throttled:
            return Observed(self._on_window_end(now)) if self._window_done(now) else _NOTHING
        self._throttled += 1
        self._streak += 1
        if retry_after:
            self._costly = True
        change = self._on_throttle(now, sent_at, retry_after)
        return Observed(change, self._holdoff())

    def room(self, remaining: int) -> None:
        """The server's Remaining after a request it let through. Room says the limiter lets
        bursts through (a strict one has none). None, answer after answer, while held
        under a stated limit, says others take what this client leaves: alone a hair
        under the limit of a token bucket, its room grows back within 1 / HAIR answers;
        other clients at a bucket see few 429s beside one that sends on a steady grid,
        which wins the room as it comes back, so this is how such a client sees them."""
        if remaining >= 1:
            self.bursty = True
            self._roomless = 0
            self._window_room = True
        else:
            self._roomless += 1
            if self._window_room is None:
                self._window_room = False

    def sent(self, now: float) -> None:
        """A request leaves now (the ramp judges a 429 by how closely it followed)."""
        if self.phase is Phase.RAMP:
            self._sends.append(now)

    def paused(self, seconds: float) -> None:
        """Every request waits `seconds` (a Retry-After): that time is no part of a window."""
        self._paused_s += seconds

    # ---- decisions --------------------------------------------------------------------

    def _on_throttle(self, now: float, sent_at: float, retry_after: bool) -> RateChange | None:
        old = self.rate
        match self.phase:
            case Phase.RAMP:
                failed = self._spacing_rate(sent_at)
                self._narrow(failed)
                self._set(self._descend(failed / 2, now, failed), Phase.DESCEND, now)
            case Phase.DESCEND:
                if self._streak > 2:
                    # Refused whatever the rate: the limiter is locked. Wait (the hold-off)
                    # and judge this rate on what comes after.
                    self._start_window(now)
                    return None
                self._narrow(self._window_rate)
                self._set(self._descend(self._cut(), now), Phase.DESCEND, now)
            case Phase.TRY:
                if self._try_failed(now):
                    return RateChange(old, self.rate, "throttled", settled=True)
            case Phase.RECOVER:
                if self._over_lo_again(now):
                    return self._over_lo(now, 1 / self._answers)
                self._misses += 1
                if self._misses < self.DROP_THROTTLES:
                    self._start_window(now)  # the limiter is still refilling: wait on
                    return None
                self._fell(now)
            case Phase.HOLD:
                return self._held_throttled_at(now, retry_after)
            case Phase.SHARE:
                if now - self._share_cut_at < self.WINDOW_S:
                    return None  # one cut a window: a burst of 429s is one overshoot
                return self._share_cut(now)
        if self.rate == old:
            return None
        return RateChange(old, self.rate, self._fell_reason("throttled"))

    def _held_throttled_at(self, now: float, retry_after: bool) -> RateChange | None:
        old, lo, cap = self.rate, self.lo, self.cap
        assert lo is not None
        if cap is not None and lo >= cap and not self._haired:
            # Held at a stated limit, clean until now: a 429 there is timing (see
            # `_try_failed`), and the rate holds a hair under it from now on.
            self._to_hair(cap, now)
            return RateChange(old, self.rate, "throttled", settled=True)
        if cap is not None and self._haired and self._contended():
            return self._share_cut(now)
        slow = self.rate is not None and self.rate <= self.TIMING_ABOVE
        held = self._held_answers + self._answers
        if cap is None and slow and self._streak == 1 and held > 1:
            # No timing makes a 429 at a few a second: a request the limiter had saved up
            # hid an overshoot of the windows that proved lo (see `_over_lo`).
            return self._over_lo(now, (self._held_throttled + self._throttled) / held)
        if retry_after and not self._at_hair() and not self._first():
            # A second such 429 in a hold: hold a little under, or under what this
            # window got through, when it is long enough to say. (The first, alone,
            # holds only its own request: timing, judged with the window.)
            trimmed = lo * (1 - self.COSTLY_TRIM)
            span = now - self._window_start - self._paused_s
            if span >= self.WINDOW_S:
                through = (self._answers - self._throttled) / span
                trimmed = min(trimmed, max(through * (1 - self.COSTLY_TRIM), lo / 2))
            self.hi, self.lo = lo, trimmed
            self._hold(self.lo, now)
            return RateChange(old, self.rate, "trim")
        if (
            self._throttled < self.DROP_THROTTLES
            or self._throttled < self.DROP_SHARE * self._answers
        ):
            return None  # judged when the window ends: timing noise or a new limit
        self._fell(now)
        return RateChange(old, self.rate, self._fell_reason())

    def _try_failed(self, now: float) -> bool:
        """A try met a 429; True when that settles the rate (a hair under a stated one)."""
        self._narrow(self._window_rate)
        self._growth = 0  # a step up failed: the next starts small again
        if self.lo is not None:
            if self._probe_from is not None:  # a probe's clean window proved nothing
                self.lo = min(self.lo, self._probe_from)
            self._misses = 0
            self._recover_from = now
            self._set(self.lo, Phase.RECOVER, now)
        elif self._window_rate == self.cap and not self._haired:
            # A stated limit met a 429: most likely timing noise at a strict limiter (one
            # with no burst refuses a request that a timer woke a millisecond late, or that
            # the network bunched), or a little of it taken by another client. Hold a hair
            # under it, where such 429s are retried in the next slot and cut nothing; more
            # of them than timing makes (`_judge_hold`) mean another client.
            return self._to_hair(self._window_rate, now)
        else:
            self._set(self._descend(self._cut(), now), Phase.DESCEND, now)
        return False

    def _to_hair(self, limit: float, now: float) -> bool:
        """Hold a hair under a stated `limit` that met a 429; True when that is news."""
        self._haired = True
        self.hi, self.lo = limit, limit * (1 - self.HAIR)
        return self._hold(self.lo, now)

    def _over_lo(self, now: float, share: float) -> RateChange | None:
        """Refused at lo after answers let through: lo itself is over the limit. A window
        of n clean answers cannot tell rates 1/n apart, since one request a bucket saved
        up hides an overshoot of one answer (of 12% at 2/s, eight answers a window), and
        once the saving is spent such a rate meets a 429 every few windows. Held there,
        each is one more; hold under it by `share`, the answers refused since lo held,
        at least TRIM and at most OVER_TRIM (a few answers make a coarse share: a trim
        too deep costs more than the 429 another brings)."""
        old, lo = self.rate, self.lo
        assert lo is not None
        self.hi, self.lo = lo, lo * (1 - min(max(share, self.TRIM), self.OVER_TRIM))
        # (Settled anew when that is news: a trim while recovering is where the bracket
        # closes, and a run learns the limit it settles on.)
        return RateChange(old, self.rate, "trim", settled=self._hold(self.lo, now))

    def _over_lo_again(self, now: float) -> bool:
        """Whether a 429 while recovering says lo is over the limit: after answers let
        through since the last one, and a window after the failed try (a limiter in debt
        refuses in a row, and a sliding log holds the try's requests that long)."""
        return self._streak == 1 and self._answers > 1 and now - self._recover_from >= self.WINDOW_S

    def _first(self) -> bool:
        """Whether the 429 just met is the first of this hold, after an answer let through."""
        return self._streak == 1 and self._held_throttled + self._throttled == 1

    def _at_hair(self) -> bool:
        """Whether this is a hold a hair under a stated limit, where a 429 is timing (two
        in a row, when a busy moment bunched the requests), which no cut would cure;
        their share over the hold tells another client (`_judge_hold`)."""
        cap, lo = self.cap, self.lo
        return (
            self._haired
            and self.phase is Phase.HOLD
            and cap is not None
            and lo is not None
            and lo >= cap * (1 - self.HAIR) * (1 - 1e-9)
        )

    def _on_window_end(self, now: float) -> RateChange | None:
        old = self.rate
        settled = False
        reason = "clean"
        match self.phase:
            case Phase.RAMP:
                self._start_window(now)  # the ramp has no windows
                return None
            case Phase.DESCEND | Phase.TRY:
                rate = self._window_rate
                probe = self._probe_from
                if probe is not None and rate > probe * (1 + self._unproven_step()):
                    self._probe_from = None  # the probe found capacity: probe often again
                    self._hold_windows = self.HOLD_WINDOWS
                self.lo = rate if self.lo is None else max(self.lo, rate)
                if self.hi is not None and self.hi < self.lo:
                    self.hi = None  # proven wrong: capacity was freed
                settled = self._next(now)
            case Phase.RECOVER:
                if self._probe_from is not None and self.lo is not None:
                    # A probe found nothing above: hold, with no search between (each try
                    # there costs a 429, and a window too short to prove it passes clean).
                    settled = self._hold(self.lo, now)
                else:
                    settled = self._next(now, recovered=True)
            case Phase.HOLD:
                return self._judge_hold(now)
            case Phase.SHARE:
                return self._judge_share(now)
        if self.rate == old and not settled:
            return None
        return RateChange(old, self.rate, reason, settled=settled)

    def _judge_hold(self, now: float) -> RateChange | None:
        old, lo = self.rate, self.lo
        assert lo is not None
        # (A hair under a stated limit, a busy moment bunches timing 429s: only as many
        # as another client's share makes say the limit fell.)
        fell = self.DROP_SHARE if self._at_hair() else self.FELL
        if self._throttled >= self.FELL_THROTTLES and self._throttled > fell * self._answers:
            self._fell(now)
            return RateChange(old, self.rate, self._fell_reason())
        # A lone 429 is timing noise; more than noise, over the whole hold, is an
        # overshoot a saved-up burst hid until now: hold a little under.
        self._held_answers += self._answers
        self._held_throttled += self._throttled
        share = self._held_throttled / self._held_answers
        # A hair under a stated limit, 429s are timing, which comes in bunches (the first
        # answers on new connections, a busy moment): judged over JITTER_ANSWERS at least.
        hair = self._at_hair()
        noise = self.JITTER if hair else self.NOISE
        enough = not hair or self._held_answers >= self.JITTER_ANSWERS
        if self._held_throttled > 1 and share > noise and enough:
            self.hi, self.lo = lo, lo * (1 - max(share, self.TRIM))
            self._hold(self.lo, now)
            return RateChange(old, self.rate, "trim")
        self._held += 1
        cap = self.cap
        if (
            self._held < self._hold_windows
            or (cap is not None and lo >= cap)
            or self._at_hair()  # the limit is stated: nothing above it to find
            or now < self._probe_not_before
        ):
            self._start_window(now)
            return None
        # Look for freed capacity, gently: a try a step above lo. If it fails, the next
        # comes after a longer hold.
        self._probe_from = lo
        self._hold_windows = min(self._hold_windows * 2, self._max_hold_windows())
        self.hi, self._growth = None, 0
        probe = lo * (1 + self.PROBE_STEP)
        self._set(probe if cap is None else min(cap, probe), Phase.TRY, now)
        return RateChange(old, self.rate, "probe")

    def _next(self, now: float, *, recovered: bool = False) -> bool:
        """Choose the next window's rate from the bracket; True when that settles it.
        Right after a failed try (`recovered`) its 429 still bounds the next one, however
        long the recovery took."""
        lo, hi, cap = self.lo, self.hi, self.cap
        assert lo is not None
        if cap is not None and lo >= cap:
            return self._hold(cap, now)
        if hi is not None and hi != cap and not recovered and now - self._hi_at > self._hi_ttl():
            hi = self.hi = None  # a 429 that old may have come from a client now gone
        if hi is None:
            growth = self.GROWTH[min(self._growth, len(self.GROWTH) - 1)]
            self._growth += 1
            if self._probe_from is not None:
                # Above a probe too small to prove, the least step a window can: so a rate
                # held low climbs, and one a hair under the limit tries little above it.
                growth = min(growth, 1 + self._resolution())
            target = lo * growth
            self._set(target if cap is None else min(cap, target), Phase.TRY, now)
            return False
        self._growth = 0
        if hi <= lo * (1 + (self.COSTLY_SETTLE if self._costly else self.SETTLE)):
            return self._hold(lo, now)
        self._set(math.sqrt(lo * hi), Phase.TRY, now)
        return False

    def _resolution(self) -> float:
        """The least step up that a clean window at this rate proves: one answer of its
        answers (a request the limiter saved up hides an overshoot of one a window)."""
        return 1 / max(self._window_answers(), self._window_rate * self.WINDOW_S)

    def _unproven_step(self) -> float:
        """How far above the rate it came from a clean probe window proves nothing: all of
        PROBE_STEP when that is less than the window can prove, none otherwise."""
        return self.PROBE_STEP * (1 + 1e-9) if self._resolution() > self.PROBE_STEP else 0.0

    def _hi_ttl(self) -> float:
        window = max(self.WINDOW_S, self._window_answers() / self._window_rate)
        return max(self.HI_TTL_S, self.HI_TTL_WINDOWS * window)

    def _max_hold_windows(self) -> int:
        """Probes at most every PROBE_MAX_S (four times as long when a 429 costs a
        Retry-After pause of every request), and never more often than HOLD_WINDOWS."""
        window = max(self.WINDOW_S, self._window_answers() / self._window_rate)
        most = self.PROBE_MAX_S * (4 if self._costly else 1)
        return max(self.HOLD_WINDOWS, math.floor(most / window))

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

    def _fell(self, now: float) -> None:
        """Refused at a proven rate: the limit fell (another client came), or was never
        where it seemed (a burst the limiter had saved hid an overshoot). Look for it again
        below, judging each rate over longer windows from now on. (Not after a hold a
        hair under a stated limit: nothing was proven there to hide an overshoot, and
        another client took a share; windows four times as long at a low rate took one
        such run minutes to climb back once the other stopped.) Under a stated limit,
        unless the limiter is strict, other clients take part of it: it is shared."""
        if self.cap is not None and self.bursty is not False:
            self._share_cut(now)
            return
        self._hold_windows = self.HOLD_WINDOWS
        self._probe_from = None  # a fall ends a probe: the search starts again below
        if not self._at_hair():
            self._patience = min(self.MAX_PATIENCE, self._patience * 2)
        failed = self._window_rate
        self.hi, self.lo, self.settled = failed, None, False
        self._set(self._descend(self._cut(), now), Phase.DESCEND, now)

    # ---- sharing a stated limit --------------------------------------------------------

    def _contended(self) -> bool:
        """Whether other clients take part of the limit: SHARE_MOST 429s among the last
        answers at a limiter not known to be strict (where timing alone makes them), or
        SHARE_ROOMLESS answers in a row with no room left at one that has had room (a
        strict one never has: `room`). Where the opening found its burst taken, others
        were there from the start: at TIMING_ABOVE a second or less, where timing makes
        no 429s, SHARE_MOST_SLOW are enough. (Such a client, held at the hair on a steady
        grid, wins the races for the room a bucket gives back and meets few: waiting for
        five at 10/s, one met 3 to 4 in every 50 answers for 30 s and never shared, while
        the other, sharing, was cut to a quarter of the limit. One alone whose opening
        found the burst meets a few at a sliding counter's edges, which are no others.)"""
        if self.bursty is False:
            return False
        roomless = self.bursty is True and self._roomless >= self.SHARE_ROOMLESS
        slow = self.rate is not None and self.rate <= self.TIMING_ABOVE
        most = self.SHARE_MOST_SLOW if slow and self.bursty is None else self.SHARE_MOST
        return roomless or self.recent_429s >= most

    def _share_cut(self, now: float) -> RateChange | None:
        """Other clients take part of the stated limit (or still do: a 429 while sharing).
        Each of them meets 429s in proportion to what it sends (at a token bucket, with
        its requests scattered: `Pacer.due`), so each cuts by the same share on a 429 and
        steps up by the same share of the limit, which they all know, each clean second:
        additive increase, multiplicative decrease, as TCP, so that the client with more
        gives up more and none is starved. (Held at the hair, a client that kept its
        rate while another cut on every 429 and paused for each Retry-After took nearly
        all of the limit.) The new rate is judged from the next request on: answers to
        those sent before were sent too fast."""
        old, cap = self.rate, self.cap
        assert cap is not None
        current = cap if old is None else old
        self._clean_windows = self._roomy_windows = 0
        self._share_cut_at = now
        self._set(max(current * self.SHARE_CUT, self._floor(now)), Phase.SHARE, now)
        return RateChange(old, self.rate, "contended") if self.rate != old else None

    def _judge_share(self, now: float) -> RateChange | None:
        old, cap = self.rate, self.cap
        if cap is None:  # the stated limit lapsed: look for the limit anew
            self.hi, self.lo = None, old
            self._hold(old or self.MIN_RATE, now)
            return None
        if self._throttled:  # 429s in the second after a cut: no step, no cut
            self._clean_windows = self._roomy_windows = 0
            self._start_window(now)
            return None
        self._clean_windows += 1
        self._roomy_windows = self._roomy_windows + 1 if self._window_room else 0
        hair = cap * (1 - self.HAIR)
        assert old is not None
        if old >= hair * (1 - 1e-9):
            if self._clean_windows < self.SHARE_ALONE:
                self._start_window(now)
                return None
            self._to_hair(cap, now)  # alone again: held as before, 429s there are timing
            return None
        self._set(min(hair, old + cap * self.SHARE_STEP * 2 ** self._doublings()), Phase.SHARE, now)
        return RateChange(old, self.rate, "clean")

    def _doublings(self) -> int:
        """How many times the step doubles: with each clean window in a row after
        SHARE_CALM of them; where the server tells the room left at a limiter that has
        had some, only windows with room count (none left: others still take what this
        client leaves, and a faster step is a deeper overshoot for all, and more 429s)."""
        if self._window_room is None or self.bursty is not True:
            # (A strict limiter never has room: its Remaining says nothing of others.)
            clean = self._clean_windows - self.SHARE_CALM
        else:
            clean = self._roomy_windows - self.SHARE_CALM
        return min(max(0, clean), self.SHARE_DOUBLINGS)

    def _fell_reason(self, otherwise: str = "fell") -> str:
        match self.phase:
            case Phase.DESCEND:
                return "fell"
            case Phase.SHARE:
                return "contended"
        return otherwise

    def _narrow(self, failed: float) -> None:
        self.hi = failed if self.hi is None else min(self.hi, failed)
        self._hi_at = self._window_start

    def _cut(self) -> float:
        """Down by the share of this window's requests that got through, at least by a
        tenth and at most by half."""
        share = (self._answers - self._throttled) / max(1, self._answers)
        # When every 429 pauses everything, a small step costs a pause a step.
        most = self.COSTLY_CUT if self._costly else 0.9
        return self._window_rate * min(most, max(0.5, share))

    def _descend(self, target: float, now: float, failed: float | None = None) -> float:
        """Down to `target`, but never below what the answers since the overshoot began
        prove the server lets through, nor the floor; and never up."""
        if self.phase is not Phase.DESCEND:
            self._episode = now  # an overshoot begins: the limiter is spent from here
        proven = self._goodput(now) * self.PROVEN
        ceiling = self._window_rate if failed is None else failed
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

    # ---- bookkeeping ------------------------------------------------------------------

    def _set(self, rate: float, phase: Phase, now: float) -> None:
        self.rate = max(rate, self.MIN_RATE)
        self.phase = phase
        self._start_window(now)

    def _start_window(self, now: float) -> None:
        self._window_start = now
        self._window_rate = self.rate if self.rate is not None else math.inf
        self._answers = 0
        self._throttled = 0
        self._paused_s = 0.0
        self._window_room = None  # room left after an answer (see `room`)

    def _window_done(self, now: float) -> bool:
        if self.phase is Phase.RECOVER:
            return self._answers >= self.SHORT_ANSWERS
        span = now - self._window_start - self._paused_s
        if self.phase is Phase.SHARE:
            # A second, however few its answers: every client sharing the limit steps up
            # as often as every other, or the one sending least would climb slowest.
            return span >= self.WINDOW_S
        answers = self._window_answers() * self._patience
        needed = max(self.WINDOW_S * self._patience, answers / self._window_rate)
        return span >= needed and self._answers >= answers

    def _spacing_rate(self, sent_at: float) -> float:
        """The rate a ramping request was sent at, from the gap before it."""
        before = [at for at in self._sends if at < sent_at]
        if before and sent_at > before[-1]:
            return 1.0 / (sent_at - before[-1])
        return self._ramp_rate(sent_at)

    def _window_answers(self) -> int:
        """Answers a window needs: WINDOW_ANSWERS, fewer (down to 3) below 2/s, where eight
        would make a window of many seconds and a climb from a deep cut of minutes; at
        most 4 s of answers."""
        if self._window_rate >= self.WINDOW_ANSWERS / 4:
            return self.WINDOW_ANSWERS
        return max(self.FEWEST_ANSWERS, math.floor(self._window_rate * 4))

    def _ramp_rate(self, at: float) -> float:
        doublings = min(30.0, (at - self._ramp_from) / self.RAMP_DOUBLING_S)
        return min(self.START * math.pow(2.0, doublings), self.UNLIMITED_ABOVE * 2)

    def _count_through(self, now: float) -> None:
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

    def _goodput(self, now: float) -> float:
        """Requests let through since the overshoot began, per second, over a second at
        least: a burst the limiter had saved up is not what it lets through."""
        since = max(self._episode, now - 1.0)
        return sum(1 for at in self._recent if at > since) / max(1.0, now - since)

    def _floor(self, now: float) -> float:
        best = max((count for second, count in self._seconds if second > now - 60), default=0)
        return max(self.MIN_RATE, best * self.FLOOR_SHARE)
