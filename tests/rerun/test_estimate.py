"""Where, how many and how long, before sending: the dry run's estimate, and the question a
real run asks on a terminal before it sends anything."""

from __future__ import annotations

import io
import json
import os
import pty
import random
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from orchestrator.commands.rerun import FLAGS, plan_text
from orchestrator.errors import ExitCode
from orchestrator.outcome import (
    StopReason,
    effective_rate,
    estimate_text,
    estimated_seconds,
    exit_code,
    rate_text,
    summary,
)
from orchestrator.rerun.plan import Plan
from orchestrator.rerun.plumbing import Plumbing
from orchestrator.rerun.session import run_rerun
from orchestrator.settings import load_settings
from orchestrator.shared.localstore import LocalStore
from orchestrator.shared.store import fingerprint
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.units import format_duration
from tests.helpers.clikit import run_cli
from tests.helpers.fakeclock import FakeClock
from tests.helpers.rerunkit import make_ids, read_ledger, rerun

TOKEN = "sim-token-padded-to-look-like-a-real-jwt-0123456789"
PROD = "https://v1.api.altostrat.io"

# ---- pure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "under 1 s"),
        (45, "45 s"),
        (59.6, "1 min"),
        (720, "12 min"),
        (3599.9, "1 h"),
        (10_000, "2 h 47 min"),
        (3 * 86400 + 4 * 3600 + 100, "3 d 4 h"),
        (2 * 86400, "2 d"),
    ],
)
def test_a_duration_reads_in_the_units_that_matter(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_ten_thousand_ids_at_60_per_minute_take_about_2_h_47_min() -> None:
    seconds = estimated_seconds(10_000, 1.0)
    assert seconds == 10_000
    assert estimate_text(seconds, 1.0, PROD) == f"about 2 h 47 min at 60/min to {PROD}"


def test_with_no_rate_the_duration_is_unknown_not_invented() -> None:
    assert estimated_seconds(10_000, None) is None
    assert estimate_text(None, None, PROD).startswith("time unknown")


@pytest.mark.parametrize(
    ("stated", "learned", "effective"),
    [(1.0, None, 1.0), (None, 0.5, 0.5), (1.0, 0.5, 0.5), (0.2, 0.5, 0.2), (None, None, None)],
)
def test_the_effective_rate_is_the_stated_one_under_a_learned_limit(
    stated: float | None, learned: float | None, effective: float | None
) -> None:
    assert effective_rate(stated, learned) == effective


@pytest.mark.parametrize(("per_s", "text"), [(1.0, "60/min"), (0.5, "30/min"), (20.0, "20/s")])
def test_rates_below_ten_a_second_read_per_minute(per_s: float, text: str) -> None:
    assert rate_text(per_s) == text


def test_the_prompt_names_count_source_url_rate_and_time() -> None:
    text = plan_text(Plan(10_000, "ids.txt", PROD, 1.0))
    assert text == f"about to rerun 10,000 IDs from ids.txt: about 2 h 47 min at 60/min to {PROD}"
    unpaced = plan_text(Plan(3, "ids.txt", PROD, None))
    assert unpaced == f"about to rerun 3 IDs from ids.txt: to {PROD}, with no rate limit " + (
        "(--rate none, none learned)"
    )


# ---- the engine -----------------------------------------------------------------------


async def dry_run(
    tmp_path: Path, ids: list[str], token: str | None = None, **flags: object
) -> dict[str, object]:
    given: dict[str, object] = {"ledger": tmp_path / "l.jsonl", "dry_run": True, **flags}
    settings = load_settings(given, FLAGS).settings
    plumbing = Plumbing(
        clock=FakeClock(),
        rng=random.Random(0),
        handle_signals=False,
        stdin=io.BytesIO("".join(f"{i}\n" for i in ids).encode()),
        stdout=io.StringIO(),
        token=token,
    )
    return summary(await run_rerun(settings, None, plumbing)).as_fields()


async def test_the_dry_run_summary_gives_base_url_and_estimated_duration(tmp_path: Path) -> None:
    fields = await dry_run(tmp_path, make_ids(120), rate="60/min", rate_store="none")
    assert fields["would_send"] == 120
    assert fields["estimated_duration_s"] == 120.0
    assert fields["estimate_rate_per_s"] == 1.0
    assert fields["base_url"] == PROD


async def test_a_dry_run_without_rate_or_learned_limit_says_the_duration_is_unknown(
    tmp_path: Path,
) -> None:
    fields = await dry_run(tmp_path, make_ids(5), rate="none", rate_store="none")
    assert fields["estimated_duration_s"] is None
    assert fields["estimate_rate_per_s"] is None


async def test_a_dry_run_estimates_at_the_limit_learned_for_the_token(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = LocalStore(store_dir, fingerprint(PROD, TOKEN))
    await store.publish(0.5, "learned")
    await store.close()
    fields = await dry_run(
        tmp_path, make_ids(60), token=TOKEN, rate="none", rate_store=str(store_dir)
    )
    assert fields["estimate_rate_per_s"] == 0.5
    assert fields["estimated_duration_s"] == 120.0
    # Another token's budget says nothing of this one's.
    other = await dry_run(
        tmp_path, make_ids(60), token=TOKEN + "x", rate="none", rate_store=str(store_dir)
    )
    assert other["estimated_duration_s"] is None


async def test_a_dry_run_creates_no_rate_store(tmp_path: Path) -> None:
    await dry_run(tmp_path, make_ids(3), token=TOKEN, rate_store=str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


async def test_declining_the_plan_sends_nothing_and_counts_only_what_would_be_sent(
    tmp_path: Path,
) -> None:
    ids = make_ids(10)
    source = tmp_path / "ids.txt"
    ledger = tmp_path / "l.jsonl"
    async with RunningSimulator(SimConfig(accept_any=True)) as sim:
        done = await rerun(sim, ledger, ids[:4])  # four are done already
        # ... and a new run one of them made is no original: the plan skips it as the run does
        new = str(done.events("succeeded")[0]["new_run_id"])
        source.write_text("".join(f"{i}\n" for i in [*ids, ids[0], "junk", new]))
        posts = len(sim.state.request_log)
        seen: list[Plan] = []

        def decline(plan: Plan) -> bool:
            seen.append(plan)
            return False

        given = {"source": str(source), "ledger": ledger, "base_url": sim.base_url}
        settings = load_settings({**given, "rate": "30/min", "rate_store": "none"}, FLAGS)
        plumbing = Plumbing(
            clock=FakeClock(), rng=random.Random(0), handle_signals=False, confirm=decline
        )
        result = await run_rerun(settings.settings, sim.config.token, plumbing)
        assert len(sim.state.request_log) == posts  # nothing more was sent
    assert result.reason is StopReason.DECLINED
    assert exit_code(result) == ExitCode.ABORTED
    assert seen == [Plan(6, str(source), sim.base_url, 0.5)]
    assert [r["event"] for r in read_ledger(ledger)].count("session_started") == 1


# ---- the CLI ------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_cli_dry_run_says_how_long_at_what_rate_and_where(tmp_path: Path) -> None:
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in make_ids(10_000)))
    args = ("rerun", "ids.txt", "--dry-run", "--rate", "60/min", "--rate-store", "none")
    code, _, stderr = await run_cli(*args, "--log-format", "json", cwd=tmp_path)
    assert code == 0, stderr
    [final] = [json.loads(x) for x in stderr.splitlines() if '"rerun.summary"' in x]
    assert (final["estimated_duration_s"], final["base_url"]) == (10_000.0, PROD)
    code, _, stderr = await run_cli(*args, "--log-format", "console", cwd=tmp_path, COLUMNS="200")
    assert code == 0, stderr
    assert f"about 2 h 47 min at 60/min to {PROD}" in stderr


@pytest.mark.subprocess
async def test_a_dry_run_writes_its_summary_only_where_its_own_command_line_asks(
    tmp_path: Path,
) -> None:
    """The estimate and base URL go in the summary JSON of a dry run given --summary-json;
    a summary_json from a config file (a cron job's) is left alone, and the metrics file
    is never written by a rehearsal."""
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in make_ids(120)))
    args = ("rerun", "ids.txt", "--dry-run", "--rate", "60/min", "--rate-store", "none")
    code, _, err = await run_cli(*args, "--summary-json", "plan.json", cwd=tmp_path)
    assert code == 0, err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (plan["would_send"], plan["estimated_duration_s"]) == (120, 120.0)
    assert plan["base_url"] == PROD

    (tmp_path / "cron.toml").write_text(
        'summary_json = "cron-summary.json"\nmetrics_file = "cron.prom"\n'
    )
    code, _, err = await run_cli(*args, "--config", "cron.toml", cwd=tmp_path)
    assert code == 0, err
    assert not (tmp_path / "cron-summary.json").exists()
    assert not (tmp_path / "cron.prom").exists()

    code, out, err = await run_cli(*args, "--summary-json", "-", cwd=tmp_path)
    assert (code, out) == (2, "")
    assert "a dry run prints its plan on stdout" in err


