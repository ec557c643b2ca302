"""The `shared` section of `make bench`: one rate budget for every process on a token.

Each row runs against a simulator of its own, GCRA 10 r/s with a burst of 5 and no
`X-RateLimit-*` headers, so the clients cannot read the limit off the answers:

    shared Nx...         N processes on one host, each `--rate 10/s`, the default store
                       (`auto`: SQLite under the one XDG_STATE_HOME they share)
    redis Nx...          the same through `--rate-store redis://…` (a redis-server the bench
                       starts on a free loopback port), each process with an XDG_STATE_HOME
                       of its own: they share nothing on disk
    uncoordinated 2x...  the 2x row with `--rate-store none`, for contrast (no target)
    discover Nx...       N processes with `--rate none` on the default store: they learn the
                       limit together and publish the token's (no target in the issue)
    cron               a `--rate none` run that finds the limit and publishes it, then a
                       second `--rate none` run on the same state directory, at once: its
                       first minute as the server saw it

N x IDs is 600 in every multi-process row: an ideal of 59.4 s at 10 r/s. Then what a
store costs: `reserve()` of each store, timed in this process, and the throughput
section's client (`--rate none`, no limit known) with `--rate-store auto` against `none`,
which should not move: with no limit known the store is not written.

The rows run through `benchmarks.ratelimit` (its pool, its simulator and client launching,
its reading of the simulator's request log); what is new here is the cron row, the
judging of a minute, the cost figures and the tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import sqlite3
import statistics
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.procs import Finished, RedisServer
from benchmarks.ratelimit import (
    CpuSampler,
    Result,
    RowError,
    Runner,
    cells,
    read_log,
    read_summary,
    row_server,
    run_client,
    run_row,
    run_rows,
)
from benchmarks.ratematrix import Row, Target, efficiency, gcra, pick
from benchmarks.serverlog import Seen, seen, seen_during
from benchmarks.table import Report, progress, verdict
from benchmarks.workload import write_ids
from orchestrator.shared.store import Grant

LIMIT: Final = 10.0
BURST: Final = 5
TOTAL_IDS: Final = 600  # every multi-process row: 59.4 s at the limit, whatever N
SHARED_PROCS: Final = (2, 4, 8)
REDIS_PROCS: Final = (2, 4, 8)
DISCOVER_PROCS: Final = (2, 4)
CRON_FIRST_IDS: Final = 300  # enough to settle (about 15 s) and run on at what it found
CRON_IDS: Final = 700  # 70 s at the limit: the first minute is whole
MINUTE_S: Final = 60.0

SHARED_TARGET: Final = Target(0.97, 0.01, max_ratio=1.2)
REDIS_TARGET: Final = Target(0.95, 0.01)
CRON_TARGET: Final = Target(0.95, 0.0)

# reserve() timed in this process: a fresh key, a stated rate so high that no slot waits.
RESERVE_CALLS: Final = 5_000
RESERVE_WARMUP: Final = 100  # not counted: the connection, the script's first load
RESERVE_RATE: Final = 1e6
RESERVE_TARGET_US: Final[dict[str, float]] = {"local": 200.0, "redis": 1_000.0}
# The throughput client with --rate-store auto over --rate-store none, medians: at least.
UNTOUCHED_RATIO: Final = 0.95
# Names the cost measurements answer to in --shared-rows, as the rows' labels do.
COST_RESERVE: Final = "cost reserve()"
COST_THROUGHPUT: Final = "cost throughput"


# ---- the rows ---------------------------------------------------------------------------


def _server(*, retry_after: bool = True) -> tuple[str, ...]:
    flags = ("--rate", f"{LIMIT:g}/s", "--burst", str(BURST), "--rate-limit-headers", "none")
    return flags if retry_after else (*flags, "--no-retry-after")


def _procs_row(
    kind: str,
    procs: int,
    store: str,
    target: Target,
    *,
    shared_state: bool,
    rate: str = f"{LIMIT:g}/s",
) -> Row:
    shape = gcra(BURST)
    ids = TOTAL_IDS // procs
    return Row(
        "shared",
        f"{kind} {procs}x{ids} {shape.name} {LIMIT:g}/s hdr=none ra=on --rate {rate}",
        shape,
        LIMIT,
        ids,
        ("--rate", rate),
        _server(),
        target,
        procs=procs,
        store=store,
        shared_state=shared_state,
    )


def cron_row(*, retry_after: bool) -> Row:
    shape = gcra(BURST)
    ra = "on" if retry_after else "off"
    return Row(
        "shared",
        f"cron {CRON_FIRST_IDS}+{CRON_IDS} {shape.name} {LIMIT:g}/s hdr=none ra={ra} --rate none",
        shape,
        LIMIT,
        CRON_IDS,
        ("--rate", "none"),
        _server(retry_after=retry_after),
        CRON_TARGET,
        store="auto",
        shared_state=True,
    )


def is_cron(row: Row) -> bool:
    return row.label.startswith("cron ")


def shared_rows(redis_url: str | None) -> list[Row]:
    """The section's rows; the redis ones only when there is a server at `redis_url`."""
    rows = [_procs_row("shared", n, "auto", SHARED_TARGET, shared_state=True) for n in SHARED_PROCS]
    if redis_url is not None:
        rows += [
            _procs_row("redis", n, redis_url, REDIS_TARGET, shared_state=False) for n in REDIS_PROCS
        ]
    rows.append(
        _procs_row("uncoordinated", 2, "none", Target(0.0, 1.0, none=True), shared_state=False)
    )
    # Not in the issue: processes that all look for the limit (`--rate none`) on one store.
    rows += [
        _procs_row(
            "discover", n, "auto", Target(0.0, 1.0, none=True), shared_state=True, rate="none"
        )
        for n in DISCOVER_PROCS
    ]
    # Without Retry-After the first run learns the limit as the ratelimit matrix's
    # unknown-limit rows find it; with it, burst refills after each pause mislead it.
    rows += [cron_row(retry_after=False), cron_row(retry_after=True)]
    return rows


