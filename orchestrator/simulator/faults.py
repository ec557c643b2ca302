"""Which answer a rerun request gets: scripted steps first, then seeded random faults.

Pure apart from the random draws, which come from a `random.Random` the caller owns,
so one seed always yields the same sequence of decisions in request-arrival order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from orchestrator.simulator.config import SimConfig, Step


@dataclass(frozen=True, slots=True)
class FaultRates:
    """The per-request probability of each random fault."""

    p_500: float = 0.0
    p_502: float = 0.0
    p_503: float = 0.0
    p_drop: float = 0.0
    p_slow: float = 0.0
    p_bad_body: float = 0.0

    @classmethod
    def from_config(cls, config: SimConfig) -> FaultRates:
        return cls(
            config.p_500,
            config.p_502,
            config.p_503,
            config.p_drop,
            config.p_slow,
            config.p_bad_body,
        )

    def pick(self, u: float) -> Step:
        """The fault for a uniform draw `u` in [0, 1): consecutive slices of the unit
        interval, so each fault keeps its own probability and they never combine."""
        threshold = 0.0
        slices: tuple[tuple[float, Step], ...] = (
            (self.p_500, 500),
            (self.p_502, 502),
            (self.p_503, 503),
            (self.p_drop, "drop"),
            (self.p_slow, "slow"),
            (self.p_bad_body, "bad_body"),
        )
        for probability, step in slices:
            threshold += probability
            if u < threshold:
                return step
        return "ok"


class FaultPlan:
    """Hands out one step per rerun request: the run's next scripted step while its
    script lasts, else a random fault (or "ok") drawn from its own seeded stream.

    A scripted "ok" behaves as an unscripted request: it still draws a random fault.
    """

    def __init__(
        self,
        script: Mapping[str, Sequence[str | int]],
        rates: FaultRates,
        rng: random.Random,
    ) -> None:
        # Config validation guarantees every step is an HTTP status or a fault word.
        self._script = {run_id: [cast(Step, s) for s in steps] for run_id, steps in script.items()}
        self._cursor: dict[str, int] = {}
        self._rates = rates
        self._rng = rng

    def next_scripted(self, run_id: str) -> Step | None:
        """Consume and return the run's next scripted step, or None once there is none."""
        steps = self._script.get(run_id)
        position = self._cursor.get(run_id, 0)
        if steps is None or position >= len(steps):
            return None
        self._cursor[run_id] = position + 1
        return steps[position]

    def next_step(self, run_id: str) -> tuple[Step, bool]:
        """The step for one rerun request of `run_id`, and whether the script chose it."""
        scripted = self.next_scripted(run_id)
        if scripted is not None and scripted != "ok":
            return scripted, True
        # Always draw, even with every probability at 0, so the stream's position
        # depends only on how many unscripted requests came before.
        return self._rates.pick(self._rng.random()), False


def sample_latency_s(rng: random.Random, median_ms: float, spread: float) -> float:
    """One real-time latency in seconds: lognormal around `median_ms`, sigma `spread`."""
    if median_ms <= 0:
        return 0.0
    if spread <= 0:
        return median_ms / 1000.0
    return median_ms * math.exp(rng.gauss(0.0, spread)) / 1000.0
