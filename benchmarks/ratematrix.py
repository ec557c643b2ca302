"""The rate-limit matrix of `make bench` (issue 11): its rows, their ideal spans and targets.

Pure: which simulator and client flags make each row, and how a measured row is judged.
Running the rows is `benchmarks.ratelimit`'s job.

Rows, each with a label a developer can pick with `--rate-rows PATTERN`:

    unknown     each shape x 50 r/s (1,000 IDs) and 2 r/s (150 IDs) x X-RateLimit-* headers
                or none x Retry-After or none, the client run with `--rate none`
    known       each shape at 50 r/s, no headers, `--rate 50/s`: the limit stated
    control     a GCRA with burst = rate and a client at 45/s: it must draw no 429 and
                take exactly (999 - 45) / 45 s (its opening burst, then its rate), or
                the bench itself is wrong
    procs       2 and 4 processes on one token, each `--rate` = the limit, no coordination
    background  another client of the token takes part of the limit, then stops; with
                X-RateLimit-* headers, and without them under the default store

Every row's clients run with `--rate-store none` (but the background rows that say
`--rate-store auto`), each with an XDG_STATE_HOME of its own: a row measures one process
alone, or processes that do not coordinate. (The rows of
`benchmarks.shared` are Rows too, of kind "shared", with a store and one state directory.)
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from orchestrator.pacing.opening import OPENING_S
from orchestrator.simulator.limiters import SlidingCounter

Kind = Literal["unknown", "known", "control", "procs", "background", "shared"]
# This matrix's kinds, in the order of its blocks ("shared" is `benchmarks.shared`'s).
KINDS: Final[tuple[Kind, ...]] = ("unknown", "known", "control", "procs", "background")

CONTROL_RATE: Final = 45.0


@dataclass(frozen=True)
class Shape:
    """A limiter shape as a label token and the simulator flags that make it."""

    name: str  # e.g. "gcra-b10", "sliding-log"
    flags: tuple[str, ...]
    at_once: int  # what a fresh token lets through at once: burst + 1, or N a window
    # The shape lets through less than its limit a second, however a client sends (the
    # sliding counter's estimate): the ideal is what a client that knows it would get.
    below_limit: bool = False


def gcra(burst: int) -> Shape:
    return Shape(f"gcra-b{burst}", ("--burst", str(burst)), burst + 1)


def window(limiter: str, limit: float, *, count_refused: bool = False) -> Shape:
    """A window shape over 1 s: N = round(limit * 1 s) requests."""
    flags = ("--limiter", limiter, "--window", "1")
    if count_refused:
        return Shape(f"{limiter}-refused", (*flags, "--count-refused"), round(limit))
    return Shape(limiter, flags, round(limit), below_limit=limiter == "sliding-counter")


def shapes(limit: float) -> list[Shape]:
    """The issue's shapes: GCRA with a burst of 0, 1, 10 or the rate, and the windows."""
    return [
        gcra(0),
        gcra(1),
        gcra(10),
        gcra(round(limit)),
        window("fixed-window", limit),
        window("sliding-log", limit),
        window("sliding-counter", limit),
        window("sliding-log", limit, count_refused=True),
    ]


@dataclass(frozen=True)
class Target:
    efficiency: float  # at least
    max_429: float  # share of the client's requests, at most (below, when `strict_429`)
    strict_429: bool = False
    max_ratio: float | None = None  # procs: slowest process span / fastest, at most
    recovery_s: float | None = None  # background: back to the limit this soon after it stops
    # Expected exactly (the control row): the span within 2% of it, and no 429 at all.
    exact_span_s: float | None = None
    # No target: a row shown for contrast, judged only on accepting every ID.
    none: bool = False

    def describe(self) -> str:
        if self.none:
            return "none"
        if self.exact_span_s is not None:
            return f"{self.exact_span_s:.1f} s ±2%, no 429"
        if self.recovery_s is not None:
            return f"back ≤ {self.recovery_s:.0f} s"
        text = f"≥ {self.efficiency:.2f}, {'<' if self.strict_429 else '≤'} {self.max_429:.0%}"
        if self.max_ratio is not None:
            text += f", ≤ {self.max_ratio:g}x"
        return text


@dataclass(frozen=True)
class Background:
    load: float  # requests per second
    stop_s: float
    recovery_window_s: float  # the sliding window the client's accepted rate is taken over


