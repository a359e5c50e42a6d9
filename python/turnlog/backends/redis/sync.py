"""``RedisSessionBackend``: the synchronous Redis backend, running the shared operations
(``ops.py``) with a redis-py client."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, cast

import redis
import redis.cluster
import redis.exceptions

from ..._impl import ChatMessage
from ..._rules import Match, SessionTimes
from ..._types import SessionMetadata, SessionQuery, SessionState
from ...backend import MessageLike, SessionBackend
from .effects import (
    Clock,
    T,
    _Batch,
    _Call,
    _check_client,
    _Effect,
    _Eval,
    _Op,
    _reported,
    _wrap,
)
from .ops import DEFAULT_PREFIX, _RedisCore


class RedisSessionBackend(_RedisCore, SessionBackend):
    """Chat sessions in Redis: a list of JSON lines, a metadata hash and two sorted sets.

    Every ``SessionBackend`` method is implemented and answers as the JSONL and SQLite stores do
    (same key checks, same exceptions for bad input, same message bytes, same search rule).
    Each per-session change is one Lua script, atomic on the server; see the package docs and
    ``docs/REDIS.md`` for the layout and what a Cluster changes.

    Elements of a session's list that are not valid messages (written by something else) are
    skipped as corrupt JSONL lines are, by the same validator; ``remove_last`` and
    ``update_last`` act on the newest valid message; ``compact`` removes the invalid ones.
    ``message_count`` is the list's length (``LLEN``): exact as long as only turnlog writes to it.

    Args:
        url_or_client: A ``redis://`` (or ``rediss://``, ``unix://``) URL, or a redis-py client:
            ``redis.Redis`` or ``redis.cluster.RedisCluster``, created with
            ``decode_responses=False`` (the default). The backend closes a client it created
            from a URL in ``close()``; a client given to it stays the caller's.
        prefix: Prefix of every key; several stores can share a server with different prefixes.
            Must not contain ``{`` or ``}``.
        cluster: ``True`` to open a URL with ``redis.cluster.RedisCluster``; ``None`` (default)
            decides by the client's type (``False`` for a URL).
        clock: Returns the current time (timezone-aware). ``None`` (default): the Redis server's
            clock (``TIME``), the same for every client machine. Tests inject their own.
        expire_after: Seconds: every write sets this TTL on the session's keys, so Redis itself
            deletes sessions idle for that long (their index entries are dropped by the next
            ``cleanup_stale`` or ``repair_index``, and skipped by every listing meanwhile).
            ``None`` (default): keys never expire.
        **client_options: Passed to ``from_url`` when ``url_or_client`` is a URL (for example
            ``socket_timeout=5``, or ``retry=Retry(...)``: without it, redis-py 8.x does not
            resend a command after a connection error; see ``docs/REDIS.md``).

    Raises:
        TypeError, ValueError: a bad argument, or a client with ``decode_responses=True``.
        RedisUnavailableError: ``cluster=True`` and no node of the cluster can be reached.
    """

    _CLIENT_TYPES = (redis.Redis, redis.cluster.RedisCluster)
    _CLIENT_NAMES = "redis.Redis / redis.cluster.RedisCluster"

    def __init__(
        self,
        url_or_client: str | redis.Redis | redis.cluster.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        cluster: bool | None = None,
        clock: Clock | None = None,
        expire_after: float | None = None,
        **client_options: Any,
    ) -> None:
        self._open(url_or_client, prefix, cluster, clock, expire_after, client_options)
        try:
            _check_client(self._client)
        except BaseException:
            self.close()
            raise

    def _from_url(self, url: str, cluster: bool, options: dict[str, Any]) -> Any:
        with _reported(url):
            try:
                if cluster:
                    return redis.cluster.RedisCluster.from_url(url, **options)
                return redis.Redis.from_url(url, **options)
            except redis.exceptions.RedisClusterException as error:
                # What RedisCluster raises when no startup node answers.
                raise _wrap(error, url) from error

    @property
    def client(self) -> redis.Redis | redis.cluster.RedisCluster:
        """The redis-py client in use."""
        return cast("redis.Redis | redis.cluster.RedisCluster", self._client)

    def close(self) -> None:
        """Close the client if the backend created it from a URL (a given client stays open)."""
        if not self._owned:
            return
        nodes = self._client.get_nodes() if self._cluster else []
        self._client.close()
        # RedisCluster.close() releases its nodes' clients but leaves their pools' sockets open
        # (redis-py 5 to 8): disconnect them, or they linger until garbage collection.
        for node in nodes:
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()

    def __enter__(self) -> RedisSessionBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- running operations ---------------------------------------------------------------------

    def _run(self, op: _Op[T]) -> T:
        try:
            effect = next(op)
            while True:
                effect = op.send(self._do(effect))
        except StopIteration as stop:
            return cast(T, stop.value)

    def _do(self, effect: _Effect) -> Any:
        client = self._client
        with _reported(self._where):
            if isinstance(effect, _Call):
                return effect.on(client)
            if isinstance(effect, _Eval):
                try:
                    return client.evalsha(*effect.by_sha())
                except redis.exceptions.NoScriptError:
                    return client.eval(*effect.by_text())
            if isinstance(effect, _Batch):
                return [result for pipe in effect.pipelines(client) for result in pipe.execute()]
            return list(client.scan_iter(match=effect.pattern, count=1000))

    # --- SessionBackend -------------------------------------------------------------------------

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's valid messages, oldest first; only the newest ``limit`` when given.

        ``limit=N`` reads the last N elements (``LRANGE -N -1``), and further back only when
        some of them are not valid messages. A missing session loads as ``[]``.

        Raises:
            TypeError, ValueError: a bad key or limit.
            RedisUnavailableError: Redis cannot be reached.
        """
        return self._run(self._op_load(session_key, limit))

    def append(self, session_key: str, message: MessageLike) -> None:
        """Add ``message`` at the end of the session (one ``RPUSH`` in a script that also
        records the activity), creating the session if needed.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
            RedisUnavailableError: not acknowledged (see the exception).
        """
        self._run(self._op_append_messages(session_key, [message]))

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add ``messages`` in order, atomically: all of them or none. An empty sequence does
        nothing (it does not create the session)."""
        self._run(self._op_append_messages(session_key, messages))

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest valid message (invalid elements after it stay). ``True`` if there
        was one. Concurrent calls from any clients each remove a different message."""
        return self._run(self._op_remove_last(session_key))

    def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it; ``None`` when there is none. One
        compare-and-set script: two clients popping at once get two different messages."""
        return self._run(self._op_pop_last(session_key))

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message in place. ``False`` (nothing written) if none.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
        """
        return self._run(self._op_update_last(session_key, message))

    def compact(self, session_key: str) -> None:
        """Remove the elements that are not valid messages (turnlog writes none: only another
        program's writes leave some)."""
        self._run(self._op_compact(session_key))

    def clear_messages(self, session_key: str) -> int:
        """Remove every message, keeping the session and its metadata. Returns how many
        elements the list held."""
        return self._run(self._op_clear(session_key))

    def delete_session(self, session_key: str) -> bool:
        """Delete the session's messages and metadata. ``True`` if it existed."""
        return self._run(self._op_delete(session_key))

    def list_sessions(self) -> list[str]:
        """Every session key, exactly as given, sorted (emptied sessions included)."""
        return self._run(self._op_list())

    def session_exists(self, session_key: str) -> bool:
        """Whether the session exists (an emptied session still does)."""
        return self._run(self._op_exists(session_key))

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Times, count, name, alias and context of the session; ``None`` if it does not
        exist."""
        return self._run(self._op_metadata(session_key))

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first (then by key)."""
        return self._run(self._op_all_metadata())

    def cleanup_stale(self, ttl_hours: float) -> int:
        """Delete sessions whose last activity is more than ``ttl_hours`` ago (found through
        the activity index, each deleted by a script that checks the time again). Returns how
        many."""
        return self._run(self._op_cleanup(ttl_hours))

    def repair_index(self) -> int:
        """Rebuild the two sorted sets from the metadata hashes (SCAN over every primary):
        adds sessions a crashed client left unindexed on a Cluster, drops entries of sessions
        that are gone. O(number of keys). Returns how many entries it changed."""
        return self._run(self._op_repair())

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set the session's human-readable name, creating the session if needed."""
        self._run(self._op_set_field(session_key, "name", name, "name"))

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name; ``None`` if unset or no such session."""
        return self._run(self._op_get_field(session_key, "name"))

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias, creating the session if needed."""
        self._run(self._op_set_field(session_key, "agent_alias", alias, "alias"))

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias; ``None`` if unset or no such session."""
        return self._run(self._op_get_field(session_key, "agent_alias"))

    def _set_context(self, session_key: str, fields: dict[str, str]) -> None:
        """Creates the session if needed."""
        self._run(self._op_set_context(session_key, fields))

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state, creating the session if needed: ``"running"`` starts a turn
        (``turn_started_at`` is now), ``"idle"`` clears it, ``"error"`` keeps it (``turn_id``,
        when given, replaces its id).

        Raises:
            ValueError: ``state`` is not ``"idle"``, ``"running"`` or ``"error"``.
            TypeError: ``turn_id`` is not a str or None.
        """
        self._run(self._op_state_change(session_key, state, turn_id))

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The turn state (``"idle"`` until set); ``None`` if no such session."""
        return self._run(self._op_get_state(session_key))

    def _set_times(self, session_key: str, times: SessionTimes) -> bool:
        """One script sets the times in the metadata hash and the sorted sets together (on a
        Cluster the sorted sets right after it, as for every write): the index's score is the
        given last activity, even an older one, and a running session's ``running`` score the
        given turn start. Like every write it renews the ``expire_after`` TTL."""
        return self._run(self._op_set_times(session_key, *times))

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        return self._run(self._op_running(None))

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running since ``threshold_secs`` or longer, the most recently active
        first."""
        return self._run(self._op_running(threshold_secs))

    def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message whose content holds the keyword, the most recently active
        first, at most ``query.limit``: the JSONL stores' rule (case-insensitive, words split on
        white space, ``match="all"`` needs every word in one message, ``"any"`` one of them).

        Reads the transcripts (``LRANGE``, 32 sessions per round trip) in activity order and
        stops once ``limit`` sessions matched: it costs a transfer of every transcript it looks
        at. See ``docs/REDIS.md``.
        """
        return self._run(self._op_search(query, match))
