"""GET /workflows/{id}/executions: Laravel pagination, newest first, shifted by reruns."""

from __future__ import annotations

from typing import Any

from orchestrator.simulator import SimConfig
from orchestrator.simulator.models import Run
from tests.helpers.simfixture import SimHarness, sim_harness

CONFIG = SimConfig(runs=80, workflows=2, per_page=15, seed=11)


def _newest_first(sim: SimHarness, workflow_id: str) -> list[str]:
    runs: list[Run] = [r for r in sim.state.runs.values() if r.workflow_id == workflow_id]
    runs.sort(key=lambda r: (r.created_at, r.seq), reverse=True)
    return [r.id for r in runs]


async def _page(sim: SimHarness, workflow_id: str, page: int | None = None) -> dict[str, Any]:
    response = await sim.executions(workflow_id, page)
    assert response.status == 200
    body: dict[str, Any] = response.json()
    return body


async def test_walking_every_page_lists_each_run_once_newest_first() -> None:
    async with sim_harness(CONFIG) as sim:
        workflow_id = sim.state.workflow_ids[0]
        expected = _newest_first(sim, workflow_id)
        total = len(expected)
        last_page = -(-total // 15)
        path = f"{sim.base_url}/workflows/{workflow_id}/executions"
        seen: list[str] = []
        for page in range(1, last_page + 1):
            body = await _page(sim, workflow_id, page)
            seen += [run["id"] for run in body["data"]]
            assert body["meta"] == {
                "current_page": page,
                "from": (page - 1) * 15 + 1,
                "last_page": last_page,
                "path": path,
                "per_page": 15,
                "to": min(page * 15, total),
                "total": total,
            }
            assert body["links"] == {
                "first": f"{path}?page=1",
                "last": f"{path}?page={last_page}",
                "prev": f"{path}?page={page - 1}" if page > 1 else None,
                "next": f"{path}?page={page + 1}" if page < last_page else None,
            }
            assert all(run["workflow_id"] == workflow_id for run in body["data"])
        assert seen == expected
        assert len(set(seen)) == total


async def test_default_page_is_one_and_beyond_the_last_is_empty() -> None:
    async with sim_harness(CONFIG) as sim:
        workflow_id = sim.state.workflow_ids[1]
        assert await _page(sim, workflow_id) == await _page(sim, workflow_id, 1)
        response = await sim.request(
            "GET", f"/workflows/{workflow_id}/executions", params={"page": "zero"}
        )
        assert response.json()["meta"]["current_page"] == 1
        beyond = await _page(sim, workflow_id, 99)
        total = len(_newest_first(sim, workflow_id))
        path = beyond["meta"]["path"]
        assert beyond["data"] == []
        assert beyond["meta"]["current_page"] == 99
        assert (beyond["meta"]["from"], beyond["meta"]["to"]) == (None, None)
        assert beyond["meta"]["total"] == total
        assert beyond["links"]["prev"] == f"{path}?page=98"
        assert beyond["links"]["next"] is None


async def test_a_rerun_appears_on_top_and_shifts_items_between_pages() -> None:
    async with sim_harness(CONFIG) as sim:
        workflow_id = sim.state.workflow_ids[0]
        before_1 = [run["id"] for run in (await _page(sim, workflow_id, 1))["data"]]
        before_2 = [run["id"] for run in (await _page(sim, workflow_id, 2))["data"]]
        original = before_2[3]
        sim.clock.advance(1.0)
        new_id = (await sim.rerun(original)).json()["new_run"]["id"]
        after_1 = [run["id"] for run in (await _page(sim, workflow_id, 1))["data"]]
        after_2 = [run["id"] for run in (await _page(sim, workflow_id, 2))["data"]]
        assert after_1 == [new_id, *before_1[:-1]]
        assert after_2[0] == before_1[-1]
        assert after_2[1:] == before_2[:-1]
        top = (await _page(sim, workflow_id, 1))["data"][0]
        assert (top["status"], top["workflow_id"]) == ("pending", workflow_id)
        other = sim.state.workflow_ids[1]
        assert new_id not in _newest_first(sim, other)


async def test_unknown_workflow_is_404() -> None:
    async with sim_harness(CONFIG) as sim:
        response = await sim.executions("fl_nosuchworkflow")
        assert response.status == 404
        assert response.json() == {"message": "Workflow not found."}


async def test_an_empty_workflow_has_one_empty_page() -> None:
    async with sim_harness(SimConfig(runs=0, workflows=1)) as sim:
        body = await _page(sim, sim.state.workflow_ids[0])
        assert body["data"] == []
        assert body["meta"]["total"] == 0
        assert body["meta"]["last_page"] == 1
