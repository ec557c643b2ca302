"""Files written for cron: the Prometheus textfile and the summary JSON, each atomically.

The metrics file is in the Prometheus text exposition format (version 0.0.4), for
node_exporter's textfile collector. Every metric is a gauge describing the last run;
`orchestrator_last_success_timestamp_seconds` is carried over from the previous file when
this run did not succeed, so "no success for a day" is one alert rule.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from . import __version__

PREFIX: Final = "orchestrator_"
LAST_SUCCESS: Final = f"{PREFIX}last_success_timestamp_seconds"

# Summary keys counted as `orchestrator_reruns{outcome=...}`, and their label values.
OUTCOMES: Final = {
    "succeeded": "succeeded",
    "failed": "failed",
    "rejected": "rejected",
    "in_doubt": "in_doubt",
    "unsettled": "unsettled",
    "possibly_duplicated": "possibly_duplicated",
    "skipped_done": "skipped_done",
    "skipped_failed": "skipped_failed",
    "skipped_is_rerun": "skipped_is_rerun",
    "duplicates": "duplicate",
    "not_sent": "not_sent",
}


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename: a reader sees the old file or the new one,
    never half of one. The temporary name does not end in `.prom`, so node_exporter skips it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
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
    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, value: float) -> None:
        full = PREFIX + name
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
        self.lines.append(f"{full} {_number(value)}")

    def gauges(self, name: str, help_text: str, label: str, values: Mapping[str, float]) -> None:
        """One gauge with one label, a sample for each of its values."""
        full = PREFIX + name
        self.lines += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
        for key, value in values.items():
            self.lines.append(f"{full}{{{label}={_label(key)}}} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render_metrics(
    fields: Mapping[str, object] | None,
    exit_code: int,
    finished_at: float,
    last_success: float | None,
) -> str:
    """The textfile for one run. `fields` is the run's summary, None when it never started
    (then only the exit code and timestamps are written)."""
    out = _Exposition()
    out.gauge("exit_code", "Exit code of the last orchestrator rerun.", exit_code)
    out.gauge(
        "last_run_timestamp_seconds",
        "When the last orchestrator rerun ended, in Unix time.",
        finished_at,
    )
    if exit_code == 0:
        last_success = finished_at
    if last_success is not None:
        out.gauge(
            "last_success_timestamp_seconds",
            "When an orchestrator rerun last ended with exit code 0, in Unix time.",
            last_success,
        )
    out.gauges(
        "build_info", "The orchestrator version that wrote this file.", "version", {__version__: 1}
    )
    if fields is None:
        return out.text()
    out.gauges(
        "reruns",
        "Run IDs of the last rerun, by outcome.",
        "outcome",
        {label: _int(fields.get(key)) for key, label in OUTCOMES.items()},
    )
    by_error = _counts(fields.get("failed_by_error"))
    if by_error:
        out.gauges(
            "failed_reruns",
            "Run IDs that failed for good in the last rerun, by error code.",
            "error",
            by_error,
        )
    finished = _counts(fields.get("finished_by_outcome"))
    if finished:
        out.gauges(
            "finished_reruns",
            "With --wait: how the new runs of the last rerun ended, by outcome.",
            "outcome",
            finished,
        )
    by_status = _counts(fields.get("requests_by_status"))
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
    out.gauge("duration_seconds", "How long the last rerun took.", _float(fields.get("elapsed_s")))
    out.gauge(
        "effective_rate_requests_per_second",
        "Requests per second over the whole last rerun.",
        _float(fields.get("effective_rate_per_s")),
    )
    if "rate_store" in fields:
        out.gauge(
            "rate_budget_shared",
            "1 when the last rerun took its request slots from the token's shared schedule.",
            1 if fields.get("rate_budget_shared") is True else 0,
        )
        if (per_s := fields.get("rate_budget_per_s")) is not None:
            out.gauge(
                "rate_budget_requests_per_second",
                "The token's limit that the shared schedule ran at, at the end of the last rerun.",
                _float(per_s),
            )
    return out.text()


def _counts(value: object) -> dict[str, float]:
    return {str(k): _int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def previous_last_success(path: Path) -> float | None:
    """The last-success timestamp of an earlier metrics file at `path`, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == LAST_SUCCESS:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def write_metrics(
    path: Path, fields: Mapping[str, object] | None, exit_code: int, finished_at: float
) -> None:
    write_atomic(path, render_metrics(fields, exit_code, finished_at, previous_last_success(path)))


def write_summary_json(path: Path, fields: Mapping[str, object]) -> None:
    write_atomic(path, json.dumps(fields, indent=2) + "\n")
