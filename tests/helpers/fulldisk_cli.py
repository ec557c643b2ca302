"""`python tests/helpers/fulldisk_cli.py FAULT ARGS...`: the orchestrator CLI with its ledger on a
file system that fails, for a test that may not mount a small tmpfs: the same process,
exit code and output as on a real failing disk. FAULT is `ROOM` (a disk with ROOM bytes
left, `tests.helpers.faultyfs.FullDisk`) or `fsync:GOOD` (an fsync that fails with EIO after GOOD
good ones, `tests.helpers.faultyfs.FailingFsync`)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from orchestrator import cli
from orchestrator.ledger import writer as ledger
from orchestrator.rerun import plumbing
from tests.helpers.faultyfs import FailingFsync, FullDisk


def failing_ops(fault: str) -> ledger.FileOps:
    kind, _, count = fault.rpartition(":")
    return FailingFsync(int(count)) if kind == "fsync" else FullDisk(int(count))


def main() -> int:
    ops = failing_ops(sys.argv[1])
    made = plumbing.Plumbing.default

    def on_a_failing_disk(cls: type[plumbing.Plumbing]) -> plumbing.Plumbing:
        return dataclasses.replace(made(), ledger_ops=ops)

    plumbing.Plumbing.default = classmethod(on_a_failing_disk)  # type: ignore[assignment, method-assign]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
