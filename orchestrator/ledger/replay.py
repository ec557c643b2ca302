"""Replay of a ledger into a resume state: which IDs are settled, which were dispatched
and never answered (in doubt), and which can still be sent. A torn or corrupt line is
skipped with a warning. Pure but for `replay_file`, which opens the file."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.ledger.idstore import IdSet, IdState, IdStates
from orchestrator.ledger.records import _SHOWN_CORRUPT, read_records


@dataclass
class ResumeState:
    """What a ledger says about every ID it has seen; the one structure that grows with input."""

    ids: IdStates = field(default_factory=IdStates)
    # Accepted reruns with no `finished` record yet: original -> new run ID. Kept only when
    # asked for (`rerun --wait`): without it, it would hold every mapping of the ledger.
    unfinished: dict[str, str] | None = None
    # Every new run ID the ledger names (created by a rerun): never taken for an original.
    reruns: IdSet = field(default_factory=IdSet)
    records: int = 0
    corrupt_lines: int = 0
    corrupt_shown: list[int] = field(default_factory=list)
    torn_tail: bool = False

    def apply(self, record: dict[str, object]) -> None:
        event = record.get("event")
        run_id = record.get("original_run_id")
        if not isinstance(run_id, str):
            return
        new_run_id = record.get("new_run_id")
        if isinstance(new_run_id, str) and event in ("succeeded", "finished"):
            self.reruns.add(new_run_id)
        if self.unfinished is not None:
            if event == "succeeded" and isinstance(new_run_id, str):
                self.unfinished[run_id] = new_run_id
            elif event == "finished":
                self.unfinished.pop(run_id, None)
        if self.ids.get(run_id) == IdState.SUCCEEDED:
            return
        if event == "dispatched":
            self.ids[run_id] = IdState.IN_DOUBT
        elif event == "attempt_failed":
            resendable = record.get("resendable") is True
            self.ids[run_id] = IdState.RESENDABLE if resendable else IdState.IN_DOUBT
        elif event == "succeeded":
            self.ids[run_id] = IdState.SUCCEEDED
        elif event == "failed":
            self.ids[run_id] = IdState.FAILED

    def in_doubt(self) -> list[str]:
        return list(self.ids.with_state(IdState.IN_DOUBT))


def replay(lines: Iterable[bytes], *, unfinished: bool = False) -> ResumeState:
    """Fold ledger lines into a resume state. Pure; any prefix of a ledger replays cleanly.
    With `unfinished`, also track the accepted reruns not yet seen to their end."""
    state = ResumeState(unfinished={} if unfinished else None)
    last_ok = True
    for number, record in read_records(lines):
        last_ok = record is not None
        if record is None:
            state.corrupt_lines += 1
            if len(state.corrupt_shown) < _SHOWN_CORRUPT:
                state.corrupt_shown.append(number)
            continue
        state.records += 1
        state.apply(record)
    state.torn_tail = not last_ok
    return state


def replay_file(path: Path, *, unfinished: bool = False) -> ResumeState:
    """Replay the ledger at `path`; a missing file is an empty ledger."""
    try:
        with path.open("rb") as stream:
            return replay(stream, unfinished=unfinished)
    except FileNotFoundError:
        return ResumeState(unfinished={} if unfinished else None)
