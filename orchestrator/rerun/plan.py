"""What a real run is about to do, for the operator to confirm before anything is sent:
how many IDs, where, and at what rate. The count is one streaming pass over the source
file, judged as the run itself will judge it (`admission.skip_reason`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from orchestrator.ids import parse_line
from orchestrator.ledger.idstore import IdSet
from orchestrator.ledger.replay import ResumeState
from orchestrator.outcome import Estimate, effective_rate
from orchestrator.rerun.admission import skip_reason
from orchestrator.settings import RerunSettings
from orchestrator.shared.schedule import SharedSchedule

# Lines a plan counts ahead at most; past that, the count is not worth the wait (nor the
# memory of its duplicate check: a compact set, about 35 bytes an ID).
PLAN_MAX_LINES: Final = 1_000_000


@dataclass(frozen=True)
class Plan:
    count: int | None  # IDs to send; None when not known ahead (stdin, or too many lines)
    source: str
    base_url: str
    per_s: float | None  # the rate it paces at; None for no limit

    @property
    def estimate(self) -> Estimate | None:
        return None if self.count is None else Estimate(self.count, self.per_s)


def plan_of(settings: RerunSettings, resume: ResumeState, shared: SharedSchedule | None) -> Plan:
    learned = None if shared is None or shared.limit is None else shared.limit.known_per_s
    count = None if settings.source == "-" else count_to_send(settings, resume)
    return Plan(count, settings.source, settings.base_url, effective_rate(settings.rate, learned))


def count_to_send(settings: RerunSettings, resume: ResumeState) -> int | None:
    """IDs in the source file that the run would send, by the ledger as it stands (None
    past PLAN_MAX_LINES, or unreadable: the run itself says why)."""
    seen = IdSet()
    count = 0
    try:
        with open(settings.source, "rb") as stream:
            for number, raw in enumerate(stream, 1):
                if number > PLAN_MAX_LINES:
                    return None
                parsed = parse_line(raw, number)
                if not isinstance(parsed, str) or parsed in seen:
                    continue
                seen.add(parsed)
                if skip_reason(resume.ids.get(parsed), parsed in resume.reruns, settings) is None:
                    count += 1
    except OSError:
        return None
    return count
