"""An in-memory ``SessionBackend`` that records the thread of every call, for the adapters'
tests that check no store call runs on the event loop's thread."""

from __future__ import annotations

import threading

from turnlog import ChatMessage, SessionBackend


class ThreadRecordingBackend(SessionBackend):
    """An in-memory backend that records the thread of every call."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[ChatMessage]] = {}
        self.threads: set[int] = set()

    def load(self, session_key, limit=None):
        self.threads.add(threading.get_ident())
        messages = self.sessions.get(session_key, [])
        return list(messages[max(len(messages) - limit, 0) :] if limit is not None else messages)

    def append(self, session_key, message):
        self.threads.add(threading.get_ident())
        if not isinstance(message, ChatMessage):
            message = ChatMessage.from_dict(message)
        self.sessions.setdefault(session_key, []).append(message)

    def remove_last(self, session_key):
        self.threads.add(threading.get_ident())
        if not self.sessions.get(session_key):
            return False
        self.sessions[session_key].pop()
        return True

    def list_sessions(self):
        return sorted(self.sessions)
