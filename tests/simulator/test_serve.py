"""`orchestrator simulate`: option parsing, and the real process on loopback."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from orchestrator.commands.simulate import add_arguments, config_from_args, run
from orchestrator.simulator import SimConfig
from tests.helpers.clikit import read_announcement

REPO = Path(__file__).resolve().parents[2]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_match_simconfig() -> None:
    args = _parse()
    assert (args.host, args.port) == ("127.0.0.1", 8080)
    assert config_from_args(args) == SimConfig()


def test_options_become_a_config() -> None:
    config = config_from_args(
        _parse(
            "--rate", "120/min", "--burst", "4", "--no-retry-after", "--no-rate-limit-headers",
            "--latency", "25", "--latency-spread", "0.5",
            "--error-rate", "10%", "--slow-rate", "0.05", "--slow-seconds", "2",
            "--bad-body-rate", "1%", "--runs", "50", "--workflows", "4",
            "--per-page", "10", "--seed", "9", "--token", "t0k",
        )
    )  # fmt: skip
    assert config.rate == 2.0
    assert (config.burst, config.retry_after, config.rate_limit_headers) == (4, False, "none")
    assert (config.latency_ms, config.latency_spread) == (25.0, 0.5)
    faults = (config.p_500, config.p_502, config.p_503, config.p_drop)
    assert faults == pytest.approx((0.04, 0.02, 0.03, 0.01))
    assert (config.p_slow, config.slow_s) == (0.05, 2.0)
    assert config.p_bad_body == pytest.approx(0.01)
    assert (config.runs, config.workflows, config.per_page, config.seed) == (50, 4, 10, 9)
    assert config.token == "t0k"


def test_limiter_options_become_a_config() -> None:
    config = config_from_args(
        _parse(
            "--rate", "300/min", "--limiter", "sliding-log", "--window", "2", "--count-refused",
            "--rate-limit-headers", "ietf", "--background-load", "2/s",
            "--background-stop-after", "8",
        )
    )  # fmt: skip
    assert (config.rate, config.limiter, config.window_s) == (5.0, "sliding-log", 2.0)
    assert (config.count_refused, config.rate_limit_headers) == (True, "ietf")
    assert (config.background_load, config.background_stop_s) == (2.0, 8.0)
    burst = config_from_args(_parse("--rate", "50/s", "--burst", "0"))
    assert (burst.limiter, burst.burst, burst.gcra_burst) == ("gcra", 0, 0)
    assert config_from_args(_parse("--rate", "50/s")).gcra_burst == 49


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate", "fast"],
        ["--error-rate", "150%"],
        ["--port", "-1"],
        ["--burst", "-1"],
        ["--limiter", "leaky"],
        ["--window", "0"],
        ["--rate-limit-headers", "draft"],
        ["--background-load", "lots"],
        ["--background-stop-after", "-3"],
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(*argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_rates_that_do_not_fit_together_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_parse("--error-rate", "0.7", "--slow-rate", "0.7")) == 2
    assert "sum to at most 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "5/s", "--window", "2"], "--window is for the window limiters"),
        (["--rate", "5/s", "--limiter", "fixed-window", "--burst", "1"], "--burst is for"),
        (["--rate", "5/s", "--limiter", "fixed-window", "--count-refused"], "--count-refused"),
        (["--rate", "5/s", "--background-stop-after", "3"], "needs --background-load"),
        (["--limiter", "sliding-log"], "need --rate"),
        (["--burst", "0"], "need --rate"),
        (["--background-load", "1/s"], "need --rate"),
    ],
)
def test_limiter_options_that_do_not_fit_together_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(_parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestrator simulate: ")
    assert message in err
    assert err.count("\n") == 1


def test_both_header_options_at_once_are_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse("--rate-limit-headers", "ietf", "--no-rate-limit-headers")
    assert exit_info.value.code == 2


@pytest.mark.subprocess
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_command_serves_until_signalled(signum: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "simulate",
        "--port",
        "0",
        "--runs",
        "20",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        lines, base_url = await read_announcement(process.stdout)
        assert base_url.startswith("http://127.0.0.1:")
        assert "token: sim-token" in lines
        failed = lines[lines.index("failed run IDs to try:") + 1].strip()
        assert any(
            f"ALTOSTRAT_TOKEN=sim-token orchestrator rerun ids.txt --base-url {base_url}" in line
            for line in lines
        )
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer sim-token"}
            async with session.post(
                f"{base_url}/workflows/runs/{failed}/rerun", headers=headers
            ) as r:
                assert r.status == 202
            async with session.get(f"{base_url}/_sim/stats") as r:
                assert (await r.json())["accepted"] == {failed: 1}
        process.send_signal(signum)
        async with asyncio.timeout(20):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert b"Traceback" not in err
    assert err == b""
    assert out.decode().strip().endswith("simulator stopped")
