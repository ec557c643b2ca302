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
from dataclasses import dataclass
from typing import Final

from orchestrator.pacing.rate_state import Phase, RateChange, RateState
from orchestrator.pacing.window import Window

__all__ = ["AdaptiveRate", "Observed", "Phase", "RateChange"]


@dataclass(frozen=True, slots=True)
class Observed:
    """What one answer changed: the rate, and a pause the limiter's lock calls for."""

    change: RateChange | None = None
    holdoff_s: float = 0.0


_NOTHING: Final = Observed()


class AdaptiveRate(RateState):
    """Chooses the pacing rate from what each answer says; see the module docstring."""

    COSTLY_SETTLE: Final = 0.08  # hi / lo under 1 + this settles when each 429 costs a
    # Retry-After pause (SETTLE otherwise)
    COSTLY_TRIM: Final = 0.05  # a held rate that met a Retry-After steps down this much
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
    TIMING_ABOVE: Final = 20.0  # requests/s above which a strict limiter's timing makes 429s

    def observe(
        self, now: float, sent_at: float, *, throttled: bool, retry_after: bool = False
    ) -> Observed:
        """One answer to a request sent at `sent_at`; `retry_after` when a 429 carried one."""
        self._seen.append(throttled)
        if not throttled:
            self._through.add(now)
            self._streak = 0
        window = self._window
        if sent_at < window.start:
            return _NOTHING  # sent at an earlier rate: it says nothing of this one
        window.answers += 1
        if not throttled:
            return Observed(self._on_window_end(now)) if self._window_done(now) else _NOTHING
        window.throttled += 1
        self._streak += 1
        if retry_after:
            self._costly = True
        change = self._on_throttle(now, sent_at, retry_after)
        return Observed(change, self._holdoff())

    def _on_throttle(self, now: float, sent_at: float, retry_after: bool) -> RateChange | None:
        old = self.rate
        match self.phase:
            case Phase.RAMP:
                failed = self._ramp.spacing_rate(sent_at)
                self._narrow(failed)
                self._set(self._descend(failed / 2, now, failed), Phase.DESCEND, now)
            case Phase.DESCEND:
                if self._streak > 2:
                    # Refused whatever the rate: the limiter is locked. Wait (the hold-off)
                    # and judge this rate on what comes after.
                    self._start_window(now)
                    return None
                self._narrow(self._window.rate)
                self._set(self._descend(self._cut(), now), Phase.DESCEND, now)
            case Phase.TRY:
                if self._try_failed(now):
                    return RateChange(old, self.rate, "throttled", settled=True)
            case Phase.RECOVER:
                if self._over_lo_again(now):
                    return self._over_lo(now, 1 / self._window.answers)
                self._misses += 1
                if self._misses < self.DROP_THROTTLES:
                    self._start_window(now)  # the limiter is still refilling: wait on
                    return None
                self._fell(now)
            case Phase.HOLD:
                return self._held_throttled_at(now, retry_after)
            case Phase.SHARE:
                if now - self._sharing.cut_at < Window.LEAST_S:
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
        held = self._held_answers + self._window.answers
        if cap is None and slow and self._streak == 1 and held > 1:
            # No timing makes a 429 at a few a second: a request the limiter had saved up
            # hid an overshoot of the windows that proved lo (see `_over_lo`).
            return self._over_lo(now, (self._held_throttled + self._window.throttled) / held)
        if retry_after and not self._at_hair() and not self._first():
            # A second such 429 in a hold: hold a little under, or under what this
            # window got through, when it is long enough to say. (The first, alone,
            # holds only its own request: timing, judged with the window.)
            trimmed = lo * (1 - self.COSTLY_TRIM)
            window = self._window
            if (span := window.span(now)) >= Window.LEAST_S:
                through = (window.answers - window.throttled) / span
                trimmed = min(trimmed, max(through * (1 - self.COSTLY_TRIM), lo / 2))
            self.hi, self.lo = lo, trimmed
            self._hold(self.lo, now)
            return RateChange(old, self.rate, "trim")
        if (
            self._window.throttled < self.DROP_THROTTLES
            or self._window.throttled < self.DROP_SHARE * self._window.answers
        ):
            return None  # judged when the window ends: timing noise or a new limit
        self._fell(now)
        return RateChange(old, self.rate, self._fell_reason())

    def _try_failed(self, now: float) -> bool:
        """A try met a 429; True when that settles the rate (a hair under a stated one)."""
        self._narrow(self._window.rate)
        self._growth = 0  # a step up failed: the next starts small again
        if self.lo is not None:
            if self._probe_from is not None:  # a probe's clean window proved nothing
                self.lo = min(self.lo, self._probe_from)
            self._misses = 0
            self._recover_from = now
            self._set(self.lo, Phase.RECOVER, now)
        elif self._window.rate == self.cap and not self._haired:
            # A stated limit met a 429: most likely timing noise at a strict limiter (one
            # with no burst refuses a request that a timer woke a millisecond late, or that
            # the network bunched), or a little of it taken by another client. Hold a hair
            # under it, where such 429s are retried in the next slot and cut nothing; more
            # of them than timing makes (`_judge_hold`) mean another client.
            return self._to_hair(self._window.rate, now)
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
        since = now - self._recover_from
        return self._streak == 1 and self._window.answers > 1 and since >= Window.LEAST_S

    def _first(self) -> bool:
        """Whether the 429 just met is the first of this hold, after an answer let through."""
        return self._streak == 1 and self._held_throttled + self._window.throttled == 1

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
                rate = self._window.rate
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
        fell, window = self.DROP_SHARE if self._at_hair() else self.FELL, self._window
        if window.throttled >= self.FELL_THROTTLES and window.throttled > fell * window.answers:
            self._fell(now)
            return RateChange(old, self.rate, self._fell_reason())
        # A lone 429 is timing noise; more than noise, over the whole hold, is an
        # overshoot a saved-up burst hid until now: hold a little under.
        self._held_answers += window.answers
        self._held_throttled += window.throttled
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
                growth = min(growth, 1 + self._window.resolution())
            target = lo * growth
            self._set(target if cap is None else min(cap, target), Phase.TRY, now)
            return False
        self._growth = 0
        if hi <= lo * (1 + (self.COSTLY_SETTLE if self._costly else self.SETTLE)):
            return self._hold(lo, now)
        self._set(math.sqrt(lo * hi), Phase.TRY, now)
        return False

    def _unproven_step(self) -> float:
        """How far above the rate it came from a clean probe window proves nothing: all of
        PROBE_STEP when that is less than the window can prove, none otherwise."""
        return self.PROBE_STEP * (1 + 1e-9) if self._window.resolution() > self.PROBE_STEP else 0.0

    def _hi_ttl(self) -> float:
        return max(self.HI_TTL_S, self.HI_TTL_WINDOWS * self._window.length_s())

    def _max_hold_windows(self) -> int:
        """Probes at most every PROBE_MAX_S (four times as long when a 429 costs a
        Retry-After pause of every request), and never more often than HOLD_WINDOWS."""
        most = self.PROBE_MAX_S * (4 if self._costly else 1)
        return max(self.HOLD_WINDOWS, math.floor(most / self._window.length_s()))

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
        failed = self._window.rate
        self.hi, self.lo, self.settled = failed, None, False
        self._set(self._descend(self._cut(), now), Phase.DESCEND, now)

    def _contended(self) -> bool:
        slow = self.rate is not None and self.rate <= self.TIMING_ABOVE
        return self._sharing.contended(self.bursty, slow=slow, recent_429s=self.recent_429s)

    def _share_cut(self, now: float) -> RateChange | None:
        """Other clients take part of the stated limit (or still do: a 429 while sharing):
        cut, as each of them does (see `Sharing`). The new rate is judged from the next
        request on: answers to those sent before were sent too fast."""
        old, cap = self.rate, self.cap
        assert cap is not None
        cut = self._sharing.cut(now, cap if old is None else old)
        self._set(max(cut, self._floor(now)), Phase.SHARE, now)
        return RateChange(old, self.rate, "contended") if self.rate != old else None

    def _judge_share(self, now: float) -> RateChange | None:
        old, cap = self.rate, self.cap
        if cap is None:  # the stated limit lapsed: look for the limit anew
            self.hi, self.lo = None, old
            self._hold(old or self.MIN_RATE, now)
            return None
        sharing, room = self._sharing, self._window.room
        sharing.window(throttled=self._window.throttled > 0, room=room)
        if self._window.throttled:  # 429s in the second after a cut: no step, no cut
            self._start_window(now)
            return None
        hair = cap * (1 - self.HAIR)
        assert old is not None
        if old >= hair * (1 - 1e-9):
            if not sharing.alone:
                self._start_window(now)
                return None
            self._to_hair(cap, now)  # alone again: held as before, 429s there are timing
            return None
        # (A strict limiter never has room: its Remaining says nothing of others.)
        room_told = room is not None and self.bursty is True
        self._set(min(hair, old + sharing.step(cap, room_told=room_told)), Phase.SHARE, now)
        return RateChange(old, self.rate, "clean")

    def _fell_reason(self, otherwise: str = "fell") -> str:
        match self.phase:
            case Phase.DESCEND:
                return "fell"
            case Phase.SHARE:
                return "contended"
        return otherwise
