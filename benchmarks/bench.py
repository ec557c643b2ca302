"""`make bench`: how much the orchestrator costs over a bare client, in one table.

    python -m benchmarks.bench [--base-url URL] [--ids 20000] [--runs 3] [--only SECTION ...]

Everything runs as real processes on loopback: the servers (`benchmarks.servers`), the
orchestrator as its CLI (`python -m orchestrator rerun`, durable ledger, default fsync and
logging), the bare aiohttp loop (`benchmarks.bare_client`) and `xargs -P 64 curl`. Peak RSS
and CPU are the kernel's account of each child (`os.wait4`); the servers' CPU is read from
/proc, to tell when the server rather than the client is what limits a figure.

Sections (each can be picked with --only): throughput, curl, memory, resume, ratelimit,
shared (the token's rate budget shared by several processes: `benchmarks.shared`).

Every orchestrator process gets an XDG_STATE_HOME under the work directory, so that the
default `--rate-store auto` neither reads a limit left in ~/.local/state nor leaves one.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import urlsplit

from benchmarks import ratelimit, shared
from benchmarks.procs import Finished, Server, child_env, run_measured
from benchmarks.ratelimit import SLOW_PER_FAST
from benchmarks.ratematrix import Row, matrix, pick
from benchmarks.servers import TOKEN
from benchmarks.shared import COST_RESERVE, COST_THROUGHPUT, ThroughputRun, shared_rows, wanted
from benchmarks.table import Report, progress, verdict
from benchmarks.workload import write_ids, write_ledger

SECTIONS: Final = ("throughput", "curl", "memory", "resume", "ratelimit", "shared")
# A server using this share of one core or more is taken to be what limits the figure.
SATURATED: Final = 0.85
# The targets.
RATIO_TARGET: Final = 0.8
DRY_RUN_RSS_MB: Final = 150
REAL_RUN_RSS_MB: Final = 120
RESUME_RSS_MB: Final = 200
RESUME_S: Final = 5.0


@dataclass(frozen=True)
class Options:
    base_url: str | None
    token: str
    ids: int
    runs: int
    concurrency: int
    curl_ids: int
    dry_run_ids: int
    real_run_ids: int
    ledger_lines: int
    rate_rows: tuple[Row, ...]
    rate_parallel: int
    shared_patterns: tuple[str, ...]
    shared_parallel: int
    sections: tuple[str, ...]
    work: Path


# ---- running the contenders ---------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """One run of one client: what it cost and whether it did the whole job."""

    finished: Finished
    count: int
    complete: bool  # every ID accepted
    server_cpu_s: float | None = None
    summary: dict[str, object] = field(default_factory=dict)

    @property
    def per_s(self) -> float:
        return self.count / self.finished.wall_s

    @property
    def cpu_us(self) -> float:
        return self.finished.cpu_s / self.count * 1e6

    @property
    def server_share(self) -> float | None:
        if self.server_cpu_s is None:
            return None
        return self.server_cpu_s / self.finished.wall_s


def _summary(stderr: Path) -> dict[str, object]:
    """The orchestrator's `rerun.summary` log event, or {} when there is none."""
    lines = stderr.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "rerun.summary":
                return event
    return {}


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def orchestrator(
    opts: Options,
    ids: Path,
    base_url: str,
    *extra: str,
    timeout_s: float = 240,
    state_home: Path | None = None,
) -> Measured:
    """`orchestrator rerun` as an operator runs it; a fresh ledger, removed afterwards, and
    a fresh XDG_STATE_HOME (removed too, unless it is `state_home`)."""
    ledger = opts.work / "ledger.jsonl"
    ledger.unlink(missing_ok=True)
    state = opts.work / "state" if state_home is None else state_home
    if state_home is None:
        shutil.rmtree(state, ignore_errors=True)
    stderr = opts.work / "orchestrator.stderr"
    count = sum(1 for _ in ids.open("rb"))
    argv = [sys.executable, "-m", "orchestrator", "rerun", str(ids), "--base-url", base_url]
    argv += ["--ledger", str(ledger), "--concurrency", str(opts.concurrency), *extra]
    env = child_env(opts.token, state_home=state)
    with stderr.open("wb") as err:
        done = run_measured(argv, env=env, stderr=err, timeout_s=timeout_s)
    ledger.unlink(missing_ok=True)
    if state_home is None:
        shutil.rmtree(state, ignore_errors=True)
    summary = _summary(stderr)
    succeeded = _count(summary.get("succeeded"))
    return Measured(done, count, done.code == 0 and succeeded == count, summary=summary)


