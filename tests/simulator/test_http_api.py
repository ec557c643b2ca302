"""The simulated API over real HTTP on loopback: auth, rerun, run lookup, lifecycle, stats."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from orchestrator.ids import is_run_id
from orchestrator.simulator import SimConfig
from tests.helpers.simfixture import FakeClock, sim_harness

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SMALL = SimConfig(runs=30, workflows=2, now_wall=NOW)


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_api_needs_the_bearer_token(token: str | None) -> None:
    async with sim_harness(SMALL) as sim:
        run_id = sim.state.failed_run_ids[0]
        for response in (
            await sim.rerun(run_id, token=token, auth=token is not None),
            await sim.get_run(run_id, token=token, auth=token is not None),
            await sim.request("GET", "/nowhere", token=token, auth=token is not None),
        ):
            assert response.status == 401
            assert response.json() == {"message": "Unauthenticated."}
        assert sim.state.stats.accepted == {}


async def test_other_schemes_are_refused_and_stats_need_no_auth() -> None:
    async with sim_harness(SMALL) as sim:
        url = f"{sim.base_url}/workflows/runs/{sim.state.failed_run_ids[0]}"
        async with sim.session.get(url, headers={"Authorization": "Basic c2ltLXRva2Vu"}) as r:
            assert r.status == 401
        assert (await sim.get_run(sim.state.failed_run_ids[0], token=None)).status == 200
        assert (await sim.stats())["by_status"] == {"401": 1, "200": 1}


async def test_rerun_answers_202_and_the_new_run_exists() -> None:
    async with sim_harness(SMALL) as sim:
        original_id = sim.state.failed_run_ids[0]
        original = (await sim.get_run(original_id)).json()
        response = await sim.rerun(original_id)
        assert response.status == 202
        assert response.headers["Content-Type"].startswith("application/json")
        body = response.json()
        new_run = body["new_run"]
        assert body["message"] == "Workflow run has been queued for rerun."
        assert body["original_run_id"] == original_id
        assert set(new_run) == {
            "id",
            "status",
            "trigger_payload",
            "error_message",
            "started_at",
            "completed_at",
            "duration_in_seconds",
            "created_at",
            "workflow",
            "logs",
        }
        assert is_run_id(new_run["id"])
        assert new_run["id"] != original_id
        assert (new_run["status"], new_run["trigger_payload"], new_run["logs"]) == (
            "pending",
            {},
            [],
        )
        assert new_run["error_message"] is None
        assert new_run["started_at"] is new_run["completed_at"] is None
        assert new_run["duration_in_seconds"] is None
        assert new_run["workflow"] == original["workflow"]
        # Wall time follows the injected clock from `now_wall`, which is after all history.
        assert new_run["created_at"] == "2025-03-01T12:00:00.000000Z"

        fetched = await sim.get_run(new_run["id"])
        assert fetched.status == 200
        assert fetched.json()["workflow_id"] == original["workflow_id"]
        assert fetched.json()["status"] == "pending"
        # A rerun of the rerun works too.
        assert (await sim.rerun(new_run["id"])).status == 202
        assert sim.state.stats.accepted == {original_id: 1, new_run["id"]: 1}


async def test_run_object_fields() -> None:
    async with sim_harness(SMALL) as sim:
        failed = (await sim.get_run(sim.state.failed_run_ids[0])).json()
        assert failed["status"] == "failed"
        assert isinstance(failed["error_message"], str)
        assert failed["error_message"]
        assert failed["workflow_id"] in sim.state.workflow_ids
        assert isinstance(failed["duration_in_seconds"], int)
        assert failed["trigger_payload"] == {}
        for key in ("created_at", "started_at", "completed_at"):
            assert RFC3339_UTC.fullmatch(failed[key])
        assert failed["logs"][-1] == {
            "created_at": failed["completed_at"],
            "level": "error",
            "message": failed["error_message"],
        }
        for run_id in sim.state.seeded_run_ids:
            run = (await sim.get_run(run_id)).json()
            assert (run["error_message"] is None) == (run["status"] != "failed")


@pytest.mark.parametrize(
    "run_id",
    [
        "fl_run_doesnotexist",  # well-formed, unknown
        "fl_run_" + "a" * 65,  # too long
        "fl_run_abc-def",  # bad characters
        "FL_RUN_abc",  # wrong prefix
        "fl_run_",  # empty suffix
        "12345",
    ],
)
async def test_unknown_and_malformed_ids_are_404(run_id: str) -> None:
    async with sim_harness(SMALL) as sim:
        for response in (await sim.rerun(run_id), await sim.get_run(run_id)):
            assert response.status == 404
            assert response.json() == {"message": "Workflow run not found."}
        assert sim.state.stats.accepted == {}


async def test_accept_any_invents_failed_runs() -> None:
    async with sim_harness(SimConfig(runs=0, workflows=2, accept_any=True)) as sim:
        response = await sim.rerun("fl_run_made0up")
        assert response.status == 202
        invented = (await sim.get_run("fl_run_made0up")).json()
        assert invented["status"] == "failed"
        assert invented["workflow_id"] == sim.state.workflow_ids[0]
        # Still only well-formed IDs.
        assert (await sim.rerun("fl_run_bad!")).status == 404


async def test_wrong_method_and_unknown_route() -> None:
    async with sim_harness(SMALL) as sim:
        run_id = sim.state.failed_run_ids[0]
        wrong = await sim.request("GET", f"/workflows/runs/{run_id}/rerun")
        assert wrong.status == 405
        assert wrong.headers["Allow"] == "POST"
        assert (await sim.request("DELETE", f"/workflows/runs/{run_id}")).status == 405
        missing = await sim.request("GET", "/v2/whatever")
        assert missing.status == 404
        assert missing.json() == {"message": "The route v2/whatever could not be found."}
        assert sim.state.stats.accepted == {}


async def test_new_runs_progress_with_the_clock() -> None:
    config = SimConfig(runs=5, pending_s=2.0, running_s=5.0, rerun_failure_rate=0.0, now_wall=NOW)
    async with sim_harness(config) as sim:
        new_id = (await sim.rerun(sim.state.seeded_run_ids[0])).json()["new_run"]["id"]

        async def status() -> str:
            run = (await sim.get_run(new_id)).json()
            return str(run["status"])

        assert await status() == "pending"
        sim.clock.advance(1.99)
        assert await status() == "pending"
        sim.clock.advance(0.01)
        assert await status() == "running"
        sim.clock.advance(4.99)
        assert await status() == "running"
        sim.clock.advance(0.01)
        done = (await sim.get_run(new_id)).json()
        assert done["status"] == "completed"
        assert done["duration_in_seconds"] == 5
        assert done["error_message"] is None
        assert done["created_at"] == "2025-03-01T12:00:00.000000Z"
        assert done["started_at"] == "2025-03-01T12:00:02.000000Z"
        assert done["completed_at"] == "2025-03-01T12:00:07.000000Z"
        assert [line["message"] for line in done["logs"]] == [
            "Workflow run started.",
            "Workflow run completed.",
        ]


@pytest.mark.parametrize(
    ("failure_rate", "stuck_rate", "final"),
    [(1.0, 0.0, "failed"), (0.0, 1.0, "running"), (0.0, 0.0, "completed")],
)
async def test_rerun_outcomes(failure_rate: float, stuck_rate: float, final: str) -> None:
    config = SimConfig(runs=5, rerun_failure_rate=failure_rate, stuck_rate=stuck_rate)
    async with sim_harness(config) as sim:
        new_id = (await sim.rerun(sim.state.seeded_run_ids[0])).json()["new_run"]["id"]
        sim.clock.advance(1e6)
        run = (await sim.get_run(new_id)).json()
        assert run["status"] == final
        assert (run["error_message"] is not None) == (final == "failed")


async def test_rerun_failure_rate_is_seeded() -> None:
    async def outcomes(seed: int) -> list[str]:
        config = SimConfig(runs=5, seed=seed, rerun_failure_rate=0.5)
        async with sim_harness(config) as sim:
            new_ids = [
                (await sim.rerun(sim.state.seeded_run_ids[0])).json()["new_run"]["id"]
                for _ in range(20)
            ]
            sim.clock.advance(100)
            return [(await sim.get_run(i)).json()["status"] for i in new_ids]

    first = await outcomes(4)
    assert first == await outcomes(4)
    assert set(first) == {"completed", "failed"}
    assert first != await outcomes(5)


async def test_stats_and_request_log() -> None:
    clock = FakeClock(start=50.0)
    async with sim_harness(SMALL, clock=clock) as sim:
        run_id = sim.state.failed_run_ids[0]
        await sim.rerun(run_id)
        clock.advance(1.5)
        await sim.rerun(run_id)
        await sim.rerun("fl_run_unknown")
        await sim.get_run(run_id, auth=False)
        stats = await sim.stats()
        assert stats == {
            "requests": 4,
            "by_status": {"202": 2, "404": 1, "401": 1},
            "accepted": {run_id: 2},
            "dropped": 0,
        }
        assert sim.state.stats.by_status == {202: 2, 404: 1, 401: 1}
        log = list(sim.state.request_log)
        assert [(e.at, e.method, e.run_id, e.status) for e in log] == [
            (50.0, "POST", run_id, 202),
            (51.5, "POST", run_id, 202),
            (51.5, "POST", "fl_run_unknown", 404),
            (51.5, "GET", run_id, 401),
        ]
        assert log[0].path == f"/workflows/runs/{run_id}/rerun"
        rows = await sim.requests()
        assert rows["total"] == 4
        assert rows["fields"] == ["at", "method", "path", "run_id", "status", "fault"]
        assert rows["rows"][0] == [
            50.0,
            "POST",
            f"/workflows/runs/{run_id}/rerun",
            run_id,
            202,
            None,
        ]
        assert [row[4] for row in rows["rows"]] == [202, 202, 404, 401]


async def test_request_log_is_bounded() -> None:
    async with sim_harness(SimConfig(runs=1, request_log_limit=3)) as sim:
        for _ in range(5):
            await sim.get_run(sim.state.seeded_run_ids[0])
        assert len(sim.state.request_log) == 3
        assert sim.state.stats.requests == 5
        rows = await sim.requests()
        assert (rows["total"], len(rows["rows"])) == (5, 3)  # the oldest two fell off
