"""``SqliteSessionBackend``: every ``SessionBackend`` method for real, in one SQLite file.

The store mirrors ZeroClaw's SQLite backend (WAL mode, a sessions table with the metadata, an FTS5
index over message contents) with turnlog's rules: the same key checks and message encoding as
the JSONL stores (a message row holds the exact line the JSONL store would write, so extra fields
round-trip byte for byte), the same exceptions, the same answers (search included), and bad input
changes nothing.

Layout of ``<workspace>/sessions/sessions.db`` (schema version 1, ``PRAGMA user_version``)::

    sessions(key TEXT PRIMARY KEY, name, agent_alias, channel_id, room_id, sender_id,
             state, turn_id, turn_started_at, created_at, last_activity, message_count)
    messages(id INTEGER PRIMARY KEY AUTOINCREMENT, session_key, line, created_at)
    index messages_by_session(session_key, id)
    message_fts: FTS5, trigram tokens of each message's lower-cased content (contentless)
    search_index(indexed_to): the index holds every message up to this id

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
import json
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from . import _format, _meta
from ._checks import Durability, check_amount, check_durability, check_limit, check_text
from ._impl import ChatMessage
from ._jsonl import PathLike, sessions_dir
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
    "key",
    "name",
    "created_at",
    "last_activity",
    "message_count",
    "agent_alias",
    "channel_id",
    "room_id",
    "sender_id",
)
_METADATA = ", ".join(f"s.{column}" for column in _METADATA_COLUMNS)
#: The search keyword's word separators: Unicode white space, as the JSONL stores split it.
_SPLIT = re.compile(f"[{re.escape(_format.WHITESPACE)}]+")
#: The content of a message row, in SQL (the CASE spares a hand-damaged row a JSON error).
#: SQLite's JSON functions end a string at an escaped NUL (3.40 does), so a line with a
#: ``\u0000`` anywhere is parsed in Python instead (a rare row: the common case stays in C).
_CONTENT = (
    "CASE WHEN instr(m.line, '\\u0000') THEN turnlog_content(m.line) "
    "WHEN json_valid(m.line) THEN json_extract(m.line, '$.content') END"
)

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
CREATE TRIGGER IF NOT EXISTS messages_count_insert AFTER INSERT ON messages BEGIN
    UPDATE sessions SET message_count = message_count + 1 WHERE key = new.session_key;
END;
CREATE TRIGGER IF NOT EXISTS messages_count_delete AFTER DELETE ON messages BEGIN
    UPDATE sessions SET message_count = message_count - 1 WHERE key = old.session_key;
END;
"""

# Search is substring search on lower-cased content (the JSONL stores' rule), which word
# tokenizers cannot answer ("ploy" in "deployment"), so the index holds trigrams of the
# lower-cased content. SQL cannot lower-case beyond ASCII, so turnlog fills the index itself
# (contentless: the text is not stored twice) in the transaction that writes the message.
# detail=none keeps only row ids (about 0.4 times the text, against 2.2 with positions): a
# query asks for every trigram of a word, and the few rows that have them all in another order
# are dropped by the exact check.
#
# Indexing one message per transaction costs FTS5 a new segment each time (about 3 times the
# rest of an append), so appends leave the newest messages unindexed and the append that brings
# the backlog to _INDEX_BATCH indexes it in one go. Search reads the unindexed tail (ids above
# search_index.indexed_to, at most a batch) directly. AUTOINCREMENT keeps ids from being reused,
# so "every id up to indexed_to is indexed" stays true across deletes.
_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE message_fts USING fts5 ("
    "content, content = '', detail = none, tokenize = 'trigram case_sensitive 1')",
    "CREATE TABLE search_index (one INTEGER PRIMARY KEY CHECK (one = 1), "
    "indexed_to INTEGER NOT NULL)",
    "INSERT INTO search_index (one, indexed_to) VALUES (1, 0)",
)
_INDEX_BATCH = 256
_INDEX_CHUNK = 10_000
#: About how many times more checking one candidate costs (JSON, lower-casing, in Python) than
#: stepping over one message in SQLite (measured: 10-20 us against 0.1 us): a search whose index
#: candidates number more than (messages / this) walks each session to its first match instead.
_CHECK_COST = 100

