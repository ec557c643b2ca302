"""`orchestrator completion bash|zsh`: a shell completion script, made from the parser.

shtab reads the argparse tree itself, so the script knows every subcommand, flag and
choice as they are, with nothing to keep in step by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import shtab

SHELLS: Final = ("bash", "zsh")
# Arguments that name a file, by the metavar they show (the rest carry type=Path).
_FILE_METAVARS: Final = frozenset({"PATH", "SOURCE", "LEDGER"})

COMPLETION_EXAMPLES = """\
examples:
  # bash: for this shell, then for every new one
  source <(orchestrator completion bash)
  orchestrator completion bash > ~/.local/share/bash-completion/completions/orchestrator

  # zsh: a file named _orchestrator in a directory of $fpath, then a new shell
  orchestrator completion zsh > "${fpath[1]}/_orchestrator"
"""


def add_parser(commands: argparse._SubParsersAction[Any], root: argparse.ArgumentParser) -> None:
    """`completion`, which describes `root`: the whole command line."""
    parser = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for SHELL on stdout: subcommands, flags and "
        "their choices, and file names where a flag takes a path.",
        epilog=COMPLETION_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or zsh")
    parser.set_defaults(handler=lambda args: run(args, root))


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _parsers(sub)


def _complete_paths(root: argparse.ArgumentParser) -> None:
    """Mark every argument that takes a path, so the shell offers file names there."""
    for parser in _parsers(root):
        for action in parser._actions:
            if action.type is Path or action.metavar in _FILE_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]


def script(root: argparse.ArgumentParser, shell: str) -> str:
    _complete_paths(root)
    return shtab.complete(root, shell=shell)


def run(args: argparse.Namespace, root: argparse.ArgumentParser) -> int:
    sys.stdout.write(script(root, args.shell))
    return 0
