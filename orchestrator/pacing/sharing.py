"""Sharing a stated limit with clients of the token that share no budget with this one
(the adaptive rate's `Phase.SHARE`): when 429s say others are there, how deep a cut goes,
and how fast the rate steps back up.

Each client meets 429s in proportion to what it sends (at a token bucket, with its
requests scattered: `Pacer.due`), so each cuts by the same share on a 429 and steps up by
the same share of the limit, which they all know, each clean second: additive increase,
multiplicative decrease, as TCP, so that the client with more gives up more and none is
starved. (Held at the hair, a client that kept its rate while another cut on every 429
and paused for each Retry-After took nearly all of the limit.)

Pure: the adaptive rate tells it what each answer and each window showed.
"""

from __future__ import annotations

import math
from typing import Final


class Sharing:
    """What sharing a stated limit has seen so far, and the rules it shares by."""

    MOST: Final = 5  # 429s among the last answers (AdaptiveRate.SEEN) that show others ...
    MOST_SLOW: Final = 2  # ... or this many at a rate where timing makes none, when the
    # opening found its burst taken (`bursty` None)
    ROOMLESS: Final = 50  # or answers in a row with no room left (see `AdaptiveRate.room`)
    # A 429 cuts the rate to this share of it, once a window. Shallower cuts come more
    # often: at 0.8, four clients at 50/s refused 7% of requests in the model
    # (benchmarks.share_model), 4.6% at 0.7, with no less of the limit used.
    CUT: Final = 0.7
    STEP: Final = 0.01  # of the limit: a clean window's step up (a window a second)
    CALM: Final = 3  # clean windows in a row after which the step doubles ...
    DOUBLINGS: Final = 4  # ... with each more, this many times
    ALONE: Final = 10  # clean windows at the hair: the others are gone

    def __init__(self) -> None:
        self.clean_windows = 0  # clean windows in a row
        self.roomy_windows = 0  # ... of which had room left, in a row
        self.roomless = 0  # answers let through in a row that left no room
        self.cut_at = -math.inf  # the last cut

    def contended(self, bursty: bool | None, *, slow: bool, recent_429s: int) -> bool:
        """Whether other clients take part of the limit: MOST 429s among the last answers
        at a limiter not known to be strict (where timing alone makes them), or ROOMLESS
        answers in a row with no room left at one that has had room (a strict one never
        has). Where the opening found its burst taken (`bursty` None), others were there
        from the start: at a rate `slow` enough that timing makes no 429s, MOST_SLOW are
        enough. (Such a client, held at the hair on a steady grid, wins the races for the
        room a bucket gives back and meets few: waiting for five at 10/s, one met 3 to 4
        in every 50 answers for 30 s and never shared, while the other, sharing, was cut
        to a quarter of the limit. One alone whose opening found the burst meets a few at
        a sliding counter's edges, which are no others.)"""
        if bursty is False:
            return False
        roomless = bursty is True and self.roomless >= self.ROOMLESS
        most = self.MOST_SLOW if slow and bursty is None else self.MOST
        return roomless or recent_429s >= most

    def cut(self, now: float, rate: float) -> float:
        """Cut from `rate`, and count clean windows from here."""
        self.clean_windows = self.roomy_windows = 0
        self.cut_at = now
        return rate * self.CUT

    def window(self, *, throttled: bool, room: bool | None) -> None:
        """A window ended: with 429s in it (which ends both runs of clean ones), or clean,
        with room left after an answer or not (None: the server does not say)."""
        if throttled:
            self.clean_windows = self.roomy_windows = 0
            return
        self.clean_windows += 1
        self.roomy_windows = self.roomy_windows + 1 if room else 0

    @property
    def alone(self) -> bool:
        """Clean long enough at the hair under the limit: the others are gone."""
        return self.clean_windows >= self.ALONE

    def step(self, limit: float, *, room_told: bool) -> float:
        """A clean window's step up: STEP of the `limit`, doubling with each clean window
        in a row after CALM of them; where the server tells the room left (`room_told`)
        at a limiter that has had some, only windows with room count (none left: others
        still take what this client leaves, and a faster step is a deeper overshoot for
        all, and more 429s)."""
        clean = self.roomy_windows if room_told else self.clean_windows
        return limit * self.STEP * 2.0 ** min(max(0, clean - self.CALM), self.DOUBLINGS)
