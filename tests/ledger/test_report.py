"""`orchestrator report LEDGER`: the summary read back from a ledger, the IDs by outcome
(fed straight back into rerun), the mapping, and reading a ledger still being written."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.records import (
    Dispatched,
)
from orchestrator.ledger.report import LedgerReport
from orchestrator.ledger.writer import FsyncPolicy, LedgerWriter
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.ledgerkit import at, ledger_lines, ok, session, two_sessions, write_ledger
from tests.helpers.rerunkit import make_ids

TOKEN = "report-test-token-padded-to-look-like-a-real-jwt"


def test_retries_are_the_requests_that_were_an_ids_second_attempt_or_later() -> None:
    """As a live run counts them: a last attempt that left its ID in doubt is no retry, and
    a `dispatched` line whose attempt is unreadable is still a request, not a corrupt line."""
    lines = [
        *ledger_lines(session(1, 0)),
        b'{"event":"dispatched","original_run_id":"fl_run_a","attempt":1,"at":"'
        + at(1).encode()
        + b'"}',
        b'{"event":"attempt_failed","original_run_id":"fl_run_a","attempt":1,"http_status":503,'
        b'"error":"server_error","resendable":true}',
        b'{"event":"dispatched","original_run_id":"fl_run_a","attempt":2}',
        *ledger_lines(ok("fl_run_a", 2, 2.1, attempt=2))[1:],
        b'{"event":"dispatched","original_run_id":"fl_run_b","attempt":1}',
        b'{"event":"attempt_failed","original_run_id":"fl_run_b","attempt":1,"http_status":null,'
        b'"error":"timeout","resendable":false}',
        b'{"event":"dispatched","original_run_id":"fl_run_c","attempt":"second"}',
    ]
    report = LedgerReport()
    report.feed_lines(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    fields = report.summary("l.jsonl", running=True).as_fields()
    assert (fields["requests"], fields["retries"], fields["corrupt_lines"]) == (4, 1, 0)
    assert (fields["succeeded"], fields["in_doubt"]) == (1, 2)  # b, and c sent unanswered


def test_the_report_folds_every_session_into_each_ids_last_word() -> None:
    report = LedgerReport()
    report.feed_lines(ledger_lines(two_sessions()))
    fields = report.summary("l.jsonl", running=False).as_fields()
    assert fields["outcome"] == "completed"
    assert fields["last_session_exit_code"] == 1
    assert fields["exit_code"] == 1
    assert fields["succeeded"] == 2  # a, and b on its retry
    assert fields["failed"] == 1
    assert fields["failed_by_error"] == {"client_error": 1}
    assert fields["rejected"] == 1  # the same line in two sessions
    assert fields["in_doubt"] == 1
    assert fields["in_doubt_ids"] == ["fl_run_d"]
    assert fields["requests"] == 5
    # d's timeout left it in doubt, not retried; b's second request came in a new session,
    # as its first attempt there. A live run would say 0 as well.
    assert fields["retries"] == 0
    assert fields["requests_by_status"] == {"202": 2, "404": 2, "timeout": 1}
    assert fields["sessions"] == 2
    assert fields["elapsed_s"] == 3.0  # 2 s, then 1 s; not the 11 s between them
    assert fields["first_at"] == at(0)
    assert fields["last_at"] == at(11)
    latency = fields["latency_ms"]
    assert isinstance(latency, dict)
    assert latency["max"] == 1000.0
    assert sorted(report.ids(IdState.SUCCEEDED)) == ["fl_run_a", "fl_run_b"]


def test_a_session_that_never_ended_reads_as_interrupted_and_torn_lines_as_corrupt() -> None:
    report = LedgerReport()
    lines = ledger_lines([*session(1, 0), *ok("fl_run_a", 0.1, 0.2)])
    report.feed_lines([*lines, b'{"event": "dispa'])
    fields = report.summary("l.jsonl", running=False).as_fields()
    assert fields["outcome"] == "interrupted"
    assert fields["corrupt_lines"] == 1
    assert fields["exit_code"] == 0
    assert report.summary("l.jsonl", running=True).as_fields()["outcome"] == "running"


def test_latencies_are_sampled_in_bounded_memory() -> None:
    report = LedgerReport()
    records: list[object] = []
    for n in range(12_000):
        records += ok(f"fl_run_{n}", 1.0, 1.0 + (n % 100) / 1000)
    report.feed_lines(ledger_lines(records))
    assert len(report.latencies) == 10_000
    latency = report.summary("l", running=False).as_fields()["latency_ms"]
    assert isinstance(latency, dict)
    assert 40 <= latency["p50"] <= 60
    assert latency["max"] == 99.0


# ---- the command ---------------------------------------------------------------------------


def env() -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))
    }
    return clean | {"ALTOSTRAT_TOKEN": TOKEN}


async def orchestrator(*args: str, cwd: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "orchestrator", *args],
            input=stdin,
            cwd=cwd,
            env=env(),
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.subprocess
async def test_report_prints_one_json_summary_when_piped(tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path / "l.jsonl", two_sessions())
    code, out, err = await orchestrator("report", str(ledger), cwd=tmp_path)
    assert code == 1
    assert err == ""
    fields = json.loads(out)
    assert fields["succeeded"] == 2
    assert fields["ledger"] == str(ledger)


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("succeeded", ["fl_run_a", "fl_run_b"]),
        ("failed", ["fl_run_c"]),
        ("in-doubt", ["fl_run_d"]),
        ("rejected", ["nope"]),
    ],
)
async def test_report_ids_prints_one_per_line(
    tmp_path: Path, which: str, expected: list[str]
) -> None:
    ledger = write_ledger(tmp_path / "l.jsonl", two_sessions())
    code, out, _ = await orchestrator("report", str(ledger), "--ids", which, cwd=tmp_path)
    assert code == 0
    assert sorted(out.splitlines()) == expected  # one per line, in no particular order


@pytest.mark.subprocess
async def test_report_mapping_as_csv_and_jsonl(tmp_path: Path) -> None:
    ledger = write_ledger(tmp_path / "l.jsonl", two_sessions())
    code, out, _ = await orchestrator("report", str(ledger), "--mapping", cwd=tmp_path)
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["original_run_id", "new_run_id"],
        ["fl_run_a", "fl_run_anew"],
        ["fl_run_b", "fl_run_bnew"],
    ]
    code, out, _ = await orchestrator(
        "report", str(ledger), "--mapping", "--format", "jsonl", cwd=tmp_path
    )
    assert [json.loads(line) for line in out.splitlines()] == [
        {"original_run_id": "fl_run_a", "new_run_id": "fl_run_anew"},
        {"original_run_id": "fl_run_b", "new_run_id": "fl_run_bnew"},
    ]


@pytest.mark.subprocess
async def test_report_ids_failed_feeds_straight_back_into_rerun(tmp_path: Path) -> None:
    ids = make_ids(20)
    flaky = ids[:3]  # refused once with 409, accepted on the next request
    config = SimConfig(accept_any=True, token=TOKEN, script={i: [409] for i in flaky})
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{i}\n" for i in ids))
    async with RunningSimulator(config) as sim:
        base = ["--base-url", sim.base_url, "--rate", "none"]
        code, _, _ = await orchestrator("rerun", str(source), *base, cwd=tmp_path)
        assert code == 1
        code, failed, _ = await orchestrator(
            "report", "rerun-ledger.jsonl", "--ids", "failed", cwd=tmp_path
        )
        assert sorted(failed.splitlines()) == sorted(flaky)
        code, _, err = await orchestrator(
            "rerun", "-", "--retry-failed", *base, cwd=tmp_path, stdin=failed.encode()
        )
        assert code == 0, err
        assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))
    code, out, _ = await orchestrator("report", "rerun-ledger.jsonl", cwd=tmp_path)
    assert code == 0
    assert json.loads(out)["succeeded"] == 20


@pytest.mark.subprocess
async def test_report_reads_a_ledger_a_run_is_still_writing(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    writer = LedgerWriter(path, FsyncPolicy.NEVER)  # holds the lock, as a running rerun does
    try:
        for record in [*session(1, 0), *ok("fl_run_a", 0.1, 0.2)]:
            writer.append(record)  # type: ignore[arg-type]
        writer.append(Dispatched(at=at(0.3), original_run_id="fl_run_b", attempt=1))
        code, out, _ = await orchestrator("report", str(path), cwd=tmp_path)
    finally:
        writer.close()
    assert code == 1
    fields = json.loads(out)
    assert fields["outcome"] == "running"
    assert fields["succeeded"] == 1
    assert fields["in_doubt_ids"] == ["fl_run_b"]  # in flight, as far as the ledger knows
    code, out, _ = await orchestrator("report", str(path), cwd=tmp_path)
    assert code == 1
    assert json.loads(out)["outcome"] == "interrupted"


@pytest.mark.subprocess
async def test_report_on_a_missing_ledger_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = await orchestrator("report", "absent.jsonl", cwd=tmp_path)
    assert code == 2
    assert out == ""
    assert err.strip() == (
        "orchestrator: error: cannot read ledger absent.jsonl: No such file or directory"
    )
