"""A virtual-time model of a rerun against a rate limiter: no sockets, no event loop.

`concurrency` workers each take the next ID, wait their slot at the pacer (the shared
Retry-After pause, then the client's GCRA schedule at the controller's rate), send, and
read the answer; a 429 goes back for the next free slot, with no backoff. Requests reach
the limiter after a one-way delay with random jitter, in arrival order, and the answer
comes back after the same delay. The pacing pieces are the real ones (`AdaptiveRate`,
`TokenBucket`'s slot arithmetic); only time and the network are modelled.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.pacing.adaptive import AdaptiveRate
from orchestrator.pacing.bucket import TokenBucket
from orchestrator.simulator.limiters import Decision, Limiter


@dataclass
class ModelRun:
    """What the server saw, request by request, and what the client did."""

    arrivals: list[tuple[float, bool]] = field(default_factory=list)  # (time, let through)
    rates: list[tuple[float, float | None]] = field(default_factory=list)  # the pacing rate
    accepted: int = 0
    throttled: int = 0
    finished: bool = False

    @property
    def span(self) -> float:
        return self.arrivals[-1][0] - self.arrivals[0][0] if self.arrivals else 0.0

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(1, len(self.arrivals))

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for at, ok in self.arrivals if start <= at < end and ok)


@dataclass(frozen=True)
class Network:
    one_way_s: float = 0.0005
    jitter_s: float = 0.0003  # mean of an exponential delay added each way


def run_model(
    limiter: Limiter,
    *,
    ids: int,
    ceiling: float | None = None,
    concurrency: int = 8,
    network: Network | None = None,
    retry_after: Callable[[Decision], float | None] | None = None,
    seed: int = 0,
    max_seconds: float = 3600.0,
    stated: float | None = None,
    bursty: bool | None = None,
) -> ModelRun:
    """Rerun `ids` IDs through `limiter`; stops when all are accepted or at `max_seconds`.
    `bursty`: whether the limiter lets bursts through, as the pacer's opening judges it
    (`AdaptiveRate.bursty`)."""
    net = network or Network()
    rng = random.Random(seed)
    run = ModelRun()
    control = AdaptiveRate(ceiling, 0.0)
    control.bursty = bursty  # what the pacer's opening would have found (not modelled)
    clock = _ModelClock()
    bucket = TokenBucket(control.rate, clock)
    pause_until = 0.0
    line: deque[None] = deque()  # workers waiting their turn, the head first
    head_version = 0  # a release event for an older head is stale
    queue: list[tuple[float, int, str, object]] = []
    seq = itertools.count()
    left = ids
    untaken = ids - min(concurrency, ids)

    def delay() -> float:
        return net.one_way_s + (rng.expovariate(1 / net.jitter_s) if net.jitter_s else 0.0)

    def schedule(at: float, kind: str, data: object = None) -> None:
        heapq.heappush(queue, (at, next(seq), kind, data))

    def slot_at(now: float) -> float:
        """When the head of the line may leave, from the rate as it is now."""
        clock.at = now
        control.tick(now)
        if bucket.per_second != control.rate:
            bucket.set_rate(control.rate)
        return max(now, pause_until, now if bucket.unlimited else bucket.slot(now))

    def next_turn(now: float) -> None:
        nonlocal head_version
        if not line:
            return
        head_version += 1
        schedule(slot_at(now), "release", head_version)

    def want_slot(now: float) -> None:
        line.append(None)
        if len(line) == 1:
            next_turn(now)

    def record_rate(now: float) -> None:
        if not run.rates or run.rates[-1][1] != control.rate:
            run.rates.append((now, control.rate))

    for _ in range(min(concurrency, ids)):
        want_slot(0.0)
    while queue:
        now, _, kind, data = heapq.heappop(queue)
        if now > max_seconds:
            break
        if kind == "release":
            if data != head_version:
                continue
            slot = slot_at(now)
            if slot > now + 1e-12:  # slower now, or paused, since the slot was given
                schedule(slot, "release", head_version)
                continue
            line.popleft()
            if not bucket.unlimited:
                bucket.take(now)
            control.sent(now)
            schedule(now + delay(), "arrive", now)
            next_turn(now)
        elif kind == "arrive":
            decision = limiter.decide(now)
            run.arrivals.append((now, decision.allowed))
            wait = None if decision.allowed or retry_after is None else retry_after(decision)
            schedule(now + delay(), "answer", (data, decision.allowed, wait, decision))
        elif kind == "answer":
            assert isinstance(data, tuple)
            sent_at, allowed, wait, decision = data
            if stated is not None:
                control.learn_limit(stated, now)
            clock.at = now
            observed = control.observe(
                now, sent_at, throttled=not allowed, retry_after=wait is not None
            )
            if allowed:
                run.accepted += 1
                left -= 1
                if left == 0:
                    run.finished = True
                    break
            else:
                run.throttled += 1
                hold = max(wait or 0.0, observed.holdoff_s)
                if now + hold > pause_until:
                    # As the pacer does: a pause, ours or the server's, is no part of a window.
                    control.paused(now + hold - max(now, pause_until))
                    pause_until = now + hold
            record_rate(now)
            if allowed:
                if untaken == 0:
                    continue  # nothing left for this worker to take
                untaken -= 1
            want_slot(now)
    return run


class _ModelClock:
    """The model's time, for the bucket's one read of it."""

    at = 0.0

    def now(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError("the model never sleeps: it schedules")

    async def sleep_until(self, deadline: float) -> None:
        raise NotImplementedError("the model never sleeps: it schedules")


def whole_seconds(decision: Decision) -> float:
    """Retry-After as the simulator sends it: whole seconds, rounded up, at least 1."""
    return max(1.0, math.ceil(decision.retry_after_s - 1e-9))
