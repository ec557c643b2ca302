"""The limiter a config names, and the headers that report its decisions: pure, no server."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api.headers import rate_hint
from orchestrator.simulator import SimConfig
from orchestrator.simulator.limiters import (
    GCRA,
    Background,
    Decision,
    FixedWindow,
    SlidingCounter,
    SlidingLog,
)
from orchestrator.simulator.ratelimit import (
    build_limiter,
    describe,
    limit_headers,
    limit_per_minute,
    policy,
    refusal_headers,
    retry_after_seconds,
)

ALLOWED = Decision(True, 50, 7, 0.0, 0.42, 1.0)
REFUSED = Decision(False, 50, 0, 1.25, 2.5, 1.0)


@pytest.mark.parametrize(
    ("rate", "burst", "expected"),
    [
        (None, None, 0),
        (1.0, None, 0),
        (0.2, None, 0),
        (10.5, None, 9),
        (50.0, None, 49),
        (1.0, 5, 5),
        (50.0, 0, 0),
    ],
)
def test_default_burst_is_one_seconds_worth_at_once(
    rate: float | None, burst: int | None, expected: int
) -> None:
    """Capacity floor(rate), at least 1: what the simulator's token bucket always held."""
    assert SimConfig(rate=rate, burst=burst).gcra_burst == expected


@pytest.mark.parametrize(
    ("wait_s", "expected"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.0000001, 2), (59.5, 60)]
)
def test_retry_after_rounds_up_to_at_least_one(wait_s: float, expected: int) -> None:
    assert retry_after_seconds(wait_s) == expected


def test_limit_is_reported_per_minute() -> None:
    assert limit_per_minute(1.0) == 60
    assert limit_per_minute(0.5) == 30
    assert limit_per_minute(1 / 3600) == 1


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"rate": 5.0}, GCRA),
        ({"rate": 5.0, "limiter": "fixed-window"}, FixedWindow),
        ({"rate": 5.0, "limiter": "sliding-log", "count_refused": True}, SlidingLog),
        ({"rate": 5.0, "limiter": "sliding-counter", "window_s": 2.0}, SlidingCounter),
    ],
)
def test_config_names_the_limiter(kwargs: dict[str, Any], kind: type) -> None:
    limiter = build_limiter(SimConfig(**kwargs))
    assert isinstance(limiter, kind)
    assert limiter.rate == 5.0


def test_background_wraps_the_limiter_and_no_rate_means_none() -> None:
    config = SimConfig(rate=5.0, burst=0, background_load=2.0, background_stop_s=3.0)
    limiter = build_limiter(config)
    assert isinstance(limiter, Background)
    assert isinstance(limiter.limiter, GCRA)
    assert (limiter.load, limiter.stop_after_s, limiter.limiter.burst) == (2.0, 3.0, 0)
    assert build_limiter(SimConfig()) is None


def test_old_boolean_header_switch_still_works() -> None:
    assert SimConfig(rate_limit_headers=False).rate_limit_headers == "none"  # type: ignore[arg-type]
    assert SimConfig(rate_limit_headers=True).rate_limit_headers == "x"  # type: ignore[arg-type]


def test_x_headers_state_the_limit_per_minute() -> None:
    headers = limit_headers(SimConfig(rate=50.0), 50.0, ALLOWED)
    assert headers == {"X-RateLimit-Limit": "3000", "X-RateLimit-Remaining": "7"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"rate": 50.0}, (3000, 60)),  # a GCRA has no window of its own
        ({"rate": 50.0, "limiter": "fixed-window"}, (50, 1)),
        ({"rate": 2.0, "limiter": "sliding-log", "window_s": 5.0}, (10, 5)),
        ({"rate": 50.0, "limiter": "sliding-counter", "window_s": 0.5}, (3000, 60)),
    ],
)
def test_ietf_policy_states_whole_second_windows_or_the_rate_per_minute(
    kwargs: dict[str, Any], expected: tuple[int, int]
) -> None:
    config = SimConfig(**kwargs, rate_limit_headers="ietf")
    assert policy(config, kwargs["rate"]) == expected


