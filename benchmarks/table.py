"""The benchmark's printed table, built section by section, and its progress lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Report:
    """The table, built section by section, printed at the end."""

    blocks: list[str] = field(default_factory=list)

    def add(
        self, title: str, header: Sequence[str], rows: Sequence[Sequence[str]], labels: int = 1
    ) -> None:
        """A block: the title, then columns aligned, the first `labels` of them to the left."""
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            padded = [
                c.ljust(w) if i < labels else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  " + "  ".join(padded).rstrip()

        self.blocks.append("\n".join([title, line(header), *(line(r) for r in rows)]))

    def note(self, text: str) -> None:
        self.blocks[-1] += "\n  " + text


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"NOT MET ({miss})"
