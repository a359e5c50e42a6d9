"""The commands that change a workspace: ``append``, ``compact``, ``rm``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .output import FAILURE, OK, USAGE, CliError, error, os_error, plural, quote, write, write_json
from .table import Progress, human_size, printable, render_table
from .workspace import Workspace, open_workspace, size_and_lines

__all__ = ["cmd_append", "cmd_compact", "cmd_rm"]


# --- append -------------------------------------------------------------------------------------


def _stdin_messages() -> list[Any]:
    """The message(s) on stdin: a JSON object, an array of objects, or JSON lines."""
    if sys.stdin is None:
        raise CliError("no stdin to read a message from")
    if sys.stdin.isatty():
        sys.stderr.write("turnlog: reading a JSON message from stdin (end with Ctrl-D)\n")
    text = sys.stdin.read().strip()
    if not text:
        raise CliError("no message on stdin: expected a JSON object, an array of them, or lines")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as failure:
        if failure.msg != "Extra data":
            raise CliError(f"stdin is not JSON: {failure}") from None
        value = []  # more than one value: JSON lines, one message a line
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    value.append(json.loads(line))
                except json.JSONDecodeError as line_error:
                    raise CliError(f"stdin line {number} is not JSON: {line_error}") from None
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise CliError("stdin must hold a JSON object, an array of objects, or JSON lines")
    return items


def cmd_append(args: argparse.Namespace) -> int:
    if args.content is not None:
        if args.role is None:
            raise CliError("append: --content needs --role", USAGE)
        if args.stdin:
            raise CliError("append: give --content or '-' (a message on stdin), not both", USAGE)
        messages: list[Any] = [{"role": args.role, "content": args.content}]
    else:
        if args.role is not None:
            raise CliError(
                "append: --role needs --content (a JSON message on stdin has its own role)", USAGE
            )
        messages = _stdin_messages()
    with open_workspace(args, create=True) as workspace:
        try:
            if len(messages) == 1:
                workspace.backend.append(args.key, messages[0])
            else:
                workspace.backend.append_many(args.key, messages)  # one write: all or none
        except (TypeError, ValueError) as failure:
            raise CliError(f"invalid message, nothing appended: {failure}") from None
    if args.json:
        write_json({"key": args.key, "appended": len(messages)})
    else:
        write(f"appended {plural(len(messages), 'message')} to {quote(args.key)}\n")
    return OK


# --- compact ------------------------------------------------------------------------------------


def _compacted(
    key: str,
    before: tuple[int | None, int | None],
    after: tuple[int | None, int | None],
    failure: str | None = None,
) -> dict[str, Any]:
    """The result row of one session: ``(size, lines)`` before and after, or why it failed."""
    removed = None if before[1] is None or after[1] is None else before[1] - after[1]
    return {
        "key": key,
        "lines_removed": removed,
        "size_before": before[0],
        "size_after": after[0],
        "error": failure,
    }


def _compact_one(workspace: Workspace, key: str) -> dict[str, Any] | None:
    """Compact one session: its result row, or ``None`` if it was deleted since it was listed.

    Raises:
        OSError: this session could not be read or rewritten.
    """
    path = workspace.transcript(key)
    before: tuple[int | None, int | None] = (None, None)
    after = before
    try:
        if path is not None:
            before = size_and_lines(path)
        workspace.backend.compact(key)
        if path is not None:
            after = size_and_lines(path)
    except FileNotFoundError:
        return None
    return _compacted(key, before, after)


def cmd_compact(args: argparse.Namespace) -> int:
    if args.all and args.keys:
        raise CliError("compact: give session keys or --all, not both", USAGE)
    if not args.all and not args.keys:
        raise CliError("compact: name the sessions to compact, or pass --all", USAGE)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    with open_workspace(args, create=False) as workspace:
        workspace.require(args.keys)
        keys = workspace.list_sessions() if args.all else args.keys
        with Progress("compacting", len(keys)) as progress:
            for key in keys:
                try:
                    result = _compact_one(workspace, key)
                except ConnectionError:
                    raise  # the Redis server went away: every other session would fail too
                except OSError as failure:
                    # One bad session (unreadable, a full disk) must not keep the others as
                    # they are: go on, and report it and fail at the end.
                    failures.append(f"cannot compact session {quote(key)}: {os_error(failure)}")
                    result = _compacted(key, (None, None), (None, None), os_error(failure))
                if result is not None:
                    results.append(result)
                progress.advance()
    if args.json:
        write_json(results)
    elif not keys:
        write(f"nothing to compact: no sessions in {workspace.where}\n")
    else:
        write(_compact_table(workspace, results, len(failures)))
    sys.stdout.flush()
    for message in failures:
        error(message)
    return FAILURE if failures else OK


def _compact_table(workspace: Workspace, results: list[dict[str, Any]], failed: int) -> str:
    def size(value: int | None) -> str:
        return "-" if value is None else human_size(value)

    done = [result for result in results if result["error"] is None]
    rows = [
        [
            printable(result["key"]),
            "-" if result["lines_removed"] is None else f"{result['lines_removed']:,}",
            size(result["size_before"]),
            size(result["size_after"]),
        ]
        for result in done
    ]
    table = render_table(
        ["KEY", "LINES REMOVED", "SIZE BEFORE", "SIZE AFTER"], rows, right=(1, 2, 3)
    )
    summary = f"compacted {plural(len(done), 'session')}"
    if workspace.kind == "jsonl":
        removed = sum(result["lines_removed"] or 0 for result in done)
        summary += f": removed {plural(removed, 'line')}"
    if failed:
        summary += f"; {failed:,} failed"
    return f"{table}{summary}\n"


# --- rm -----------------------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    removed: list[str] = []
    with open_workspace(args, create=False) as workspace:
        workspace.require(args.keys)  # all or nothing: a typo removes no session
        for key in args.keys:
            if not workspace.backend.delete_session(key):
                raise CliError(f"could not remove session {quote(key)}")
            removed.append(key)
            if not args.json:
                write(f"removed {quote(key)}\n")
    if args.json:
        write_json({"removed": removed})
    return OK
