"""The settings flags, shared by `rerun` and `config show`, and reading them back.

Unset flags stay unset (argparse.SUPPRESS), so defaults live in one place, the settings
model, and `config show` can tell a flag from a default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from orchestrator.ledger.writer import FsyncPolicy
from orchestrator.settings import KEYS, Loaded, load_settings
from orchestrator.ui.logs import LEVELS

# settings field -> the flag that sets it, so validation errors name what the user typed
FLAGS: Final = {
    "source": "SOURCE",
    **{key: "--" + key.replace("_", "-") for key in KEYS if key != "source"},
}


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="read settings from this TOML file (flags and ORCHESTRATOR_* override it)",
    )


def add_log_arguments(group: argparse._ActionsContainer) -> None:
    """--log-level and --log-format, the same for every command that talks to the API."""
    S = argparse.SUPPRESS
    group.add_argument("--log-level", choices=LEVELS, default=S, help="default info")
    group.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=S,
        help="default auto: console on a terminal, else JSON",
    )


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Every settings key as a flag. Booleans take --no-… too, to undo a config file."""
    S = argparse.SUPPRESS
    add_config_argument(parser)
    add = parser.add_argument_group("sending").add_argument
    add("source", nargs="?", default=S, metavar="SOURCE", help="file of run IDs, or - for stdin")
    add("--ledger", type=Path, default=S, metavar="PATH", help="JSONL ledger (rerun-ledger.jsonl)")
    add(
        "--base-url",
        default=S,
        metavar="URL",
        help="API base URL (default $ALTOSTRAT_BASE_URL or https://v1.api.altostrat.io)",
    )
    add("--concurrency", type=int, default=S, metavar="N", help="requests in flight at most (8)")
    add("--rate", default=S, metavar="RATE", help="N/s, N/min, N/h or none (60/min)")
    add(
        "--rate-store",
        default=S,
        metavar="SPEC",
        help="share the token's rate budget: auto, DIR, redis://HOST:PORT/DB or none (auto)",
    )
    add("--max-attempts", type=int, default=S, metavar="N", help="attempts per ID in all (5)")
    add("--timeout", default=S, metavar="DURATION", help="per-request timeout: 30s, 2m... (30s)")
    flag = argparse.BooleanOptionalAction
    add("--retry-failed", action=flag, default=S, help="resend IDs the ledger says failed")
    add(
        "--retry-in-doubt",
        action=flag,
        default=S,
        help="resend IDs that may or may not have been accepted",
    )
    add(
        "--include-reruns",
        action=flag,
        default=S,
        help="send IDs the ledger names as new runs of earlier reruns (skipped as is_rerun)",
    )
    add("--dry-run", action=flag, default=S, help="validate and plan; send and write nothing")
    add(
        "-y",
        "--yes",
        action=flag,
        default=S,
        help="on a terminal, send without asking first (never asked without one)",
    )
    add(
        "--fsync",
        choices=[p.value for p in FsyncPolicy],
        default=S,
        help="ledger durability (batch)",
    )
    add(
        "--token-file",
        type=Path,
        default=S,
        metavar="PATH",
        help="read the API token from this file instead of $ALTOSTRAT_TOKEN",
    )
    waiting = parser.add_argument_group(
        "waiting",
        "follow each accepted rerun until its new run completes, fails or needs a person",
    )
    waiting.add_argument(
        "--wait",
        action=flag,
        default=S,
        help="poll every new run until it ends; exit 1 if one failed again or timed out",
    )
    waiting.add_argument(
        "--wait-timeout",
        default=S,
        metavar="DURATION",
        help="give up on a new run this long after its rerun was accepted (1h)",
    )
    waiting.add_argument(
        "--poll-interval",
        default=S,
        metavar="DURATION",
        help="first poll this long after acceptance, then ever longer apart (10s)",
    )
    budget = parser.add_argument_group(
        "error budget",
        "stop sending (exit 3) once this many IDs failed for good: a count N, or P% of the "
        "IDs settled so far (judged from 20 on); 429s never count",
    )
    for name, what in (
        ("--max-failures", "failures of any kind"),
        ("--max-client-failures", "4xx failures: the input is wrong"),
        ("--max-server-failures", "5xx, timeout and connection failures: the service is sick"),
    ):
        budget.add_argument(name, default=S, metavar="N|P%", help=what)
    budget.add_argument(
        "--circuit-threshold",
        type=int,
        default=S,
        metavar="N",
        help="faults in a row that pause all sending, with growing backoff and a probe "
        "before resuming (default 10; 0 turns it off)",
    )
    budget.add_argument(
        "--max-outage",
        default=S,
        metavar="DURATION",
        help="stop sending (exit 3) after this long with no HTTP answer or with the "
        "circuit open; what was not settled stays resendable (5m; none turns it off)",
    )
    output = parser.add_argument_group("output")
    add_log_arguments(output)
    add = output.add_argument
    add(
        "--progress",
        action=flag,
        default=S,
        help="live progress bar when stderr is a terminal (on)",
    )
    add(
        "--summary-json",
        type=Path,
        default=S,
        metavar="PATH",
        help="also write the summary here (- for stdout)",
    )
    add(
        "--metrics-file",
        type=Path,
        default=S,
        metavar="PATH",
        help="write Prometheus textfile metrics here at the end",
    )
    add(
        "--metrics-job",
        default=S,
        metavar="NAME",
        help="the job label of every metric (the ledger file's stem)",
    )


def settings_from(args: argparse.Namespace) -> Loaded:
    given = {k: v for k, v in vars(args).items() if k in KEYS}
    return load_settings(given, FLAGS, args.config)
