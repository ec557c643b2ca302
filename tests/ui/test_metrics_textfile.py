"""Several cron jobs' metrics files in one node_exporter textfile directory, scraped from a
real node_exporter: every series carries its job, so none repeats and the scrape is whole,
and each job's last success is there, carried over or 0."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.metrics import render_metrics
from tests.helpers.clikit import run_cli
from tests.helpers.nodeexporter import NodeExporter
from tests.helpers.rerunkit import make_ids

pytestmark = pytest.mark.subprocess

TOKEN = "tok-textfile-secret-31-padded-to-look-like-a-real-jwt"
LAST_SUCCESS = "orchestrator_last_success_timestamp_seconds"

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(text: str) -> Series:
    """(name, labels) -> value of every orchestrator_* sample, through Prometheus' parser;
    a series that repeats fails here."""
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("orchestrator_"):
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in found, f"repeated series {key}"
                found[key] = sample.value
    return found


def one(text: str, name: str, **labels: str) -> float:
    """The value of the one sample `name{labels}` in a scrape."""
    values = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.labels == labels
    ]
    assert len(values) == 1, (name, labels, values)
    return values[0]


def assert_whole_scrape(exporter: NodeExporter, files: list[Path]) -> str:
    """Scrape twice and check node_exporter took every series of every file: read without
    error, and with no series dropped as a repeat (node_exporter 1.5 then still answers
    200 with `node_textfile_scrape_error 0`, keeps one copy and counts a gathering error,
    which the next scrape shows)."""
    status, text = exporter.scrape()
    assert status == 200, text
    assert "node_textfile_scrape_error 1" not in text.splitlines()
    assert one(text, "node_textfile_scrape_error") == 0
    expected: Series = {}
    for path in files:
        assert one(text, "node_textfile_mtime_seconds", file=str(path)) > 0
        expected |= series(path.read_text())
    assert series(text) == expected
    status, again = exporter.scrape()
    assert status == 200
    assert one(again, "promhttp_metric_handler_errors_total", cause="gathering") == 0
    return text


async def test_two_jobs_in_one_textfile_directory_scrape_whole_and_apart(
    tmp_path: Path,
    node_exporter: NodeExporter,
) -> None:
    ids = make_ids(5)
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{i}\n" for i in ids[:3]))
    failing = [tmp_path / "failing-a.txt", tmp_path / "failing-b.txt"]
    failing[0].write_text(f"{ids[3]}\n")
    failing[1].write_text(f"{ids[4]}\n")
    nightly = node_exporter.directory / "nightly.prom"
    hourly = node_exporter.directory / "hourly.prom"
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[3]: [404], ids[4]: [404]})
    async with RunningSimulator(config) as sim:

        async def orchestrator(*args: str) -> int:
            code, _, err = await run_cli(
                "rerun", *args, "--base-url", sim.base_url, "--rate", "none",
                cwd=tmp_path, token=TOKEN,
            )  # fmt: skip
            assert code in (0, 1), err
            return code

        # nightly: its job is its ledger's stem; it succeeds, then fails.
        args = ["--ledger", "nightly.jsonl", "--metrics-file", str(nightly)]
        assert await orchestrator(str(source), *args) == 0
        succeeded_at = one(nightly.read_text(), LAST_SUCCESS, job="nightly")
        assert await orchestrator(str(failing[0]), *args) == 1
        # hourly: named with --metrics-job, the same ledger stem would not tell them apart;
        # it has never succeeded.
        args = ["--ledger", "hourly/nightly.jsonl", "--metrics-job", "hourly-retry"]
        (tmp_path / "hourly").mkdir()
        assert await orchestrator(str(failing[1]), *args, "--metrics-file", str(hourly)) == 1

    text = assert_whole_scrape(node_exporter, [nightly, hourly])
    assert one(text, "orchestrator_exit_code", job="nightly") == 1
    assert one(text, "orchestrator_exit_code", job="hourly-retry") == 1
    assert one(text, LAST_SUCCESS, job="nightly") == succeeded_at > 0  # carried over
    assert one(text, LAST_SUCCESS, job="hourly-retry") == 0  # never succeeded
    assert one(text, "orchestrator_reruns", job="nightly", outcome="failed") == 1
    assert one(text, "orchestrator_reruns", job="hourly-retry", outcome="failed") == 1
    jobs = {dict(labels).get("job") for _, labels in series(text)}
    assert jobs == {"nightly", "hourly-retry"}  # every series carries its job


def test_the_scrape_check_catches_two_files_of_one_job(
    node_exporter: NodeExporter,
) -> None:
    """The check above is not vacuous: the same job in two files is what it rejects."""
    files = [node_exporter.directory / "a.prom", node_exporter.directory / "b.prom"]
    for path in files:
        path.write_text(render_metrics(None, 0, 1_800_000_000.0, 0.0, "same"))
    with pytest.raises(AssertionError, match="gathering"):
        assert_whole_scrape(node_exporter, files)
