"""The per-token bucket over real HTTP, with the fake clock refilling it."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.simulator import SimConfig
from tests.simfixture import sim_harness

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW_EPOCH = int(NOW.timestamp())


async def test_burst_then_429_with_headers_then_refill() -> None:
    async with sim_harness(SimConfig(runs=10, rate=1.0, burst=3, now_wall=NOW)) as sim:
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
    async with sim_harness(SimConfig(runs=3, rate=0.5)) as sim:  # 30/min, bucket of 1
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
    async with sim_harness(SimConfig(runs=3, rate=1.0, rate_limit_headers=False)) as sim:
        run_id = sim.state.seeded_run_ids[0]
        allowed = await sim.get_run(run_id)
        refused = await sim.get_run(run_id)
        assert (allowed.status, refused.status) == (200, 429)
        for answer in (allowed, refused):
            assert not [h for h in answer.headers if h.lower().startswith("x-ratelimit")]
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
