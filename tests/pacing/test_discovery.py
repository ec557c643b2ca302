"""Rate discovery over loopback: the real client and the real simulator, in virtual time.

tests/pacing/test_adaptive.py drives the controller against the limiter shapes with no sockets;
these run the whole `rerun` (ledger, workers, pacer, aiohttp) against the simulator set to
the shapes that broke the old controller, with no rate-limit headers to go by."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode
from orchestrator.outcome import exit_code
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, rerun


@pytest.mark.parametrize(
    ("shape", "at_once", "least", "most_429"),
    [
        # nginx limit_req with no burst: a request even a little early is refused.
        ({"limiter": "gcra", "burst": 0}, 1, 0.85, 0.10),
        # Laravel's throttle: the first window's 20 go at once, then 20 a second; the
        # ramp spends the first window at once and meets its lock (the worst of it).
        ({"limiter": "fixed-window", "window_s": 1.0}, 20, 0.7, 0.35),
    ],
    ids=["gcra burst 0", "fixed window"],
)
async def test_an_unknown_limit_is_found_and_held_over_loopback(
    tmp_path: Path, shape: dict[str, object], at_once: int, least: float, most_429: float
) -> None:
    """Every ID accepted once; the whole run at `least` of the ideal, and its last third
    within a tenth of the limit."""
    ledger = tmp_path / "ledger.jsonl"
    ids = make_ids(150)
    config = SimConfig(
        accept_any=True,
        rate=20.0,
        rate_limit_headers="none",
        retry_after=False,
        request_log_limit=10_000,
        **shape,  # type: ignore[arg-type]
    )
    clock = FakeClock(autojump=False)
    async with RunningSimulator(config, clock=clock.now) as sim, clock.driven():
        done = await rerun(sim, ledger, ids, clock=clock)
    assert exit_code(done.result) == ExitCode.OK
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))
    posts = [e for e in sim.state.request_log if e.method == "POST"]
    span = posts[-1].at - posts[0].at
    assert (len(ids) - at_once) / 20.0 / span >= least
    through = [e.at for e in posts if e.status == 202][-50:]
    assert (len(through) - 1) / (through[-1] - through[0]) >= 0.9 * 20.0
    assert sum(e.status == 429 for e in posts) <= most_429 * len(posts)
