"""The simulator's mutable world: runs, counters, the request log and the rate limiter.

Everything here is synchronous and driven by the injected clock; the service decides
what a request does, this module only keeps the books.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.dataset import Dataset, error_message, generate, new_run_id
from orchestrator.simulator.faults import FaultPlan, FaultRates
from orchestrator.simulator.limiters import Background, Limiter
from orchestrator.simulator.models import (
    SCRIPTABLE_OUTCOMES,
    Outcome,
    Progressing,
    Run,
    Settled,
    Snapshot,
    Workflow,
    snapshot,
)
from orchestrator.simulator.ratelimit import build_limiter


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One API request as the server saw it on arrival."""

    at: float  # injected-clock seconds
    method: str
    path: str
    # The run ID in the path (rerun or GET run), None for other paths.
    run_id: str | None
    status: int | Literal["drop"]
    # The fault applied: "500", "502", "503", "drop", "slow", "bad_body", a scripted
    # status such as "409", or None for a normal answer.
    fault: str | None = None
    scripted: bool = False


@dataclass
class SimStats:
    """Running counters, as GET /_sim/stats reports them."""

    requests: int = 0
    # HTTP status -> count; dropped connections count under "drop".
    by_status: dict[int | str, int] = field(default_factory=dict)
    # Original run ID -> reruns applied (answered 202, slow or bad body included).
    accepted: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.by_status.get("drop", 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(key): count for key, count in self.by_status.items()},
            "accepted": dict(self.accepted),
            "dropped": self.dropped,
        }


def _seed_stream(seed: int, purpose: str) -> random.Random:
    # A separate, seed-derived stream per purpose, so e.g. latency draws never shift
    # fault decisions. String seeds are hashed deterministically (SHA-512).
    return random.Random(f"{seed}/{purpose}")


class SimState:
    """The live state of one simulated API, stored on the app (see `sim_state`)."""

    def __init__(self, config: SimConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        # Wall time is derived from the injected clock from here on, so created_at of
        # new runs and X-RateLimit-Reset are as deterministic as the clock is.
        self.origin = clock()
        self.now_wall = config.now_wall or datetime.now(UTC)
        self.dataset: Dataset = generate(
            seed=config.seed, runs=config.runs, workflows=config.workflows, now_wall=self.now_wall
        )
        self.workflows: dict[str, Workflow] = {w.id: w for w in self.dataset.workflows}
        self.runs: dict[str, Run] = {}
        # Per workflow, runs in ascending (created_at, seq) order: appends are O(1).
        self._listing: dict[str, list[Run]] = {w.id: [] for w in self.dataset.workflows}
        for run in self.dataset.runs:
            self._add(run)
        self.stats = SimStats()
        self.request_log: deque[RequestLogEntry] = deque(maxlen=config.request_log_limit)
        # One token, so one limiter; None when there is no rate limit.
        self.limiter: Limiter | None = build_limiter(config)
        self.faults = FaultPlan(
            config.script, FaultRates.from_config(config), _seed_stream(config.seed, "faults")
        )
        self.latency_rng = _seed_stream(config.seed, "latency")
        self._outcome_rng = _seed_stream(config.seed, "outcomes")
        self._id_rng = _seed_stream(config.seed, "new-ids")

    # -- seeded data ---------------------------------------------------------------

    @property
    def seeded_run_ids(self) -> list[str]:
        return self.dataset.run_ids()

    @property
    def failed_run_ids(self) -> list[str]:
        """Seeded runs whose status is failed."""
        return self.dataset.run_ids("failed")

    @property
    def workflow_ids(self) -> list[str]:
        return [w.id for w in self.dataset.workflows]

    # -- time ------------------------------------------------------------------------

    def wall_at(self, moment: float) -> datetime:
        """The wall time matching injected-clock time `moment`."""
        return self.now_wall + timedelta(seconds=moment - self.origin)

    # -- runs --------------------------------------------------------------------------

    def _add(self, run: Run) -> None:
        self.runs[run.id] = run
        bisect.insort(self._listing[run.workflow_id], run, key=lambda r: (r.created_at, r.seq))

    def lookup(self, run_id: str, now: float) -> Run | None:
        """The run, or None; with accept_any an unknown (well-formed) ID becomes a failed
        run of the first workflow. The caller checks well-formedness."""
        run = self.runs.get(run_id)
        if run is None and self.config.accept_any:
            created_at = self.wall_at(now)
            timeline = Settled("failed", "Simulated failure.", created_at, created_at, 0)
            run = Run(run_id, self.dataset.workflows[0].id, created_at, len(self.runs), timeline)
            self._add(run)
        return run

    def rerun(self, original: Run, now: float) -> Run:
        """Queue a rerun of `original`: a new run of the same workflow, created now."""
        draw = self._outcome_rng.random()
        outcome: Outcome = "completed"
        if draw < self.config.stuck_rate:
            outcome = "stuck"
        elif draw < self.config.stuck_rate + self.config.rerun_failure_rate:
            outcome = "failed"
        if (scripted := self.config.rerun_outcomes.get(original.id)) is not None:
            outcome = SCRIPTABLE_OUTCOMES[scripted]
        message = error_message(self._outcome_rng) if outcome == "failed" else None
        timeline = Progressing(now, self.config.pending_s, self.config.running_s, outcome, message)
        run_id = new_run_id(self._id_rng, self.runs)
        run = Run(
            run_id, original.workflow_id, self.wall_at(now), len(self.runs), timeline, original.id
        )
        self._add(run)
        self.stats.accepted[original.id] = self.stats.accepted.get(original.id, 0) + 1
        return run

    def listing(self, workflow_id: str) -> Sequence[Run] | None:
        """The workflow's runs oldest first, or None for an unknown workflow."""
        return self._listing.get(workflow_id)

    def snapshot(self, run: Run, now: float | None = None) -> Snapshot:
        """`run` as it stands at `now` (default: the clock's current time)."""
        return snapshot(run, self.clock() if now is None else now)

    # -- books ---------------------------------------------------------------------------

    def record(self, entry: RequestLogEntry) -> None:
        self.stats.requests += 1
        key: int | str = entry.status
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1
        self.request_log.append(entry)

    def stats_json(self) -> dict[str, Any]:
        """GET /_sim/stats: the counters, and the background client's as of now."""
        stats = self.stats.to_json()
        if isinstance(background := self.limiter, Background):
            background.advance(self.clock())
            stats["background"] = {
                "load": background.load,
                "started_at": background.started_at,
                "stops_at": background.stops_at,
                "accepted": background.accepted,
                "refused": background.refused,
            }
        return stats

    def requests_json(self) -> dict[str, Any]:
        """GET /_sim/requests: the request log as rows, oldest first. `total` counts every
        request ever booked; fewer rows means the oldest fell off (`request_log_limit`)."""
        return {
            "total": self.stats.requests,
            "fields": list(_LOG_FIELDS),
            "rows": [
                [e.at, e.method, e.path, e.run_id, e.status, e.fault] for e in self.request_log
            ],
        }


_LOG_FIELDS = ("at", "method", "path", "run_id", "status", "fault")