PROMPT = b"go on? [y/N] "


def _on_a_terminal(args: list[str], cwd: Path, answer: bytes | None) -> tuple[int, str]:
    """Run the CLI with stdin and stderr on a new pseudo-terminal; when `answer` is given,
    type it once the prompt shows. Its exit code and what the terminal showed. Bounded."""
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "ALTO"))}
    env |= {"ALTOSTRAT_TOKEN": TOKEN, "COLUMNS": "200", "TERM": "xterm"}
    command = [sys.executable, "-m", "orchestrator", *args]
    process = subprocess.Popen(
        command, stdin=secondary, stdout=subprocess.DEVNULL, stderr=secondary, env=env, cwd=cwd
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
                if answer is not None and screen.endswith(PROMPT):
                    os.write(primary, answer)
                    answer = None
            elif process.poll() is not None:
                break
        code = process.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    return code, screen.decode("utf-8", "replace")


async def on_a_terminal(args: list[str], cwd: Path, answer: bytes | None = None) -> tuple[int, str]:
    with anyio.fail_after(40):
        return await anyio.to_thread.run_sync(_on_a_terminal, args, cwd, answer)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as running:
        yield running


def cli_args(tmp_path: Path, sim: RunningSimulator, count: int = 3) -> list[str]:
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in make_ids(count)))
    flags = ["--rate", "none", "--rate-store", "none", "--no-progress"]
    return ["rerun", "ids.txt", "--base-url", sim.base_url, *flags]


