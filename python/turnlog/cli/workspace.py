"""The workspace a ``turnlog`` command works on: the folder or Redis server, and its backend.

``--backend jsonl`` (the default) is ``turnlog.SessionStore``; ``sqlite`` and ``redis`` are
imported only when asked for (with ``importlib``), so the command loads neither sqlite3 nor
redis-py otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .. import SessionBackend, SessionStore
from ..backends import files as _files
from ..backends.jsonl.base import JsonlStoreBase
from .output import CliError, os_error, quote

__all__ = [
    "DEFAULT_REDIS_URL",
    "REDIS_CONNECT_TIMEOUT",
    "Workspace",
    "open_workspace",
    "size_and_lines",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
#: Seconds to wait for a Redis server to accept the connection: an unreachable host is an error
#: after this long, not after the system's TCP timeout (minutes). A URL's own
#: ``?socket_connect_timeout=`` wins.
REDIS_CONNECT_TIMEOUT = 5.0
_BLOCK = 1 << 20


@dataclass
class Workspace:
    """The opened workspace: where it is (for messages), its backend, which kind it is; a
    context manager that closes the backend.

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
        if not isinstance(self.store, JsonlStoreBase):
            return None
        return self.store.transcript_path(key)

    def require(self, keys: Sequence[str]) -> None:
        """Fail (status 1) unless every session of ``keys`` exists."""
        store = self.store
        missing = [key for key in keys if store is None or not store.session_exists(key)]
        if missing:
            names = ", ".join(quote(key) for key in missing)
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
                raise CliError(f"cannot read session {quote(key)}: {os_error(error)}") from None

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def size_and_lines(path: str) -> tuple[int, int]:
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


def _sqlite_backend() -> tuple[Callable[..., SessionBackend], str]:
    """``SqliteSessionBackend`` and its database file name, imported only when asked for."""
    try:
        # import_module, not "from ..backends import sqlite": it honours sys.modules as the
        # import system does (a module blocked there counts as missing).
        sqlite = importlib.import_module("turnlog.backends.sqlite")
    except ImportError as error:
        raise CliError(f"the SQLite backend is not available: {error}") from None
    backend = getattr(sqlite, "SqliteSessionBackend", None)
    if backend is None:
        raise CliError("the SQLite backend is not available: turnlog.backends.sqlite has none")
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
        module = importlib.import_module("turnlog.backends.redis")
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
    if backend_class is SessionStore:
        # The command line never hands a ZeroClaw file to a key by itself (``turnlog show
        # user_1`` must not take the file ``user:1`` was to adopt): ``turnlog adopt`` does that.
        return Workspace(path, args.backend, SessionStore(path, adopt_zeroclaw_names=False))
    return Workspace(path, args.backend, backend_class(path))