def bare(opts: Options, ids: Path, base_url: str) -> Measured:
    out = opts.work / "bare.stdout"
    count = sum(1 for _ in ids.open("rb"))
    argv = [sys.executable, "-m", "benchmarks.bare_client", str(ids), base_url]
    argv += ["--concurrency", str(opts.concurrency)]
    with out.open("wb") as stdout:
        done = run_measured(argv, env=child_env(opts.token), stdout=stdout, timeout_s=240)
    ok = 0
    with contextlib.suppress(ValueError):
        ok = _count(json.loads(out.read_text() or "{}").get("ok"))
    return Measured(done, count, done.code == 0 and ok == count)


def curl(opts: Options, ids: Path, base_url: str) -> Measured:
    """`xargs -P N curl`: one curl process per ID, the token in a header file, not in argv."""
    headers = opts.work / "curl-headers"
    headers.write_text(f"Authorization: Bearer {opts.token}\nAccept: application/json\n")
    headers.chmod(0o600)
    out = opts.work / "curl.stdout"
    count = sum(1 for _ in ids.open("rb"))
    url = f"{base_url}/workflows/runs/{{}}/rerun"
    argv = ["xargs", "-P", str(opts.concurrency), "-I{}", "curl", "-s", "-o", "/dev/null"]
    argv += ["-w", "%{http_code}\\n", "-X", "POST", "-H", f"@{headers}", url]
    with ids.open("rb") as stdin, out.open("wb") as stdout:
        done = run_measured(argv, env=child_env(), stdin=stdin, stdout=stdout, timeout_s=240)
    headers.unlink()
    accepted = out.read_text().split().count("202")
    return Measured(done, count, done.code == 0 and accepted == count)


def on_server(server: Server | None, run: Callable[[], Measured]) -> Measured:
    """Run a client, adding how much CPU the server spent meanwhile (when it is ours)."""
    if server is None:
        return run()
    before = server.cpu_s()
    measured = run()
    return Measured(
        measured.finished,
        measured.count,
        measured.complete,
        server.cpu_s() - before,
        measured.summary,
    )


# ---- sections -----------------------------------------------------------------------------


@contextlib.contextmanager
def target(opts: Options, kind: str, *args: str) -> Iterator[tuple[str, Server | None]]:
    """The server to measure against: --base-url if given, else one of ours."""
    if opts.base_url is not None:
        yield opts.base_url, None
        return
    with Server(kind, *args, log=opts.work / f"server-{kind}.log") as server:
        yield server.base_url, server


def _median(runs: Sequence[Measured], key: Callable[[Measured], float | None]) -> float | None:
    values = [v for v in map(key, runs) if v is not None]
    return statistics.median(values) if values else None


