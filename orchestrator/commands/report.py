"""`orchestrator report LEDGER`: what a ledger says, as a summary, a list of IDs or the
original → new run mapping. Streams the ledger; safe while a run is still writing it."""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import sys
from pathlib import Path
from typing import BinaryIO, Final, TextIO

from ..console import configure_logging, print_summary
from ..escape import csv_cell, escape
from ..idstore import IdState
from ..ledger import read_records
from ..report import ExitCode, LedgerReport
from ..settings import ConfigError, environ, known_secrets
from ._flags import add_log_arguments
from ._types import Subcommands

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
        choices=[*ID_STATES, "rejected"],
        help="print the run IDs in this state now, one per line (rejected: the input lines)",
    )
    what.add_argument("--mapping", action="store_true", help="print original -> new run ID pairs")
    what.add_argument("--json", action="store_true", help="the summary as JSON, even on a terminal")
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default="csv",
        help="format of --mapping (default csv)",
    )
    add_log_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    ledger: Path = args.ledger
    out = sys.stdout
    configure_logging(
        getattr(args, "log_level", "info"),
        getattr(args, "log_format", "auto"),
        secrets=known_secrets(environ()),
    )
    try:
        with ledger.open("rb") as stream:
            if args.mapping:
                _print_mapping(stream, args.format, out)
                return ExitCode.OK
            report = LedgerReport()
            report.feed_lines(stream)
            running = _is_locked(stream.fileno())
    except BrokenPipeError:
        raise  # the reader went away (`| head`): not a ledger problem
    except OSError as exc:
        raise ConfigError(f"cannot read ledger {ledger}: {exc.strerror or exc}") from None
    # A ledger's text is data: a control character in it is shown escaped, never obeyed.
    if args.ids == "rejected":
        out.writelines(f"{escape(line)}\n" for line in report.rejected.values())
        return ExitCode.OK
    if args.ids:
        out.writelines(f"{escape(run_id)}\n" for run_id in report.ids(ID_STATES[args.ids]))
        return ExitCode.OK
    fields = report.summary(str(ledger), running)
    if out.isatty() and not args.json:
        print_summary(fields, f"ledger {ledger}: {fields['outcome']}", out)
    else:
        out.write(json.dumps(fields) + "\n")
    return report.exit_code()


def _print_mapping(stream: BinaryIO, fmt: str, out: TextIO) -> None:
    """Each succeeded record's original and new run ID, as read: nothing is held. A CSV
    cell is escaped and kept from reading as a formula (it goes into spreadsheets)."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(["original_run_id", "new_run_id"])
    for _, record in read_records(stream):
        if record is None or record["event"] != "succeeded":
            continue
        original, new = record.get("original_run_id"), record.get("new_run_id")
        if writer is not None:
            writer.writerow([csv_cell(original), csv_cell(new)])
        else:
            out.write(json.dumps({"original_run_id": original, "new_run_id": new}) + "\n")


def _is_locked(fd: int) -> bool:
    """Whether an orchestrator process holds the ledger now (it takes an exclusive lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