def wanted(name: str, patterns: Sequence[str]) -> bool:
    """A cost measurement is run when no pattern is given or one is found in its name."""
    return not patterns or any(re.search(p, name) for p in patterns)


# ---- the cron row ------------------------------------------------------------------------


@dataclass(frozen=True)
class CronOutcome:
    """The cron row as measured: what the first run published, and the second run's first
    minute as the server saw it."""

    published: float | None  # rate_budget_per_s of the first run's summary
    source: str | None  # rate_budget_source: "learned" when it found the limit itself
    minute: Seen  # the second run's requests in its first MINUTE_S
    span_s: float  # the second run's, first to last request
    done: int  # the second run's IDs accepted
    timed_out: bool


def minute_efficiency(row: Row, minute: Seen, seconds: float = MINUTE_S) -> float:
    """Requests accepted in the minute over what the limit lets through in one."""
    return minute.accepted_ids / (row.limit * seconds)


def cron_misses(row: Row, outcome: CronOutcome) -> list[str]:
    found = []
    if outcome.done < row.ids:
        state = "timed out" if outcome.timed_out else "gave up"
        found.append(f"{state}: {outcome.done:,} of {row.ids:,}")
    if outcome.published is None or outcome.source != "learned":
        found.append("the first run published no learned limit")
    if outcome.span_s < MINUTE_S:
        found.append(f"the second run lasted {outcome.span_s:.0f} s")
    if (measured := minute_efficiency(row, outcome.minute)) < row.target.efficiency:
        found.append(f"efficiency {measured:.3f}")  # 0.947 is no 0.95
    if outcome.minute.refused > row.target.max_429 * outcome.minute.requests:
        found.append(f"{outcome.minute.refused} 429s")
    return found


