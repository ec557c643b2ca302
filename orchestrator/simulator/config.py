"""The simulator's settings: one frozen value, validated once, read everywhere."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, TypeAlias

FaultWord: TypeAlias = Literal["ok", "drop", "slow", "bad_body"]
# One scripted or drawn answer to a rerun request: an HTTP status to send without
# applying the rerun, or one of the fault words.
Step: TypeAlias = int | FaultWord
FAULT_WORDS: Final[frozenset[str]] = frozenset({"ok", "drop", "slow", "bad_body"})
# The rate limiter's shape (see `limiters`), and how its answers describe it.
LimiterShape: TypeAlias = Literal["gcra", "fixed-window", "sliding-log", "sliding-counter"]
LIMITER_SHAPES: Final[tuple[LimiterShape, ...]] = (
    "gcra",
    "fixed-window",
    "sliding-log",
    "sliding-counter",
)
HeaderStyle: TypeAlias = Literal["x", "ietf", "none"]
HEADER_STYLES: Final[tuple[HeaderStyle, ...]] = ("x", "ietf", "none")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _check_script(script: Mapping[str, Sequence[str | int]]) -> None:
    for run_id, steps in script.items():
        if isinstance(steps, str):
            # A bare string is a Sequence too; "drop" would read as four steps.
            raise TypeError(f"script for {run_id!r} must be a list of steps, not a string")
        for step in steps:
            if isinstance(step, bool) or not isinstance(step, int | str):
                raise TypeError(f"script step {step!r} for {run_id!r} is not an int or a word")
            if isinstance(step, int) and not 200 <= step <= 599:
                raise ValueError(f"script step {step!r} for {run_id!r} is not an HTTP status")
            if isinstance(step, str) and step not in FAULT_WORDS:
                words = ", ".join(sorted(FAULT_WORDS))
                raise ValueError(f"script step {step!r} for {run_id!r} is not one of {words}")


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes one simulated Altostrat API.

    Rates and probabilities are per request; durations are seconds of the injected
    clock, except `latency_ms` and `slow_s`, which are real time because the client's
    timeouts are real time.
    """

    token: str = "sim-token"  # noqa: S105 - the well-known token of a local fake
    # The rate limit of the token: requests per second, None = no limit.
    rate: float | None = None
    limiter: LimiterShape = "gcra"
    # GCRA only, in nginx's sense: requests beyond the steady rate let through at once
    # (0 = strictly 1/rate apart). None: one second's worth in all, `rate - 1`, so a
    # fresh token takes floor(rate) at once (see `gcra_burst`).
    burst: int | None = None
    # Window shapes: round(rate * window_s) requests per window.
    window_s: float = 1.0
    # Sliding shapes only: refused requests count too, so a client that keeps sending
    # while refused stays locked out.
    count_refused: bool = False
    # Real servers do not always send Retry-After; False leaves it off 429s.
    retry_after: bool = True
    # Same for X-RateLimit-Reset (style "x"), so a client can be tested with no hint at all.
    rate_limit_reset: bool = True
    # "x": X-RateLimit-Limit (per minute, as Laravel) and -Remaining; "ietf": RateLimit-Policy
    # and RateLimit; "none": nothing, the limit is the client's to discover. (True and
    # False, from before there were styles, still mean "x" and "none".)
    rate_limit_headers: HeaderStyle = "x"
    # Another client of the same token: requests per second it sends from the first
    # request the limiter sees (its refused ones again after Retry-After), and when it
    # stops, in seconds after that; None = never.
    background_load: float | None = None
    background_stop_s: float | None = None
    # Real-time delay before every API answer: lognormal, median `latency_ms`,
    # sigma `latency_spread` (0 = always exactly the median).
    latency_ms: float = 0.0
    latency_spread: float = 0.0
    # Random faults on the rerun endpoint only; at most one per request, so they sum to <= 1.
    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_drop: float = 0.0
    p_slow: float = 0.0
    p_bad_body: float = 0.0
    slow_s: float = 60.0
    # Seeded data.
    runs: int = 200
    workflows: int = 3
    per_page: int = 15
    seed: int = 0
    # Reference wall time for the seeded data and the origin of later timestamps;
    # None = the real current UTC time when the app is built. Must be timezone-aware.
    now_wall: datetime | None = None
    # Every well-formed run ID exists (as a failed run of the first workflow) on first sight.
    accept_any: bool = False
    # Per original run ID, one step per rerun request, consumed before random faults.
    script: Mapping[str, Sequence[str | int]] = field(default_factory=dict)
    # Retry-After sent with a scripted 429: delta-seconds or an HTTP-date.
    script_retry_after: str = "1"
    # Lifecycle of runs created by a rerun, in seconds of the injected clock.
    pending_s: float = 2.0
    running_s: float = 5.0
    rerun_failure_rate: float = 0.1
    stuck_rate: float = 0.0
    # How the rerun of a given original run ends, overriding the rates above:
    # "completed", "failed", "stuck" (running forever) or "needs_person"
    # (awaiting_ui_interaction). For tests that need a certain end.
    rerun_outcomes: Mapping[str, str] = field(default_factory=dict)
    # The in-memory request log keeps this many most recent entries.
    request_log_limit: int = 100_000

    def __post_init__(self) -> None:
        if not self.token or any(c.isspace() for c in self.token):
            raise ValueError("token must be non-empty and without whitespace")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be above zero or None, got {self.rate!r}")
        self._check_rate_limit()
        self._check_probabilities()
        self._check_durations()
        odd = set(self.rerun_outcomes.values()) - {"completed", "failed", "stuck", "needs_person"}
        if odd:
            raise ValueError(f"rerun_outcomes holds unknown outcomes: {sorted(odd)}")
        for name, count, least in (
            ("runs", self.runs, 0),
            ("workflows", self.workflows, 1),
            ("per_page", self.per_page, 1),
            ("request_log_limit", self.request_log_limit, 0),
        ):
            if count < least:
                raise ValueError(f"{name} must be >= {least}, got {count!r}")
        if self.now_wall is not None and self.now_wall.utcoffset() is None:
            raise ValueError("now_wall must be timezone-aware")
        if not self.script_retry_after.strip():
            raise ValueError("script_retry_after must not be empty")
        _check_script(self.script)

    def _check_rate_limit(self) -> None:
        if isinstance(self.rate_limit_headers, bool):
            style: HeaderStyle = "x" if self.rate_limit_headers else "none"
            object.__setattr__(self, "rate_limit_headers", style)
        if self.rate_limit_headers not in HEADER_STYLES:
            raise ValueError(f"rate_limit_headers must be one of {', '.join(HEADER_STYLES)}")
        if self.limiter not in LIMITER_SHAPES:
            raise ValueError(f"limiter must be one of {', '.join(LIMITER_SHAPES)}")
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise ValueError(f"window must be above zero seconds, got {self.window_s!r}")
        if self.burst is not None:
            if self.burst < 0:
                raise ValueError(f"burst must be at least 0, got {self.burst!r}")
            if self.limiter != "gcra":
                raise ValueError(f"burst is for the gcra limiter, not {self.limiter}")
        if self.count_refused and not self.limiter.startswith("sliding-"):
            raise ValueError(f"count_refused is for the sliding limiters, not {self.limiter}")
        load, stop = self.background_load, self.background_stop_s
        if load is not None and not (load > 0 and math.isfinite(load)):
            raise ValueError(f"background load must be above zero, got {load!r}")
        if stop is not None and not (stop >= 0 and math.isfinite(stop)):
            raise ValueError(f"background stop must be a finite number >= 0, got {stop!r}")
        if stop is not None and load is None:
            raise ValueError("a background stop needs a background load")
        shaped = self.limiter != "gcra" or self.burst is not None or self.count_refused
        if self.rate is None and (shaped or load is not None):
            raise ValueError("a limiter shape, burst or background load needs a rate")

    def _check_probabilities(self) -> None:
        faults = {
            "p_500": self.p_500,
            "p_502": self.p_502,
            "p_503": self.p_503,
            "p_drop": self.p_drop,
            "p_slow": self.p_slow,
            "p_bad_body": self.p_bad_body,
        }
        for name, value in faults.items():
            _check_probability(name, value)
        if sum(faults.values()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities must sum to at most 1")
        _check_probability("rerun_failure_rate", self.rerun_failure_rate)
        _check_probability("stuck_rate", self.stuck_rate)
        if self.rerun_failure_rate + self.stuck_rate > 1.0 + 1e-9:
            raise ValueError("rerun_failure_rate + stuck_rate must be at most 1")

    def _check_durations(self) -> None:
        for name, amount in {
            "latency_ms": self.latency_ms,
            "latency_spread": self.latency_spread,
            "slow_s": self.slow_s,
            "pending_s": self.pending_s,
            "running_s": self.running_s,
        }.items():
            if not (amount >= 0 and math.isfinite(amount)):
                raise ValueError(f"{name} must be a finite number >= 0, got {amount!r}")

    @property
    def gcra_burst(self) -> int:
        """`burst`, or by default one second's worth of requests at once (floor of
        `rate`, at least 1) less the one the steady rate allows. At 60/min that is 0:
        strict pacing."""
        if self.burst is not None:
            return self.burst
        if self.rate is None:
            return 0
        return max(0, math.floor(self.rate) - 1)
