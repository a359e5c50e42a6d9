"""``SqliteSessionBackend``: every ``SessionBackend`` method for real, in one SQLite file.

The store mirrors ZeroClaw's SQLite backend (WAL mode, a sessions table with the metadata, an FTS5
index over message contents) with turnlog's rules: the same key checks and message encoding as
the JSONL stores (a message row holds the exact line the JSONL store would write, so extra fields
round-trip byte for byte), the same exceptions, the same answers (search included), and bad input
changes nothing.

The other modules of this package: ``schema`` (the tables, rows and time text), ``connection``
(a connection per thread, write transactions, opening) and ``search`` (the search index and
queries).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ..._impl import ChatMessage
from ..._rules import (
    MAX_LIMIT,
    Durability,
    Match,
    SessionTimes,
    check_amount,
    check_durability,
    check_limit,
    check_query,
    check_state,
    check_text,
    earlier,
    search_words,
)
from ..._types import SessionMetadata, SessionQuery, SessionState
from ...backend import MessageLike, SessionBackend
from ..workspace import PathLike, sessions_dir
from .connection import _Database
from .schema import (
    DB_NAME,
    Clock,
    _check_key,
    _encode,
    _message,
    _metadata,
    _select_metadata,
    _sql_limit,
    _text_of,
    _time_of,
    _utc_now,
    fts5_available,
)
from .search import _index_batch, _rebuild, _reindex, _search, _unindex

__all__ = ["SqliteSessionBackend"]


class SqliteSessionBackend(_Database, SessionBackend):
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
        durability = check_durability(durability)
        timeout = check_amount(timeout, "timeout")
        if fts is not None and not isinstance(fts, bool):
            raise TypeError(f"fts must be a bool or None, not {type(fts).__name__}")
        if fts and not fts5_available():
            raise RuntimeError("fts=True, but this SQLite has no FTS5 with the trigram tokenizer")
        if not callable(clock):
            raise TypeError(f"clock must be callable, not {type(clock).__name__}")
        self._clock = clock
        use_fts = fts is not False and fts5_available()
        self._sessions_dir = sessions_dir(workspace)
        path = os.path.join(self._sessions_dir, DB_NAME)
        super().__init__(path, durability=durability, timeout=timeout, use_fts=use_fts)

    def __enter__(self) -> SqliteSessionBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({os.path.dirname(self._sessions_dir)!r}, "
            f"durability={self._durability!r})"
        )

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
            _index_batch(connection)

    def _delete_rows(self, connection: sqlite3.Connection, where: str, args: Sequence[Any]) -> int:
        """Delete the message rows ``WHERE <where>``, and their index entries; returns how many."""
        if self._indexed:
            _unindex(connection, where, args)
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

    def _newest(
        self, connection: sqlite3.Connection, session_key: str
    ) -> tuple[int, ChatMessage] | None:
        """The id and message of the session's newest valid row (a damaged row, which only
        another tool can write, is stepped over as the JSONL stores step over a corrupt line)."""
        rows = connection.execute(
            "SELECT id, line FROM messages WHERE session_key = ? ORDER BY id DESC", (session_key,)
        )
        for row_id, line in rows:
            message = _message(line)
            if message is not None:
                return int(row_id), message
        return None

    def _session_row(self, session_key: str, query: str) -> Any:
        """The row ``query`` (with the key as its one parameter) reads; ``None`` if none."""
        _check_key(session_key)
        return self._conn().execute(query, (session_key,)).fetchone()

    def _list_metadata(self, where: str = "", args: Sequence[Any] = ()) -> list[SessionMetadata]:
        """The metadata of the sessions ``s`` ``WHERE <where>``, the most recently active first."""
        return [_metadata(row) for row in self._conn().execute(_select_metadata(where), args)]

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
            every = self._conn().execute(select + " ORDER BY id", (session_key,))
            return [(m, _time_of(t)) for line, t in every if (m := _message(line)) is not None]
        # Newest first through the (session_key, id) index: `limit` rows, read again further back
        # (in one snapshot each time) while damaged rows among them leave fewer valid ones.
        query = select + " ORDER BY id DESC LIMIT ?"
        window = limit
        while True:
            rows = self._conn().execute(query, (session_key, _sql_limit(window))).fetchall()
            newest = [(m, _time_of(t)) for line, t in rows if (m := _message(line)) is not None]
            if len(newest) >= limit or len(rows) < window:
                newest = newest[:limit]
                newest.reverse()
                return newest
            window = min(window * 4 + 8, MAX_LIMIT)

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
        """Remove the newest valid message (damaged rows stay). ``True`` if there was one.

        Concurrent calls from any threads or processes each remove a different message.
        """
        return self.pop_last(session_key) is not None

    def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it, in one transaction; ``None`` when
        there is none. Concurrent calls each get a different message."""
        _check_key(session_key)
        now = self._now()
        with self._write() as connection:
            newest = self._newest(connection, session_key)
            if newest is None:
                return None
            self._delete_rows(connection, "id = ?", (newest[0],))
            self._activity(connection, session_key, now)
            return newest[1]

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message in place (its time becomes now). ``False`` if none.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
        """
        _check_key(session_key)
        line = _encode(message)
        now = self._now()
        with self._write() as connection:
            newest = self._newest(connection, session_key)
            if newest is None:
                return False
            last = newest[0]
            if self._indexed:
                _reindex(connection, last, line)
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

    def _set_times(self, session_key: str, times: SessionTimes) -> bool:
        _check_key(session_key)
        created, active, started = (None if when is None else _text_of(when) for when in times)
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
        return self._session_row(session_key, "SELECT 1 FROM sessions WHERE key = ?") is not None

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Everything known about the session, with its true message count; ``None`` if none."""
        row = self._session_row(session_key, _select_metadata("s.key = ?", order=False))
        return None if row is None else _metadata(row)

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first (then by key)."""
        return self._list_metadata()

    def cleanup_stale(self, ttl_hours: float) -> int:
        """Delete sessions (messages and metadata together, in one transaction) whose last
        activity is more than ``ttl_hours`` ago, whatever their state. Returns how many."""
        cutoff = self._cutoff(check_amount(ttl_hours, "ttl_hours") * 3600)
        with self._write() as connection:
            stale = connection.execute(
                "SELECT key FROM sessions WHERE last_activity < ?", (cutoff,)
            ).fetchall()
            for (key,) in stale:
                connection.execute("DELETE FROM sessions WHERE key = ?", (key,))
                self._delete_rows(connection, "session_key = ?", (key,))
            return len(stale)

    def _cutoff(self, seconds: float) -> str:
        """The stored time ``seconds`` before now (the oldest time when that is before year 1)."""
        return _text_of(earlier(self._clock(), seconds))

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
        row = self._session_row(session_key, f"SELECT {column} FROM sessions WHERE key = ?")
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

    def _set_context(self, session_key: str, fields: dict[str, str]) -> None:
        _check_key(session_key)
        self._set_columns(session_key, dict(fields))

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
        check_state(state)
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
        query = "SELECT state, turn_id, turn_started_at FROM sessions WHERE key = ?"
        row = self._session_row(session_key, query)
        if row is None:
            return None
        return SessionState(state=row[0], turn_id=row[1], turn_started_at=_time_of(row[2]))

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        return self._list_metadata("s.state = 'running'")

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running for ``threshold_secs`` or longer (by ``turn_started_at``), the most
        recently active first."""
        cutoff = self._cutoff(check_amount(threshold_secs, "threshold_secs"))
        return self._list_metadata("s.state = 'running' AND s.turn_started_at <= ?", (cutoff,))

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
        keyword, limit = check_query(query, match)
        words = search_words(keyword)
        connection = self._conn()
        if words:
            rows = _search(connection, words, match, _sql_limit(limit), fts=self.fts_enabled)
        else:
            rows = connection.execute(_select_metadata(limit=True), (_sql_limit(limit),))
        return [_metadata(row) for row in rows]

    def rebuild_search_index(self) -> None:
        """Rebuild the search index from the messages (for a database whose messages were
        changed by other tools: turnlog keeps the index up to date itself)."""
        with self._write() as connection:
            if self._indexed:
                _rebuild(connection)
