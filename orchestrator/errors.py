"""Every exception that crosses a module, and the process's exit codes.

Nothing here imports the rest of the package: any module may raise these, and the CLI
maps them to an `ExitCode` and a one-line message."""

from __future__ import annotations

import enum
import errno


class ExitCode(enum.IntEnum):
    OK = 0
    INCOMPLETE = 1  # some ID failed, was rejected or is in doubt
    USAGE = 2
    ABORTED = 3
    SOFTWARE = 70  # EX_SOFTWARE (sysexits.h): an internal error, a bug to report
    CANTCREAT = 73  # sysexits' EX_CANTCREAT: --summary-json or --metrics-file not written
    IOERR = 74  # sysexits' EX_IOERR: the ledger could not be written
    SIGHUP = 129  # 128 + the signal, as a shell reports it
    SIGINT = 130
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (`| head`)
    SIGTERM = 143


class OutageError(Exception):
    """The API has been unreachable or failing for `--max-outage`: stop sending.

    `kind` is `no_answer` (no HTTP answer of any kind for that long while requests were
    tried) or `circuit_open` (the circuit stayed open that long); `last_error` is the
    last fault heard, as `describe_error` words it."""

    def __init__(self, kind: str, seconds: float, last_error: str | None) -> None:
        self.kind = kind
        self.seconds = seconds
        self.last_error = last_error
        super().__init__(f"{kind} for {seconds:g}s; last error: {last_error}")


class LedgerLocked(Exception):
    """Another process holds the ledger: running both would rerun the same IDs.
    `holder` is its PID, when the system says (see `lock_holder`)."""

    def __init__(self, path: str, holder: int | None = None) -> None:
        super().__init__(path)
        self.path = path
        self.holder = holder


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


class ConfigError(Exception):
    """A usage or configuration problem, told to the user in one line (exit 2)."""


class StoreSpecError(ValueError):
    """A --rate-store value that is none of the accepted forms."""


class StoreError(Exception):
    """The store cannot be reached or written; the message is fit for a log line and
    holds no secret."""


class PagingError(Exception):
    """The server's pages cannot be walked to their end; the message says why."""


class InputError(Exception):
    """The input could not be read to its end; what was read before it has been handled."""
