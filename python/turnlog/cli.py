"""The ``turnlog`` command: list, read, check, repair and export the sessions of a workspace.

``turnlog --workspace DIR COMMAND ...`` (or ``python -m turnlog``). The workspace defaults to
``$TURNLOG_WORKSPACE``, else the current folder. Commands: ``ls``, ``show``, ``append``,
``doctor``, ``compact``, ``rm``, ``export``, ``bench``; ``turnlog COMMAND --help`` for each, and
``docs/CLI.md`` for a walk-through.

Output is a table or text for people and JSON with ``--json`` (every command, before or after
it). Long work draws a progress bar on stderr when stderr is a terminal, and nothing when it is
piped. Errors are one line on stderr, ``turnlog: error: ...``, with exit status 2 for a wrong
command line and 1 for a command that could not do all of its work (``doctor`` also exits 1
when it finds damage; ``ls`` and ``compact`` go on past a session they cannot read, and exit 1
at the end). Only the standard library is used; redis-py only with ``--backend redis``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from . import IMPLEMENTATION, SessionBackend, SessionStore, __version__, _files, _format
from ._cli_bench import run_bench
from ._cli_doctor import Report, check_file
from ._cli_doctor import _lines as file_lines
from ._cli_table import Progress, human_size, printable, render_table
from ._impl import ChatMessage, native

__all__ = ["CliError", "build_parser", "main"]

PROG = "turnlog"
#: Exit statuses.
OK, FAILURE, USAGE = 0, 1, 2
#: A command killed by SIGPIPE reports 128 + 13; so does turnlog when its reader goes away.
BROKEN_PIPE = 141
INTERRUPTED = 130
_BLOCK = 1 << 20


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``turnlog: error: ls: ...``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        command = self.prog[len(PROG) :].strip()
        raise CliError(f"{command}: {message}" if command else message, USAGE)


# --- argument types -----------------------------------------------------------------------------


def _session_key(text: str) -> str:
    """A key as the stores take it (checked here, so a bad one is a usage error)."""
    try:
        _format.key_to_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid session key {_quote(text)}: {error}") from None
    return text


def _whole(text: str) -> int:
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _tail(text: str) -> int:
    """``--tail N``: 0 or more (every backend takes any size: more than a session holds is all
    of it)."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _quote(key: str) -> str:
    return "'" + printable(key) + "'"


# --- the workspace ------------------------------------------------------------------------------

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Seconds to wait for a Redis server to accept the connection: an unreachable host is an error
#: after this long, not after the system's TCP timeout (minutes). A URL's own
#: ``?socket_connect_timeout=`` wins.
REDIS_CONNECT_TIMEOUT = 5.0


@dataclass
class Workspace:
    """The opened workspace: where it is (for messages), its backend, which kind it is.

    ``store`` is ``None`` for an existing folder that holds no sessions yet: it lists nothing,
    and opening a backend there would create its files, which a read must not do.
    """

    where: str
    kind: str
    store: SessionBackend | None

    @property
    def backend(self) -> SessionBackend:
        """The backend; only reached for a session that ``require`` or ``list_sessions`` found,
        which an empty workspace has none of."""
        if self.store is None:
            raise CliError(f"no sessions in {self.where}")
        return self.store

    def list_sessions(self) -> list[str]:
        return [] if self.store is None else self.store.list_sessions()

    def transcript(self, key: str) -> str | None:
        """The JSONL file of ``key``; ``None`` for a backend without files."""
        sessions_dir = getattr(self.store, "sessions_dir", None)
        if self.kind != "jsonl" or not isinstance(sessions_dir, str):
            return None
        return os.path.join(sessions_dir, _format.key_to_name(key) + _format.SUFFIX)

    def require(self, keys: Sequence[str]) -> None:
        """Fail (status 1) unless every session of ``keys`` exists."""
        store = self.store
        missing = [key for key in keys if store is None or not store.session_exists(key)]
        if missing:
            names = ", ".join(_quote(key) for key in missing)
            what = "session" if len(missing) == 1 else "sessions"
            raise CliError(f"no {what} {names} in {self.where}")

    def require_readable(self, key: str) -> None:
        """Fail unless the transcript of ``key`` can be read. The stores load an unreadable file
        as an empty session (with a log warning), which ``show`` and ``export`` must not pass
        off as the session."""
        path = self.transcript(key)
        if path is not None:
            try:
                os.close(_files.open_regular(path))
            except FileNotFoundError:
                pass  # deleted since require(): it loads as the empty session it now is
            except OSError as error:
                raise CliError(_unreadable(key, error)) from None

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()


