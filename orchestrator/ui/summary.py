"""The summary table shown on a terminal at the end of a run or by `orchestrator report`.
Every cell of it from outside is escaped (see `escape`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.escape import escape
from orchestrator.outcome import LedgerHistory, Summary, estimate_text
from orchestrator.shared.store import BudgetReport
from orchestrator.units import format_rate

# IDs a table row names before "… and N more".
SHOWN_IDS: Final = 5


def _pairs(counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _ids(ids: Sequence[object] | None, total: int) -> str:
    if not ids:
        return ""
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    more = total - min(len(ids), SHOWN_IDS)
    return shown + (f" … and {more:,} more" if more > 0 else "")


def _row(table: Table, label: str, count: str = "", note: str = "", style: str = "") -> None:
    """One row, every cell escaped and taken as plain text: a value from a server or a
    ledger is neither rich markup (`[/]` would raise) nor a control sequence."""
    table.add_row(
        Text(escape(label)),
        Text(escape(count), style=style if count else ""),
        Text(escape(note), style=style if not count else ""),
    )


def _count_rows(summary: Summary) -> list[tuple[str, int | None, str]]:
    """The counts shown as rows, in order: label, count (None: not known), note."""
    s, history = summary, summary.history
    in_doubt = _ids(s.in_doubt_ids, s.in_doubt)
    if s.in_doubt_unreadable_response:
        in_doubt += f" ({s.in_doubt_unreadable_response:,} answered 2xx naming no valid new run)"
    duplicated = _ids(s.possibly_duplicated_ids, s.possibly_duplicated)
    return [
        ("succeeded", s.succeeded, ""),
        ("failed", s.failed, _pairs(s.failed_by_error)),
        ("rejected", s.rejected, ""),
        ("in doubt", s.in_doubt, in_doubt),
        ("unsettled", s.unsettled, _ids(s.unsettled_ids, s.unsettled) + _UNSETTLED),
        ("possibly duplicated", s.possibly_duplicated, duplicated),
        ("skipped, done before", s.skipped_done, ""),
        ("skipped, failed before", s.skipped_failed, ""),
        ("skipped, is a rerun", s.skipped_is_rerun, _IS_RERUN),
        ("duplicate lines", s.duplicates, ""),
        ("blank lines", s.blank_lines, ""),
        ("not sent", s.not_sent, ""),
        ("not read", s.unread_lines, _UNREAD),
        ("corrupt lines", None if history is None else history.corrupt_lines, _corrupt(history)),
        ("requests", s.requests, _pairs(s.requests_by_status)),
        ("retries", s.retries, ""),
        ("circuit opened", s.circuit_opened, ""),
    ]


_UNSETTLED: Final = " (mid-retry when the run stopped: the same command sends them again)"
_IS_RERUN: Final = "new runs of earlier reruns; --include-reruns sends them"
_UNREAD: Final = "input lines after where the run stopped"
# Counts shown even when 0; and those shown in red.
_ALWAYS: Final = ("succeeded", "failed")
_RED: Final = ("failed", "in doubt", "rejected", "corrupt lines")


def summary_table(summary: Summary, title: str) -> Table:
    """The end-of-run (or `report`) summary as a compact table for a terminal."""
    table = Table(
        title=Text(escape(title)), title_justify="left", box=box.SIMPLE, show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(overflow="fold")
    for label, count, note in _count_rows(summary):
        if count is None or (count == 0 and label not in _ALWAYS):
            continue
        _row(table, label, f"{count:,}", note, "red" if label in _RED else "")
    if summary.input_unread and summary.unread_lines is None:
        # stdin: how much was left is not known.
        _row(table, "not read", "?", _UNREAD)
    if summary.history is not None and summary.history.last_session_input_unread:
        _row(table, "not read", "?", "the last session stopped before the end of its input")
    _ending_rows(table, summary)
    return table


def _ending_rows(table: Table, summary: Summary) -> None:
    """What follows the counts: a dry run's sends, how new runs ended, timing, the rate
    budget, why the run stopped, what the ledger missed, and the next step."""
    if summary.would_send is not None:
        _row(table, "would send", f"{summary.would_send:,}", _estimate(summary))
    listed = _listed(summary)
    for outcome, count in (summary.finished_by_outcome or {}).items():
        bad = outcome in ("failed_again", "timed_out", "lost")
        ids = _ids(listed.get(outcome), count) if outcome != "completed" else ""
        label = "new runs " + outcome.replace("_", " ")
        _row(table, label, f"{count:,}", ids, "red" if bad else "")
    _row(
        table,
        "elapsed",
        f"{summary.elapsed_s:.1f}s",
        f"{summary.effective_rate_per_s:.1f} requests/s effective",
    )
    if (history := summary.history) is not None:
        _row(table, "sessions", note=str(history.sessions))
        if history.first_at is not None:  # a ledger written by hand may have no times
            _row(table, "first record", note=history.first_at)
            _row(table, "last record", note=str(history.last_at))
        if history.latency_ms:
            latency = ", ".join(f"{k} {v}" for k, v in history.latency_ms.items())
            _row(table, "latency ms", note=latency)
    if summary.budget is not None:
        _row(table, "rate budget", note=_budget(summary.budget))
    if summary.abort_detail:
        _row(table, "stopped", note=summary.abort_detail, style="red")
    if summary.ledger_error is not None and (missing := summary.unrecorded):
        # Every one: the ledger does not have them, so this is where the operator finds them.
        _row(table, "not in ledger", f"{missing:,}", _unrecorded(summary), style="red")
    _row(table, "ledger", note=summary.ledger)


def _listed(summary: Summary) -> dict[str, tuple[str, ...]]:
    """The ID lists by the name the summary's fields give them (`NAME_ids`), where a new
    run's outcome finds the IDs it names. A ledger's own word for an outcome may be the
    name of another list (`in_doubt`): that list is what its row has always shown."""
    listed = {"in_doubt": summary.in_doubt_ids, "unsettled": summary.unsettled_ids}
    if summary.history is None:
        listed["possibly_duplicated"] = summary.possibly_duplicated_ids
    return listed | dict(summary.finished_ids)


def _corrupt(history: LedgerHistory | None) -> str:
    """`lines 3, 9 … and 4 more`: where the lines that are no record are."""
    if history is None:
        return ""
    shown = _ids(history.corrupt_line_numbers, history.corrupt_lines)
    return f"lines {shown}, skipped" if shown else ""


def _estimate(summary: Summary) -> str:
    """A dry run's estimate: `about 2 h 47 min at 60/min to URL; nothing was sent`."""
    estimate = summary.estimate
    text = estimate_text(
        None if estimate is None else estimate.rounded_seconds,
        None if estimate is None else estimate.rounded_per_s,
        "the API" if summary.base_url is None else summary.base_url,
    )
    return f"{text}; dry run: nothing was sent"


def _unrecorded(summary: Summary) -> str:
    """`original → new` for each accepted rerun, `original (state)` for the others."""
    return ", ".join(
        [
            *(
                f"{original} → {new or '(unreadable answer)'}"
                for original, new in summary.unrecorded_mappings.items()
            ),
            *(f"{original} ({state})" for original, state in summary.unrecorded_outcomes.items()),
        ]
    )


def _budget(budget: BudgetReport) -> str:
    """How the token's rate budget went: shared at what rate, or this process's own."""
    per_s = budget.rounded_per_s
    if not budget.shared or per_s is None:
        return f"not used: no limit was known (store {budget.store})"
    return f"shared at {format_rate(per_s, digits=3)} ({budget.how}), {budget.store}"


def print_summary(summary: Summary, title: str, stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    console.print(summary_table(summary, title))
    # The next step, below the table on a line of its own that rich neither wraps nor
    # crops: a command folded in a table cell cannot be pasted back into a shell.
    if command := summary.resume_command:
        label = "run again:"
    elif command := summary.retry_command:
        label = "retry failed:"
    else:
        return
    console.print(Text(label, style="bold"))
    console.print(Text(escape(command), style="cyan"), soft_wrap=True)
