"""The `orchestrator` command: parse arguments, call a command, map its result to an exit code.

No business logic lives here; each subcommand is a module of `orchestrator.commands`.
Every error a user can cause ends in one line on stderr and exit 2; a bug ends in one
line too and exit 70, with the traceback (token scrubbed, on stderr) at --log-level debug.
A closed stdout ends a command with 141 and no message; a closed stderr stops nothing
(writes to it are dropped).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn

import structlog

from orchestrator import __version__
from orchestrator.errors import ConfigError, ExitCode
from orchestrator.escape import escape
from orchestrator.settings import environ, known_secrets
from orchestrator.ui.logs import configure_logging
from orchestrator.ui.streams import DropWhenGone, detach_stdout

PROG = "orchestrator"
# Imported only when named, so that `rerun` does not pay for the simulator's web server;
# in the order `--help` lists them, `completion` (which describes them all) after.
COMMANDS: Final = ("rerun", "select", "report", "config", "simulate")

EXAMPLES = """\
examples:
  # try it safely: a local stand-in of the API, then a rerun against it
  orchestrator simulate --rate 20/s &
  ALTOSTRAT_TOKEN=sim-token orchestrator rerun ids.txt --base-url http://127.0.0.1:8080

  # an incident: plan, rerun with the reviewed profile, then see how it went
  orchestrator rerun ids.txt --config configs/incident.toml --dry-run
  orchestrator rerun ids.txt --config configs/incident.toml
  orchestrator report rerun-ledger.jsonl

run `orchestrator COMMAND --help` for each command's flags and examples.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with one-line errors instead of a usage dump, no abbreviations (a script
    that says `--conc` would change meaning the day a `--concise` flag came), and an
    unknown flag told by the subcommand it was given to, with a did-you-mean."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            chosen = _chosen(self, parsed)
            chosen.error(
                f"unrecognized arguments: {' '.join(extras)}{_did_you_mean(chosen, extras)}"
            )
        return parsed


def _chosen(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that the arguments chose, deepest first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(getattr(parsed, action.dest, None) or "")
            if isinstance(sub, argparse.ArgumentParser):
                return _chosen(sub, parsed)
    return parser


def _did_you_mean(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    known = [o for action in parser._actions for o in action.option_strings]
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def _parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for this command line: the subcommand's alone when one comes first (the
    only flags before it are --help and --version), else every subcommand's (for --help,
    `completion`, or a name that is not a command, which argparse then lists)."""
    parser = _Parser(
        prog=PROG,
        description="Bulk reruns of Altostrat workflow runs: paced, retried, resumable.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = argv[0] if argv else None
    for name in (named,) if named in COMMANDS else COMMANDS:
        importlib.import_module(f"orchestrator.commands.{name}").add_parser(commands)
    if named not in COMMANDS:
        from orchestrator.commands import completion  # noqa: PLC0415 - shtab, when asked

        completion.add_parser(commands, parser)  # it describes the whole command line
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    stderr = sys.stderr
    sys.stderr = DropWhenGone(stderr)
    try:
        return _main(argv)
    finally:
        sys.stderr = stderr


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace | None = None
    try:
        given = list(sys.argv[1:] if argv is None else argv)
        args = _parser(given).parse_args(given)
        args.argv = given
        handler: Callable[[argparse.Namespace], int] = args.handler
        code = int(handler(args))
        sys.stdout.flush()  # a reader gone before the last lines is found here, not at exit
    except ConfigError as exc:
        # The message may quote what the user typed: one line, and no control characters.
        print(f"{PROG}: error: {escape(str(exc))}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    except BrokenPipeError:
        # The reader of our output went away (`report --ids failed | head`): stop quietly,
        # as `cat` would, and keep Python from complaining when it flushes stdout at exit.
        detach_stdout()
        return ExitCode.BROKEN_PIPE
    except Exception as exc:  # last line of defence: one line, never a traceback
        if isinstance(exc, ExceptionGroup) and exc.split(BrokenPipeError)[1] is None:
            detach_stdout()  # the same, raised inside a task group
            return ExitCode.BROKEN_PIPE
        return _internal_error(exc, args)
    return code


def _internal_error(exc: Exception, args: argparse.Namespace | None) -> int:
    """A bug: one line on stderr and EX_SOFTWARE; the traceback only at --log-level debug,
    on stderr too, through the command's logging (which scrubs the token out of it)."""
    if not structlog.is_configured():
        # The command failed before it set logging up: structlog's own default would print
        # the traceback with its local variables, on stdout.
        configure_logging(
            getattr(args, "log_level", "info"),
            getattr(args, "log_format", "auto"),
            secrets=known_secrets(environ(), getattr(args, "token_file", None)),
        )
    structlog.get_logger(PROG).debug("internal_error", exc_info=exc)
    print(
        f"{PROG}: internal error: {_innermost(exc).__name__} "
        "(run with --log-level debug for the traceback, and report it)",
        file=sys.stderr,
    )
    return ExitCode.SOFTWARE


def _innermost(exc: BaseException) -> type[BaseException]:
    """The type worth naming: a task group's lone error rather than its group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return type(exc)


if __name__ == "__main__":
    sys.exit(main())
