"""Admission: what becomes of each line a rerun reads. The real run, the dry run and the
plan's count decide alike, by `skip_reason`; `Admitter` keeps the count of every line.
Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from orchestrator.ids import Rejected, parse_line
from orchestrator.ledger.idstore import IdSet, IdState, IdStates
from orchestrator.outcome import Tally
from orchestrator.settings import RerunSettings

Action = Literal["send", "skip", "reject", "blank"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What becomes of one line, and why: sent as `new`, `resendable`, `failed`,
    `in_doubt` or `is_rerun`; skipped as a `duplicate`, `is_rerun`, `succeeded`, `failed`
    or `in_doubt`; rejected for its reason; or blank."""

    action: Action
    why: str | None = None


BLANK: Final = Verdict("blank")


def skip_reason(state: IdState | None, is_rerun: bool, settings: RerunSettings) -> str | None:
    """Why an ID read from the input is not sent, by its state in the ledger (QUEUED: seen
    earlier in this input) and whether the ledger names it as a rerun's new run; None to
    send it."""
    if state == IdState.QUEUED:
        return "duplicate"
    if is_rerun and not settings.include_reruns:
        # A new run made by an earlier rerun (`select` output lists them too): rerunning
        # it would rerun the rerun. Before the ID's own states: it is not an original.
        return "is_rerun"
    if state == IdState.SUCCEEDED:
        return "succeeded"
    if state == IdState.FAILED and not settings.retry_failed:
        return "failed"
    if state == IdState.IN_DOUBT and not settings.retry_in_doubt:
        return "in_doubt"
    return None


def admit(
    parsed: str | Rejected | None, state: IdState | None, is_rerun: bool, settings: RerunSettings
) -> Verdict:
    """The verdict on one parsed line, by the ID's state in the ledger."""
    if parsed is None:
        return BLANK
    if isinstance(parsed, Rejected):
        return Verdict("reject", parsed.reason)
    if (skip := skip_reason(state, is_rerun, settings)) is not None:
        return Verdict("skip", skip)
    if state is not None:
        return Verdict("send", state.name.lower())
    return Verdict("send", "is_rerun" if is_rerun else "new")


class Admitter:
    """Judges the lines of one run in turn: counts each verdict in the tally, and marks
    an ID to send as queued, so that a later line with it is a duplicate."""

    def __init__(self, ids: IdStates, reruns: IdSet, settings: RerunSettings, tally: Tally):
        self._ids = ids
        self._reruns = reruns
        self._settings = settings
        self._tally = tally

    def judge(self, raw: bytes) -> tuple[str | Rejected | None, Verdict]:
        """The next line of the input: counted, parsed and admitted."""
        self._tally.lines += 1
        parsed = parse_line(raw, self._tally.lines)
        return parsed, self.admit(parsed)

    def admit(self, parsed: str | Rejected | None) -> Verdict:
        run_id = parsed if isinstance(parsed, str) else None
        state = None if run_id is None else self._ids.get(run_id)
        is_rerun = run_id is not None and run_id in self._reruns
        verdict = admit(parsed, state, is_rerun, self._settings)
        tally = self._tally
        match verdict:
            case Verdict(action="blank"):
                tally.blank += 1
            case Verdict(action="reject"):
                tally.rejected += 1
            case Verdict(action="send"):
                assert run_id is not None
                self._ids[run_id] = IdState.QUEUED
            case Verdict(action="skip", why="duplicate"):
                tally.duplicates += 1
            case Verdict(action="skip", why="is_rerun"):
                tally.skipped_is_rerun += 1
            case Verdict(action="skip", why="succeeded"):
                tally.skipped_succeeded += 1
            case Verdict(action="skip", why="failed"):
                tally.skipped_failed += 1
            case Verdict(action="skip", why="in_doubt"):
                assert run_id is not None
                tally.skipped_in_doubt += 1
                tally.in_doubt.append(run_id)
        return verdict
