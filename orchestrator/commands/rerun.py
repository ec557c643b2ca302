"""`orchestrator rerun`: rerun every run ID read from a file or stdin."""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio
import structlog

from ..console import LEVELS, configure_logging
from ..engine import InputError, run_rerun
from ..ledger import FsyncPolicy, LedgerLocked
from ..report import ExitCode, StopReason, exit_code, summary
from ..settings import ConfigError, RerunSettings, build_settings, environ, load_token
from ._types import Subcommands

RERUN_EXAMPLES = """\
examples:
  # rerun every ID in a file, at the documented 60 requests/min
  ALTOSTRAT_TOKEN=... orchestrator rerun failed-ids.txt

  # see what would be sent, skipped and rejected, without sending anything
  orchestrator rerun failed-ids.txt --dry-run

  # resume after a crash; also resend IDs that failed last time
  orchestrator rerun failed-ids.txt --retry-failed

  # read IDs (or JSON run objects) from a pipe, against a local simulator
  cat ids.txt | orchestrator rerun - --base-url http://127.0.0.1:8080 --rate 10/s
"""

# settings field -> the flag that sets it, so validation errors name what the user typed
FLAGS = {
    "source": "SOURCE",
    "ledger": "--ledger",
    "base_url": "--base-url",
    "concurrency": "--concurrency",
    "rate": "--rate",
    "max_attempts": "--max-attempts",
    "timeout": "--timeout",
    "fsync": "--fsync",
    "max_failures": "--max-failures",
    "max_client_failures": "--max-client-failures",
    "max_server_failures": "--max-server-failures",
    "circuit_threshold": "--circuit-threshold",
    "wait_timeout": "--wait-timeout",
    "poll_interval": "--poll-interval",
}


def add_parser(commands: Subcommands) -> None:
    rerun = commands.add_parser(
        "rerun",
        help="rerun every run ID read from a file or stdin",
        description=(
            "Send POST /workflows/runs/{id}/rerun for every run ID in SOURCE, at most "
            "--concurrency at once and no faster than --rate, recording every step in a "
            "JSONL ledger so that a second run resumes and nothing is rerun twice. "
            "The token comes from ALTOSTRAT_TOKEN or --token-file."
        ),
        epilog=RERUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = rerun.add_argument
    S = argparse.SUPPRESS  # unset flags stay unset, so defaults live in one place: settings
    add(
        "source",
        nargs="?",
        default=S,
        metavar="SOURCE",
        help="file of run IDs, or - for stdin (default)",
    )
    add(
        "--ledger",
        type=Path,
        default=S,
        metavar="PATH",
        help="JSONL ledger (default rerun-ledger.jsonl)",
    )
    add(
        "--base-url",
        default=S,
        metavar="URL",
        help="API base URL (default $ALTOSTRAT_BASE_URL or https://v1.api.altostrat.io)",
    )
    add(
        "--concurrency",
        type=int,
        default=S,
        metavar="N",
        help="requests in flight at most (default 8)",
    )
    add("--rate", default=S, metavar="RATE", help="N/s, N/min, N/h or none (default 60/min)")
    add(
        "--max-attempts",
        type=int,
        default=S,
        metavar="N",
        help="attempts per ID in all (default 5)",
    )
    add(
        "--timeout",
        type=float,
        default=S,
        metavar="SECONDS",
        help="per-request timeout (default 30)",
    )
    add("--retry-failed", action="store_true", default=S, help="resend IDs the ledger says failed")
    add(
        "--retry-in-doubt",
        action="store_true",
        default=S,
        help="resend IDs that may or may not have been accepted",
    )
    add(
        "--dry-run",
        action="store_true",
        default=S,
        help="validate and plan; send and write nothing",
    )
    add(
        "--fsync",
        choices=[p.value for p in FsyncPolicy],
        default=S,
        help="ledger durability (default batch)",
    )
    waiting = rerun.add_argument_group(
        "waiting",
        "follow each accepted rerun until its new run completes, fails or needs a person",
    )
    waiting.add_argument(
        "--wait",
        action="store_true",
        default=S,
        help="poll every new run until it ends; exit 1 if one failed again or timed out",
    )
    waiting.add_argument(
        "--wait-timeout",
        default=S,
        metavar="DURATION",
        help="give up on a new run this long after its rerun was accepted (default 1h)",
    )
    waiting.add_argument(
        "--poll-interval",
        default=S,
        metavar="DURATION",
        help="first poll this long after acceptance, then ever longer apart (default 10s)",
    )
    budget = rerun.add_argument_group(
        "error budget",
        "stop sending (exit 3) once this many IDs failed for good: a count N, or P% of the "
        "IDs settled so far (judged from 20 on); 429s never count",
    )
    for flag, what in (
        ("--max-failures", "failures of any kind"),
        ("--max-client-failures", "4xx failures: the input is wrong"),
        ("--max-server-failures", "5xx, timeout and connection failures: the service is sick"),
    ):
        budget.add_argument(flag, default=S, metavar="N|P%", help=what)
    budget.add_argument(
        "--circuit-threshold",
        type=int,
        default=S,
        metavar="N",
        help="faults in a row that pause all sending, with growing backoff and a probe "
        "before resuming (default 10; 0 turns it off)",
    )
    add("--log-level", choices=LEVELS, default=S, help="default info")
    add(
        "--log-format",
        choices=("auto", "json", "console"),
        default=S,
        help="default auto: console on a terminal, else JSON",
    )
    add(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="read the API token from this file instead of $ALTOSTRAT_TOKEN",
    )
    rerun.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k in RerunSettings.model_fields}
    env = environ()
    settings = build_settings(given, env, FLAGS)
    token = None if settings.dry_run else load_token(env, args.token_file)
    configure_logging(settings.log_level, settings.log_format, secrets=[token] if token else [])
    log = structlog.get_logger("orchestrator")
    try:
        result = anyio.run(run_rerun, settings, token)
    except LedgerLocked:
        raise ConfigError(
            f"ledger {settings.ledger} is in use by another orchestrator process; "
            "wait for it to finish or use another --ledger"
        ) from None
    except InputError as exc:
        log.error("input.unreadable", source=settings.source, error=str(exc))  # noqa: TRY400
        return ExitCode.INCOMPLETE
    fields = summary(result)
    level = "error" if result.reason is StopReason.ABORTED else "info"
    getattr(log, level)("rerun.summary", **fields)
    return exit_code(result)