def _unreadable(key: str, error: OSError) -> str:
    return f"cannot read session {_quote(key)}: {_os_error(error)}"


def _sqlite_backend() -> tuple[Callable[..., SessionBackend], str]:
    """``SqliteSessionBackend`` and its database file name, imported only when asked for."""
    try:
        # import_module, not "from . import sqlite": it honours sys.modules as the import
        # system does (a module blocked there counts as missing).
        sqlite = importlib.import_module(f"{__package__}.sqlite")
    except ImportError as error:
        raise CliError(f"the SQLite backend is not available: {error}") from None
    backend = getattr(sqlite, "SqliteSessionBackend", None)
    if backend is None:
        raise CliError("the SQLite backend is not available: turnlog.sqlite has none")
    return backend, str(getattr(sqlite, "DB_NAME", "sessions.db"))


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:" if parts.username else ":"
        return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))
    except ValueError:  # not even a URL: from_url will say so
        return url


def _redis_workspace(args: argparse.Namespace) -> Workspace:
    """A ``RedisSessionBackend`` on ``--redis-url``, checked with a PING so an unreachable server
    is one error before any work. redis-py is imported here only, as the backend needs it."""
    url = args.redis_url or os.environ.get("TURNLOG_REDIS_URL") or DEFAULT_REDIS_URL
    where = _redacted(url)
    try:
        module = importlib.import_module(f"{__package__}.redis_backend")
    except ImportError as error:
        raise CliError(
            f"the Redis backend is not available: {error} (pip install 'turnlog[redis]')"
        ) from None
    try:
        backend = module.RedisSessionBackend(
            url,
            prefix=args.redis_prefix or module.DEFAULT_PREFIX,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        )
    except (TypeError, ValueError) as error:
        raise CliError(f"invalid Redis URL or prefix ({where}): {error}") from None
    workspace = Workspace(where, "redis", backend)
    try:
        backend.client.ping()
    except Exception as error:
        # Whatever stops a PING (refused, timed out, a password wanted) stops every command.
        workspace.close()
        raise CliError(f"cannot reach Redis at {where}: {error}") from None
    return workspace


def open_workspace(args: argparse.Namespace, *, create: bool) -> Workspace:
    """The workspace of ``args``. Unless ``create``, the folder must exist, and one without
    sessions yet opens as an empty workspace with no backend (a read never leaves files behind
    in a folder given by mistake)."""
    if args.backend == "redis":
        return _redis_workspace(args)
    path = args.workspace or os.environ.get("TURNLOG_WORKSPACE") or "."
    sessions = os.path.join(path, "sessions")
    backend_class: Callable[..., SessionBackend] = SessionStore
    marker = sessions
    if args.backend == "sqlite":
        backend_class, db_name = _sqlite_backend()
        marker = os.path.join(sessions, db_name)
    if not create and not os.path.exists(marker):
        if not os.path.isdir(path):
            what = "not a folder" if os.path.exists(path) else "no such folder"
            raise CliError(f"no workspace at {path}: {what}")
        return Workspace(path, args.backend, None)
    return Workspace(path, args.backend, backend_class(path))


# --- output -------------------------------------------------------------------------------------


def _write(text: str) -> None:
    sys.stdout.write(text)


