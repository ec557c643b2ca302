"""Every input line accounted for, and a rerun never rerun by accident.

An interrupted run names the IDs that were mid-retry (`unsettled`) and the input it left
unread, `report --ids unsettled` lists them, and the hint says to run the same command
again. An ID the ledger names as a `new_run_id` is skipped as `is_rerun` unless
`--include-reruns`."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from orchestrator.commands.rerun import FLAGS, _unread_lines, resume_command
from orchestrator.errors import ExitCode
from orchestrator.ledger.idstore import IdSet, IdState
from orchestrator.ledger.records import Dispatched, Finished, Succeeded
from orchestrator.ledger.replay import ResumeState, replay
from orchestrator.outcome import RunResult, StopReason, Tally, exit_code, summary
from orchestrator.rerun.admission import Admitter, Verdict
from orchestrator.settings import load_settings
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import TOKEN, env, orchestrator, write_ids
from tests.helpers.rerunkit import make_ids, read_ledger, rerun

AT = "2026-12-01T00:00:00.000Z"


def lines_of(*records: object) -> list[bytes]:
    return [r.model_dump_json().encode() + b"\n" for r in records]  # type: ignore[attr-defined]


def accepted(original: str, new: str) -> Succeeded:
    return Succeeded(
        at=AT,
        original_run_id=original,
        new_run_id=new,
        new_run_status="pending",
        http_status=202,
        attempts=1,
    )


def admitting(resume: ResumeState, **flags: object) -> tuple[Admitter, Tally]:
    """Admission alone, over `resume`: the verdicts of a run, counted in a fresh tally."""
    settings = load_settings({"rate": "none", **flags}, FLAGS).settings
    tally = Tally()
    return Admitter(resume.ids, resume.reruns, settings, tally), tally


# ---- pure: replay and admission -----------------------------------------------------------


def test_replay_keeps_every_new_run_id_apart_from_the_originals() -> None:
    resume = replay(
        lines_of(
            accepted("fl_run_a", "fl_run_anew"),
            Finished(
                at=AT,
                original_run_id="fl_run_b",
                new_run_id="fl_run_bnew",
                outcome="failed_again",
                final_status="failed",
                error_message=None,
                duration_in_seconds=1.0,
            ),
        )
    )
    assert sorted(resume.reruns) == ["fl_run_anew", "fl_run_bnew"]
    assert "fl_run_a" not in resume.reruns
    assert "fl_run_anew" not in resume.ids  # a new run has no state of its own


def test_the_rerun_set_is_exact_for_any_string() -> None:
    ids = IdSet()
    for run_id in ["fl_run_x1", "not an id", "fl_run_" + "z" * 64]:
        ids.add(run_id)
    assert "fl_run_x1" in ids
    assert "not an id" in ids
    assert "fl_run_x" not in ids
    assert len(ids) == 3


def test_admission_skips_a_new_run_as_is_rerun() -> None:
    admitter, tally = admitting(replay(lines_of(accepted("fl_run_a", "fl_run_anew"))))
    assert admitter.admit("fl_run_anew") == Verdict("skip", "is_rerun")
    assert tally.skipped_is_rerun == 1
    assert admitter.admit("fl_run_other") == Verdict("send", "new")


def test_admission_sends_a_new_run_with_include_reruns() -> None:
    resume = replay(lines_of(accepted("fl_run_a", "fl_run_anew")))
    admitter, tally = admitting(resume, include_reruns=True)
    assert admitter.admit("fl_run_anew") == Verdict("send", "is_rerun")
    assert tally.skipped_is_rerun == 0


def test_is_rerun_outranks_the_new_runs_own_state_but_not_a_duplicate() -> None:
    """A new run that was once rerun on purpose (it failed) is still no original."""
    resume = replay(
        lines_of(
            accepted("fl_run_a", "fl_run_anew"),
            Dispatched(at=AT, original_run_id="fl_run_anew", attempt=1),
        )
    )
    assert resume.ids["fl_run_anew"] == IdState.IN_DOUBT
    admitter, tally = admitting(resume)
    assert admitter.admit("fl_run_anew").action == "skip"
    assert (tally.skipped_is_rerun, tally.skipped_in_doubt) == (1, 0)
    empty = ResumeState()
    queued, tally = admitting(empty, include_reruns=False)
    assert queued.admit("fl_run_q").action == "send"
    empty.reruns.add("fl_run_q")  # accepted meanwhile, as a new run of another ID
    assert queued.admit("fl_run_q") == Verdict("skip", "duplicate")
    assert (tally.duplicates, tally.skipped_is_rerun) == (1, 0)


def test_blank_lines_are_counted_so_every_line_is_accounted_for() -> None:
    admitter, tally = admitting(ResumeState())
    assert admitter.admit(None) == Verdict("blank")
    assert tally.blank == 1


# ---- pure: the summary of an interrupted run -----------------------------------------------


def interrupted(tally: Tally, *, input_done: bool, unread: int | None) -> RunResult:
    return RunResult(
        tally=tally,
        reason=StopReason.SIGINT,
        elapsed_s=1.0,
        ledger="l.jsonl",
        input_done=input_done,
        unread_lines=unread,
    )


def test_the_summary_names_unsettled_ids_and_unread_input() -> None:
    tally = Tally(lines=10, succeeded=5, not_sent=2, unsettled=["fl_run_a", "fl_run_b"])
    tally.failed["not_found"] = 1
    fields = summary(interrupted(tally, input_done=False, unread=7)).as_fields()
    assert (fields["unsettled"], fields["unsettled_ids"]) == (2, ["fl_run_a", "fl_run_b"])
    assert (fields["input_unread"], fields["unread_lines"], fields["lines"]) == (True, 7, 10)
    stdin = summary(interrupted(tally, input_done=False, unread=None)).as_fields()
    assert (stdin["input_unread"], stdin["unread_lines"]) == (True, None)
    done = summary(interrupted(Tally(), input_done=True, unread=None)).as_fields()
    assert (done["input_unread"], done["unread_lines"]) == (False, 0)


def test_unread_lines_are_counted_in_a_file_and_never_read_from_a_pipe(tmp_path: Path) -> None:
    source = write_ids(tmp_path / "ids.txt", make_ids(10))
    assert _unread_lines(str(source), 4) == 6
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _unread_lines(str(fifo), 4) is None  # opening it would wait for a writer


def test_the_resume_hint_is_the_command_as_given_on_one_line() -> None:
    argv = ["rerun", "my ids.txt", "--rate", "5/s"]
    assert resume_command(argv, stdin=False) == "orchestrator rerun 'my ids.txt' --rate 5/s"
    assert resume_command(["rerun", "-"], stdin=True) == "<the same input> | orchestrator rerun -"


def test_unsettled_ids_make_a_completed_run_incomplete() -> None:
    result = RunResult(tally=Tally(unsettled=["fl_run_a"]), reason=StopReason.COMPLETED,
                       elapsed_s=0.0, ledger="l")  # fmt: skip
    assert exit_code(result) == ExitCode.INCOMPLETE


# ---- over loopback: a rerun's new runs piped back in ----------------------------------------


async def test_new_run_ids_piped_back_in_are_skipped_unless_include_reruns(
    tmp_path: Path,
) -> None:
    """The `select` scenario: the window holds the new runs that failed again, too."""
    ledger = tmp_path / "l.jsonl"
    originals = make_ids(5)
    async with RunningSimulator(SimConfig(accept_any=True)) as sim:
        first = await rerun(sim, ledger, originals)
        new_runs = [str(r["new_run_id"]) for r in first.events("succeeded")]
        assert len(new_runs) == 5
        mixed = [*originals, *new_runs, "fl_run_fresh"]

        plan = await rerun(sim, ledger, mixed, dry_run=True)
        assert {f"skip\t{i}\tis_rerun" for i in new_runs} <= set(plan.stdout.splitlines())
        assert summary(plan.result).as_fields()["skipped_is_rerun"] == 5

        again = await rerun(sim, ledger, mixed)
        fields = summary(again.result).as_fields()
        assert (fields["skipped_is_rerun"], fields["skipped_done"]) == (5, 5)
        assert again.result.tally.requests == 1  # only fl_run_fresh
        assert not set(new_runs) & set(sim.state.stats.accepted)
        skipped = again.events("skipped")
        assert sorted(str(r["run_id"]) for r in skipped) == sorted(new_runs)
        assert {r["reason"] for r in skipped} == {"is_rerun"}

        included = await rerun(sim, ledger, mixed, include_reruns=True)
        assert included.result.tally.skipped_is_rerun == 0
        assert Counter(sim.state.stats.accepted) == Counter(
            dict.fromkeys([*originals, *new_runs, "fl_run_fresh"], 1)
        )
        # Their own new runs are reruns in turn, skipped next time.
        newer = [
            str(r["new_run_id"])
            for r in included.events("succeeded")
            if r["original_run_id"] in new_runs
        ]
        last = await rerun(sim, ledger, newer)
        assert last.result.tally.skipped_is_rerun == len(newer) == 5


@pytest.mark.subprocess
async def test_report_shows_is_rerun_skips_and_the_cli_pipes_them_back(tmp_path: Path) -> None:
    originals = make_ids(4)
    source = write_ids(tmp_path / "ids.txt", originals)
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        base = ["--base-url", sim.base_url, "--rate", "none", "--rate-store", "none"]
        code, _, err = await orchestrator("rerun", str(source), *base, cwd=tmp_path)
        assert code == 0, err
        code, mapping, _ = await orchestrator(
            "report", "rerun-ledger.jsonl", "--mapping", cwd=tmp_path
        )
        new_runs = [row[1] for row in list(csv.reader(io.StringIO(mapping)))[1:]]
        piped = "".join(f"{i}\n" for i in new_runs).encode()
        code, plan, _ = await orchestrator("rerun", "-", *base, "--dry-run", cwd=tmp_path,
                                           stdin=piped)  # fmt: skip
        assert plan.splitlines() == [f"skip\t{i}\tis_rerun" for i in new_runs]
        code, _, err = await orchestrator("rerun", "-", *base, cwd=tmp_path, stdin=piped)
        assert code == 0, err
        assert json.loads(err.strip().splitlines()[-1])["skipped_is_rerun"] == 4
        assert not set(new_runs) & set(sim.state.stats.accepted)
        code, out, _ = await orchestrator("report", "rerun-ledger.jsonl", cwd=tmp_path)
        assert json.loads(out)["skipped_is_rerun"] == 4
        code, out, _ = await orchestrator(
            "report", "rerun-ledger.jsonl", "--ids", "is-rerun", cwd=tmp_path
        )
        assert sorted(out.splitlines()) == sorted(new_runs)

        code, _, err = await orchestrator(
            "rerun", "-", *base, "--include-reruns", cwd=tmp_path, stdin=piped
        )
        assert code == 0, err
        assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(originals + new_runs, 1))
        code, out, _ = await orchestrator("report", "rerun-ledger.jsonl", cwd=tmp_path)
        assert json.loads(out)["skipped_is_rerun"] == 0  # sent since


# ---- a real SIGINT mid-retry ---------------------------------------------------------------


async def _until_retried(process: Process, run_ids: set[str]) -> list[str]:
    """Read the child's JSON log lines until each of `run_ids` has had a `rerun.retry`
    (its attempt got a definite retryable answer); the lines read."""
    assert process.stderr is not None
    seen: set[str] = set()
    read: list[str] = []
    buffer = ""
    async for chunk in TextReceiveStream(process.stderr):
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        read += lines
        for line in lines:
            if '"event": "rerun.retry"' in line:
                seen.add(json.loads(line)["run_id"])
        if run_ids <= seen:
            return read
    raise AssertionError(f"the process ended before {sorted(run_ids - seen)} were retried")


async def _rest(process: Process) -> str:
    assert process.stderr is not None
    return b"".join([chunk async for chunk in process.stderr]).decode()


# Every count a run's summary puts an input line in; they add up to the lines of the input.
LINE_FATES = (
    "succeeded", "failed", "rejected", "in_doubt", "unsettled", "not_sent", "skipped_done",
    "skipped_failed", "skipped_is_rerun", "duplicates", "blank_lines", "unread_lines",
)  # fmt: skip


@pytest.mark.subprocess
async def test_sigint_mid_retry_accounts_for_every_line_and_the_same_command_settles_them(
    tmp_path: Path,
) -> None:
    ids = make_ids(300)
    busy = ids[1:5]  # four 503s, then accepted: the first run sees only the first ones
    gone = ids[5]  # 404: failed for good
    # A 429 whose Retry-After (60 s) holds every worker until the signal, once the 503s are
    # answered: those IDs wait to retry, and the reading waits too.
    throttled = ids[20]
    lines = [*ids[:6], "nope", "", *ids[6:]]
    source = tmp_path / "ids.txt"
    source.write_text("".join(f"{line}\n" for line in lines))
    script: dict[str, list[str | int]] = {
        throttled: [429],
        gone: [404],
        **{i: [503] * 4 for i in busy},
    }
    config = SimConfig(accept_any=True, token=TOKEN, script=script, script_retry_after="60")
    async with RunningSimulator(config) as sim:
        argv = [
            "rerun", str(source), "--base-url", sim.base_url, "--rate", "none",
            "--rate-store", "none", "--concurrency", "8", "--circuit-threshold", "0",
            "--log-format", "json",
        ]  # fmt: skip
        with anyio.fail_after(30):
            async with await anyio.open_process(
                [sys.executable, "-m", "orchestrator", *argv], cwd=tmp_path, env=env()
            ) as process:
                await _until_retried(process, {throttled, *busy})
                process.send_signal(signal.SIGINT)
                stderr = await _rest(process)
                assert await process.wait() == 130
        fields = json.loads(stderr.strip().splitlines()[-1])
        assert fields["event"] == "rerun.summary"
        assert sorted(fields["unsettled_ids"]) == sorted([throttled, *busy])
        assert fields["in_doubt"] == 0  # drained: nothing was in flight unanswered
        assert fields["input_unread"] is True
        assert fields["unread_lines"] > 0  # the Retry-After held the reading back
        assert sum(fields[fate] for fate in LINE_FATES) == len(lines)
        assert fields["resume_command"] == shlex.join(["orchestrator", *argv])
        assert "retry_command" not in fields

        code, out, _ = await orchestrator(
            "report", "rerun-ledger.jsonl", "--ids", "unsettled", cwd=tmp_path
        )
        assert (code, sorted(out.splitlines())) == (0, sorted([throttled, *busy]))

        # The same command again, word for word: it settles them, sending no ID twice.
        code, _, err = await orchestrator(*argv, cwd=tmp_path)
        again = json.loads(err.strip().splitlines()[-1])
        assert code == 1, err  # the 404 is still failed: skipped, and named
        assert (again["unsettled"], again["input_unread"], again["skipped_failed"]) == (0, False, 1)
        assert "resume_command" not in again
        assert "--retry-failed" in again["retry_command"]
    assert Counter(sim.state.stats.accepted) == Counter(dict.fromkeys(set(ids) - {gone}, 1))
    assert not [r for r in read_ledger(tmp_path / "rerun-ledger.jsonl")
                if r["event"] == "succeeded" and r["original_run_id"] == gone]  # fmt: skip
