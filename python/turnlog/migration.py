"""``turnlog.migrate``: copy sessions between any two ``SessionBackend`` objects, resumably.

>>> from turnlog import SessionStore, migrate
>>> from turnlog import SqliteSessionBackend
>>> report = migrate(SessionStore("./zeroclaw-workspace"), SqliteSessionBackend("./workspace"))

Importing a ZeroClaw workspace is migrating from ``turnlog.SessionStore`` over it: the files are
read as they are, corrupt lines are counted and left behind, and ZeroClaw's files with non-ASCII
names (``telegram_ключ.jsonl``, which no turnlog key maps to) are imported under their file name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ._impl import ChatMessage
from ._types import SessionMetadata, SessionState
from .backend import SessionBackend
from .backends import format as _format
from .backends.jsonl.base import JsonlStoreBase

if TYPE_CHECKING:
    from .backends.sqlite import SqliteSessionBackend

__all__ = ["MigrationConflictError", "MigrationReport", "migrate"]

log = logging.getLogger("turnlog")


@dataclass(frozen=True)
class MigrationReport:
    """What one ``migrate`` run did.

    ``sessions + skipped_sessions`` is the number of sessions the run looked at.

    Attributes:
        sessions: Sessions this run wrote to (messages, metadata or times).
        messages: Messages this run appended to the target.
        skipped_sessions: Sessions this run wrote nothing to: already complete in the target
            (a re-run skips them all), or empty sessions a target without metadata setters
            cannot create (the ``SessionBackend`` defaults).
        corrupt_lines_left_behind: Lines of a JSONL source that are not valid messages (blank
            lines and a torn last line included): not copied. Always 0 for other sources.
        metadata_not_kept: Sessions whose name, alias, context or turn state the target did not
            keep (a backend without metadata, such as the ``SessionBackend`` defaults).
    """

    sessions: int = 0
    messages: int = 0
    skipped_sessions: int = 0
    corrupt_lines_left_behind: int = 0
    metadata_not_kept: int = 0


class MigrationConflictError(ValueError):
    """The target already holds messages for a session that are not a prefix of the source's.

    Attributes:
        key: The session.
        index: The position of the first message that differs (or the source's length, when the
            target holds more messages than the source).
    """

    def __init__(self, key: str, index: int) -> None:
        super().__init__(
            f"session {key!r}: the target's messages are not a prefix of the source's (they "
            f"differ from message {index} on); nothing of this session was written. Pass "
            "overwrite=True to replace the target's messages with the source's"
        )
        self.key = key
        self.index = index


@dataclass
class _Source:
    """One session as read from the source."""

    messages: list[ChatMessage]
    times: list[datetime | None]
    metadata: SessionMetadata | None
    name: str | None
    alias: str | None
    state: SessionState | None
    corrupt: int


def migrate(
    source: SessionBackend,
    target: SessionBackend,
    *,
    keys: Iterable[str] | None = None,
    overwrite: bool = False,
) -> MigrationReport:
    """Copy sessions from ``source`` to ``target``: messages in order (extra fields kept), then
    name, agent alias, routing context and turn state.

    Resumable and idempotent: for each session the target's messages are compared with the
    source's, and only what the target lacks is appended (in one ``append_many``, which every
    turnlog backend writes all-or-nothing), so a run interrupted at any point and run again
    neither duplicates nor loses a message, and a second run writes nothing. Metadata is copied
    where it differs. A target with ``set_session_times`` (every turnlog backend) also
    gets the session's created and last-activity times and its turn's start, so stale and stuck
    sessions stay so; a ``SqliteSessionBackend`` target also gets each message's time (the
    source's, where it has them, else the session's last activity).

    Args:
        source: The backend to read.
        target: The backend to write.
        keys: The sessions to copy (default: every session of the source).
        overwrite: When the target holds messages for a session that are not a prefix of the
            source's, replace them (clear, then copy) instead of raising.

    Raises:
        MigrationConflictError: a session's target messages are not a prefix of its source
            messages and ``overwrite`` is false. Sessions before it are migrated; nothing of
            this one is written.
        KeyError: a key in ``keys`` is not a session of the source (checked before any write).
        TypeError, ValueError: a bad key; or the target refuses a message.
    """
    legacy = source.zeroclaw_files() if isinstance(source, JsonlStoreBase) else {}
    foreign = {**_foreign_files(source), **legacy}
    # A JSONL source lists ZeroClaw's files it has not adopted by their names; they are read
    # as they are, not adopted (the source is only read), unless the key also has a file of
    # its own.
    legacy_paths = set(legacy.values())
    listed = [
        key
        for key in source.list_sessions()
        if key not in foreign or _has_own(source, key, legacy_paths)
    ]
    listed_set = set(listed)
    if keys is None:
        todo = [*listed, *sorted(key for key in foreign if key not in listed_set)]
    else:
        todo = list(dict.fromkeys(keys))
        for key in todo:
            _format.key_to_name(key)
            if key not in foreign and not source.session_exists(key):
                raise KeyError(f"no session {key!r} in the source")
    totals = {"sessions": 0, "messages": 0, "skipped": 0, "corrupt": 0, "lost": 0}
    for key in todo:
        if key in foreign and key in listed_set:
            # Two files claim this key: turnlog's escaped name (read through the store) and a
            # ZeroClaw name; the first is the session, the second is left alone.
            log.warning(
                "turnlog: %s not imported: session %r already has a turnlog file",
                foreign[key],
                key,
            )
        if key in foreign and key not in listed_set:
            session = _read_foreign(foreign[key])
        else:
            session = _read(source, target, key)
        appended, wrote, lost = _copy(target, key, session, overwrite=overwrite)
        totals["messages"] += appended
        totals["sessions" if wrote else "skipped"] += 1
        totals["corrupt"] += session.corrupt
        totals["lost"] += lost
    return MigrationReport(
        sessions=totals["sessions"],
        messages=totals["messages"],
        skipped_sessions=totals["skipped"],
        corrupt_lines_left_behind=totals["corrupt"],
        metadata_not_kept=totals["lost"],
    )


def _as_sqlite(backend: SessionBackend) -> SqliteSessionBackend | None:
    """``backend`` if it is a ``SqliteSessionBackend`` (which has importer methods).

    Not imported here: a backend object of that class means its module is loaded, and without
    one, migrating (JSONL to JSONL, say) works on a Python built without ``sqlite3``."""
    module = sys.modules.get(f"{__package__}.backends.sqlite")
    cls = getattr(module, "SqliteSessionBackend", None)
    if cls is not None and isinstance(backend, cls):
        return backend  # type: ignore[no-any-return]
    return None


# --- reading ------------------------------------------------------------------------------------


def _count_corrupt(data: bytes) -> int:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # what follows the last newline is no line
    return sum(_format.valid_text(line) is None for line in lines)


def _read(source: SessionBackend, target: SessionBackend, key: str) -> _Source:
    if _as_sqlite(target) is not None:
        pairs = source.load_with_timestamps(key)
        messages = [message for message, _ in pairs]
        times = [when for _, when in pairs]
    else:
        messages = source.load(key)
        times = [None] * len(messages)
    corrupt = 0
    if isinstance(source, JsonlStoreBase):
        try:
            with open(source.transcript_path(key), "rb") as file:
                corrupt = _count_corrupt(file.read())
        except FileNotFoundError:
            corrupt = 0
    return _Source(
        messages=messages,
        times=times,
        metadata=source.get_session_metadata(key),
        name=source.get_session_name(key),
        alias=source.get_session_agent_alias(key),
        state=source.get_session_state(key),
        corrupt=corrupt,
    )


def _has_own(source: SessionBackend, key: str, legacy_paths: set[str]) -> bool:
    """Whether the JSONL ``source`` has the key's own file, other than a legacy ZeroClaw file
    (``legacy_paths``) of that name (checked without adopting or claiming one)."""
    if not isinstance(source, JsonlStoreBase):
        return False
    path = source.transcript_path(key)
    return os.path.lexists(path) and path not in legacy_paths


def _foreign_files(source: SessionBackend) -> dict[str, str]:
    """``{key: path}`` of a JSONL source's ZeroClaw files that no turnlog key names: files
    with non-ASCII letters in their names. The key is the file name, as ZeroClaw listed it."""
    if not isinstance(source, JsonlStoreBase):
        return {}
    found: dict[str, str] = {}
    with os.scandir(source.sessions_dir) as entries:
        for entry in entries:
            if not entry.name.endswith(_format.SUFFIX) or not entry.is_file(follow_symlinks=False):
                continue
            stem = entry.name[: -len(_format.SUFFIX)]
            if _format.name_to_key(stem) is not None or not _format.is_zeroclaw_name(stem):
                continue
            try:
                _format.key_to_name(stem)
            except ValueError:
                # Too long once escaped: no turnlog backend takes this key.
                log.warning("turnlog: %s not imported: its name is too long a key", entry.path)
                continue
            found[stem] = entry.path
    return found


def _read_foreign(path: str) -> _Source:
    with open(path, "rb") as file:
        info = os.fstat(file.fileno())
        data = file.read()
    messages = [m for m in map(_format.parse_line, data.split(b"\n")) if m is not None]
    when = datetime.fromtimestamp(info.st_mtime_ns / 1e9, tz=timezone.utc)
    metadata = SessionMetadata(
        key=os.path.basename(path)[: -len(_format.SUFFIX)],
        created_at=when,
        last_activity=when,
        message_count=len(messages),
    )
    return _Source(
        messages=messages,
        times=[None] * len(messages),
        metadata=metadata,
        name=None,
        alias=None,
        state=None,
        corrupt=_count_corrupt(data),
    )


# --- writing ------------------------------------------------------------------------------------


def _prefix_length(existing: Sequence[ChatMessage], wanted: Sequence[ChatMessage]) -> int | None:
    """``len(existing)`` if it is a prefix of ``wanted``, else ``None``."""
    if len(existing) > len(wanted):
        return None
    for index, message in enumerate(existing):
        if message != wanted[index]:
            return None
    return len(existing)


def _first_difference(existing: Sequence[ChatMessage], wanted: Sequence[ChatMessage]) -> int:
    for index, (have, want) in enumerate(zip(existing, wanted, strict=False)):
        if have != want:
            return index
    return min(len(existing), len(wanted))


def _turn(state: SessionState | None) -> tuple[str, str | None] | None:
    """What of a state is copied; an idle session with no turn is every backend's default."""
    if state is None or (state.state == "idle" and state.turn_id is None):
        return None
    return state.state, state.turn_id


