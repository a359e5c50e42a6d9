"""``AsyncRedisSessionBackend``: the asyncio twin of ``RedisSessionBackend``, running the same
operations (``ops.py``) with a ``redis.asyncio`` client."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, cast

import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions

from ..._impl import ChatMessage
from ..._rules import Match, check_context
from ..._types import SessionMetadata, SessionQuery, SessionState
from ...backend import MessageLike
from .effects import Clock, T, _Batch, _Call, _check_client, _Effect, _Eval, _Op, _reported
from .ops import DEFAULT_PREFIX, _RedisCore


class AsyncRedisSessionBackend(_RedisCore):
    """``RedisSessionBackend`` for asyncio: the same methods as coroutines, over
    ``redis.asyncio`` (no threads), on the same keys, so sync and async clients can share
    sessions.

    Args:
        url_or_client: A URL, or a ``redis.asyncio.Redis`` /
            ``redis.asyncio.cluster.RedisCluster`` with ``decode_responses=False``.
        prefix, cluster, clock, expire_after, client_options: As for ``RedisSessionBackend``.

    Use ``async with AsyncRedisSessionBackend(...) as store:`` or ``await store.aclose()``.
    """

    # A deliberate twin of RedisSessionBackend: the same public methods with the same signatures,
    # each one line awaiting the same `_op_*` operation (its checks included) that the sync method
    # runs, and `_run`/`_do` mirroring the sync ones with `await`. All they can share lives in
    # `_RedisCore` (ops.py) and effects.py; what repeats here differs only by `async`/`await`.

    _CLIENT_TYPES = (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)
    _CLIENT_NAMES = "redis.asyncio.Redis / redis.asyncio.cluster.RedisCluster"

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool | None = None,
        clock: Clock | None = None,
        expire_after: float | None = None,
        **client_options: Any,
    ) -> None:
        self._open(url_or_client, prefix, cluster, clock, expire_after, client_options)
        _check_client(self._client)

    def _from_url(self, url: str, cluster: bool, options: dict[str, Any]) -> Any:
        # Neither constructor connects: the first call does.
        if cluster:
            return redis.asyncio.cluster.RedisCluster.from_url(url, **options)
        return redis.asyncio.Redis.from_url(url, **options)

    @property
    def client(self) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
        """The redis-py asyncio client in use."""
        return cast("redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster", self._client)

    async def aclose(self) -> None:
        """Close the client if the backend created it from a URL (a given client stays open)."""
        if self._owned:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncRedisSessionBackend:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _run(self, op: _Op[T]) -> T:
        try:
            effect = next(op)
            while True:
                effect = op.send(await self._do(effect))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _do(self, effect: _Effect) -> Any:
        client = self._client
        with _reported(self._where):
            if isinstance(effect, _Call):
                return await effect.on(client)
            if isinstance(effect, _Eval):
                try:
                    return await client.evalsha(*effect.by_sha())
                except redis.exceptions.NoScriptError:
                    return await client.eval(*effect.by_text())
            if isinstance(effect, _Batch):
                pipes = effect.pipelines(client)
                return [result for pipe in pipes for result in await pipe.execute()]
            return [key async for key in client.scan_iter(match=effect.pattern, count=1000)]

    async def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """See ``RedisSessionBackend.load``."""
        return await self._run(self._op_load(session_key, limit))

    async def load_with_timestamps(
        self, session_key: str, limit: int | None = None
    ) -> list[tuple[ChatMessage, datetime | None]]:
        """Messages paired with ``None``: Redis keeps no per-message time (the elements are
        the JSONL lines)."""
        return [(message, None) for message in await self.load(session_key, limit)]

    async def append(self, session_key: str, message: MessageLike) -> None:
        """See ``RedisSessionBackend.append``."""
        await self._run(self._op_append_messages(session_key, [message]))

    async def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """See ``RedisSessionBackend.append_many``."""
        await self._run(self._op_append_messages(session_key, messages))

    async def remove_last(self, session_key: str) -> bool:
        """See ``RedisSessionBackend.remove_last``."""
        return await self._run(self._op_remove_last(session_key))

    async def pop_last(self, session_key: str) -> ChatMessage | None:
        """See ``RedisSessionBackend.pop_last``."""
        return await self._run(self._op_pop_last(session_key))

    async def update_last(self, session_key: str, message: MessageLike) -> bool:
        """See ``RedisSessionBackend.update_last``."""
        return await self._run(self._op_update_last(session_key, message))

    async def compact(self, session_key: str) -> None:
        """See ``RedisSessionBackend.compact``."""
        await self._run(self._op_compact(session_key))

    async def clear_messages(self, session_key: str) -> int:
        """See ``RedisSessionBackend.clear_messages``."""
        return await self._run(self._op_clear(session_key))

    async def delete_session(self, session_key: str) -> bool:
        """See ``RedisSessionBackend.delete_session``."""
        return await self._run(self._op_delete(session_key))

    async def list_sessions(self) -> list[str]:
        """See ``RedisSessionBackend.list_sessions``."""
        return await self._run(self._op_list())

    async def session_exists(self, session_key: str) -> bool:
        """See ``RedisSessionBackend.session_exists``."""
        return await self._run(self._op_exists(session_key))

    async def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """See ``RedisSessionBackend.get_session_metadata``."""
        return await self._run(self._op_metadata(session_key))

    async def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """See ``RedisSessionBackend.list_sessions_with_metadata``."""
        return await self._run(self._op_all_metadata())

    async def cleanup_stale(self, ttl_hours: float) -> int:
        """See ``RedisSessionBackend.cleanup_stale``."""
        return await self._run(self._op_cleanup(ttl_hours))

    async def repair_index(self) -> int:
        """See ``RedisSessionBackend.repair_index``."""
        return await self._run(self._op_repair())

    async def set_session_name(self, session_key: str, name: str) -> None:
        """See ``RedisSessionBackend.set_session_name``."""
        await self._run(self._op_set_field(session_key, "name", name, "name"))

    async def get_session_name(self, session_key: str) -> str | None:
        """See ``RedisSessionBackend.get_session_name``."""
        return await self._run(self._op_get_field(session_key, "name"))

    async def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """See ``RedisSessionBackend.set_session_agent_alias``."""
        await self._run(self._op_set_field(session_key, "agent_alias", alias, "alias"))

    async def get_session_agent_alias(self, session_key: str) -> str | None:
        """See ``RedisSessionBackend.get_session_agent_alias``."""
        return await self._run(self._op_get_field(session_key, "agent_alias"))

    async def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """See ``RedisSessionBackend.set_session_context``."""
        fields = check_context(channel_id, room_id, sender_id)
        await self._run(self._op_set_context(session_key, fields))

    async def set_session_state(
        self, session_key: str, state: str, turn_id: str | None = None
    ) -> None:
        """See ``RedisSessionBackend.set_session_state``."""
        await self._run(self._op_state_change(session_key, state, turn_id))

    async def get_session_state(self, session_key: str) -> SessionState | None:
        """See ``RedisSessionBackend.get_session_state``."""
        return await self._run(self._op_get_state(session_key))

    async def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """See ``RedisSessionBackend.set_session_times``."""
        return await self._run(
            self._op_set_times(session_key, created_at, last_activity, turn_started_at)
        )

    async def list_running_sessions(self) -> list[SessionMetadata]:
        """See ``RedisSessionBackend.list_running_sessions``."""
        return await self._run(self._op_running(None))

    async def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """See ``RedisSessionBackend.list_stuck_sessions``."""
        return await self._run(self._op_running(threshold_secs))

    async def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """See ``RedisSessionBackend.search``."""
        return await self._run(self._op_search(query, match))
