"""`orchestrator rerun` from several checkouts, alternating, against one static server:
what a change costs a request, measured in one run on one machine.

    git worktree add ../before COMMIT
    python -m benchmarks.ab ../before . [--ids 20000] [--rounds 4]

Each checkout's `orchestrator` runs with the checkout as its working directory (so
`python -m orchestrator` imports that tree), the same IDs, `--concurrency 64` and
`--rate none`, a fresh ledger and state directory each time; the checkouts take turns,
round after round, so that the machine's drift falls on all of them alike. It prints each
run, then the medians: requests a second and the client's CPU µs a request (user and
system, start-up included). With --bare the bare aiohttp loop (`benchmarks.bare_client`)
takes its turn too, and each checkout's ratio to it is printed: item 7 of issue 15; with
--journal, so does the bare loop keeping a durable journal (`--journal`), the part of the
cost that durability alone explains.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from benchmarks.procs import REPO, child_env, run_measured

TOKEN = "bench-token"  # noqa: S105 - the static server's well-known token
_BARE: Final = Path("(bare aiohttp loop)")
_JOURNAL: Final = Path("(bare loop, durable journal)")


def _static_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.servers", "static"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    for line in server.stdout:
        if match := re.search(r"base_url: (\S+)", line):
            return server, match.group(1)
    server.kill()
    raise SystemExit("the static server did not start")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("trees", nargs="+", type=Path, metavar="CHECKOUT")
    parser.add_argument("--ids", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--bare", action="store_true", help="the bare aiohttp loop too")
    parser.add_argument("--journal", action="store_true", help="the bare loop with a journal")
    args = parser.parse_args(argv)
    trees: list[Path] = [tree.resolve() for tree in args.trees]
    if args.bare:
        trees.append(_BARE)
    if args.journal:
        trees.append(_JOURNAL)
    work = Path(tempfile.mkdtemp(prefix="orchestrator-ab-"))
    ids = work / "ids.txt"
    ids.write_text("".join(f"fl_run_ab{i:08d}\n" for i in range(args.ids)))
    server, base_url = _static_server()
    runs: dict[Path, list[tuple[float, float]]] = {tree: [] for tree in trees}
    try:
        for round_ in range(1, args.rounds + 1):
            for tree in trees:
                state = work / "state"
                shutil.rmtree(state, ignore_errors=True)
                (work / "ledger.jsonl").unlink(missing_ok=True)
                if tree in (_BARE, _JOURNAL):
                    argv_ = [sys.executable, "-m", "benchmarks.bare_client", str(ids), base_url]
                    argv_ += ["--concurrency", "64"]
                    if tree == _JOURNAL:
                        argv_ += ["--journal", str(work / "ledger.jsonl")]
                else:
                    argv_ = [sys.executable, "-m", "orchestrator", "rerun", str(ids)]
                    argv_ += ["--base-url", base_url, "--ledger", str(work / "ledger.jsonl")]
                    argv_ += ["--concurrency", "64", "--rate", "none"]
                done = run_measured(
                    argv_,
                    env=child_env(TOKEN, state_home=state),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout_s=600,
                    cwd=REPO if tree in (_BARE, _JOURNAL) else tree,
                )
                per_s = args.ids / done.wall_s
                cpu_us = done.cpu_s / args.ids * 1e6
                runs[tree].append((per_s, cpu_us))
                print(f"{tree} round {round_}: {per_s:,.0f}/s, {cpu_us:.0f} CPU µs/request, "
                      f"exit {done.code}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    print(f"median of {args.rounds} rounds, {args.ids:,} IDs, static server:")
    bare_s = statistics.median(r[0] for r in runs[_BARE]) if args.bare else None
    for tree, rows in runs.items():
        per_s = statistics.median(r[0] for r in rows)
        cpu_us = statistics.median(r[1] for r in rows)
        ratio = "" if bare_s is None or tree == _BARE else f", {per_s / bare_s:.2f} of bare"
        print(f"  {tree}: {per_s:,.0f} req/s, {cpu_us:.0f} CPU µs/request{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