def _flag(runs: Sequence[Measured]) -> str:
    bad = sum(not r.complete for r in runs)
    return "" if not bad else f" !{bad} incomplete"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def throughput(opts: Options, report: Report) -> float | None:
    """Bare loop and orchestrator, alternating, on each server; the medians' ratio.

    Returns the orchestrator's median req/s on the default server, for the curl section."""
    kinds = ["given"] if opts.base_url else ["sim", "static"]
    names = {"given": opts.base_url or "", "sim": "simulator", "static": "static"}
    rows: list[list[str]] = []
    notes: list[str] = []
    orchestrator_per_s: float | None = None
    seed = 1000
    for kind in kinds:
        with target(opts, kind) as (base_url, server):
            runs: dict[str, list[Measured]] = {"bare": [], "orchestrator": []}
            for n in range(1, opts.runs + 1):
                for client in ("bare", "orchestrator"):
                    seed += 1
                    ids = write_ids(opts.work / "ids.txt", opts.ids, seed)
                    if client == "bare":
                        run = functools.partial(bare, opts, ids, base_url)
                    else:
                        run = functools.partial(orchestrator, opts, ids, base_url, "--rate", "none")
                    measured = on_server(server, run)
                    runs[client].append(measured)
                    progress(
                        f"throughput {names[kind]} {client} {n}/{opts.runs}: "
                        f"{measured.per_s:,.0f}/s{_flag([measured])}"
                    )
        bare_s = _median(runs["bare"], lambda m: m.per_s)
        orch_s = _median(runs["orchestrator"], lambda m: m.per_s)
        assert bare_s is not None
        assert orch_s is not None
        if kind != "static":
            orchestrator_per_s = orch_s
        for client, label in (("bare", "bare aiohttp loop"), ("orchestrator", "orchestrator")):
            rows.append(
                [
                    names[kind],
                    label,
                    f"{_median(runs[client], lambda m: m.per_s):,.0f}{_flag(runs[client])}",
                    f"{_median(runs[client], lambda m: m.cpu_us):,.0f}",
                    _share(_median(runs[client], lambda m: m.server_share)),
                    f"{_median(runs[client], lambda m: m.finished.peak_rss_mb):.0f}",
                    "",
                ]
            )
        ratio = orch_s / bare_s
        bare_share = _median(runs["bare"], lambda m: m.server_share)
        bound = bare_share is not None and bare_share >= SATURATED
        judged = verdict(ratio >= RATIO_TARGET, f"{ratio / RATIO_TARGET - 1:+.0%} of target")
        rows.append([names[kind], "ratio orchestrator / bare", f"{ratio:.2f}", "", "", "", judged])
        if bound:
            notes.append(
                f"{names[kind]}: the server used {bare_share:.0%} of a core during the bare runs:"
                " it, not the client, limits the bare figure, so this ratio flatters the"
                " orchestrator."
            )
        elif server is not None:
            notes.append(f"{names[kind]}: the server is not the limit (under {SATURATED:.0%}).")
    report.add(
        f"THROUGHPUT  {opts.ids:,} IDs a run, concurrency {opts.concurrency}, no rate limit,"
        f" median of {opts.runs} alternating runs",
        ["server", "client", "req/s", "CPU µs/req", "server CPU", "peak MB", "ratio ≥ 0.80"],
        rows,
        labels=2,
    )
    for text in notes:
        report.note(text)
    report.note("CPU µs/req: the client process's user+system time, start-up included.")
    return orchestrator_per_s


def curl_section(opts: Options, report: Report, orchestrator_per_s: float | None) -> None:
    if shutil.which("curl") is None or shutil.which("xargs") is None:
        report.add("CURL", ["skipped"], [["curl or xargs is not installed"]])
        return
    runs: list[Measured] = []
    with target(opts, "sim") as (base_url, server):
        for n in range(1, opts.runs + 1):
            ids = write_ids(opts.work / "ids.txt", opts.curl_ids, 5000 + n)
            runs.append(on_server(server, functools.partial(curl, opts, ids, base_url)))
            progress(f"curl {n}/{opts.runs}: {runs[-1].per_s:,.0f}/s{_flag(runs[-1:])}")
    per_s = _median(runs, lambda m: m.per_s)
    assert per_s is not None
    rows = [
        [
            f"xargs -P {opts.concurrency} curl",
            f"{per_s:,.0f}{_flag(runs)}",
            f"{_median(runs, lambda m: m.cpu_us):,.0f}",
            _share(_median(runs, lambda m: m.server_share)),
        ]
    ]
    if orchestrator_per_s is not None:
        rows.append(["orchestrator / curl", f"{orchestrator_per_s / per_s:.1f} times", "", ""])
    report.add(
        f"CURL  {opts.curl_ids:,} IDs a run (one process per ID, so its rate is flat),"
        f" median of {opts.runs}",
        ["client", "req/s", "CPU µs/req", "server CPU"],
        rows,
    )
    report.note("CPU µs/req: xargs and every curl it started; both cores are busy with it.")


