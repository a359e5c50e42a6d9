"""What an operation of the Redis backends asks of the server (the effects ``_Call``, ``_Batch``,
``_Eval``, ``_Scan``), the error a client raises when Redis is out of reach, and the small helpers
that turn replies into turnlog's types.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, cast

import redis.exceptions

from ..._impl import ChatMessage
from ..._rules import STATES
from ..._types import SessionMetadata, SessionState
from ...backend import MessageLike
from .. import format as _format
from .scripts import _Script

Clock = Callable[[], datetime]
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: Commands per pipeline round trip.
_BATCH = 1000


class RedisUnavailableError(redis.exceptions.ConnectionError, builtins.ConnectionError):
    """Redis could not be reached, the connection broke, or the call timed out.

    A subclass of both the built-in ``ConnectionError`` (an ``OSError``) and redis-py's
    ``redis.exceptions.ConnectionError``, so either ``except`` clause catches it; the redis-py
    error is its ``__cause__``. A write that raised it is not acknowledged: it may not have been
    applied (connection refused: certainly not), or, if the connection broke after the server ran
    it, it may have been. A call that returns normally was applied by the server.
    """


# --- what an operation asks of the server -------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One client method call: ``client.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def on(self, target: Any) -> Any:
        """Make the call on ``target`` (a client or a pipeline): its result, or, on an asyncio
        client, the awaitable of it."""
        return getattr(target, self.method)(*self.args, **self.kwargs)


@dataclass(frozen=True)
class _Batch:
    """Calls sent in pipelines (not a transaction); the result is the list of their results."""

    calls: tuple[_Call, ...]

    def pipelines(self, client: Any) -> Iterator[Any]:
        """Pipelines of ``client`` holding the calls in order, ``_BATCH`` at the most each, one
        at a time: the next is filled once the caller has executed the one before."""
        for start in range(0, len(self.calls), _BATCH):
            pipe = client.pipeline(transaction=False)
            for call in self.calls[start : start + _BATCH]:
                call.on(pipe)
            yield pipe


@dataclass(frozen=True)
class _Eval:
    """A Lua script over one session's keys; the result is its reply."""

    script: _Script
    keys: tuple[str, ...]
    args: tuple[bytes | str | int, ...]

    def by_sha(self) -> tuple[Any, ...]:
        """The arguments of ``EVALSHA`` for it (``EVAL`` when the server lacks the script:
        ``by_text``)."""
        return (self.script.sha, len(self.keys), *self.keys, *self.args)

    def by_text(self) -> tuple[Any, ...]:
        """The arguments of ``EVAL`` for it."""
        return (self.script.text, len(self.keys), *self.keys, *self.args)


@dataclass(frozen=True)
class _Scan:
    """Every key matching ``pattern`` (on every primary of a Cluster)."""

    pattern: str


_Effect = _Call | _Batch | _Eval | _Scan
#: An operation: a generator that yields what it needs from the server and gets the answers
#: back; the sync and the async backend run the same operations with their own clients.
_Op = Generator[_Effect, Any, T]


# --- small helpers ------------------------------------------------------------------------------


def _us(when: datetime) -> int:
    """``when`` (timezone-aware) as microseconds since the epoch."""
    if not isinstance(when, datetime):
        raise TypeError(f"the clock must return a datetime, not {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"the clock must return a timezone-aware datetime, got {when!r}")
    return (when - _EPOCH) // _MICROSECOND


def _time(raw: object) -> datetime | None:
    """The UTC datetime stored as microseconds in ``raw``; ``None`` if missing or damaged."""
    if raw is None:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(cast(Any, raw)))
    except (TypeError, ValueError, OverflowError):
        return None


def _str(raw: object) -> str | None:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return raw if isinstance(raw, str) else None


def _bytes(raw: object) -> bytes:
    return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")


def _encode(message: object) -> bytes:
    """The JSONL store's line for ``message``, without the newline (refused as it refuses it)."""
    return _format.encode_message(message)[:-1]


def _lines(messages: Iterable[MessageLike]) -> list[bytes]:
    return [_encode(message) for message in messages]


def _newest_valid(elements: Sequence[bytes]) -> int | None:
    """The position in ``elements`` of the last one that is a valid message."""
    parsed = _format.parse_lines(elements)
    return next((i for i in range(len(parsed) - 1, -1, -1) if parsed[i] is not None), None)


def _messages(elements: Iterable[object]) -> list[ChatMessage]:
    """The valid messages among ``elements``, in order (invalid ones skipped, as corrupt lines:
    the JSONL store's validator, in one call for the whole list)."""
    return [m for m in _format.parse_lines([_bytes(e) for e in elements]) if m is not None]


def _hash(raw: object) -> dict[str, Any]:
    """An HGETALL reply with text field names."""
    if not isinstance(raw, dict):
        return {}
    return {(_str(name) or ""): value for name, value in raw.items()}


def _metadata(key: str, meta: dict[str, Any], count: object) -> SessionMetadata:
    return SessionMetadata(
        key=key,
        name=_str(meta.get("name")),
        created_at=_time(meta.get("created_at")),
        last_activity=_time(meta.get("last_activity")),
        message_count=int(cast(Any, count) or 0),
        agent_alias=_str(meta.get("agent_alias")),
        channel_id=_str(meta.get("channel_id")),
        room_id=_str(meta.get("room_id")),
        sender_id=_str(meta.get("sender_id")),
    )


def _state(meta: dict[str, Any]) -> SessionState:
    state = _str(meta.get("state"))
    return SessionState(
        state=state if state in STATES else "idle",
        turn_id=_str(meta.get("turn_id")),
        turn_started_at=_time(meta.get("turn_started_at")),
    )


def _server_time(raw: object) -> int:
    """A TIME reply (``(seconds, microseconds)``; a Cluster may answer per node) in µs."""
    if isinstance(raw, dict):
        raw = next(iter(raw.values()))
    seconds, micros = cast(Sequence[Any], raw)
    return int(seconds) * 1_000_000 + int(micros)


def _wrap(error: BaseException, where: str) -> RedisUnavailableError:
    return RedisUnavailableError(f"turnlog: Redis at {where} is unavailable: {error}")


def _is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the server could not be reached or answered in time."""
    auth = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
    if isinstance(error, (RedisUnavailableError, *auth)):
        return False
    return isinstance(
        error,
        (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterDownError,
        ),
    )


@contextmanager
def _reported(where: str) -> Iterator[None]:
    """Raise ``RedisUnavailableError`` (from it) for an error inside that means Redis at
    ``where`` is out of reach; let every other error through as it is."""
    try:
        yield
    except Exception as error:
        if _is_unavailable(error):
            raise _wrap(error, where) from error
        raise


def _check_client(client: object) -> None:
    try:
        decodes = bool(cast(Any, client).get_encoder().decode_responses)
    except AttributeError:
        return
    if decodes:
        raise ValueError(
            "turnlog needs a Redis client created with decode_responses=False: messages are "
            "bytes, and elements that are not UTF-8 must reach the validator as they are"
        )