@dataclass(frozen=True)
class Row:
    kind: Kind
    label: str
    shape: Shape
    limit: float  # requests per second
    ids: int  # per process
    client: tuple[str, ...]  # flags after `orchestrator rerun IDS`
    server: tuple[str, ...]  # flags of `python -m benchmarks.servers sim`
    target: Target
    procs: int = 1
    background: Background | None = None
    # The clients' `--rate-store`, and whether they share one XDG_STATE_HOME (where
    # `auto` keeps the budget) or have one each.
    store: str = "none"
    shared_state: bool = False

    @property
    def total_ids(self) -> int:
        return self.ids * self.procs

    @property
    def slow(self) -> bool:
        """A long row that loads the machine little (a few requests a second)."""
        return self.limit < 10

    @property
    def alone(self) -> bool:
        """A row at 10 r/s or more against a limiter with no burst, run with no other such
        row beside it: that limiter refuses a request that arrives a fraction of a
        millisecond early, so it measures the machine's timing as much as the client,
        and six clients and six simulators on two cores delay arrivals by up to 4 ms
        (what a lone client meets is network jitter, which the simulator does not add)."""
        return self.shape.at_once == 1 and not self.slow and self.procs == 1

    def ideal_s(self, done: int | None = None) -> float:
        """The shortest span in which the server could have let `done` IDs through (all of
        them by default): the first burst at once, then the limit; with background load,
        the limit less the load until the load stops."""
        count = self.total_ids if done is None else done
        if self.shape.below_limit and self.background is None:
            return best_span(self.limit, count)
        after_burst = max(0, count - self.shape.at_once)
        if self.background is None:
            return after_burst / self.limit
        left = self.limit - self.background.load
        during = left * self.background.stop_s
        if after_burst <= during:
            return after_burst / left
        return self.background.stop_s + (after_burst - during) / self.limit

    @property
    def timeout_s(self) -> float:
        """The row's client processes are killed after this: a third of the ideal
        efficiency is as low as a row can measure."""
        return 3 * self.ideal_s() + 60


def best_span(limit: float, count: int) -> float:
    """The shortest span in which a sliding counter of `limit` a 1 s window lets `count`
    requests through, as the simulator counts: a client that asks at each hundredth of
    an interval and sends only what it would let through. The counter weighs the last
    window into this one, so at 2 a second it lets a steady client through 1 a second
    (148 s for 150, not 74) and at 50 a second about 49 (20.37 s for 1,000, not 19)."""
    return _best_span(limit, count)


@functools.cache
def _best_span(limit: float, count: int) -> float:
    limiter = SlidingCounter(limit, 1.0)
    step = 0.01 / limit
    steps = 0
    times: list[float] = []
    while len(times) < count:
        at = steps * step
        trial = copy.deepcopy(limiter)
        if trial.decide(at).allowed:
            limiter = trial
            times.append(at)
        steps += 1
    return times[-1] - times[0] if times else 0.0


def _rate(limit: float) -> str:
    return f"{limit:g}/s"


def _server(shape: Shape, limit: float, *extra: str) -> tuple[str, ...]:
    return ("--rate", _rate(limit), *shape.flags, *extra)


def unknown_rows() -> list[Row]:
    rows = []
    for limit, ids, most in ((50.0, 1_000, 0.02), (2.0, 150, 0.05)):
        for shape in shapes(limit):
            counting = shape.name.endswith("-refused")
            target = Target(0.90, 0.05) if counting else Target(0.95, most)
            for headers in ("x", "none"):
                for retry_after in (True, False):
                    extra: tuple[str, ...] = ("--rate-limit-headers", headers)
                    if not retry_after:
                        extra += ("--no-retry-after",)
                    ra = "on" if retry_after else "off"
                    rows.append(
                        Row(
                            "unknown",
                            f"unknown {shape.name} {_rate(limit)} hdr={headers} ra={ra}",
                            shape,
                            limit,
                            ids,
                            ("--rate", "none"),
                            _server(shape, limit, *extra),
                            target,
                        )
                    )
    return rows


def known_rows() -> list[Row]:
    limit = 50.0
    rows = []
    for shape in shapes(limit):
        # Only a burst of 0 leaves timer jitter no slack at all.
        target = Target(0.95 if shape.name == "gcra-b0" else 0.99, 0.01, strict_429=True)
        rows.append(
            Row(
                "known",
                f"known {shape.name} {_rate(limit)} hdr=none ra=on --rate {_rate(limit)}",
                shape,
                limit,
                1_000,
                ("--rate", _rate(limit)),
                _server(shape, limit, "--rate-limit-headers", "none"),
                target,
            )
        )
    return rows


def control_row() -> Row:
    limit, ids = 50.0, 1_000
    shape = gcra(round(limit))
    # Paced at a steady 45/s after its opening burst (a second of its rate, at once): its
    # first and last requests are (ids - 1 - 45) / 45 s apart, and the limiter, 50/s with
    # room for 51, refuses none.
    opening = math.floor(CONTROL_RATE * OPENING_S)
    return Row(
        "control",
        f"control {shape.name} {_rate(limit)} hdr=none ra=on --rate {_rate(CONTROL_RATE)}",
        shape,
        limit,
        ids,
        ("--rate", _rate(CONTROL_RATE)),
        _server(shape, limit, "--rate-limit-headers", "none"),
        Target(0.0, 0.0, exact_span_s=(ids - 1 - opening) / CONTROL_RATE),
    )