@dataclass(frozen=True)
class CronResult:
    row: Row
    first: Seen  # the first run's requests
    second: Seen
    outcome: CronOutcome
    summaries: tuple[dict[str, Any], dict[str, Any]]
    clients: tuple[Finished, Finished]


def run_cron(row: Row, work: Path, runner: Runner) -> CronResult:
    """Two runs one after the other on one simulator and one state directory: the first
    learns the limit and publishes it, the second starts from it."""
    work.mkdir(parents=True, exist_ok=True)
    seed = zlib.crc32(row.label.encode())
    first_ids = write_ids(work / "ids-first.txt", CRON_FIRST_IDS, seed)
    second_ids = write_ids(work / "ids-second.txt", row.ids, seed + 1)
    runner.wait_turn()
    with row_server(row, work) as server:
        first = run_client(
            row,
            work,
            "first",
            first_ids,
            base_url=server.base_url,
            runner=runner,
            timeout_s=3 * CRON_FIRST_IDS / row.limit + 60,
        )
        second = run_client(
            row, work, "second", second_ids, base_url=server.base_url, runner=runner
        )
        ended = time.monotonic()
        arrivals, _ = read_log(server, work)
    mine = set(second_ids.read_text().split())
    after = seen(arrivals, mine)
    minute = seen_during(arrivals, after.first if after.first is not None else 0.0, MINUTE_S, mine)
    summary = read_summary(work, "first")
    per_s, source = summary.get("rate_budget_per_s"), summary.get("rate_budget_source")
    return CronResult(
        row=row,
        first=seen(arrivals, set(first_ids.read_text().split())),
        second=after,
        outcome=CronOutcome(
            published=float(per_s) if isinstance(per_s, int | float) else None,
            source=source if isinstance(source, str) else None,
            minute=minute,
            span_s=after.span_s(ended if second.timed_out else None),
            done=after.accepted_ids,
            timed_out=second.timed_out,
        ),
        summaries=(summary, read_summary(work, "second")),
        clients=(first, second),
    )


def run_shared(row: Row, work: Path, runner: Runner) -> Result | CronResult:
    return run_cron(row, work, runner) if is_cron(row) else run_row(row, work, runner)


# ---- what a store costs -----------------------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """`reserve()` of one store, timed: microseconds a call."""

    store: str
    description: str
    samples: tuple[float, ...]

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def p99_us(self) -> float:
        return percentile(self.samples, 0.99)


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with `share` of them at or below."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def _time_reserves(reserve: Callable[[], Awaitable[Grant]], calls: int) -> list[float]:
    for _ in range(RESERVE_WARMUP):
        await reserve()
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        await reserve()
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


async def _local_costs(directory: Path, calls: int) -> Costs:
    from orchestrator.shared.localstore import LocalStore  # noqa: PLC0415 - the product's, timed

    store = LocalStore(directory, secrets.token_hex(16))
    try:
        samples = await _time_reserves(lambda: store.reserve(RESERVE_RATE), calls)
    finally:
        await store.close()
    return Costs("local", "LocalStore (SQLite, WAL)", tuple(samples))


async def _redis_costs(url: str, calls: int) -> Costs:
    from orchestrator.shared.redisstore import RedisStore  # noqa: PLC0415 - the optional extra

    store = await RedisStore.connect(url, secrets.token_hex(16))
    try:
        samples = await _time_reserves(lambda: store.reserve(RESERVE_RATE), calls)
    finally:
        await store.close()
    return Costs("redis", "RedisStore (redis-server on loopback)", tuple(samples))


def reserve_costs(
    directory: Path, redis_url: str | None, calls: int = RESERVE_CALLS
) -> list[Costs]:
    costs = [asyncio.run(_local_costs(directory, calls))]
    progress(f"shared: LocalStore.reserve() mean {costs[-1].mean_us:.0f} µs")
    if redis_url is not None:
        costs.append(asyncio.run(_redis_costs(redis_url, calls)))
        progress(f"shared: RedisStore.reserve() mean {costs[-1].mean_us:.0f} µs")
    return costs


