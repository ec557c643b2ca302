"""This process's side of the token's shared schedule (see `ratestore`).

The `Pacer` asks `slot()` for the wait before each request. While a limit is known (stated
by this process's --rate, published by another process, learned by a run, or stated by the
server) every request reserves its slot from the store. With no limit known, nothing is
reserved: a `--rate none` run that has not met a limit never touches the store, and one
that has looks for a published limit at most every PEEK_S, and has the store count its
requests let through, so that the limit it learns is measured against every process's.

What this process learns goes the other way, at its next turn: a Retry-After pauses every
process, and a settled or server-stated limit is published for the others and for the next
run (kept LEARNED_TTL_S).

The store is never a single point of failure: the first StoreError is logged once as a
warning, and the process paces on its own budget from then on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import structlog

from orchestrator.errors import StoreError
from orchestrator.shared.localstore import FILE_NAME, LocalStore
from orchestrator.shared.store import (
    BudgetReport,
    Grant,
    How,
    RateStore,
    SharedLimit,
    StoreSpec,
    fingerprint,
)

log = structlog.get_logger("orchestrator")

T = TypeVar("T")
Now = Callable[[], float]
Op = Callable[[RateStore], Awaitable[T]]

# With no limit known, look for one published by another process this often.
PEEK_S: Final = 10.0
# This process's share of the token's requests is measured over the span that proved a
# rate it learned, within the last HISTORY_S (as long as pacing.publish.PROVEN_WINDOW_S).
HISTORY_S: Final = 60.0
# A learned limit is shared this much under where this process settled: the rate it
# settled at was clean, but a schedule run at exactly a strict limiter's rate meets
# timer jitter (and the next run starts right at it).
LEARNED_MARGIN: Final = 0.02
# Slots of ours that a share is measured over, at least.
MIN_SAMPLE: Final = 4
# A limit published within this ratio of the one in force is not worth a write.
SAME_LIMIT: Final = 0.01


class SharedSchedule:
    """The shared schedule as one process uses it. `now` is the pacer's clock."""

    def __init__(self, store: RateStore, key: str, stated: float | None, now: Now) -> None:
        self._store: RateStore | None = store
        self.description = store.description
        self.fingerprint = key
        self._stated = stated
        self._now = now
        self.limit: SharedLimit | None = None
        self._last_peek = -math.inf
        self._pause_s = 0.0
        self._publish: tuple[float, How] | None = None
        # (when, slots taken by every process, by this one), recent
        self._slots: deque[tuple[float, int, int]] = deque(maxlen=8192)
        self.reserved = 0
        self._taken = 0  # this process's requests the store counted, reserved or not
        self._counting = False  # ... which it does once this process has met a limit
        self._uncounted = 0  # answers let through, to count at the next turn
        self.published: float | None = None  # the last limit this process published
        self.idle_s = math.inf  # how long the schedule was unused before our last slot

    @property
    def active(self) -> bool:
        """Requests take their slots from the store."""
        return self._store is not None and (self._stated is not None or self.limit is not None)

    async def start(self) -> SharedLimit | None:
        """Read what the store knows before the first request: the limit to start at."""
        await self._peek()
        return self.limit

    async def slot(self) -> float:
        """Reserve the next slot; seconds from now until it. 0 when not shared."""
        if self._store is None:
            return 0.0
        if not self.active:
            if self._now() - self._last_peek >= PEEK_S:
                await self._peek()
            if not self.active:
                return 0.0
        grant = await self._call(lambda store: store.reserve(self._stated))
        if grant is None:
            return 0.0
        self._take(grant)
        return grant.delay_s

    def note_answer(self, *, throttled: bool) -> None:
        """Once this process has met the token's limit (a 429), the store counts each of
        its requests let through while no limit is known, as slots count them once one
        is: what it learns is then measured as its share of every process's."""
        self._counting = self._counting or throttled
        if self._counting and not throttled and not self.active and self._store is not None:
            self._uncounted += 1

    def note_pause(self, seconds: float) -> None:
        """A Retry-After: pause every process at this process's next turn."""
        if self._store is not None:
            self._pause_s = max(self._pause_s, seconds)

    def note_limit(self, per_s: float, how: How, span: tuple[float, float] | None = None) -> bool:
        """A limit this process learned (`rate.settled`, over `span` of this process's
        clock) or the server stated: publish it. False when a learned one cannot be
        yet: this process's share of the token's requests is not measured."""
        if self._store is None or not math.isfinite(per_s) or per_s <= 0:
            return False
        current = self.limit
        if how == "learned":
            # Each figure a run publishes is a lower bound the limiter proved: a higher
            # one (a probe found the limit raised, or freed) replaces a lower one.
            measured = None if span is None else self._measured(per_s, span)
            if measured is None:
                return False
            per_s = measured * (1 - LEARNED_MARGIN)
        same = current is not None and abs(per_s - current.per_s) <= SAME_LIMIT * current.per_s
        if not (same and current is not None and current.how == how):
            self._publish = (per_s, how)
        return True

    async def flush(self) -> None:
        """Tell the store what this process has heard since its last turn."""
        if self._pause_s > 0:
            seconds, self._pause_s = self._pause_s, 0.0
            await self._call(lambda store: store.pause(seconds))
        while self._uncounted > 0:
            self._uncounted -= 1
            grant = await self._call(lambda store: store.reserve(None, counting=True))
            if grant is not None:
                self._take(grant)
        if self._publish is not None:
            (per_s, how), self._publish = self._publish, None
            await self._call(lambda store: store.publish(per_s, how))
            self.published = per_s
            log.info("rate_store.published", per_s=round(per_s, 3), how=how)
            await self._peek()

    @property
    def pending(self) -> bool:
        return self._pause_s > 0 or self._publish is not None or self._uncounted > 0

    def report(self) -> BudgetReport:
        limit = self.limit
        return BudgetReport(
            store=self.description,
            fingerprint=self.fingerprint,
            shared=self.reserved > 0,
            per_s=None if limit is None else limit.per_s,
            how=None if limit is None else limit.how,
        )

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await self._call_closing(store)

    # ---- inside ---------------------------------------------------------------------------

    def _take(self, grant: Grant) -> None:
        self.limit = grant.limit
        self.idle_s = grant.idle_s
        if grant.limit is not None:
            self.reserved += 1
        elif not self._counting:
            return
        self._taken += 1
        now = self._now()
        self._slots.append((now, grant.count, self._taken))
        while len(self._slots) > 2 and now - self._slots[1][0] >= HISTORY_S:
            self._slots.popleft()

    def _measured(self, settled: float, span: tuple[float, float]) -> float | None:
        """The token's limit from the rate this process settled at: that rate times the
        requests every process had counted for each one of ours over `span` (slots
        taken, or while no limit is known, answers let through). Alone, the rate itself. None
        before MIN_SAMPLE of ours are counted: one process's share is no token's limit.
        (A ratio of counts, not slots per second: pauses and idle spells don't dilute it.)"""
        start, end = span
        slots = [slot for slot in self._slots if start <= slot[0] <= end]
        if len(slots) < 2:
            return None
        (_, all_then, ours_then), (_, all_now, ours_now) = slots[0], slots[-1]
        if ours_now - ours_then < MIN_SAMPLE:
            return None
        return settled * max(1.0, (all_now - all_then) / (ours_now - ours_then))

    async def _peek(self) -> None:
        self._last_peek = self._now()
        self.limit = await self._call(lambda store: store.peek())

    async def _call(self, op: Op[T]) -> T | None:
        """One store operation; on the first failure, warn once and stop sharing."""
        store = self._store
        if store is None:
            return None
        try:
            return await op(store)
        except StoreError as exc:
            self._give_up(str(exc))
            await self._call_closing(store)
            return None

    def _give_up(self, error: str) -> None:
        self._store = None
        self.limit = None
        log.warning(
            "rate_store.unavailable",
            store=self.description,
            error=error,
            detail="pacing on this process's own budget from now on",
        )

    @staticmethod
    async def _call_closing(store: RateStore) -> None:
        with contextlib.suppress(StoreError):
            await store.close()


