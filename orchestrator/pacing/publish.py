"""Publishing a limit this process learned to the token's shared schedule. The next run
trusts what is published and starts at it, so only a limit that 429s bracket is published,
once the seconds after it confirm it, and no higher than the limiter proved it lets
through."""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import structlog

from orchestrator.pacing.adaptive import RateChange
from orchestrator.pacing.events import rounded
from orchestrator.pacing.proof import proven_span
from orchestrator.shared.schedule import SharedSchedule

log = structlog.get_logger("orchestrator")

# A rate settled this far under the ceiling is a limit learned, worth sharing.
LEARNED_UNDER: Final = 0.05

# ... and bracketed by at least this many 429s.
LEARNED_THROTTLES: Final = 2
# ... and no higher than what the limiter proved it lets through: two 429s at least
# PROVEN_SPAN_S apart bound its rate from below (`proof.proven_span`), looked for
# over the last PROVEN_WINDOW_S, from LEARN_SECONDS after the rate settled on.
PROVEN_SPAN_S: Final = 10.0
PROVEN_WINDOW_S: Final = 60.0
LEARN_SECONDS: Final = 5
# A proven bound this much above the one published is published again.
PROVEN_GAIN: Final = 0.01


class LimitPublisher:
    """The pacer's side of a learned limit, while it shares the token's schedule: fed each
    answer (`answer`), it publishes the limit once proven."""

    def __init__(self, shared: SharedSchedule) -> None:
        self._shared = shared
        self._throttled = 0  # 429s since the last limit this process learned
        self._candidate: float | None = None  # a limit learned, to publish ...
        self._candidate_from = 0  # ... once the seconds from this one on confirm it
        self._candidate_proven = 0.0  # ... as high as two 429s have proven so far
        # When answers came, while sharing: what bounds a limit to publish from below.
        # (The pairs of 429s are tried each against each: few, and once a second.)
        self._let_through: deque[float] = deque(maxlen=8192)
        self._refused: deque[float] = deque(maxlen=64)
        self._proven_at = -math.inf

    def answer(
        self, now: float, *, throttled: bool, change: RateChange | None, cap: float | None
    ) -> None:
        """An answer came at `now`, and the rate made `change` of it; `cap` is this
        process's ceiling on the rate. The schedule hears of it too: what this process
        learns is measured as its share of every process's requests."""
        self._throttled += throttled
        self._shared.note_answer(throttled=throttled)
        (self._refused if throttled else self._let_through).append(now)
        if (learned := self._learned(change, cap)) is not None:
            self._candidate = learned
            self._candidate_from = math.floor(now) + 1
            self._candidate_proven = 0.0
            self._throttled = 0
        self._prove_candidate(now)

    def _prove_candidate(self, now: float) -> None:
        """Publish a limit learned, once LEARN_SECONDS confirm it. A rate that one window
        showed clean can be over the limit (a limiter's saved-up burst makes it look
        clean), and the next run trusts what is published: publish no more than what two
        429s prove the limiter let through. That bound only grows with evidence, so for
        PROVEN_WINDOW_S after, each higher one (by PROVEN_GAIN) is published again."""
        candidate, start = self._candidate, self._candidate_from + LEARN_SECONDS
        if candidate is None or now < start or now < self._proven_at + 1.0:
            return
        if now > start + PROVEN_WINDOW_S:
            self._candidate = None
            return
        found = self._proven(now)
        if found is None:
            return
        proven, first, last = found
        if proven <= self._candidate_proven * (1 + PROVEN_GAIN):
            return
        if self._candidate_proven >= candidate:
            return  # already published at the candidate: more proof says nothing new
        if self._shared.note_limit(min(candidate, proven), "learned", span=(first, last)):
            self._candidate_proven = proven
            log.debug(
                "rate.learned", candidate_per_s=rounded(candidate), proven_per_s=rounded(proven)
            )

    def _proven(self, now: float) -> tuple[float, float, float] | None:
        """What the limiter has proven it lets through per second, over the last
        PROVEN_WINDOW_S, and the span between two 429s that proves it (see
        `proof.proven_span`)."""
        self._proven_at = now
        since = now - PROVEN_WINDOW_S
        while self._refused and self._refused[0] < since:
            self._refused.popleft()
        while self._let_through and self._let_through[0] < since:
            self._let_through.popleft()
        return proven_span(list(self._let_through), list(self._refused), PROVEN_SPAN_S)

    def _learned(self, change: RateChange | None, cap: float | None) -> float | None:
        """The token's limit this change found, to publish: 429s bracket it, and it
        settled under this process's ceiling (settling at it, or a hair under it on a
        timing 429, says nothing new), or held under a limit that another run learned
        and that proved too high (its own, this run's settling corrects)."""
        if change is None or (new := change.new) is None or self._throttled < LEARNED_THROTTLES:
            return None
        if change.settled:
            return new if cap is None or new < cap * (1 - LEARNED_UNDER) else None
        if (shared := self._shared.limit) is None:
            return None
        too_high = (
            shared.how == "learned"
            and shared.per_s != self._shared.published
            and new < shared.per_s * (1 - LEARNED_UNDER)
        )
        return new if change.reason == "trim" and too_high else None
