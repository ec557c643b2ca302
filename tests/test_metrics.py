"""The Prometheus textfile and the summary JSON: parsed back, written atomically, and written
at the end of a run whatever the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics import (
    previous_last_success,
    render_metrics,
    write_atomic,
    write_metrics,
    write_summary_json,
)
from orchestrator.report import summary
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.rerunkit import make_ids, rerun


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric name -> {labels: value}, through the Prometheus project's own parser."""
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            metrics.setdefault(sample.name, {})[labels] = sample.value
    return metrics


async def test_a_runs_metrics_parse_back_with_every_series(tmp_path: Path) -> None:
    ids = make_ids(6)
    config = SimConfig(accept_any=True, script={ids[0]: [404], ids[1]: [429]})
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, tmp_path / "l.jsonl", [*ids, "bad"])
    text = render_metrics(summary(done.result), 1, 1_800_000_000.5, None)
    metrics = parse(text)
    assert metrics["orchestrator_exit_code"] == {(): 1}
    assert metrics["orchestrator_last_run_timestamp_seconds"] == {(): 1_800_000_000.5}
    assert "orchestrator_last_success_timestamp_seconds" not in metrics  # never succeeded
    reruns = {dict(k)["outcome"]: v for k, v in metrics["orchestrator_reruns"].items()}
    assert reruns["succeeded"] == 5
    assert reruns["failed"] == 1
    assert reruns["rejected"] == 1
    assert reruns["in_doubt"] == 0
    assert metrics["orchestrator_failed_reruns"] == {(("error", "not_found"),): 1}
    requests = {dict(k)["code"]: v for k, v in metrics["orchestrator_requests"].items()}
    assert requests == {"202": 5, "404": 1, "429": 1}
    assert metrics["orchestrator_rate_limited_requests"] == {(): 1}
    assert metrics["orchestrator_duration_seconds"][()] >= 0
    assert "orchestrator_effective_rate_requests_per_second" in metrics
    assert metrics["orchestrator_build_info"]


def test_last_success_is_now_on_exit_0_and_carried_over_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.prom"
    write_metrics(path, None, 0, 1000.0)
    assert previous_last_success(path) == 1000.0
    write_metrics(path, None, 1, 2000.0)
    metrics = parse(path.read_text())
    assert metrics["orchestrator_last_success_timestamp_seconds"] == {(): 1000.0}
    assert metrics["orchestrator_last_run_timestamp_seconds"] == {(): 2000.0}
    write_metrics(path, None, 0, 3000.0)
    assert previous_last_success(path) == 3000.0


def test_a_run_that_never_started_still_reports_its_exit_code() -> None:
    metrics = parse(render_metrics(None, 2, 5.0, None))
    assert metrics["orchestrator_exit_code"] == {(): 2}
    assert "orchestrator_reruns" not in metrics


def test_label_values_are_escaped() -> None:
    fields = {"failed_by_error": {'we"ird\\\n': 1}}
    metrics = parse(render_metrics(fields, 1, 5.0, None))
    assert metrics["orchestrator_failed_reruns"] == {(("error", 'we"ird\\\n'),): 1}


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    write_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_atomic(path, None)  # type: ignore[arg-type]
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.prom"]


def test_summary_json_is_the_summary(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_summary_json(path, {"outcome": "completed", "succeeded": 3})
    assert json.loads(path.read_text()) == {"outcome": "completed", "succeeded": 3}


def test_waited_reruns_are_counted_by_how_they_ended() -> None:
    fields = {"finished_by_outcome": {"completed": 7, "failed_again": 2, "timed_out": 1}}
    metrics = parse(render_metrics(fields, 1, 1_800_000_000.0, None))
    finished = {dict(k)["outcome"]: v for k, v in metrics["orchestrator_finished_reruns"].items()}
    assert finished == {"completed": 7, "failed_again": 2, "timed_out": 1}
