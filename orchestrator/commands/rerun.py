"""`orchestrator rerun`: rerun every run ID read from a file or stdin."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, cast

import anyio
import structlog
from rich.console import Console

from orchestrator.commands._flags import FLAGS, add_settings_arguments, settings_from
from orchestrator.commands._paths import ledger_problem, output_problem
from orchestrator.commands._types import Subcommands
from orchestrator.errors import ConfigError, ExitCode, InputError, LedgerLocked
from orchestrator.outcome import (
    RunResult,
    StopReason,
    Summary,
    estimate_text,
    exit_code,
    rate_text,
    summary,
)
from orchestrator.rerun.plan import Plan
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.session import run_rerun
from orchestrator.settings import (
    Loaded,
    RerunSettings,
    environ,
    known_secrets,
    load_token,
    warn_if_short,
)
from orchestrator.ui.logs import configure_logging, resolve_format
from orchestrator.ui.metrics import STDOUT, write_metrics, write_summary_json
from orchestrator.ui.progress import LinesAbove, count_lines, live_progress
from orchestrator.ui.streams import detach_stdout
from orchestrator.ui.summary import print_summary

__all__ = ["FLAGS", "add_parser", "run"]

RERUN_EXAMPLES = """\
examples:
  # rerun every ID in a file, at the documented 60 requests/min
  ALTOSTRAT_TOKEN=... orchestrator rerun failed-ids.txt

  # see what would be sent, skipped and rejected, without sending anything
  orchestrator rerun failed-ids.txt --dry-run

  # an incident: the reviewed profile, then resend what failed last time
  orchestrator rerun failed-ids.txt --config configs/incident.toml
  orchestrator report rerun-ledger.jsonl --ids failed | orchestrator rerun - --retry-failed

  # read IDs (or JSON run objects) from a pipe, against a local simulator
  cat ids.txt | orchestrator rerun - --base-url http://127.0.0.1:8080 --rate 10/s
