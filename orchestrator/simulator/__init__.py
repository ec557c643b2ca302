"""An embedded simulator of the Altostrat workflow-run API, for tests and demos.

It shares only the run-ID rule (`orchestrator.ids`) and the rate syntax
(`orchestrator.units`) with the client, so the two cannot agree by accident.

Module map: `config` (settings), `dataset` (seeded history), `models` (runs and their
lifecycle), `limiters` (the rate limiters real APIs use), `ratelimit` (the limiter a
config names and the headers that report it), `faults` (scripted and random faults),
`views` (JSON shapes), `state` (the mutable world), `service` (request -> reply, no
I/O), `app` (aiohttp adapter), `server` (RunningSimulator), `serve` (serving until a signal,
with the announcement a person reads). The command line is `orchestrator.commands.simulate`.
"""

from orchestrator.simulator.app import SIM_STATE, build_app, sim_state
from orchestrator.simulator.config import SimConfig, Step
from orchestrator.simulator.dataset import (
    seeded_failed_run_ids,
    seeded_run_ids,
    seeded_workflow_ids,
)
from orchestrator.simulator.server import RunningSimulator
from orchestrator.simulator.state import RequestLogEntry, SimState, SimStats

__all__ = [
    "SIM_STATE",
    "RequestLogEntry",
    "RunningSimulator",
    "SimConfig",
    "SimState",
    "SimStats",
    "Step",
    "build_app",
    "seeded_failed_run_ids",
    "seeded_run_ids",
    "seeded_workflow_ids",
    "sim_state",
]
