"""``SqliteSessionBackend``: every ``SessionBackend`` method for real, in one SQLite file.

The store mirrors ZeroClaw's SQLite backend (WAL mode, a sessions table with the metadata, an FTS5
index over message contents) with turnlog's rules: the same key checks and message encoding as
the JSONL stores (a message row holds the exact line the JSONL store would write, so extra fields
round-trip byte for byte), the same exceptions, and bad input changes nothing.

Layout of ``<workspace>/sessions/sessions.db`` (schema version 1, ``PRAGMA user_version``)::

    sessions(key TEXT PRIMARY KEY, name, agent_alias, channel_id, room_id, sender_id,
             state, turn_id, turn_started_at, created_at, last_activity, message_count)
    messages(id INTEGER PRIMARY KEY AUTOINCREMENT, session_key, line, created_at)
    index messages_by_session(session_key, id)
    message_fts: FTS5 over json_extract(line, '$.content'), external content, trigger-maintained

Times are stored as fixed-width ISO 8601 text in UTC (``2024-06-01T12:00:00.000000+00:00``), so
they sort and compare as strings and stay readable in the ``sqlite3`` shell.

Concurrency: each thread gets its own connection (``threading.local``), opened on first use and
closed when the thread ends, on ``close()`` or when the backend is garbage collected; a process
forked from a user of the backend opens fresh connections (SQLite connections must not cross a
``fork``). Every read-modify-write runs in ``BEGIN IMMEDIATE``, so writers from any number of
threads and processes queue on SQLite's write lock (waiting up to ``timeout`` seconds) and never
interleave; readers see committed snapshots (WAL) and never block writers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from . import _format
from ._impl import ChatMessage
from ._jsonl import Durability, PathLike, check_durability, check_limit, sessions_dir
from ._types import SessionMetadata, SessionQuery, SessionState
from .backend import MessageLike, SessionBackend

__all__ = ["DB_NAME", "SCHEMA_VERSION", "SqliteSessionBackend", "fts5_available"]

#: The database file, inside ``<workspace>/sessions/``.
DB_NAME = "sessions.db"
#: ``PRAGMA user_version`` of the layout this module writes.
SCHEMA_VERSION = 1
STATES = ("idle", "running", "error")
Clock = Callable[[], datetime]
Match = Literal["all", "any"]

_METADATA_COLUMNS = (
    "key, name, created_at, last_activity, message_count, agent_alias, channel_id, room_id, "
    "sender_id"
)
# A searchable word: a run of letters and digits (FTS5's unicode61 tokenizer splits on
# everything else, "_" included).
_WORD = re.compile(r"[^\W_]+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    agent_alias TEXT,
    channel_id TEXT,
    room_id TEXT,
    sender_id TEXT,
    state TEXT NOT NULL DEFAULT 'idle' CHECK (state IN ('idle', 'running', 'error')),
    turn_id TEXT,
    turn_started_at TEXT,
    created_at TEXT NOT NULL,
    last_activity TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_activity ON sessions (last_activity);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_key TEXT NOT NULL,
    line TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages (session_key, id);
-- The count lives in the sessions row so listing 10,000 sessions reads 10,000 rows, not every
-- message; triggers keep it true whatever statement adds or removes messages.
CREATE TRIGGER IF NOT EXISTS messages_count_insert AFTER INSERT ON messages BEGIN
    UPDATE sessions SET message_count = message_count + 1 WHERE key = new.session_key;
END;
CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE sessions SET message_count = message_count - 1 WHERE key = old.session_key;
END;
"""

# The FTS5 index keeps only the index (external content): the text is read back through this
# view when FTS5 needs it ('rebuild'). The CASE keeps a hand-damaged row from failing a trigger.
_CONTENT = "CASE WHEN json_valid({0}.line) THEN json_extract({0}.line, '$.content') END"
_FTS_SCHEMA = f"""
CREATE VIEW IF NOT EXISTS message_text (id, content) AS
    SELECT id, {_CONTENT.format("messages")} FROM messages;
CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5 (
    content, content = 'message_text', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_fts (rowid, content) VALUES (new.id, {_CONTENT.format("new")});
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_fts (message_fts, rowid, content)
        VALUES ('delete', old.id, {_CONTENT.format("old")});
END;
CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF line ON messages BEGIN
    INSERT INTO message_fts (message_fts, rowid, content)
        VALUES ('delete', old.id, {_CONTENT.format("old")});
    INSERT INTO message_fts (rowid, content) VALUES (new.id, {_CONTENT.format("new")});
END;
"""