@dataclass(frozen=True)
class ThroughputRun:
    """One run of the throughput section's client."""

    per_s: float
    cpu_us: float
    complete: bool


# Runs the throughput client once: --rate none, this --rate-store, this XDG_STATE_HOME.
Throughput = Callable[[str, Path], ThroughputRun]


@dataclass(frozen=True)
class Untouched:
    auto: tuple[ThroughputRun, ...]
    none: tuple[ThroughputRun, ...]
    rows_after: int | None  # schedules in the auto runs' SQLite files; None: no file at all

    @property
    def ratio(self) -> float:
        return statistics.median(r.per_s for r in self.auto) / statistics.median(
            r.per_s for r in self.none
        )


def stored_schedules(state_home: Path) -> int | None:
    """Schedules the `auto` store under `state_home` holds; None when it has no file."""
    path = state_home / "orchestrator" / "rate-budget.sqlite3"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            (count,) = db.execute("SELECT count(*) FROM schedules").fetchone()
        except sqlite3.OperationalError:  # no table: nothing was ever written
            return 0
    return int(count)


def untouched(throughput: Throughput, work: Path, runs: int) -> Untouched:
    """The client with `--rate-store auto` and `none`, alternating, each auto run with a
    fresh state directory (so no limit is known)."""
    auto: list[ThroughputRun] = []
    none: list[ThroughputRun] = []
    rows: int | None = None
    for n in range(1, runs + 1):
        for store, sink in (("auto", auto), ("none", none)):
            home = work / f"throughput-state-{store}-{n}"
            sink.append(throughput(store, home))
            if store == "auto":
                found = stored_schedules(home)
                rows = found if rows is None else rows + (found or 0)
            progress(f"shared: throughput --rate-store {store} {n}/{runs}: {sink[-1].per_s:,.0f}/s")
    return Untouched(tuple(auto), tuple(none), rows)


# ---- the tables -------------------------------------------------------------------------


def budget(summaries: Sequence[dict[str, Any]], procs: int) -> str:
    """What the processes' summaries say of the budget: the limits they ended on, and how
    many took slots from the shared schedule; "-" when none had a store."""
    if not any("rate_store" in s for s in summaries):
        return "-"
    limits = Counter(
        "no limit"
        if s.get("rate_budget_per_s") is None
        else f"{s['rate_budget_per_s']:g}/s {s.get('rate_budget_source')}"
        for s in summaries
        if "rate_store" in s
    )
    shared = sum(1 for s in summaries if s.get("rate_budget_shared") is True)
    return f"{' | '.join(limits)}, {shared}/{procs} shared"


_PROCS_HEADER: Final = (
    "row", "IDs", "ideal s", "span s", "efficiency", "429s", "succeeded", "spans s",
    "slowest / fastest", "budget", "target", "verdict",
)  # fmt: skip


_CRON_HEADER: Final = (
    "row", "first run", "429s", "published", "second run", "minute ok", "minute 429",
    "efficiency", "429s all", "target", "verdict",
)  # fmt: skip


def _procs_cells(result: Result | RowError) -> list[str]:
    found = cells(result)
    if isinstance(result, Result):
        found["budget"] = budget(result.summaries, result.row.procs)
    return [found.get(h, "") for h in _PROCS_HEADER]


def _cron_cells(result: CronResult | RowError) -> list[str]:
    if isinstance(result, RowError):
        return [result.row.label, *[""] * 9, f"ERROR ({result.error})"]
    row, outcome = result.row, result.outcome
    published = "-" if outcome.published is None else f"{outcome.published:g}/s {outcome.source}"
    found = cron_misses(row, outcome)
    return [
        row.label,
        f"{result.first.accepted_ids:,} in {result.first.span_s():.0f} s",
        f"{result.first.share_429:.1%}",
        published,
        f"{outcome.done:,} in {'>' if outcome.timed_out else ''}{outcome.span_s:.0f} s",
        f"{outcome.minute.accepted_ids}",
        f"{outcome.minute.refused}",
        f"{minute_efficiency(row, outcome.minute):.3f}",
        f"{result.second.share_429:.1%}",
        f"≥ {row.target.efficiency:.2f}, no 429",
        verdict(not found, ", ".join(found)),
    ]


