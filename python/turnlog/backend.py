"""``SessionBackend``: the interface every turnlog store implements.

Subclass it with the four abstract methods (``load``, ``append``, ``remove_last``,
``list_sessions``) and every other method works through the defaults below; a backend overrides
the ones it can do better or at all (names, state, times and search are no-ops by default, as in
ZeroClaw's trait). This is the whole contract: callers (``turnlog.aio``, ``turnlog.migrate``,
the CLI, the integrations) use these methods on any backend and probe for nothing else.

Two public methods check their arguments here and hand them to a hook that a backend overrides:
``set_session_context`` calls ``_set_context`` and ``set_session_times`` calls ``_set_times``, so
every backend refuses bad input alike and states those long signatures once.

This module is the bottom floor with the data classes and ``_rules``: it imports nothing else of
turnlog.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from ._impl import ChatMessage
from ._rules import SessionTimes, check_context, checked_times
from ._types import SessionMetadata, SessionQuery, SessionState

__all__ = ["MessageLike", "SessionBackend"]

#: What ``append`` accepts: a ``ChatMessage`` or a mapping with ``role`` and ``content``.
MessageLike = ChatMessage | Mapping[str, Any]


class SessionBackend(abc.ABC):
    """A store of chat sessions, each an ordered list of ``ChatMessage`` under a string key."""

    @abc.abstractmethod
    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the newest ``limit`` when given.

        A session that does not exist loads as ``[]``.
        """

    @abc.abstractmethod
    def append(self, session_key: str, message: MessageLike) -> None:
        """Add one message at the end of the session, creating the session if needed."""

    @abc.abstractmethod
    def remove_last(self, session_key: str) -> bool:
        """Remove the newest message. Returns ``True`` if there was one to remove."""

    @abc.abstractmethod
    def list_sessions(self) -> list[str]:
        """Every session key, exactly as given to ``append``."""

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add several messages in order. The default appends them one by one."""
        for message in list(messages):
            self.append(session_key, message)

    def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it; ``None`` when there is none.

        Every turnlog backend does this atomically (one lock, transaction or script): two
        callers popping at once get two different messages, and none is lost. The default
        here reads then removes, which is atomic only for a backend that is used by one caller
        at a time; a backend shared by concurrent callers must override it.
        """
        newest = self.load(session_key, limit=1)
        if not newest or not self.remove_last(session_key):
            return None
        return newest[0]

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest message. Returns ``False`` (and changes nothing) if there is none."""
        if not self.remove_last(session_key):
            return False
        self.append(session_key, message)
        return True

    def clear_messages(self, session_key: str) -> int:
        """Remove every message, keeping the session. Returns how many were removed."""
        removed = 0
        while self.remove_last(session_key):
            removed += 1
        return removed

    def compact(self, session_key: str) -> None:
        """Drop what is not a valid message from the session's storage. No-op by default."""

    def delete_session(self, session_key: str) -> bool:
        """Delete the session. Returns ``True`` if it existed. Not supported by default."""
        return False

    def session_exists(self, session_key: str) -> bool:
        """Whether the session exists."""
        return session_key in self.list_sessions()

    def load_with_timestamps(
        self, session_key: str, limit: int | None = None
    ) -> list[tuple[ChatMessage, datetime | None]]:
        """Messages paired with when they were stored, or ``None`` where the backend has no time."""
        return [(message, None) for message in self.load(session_key, limit=limit)]

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session. The default knows keys and message counts only."""
        return [
            SessionMetadata(key=key, message_count=len(self.load(key)))
            for key in self.list_sessions()
        ]

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Metadata of one session, or ``None`` if it does not exist."""
        for metadata in self.list_sessions_with_metadata():
            if metadata.key == session_key:
                return metadata
        return None

    def cleanup_stale(self, ttl_hours: int) -> int:
        """Remove sessions idle for over ``ttl_hours``; returns how many. No-op by default."""
        return 0

    def search(
        self, query: SessionQuery, *, match: Literal["all", "any"] = "all"
    ) -> list[SessionMetadata]:
        """Sessions with a message whose content holds ``query.keyword``, the most recently
        active first, at most ``query.limit``. With ``match="all"`` one message must hold every
        word of the keyword; with ``"any"``, one of them. Returns ``[]`` by default."""
        return []

    def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """Set an existing session's times (for importers such as ``turnlog.migrate``); ``None``
        leaves a time unchanged; ``turn_started_at`` is set only on a session that is running
        or in error (an idle one has no turn).

        Returns:
            Whether the session's times were set: ``False`` if it does not exist, and by
            default (a backend that keeps no times changes nothing).

        Raises:
            TypeError, ValueError: a bad key, or a time that is not a timezone-aware datetime.
        """
        times = checked_times(created_at, last_activity, turn_started_at)
        return self._set_times(session_key, times)

    def _set_times(self, session_key: str, times: SessionTimes) -> bool:
        """Store the ``times`` (checked, in UTC; ``None``: unchanged). ``False`` by default."""
        return False

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set a human-readable name for the session. No-op by default."""

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name, if set. ``None`` by default."""
        return None

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias. No-op by default."""

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias, if set. ``None`` by default."""
        return None

    def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context of the session; a field given as ``None`` keeps its
        value. Backends that keep context create a missing session.

        Raises:
            TypeError, ValueError: a field that is not a str or None, or holds a lone surrogate.
        """
        self._set_context(session_key, check_context(channel_id, room_id, sender_id))

    def _set_context(self, session_key: str, fields: dict[str, str]) -> None:
        """Store the context ``fields`` given (checked; the ``None`` ones left out). No-op by
        default."""

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state (``"idle"``, ``"running"``, ``"error"``). No-op by default."""

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The session's turn state. ``None`` when the backend does not track state (default)."""
        return None

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state. ``[]`` by default."""
        return []

    def list_stuck_sessions(self, threshold_secs: int) -> list[SessionMetadata]:
        """Sessions running for longer than ``threshold_secs``. ``[]`` by default."""
        return []
