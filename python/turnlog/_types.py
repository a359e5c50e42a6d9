"""The frozen data classes of the ``SessionBackend`` API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["SessionMetadata", "SessionQuery", "SessionState"]


@dataclass(frozen=True)
class SessionMetadata:
    """What a backend knows about one session. Datetimes are timezone-aware UTC.

    Attributes:
        key: The session key, exactly as given to ``append``.
        name: A human-readable name, if one was set.
        created_at: When the session was created (the JSONL store without metadata reports the
            transcript's modification time).
        last_activity: When the session last changed.
        message_count: How many valid messages the session holds.
        agent_alias: The agent the session is bound to, if set.
        channel_id: Routing context: the channel, if set.
        room_id: Routing context: the room, if set.
        sender_id: Routing context: the sender, if set.
    """

    key: str
    name: str | None = None
    created_at: datetime | None = None
    last_activity: datetime | None = None
    message_count: int = 0
    agent_alias: str | None = None
    channel_id: str | None = None
    room_id: str | None = None
    sender_id: str | None = None


@dataclass(frozen=True)
class SessionQuery:
    """A search across sessions.

    Attributes:
        keyword: Text to look for in message contents; ``None`` matches every session.
        limit: The most sessions to return; ``None`` for no limit.
    """

    keyword: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class SessionState:
    """The turn state of a session.

    Attributes:
        state: ``"idle"``, ``"running"`` or ``"error"``.
        turn_id: The turn in progress, set while running.
        turn_started_at: When that turn started (timezone-aware UTC).
    """

    state: str
    turn_id: str | None = None
    turn_started_at: datetime | None = None
