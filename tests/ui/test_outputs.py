"""Output files that cannot be lost quietly: `--summary-json` and `--metrics-file` are tried
before anything is sent, a write that still fails at the end exits 73, `-` is stdout for
the summary, and a symlink is written through, never replaced."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from orchestrator.commands.rerun import with_outputs
from orchestrator.errors import ExitCode
from orchestrator.simulator import RunningSimulator, SimConfig
from tests.helpers.clikit import run_cli
from tests.helpers.rerunkit import make_ids

TOKEN = "tok-outputs-secret-58-padded-to-look-like-a-real-jwt"
OUTPUTS = ["--summary-json", "--metrics-file"]
NAMES = {"--summary-json": "s.json", "--metrics-file": "m.prom"}


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory in which no file can be made. Mode 0o555 does not stop root (tests may
    run as root), so then sysfs, which refuses new files to root too, although access(2)
    says it is writable: only trying to make a file tells."""
    if os.geteuid() == 0:
        return Path("/sys")
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    return directory


async def rerun(
    sim: RunningSimulator, tmp_path: Path, *args: str, stdin: bytes = b""
) -> tuple[int, str, str]:
    return await run_cli(
        "rerun", *args, "--base-url", sim.base_url, "--rate", "none", "--rate-store", "none",
        cwd=tmp_path, stdin=stdin, token=TOKEN,
    )  # fmt: skip


def ids_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"{i}\n" for i in make_ids(count)))
    return path


# ---- tried before sending --------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize("flag", OUTPUTS)
async def test_an_output_in_a_directory_no_file_can_be_made_in_stops_before_sending(
    tmp_path: Path, flag: str
) -> None:
    path = unwritable_directory(tmp_path) / NAMES[flag]
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, out, err = await rerun(sim, tmp_path, str(ids_file(tmp_path, 3)), flag, str(path))
        requests = sim.state.stats.requests
    assert code == ExitCode.USAGE
    assert out == ""
    assert err.splitlines() == [err.strip()]  # one line
    assert err.startswith(f"orchestrator: error: invalid {flag} {path}: ")
    assert requests == 0
    assert not (tmp_path / "rerun-ledger.jsonl").exists()


@pytest.mark.subprocess
@pytest.mark.parametrize("flag", OUTPUTS)
async def test_a_link_into_such_a_directory_is_judged_by_its_targets_directory(
    tmp_path: Path, flag: str
) -> None:
    """The file is made beside the link's target, so that is the directory tried."""
    target = unwritable_directory(tmp_path) / NAMES[flag]
    link = tmp_path / NAMES[flag]  # in a directory that is writable
    link.symlink_to(target)
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, _, err = await rerun(sim, tmp_path, str(ids_file(tmp_path, 3)), flag, link.name)
        requests = sim.state.stats.requests
    assert code == ExitCode.USAGE
    assert err.startswith(f"orchestrator: error: invalid {flag} {link.name}: ")
    assert f"(it links to {target})" in err
    assert requests == 0


@pytest.mark.subprocess
@pytest.mark.parametrize("flag", OUTPUTS)
async def test_an_output_under_a_regular_file_stops_before_sending(
    tmp_path: Path, flag: str
) -> None:
    """ENOTDIR: a path that fails for root too."""
    (tmp_path / "file").write_text("")
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, _, err = await rerun(
            sim, tmp_path, str(ids_file(tmp_path, 3)), flag, f"file/{NAMES[flag]}"
        )
        requests = sim.state.stats.requests
    assert code == ExitCode.USAGE
    assert err.strip() == f"orchestrator: error: invalid {flag} file/{NAMES[flag]}: Not a directory"
    assert requests == 0


# ---- lost at the end -------------------------------------------------------------------------

# Runs the CLI with a limit on the size of any file it writes (RLIMIT_FSIZE, kept across
# exec): a write past it fails with EFBIG, for root too. Python ignores SIGXFSZ.
LIMITED = (
    "import os, resource, sys; n = int(sys.argv[1]);"
    " resource.setrlimit(resource.RLIMIT_FSIZE, (n, n));"
    " os.execv(sys.executable, [sys.executable, '-m', 'orchestrator', *sys.argv[2:]])"
)


