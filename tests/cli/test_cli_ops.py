"""The operator's side of the command line, as a real subprocess: config files and
`config show`, clean JSON off a terminal, the summary file, metrics at every end, the
error budget, and help that teaches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.logs import RedactSecrets
from tests.helpers.clikit import run_cli
from tests.helpers.rerunkit import make_ids

pytestmark = pytest.mark.subprocess

TOKEN = "tok-ops-secret-42-padded-to-look-like-a-real-jwt"


async def orchestrator(
    *args: str, cwd: Path, stdin: bytes = b"", token: str | None = TOKEN, **extra: str
) -> tuple[int, str, str]:
    return await run_cli(*args, cwd=cwd, stdin=stdin, token=token, **extra)


def metrics(path: Path) -> dict[str, float]:
    """Samples with no label but the job by name, parsed with the Prometheus text-format
    parser."""
    families = text_string_to_metric_families(path.read_text())
    return {s.name: s.value for f in families for s in f.samples if set(s.labels) == {"job"}}


def ids_file(tmp_path: Path, ids: list[str]) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


async def test_config_show_names_each_values_source_and_hides_the_token(tmp_path: Path) -> None:
    config = tmp_path / "ops.toml"
    config.write_text('rate = "5/s"\nconcurrency = 3\nledger = "ops.jsonl"\n')
    code, out, err = await orchestrator(
        "config",
        "show",
        "--config",
        str(config),
        "--ledger",
        "flag.jsonl",
        cwd=tmp_path,
        ORCHESTRATOR_CONCURRENCY="6",
    )
    assert code == 0, err
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in out.splitlines()[1:]}
    assert rows["rate"] == ["5/s", f"file {config}"]
    assert rows["concurrency"] == ["6", "env ORCHESTRATOR_CONCURRENCY"]
    assert rows["ledger"] == ["flag.jsonl", "flag --ledger"]
    assert rows["timeout"] == ["30s", "default"]
    assert rows["token"] == ["set", "env ALTOSTRAT_TOKEN"]
    assert TOKEN not in out + err

    code, out, _ = await orchestrator("config", "show", "--json", cwd=tmp_path, token=None)
    shown = json.loads(out)
    assert shown["token"] == {"value": "unset", "text": "unset", "source": "env ALTOSTRAT_TOKEN"}
    assert shown["rate"] == {"value": 1.0, "text": "60/min", "source": "default"}


@pytest.mark.parametrize(
    ("rate", "per_s"), [("60/min", 1.0), ("1/s", 1.0), ("90/min", 1.5), ("3600/h", 1.0)]
)
async def test_config_show_prints_the_rate_as_written_and_json_gives_it_per_second(
    tmp_path: Path, rate: str, per_s: float
) -> None:
    """Operator safety issue, item 7: `config show` printed `rate 1/s` for `60/min`."""
    code, out, err = await orchestrator("config", "show", "--rate", rate, cwd=tmp_path)
    assert code == 0, err
    (line,) = [row for row in out.splitlines() if row.startswith("rate ")]
    assert line.split()[1] == rate
    code, out, err = await orchestrator("config", "show", "--json", "--rate", rate, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["rate"] == {"value": per_s, "text": rate, "source": "flag --rate"}


async def test_config_show_json_gives_typed_values(tmp_path: Path) -> None:
    """Operator safety issue, item 7: `config show --json` gave every value as a string."""
    config = tmp_path / "typed.toml"
    config.write_text('timeout = "1m"\nmax_failures = "5%"\nmax_server_failures = 20\n')
    code, out, err = await orchestrator(
        "config",
        "show",
        "--json",
        "--config",
        str(config),
        "--concurrency",
        "3",
        "--dry-run",
        cwd=tmp_path,
    )
    assert code == 0, err
    value = {key: row["value"] for key, row in json.loads(out).items()}
    assert value["concurrency"] == 3
    assert value["timeout"] == 60.0
    assert value["dry_run"] is True
    assert value["retry_failed"] is False
    assert value["token_file"] is None
    assert value["max_failures"] == {"percent": 5.0}
    assert value["max_server_failures"] == {"count": 20}
    assert value["ledger"] == "rerun-ledger.jsonl"
    assert value["fsync"] == "batch"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurency = 4\n", "unknown key 'concurency' in {path} (did you mean concurrency?)"),
        ('rate = "fast"\n', "invalid rate in {path}: rate 'fast' is not N/s, N/min, N/h or none"),
    ],
)
async def test_a_bad_config_file_exits_2_naming_key_and_file(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    for command in (["rerun", "-"], ["config", "show"], ["select", "--workflow", "fl_abc"]):
        code, out, err = await orchestrator(*command, "--config", str(config), cwd=tmp_path)
        assert code == 2
        assert err.strip() == "orchestrator: error: " + message.format(path=config)
        assert out == ""


async def test_off_a_terminal_stderr_is_clean_json_lines_and_the_summary_file_matches(
    tmp_path: Path,
) -> None:
    ids = make_ids(15)
    source = ids_file(tmp_path, [*ids, "bad-line"])
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, out, err = await orchestrator(
            "rerun",
            str(source),
            "--base-url",
            sim.base_url,
            "--rate",
            "none",
            "--progress",  # asked for, but stderr is no terminal: no bar
            "--summary-json",
            "summary.json",
            cwd=tmp_path,
        )
    assert code == 1
    assert out == ""
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert events[-1]["event"] == "rerun.summary"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: v for k, v in events[-1].items() if k in summary} == summary
    assert summary["succeeded"] == 15
    assert summary["rejected"] == 1
    assert "retry_command" not in summary  # nothing failed


async def test_metrics_and_retry_command_after_failures(tmp_path: Path) -> None:
    ids = make_ids(5)
    source = ids_file(tmp_path, ids)
    config = SimConfig(accept_any=True, token=TOKEN, script={ids[0]: [404]})
    async with RunningSimulator(config) as sim:
        code, _, err = await orchestrator(
            "rerun",
            str(source),
            "--base-url",
            sim.base_url,
            "--rate",
            "none",
            "--metrics-file",
            "m.prom",
            cwd=tmp_path,
        )
    assert code == 1
    summary = json.loads(err.splitlines()[-1])
    assert summary["retry_command"] == (
        "orchestrator report rerun-ledger.jsonl --ids failed | orchestrator rerun - "
        f"--ledger rerun-ledger.jsonl --retry-failed --base-url {sim.base_url}"
    )
    got = metrics(tmp_path / "m.prom")
    assert got["orchestrator_exit_code"] == 1
    assert got["orchestrator_last_success_timestamp_seconds"] == 0  # never succeeded


async def test_a_spent_error_budget_is_in_the_summary_and_the_metrics(tmp_path: Path) -> None:
    ids = make_ids(60)
    config = SimConfig(accept_any=True, token=TOKEN, script={i: [404] for i in ids[:30]})
    source = ids_file(tmp_path, ids)
    async with RunningSimulator(config) as sim:
        code, _, err = await orchestrator(
            "rerun",
            str(source),
            "--base-url",
            sim.base_url,
            "--rate",
            "none",
            "--concurrency",
            "1",
            "--max-failures",
            "3",
            "--metrics-file",
            "m.prom",
            cwd=tmp_path,
        )
        requests = sim.state.stats.requests
    assert code == 3
    assert '"rerun.budget_exhausted"' in err
    summary = json.loads(err.splitlines()[-1])
    assert summary["outcome"] == "budget_exhausted"
    assert summary["failed"] == 3
    assert requests == 3  # one at a time: nothing was sent after the third failure
    assert metrics(tmp_path / "m.prom")["orchestrator_exit_code"] == 3


async def test_metrics_are_written_on_abort_and_on_a_usage_error(tmp_path: Path) -> None:
    source = ids_file(tmp_path, make_ids(5))
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, _, _ = await orchestrator(
            "rerun",
            str(source),
            "--base-url",
            sim.base_url,
            "--metrics-file",
            "abort.prom",
            cwd=tmp_path,
            token="wrong-token-1",
        )
    assert code == 3
    assert metrics(tmp_path / "abort.prom")["orchestrator_exit_code"] == 3
    code, _, _ = await orchestrator(
        "rerun", str(source), "--metrics-file", "usage.prom", cwd=tmp_path, token=None
    )
    assert code == 2
    assert metrics(tmp_path / "usage.prom")["orchestrator_exit_code"] == 2


async def test_a_metrics_file_in_a_missing_directory_fails_before_sending(tmp_path: Path) -> None:
    code, _, err = await orchestrator(
        "rerun", "-", "--metrics-file", "nowhere/m.prom", cwd=tmp_path, stdin=b"fl_run_a\n"
    )
    assert code == 2
    assert "invalid --metrics-file nowhere/m.prom: its directory does not exist" in err


@pytest.mark.parametrize(
    "command",
    [[], ["rerun"], ["report"], ["config"], ["config", "show"], ["simulate"]],
)
async def test_every_command_has_help_with_real_examples(
    tmp_path: Path, command: list[str]
) -> None:
    code, out, _ = await orchestrator(*command, "--help", cwd=tmp_path)
    assert code == 0
    examples = out.split("examples:", 1)[1]
    commands = [line for line in examples.splitlines() if "orchestrator " in line]
    assert len(commands) >= 2, out


async def test_a_dry_run_writes_the_summary_it_is_given_and_no_metrics(tmp_path: Path) -> None:
    code, out, _ = await orchestrator(
        "rerun",
        "-",
        "--dry-run",
        "--summary-json",
        "s.json",
        "--metrics-file",
        "m.prom",
        cwd=tmp_path,
        stdin=b"fl_run_a\n",
        token=None,
    )
    assert code == 0
    assert out == "send\tfl_run_a\tnew\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
    assert json.loads((tmp_path / "s.json").read_text())["would_send"] == 1


async def test_console_logs_end_with_the_summary_table(tmp_path: Path) -> None:
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, _, err = await orchestrator(
            "rerun",
            "-",
            "--base-url",
            sim.base_url,
            "--rate",
            "none",
            "--log-format",
            "console",
            cwd=tmp_path,
            stdin=b"fl_run_a\nfl_run_b\n",
        )
    assert code == 0
    table = err[err.index("rerun completed: exit 0") :]
    assert "succeeded" in table
    assert "rerun-ledger.jsonl" in table
    assert "retry failed" not in table


async def test_in_a_kubernetes_pod_service_links_are_ignored_and_typos_warned(
    tmp_path: Path,
) -> None:
    """Kubernetes sets ORCHESTRATOR_PORT and ORCHESTRATOR_SERVICE_* for a Service named
    `orchestrator`: the run goes on in silence. Another unknown ORCHESTRATOR_* variable
    is a warning with a did-you-mean, and the run goes on too."""
    pod = {
        "ORCHESTRATOR_PORT": "tcp://10.96.0.12:80",
        "ORCHESTRATOR_PORT_80_TCP": "tcp://10.96.0.12:80",
        "ORCHESTRATOR_SERVICE_HOST": "10.96.0.12",
        "ORCHESTRATOR_SERVICE_PORT": "80",
    }
    (tmp_path / "ids.txt").write_text("fl_run_k1\n")
    for args in (["config", "show"], ["rerun", "ids.txt", "--dry-run"]):
        code, _, err = await orchestrator(*args, cwd=tmp_path, **pod)
        assert code == 0, err
        assert "unknown_variable" not in err
        code, _, err = await orchestrator(*args, cwd=tmp_path, ORCHESTRATOR_RAT="5/s", **pod)
        assert code == 0, err
        assert "unknown variable ORCHESTRATOR_RAT ignored (did you mean ORCHESTRATOR_RATE?)" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # No abbreviation: `--conc` is not --concurrency, today or when a --concise comes.
        (["rerun", "-", "--conc", "4"], "unrecognized arguments: --conc 4"),
        (
            ["rerun", "-", "--concurency", "4"],
            "unrecognized arguments: --concurency 4 (did you mean --concurrency?)"
            " (see orchestrator rerun --help)",
        ),
        (
            ["config", "show", "--rate-stor", "none"],
            "unrecognized arguments: --rate-stor (did you mean --rate-store?)"
            " (see orchestrator config show --help)",
        ),
        (
            ["select", "--workflow", "fl_a", "--limt", "3"],
            "unrecognized arguments: --limt 3 (did you mean --limit?)"
            " (see orchestrator select --help)",
        ),
    ],
)
async def test_an_unknown_or_abbreviated_flag_is_refused_by_its_subcommand(
    tmp_path: Path, args: list[str], said: str
) -> None:
    code, out, err = await orchestrator(*args, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert said in err
    assert len(err.strip().splitlines()) == 1


def test_a_short_secret_is_redacted_where_it_stands_whole_a_long_one_everywhere() -> None:
    redact = RedactSecrets(["wrong", "a-long-secret-token-of-forty-characters!"])
    event = {
        "ledger": "/tmp/wrongtok.jsonl",  # not the token: left as it is
        "said": "token wrong refused",
        "header": "Authorization: Bearer eyJhbGciOi.J9.x",
        "glued": "xa-long-secret-token-of-forty-characters!x",
        "nested": ["wrong", {"k": "(wrong)"}],
    }
    assert redact(None, "", event) == {
        "ledger": "/tmp/wrongtok.jsonl",
        "said": "token [redacted] refused",
        "header": "Authorization: Bearer [redacted]",
        "glued": "x[redacted]x",
        "nested": ["[redacted]", {"k": "([redacted])"}],
    }


async def test_an_implausibly_short_token_is_warned_of_and_never_garbles_a_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "ids.txt").write_text("")
    code, _, err = await orchestrator(
        "rerun", "ids.txt", "--ledger", "wrongtok.jsonl", "--base-url", "http://127.0.0.1:9",
        "--log-format", "json", cwd=tmp_path, token="wrong",
    )  # fmt: skip
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (short,) = [e for e in events if e["event"] == "token.short"]
    assert short["length"] == 5
    (starting,) = [e for e in events if e["event"] == "rerun.starting"]
    assert starting["ledger"] == "wrongtok.jsonl"


@pytest.mark.parametrize(
    ("flag", "given", "shown"),
    [
        ("--timeout", "30s", "30s"),
        ("--timeout", "2.5", "2.5s"),
        ("--timeout", "2m", "2m"),
        ("--wait-timeout", "5400", "1h30m"),
        ("--poll-interval", "90s", "1m30s"),
    ],
)
async def test_every_duration_takes_the_same_forms_and_shows_as_written(
    tmp_path: Path, flag: str, given: str, shown: str
) -> None:
    """Operator safety issue, item 7: `--timeout 30s` was refused while `--wait-timeout
    30m` worked, and config show printed `3600.0` for `1h`."""
    code, out, err = await orchestrator("config", "show", flag, given, cwd=tmp_path)
    assert code == 0, err
    (line,) = [row for row in out.splitlines() if row.startswith(flag[2:].replace("-", "_") + " ")]
    assert line.split()[1] == shown
