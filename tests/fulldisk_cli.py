"""`python tests/fulldisk_cli.py ROOM ARGS...`: the orchestrator CLI with its ledger on a
disk that has ROOM bytes left (`tests.faultyfs.FullDisk`), for a test that may not mount a
small tmpfs: the same process, exit code and output as on a real full file system."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import cli, engine
from tests.faultyfs import FullDisk


def main() -> int:
    room = int(sys.argv[1])
    made = engine.Plumbing.default

    def on_a_full_disk(cls: type[engine.Plumbing]) -> engine.Plumbing:
        return dataclasses.replace(made(), ledger_ops=FullDisk(room))

    engine.Plumbing.default = classmethod(on_a_full_disk)  # type: ignore[assignment, method-assign]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
