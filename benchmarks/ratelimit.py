"""The `ratelimit` section of `make bench`: the matrix of `benchmarks.ratematrix`, run.

Each row gets a simulator of its own (`benchmarks.servers sim` with the row's limiter) and
its `orchestrator rerun` processes, each with its own IDs and ledger, at the client's
default concurrency, with the row's `--rate-store` (none for this matrix) and an
XDG_STATE_HOME of its own under the row's work directory (one for all of them when the row
shares it). When they end (or are killed at the row's timeout) the simulator's
request log (`/_sim/requests`) gives what the server saw: the span from the first rerun
request to the last, the 429s, the IDs accepted, each process's span by its run IDs, and
how soon the client got back to the limit after background load stopped.

Rows run side by side, since 50 requests/s load a core little, but boundedly: a starved
CPU would delay the client's timers and the server's clock readings alike and make the
client look worse than it is. Long rows at 2 r/s load nothing and get a pool of their own,
starts are spaced so that process start-ups do not pile up, and the machine's CPU is
sampled throughout and reported.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from benchmarks.procs import Finished, Server, child_env, run_measured
from benchmarks.ratematrix import KINDS, Kind, Outcome, Row, efficiency, misses
from benchmarks.serverlog import Arrival, Seen, recovery_s, reruns, seen
from benchmarks.servers import TOKEN
from benchmarks.table import Report, progress, verdict
from benchmarks.workload import write_ids

# Enough for any row's requests, 429 storms included, until its timeout.
REQUEST_LOG: Final = 300_000
RECOVERY_LEVEL: Final = 0.9
# Seconds between two rows' starts: each starts two Python processes (more for the
# procs rows), and a start-up takes most of a core for about a second.
START_SPACING_S: Final = 2.5
# Rows at a few requests a second cost the machine nothing but start-ups.
SLOW_PER_FAST: Final = 5
CPU_BUSY_WARNING: Final = 0.85


@dataclass(frozen=True)
class Result:
    row: Row
    all: Seen
    procs: tuple[Seen, ...]
    ended_at: float  # monotonic: when the last client ended or was killed
    clients: tuple[Finished, ...]
    background: dict[str, Any] | None  # the simulator's account of the background client
    recovery_s: float | None
    server_cpu: float  # share of one core, over the clients' run
    summaries: tuple[dict[str, Any], ...] = ()  # each client's --summary-json, {} if none

    @property
    def timed_out(self) -> bool:
        return any(c.timed_out for c in self.clients)

    @property
    def outcome(self) -> Outcome:
        until = self.ended_at if self.timed_out else None
        spans = [p.span_s(until) for p in self.procs]
        ratio = max(spans) / min(spans) if len(spans) > 1 and min(spans) > 0 else None
        return Outcome(
            span_s=self.all.span_s(until),
            share_429=self.all.share_429,
            done=self.all.accepted_ids,
            timed_out=self.timed_out,
            ratio=ratio,
            recovery_s=self.recovery_s,
        )


@dataclass(frozen=True)
class RowError:
    """A row that could not be run or read back; the others go on."""

    row: Row
    error: str


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - our loopback sim
        body = json.load(answer)
    if not isinstance(body, dict):
        raise RuntimeError(f"{url} did not answer a JSON object")  # noqa: TRY004 - see RowError
    return body


class Interrupted(RuntimeError):
    """The section is stopping (Ctrl-C): no row starts any more."""


class Runner:
    """What the rows share: the gate that spaces their starts, and the client processes
    alive, so that Ctrl-C ends them at once instead of at their timeouts."""

    def __init__(self, spacing_s: float) -> None:
        self._spacing = spacing_s
        self._lock = threading.Lock()  # held only for a moment: never while waiting
        self._next = 0.0
        self._stopping = threading.Event()
        self._children: set[subprocess.Popen[bytes]] = set()

    def wait_turn(self) -> None:
        """Return when this row may start: `spacing_s` after the one before it."""
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._spacing
        if self._stopping.wait(turn - now):
            raise Interrupted("stopping")

    def started(self, child: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._children.add(child)
            if self._stopping.is_set():
                child.kill()

    def stop(self) -> None:
        """Start no more rows and kill every client still running."""
        self._stopping.set()
        with self._lock:
            for child in self._children:
                if child.returncode is None:
                    with contextlib.suppress(OSError):
                        child.kill()


def state_home(row: Row, work: Path, name: str) -> Path:
    """The XDG_STATE_HOME of client `name`: the row's one, or a fresh one of its own."""
    return work / ("state" if row.shared_state else f"state-{name}")


