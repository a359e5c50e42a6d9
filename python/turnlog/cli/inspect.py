"""The commands that read a workspace and change nothing: ``ls``, ``show``, ``doctor``,
``export``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .._impl import ChatMessage
from ..backends import format as _format
from ..backends.jsonl.base import JsonlStoreBase
from .doctor import Report, check_file, read_lines
from .output import FAILURE, OK, USAGE, CliError, error, plural, quote, write, write_json
from .table import Progress, human_size, printable, render_table
from .workspace import Workspace, open_workspace, size_and_lines

__all__ = ["SORTS", "SessionInfo", "cmd_doctor", "cmd_export", "cmd_ls", "cmd_show"]


def _extra_json(message: ChatMessage) -> str:
    """A message's extra fields as compact JSON."""
    try:
        return json.dumps(message.extra, ensure_ascii=False, separators=(",", ":"))
    except ValueError:  # an int too long for this process's int/str limit
        return repr(message.extra)


def _cannot_read(failure: OSError) -> str:
    return f"cannot read: {failure.strerror or failure}"


# --- ls -----------------------------------------------------------------------------------------


def _time_text(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


@dataclass
class SessionInfo:
    """One row of ``ls``; ``error`` says why a session's file could not be read (its messages
    and lines are then unknown, ``None``)."""

    key: str
    name: str | None
    messages: int | None
    size: int | None
    lines: int | None
    created_at: datetime | None
    last_activity: datetime | None
    error: str | None = None

    @property
    def corrupt(self) -> int | None:
        """Lines that are not valid messages (``None`` when the backend has no lines)."""
        if self.lines is None or self.messages is None:
            return None
        return max(self.lines - self.messages, 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "messages": self.messages,
            "size": self.size,
            "lines": self.lines,
            "corrupt_lines": self.corrupt,
            "created_at": _iso(self.created_at),
            "last_activity": _iso(self.last_activity),
            "error": self.error,
        }


def _unreadable_info(key: str, path: str, failure: OSError) -> SessionInfo | None:
    """The row of a session whose file cannot be read: what ``stat`` still tells (its size, and
    its last activity, which is the file's mtime), or ``None`` if it is gone."""
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return SessionInfo(
        key=key,
        name=None,
        messages=None,
        size=stat.st_size,
        lines=None,
        created_at=None,
        last_activity=datetime.fromtimestamp(stat.st_mtime, timezone.utc),
        error=_cannot_read(failure),
    )


def _info(workspace: Workspace, key: str) -> SessionInfo | None:
    """What ``ls`` shows of one session; ``None`` if it vanished meanwhile."""
    size = lines = None
    path = workspace.transcript(key)
    if path is not None:
        # The file first: the store's metadata call would log an unreadable file and call it
        # missing, and ls must show it.
        try:
            size, lines = size_and_lines(path)
        except FileNotFoundError:
            return None
        except OSError as failure:
            return _unreadable_info(key, path, failure)
    metadata = workspace.backend.get_session_metadata(key)
    if metadata is None:
        return None
    return SessionInfo(
        key=key,
        name=metadata.name,
        messages=metadata.message_count,
        size=size,
        lines=lines,
        created_at=metadata.created_at,
        last_activity=metadata.last_activity,
    )


def _corrupt_rank(info: SessionInfo) -> float:
    # An unreadable session is the most damaged of all; a backend without lines has none.
    if info.error is not None:
        return math.inf
    return info.corrupt or 0


#: The orders of ``ls --sort``.
SORTS: dict[str, Callable[[SessionInfo], Any]] = {
    "key": lambda info: info.key,
    "messages": lambda info: (-(info.messages or 0), info.key),
    "size": lambda info: (-(info.size or 0), info.key),
    "activity": lambda info: (
        -(info.last_activity.timestamp() if info.last_activity else 0.0),
        info.key,
    ),
    "corrupt": lambda info: (-_corrupt_rank(info), info.key),
}


def _unknown(value: int | None, info: SessionInfo) -> str:
    if value is not None:
        return f"{value:,}"
    return "?" if info.error is not None else "-"


def cmd_ls(args: argparse.Namespace) -> int:
    with open_workspace(args, create=False) as workspace:
        keys = workspace.list_sessions()
        infos = []
        with Progress("reading sessions", len(keys)) as progress:
            for key in keys:
                info = _info(workspace, key)
                if info is not None:
                    infos.append(info)
                progress.advance()
    infos.sort(key=SORTS[args.sort], reverse=args.reverse)
    unreadable = [info for info in infos if info.error is not None]
    if args.json:
        write_json([info.to_json() for info in infos])
    else:
        rows = [
            [
                printable(info.key),
                _unknown(info.messages, info),
                "-" if info.size is None else human_size(info.size),
                _time_text(info.last_activity),
                _unknown(info.corrupt, info),
            ]
            for info in infos
        ]
        headers = ["KEY", "MESSAGES", "SIZE", "LAST ACTIVITY (UTC)", "CORRUPT LINES"]
        write(render_table(headers, rows, right=(1, 2, 4)))
        summary = plural(len(infos), "session")
        if workspace.kind == "jsonl":  # other backends have no files to size, no lines to count
            total_size = sum(info.size or 0 for info in infos)
            corrupt = sum(info.corrupt or 0 for info in infos)
            summary += f", {human_size(total_size)}, {plural(corrupt, 'corrupt line')}"
            if unreadable:
                summary += f", {len(unreadable):,} unreadable"
            if corrupt:
                summary += " (turnlog doctor lists them, turnlog compact --all drops them)"
        if workspace.store is None:
            summary += f" ({workspace.where} has no sessions yet)"
        write(summary + "\n")
    # Each unreadable session is also an error line, and the exit status says the listing is
    # not whole, as doctor and compact do; the table (or JSON) above still lists every session.
    sys.stdout.flush()
    for info in unreadable:
        error(f"session {quote(info.key)}: {info.error}")
    return FAILURE if unreadable else OK


# --- show ---------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    with open_workspace(args, create=False) as workspace:
        workspace.require([args.key])
        workspace.require_readable(args.key)
        messages = workspace.backend.load(args.key, limit=args.tail)
        total = len(messages)
        if args.tail is not None and messages and not args.json:  # to number them
            metadata = workspace.backend.get_session_metadata(args.key)
            total = metadata.message_count if metadata is not None else total
    if args.json:
        write_json([message.to_dict() for message in messages])
        return OK
    first = max(total - len(messages), 0) + 1
    out = []
    for number, message in enumerate(messages, start=first):
        content = printable(message.content, keep_newlines=True).replace("\n", "\n    ")
        role = printable(message.role)
        extra = " " + printable(_extra_json(message)) if message.extra else ""
        out.append(f"[{number}] {role}{extra}: {content}\n")
    write("".join(out))
    return OK


# --- doctor -------------------------------------------------------------------------------------


def _report_json(key: str, report: Report | None, failure: str | None) -> dict[str, Any]:
    return {
        "key": key,
        "lines": report.lines if report else None,
        "messages": report.messages if report else None,
        "corrupt": [
            {"line": f.line, "problem": f.problem, "preview": f.preview}
            for f in (report.findings if report else [])
        ],
        "error": failure,
    }


#: What ``doctor`` found in one session: its key, its report, or why it could not be read.
Checked = tuple[str, Report | None, str | None]


def _check_all(workspace: Workspace, keys: list[str]) -> list[Checked]:
    """What ``doctor`` finds in each session of ``keys`` that still exists."""
    checked: list[Checked] = []
    with Progress("checking sessions", len(keys)) as progress:
        for key in keys:
            path = workspace.transcript(key)
            if path is None:  # pragma: no cover - a JSONL workspace has files
                raise CliError("doctor: this workspace has no transcript files")
            try:
                checked.append((key, check_file(path), None))
            except FileNotFoundError:
                pass  # deleted since it was listed: nothing left to check
            except OSError as failure:
                checked.append((key, None, _cannot_read(failure)))
            progress.advance()
    return checked


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.backend != "jsonl":
        raise CliError(
            f"doctor: it reads JSONL transcripts; --backend {args.backend} has none", USAGE
        )
    with open_workspace(args, create=False) as workspace:
        workspace.require(args.keys)
        keys = args.keys or workspace.list_sessions()
        checked = _check_all(workspace, keys)
        store = workspace.store
        legacy = sorted(store.zeroclaw_files()) if isinstance(store, JsonlStoreBase) else []
    corrupt = sum(len(report.findings) for _, report, _ in checked if report)
    hurt = sum(1 for _, report, _ in checked if report and report.findings)
    unreadable = sum(1 for _, _, failure in checked if failure)
    status = FAILURE if corrupt or unreadable else OK
    if args.json:
        write_json(
            {
                "sessions": [_report_json(*entry) for entry in checked],
                "corrupt_lines": corrupt,
                "damaged_sessions": hurt + unreadable,
                "zeroclaw_files_not_adopted": [name + _format.SUFFIX for name in legacy],
            }
        )
        return status
    if legacy and not args.keys:
        # Not damage: histories a switch from ZeroClaw has not handed to their keys yet.
        names = ", ".join(printable(name + _format.SUFFIX) for name in legacy[:10])
        more = f" and {len(legacy) - 10:,} more" if len(legacy) > 10 else ""
        write(
            f"{plural(len(legacy), 'ZeroClaw file')} not adopted yet: {names}{more} "
            "(a key adopts its file on first use; turnlog adopt --keys FILE does it now)\n"
        )
    if not keys:
        write(f"nothing to check: no sessions in {workspace.where}\n")
        return OK
    out = []
    for key, report, failure in checked:
        if failure:
            out.append(f"{printable(key)}: {failure}\n")
        for finding in report.findings if report else []:
            where = f"{printable(key)}:{finding.line}: {finding.problem}"
            out.append(
                f"{where}  | {printable(finding.preview)}\n" if finding.preview else where + "\n"
            )
    lines = sum(report.lines for _, report, _ in checked if report)
    summary = f"checked {plural(len(checked), 'session')} ({plural(lines, 'line')}): "
    found = []
    if corrupt:
        found.append(f"{plural(corrupt, 'corrupt line')} in {plural(hurt, 'session')}")
    if unreadable:
        found.append(f"{unreadable:,} unreadable")
    if corrupt:
        found.append("turnlog compact KEY... drops corrupt lines")
    summary += "; ".join(found) if found else "no damage"
    write("".join(out) + summary + "\n")
    return status


# --- export -------------------------------------------------------------------------------------


def _valid_lines(workspace: Workspace, key: str) -> list[str]:
    """The session's messages as stored lines: for JSONL, its valid lines exactly (stripped of
    surrounding white space, as compact keeps them); otherwise each message encoded as turnlog
    writes it."""
    path = workspace.transcript(key)
    if path is not None:
        kept = (_format.valid_text(raw) for raw, _ in read_lines(path))
        return [line.decode("utf-8") for line in kept if line is not None]
    lines = []
    for number, message in enumerate(workspace.backend.load(key), start=1):
        try:
            lines.append(_format.encode_message(message).decode("utf-8").rstrip("\n"))
        except ValueError as failure:
            raise CliError(f"message {number} cannot be written as JSON: {failure}") from None
    return lines


def _markdown(key: str, messages: list[ChatMessage]) -> str:
    out = [f"# Session {key}\n\n", f"{plural(len(messages), 'message')}, exported by turnlog.\n"]
    for number, message in enumerate(messages, start=1):
        out.append(f"\n## {number}. {message.role}\n\n")
        if message.extra:
            out.append(f"`{_extra_json(message)}`\n\n")
        out.append(message.content.rstrip("\n") + "\n")
    return "".join(out)


def cmd_export(args: argparse.Namespace) -> int:
    # --json asks for JSON, as on every command: here that is the json format.
    if args.json and args.format not in (None, "json"):
        raise CliError(
            f"export: --json writes JSON; it cannot go with --format {args.format}", USAGE
        )
    form = "json" if args.json else args.format or "jsonl"
    with open_workspace(args, create=False) as workspace:
        workspace.require([args.key])
        workspace.require_readable(args.key)
        if form == "markdown":
            text = _markdown(args.key, workspace.backend.load(args.key))
        else:
            lines = _valid_lines(workspace, args.key)
            if form == "jsonl":
                text = "".join(line + "\n" for line in lines)
            else:
                items = ",\n".join("  " + line for line in lines)
                text = f"[\n{items}\n]\n" if lines else "[]\n"
    if args.output is None:
        write(text)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    return OK
