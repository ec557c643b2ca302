"""The seeded history the simulator starts with: workflows and their past runs.

Deterministic from the seed: the same seed always yields the same IDs, statuses and
workflows (timestamps are relative to the reference wall time, so they move with it).
"""

from __future__ import annotations

import random
import string
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from orchestrator.ids import RUN_ID_PREFIX, is_run_id
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.models import Run, RunStatus, Settled, Workflow

WORKFLOW_PREFIX: Final = "fl_"
_ALPHABET: Final = string.ascii_lowercase + string.digits
_SUFFIX_LENGTH: Final = 26  # ULID-sized, well inside the ID rule's 64
_HISTORY: Final = timedelta(hours=24)
# Any fixed instant will do for ID-only questions: IDs and statuses do not depend on it.
_ANY_WALL: Final = datetime(2024, 1, 1, tzinfo=UTC)

_WORKFLOW_NAMES: Final = (
    "Nightly config backup",
    "Firmware compliance audit",
    "Provision new site",
    "Rotate WireGuard keys",
    "Sync captive portal vouchers",
    "Weekly bandwidth report",
    "Decommission router",
    "Apply firewall baseline",
)
_ERROR_MESSAGES: Final = (
    "Device did not respond within 30 seconds.",
    "RouterOS API returned: failure: already have such entry",
    "Step 'push-config' failed: connection refused.",
    "Credential vault lookup failed: secret not found.",
    "Webhook endpoint returned HTTP 500.",
    "Workflow timed out after 900 seconds.",
)
# Share of each status in the seeded history (quotas, not independent draws, so even a
# small history has failed runs to rerun).
_STATUS_MIX: Final[tuple[tuple[RunStatus, float], ...]] = (
    ("completed", 0.55),
    ("failed", 0.30),
    ("running", 0.06),
    ("awaiting_ui_interaction", 0.05),
    ("pending", 0.04),
)


def error_message(rng: random.Random) -> str:
    """A plausible error_message for a failed run."""
    return rng.choice(_ERROR_MESSAGES)


def _suffix(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(_SUFFIX_LENGTH))


def new_run_id(rng: random.Random, taken: Container[str]) -> str:
    """A fresh valid run ID not in `taken`."""
    while True:
        run_id = RUN_ID_PREFIX + _suffix(rng)
        if run_id not in taken:
            assert is_run_id(run_id)
            return run_id


def _status_quota(count: int, rng: random.Random) -> list[RunStatus]:
    """`count` statuses in the proportions of _STATUS_MIX (largest remainder), shuffled."""
    exact = [(status, share * count) for status, share in _STATUS_MIX]
    counts = {status: int(amount) for status, amount in exact}
    leftover = count - sum(counts.values())
    by_remainder = sorted(exact, key=lambda item: item[1] - int(item[1]), reverse=True)
    for status, _ in by_remainder[:leftover]:
        counts[status] += 1
    statuses = [status for status, _ in _STATUS_MIX for _ in range(counts[status])]
    rng.shuffle(statuses)
    return statuses


def _settled(
    status: RunStatus, created_at: datetime, now_wall: datetime, rng: random.Random
) -> Settled:
    if status == "pending":
        return Settled("pending", None, None, None, None)
    started_at = min(created_at + timedelta(seconds=rng.uniform(0.5, 10.0)), now_wall)
    if status in ("running", "awaiting_ui_interaction"):
        return Settled(status, None, started_at, None, None)
    duration = min(rng.randint(5, 900), int((now_wall - started_at).total_seconds()))
    completed_at = started_at + timedelta(seconds=duration)
    message = error_message(rng) if status == "failed" else None
    return Settled(status, message, started_at, completed_at, duration)


@dataclass(frozen=True)
class Dataset:
    """The seeded workflows and runs, runs oldest first."""

    workflows: tuple[Workflow, ...]
    runs: tuple[Run, ...]

    def run_ids(self, status: RunStatus | None = None) -> list[str]:
        """Seeded run IDs, oldest first; only those with `status` when given."""
        return [
            run.id
            for run in self.runs
            if status is None
            or (isinstance(run.timeline, Settled) and run.timeline.status == status)
        ]


def generate(*, seed: int, runs: int, workflows: int, now_wall: datetime) -> Dataset:
    """The seeded history: `workflows` workflows and `runs` runs over the 24 h before `now_wall`."""
    rng = random.Random(seed)
    flows: list[Workflow] = []
    for index in range(workflows):
        name = _WORKFLOW_NAMES[index % len(_WORKFLOW_NAMES)]
        if index >= len(_WORKFLOW_NAMES):
            name = f"{name} #{index // len(_WORKFLOW_NAMES) + 1}"
        flows.append(Workflow(WORKFLOW_PREFIX + _suffix(rng), name))
    ages = sorted((rng.uniform(0.0, _HISTORY.total_seconds()) for _ in range(runs)), reverse=True)
    statuses = _status_quota(runs, rng)
    taken: set[str] = set()
    history: list[Run] = []
    for seq, (age, status) in enumerate(zip(ages, statuses, strict=True)):
        run_id = new_run_id(rng, taken)
        taken.add(run_id)
        created_at = now_wall - timedelta(seconds=age)
        workflow = flows[rng.randrange(workflows)]
        timeline = _settled(status, created_at, now_wall, rng)
        history.append(Run(run_id, workflow.id, created_at, seq, timeline))
    return Dataset(tuple(flows), tuple(history))


def _dataset(config: SimConfig) -> Dataset:
    now_wall = config.now_wall or _ANY_WALL
    return generate(
        seed=config.seed, runs=config.runs, workflows=config.workflows, now_wall=now_wall
    )


def seeded_run_ids(config: SimConfig) -> list[str]:
    """Every run ID the simulator built from `config` starts with, oldest first."""
    return _dataset(config).run_ids()


def seeded_failed_run_ids(config: SimConfig) -> list[str]:
    """The seeded runs whose status is failed: the natural input for a rerun."""
    return _dataset(config).run_ids("failed")


def seeded_workflow_ids(config: SimConfig) -> list[str]:
    """The seeded workflow IDs, in creation order (the first one hosts accept_any runs)."""
    return [workflow.id for workflow in _dataset(config).workflows]
