"""Async twins of every ``SessionBackend`` method, for asyncio bots.

>>> from turnlog.aio import AsyncSessionStore
>>> store = AsyncSessionStore("./workspace")
>>> await store.append("telegram_user123", {"role": "user", "content": "hello"})
>>> history = await store.load("telegram_user123", limit=50)

Every method runs the blocking call in a worker thread and awaits it, so the event loop keeps
serving other chats while a transcript is read, written or scanned. ``AsyncSessionStore`` wraps
``turnlog.SessionStore``; ``AsyncBackend`` wraps any ``SessionBackend`` (the SQLite backend, your
own), with the same methods.

Two thread pools, because of the GIL. The Rust store reads and parses without the GIL, but it
must hold the GIL while it turns parsed messages into ``ChatMessage`` objects (the pure store
holds it throughout). It hands the GIL over when another thread asks for it, as Python code
does: a thread waiting for the GIL gets it within CPython's switch interval (5 ms) and a step of
256 messages. With several big loads in parallel, the event loop is one of many threads asking,
and may wait behind each of them. So calls that build or encode many messages (a ``load`` of
more than ``BULK_MESSAGES`` messages or of all of them, an ``append_many`` of more than
``BULK_MESSAGES``) go to a small *bulk* pool (``bulk_workers``, default 1); everything else
(appends, tail reads, metadata, search) goes to a general pool (``max_workers``) and is never
queued behind a big load. Measured on a shared 2-core machine, 8 loads of 40,000 messages
(80 MB each) at once through one bulk thread: the loop's worst stall was 9-12 ms, where one
such load run on the loop blocks it for 53-57 ms. When other processes saturate every core, a
loader preempted while it holds the GIL still stalls the loop for longer, whatever the pools.

A thread hop costs more than a small call of the Rust store: 40-80 us against 10-40 us for a
tail read of ``load(limit=50)`` or an append. So with the Rust store, calls that are cheap and
cannot wait run on the event loop's own thread: ``load`` with a ``limit`` of at most
``INLINE_MESSAGES``, ``append``, ``append_many`` of at most ``INLINE_MESSAGES`` messages,
``pop_last`` and ``remove_last``, each first tried on a twin of the store whose lock wait is 0
(``SessionStore.without_waiting``). When the session is locked by another writer, that try raises
``TimeoutError`` having changed nothing, and the call goes to the pool as before; so does every
write with ``durability="power"`` (an fsync takes milliseconds). Results and errors are the same
either way.

Cancelling the task that awaits a call does not stop a call that has already started in its
thread: it runs to completion (a write lands or fails as a whole, as in the sync store). A call
still waiting for a thread is dropped. A call that runs on the loop finishes before the task can
be cancelled.

A process forked while a store's threads exist (``multiprocessing`` with ``fork``, gunicorn,
celery; or a call in a worker thread that forks) has none of them: the store gets fresh pools
there, so an inherited store keeps working in the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

from . import SessionStore
from ._impl import ChatMessage
from ._rules import Durability, Match
from ._types import SessionMetadata, SessionQuery, SessionState
from .backend import MessageLike, SessionBackend
from .backends.jsonl.base import Names
from .backends.jsonl.rust import is_plain as is_plain_rust_store
from .backends.workspace import PathLike

__all__ = ["BULK_MESSAGES", "INLINE_MESSAGES", "AsyncBackend", "AsyncSessionStore"]

#: A ``load`` of more messages than this (or with no limit) and an ``append_many`` of more
#: messages than this run in the bulk pool; smaller calls never wait behind them.
BULK_MESSAGES = 1000
#: With the Rust store, a ``load`` of at most this many messages (and an ``append_many`` of as
#: many) runs on the event loop when the session's lock is free (see the module docs).
INLINE_MESSAGES = 100

BackendT = TypeVar("BackendT", bound=SessionBackend)
P = ParamSpec("P")
R = TypeVar("R")


def _check_workers(value: object, what: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{what} must be {kind}, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def _is_small(limit: object) -> bool:
    """Whether ``load(limit=limit)`` builds few enough messages for the general pool.

    Anything odd (a bad type, a negative number) counts as small: the backend refuses it at once.
    """
    return isinstance(limit, int) and limit <= BULK_MESSAGES


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: the pools it inherited count threads
    that do not exist there, and a call queued behind them would wait forever. Fresh pools."""
    for backend in list(_LIVE):
        backend._new_pools()


