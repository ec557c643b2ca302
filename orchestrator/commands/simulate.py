"""`orchestrator simulate`: the embedded API simulator, served on loopback."""

from __future__ import annotations

import argparse

from orchestrator.commands._types import Subcommands
from orchestrator.simulator import serve

SIMULATE_EXAMPLES = """\
examples:
  # the API as documented, 60 requests/min, on http://127.0.0.1:8080 (token sim-token)
  orchestrator simulate --rate 60/min

  # a bad day: 20/s with 10% of reruns failing, on any free port
  orchestrator simulate --port 0 --rate 20/s --error-rate 10%

  # nginx's limit_req with no burst, and no header to say so: the client must find 50/s
  orchestrator simulate --rate 50/s --burst 0 --no-rate-limit-headers

  # 50 in any second, refused requests counted too, and another client taking 10/s of it
  orchestrator simulate --rate 50/s --limiter sliding-log --count-refused --background-load 10/s

  # then, in another terminal, rerun its seeded failed runs against it
  ALTOSTRAT_TOKEN=sim-token orchestrator rerun ids.txt --base-url http://127.0.0.1:8080
"""


def add_parser(commands: Subcommands) -> None:
    parser = commands.add_parser(
        "simulate",
        help="run the embedded Altostrat API simulator on loopback",
        description="A stand-in of the Altostrat workflow API, for trying orchestrator safely.",
        epilog=SIMULATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return int(serve.run(args))
