"""How the ``turnlog`` command answers: stdout (text or JSON), one-line errors, exit statuses.

Every command writes through ``write`` and ``write_json``, and reports a failure either by
raising ``CliError`` (``main`` prints it and returns its status) or, for one that does not stop
the command, with ``error`` and a status of ``FAILURE`` at the end.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .table import printable

__all__ = [
    "BROKEN_PIPE",
    "FAILURE",
    "INTERRUPTED",
    "OK",
    "PROG",
    "USAGE",
    "CliError",
    "error",
    "os_error",
    "plural",
    "quote",
    "write",
    "write_json",
]

PROG = "turnlog"
#: Exit statuses.
OK, FAILURE, USAGE = 0, 1, 2
#: A command killed by SIGPIPE reports 128 + 13; so does turnlog when its reader goes away.
BROKEN_PIPE = 141
INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = FAILURE) -> None:
        super().__init__(message)
        self.status = status


def write(text: str) -> None:
    sys.stdout.write(text)


def write_json(value: Any) -> None:
    write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def quote(key: str) -> str:
    return "'" + printable(key) + "'"


def error(message: str) -> None:
    """Write ``message`` to stderr as ``turnlog: error: ...``."""
    # One line, whatever the message holds: a key or a path may carry a newline. The library's
    # own messages may start with "turnlog: " already.
    line = printable(" ".join(message.removeprefix(f"{PROG}: ").split("\n")))
    sys.stderr.write(f"{PROG}: error: {line}\n")


def os_error(failure: OSError) -> str:
    """``failure`` as a message: ``why: path`` when it names a file."""
    if failure.filename is not None and failure.strerror:
        return f"{failure.strerror}: {failure.filename}"
    return str(failure) or type(failure).__name__
