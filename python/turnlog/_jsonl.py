"""What the Rust-backed and the pure JSONL stores share: workspace set-up, argument checks,
how a failed read is reported, and the session metadata kept in sidecars (``_meta.py``)."""

from __future__ import annotations

import abc
import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Union

from . import _files, _format, _meta
from ._checks import Durability, check_amount, check_durability, check_limit, check_text
from ._impl import ChatMessage
from ._types import SessionMetadata, SessionQuery, SessionState
from .backend import MessageLike, SessionBackend

__all__ = ["Durability", "JsonlStoreBase", "sessions_dir"]

log = logging.getLogger("turnlog")

PathLike = Union[str, "os.PathLike[str]"]


def sessions_dir(workspace: PathLike) -> str:
    """Create ``<workspace>/sessions/`` (owner-only) if needed and return its absolute path."""
    path = os.fspath(workspace)
    if not isinstance(path, str):
        raise TypeError(
            f"workspace must be a str or os.PathLike[str], not {type(workspace).__name__}"
        )
    if not path:
        raise ValueError("workspace must not be empty")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "workspace is not a directory", path)
    os.makedirs(path, exist_ok=True)
    sessions = os.path.join(os.path.abspath(path), "sessions")
    try:
        os.mkdir(sessions, 0o700)
    except FileExistsError:
        if not os.path.isdir(sessions):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", sessions) from None
    return sessions


def _utc(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)


#: Splits a search keyword into words: Unicode white space, as Rust's ``split_whitespace``.
_WORDS = re.compile(f"[{re.escape(_format.WHITESPACE)}]+")


def search_words(text: str) -> list[str]:
    """The lower-cased words of a search keyword (the Rust search splits and lowers alike)."""
    return [word.lower() for word in _WORDS.split(text) if word]


