"""Serving the simulated API until Ctrl-C or SIGTERM, and telling a person how to use it.

`orchestrator simulate` (`orchestrator.commands.simulate`) parses the flags into a
`SimConfig` and calls `serve`.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
from typing import Final

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.ratelimit import describe
from orchestrator.simulator.server import RunningSimulator

# --workflows may ask for thousands: the announcement names the first few.
_SHOWN_WORKFLOWS: Final = 10
_SAMPLE_IDS: Final = 5


def _announce(sim: RunningSimulator) -> None:
    """What a person (or a script grepping `base_url:`) needs to start using the simulator."""
    config, state = sim.config, sim.state
    failed = state.failed_run_ids[:_SAMPLE_IDS]
    token = shlex.quote(config.token)
    workflows = state.workflow_ids
    more = len(workflows) - _SHOWN_WORKFLOWS
    lines = [
        f"Altostrat API simulator: {config.runs} runs over {config.workflows} workflows "
        f"(seed {config.seed}), rate limit {describe(config)}",
        f"base_url: {sim.base_url}",
        f"token: {config.token}",
        f"stats: {sim.base_url}/_sim/stats",
        f"request log: {sim.base_url}/_sim/requests",
        "workflow IDs:",
        *(f"  {workflow_id}" for workflow_id in workflows[:_SHOWN_WORKFLOWS]),
        *([f"  ... and {more} more (GET /workflows lists them all)"] if more > 0 else []),
        "failed run IDs to try:",
        *(f"  {run_id}" for run_id in failed),
        "try:",
        f"  printf '%s\\n' {' '.join(failed)} > ids.txt",
        f"  ALTOSTRAT_TOKEN={token} orchestrator rerun ids.txt --base-url {sim.base_url}",
        f"  ALTOSTRAT_TOKEN={token} orchestrator select --all-workflows --status failed"
        f" --base-url {sim.base_url}",
        "Ctrl-C stops the simulator.",
    ]
    print("\n".join(lines), flush=True)


async def serve(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with RunningSimulator(config, host=host, port=port) as sim:
            _announce(sim)
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print("simulator stopped", flush=True)