_fts5: bool | None = None


def fts5_available() -> bool:
    """Whether this process's SQLite has FTS5 with the trigram tokenizer (SQLite 3.34+)."""
    global _fts5
    if _fts5 is None:
        probe = sqlite3.connect(":memory:")
        try:
            probe.execute("CREATE VIRTUAL TABLE temp.probe USING fts5 (x, tokenize = 'trigram')")
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
    return _meta.checked_utc(when, "a time").isoformat(timespec="microseconds")


def _time_of(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _check_key(session_key: object) -> None:
    # The JSONL stores' rule, so a key is accepted (and refused, with the same exception) by
    # every backend alike and a session can move between them.
    _format.key_to_name(session_key)


def _encode(message: object) -> str:
    """The JSONL store's line for ``message``, without the newline (refused as the JSONL store
    refuses it)."""
    return _format.encode_message(message)[:-1].decode("utf-8")


def _message(line: object) -> ChatMessage | None:
    # Rows are written by _encode, so this only refuses a row damaged by hand (skipped, as the
    # JSONL stores skip a corrupt line).
    if not isinstance(line, str):
        return None
    try:
        return _format.parse_line(line.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _content(line: str) -> str | None:
    """A row's content, parsed in Python (``None``: a damaged row, or no string content)."""
    try:
        # Numbers are not needed: parse_int=len spares long integers the conversion that
        # sys.set_int_max_str_digits may refuse (the same row must give the same text always).
        content = json.loads(line, parse_int=len).get("content")
    except (ValueError, AttributeError, RecursionError):
        return None
    return content if isinstance(content, str) else None


def _indexed_text(line: str) -> str | None:
    """What the search index holds for a row: its lower-cased content (``None``: nothing)."""
    content = _content(line)
    return None if content is None else content.lower()


def _sql_limit(limit: int | None) -> int:
    """A checked ``limit`` as SQL's ``LIMIT`` takes it: ``-1`` for none."""
    return -1 if limit is None else limit


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


def search_words(keyword: str) -> list[str]:
    """The lower-cased words of a search keyword, split on Unicode white space (as the JSONL
    stores split it), without repeats."""
    return list(dict.fromkeys(word.lower() for word in _SPLIT.split(keyword) if word))


def _matches(content: object, words: str, any_word: int) -> bool:
    """The search rule (the JSONL stores'): the lower-cased content holds every word (or, with
    ``any_word``, one of them). ``words`` are joined by spaces, which no word holds."""
    if not isinstance(content, str):
        return False
    lowered = content.lower()
    hits = (word in lowered for word in words.split(" "))
    return any(hits) if any_word else all(hits)


def _trigrams(word: str) -> str:
    """An FTS5 query for rows whose indexed text holds every trigram of ``word`` (3+ chars)."""
    grams = dict.fromkeys(word[i : i + 3] for i in range(len(word) - 2))
    return "(" + " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams) + ")"


def _likes(word: str) -> list[str] | None:
    """LIKE patterns such that every line whose content holds ``word`` (lower-cased) matches
    one of them; ``None`` when LIKE cannot prefilter for ``word``.

    LIKE ignores case for ASCII letters only, and sees the JSON line: a word is usable if it is
    ASCII without what JSON escapes (``"``, ``\\``, control characters). Two other characters
    lower-case to ASCII: KELVIN SIGN (U+212A) to ``k``, and ``İ`` (U+0130) to ``i`` followed by
    a combining dot (so only a word's last ``i`` can come from it): those letters get both
    spellings (or ``_``, any one character, past a few of them).
    """
    if not word.isascii() or any(char in '"\\' or char < " " for char in word):
        return None
    base = word.replace("%", "\\%").replace("_", "\\_")
    spots = [i for i, char in enumerate(base) if char == "k"]
    if base.endswith("i"):
        spots.append(len(base) - 1)
    if len(spots) > 3:
        base = "".join("_" if i in spots else char for i, char in enumerate(base))
        spots = []
    patterns = [base]
    for spot in spots:
        other = "\u212a" if base[spot] == "k" else "\u0130"
        patterns += [p[:spot] + other + p[spot + 1 :] for p in patterns]
    return [f"%{pattern}%" for pattern in patterns]


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


class SqliteSessionBackend(SessionBackend):
    """Chat sessions in ``<workspace>/sessions/sessions.db`` (SQLite, WAL mode).

    Every ``SessionBackend`` method is implemented, and answers as the JSONL stores do: messages,
    true counts, per-message times, names, agent aliases, routing context, turn state, stuck
    sessions, stale-session cleanup and keyword search (an FTS5 index, or a scan without FTS5).

    Setting a name, alias, context or state on a session that does not exist creates it, with no
    messages (as ZeroClaw's SQLite backend and turnlog's JSONL stores do); ``clear_messages``,
    ``remove_last`` and an empty ``append_many`` never create one. ``last_activity`` is the last
    change of the session's messages, as the JSONL transcript's modification time is.

    Args:
        workspace: The workspace folder; the database lives in ``<workspace>/sessions/``, which
            is created (owner-only) if needed. The database file is created owner-only too.
        durability: ``"process"`` (default): a committed write survives a crash of the process
            (``synchronous=NORMAL`` in WAL mode). ``"power"``: it also survives power loss
            (``synchronous=FULL``: the WAL is fsynced at every commit).
        timeout: Seconds to wait for another writer's lock before raising
            ``sqlite3.OperationalError`` ("database is locked").
        fts: ``None`` (default): build and use the search index when SQLite has FTS5 (with the
            trigram tokenizer, SQLite 3.34+). ``False``: search scans (LIKE prefilter, exact
            check) and no index is created; one that exists is still kept up to date. ``True``:
            require the index.
        clock: Returns the current time, timezone-aware; ``datetime.now(timezone.utc)`` by
            default. Tests inject their own to control idle and stuck times.

    Raises:
        NotADirectoryError: ``workspace`` (or its ``sessions``) exists and is not a folder.
        RuntimeError: ``fts=True`` without FTS5; the database was written by a newer turnlog;
            or it has a search index but this SQLite has no FTS5 to keep it up to date.
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
        self._timeout = check_amount(timeout, "timeout")
        if fts is not None and not isinstance(fts, bool):
            raise TypeError(f"fts must be a bool or None, not {type(fts).__name__}")
        if fts and not fts5_available():
            raise RuntimeError("fts=True, but this SQLite has no FTS5 with the trigram tokenizer")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._clock = clock
        self._use_fts = fts is not False and fts5_available()
        self._sessions_dir = sessions_dir(workspace)
        self._path = os.path.join(self._sessions_dir, DB_NAME)
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
                self._catch_up(connection)

    def _indexed_to(self, connection: sqlite3.Connection) -> int:
        return int(connection.execute("SELECT indexed_to FROM search_index").fetchone()[0])

    def _catch_up(self, connection: sqlite3.Connection, *, at_least: int = 1) -> None:
        """Index the messages appended since the last batch, if there are ``at_least``."""
        indexed_to = self._indexed_to(connection)
        last = connection.execute("SELECT max(id) FROM messages").fetchone()[0]
        if last is None or last - indexed_to < at_least:
            return
        done = indexed_to
        while done < last:  # in chunks: indexing a whole database must not hold it in memory
            rows = connection.execute(
                "SELECT id, line FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (done, last, _INDEX_CHUNK),
            ).fetchall()
            if not rows:
                break
            connection.executemany(
                "INSERT INTO message_fts (rowid, content) VALUES (?, ?)",
                [(row_id, _indexed_text(line)) for row_id, line in rows],
            )
            done = rows[-1][0]
        connection.execute("UPDATE search_index SET indexed_to = ?", (last,))

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
        """Whether ``search`` uses the FTS5 index (``False``: it scans)."""
        self._check_schema(self._conn())
        return self._use_fts and self._indexed

    def _now(self) -> str:
        return _text_of(self._clock())

    # --- rows -----------------------------------------------------------------------------------

    def _insert(
        self, connection: sqlite3.Connection, session_key: str, rows: Sequence[tuple[str, str]]
    ) -> None:
        """Insert ``(line, created_at)`` rows; index the backlog once it makes a batch."""
        connection.executemany(
            "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
            [(session_key, line, created_at) for line, created_at in rows],
        )
        if self._indexed:
            self._catch_up(connection, at_least=_INDEX_BATCH)

    def _delete_rows(self, connection: sqlite3.Connection, where: str, args: Sequence[Any]) -> int:
        """Delete the message rows ``WHERE <where>``, and their index entries; returns how many.

        The index is contentless, so FTS5 must be told what it indexed for each row: the same
        lower-cased content, recomputed from the row."""
        if self._indexed:
            rows = connection.execute(
                f"SELECT id, line FROM messages WHERE ({where}) AND id <= ?",
                (*args, self._indexed_to(connection)),
            )
            connection.executemany(
                "INSERT INTO message_fts (message_fts, rowid, content) VALUES ('delete', ?, ?)",
                [(row_id, _indexed_text(line)) for row_id, line in rows],
            )
        return connection.execute(f"DELETE FROM messages WHERE {where}", args).rowcount

    def _touch(self, connection: sqlite3.Connection, session_key: str, now: str) -> None:
        """Create the session if needed and record activity on its messages."""
        connection.execute(
            "INSERT INTO sessions (key, created_at, last_activity) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET last_activity = excluded.last_activity",
            (session_key, now, now),
        )

    def _activity(self, connection: sqlite3.Connection, session_key: str, now: str) -> None:
        connection.execute(
            "UPDATE sessions SET last_activity = ? WHERE key = ?", (now, session_key)
        )

    def _ensure(self, connection: sqlite3.Connection, session_key: str, now: str) -> bool:
        """Create the session if needed (leaving an existing one alone); ``True`` if created."""
        cursor = connection.execute(
            "INSERT INTO sessions (key, created_at, last_activity) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO NOTHING",
            (session_key, now, now),
        )
        return cursor.rowcount > 0

    def _last_id(self, connection: sqlite3.Connection, session_key: str) -> int | None:
        row = connection.execute(
            "SELECT id FROM messages WHERE session_key = ? ORDER BY id DESC LIMIT 1",
            (session_key,),
        ).fetchone()
        return None if row is None else int(row[0])

    # --- messages -------------------------------------------------------------------------------

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the newest ``limit`` when given.

        ``limit=N`` reads N rows (newest first through the ``(session_key, id)`` index), not the
        whole session. A missing session loads as ``[]``.

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
        limit = check_limit(limit)
        if limit == 0:
            return []
        columns = "line, created_at" if with_times else "line, NULL"
        select = f"SELECT {columns} FROM messages WHERE session_key = ?"
        if limit is None:
            found = self._conn().execute(select + " ORDER BY id", (session_key,)).fetchall()
        else:
            # Newest first through the (session_key, id) index: reads `limit` rows, no more.
            query = select + " ORDER BY id DESC LIMIT ?"
            found = self._conn().execute(query, (session_key, _sql_limit(limit))).fetchall()
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
        line = _encode(message)
        now = self._now()
        with self._write() as connection:
            self._touch(connection, session_key, now)
            self._insert(connection, session_key, [(line, now)])

    def append_many(
        self,
        session_key: str,
        messages: Iterable[MessageLike],
        *,
        timestamps: Sequence[datetime | None] | None = None,
    ) -> None:
        """Add ``messages`` in order in one transaction: all of them, or none on error.

        Args:
            session_key: The session; created if needed (not for an empty ``messages``).
            messages: ``ChatMessage`` objects or mappings.
            timestamps: For importers: when each message was stored (``None`` entries, or no
                sequence at all: now). As long as ``messages``. The session's last activity
                becomes now all the same.

        Raises:
            TypeError, ValueError: a bad key, message or timestamp; nothing is written.
        """
        _check_key(session_key)
        encoded = [_encode(message) for message in messages]
        now = self._now()
        if timestamps is None:
            times = [now] * len(encoded)
        else:
            if len(timestamps) != len(encoded):
                raise ValueError(
                    f"timestamps has {len(timestamps)} entries for {len(encoded)} messages"
                )
            times = [now if when is None else _text_of(when) for when in timestamps]
        if not encoded:
            return
        with self._write() as connection:
            self._touch(connection, session_key, now)
            self._insert(connection, session_key, list(zip(encoded, times, strict=True)))

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
            self._delete_rows(connection, "id = ?", (last,))
            self._activity(connection, session_key, now)
            return True

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest message in place (its time becomes now). ``False`` if none.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
        """
        _check_key(session_key)
        line = _encode(message)
        now = self._now()
        with self._write() as connection:
            last = self._last_id(connection, session_key)
            if last is None:
                return False
            if self._indexed and last <= self._indexed_to(connection):
                (old,) = connection.execute(
                    "SELECT line FROM messages WHERE id = ?", (last,)
                ).fetchone()
                connection.execute(
                    "INSERT INTO message_fts (message_fts, rowid, content) VALUES ('delete', ?, ?)",
                    (last, _indexed_text(old)),
                )
                connection.execute(
                    "INSERT INTO message_fts (rowid, content) VALUES (?, ?)",
                    (last, _indexed_text(line)),
                )
            connection.execute(
                "UPDATE messages SET line = ?, created_at = ? WHERE id = ?", (line, now, last)
            )
            self._activity(connection, session_key, now)
            return True

    def compact(self, session_key: str) -> None:
        """Delete the session's rows that do not hold a valid message.

        turnlog writes only valid rows, so this finds something only in a database edited by
        other means. It does not ``VACUUM`` (that would rewrite the whole file).
        """
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            rows = connection.execute(
                "SELECT id, line FROM messages WHERE session_key = ?", (session_key,)
            ).fetchall()
            damaged = [row_id for row_id, line in rows if _message(line) is None]
            for row_id in damaged:
                self._delete_rows(connection, "id = ?", (row_id,))
            if damaged:
                self._activity(connection, session_key, now)

    def clear_messages(self, session_key: str) -> int:
        """Remove every message; the session and its metadata stay. Returns how many it had."""
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            removed = self._delete_rows(connection, "session_key = ?", (session_key,))
            if removed:
                self._activity(connection, session_key, now)
            return removed

    def delete_session(self, session_key: str) -> bool:
        """Delete the session, its messages and its metadata. ``True`` if it existed."""
        _check_key(session_key)
        with self._write() as connection:
            # The session row first: the count trigger then has no row to update per message.
            existed = connection.execute(
                "DELETE FROM sessions WHERE key = ?", (session_key,)
            ).rowcount
            self._delete_rows(connection, "session_key = ?", (session_key,))
            return existed > 0

    def create_session(self, session_key: str) -> bool:
        """Create an empty session (for importers). ``True`` if it did not exist."""
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            return self._ensure(connection, session_key, now)

    def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """Set an existing session's times (for importers: ``migrate`` keeps the source's).

        ``None`` leaves a time unchanged; ``turn_started_at`` is set only on a session that is
        running or in error (an idle one has no turn). Returns ``False`` (and changes nothing)
        if the session does not exist.
        """
        _check_key(session_key)
        created, active, started = (
            None if when is None else _text_of(when)
            for when in _meta.checked_times(created_at, last_activity, turn_started_at)
        )
        with self._write() as connection:
            cursor = connection.execute(
                "UPDATE sessions SET created_at = coalesce(?, created_at), "
                "last_activity = coalesce(?, last_activity), "
                "turn_started_at = CASE WHEN state = 'idle' THEN turn_started_at "
                "ELSE coalesce(?, turn_started_at) END "
                "WHERE key = ?",
                (created, active, started, session_key),
            )
            return cursor.rowcount > 0

    # --- sessions -------------------------------------------------------------------------------

    def list_sessions(self) -> list[str]:
        """Every session key, exactly as given, sorted (emptied sessions included)."""
        rows = self._conn().execute("SELECT key FROM sessions")
        return sorted(row[0] for row in rows)

    def session_exists(self, session_key: str) -> bool:
        """Whether the session exists (an emptied session still does)."""
        _check_key(session_key)
        query = "SELECT 1 FROM sessions WHERE key = ?"
        return self._conn().execute(query, (session_key,)).fetchone() is not None

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Everything known about the session, with its true message count; ``None`` if none."""
        _check_key(session_key)
        query = f"SELECT {_METADATA} FROM sessions AS s WHERE s.key = ?"
        row = self._conn().execute(query, (session_key,)).fetchone()
        return None if row is None else _metadata(row)

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first (then by key)."""
        query = f"SELECT {_METADATA} FROM sessions AS s ORDER BY s.last_activity DESC, s.key"
        return [_metadata(row) for row in self._conn().execute(query)]

    def cleanup_stale(self, ttl_hours: float) -> int:
        """Delete sessions (messages and metadata together, in one transaction) whose last
        activity is more than ``ttl_hours`` ago, whatever their state. Returns how many."""
        cutoff = self._cutoff(timedelta(hours=check_amount(ttl_hours, "ttl_hours")))
        with self._write() as connection:
            stale = connection.execute(
                "SELECT key FROM sessions WHERE last_activity < ?", (cutoff,)
            ).fetchall()
            for (key,) in stale:
                connection.execute("DELETE FROM sessions WHERE key = ?", (key,))
                self._delete_rows(connection, "session_key = ?", (key,))
            return len(stale)

    def _cutoff(self, age: timedelta) -> str:
        try:
            return _text_of(self._clock() - age)
        except OverflowError:  # older than year 1: nothing is that old
            return _text_of(datetime.min.replace(tzinfo=timezone.utc))

    # --- names, alias, context ------------------------------------------------------------------

    def _set_columns(self, session_key: str, values: dict[str, str | None]) -> None:
        """Set the given columns (``None``: leave as is), creating the session if needed."""
        now = self._now()
        given = {column: value for column, value in values.items() if value is not None}
        with self._write() as connection:
            self._ensure(connection, session_key, now)
            if given:
                assignments = ", ".join(f"{column} = ?" for column in given)
                connection.execute(
                    f"UPDATE sessions SET {assignments} WHERE key = ?",
                    (*given.values(), session_key),
                )

    def _get_column(self, session_key: str, column: str) -> str | None:
        _check_key(session_key)
        query = f"SELECT {column} FROM sessions WHERE key = ?"
        row = self._conn().execute(query, (session_key,)).fetchone()
        return None if row is None else row[0]

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set the session's human-readable name, creating the session if needed."""
        _check_key(session_key)
        self._set_columns(session_key, {"name": check_text(name, "name")})

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name; ``None`` if unset or no such session."""
        return self._get_column(session_key, "name")

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias, creating the session if needed."""
        _check_key(session_key)
        self._set_columns(session_key, {"agent_alias": check_text(alias, "alias")})

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias; ``None`` if unset or no such session."""
        return self._get_column(session_key, "agent_alias")

    def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context, creating the session if needed; a field given as
        ``None`` keeps its value."""
        _check_key(session_key)
        values = {
            "channel_id": check_text(channel_id, "channel_id", optional=True),
            "room_id": check_text(room_id, "room_id", optional=True),
            "sender_id": check_text(sender_id, "sender_id", optional=True),
        }
        self._set_columns(session_key, values)

    # --- turn state -----------------------------------------------------------------------------

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state, creating the session if needed (as the JSONL stores do).

        - ``"running"``: starts a turn: ``turn_id`` is recorded and ``turn_started_at`` is now.
        - ``"idle"``: clears ``turn_id`` and ``turn_started_at``.
        - ``"error"``: keeps the turn for inspection (``turn_id``, when given, replaces its id).

        Raises:
            ValueError: ``state`` is not ``"idle"``, ``"running"`` or ``"error"``.
            TypeError: ``turn_id`` is not a str or None.
        """
        _check_key(session_key)
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        check_text(turn_id, "turn_id", optional=True)
        now = self._now()
        with self._write() as connection:
            self._ensure(connection, session_key, now)
            if state == "running":
                connection.execute(
                    "UPDATE sessions SET state = 'running', turn_id = ?, turn_started_at = ? "
                    "WHERE key = ?",
                    (turn_id, now, session_key),
                )
            elif state == "idle":
                connection.execute(
                    "UPDATE sessions SET state = 'idle', turn_id = NULL, turn_started_at = NULL "
                    "WHERE key = ?",
                    (session_key,),
                )
            else:
                connection.execute(
                    "UPDATE sessions SET state = 'error', turn_id = coalesce(?, turn_id) "
                    "WHERE key = ?",
                    (turn_id, session_key),
                )

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The session's turn state (``"idle"`` until set); ``None`` if no such session."""
        _check_key(session_key)
        query = "SELECT state, turn_id, turn_started_at FROM sessions WHERE key = ?"
        row = self._conn().execute(query, (session_key,)).fetchone()
        if row is None:
            return None
        return SessionState(state=row[0], turn_id=row[1], turn_started_at=_time_of(row[2]))

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        query = (
            f"SELECT {_METADATA} FROM sessions AS s WHERE s.state = 'running' "
            "ORDER BY s.last_activity DESC, s.key"
        )
        return [_metadata(row) for row in self._conn().execute(query)]

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running for ``threshold_secs`` or longer (by ``turn_started_at``), the most
        recently active first."""
        cutoff = self._cutoff(timedelta(seconds=check_amount(threshold_secs, "threshold_secs")))
        query = (
            f"SELECT {_METADATA} FROM sessions AS s WHERE s.state = 'running' "
            "AND s.turn_started_at <= ? ORDER BY s.last_activity DESC, s.key"
        )
        return [_metadata(row) for row in self._conn().execute(query, (cutoff,))]

    # --- search ---------------------------------------------------------------------------------

    def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message whose content holds the keyword, the most recently active
        first, at most ``query.limit`` of them: the JSONL stores' rule and answers.

        The keyword is split into words on Unicode white space; matching is case-insensitive
        (Unicode lower-casing) and a word matches anywhere in the content ("ploy" finds
        "deployment"), never in the role or extra fields. With ``match="all"`` (default) one
        message must hold every word; with ``match="any"``, one of them. A keyword of ``None`` or
        only white space lists every session.

        With the FTS5 index, the messages holding every trigram of the words of 3+ characters
        are found through it (with the few newest messages it does not hold yet), then checked
        exactly; for a word so common that most messages hold it, each session's messages are
        walked to the first match instead. Otherwise (no FTS5, ``fts=False``, or ``"any"`` with a
        word shorter than 3) the messages are scanned: a LIKE prefilter where it is safe, then
        the exact check.

        Raises:
            TypeError: ``query`` is not a ``SessionQuery``, or its keyword is not a str or None.
            ValueError: a negative limit, or ``match`` is not ``"all"`` or ``"any"``.
        """
        if not isinstance(query, SessionQuery):
            raise TypeError(f"query must be a SessionQuery, not {type(query).__name__}")
        if match not in ("all", "any"):
            raise ValueError(f"match must be 'all' or 'any', not {match!r}")
        keyword = check_text(query.keyword, "query.keyword", optional=True) or ""
        limit = _sql_limit(check_limit(query.limit))
        order = "ORDER BY s.last_activity DESC, s.key LIMIT ?"
        words = search_words(keyword)
        connection = self._conn()
        if not words:
            rows = connection.execute(f"SELECT {_METADATA} FROM sessions AS s {order}", (limit,))
            return [_metadata(row) for row in rows]
        check = f"turnlog_matches({_CONTENT}, ?, ?)"
        check_args = (" ".join(words), match == "any")
        long_words = [word for word in words if len(word) >= 3 and "\x00" not in word]
        usable = long_words if match == "all" else words if long_words == words else []
        # LIKE prefilters where it safely can (see _likes); the check decides.
        alternatives = [_likes(word) for word in words]
        usable_likes = [patterns for patterns in alternatives if patterns is not None]
        if match == "any" and len(usable_likes) < len(words):
            usable_likes = []  # a word without a pattern could match any line
        groups = [" OR ".join(["m.line LIKE ? ESCAPE '\\'"] * len(p)) for p in usable_likes]
        joiner = " AND " if match == "all" else " OR "
        prefilter = f" AND ({joiner.join(f'({g})' for g in groups)})" if groups else ""
        likes = [pattern for patterns in usable_likes for pattern in patterns]
        # Walk each session's messages to its first match (EXISTS stops there); the index, when
        # used, narrows what is checked. "+m.id" keeps the walk on the session index.
        walk = (
            f"SELECT {_METADATA} FROM sessions AS s WHERE EXISTS ("
            f"SELECT 1 FROM messages AS m WHERE m.session_key = s.key{prefilter}{{candidates}} "
            f"AND {check}) {order}"
        )
        if self.fts_enabled and usable:
            fts_query = joiner.join(map(_trigrams, usable))
            # The candidates: what the index finds, and the tail it does not hold yet.
            candidates = (
                "SELECT rowid FROM message_fts WHERE message_fts MATCH ? UNION ALL "
                "SELECT id FROM messages WHERE id > (SELECT indexed_to FROM search_index)"
            )
            messages = connection.execute("SELECT max(id) FROM messages").fetchone()[0] or 0
            few = messages // _CHECK_COST
            # Counted only as far as it matters: FTS5 stops reading once "few" is exceeded.
            found = connection.execute(
                "SELECT count(*) FROM (SELECT rowid FROM message_fts WHERE message_fts MATCH ? "
                "LIMIT ?)",
                (fts_query, few + 1),
            ).fetchone()[0]
            if found <= few:
                # Few candidates: check each of them.
                sql = (
                    f"SELECT {_METADATA} FROM sessions AS s WHERE s.key IN ("
                    f"SELECT m.session_key FROM messages AS m WHERE m.id IN ({candidates}) "
                    f"AND {check}) {order}"
                )
                rows = connection.execute(sql, (fts_query, *check_args, limit))
            elif len(usable_likes) == len(words):
                # A common word that LIKE can prefilter: most sessions match early in the walk,
                # and building the candidate set would cost more than it saves.
                rows = connection.execute(walk.format(candidates=""), (*likes, *check_args, limit))
            else:
                # A common word LIKE cannot prefilter: walk, checking only candidates.
                sql = walk.format(candidates=f" AND +m.id IN ({candidates})")
                rows = connection.execute(sql, (*likes, fts_query, *check_args, limit))
        else:
            rows = connection.execute(walk.format(candidates=""), (*likes, *check_args, limit))
        return [_metadata(row) for row in rows]

    def rebuild_search_index(self) -> None:
        """Rebuild the search index from the messages (for a database whose messages were
        changed by other tools: turnlog keeps the index up to date itself)."""
        with self._write() as connection:
            if self._indexed:
                connection.execute("INSERT INTO message_fts (message_fts) VALUES ('delete-all')")
                connection.execute("UPDATE search_index SET indexed_to = 0")
                self._catch_up(connection)


def _statements(script: str) -> list[str]:
    """The statements of ``script``, split where ``sqlite3.complete_statement`` says one ends
    (``executescript`` would commit the open transaction first)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