def _costs_rows(costs: Sequence[Costs]) -> list[list[str]]:
    rows = []
    for cost in costs:
        most = RESERVE_TARGET_US[cost.store]
        over = cost.mean_us - most
        rows.append(
            [
                cost.description,
                f"{len(cost.samples):,}",
                f"{cost.mean_us:,.0f}",
                f"{statistics.median(cost.samples):,.0f}",
                f"{cost.p99_us:,.0f}",
                f"{max(cost.samples):,.0f}",
                f"≤ {most:,.0f} µs",
                verdict(over <= 0, f"{over:+.0f} µs"),
            ]
        )
    return rows


def _untouched_rows(found: Untouched) -> list[list[str]]:
    rows = []
    for store, runs in (("auto", found.auto), ("none", found.none)):
        incomplete = sum(not r.complete for r in runs)
        rows.append(
            [
                f"--rate-store {store}",
                f"{statistics.median(r.per_s for r in runs):,.0f}"
                + (f" !{incomplete} incomplete" if incomplete else ""),
                f"{statistics.median(r.cpu_us for r in runs):,.0f}",
                "",
                "",
            ]
        )
    ratio = found.ratio
    written = "no file" if found.rows_after is None else f"{found.rows_after} schedules"
    rows.append(
        [
            "ratio auto / none",
            f"{ratio:.2f}",
            "",
            written,
            verdict(
                ratio >= UNTOUCHED_RATIO and not found.rows_after,
                ", ".join(
                    [f"{ratio:.2f}"] * (ratio < UNTOUCHED_RATIO)
                    + [f"the store holds {written}"] * bool(found.rows_after)
                ),
            ),
        ]
    )
    return rows


def add_blocks(
    report: Report,
    results: Sequence[Result | CronResult | RowError],
    costs: Sequence[Costs],
    found: Untouched | None,
    notes: Sequence[str],
) -> None:
    procs = [r for r in results if not isinstance(r, CronResult) and not is_cron(r.row)]
    crons = [r for r in results if not isinstance(r, Result) and is_cron(r.row)]
    if procs:
        report.add(
            f"SHARED BUDGET, PROCESSES  N `orchestrator rerun --rate {LIMIT:g}/s` on one token,"
            f" a GCRA of {LIMIT:g}/s burst {BURST} without rate-limit headers (efficiency and"
            " 429s of all together)",
            _PROCS_HEADER,
            [_procs_cells(r) for r in procs],
        )
        for text in (
            "shared: the default store (SQLite under one XDG_STATE_HOME for all); redis:"
            " --rate-store redis://127.0.0.1:PORT/0, an XDG_STATE_HOME each; uncoordinated:"
            " --rate-store none; discover: --rate none, the default store.",
            "ideal s: (IDs - the burst + 1 the limiter lets through at once) / limit; span s:"
            " first to last rerun request as the simulator saw them; spans s: each process's"
            " own, by its IDs.",
            "budget: the limit each process's summary ended on (rate_budget_per_s and _source)"
            " and how many took their slots from the shared schedule.",
        ):
            report.note(text)
    if crons:
        report.add(
            "SHARED BUDGET, CRON  a `--rate none` run learns the limit and publishes it; a"
            " second one on the same state directory, straight after: its first minute",
            _CRON_HEADER,
            [_cron_cells(r) for r in crons],
        )
        report.note(
            f"first run: its IDs accepted in its span; published: rate_budget_per_s and"
            f" _source of its summary; minute: the second run's requests from its first one"
            f" for {MINUTE_S:.0f} s, as the simulator saw them; efficiency: accepted in the"
            f" minute / ({LIMIT:g}/s x {MINUTE_S:.0f} s)."
        )
    if costs:
        report.add(
            f"SHARED BUDGET, COST  {RESERVE_CALLS:,} `reserve()` calls one after another, a"
            f" fresh key, stated rate {RESERVE_RATE:g}/s (no slot waits), after"
            f" {RESERVE_WARMUP} not counted",
            ["store", "calls", "mean µs", "median µs", "p99 µs", "max µs", "mean", "verdict"],
            _costs_rows(costs),
        )
        report.note("In the bench's own process, with nothing else of ours running.")
    if found is not None:
        report.add(
            "SHARED BUDGET, UNTOUCHED  the throughput client (`--rate none`, no limit known):"
            f" --rate-store auto against none, median of {len(found.auto)} alternating runs",
            ["client", "req/s", "CPU µs/req", "store after", f"≥ {UNTOUCHED_RATIO:.2f}, unwritten"],
            _untouched_rows(found),
        )
        report.note(
            "store after: schedules in the auto runs' SQLite files (each run a fresh"
            " XDG_STATE_HOME); none means the store was opened and read, never written."
        )
    for text in notes:
        report.note(text)