#: Every ``AsyncBackend`` of the process, to renew their pools in a forked child.
_LIVE: weakref.WeakSet[AsyncBackend[Any]] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork_in_child)


class AsyncBackend(Generic[BackendT]):
    """Any ``SessionBackend``, with every method as a coroutine run in a worker thread.

    Args:
        backend: The store to wrap; the caller keeps owning it (``aclose`` does not close it).
            It must be safe to call from several threads, as turnlog's stores are.
        max_workers: Threads of the general pool; ``None`` picks ``min(32, cpus + 4)``, as
            ``ThreadPoolExecutor`` does.
        bulk_workers: Threads of the bulk pool (big loads and ``append_many``); 1 keeps the event
            loop responsive (see the module docs), 2 trades some of that for parallel parsing.

    Raises:
        TypeError: ``backend`` is not a ``SessionBackend``, or a worker count is not an int.
        ValueError: a worker count below 1.

    Use it as ``async with AsyncBackend(...) as store:`` or call ``aclose()`` to stop its
    threads; idle threads are also reaped at interpreter exit.
    """

    # Each coroutine repeats its SessionBackend method's signature on purpose (as does the
    # Redis backend's native asyncio twin): typed, documented methods for editors and mypy,
    # where a generated wrapper would show only (*args, **kwargs).

    def __init__(
        self, backend: BackendT, *, max_workers: int | None = None, bulk_workers: int = 1
    ) -> None:
        if not isinstance(backend, SessionBackend):
            raise TypeError(f"backend must be a SessionBackend, not {type(backend).__name__}")
        general = _check_workers(max_workers, "max_workers", optional=True)
        bulk = _check_workers(bulk_workers, "bulk_workers", optional=False)
        if general is None:
            general = min(32, (os.cpu_count() or 1) + 4)
        self._backend = backend
        self._closed = False
        # The Rust store's twin that never waits for a lock: cheap calls run through it inline.
        # Not for a subclass: its overrides must run, and the twin is a plain store.
        now = backend.without_waiting() if is_plain_rust_store(backend) else None
        self._now_reader = now
        self._now_writer = now if now is not None and now.durability == "process" else None
        self._sizes = (general, bulk)
        self._new_pools()
        _LIVE.add(self)

    def _new_pools(self) -> None:
        # Threads start on first use, so an unused pool costs nothing.
        general, bulk = self._sizes
        self._pool = ThreadPoolExecutor(general, thread_name_prefix="turnlog-aio")
        self._bulk = ThreadPoolExecutor(bulk, thread_name_prefix="turnlog-aio-bulk")

    @property
    def backend(self) -> BackendT:
        """The wrapped synchronous backend."""
        return self._backend

    @property
    def sessions_dir(self) -> str:
        """The JSONL store's sessions folder (``AttributeError`` for a backend without one)."""
        value = getattr(self._backend, "sessions_dir", None)
        if not isinstance(value, str):
            raise AttributeError(f"{type(self._backend).__name__} has no sessions_dir")
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._backend!r})"

    def __getattr__(self, name: str) -> Any:
        """Methods a backend has beyond ``SessionBackend`` (``SqliteSessionBackend.
        create_session``, say), as coroutines run in the general pool; other attributes as
        they are."""
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self._backend, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._run(self._pool, attribute, *args, **kwargs)

        return call

    # --- running calls --------------------------------------------------------------------------

    async def _run(
        self,
        pool: ThreadPoolExecutor,
        func: Callable[P, R],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """``func(*args, **kwargs)`` in a thread of ``pool``, with the caller's context variables
        (as ``asyncio.to_thread`` does), so logging filters and tracing see the same context."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()

        def call() -> R:
            return context.run(func, *args, **kwargs)

        return await loop.run_in_executor(pool, call)

    def close(self) -> None:
        """Refuse new calls and let the threads exit once their calls are done (no waiting)."""
        self._closed = True
        self._pool.shutdown(wait=False)
        self._bulk.shutdown(wait=False)

    async def aclose(self) -> None:
        """Refuse new calls and wait, off the loop, until every call in progress has finished."""
        self.close()
        loop = asyncio.get_running_loop()
        # shutdown(wait=True) joins threads: a blocking wait, so it runs off the loop as well.
        await loop.run_in_executor(None, self._join)

    def _join(self) -> None:
        self._pool.shutdown(wait=True)
        self._bulk.shutdown(wait=True)

    async def __aenter__(self) -> AsyncBackend[BackendT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- messages -------------------------------------------------------------------------------

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's messages, oldest first; only the newest ``limit`` when given.

        See ``SessionBackend.load``. Loads of more than ``BULK_MESSAGES`` run in the bulk pool.
        """
        now = self._now_reader
        if (
            now is not None
            and isinstance(limit, int)
            and 0 <= limit <= INLINE_MESSAGES
            and not self._closed
        ):
            with contextlib.suppress(TimeoutError):
                return now.load(session_key, limit)
        pool = self._pool if _is_small(limit) else self._bulk
        return await self._run(pool, self._backend.load, session_key, limit)

    async def append(self, session_key: str, message: MessageLike) -> None:
        """Add one message at the end of the session, creating it if needed."""
        if (now := self._now_writer) is not None and not self._closed:
            with contextlib.suppress(TimeoutError):
                now.append(session_key, message)
                return
        await self._run(self._pool, self._backend.append, session_key, message)

    async def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add several messages in order (one locked write in the JSONL store: all or none).

        ``messages`` is read into a list here, on the caller's thread, so a generator never runs
        in a worker thread.
        """
        batch = list(messages)
        if (
            (now := self._now_writer) is not None
            and len(batch) <= INLINE_MESSAGES
            and not self._closed
        ):
            with contextlib.suppress(TimeoutError):
                now.append_many(session_key, batch)
                return
        pool = self._pool if len(batch) <= BULK_MESSAGES else self._bulk
        await self._run(pool, self._backend.append_many, session_key, batch)

    async def remove_last(self, session_key: str) -> bool:
        """Remove the newest message. ``True`` if there was one."""
        if (now := self._now_writer) is not None and not self._closed:
            with contextlib.suppress(TimeoutError):
                return now.remove_last(session_key)
        return await self._run(self._pool, self._backend.remove_last, session_key)

    async def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it; ``None`` when there is none."""
        if (now := self._now_writer) is not None and not self._closed:
            with contextlib.suppress(TimeoutError):
                return now.pop_last(session_key)
        return await self._run(self._pool, self._backend.pop_last, session_key)

    async def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest message. ``False`` (nothing written) if there is none."""
        return await self._run(self._pool, self._backend.update_last, session_key, message)

    async def compact(self, session_key: str) -> None:
        """Drop what is not a valid message from the session's storage."""
        await self._run(self._pool, self._backend.compact, session_key)

    async def clear_messages(self, session_key: str) -> int:
        """Remove every message, keeping the session. Returns how many there were."""
        return await self._run(self._pool, self._backend.clear_messages, session_key)

    async def delete_session(self, session_key: str) -> bool:
        """Delete the session. ``True`` if it existed."""
        return await self._run(self._pool, self._backend.delete_session, session_key)

    async def list_sessions(self) -> list[str]:
        """Every session key, exactly as given."""
        return await self._run(self._pool, self._backend.list_sessions)

    async def session_exists(self, session_key: str) -> bool:
        """Whether the session exists."""
        return await self._run(self._pool, self._backend.session_exists, session_key)

    async def load_with_timestamps(
        self, session_key: str, limit: int | None = None
    ) -> list[tuple[ChatMessage, datetime | None]]:
        """Messages paired with when they were stored (``None`` where the backend has no time)."""
        pool = self._pool if _is_small(limit) else self._bulk
        return await self._run(pool, self._backend.load_with_timestamps, session_key, limit)

    # --- metadata, search, state ----------------------------------------------------------------

    async def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session (the JSONL store: the most recently active first)."""
        return await self._run(self._pool, self._backend.list_sessions_with_metadata)

    async def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Metadata of one session, or ``None`` if it does not exist."""
        return await self._run(self._pool, self._backend.get_session_metadata, session_key)

    async def cleanup_stale(self, ttl_hours: float) -> int:
        """Remove sessions idle for longer than ``ttl_hours``. Returns how many."""
        return await self._run(self._pool, self._backend.cleanup_stale, ttl_hours)  # type: ignore[arg-type]

    async def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message matching ``query``.

        Args:
            query: The keyword and the most sessions to return.
            match: ``"all"`` (default): every word of the keyword in one message; ``"any"``: one
                of them.
        """
        return await self._run(self._pool, self._backend.search, query, match=match)

    async def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """Set an existing session's times (for importers); ``False`` if it does not exist."""
        return await self._run(
            self._pool,
            self._backend.set_session_times,
            session_key,
            created_at=created_at,
            last_activity=last_activity,
            turn_started_at=turn_started_at,
        )

    async def set_session_name(self, session_key: str, name: str) -> None:
        """Set a human-readable name for the session."""
        await self._run(self._pool, self._backend.set_session_name, session_key, name)

    async def get_session_name(self, session_key: str) -> str | None:
        """The session's name, if set."""
        return await self._run(self._pool, self._backend.get_session_name, session_key)

    async def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias."""
        await self._run(self._pool, self._backend.set_session_agent_alias, session_key, alias)

    async def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias, if set."""
        return await self._run(self._pool, self._backend.get_session_agent_alias, session_key)

    async def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context of the session; a field given as ``None`` keeps its value."""
        await self._run(
            self._pool,
            self._backend.set_session_context,
            session_key,
            channel_id=channel_id,
            room_id=room_id,
            sender_id=sender_id,
        )

    async def set_session_state(
        self, session_key: str, state: str, turn_id: str | None = None
    ) -> None:
        """Set the turn state: ``"running"`` (with ``turn_id``), ``"idle"`` or ``"error"``."""
        await self._run(self._pool, self._backend.set_session_state, session_key, state, turn_id)

    async def get_session_state(self, session_key: str) -> SessionState | None:
        """The session's turn state, or ``None``."""
        return await self._run(self._pool, self._backend.get_session_state, session_key)

    async def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state."""
        return await self._run(self._pool, self._backend.list_running_sessions)

    async def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running for longer than ``threshold_secs``."""
        return await self._run(self._pool, self._backend.list_stuck_sessions, threshold_secs)  # type: ignore[arg-type]


class AsyncSessionStore(AsyncBackend[SessionStore]):
    """``turnlog.SessionStore`` (Rust, or pure Python without it) with coroutine methods.

    Args:
        workspace: The workspace folder; sessions live in ``<workspace>/sessions/`` (created,
            owner-only, right here: two ``mkdir`` calls on the caller's thread).
        durability: ``"process"`` (default) or ``"power"``, as for ``SessionStore``.
        lock_timeout: Seconds to wait for a session's lock before ``TimeoutError``, as for
            ``SessionStore``; ``None`` (default): no limit.
        names: ``"escaped"`` (default) or ``"zeroclaw"``, as for ``SessionStore``.
        adopt_zeroclaw_names: Adopt legacy ZeroClaw files (default), as for ``SessionStore``.
        max_workers: Threads of the general pool (see ``AsyncBackend``).
        bulk_workers: Threads of the bulk pool (see ``AsyncBackend``).

    Raises:
        NotADirectoryError: ``workspace`` exists and is not a folder.
        PermissionError: other users could write or swap the workspace.
        ValueError: a bad ``durability``, ``lock_timeout`` or worker count.
    """

    def __init__(
        self,
        workspace: PathLike,
        *,
        durability: Durability = "process",
        lock_timeout: float | None = None,
        names: Names = "escaped",
        adopt_zeroclaw_names: bool = True,
        max_workers: int | None = None,
        bulk_workers: int = 1,
    ) -> None:
        store = SessionStore(
            workspace,
            durability=durability,
            lock_timeout=lock_timeout,
            names=names,
            adopt_zeroclaw_names=adopt_zeroclaw_names,
        )
        super().__init__(
            store,
            max_workers=max_workers,
            bulk_workers=bulk_workers,
        )

    @property
    def sessions_dir(self) -> str:
        """The absolute path of the folder that holds the ``.jsonl`` files."""
        return self._backend.sessions_dir

    @property
    def durability(self) -> Durability:
        """``"process"`` or ``"power"``: what an acknowledged write survives."""
        return self._backend.durability

    def transcript_path(self, session_key: str) -> str:
        """The absolute path of the session's ``.jsonl`` transcript (no I/O: not a coroutine)."""
        return self._backend.transcript_path(session_key)

    async def __aenter__(self) -> AsyncSessionStore:
        return self
