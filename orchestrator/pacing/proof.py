"""What a limiter's answers prove it lets this client have: a lower bound on its rate,
whatever its shape or burst, from what it let through between two 429s. Pure."""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def proven_rate(
    let_through: Sequence[float], refused: Sequence[float], min_span_s: float
) -> float | None:
    """The most a limiter has proven it lets this client have, per second: a lower bound
    on its rate, whatever its shape or burst.

    A 429 says the limiter had no whole request's room left at that moment. Between two
    429s at least `min_span_s` apart, all it let through came from what it refilled in
    between, plus less than one request's room it held at the first: (answers let
    through - 1) / span <= its rate. Pauses and slow stretches in between only make the
    bound lower, never higher, so the best of all such spans is taken. Both sequences
    are times in increasing order; None when no two 429s are far enough apart.
    """
    best = proven_span(let_through, refused, min_span_s)
    return None if best is None else best[0]


def proven_span(
    let_through: Sequence[float], refused: Sequence[float], min_span_s: float
) -> tuple[float, float, float] | None:
    """`proven_rate`, with the span that proves it: (rate, first 429, last 429)."""
    best: tuple[float, float, float] | None = None
    for i, start in enumerate(refused):
        for end in refused[i + 1 :]:
            span = end - start
            if span < min_span_s:
                continue
            count = bisect.bisect_left(let_through, end) - bisect.bisect_right(let_through, start)
            bound = (count - 1) / span
            if best is None or bound > best[0]:
                best = (bound, start, end)
    return best
