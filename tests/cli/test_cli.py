"""The `orchestrator` command as a real subprocess: exit codes, one-line errors, signals,
and the token kept out of every output."""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from orchestrator.ledger.writer import FsyncPolicy, LedgerWriter
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import TOKEN, env, orchestrator, wait_for_event, write_ids
from tests.helpers.rerunkit import make_ids, read_ledger

pytestmark = pytest.mark.subprocess


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as running:
        yield running


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rerun", "--concurrency", "zero"], "argument --concurrency: invalid int value"),
        (["rerun", "--concurrency", "0"], "invalid --concurrency"),
        (["rerun", "--rate", "fast"], "invalid --rate"),
        (["rerun", "--bogus"], "unrecognized arguments: --bogus"),
        (["rerun", "absent.txt"], "cannot read absent.txt"),
        (["rerun", "--base-url", "localhost:80"], "invalid --base-url"),
        (["frobnicate"], "invalid choice"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = await orchestrator(*args, cwd=tmp_path)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


async def test_missing_token_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await orchestrator("rerun", "-", cwd=tmp_path, token=None)
    assert code == 2
    assert err.strip() == (
        "orchestrator: error: no API token: set ALTOSTRAT_TOKEN or pass --token-file PATH"
    )


async def test_exit_0_when_every_id_succeeds_and_stdin_is_read(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    ids = make_ids(12)
    stdin = "".join(f"{i}\n" for i in ids).encode()
    code, _, err = await orchestrator(
        "rerun", "-", "--base-url", sim.base_url, "--rate", "none", cwd=tmp_path, stdin=stdin
    )
    assert code == 0, err
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["event"] == "rerun.summary"
    assert summary["succeeded"] == 12
    assert (tmp_path / "rerun-ledger.jsonl").exists()


async def test_exit_1_when_an_id_fails(sim: RunningSimulator, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", ["fl_run_ok1", "not-an-id"])
    code, _, _ = await orchestrator(
        "rerun", str(source), "--base-url", sim.base_url, "--rate", "none", cwd=tmp_path
    )
    assert code == 1


async def test_exit_3_on_a_refused_token(sim: RunningSimulator, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", make_ids(50))
    code, _, err = await orchestrator(
        "rerun",
        str(source),
        "--base-url",
        sim.base_url,
        "--concurrency",
        "2",
        cwd=tmp_path,
        token="wrong-token-123",
    )
    assert code == 3
    assert sim.state.stats.requests <= 2
    assert '"rerun.aborted"' in err


async def test_second_process_on_one_ledger_exits_2(sim: RunningSimulator, tmp_path: Path) -> None:
    holder = LedgerWriter(tmp_path / "rerun-ledger.jsonl", FsyncPolicy.NEVER)
    try:
        code, _, err = await orchestrator(
            "rerun", "-", "--base-url", sim.base_url, cwd=tmp_path, stdin=b"fl_run_a1\n"
        )
    finally:
        holder.close()
    assert code == 2
    assert "is in use by another orchestrator process" in err
    assert sim.state.stats.requests == 0


async def test_token_never_appears_in_any_output_at_any_level(
    sim: RunningSimulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    source = write_ids(tmp_path / "ids.txt", [*make_ids(5), "bad"])
    outputs = []
    for log_format in ("json", "console"):
        for token in (TOKEN, "x" + TOKEN):  # accepted, then refused (401)
            token_file.write_text(token)
            ledger = tmp_path / f"{log_format}-{len(token)}.jsonl"
            code, out, err = await orchestrator(
                "rerun",
                str(source),
                "--base-url",
                sim.base_url,
                "--rate",
                "none",
                "--log-level",
                "debug",
                "--log-format",
                log_format,
                "--token-file",
                str(token_file),
                "--ledger",
                str(ledger),
                cwd=tmp_path,
                token=None,
            )
            assert code in (1, 3)
            outputs += [out, err, ledger.read_text()]
    assert any("rerun.succeeded" in o for o in outputs)  # debug lines were really on
    for text in outputs:
        assert TOKEN not in text


async def test_sigterm_drains_in_flight_requests_and_resumes_without_loss(
    tmp_path: Path,
) -> None:
    """SIGTERM mid-run: exit 143, nothing in doubt, and a resume finishes the rest once."""
    ids = make_ids(300)
    source = write_ids(tmp_path / "ids.txt", ids)
    # A request held for a moment by the server is in flight when the signal lands.
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[20]: ["slow"]}, slow_s=0.5)
    async with RunningSimulator(config) as sim:
        args = [
            sys.executable,
            "-m",
            "orchestrator",
            "rerun",
            str(source),
            "--base-url",
            sim.base_url,
            "--rate",
            "100/s",
            "--concurrency",
            "4",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--timeout",
            "5",
        ]
        with anyio.fail_after(30):
            async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
                await wait_for_event(process, "rerun.succeeded", count=15)
                process.send_signal(signal.SIGTERM)
                code = await process.wait()
        assert code == 143
        records = read_ledger(tmp_path / "rerun-ledger.jsonl")
        assert records[-1]["event"] == "session_ended"
        assert records[-1]["exit_code"] == 143
        dispatched = {r["original_run_id"] for r in records if r["event"] == "dispatched"}
        settled = {r["original_run_id"] for r in records if r["event"] in ("succeeded", "failed")}
        assert dispatched == settled  # zero in doubt
        assert len(settled) < len(ids)

        code, _, err = await orchestrator(
            "rerun", str(source), "--base-url", sim.base_url, "--rate", "none", cwd=tmp_path
        )
        assert code == 0, err
        assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(ids, 1))


async def test_sigint_exits_130(sim: RunningSimulator, tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", make_ids(200))
    args = [
        sys.executable,
        "-m",
        "orchestrator",
        "rerun",
        str(source),
        "--base-url",
        sim.base_url,
        "--rate",
        "50/s",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    ]
    with anyio.fail_after(30):
        async with await anyio.open_process(args, cwd=tmp_path, env=env()) as process:
            await wait_for_event(process, "rerun.succeeded", count=3)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130


async def test_version_and_module_entry_point(tmp_path: Path) -> None:
    code, out, _ = await orchestrator("--version", cwd=tmp_path)
    assert code == 0
    assert out.startswith("orchestrator ")