def _write_json(value: Any) -> None:
    _write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def _time_text(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _speedup(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def _file_lines(path: str) -> tuple[int, int]:
    """``(size, lines)`` of a transcript: a line is what ends in a newline, plus a torn tail."""
    fd = _files.open_regular(path)
    with os.fdopen(fd, "rb", buffering=0) as file:
        size = lines = 0
        last = b"\n"
        while block := file.read(_BLOCK):
            size += len(block)
            lines += block.count(b"\n")
            last = block[-1:]
    return size, lines + (last != b"\n")


# --- ls -----------------------------------------------------------------------------------------


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


def _unreadable_info(key: str, path: str, error: OSError) -> SessionInfo | None:
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
        error=f"cannot read: {error.strerror or error}",
    )


def _info(workspace: Workspace, key: str) -> SessionInfo | None:
    """What ``ls`` shows of one session; ``None`` if it vanished meanwhile."""
    size = lines = None
    path = workspace.transcript(key)
    if path is not None:
        # The file first: the store's metadata call would log an unreadable file and call it
        # missing, and ls must show it.
        try:
            size, lines = _file_lines(path)
        except FileNotFoundError:
            return None
        except OSError as error:
            return _unreadable_info(key, path, error)
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


_SORTS: dict[str, Callable[[SessionInfo], Any]] = {
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
    workspace = open_workspace(args, create=False)
    try:
        keys = workspace.list_sessions()
        infos = []
        with Progress("reading sessions", len(keys)) as progress:
            for key in keys:
                info = _info(workspace, key)
                if info is not None:
                    infos.append(info)
                progress.advance()
    finally:
        workspace.close()
    infos.sort(key=_SORTS[args.sort], reverse=args.reverse)
    unreadable = [info for info in infos if info.error is not None]
    if args.json:
        _write_json([info.to_json() for info in infos])
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
        _write(render_table(headers, rows, right=(1, 2, 4)))
        summary = _plural(len(infos), "session")
        if workspace.kind == "jsonl":  # other backends have no files to size, no lines to count
            total_size = sum(info.size or 0 for info in infos)
            corrupt = sum(info.corrupt or 0 for info in infos)
            summary += f", {human_size(total_size)}, {_plural(corrupt, 'corrupt line')}"
            if unreadable:
                summary += f", {len(unreadable):,} unreadable"
            if corrupt:
                summary += " (turnlog doctor lists them, turnlog compact --all drops them)"
        if workspace.store is None:
            summary += f" ({workspace.where} has no sessions yet)"
        _write(summary + "\n")
    # Each unreadable session is also an error line, and the exit status says the listing is
    # not whole, as doctor and compact do; the table (or JSON) above still lists every session.
    sys.stdout.flush()
    for info in unreadable:
        _error(f"session {_quote(info.key)}: {info.error}")
    return FAILURE if unreadable else OK


# --- show ---------------------------------------------------------------------------------------


def _extra_text(message: ChatMessage) -> str:
    if not message.extra:
        return ""
    try:
        text = json.dumps(message.extra, ensure_ascii=False, separators=(",", ":"))
    except ValueError:  # an int too long for this process's int/str limit
        text = repr(message.extra)
    return " " + printable(text)


def cmd_show(args: argparse.Namespace) -> int:
    workspace = open_workspace(args, create=False)
    try:
        workspace.require([args.key])
        workspace.require_readable(args.key)
        messages = workspace.backend.load(args.key, limit=args.tail)
        total = len(messages)
        if args.tail is not None and messages and not args.json:  # to number them
            metadata = workspace.backend.get_session_metadata(args.key)
            total = metadata.message_count if metadata is not None else total
    finally:
        workspace.close()
    if args.json:
        _write_json([message.to_dict() for message in messages])
        return OK
    first = max(total - len(messages), 0) + 1
    out = []
    for number, message in enumerate(messages, start=first):
        content = printable(message.content, keep_newlines=True).replace("\n", "\n    ")
        role = printable(message.role)
        out.append(f"[{number}] {role}{_extra_text(message)}: {content}\n")
    _write("".join(out))
    return OK


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
    except json.JSONDecodeError as error:
        if error.msg != "Extra data":
            raise CliError(f"stdin is not JSON: {error}") from None
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
    workspace = open_workspace(args, create=True)
    try:
        if len(messages) == 1:
            workspace.backend.append(args.key, messages[0])
        else:
            workspace.backend.append_many(args.key, messages)  # one write: all or none
    except (TypeError, ValueError) as error:
        raise CliError(f"invalid message, nothing appended: {error}") from None
    finally:
        workspace.close()
    if args.json:
        _write_json({"key": args.key, "appended": len(messages)})
    else:
        _write(f"appended {_plural(len(messages), 'message')} to {_quote(args.key)}\n")
    return OK


# --- doctor -------------------------------------------------------------------------------------


def _report_json(key: str, report: Report | None, error: str | None) -> dict[str, Any]:
    return {
        "key": key,
        "lines": report.lines if report else None,
        "messages": report.messages if report else None,
        "corrupt": [
            {"line": f.line, "problem": f.problem, "preview": f.preview}
            for f in (report.findings if report else [])
        ],
        "error": error,
    }


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.backend != "jsonl":
        raise CliError(
            f"doctor: it reads JSONL transcripts; --backend {args.backend} has none", USAGE
        )
    workspace = open_workspace(args, create=False)
    checked: list[tuple[str, Report | None, str | None]] = []
    try:
        workspace.require(args.keys)
        keys = args.keys or workspace.list_sessions()
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
                    checked.append((key, None, f"cannot read: {failure.strerror or failure}"))
                progress.advance()
    finally:
        workspace.close()
    corrupt = sum(len(report.findings) for _, report, _ in checked if report)
    hurt = sum(1 for _, report, _ in checked if report and report.findings)
    unreadable = sum(1 for _, _, error in checked if error)
    status = FAILURE if corrupt or unreadable else OK
    if args.json:
        _write_json(
            {
                "sessions": [_report_json(*entry) for entry in checked],
                "corrupt_lines": corrupt,
                "damaged_sessions": hurt + unreadable,
            }
        )
        return status
    if not keys:
        _write(f"nothing to check: no sessions in {workspace.where}\n")
        return OK
    out = []
    for key, report, error in checked:
        if error:
            out.append(f"{printable(key)}: {error}\n")
        for finding in report.findings if report else []:
            where = f"{printable(key)}:{finding.line}: {finding.problem}"
            out.append(
                f"{where}  | {printable(finding.preview)}\n" if finding.preview else where + "\n"
            )
    lines = sum(report.lines for _, report, _ in checked if report)
    summary = f"checked {_plural(len(checked), 'session')} ({_plural(lines, 'line')}): "
    found = []
    if corrupt:
        found.append(f"{_plural(corrupt, 'corrupt line')} in {_plural(hurt, 'session')}")
    if unreadable:
        found.append(f"{unreadable:,} unreadable")
    if corrupt:
        found.append("turnlog compact KEY... drops corrupt lines")
    summary += "; ".join(found) if found else "no damage"
    _write("".join(out) + summary + "\n")
    return status


# --- compact ------------------------------------------------------------------------------------


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
            before = _file_lines(path)
        workspace.backend.compact(key)
        if path is not None:
            after = _file_lines(path)
    except FileNotFoundError:
        return None
    removed = None if before[1] is None or after[1] is None else before[1] - after[1]
    return {
        "key": key,
        "lines_removed": removed,
        "size_before": before[0],
        "size_after": after[0],
        "error": None,
    }


def cmd_compact(args: argparse.Namespace) -> int:
    if args.all and args.keys:
        raise CliError("compact: give session keys or --all, not both", USAGE)
    if not args.all and not args.keys:
        raise CliError("compact: name the sessions to compact, or pass --all", USAGE)
    workspace = open_workspace(args, create=False)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    try:
        workspace.require(args.keys)
        keys = workspace.list_sessions() if args.all else args.keys
        with Progress("compacting", len(keys)) as progress:
            for key in keys:
                try:
                    result = _compact_one(workspace, key)
                except ConnectionError:
                    raise  # the Redis server went away: every other session would fail too
                except OSError as error:
                    # One bad session (unreadable, a full disk) must not keep the others as
                    # they are: go on, and report it and fail at the end.
                    failures.append(f"cannot compact session {_quote(key)}: {_os_error(error)}")
                    result = {
                        "key": key,
                        "lines_removed": None,
                        "size_before": None,
                        "size_after": None,
                        "error": _os_error(error),
                    }
                if result is not None:
                    results.append(result)
                progress.advance()
    finally:
        workspace.close()
    if args.json:
        _write_json(results)
    elif not keys:
        _write(f"nothing to compact: no sessions in {workspace.where}\n")
    else:
        _write(_compact_table(workspace, results, len(failures)))
    sys.stdout.flush()
    for failure in failures:
        _error(failure)
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
    summary = f"compacted {_plural(len(done), 'session')}"
    if workspace.kind == "jsonl":
        removed = sum(result["lines_removed"] or 0 for result in done)
        summary += f": removed {_plural(removed, 'line')}"
    if failed:
        summary += f"; {failed:,} failed"
    return f"{table}{summary}\n"


# --- rm -----------------------------------------------------------------------------------------


def cmd_rm(args: argparse.Namespace) -> int:
    workspace = open_workspace(args, create=False)
    removed: list[str] = []
    try:
        workspace.require(args.keys)  # all or nothing: a typo removes no session
        for key in args.keys:
            if not workspace.backend.delete_session(key):
                raise CliError(f"could not remove session {_quote(key)}")
            removed.append(key)
            if not args.json:
                _write(f"removed {_quote(key)}\n")
    finally:
        workspace.close()
    if args.json:
        _write_json({"removed": removed})
    return OK


# --- export -------------------------------------------------------------------------------------


def _valid_lines(workspace: Workspace, key: str) -> list[str]:
    """The session's messages as stored lines: for JSONL, its valid lines exactly (stripped of
    surrounding white space, as compact keeps them); otherwise each message encoded as turnlog
    writes it."""
    path = workspace.transcript(key)
    if path is not None:
        kept = (_format.valid_text(raw) for raw, _ in file_lines(path))
        return [line.decode("utf-8") for line in kept if line is not None]
    lines = []
    for number, message in enumerate(workspace.backend.load(key), start=1):
        try:
            lines.append(_format.encode_message(message).decode("utf-8").rstrip("\n"))
        except ValueError as error:
            raise CliError(f"message {number} cannot be written as JSON: {error}") from None
    return lines


def _markdown(key: str, messages: list[ChatMessage]) -> str:
    out = [f"# Session {key}\n\n", f"{_plural(len(messages), 'message')}, exported by turnlog.\n"]
    for number, message in enumerate(messages, start=1):
        out.append(f"\n## {number}. {message.role}\n\n")
        if message.extra:
            try:
                extra = json.dumps(message.extra, ensure_ascii=False, separators=(",", ":"))
            except ValueError:
                extra = repr(message.extra)
            out.append(f"`{extra}`\n\n")
        out.append(message.content.rstrip("\n") + "\n")
    return "".join(out)


def cmd_export(args: argparse.Namespace) -> int:
    # --json asks for JSON, as on every command: here that is the json format.
    if args.json and args.format not in (None, "json"):
        raise CliError(
            f"export: --json writes JSON; it cannot go with --format {args.format}", USAGE
        )
    form = "json" if args.json else args.format or "jsonl"
    workspace = open_workspace(args, create=False)
    try:
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
    finally:
        workspace.close()
    if args.output is None:
        _write(text)
    else:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            out.write(text)
    return OK


# --- bench --------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    steps = 1 + 3 * (2 if native is not None else 1)
    with (
        tempfile.TemporaryDirectory(prefix="turnlog-bench-") as workspace,
        Progress("bench", steps) as progress,
    ):
        began = 0

        def starting(label: str) -> None:
            # A step starting means the one before it is done.
            nonlocal began
            progress.advance(1 if began else 0, label=label)
            began += 1

        corpus, timings = run_bench(workspace, args.messages, starting)
        progress.advance(label="done")
    if args.json:
        _write_json(
            {
                "implementation": IMPLEMENTATION,
                "messages": corpus.messages,
                "lines": corpus.lines,
                "corrupt_lines": corpus.corrupt_lines,
                "size": corpus.size,
                "results": [
                    {
                        "operation": t.operation,
                        "rust_seconds": t.rust,
                        "pure_seconds": t.pure,
                        "speedup": t.speedup,
                    }
                    for t in timings
                ],
            }
        )
        return OK
    head = (
        f"one session: {corpus.messages:,} messages, {corpus.lines:,} lines "
        f"({corpus.corrupt_lines:,} corrupt, torn last line), {human_size(corpus.size)}\n"
    )
    if native is None:
        head += "the Rust core is not in use (not built, or TURNLOG_PURE=1): pure Python only\n"
    rows = [
        [
            t.operation,
            _duration(t.rust),
            _duration(t.pure),
            _speedup(t.speedup),
        ]
        for t in timings
    ]
    table = render_table(["OPERATION", "RUST", "PURE PYTHON", "SPEEDUP"], rows, right=(1, 2, 3))
    _write(head + "\n" + table + "(median time per call)\n")
    return OK


# --- the parser ---------------------------------------------------------------------------------

_EPILOG = """\
examples:
  turnlog -w ./workspace ls --sort activity
  turnlog show telegram_user123 --tail 20
  turnlog append telegram_user123 --role user --content "hello"
  echo '{"role":"assistant","content":"hi!"}' | turnlog append telegram_user123 -
  turnlog doctor && echo clean
  turnlog compact --all
  turnlog export telegram_user123 --format markdown > chat.md

The workspace is --workspace, else $TURNLOG_WORKSPACE, else the current folder;
with --backend redis, the server is --redis-url, else $TURNLOG_REDIS_URL.
Exit status: 0 done, 1 failed (or doctor found damage, or a session was unreadable),
2 wrong command line.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``turnlog`` (every subcommand sets ``run``)."""
    parser = _Parser(
        prog=PROG,
        description="Look into, repair and export a turnlog workspace of chat sessions.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROG} {__version__} ({IMPLEMENTATION})"
    )
    # The shared options work before the command and after it; given after, they win. SUPPRESS
    # keeps a subcommand that does not repeat them from resetting what was given before it.
    common = _Parser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument(
            "-w",
            "--workspace",
            metavar="DIR",
            default=default,
            help="the workspace folder (default: $TURNLOG_WORKSPACE, else .)",
        )
        target.add_argument(
            "--backend",
            choices=("jsonl", "sqlite", "redis"),
            default="jsonl" if default is None else default,
            help="how the workspace stores sessions (default: jsonl)",
        )
        target.add_argument(
            "--redis-url",
            metavar="URL",
            default=default,
            help=f"with --backend redis (default: $TURNLOG_REDIS_URL, else {DEFAULT_REDIS_URL})",
        )
        target.add_argument(
            "--redis-prefix",
            metavar="PREFIX",
            default=default,
            help="with --backend redis: the prefix of its keys (default: turnlog:)",
        )
        target.add_argument(
            "--json",
            action="store_true",
            default=False if default is None else default,
            help="print JSON instead of a table or text",
        )

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[common])
        sub.set_defaults(run=run)
        return sub

    ls = command("ls", cmd_ls, "list the sessions: messages, size, activity, damage")
    ls.add_argument(
        "--sort",
        choices=tuple(_SORTS),
        default="key",
        help="key (default, A to Z); messages, size, activity, corrupt (most or newest first)",
    )
    ls.add_argument("--reverse", action="store_true", help="reverse the order")

    show = command("show", cmd_show, "print a session's messages, oldest first")
    show.add_argument("key", type=_session_key, metavar="KEY")
    show.add_argument(
        "--tail", type=_tail, metavar="N", help="only the newest N messages (0: none)"
    )

    append = command(
        "append",
        cmd_append,
        "add a message: --role and --content, or JSON on stdin (an object, an array, lines)",
    )
    append.add_argument("key", type=_session_key, metavar="KEY")
    append.add_argument(
        "stdin",
        nargs="?",
        choices=("-",),
        metavar="-",
        help="read the message(s) as JSON from stdin",
    )
    append.add_argument("--role", help="who speaks: user, assistant, system, tool...")
    append.add_argument("--content", help="the text of the message")

    doctor = command(
        "doctor",
        cmd_doctor,
        "find corrupt lines (line number and why); exit status 1 if any",
    )
    doctor.add_argument("keys", nargs="*", type=_session_key, metavar="KEY")

    compact = command("compact", cmd_compact, "rewrite sessions with only their valid lines")
    compact.add_argument("keys", nargs="*", type=_session_key, metavar="KEY")
    compact.add_argument("--all", action="store_true", help="every session of the workspace")

    rm = command("rm", cmd_rm, "delete sessions (transcript and metadata)")
    rm.add_argument("keys", nargs="+", type=_session_key, metavar="KEY")

    export = command("export", cmd_export, "write a session as JSON lines, JSON or Markdown")
    export.add_argument("key", type=_session_key, metavar="KEY")
    export.add_argument(
        "--format",
        choices=("jsonl", "json", "markdown"),
        help="default: jsonl (json with --json)",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")

    bench = command("bench", cmd_bench, "time Rust vs pure Python on a generated, damaged session")
    bench.add_argument(
        "--messages",
        type=_positive,
        default=100_000,
        metavar="N",
        help="valid messages in the session (default: 100,000)",
    )
    return parser


# --- main ---------------------------------------------------------------------------------------


def _error(message: str) -> None:
    # One line, whatever the message holds: a key or a path may carry a newline. The library's
    # own messages may start with "turnlog: " already.
    line = printable(" ".join(message.removeprefix(f"{PROG}: ").split("\n")))
    sys.stderr.write(f"{PROG}: error: {line}\n")


def _os_error(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename}"
    return str(error) or type(error).__name__


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush of what
    is still buffered does not fail again (the recipe in Python's ``signal`` docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test's capture): nothing will flush it at exit


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``turnlog`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Never raises (but ``SystemExit`` never reaches the caller either): every failure is one line
    on stderr. ``TURNLOG_DEBUG=1`` lets unexpected exceptions through, with their traceback.
    """
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help and --version print, then "exit"
            return done.code if isinstance(done.code, int) else OK
        if args.backend != "redis" and (args.redis_url or args.redis_prefix):
            # Not ignored: it would quietly list the local workspace instead of the server.
            raise CliError("--redis-url and --redis-prefix need --backend redis", USAGE)
        status: int = args.run(args)
        sys.stdout.flush()
        return status
    except CliError as error:
        _error(str(error))
        return error.status
    except KeyboardInterrupt:
        _error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE
    except OSError as error:
        _error(_os_error(error))
        return FAILURE
    except Exception as error:
        if os.environ.get("TURNLOG_DEBUG", "").strip() not in ("", "0"):
            raise
        _error(f"{type(error).__name__}: {error}")
        return FAILURE


if __name__ == "__main__":  # pragma: no cover - `python -m turnlog` goes through __main__.py
    sys.exit(main())
