"""``SessionStore`` backed by the Rust core (``turnlog._native``).

Only argument plumbing lives here; the native ``JsonlStore`` does the reading, validation,
locking and writing, with the GIL released around file I/O and parsing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any, TypeGuard

from ..._impl import ChatMessage, native
from ...backend import MessageLike
from .. import format as _format
from .base import Appended, JsonlStoreBase

__all__ = ["SessionStore"]

#: A load of more messages than this (or of all of them) takes turns with the others of the
#: process at building its messages (see ``_big_loads``).
BIG_LOAD = 1000
#: What a store made by ``without_waiting`` reads at most in one load: more would keep an event
#: loop busy (a 40-message tail of 2 MB pictures took 190 ms).
INLINE_BYTES = 256 << 10


def _fresh_lock() -> None:
    global _big_loads
    _big_loads = threading.Lock()


# Big loads take turns at building their messages, once each has its file's lock (the native
# load takes this lock then). Building needs the GIL, which one thread holds at a time: two loads
# at once traded it back and forth (each waiting up to CPython's switch interval for it, and the
# cores they would read ahead on busy with the other), and ran slower together than one after
# the other (0.7-0.8x at 2, 4 and 8 threads). Taking turns, each load reads and parses ahead on a
# second core while it builds, as when it runs alone. A fork's child gets a fresh lock: a thread
# of the parent that held it does not exist there.
_big_loads = threading.Lock()
os.register_at_fork(after_in_child=_fresh_lock)


def is_plain(store: object) -> TypeGuard[SessionStore]:
    """Whether ``store`` is this class itself, not a subclass (whose overrides a twin made by
    ``without_waiting`` would skip)."""
    return type(store) is SessionStore


def _native_message(message: MessageLike) -> Any:
    # The native side reads ChatMessage and dict directly; any other mapping is copied first.
    if type(message) is dict or type(message) is ChatMessage:
        return message
    return ChatMessage.from_dict(message)  # type: ignore[arg-type]


class SessionStore(JsonlStoreBase):
    """Append-only JSONL session store with a Rust core: ``SessionStore(workspace, *,
    durability="process")``, as ``JsonlStoreBase`` describes."""

    def _open(self) -> None:
        assert native is not None, "turnlog._native is not built"
        durable = self._durability == "power"
        zeroclaw_names = self._names == "zeroclaw"
        self._native = native.JsonlStore(
            self._sessions_dir, durable, self._lock_timeout, zeroclaw_names
        )
        self._without_waiting: SessionStore | None = None
        self._max_bytes: int | None = None

    def without_waiting(self) -> SessionStore:
        """This store, made once, that never keeps its caller waiting: a call that would wait
        for a lock another thread or process holds (``lock_timeout=0``), or a load of more than
        ``INLINE_BYTES``, raises ``TimeoutError`` at once, having changed nothing.
        ``turnlog.aio`` runs cheap calls through it on the event loop."""
        if self._without_waiting is None:
            quick: SessionStore = self._like_this(lock_timeout=0)()
            quick._max_bytes = INLINE_BYTES
            self._without_waiting = quick
        return self._without_waiting

    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        turns = None if limit is not None and limit <= BIG_LOAD else _big_loads
        return self._native.load(session_key, limit, self._max_bytes, turns)  # type: ignore[no-any-return]

    def _stat(self, session_key: str) -> tuple[int, int] | None:
        return self._native.stat(session_key)  # type: ignore[no-any-return]

    # An append never creates a session in Rust: the first one goes through _write_locked, which
    # starts the sidecar under the new transcript's lock (no setter can come in between).

    def _append(self, session_key: str, message: MessageLike) -> Appended:
        message = _native_message(message)
        appended: Appended | None = self._native.append(session_key, message, False)
        if appended is None:
            return self._write_locked(session_key, _format.encode_message(message))
        return appended

    def _append_many(self, session_key: str, messages: Iterable[MessageLike]) -> Appended:
        batch = [_native_message(m) for m in messages]
        appended: Appended | None = self._native.append_many(session_key, batch, False)
        if appended is None:
            return self._write_locked(session_key, b"".join(map(_format.encode_message, batch)))
        return appended

    def _delete(self, session_key: str) -> bool:
        return self._native.delete_session(session_key)  # type: ignore[no-any-return]

    def _search(self, keys: list[str], keyword: str, match_all: bool) -> list[str]:
        return self._native.search(keys, keyword, match_all)  # type: ignore[no-any-return]

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest valid message; corrupt lines around it stay. ``True`` if one was."""
        return self._native.remove_last(self._own(session_key))  # type: ignore[no-any-return]

    def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it, under the session's lock; ``None``
        when there is none. Corrupt lines around it stay."""
        return self._native.pop_last(self._own(session_key))  # type: ignore[no-any-return]

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message, atomically. ``False`` (nothing written) if none."""
        return self._native.update_last(self._own(session_key), _native_message(message))  # type: ignore[no-any-return]

    def compact(self, session_key: str) -> None:
        """Rewrite the session with only its valid lines, stripped, atomically."""
        self._native.compact(self._own(session_key))

    def clear_messages(self, session_key: str) -> int:
        """Empty the session (its file stays, so it stays listed). Returns the messages removed."""
        return self._native.clear_messages(self._own(session_key))  # type: ignore[no-any-return]

    def _list(self) -> list[str]:
        return self._native.list_sessions()  # type: ignore[no-any-return]

    def _exists(self, session_key: str) -> bool:
        return self._native.session_exists(session_key)  # type: ignore[no-any-return]
