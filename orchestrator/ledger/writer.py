"""The append-only ledger writer.

A record is written with a single `write(2)` of the whole line, so a `kill -9` can never
tear it; only a power loss can, and replay skips a torn or corrupt line with a warning. A
`dispatched` record is made durable (group commit: one fsync for every record that
arrived while the previous one ran) before its request is allowed to leave.

A write the file system refuses (a full disk, an I/O error) is cut back to the last whole
record and raised as `LedgerUnwritable`; so is a failed fsync. After either, the writer
makes nothing durable any more: the run must stop sending. One process at a time holds a
ledger (`flock`); another is told which PID holds it (`LedgerLocked`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
from pathlib import Path
from typing import Final

import anyio

from orchestrator.errors import LedgerLocked, LedgerUnwritable
from orchestrator.ledger.records import Record

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