def test_ietf_headers() -> None:
    config = SimConfig(rate=50.0, limiter="fixed-window", rate_limit_headers="ietf")
    assert limit_headers(config, 50.0, ALLOWED) == {
        "RateLimit-Policy": "50;w=1",
        "RateLimit": "limit=50, remaining=7, reset=1",
    }
    assert limit_headers(config, 50.0, REFUSED)["RateLimit"] == "limit=50, remaining=0, reset=3"


def test_no_headers_style_sends_nothing() -> None:
    config = SimConfig(rate=50.0, rate_limit_headers="none")
    assert limit_headers(config, 50.0, ALLOWED) == {}
    assert refusal_headers(config, REFUSED, 1_000.2) == {"Retry-After": "2"}


def test_refusal_headers() -> None:
    config = SimConfig(rate=50.0)
    assert refusal_headers(config, REFUSED, 1_000.2) == {
        "Retry-After": "2",
        "X-RateLimit-Reset": "1001",
    }
    quiet = SimConfig(rate=50.0, retry_after=False, rate_limit_reset=False)
    assert refusal_headers(quiet, REFUSED, 1_000.2) == {}


@pytest.mark.parametrize("style", ["x", "ietf"])
@pytest.mark.parametrize(
    ("kwargs", "per_second"),
    [
        ({"rate": 50.0, "burst": 0}, 50.0),
        ({"rate": 2.0, "burst": 2}, 2.0),
        ({"rate": 0.5}, 0.5),
        ({"rate": 50.0, "limiter": "fixed-window"}, 50.0),
        ({"rate": 2.0, "limiter": "sliding-log", "count_refused": True}, 2.0),
        ({"rate": 50.0, "limiter": "sliding-counter", "window_s": 0.5}, 50.0),
        ({"rate": 3.0, "limiter": "sliding-log", "window_s": 60.0}, 3.0),
        ({"rate": 100 / 60, "limiter": "fixed-window"}, 2.0),  # 1.67 a window rounds to 2
    ],
)
def test_the_client_reads_the_true_rate_off_every_style(
    style: str, kwargs: dict[str, Any], per_second: float
) -> None:
    config = SimConfig(**kwargs, rate_limit_headers=style)  # type: ignore[arg-type]
    limiter = build_limiter(config)
    assert limiter is not None
    decision = limiter.decide(0.0)
    hint = rate_hint(limit_headers(config, limiter.rate, decision))
    assert hint is not None
    assert hint.per_second == pytest.approx(per_second)
    assert hint.remaining == decision.remaining


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "none"),
        ({"rate": 20.0}, "20/s, gcra burst 19 (20 at once from idle); X-RateLimit-* headers,"),
        ({"rate": 1.0, "burst": 0, "retry_after": False}, "1/s, gcra burst 0 (1 at once"),
        (
            {"rate": 50.0, "limiter": "sliding-log", "count_refused": True},
            "50/s, sliding log of 50 per 1 s, refused requests count",
        ),
        ({"rate": 2.0, "limiter": "fixed-window", "window_s": 3}, "fixed window of 6 per 3 s"),
        ({"rate": 2.0, "rate_limit_headers": "ietf"}, "; RateLimit headers, Retry-After"),
        ({"rate": 2.0, "rate_limit_headers": "none", "retry_after": False}, "no Retry-After"),
        (
            {"rate": 50.0, "background_load": 25.0, "background_stop_s": 8.0},
            "; background load 25/s for its first 8 s",
        ),
        ({"rate": 50.0, "background_load": 0.5}, "background load 30/min that never stops"),
    ],
)
def test_describe(kwargs: dict[str, Any], expected: str) -> None:
    assert expected in describe(SimConfig(**kwargs))
