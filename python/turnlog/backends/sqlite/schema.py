"""What ``sessions.db`` holds: its tables, what a row means in Python, and the time text.

Layout of ``<workspace>/sessions/sessions.db`` (schema version 1, ``PRAGMA user_version``)::

    sessions(key TEXT PRIMARY KEY, name, agent_alias, channel_id, room_id, sender_id,
             state, turn_id, turn_started_at, created_at, last_activity, message_count)
    messages(id INTEGER PRIMARY KEY AUTOINCREMENT, session_key, line, created_at)
    index messages_by_session(session_key, id)
    message_fts: FTS5, trigram tokens of each message's lower-cased content (contentless)
    search_index(indexed_to): the index holds every message up to this id

A message row holds the exact line the JSONL store would write (so extra fields round-trip byte
for byte), and its key passes the JSONL stores' key check.

Times are stored as fixed-width ISO 8601 text in UTC (``2024-06-01T12:00:00.000000+00:00``), so
they sort and compare as strings and stay readable in the ``sqlite3`` shell.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from ..._impl import ChatMessage
from ..._rules import checked_utc
from ..._types import SessionMetadata
from .. import format as _format

#: The database file, inside ``<workspace>/sessions/``.
DB_NAME = "sessions.db"
#: ``PRAGMA user_version`` of the layout this module writes.
SCHEMA_VERSION = 1
Clock = Callable[[], datetime]

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

# The search index (how it is filled and read: search.py). Search is substring search on
# lower-cased content (the JSONL stores' rule), which word tokenizers cannot answer ("ploy" in
# "deployment"), so the index holds trigrams of the lower-cased content. SQL cannot lower-case
# beyond ASCII, so turnlog fills the index itself (contentless: the text is not stored twice) in
# the transaction that writes the message. detail=none keeps only row ids (about 0.4 times the
# text, against 2.2 with positions): a query asks for every trigram of a word, and the few rows
# that have them all in another order are dropped by the exact check.
_FTS_SCHEMA = (
    "CREATE VIRTUAL TABLE message_fts USING fts5 ("
    "content, content = '', detail = none, tokenize = 'trigram case_sensitive 1')",
    "CREATE TABLE search_index (one INTEGER PRIMARY KEY CHECK (one = 1), "
    "indexed_to INTEGER NOT NULL)",
    "INSERT INTO search_index (one, indexed_to) VALUES (1, 0)",
)

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


# --- times --------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _text_of(when: datetime) -> str:
    """``when`` as the fixed-width UTC text the database stores."""
    return checked_utc(when, "a time").isoformat(timespec="microseconds")


def _time_of(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --- message rows -------------------------------------------------------------------------------


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


# --- session rows -------------------------------------------------------------------------------

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


def _select_metadata(where: str = "", *, order: bool = True, limit: bool = False) -> str:
    """The query for the metadata of the sessions ``s`` ``WHERE <where>`` (all of them when
    empty), the most recently active first (then by key) unless not ``order``, at most ``?``
    of them with ``limit``: ``_metadata`` reads its rows."""
    sql = f"SELECT {_METADATA} FROM sessions AS s"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += " ORDER BY s.last_activity DESC, s.key"
    return sql + " LIMIT ?" if limit else sql


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


def _sql_limit(limit: int | None) -> int:
    """A checked ``limit`` as SQL's ``LIMIT`` takes it: ``-1`` for none."""
    return -1 if limit is None else limit
