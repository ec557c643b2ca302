"""Where the orchestrator's time goes per request, from a sampling profile of the real CLI.

    python -m benchmarks.profile [--ids 40000] [--top 30] [--keep]

Runs `orchestrator rerun` (no rate limit, concurrency 64) against the static server under
py-spy in `--gil` mode, which samples only the thread holding the GIL, so the samples add
up to the CPU the interpreter spends; then prints microseconds per request by where they
go: inside aiohttp's request machinery, the event loop, imports, or the deepest frame of
our own code and what it called. With --keep the raw samples stay, for `flamegraph.pl`.

py-spy is installed into this environment on first use (pip), not listed as a dependency:
only this script needs it, and it profiles a process from outside, so the orchestrator
runs unmodified.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from benchmarks.procs import REPO, Server, child_env
from benchmarks.servers import TOKEN
from benchmarks.workload import write_ids

_RATE_HZ: Final = 500
_AIOHTTP: Final = ("ClientSession._request", "_BaseRequestContextManager")
_ENTRY: Final = ("orchestrator/__main__.py", "orchestrator/cli.py", "orchestrator/commands/")


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None and importlib.util.find_spec("py_spy") is None:
        print("profile: installing py-spy into this environment", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
        found = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("profile: py-spy is not installed and could not be")
    return found


def _name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def breakdown(raw: Path, requests: int) -> list[tuple[float, str]]:
    """Microseconds per request for each place, largest first, from py-spy's raw output."""
    samples: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("_run_module_as_main"):
            samples["(other threads)"] += int(count)
            continue
        joined = ";".join(frames)
        own = [
            i
            for i, frame in enumerate(frames)
            if "orchestrator/" in frame and not any(e in frame for e in _ENTRY)
        ]
        if "_find_and_load" in joined:
            place = "(imports, start-up)"
        elif any(a in joined for a in _AIOHTTP):
            place = "(aiohttp: building, sending and reading the request)"
        elif not own:
            place = "(event loop, asyncio, anyio)"
        else:
            deepest = own[-1]
            callee = _name(frames[deepest + 1]) if deepest + 1 < len(frames) else "(self)"
            place = f"{_name(frames[deepest])} -> {callee}"
        samples[place] += int(count)
    per_sample_us = 1e6 / _RATE_HZ / requests
    return [(n * per_sample_us, place) for place, n in samples.most_common()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--ids", type=int, default=40_000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    py_spy = _py_spy()
    work = Path(tempfile.mkdtemp(prefix="orchestrator-profile-"))
    try:
        ids = write_ids(work / "ids.txt", args.ids, 4242)
        raw = work / "profile.txt"
        with Server("static", log=work / "server.log") as server:
            orchestrator = [sys.executable, "-m", "orchestrator", "rerun", str(ids)]
            orchestrator += ["--base-url", server.base_url, "--ledger", str(work / "l.jsonl")]
            orchestrator += ["--concurrency", "64", "--rate", "none"]
            record = [py_spy, "record", "--gil", "--rate", str(_RATE_HZ), "--format", "raw"]
            subprocess.run(  # noqa: S603
                [*record, "-o", str(raw), "--", *orchestrator],
                env=child_env(TOKEN),
                cwd=REPO,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        rows = breakdown(raw, args.ids)
        total = sum(us for us, _ in rows)
        print(f"{total:6.1f} µs/request in all (GIL-holding samples, {args.ids:,} requests)")
        for us, place in rows[: args.top]:
            print(f"{us:6.1f}  {place}")
    finally:
        if args.keep:
            print(f"raw samples: {work / 'profile.txt'}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
