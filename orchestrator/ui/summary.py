"""The summary table shown on a terminal at the end of a run or by `orchestrator report`.
Every cell of it from outside is escaped (see `escape`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.escape import escape
from orchestrator.outcome import estimate_text
from orchestrator.units import format_rate

# The summary keys `summary_table` shows as rows, with their labels, in order.
_ROWS: Final = (
    ("succeeded", "succeeded"),
    ("failed", "failed"),
    ("rejected", "rejected"),
    ("in_doubt", "in doubt"),
    ("unsettled", "unsettled"),
    ("possibly_duplicated", "possibly duplicated"),
    ("skipped_done", "skipped, done before"),
    ("skipped_failed", "skipped, failed before"),
    ("skipped_is_rerun", "skipped, is a rerun"),
    ("duplicates", "duplicate lines"),
    ("blank_lines", "blank lines"),
    ("not_sent", "not sent"),
    ("unread_lines", "not read"),
    ("corrupt_lines", "corrupt lines"),
    ("requests", "requests"),
    ("retries", "retries"),
    ("circuit_opened", "circuit opened"),
)


# IDs a table row names before "… and N more".
SHOWN_IDS: Final = 5


def _pairs(counts: object) -> str:
    if not isinstance(counts, dict) or not counts:
        return ""
    return ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in counts.items())


def _ids(ids: object, total: object) -> str:
    if not isinstance(ids, list) or not ids:
        return ""
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    more = int(total) - min(len(ids), SHOWN_IDS) if isinstance(total, int) else 0
    return shown + (f" … and {more:,} more" if more > 0 else "")


def _row(table: Table, label: str, count: str = "", note: str = "", style: str = "") -> None:
    """One row, every cell escaped and taken as plain text: a value from a server or a
    ledger is neither rich markup (`[/]` would raise) nor a control sequence."""
    table.add_row(
        Text(escape(label)),
        Text(escape(count), style=style if count else ""),
        Text(escape(note), style=style if not count else ""),
    )


def summary_table(fields: Mapping[str, object], title: str) -> Table:
    """The end-of-run (or `report`) summary as a compact table for a terminal."""
    table = Table(
        title=Text(escape(title)), title_justify="left", box=box.SIMPLE, show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(overflow="fold")
    notes: dict[str, str] = {
        "failed": _pairs(fields.get("failed_by_error")),
        "in_doubt": _ids(fields.get("in_doubt_ids"), fields.get("in_doubt"))
        + (
            f" ({fields['in_doubt_unreadable_response']:,} answered 2xx naming no valid new run)"
            if fields.get("in_doubt_unreadable_response")
            else ""
        ),
        "possibly_duplicated": _ids(
            fields.get("possibly_duplicated_ids"), fields.get("possibly_duplicated")
        ),
        "unsettled": _ids(fields.get("unsettled_ids"), fields.get("unsettled"))
        + " (mid-retry when the run stopped: the same command sends them again)",
        "unread_lines": "input lines after where the run stopped",
        "skipped_is_rerun": "new runs of earlier reruns; --include-reruns sends them",
        "corrupt_lines": _corrupt(fields.get("corrupt_line_numbers"), fields.get("corrupt_lines")),
        "requests": _pairs(fields.get("requests_by_status")),
    }
    for key, label in _ROWS:
        value = fields.get(key)
        if not isinstance(value, int) or (value == 0 and key not in ("succeeded", "failed")):
            continue
        style = "red" if key in ("failed", "in_doubt", "rejected", "corrupt_lines") else ""
        _row(table, label, f"{value:,}", notes.get(key, ""), style)
    if fields.get("input_unread") is True and not isinstance(fields.get("unread_lines"), int):
        # stdin: how much was left is not known.
        _row(table, "not read", "?", notes["unread_lines"])
    if fields.get("last_session_input_unread") is True:  # `report`
        _row(table, "not read", "?", "the last session stopped before the end of its input")
    _ending_rows(table, fields)
    return table


def _ending_rows(table: Table, fields: Mapping[str, object]) -> None:
    """What follows the counts: a dry run's sends, how new runs ended, timing, the rate
    budget, why the run stopped, what the ledger missed, and the next step."""
    if "would_send" in fields:
        _row(table, "would send", f"{fields['would_send']:,}", _estimate(fields))
    ended = fields.get("finished_by_outcome")
    if isinstance(ended, dict):
        for outcome, count in ended.items():
            bad = outcome in ("failed_again", "timed_out", "lost")
            ids = _ids(fields.get(f"{outcome}_ids"), count) if outcome != "completed" else ""
            label = "new runs " + str(outcome).replace("_", " ")
            _row(table, label, f"{count:,}", ids, "red" if bad else "")
    elapsed, rate = fields.get("elapsed_s"), fields.get("effective_rate_per_s")
    if isinstance(elapsed, int | float) and isinstance(rate, int | float):
        _row(table, "elapsed", f"{elapsed:.1f}s", f"{rate:.1f} requests/s effective")
    for key, label in (
        ("sessions", "sessions"),
        ("first_at", "first record"),
        ("last_at", "last record"),
        ("latency_ms", "latency ms"),
    ):
        if key in fields:
            value = fields[key]
            _row(table, label, note=_pairs(value) if isinstance(value, dict) else str(value))
    if "rate_store" in fields:
        _row(table, "rate budget", note=_budget(fields))
    if fields.get("abort_detail"):
        _row(table, "stopped", note=str(fields["abort_detail"]), style="red")
    if isinstance(missing := fields.get("unrecorded"), int) and missing:
        # Every one: the ledger does not have them, so this is where the operator finds them.
        _row(table, "not in ledger", f"{missing:,}", _unrecorded(fields), style="red")
    _row(table, "ledger", note=str(fields.get("ledger", "")))


def _corrupt(numbers: object, total: object) -> str:
    """`lines 3, 9 … and 4 more`: where the lines that are no record are."""
    shown = _ids(numbers, total)
    return f"lines {shown}, skipped" if shown else ""


def _estimate(fields: Mapping[str, object]) -> str:
    """A dry run's estimate: `about 2 h 47 min at 60/min to URL; nothing was sent`."""
    seconds, per_s = fields.get("estimated_duration_s"), fields.get("estimate_rate_per_s")
    base_url = str(fields.get("base_url", "the API"))
    text = estimate_text(
        seconds if isinstance(seconds, int | float) else None,
        per_s if isinstance(per_s, int | float) else None,
        base_url,
    )
    return f"{text}; dry run: nothing was sent"


