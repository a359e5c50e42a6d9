"""Terminal output for the ``turnlog`` command: tables, sizes, safe text and a progress bar."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Sequence
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "human_size", "printable", "render_table"]

# Escapes for the control characters people recognise; any other one is written \xNN / \uNNNN.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and other unprintable characters escaped.

    Chat content and keys come from users: an escape sequence in them must not reach the
    terminal (it could move the cursor, retitle the window or hide lines), and a newline in a key
    must not break a table row.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable() or (keep_newlines and char in "\n\t"):
            out.append(char)
        elif char in _NAMED:
            out.append(_NAMED[char])
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide characters take two."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()
) -> str:
    """A plain-text table: a header row, a rule, the rows; columns in ``right`` right-aligned."""
    widths = [width(header) for header in headers]
    for row in rows:
        for column, cell in enumerate(row):
            widths[column] = max(widths[column], width(cell))

    def line(cells: Sequence[str]) -> str:
        parts = []
        for column, cell in enumerate(cells):
            pad = " " * (widths[column] - width(cell))
            parts.append(pad + cell if column in right else cell + pad)
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)]) + "\n"


def human_size(size: int) -> str:
    """``size`` bytes as ``512 B``, ``1.5 KiB``, ``12.0 MiB``..."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Piped or redirected, it writes nothing, so logs and captured output stay clean.

    Args:
        label: What is being done, shown before the bar.
        total: How many steps make 100%.
        stream: Where to draw (``sys.stderr`` when ``None``, looked up at creation).
    """

    BAR = 24
    #: Seconds between redraws: a terminal does not need more, and it keeps the cost negligible.
    INTERVAL = 0.1

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._drawn = 0.0

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, steps: int = 1, *, label: str | None = None) -> None:
        """Count ``steps`` more as done (and optionally change the label)."""
        self.done = min(self.done + steps, self.total)
        if label is not None:
            self.label = label
        if time.monotonic() - self._drawn >= self.INTERVAL or self.done == self.total:
            self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._drawn = time.monotonic()
        filled = self.BAR * self.done // self.total if self.total else self.BAR
        bar = "#" * filled + "-" * (self.BAR - filled)
        self.stream.write(f"\r\x1b[K{self.label} [{bar}] {self.done}/{self.total}")
        self.stream.flush()

    def close(self) -> None:
        """Erase the bar, leaving the line for whatever comes next."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.enabled = False