"""


def add_parser(commands: Subcommands) -> None:
    rerun = commands.add_parser(
        "rerun",
        help="rerun every run ID read from a file or stdin",
        description=(
            "Send POST /workflows/runs/{id}/rerun for every run ID in SOURCE, at most "
            "--concurrency at once and no faster than --rate, recording every step in a "
            "JSONL ledger so that a second run resumes and nothing is rerun twice. "
            "The token comes from ALTOSTRAT_TOKEN or --token-file. Every flag below is "
            "also a key of a --config file and an ORCHESTRATOR_<KEY> variable "
            "(flags win, then variables, then the file); defaults in parentheses."
        ),
        epilog=RERUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(rerun)
    rerun.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = settings_from(args)
    settings = loaded.settings
    # Logging first (the token is scrubbed once it is read), so that anything said before
    # the run starts, a bug's traceback included, goes where and as the user asked.
    configure_logging(settings.log_level, settings.log_format)
    loaded.warn()
    try:
        # The words the command was given, for the "run the same command again" hint.
        argv: list[str] = getattr(args, "argv", None) or sys.argv[1:]
        return _run(loaded, settings, argv)
    except ConfigError:
        _say_it_failed(loaded, ExitCode.USAGE, "usage_error")
        raise
    except Exception as exc:
        # A bug (exit 70, said by the entry point).
        _say_it_failed(loaded, ExitCode.SOFTWARE, "internal_error", type(exc).__name__)
        raise


def _say_it_failed(loaded: Loaded, code: ExitCode, outcome: str, error: str | None = None) -> None:
    """A run that ends before its summary still writes its metrics and summary files, so
    that cron alerting never reads the last run's success instead. (A path that is itself
    the problem is left alone.)"""
    settings = loaded.settings
    if settings.metrics_file is not None and output_problem(settings.metrics_file) is None:
        _write_metrics(settings, None, code)
    path = settings.summary_json
    if path is None or path == STDOUT or output_problem(path) is not None:
        return
    if settings.dry_run and not _dry_run_summary(loaded):
        return
    fields: dict[str, object] = {"outcome": outcome, "exit_code": int(code)}
    if error is not None:
        fields["error"] = error
    _write_or_log("summary_json", path, lambda: write_summary_json(path, fields))


def _run(loaded: Loaded, settings: RerunSettings, argv: list[str]) -> int:
    _check_paths(loaded)
    token = None if settings.dry_run else load_token(environ(), settings.token_file)
    # A dry run needs no token; one that is set finds the limit learned for it.
    dry_token = None
    if settings.dry_run:
        dry_token = next(iter(known_secrets(environ(), settings.token_file)), None)
    stderr = sys.stderr
    show_progress = settings.progress and not settings.dry_run and stderr.isatty()
    console = Console(file=stderr) if show_progress else None
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=[t for t in (token, dry_token) if t],
        stream=cast(TextIO, LinesAbove(console, stderr)) if console else stderr,
    )
    log = structlog.get_logger("orchestrator")
    warn_if_short(token)
    if settings.source == "-" and sys.stdin.isatty():
        # Not an error (IDs may be pasted), but a run that seems to hang is worse.
        log.warning(
            "input.from_terminal",
            detail="reading run IDs from the terminal: end with Ctrl-D, or give a file",
        )
    plumbing = _plumbing(settings, console, dry_token)
    try:
        result = anyio.run(run_rerun, settings, token, plumbing)
    except LedgerLocked as exc:
        by = f" (PID {exc.holder})" if exc.holder is not None else ""
        raise ConfigError(
            f"ledger {settings.ledger} is in use by another orchestrator process{by}; "
            "wait for it to finish or use another --ledger"
        ) from None
    except InputError as exc:
        log.error("input.unreadable", source=settings.source, error=str(exc))  # noqa: TRY400
        written = _write_metrics(settings, None, ExitCode.INCOMPLETE)
        return with_outputs(ExitCode.INCOMPLETE, written=written)
    if result.reason is StopReason.OUTPUT_CLOSED:
        detach_stdout()  # the reader of the dry run's plan has seen enough (`| head`)
        return ExitCode.BROKEN_PIPE
    if result.reason is StopReason.DECLINED:
        # Nothing happened: no summary, and no summary or metrics file to overwrite.
        print("orchestrator: not sent: declined at the prompt", file=stderr)
        return exit_code(result)
    if not result.input_done and settings.source != "-":
        result = dataclasses.replace(
            result, unread_lines=_unread_lines(settings.source, result.tally.lines)
        )
    code = exit_code(result)
    run_summary = with_next_step(summary(result), result, loaded, argv)
    fields = run_summary.as_fields()
    if resolve_format(settings.log_format, stderr) == "console":
        title = "dry run" if settings.dry_run else f"rerun {result.reason.value}"
        print_summary(run_summary, f"{title}: exit {int(code)}", stderr)
    else:
        level = "info" if result.reason is StopReason.COMPLETED else "error"
        getattr(log, level)("rerun.summary", **fields)
    if settings.dry_run and not _dry_run_summary(loaded):
        return code  # a rehearsal leaves the files a scheduled job owns alone
    if (path := settings.summary_json) is not None:
        written = _write_or_log("summary_json", path, lambda: write_summary_json(path, fields))
        code = with_outputs(code, written=written)  # so the metrics say the summary was lost
    written = _write_metrics(settings, run_summary, code)
    if result.ledger_error is not None:
        print(
            ledger_error_line(str(settings.ledger), result.ledger_error, run_summary), file=stderr
        )
    return with_outputs(code, written=written)


def with_outputs(code: ExitCode, *, written: bool) -> ExitCode:
    """The exit code once the output files are written, or not: an output lost turns a
    run that would have exited 0 or 1 into 73 (sysexits' EX_CANTCREAT), so that cron sees
    its monitoring went stale; a graver code (2, 3, 70, 74, a signal's) is kept."""
    if not written and code in (ExitCode.OK, ExitCode.INCOMPLETE):
        return ExitCode.CANTCREAT
    return code


def _plumbing(settings: RerunSettings, console: Console | None, dry_token: str | None) -> Plumbing:
    """The real clock and streams, with the prompt and the progress bar where they apply."""
    plumbing = dataclasses.replace(Plumbing.default(), token=dry_token)
    if _should_ask(settings, sys.stdin, sys.stderr):
        plumbing = dataclasses.replace(
            plumbing, confirm=functools.partial(confirm, sys.stdin, sys.stderr)
        )
    if console is not None:
        total = _count_lines(settings.source)
        plumbing = dataclasses.replace(
            plumbing, monitor=functools.partial(live_progress, console, total)
        )
    return plumbing


def _should_ask(settings: RerunSettings, stdin: TextIO, stderr: TextIO) -> bool:
    """Ask before sending only a person at a terminal: never with --yes, on a dry run,
    with stdin or stderr not a terminal (cron, pipes: nothing may wait for an answer), or
    with SOURCE `-`, where stdin is the IDs, not the answer."""
    if settings.yes or settings.dry_run or settings.source == "-":
        return False
    return _isatty(stdin) and _isatty(stderr)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed, or no real file behind it
        return False


def plan_text(plan: Plan) -> str:
    """What a real run is about to do, as the prompt shows it."""
    count = (
        f"{plan.count:,} IDs from {plan.source}"
        if plan.count is not None
        else f"the IDs in {plan.source} (too many to count ahead)"
    )
    estimate = plan.estimate
    seconds = None if estimate is None else estimate.seconds
    if plan.per_s is None:
        pace = f"to {plan.base_url}, with no rate limit (--rate none, none learned)"
    elif seconds is None:
        pace = f"at {rate_text(plan.per_s)} to {plan.base_url}"
    else:
        pace = estimate_text(seconds, plan.per_s, plan.base_url)
    return f"about to rerun {count}: {pace}"


def confirm(stdin: TextIO, stderr: TextIO, plan: Plan) -> bool:
    """Show the plan and ask to go on; only `y` or `yes` goes on (EOF is no)."""
    stderr.write(f"{plan_text(plan)}\ngo on? [y/N] ")
    stderr.flush()
    answer = stdin.readline()
    if not answer:
        stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def ledger_error_line(ledger: str, error: str, run_summary: Summary) -> str:
    """The one line a run whose ledger failed ends with (exit 74), after its summary."""
    kept = (
        f"{run_summary.unrecorded} outcomes it could not record are listed in the summary"
        if run_summary.unrecorded
        else "no outcome is missing from it"
    )
    return f"orchestrator: error: cannot write ledger {ledger}: {error}; the run stopped, {kept}"


def retry_command(loaded: Loaded) -> str:
    """The command line that resends what failed: `report --ids failed` fed back in."""
    settings = loaded.settings
    ledger = shlex.quote(str(settings.ledger))
    args = ["orchestrator", "rerun", "-", "--ledger", ledger, "--retry-failed"]
    if loaded.config is not None:
        args += ["--config", shlex.quote(str(loaded.config))]
    if loaded.origins["base_url"].startswith("flag"):
        args += ["--base-url", shlex.quote(settings.base_url)]
    return f"orchestrator report {ledger} --ids failed | " + " ".join(args)


def with_next_step(
    run_summary: Summary, result: RunResult, loaded: Loaded, argv: list[str]
) -> Summary:
    """The summary with the hint it ends with: `resume_command` while the same command has
    work left (mid-retry IDs, IDs read but not sent, lines not read), for that sends it and
    `--retry-failed` would not; else `retry_command` when some ID failed."""
    tally, settings = result.tally, loaded.settings
    if not settings.dry_run and (tally.unsettled or tally.not_sent or not result.input_done):
        command = resume_command(argv, stdin=settings.source == "-")
        return dataclasses.replace(run_summary, resume_command=command)
    if tally.failed_total or tally.skipped_failed:
        return dataclasses.replace(run_summary, retry_command=retry_command(loaded))
    return run_summary


def resume_command(argv: list[str], *, stdin: bool) -> str:
    """The command as it was given, on one line: run again, it sends what this run left
    (mid-retry IDs, lines not read) and skips what is done. Fed from stdin, it needs the
    same input again, which only the operator knows."""
    command = shlex.join(["orchestrator", *argv])
    return f"<the same input> | {command}" if stdin else command


def _unread_lines(source: str, read: int) -> int | None:
    """Lines of the input file after the last one read, counted as the engine counts; None
    unless it is a regular file (a pipe, as `<(select …)` gives, cannot be read again)."""
    try:
        if not Path(source).is_file():
            return None
        return max(0, count_lines(source) - read)
    except OSError:
        return None


def _dry_run_summary(loaded: Loaded) -> bool:
    """A dry run writes its summary (the plan's count, estimate and base URL) only to a
    --summary-json given on its own command line: one from a config file or the
    environment is a scheduled job's, which a rehearsal must not overwrite. It never
    writes the metrics file."""
    return loaded.settings.summary_json is not None and loaded.origins["summary_json"].startswith(
        "flag"
    )


def _check_paths(loaded: Loaded) -> None:
    """Fail before sending anything if the ledger is unusable, or an output file could not
    be written at the end."""
    settings = loaded.settings
    write = not settings.dry_run
    if settings.dry_run and settings.summary_json == STDOUT and _dry_run_summary(loaded):
        raise ConfigError(
            loaded.invalid("summary_json", "a dry run prints its plan on stdout", "-")
        )
    found = [("ledger", settings.ledger, ledger_problem(settings.ledger, write=write))]
    for key in ("summary_json", "metrics_file"):
        if (path := getattr(settings, key)) is not None and path != STDOUT:
            found.append((key, path, output_problem(path)))
    for key, path, problem in found:
        if problem is not None:
            raise ConfigError(loaded.invalid(key, problem, path))


def _count_lines(source: str) -> int | None:
    """The total for the progress bar: known up front for a file, counted as read for stdin."""
    if source == "-":
        return None
    try:
        return count_lines(source)
    except OSError:
        return None  # the engine reports an unreadable source


def _write_metrics(settings: RerunSettings, run_summary: Summary | None, code: int) -> bool:
    """Write the metrics file, if one is asked for; False when that failed."""
    path = settings.metrics_file
    if path is None or settings.dry_run:
        return True
    job = settings.job
    return _write_or_log(
        "metrics", path, lambda: write_metrics(path, run_summary, int(code), time.time(), job)
    )


def _write_or_log(what: str, path: Path, write: Callable[[], None]) -> bool:
    """Write an output file; failing to is logged as an error, and gives False."""
    try:
        write()
    except OSError as exc:
        if path == STDOUT:
            detach_stdout()  # stdout is gone (its reader exited): exiting must not fail on it
        structlog.get_logger("orchestrator").error(
            f"{what}.unwritable", path=str(path), error=exc.strerror or str(exc)
        )
        return False
    return True
