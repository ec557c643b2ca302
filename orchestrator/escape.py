"""Text from a server or an input file, made safe to show: shown, never obeyed.

A run's `error_message`, a rejected input line or a hand-edited ledger may hold terminal
escapes (`\\x1b[2J` clears a screen, OSC 8 forges a link), a NUL, or Unicode bidi controls
that make a line read other than it is (Trojan Source, CVE-2021-42574). Every value from
outside that reaches a console, a text listing or a CSV file goes through `escape` first:
each such character becomes its escape as Python and JSON write it, so an operator sees
that it was there and what it was:

    ESC -> \\x1b   NUL -> \\x00   DEL -> \\x7f   CSI (C1) -> \\x9b
    tab -> \\t     LF -> \\n      CR -> \\r
    RLO -> \\u202e (and the other bidi embeddings, overrides, isolates and marks)
    U+2028, U+2029 (line and paragraph separators) -> \\u2028, \\u2029
    a lone surrogate (unprintable in UTF-8) -> \\udc80

A backslash is left as it is: an operator reads `\\x1b` as "an ESC was here", and the JSON
forms (`--json`, JSON logs, the ledger) stay the exact record. Pure; no I/O.
"""

from __future__ import annotations

from itertools import chain
from typing import Final

_SHORT: Final = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
# Bidi controls: ALM, LRM, RLM, the embeddings and overrides (LRE … RLO), the isolates
# (LRI … PDI); and the line and paragraph separators, which some renderers break on.
_BIDI: Final = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_SEPARATORS: Final = (0x2028, 0x2029)
_TABLE: Final[dict[int, str]] = {
    **{code: f"\\x{code:02x}" for code in chain(range(0x20), (0x7F,), range(0x80, 0xA0))},
    **_SHORT,
    **{code: f"\\u{code:04x}" for code in chain(_BIDI, _SEPARATORS)},
    **{code: f"\\u{code:04x}" for code in range(0xD800, 0xE000)},
}

# OWASP's list for CSV injection: a cell starting with one of these may be run as a formula.
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def escape(text: str) -> str:
    """`text` with every control character, bidi control and separator as a visible escape."""
    return text.translate(_TABLE)


def escape_lines(text: str) -> str:
    """`escape`, keeping line breaks: for a traceback, which is read line by line."""
    return "\n".join(escape(line) for line in text.split("\n"))


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: escaped, and a leading `=`, `+`, `-`, `@`,
    tab or CR neutralised by a `'` before it, as OWASP recommends. None is an empty cell."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    shown = escape(text)
    return "'" + shown if text.startswith(_FORMULA_STARTS) else shown


# What the ledger keeps of a body it cannot read, for the operator to look into.
RAW_EXCERPT_CHARS: Final = 200
# C0 controls and DEL as visible escapes (non-ASCII is already escaped by then).
_CONTROLS: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def excerpt(body: bytes) -> str:
    """The start of a body as printable ASCII: controls and non-ASCII as escapes, so a
    hostile body can neither bloat the ledger nor drive a terminal that shows it."""
    text = body[: RAW_EXCERPT_CHARS * 4].decode("utf-8", "replace")[:RAW_EXCERPT_CHARS]
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_CONTROLS)
