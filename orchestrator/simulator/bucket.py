"""Token bucket arithmetic. Pure: time comes in as numbers.

No longer the simulator's rate limit (that is `limiters`, through `ratelimit`); kept while
tests/test_adaptive.py models a limit with it. A bucket of size N is a GCRA with burst N - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

# Float slack, so that a clock moved by exactly 1/rate refills exactly one token.
_EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tokens left at clock time `updated`."""

    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The bucket's answer to one request."""

    allowed: bool
    # Whole tokens left after this request (what X-RateLimit-Remaining reports).
    remaining: int
    # Seconds until the next whole token; 0.0 when one is available right now.
    wait_s: float


def full_bucket(size: int, now: float) -> Bucket:
    """A bucket as it starts: full."""
    return Bucket(float(size), now)


def take(bucket: Bucket, now: float, *, rate: float, size: int) -> tuple[Verdict, Bucket]:
    """Refill `bucket` up to `now`, then take one token if there is one.

    A refused request takes nothing, so a client hammering a 429 does not push its
    own recovery further out.
    """
    elapsed = max(0.0, now - bucket.updated)  # a clock never runs back; clamp if one does
    tokens = min(float(size), bucket.tokens + elapsed * rate)
    allowed = tokens + _EPSILON >= 1.0
    if allowed:
        tokens = max(0.0, tokens - 1.0)
    wait_s = 0.0 if tokens + _EPSILON >= 1.0 else (1.0 - tokens) / rate
    remaining = math.floor(tokens + _EPSILON)
    return Verdict(allowed, remaining, wait_s), Bucket(tokens, now)
