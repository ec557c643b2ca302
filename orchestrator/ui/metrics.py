"""Files written for cron: the Prometheus textfile and the summary JSON, each atomically.

The metrics file is in the Prometheus text exposition format (version 0.0.4), for
node_exporter's textfile collector. Every metric is a gauge describing the last run, and
every series carries a `job` label, so that several jobs' files can share one collector
directory (node_exporter rejects a scrape in which two files repeat a series).
`orchestrator_last_success_timestamp_seconds` is always there: carried over from the
previous file of the same job when this run did not succeed, 0 when the job never has, so
"no success for a day" is one alert rule that also fires for a job that never succeeded.

A path that is a symlink is written through: its target is replaced, never the link.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TextIO

from orchestrator import __version__
from orchestrator.outcome import Summary

PREFIX: Final = "orchestrator_"
LAST_SUCCESS: Final = f"{PREFIX}last_success_timestamp_seconds"
# `--summary-json -`: the summary goes to stdout.
STDOUT: Final = Path("-")

# A job name: what a cron job or a file name would be called, and nothing a query or an
# alert template would trip over (no quotes, spaces, braces or control characters).
JOB_MAX: Final = 128
_JOB: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
# The previous file is read for one number: more than this is not a file we wrote.
_PREVIOUS_MAX_BYTES: Final = 1 << 20
# A sample as written here: `name{labels} value`, label values escaped, no timestamp.
_SAMPLE: Final = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)"
)
_LABEL_PAIR: Final = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def job_problem(value: str) -> str | None:
    """Why `value` cannot be a `job` label value, or None."""
    if len(value) > JOB_MAX:
        return f"a job name is at most {JOB_MAX} characters"
    if not _JOB.fullmatch(value):
        return (
            f"{value!r} is not a job name: use letters, digits and _ . : -"
            " (and start with a letter, a digit or _)"
        )
    return None


def default_job(ledger: Path) -> str:
    """The job a ledger's runs report as: the ledger file's stem, made a valid job name."""
    name = re.sub(r"[^A-Za-z0-9_.:-]", "_", ledger.stem)[:JOB_MAX]
    if not name:
        return "orchestrator"
    return name if _JOB.fullmatch(name) else ("_" + name)[:JOB_MAX]


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: a reader sees the old file or the new one,
    never half of one. The temporary name does not end in `.prom`, so node_exporter skips it.

    A symlink is written through: the temporary file is made beside the link's target (a
    rename cannot cross file systems) and renamed over the target, so the link stays."""
    target = Path(os.path.realpath(path))
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _label(value: str) -> str:
    text = value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return f'"{text}"'


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class _Exposition:
    """Gauges whose every sample carries the `job` label."""

    def __init__(self, job: str) -> None:
        self.job = f"job={_label(job)}"
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, value: float) -> None:
        full = PREFIX + name
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
        self.lines.append(f"{full}{{{self.job}}} {_number(value)}")

    def gauges(self, name: str, help_text: str, label: str, values: Mapping[str, float]) -> None:
        """One gauge with one more label, a sample for each of its values."""
        full = PREFIX + name
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
        for key, value in values.items():
            self.lines.append(f"{full}{{{self.job},{label}={_label(key)}}} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _reruns(summary: Summary) -> dict[str, int]:
    """Run IDs by outcome, as `orchestrator_reruns{outcome=...}` counts them."""
    return {
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "rejected": summary.rejected,
        "in_doubt": summary.in_doubt,
        "unsettled": summary.unsettled,
        "possibly_duplicated": summary.possibly_duplicated,
        "skipped_done": summary.skipped_done,
        "skipped_failed": summary.skipped_failed,
        "skipped_is_rerun": summary.skipped_is_rerun,
        "duplicate": summary.duplicates,
        "not_sent": summary.not_sent,
    }


def render_metrics(
    summary: Summary | None,
    exit_code: int,
    finished_at: float,
    last_success: float,
    job: str,
) -> str:
    """The textfile for one run of `job`. `summary` is the run's, None when it never
    started (then only the exit code and timestamps are written). `last_success` is the
    previous file's, 0 when there was none; a run that exits 0 replaces it."""
    out = _Exposition(job)
    out.gauge("exit_code", "Exit code of the last orchestrator rerun.", exit_code)
    out.gauge(
        "last_run_timestamp_seconds",
        "When the last orchestrator rerun ended, in Unix time.",
        finished_at,
    )
    out.gauge(
        "last_success_timestamp_seconds",
        "When an orchestrator rerun last ended with exit code 0, in Unix time (0: never).",
        finished_at if exit_code == 0 else last_success,
    )
    out.gauges(
        "build_info", "The orchestrator version that wrote this file.", "version", {__version__: 1}
    )
    if summary is None:
        return out.text()
    out.gauges("reruns", "Run IDs of the last rerun, by outcome.", "outcome", _reruns(summary))
    if summary.failed_by_error:
        out.gauges(
            "failed_reruns",
            "Run IDs that failed for good in the last rerun, by error code.",
            "error",
            summary.failed_by_error,
        )
    if summary.finished_by_outcome:
        out.gauges(
            "finished_reruns",
            "With --wait: how the new runs of the last rerun ended, by outcome.",
            "outcome",
            summary.finished_by_outcome,
        )
    by_status = summary.requests_by_status
    if by_status:
        out.gauges(
            "requests",
            "Requests of the last rerun, by HTTP status code (or error when no answer came).",
            "code",
            by_status,
        )
    out.gauge(
        "rate_limited_requests",
        "Requests of the last rerun answered 429 Too Many Requests.",
        by_status.get("429", 0),
    )
    out.gauge("duration_seconds", "How long the last rerun took.", summary.elapsed_s)
    out.gauge(
        "effective_rate_requests_per_second",
        "Requests per second over the whole last rerun.",
        summary.effective_rate_per_s,
    )
    if (budget := summary.budget) is not None:
        out.gauge(
            "rate_budget_shared",
            "1 when the last rerun took its request slots from the token's shared schedule.",
            1 if budget.shared else 0,
        )
        if (per_s := budget.rounded_per_s) is not None:
            out.gauge(
                "rate_budget_requests_per_second",
                "The token's limit that the shared schedule ran at, at the end of the last rerun.",
                per_s,
            )
    return out.text()


def previous_last_success(path: Path, job: str) -> float:
    """The last-success timestamp of `job` in an earlier metrics file at `path`; 0 when
    there is none, or the file is not one we could have written. Never raises: a garbled
    file must not cost the run its metrics. A sample without labels (written before the
    `job` label existed) counts as this job's, so an upgrade does not read as "never"."""
    try:
        with path.open("rb") as stream:
            text = stream.read(_PREVIOUS_MAX_BYTES).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return 0.0
    for line in text.splitlines():
        found = _SAMPLE.fullmatch(line.strip())
        if found is None or found["name"] != LAST_SUCCESS:
            continue
        labels = dict(_LABEL_PAIR.findall(found["labels"] or ""))
        if labels.get("job", job) != job:  # a job name needs no escaping
            continue
        try:
            value = float(found["value"])
        except ValueError:
            return 0.0
        return value if math.isfinite(value) and value >= 0 else 0.0
    return 0.0


def write_metrics(
    path: Path, summary: Summary | None, exit_code: int, finished_at: float, job: str
) -> None:
    text = render_metrics(summary, exit_code, finished_at, previous_last_success(path, job), job)
    write_atomic(path, text)


def write_summary_json(
    path: Path, fields: Mapping[str, object], stdout: TextIO | None = None
) -> None:
    """The summary as one JSON object, in a file or, for `-`, on stdout."""
    text = json.dumps(fields, indent=2) + "\n"
    if path == STDOUT:
        stream = sys.stdout if stdout is None else stdout
        stream.write(text)
        stream.flush()
        return
    write_atomic(path, text)