def summary_path(work: Path, name: str) -> Path:
    return work / f"summary-{name}.json"


def run_client(
    row: Row,
    work: Path,
    name: str,
    ids: Path,
    *,
    base_url: str,
    runner: Runner,
    timeout_s: float | None = None,
) -> Finished:
    """One `orchestrator rerun` of the row: its flags, the row's --rate-store, its own
    ledger, stderr and summary file named by `name`, and its XDG_STATE_HOME."""
    argv = [sys.executable, "-m", "orchestrator", "rerun", str(ids), "--base-url", base_url]
    argv += ["--ledger", str(work / f"ledger-{name}.jsonl"), "--rate-store", row.store]
    argv += ["--summary-json", str(summary_path(work, name)), *row.client]
    if os.environ.get("BENCH_CLIENT_DEBUG"):  # a row's every pacing decision, for study
        argv += ["--log-level", "debug"]
    with (work / f"client-{name}.stderr").open("wb") as err:
        return run_measured(
            argv,
            env=child_env(TOKEN, state_home=state_home(row, work, name)),
            stderr=err,
            timeout_s=row.timeout_s if timeout_s is None else timeout_s,
            on_start=runner.started,
        )


def read_summary(work: Path, name: str) -> dict[str, Any]:
    """Client `name`'s --summary-json, or {} when it wrote none (killed, or failed early)."""
    try:
        summary = json.loads(summary_path(work, name).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def read_log(server: Server, work: Path) -> tuple[list[Arrival], dict[str, Any]]:
    """The rerun requests the simulator saw, and its stats; the whole log is kept in the
    row's work directory too (requests.json: see --keep)."""
    log = _get_json(f"{server.base_url}/_sim/requests")
    stats = _get_json(f"{server.base_url}/_sim/stats")
    (work / "requests.json").write_text(json.dumps(log, separators=(",", ":")))
    return reruns(log), stats


def row_server(row: Row, work: Path) -> Server:
    """The row's simulator, with a request log long enough for all of the row."""
    server_args = (*row.server, "--request-log", str(REQUEST_LOG))
    return Server("sim", *server_args, log=work / "server.log")


def id_files(row: Row, work: Path) -> list[Path]:
    """Each process's IDs: distinct, and the same for a row from run to run."""
    seed = zlib.crc32(row.label.encode())
    return [write_ids(work / f"ids-{n}.txt", row.ids, seed + n) for n in range(row.procs)]


def run_row(row: Row, work: Path, runner: Runner) -> Result:
    """Run one row: its simulator, its clients to their end or timeout, then read the log."""
    work.mkdir(parents=True, exist_ok=True)
    files = id_files(row, work)
    runner.wait_turn()
    with row_server(row, work) as server:
        cpu_before, started = server.cpu_s(), time.monotonic()

        def client(n: int) -> Finished:
            return run_client(row, work, str(n), files[n], base_url=server.base_url, runner=runner)

        with concurrent.futures.ThreadPoolExecutor(max_workers=row.procs) as pool:
            clients = tuple(pool.map(client, range(row.procs)))
        ended = time.monotonic()
        cpu = (server.cpu_s() - cpu_before) / max(ended - started, 1e-9)
        arrivals, stats = read_log(server, work)
    background = stats.get("background")
    return Result(
        row=row,
        all=seen(arrivals),
        procs=tuple(
            seen(arrivals, set(path.read_text().split()))
            for path in (files if row.procs > 1 else [])
        ),
        ended_at=ended,
        clients=clients,
        background=background,
        recovery_s=_recovery(row, arrivals, background),
        server_cpu=cpu,
        summaries=tuple(read_summary(work, str(n)) for n in range(row.procs)),
    )


def _recovery(row: Row, arrivals: Sequence[Arrival], background: object) -> float | None:
    if row.background is None or not isinstance(background, dict):
        return None
    stops_at = background.get("stops_at")
    if not isinstance(stops_at, float | int):
        return None
    window = row.background.recovery_window_s
    return recovery_s(arrivals, float(stops_at), row.limit, window, RECOVERY_LEVEL)


class CpuSampler:
    """The whole machine's busy share, from /proc/stat, once a second in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        """(busy, total) jiffies since boot, all CPUs."""
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        busy, total = self._read()
        while not self._stop.wait(1.0):
            now_busy, now_total = self._read()
            if now_total > total:
                self.samples.append((now_busy - busy) / (now_total - total))
            busy, total = now_busy, now_total

    def peak(self, seconds: int = 5) -> tuple[float, int]:
        """The highest average over `seconds` consecutive samples, and how many seconds into
        the sampling that stretch began."""
        if len(self.samples) <= seconds:
            return (sum(self.samples) / len(self.samples) if self.samples else 0.0), 0
        averages = [
            sum(self.samples[i : i + seconds]) / seconds
            for i in range(len(self.samples) - seconds + 1)
        ]
        busiest = max(range(len(averages)), key=averages.__getitem__)
        return averages[busiest], busiest

    @property
    def mean(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[CpuSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


T = TypeVar("T")
RunOne = Callable[[Row, Path, Runner], T]


def _run_or_error(run: RunOne[T], row: Row, work: Path, runner: Runner) -> T | RowError:
    try:
        return run(row, work, runner)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        return RowError(row, f"{type(exc).__name__}: {exc}")


def run_rows(
    rows: Sequence[Row],
    work: Path,
    parallel: int,
    on_result: Callable[[T | RowError], None],
    run: RunOne[T],
) -> list[T | RowError]:
    """Every row, through `run` (`run_row`, or another section's), `parallel` fast ones
    and `SLOW_PER_FAST` times as many slow ones at once, the longest first in each pool so
    the pools end together; the rows that must run `alone` go first, one at a time, with
    nothing beside them (the slow rows' start-ups load the machine most). The results in
    the order of `rows`."""
    runner = Runner(START_SPACING_S)
    results: dict[int, T | RowError] = {}
    fast = concurrent.futures.ThreadPoolExecutor(parallel)
    slow = concurrent.futures.ThreadPoolExecutor(parallel * SLOW_PER_FAST)
    try:
        ordered = sorted(enumerate(rows), key=lambda item: -item[1].timeout_s)
        for n, row in ordered:
            if row.alone:
                results[n] = _run_or_error(run, row, work / f"row-{n:02d}", runner)
                on_result(results[n])
        futures = {
            (slow if row.slow else fast).submit(
                _run_or_error, run, row, work / f"row-{n:02d}", runner
            ): n
            for n, row in ordered
            if not row.alone
        }
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            on_result(result)
    except BaseException:
        runner.stop()  # then the rows running end at once, and stop their simulators
        raise
    finally:
        for pool in (fast, slow):
            pool.shutdown(wait=True, cancel_futures=True)
    return [results[n] for n in range(len(rows))]


# ---- the table ----------------------------------------------------------------------------


def cells(result: Result | RowError) -> dict[str, str]:
    """A row's cells by column name."""
    if isinstance(result, RowError):
        return {"row": result.row.label, "verdict": f"ERROR ({result.error})"}
    row, outcome = result.row, result.outcome
    span = f"{'>' if outcome.timed_out else ''}{outcome.span_s:.1f}"
    found = misses(row, outcome)
    return {
        "row": row.label,
        "IDs": f"{row.total_ids:,}",
        "ideal s": f"{row.ideal_s():.1f}",
        "span s": span,
        "efficiency": f"{efficiency(row, outcome):.2f}",
        "429s": f"{outcome.share_429:.1%}",
        "succeeded": f"{outcome.done:,}",
        "spans s": " / ".join(
            f"{p.span_s(result.ended_at if outcome.timed_out else None):.0f}" for p in result.procs
        ),
        "slowest / fastest": "-" if outcome.ratio is None else f"{outcome.ratio:.2f}",
        "background ok / 429": _background(result.background),
        "back after s": "-" if outcome.recovery_s is None else f"{outcome.recovery_s:.1f}",
        "target": row.target.describe(),
        "verdict": "-" if row.target.none and not found else verdict(not found, ", ".join(found)),
    }


def _background(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats.get('accepted', 0):,} / {stats.get('refused', 0):,}"


_COMMON: Final = ("row", "IDs", "ideal s", "span s", "efficiency", "429s", "succeeded")
_BLOCKS: Final[dict[Kind, tuple[str, tuple[str, ...]]]] = {
    "unknown": (
        "RATE LIMITS, UNKNOWN  `orchestrator rerun IDS --rate none` (concurrency 8), one"
        " process, against each limiter shape",
        (*_COMMON, "target", "verdict"),
    ),
    "known": (
        "RATE LIMITS, KNOWN  `--rate` equal to the limit, no rate-limit headers",
        (*_COMMON, "target", "verdict"),
    ),
    "control": (
        "RATE LIMITS, CONTROL  a client paced under the limit: checks the bench, not the client",
        (*_COMMON, "target", "verdict"),
    ),
    "procs": (
        "RATE LIMITS, PROCESSES  2 and 4 `orchestrator rerun` on one token, no coordination"
        " (efficiency and 429s of all together)",
        (*_COMMON, "spans s", "slowest / fastest", "target", "verdict"),
    ),
    "background": (
        "RATE LIMITS, BACKGROUND  another client of the token takes part of the limit, then stops",
        (*_COMMON, "background ok / 429", "back after s", "target", "verdict"),
    ),
}


def add_blocks(
    report: Report, results: Sequence[Result | RowError], cpu: CpuSampler, took_s: float
) -> None:
    for kind in KINDS:
        mine = [r for r in results if r.row.kind == kind]
        if not mine:
            continue
        title, header = _BLOCKS[kind]
        report.add(title, header, [[cells(r).get(h, "") for h in header] for r in mine])
    for text in (
        "ideal s: (IDs - what the limiter lets through at once from idle) / limit; with"
        " background load, the limit less the load until it stops; for a sliding counter,"
        " the span of a client that sends only what it lets through (it lets through less"
        " than its limit).",
        "span s: first to last rerun request as the simulator saw them (>: cut at the row's"
        " timeout); efficiency: the ideal for the IDs accepted / span.",
        "429s: of the clients' rerun requests; succeeded: distinct IDs the simulator"
        " answered 202; spans s: each process's own, from the simulator's log by its IDs.",
        "back after s: from the background's stop until the client's accepted rate over a"
        f" sliding 1 s (50 r/s) or 5 s (2 r/s) window reaches {RECOVERY_LEVEL:.0%} of the limit.",
    ):
        report.note(text)
    busy = max((r.server_cpu for r in results if isinstance(r, Result)), default=0.0)
    peak, peak_at = cpu.peak()
    report.note(
        f"{len(results)} rows in {took_s:.0f} s; machine CPU while they ran (every process,"
        f" ours or not): mean {cpu.mean:.0%}, busiest 5 s {peak:.0%} (from {peak_at} s in);"
        f" busiest simulator {busy:.0%} of a core."
    )
    if peak >= CPU_BUSY_WARNING:
        report.note(
            "the machine was nearly saturated at times: timing may be distorted; rerun"
            " with a lower --rate-parallel."
        )


def section(report: Report, work: Path, rows: Sequence[Row], parallel: int) -> None:
    """Run `rows` and add their blocks to `report`."""
    done = 0

    def tell(result: Result | RowError) -> None:
        nonlocal done
        done += 1
        if isinstance(result, RowError):
            progress(f"ratelimit {done}/{len(rows)} {result.row.label}: {result.error}")
            return
        outcome = result.outcome
        found = misses(result.row, outcome)
        progress(
            f"ratelimit {done}/{len(rows)} {result.row.label}: span {outcome.span_s:.1f} s"
            f" (ideal {result.row.ideal_s():.1f}), efficiency"
            f" {efficiency(result.row, outcome):.2f}, 429s {outcome.share_429:.1%},"
            f" {verdict(not found, ', '.join(found))}"
        )

    started = time.monotonic()
    alone = sum(row.alone for row in rows)
    progress(
        f"ratelimit: {len(rows)} rows, {parallel} at 10 r/s or more at once"
        f" ({alone} with no burst first, each alone)"
    )
    with CpuSampler().running() as cpu:
        results = run_rows(rows, work / "ratelimit", parallel, tell, run_row)
    add_blocks(report, results, cpu, time.monotonic() - started)
