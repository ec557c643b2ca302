"""When a request may leave: the pacer puts together the token bucket, the adaptive
rate, the opening burst and the batches a window limiter calls for after it, the shared
pause and the token's shared schedule, and logs each decision of the rate."""

from __future__ import annotations

import math
from typing import Final

import anyio
import anyio.lowlevel
import structlog

from orchestrator.api.outcomes import Answer
from orchestrator.errors import OutageError
from orchestrator.pacing.adaptive import AdaptiveRate, Phase, RateChange
from orchestrator.pacing.backoff import Pause
from orchestrator.pacing.batches import Batches
from orchestrator.pacing.bucket import TokenBucket
from orchestrator.pacing.circuit import Circuit
from orchestrator.pacing.clock import Clock
from orchestrator.pacing.events import PacingEvents, rounded
from orchestrator.pacing.opening import OPENING_S, Opening, Refusal
from orchestrator.pacing.publish import LimitPublisher
from orchestrator.shared.schedule import SharedSchedule

log = structlog.get_logger("orchestrator")

# A Retry-After of at most this on a lone 429 (one that follows an answer let through)
# holds only its own request: a whole-second header cannot say less, and a token bucket
# that refused one request 20 ms early takes the next one on time. A second 429 in a row,
# a longer Retry-After, a 503's, or a 429 while an unknown limit is looked for from above
# pauses every worker (and every process on the token): see Pacer._pauses_all.
LONE_RETRY_AFTER_S: Final = 1.0
# ... and only while 429s are rare: fewer than this many among the last answers the rate
# has seen (AdaptiveRate.SEEN). More say another client shares the limit, and a pause of
# everyone is how uncoordinated clients make room for each other.
LONE_MOST: Final = 2
# Above AdaptiveRate.TIMING_ABOVE (requests under 50 ms apart) timing at a strict limiter
# makes 429s of its own, which a busy machine bunches (4 in 50 were seen a hair under a
# stated limit): there, rare is fewer than TIMING_MOST.
TIMING_MOST: Final = 6
# A limit that an earlier run learned holds this long before the rate probes above it:
# the next cron run's first minute goes at a limit already proven, with no 429.
TRUST_S: Final = 60.0
SEND_SLACK: Final = 0.05
# ... and a stated limit's interval this much longer: half the hair its rate is held under
# after a 429 (`AdaptiveRate.HAIR`), the other half left for catching up.
CAP_MARGIN: Final = 0.015


