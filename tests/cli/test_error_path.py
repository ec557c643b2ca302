"""No command prints a traceback: a ledger line that is JSON but not a record is counted
corrupt and skipped, an unusable output path is a usage error before anything is sent, and
a bug is one line on stderr and exit 70, its traceback only at --log-level debug."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.ledger.idstore import IdState
from orchestrator.ledger.replay import replay
from orchestrator.ledger.report import LedgerReport
from orchestrator.simulator import RunningSimulator, SimConfig
from orchestrator.ui.summary import print_summary

TOKEN = "tok-error-path-12-padded-to-look-like-a-real-jwt"
AT = "2026-11-30T12:00:00.000Z"

# ---- the reader's contract, written out apart from the code --------------------------------

Kind = tuple[type, ...]
_INT: Kind = (int,)
_STR: Kind = (str,)
_NONE = type(None)
# event -> the fields a reader reads, with the JSON types the writer gives them; `at` is a
# string in every event; ID events must name their ID.
READ_FIELDS: dict[str, dict[str, Kind]] = {
    "session_started": {},
    "session_ended": {"exit_code": _INT, "reason": _STR, "input_unread": (bool,)},
    "dispatched": {"original_run_id": _STR},
    "attempt_failed": {
        "original_run_id": _STR,
        "http_status": (int, _NONE),
        "error": _STR,
        "resendable": (bool,),
    },
    "succeeded": {
        "original_run_id": _STR,
        "new_run_id": (str, _NONE),
        "http_status": _INT,
        "error": (str, _NONE),
    },
    "failed": {"original_run_id": _STR, "http_status": (int, _NONE), "error": _STR},
    "finished": {"original_run_id": _STR, "new_run_id": _STR, "outcome": _STR},
    "rejected": {"line": _INT, "input": _STR},
    "skipped": {"run_id": _STR, "reason": _STR},
}
ID_EVENTS = {e for e, fields in READ_FIELDS.items() if "original_run_id" in fields}
# Fields without which an event is no record.
REQUIRED = {**dict.fromkeys(ID_EVENTS, "original_run_id"), "skipped": "run_id"}


def _of(value: object, kind: Kind) -> bool:
    if isinstance(value, bool) and bool not in kind:
        return False  # JSON true is no number
    return isinstance(value, kind)


def is_record(value: object) -> bool:
    """What the reader must take as a record; anything else is corrupt."""
    if not isinstance(value, dict) or not isinstance(event := value.get("event"), str):
        return False
    if event not in READ_FIELDS:
        return False
    fields = {"at": _STR, **READ_FIELDS[event]}
    if event in REQUIRED and REQUIRED[event] not in value:
        return False
    return all(_of(value[key], kind) for key, kind in fields.items() if key in value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
times = st.datetimes(timezones=st.timezones() | st.none()).map(lambda t: t.isoformat())
run_ids = st.sampled_from(["fl_run_a", "fl_run_b", "", "fl_run_\x1b[2J", "x" * 70])
# Objects shaped like records, their fields' values drawn well or badly.
record_like = st.fixed_dictionaries(
    {"event": st.sampled_from([*READ_FIELDS, "martian"])},
    optional={
        "at": times | json_values,
        "original_run_id": run_ids | json_values,
        "new_run_id": run_ids | json_values,
        "http_status": st.sampled_from([202, 404, None]) | json_values,
        "error": st.sampled_from(["timeout", None]) | json_values,
        "resendable": st.booleans() | json_values,
        "reason": st.sampled_from(["completed", "in_doubt"]) | json_values,
        "exit_code": st.integers(0, 255) | json_values,
        "line": st.integers(1, 9) | json_values,
        "input": st.text(max_size=8) | json_values,
        "outcome": st.sampled_from(["failed_again", "in_doubt", "completed"]) | json_values,
        "attempt": json_values,
        "run_id": run_ids | json_values,
        "input_unread": st.booleans() | json_values,
    },
)
GOOD = {
    "at": times,
    "original_run_id": run_ids,
    "new_run_id": run_ids,
    "http_status": st.sampled_from([202, 404, 500]),
    "error": st.sampled_from(["timeout", "not_found"]),
    "resendable": st.booleans(),
    "reason": st.sampled_from(["completed", "sigint"]),
    "exit_code": st.integers(0, 255),
    "line": st.integers(1, 9),
    "input": st.text(max_size=8),
    "outcome": st.sampled_from(["failed_again", "in_doubt", "completed", "lost"]),
    "run_id": run_ids,
    "input_unread": st.booleans(),
}
# Records as the writer makes them, and the same with one field's value replaced.
good_records = st.sampled_from(list(READ_FIELDS)).flatmap(
    lambda event: st.fixed_dictionaries(
        {"event": st.just(event), "at": times, **{f: GOOD[f] for f in READ_FIELDS[event]}}
    )
)
spoiled_records = good_records.flatmap(
    lambda record: st.sampled_from(sorted(record)).flatmap(
        lambda key: json_values.map(lambda value: {**record, key: value})
    )
)
ledger_values = st.lists(json_values | record_like | good_records | spoiled_records, max_size=25)


def as_lines(values: list[object]) -> list[bytes]:
    return [json.dumps(v).encode() + b"\n" for v in values]


@given(ledger_values)
def test_replay_counts_every_json_line_that_is_no_record_as_corrupt(values: list[object]) -> None:
    for unfinished in (False, True):
        state = replay(as_lines(values), unfinished=unfinished)
        good = sum(1 for v in values if is_record(v))
        assert state.records == good
        assert state.corrupt_lines == len(values) - good


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)  # rich renders each
@given(ledger_values)
def test_the_report_reader_counts_them_alike_and_still_summarises(values: list[object]) -> None:
    report = LedgerReport()
    report.feed_lines(as_lines(values))
    good = sum(1 for v in values if is_record(v))
    assert report.state.records == good
    assert report.state.corrupt_lines == len(values) - good
    summary = report.summary("l.jsonl", running=False)
    json.dumps(summary.as_fields())
    for state in IdState:
        list(report.ids(state))
    report.exit_code()
    print_summary(summary, "ledger l.jsonl", io.StringIO())


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_any_bytes_at_all_replay_without_raising(lines: list[bytes]) -> None:
    state = replay(line + b"\n" for line in lines)
    assert state.records + state.corrupt_lines == sum(1 for x in lines if x.strip())


def test_a_rejected_line_whose_line_number_is_a_list_is_corrupt() -> None:
    """The line from the issue: it crashed `report --json`."""
    lines = [
        b'{"event":"rejected","line":[1],"reason":"bad_prefix","input":"x","at":"'
        + AT.encode()
        + b'"}\n',
        b'{"event":"dispatched","original_run_id":"fl_run_a","attempt":1,"at":"'
        + AT.encode()
        + b'"}\n',
        b'{"event":"succeeded","original_run_id":"fl_run_a","http_status":"202"}\n',
    ]
    state = replay(lines)
    assert state.corrupt_lines == 2
    assert state.corrupt_shown == [1, 3]
    assert state.ids == {"fl_run_a": IdState.IN_DOUBT}  # its answer unreadable: not resent
    report = LedgerReport()
    report.feed_lines(lines)
    assert report.summary("l", running=False).as_fields()["corrupt_lines"] == 2


def test_an_outcome_named_after_a_summary_field_cannot_overwrite_it() -> None:
    finished = {
        "event": "finished", "original_run_id": "fl_run_b", "new_run_id": "fl_run_c",
        "outcome": "in_doubt", "at": AT,
    }  # fmt: skip
    lines = as_lines([{"event": "dispatched", "original_run_id": "fl_run_a", "at": AT}, finished])
    report = LedgerReport()
    report.feed_lines(lines)
    fields = report.summary("l", running=False).as_fields()
    assert fields["in_doubt_ids"] == ["fl_run_a"]
    assert fields["finished_by_outcome"] == {"in_doubt": 1}


# ---- as subprocesses ---------------------------------------------------------------------


def clean_env(token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    if token is not None:
        env["ALTOSTRAT_TOKEN"] = token
    return env


async def run(argv: list[str], cwd: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    with anyio.fail_after(30):
        done = await anyio.run_process(argv, input=stdin, cwd=cwd, env=clean_env(), check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def orchestrator(*args: str, cwd: Path, stdin: bytes = b"") -> tuple[int, str, str]:
    return await run([sys.executable, "-m", "orchestrator", *args], cwd, stdin)


@pytest.mark.subprocess
async def test_report_json_of_a_ledger_with_a_hostile_line_is_one_json_object(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "l.jsonl"
    ledger.write_text(
        f'{{"event":"rejected","line":[1],"reason":"r","input":"x","at":"{AT}"}}\n'
        f'{{"event":"dispatched","original_run_id":"fl_run_a","attempt":1,"at":"{AT}"}}\n'
        f'{{"event":"succeeded","original_run_id":"fl_run_a","new_run_id":"fl_run_b",'
        f'"new_run_status":"pending","http_status":202,"attempts":1,"at":"{AT}"}}\n'
    )
    code, out, err = await orchestrator("report", str(ledger), "--json", cwd=tmp_path)
    assert code == 0
    assert err == ""
    fields = json.loads(out)
    assert fields["corrupt_lines"] == 1
    assert fields["succeeded"] == 1


def loop(tmp_path: Path, name: str) -> Path:
    """A symbolic link that points at itself."""
    path = tmp_path / name
    path.symlink_to(path.name)
    return path


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("flag", "make", "problem"),
    [
        ("--summary-json", lambda t: loop(t, "s.json"), "Too many levels of symbolic links"),
        ("--metrics-file", lambda t: loop(t, "m.prom"), "Too many levels of symbolic links"),
        ("--ledger", lambda t: loop(t, "l.jsonl"), "Too many levels of symbolic links"),
        ("--ledger", lambda t: t, "it is a directory"),
        ("--summary-json", lambda t: t, "it is a directory"),
        ("--ledger", lambda t: t / "nowhere" / "l.jsonl", "its directory does not exist"),
        ("--metrics-file", lambda t: Path(os.devnull), "it is not a regular file"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
async def test_an_unusable_path_is_a_usage_error_before_anything_is_sent(
    tmp_path: Path, flag: str, make: object, problem: str, dry_run: bool
) -> None:
    assert callable(make)
    path = make(tmp_path)
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, out, err = await orchestrator(
            "rerun",
            "-",
            "--base-url",
            sim.base_url,
            flag,
            str(path),
            *(["--dry-run"] if dry_run else []),
            cwd=tmp_path,
            stdin=b"fl_run_a1\n",
        )
        assert sim.state.stats.requests == 0
    assert code == 2, err
    assert out == ""
    assert err == f"orchestrator: error: invalid {flag} {path}: {problem}\n"


# A bug, planted: the command's work raises, with the token in its message.
CRASH = """
import os, sys
import {module} as target
def bug(*args, **kwargs):
    raise RuntimeError("a bug near " + os.environ["ALTOSTRAT_TOKEN"])
