"""`orchestrator simulate`: the embedded API simulator, served on loopback.

The flags, and the `SimConfig` they make; the simulator itself (`orchestrator.simulator`)
knows nothing of the command line. The rate-limit flags are shared with the benchmark's
simulator (`benchmarks/servers.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import math
import sys
from collections.abc import Callable
from typing import Final

from orchestrator.commands._types import Subcommands
from orchestrator.simulator.config import HEADER_STYLES, LIMITER_SHAPES, SimConfig
from orchestrator.simulator.serve import serve
from orchestrator.units import parse_rate

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
    add_arguments(parser)
    parser.set_defaults(handler=run)


# How --error-rate is shared out among the hard failures: 500, 502, 503, dropped connection.
ERROR_MIX: Final = (0.4, 0.2, 0.3, 0.1)


def _rate(text: str) -> float | None:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _probability(text: str) -> float:
    """A probability as a fraction ("0.1") or a percentage ("10%")."""
    raw = text.strip()
    scale = 100.0 if raw.endswith("%") else 1.0
    try:
        value = float(raw.removesuffix("%")) / scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability like 0.1 or 10%") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1 (0% and 100%)")
    return value


def _int_at_least(least: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {least}")
        return value

    return convert


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def add_rate_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The rate-limit options, shared with the benchmark's simulator."""
    limits = parser.add_argument_group("rate limit")
    limits.add_argument(
        "--rate", type=_rate, default=None, help="N/s, N/min, N/h or none (default none)"
    )
    limits.add_argument(
        "--limiter",
        choices=LIMITER_SHAPES,
        default="gcra",
        help="the limiter's shape (default gcra, nginx's limit_req with nodelay)",
    )
    limits.add_argument(
        "--burst",
        type=_int_at_least(0),
        default=None,
        metavar="N",
        help="gcra: requests beyond the steady rate let through at once, as nginx's burst"
        " (default one second's worth in all: floor(rate) - 1; 0 = strictly 1/rate apart)",
    )
    limits.add_argument(
        "--window",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="window shapes: round(rate * SECONDS) requests per window (default 1)",
    )
    limits.add_argument(
        "--count-refused",
        action="store_true",
        help="sliding shapes: refused requests count too, so a client that keeps sending"
        " while refused stays locked out",
    )
    headers = limits.add_mutually_exclusive_group()
    headers.add_argument(
        "--rate-limit-headers",
        choices=HEADER_STYLES,
        default="x",
        help="x: X-RateLimit-Limit (per minute) and -Remaining; ietf: RateLimit-Policy and"
        " RateLimit; none: the client must discover the limit (default x)",
    )
    headers.add_argument(
        "--no-rate-limit-headers",
        dest="rate_limit_headers",
        action="store_const",
        const="none",
        help="the same as --rate-limit-headers none",
    )
    limits.add_argument(
        "--no-retry-after",
        dest="retry_after",
        action="store_false",
        help="leave Retry-After off 429 answers",
    )
    limits.add_argument(
        "--background-load",
        type=_rate,
        default=None,
        metavar="RATE",
        help="another client of the same token sending RATE from the first request on,"
        " its refused requests again after their Retry-After",
    )
    limits.add_argument(
        "--background-stop-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="the background load stops this long after the first request (default never)",
    )


def with_rate_limit(config: SimConfig, args: argparse.Namespace) -> SimConfig:
    """`config` with the rate-limit options; ValueError, naming the flags, when they do not
    fit together (SimConfig checks the same, in its own terms)."""
    sliding = args.limiter.startswith("sliding-")
    misfits = (
        (args.window is not None and args.limiter == "gcra", "--window is for the window limiters"),
        (args.burst is not None and args.limiter != "gcra", "--burst is for the gcra limiter"),
        (args.count_refused and not sliding, "--count-refused is for the sliding limiters"),
        (
            args.background_stop_after is not None and args.background_load is None,
            "--background-stop-after needs --background-load",
        ),
        (
            args.rate is None
            and (
                args.limiter != "gcra" or args.burst is not None or args.background_load is not None
            ),
            "--limiter, --burst and --background-load need --rate",
        ),
    )
    for misfit, message in misfits:
        if misfit:
            raise ValueError(message)
    return dataclasses.replace(
        config,
        rate=args.rate,
        limiter=args.limiter,
        burst=args.burst,
        window_s=1.0 if args.window is None else args.window,
        count_refused=args.count_refused,
        rate_limit_headers=args.rate_limit_headers,
        retry_after=args.retry_after,
        background_load=args.background_load,
        background_stop_s=args.background_stop_after,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `orchestrator simulate`."""
    net = parser.add_argument_group("listening")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument(
        "--port", type=_int_at_least(0), default=8080, help="port (default 8080; 0 = any free)"
    )
    net.add_argument("--token", default="sim-token", help="bearer token (default sim-token)")
    add_rate_limit_arguments(parser)
    faults = parser.add_argument_group("faults (rerun requests only)")
    faults.add_argument(
        "--latency", type=_seconds, default=0.0, metavar="MS", help="median latency in ms"
    )
    faults.add_argument(
        "--latency-spread", type=_seconds, default=0.0, metavar="X", help="lognormal sigma"
    )
    faults.add_argument(
        "--error-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="share of reruns failing: 40%% 500, 20%% 502, 30%% 503, 10%% dropped connection",
    )
    faults.add_argument(
        "--slow-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="share of reruns applied but answered only after --slow-seconds",
    )
    faults.add_argument("--slow-seconds", type=_seconds, default=60.0, metavar="S")
    faults.add_argument(
        "--bad-body-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="share of reruns applied but answered with truncated JSON",
    )
    data = parser.add_argument_group("seeded data")
    data.add_argument("--runs", type=_int_at_least(0), default=200, help="default 200")
    data.add_argument("--workflows", type=_int_at_least(1), default=3, help="default 3")
    data.add_argument("--per-page", type=_int_at_least(1), default=15, help="default 15")
    data.add_argument("--seed", type=int, default=0, help="default 0")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the parsed options describe; ValueError when they do not fit together."""
    share_500, share_502, share_503, share_drop = ERROR_MIX
    error_rate: float = args.error_rate
    base = SimConfig(
        token=args.token,
        latency_ms=args.latency,
        latency_spread=args.latency_spread,
        slow_s=args.slow_seconds,
        p_slow=args.slow_rate,
        p_bad_body=args.bad_body_rate,
        runs=args.runs,
        workflows=args.workflows,
        per_page=args.per_page,
        seed=args.seed,
        p_500=share_500 * error_rate,
        p_502=share_502 * error_rate,
        p_503=share_503 * error_rate,
        p_drop=share_drop * error_rate,
    )
    return with_rate_limit(base, args)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Run `orchestrator simulate` with parsed options; the process exit status."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"orchestrator simulate: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(
            f"orchestrator simulate: warning: listening on {args.host}, beyond this machine",
            file=sys.stderr,
        )
    try:
        asyncio.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers were in place: still a clean stop.
        return 0
    except OSError as exc:
        print(
            f"orchestrator simulate: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0