@pytest.mark.subprocess
async def test_a_metrics_file_that_cannot_be_written_at_the_end_exits_73(
    tmp_path: Path,
) -> None:
    """The file may be made (the check before sending passes), but not filled: the ledger
    of one ID and the summary fit in 1,500 bytes, the metrics do not."""
    metrics = tmp_path / "m.prom"
    metrics.write_text("old\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALTOSTRAT_", "ORCHESTRATOR_"))}
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        argv = [
            sys.executable, "-c", LIMITED, "1500", "rerun", str(ids_file(tmp_path, 1)),
            "--base-url", sim.base_url, "--rate", "none", "--rate-store", "none",
            "--summary-json", "s.json", "--metrics-file", str(metrics),
        ]  # fmt: skip
        with anyio.fail_after(30):
            done = await anyio.run_process(
                argv, cwd=tmp_path, env=env | {"ALTOSTRAT_TOKEN": TOKEN}, check=False
            )
        accepted = sim.state.stats.accepted
    err = done.stderr.decode()
    assert done.returncode == ExitCode.CANTCREAT == 73, err
    assert len(accepted) == 1  # the run itself went well
    assert json.loads((tmp_path / "s.json").read_text())["exit_code"] == 0
    [event] = [json.loads(line) for line in err.splitlines() if "metrics.unwritable" in line]
    assert event["level"] == "error"
    assert event["path"] == str(metrics)
    assert event["error"] == "File too large"
    assert metrics.read_text() == "old\n"  # the old file, whole, and no temporary left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("code", "lost"),
    [
        (ExitCode.OK, ExitCode.CANTCREAT),
        (ExitCode.INCOMPLETE, ExitCode.CANTCREAT),
        (ExitCode.USAGE, ExitCode.USAGE),
        (ExitCode.ABORTED, ExitCode.ABORTED),
        (ExitCode.SOFTWARE, ExitCode.SOFTWARE),
        (ExitCode.IOERR, ExitCode.IOERR),
        (ExitCode.SIGINT, ExitCode.SIGINT),
    ],
)
def test_a_lost_output_turns_0_and_1_into_73_and_keeps_graver_codes(
    code: ExitCode, lost: ExitCode
) -> None:
    assert with_outputs(code, written=True) == code
    assert with_outputs(code, written=False) == lost


# ---- `-` --------------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_summary_json_dash_prints_the_summary_alone_on_stdout(tmp_path: Path) -> None:
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, out, err = await rerun(
            sim, tmp_path, str(ids_file(tmp_path, 3)), "--summary-json", "-", "--log-format", "json"
        )
    assert code == 0, err
    summary = json.loads(out)  # all of stdout is the one JSON object
    assert summary["succeeded"] == 3
    logged = json.loads(err.splitlines()[-1])
    assert logged["event"] == "rerun.summary"
    assert {k: v for k, v in logged.items() if k in summary} == summary
    assert not (tmp_path / "-").exists()


@pytest.mark.subprocess
async def test_metrics_file_dash_is_refused_in_one_line(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "rerun", "-", "--metrics-file", "-", cwd=tmp_path, stdin=b"fl_run_a\n", token=TOKEN
    )
    assert code == ExitCode.USAGE
    assert out == ""
    assert err.strip() == (
        "orchestrator: error: invalid --metrics-file: '-' (stdout) is not supported: the file"
        " carries the last success over from the previous one, so give a path"
    )
    assert not (tmp_path / "-").exists()


@pytest.mark.subprocess
@pytest.mark.parametrize("job", ["a b", 'x"y', "-dash", "é"])
async def test_a_metrics_job_that_is_no_sane_label_value_is_refused_in_one_line(
    tmp_path: Path, job: str
) -> None:
    code, _, err = await run_cli(
        "rerun", "-", f"--metrics-job={job}", cwd=tmp_path, stdin=b"fl_run_a\n", token=TOKEN
    )
    assert code == ExitCode.USAGE
    assert err.startswith("orchestrator: error: invalid --metrics-job: ")
    assert "is not a job name" in err
    assert len(err.splitlines()) == 1


# ---- symlinks ---------------------------------------------------------------------------------


@pytest.mark.subprocess
async def test_outputs_write_through_their_symlinks_and_keep_them(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "s.json").symlink_to("real/summary.json")
    (tmp_path / "m.prom").symlink_to(real / "metrics.prom")
    (real / "metrics.prom").write_text("old\n")
    args = ["--summary-json", "s.json", "--metrics-file", "m.prom", "--metrics-job", "linked"]
    async with RunningSimulator(SimConfig(accept_any=True, token=TOKEN)) as sim:
        code, _, err = await rerun(sim, tmp_path, str(ids_file(tmp_path, 2)), *args)
    assert code == 0, err
    assert (tmp_path / "s.json").readlink() == Path("real/summary.json")
    assert (tmp_path / "m.prom").readlink() == real / "metrics.prom"
    assert json.loads((real / "summary.json").read_text())["succeeded"] == 2
    assert 'orchestrator_exit_code{job="linked"} 0\n' in (real / "metrics.prom").read_text()
    assert sorted(p.name for p in real.iterdir()) == ["metrics.prom", "summary.json"]
