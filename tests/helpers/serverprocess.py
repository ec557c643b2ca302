"""What every real server program a test starts has in common (redis-server,
node_exporter): its process, its log, a clean stop and the log's tail for a failure."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

STOP_TIMEOUT_S: Final = 5.0


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Terminate, and kill what does not end within STOP_TIMEOUT_S."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
        except OSError:
            return "(no log)"
