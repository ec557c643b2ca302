"""The run-ID rule and input line parsing: pure, no I/O."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.ids import (
    MAX_LINE_BYTES,
    Rejected,
    id_problem,
    is_run_id,
    parse_line,
    read_capped_lines,
)

VALID = "fl_run_" + "a" * 64


@pytest.mark.parametrize("text", ["fl_run_a", "fl_run_0", "fl_run_AbC123", VALID])
def test_valid_ids_pass(text: str) -> None:
    assert is_run_id(text)
    assert id_problem(text) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("FL_RUN_abc", "bad_prefix"),
        ("fl_abc", "bad_prefix"),
        ("run_abc", "bad_prefix"),
        ("fl_run_", "empty_id"),
        ("fl_run_ab-c", "bad_characters"),
        ("fl_run_ab c", "bad_characters"),
        ("fl_run_abc\u0661", "bad_characters"),  # an Arabic-Indic digit is not ASCII
        ("fl_run_é", "bad_characters"),
        (VALID + "a", "too_long"),
    ],
)
def test_invalid_ids_name_their_reason(text: str, reason: str) -> None:
    assert id_problem(text) == reason


@pytest.mark.parametrize(
    "raw",
    [
        b"fl_run_abc\n",
        b"fl_run_abc\r\n",
        b"  fl_run_abc \t\n",
        b"fl_run_abc",
        b'{"id": "fl_run_abc", "status": "failed"}\n',
        b'{"run_id": "fl_run_abc"}\n',
    ],
)
def test_tolerated_forms_give_the_id(raw: bytes) -> None:
    assert parse_line(raw, 3) == "fl_run_abc"


def test_bom_is_stripped_on_the_first_line_only() -> None:
    assert parse_line(b"\xef\xbb\xbffl_run_abc\n", 1) == "fl_run_abc"
    later = parse_line(b"\xef\xbb\xbffl_run_abc\n", 2)
    assert isinstance(later, Rejected)


@pytest.mark.parametrize("raw", [b"\n", b"   \r\n", b"# a comment\n", b"  # indented\n", b""])
def test_blank_and_comment_lines_carry_nothing(raw: bytes) -> None:
    assert parse_line(raw, 1) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"fl_run_\xff\xfe\n", "not_utf8"),
        (b'{"status": "failed"}\n', "json_without_id"),
        (b'{"id": 5}\n', "json_without_id"),
        (b"{not json\n", "json_without_id"),
        (b'{"id": "nope"}\n', "bad_prefix"),
        (b"fl_run_abc,fl_run_def\n", "bad_characters"),
    ],
)
def test_bad_lines_are_rejected_with_line_number(raw: bytes, reason: str) -> None:
    result = parse_line(raw, 7)
    assert isinstance(result, Rejected)
    assert (result.line, result.reason) == (7, reason)


def test_rejected_input_is_cut_to_200_characters() -> None:
    result = parse_line(b"x" * 5000 + b"\n", 1)
    assert isinstance(result, Rejected)
    assert len(result.input) == 200


def test_overlong_line_is_rejected_and_skipped_without_reading_it_whole() -> None:
    huge = b"fl_run_" + b"a" * (MAX_LINE_BYTES * 3) + b"\n"
    stream = io.BytesIO(huge + b"fl_run_next\n")
    lines = list(read_capped_lines(stream))
    assert len(lines) == 2
    assert len(lines[0]) == MAX_LINE_BYTES + 1
    first = parse_line(lines[0], 1)
    assert isinstance(first, Rejected)
    assert first.reason == "line_too_long"
    assert parse_line(lines[1], 2) == "fl_run_next"


suffixes = st.text(alphabet="abcXYZ0129", min_size=1, max_size=64)


@given(st.lists(st.binary(max_size=80) | suffixes.map(lambda s: f"fl_run_{s}\n".encode())))
def test_any_bytes_parse_without_crashing_and_keep_every_valid_id(chunks: list[bytes]) -> None:
    data = b"\n".join(chunks)
    ids = []
    for number, raw in enumerate(read_capped_lines(io.BytesIO(data)), start=1):
        result = parse_line(raw, number)
        assert result is None or isinstance(result, str | Rejected)
        if isinstance(result, str):
            assert is_run_id(result)
            ids.append(result)
    expected = []
    for line in data.removeprefix(b"\xef\xbb\xbf").split(b"\n"):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            continue
        if is_run_id(text):
            expected.append(text)
    assert ids == expected
