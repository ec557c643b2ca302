"""`orchestrator simulate`: the embedded API simulator, served on loopback."""

from __future__ import annotations

import argparse

from ..simulator import serve
from ._types import Subcommands


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "simulate",
        help="run the embedded Altostrat API simulator on loopback",
        description="A stand-in of the Altostrat workflow API, for trying orchestrator safely.",
    )
    serve.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return int(serve.run(args))