@pytest.mark.subprocess
async def test_on_a_terminal_the_run_asks_first_and_no_sends_nothing(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    code, screen = await on_a_terminal(cli_args(tmp_path, sim), tmp_path, answer=b"n\n")
    assert code == ExitCode.ABORTED, screen
    assert f"about to rerun 3 IDs from ids.txt: to {sim.base_url}" in screen
    assert "go on? [y/N]" in screen
    assert "declined" in screen
    assert len(sim.state.request_log) == 0
    assert not any(r["event"] == "dispatched" for r in read_ledger(tmp_path / "rerun-ledger.jsonl"))


@pytest.mark.subprocess
async def test_on_a_terminal_yes_at_the_prompt_sends(tmp_path: Path, sim: RunningSimulator) -> None:
    code, screen = await on_a_terminal(cli_args(tmp_path, sim), tmp_path, answer=b"y\n")
    assert code == 0, screen
    assert "go on? [y/N]" in screen
    assert len(sim.state.request_log) == 3


@pytest.mark.subprocess
@pytest.mark.parametrize("skip", [["--yes"], ["-y"], ["--config", "yes.toml"]])
async def test_yes_skips_the_question(
    tmp_path: Path, sim: RunningSimulator, skip: list[str]
) -> None:
    (tmp_path / "yes.toml").write_text("yes = true\n")
    code, screen = await on_a_terminal([*cli_args(tmp_path, sim), *skip], tmp_path)
    assert code == 0, screen
    assert "go on?" not in screen
    assert len(sim.state.request_log) == 3


@pytest.mark.subprocess
async def test_with_stdin_not_a_terminal_nothing_is_asked(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    code, _, stderr = await run_cli(*cli_args(tmp_path, sim), cwd=tmp_path, token=TOKEN)
    assert code == 0, stderr
    assert "go on?" not in stderr
    assert len(sim.state.request_log) == 3
