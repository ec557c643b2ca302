"""Running `orchestrator rerun` in-process against the simulator, and reading its ledger."""

from __future__ import annotations

import contextlib
import io
import json
import random
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ExitCode
from orchestrator.ledger.writer import FileOps
from orchestrator.outcome import RunResult, Snapshot, exit_code
from orchestrator.pacing.backoff import Backoff
from orchestrator.pacing.clock import Clock
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.session import run_rerun
from orchestrator.settings import load_settings
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.fakeclock import FakeClock


def make_ids(count: int, prefix: str = "t") -> list[str]:
    return [f"fl_run_{prefix}{n:05d}" for n in range(count)]


@dataclass
class Outcome:
    result: RunResult
    records: list[dict[str, object]]
    stdout: str

    def events(self, name: str) -> list[dict[str, object]]:
        return [r for r in self.records if r["event"] == name]


def read_ledger(path: Path) -> list[dict[str, object]]:
    """Every whole record of a ledger; a torn or corrupt line (tested for apart) is left out."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


async def rerun(
    sim: RunningSimulator,
    ledger: Path,
    lines: list[str] | bytes,
    *,
    clock: Clock | None = None,
    token: str | None = None,
    backoff: Backoff | None = None,
    monitor: Callable[[Callable[[], Snapshot]], AbstractContextManager[object]] | None = None,
    ledger_ops: FileOps | None = None,
    **flags: object,
) -> Outcome:
    """Run one session over `lines` (given on stdin) with `--rate none` unless told otherwise."""
    data = lines if isinstance(lines, bytes) else "".join(f"{x}\n" for x in lines).encode()
    given: dict[str, object] = {"base_url": sim.base_url, "ledger": ledger, "rate": "none"}
    given.update(flags)
    settings = load_settings(given, FLAGS).settings
    out = io.StringIO()
    plumbing = Plumbing(
        clock=clock or FakeClock(),
        rng=random.Random(0),
        handle_signals=False,
        stdin=io.BytesIO(data),
        stdout=out,
        backoff=backoff or Backoff(),
        monitor=monitor,
        ledger_ops=ledger_ops,
    )
    result = await run_rerun(settings, token or sim.config.token, plumbing)
    return Outcome(result, read_ledger(ledger), out.getvalue())


async def known_rate_run(
    tmp_path: Path, ids: int, **shape: object
) -> tuple[list[tuple[float, int]], list[str]]:
    """Rerun `ids` IDs at `--rate 20/s` against a limiter of 20/s of `shape` with no
    rate-limit headers, in virtual time; every ID accepted once, the run's exit 0. The
    simulator's (time, status) of each rerun request, and the IDs."""
    run_ids = make_ids(ids)
    config = SimConfig(
        accept_any=True,
        rate=20.0,
        rate_limit_headers="none",
        request_log_limit=10_000,
        **shape,  # type: ignore[arg-type]
    )
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, tmp_path / "ledger.jsonl", run_ids, clock=clock, rate="20/s")
    assert exit_code(done.result) == ExitCode.OK
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(run_ids, 1))
    posts = [(e.at, e.status) for e in sim.state.request_log if e.method == "POST"]
    return posts, run_ids