def memory(opts: Options, report: Report) -> None:
    rows: list[list[str]] = []
    progress(f"memory: writing {opts.dry_run_ids:,} IDs")
    ids = write_ids(opts.work / "dry-ids.txt", opts.dry_run_ids, 77)
    argv = [sys.executable, "-m", "orchestrator", "rerun", str(ids), "--dry-run"]
    argv += ["--ledger", str(opts.work / "absent.jsonl")]
    dry = run_measured(argv, env=child_env(state_home=opts.work / "state"), timeout_s=240)
    progress(f"memory: dry run {dry.peak_rss_mb:.0f} MB, {dry.wall_s:.1f} s")
    rows.append(
        [
            f"dry run, {opts.dry_run_ids:,} IDs",
            f"{dry.peak_rss_mb:.0f}",
            f"{dry.wall_s:.1f}",
            f"≤ {DRY_RUN_RSS_MB} MB",
            verdict(
                dry.code in (0, 1) and dry.peak_rss_mb <= DRY_RUN_RSS_MB,
                f"{dry.peak_rss_mb - DRY_RUN_RSS_MB:+.0f} MB" if dry.code in (0, 1) else "failed",
            ),
        ]
    )
    ids = write_ids(opts.work / "real-ids.txt", opts.real_run_ids, 78)
    with target(opts, "static") as (base_url, _):
        real = orchestrator(opts, ids, base_url, "--rate", "none", timeout_s=400)
    progress(f"memory: real run {real.finished.peak_rss_mb:.0f} MB, {real.finished.wall_s:.1f} s")
    where = "--base-url" if opts.base_url else "static server"
    rows.append(
        [
            f"real run, {opts.real_run_ids:,} IDs ({where})",
            f"{real.finished.peak_rss_mb:.0f}",
            f"{real.finished.wall_s:.1f}",
            f"≤ {REAL_RUN_RSS_MB} MB",
            verdict(
                real.complete and real.finished.peak_rss_mb <= REAL_RUN_RSS_MB,
                f"{real.finished.peak_rss_mb - REAL_RUN_RSS_MB:+.0f} MB"
                if real.complete
                else "incomplete",
            ),
        ]
    )
    report.add(
        "MEMORY  the orchestrator CLI, peak RSS of the whole process",
        ["run", "peak MB", "wall s", "target", "verdict"],
        rows,
    )


def resume(opts: Options, report: Report) -> None:
    progress(f"resume: writing a {opts.ledger_lines:,}-line ledger")
    ledger = opts.work / "big-ledger.jsonl"
    held = write_ledger(ledger, opts.ledger_lines, 79)
    empty = opts.work / "empty.txt"
    empty.write_bytes(b"")
    rows: list[list[str]] = []
    for label, path in (
        ("start-up alone (empty ledger)", opts.work / "absent.jsonl"),
        (f"{opts.ledger_lines:,}-line ledger ({held:,} IDs)", ledger),
    ):
        argv = [sys.executable, "-m", "orchestrator", "rerun", str(empty), "--dry-run"]
        env = child_env(state_home=opts.work / "state")
        done = run_measured([*argv, "--ledger", str(path)], env=env, timeout_s=120)
        progress(f"resume: {label}: {done.peak_rss_mb:.0f} MB, {done.wall_s:.1f} s")
        judged = ""
        if path == ledger:
            misses = []
            if done.peak_rss_mb > RESUME_RSS_MB:
                misses.append(f"{done.peak_rss_mb - RESUME_RSS_MB:+.0f} MB")
            if done.wall_s > RESUME_S:
                misses.append(f"{done.wall_s - RESUME_S:+.1f} s")
            if done.code != 0:
                misses.append(f"exit {done.code}")
            judged = verdict(not misses, ", ".join(misses))
        rows.append([label, f"{done.peak_rss_mb:.0f}", f"{done.wall_s:.1f}", judged])
    ledger.unlink()
    report.add(
        "RESUME  `rerun --dry-run` of an empty input: replaying the ledger is all it does",
        ["ledger", "peak MB", "wall s", f"≤ {RESUME_RSS_MB} MB, ≤ {RESUME_S:.0f} s"],
        rows,
    )


def store_throughput(opts: Options, store: str, state_home: Path) -> ThroughputRun:
    """One run of the throughput section's orchestrator client (the static server, or
    --base-url), `--rate none` and this `--rate-store`, for the shared section."""
    ids = write_ids(opts.work / "ids.txt", opts.ids, 9000)
    with target(opts, "static") as (base_url, server):
        run = functools.partial(
            orchestrator,
            opts,
            ids,
            base_url,
            "--rate",
            "none",
            "--rate-store",
            store,
            state_home=state_home,
        )
        measured = on_server(server, run)
    return ThroughputRun(measured.per_s, measured.cpu_us, measured.complete)


# ---- the run ------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"orchestrator bench, {when}: {cpu}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, {platform.system()} {platform.release()},"
        f" load average {load:.2f} at start"
    )


def _loopback_url(text: str) -> str:
    parts = urlsplit(text)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL on loopback (127.0.0.0/8, ::1 or localhost):"
            " the benchmark sends thousands of requests and only ever to this machine"
        )
    return text.rstrip("/")


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression: {exc}") from None
    return text


