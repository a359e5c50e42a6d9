"""The frozen data classes of the ``SessionBackend`` API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

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
    name: Optional[str] = None
    created_at: Optional[datetime] = None
    last_activity: Optional[datetime] = None
    message_count: int = 0
    agent_alias: Optional[str] = None
    channel_id: Optional[str] = None
    room_id: Optional[str] = None
    sender_id: Optional[str] = None


@dataclass(frozen=True)
class SessionQuery:
    """A search across sessions.

    Attributes:
        keyword: Text to look for in message contents; ``None`` matches every session.
        limit: The most sessions to return; ``None`` for no limit.
    """

    keyword: Optional[str] = None
    limit: Optional[int] = None


@dataclass(frozen=True)
class SessionState:
    """The turn state of a session.

    Attributes:
        state: ``"idle"``, ``"running"`` or ``"error"``.
        turn_id: The turn in progress, set while running.
        turn_started_at: When that turn started (timezone-aware UTC).
    """

    state: str
    turn_id: Optional[str] = None
    turn_started_at: Optional[datetime] = None
