"""The run-ID rule and the parsing of input lines into run IDs or rejections.

Pure: nothing here does I/O. The engine feeds raw lines (bytes, as read) in and
gets one `ParsedLine` out for each: a `RunId`, a `Rejected` with a short reason
code, or `None` for lines that carry nothing (blank lines and `#` comments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

RUN_ID_PREFIX: Final = "fl_run_"
MAX_SUFFIX_LEN: Final = 64
# Case-sensitive prefix, then 1 to 64 ASCII letters or digits (not \w: no Unicode digits).
RUN_ID_PATTERN: Final = re.compile(r"fl_run_[A-Za-z0-9]{1,64}")
# Longer lines are rejected without being decoded; a JSON run object with logs fits well within.
MAX_LINE_BYTES: Final = 1 << 20
# Rejected input is kept in the ledger only this long, so a huge bad line cannot bloat it.
INPUT_EXCERPT_CHARS: Final = 200

_BOM: Final = b"\xef\xbb\xbf"
_SUFFIX_CHARS: Final = re.compile(r"[A-Za-z0-9]+")


def is_run_id(text: str) -> bool:
    """True when `text` is exactly one valid run ID."""
    return RUN_ID_PATTERN.fullmatch(text) is not None


def id_problem(text: str) -> str | None:
    """The reason code `text` is not a valid run ID, or None when it is one."""
    if is_run_id(text):
        return None
    if not text.startswith(RUN_ID_PREFIX):
        return "bad_prefix"
    suffix = text[len(RUN_ID_PREFIX) :]
    if not suffix:
        return "empty_id"
    if _SUFFIX_CHARS.fullmatch(suffix) is None:
        return "bad_characters"
    return "too_long"


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input line that is not a run ID: it is recorded, never sent."""

    line: int
    reason: str
    input: str


ParsedLine = str | Rejected | None


def _excerpt(raw: bytes) -> str:
    return raw[: INPUT_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:INPUT_EXCERPT_CHARS]


def _id_from_json(text: str) -> str | None:
    """The `id` or `run_id` of a JSON object line, or None when it has neither as a string."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    for key in ("id", "run_id"):
        value = obj.get(key)
        if isinstance(value, str):
            return value
    return None


def parse_line(raw: bytes, line_no: int) -> ParsedLine:
    """Turn one raw input line (with or without its line ending) into a run ID or a rejection."""
    if line_no == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if len(raw) > MAX_LINE_BYTES:
        return Rejected(line_no, "line_too_long", _excerpt(raw))
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Rejected(line_no, "not_utf8", _excerpt(raw))
    if not text or text.startswith("#"):
        return None
    if text.startswith("{"):
        found = _id_from_json(text)
        if found is None:
            return Rejected(line_no, "json_without_id", text[:INPUT_EXCERPT_CHARS])
        text = found.strip()
    problem = id_problem(text)
    if problem is not None:
        return Rejected(line_no, problem, text[:INPUT_EXCERPT_CHARS])
    return text


def read_capped_lines(stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines of `stream`; a line longer than `max_bytes` is cut to `max_bytes + 1` bytes (so
    `parse_line` rejects it) and the rest of it skipped, so memory stays bounded."""
    while line := stream.readline(max_bytes + 1):
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                pass
        yield line
