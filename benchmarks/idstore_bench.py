"""Bytes per ID and operations per second: `orchestrator.ledger.idstore.IdStates` against a dict.

    python -m benchmarks.idstore_bench [--sizes 1000000 10000000]

Each (store, size) runs in a fresh process, so one cannot leave memory to the next. Memory
is the growth of the process's resident set while the store is filled (IDs are made in
small chunks and dropped, as the engine drops each line once admitted); timings cover the
store's operations alone, not the making of IDs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Final

from benchmarks.workload import run_ids
from orchestrator.ledger.idstore import IdState, IdStates

_CHUNK: Final = 10_000
_PROBES: Final = 1_000_000
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
_STORES: Final[dict[str, Callable[[], MutableMapping[str, IdState]]]] = {
    "dict": dict,
    "IdStates": IdStates,
}


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


def _timed(operation: Callable[[], None]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def measure(kind: str, size: int) -> dict[str, float]:
    """Fill one store with `size` IDs and time what the engine does with it."""
    store = _STORES[kind]()
    probes = min(size, _PROBES)
    base = _rss()
    fill_s = 0.0
    source = run_ids(size, seed=1)
    for _ in range(0, size, _CHUNK):
        chunk = [next(source) for _ in range(min(_CHUNK, size - len(store)))]

        def fill(chunk: list[str] = chunk) -> None:
            for run_id in chunk:
                store[run_id] = IdState.QUEUED

        fill_s += _timed(fill)
        del chunk
    grown = _rss() - base
    hits = list(run_ids(probes, seed=1))  # the first IDs stored
    misses = list(run_ids(probes, seed=2))

    def get_hits() -> None:
        for run_id in hits:
            store.get(run_id)

    def get_misses() -> None:
        for run_id in misses:
            store.get(run_id)

    def update() -> None:
        for run_id in hits:
            store[run_id] = IdState.SUCCEEDED

    return {
        "bytes_per_id": grown / size,
        "insert_per_s": size / fill_s,
        "get_hit_per_s": probes / _timed(get_hits),
        "get_miss_per_s": probes / _timed(get_misses),
        "update_per_s": probes / _timed(update),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idstore_bench")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--case", nargs=2, metavar=("STORE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:  # a child: one measurement, as JSON
        print(json.dumps(measure(args.case[0], int(args.case[1]))))
        return 0
    print(
        f"{'store':<9} {'IDs':>11} {'bytes/ID':>9} {'insert/s':>10} {'get hit/s':>10}"
        f" {'get miss/s':>10} {'update/s':>10}"
    )
    for size in args.sizes:
        for kind in _STORES:
            done = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "benchmarks.idstore_bench", "--case", kind, str(size)],
                check=True,
                capture_output=True,
            )
            m = json.loads(done.stdout)
            print(
                f"{kind:<9} {size:>11,} {m['bytes_per_id']:>9.1f} {m['insert_per_s']:>10,.0f}"
                f" {m['get_hit_per_s']:>10,.0f} {m['get_miss_per_s']:>10,.0f}"
                f" {m['update_per_s']:>10,.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
