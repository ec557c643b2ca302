"""`orchestrator report` on the wrong file, and `--format` for every output it prints."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from orchestrator.ledger.report import LedgerReport
from orchestrator.ui.summary import print_summary
from tests.helpers.clikit import orchestrator, write_ids
from tests.helpers.ledgerkit import ledger_lines, two_sessions, write_ledger
from tests.helpers.rerunkit import make_ids


@pytest.mark.subprocess
@pytest.mark.parametrize("what", [[], ["--ids", "failed"], ["--mapping"], ["--json"]])
async def test_report_on_a_file_of_run_ids_is_a_usage_error_naming_it(
    tmp_path: Path, what: list[str]
) -> None:
    source = write_ids(tmp_path / "ids.txt", make_ids(3))
    code, out, err = await orchestrator("report", str(source), *what, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"orchestrator: error: {source} is not a ledger: 3 lines, none a ledger record "
        "(give the --ledger file a rerun wrote)"
    )


@pytest.mark.subprocess
async def test_an_empty_ledger_is_empty_not_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "l.jsonl"
    empty.write_bytes(b"\n")
    code, out, _ = await orchestrator("report", str(empty), cwd=tmp_path)
    assert (code, json.loads(out)["outcome"]) == (0, "empty")
    code, out, _ = await orchestrator("report", str(empty), "--mapping", cwd=tmp_path)
    assert (code, out) == (0, "original_run_id,new_run_id\n")


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("what", "message"),
    [
        (["--format", "csv"], "--format csv does not apply to the summary; use table or json"),
        (["--ids", "failed", "--format", "json"], "--format json does not apply to --ids"),
        (["--mapping", "--format", "table"], "--format table does not apply to --mapping"),
        (["--json", "--format", "table"], "--json and --format table contradict each other"),
    ],
)
async def test_a_format_that_does_not_apply_is_refused(
    tmp_path: Path, what: list[str], message: str
) -> None:
    ledger = write_ledger(tmp_path / "l.jsonl", two_sessions())
    code, out, err = await orchestrator("report", str(ledger), *what, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.subprocess
async def test_format_applies_to_the_ids_and_the_summary(tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path / "l.jsonl", two_sessions())
    run = ("report", str(ledger))
    _, out, _ = await orchestrator(*run, "--ids", "succeeded", "--format", "csv", cwd=tmp_path)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["run_id"]
    assert sorted(rows[1:]) == [["fl_run_a"], ["fl_run_b"]]
    _, out, _ = await orchestrator(*run, "--ids", "failed", "--format", "jsonl", cwd=tmp_path)
    assert [json.loads(line) for line in out.splitlines()] == [{"run_id": "fl_run_c"}]
    _, out, _ = await orchestrator(*run, "--ids", "rejected", "--format", "csv", cwd=tmp_path)
    assert list(csv.reader(io.StringIO(out))) == [["line", "input"], ["4", "nope"]]
    code, out, _ = await orchestrator(*run, "--format", "table", cwd=tmp_path)
    assert code == 1
    assert out.startswith(f"ledger {ledger}:")  # the table, though piped
    assert "succeeded" in out
    _, out, _ = await orchestrator(*run, "--format", "json", cwd=tmp_path)
    assert json.loads(out)["succeeded"] == 2


def test_the_summary_table_shows_how_many_lines_are_corrupt() -> None:
    report = LedgerReport()
    good = ledger_lines(two_sessions())
    report.feed_lines([good[0], b"torn {\n", *good[1:4], b"[1]\n", *good[4:]])
    summary = report.summary("l.jsonl", running=False)
    fields = summary.as_fields()
    assert (fields["corrupt_lines"], fields["corrupt_line_numbers"]) == (2, [2, 6])
    out = io.StringIO()
    print_summary(summary, "ledger l.jsonl", out)
    row = next(line for line in out.getvalue().splitlines() if "corrupt lines" in line)
    assert row.split() == ["corrupt", "lines", "2", "lines", "2,", "6,", "skipped"]
