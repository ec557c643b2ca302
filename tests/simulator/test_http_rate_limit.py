"""The rate limit over real HTTP, each limiter shape and header style, on the fake clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.api.headers import rate_hint
from orchestrator.simulator import SimConfig
from tests.helpers.simfixture import SimHarness, sim_harness

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW_EPOCH = int(NOW.timestamp())


async def test_burst_then_429_with_headers_then_refill() -> None:
    async with sim_harness(SimConfig(runs=10, rate=1.0, burst=2, now_wall=NOW)) as sim:
        run_id = sim.state.failed_run_ids[0]
        allowed = [await sim.rerun(run_id) for _ in range(3)]
        assert [r.status for r in allowed] == [202, 202, 202]
        assert [r.headers["X-RateLimit-Limit"] for r in allowed] == ["60"] * 3
        assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
        assert all("Retry-After" not in r.headers for r in allowed)

        sim.clock.advance(0.25)
        refused = await sim.rerun(run_id)
        assert refused.status == 429
        assert refused.json() == {"message": "Too Many Attempts."}
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["X-RateLimit-Limit"] == "60"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        # The next token is due 0.75 s later: 12:00:01 on the simulated wall clock.
        assert refused.headers["X-RateLimit-Reset"] == str(NOW_EPOCH + 1)

        # Refusals take no token: after 0.75 s more, exactly one request fits again.
        assert (await sim.get_run(run_id)).status == 429
        sim.clock.advance(0.75)
        assert (await sim.rerun(run_id)).status == 202
        assert (await sim.rerun(run_id)).status == 429
        sim.clock.advance(10.0)  # refills to the burst, no further
        statuses = [(await sim.get_run(run_id)).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert sim.state.stats.accepted == {run_id: 4}


async def test_retry_after_rounds_up_the_wait() -> None:
    async with sim_harness(SimConfig(runs=3, rate=0.5)) as sim:  # 30/min, burst 0
        run_id = sim.state.seeded_run_ids[0]
        first = await sim.get_run(run_id)
        assert (first.status, first.headers["X-RateLimit-Limit"]) == (200, "30")
        sim.clock.advance(0.5)
        refused = await sim.get_run(run_id)
        assert (refused.status, refused.headers["Retry-After"]) == (429, "2")  # 1.5 s, rounded up
        sim.clock.advance(1.5)
        assert (await sim.get_run(run_id)).status == 200


async def test_retry_after_can_be_switched_off() -> None:
    async with sim_harness(SimConfig(runs=3, rate=1.0, retry_after=False)) as sim:
        run_id = sim.state.seeded_run_ids[0]
        await sim.get_run(run_id)
        refused = await sim.get_run(run_id)
        assert refused.status == 429
        assert "Retry-After" not in refused.headers
        assert "X-RateLimit-Reset" in refused.headers
    config = SimConfig(runs=3, rate=1.0, retry_after=False, rate_limit_reset=False)
    async with sim_harness(config) as sim:
        await sim.get_run(sim.state.seeded_run_ids[0])
        bare = await sim.get_run(sim.state.seeded_run_ids[0])
        assert bare.status == 429
        assert "Retry-After" not in bare.headers
        assert "X-RateLimit-Reset" not in bare.headers
        assert bare.headers["X-RateLimit-Remaining"] == "0"


async def test_rate_limit_headers_can_be_switched_off() -> None:
    async with sim_harness(SimConfig(runs=3, rate=1.0, rate_limit_headers="none")) as sim:
        run_id = sim.state.seeded_run_ids[0]
        allowed = await sim.get_run(run_id)
        refused = await sim.get_run(run_id)
        assert (allowed.status, refused.status) == (200, 429)
        for answer in (allowed, refused):
            assert not [h for h in answer.headers if "ratelimit" in h.lower()]
        assert refused.headers["Retry-After"] == "1"


async def test_limit_comes_before_faults_and_404_but_after_auth() -> None:
    config = SimConfig(runs=3, rate=1.0, script={"fl_run_scripted": [503]})
    async with sim_harness(config) as sim:
        assert (await sim.rerun("fl_run_unknown", token="nope")).status == 401  # free
        assert (await sim.rerun("fl_run_unknown")).status == 404  # takes the only token
        assert (await sim.rerun("fl_run_unknown")).status == 429  # limit before the 404
        assert (await sim.rerun("fl_run_scripted")).status == 429  # script not consumed
        sim.clock.advance(1.0)
        assert (await sim.rerun("fl_run_scripted")).status == 503
        assert sim.state.stats.by_status == {401: 1, 404: 1, 429: 2, 503: 1}


async def test_no_rate_limit_means_no_headers() -> None:
    async with sim_harness(SimConfig(runs=3)) as sim:
        responses = [await sim.get_run(sim.state.seeded_run_ids[0]) for _ in range(50)]
        assert {r.status for r in responses} == {200}
        assert "X-RateLimit-Limit" not in responses[0].headers


# (seconds to move the clock first, the status the next request gets), from a fresh token.
Script = list[tuple[float, int]]
SHAPES: list[tuple[str, dict[str, Any], Script]] = [
    (
        "gcra burst 0: strictly 1/rate apart",
        {"rate": 2.0, "burst": 0},
        [(0, 202), (0, 429), (0.4, 429), (0.1, 202), (0.25, 429), (0.25, 202)],
    ),
    (
        "gcra burst 1: two at once, then the rate",
        {"rate": 2.0, "burst": 1},
        [(0, 202), (0, 202), (0, 429), (0.5, 202), (0, 429), (2.0, 202), (0, 202), (0, 429)],
    ),
    (
        "fixed window: three, then nothing until the window ends",
        {"rate": 3.0, "limiter": "fixed-window"},
        [(0.5, 202), (0, 202), (0, 202), (0, 429), (0.99, 429), (0.01, 202), (0, 202)],
    ),
    (
        "sliding log: three in any second",
        {"rate": 3.0, "limiter": "sliding-log"},
        [(0, 202), (0.5, 202), (0, 202), (0.3, 429), (0.2, 202), (0, 429), (0.5, 202)],
    ),
    (
        "sliding log counting refused: knocking keeps the door shut",
        {"rate": 2.0, "limiter": "sliding-log", "count_refused": True},
        [(0, 202), (0, 202), *[(0.3, 429)] * 6, (1.0, 202)],
    ),
    (
        "sliding counter: the last window weighs as it fades",
        {"rate": 4.0, "limiter": "sliding-counter"},
        [(0, 202), (0, 202), (0, 202), (0, 202), (1.0, 429), (0.24, 429), (0.01, 202)],
    ),
]


@pytest.mark.parametrize(("kwargs", "script"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
async def test_each_shape_refuses_and_lets_through_as_it_should(
    kwargs: dict[str, Any], script: Script
) -> None:
    async with sim_harness(SimConfig(runs=3, **kwargs)) as sim:
        run_id = sim.state.failed_run_ids[0]
        statuses = []
        for wait, _ in script:
            sim.clock.advance(wait)
            statuses.append((await sim.rerun(run_id)).status)
        assert statuses == [status for _, status in script]


@pytest.mark.parametrize("style", ["x", "ietf"])
@pytest.mark.parametrize(
    ("kwargs", "at_once"),
    [
        ({"rate": 50.0, "burst": 0}, 1),
        ({"rate": 2.0, "burst": 2}, 3),
        ({"rate": 50.0, "limiter": "fixed-window"}, 50),
        ({"rate": 2.0, "limiter": "sliding-log", "window_s": 5.0}, 10),
        ({"rate": 50.0, "limiter": "sliding-counter", "window_s": 0.5}, 25),
    ],
    ids=repr,
)
async def test_the_client_reads_the_true_per_second_limit(
    style: str, kwargs: dict[str, Any], at_once: int
) -> None:
    """What `orchestrator.api.headers.rate_hint` makes of each style: the limit per second, and
    what is left of what a fresh token lets through at once."""
    config = SimConfig(runs=3, rate_limit_headers=style, **kwargs)  # type: ignore[arg-type]
    async with sim_harness(config) as sim:
        run_id = sim.state.seeded_run_ids[0]
        answers = [await sim.get_run(run_id) for _ in range(at_once + 1)]
        assert [a.status for a in answers] == [200] * at_once + [429]
        hints = [rate_hint(a.headers) for a in answers]
        assert [h.per_second if h else None for h in hints] == [kwargs["rate"]] * (at_once + 1)
        assert [h.remaining if h else None for h in hints] == [*range(at_once - 1, -1, -1), 0]


async def test_ietf_headers_over_http_with_and_without_retry_after() -> None:
    config = SimConfig(runs=3, rate=2.0, limiter="fixed-window", rate_limit_headers="ietf")
    async with sim_harness(config) as sim:
        run_id = sim.state.seeded_run_ids[0]
        first = await sim.get_run(run_id)
        assert first.headers["RateLimit-Policy"] == "2;w=1"
        assert first.headers["RateLimit"] == "limit=2, remaining=1, reset=1"
        assert "X-RateLimit-Limit" not in first.headers
        await sim.get_run(run_id)
        refused = await sim.get_run(run_id)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.headers["RateLimit"] == "limit=2, remaining=0, reset=1"
        assert "X-RateLimit-Reset" not in refused.headers
    async with sim_harness(SimConfig(runs=3, rate=2.0, burst=0, retry_after=False)) as sim:
        await sim.get_run(sim.state.seeded_run_ids[0])
        bare = await sim.get_run(sim.state.seeded_run_ids[0])
        assert bare.status == 429
        assert "Retry-After" not in bare.headers


async def _every(sim: SimHarness, step: float, until: float) -> list[tuple[float, int]]:
    """One rerun every `step` seconds of the fake clock until `until`: (time, status)."""
    run_id = sim.state.failed_run_ids[0]
    start, seen = sim.clock.now(), []
    while (at := sim.clock.now() - start) < until:
        seen.append((at, (await sim.rerun(run_id)).status))
        sim.clock.advance(step)
    return seen


async def test_background_load_takes_its_share_of_the_budget_then_stops() -> None:
    config = SimConfig(runs=10, rate=2.0, burst=0, background_load=1.0, background_stop_s=10.0)
    async with sim_harness(config) as sim:
        start = sim.clock.now()
        seen = await _every(sim, 0.5, 20.0)  # as fast as the limit: 2 a second
        during = [status for at, status in seen if at < 10.0]
        after = [status for at, status in seen if at >= 10.0]
        assert during.count(202) == 10  # the other client takes one a second of the two
        assert after == [202] * 20  # then all of it is ours
        stats = await sim.stats()
        assert stats["background"] == {
            "load": 1.0,
            "started_at": start,
            "stops_at": start + 10.0,
            "accepted": 10,
            "refused": 0,
        }


async def test_background_load_that_never_stops_is_counted_as_of_now() -> None:
    config = SimConfig(runs=10, rate=10.0, limiter="sliding-log", background_load=4.0)
    async with sim_harness(config) as sim:
        await sim.rerun(sim.state.failed_run_ids[0])
        sim.clock.advance(5.0)
        background = (await sim.stats())["background"]
        assert (background["accepted"], background["refused"]) == (21, 0)  # 0, 0.25, ... 5.0
        assert background["stops_at"] is None
