"""The JSONL ledger: record models, the append-only writer, and replay into a resume state.

Every record is one JSON object on one line with an `event` key. A record is written with a
single `write(2)` of the whole line, so a `kill -9` can never tear it; only a power loss can,
and replay skips a torn or corrupt line with a warning. A `dispatched` record is made durable
(group commit: one fsync for every record that arrived while the previous one ran) before
its request is allowed to leave.

A write the file system refuses (a full disk, an I/O error) is cut back to the last whole
record and raised as `LedgerUnwritable`; so is a failed fsync. After either, the writer
makes nothing durable any more: the run must stop sending.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import functools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal, NotRequired, cast

import anyio
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from .idstore import IdSet, IdState, IdStates

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


class LedgerLocked(Exception):
    """Another process holds the ledger: running both would rerun the same IDs.
    `holder` is its PID, when the system says (see `lock_holder`)."""

    def __init__(self, path: str, holder: int | None = None) -> None:
        super().__init__(path)
        self.path = path
        self.holder = holder


# Where Linux lists every file lock: "1: FLOCK  ADVISORY  WRITE 6496 fe:00:2146487 0 EOF".
PROC_LOCKS: Final = Path("/proc/locks")


def flock_holder(locks: str, major: int, minor: int, inode: int) -> int | None:
    """The PID that holds a flock(2) lock on the file (device `major:minor`, `inode`), as
    `/proc/locks` text lists it; None when no line names one. A process waiting for the
    lock is listed with `->` and is not the holder. Pure."""
    file_id = f"{major:02x}:{minor:02x}:{inode}"
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            pid = fields[4]
            # 0 (or nothing readable): a holder outside this PID namespace.
            return int(pid) if pid.isascii() and pid.isdigit() and int(pid) > 0 else None
    return None


def lock_holder(fd: int) -> int | None:
    """The PID holding the flock on the file open at `fd`. flock(2) itself never says
    (F_GETLK sees only POSIX locks), but Linux lists every lock in /proc/locks; elsewhere,
    or if the holder let go meanwhile, None."""
    try:
        st = os.fstat(fd)
        locks = PROC_LOCKS.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return flock_holder(locks, os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


class LedgerUnwritable(Exception):
    """The ledger did not take a record, or could not make it durable.

    `written` says whether the record's line is in the file all the same (whole, but not
    known to be on disk: its fsync failed); otherwise nothing of it is there."""

    def __init__(self, error: OSError, *, written: bool) -> None:
        super().__init__(describe_os_error(error))
        self.error = error
        self.written = written


def describe_os_error(error: OSError) -> str:
    """`No space left on device (ENOSPC)`: the words and the name an operator searches for."""
    name = errno.errorcode.get(error.errno) if error.errno is not None else None
    words = error.strerror or str(error) or type(error).__name__
    return f"{words} ({name})" if name else words


class FileOps:
    """The system calls the writer makes on the ledger: the seam where tests fill the
    disk or fail an fsync. Looked up at each call, so a patched `os` is seen too."""

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


class LedgerWriter:
    """Appends records to the ledger; holds an exclusive advisory lock while open.

    `append` hands the line to the kernel at once (it survives the process being killed);
    `append_durable` also waits until it is on disk under the fsync policy, sharing one
    fsync with every record that arrives while a sync is under way. Both raise
    `LedgerUnwritable` when the file system fails them; `failed` keeps the first failure.
    """

    def __init__(
        self, path: Path, fsync: FsyncPolicy = FsyncPolicy.BATCH, ops: FileOps | None = None
    ) -> None:
        self.path = path
        self._policy = fsync
        self._ops = ops or FileOps()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(self._fd)
            os.close(self._fd)
            raise LedgerLocked(str(path), holder) from None
        self._written = 0
        self._synced = 0
        self._syncing = False
        self._synced_event = anyio.Event()
        # Where the last whole record ends: a write that fails is cut back to it. Only this
        # process writes (the lock), so it is the file's size as this process makes it.
        self._end = os.fstat(self._fd).st_size
        self._prefix = self._torn_tail_prefix()
        self.failed: LedgerUnwritable | None = None
        self.torn = False  # a failed write could not be cut back: a partial line is left
        self._sync_failed = False  # once an fsync fails, a later "success" proves nothing

    def _torn_tail_prefix(self) -> bytes:
        # A line torn by a power loss must not swallow the next record: the first record
        # starts on a fresh line (written with it, so opening the ledger writes nothing).
        if self._end == 0:
            return b""
        with self.path.open("rb") as stream:
            stream.seek(self._end - 1)
            return b"" if stream.read(1) == b"\n" else b"\n"

    def append(self, record: Record) -> None:
        line = self._prefix + record.model_dump_json().encode() + b"\n"
        try:
            self._write_all(line)
        except OSError as exc:
            self._cut_back()
            raise self._fail(exc, written=False) from exc
        self._end += len(line)
        self._prefix = b""
        self._written += 1

    def _write_all(self, line: bytes) -> None:
        # One write(2) nearly always takes the whole line; a disk that is filling up may
        # take part of it, and refuse the rest on the next call.
        done = 0
        while done < len(line):
            count = self._ops.write(self._fd, line[done:] if done else line)
            if count <= 0:
                raise OSError(errno.EIO, "the ledger took no bytes of a record")
            done += count

    def _cut_back(self) -> None:
        """Leave no partial line behind: back to the last whole record."""
        try:
            self._ops.truncate(self._fd, self._end)
        except OSError:
            # Replay skips the torn line, and the next record starts on a line of its own.
            self.torn = True
            self._prefix = b"\n"
            with contextlib.suppress(OSError):
                self._end = os.fstat(self._fd).st_size

    def _fail(self, error: OSError, *, written: bool) -> LedgerUnwritable:
        failure = LedgerUnwritable(error, written=written)
        if self.failed is None:
            self.failed = failure
        return failure

    async def append_durable(self, record: Record) -> None:
        if self.failed is not None:
            # After a failed write or fsync nothing is made durable again (a later fsync
            # may "succeed" over pages the kernel has dropped): refuse without writing.
            raise LedgerUnwritable(self.failed.error, written=False)
        self.append(record)
        if self._policy is FsyncPolicy.NEVER:
            return
        if self._policy is FsyncPolicy.ALWAYS:
            await self._fsync()
            self._synced = max(self._synced, self._written)
            if self.failed is not None:  # another record's fsync failed meanwhile
                raise LedgerUnwritable(self.failed.error, written=True)
            return
        target = self._written
        while self._synced < target:
            if self._syncing:
                await self._synced_event.wait()
                if self.failed is not None:
                    raise LedgerUnwritable(self.failed.error, written=True)
                continue
            self._syncing = True
            upto = self._written
            try:
                await self._fsync()
            finally:
                self._syncing = False
                done, self._synced_event = self._synced_event, anyio.Event()
                done.set()
            self._synced = upto

    async def _fsync(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._ops.fsync, self._fd)
        except OSError as exc:
            self._sync_failed = True
            raise self._fail(exc, written=True) from exc

    def _may_sync(self) -> bool:
        return self._policy is not FsyncPolicy.NEVER and self._fd >= 0 and not self._sync_failed

    async def sync(self) -> None:
        """Make every record so far durable, as the policy asks (at the end of a session);
        a failure is kept in `failed`."""
        if self._may_sync():
            with contextlib.suppress(LedgerUnwritable):
                await self._fsync()

    def close(self) -> None:
        """Sync and close; never raises: a failed last fsync is kept in `failed`."""
        if self._fd < 0:
            return
        try:
            if self._may_sync():
                self._ops.fsync(self._fd)
        except OSError as exc:
            self._sync_failed = True
            self._fail(exc, written=True)
        finally:
            os.close(self._fd)  # closing releases the lock
            self._fd = -1
