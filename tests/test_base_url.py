"""A base URL that carries a secret or would change the endpoint is refused at validation,
wherever it was set, in one line that never repeats the password, before anything is sent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator.commands.rerun import FLAGS
from orchestrator.errors import ConfigError
from orchestrator.settings import base_url_problem, load_settings
from orchestrator.simulator import RunningSimulator, SimConfig

PASSWORD = "pw-Secr3t-0451"
TOKEN = "tok-base-url-31-padded-to-look-like-a-real-jwt"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://ops:{PASSWORD}@api.example", "user or password"),
        ("http://ops@api.example", "user or password"),
        ("http://@api.example", "user or password"),
        (f"ftp://ops:{PASSWORD}@api.example", "user or password"),
        (f"ops:{PASSWORD}@api.example", "not an http(s) URL"),
        ("http://api.example/?x=1", "query"),
        ("http://api.example/v1?", "query"),
        ("http://api.example/#frag", "fragment"),
        ("http://api.example#", "fragment"),
        ("http://api.example/a b", "whitespace or control characters"),
        ("http://api.example/\x1b[2J", "whitespace or control characters"),
        ("http://api.example:99999", "cannot be parsed"),
        ("localhost:80", "'localhost:80' is not an http(s) URL"),
    ],
)
def test_a_base_url_with_userinfo_a_query_or_a_fragment_is_refused(url: str, problem: str) -> None:
    found = base_url_problem(url)
    assert found is not None
    assert problem in found
    assert PASSWORD not in found


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://v1.api.altostrat.io", "https://v1.api.altostrat.io"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("https://gateway.example/altostrat/v1/", "https://gateway.example/altostrat/v1"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_a_plain_base_url_is_kept(url: str, kept: str) -> None:
    assert load_settings({"base_url": url}, FLAGS).settings.base_url == kept


@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("flag", "invalid --base-url: "),
        ("ORCHESTRATOR_BASE_URL", "invalid ORCHESTRATOR_BASE_URL: "),
        ("ALTOSTRAT_BASE_URL", "invalid ALTOSTRAT_BASE_URL: "),
        ("file", "invalid base_url in "),
    ],
)
def test_each_place_a_base_url_is_set_is_checked_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, named: str
) -> None:
    url = f"http://ops:{PASSWORD}@api.example"
    given: dict[str, object] = {}
    config = None
    if where == "flag":
        given["base_url"] = url
    elif where == "file":
        config = tmp_path / "ops.toml"
        config.write_text(f'base_url = "{url}"\n')
    else:
        monkeypatch.setenv(where, url)
    with pytest.raises(ConfigError) as refused:
        load_settings(given, FLAGS, config)
    message = str(refused.value)
    assert message.startswith(named)
    assert "user or password" in message
    assert PASSWORD not in message


async def orchestrator(*args: str, cwd: Path, **extra: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    env["ALTOSTRAT_TOKEN"] = TOKEN
    env |= extra
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "orchestrator", *args],
            input=b"fl_run_a1\n",
            cwd=cwd,
            env=env,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


COMMANDS = {
    "rerun": ["rerun", "-"],
    "dry run": ["rerun", "-", "--dry-run"],
    "select": ["select", "--workflow", "fl_abc"],
    "config show": ["config", "show"],
}


@pytest.mark.subprocess
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_every_command_refuses_such_a_url_before_sending_and_hides_the_password(
    tmp_path: Path, command: str
) -> None:
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        host = sim.base_url.removeprefix("http://")
        for url in (
            f"http://ops:{PASSWORD}@{host}",
            f"{sim.base_url}/?x=1",
            f"{sim.base_url}/#frag",
        ):
            code, out, err = await orchestrator(*COMMANDS[command], "--base-url", url, cwd=tmp_path)
            assert code == 2, (url, err)
            assert len(err.strip().splitlines()) == 1
            assert err.startswith("orchestrator: error: invalid --base-url: the URL holds ")
            assert PASSWORD not in out + err
            assert out == ""
        # The same from the environment, as cron would set it.
        code, out, err = await orchestrator(
            *COMMANDS[command], cwd=tmp_path, ALTOSTRAT_BASE_URL=f"http://ops:{PASSWORD}@{host}"
        )
        assert code == 2
        assert "invalid ALTOSTRAT_BASE_URL" in err
        assert PASSWORD not in out + err
        assert sim.state.stats.requests == 0
    assert not (tmp_path / "rerun-ledger.jsonl").exists()
