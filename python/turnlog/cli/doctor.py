"""Why a line of a session file is corrupt, for ``turnlog doctor``.

``_format.valid_text`` decides *whether* a line is a valid message (the same decision the Rust
core makes); this module explains *why not*, by retracing ``_format._decode`` step by step with
the same strictness and naming the first rule the line breaks. The verdict itself always comes
from ``valid_text``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._rules import WHITESPACE
from ..backends import files as _files
from ..backends import format as _format

__all__ = ["Finding", "Report", "check_file", "read_lines", "why_corrupt"]

#: How much of a corrupt line a report quotes.
PREVIEW_CHARS = 60
#: Lines are read in blocks of this size; a longer line is read whole.
_BLOCK = 1 << 20


class _Broken(ValueError):
    """A rule the line breaks, found while parsing."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _Broken(f"duplicate key {json.dumps(name, ensure_ascii=False)}")
            seen.add(name)
    return obj


def _no_constant(name: str) -> Any:
    raise _Broken(f"{name} is not JSON")


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > _format.MAX_INT_DIGITS:
        raise _Broken(f"integer of more than {_format.MAX_INT_DIGITS} digits")
    # Only the type matters for the diagnosis; int() of a long literal would obey this
    # process's sys.set_int_max_str_digits, which the format does not.
    return 0


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    return "a number"


def _syntax(error: json.JSONDecodeError, text: str) -> str:
    column = error.pos + 1
    if error.msg == "Extra data":
        return f"text after the object (column {column})"
    if error.msg.startswith("Invalid control character"):
        return f"raw control character in a string (column {column})"
    if error.pos >= len(text) or error.msg.startswith("Unterminated string"):
        return "truncated JSON (the object does not end)"
    return f"not JSON: {error.msg.lower()} (column {column})"


#: The reason given for a line that holds two records: a writer that ignores the lock wrote one
#: record in two ``write`` calls while another wrote (ZeroClaw writes the record, then the
#: newline). turnlog cannot prevent it; stop such a writer before sharing a workspace with it.
GLUED = "two records glued (a writer that ignores the lock wrote at the same time)"
#: How many places in a corrupt line are tried as the start of a second record.
_GLUE_STARTS = 64


def _glued(text: str) -> bool:
    """Whether ``text`` is two records run together: a whole object followed by another, or
    the head of one record followed by a whole valid record."""
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        pass
    else:
        if text[end:].lstrip(WHITESPACE).startswith("{"):
            return True
    start = 0
    for _ in range(_GLUE_STARTS):
        start = text.find('{"', start + 1)
        if start < 0:
            return False
        if _format.valid_text(text[start:].encode("utf-8", "surrogatepass")) is not None:
            return True
    return False


def why_corrupt(raw: bytes) -> str:
    """Why ``raw`` (a line without its newline) is not a valid message.

    Meant for lines ``_format.valid_text`` refuses; the reasons follow the order of the checks
    in ``_format._decode``: UTF-8, white space, the object, its keys and values, role, content.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"invalid UTF-8 (byte {error.start + 1})"
    if "\x00" in text:
        return f"NUL byte (column {text.index(chr(0)) + 1})"
    stripped = text.strip(WHITESPACE)
    if not stripped:
        return "blank line"
    if stripped.startswith("\ufeff"):
        return "byte order mark (BOM) before the object"
    if not stripped.startswith("{"):
        try:
            value = json.loads(stripped, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            return "not JSON"
        return f"not an object ({_json_kind(value)})"
    brackets = stripped.count("{") + stripped.count("[")
    if brackets > _format.MAX_DEPTH and _format.nesting_depth(stripped) > _format.MAX_DEPTH:
        return f"nested deeper than {_format.MAX_DEPTH} levels"
    try:
        obj = json.loads(
            stripped,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
        )
    except _Broken as error:
        return str(error)
    except json.JSONDecodeError as error:
        if _glued(stripped):
            return GLUED
        return _syntax(error, stripped)
    except RecursionError:
        return f"nested deeper than {_format.MAX_DEPTH} levels"
    except ValueError as error:
        return f"not JSON: {error}"
    if not isinstance(obj, dict):  # pragma: no cover - "{" starts an object or nothing
        return "not an object"
    for name in ("role", "content"):
        if name not in obj:
            return f"missing {name}"
        if type(obj[name]) is not str:
            return f"{name} is not a string ({_json_kind(obj[name])})"
    if _format.has_surrogate(obj):
        return "lone surrogate escape (not a UTF-8 character)"
    return "not a valid message"  # pragma: no cover - valid_text refused it for a reason above


def preview(raw: bytes) -> str:
    """The start of a line, decoded leniently, for a report."""
    text = raw[: PREVIEW_CHARS * 4].decode("utf-8", errors="backslashreplace")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclass
class Finding:
    """One corrupt line: its 1-based number, why, and how it starts."""

    line: int
    problem: str
    preview: str


@dataclass
class Report:
    """What ``check_file`` found in one session file."""

    lines: int = 0
    messages: int = 0
    findings: list[Finding] = field(default_factory=list)


def read_lines(path: str) -> Iterator[tuple[bytes, bool]]:
    """``(line without newline, whether a newline ended it)`` for each line of ``path``.

    Read in blocks (bounded memory for any file); never through a symlink, as the stores do.
    """
    fd = _files.open_regular(path)
    with os.fdopen(fd, "rb", buffering=_BLOCK) as file:
        for line in file:
            if line.endswith(b"\n"):
                yield line[:-1], True
            else:
                yield line, False


def check_file(path: str) -> Report:
    """Every corrupt line of the session file at ``path``, with why.

    A last line with no newline is a writer that died mid-line (or another tool): if it is not a
    valid message, the report says it is torn.

    Raises:
        OSError: the file cannot be read.
    """
    report = Report()
    for number, (raw, ended) in enumerate(read_lines(path), start=1):
        report.lines = number
        if _format.valid_text(raw) is not None:
            report.messages += 1
            continue
        problem = why_corrupt(raw)
        if not ended:
            problem = f"torn last line (no newline): {problem}"
        report.findings.append(Finding(number, problem, preview(raw)))
    return report
