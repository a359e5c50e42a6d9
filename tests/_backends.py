"""Helpers for the tests that run one behaviour against every backend.

``make_backend(kind, workspace)`` opens ``"jsonl-rust"`` (the Rust JSONL store), ``"jsonl-pure"``
(the pure-Python JSONL store) or ``"sqlite"`` (``SqliteSessionBackend``); ``dump`` is the logical
content of a backend, to check that a refused call changed nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import store_class
from turnlog import SessionBackend

BACKENDS = ("jsonl-rust", "jsonl-pure", "sqlite", "redis")


def make_backend(kind: str, workspace: Any, **options: Any) -> SessionBackend:
    if kind == "redis":
        import uuid

        from redis_server import shared_server
        from turnlog.backends.redis import RedisSessionBackend

        # One server per test process; a fresh prefix keeps each test's keys apart.
        options.setdefault("prefix", f"t{uuid.uuid4().hex}:")
        return RedisSessionBackend(shared_server().url, **options)
    if kind == "sqlite":
        from turnlog.backends.sqlite import SqliteSessionBackend

        return SqliteSessionBackend(workspace, **options)
    return store_class(kind.removeprefix("jsonl-"))(workspace, **options)


def add_damaged(backend: SessionBackend, key: str, raw: bytes) -> None:
    """Store ``raw``, which is no valid message, at the end of session ``key``, as another
    program could: a line of the transcript, a SQLite row, a Redis list element."""
    from turnlog.backends.format import key_to_name

    if hasattr(backend, "transcript_path"):
        with open(backend.transcript_path(key), "ab") as file:
            file.write(raw + b"\n")
    elif hasattr(backend, "messages_key"):
        backend.client.rpush(backend.messages_key(key), raw)
    else:
        key_to_name(key)
        connection = backend._conn()
        with connection:
            connection.execute(
                "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
                (key, raw.decode("utf-8", "replace"), "2024-01-01T00:00:00.000000+00:00"),
            )


def close(backend: object) -> None:
    closer = getattr(backend, "close", None)
    if closer is not None:
        closer()


#: Public methods that check their arguments in ``SessionBackend`` and hand them to a hook: a
#: backend implements the hook.
HOOKS = {"set_session_context": "_set_context", "set_session_times": "_set_times"}


def overrides(backend: SessionBackend, method: str) -> bool:
    """Whether ``backend`` implements ``method`` itself (not the ``SessionBackend`` default)."""
    method = HOOKS.get(method, method)
    return getattr(type(backend), method) is not getattr(SessionBackend, method)


def require(backend: SessionBackend, *methods: str) -> None:
    """Skip when the backend still has the ``SessionBackend`` default (a no-op) for a method."""
    missing = [method for method in methods if not overrides(backend, method)]
    if missing:
        pytest.skip(f"{type(backend).__module__} keeps the default {', '.join(missing)}")


def dump(backend: SessionBackend) -> dict[str, Any]:
    """Every session's messages and what metadata the backend keeps (times excepted)."""
    result: dict[str, Any] = {}
    for key in backend.list_sessions():
        metadata = backend.get_session_metadata(key)
        result[key] = (
            [m.to_dict() for m in backend.load(key)],
            None
            if metadata is None
            else (
                metadata.name,
                metadata.message_count,
                metadata.agent_alias,
                metadata.channel_id,
                metadata.room_id,
                metadata.sender_id,
            ),
            backend.get_session_state(key),
        )
    return result