def procs_rows() -> list[Row]:
    rows = []
    for limit, burst, ids in ((10.0, 5, 300), (50.0, 10, 1_000)):
        shape = gcra(burst)
        for procs in (2, 4):
            rows.append(
                Row(
                    "procs",
                    f"procs {procs}x{ids} {shape.name} {_rate(limit)} hdr=x ra=on"
                    f" --rate {_rate(limit)}",
                    shape,
                    limit,
                    ids,
                    ("--rate", _rate(limit)),
                    _server(shape, limit),
                    Target(0.85, 0.05, max_ratio=1.6),
                    procs=procs,
                )
            )
    return rows


def background_rows() -> list[Row]:
    """Each case with the limit in X-RateLimit-* headers and no store, and without headers
    under the default store: there the run learns (and publishes) its share while the
    other client sends, and must not keep it as its ceiling once that client stops."""
    rows = []
    cases = ((50.0, 10, 1_000, 25.0, 8.0, 1.0, 10.0), (2.0, 0, 150, 1.0, 30.0, 5.0, 60.0))
    for limit, burst, ids, load, stop_s, window_s, within_s in cases:
        shape = gcra(burst)
        for headers, store in (("x", "none"), ("none", "auto")):
            rows.append(
                Row(
                    "background",
                    f"background {shape.name} {_rate(limit)} hdr={headers} ra=on"
                    f" load={_rate(load)} for {stop_s:g} s"
                    + ("" if store == "none" else f" --rate-store {store}"),
                    shape,
                    limit,
                    ids,
                    ("--rate", "none"),
                    _server(
                        shape,
                        limit,
                        "--rate-limit-headers",
                        headers,
                        "--background-load",
                        _rate(load),
                        "--background-stop-after",
                        f"{stop_s:g}",
                    ),
                    Target(0.0, 1.0, recovery_s=within_s),
                    background=Background(load, stop_s, window_s),
                    store=store,
                )
            )
    return rows


def matrix() -> list[Row]:
    return [*unknown_rows(), *known_rows(), control_row(), *procs_rows(), *background_rows()]


def pick(rows: Iterable[Row], patterns: Sequence[str]) -> list[Row]:
    """The rows whose label any of `patterns` (regular expressions) is found in; all of
    them when there is no pattern."""
    compiled = [re.compile(p) for p in patterns]
    return [r for r in rows if not compiled or any(p.search(r.label) for p in compiled)]


# ---- judging a measured row ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A row as measured on the server's side."""

    span_s: float  # first to last rerun request (to the kill, when timed out)
    share_429: float  # of the clients' rerun requests
    done: int  # IDs accepted, all processes together
    timed_out: bool
    ratio: float | None = None  # procs: slowest process span / fastest
    recovery_s: float | None = None  # background: None when the client never got back


def efficiency(row: Row, outcome: Outcome) -> float:
    """The ideal span for what was done over the span the server saw."""
    return row.ideal_s(outcome.done) / outcome.span_s if outcome.span_s > 0 else 0.0


def misses(row: Row, outcome: Outcome) -> list[str]:
    """How the row falls short of its target; empty when it meets it."""
    target, found = row.target, []
    if outcome.done < row.total_ids:
        state = "timed out" if outcome.timed_out else "gave up"
        found.append(f"{state}: {outcome.done:,} of {row.total_ids:,}")
    if target.none:
        return found
    if target.exact_span_s is not None:
        off = outcome.span_s / target.exact_span_s - 1
        if abs(off) > 0.02:
            found.append(f"span {off:+.1%}")
        if outcome.share_429 > 0:
            found.append(f"429s {outcome.share_429:.1%}")
        return found
    if target.recovery_s is not None:
        back = outcome.recovery_s
        if back is None or back > target.recovery_s:
            found.append("never back" if back is None else f"back after {back:.1f} s")
        return found
    if (measured := efficiency(row, outcome)) < target.efficiency:
        found.append(f"efficiency {measured:.2f}")
    share, most = outcome.share_429, target.max_429
    if share > most or (target.strict_429 and share >= most):
        found.append(f"429s {share:.1%}")
    if target.max_ratio is not None and (outcome.ratio is None or outcome.ratio > target.max_ratio):
        found.append("one process starved" if outcome.ratio is None else f"{outcome.ratio:.2f}x")
    return found