# ---- the section -------------------------------------------------------------------------


def _tell(total: int) -> Callable[[Result | CronResult | RowError], None]:
    done = 0

    def tell(result: Result | CronResult | RowError) -> None:
        nonlocal done
        done += 1
        head = f"shared {done}/{total} {result.row.label}"
        if isinstance(result, RowError):
            progress(f"{head}: {result.error}")
        elif isinstance(result, CronResult):
            found = cron_misses(result.row, result.outcome)
            progress(
                f"{head}: published {result.outcome.published}, minute efficiency"
                f" {minute_efficiency(result.row, result.outcome.minute):.3f},"
                f" {result.outcome.minute.refused} 429s, {verdict(not found, ', '.join(found))}"
            )
        else:
            outcome = result.outcome
            progress(
                f"{head}: span {outcome.span_s:.1f} s, efficiency"
                f" {efficiency(result.row, outcome):.2f}, 429s {outcome.share_429:.1%},"
                f" {cells(result)['verdict']}"
            )

    return tell


@contextlib.contextmanager
def _redis(work: Path) -> Iterator[tuple[str | None, str | None]]:
    """(the URL of a redis-server of ours, None) or (None, why there is none)."""
    why = RedisServer.available()
    if why is not None:
        yield None, why
        return
    with RedisServer(work / "redis") as server:
        yield server.url, None


def section(
    report: Report,
    work: Path,
    patterns: Sequence[str],
    parallel: int,
    *,
    throughput: Throughput | None = None,
    runs: int = 3,
) -> None:
    """Run the section's rows (those `patterns` pick) and cost measurements; add its blocks."""
    work = work / "shared"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    notes: list[str] = []
    with _redis(work) as (redis_url, why):
        if why is not None:
            notes.append(f"no redis rows: {why}.")
        costs: list[Costs] = []
        if wanted(COST_RESERVE, patterns):
            costs = reserve_costs(work / "reserve", redis_url)
        found = None
        if throughput is not None and wanted(COST_THROUGHPUT, patterns):
            found = untouched(throughput, work, runs)
        rows = pick(shared_rows(redis_url), patterns) if patterns else shared_rows(redis_url)
        progress(f"shared: {len(rows)} rows, {parallel} at once")
        with CpuSampler().running() as cpu:
            results = run_rows(rows, work, parallel, _tell(len(rows)), run_shared)
    peak, peak_at = cpu.peak()
    if rows:
        notes.append(
            f"{len(rows)} rows in {time.monotonic() - started:.0f} s with the costs,"
            f" {parallel} at once; machine CPU while the rows ran (every process, ours or"
            f" not): mean {cpu.mean:.0%}, busiest 5 s {peak:.0%} (from {peak_at} s in)."
        )
    add_blocks(report, results, costs, found, notes)
