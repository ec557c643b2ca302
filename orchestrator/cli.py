"""The `orchestrator` command: parse arguments, call a command, map its result to an exit code.

No business logic lives here; each subcommand is a module of `orchestrator.commands`.
Every error a user can cause ends in one line on stderr and exit 2; a bug ends in one
line too, with the traceback (token scrubbed) at --log-level debug.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import structlog

from . import __version__
from .commands import rerun, select, simulate
from .report import ExitCode
from .settings import ConfigError

PROG = "orchestrator"


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Bulk reruns of Altostrat workflow runs: paced, retried, resumable.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (rerun, select, simulate):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return int(handler(args))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    except Exception as exc:  # last line of defence: one line, never a traceback
        structlog.get_logger(PROG).debug("internal_error", exc_info=exc)
        print(
            f"{PROG}: internal error: {type(exc).__name__} "
            "(run with --log-level debug for the traceback, and report it)",
            file=sys.stderr,
        )
        return ExitCode.INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
