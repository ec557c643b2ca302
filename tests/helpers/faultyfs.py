"""Ledger file systems that fail: a disk that fills up, an fsync that reports an I/O error.

Both stand in for `orchestrator.ledger.writer.FileOps`, the writer's seam for its system calls;
the file itself is real, so what is left behind is read back as a run would read it.
"""

from __future__ import annotations

import errno
import os

from orchestrator.ledger.writer import FileOps


def os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FullDisk(FileOps):
    """`room` bytes left: a write takes what fits and returns the short count, and the
    next is refused with ENOSPC, as write(2) does on a file system filling up. Truncating
    gives the bytes back."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.refused = 0  # writes refused with ENOSPC

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            self.refused += 1
            raise os_error(errno.ENOSPC)
        written = os.write(fd, data[: self.room])
        self.room -= written
        return written

    def truncate(self, fd: int, size: int) -> None:
        before = os.fstat(fd).st_size
        os.ftruncate(fd, size)
        self.room += before - size


class FailingFsync(FileOps):
    """fsync succeeds `good` times, then fails with EIO (as after a lost writeback),
    and reports success again afterwards: the lie a writer must not believe."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.calls = 0

    def fsync(self, fd: int) -> None:
        self.calls += 1
        if self.calls == self.good + 1:
            raise os_error(errno.EIO)
        os.fsync(fd)


class NoTruncate(FullDisk):
    """A full disk on which cutting a partial line back fails too (EIO)."""

    def truncate(self, fd: int, size: int) -> None:
        raise os_error(errno.EIO)