async def _open_store(spec: StoreSpec, key: str, now: Now) -> RateStore:
    """The store SPEC names (not `none`), for the schedule `key`; StoreError when it cannot
    be opened."""
    if spec.kind == "redis":
        from orchestrator.shared.redisstore import RedisStore  # noqa: PLC0415 - the optional extra

        assert spec.url is not None
        return await RedisStore.connect(spec.url, key)
    assert spec.directory is not None
    return LocalStore(spec.directory, key, now=now)


async def open_shared(
    spec: StoreSpec, base_url: str, token: str, stated: float | None, now: Now
) -> SharedSchedule | None:
    """The shared schedule for this token, or None with `--rate-store none` or when the
    store cannot be opened (one warning: the run paces on its own budget)."""
    if spec.kind == "none":
        return None
    key = fingerprint(base_url, token)
    try:
        store = await _open_store(spec, key, now)
    except StoreError as exc:
        log.warning(
            "rate_store.unavailable",
            store=spec.describe(),
            error=str(exc),
            detail="pacing on this process's own budget",
        )
        return None
    shared = SharedSchedule(store, key, stated, now)
    limit = await shared.start()
    log.info(
        "rate_store.opened",
        store=shared.description,
        fingerprint=key,
        limit_per_s=None if limit is None else round(limit.per_s, 3),
        limit_how=None if limit is None else limit.how,
    )
    return shared


async def peek_limit(spec: StoreSpec, base_url: str, token: str) -> float | None:
    """The limit learned for this token (or stated by the server) that the store knows,
    for a dry run's estimate; None when there is none, or no store to ask. Creates
    nothing: a local store that does not exist yet is not made."""
    if spec.kind == "none":
        return None
    if spec.kind == "local":
        assert spec.directory is not None
        if not (spec.directory / FILE_NAME).is_file():
            return None
    try:
        store = await _open_store(spec, fingerprint(base_url, token), time.monotonic)
        try:
            limit = await store.peek()
        finally:
            await SharedSchedule._call_closing(store)
    except StoreError:
        return None
    return None if limit is None else limit.known_per_s
