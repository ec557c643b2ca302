"""The ledger's records: one JSON object a line with an `event` key, the models that
write them, and the lenient models that read them back (a line written by an older or
newer version, or by hand, is read for what it says, never trusted blindly)."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from typing import Annotated, Final, Literal, NotRequired, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

# How many corrupt line numbers a resume state remembers to show; the count is kept whole.
_SHOWN_CORRUPT: Final = 5


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, the timestamp of every record."""
    now = time.time()
    whole = int(now)
    return f"{_utc_second(whole)}.{int((now - whole) * 1000):03d}Z"


@functools.lru_cache(maxsize=1)
def _utc_second(whole: int) -> str:
    # Formatted once a second, not once a record.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    at: str


class SessionStarted(_Record):
    event: Literal["session_started"] = "session_started"
    version: str
    source: str
    pid: int


class SessionEnded(_Record):
    event: Literal["session_ended"] = "session_ended"
    exit_code: int
    reason: str
    # The run stopped before the end of its input: lines after the last one read were
    # never looked at (the same command reads them next time).
    input_unread: bool = False


class Dispatched(_Record):
    event: Literal["dispatched"] = "dispatched"
    original_run_id: str
    attempt: int


class AttemptFailed(_Record):
    """One attempt that did not settle the ID: a retry follows, or the run stopped first."""

    event: Literal["attempt_failed"] = "attempt_failed"
    original_run_id: str
    attempt: int
    http_status: int | None
    error: str
    # True when the server surely did not accept it, so the ID may be sent again on resume.
    resendable: bool
    # A 2xx whose body named no valid new run (`bad_response`): an excerpt, escaped.
    raw: str | None = None


class Succeeded(_Record):
    event: Literal["succeeded"] = "succeeded"
    original_run_id: str
    new_run_id: str | None
    new_run_status: str | None
    http_status: int
    attempts: int
    error: Literal["bad_response"] | None = None


class Failed(_Record):
    event: Literal["failed"] = "failed"
    original_run_id: str
    http_status: int | None
    error: str
    attempts: int


class Finished(_Record):
    """How an accepted rerun ended, as `rerun --wait` saw it."""

    event: Literal["finished"] = "finished"
    original_run_id: str
    new_run_id: str
    # completed | failed_again | needs_person | timed_out | lost (the new run is not found)
    outcome: str
    final_status: str | None  # the new run's status when the wait ended
    error_message: str | None
    duration_in_seconds: float | None


class Rejected(_Record):
    event: Literal["rejected"] = "rejected"
    line: int
    reason: str
    input: str


class Skipped(_Record):
    """A valid ID that was not sent for a reason the rest of the ledger cannot show: today
    only `is_rerun` (the ledger names it as a `new_run_id`). Other skips (done, failed, in
    doubt, duplicate) follow from the ID's own records and are only counted."""

    event: Literal["skipped"] = "skipped"
    line: int
    run_id: str
    reason: Literal["is_rerun"]


Record = (
    SessionStarted
    | SessionEnded
    | Dispatched
    | AttemptFailed
    | Succeeded
    | Failed
    | Finished
    | Rejected
    | Skipped
)


_ID_EVENTS: Final = frozenset({"dispatched", "attempt_failed", "succeeded", "failed", "finished"})
_OTHER_EVENTS: Final = frozenset({"rejected", "skipped", "session_started", "session_ended"})
LEDGER_EVENTS: Final = _ID_EVENTS | _OTHER_EVENTS


# ---- reading a ledger back ----------------------------------------------------------------
# What a line must be to count as a record when it is read back: a JSON object with a known
# `event` whose fields that replay and `report` read have the types the writer gives them
# (an ID's event must name its ID). A field may be missing (hand-written and older ledgers
# lack some) and fields nobody reads are not looked at, so a ledger written by another
# version still replays: dropping a good `dispatched` line would send its ID twice.
# Anything else is corrupt, as a torn line is: `"line": [1]` must not crash a reader.


class _Read(TypedDict):
    __pydantic_config__ = ConfigDict(strict=True)  # type: ignore[misc]
    at: NotRequired[str]


class _ReadSessionStarted(_Read):
    event: Literal["session_started"]


class _ReadSessionEnded(_Read):
    event: Literal["session_ended"]
    exit_code: NotRequired[int]
    reason: NotRequired[str]
    input_unread: NotRequired[bool]


class _ReadDispatched(_Read):
    event: Literal["dispatched"]
    original_run_id: str
    # Read for `report`'s count of retries, whatever it holds: a line is never dropped
    # for it (that would send its ID again).
    attempt: NotRequired[object]


class _ReadAttemptFailed(_Read):
    event: Literal["attempt_failed"]
    original_run_id: str
    http_status: NotRequired[int | None]
    error: NotRequired[str]
    resendable: NotRequired[bool]


class _ReadSucceeded(_Read):
    event: Literal["succeeded"]
    original_run_id: str
    new_run_id: NotRequired[str | None]
    http_status: NotRequired[int]
    error: NotRequired[str | None]


class _ReadFailed(_Read):
    event: Literal["failed"]
    original_run_id: str
    http_status: NotRequired[int | None]
    error: NotRequired[str]


class _ReadFinished(_Read):
    event: Literal["finished"]
    original_run_id: str
    new_run_id: NotRequired[str]
    outcome: NotRequired[str]


class _ReadRejected(_Read):
    event: Literal["rejected"]
    line: NotRequired[int]
    input: NotRequired[str]


class _ReadSkipped(_Read):
    event: Literal["skipped"]
    run_id: str
    reason: NotRequired[str]


_READ: Final = TypeAdapter(
    Annotated[
        _ReadSessionStarted
        | _ReadSessionEnded
        | _ReadDispatched
        | _ReadAttemptFailed
        | _ReadSucceeded
        | _ReadFailed
        | _ReadFinished
        | _ReadRejected
        | _ReadSkipped,
        Field(discriminator="event"),
    ]
)


def read_records(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, object] | None]]:
    """Each non-blank ledger line with its number: the record (its fields that are read,
    checked), or None when it is torn or corrupt (not JSON, not an object, no known
    `event`, or a field of another type than the writer's)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            # A TypedDict is a plain dict: read it as one, by key, as the readers do.
            yield number, cast("dict[str, object]", _READ.validate_json(line))
        except ValidationError:
            yield number, None