_fts5: bool | None = None


def fts5_available() -> bool:
    """Whether this process's SQLite has FTS5 (checked once, on an in-memory database)."""
    global _fts5
    if _fts5 is None:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("CREATE VIRTUAL TABLE temp.probe USING fts5 (x)")
            _fts5 = True
        except sqlite3.OperationalError:
            _fts5 = False
        finally:
            probe.close()
    return _fts5


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _text_of(when: datetime) -> str:
    """``when`` as the fixed-width UTC text the database stores."""
    if not isinstance(when, datetime):
        raise TypeError(f"a time must be a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a time must be timezone-aware, got {when!r}")
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _time_of(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _check_key(session_key: object) -> str:
    # The JSONL stores' rule, so a key is accepted (and refused, with the same exception) by
    # every backend alike and a session can move between them.
    _format.key_to_name(session_key)
    return session_key  # type: ignore[return-value]


def _check_text(value: object, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must not contain lone surrogates") from None
    return value


def _check_amount(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _line(message: object) -> str:
    """The JSONL store's line for ``message``, without the newline (raises as it does)."""
    return _format.encode_message(message)[:-1].decode("utf-8")


def _message(line: str) -> ChatMessage | None:
    # Rows are written by _line, so this only refuses a row damaged by hand (skipped, as the
    # JSONL stores skip a corrupt line).
    try:
        raw = line.encode("utf-8")
    except (AttributeError, UnicodeEncodeError):
        return None
    return _format.parse_line(raw)


def _metadata(row: Sequence[Any]) -> SessionMetadata:
    return SessionMetadata(
        key=row[0],
        name=row[1],
        created_at=_time_of(row[2]),
        last_activity=_time_of(row[3]),
        message_count=row[4],
        agent_alias=row[5],
        channel_id=row[6],
        room_id=row[7],
        sender_id=row[8],
    )


def _words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def _words_match(content: object, words: str, any_word: int) -> bool:
    """The fallback matcher (no FTS5): FTS5's rule, each word a prefix of a word of ``content``."""
    if not isinstance(content, str):
        return False
    tokens = set(_words(content))
    wanted = words.split(" ")
    hits = (any(token.startswith(word) for token in tokens) for word in wanted)
    return any(hits) if any_word else all(hits)


class _Connection:
    """One thread's connection, closed by a finalizer when the thread (or backend) lets go."""

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


class SqliteSessionBackend(SessionBackend):
    """Chat sessions in ``<workspace>/sessions/sessions.db`` (SQLite, WAL mode).

    Every ``SessionBackend`` method is implemented: messages, true counts, per-message times,
    names, agent aliases, routing context, turn state, stale-session cleanup and full-text search
    (FTS5, or a slower scan without it).

    Methods that record metadata (``set_session_name``, ``set_session_agent_alias``,
    ``set_session_context``, ``set_session_state``) create the session if it does not exist, with
    no messages, as ZeroClaw's SQLite backend does; ``clear_messages`` and ``append_many`` with no
    messages never create one. ``last_activity`` moves when messages change or the turn state is
    set; names, aliases and context are labels and leave it alone.

    Args:
        workspace: The workspace folder; the database lives in ``<workspace>/sessions/``, which
            is created (owner-only) if needed. The database file is created owner-only too.
        durability: ``"process"`` (default): a committed write survives a crash of the process
            (``synchronous=NORMAL`` in WAL mode). ``"power"``: it also survives power loss
            (``synchronous=FULL``: the WAL is fsynced at every commit).
        timeout: Seconds to wait for another writer's lock before raising
            ``sqlite3.OperationalError`` ("database is locked").
        fts: ``None`` (default): search with FTS5 when this SQLite has it. ``False``: never
            create or use the FTS5 index (search scans the messages). ``True``: require FTS5.
        clock: Returns the current time, timezone-aware; ``datetime.now(timezone.utc)`` by
            default. Tests inject their own to control idle and stuck times.

    Raises:
        NotADirectoryError: ``workspace`` (or its ``sessions``) exists and is not a folder.
        RuntimeError: ``fts=True`` without FTS5; the database was written by a newer turnlog;
            or it has an FTS5 index but this SQLite has no FTS5 (its triggers could not run).
        sqlite3.DatabaseError: the file is not a database, or SQLite fails otherwise.
    """

    def __init__(
        self,
        workspace: PathLike,
        *,
        durability: Durability = "process",
        timeout: float = 30.0,
        fts: bool | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self._durability = check_durability(durability)
        self._timeout = _check_amount(timeout, "timeout")
        if fts is not None and not isinstance(fts, bool):
            raise TypeError(f"fts must be a bool or None, not {type(fts).__name__}")
        if fts and not fts5_available():
            raise RuntimeError("fts=True, but this SQLite was built without FTS5")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._clock = clock
        self._sessions_dir = sessions_dir(workspace)
        self._path = os.path.join(self._sessions_dir, DB_NAME)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._closed = False
        # Created here, owner-only, before SQLite creates it with the umask's mode; the -wal and
        # -shm files SQLite adds take this file's mode.
        os.close(os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        self._fts = self._set_up(want_fts=fts is not False and fts5_available())

    # --- connections and transactions -----------------------------------------------------------

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
            connection.create_function("turnlog_words_match", 3, _words_match, deterministic=True)
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

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: ``BEGIN IMMEDIATE`` takes the write lock before the first read,
        so what a method reads cannot change before it writes (a deferred transaction could be
        refused its upgrade with SQLITE_BUSY, without waiting)."""
        connection = self._conn()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _set_up(self, *, want_fts: bool) -> bool:
        """Create or check the schema; returns whether search uses FTS5."""
        connection = self._conn()
        with self._write():
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self._path} has schema version {version}; this turnlog knows "
                    f"{SCHEMA_VERSION}: upgrade turnlog"
                )
            for statement in _statements(_SCHEMA):
                connection.execute(statement)
            has_fts = (
                connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'message_fts'"
                ).fetchone()
                is not None
            )
            if has_fts and not fts5_available():
                raise RuntimeError(
                    f"{self._path} has an FTS5 index, but this SQLite was built without FTS5"
                )
            if want_fts and not has_fts:
                for statement in _statements(_FTS_SCHEMA):
                    connection.execute(statement)
                # A database made without the index (fts=False, or no FTS5 then) gets it now.
                connection.execute("INSERT INTO message_fts (message_fts) VALUES ('rebuild')")
                has_fts = True
            if version < SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return want_fts and has_fts

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

    def __enter__(self) -> SqliteSessionBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({os.path.dirname(self._sessions_dir)!r}, "
            f"durability={self._durability!r})"
        )

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
        """Whether ``search`` uses the FTS5 index (``False``: it scans with LIKE and a matcher)."""
        return self._fts

    def _now(self) -> str:
        return _text_of(self._clock())

    def _touch(self, connection: sqlite3.Connection, session_key: str, now: str) -> None:
        """Create the session if needed and record activity."""
        connection.execute(
            "INSERT INTO sessions (key, created_at, last_activity) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET last_activity = excluded.last_activity",
            (session_key, now, now),
        )

    def _ensure(self, connection: sqlite3.Connection, session_key: str, now: str) -> None:
        """Create the session if needed, leaving an existing one's times alone."""
        connection.execute(
            "INSERT INTO sessions (key, created_at, last_activity) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (session_key, now, now),
        )

    # --- messages -------------------------------------------------------------------------------

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the newest ``limit`` when given.

        ``limit=N`` reads N rows (newest first through the ``(session_key, id)`` index), not the
        session. A missing session loads as ``[]``.

        Raises:
            TypeError, ValueError: a bad key or limit.
        """
        return [message for message, _ in self._rows(session_key, limit, with_times=False)]

    def load_with_timestamps(
        self, session_key: str, limit: int | None = None
    ) -> list[tuple[ChatMessage, datetime | None]]:
        """Messages paired with when each was stored (UTC), oldest first, as ``load``."""
        return self._rows(session_key, limit, with_times=True)

    def _rows(
        self, session_key: str, limit: int | None, *, with_times: bool
    ) -> list[tuple[ChatMessage, datetime | None]]:
        _check_key(session_key)
        check_limit(limit)
        if limit == 0:
            return []
        columns = "line, created_at" if with_times else "line, NULL"
        if limit is None:
            rows = self._conn().execute(
                f"SELECT {columns} FROM messages WHERE session_key = ? ORDER BY id",
                (session_key,),
            )
            found = list(rows)
        else:
            rows = self._conn().execute(
                f"SELECT {columns} FROM messages WHERE session_key = ? ORDER BY id DESC LIMIT ?",
                (session_key, limit),
            )
            found = list(rows)
            found.reverse()
        result = []
        for line, created_at in found:
            message = _message(line)
            if message is not None:
                result.append((message, _time_of(created_at)))
        return result

    def append(self, session_key: str, message: MessageLike) -> None:
        """Add ``message`` (a ``ChatMessage`` or a mapping) at the end, creating the session.

        Raises:
            TypeError, ValueError: a bad key or message, as the JSONL stores raise; nothing is
                written.
        """
        _check_key(session_key)
        line = _line(message)
        now = self._now()
        with self._write() as connection:
            self._touch(connection, session_key, now)
            connection.execute(
                "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
                (session_key, line, now),
            )

    def append_many(
        self,
        session_key: str,
        messages: Iterable[MessageLike],
        *,
        timestamps: Sequence[datetime | None] | None = None,
    ) -> None:
        """Add ``messages`` in order in one transaction: all of them, or none on error.

        Args:
            session_key: The session; created if needed (but not for an empty ``messages``).
            messages: ``ChatMessage`` objects or mappings.
            timestamps: When each message was stored, for importers (``None`` entries, or no
                sequence at all: now). Must be as long as ``messages``.

        Raises:
            TypeError, ValueError: a bad key, message or timestamp; nothing is written.
        """
        _check_key(session_key)
        lines = [_line(message) for message in messages]
        now = self._now()
        if timestamps is None:
            times = [now] * len(lines)
        else:
            if len(timestamps) != len(lines):
                raise ValueError(
                    f"timestamps has {len(timestamps)} entries for {len(lines)} messages"
                )
            times = [now if when is None else _text_of(when) for when in timestamps]
        if not lines:
            return
        with self._write() as connection:
            self._touch(connection, session_key, now)
            connection.executemany(
                "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
                [(session_key, line, when) for line, when in zip(lines, times, strict=True)],
            )

    def _last_id(self, connection: sqlite3.Connection, session_key: str) -> int | None:
        row = connection.execute(
            "SELECT id FROM messages WHERE session_key = ? ORDER BY id DESC LIMIT 1",
            (session_key,),
        ).fetchone()
        return None if row is None else int(row[0])

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest message. ``True`` if there was one.

        Concurrent calls from any threads or processes each remove a different message.
        """
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            last = self._last_id(connection, session_key)
            if last is None:
                return False
            connection.execute("DELETE FROM messages WHERE id = ?", (last,))
            connection.execute(
                "UPDATE sessions SET last_activity = ? WHERE key = ?", (now, session_key)
            )
            return True

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest message in place (its time becomes now). ``False`` if none.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
        """
        _check_key(session_key)
        line = _line(message)
        now = self._now()
        with self._write() as connection:
            last = self._last_id(connection, session_key)
            if last is None:
                return False
            connection.execute(
                "UPDATE messages SET line = ?, created_at = ? WHERE id = ?", (line, now, last)
            )
            connection.execute(
                "UPDATE sessions SET last_activity = ? WHERE key = ?", (now, session_key)
            )
            return True

    def compact(self, session_key: str) -> None:
        """Delete the session's rows that do not hold a valid message.

        turnlog writes only valid rows, so this finds something only in a database edited by
        other means. It does not ``VACUUM`` (that would rewrite the whole file).
        """
        _check_key(session_key)
        with self._write() as connection:
            rows = connection.execute(
                "SELECT id, line FROM messages WHERE session_key = ?", (session_key,)
            ).fetchall()
            damaged = [(row_id,) for row_id, line in rows if _message(line) is None]
            if damaged:
                connection.executemany("DELETE FROM messages WHERE id = ?", damaged)

    def clear_messages(self, session_key: str) -> int:
        """Remove every message; the session and its metadata stay. Returns how many it had."""
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            removed = connection.execute(
                "DELETE FROM messages WHERE session_key = ?", (session_key,)
            ).rowcount
            if removed:
                connection.execute(
                    "UPDATE sessions SET last_activity = ? WHERE key = ?", (now, session_key)
                )
            return removed

    def delete_session(self, session_key: str) -> bool:
        """Delete the session, its messages and its metadata. ``True`` if it existed."""
        _check_key(session_key)
        with self._write() as connection:
            # The session row first: the count trigger then has no row to update per message.
            existed = connection.execute(
                "DELETE FROM sessions WHERE key = ?", (session_key,)
            ).rowcount
            connection.execute("DELETE FROM messages WHERE session_key = ?", (session_key,))
            return existed > 0

    def create_session(self, session_key: str) -> bool:
        """Create an empty session (for importers). ``True`` if it did not exist."""
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            return (
                connection.execute(
                    "INSERT INTO sessions (key, created_at, last_activity) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO NOTHING",
                    (session_key, now, now),
                ).rowcount
                > 0
            )

    def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """Set an existing session's times (for importers: ``migrate`` keeps the source's).

        ``None`` leaves a time unchanged; ``turn_started_at`` is kept only while running.
        Returns ``False`` (and changes nothing) if the session does not exist.
        """
        _check_key(session_key)
        values = [None if when is None else _text_of(when) for when in (created_at, last_activity)]
        started = None if turn_started_at is None else _text_of(turn_started_at)
        with self._write() as connection:
            return (
                connection.execute(
                    "UPDATE sessions SET created_at = coalesce(?, created_at), "
                    "last_activity = coalesce(?, last_activity), "
                    "turn_started_at = CASE WHEN state = 'running' "
                    "THEN coalesce(?, turn_started_at) ELSE turn_started_at END "
                    "WHERE key = ?",
                    (*values, started, session_key),
                ).rowcount
                > 0
            )

    # --- sessions -------------------------------------------------------------------------------

    def list_sessions(self) -> list[str]:
        """Every session key, exactly as given, sorted (emptied sessions included)."""
        rows = self._conn().execute("SELECT key FROM sessions")
        return sorted(row[0] for row in rows)

    def session_exists(self, session_key: str) -> bool:
        """Whether the session exists (an emptied session still does)."""
        _check_key(session_key)
        row = (
            self._conn().execute("SELECT 1 FROM sessions WHERE key = ?", (session_key,)).fetchone()
        )
        return row is not None

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Everything known about the session, with its true message count; ``None`` if none."""
        _check_key(session_key)
        row = (
            self._conn()
            .execute(f"SELECT {_METADATA_COLUMNS} FROM sessions WHERE key = ?", (session_key,))
            .fetchone()
        )
        return None if row is None else _metadata(row)

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first (then by key)."""
        rows = self._conn().execute(
            f"SELECT {_METADATA_COLUMNS} FROM sessions ORDER BY last_activity DESC, key"
        )
        return [_metadata(row) for row in rows]

    def cleanup_stale(self, ttl_hours: int) -> int:
        """Delete sessions (messages and metadata together) whose last activity is more than
        ``ttl_hours`` ago, whatever their state. Returns how many."""
        hours = _check_amount(ttl_hours, "ttl_hours")
        cutoff = self._cutoff(timedelta(hours=hours))
        with self._write() as connection:
            stale = connection.execute(
                "SELECT key FROM sessions WHERE last_activity < ?", (cutoff,)
            ).fetchall()
            if not stale:
                return 0
            connection.executemany("DELETE FROM sessions WHERE key = ?", stale)
            connection.executemany("DELETE FROM messages WHERE session_key = ?", stale)
            return len(stale)

    def _cutoff(self, age: timedelta) -> str:
        try:
            return _text_of(self._clock() - age)
        except OverflowError:  # an age beyond year 1: nothing is that old
            return _text_of(datetime.min.replace(tzinfo=timezone.utc))

    # --- names, alias, context ------------------------------------------------------------------

    def _set_column(self, session_key: str, column: str, value: str) -> None:
        now = self._now()
        with self._write() as connection:
            self._ensure(connection, session_key, now)
            connection.execute(
                f"UPDATE sessions SET {column} = ? WHERE key = ?", (value, session_key)
            )

    def _get_column(self, session_key: str, column: str) -> Any:
        _check_key(session_key)
        row = (
            self._conn()
            .execute(f"SELECT {column} FROM sessions WHERE key = ?", (session_key,))
            .fetchone()
        )
        return None if row is None else row[0]

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set the session's human-readable name, creating the session if needed."""
        _check_key(session_key)
        self._set_column(session_key, "name", _check_text(name, "name"))  # type: ignore[arg-type]

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name; ``None`` if unset or no such session."""
        return self._get_column(session_key, "name")  # type: ignore[no-any-return]

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias, creating the session if needed."""
        _check_key(session_key)
        value = _check_text(alias, "alias")
        self._set_column(session_key, "agent_alias", value)  # type: ignore[arg-type]

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias; ``None`` if unset or no such session."""
        return self._get_column(session_key, "agent_alias")  # type: ignore[no-any-return]

    def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context, creating the session if needed; ``None`` leaves a field
        unchanged."""
        _check_key(session_key)
        values = (
            _check_text(channel_id, "channel_id", optional=True),
            _check_text(room_id, "room_id", optional=True),
            _check_text(sender_id, "sender_id", optional=True),
        )
        now = self._now()
        with self._write() as connection:
            self._ensure(connection, session_key, now)
            connection.execute(
                "UPDATE sessions SET channel_id = coalesce(?, channel_id), "
                "room_id = coalesce(?, room_id), sender_id = coalesce(?, sender_id) "
                "WHERE key = ?",
                (*values, session_key),
            )

    # --- turn state -----------------------------------------------------------------------------

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state, creating the session if needed; it counts as activity.

        - ``"running"``: records ``turn_id``; ``turn_started_at`` becomes now when the session
          enters running or switches to another turn id (setting the same running turn again
          keeps its start, so a heartbeat does not hide a stuck turn).
        - ``"idle"``: clears ``turn_id`` and ``turn_started_at``.
        - ``"error"``: keeps the failed turn's id and start (``turn_id``, when given, replaces
          the id).

        Raises:
            ValueError: ``state`` is not ``"idle"``, ``"running"`` or ``"error"``.
            TypeError: ``state`` or ``turn_id`` is not a str (``turn_id`` may be ``None``).
        """
        _check_key(session_key)
        _check_text(state, "state")
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        _check_text(turn_id, "turn_id", optional=True)
        now = self._now()
        with self._write() as connection:
            self._ensure(connection, session_key, now)
            if state == "running":
                connection.execute(
                    "UPDATE sessions SET turn_started_at = CASE "
                    "WHEN state = 'running' AND turn_id IS ? THEN turn_started_at ELSE ? END, "
                    "state = 'running', turn_id = ?, last_activity = ? WHERE key = ?",
                    (turn_id, now, turn_id, now, session_key),
                )
            elif state == "idle":
                connection.execute(
                    "UPDATE sessions SET state = 'idle', turn_id = NULL, turn_started_at = NULL, "
                    "last_activity = ? WHERE key = ?",
                    (now, session_key),
                )
            else:
                connection.execute(
                    "UPDATE sessions SET state = 'error', turn_id = coalesce(?, turn_id), "
                    "last_activity = ? WHERE key = ?",
                    (turn_id, now, session_key),
                )

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The session's turn state (``"idle"`` until set); ``None`` if no such session."""
        _check_key(session_key)
        row = (
            self._conn()
            .execute(
                "SELECT state, turn_id, turn_started_at FROM sessions WHERE key = ?",
                (session_key,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return SessionState(state=row[0], turn_id=row[1], turn_started_at=_time_of(row[2]))

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the longest-running first."""
        rows = self._conn().execute(
            f"SELECT {_METADATA_COLUMNS} FROM sessions WHERE state = 'running' "
            "ORDER BY turn_started_at, key"
        )
        return [_metadata(row) for row in rows]

    def list_stuck_sessions(self, threshold_secs: int) -> list[SessionMetadata]:
        """Sessions whose current turn started more than ``threshold_secs`` ago, the longest
        first."""
        seconds = _check_amount(threshold_secs, "threshold_secs")
        cutoff = self._cutoff(timedelta(seconds=seconds))
        rows = self._conn().execute(
            f"SELECT {_METADATA_COLUMNS} FROM sessions "
            "WHERE state = 'running' AND turn_started_at < ? ORDER BY turn_started_at, key",
            (cutoff,),
        )
        return [_metadata(row) for row in rows]

    # --- search ---------------------------------------------------------------------------------

    def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message whose content matches ``query.keyword``, the most recently
        active first, at most ``query.limit`` of them.

        The keyword is split into words (runs of letters and digits); matching is
        case-insensitive and each word matches as a prefix of a word in the content ("deploy"
        finds "deployment", "ploy" does not). With ``match="all"`` (default) one message must
        hold every word; with ``match="any"``, one of them. FTS5 query syntax has no effect: the
        keyword is plain text. A keyword of ``None`` or only white space lists every session;
        one with no letters or digits ("?!") matches none. Without FTS5 the same rule is applied
        by a scan (a LIKE prefilter, then a matcher), slower on a large database.

        Raises:
            TypeError: ``query`` is not a ``SessionQuery``, or its keyword is not a str or None.
            ValueError: a negative limit, or ``match`` is not ``"all"`` or ``"any"``.
        """
        if not isinstance(query, SessionQuery):
            raise TypeError(f"query must be a SessionQuery, not {type(query).__name__}")
        keyword = _check_text(query.keyword, "keyword", optional=True)
        check_limit(query.limit)
        if match not in ("all", "any"):
            raise ValueError(f"match must be 'all' or 'any', not {match!r}")
        limit = -1 if query.limit is None else query.limit
        order = "ORDER BY s.last_activity DESC, s.key LIMIT ?"
        if keyword is None or not keyword.strip():
            rows = self._conn().execute(
                f"SELECT {_columns('s')} FROM sessions AS s {order}", (limit,)
            )
            return [_metadata(row) for row in rows]
        words = list(dict.fromkeys(_words(keyword)))
        if not words:
            return []
        if self._fts:
            joiner = " AND " if match == "all" else " OR "
            fts_query = joiner.join(f'"{word}"*' for word in words)
            rows = self._conn().execute(
                f"SELECT {_columns('s')} FROM sessions AS s WHERE s.key IN ("
                "SELECT m.session_key FROM messages AS m WHERE m.id IN ("
                "SELECT rowid FROM message_fts WHERE message_fts MATCH ?)) " + order,
                (fts_query, limit),
            )
        else:
            # LIKE is case-insensitive for ASCII only, so only ASCII words may prefilter; a word
            # of letters and digits is never escaped in the JSON line, so the prefilter never
            # drops a match. The matcher then applies the exact rule to the content.
            ascii_words = [word for word in words if word.isascii()]
            likes: list[str] = []
            if match == "all":
                likes = ["m.line LIKE ?"] * len(ascii_words)
                prefilter = ascii_words
            elif len(ascii_words) == len(words):
                likes = ["(" + " OR ".join(["m.line LIKE ?"] * len(words)) + ")"]
                prefilter = words
            else:
                prefilter = []
            conditions = " ".join(f"AND {like}" for like in likes)
            rows = self._conn().execute(
                f"SELECT {_columns('s')} FROM sessions AS s WHERE EXISTS ("
                f"SELECT 1 FROM messages AS m WHERE m.session_key = s.key {conditions} "
                f"AND turnlog_words_match({_CONTENT.format('m')}, ?, ?)) " + order,
                (*(f"%{word}%" for word in prefilter), " ".join(words), match == "any", limit),
            )
        return [_metadata(row) for row in rows]


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _METADATA_COLUMNS.split(","))


def _statements(script: str) -> list[str]:
    """The statements of ``script``, split where ``sqlite3.complete_statement`` says one ends
    (``executescript`` would commit the open transaction first)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
