"""Rate discovery alone against each limiter shape, in virtual time: the controller
(`orchestrator.pacing.adaptive.AdaptiveRate`) and a token bucket pacing eight workers,
as tests/helpers/ratemodel.py drives them, with no server, opening or machine noise, so
that a change to the rules can be judged over every shape and several limits in seconds
where the bench's rows take minutes and swing from run to run.

    python -m benchmarks.discovery_model [--limits 2 5 10 20 50] [--seeds 3]
                                         [--shapes gcra-b1 fixed-window ...] [--ids N]
                                         [--background] [--set OVER_TRIM=0.05 ...]

Each case is one limit, one shape (the bench's: a GCRA with a burst of 0, 1, 2, 10 or the
limit, a fixed window, a sliding log, a sliding counter, a sliding log that counts
refused requests), with or without `Retry-After` on its 429s (whole seconds, as the
simulator sends it), no rate-limit headers, and the limit unknown (`--rate none`). It
prints the efficiency (the bench's: what the limiter lets through at once goes at once,
then one every 1 / limit, over the span the limiter saw; a sliding counter sustains one
less than its limit a window), the 429 share of every request, and that share after the
first 10 s (what a long run pays once the limit is found). Median and worst over the
seeds. The IDs default to 20 s of the limit, and at least 150 (the bench's 2/s rows).
With `--background`, another client of the token takes half the limit from the start
until 60 s of requests at the limit have gone by (30 s at 2/s, at least 8 s: the bench's
background rows), and a last column gives the seconds from its stop until this client is
let through 90% of what the limiter sustains over a sliding window of 10 requests at that
rate (at least a second); the efficiency then counts the limit as it is, half of it until the stop.
`--set NAME=VALUE` overrides one of `AdaptiveRate`'s constants for the run (`--set
Window.ANSWERS=10`, one of its parts': see `share_model.TUNABLE`).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.serverlog import recovery_after
from benchmarks.share_model import override_constants
from orchestrator.simulator.limiters import (
    GCRA,
    Background,
    FixedWindow,
    Limiter,
    SlidingCounter,
    SlidingLog,
)
from tests.helpers.ratemodel import ModelRun, Network, run_model, whole_seconds

LATE_S = 10.0
NETWORK = Network(one_way_s=0.0005, jitter_s=0.0003)


@dataclass(frozen=True, slots=True)
class Shape:
    make: Callable[[float], Limiter]
    at_once: Callable[[float], int]  # what it lets through at once from idle
    sustained: Callable[[float], float]  # what it lets through a second, held


def _gcra(burst: int | None) -> Shape:
    def size(limit: float) -> int:
        return round(limit) if burst is None else burst

    return Shape(lambda limit: GCRA(limit, size(limit)), lambda limit: size(limit) + 1, float)


SHAPES: dict[str, Shape] = {
    "gcra-b0": _gcra(0),
    "gcra-b1": _gcra(1),
    "gcra-b2": _gcra(2),
    "gcra-b10": _gcra(10),
    "gcra-bL": _gcra(None),
    "fixed-window": Shape(lambda limit: FixedWindow(limit, 1.0), round, float),
    "sliding-log": Shape(lambda limit: SlidingLog(limit, 1.0), round, float),
    "sliding-counter": Shape(
        lambda limit: SlidingCounter(limit, 1.0), round, lambda limit: limit - 1
    ),
    "sliding-log-refused": Shape(
        lambda limit: SlidingLog(limit, 1.0, count_refused=True), round, float
    ),
}


@dataclass(frozen=True, slots=True)
class Figures:
    efficiency: float
    throttled: float
    late_throttled: float
    back_after_s: float | None = None  # with a background: from its stop to 90% of it


def background_stop_s(limit: float) -> float:
    return max(8.0, 60 / limit)


def back_after(run: ModelRun, limit: float, stop_s: float) -> float | None:
    """Seconds from `stop_s` until the let-through over a sliding window reaches 90% of
    `limit` (what the limiter sustains) in it, as the bench's background rows measure it;
    None if it never does."""
    through = [at for at, ok in run.arrivals if ok]
    return recovery_after(through, stop_s, limit, max(1.0, 10 / limit), 0.9)


def ideal_s(requests: float, sustained: float, stop_s: float | None) -> float:
    """The least span for `requests` at `sustained` a second, half of it until `stop_s`."""
    if stop_s is None:
        return requests / sustained
    shared = sustained / 2 * stop_s
    if requests <= shared:
        return requests / (sustained / 2)
    return stop_s + (requests - shared) / sustained


def figures(run: ModelRun, shape: Shape, limit: float, ids: int, stop_s: float | None) -> Figures:
    ideal = ideal_s(ids - shape.at_once(limit), shape.sustained(limit), stop_s)
    late = [ok for at, ok in run.arrivals if at >= LATE_S]
    late_share = late.count(False) / len(late) if late else 0.0
    return Figures(
        ideal / run.span if run.finished else 0.0,
        run.throttled_share,
        late_share,
        None if stop_s is None else back_after(run, shape.sustained(limit), stop_s),
    )


def one_case(
    shape: Shape, limit: float, ids: int, retry_after: bool, seed: int, *, background: bool = False
) -> Figures:
    limiter = shape.make(limit)
    stop_s = background_stop_s(limit) if background else None
    run = run_model(
        limiter if stop_s is None else Background(limiter, limit / 2, stop_s),
        ids=ids,
        seed=seed,
        network=NETWORK,
        retry_after=whole_seconds if retry_after else None,
        max_seconds=max(600.0, 20 * ids / limit),
    )
    return figures(run, shape, limit, ids, stop_s)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.discovery_model")
    add = parser.add_argument
    add("--limits", type=float, nargs="+", default=[2.0, 5.0, 10.0, 20.0, 50.0])
    add("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    add("--seeds", type=int, default=3)
    add("--ids", type=int, default=None, help="IDs a run (default: 20 s of the limit, >= 150)")
    add("--background", action="store_true", help="another client takes half the limit, then stops")
    add("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    if any(limit < 2 for limit in args.limits):
        parser.error("--limits: 2 a second or more (a window of one second holds at least 2)")
    if args.seeds < 1 or (args.ids is not None and args.ids < 10):
        parser.error("--seeds: 1 or more; --ids: 10 or more")
    return args


def row(name: str, limit: float, ids: int, retry_after: bool, args: argparse.Namespace) -> str:
    runs = [
        one_case(SHAPES[name], limit, ids, retry_after, seed, background=args.background)
        for seed in range(args.seeds)
    ]
    eff = [f.efficiency for f in runs]
    thr = [f.throttled for f in runs]
    late = statistics.median(f.late_throttled for f in runs)
    line = (
        f"{limit:>5g}  {name:<19}  {'on ' if retry_after else 'off'}"
        f"  {statistics.median(eff):>10.2f} ({min(eff):.2f})"
        f"  {100 * statistics.median(thr):>6.1f}% ({100 * max(thr):4.1f}%)"
        f"  {100 * late:>15.1f}%"
    )
    if args.background:
        backs = [math.inf if f.back_after_s is None else f.back_after_s for f in runs]
        line += f"  {statistics.median(backs):>8.1f} ({max(backs):.1f})"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    override_constants(args.set, "discovery_model")
    head = "limit  shape                ra   efficiency (worst)  429s (worst)  429s after 10 s"
    print(head + ("  back after s (worst)" if args.background else ""))
    for limit in args.limits:
        ids = args.ids or max(150, round(20 * limit))
        for name in args.shapes:
            for retry_after in (False, True):
                print(row(name, limit, ids, retry_after, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
