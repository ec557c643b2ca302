"""`orchestrator select`: print the runs of workflows that match a status and a time window."""

from __future__ import annotations

import argparse
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import structlog

from orchestrator.commands._flags import add_config_argument, add_log_arguments
from orchestrator.commands._types import Subcommands
from orchestrator.errors import ConfigError
from orchestrator.pacing.clock import RealClock
from orchestrator.select.session import (
    SelectOutcome,
    SelectPlumbing,
    SelectSettings,
    exit_code,
    run_select,
    summary,
)
from orchestrator.select.walk import STATUSES, Criteria, parse_time, workflow_problem
from orchestrator.settings import environ, load_settings, load_token, warn_if_short
from orchestrator.ui.logs import configure_logging
from orchestrator.ui.streams import detach_stdout

SELECT_EXAMPLES = """\
examples:
  # the failed runs of one workflow in the last hour, one ID a line
  ALTOSTRAT_TOKEN=... orchestrator select --workflow fl_abc --status failed --since 1h

  # ... and rerun them; the rate limit is per token, so give each command a share of it
  orchestrator select --workflow fl_abc --status failed --since 1h --rate 20/min \\
    | orchestrator rerun - --rate 40/min

  # the failed runs of every workflow of the token in the last hour
  orchestrator select --all-workflows --status failed --since 1h

  # a fixed window, as JSON run objects
  orchestrator select --workflow fl_abc --since 2026-03-02T09:10:00Z \\
    --until 2026-03-02T09:40:00Z --json
"""

# settings field -> the flag that sets it, so validation errors name what the user typed
FLAGS = {
    "base_url": "--base-url",
    "rate": "--rate",
    "rate_store": "--rate-store",
    "max_attempts": "--max-attempts",
    "timeout": "--timeout",
}
# Flags with the same meaning and defaults as rerun's, validated by the same settings.
_SHARED = (*FLAGS, "log_level", "log_format")


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "select",
        help="print the runs of workflows that match a status and a time window",
        description=(
            "Page through GET /workflows/{id}/executions for each --workflow (or each "
            "workflow GET /workflows lists, with --all-workflows) and print the runs that "
            "match --status, --since and --until: one run ID a line, or one JSON run object "
            "a line with --json. `orchestrator rerun -` reads either. "
            "The token comes from ALTOSTRAT_TOKEN or --token-file."
        ),
        epilog=SELECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add_config_argument(parser)
    S = argparse.SUPPRESS  # unset shared flags stay unset: their defaults live in settings
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--workflow",
        action="append",
        metavar="ID",
        help="a workflow ID (fl_...); repeat for several",
    )
    which.add_argument(
        "--all-workflows",
        action="store_true",
        help="every workflow of the token, as GET /workflows lists them",
    )
    add(
        "--status",
        action="append",
        choices=STATUSES,
        metavar="STATUS",
        help=f"only runs in this status; repeat for several ({', '.join(STATUSES)})",
    )
    add(
        "--since",
        metavar="T",
        help="only runs from T on: RFC 3339 (2026-03-02T09:10:00Z) or a span back (30m, 2h, 1d)",
    )
    add("--until", metavar="T", help="only runs before T (same forms as --since)")
    add("--limit", type=int, metavar="N", help="print at most N runs in all")
    add(
        "--json",
        dest="as_json",
        action="store_true",
        help="print each run as the JSON object the API gave, one a line",
    )
    add(
        "--base-url",
        default=S,
        metavar="URL",
        help="API base URL (default $ALTOSTRAT_BASE_URL or https://v1.api.altostrat.io)",
    )
    add("--rate", default=S, metavar="RATE", help="N/s, N/min, N/h or none (default 60/min)")
    add(
        "--rate-store",
        default=S,
        metavar="SPEC",
        help="share the token's rate budget: auto, DIR, redis://HOST:PORT/DB or none (auto)",
    )
    add(
        "--max-attempts",
        type=int,
        default=S,
        metavar="N",
        help="attempts per page in all (default 5)",
    )
    add(
        "--timeout",
        default=S,
        metavar="DURATION",
        help="per-request timeout: 30s, 2m, or seconds (default 30s)",
    )
    add_log_arguments(parser)
    add(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="read the API token from this file instead of $ALTOSTRAT_TOKEN",
    )
    parser.set_defaults(handler=run)


def _workflows(given: list[str]) -> tuple[str, ...]:
    for workflow_id in given:
        if (problem := workflow_problem(workflow_id)) is not None:
            raise ConfigError(f"invalid --workflow {workflow_id[:140]!r}: it {problem}")
    return tuple(dict.fromkeys(given))  # each once, in the order given


def _criteria(args: argparse.Namespace, now: datetime) -> Criteria:
    bounds: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        text: str | None = getattr(args, name)
        try:
            bounds[name] = None if text is None else parse_time(text, now)
        except ValueError as exc:
            raise ConfigError(f"invalid --{name}: {exc}") from None
    try:
        return Criteria(frozenset(args.status or ()), bounds["since"], bounds["until"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    env = environ()
    given = {k: v for k, v in vars(args).items() if k in _SHARED}
    loaded = load_settings(given, FLAGS, args.config)
    shared = loaded.settings
    if args.limit is not None and args.limit < 1:
        raise ConfigError("invalid --limit: must be at least 1")
    settings = SelectSettings(
        workflows=() if args.all_workflows else _workflows(args.workflow),
        all_workflows=args.all_workflows,
        criteria=_criteria(args, datetime.now(UTC)),
        limit=args.limit,
        as_json=args.as_json,
        base_url=shared.base_url,
        rate=shared.rate,
        rate_store=shared.store_spec,
        max_attempts=shared.max_attempts,
        timeout=shared.timeout,
    )
    token = load_token(env, args.token_file or shared.token_file)
    configure_logging(shared.log_level, shared.log_format, secrets=[token])
    loaded.warn()
    warn_if_short(token)
    plumbing = SelectPlumbing(clock=RealClock(), rng=random.Random(), stdout=sys.stdout)
    result = anyio.run(run_select, settings, token, plumbing)
    if result.outcome is SelectOutcome.OUTPUT_CLOSED:
        detach_stdout()
    level = "error" if result.outcome is SelectOutcome.ABORTED else "info"
    getattr(structlog.get_logger("orchestrator"), level)("select.summary", **summary(result))
    return exit_code(result)
