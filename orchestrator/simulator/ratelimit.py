"""The simulated rate limit as a client meets it: the limiter the settings name, and the
headers that report each of its decisions. Pure: decisions and times come in as values.

Three header styles, so a client can be tried against what real APIs send:

    x       X-RateLimit-Limit (per minute, as Laravel and so Altostrat state it) and
            X-RateLimit-Remaining on every answer; X-RateLimit-Reset (epoch seconds) on a 429
    ietf    RateLimit-Policy: `{quota};w={seconds}` and RateLimit: `limit=, remaining=,
            reset=` (draft-ietf-httpapi-ratelimit-headers up to -06)
    none    nothing: the limit is the client's to discover

Retry-After (whole seconds, at least 1) goes on every 429 unless switched off.
"""

from __future__ import annotations

import math
from typing import Final

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.limiters import (
    GCRA,
    Background,
    Decision,
    FixedWindow,
    Limiter,
    SlidingCounter,
    SlidingLog,
)
from orchestrator.units import format_rate

# Float slack, so that a wait of exactly 2 s is not sent as 3.
_EPSILON: Final = 1e-9


def build_limiter(config: SimConfig) -> Limiter | None:
    """The limiter `config` describes (in a `Background` when it has one), None if no rate."""
    rate = config.rate
    if rate is None:
        return None
    limiter: Limiter
    match config.limiter:
        case "gcra":
            limiter = GCRA(rate, config.gcra_burst)
        case "fixed-window":
            limiter = FixedWindow(rate, config.window_s)
        case "sliding-log":
            limiter = SlidingLog(rate, config.window_s, count_refused=config.count_refused)
        case "sliding-counter":
            limiter = SlidingCounter(rate, config.window_s, count_refused=config.count_refused)
    if config.background_load is not None:
        return Background(limiter, config.background_load, config.background_stop_s)
    return limiter


def whole_seconds(seconds: float) -> int:
    """A duration in whole seconds, rounded up."""
    return max(0, math.ceil(seconds - _EPSILON))


def retry_after_seconds(wait_s: float) -> int:
    """Retry-After as whole delta-seconds: rounded up, never below 1."""
    return max(1, whole_seconds(wait_s))


def limit_per_minute(rate: float) -> int:
    """X-RateLimit-Limit: the rate per minute, as Laravel reports it (e.g. 60), at least 1."""
    return max(1, round(rate * 60))


def policy(config: SimConfig, rate: float) -> tuple[int, int]:
    """(quota, window in seconds) for RateLimit-Policy: the window's own when it is whole
    seconds, else (a GCRA, or a window such as 0.5 s) the same rate per minute."""
    window = config.window_s
    if config.limiter != "gcra" and window == int(window):
        return round(rate * window), int(window)
    return limit_per_minute(rate), 60


def limit_headers(config: SimConfig, rate: float, decision: Decision) -> dict[str, str]:
    """The rate-limit headers of every answer to the token, in the configured style;
    `rate` is what the limiter enforces."""
    match config.rate_limit_headers:
        case "x":
            return {
                "X-RateLimit-Limit": str(limit_per_minute(rate)),
                "X-RateLimit-Remaining": str(decision.remaining),
            }
        case "ietf":
            quota, window = policy(config, rate)
            reset = whole_seconds(decision.reset_s)
            return {
                "RateLimit-Policy": f"{quota};w={window}",
                "RateLimit": f"limit={quota}, remaining={decision.remaining}, reset={reset}",
            }
        case "none":
            return {}


def refusal_headers(config: SimConfig, decision: Decision, free_at_epoch: float) -> dict[str, str]:
    """What a 429 adds: Retry-After, and in style x the epoch second one is let through
    again (`free_at_epoch`, the wall time `retry_after_s` from now)."""
    headers: dict[str, str] = {}
    if config.retry_after:
        headers["Retry-After"] = str(retry_after_seconds(decision.retry_after_s))
    if config.rate_limit_reset and config.rate_limit_headers == "x":
        headers["X-RateLimit-Reset"] = str(math.ceil(free_at_epoch))
    return headers


def describe(config: SimConfig) -> str:
    """The limit in a few words, for the simulator's announcement."""
    if config.rate is None:
        return "none"
    limiter = build_limiter(config)
    assert limiter is not None
    shape = limiter.limiter if isinstance(limiter, Background) else limiter
    text = f"{format_rate(shape.rate)}, "
    if isinstance(shape, GCRA):
        text += f"gcra burst {shape.burst} ({shape.burst + 1} at once from idle)"
    else:
        assert isinstance(shape, FixedWindow | SlidingLog | SlidingCounter)
        text += f"{config.limiter.replace('-', ' ')} of {shape.limit} per {shape.window_s:g} s"
        if config.count_refused:
            text += ", refused requests count"
    styles = {"x": "X-RateLimit-* headers", "ietf": "RateLimit headers", "none": "no headers"}
    text += f"; {styles[config.rate_limit_headers]}"
    text += ", Retry-After" if config.retry_after else ", no Retry-After"
    if config.background_load is not None:
        text += f"; background load {format_rate(config.background_load)}"
        stop = config.background_stop_s
        text += " that never stops" if stop is None else f" for its first {stop:g} s"
    return text
