"""A real Prometheus node_exporter for tests, serving one textfile directory on a free
loopback port: what a cron host's collector makes of our metrics files, not what we hope.

    from tests.helpers.nodeexporter import node_exporter

`node_exporter` (function scope) starts the Debian program `prometheus-node-exporter`
(or `node_exporter`) with only the textfile collector, reading the test's own directory;
`.ci/run` installs it when it is missing, and without it the tests fail, never skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.serverprocess import ServerProcess

START_ATTEMPTS = 100  # connection attempts, each after up to ATTEMPT_WAIT_S
ATTEMPT_WAIT_S = 0.05
MISSING = (
    "prometheus-node-exporter is not on PATH: the metrics tests scrape a real node_exporter."
    " .ci/run installs it (apt-get install -y prometheus-node-exporter)."
)
# urllib would otherwise send loopback requests to a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class NodeExporter(ServerProcess):
    """A node_exporter this test started, on 127.0.0.1:`port`, reading `directory`."""

    port: int
    directory: Path

    def scrape(self) -> tuple[int, str]:
        """GET /metrics: the status and the body."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with _DIRECT.open(url, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    """node_exporter serving the textfiles of `tmp_path / "textfile"` (made empty)."""
    program = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if program is None:
        pytest.fail(MISSING)
    directory = tmp_path / "textfile"
    directory.mkdir()
    exporter = _start(program, directory)
    try:
        yield exporter
    finally:
        exporter.stop()


def _start(program: str, directory: Path) -> NodeExporter:
    # A free port can be taken between finding it and node_exporter binding it: try again.
    for _ in range(3):
        port = _free_port()
        log = directory.parent / f"node-exporter-{port}.log"
        argv = [
            program,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={directory}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        exporter = NodeExporter(process=process, log=log, port=port, directory=directory)
        try:
            if _wait_until_up(exporter):
                return exporter
        except BaseException:
            exporter.stop()
            raise
    pytest.fail(f"node_exporter exited at start three times:\n{exporter.log_tail()}")


def _wait_until_up(exporter: NodeExporter) -> bool:
    """Whether node_exporter came up: connect until it accepts, a bounded number of times.
    Between attempts the wait is for the process to exit (it could not bind), so it ends
    early when there is nothing more to wait for."""
    for _ in range(START_ATTEMPTS):
        try:
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=1.0):
                return True
        except OSError:
            pass
        try:
            exporter.process.wait(ATTEMPT_WAIT_S)
        except subprocess.TimeoutExpired:
            continue
        return False  # it exited: most likely the port was taken
    exporter.stop()
    pytest.fail(
        f"node_exporter did not listen after {START_ATTEMPTS} attempts:\n{exporter.log_tail()}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