def _unrecorded(fields: Mapping[str, object]) -> str:
    """`original → new` for each accepted rerun, `original (state)` for the others."""
    mappings, outcomes = fields.get("unrecorded_mappings"), fields.get("unrecorded_outcomes")
    parts = []
    if isinstance(mappings, dict):
        parts += [
            f"{original} → {new or '(unreadable answer)'}" for original, new in mappings.items()
        ]
    if isinstance(outcomes, dict):
        parts += [f"{original} ({state})" for original, state in outcomes.items()]
    return ", ".join(parts)


def _budget(fields: Mapping[str, object]) -> str:
    """How the token's rate budget went: shared at what rate, or this process's own."""
    store = fields["rate_store"]
    per_s = fields.get("rate_budget_per_s")
    if fields.get("rate_budget_shared") is not True or not isinstance(per_s, int | float):
        return f"not used: no limit was known (store {store})"
    return f"shared at {format_rate(per_s, digits=3)} ({fields.get('rate_budget_source')}), {store}"


def print_summary(fields: Mapping[str, object], title: str, stream: TextIO) -> None:
    console = Console(file=stream, highlight=False, soft_wrap=False)
    console.print(summary_table(fields, title))
    # The next step, below the table on a line of its own that rich neither wraps nor
    # crops: a command folded in a table cell cannot be pasted back into a shell.
    if command := fields.get("resume_command"):
        label = "run again:"
    elif command := fields.get("retry_command"):
        label = "retry failed:"
    else:
        return
    console.print(Text(label, style="bold"))
    console.print(Text(escape(str(command)), style="cyan"), soft_wrap=True)
