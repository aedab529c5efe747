"""Tables and highlighting for the command line: `rich` on a terminal when
installed, plain text otherwise.

`rich` is optional (`pip install 'angzarr-es[cli]'`); without it, and
whenever stdout is not a terminal (a pipe or a file gets every value whole,
never a table cut to the terminal's width), output is plain aligned text and
unhealthy values are marked with a leading `!`. Set `ANGZARR_ES_PLAIN=1` to
force plain text. Every text goes through `printable` first: ids and
payloads are data, and a control character in them must not reach the
terminal as one.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any


class Bad(str):
    """A cell value that needs attention (red with rich, `!` prefixed in plain text)."""

    __slots__ = ()


# C0 and C1 controls and DEL, line and paragraph separators, and the bidi
# controls that reorder what a terminal shows (the "Trojan Source" set).
_UNPRINTABLE = [
    *range(0x20),
    *range(0x7F, 0xA0),
    0x061C,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
]
_ESCAPES = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNPRINTABLE} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


# In JSON, where C0 controls are escaped already, the rest as \u escapes.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _UNPRINTABLE if c >= 0x20}


def printable_json(text: str) -> str:
    """A line of JSON with the control characters JSON allows raw escaped too."""
    return text.translate(_JSON_ESCAPES)


def printable(text: str) -> str:
    """`text` with every control character escaped (`\\x1b`, `\\n`, `\\u202e`), so
    that stored data cannot move the cursor, clear the screen or reorder the line."""
    return text.translate(_ESCAPES)


def _console() -> Any:
    if os.environ.get("ANGZARR_ES_PLAIN"):
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    console = Console(highlight=False, soft_wrap=True)
    # Not a terminal (FORCE_COLOR or TTY_COMPATIBLE=1 say otherwise): plain
    # text, as rich would fit tables to a width no reader has.
    return console if console.is_terminal else None


class Output:
    """Where human output goes."""

    def __init__(self) -> None:
        self.console = _console()

    @property
    def rich(self) -> bool:
        return self.console is not None

    def line(self, text: str = "", *, bad: bool = False, dim: bool = False) -> None:
        text = printable(text)
        if self.console is None:
            print(("! " if bad else "") + text, flush=True)
            return
        from rich.text import Text

        style = "bold red" if bad else ("dim" if dim else "")
        self.console.print(Text(text, style=style))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        rows = [
            [Bad(printable(c)) if isinstance(c, Bad) else printable(c) for c in r] for r in rows
        ]
        if self.console is None:
            _plain_table(title, columns, rows)
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", title_style="bold")
        for i, name in enumerate(columns):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(
                *(Text(c, style="bold red") if isinstance(c, Bad) else Text(c) for c in row)
            )
        self.console.print(table)

    def busy(self, text: str) -> contextlib.AbstractContextManager[object]:
        """A transient spinner on a terminal (rich only) while something slow runs."""
        if self.console is None or not self.console.is_terminal:
            return contextlib.nullcontext()
        status: contextlib.AbstractContextManager[object] = self.console.status(text)
        return status

    def clear(self) -> None:
        if self.console is not None:
            self.console.clear()
        elif sys.stdout.isatty():
            print("\x1b[H\x1b[2J", end="", flush=True)


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    cells = [list(columns)] + [[("!" + c) if isinstance(c, Bad) else c for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    # Numbers right-aligned, text left-aligned.
    right = [bool(rows) and all(_numeric(r[i]) for r in cells[1:]) for i in range(len(columns))]

    def fmt(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    if title:
        print(title)
    print(fmt(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(fmt(row))
    print(flush=True)


_NUMBER = re.compile(r"!?(-|unlimited|\d+(\.\d+)?( [KMGT]?i?B)?)")


def _numeric(cell: str) -> bool:
    return _NUMBER.fullmatch(cell) is not None


def size(n: int | None) -> str:
    """Bytes in binary units."""
    if n is None:
        return "-"
    if n < 0:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def when(stamp: str | None) -> str:
    """An RFC 3339 time from the server, trimmed to the second."""
    if not stamp:
        return "-"
    return stamp.replace("T", " ")[:19]
