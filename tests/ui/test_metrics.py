"""The Prometheus textfile and the summary JSON: parsed back, written atomically, and written
at the end of a run whatever the end."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.outcome import Summary, summary
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.metrics import (
    JOB_MAX,
    STDOUT,
    default_job,
    job_problem,
    previous_last_success,
    render_metrics,
    write_atomic,
    write_metrics,
    write_summary_json,
)
from tests.helpers.rerunkit import make_ids, rerun

JOB = (("job", "j"),)  # the labels of a series with no label of its own, for job "j"


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
    text = render_metrics(summary(done.result), 1, 1_800_000_000.5, 0.0, "j")
    metrics = parse(text)
    assert metrics["orchestrator_exit_code"] == {JOB: 1}
    assert metrics["orchestrator_last_run_timestamp_seconds"] == {JOB: 1_800_000_000.5}
    assert metrics["orchestrator_last_success_timestamp_seconds"] == {JOB: 0}  # never
    reruns = {dict(k)["outcome"]: v for k, v in metrics["orchestrator_reruns"].items()}
    assert reruns["succeeded"] == 5
    assert reruns["failed"] == 1
    assert reruns["rejected"] == 1
    assert reruns["in_doubt"] == 0
    assert metrics["orchestrator_failed_reruns"] == {(("error", "not_found"), *JOB): 1}
    requests = {dict(k)["code"]: v for k, v in metrics["orchestrator_requests"].items()}
    assert requests == {"202": 5, "404": 1, "429": 1}
    assert metrics["orchestrator_rate_limited_requests"] == {JOB: 1}
    assert metrics["orchestrator_duration_seconds"][JOB] >= 0
    assert "orchestrator_effective_rate_requests_per_second" in metrics
    assert metrics["orchestrator_build_info"]


def test_every_series_carries_the_job_label() -> None:
    fields = Summary(
        outcome="completed",
        exit_code=1,
        ledger="l.jsonl",
        failed_by_error={"not_found": 1},
        requests_by_status={"404": 1},
    )
    for text in (
        render_metrics(fields, 1, 5.0, 0.0, "nightly"),
        render_metrics(None, 2, 5.0, 0.0, "nightly"),
    ):
        samples = [line for line in text.splitlines() if not line.startswith("#")]
        assert samples
        for line in samples:
            assert '{job="nightly"' in line, line
        assert all(dict(labels)["job"] == "nightly" for m in parse(text).values() for labels in m)


def test_last_success_is_now_on_exit_0_and_carried_over_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "orchestrator.prom"
    write_metrics(path, None, 0, 1000.0, "j")
    assert previous_last_success(path, "j") == 1000.0
    write_metrics(path, None, 1, 2000.0, "j")
    metrics = parse(path.read_text())
    assert metrics["orchestrator_last_success_timestamp_seconds"] == {JOB: 1000.0}
    assert metrics["orchestrator_last_run_timestamp_seconds"] == {JOB: 2000.0}
    write_metrics(path, None, 0, 3000.0, "j")
    assert previous_last_success(path, "j") == 3000.0


def test_a_job_that_never_succeeded_reports_its_last_success_as_0(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(path, None, 1, 2000.0, "j")  # no previous file
    assert parse(path.read_text())["orchestrator_last_success_timestamp_seconds"] == {JOB: 0}
    write_metrics(path, None, 3, 3000.0, "j")  # a previous file that says never
    assert parse(path.read_text())["orchestrator_last_success_timestamp_seconds"] == {JOB: 0}


def test_another_jobs_success_is_not_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    write_metrics(path, None, 0, 1000.0, "other")
    assert previous_last_success(path, "j") == 0
    write_metrics(path, None, 1, 2000.0, "j")
    assert parse(path.read_text())["orchestrator_last_success_timestamp_seconds"] == {JOB: 0}


def test_a_file_from_before_the_job_label_still_carries_its_success(tmp_path: Path) -> None:
    """Upgrading must not make a job that succeeded yesterday read as never."""
    path = tmp_path / "m.prom"
    path.write_text(
        "# TYPE orchestrator_last_success_timestamp_seconds gauge\n"
        "orchestrator_last_success_timestamp_seconds 1234.5\n"
    )
    assert previous_last_success(path, "j") == 1234.5


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe\x00garbage\x80\n",
        b'orchestrator_last_success_timestamp_seconds{job="j"} soon\n',
        b'orchestrator_last_success_timestamp_seconds{job="j"} NaN\n',
        b'orchestrator_last_success_timestamp_seconds{job="j"} +Inf\n',
        b'orchestrator_last_success_timestamp_seconds{job="j"} -5\n',
        b'orchestrator_last_success_timestamp_seconds{job="j"\n',
        b"orchestrator_last_success_timestamp_seconds\n",
        b"",
        b"{" * 100_000,
    ],
)
def test_a_garbage_previous_file_counts_as_never_and_the_run_still_writes(
    tmp_path: Path, garbage: bytes
) -> None:
    path = tmp_path / "m.prom"
    path.write_bytes(garbage)
    assert previous_last_success(path, "j") == 0
    write_metrics(path, None, 1, 2000.0, "j")
    assert parse(path.read_text())["orchestrator_last_success_timestamp_seconds"] == {JOB: 0}


def test_an_unreadable_previous_file_counts_as_never(tmp_path: Path) -> None:
    assert previous_last_success(tmp_path, "j") == 0  # a directory
    assert previous_last_success(tmp_path / "missing.prom", "j") == 0


def test_a_run_that_never_started_still_reports_its_exit_code() -> None:
    metrics = parse(render_metrics(None, 2, 5.0, 0.0, "j"))
    assert metrics["orchestrator_exit_code"] == {JOB: 2}
    assert "orchestrator_reruns" not in metrics


def test_label_values_are_escaped() -> None:
    fields = Summary(
        outcome="completed", exit_code=1, ledger="l.jsonl", failed_by_error={'we"ird\\\n': 1}
    )
    metrics = parse(render_metrics(fields, 1, 5.0, 0.0, "j"))
    assert metrics["orchestrator_failed_reruns"] == {(("error", 'we"ird\\\n'), *JOB): 1}


@pytest.mark.parametrize("name", ["nightly", "hourly-retry", "team.a:b_2", "_x", "A" * JOB_MAX])
def test_sane_job_names_are_taken(name: str) -> None:
    assert job_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "a b", 'a"b', "a\\b", "a{b}", "-a", ".a", "a\nb", "caf\u00e9", "A" * (JOB_MAX + 1)]
)
def test_other_job_names_are_refused(name: str) -> None:
    assert job_problem(name) is not None


@pytest.mark.parametrize(
    ("ledger", "job"),
    [
        ("rerun-ledger.jsonl", "rerun-ledger"),
        ("/var/lib/orchestrator/cron-ledger.jsonl", "cron-ledger"),
        ("my ledger.jsonl", "my_ledger"),
        (".hidden.jsonl", "_.hidden"),
        ("caf\u00e9.jsonl", "caf_"),
        ("-.jsonl", "_-"),
    ],
)
def test_the_default_job_is_the_ledgers_stem_made_a_valid_name(ledger: str, job: str) -> None:
    assert default_job(Path(ledger)) == job
    assert job_problem(job) is None


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
    fields = Summary(
        outcome="completed",
        exit_code=1,
        ledger="l.jsonl",
        finished_by_outcome={"completed": 7, "failed_again": 2, "timed_out": 1},
    )
    metrics = parse(render_metrics(fields, 1, 1_800_000_000.0, 0.0, "j"))
    finished = {dict(k)["outcome"]: v for k, v in metrics["orchestrator_finished_reruns"].items()}
    assert all(dict(k)["job"] == "j" for k in metrics["orchestrator_finished_reruns"])
    assert finished == {"completed": 7, "failed_again": 2, "timed_out": 1}


def test_write_atomic_through_a_symlink_replaces_the_target_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "real" / "m.prom"
    target.write_text("old\n")
    link = tmp_path / "links" / "m.prom"
    link.symlink_to("../real/m.prom")  # relative, as links often are
    write_atomic(link, "new\n")
    assert link.is_symlink()
    assert link.readlink() == Path("../real/m.prom")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["m.prom"]
    assert sorted(p.name for p in (tmp_path / "links").iterdir()) == ["m.prom"]


def test_write_atomic_through_a_chain_of_links_and_to_a_target_not_made_yet(
    tmp_path: Path,
) -> None:
    target = tmp_path / "t.json"
    (tmp_path / "b").symlink_to(target)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    write_atomic(tmp_path / "a", "first\n")  # the link dangled: its target is made
    assert target.read_text() == "first\n"
    write_atomic(tmp_path / "a", "second\n")
    assert target.read_text() == "second\n"
    assert (tmp_path / "a").is_symlink()
    assert (tmp_path / "b").is_symlink()


def test_the_temporary_file_is_made_beside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename cannot cross file systems: the temporary file must be in the target's
    directory, not the link's."""
    (tmp_path / "real").mkdir()
    link = tmp_path / "m.prom"
    link.symlink_to(tmp_path / "real" / "m.prom")
    renames: list[tuple[str, str]] = []
    replace = os.replace

    def watched(src: str, dst: str) -> None:
        renames.append((str(src), str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    write_atomic(link, "x\n")
    [(src, dst)] = renames
    assert Path(src).parent == tmp_path / "real"
    assert Path(dst) == tmp_path / "real" / "m.prom"


def test_summary_json_dash_is_written_to_stdout() -> None:
    out = io.StringIO()
    write_summary_json(STDOUT, {"outcome": "completed"}, stdout=out)
    assert json.loads(out.getvalue()) == {"outcome": "completed"}