class Pacer:
    """The one gate every request passes, whatever its endpoint (the API's limit is per
    token): the Retry-After pause, the circuit, the token bucket, whose rate the adaptive
    rate sets from what the answers say, then the slot in the token's schedule shared
    with other processes, when there is one."""

    def __init__(
        self,
        ceiling: float | None,
        clock: Clock,
        *,
        circuit_threshold: int = 0,
        shared: SharedSchedule | None = None,
        max_outage: float | None = None,
    ) -> None:
        self._clock = clock
        # Give up (OutageError from `turn`) after this long with no HTTP answer, or with
        # the circuit open; None never gives up.
        self.max_outage = max_outage
        self._silent_since: float | None = None  # sent_at of the first unanswered request
        self.last_error: str | None = None  # the last fault heard
        self.pause = Pause(clock)
        self.rate = AdaptiveRate(ceiling, clock.now())
        self.bucket = TokenBucket(self.rate.rate, clock)
        self.circuit = Circuit(circuit_threshold, clock)
        self.shared = shared
        self._shared_per_s: float | None = None  # the shared limit the rate was told of
        self._shared_stated = False  # ... as a ceiling (a --rate's, or the server's)
        # A limit learned, published to the shared schedule once proven.
        self._publisher = None if shared is None else LimitPublisher(shared)
        self._line = anyio.Lock()  # one reservation in the shared schedule at a time
        self._unreserved = 0.0  # credit of requests sent above a learned limit, unreserved
        self._opening: Opening | None = None  # the limiter's first burst, while it lasts
        self._may_open = True  # until a run's opening is decided, or a 429 came first
        self._first_sent = math.inf  # when the run's first request left
        self._opened_told = False  # the log has said the opening ended
        self._batches: Batches | None = None  # a window limiter's room, sent as it returns
        self._batches_ended = -math.inf  # 429s to requests sent in batches before this
        self._batch_line = anyio.Lock()
        self._windowed = False  # batches began once: the limiter counts in windows
        self._follow_shared()

    async def turn(self) -> float:
        """Wait until a request may leave; its slot (the time it was due, which a late
        wake-up may have passed by a little), to hand back to `observe`.

        Raises OutageError once the outage has lasted `max_outage`: no wait runs past it."""
        while True:
            if self.shared is not None and self.shared.pending:
                await self.shared.flush()
                self._follow_shared()
            self.check_outage()
            await self.pause.wait(self.outage_deadline())
            self.check_outage()
            await self.circuit.wait(self.outage_deadline())
            self.check_outage()
            if self.rate.phase is Phase.RAMP:
                self.rate.tick(self._clock.now())
                self._follow()
            if self.shared is None:
                slot = await self._own_slot()
            else:
                slot = await self._shared_turn(self.shared)
            if self.pause.remaining == 0:  # a Retry-After may have come while we waited
                sent_at = self._clock.now() if slot is None else slot
                self.rate.sent(sent_at)
                self._maybe_open(sent_at)
                if self._opening is not None:
                    self._opening.note_sent(extra=False)
                return sent_at

    def extra(self) -> float | None:
        """Now, when a request may leave at once above the pacing, in the run's opening
        burst (see `opening`); None when it must take its `turn`. Such a request leaves
        as soon as its record is durable, not on the pacing's grid."""
        opening = self._opening
        if opening is None or self.pause.remaining > 0 or self.circuit.is_open:
            return None
        now = self._clock.now()
        if not opening.may_send(now):
            self._log_if_opened(opening)
            return None
        opening.note_sent(extra=True)
        return now

    def _log_if_opened(self, opening: Opening) -> None:
        """Tell of the opening once it has ended, once."""
        if not opening.open and not self._opened_told:
            self._opened_told = True
            log.debug("rate.opened", above=opening.extras, let_through=opening.clean)

    def _maybe_open(self, sent_at: float) -> None:
        """A request leaves at `sent_at`. A run that knows its rate at its first request
        opens with the limiter's burst, unless another process is sending on the token's
        schedule (it is not saved up)."""
        self._first_sent = min(self._first_sent, sent_at)
        if not self._may_open or (cap := self.rate.cap) is None:
            return
        self._may_open = False
        if self._idle():
            self._open(Opening.at(cap, sent_at))

    def _open(self, opening: Opening) -> None:
        self._opening = opening
        log.debug("rate.opening", per_s=rounded(opening.rate), most=opening.credit)

    def _idle(self) -> bool:
        """Whether no other process sends on the token's shared schedule, as far as this
        one's last slot in it said."""
        return self.shared is None or self.shared.idle_s >= OPENING_S

    async def _shared_turn(self, shared: SharedSchedule) -> float | None:
        """Our own bucket's slot, then the shared schedule's: each process holds one
        reservation at a time, so slots go round the processes in turn."""
        async with self._line:
            slot = await self._own_slot()
            if self._above_learned(shared):
                return slot
            start = self._clock.now()
            delay = await shared.slot()
            self._follow_shared()
            if self._batches is not None:
                # A batch reserves its slots at once: it may run one batch ahead of them.
                delay -= self._batches.period
            if delay <= 0:
                return slot
            await self._clock.sleep(delay)
            return start + delay

    async def _own_slot(self) -> float | None:
        """This process's own pacing: the next batch's room once a window limiter calls for
        batches (see `batches`), else the token bucket's slot."""
        async with self._batch_line:
            while True:
                if (batches := self._batches) is None:
                    slot = await self.bucket.acquire()
                    if self._batches is None:
                        return slot
                    continue  # batches began while it waited: it takes its place in them
                if batches.rate != self.rate.cap:
                    self._end_batches("limit_changed")  # (another process's, shared)
                    continue
                now = self._clock.now()
                at = batches.slot(now)
                if at <= now:
                    batches.take(now)
                    return now
                await self._clock.sleep(at - now)

    def due(self, slot: float) -> float:
        """The soonest the request whose turn was `slot` may leave, after its durable
        write: in batches, a period after the one a batch before it left; while other
        clients share the limit, somewhere in the interval after its slot (`_scattered`)."""
        if self._batches is not None:
            return self._batches.due(slot)
        if self._scatters() and (rate := self.bucket.per_second):
            return slot + _scattered(slot) / rate
        return -math.inf

    def _scatters(self) -> bool:
        """Whether requests are scattered in their intervals (`_scattered`), and a lone
        Retry-After holds only its own request: while sharing a stated limit with other
        clients (Phase.SHARE) at a limiter seen to let bursts through, that showed no
        window (a strict limiter, or a window, refuses the requests that a scatter brings
        early or bunches into it)."""
        rate = self.rate
        return rate.phase is Phase.SHARE and rate.bursty is True and not self._windowed

    def left(self, slot: float, at: float) -> None:
        """The request whose turn was `slot` left at `at` (see `due`)."""
        if self._batches is not None:
            self._batches.left(slot, at)

    def _above_learned(self, shared: SharedSchedule) -> bool:
        """Whether this request goes without a slot: the rate probes above a limit that a
        run learned (a lower bound, which the schedule runs at), and the share of its
        requests over that limit skip the schedule, so a raised or freed limit can be
        found and proven. A stated or a server's limit is never exceeded."""
        limit, rate = shared.limit, self.rate.rate
        if limit is None or limit.how != "learned" or rate is None or rate <= limit.per_s:
            self._unreserved = 0.0
            return False
        self._unreserved += (rate - limit.per_s) / rate
        if self._unreserved < 1.0:
            return False
        self._unreserved -= 1.0
        return True

    def min_gap(self) -> float:
        """The least time between two requests' leaving: nearly the rate's own interval
        (SEND_SLACK short, so that slots left late are caught up), and never less than a
        stated limit's with a margin (CAP_MARGIN), as far as the rate's own interval
        allows: a strict limiter holds that limit to the letter, and the way to it adds
        jitter."""
        rate, cap = self.bucket.per_second, self.rate.cap
        if rate is None or self._batches is not None or self._scatters():
            return 0.0
        gap = (1 - SEND_SLACK) / rate
        return gap if cap is None else max(gap, min(1 / rate, (1 + CAP_MARGIN) / cap))

    def open(self) -> bool:
        """True when a request may leave this instant, with no wait at all: the fast path
        that spares an unlimited run a cancel scope and three awaits per request."""
        return (
            self.bucket.unlimited
            and not self.circuit.is_open
            and self.pause.remaining == 0
            and (self.shared is None or not self.shared.active)
            and self._silent_since is None
        )

    def outage_deadline(self) -> float | None:
        """When the outage under way reaches `max_outage`; None while there is none."""
        if self.max_outage is None:
            return None
        starts = [t for t in (self._silent_since, self.circuit.open_since) if t is not None]
        return min(starts) + self.max_outage if starts else None

    def check_outage(self) -> None:
        """Raise OutageError once the outage has lasted `max_outage`."""
        deadline = self.outage_deadline()
        if deadline is None or self._clock.now() < deadline:
            return
        assert self.max_outage is not None
        silent, opened = self._silent_since, self.circuit.open_since
        no_answer = silent is not None and (opened is None or silent <= opened)
        kind = "no_answer" if no_answer else "circuit_open"
        raise OutageError(kind, self.max_outage, self.last_error)

    def hold_all(self, seconds: float) -> bool:
        """Pause every worker for a Retry-After (and every process sharing the token's
        schedule); True when that lengthened the pause."""
        longer = seconds > self.pause.remaining
        if longer:
            self.rate.paused(seconds - self.pause.remaining)
        self.pause.pause_for(seconds)
        if self.shared is not None:
            self.shared.note_pause(seconds)
        return longer

    def observe(
        self, answer: Answer, retry_after: float | None = None, sent_at: float | None = None
    ) -> PacingEvents:
        """Learn from one answer to a request that left at `sent_at` (by default, now);
        what changed, for the log."""
        now = self._clock.now()
        if answer.answered:
            self._silent_since = None
        elif self._silent_since is None:
            self._silent_since = now if sent_at is None else sent_at
        if answer.error is not None:
            self.last_error = answer.error
        stated = None
        if answer.hint is not None and answer.hint.per_second is not None:
            stated = self.rate.learn_limit(answer.hint.per_second, now)
        sent = now if sent_at is None else sent_at
        self._judge_room(answer)
        self._count_before_batches(answer, sent)
        if (opened := self._opening_answer(answer, now, sent, retry_after, stated)) is not None:
            return opened
        if (batched := self._batch_answer(answer, sent, stated)) is not None:
            return batched
        # Asked before the rate sees the answer. To the rate, every 429 with a Retry-After
        # stays costly, lone or not: its descents and trims keep the 429s few (treating a
        # lone one as free cost 0.15 to 0.2 of the limit on window limiters).
        pause_all = retry_after is not None and self._pauses_all(answer, retry_after)
        seen = self.rate.observe(
            now,
            sent,
            throttled=answer.throttled,
            retry_after=retry_after is not None,
        )
        # After the answer is judged: a pause belongs to the window the answer started.
        paused, wait_s = False, 0.0
        if retry_after is not None:
            if pause_all:
                paused = self.hold_all(retry_after)
            else:
                wait_s = retry_after
        if seen.holdoff_s > self.pause.remaining:
            # The limiter is locked: stop feeding it. Silence proves no rate, so the
            # window does not count it.
            self.rate.paused(seen.holdoff_s - self.pause.remaining)
            self.pause.pause_for(seen.holdoff_s)
        change = seen.change or stated
        self._note_stated(answer, stated)
        if (publisher := self._publisher) is not None:  # (while sharing the token's schedule)
            publisher.answer(now, throttled=answer.throttled, change=change, cap=self.rate.cap)
        self._follow()
        circuit = None if answer.throttled else self.circuit.record(answer.fault)
        return PacingEvents(change, circuit, paused, seen.holdoff_s, wait_s)

    def _opening_answer(
        self,
        answer: Answer,
        now: float,
        sent_at: float,
        retry_after: float | None,
        stated: RateChange | None,
    ) -> PacingEvents | None:
        """What the opening burst makes of an answer: the events, for a 429 that only says
        the burst is spent (see `opening`), which no other part of pacing hears of; None
        for an answer to judge as any other."""
        remaining = None if answer.hint is None else answer.hint.remaining
        told = answer.hint is not None and answer.hint.per_second is not None
        if answer.throttled or now - self._first_sent > OPENING_S:
            self._may_open = False
        if told and self._may_open and (cap := self.rate.cap) is not None:
            # The server stated the limit on its first answers: open with what it says
            # is left.
            self._may_open = False
            if self._idle():
                # (The request whose answer said so was let through in the same window.)
                self._open(Opening.at(cap, now, remaining, before=int(not answer.throttled)))
        opening = self._opening
        if opening is None:
            return None
        if told:
            opening.rate = min(opening.rate, self.rate.cap or opening.rate)
        if answer.fault:
            opening.fault(now)
        refusal = opening.answer(now, sent_at, throttled=answer.throttled, remaining=remaining)
        self._judge_burst(opening)
        self._log_if_opened(opening)
        if not opening.open and now >= opening.paid_back():
            self._opening = None  # nothing more to say: the rest of the run skips it
        if refusal is Refusal.NOT_OURS:
            return None
        self._note_stated(answer, stated)
        self._follow()
        if refusal is Refusal.SPENT:
            # Its request alone waits for the server's Retry-After; the others keep to
            # their slots.
            return PacingEvents(stated, wait_s=retry_after or 0.0)
        # A window still holds the burst: every request waits until it is paid back, and
        # from then on the window's room goes in batches.
        batches = self._batch_after(opening)
        left = (opening.paid_back() if batches is None else batches.slot(now)) - now
        if left > self.pause.remaining:
            self.rate.paused(left - self.pause.remaining)
            self.pause.pause_for(left)
        wait_s = retry_after if retry_after is not None and retry_after > left else 0.0
        return PacingEvents(stated, holdoff_s=left, wait_s=wait_s)

    def _judge_room(self, answer: Answer) -> None:
        """The room the server says is left after a request let through (its Remaining)."""
        hint = answer.hint
        if not answer.throttled and hint is not None and hint.remaining is not None:
            self.rate.room(hint.remaining)

    def _judge_burst(self, opening: Opening) -> None:
        """What the opening says of the limiter's burst: two or more let through above
        the pacing, it has one; once the opening has ended with requests sent above the
        pacing, paced ones let through and one more at most, it is strict. (Nothing let
        through, or nothing sent above the pacing because the server's Remaining said
        there was no room, says only that others took the burst.)"""
        if opening.burst >= 2:
            self.rate.bursty = True
        elif not opening.open and opening.extras and opening.clean and self.rate.bursty is None:
            self.rate.bursty = False

    def _batch_after(self, opening: Opening) -> Batches | None:
        """A window still held the opening's burst: from now on, batches (see `batches`),
        unless the opening let through too few for them."""
        if self._batches is None:
            self._batches = Batches.after_opening(
                opening.window, opening.counted_at(), opening.rate, self._clock.now()
            )
            if self._batches is not None:
                self._windowed = True
                log.debug(
                    "rate.batches",
                    size=self._batches.size,
                    period_s=round(self._batches.period, 3),
                )
        return self._batches

    def _count_before_batches(self, answer: Answer, sent_at: float) -> None:
        """A request refused as the window was still full, before batches began: a log
        that counts refused requests holds it too, so the batches keep a period from it."""
        batches = self._batches
        if answer.throttled and batches is not None and sent_at < batches.start:
            batches.counted(sent_at)

    def _batch_answer(
        self, answer: Answer, sent_at: float, stated: RateChange | None
    ) -> PacingEvents | None:
        """What batches make of an answer: the events for a 429 that only says a batch came
        a little early (its request goes in a later one), which the rate never hears of;
        None for an answer to judge as any other. A new limit ends batches, as does a
        429 that says the limiter is no window."""
        batches = self._batches
        if batches is None:
            # A batch still in flight when they ended: its 429s were the batches' doing.
            return PacingEvents() if answer.throttled and sent_at <= self._batches_ended else None
        if stated is not None:
            self._end_batches("limit_changed")
            return None
        if sent_at < batches.start:
            # The window was still full as batches began (counted in `observe`): nothing new.
            return PacingEvents() if answer.throttled else None
        if not answer.throttled:
            batches.let_through()
            return None
        margin = batches.margin
        if batches.refused(sent_at, self._clock.now()):
            if batches.margin != margin:
                log.debug("rate.batch_early", size=batches.size, margin_s=round(batches.margin, 4))
            return PacingEvents()
        self._end_batches("not_a_window")
        return PacingEvents()

    def _end_batches(self, reason: str) -> None:
        self._batches = None
        if reason == "not_a_window":
            self._windowed = False  # (the opening's window was other clients' doing)
        self._batches_ended = self._clock.now()
        log.debug("rate.batches_ended", reason=reason)

    def _note_stated(self, answer: Answer, stated: RateChange | None) -> None:
        """A limit the server stated, for the other processes on the token."""
        hint = answer.hint
        if self.shared is not None and stated is not None and hint is not None and hint.per_second:
            self.shared.note_limit(hint.per_second, "server")

    def _pauses_all(self, answer: Answer, retry_after: float) -> bool:
        """Whether a Retry-After stops every request, or only the one it came with (see
        LONE_RETRY_AFTER_S). Asked before the rate sees the answer: a 429 after another
        (nothing let through between) is the second in a row. While the rate is still
        looking for an unknown limit from above (a ramp's overshoot, a descent from it),
        every 429 says the limiter is spent: the pause lets it refill. Under a stated
        ceiling, a descent starts a hair under it, where a 429 is timing. And 429s that
        are not rare (LONE_MOST) under a known limit (stated, or learned by a run) come
        from another client of the token; with none known, they are this client's own
        search, which the rate's descent answers (a pause of everyone on each would let
        the limiter save up a burst that passes for a higher rate, and cut the proof of
        the one it allows). Once the limit is seen to be shared at a token bucket, a lone
        429 holds only its request again: the rate's cuts make room (`_scatters`)."""
        cap = self.rate.cap
        looking = self.rate.phase is Phase.RAMP or (
            self.rate.phase is Phase.DESCEND and cap is None
        )
        known = cap is not None or self.rate.trusted is not None
        if answer.throttled and self._scatters():
            return retry_after > LONE_RETRY_AFTER_S
        return (
            not answer.throttled
            or retry_after > LONE_RETRY_AFTER_S
            or self.rate.streak >= 1
            or looking
            or (known and self.rate.recent_429s >= self._lone_most())
        )

    def _lone_most(self) -> int:
        rate = self.rate.rate
        return TIMING_MOST if rate is None or rate > AdaptiveRate.TIMING_ABOVE else LONE_MOST

    def _follow(self) -> None:
        """The bucket paces at the rate the adaptive rate chose."""
        if self.bucket.per_second != self.rate.rate:
            self.bucket.set_rate(self.rate.rate)

    def _follow_shared(self) -> None:
        """The shared schedule's limit is a ceiling for this process's rate too: learned
        or stated by another, it saves rediscovering it."""
        shared = self.shared
        if shared is None:
            return
        if shared.limit is None:
            if self._shared_per_s is not None and self._shared_stated:
                self.rate.forget_limit()  # another process's --rate, lapsed with it
            self._shared_per_s, self._shared_stated = None, False
            return
        if shared.limit.per_s == self._shared_per_s:
            return
        if self._shared_stated:
            self.rate.forget_limit()  # replaced by what the schedule runs at now
        self._shared_per_s, self._shared_stated = shared.limit.per_s, False
        if shared.limit.per_s != shared.published:
            # Not what this process learned itself: its own rate knows that better
            # (the schedule shares it a little under). A learned limit is a lower bound
            # to start at; a stated or a server's is a ceiling.
            now = self._clock.now()
            if shared.limit.how == "learned":
                self.rate.trust(shared.limit.per_s, now, TRUST_S)
            else:
                self.rate.learn_limit(shared.limit.per_s, now, reason="shared")
                self._shared_stated = True
            self._follow()
        log.info(
            "rate.shared",
            per_s=rounded(shared.limit.per_s),
            how=shared.limit.how,
            store=shared.description,
        )


def _scattered(slot: float) -> float:
    """A share of an interval in [0, 1) that looks random but is the same for one slot each
    time it is asked (the golden ratio's low-discrepancy sequence over microseconds).

    Sent on a steady grid, a client sharing a token bucket with others wins every race for
    the room the bucket gives back, since its requests come just as it comes back, and
    others meet every 429: they cut, it does not, and it ends up with nearly all of the
    limit. Scattered within their intervals, every client's requests meet a 429 in
    proportion to what it sends, which is what makes cutting by that share fair."""
    return (round(slot * 1e6) * 0.6180339887498949) % 1.0
