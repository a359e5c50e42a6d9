"""Keyword search in ``sessions.db``: the search rule as SQL functions, the FTS5 trigram index
(kept up to date in the transactions that write messages) and the queries that use it or scan.

Indexing one message per transaction costs FTS5 a new segment each time (about 3 times the rest
of an append), so appends leave the newest messages unindexed and the append that brings the
backlog to _INDEX_BATCH indexes it in one go. Search reads the unindexed tail (ids above
search_index.indexed_to, at most a batch) directly. AUTOINCREMENT keeps ids from being reused,
so "every id up to indexed_to is indexed" stays true across deletes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..._rules import Match, lower
from .schema import _select_metadata

#: The content of a message row, in SQL (the CASE spares a hand-damaged row a JSON error).
#: SQLite's JSON functions end a string at an escaped NUL (3.40 does), so a line with a
#: ``\u0000`` anywhere is parsed in Python instead (a rare row: the common case stays in C).
_CONTENT = (
    "CASE WHEN instr(m.line, '\\u0000') THEN turnlog_content(m.line) "
    "WHEN json_valid(m.line) THEN json_extract(m.line, '$.content') END"
)
_INDEX_BATCH = 256
_INDEX_CHUNK = 10_000
# The index is contentless, so FTS5 must be told what it indexed for a row to delete its entry:
# the same lower-cased content, recomputed from the row.
_INDEX_ROW = "INSERT INTO message_fts (rowid, content) VALUES (?, ?)"
_UNINDEX_ROW = "INSERT INTO message_fts (message_fts, rowid, content) VALUES ('delete', ?, ?)"
#: About how many times more checking one candidate costs (JSON, lower-casing, in Python) than
#: stepping over one message in SQLite (measured: 10-20 us against 0.1 us): a search whose index
#: candidates number more than (messages / this) walks each session to its first match instead.
_CHECK_COST = 100


# --- the search rule, for SQL (turnlog_matches, turnlog_content) and the index ------------------


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
    return None if content is None else lower(content)


def _matches(content: object, words: str, any_word: int) -> bool:
    """The search rule (the JSONL stores'): the lower-cased content holds every word (or, with
    ``any_word``, one of them). ``words`` are joined by spaces, which no word holds."""
    if not isinstance(content, str):
        return False
    lowered = lower(content)
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


# --- keeping the index up to date (inside the caller's write transaction) -----------------------


def _indexed_to(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT indexed_to FROM search_index").fetchone()[0])


def _catch_up(connection: sqlite3.Connection, *, at_least: int = 1) -> None:
    """Index the messages appended since the last batch, if there are ``at_least``."""
    indexed_to = _indexed_to(connection)
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
        connection.executemany(_INDEX_ROW, [(row_id, _indexed_text(line)) for row_id, line in rows])
        done = rows[-1][0]
    connection.execute("UPDATE search_index SET indexed_to = ?", (last,))


def _index_batch(connection: sqlite3.Connection) -> None:
    """After an append: index the backlog once it makes a batch."""
    _catch_up(connection, at_least=_INDEX_BATCH)


def _unindex(connection: sqlite3.Connection, where: str, args: Sequence[Any]) -> None:
    """Remove the index entries of the message rows ``WHERE <where>`` (before they are
    deleted)."""
    rows = connection.execute(
        f"SELECT id, line FROM messages WHERE ({where}) AND id <= ?",
        (*args, _indexed_to(connection)),
    )
    connection.executemany(_UNINDEX_ROW, [(row_id, _indexed_text(line)) for row_id, line in rows])


def _reindex(connection: sqlite3.Connection, row_id: int, line: str) -> None:
    """Before message ``row_id`` becomes ``line``: replace its index entry, if it has one."""
    if row_id <= _indexed_to(connection):
        (old,) = connection.execute("SELECT line FROM messages WHERE id = ?", (row_id,)).fetchone()
        connection.execute(_UNINDEX_ROW, (row_id, _indexed_text(old)))
        connection.execute(_INDEX_ROW, (row_id, _indexed_text(line)))


def _rebuild(connection: sqlite3.Connection) -> None:
    """Empty the index and index every message again."""
    connection.execute("INSERT INTO message_fts (message_fts) VALUES ('delete-all')")
    connection.execute("UPDATE search_index SET indexed_to = 0")
    _catch_up(connection)


# --- the query ----------------------------------------------------------------------------------


def _search(
    connection: sqlite3.Connection, words: list[str], match: Match, limit: int, *, fts: bool
) -> sqlite3.Cursor:
    """The metadata rows (``schema._metadata``) of the sessions with a message matching
    ``words`` (not empty), as ``SqliteSessionBackend.search`` describes: through the index when
    ``fts`` and it can, else by a scan. ``limit`` is SQL's (``-1``: none)."""
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
    walk = _select_metadata(
        "EXISTS (SELECT 1 FROM messages AS m WHERE m.session_key = s.key"
        f"{prefilter}{{candidates}} AND {check})",
        limit=True,
    )
    if not (fts and usable):
        return connection.execute(walk.format(candidates=""), (*likes, *check_args, limit))
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
        "SELECT count(*) FROM (SELECT rowid FROM message_fts WHERE message_fts MATCH ? LIMIT ?)",
        (fts_query, few + 1),
    ).fetchone()[0]
    if found <= few:
        # Few candidates: check each of them.
        sql = _select_metadata(
            "s.key IN (SELECT m.session_key FROM messages AS m "
            f"WHERE m.id IN ({candidates}) AND {check})",
            limit=True,
        )
        return connection.execute(sql, (fts_query, *check_args, limit))
    if len(usable_likes) == len(words):
        # A common word that LIKE can prefilter: most sessions match early in the walk, and
        # building the candidate set would cost more than it saves.
        return connection.execute(walk.format(candidates=""), (*likes, *check_args, limit))
    # A common word LIKE cannot prefilter: walk, checking only candidates.
    sql = walk.format(candidates=f" AND +m.id IN ({candidates})")
    return connection.execute(sql, (*likes, fts_query, *check_args, limit))
