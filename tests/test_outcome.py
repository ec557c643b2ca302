"""The typed summary: a live run and a ledger read back give the same one, and its JSON
form keeps its keys, in their order."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from orchestrator.ledger.report import LedgerReport
from orchestrator.outcome import (
    Estimate,
    LedgerHistory,
    RunResult,
    StopReason,
    Summary,
    Tally,
    summary,
)
from orchestrator.shared.store import BudgetReport
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.ledgerkit import ledger_lines, two_sessions
from tests.helpers.rerunkit import make_ids, rerun

# The keys every live run's summary has, in order.
RUN_KEYS = [
    "outcome",
    "exit_code",
    "succeeded",
    "in_doubt_unreadable_response",
    "failed",
    "failed_by_error",
    "rejected",
    "in_doubt",
    "in_doubt_ids",
    "unsettled",
    "unsettled_ids",
    "possibly_duplicated",
    "possibly_duplicated_ids",
    "skipped_done",
    "skipped_failed",
    "skipped_is_rerun",
    "duplicates",
    "not_sent",
    "blank_lines",
    "lines",
    "input_unread",
    "unread_lines",
    "requests",
    "retries",
    "requests_by_status",
    "circuit_opened",
    "elapsed_s",
    "effective_rate_per_s",
    "ledger",
]

# The keys every ledger's summary has (`orchestrator report`), in order.
REPORT_KEYS = [
    "outcome",
    "exit_code",
    "last_session_exit_code",
    "succeeded",
    "in_doubt_unreadable_response",
    "failed",
    "failed_by_error",
    "rejected",
    "in_doubt",
    "in_doubt_ids",
    "unsettled",
    "unsettled_ids",
    "skipped_is_rerun",
    "last_session_input_unread",
    "requests",
    "retries",
    "requests_by_status",
    "elapsed_s",
    "effective_rate_per_s",
    "sessions",
    "first_at",
    "last_at",
    "latency_ms",
    "corrupt_lines",
    "corrupt_line_numbers",
    "ledger",
]


def finished_run(**changes: Any) -> RunResult:
    result = RunResult(tally=Tally(), reason=StopReason.COMPLETED, elapsed_s=2.0, ledger="l")
    return dataclasses.replace(result, **changes)


def test_a_live_runs_fields_are_its_keys_in_order() -> None:
    assert list(summary(finished_run()).as_fields()) == RUN_KEYS


def test_a_ledgers_fields_are_its_keys_in_order() -> None:
    report = LedgerReport()
    report.feed_lines(ledger_lines(two_sessions()))
    assert list(report.summary("l.jsonl", running=False).as_fields()) == REPORT_KEYS


def test_what_only_some_runs_have_follows_the_ledger_in_order() -> None:
    """A dry run's plan, --wait's ends, a stop's reason, a lost ledger and the rate budget
    come after `ledger`, then the next step; each only when it applies."""
    tally = Tally(would_send=3, polls=4)
    tally.finished["failed_again"] = 1
    tally.unsettled_reruns["failed_again"] = ["fl_run_a"]
    tally.unrecorded_outcomes["fl_run_b"] = "failed"
    result = finished_run(
        tally=tally,
        dry_run=True,
        base_url="http://127.0.0.1:1",
        estimate=Estimate(3, 1.5),
        abort_detail="token refused",
        ledger_error="disk full",
        budget=BudgetReport("sqlite x", "fp", shared=True, per_s=1.23456, how="learned"),
    )
    told = dataclasses.replace(summary(result), retry_command="orchestrator report …")
    fields = told.as_fields()
    assert list(fields)[len(RUN_KEYS) :] == [
        "base_url",
        "would_send",
        "estimated_duration_s",
        "estimate_rate_per_s",
        "finished_by_outcome",
        "polls",
        "failed_again_ids",
        "abort_detail",
        "ledger_error",
        "unrecorded",
        "unrecorded_mappings",
        "unrecorded_outcomes",
        "rate_store",
        "rate_budget_shared",
        "rate_budget_per_s",
        "rate_budget_source",
        "retry_command",
    ]
    assert (fields["estimated_duration_s"], fields["rate_budget_per_s"]) == (2.0, 1.235)
    assert (fields["unrecorded"], fields["failed_again_ids"]) == (1, ["fl_run_a"])


def test_the_fields_are_plain_json_values_and_a_copy() -> None:
    """Lists and dicts, as the JSON and the log event had them, and not the summary's own:
    the summary is frozen, and a caller's changes to its fields stay in the caller's."""
    tally = Tally(in_doubt=["fl_run_a"])
    tally.failed["not_found"] = 2
    told = summary(finished_run(tally=tally))
    fields = told.as_fields()
    assert fields["in_doubt_ids"] == ["fl_run_a"]
    assert fields["failed_by_error"] == {"not_found": 2}
    assert fields["failed_by_error"] is not told.failed_by_error
    with pytest.raises(dataclasses.FrozenInstanceError):
        told.succeeded = 1  # type: ignore[misc]


def test_a_summary_names_the_first_ids_and_counts_them_all() -> None:
    ids = make_ids(25)
    told = summary(finished_run(tally=Tally(in_doubt=ids, resent_after_doubt=ids)))
    assert (told.in_doubt, told.in_doubt_ids) == (25, tuple(ids[:20]))
    assert (told.possibly_duplicated, len(told.possibly_duplicated_ids)) == (25, 20)


def test_a_ledger_cannot_tell_the_inputs_counts_and_leaves_them_out() -> None:
    from_ledger = Summary(outcome="empty", exit_code=0, ledger="l", history=LedgerHistory())
    assert "lines" not in from_ledger.as_fields()
    assert "polls" not in dataclasses.replace(from_ledger, finished_by_outcome={}).as_fields()
    assert "sessions" not in Summary(outcome="completed", exit_code=0, ledger="l").as_fields()


# What a ledger records of a run as a live run counts it (the ledger also has its history).
SHARED = [
    "outcome",
    "exit_code",
    "succeeded",
    "in_doubt_unreadable_response",
    "failed",
    "failed_by_error",
    "rejected",
    "in_doubt",
    "in_doubt_ids",
    "unsettled",
    "unsettled_ids",
    "skipped_is_rerun",
    "requests",
    "retries",
    "requests_by_status",
    "ledger",
]


async def test_a_run_and_its_ledger_read_back_give_the_same_summary(tmp_path: Path) -> None:
    ids = make_ids(6)
    script: dict[str, list[int | str]] = {
        ids[0]: [404],
        ids[1]: [429, "ok"],
        ids[2]: [503],
        ids[4]: ["bad_body"],  # accepted, naming no readable run: in doubt, no retry
    }
    config = SimConfig(accept_any=True, script=script)
    ledger = tmp_path / "l.jsonl"
    async with RunningSimulator(config) as sim:
        done = await rerun(sim, ledger, [*ids, "bad", ids[3]])
    live = summary(done.result).as_fields()
    report = LedgerReport()
    with ledger.open("rb") as lines:
        report.feed_lines(lines)
    read_back = report.summary(str(ledger), running=False).as_fields()
    assert {k: read_back[k] for k in SHARED} == {k: live[k] for k in SHARED}
    assert live["requests_by_status"] == {"202": 5, "404": 1, "429": 1, "503": 1}
    assert (live["failed"], live["rejected"], live["retries"]) == (1, 1, 2)
    assert (live["in_doubt"], live["in_doubt_unreadable_response"]) == (1, 1)