class JsonlStoreBase(SessionBackend):
    """A JSONL workspace: one ``<workspace>/sessions/<name>.jsonl`` file per session, and a
    metadata sidecar per session in ``<workspace>/.turnlog/meta/``.

    Subclasses provide the transcript operations (``_load``, ``_stat``, ``_append``,
    ``_append_many``, ``_delete``, ``_search`` and the rest of the ``SessionBackend`` methods);
    this class adds everything metadata, identically for both.
    """

    def __init__(self, workspace: PathLike, *, durability: Durability = "process") -> None:
        self._durability = check_durability(durability)
        self._sessions_dir = sessions_dir(workspace)

    @property
    def sessions_dir(self) -> str:
        """The absolute path of the folder that holds the ``.jsonl`` files."""
        return self._sessions_dir

    @property
    def durability(self) -> Durability:
        """``"process"`` or ``"power"``: what an acknowledged write survives."""
        return self._durability

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({os.path.dirname(self._sessions_dir)!r}, "
            f"durability={self._durability!r})"
        )

    def _path(self, session_key: str) -> str:
        """The transcript of ``session_key`` (checks the key)."""
        name = _format.key_to_name(session_key)
        return os.path.join(self._sessions_dir, name + _format.SUFFIX)

    def _meta_path(self, session_key: str) -> str:
        return _meta.meta_path(self._sessions_dir, _format.key_to_name(session_key))

    # --- messages -------------------------------------------------------------------------------

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's valid messages, oldest first; the newest ``limit`` of them when given.

        Corrupt lines are skipped. A missing session loads as ``[]``; so does an unreadable file,
        with a warning on the ``turnlog`` logger.

        Raises:
            TypeError, ValueError: a bad key or limit.
        """
        check_limit(limit)
        try:
            return self._load(session_key, limit)
        except FileNotFoundError:
            return []
        except OSError as error:
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return []

    def append(self, session_key: str, message: MessageLike) -> None:
        """Add ``message`` (a ``ChatMessage`` or a mapping) as one line at the end of the session.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
            OSError: the write failed; the file is left as it was.
        """
        if self._append(session_key, message):
            self._start_meta(session_key)

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add ``messages`` in order with one locked write: all of them, or none on error."""
        if self._append_many(session_key, messages):
            self._start_meta(session_key)

    def delete_session(self, session_key: str) -> bool:
        """Delete the session's transcript and metadata. ``True`` if it existed."""
        # The sidecar goes first: a crash in between leaves a transcript without metadata (a
        # valid session), never metadata that a new session of the same key would inherit.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._meta_path(session_key))
        return self._delete(session_key)

    # --- metadata -------------------------------------------------------------------------------

    def _start_meta(self, session_key: str) -> None:
        """Record when a session the caller just created began (if no one has yet)."""
        meta_path = self._meta_path(session_key)
        with _files.locked(self._path(session_key), create=True):
            if not _meta.read_meta(meta_path):
                meta = {"created_at": _meta.to_text(_meta.now())}
                _meta.write_meta(meta_path, meta, durable=self._durability == "power")

    def _update_meta(self, session_key: str, changes: dict[str, Any]) -> None:
        """Apply ``changes`` to the session's sidecar, creating the session if needed."""
        for value in changes.values():
            if isinstance(value, str) and _format.has_surrogate(value):
                raise ValueError("session metadata must not contain lone surrogates")
        path = self._path(session_key)
        meta_path = self._meta_path(session_key)
        with _files.locked(path, create=True) as held:
            assert held is not None
            fd, created = held
            meta = {} if created else _meta.read_meta(meta_path)
            stamp = _meta.now()
            if "created_at" not in meta:
                # A session from before turnlog kept metadata: its file's time is the best guess.
                first = stamp if created else _utc(os.fstat(fd).st_mtime_ns)
                meta["created_at"] = _meta.to_text(first)
            meta.update(changes)
            _meta.write_meta(meta_path, meta, durable=self._durability == "power")

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Message count, times, name, alias and context of the session; ``None`` if it does
        not exist. An unreadable transcript counts as no session, with a warning."""
        try:
            stat = self._stat(session_key)
        except OSError as error:
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return None
        if stat is None:
            return None
        count, mtime_ns = stat
        meta = _meta.read_meta(self._meta_path(session_key))
        written = _utc(mtime_ns)
        return SessionMetadata(
            key=session_key,
            name=_text(meta, "name"),
            created_at=_meta.from_text(meta.get("created_at")) or written,
            last_activity=written,
            message_count=count,
            agent_alias=_text(meta, "agent_alias"),
            channel_id=_text(meta, "channel_id"),
            room_id=_text(meta, "room_id"),
            sender_id=_text(meta, "sender_id"),
        )

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first."""
        found = [self.get_session_metadata(key) for key in self.list_sessions()]
        return _by_activity([metadata for metadata in found if metadata is not None])

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set the session's human-readable name (creating the session if needed)."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._update_meta(session_key, {"name": name})

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name, or ``None``."""
        return _text(_meta.read_meta(self._meta_path(session_key)), "name")

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias (creating the session if needed)."""
        if not isinstance(alias, str):
            raise TypeError(f"alias must be a str, not {type(alias).__name__}")
        self._update_meta(session_key, {"agent_alias": alias})

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias, or ``None``."""
        return _text(_meta.read_meta(self._meta_path(session_key)), "agent_alias")

    def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context; a field given as ``None`` keeps its value."""
        given = {
            "channel_id": check_text(channel_id, "channel_id", optional=True),
            "room_id": check_text(room_id, "room_id", optional=True),
            "sender_id": check_text(sender_id, "sender_id", optional=True),
        }
        self._update_meta(session_key, {k: v for k, v in given.items() if v is not None})

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state: ``"running"`` (starts a turn, ``turn_id`` identifies it),
        ``"idle"`` (clears the turn) or ``"error"`` (keeps the turn for inspection)."""
        if state not in _meta.STATES:
            raise ValueError(f"state must be one of {', '.join(_meta.STATES)}, not {state!r}")
        check_text(turn_id, "turn_id", optional=True)
        changes: dict[str, Any] = {"state": state}
        if state == "running":
            changes.update(turn_id=turn_id, turn_started_at=_meta.to_text(_meta.now()))
        elif state == "idle":
            changes.update(turn_id=None, turn_started_at=None)
        elif turn_id is not None:
            changes["turn_id"] = turn_id
        self._update_meta(session_key, changes)

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The turn state (``"idle"`` until one is set); ``None`` if the session does not exist."""
        if not self.session_exists(session_key):
            return None
        return _state(_meta.read_meta(self._meta_path(session_key)))

    def _states(self) -> list[tuple[str, SessionState]]:
        """``(key, state)`` of every session that has metadata."""
        folder = _meta.meta_dir(self._sessions_dir)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        states = []
        for name in names:
            key = _format.name_to_key(name[: -len(".json")]) if name.endswith(".json") else None
            if key is not None and self.session_exists(key):
                states.append((key, _state(_meta.read_meta(os.path.join(folder, name)))))
        return states

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        return self._metadata_of(key for key, state in self._states() if state.state == "running")

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running for longer than ``threshold_secs`` (by ``turn_started_at``)."""
        limit = _meta.now() - timedelta(seconds=check_amount(threshold_secs, "threshold_secs"))
        return self._metadata_of(
            key
            for key, state in self._states()
            if state.state == "running"
            and state.turn_started_at is not None
            and state.turn_started_at <= limit
        )

    def cleanup_stale(self, ttl_hours: float) -> int:
        """Delete sessions (transcript and metadata) idle for longer than ``ttl_hours``, by last
        activity (the transcript's last change). Returns how many were deleted."""
        limit = _meta.now() - timedelta(hours=check_amount(ttl_hours, "ttl_hours"))
        removed = 0
        for metadata in self.list_sessions_with_metadata():
            if metadata.last_activity is not None and metadata.last_activity < limit:
                removed += self.delete_session(metadata.key)
        return removed

    def search(
        self, query: SessionQuery, *, match: Literal["all", "any"] = "all"
    ) -> list[SessionMetadata]:
        """Sessions with a message whose content holds the keyword, the most recently active
        first, at most ``query.limit``.

        Case-insensitive. With ``match="all"`` (default) every word of the keyword must occur
        in one message; with ``match="any"``, one of them. No keyword matches every session.
        The search scans the transcripts (no index to keep in sync).
        """
        if not isinstance(query, SessionQuery):
            raise TypeError(f"query must be a SessionQuery, not {type(query).__name__}")
        if match not in ("all", "any"):
            raise ValueError(f"match must be 'all' or 'any', not {match!r}")
        keyword = check_text(query.keyword, "query.keyword", optional=True) or ""
        check_limit(query.limit)
        keys = self._search(self.list_sessions(), keyword, match == "all")
        found = self._metadata_of(keys)
        return found if query.limit is None else found[: query.limit]

    def _metadata_of(self, keys: Iterable[str]) -> list[SessionMetadata]:
        found = [self.get_session_metadata(key) for key in keys]
        return _by_activity([metadata for metadata in found if metadata is not None])

    # --- what each store provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        """Read the session; raises ``OSError`` when the file cannot be read."""

    @abc.abstractmethod
    def _stat(self, session_key: str) -> tuple[int, int] | None:
        """``(valid message count, mtime in ns)`` of the session file, ``None`` if there is none."""

    @abc.abstractmethod
    def _append(self, session_key: str, message: MessageLike) -> bool:
        """Append one message; ``True`` if that created the session's file."""

    @abc.abstractmethod
    def _append_many(self, session_key: str, messages: Iterable[MessageLike]) -> bool:
        """Append messages in one write; ``True`` if that created the session's file."""

    @abc.abstractmethod
    def _delete(self, session_key: str) -> bool:
        """Delete the transcript; ``True`` if it existed."""

    @abc.abstractmethod
    def _search(self, keys: list[str], keyword: str, match_all: bool) -> list[str]:
        """The keys (of ``keys``) with a valid message matching ``keyword``."""


def _text(meta: dict[str, Any], field: str) -> str | None:
    value = meta.get(field)
    return value if isinstance(value, str) else None


def _state(meta: dict[str, Any]) -> SessionState:
    state = meta.get("state")
    return SessionState(
        state=state if state in _meta.STATES else "idle",
        turn_id=_text(meta, "turn_id"),
        turn_started_at=_meta.from_text(meta.get("turn_started_at")),
    )


def _by_activity(sessions: list[SessionMetadata]) -> list[SessionMetadata]:
    """Most recently active first; ties by key."""
    epoch = datetime.fromtimestamp(0, tz=timezone.utc)
    return sorted(sessions, key=lambda m: (-(m.last_activity or epoch).timestamp(), m.key))
