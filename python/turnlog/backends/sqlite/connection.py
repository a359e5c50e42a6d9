"""Opening ``sessions.db``: a connection per thread and process, write transactions, and the
schema created (or checked) on opening.

Each thread gets its own connection (``threading.local``), opened on first use and closed when
the thread ends, on ``close()`` or when the backend is garbage collected; a process forked from a
user of the backend opens fresh connections (SQLite connections must not cross a ``fork``).
Every read-modify-write runs in ``BEGIN IMMEDIATE``, so writers from any number of threads and
processes queue on SQLite's write lock (waiting up to ``timeout`` seconds) and never interleave;
readers see committed snapshots (WAL) and never block writers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator

from ..._rules import Durability
from .schema import _FTS_SCHEMA, _SCHEMA, SCHEMA_VERSION, _statements, fts5_available
from .search import _catch_up, _content, _matches


class _Connection:
    """One thread's connection; a finalizer closes it when the thread (or backend) lets go."""

    __slots__ = ("__weakref__", "connection", "pid")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.pid = os.getpid()


def _close(connection: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:
        with contextlib.suppress(sqlite3.Error):
            connection.close()


# A forked child must neither use nor close its parent's connections (closing runs SQLite's
# cleanup on locks and the WAL that belong to the parent): it keeps them here, untouched.
_INHERITED: list[_Connection] = []


class _Database:
    """The database file at ``path``, opened per thread: what ``SqliteSessionBackend`` stands
    on. Creates the file (owner-only) and the schema, and the search index when ``use_fts``."""

    def __init__(self, path: str, *, durability: Durability, timeout: float, use_fts: bool) -> None:
        self._durability = durability
        self._timeout = timeout
        self._use_fts = use_fts
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._closed = False
        # Whether the database has the search index, as of PRAGMA schema_version _schema: another
        # backend object may create it at any time, and from then on every writer must fill it.
        self._indexed = False
        self._schema = -1
        # Created here, owner-only, before SQLite creates it with the umask's mode; the -wal and
        # -shm files SQLite adds take this file's mode.
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._set_up()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module opens no transactions of its own; every
        # transaction here is an explicit BEGIN. check_same_thread=False only so that close()
        # may close other threads' connections; each is used by its own thread alone.
        connection = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            # WAL is a property of the file: it is switched once, and readers never block writers.
            if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise sqlite3.OperationalError(f"cannot switch {self._path} to WAL ({mode})")
            synchronous = "FULL" if self._durability == "power" else "NORMAL"
            connection.execute(f"PRAGMA synchronous = {synchronous}")
            connection.create_function("turnlog_matches", 3, _matches, deterministic=True)
            connection.create_function("turnlog_content", 1, _content, deterministic=True)
        except BaseException:
            connection.close()
            raise
        return connection

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")
        held: _Connection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            if held is not None:
                _INHERITED.append(held)
            held = _Connection(self._connect())
            weakref.finalize(held, _close, held.connection, held.pid)
            with self._lock:
                self._connections.add(held)
            self._local.held = held
        return held.connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        """Notice a search index another backend object created (or dropped) since last time."""
        version = connection.execute("PRAGMA schema_version").fetchone()[0]
        if version != self._schema:
            found = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'message_fts'"
            ).fetchone()
            if found is not None and not fts5_available():
                raise RuntimeError(
                    f"{self._path} has a search index (FTS5), but this SQLite has no FTS5 with "
                    "the trigram tokenizer to keep it up to date"
                )
            self._indexed = found is not None
            self._schema = version

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``BEGIN IMMEDIATE`` takes the write lock before the first read,
        so what a method reads cannot change before it writes (a deferred transaction could be
        refused its upgrade with SQLITE_BUSY, without waiting)."""
        connection = self._conn()
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._check_schema(connection)
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _set_up(self) -> None:
        """Create or check the schema, and the search index if this backend wants one."""
        with self._write() as connection:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path} has schema version {version}; this turnlog knows "
                    f"{SCHEMA_VERSION}: upgrade turnlog"
                )
            for statement in _statements(_SCHEMA):
                connection.execute(statement)
            if version < SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._check_schema(connection)
            if self._use_fts and not self._indexed:
                # A database made without the index (fts=False, or no FTS5) gets it now.
                for statement in _FTS_SCHEMA:
                    connection.execute(statement)
                self._check_schema(connection)
                _catch_up(connection)

    def close(self) -> None:
        """Close every connection this backend opened in this process. Call it when no other
        thread is using the backend; any later call raises ``ValueError``."""
        self._closed = True
        with self._lock:
            held = list(self._connections)
            self._connections.clear()
        for connection in held:
            _close(connection.connection, connection.pid)
        self._local = threading.local()

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    @property
    def durability(self) -> Durability:
        """``"process"`` or ``"power"``: what a committed write survives."""
        return self._durability

    @property
    def fts_enabled(self) -> bool:
        """Whether ``search`` uses the FTS5 index (``False``: it scans)."""
        self._check_schema(self._conn())
        return self._use_fts and self._indexed
