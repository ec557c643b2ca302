"""Clients that share a stated limit with no coordination, in virtual time: the rules of
sharing (`Phase.SHARE` in `orchestrator.pacing.adaptive`) alone, with no server, pacer,
opening or machine noise, so that a change to them can be judged over many seeds in a
second where the bench's `procs` rows take minutes a run and swing from run to run.

    python -m benchmarks.share_model [--clients 2 4] [--limits 10 50] [--bursts 5 10]
                                     [--seeds 8] [--set Sharing.CUT=0.6 ...]

Each client is an `AdaptiveRate` under a stated limit equal to the token bucket's (a GCRA
that refuses at once when over; the bursts pair with the limits, by default the bench's
`procs` rows: 5 at 10/s, 10 at 50/s), held a hair under it after a first 429, as a run
is once its opening has met the others. All start together. Each sends at its rate, every
request scattered within its interval as `Pacer.due` scatters them while sharing, and
hears each answer 2 ms after sending it.

For each case it prints the 429 share of every request, the efficiency (requests let
through over the limit's worth), the slowest over the fastest client's requests let
through in the second half, and, in a run where all but the first client stop halfway,
the seconds until the first is let through 90% of the limit over a sliding second (5 s
under 10/s). Median and worst over the seeds. `--set NAME=VALUE` overrides one of
`AdaptiveRate`'s constants for the run (`--set Sharing.CUT=0.6`, one of its parts'), to
try another rule's figures.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.pacing.adaptive import AdaptiveRate
from orchestrator.pacing.ramp import Ramp
from orchestrator.pacing.sharing import Sharing
from orchestrator.pacing.window import Window

SECONDS = 120.0
LATENCY_S = 0.002


@dataclass(frozen=True, slots=True)
class Outcome:
    throttled_share: float
    efficiency: float
    slowest_over_fastest: float
    back_after_s: float | None  # None: never back, or not measured


class Bucket:
    """A GCRA token bucket: `burst` requests at once from idle, `limit` a second."""

    def __init__(self, limit: float, burst: int) -> None:
        self._interval = 1.0 / limit
        self._tolerance = burst * self._interval
        self._tat = 0.0

    def admit(self, at: float) -> bool:
        if at < self._tat - self._tolerance:
            return False
        self._tat = max(self._tat, at) + self._interval
        return True


def run(clients: int, limit: float, burst: int, seed: int, *, others_stop: bool) -> Outcome:
    """One case: `clients` controllers on one bucket for SECONDS (all but the first stop
    halfway when `others_stop`)."""
    rng = random.Random(seed)
    bucket = Bucket(limit, burst)
    rates = [AdaptiveRate(ceiling=limit, now=0.0) for _ in range(clients)]
    for rate in rates:
        rate.bursty = True  # a token bucket, seen to let bursts through
        rate.observe(0.0, 0.0, throttled=True)  # held at the hair from here
    slots = [rng.random() / _rate(r, limit) for r in rates]
    queue = [
        (slot + rng.random() / _rate(r, limit), n)
        for n, (slot, r) in enumerate(zip(slots, rates, strict=True))
    ]
    heapq.heapify(queue)
    through, refused = [0] * clients, [0] * clients
    second_half = [0] * clients
    window = 1.0 if limit >= 10 else 5.0
    first_through: deque[float] = deque()
    back_at: float | None = None
    half = SECONDS / 2
    while queue:
        at, n = heapq.heappop(queue)
        if at > SECONDS or (others_stop and n > 0 and at > half):
            continue
        admitted = bucket.admit(at)
        rates[n].observe(at + LATENCY_S, at, throttled=not admitted)
        if admitted:
            through[n] += 1
            second_half[n] += at >= half
            if n == 0 and others_stop and at > half and back_at is None:
                first_through.append(at)
                while first_through[0] <= at - window:
                    first_through.popleft()
                if len(first_through) >= 0.9 * limit * window:
                    back_at = at - half
        else:
            refused[n] += 1
        interval = 1.0 / _rate(rates[n], limit)
        slots[n] += interval
        heapq.heappush(queue, (slots[n] + rng.random() * interval, n))
    sent = sum(through) + sum(refused)
    return Outcome(
        throttled_share=sum(refused) / sent,
        efficiency=sum(through) / (limit * SECONDS),
        slowest_over_fastest=max(second_half) / max(1, min(second_half)),
        back_after_s=back_at,
    )


def _rate(rate: AdaptiveRate, limit: float) -> float:
    return rate.rate if rate.rate is not None else limit


# The classes whose constants `--set` reaches: `NAME` is the adaptive rate's (its own or
# its state's), `Sharing.NAME` and the like one of its parts'.
TUNABLE: dict[str, type] = {cls.__name__: cls for cls in (AdaptiveRate, Sharing, Window, Ramp)}


def override_constants(settings: Sequence[str], prog: str) -> None:
    """`--set NAME=VALUE` or `--set Sharing.NAME=VALUE`: a constant of `AdaptiveRate` or of
    one of its parts (`TUNABLE`), for the rest of the run."""
    for setting in settings:
        target, _, value = setting.partition("=")
        owner, _, name = target.rpartition(".")
        cls = TUNABLE.get(owner or "AdaptiveRate")
        if cls is None or not name.isupper() or not hasattr(cls, name) or not value:
            known = ", ".join(TUNABLE)
            raise SystemExit(f"{prog}: --set {setting!r}: no such constant of {known}")
        try:
            number = float(value)
        except ValueError:
            raise SystemExit(f"{prog}: --set {setting!r}: not a number") from None
        setattr(cls, name, type(getattr(cls, name))(number))


HEADS = ("429s", "efficiency", "slow/fast", "back after s")


def _cell(values: list[float], worst: Callable[[list[float]], float], spec: str) -> str:
    return f"{statistics.median(values):{spec}} {worst(values):{spec}}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.share_model")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--limits", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--bursts", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    override_constants(args.settings, "share_model")
    if len(args.bursts) != len(args.limits):
        raise SystemExit("share_model: give one --bursts value for each of --limits")
    print(f"{'clients':>7} {'limit':>6} {'burst':>5}  " + "  ".join(f"{h:>13}" for h in HEADS))
    print(f"{'':>7} {'':>6} {'':>5}  " + "  ".join(f"{'median worst':>13}" for _ in HEADS))
    for clients in args.clients:
        for limit, burst in zip(args.limits, args.bursts, strict=True):
            seeds = range(args.seeds)
            shared = [run(clients, limit, burst, seed, others_stop=False) for seed in seeds]
            alone = [run(clients, limit, burst, seed, others_stop=True) for seed in seeds]
            back = [o.back_after_s if o.back_after_s is not None else math.inf for o in alone]
            cells = (
                _cell([o.throttled_share for o in shared], max, "6.1%"),
                _cell([o.efficiency for o in shared], min, "6.2f"),
                _cell([o.slowest_over_fastest for o in shared], max, "6.2f"),
                _cell(back, max, "6.1f"),
            )
            print(f"{clients:>7} {limit:>6g} {burst:>5}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
