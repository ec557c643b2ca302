"""`make demo` stays true: its input matches the simulator's data, and the script runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.ids import parse_line
from orchestrator.simulator import SimConfig, seeded_failed_run_ids

ROOT = Path(__file__).resolve().parents[2]
DEMO_IDS = ROOT / "configs" / "demo-ids.txt"


def test_demo_input_is_the_simulators_failed_runs_plus_known_bad_lines() -> None:
    parsed = [
        parse_line(raw, n) for n, raw in enumerate(DEMO_IDS.read_bytes().splitlines(), start=1)
    ]
    ids = [p for p in parsed if isinstance(p, str)]
    unknown = {i for i in ids if i.startswith("fl_run_doesnotexist")}
    failed = seeded_failed_run_ids(SimConfig())
    assert set(ids) - unknown == set(failed)
    assert len(unknown) == 2
    assert len(ids) > len(set(ids))  # a duplicate, to show it is sent once
    assert sum(1 for p in parsed if p is not None and not isinstance(p, str)) == 2
    # Enough IDs to run into the demo simulator's 20/s limit.
    assert len(failed) > 40


@pytest.mark.subprocess
def test_make_demo_script_runs_clean_end_to_end(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "orchestrator").exists():
        pytest.fail("run the tests from the project's venv (make test)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALTOSTRAT_")}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "most for one run: 1" in done.stdout
    assert " -> fl_run_" in done.stdout