target.{name} = bug
from orchestrator.cli import main
sys.exit(main(sys.argv[1:]))
"""
BUGS = {
    "rerun": ("orchestrator.commands.rerun", "run_rerun", ["rerun", "-"]),
    "select": ("orchestrator.commands.select", "run_select", ["select", "--workflow", "fl_a"]),
    "report": ("orchestrator.ledger.report.LedgerReport", "feed_lines", ["report", "l.jsonl"]),
    "config show": ("orchestrator.commands.config", "describe", ["config", "show"]),
}


async def crash(command: str, cwd: Path, *more: str) -> tuple[int, str, str]:
    module, name, args = BUGS[command]
    if module.endswith("LedgerReport"):  # a class: patch it where it lives
        script = CRASH.replace(
            "import {module} as target",
            "from orchestrator.ledger.report import LedgerReport as target",
        )
    else:
        script = CRASH.replace("{module}", module)
    (cwd / "l.jsonl").write_text("")
    argv = [sys.executable, "-c", script.replace("{name}", name), *args, *more]
    return await run(argv, cwd, b"fl_run_a1\n")


@pytest.mark.subprocess
@pytest.mark.parametrize("command", list(BUGS))
async def test_a_bug_is_one_line_on_stderr_and_exit_70(tmp_path: Path, command: str) -> None:
    code, out, err = await crash(command, tmp_path)
    assert code == 70
    assert out == ""
    assert err == (
        "orchestrator: internal error: RuntimeError "
        "(run with --log-level debug for the traceback, and report it)\n"
    )


@pytest.mark.subprocess
@pytest.mark.parametrize("command", list(BUGS))
async def test_at_debug_the_traceback_goes_to_stderr_without_the_token(
    tmp_path: Path, command: str
) -> None:
    code, out, err = await crash(command, tmp_path, "--log-level", "debug", "--log-format", "json")
    assert code == 70
    assert out == ""
    lines = err.strip().splitlines()
    event = json.loads(lines[-2])
    assert event["event"] == "internal_error"
    assert "Traceback (most recent call last)" in event["exception"]
    assert "RuntimeError: a bug near" in event["exception"]
    assert lines[-1].startswith("orchestrator: internal error: RuntimeError")
    if command != "report":  # report reads no token, so it has none to scrub
        assert TOKEN not in err


@pytest.mark.subprocess
async def test_a_bug_in_rerun_writes_metrics_and_summary_that_say_it_failed(
    tmp_path: Path,
) -> None:
    """Cron alerting reads the metrics file or the summary: after a bug neither may keep
    the last run's exit 0 and success time."""
    metrics = tmp_path / "job.prom"
    metrics.write_text("orchestrator_exit_code 0\norchestrator_last_success_timestamp_seconds 5\n")
    summary = tmp_path / "summary.json"
    summary.write_text('{"outcome": "completed", "exit_code": 0}\n')
    code, _, _ = await crash(
        "rerun", tmp_path, "--metrics-file", str(metrics), "--summary-json", str(summary)
    )
    assert code == 70
    assert json.loads(summary.read_text()) == {
        "outcome": "internal_error",
        "exit_code": 70,
        "error": "RuntimeError",
    }
    text = metrics.read_text()
    assert 'orchestrator_exit_code{job="rerun-ledger"} 70\n' in text
    # carried over from a file written before the job label
    assert 'orchestrator_last_success_timestamp_seconds{job="rerun-ledger"} 5\n' in text


@pytest.mark.subprocess
async def test_a_usage_error_found_after_start_writes_a_summary_that_says_so(
    tmp_path: Path,
) -> None:
    summary = tmp_path / "summary.json"
    summary.write_text('{"outcome": "completed", "exit_code": 0}\n')
    argv = [sys.executable, "-m", "orchestrator", "rerun", "-", "--summary-json", str(summary)]
    with anyio.fail_after(30):
        done = await anyio.run_process(argv, cwd=tmp_path, env=clean_env(None), check=False)
    assert done.returncode == 2  # no token
    assert json.loads(summary.read_text()) == {"outcome": "usage_error", "exit_code": 2}