class _Parser(argparse.ArgumentParser):
    """One line on a mistake, as the orchestrator's own CLI does, not the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _reachable(base_url: str) -> bool:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=5).close()
    except OSError:
        return False
    return True


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, str]:
    parser = _Parser(
        prog="python -m benchmarks.bench",
        description="The orchestrator against a bare aiohttp loop and curl, on loopback.",
    )
    add = parser.add_argument
    add(
        "--base-url",
        type=_loopback_url,
        metavar="URL",
        help="measure against this loopback server (token from $ALTOSTRAT_TOKEN) instead of"
        " the embedded simulator and the static server",
    )
    add("--ids", type=_positive, default=20_000, metavar="N", help="IDs a throughput run")
    add("--runs", type=_positive, default=3, metavar="N", help="runs of each client")
    add("--concurrency", type=_positive, default=64, metavar="N")
    add("--curl-ids", type=_positive, default=1_000, metavar="N", help="IDs a curl run")
    add("--dry-run-ids", type=_positive, default=1_000_000, metavar="N")
    add("--real-run-ids", type=_positive, default=200_000, metavar="N")
    add("--ledger-lines", type=_positive, default=1_000_000, metavar="N")
    add(
        "--rate-rows",
        nargs="+",
        type=_pattern,
        default=[],
        metavar="PATTERN",
        help="ratelimit: only the rows whose label matches one of these regular expressions"
        " (e.g. 'gcra-b0 ' or '^procs')",
    )
    add(
        "--rate-parallel",
        type=_positive,
        default=6,
        metavar="N",
        help=f"ratelimit: rows at 10 r/s or more run N at once, slower ones {SLOW_PER_FAST}N",
    )
    add(
        "--shared-rows",
        nargs="+",
        type=_pattern,
        default=[],
        metavar="PATTERN",
        help="shared: only the rows whose label matches one of these regular expressions"
        f" (e.g. '^redis' or '^cron'); '{COST_RESERVE}' and '{COST_THROUGHPUT}' name the"
        " cost measurements, which run only when picked or when no pattern is given",
    )
    add(
        "--shared-parallel",
        type=_positive,
        default=2,
        metavar="N",
        help="shared: rows run N at once",
    )
    add(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        metavar="SECTION",
        help=f"run only these: {', '.join(SECTIONS)}",
    )
    add("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.rate_rows = pick(matrix(), args.rate_rows)
    if not args.rate_rows:
        parser.error("no ratelimit row matches --rate-rows")
    shared_names = [r.label for r in shared_rows("redis://127.0.0.1:6379/0")]
    if not any(wanted(n, args.shared_rows) for n in [*shared_names, COST_RESERVE, COST_THROUGHPUT]):
        parser.error("no shared row matches --shared-rows")
    token = TOKEN
    if args.base_url is not None:
        token = os.environ.get("ALTOSTRAT_TOKEN", "").strip()
        if not token:
            parser.error("--base-url needs the server's token in $ALTOSTRAT_TOKEN")
        if not _reachable(args.base_url):
            parser.error(f"nothing answers at {args.base_url}")
    return args, token


def main(argv: Sequence[str] | None = None) -> int:
    args, token = parse(argv)
    work = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    opts = Options(
        base_url=args.base_url,
        token=token,
        ids=args.ids,
        runs=args.runs,
        concurrency=args.concurrency,
        curl_ids=args.curl_ids,
        dry_run_ids=args.dry_run_ids,
        real_run_ids=args.real_run_ids,
        ledger_lines=args.ledger_lines,
        rate_rows=tuple(args.rate_rows),
        rate_parallel=args.rate_parallel,
        shared_patterns=tuple(args.shared_rows),
        shared_parallel=args.shared_parallel,
        sections=tuple(args.only),
        work=work,
    )
    header = machine()
    report = Report()
    started = time.monotonic()
    # SIGTERM stops as Ctrl-C does: children killed, the work directory removed. (SIGINT
    # itself may arrive ignored, in a background job of a script: take it back too.)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        orchestrator_per_s = None
        if "throughput" in opts.sections:
            orchestrator_per_s = throughput(opts, report)
        if "curl" in opts.sections:
            curl_section(opts, report, orchestrator_per_s)
        if "memory" in opts.sections:
            memory(opts, report)
        if "resume" in opts.sections:
            resume(opts, report)
        if "ratelimit" in opts.sections:
            ratelimit.section(report, work, opts.rate_rows, opts.rate_parallel)
        if "shared" in opts.sections:
            shared.section(
                report,
                work,
                opts.shared_patterns,
                opts.shared_parallel,
                throughput=functools.partial(store_throughput, opts),
                runs=opts.runs,
            )
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            progress(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(header)
    print(f"took {time.monotonic() - started:.0f} s; command: python -m benchmarks.bench", end="")
    print("".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])))
    for block in report.blocks:
        print()
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
