"""`orchestrator report LEDGER`: what a ledger says, as a summary, a list of IDs or the
original → new run mapping. Streams the ledger; safe while a run is still writing it."""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from orchestrator.commands._flags import add_log_arguments
from orchestrator.commands._types import Subcommands
from orchestrator.errors import ConfigError, ExitCode
from orchestrator.escape import csv_cell, escape
from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.records import read_records
from orchestrator.ledger.report import LedgerReport
from orchestrator.settings import environ, known_secrets
from orchestrator.ui.logs import configure_logging
from orchestrator.ui.summary import print_summary

REPORT_EXAMPLES = """\
examples:
  # how did it go? (a table on a terminal, one JSON object when piped)
  orchestrator report rerun-ledger.jsonl

  # resend what failed: the failed IDs fed straight back into rerun
  orchestrator report rerun-ledger.jsonl --ids failed | orchestrator rerun - --retry-failed

  # the original -> new run IDs, for the incident ticket
  orchestrator report rerun-ledger.jsonl --mapping --format csv > mapping.csv
"""

ID_STATES: Final = {
    "succeeded": IdState.SUCCEEDED,
    "failed": IdState.FAILED,
    "in-doubt": IdState.IN_DOUBT,
    # Mid-retry when a run stopped (or refused with 401/403): the same command resends them.
    "unsettled": IdState.RESENDABLE,
}
# Lists that are no state of an ID: rejected input lines, and IDs skipped as new runs.
OTHER_LISTS: Final = ("rejected", "is-rerun")

# Which --format each output takes; the first is its default (the summary's: a table on a
# terminal, JSON otherwise).
FORMATS: Final = {
    "summary": ("table", "json"),
    "--ids": ("text", "csv", "jsonl"),
    "--mapping": ("csv", "jsonl"),
}


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "report",
        help="summarise a ledger, list its IDs by outcome, or print the run ID mapping",
        description=(
            "Read a rerun ledger (streamed, any size, also while a run is writing it) and "
            "show the summary a run ends with, plus timing. Exit 0 when every ID in it "
            "succeeded, 1 when some failed, were rejected or are in doubt."
        ),
        epilog=REPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ledger", type=Path, metavar="LEDGER", help="a JSONL ledger")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--ids",
        choices=[*ID_STATES, *OTHER_LISTS],
        help="print the run IDs in this state now, one per line (rejected: the input lines; "
        "is-rerun: IDs skipped as new runs of earlier reruns)",
    )
    what.add_argument("--mapping", action="store_true", help="print original -> new run ID pairs")
    what.add_argument("--json", action="store_true", help="the summary as JSON (--format json)")
    parser.add_argument(
        "--format",
        choices=sorted({f for formats in FORMATS.values() for f in formats}),
        help="the summary: table or json (default: table on a terminal, else json); "
        "--ids: text, csv or jsonl (default text); --mapping: csv or jsonl (default csv)",
    )
    add_log_arguments(parser)
    parser.set_defaults(handler=run)


def chosen_format(output: str, given: str | None, json_flag: bool = False) -> str:
    """The format `output` is printed in, or ConfigError when `given` does not apply to it."""
    allowed = FORMATS[output]
    if json_flag:
        if given not in (None, "json"):
            raise ConfigError(f"--json and --format {given} contradict each other")
        given = "json"
    if given is None:
        return allowed[0]
    if given not in allowed:
        raise ConfigError(
            f"--format {given} does not apply to {_OUTPUT_NAMES[output]}; "
            f"use {' or '.join(allowed)}"
        )
    return given


_OUTPUT_NAMES: Final = {
    "summary": "the summary",
    "--ids": "--ids",
    "--mapping": "--mapping",
}


def not_a_ledger(ledger: Path, corrupt: int) -> ConfigError:
    """A file with lines but not one record: the wrong file, most likely (a list of IDs)."""
    lines = (
        "1 line, not a ledger record"
        if corrupt == 1
        else f"{corrupt:,} lines, none a ledger record"
    )
    return ConfigError(f"{ledger} is not a ledger: {lines} (give the --ledger file a rerun wrote)")


def run(args: argparse.Namespace) -> int:
    ledger: Path = args.ledger
    out = sys.stdout
    configure_logging(
        getattr(args, "log_level", "info"),
        getattr(args, "log_format", "auto"),
        secrets=known_secrets(environ()),
    )
    output = "--mapping" if args.mapping else "--ids" if args.ids else "summary"
    fmt = chosen_format(output, args.format, args.json)
    try:
        with ledger.open("rb") as stream:
            if args.mapping:
                _print_mapping(stream, fmt, out, ledger)
                return ExitCode.OK
            report = LedgerReport()
            report.feed_lines(stream)
            running = _is_locked(stream.fileno())
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not a ledger problem
    except OSError as exc:
        raise ConfigError(f"cannot read ledger {ledger}: {exc.strerror or exc}") from None
    if report.state.records == 0 and report.state.corrupt_lines:
        raise not_a_ledger(ledger, report.state.corrupt_lines)
    if args.ids:
        _print_ids(report, args.ids, fmt, out)
        return ExitCode.OK
    summary = report.summary(str(ledger), running)
    if fmt == "table" and (args.format == "table" or out.isatty()):
        print_summary(summary, f"ledger {ledger}: {summary.outcome}", out)
    else:
        out.write(json.dumps(summary.as_fields()) + "\n")
    return report.exit_code()


def _print_ids(report: LedgerReport, which: str, fmt: str, out: TextIO) -> None:
    """The IDs of one list (or the rejected lines) as text, CSV or JSON lines. Text and CSV
    show a control character escaped, never obeyed; JSON is exact."""
    rows: Iterable[dict[str, object]]
    if which == "rejected":
        rows = ({"line": line, "input": text} for (line, _), text in report.rejected.items())
    elif which == "is-rerun":
        rows = ({"run_id": run_id} for run_id in report.is_rerun_skips())
    else:
        rows = ({"run_id": run_id} for run_id in report.ids(ID_STATES[which]))
    columns = ["line", "input"] if which == "rejected" else ["run_id"]
    if fmt == "jsonl":
        out.writelines(json.dumps(row) + "\n" for row in rows)
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([csv_cell(row[c]) for c in columns] for row in rows)
    else:
        out.writelines(f"{escape(str(row[columns[-1]]))}\n" for row in rows)


def _print_mapping(stream: BinaryIO, fmt: str, out: TextIO, ledger: Path) -> None:
    """Each succeeded record's original and new run ID, as read: nothing is held. A CSV
    cell is escaped and kept from reading as a formula (it goes into spreadsheets). The
    header waits for the first record, so the wrong file prints nothing before its error."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    records = corrupt = 0
    for _, record in read_records(stream):
        if record is None:
            corrupt += 1
            continue
        records += 1
        if records == 1 and writer is not None:
            writer.writerow(["original_run_id", "new_run_id"])
        if record["event"] != "succeeded":
            continue
        original, new = record.get("original_run_id"), record.get("new_run_id")
        if writer is not None:
            writer.writerow([csv_cell(original), csv_cell(new)])
        else:
            out.write(json.dumps({"original_run_id": original, "new_run_id": new}) + "\n")
    if not records:
        if corrupt:
            raise not_a_ledger(ledger, corrupt)
        if writer is not None:  # an empty ledger: an empty mapping, with its header
            writer.writerow(["original_run_id", "new_run_id"])


def _is_locked(fd: int) -> bool:
    """Whether an orchestrator process holds the ledger now (it takes an exclusive lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
