"""The simulator's pure parts, without a server: bucket, faults, data, lifecycle, pages.
(The limiters and their headers have their own: test_limiters, test_ratelimit.)"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.ids import is_run_id
from orchestrator.simulator import (
    SimConfig,
    seeded_failed_run_ids,
    seeded_run_ids,
    seeded_workflow_ids,
)
from orchestrator.simulator.dataset import generate
from orchestrator.simulator.faults import FaultPlan, FaultRates, sample_latency_s
from orchestrator.simulator.models import Progressing, Run, Settled, snapshot
from orchestrator.simulator.views import PageWindow, paginated, parse_page

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# -- faults ------------------------------------------------------------------------


def test_fault_rates_slice_the_unit_interval() -> None:
    rates = FaultRates(p_500=0.1, p_502=0.1, p_503=0.1, p_drop=0.1, p_slow=0.1, p_bad_body=0.1)
    picks = [rates.pick(u) for u in (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.99)]
    assert picks == [500, 502, 503, "drop", "slow", "bad_body", "ok", "ok"]
    assert FaultRates().pick(0.0) == "ok"


def test_script_comes_first_then_random_faults() -> None:
    plan = FaultPlan({"fl_run_a": [503, "ok", "drop"]}, FaultRates(p_500=1.0), random.Random(0))
    steps = [plan.next_step("fl_run_a") for _ in range(4)]
    # "ok" is normal behaviour, which here means the random 500.
    assert steps == [(503, True), (500, False), ("drop", True), (500, False)]
    assert plan.next_step("fl_run_b") == (500, False)


def test_fault_draws_are_reproducible() -> None:
    rates = FaultRates(p_503=0.3, p_drop=0.2)

    def sequence(seed: int) -> list[object]:
        plan = FaultPlan({}, rates, random.Random(seed))
        return [plan.next_step("fl_run_a")[0] for _ in range(40)]

    assert sequence(1) == sequence(1)
    assert sequence(1) != sequence(2)


def test_latency_is_the_median_without_spread() -> None:
    rng = random.Random(0)
    assert sample_latency_s(rng, 0.0, 1.0) == 0.0
    assert sample_latency_s(rng, 120.0, 0.0) == pytest.approx(0.12)
    draws = sorted(sample_latency_s(rng, 100.0, 0.5) for _ in range(2_001))
    assert draws[1_000] == pytest.approx(0.1, rel=0.1)


# -- config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0.0},
        {"rate": 1.0, "burst": -1},
        {"rate": 1.0, "limiter": "leaky"},
        {"rate": 1.0, "limiter": "fixed-window", "burst": 2},
        {"rate": 1.0, "count_refused": True},
        {"rate": 1.0, "limiter": "fixed-window", "count_refused": True},
        {"rate": 1.0, "limiter": "sliding-log", "window_s": 0.0},
        {"rate": 1.0, "rate_limit_headers": "draft"},
        {"rate": 1.0, "background_load": 0.0},
        {"rate": 1.0, "background_stop_s": 5.0},
        {"rate": 1.0, "background_load": 1.0, "background_stop_s": -1.0},
        {"limiter": "sliding-log"},
        {"burst": 3},
        {"background_load": 1.0},
        {"p_500": 1.5},
        {"p_500": 0.6, "p_drop": 0.6},
        {"rerun_failure_rate": 0.7, "stuck_rate": 0.7},
        {"workflows": 0},
        {"per_page": 0},
        {"token": ""},
        {"now_wall": datetime(2025, 1, 1)},  # naive on purpose
        {"script": {"fl_run_a": [700]}},
        {"script": {"fl_run_a": ["explode"]}},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by field
        SimConfig(**kwargs)  # type: ignore[arg-type]


def test_config_rejects_a_bare_string_script() -> None:
    with pytest.raises(TypeError):
        SimConfig(script={"fl_run_a": "drop"})


# -- seeded data -----------------------------------------------------------------


def test_seeded_data_is_deterministic() -> None:
    one = generate(seed=7, runs=50, workflows=3, now_wall=NOW)
    two = generate(seed=7, runs=50, workflows=3, now_wall=NOW)
    other = generate(seed=8, runs=50, workflows=3, now_wall=NOW)
    assert one == two
    assert one.run_ids() != other.run_ids()
    # IDs and statuses do not depend on the reference time.
    later = generate(seed=7, runs=50, workflows=3, now_wall=NOW + timedelta(days=9))
    assert later.run_ids() == one.run_ids()
    assert later.run_ids("failed") == one.run_ids("failed")


def test_seeded_data_shape() -> None:
    data = generate(seed=0, runs=200, workflows=3, now_wall=NOW)
    assert len(data.workflows) == 3
    assert all(w.id.startswith("fl_") and w.id[3:].isalnum() for w in data.workflows)
    ids = data.run_ids()
    assert len(ids) == len(set(ids)) == 200
    assert all(is_run_id(run_id) for run_id in ids)
    counts = {
        status: len(data.run_ids(status))
        for status in ("completed", "failed", "running", "pending", "awaiting_ui_interaction")
    }
    assert counts == {
        "completed": 110,
        "failed": 60,
        "running": 12,
        "pending": 8,
        "awaiting_ui_interaction": 10,
    }
    for run in data.runs:
        assert NOW - timedelta(hours=24) <= run.created_at <= NOW
        timeline = run.timeline
        assert isinstance(timeline, Settled)
        assert (timeline.error_message is not None) == (timeline.status == "failed")
        if timeline.completed_at is not None:
            assert timeline.started_at is not None
            assert run.created_at <= timeline.started_at <= timeline.completed_at <= NOW
    assert [run.created_at for run in data.runs] == sorted(run.created_at for run in data.runs)


def test_seeded_id_helpers_match_the_data() -> None:
    config = SimConfig(seed=3, runs=40, workflows=2)
    data = generate(seed=3, runs=40, workflows=2, now_wall=NOW)
    assert seeded_run_ids(config) == data.run_ids()
    assert seeded_failed_run_ids(config) == data.run_ids("failed")
    assert seeded_workflow_ids(config) == [w.id for w in data.workflows]


# -- lifecycle --------------------------------------------------------------------


def _rerun(outcome: str) -> Run:
    timeline = Progressing(100.0, 2.0, 5.0, outcome, "boom" if outcome == "failed" else None)  # type: ignore[arg-type]
    return Run("fl_run_new", "fl_wf", NOW, 0, timeline, "fl_run_old")


@pytest.mark.parametrize(
    ("at", "status"),
    [
        (100.0, "pending"),
        (101.9, "pending"),
        (102.0, "running"),
        (106.9, "running"),
        (107.0, "completed"),
    ],
)
def test_rerun_progresses_over_the_clock(at: float, status: str) -> None:
    assert snapshot(_rerun("completed"), at).status == status


def test_finished_rerun_has_times_duration_and_logs() -> None:
    done = snapshot(_rerun("failed"), 500.0)
    assert done.status == "failed"
    assert done.error_message == "boom"
    assert done.started_at == NOW + timedelta(seconds=2)
    assert done.completed_at == NOW + timedelta(seconds=7)
    assert done.duration_in_seconds == 5
    assert [line.level for line in done.logs] == ["info", "error"]
    assert snapshot(_rerun("failed"), 100.0).logs == ()


def test_stuck_rerun_runs_forever() -> None:
    assert snapshot(_rerun("stuck"), 1e9).status == "running"


# -- pagination -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "page"), [(None, 1), ("3", 3), ("0", 1), ("-2", 1), ("abc", 1), ("٣", 1)]
)
def test_parse_page(raw: str | None, page: int) -> None:
    assert parse_page(raw) == page


def test_page_window_and_links() -> None:
    body = paginated([], PageWindow(2, 15, 31), "http://h/workflows/w/executions")
    assert body["links"] == {
        "first": "http://h/workflows/w/executions?page=1",
        "last": "http://h/workflows/w/executions?page=3",
        "prev": "http://h/workflows/w/executions?page=1",
        "next": "http://h/workflows/w/executions?page=3",
    }
    assert body["meta"] == {
        "current_page": 2,
        "from": 16,
        "last_page": 3,
        "path": "http://h/workflows/w/executions",
        "per_page": 15,
        "to": 30,
        "total": 31,
    }
    last = paginated([], PageWindow(3, 15, 31), "p")
    assert (last["meta"]["from"], last["meta"]["to"], last["links"]["next"]) == (31, 31, None)
    empty = paginated([], PageWindow(1, 15, 0), "p")
    assert empty["meta"]["last_page"] == 1
    assert (empty["meta"]["from"], empty["meta"]["to"]) == (None, None)
    assert (empty["links"]["prev"], empty["links"]["next"]) == (None, None)