def _copy(
    target: SessionBackend, key: str, session: _Source, *, overwrite: bool
) -> tuple[int, bool, bool]:
    """Bring the target's session up to ``session``; ``(messages appended, wrote, lost)``."""
    wrote = lost = False
    existing = target.load(key)
    done = _prefix_length(existing, session.messages)
    if done is None:
        if not overwrite:
            raise MigrationConflictError(key, _first_difference(existing, session.messages))
        target.clear_messages(key)
        done, wrote = 0, True
    todo = session.messages[done:]
    sqlite = _as_sqlite(target)
    if todo:
        if sqlite is not None:
            fallback = session.metadata.last_activity if session.metadata else None
            times = [fallback if when is None else when for when in session.times[done:]]
            sqlite.append_many(key, todo, timestamps=times)
        else:
            target.append_many(key, todo)
        wrote = True
    elif not target.session_exists(key):
        # An empty session: setting no context creates it on the turnlog backends (a setter
        # creates a missing session); a backend where it does not is counted as skipped.
        if sqlite is not None:
            sqlite.create_session(key)
        else:
            target.set_session_context(key)
        wrote = target.session_exists(key)

    # Metadata where it differs; a read-back tells a write from a target that drops it.
    if session.name is not None and target.get_session_name(key) != session.name:
        target.set_session_name(key, session.name)
        changed = target.get_session_name(key) == session.name
        wrote, lost = wrote or changed, lost or not changed
    if session.alias is not None and target.get_session_agent_alias(key) != session.alias:
        target.set_session_agent_alias(key, session.alias)
        changed = target.get_session_agent_alias(key) == session.alias
        wrote, lost = wrote or changed, lost or not changed
    if session.metadata is not None:
        wanted = _context(session.metadata)
        if any(value is not None for value in wanted) and not _has_context(target, key, wanted):
            channel_id, room_id, sender_id = wanted
            target.set_session_context(
                key, channel_id=channel_id, room_id=room_id, sender_id=sender_id
            )
            changed = _has_context(target, key, wanted)
            wrote, lost = wrote or changed, lost or not changed
    if session.state is not None and _turn(target.get_session_state(key)) != _turn(session.state):
        target.set_session_state(key, session.state.state, session.state.turn_id)
        changed = _turn(target.get_session_state(key)) == _turn(session.state)
        wrote, lost = wrote or changed, lost or not changed

    # Times last: the writes above count as activity in the target.
    if session.metadata is not None:
        wrote = _copy_times(target, key, session) or wrote
    return len(todo), wrote, lost


def _context(metadata: SessionMetadata) -> tuple[str | None, str | None, str | None]:
    return metadata.channel_id, metadata.room_id, metadata.sender_id


def _has_context(
    target: SessionBackend, key: str, wanted: tuple[str | None, str | None, str | None]
) -> bool:
    metadata = target.get_session_metadata(key)
    have = _context(metadata) if metadata is not None else (None, None, None)
    return all(want is None or want == got for want, got in zip(wanted, have, strict=True))


def _copy_times(target: SessionBackend, key: str, session: _Source) -> bool:
    """Give the target's session the source's times where they differ; ``True`` if it did."""
    assert session.metadata is not None
    have = target.get_session_metadata(key)
    if have is None:
        return False
    created = session.metadata.created_at
    active = session.metadata.last_activity
    started = session.state.turn_started_at if session.state is not None else None
    state = target.get_session_state(key)
    have_started = state.turn_started_at if state is not None else None
    if (
        (created is None or created == have.created_at)
        and (active is None or active == have.last_activity)
        and (started is None or started == have_started)
    ):
        return False
    return target.set_session_times(
        key, created_at=created, last_activity=active, turn_started_at=started
    )
