"""``RedisSessionBackend``: chat sessions in Redis (standalone or Cluster), and an asyncio twin.

>>> from turnlog.redis_backend import RedisSessionBackend
>>> store = RedisSessionBackend("redis://127.0.0.1:6379/0")
>>> store.append("telegram_user123", {"role": "user", "content": "hello"})
>>> store.load("telegram_user123", limit=50)

Needs ``pip install 'turnlog[redis]'`` (redis-py 5 or newer) and Redis 6.2 or newer. ``import
turnlog`` never imports redis; only ``import turnlog.redis_backend`` does.

Layout, with the default prefix ``turnlog:`` and ``<name>`` the session key's file name (the JSONL
store's reversible encoding: ASCII letters, digits, ``_``, ``-`` and ``%XX``)::

    turnlog:{<name>}:messages   list: one element per message, the exact JSON line the JSONL
                                store writes for it, without the newline
    turnlog:{<name>}:meta       hash: created_at, last_activity (microseconds since the epoch),
                                name, agent_alias, channel_id, room_id, sender_id, state,
                                turn_id, turn_started_at
    turnlog:{<name>}:ops        hash: the id of each recent write to the session -> its result
    turnlog:{<name>}:op-order   list: the same ids, oldest first (to forget the oldest)
    turnlog:sessions            sorted set: every session's <name>, scored by last activity
    turnlog:running             sorted set: sessions in the "running" state, by turn start

The ``{<name>}`` hash tag puts the keys of a session in one Cluster slot, so every per-session
change is one Lua script, atomic on the server. On a standalone server the same script also
updates the two sorted sets (fully atomic). On a Cluster the sorted sets live in other slots, so
they are updated by separate commands right after the script: after a client crash between the
two they can lag (a session missing from ``list_sessions`` until its next write, or a deleted one
still indexed, which every listing filters out); ``repair_index()`` rebuilds them with SCAN. See
``docs/REDIS.md``.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions

from . import _format, _meta
from ._checks import MAX_LIMIT, check_amount, check_limit, check_text
from ._impl import ChatMessage
from ._jsonl import search_words
from ._types import SessionMetadata, SessionQuery, SessionState
from .backend import MessageLike, SessionBackend

__all__ = [
    "DEFAULT_PREFIX",
    "AsyncRedisSessionBackend",
    "RedisSessionBackend",
    "RedisUnavailableError",
]

#: The prefix of every key the backend writes, unless another is given.
DEFAULT_PREFIX = "turnlog:"
STATES = ("idle", "running", "error")
Clock = Callable[[], datetime]
Match = Literal["all", "any"]
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
#: Elements read from the end by ``remove_last``/``update_last`` before falling back to a full
#: read (only a list ending in foreign, invalid elements needs more).
_TAIL = 8
#: Optimistic attempts of a compare-and-set edit before giving up (each failed attempt means
#: another client changed the session's tail in between, so some client made progress).
_ATTEMPTS = 1000
#: How many write results each session remembers (the oldest are forgotten first), so that
#: redis-py resending a script whose reply was lost to a broken connection gets that result
#: instead of running it again; and after how long without writes a session forgets them all
#: (ms). A resend comes within redis-py's retry budget (seconds): a chat session sees far fewer
#: than _OP_CAP writes in that time.
_OP_CAP = 1000
_OP_KEEP_MS = 600_000
#: Commands per pipeline round trip, and sessions per search batch.
_BATCH = 1000
_SEARCH_BATCH = 32
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class RedisUnavailableError(redis.exceptions.ConnectionError, builtins.ConnectionError):
    """Redis could not be reached, the connection broke, or the call timed out.

    A subclass of both the built-in ``ConnectionError`` (an ``OSError``) and redis-py's
    ``redis.exceptions.ConnectionError``, so either ``except`` clause catches it; the redis-py
    error is its ``__cause__``. A write that raised it is not acknowledged: it may not have been
    applied (connection refused: certainly not), or, if the connection broke after the server ran
    it, it may have been. A call that returns normally was applied by the server.
    """


# --- Lua ----------------------------------------------------------------------------------------

# Every write script takes KEYS = (messages, meta, ops, op-order) and, on a standalone server, also
# (index, running), and ARGV = (op id, now in microseconds or '' for the server's clock, index
# member, key TTL in ms or '', ...). It returns {code, activity, running}: activity is the new last
# activity ('' if unchanged), running is '' (unchanged), '-' (no longer running) or the start of
# a new turn.
#
# Exactly once: a call's writes all carry one random op id (every attempt of a compare-and-set
# loop too). A script that applies a write records the id and its result in the session's `ops`
# hash (and the id at the end of `op-order`) in the same atomic step; a script whose id is
# recorded returns the recorded result and changes nothing. So when redis-py resends a script
# whose reply was lost, even after other clients wrote to the session, the resend answers what
# the first run did; and a compare-and-set loop, whose later attempts carry the same id, never
# applies a second edit once one attempt was applied. An attempt answered 'retry' changed nothing
# and records nothing. A session keeps its last _OP_CAP results (`op-order` evicts the oldest),
# and both keys expire _OP_KEEP_MS after its last write.
_PRELUDE = (
    f"local KEEP, CAP = {_OP_KEEP_MS}, {_OP_CAP}\n"
    + """
local msgs, meta, ops, order = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local index, running = KEYS[5], KEYS[6]
local op, member, ttl = ARGV[1], ARGV[3], ARGV[4]
if op ~= '' then
  local recorded = redis.call('HGET', ops, op)
  if recorded then return cjson.decode(recorded) end
end
local now = ARGV[2]
if now == '' then
  local t = redis.call('TIME')
  now = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
end
local function activity()
  redis.call('HSETNX', meta, 'created_at', now)
  redis.call('HSET', meta, 'last_activity', now)
  if index then redis.call('ZADD', index, now, member) end
end
local function push(first, last)
  for i = first, last, 1000 do
    redis.call('RPUSH', msgs, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
local function record(result)
  redis.call('HSET', ops, op, cjson.encode(result))
  if redis.call('RPUSH', order, op) > CAP then
    redis.call('HDEL', ops, redis.call('LPOP', order))
  end
  redis.call('PEXPIRE', ops, KEEP)
  redis.call('PEXPIRE', order, KEEP)
end
local function done(result)
  if op ~= '' then record(result) end
  if ttl ~= '' then
    redis.call('PEXPIRE', msgs, ttl)
    redis.call('PEXPIRE', meta, ttl)
  end
  return result
end
"""
)

# ARGV[5..]: the lines to push.
_APPEND = """
push(5, #ARGV)
activity()
return done({'1', now, ''})
"""

# ARGV[5]: 'pop' or 'set'; ARGV[6]: the new line (for 'set'); ARGV[7..]: what the client read
# from the newest valid element to the end. Applied only if the tail still holds exactly that.
_EDIT_LAST = """
local n = #ARGV - 6
local tail = redis.call('LRANGE', msgs, -n, -1)
if #tail ~= n then return {'retry', '', ''} end
for i = 1, n do
  if tail[i] ~= ARGV[6 + i] then return {'retry', '', ''} end
end
if ARGV[5] == 'pop' then
  redis.call('RPOP', msgs, n)
  push(8, #ARGV)
else
  redis.call('LSET', msgs, -n, ARGV[6])
end
activity()
return done({'1', now, ''})
"""

# Recorded even when there is nothing to clear: run again after another client's append, it would
# clear that.
_CLEAR = """
local n = redis.call('LLEN', msgs)
if n == 0 then return done({'0', '', ''}) end
redis.call('DEL', msgs)
activity()
return done({tostring(n), now, ''})
"""

# Recorded (in `ops`, which it keeps): run again after another client recreated the session, it
# would delete that.
_DELETE = """
local existed = redis.call('DEL', msgs, meta)
if index then
  redis.call('ZREM', index, member)
  redis.call('ZREM', running, member)
end
return done({tostring(existed), '', '-'})
"""

# ARGV[5]: a field to set to now ('' for none); ARGV[6]: '+' (now running), '-' (not running) or
# ''; ARGV[7]: how many fields to delete; then those fields; then field, value pairs to set.
_SET_META = """
redis.call('HSETNX', meta, 'created_at', now)
redis.call('HSETNX', meta, 'last_activity', now)
local last = redis.call('HGET', meta, 'last_activity')
if index then redis.call('ZADD', index, last, member) end
if ARGV[5] ~= '' then redis.call('HSET', meta, ARGV[5], now) end
local k = tonumber(ARGV[7])
if k > 0 then redis.call('HDEL', meta, unpack(ARGV, 8, 7 + k)) end
if #ARGV > 7 + k then redis.call('HSET', meta, unpack(ARGV, 8 + k, #ARGV)) end
local run = ''
if ARGV[6] == '+' then
  run = now
  if running then redis.call('ZADD', running, now, member) end
elseif ARGV[6] == '-' then
  run = '-'
  if running then redis.call('ZREM', running, member) end
end
return done({'1', last, run})
"""

# ARGV[5]: a tombstone no message can equal; ARGV[6..]: position, element pairs of the invalid
# elements the client found. Removed only if each position still holds that element.
_COMPACT = """
for i = 6, #ARGV, 2 do
  if redis.call('LINDEX', msgs, ARGV[i]) ~= ARGV[i + 1] then return {'retry', '', ''} end
end
for i = 6, #ARGV, 2 do redis.call('LSET', msgs, ARGV[i], ARGV[5]) end
local removed = redis.call('LREM', msgs, 0, ARGV[5])
activity()
return done({tostring(removed), now, ''})
"""

# ARGV[5]: the cutoff. Deletes the session if its last activity is still before it; drops the
# index entries of a session whose keys are gone (expired). Run again, it finds the session gone,
# or (re)created or active since, so with a last activity after the cutoff: it needs no op id.
_CLEANUP = """
local last = redis.call('HGET', meta, 'last_activity')
if last and tonumber(last) >= tonumber(ARGV[5]) then return {'0', last, ''} end
local removed = redis.call('DEL', msgs, meta)
if index then
  redis.call('ZREM', index, member)
  redis.call('ZREM', running, member)
end
if removed > 0 then removed = 1 end
return {tostring(removed), '', '-'}
"""


# ARGV[5..7]: created_at, last_activity, turn_started_at in microseconds ('' keeps that one). An
# importer's times, so unlike `activity()` they may go back: the index (and, for a running
# session, the running set) gets exactly the time given. `turn_started_at` only on a session
# running or in error, as the other stores; a missing session stays missing ('0'). Recorded
# either way: run again after another client's write, it would move that write's activity back
# (or date a session created since).
_SET_TIMES = """
if redis.call('EXISTS', meta) == 0 then return done({'0', '', ''}) end
if ARGV[5] ~= '' then redis.call('HSET', meta, 'created_at', ARGV[5]) end
local last = ARGV[6]
if last ~= '' then
  redis.call('HSET', meta, 'last_activity', last)
  if index then redis.call('ZADD', index, last, member) end
end
local run = ''
local state = redis.call('HGET', meta, 'state')
if ARGV[7] ~= '' and (state == 'running' or state == 'error') then
  redis.call('HSET', meta, 'turn_started_at', ARGV[7])
  if state == 'running' then
    run = ARGV[7]
    if running then redis.call('ZADD', running, run, member) end
  end
end
return done({'1', last, run})
"""


@dataclass(frozen=True)
class _Script:
    text: bytes
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        text = (_PRELUDE + body).encode("utf-8")
        return cls(text, hashlib.sha1(text).hexdigest())


_SCRIPTS = {
    name: _Script.of(body)
    for name, body in {
        "append": _APPEND,
        "edit_last": _EDIT_LAST,
        "clear": _CLEAR,
        "delete": _DELETE,
        "set_meta": _SET_META,
        "compact": _COMPACT,
        "cleanup": _CLEANUP,
        "set_times": _SET_TIMES,
    }.items()
}


# --- what an operation asks of the server -------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One client method call: ``client.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Batch:
    """Calls sent in pipelines (not a transaction); the result is the list of their results."""

    calls: tuple[_Call, ...]


@dataclass(frozen=True)
class _Eval:
    """A Lua script over one session's keys; the result is its reply."""

    script: _Script
    keys: tuple[str, ...]
    args: tuple[bytes | str | int, ...]


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


def _by_activity(sessions: list[SessionMetadata]) -> list[SessionMetadata]:
    """Most recently active first; ties by key (as the JSONL and SQLite stores order them)."""
    return sorted(sessions, key=lambda m: (-_us(m.last_activity or _EPOCH), m.key))


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


# --- the operations, shared by both backends ----------------------------------------------------


class _RedisCore:
    """Keys, checks and operations (as effect generators) of both Redis backends."""

    _client: Any

    def _configure(
        self,
        prefix: str,
        cluster: bool,
        clock: Clock | None,
        expire_after: float | None,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must not contain '{{' or '}}' (hash tags): {prefix!r}")
        check_text(prefix, "prefix")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be callable or None, not {type(clock).__name__}")
        self._prefix = prefix
        self._cluster = cluster
        self._clock = clock
        if expire_after is None:
            self._ttl = ""
        else:
            seconds = check_amount(expire_after, "expire_after")
            self._ttl = str(max(1, round(seconds * 1000)))
        self._index = prefix + "sessions"
        self._running = prefix + "running"

    # --- keys -----------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The prefix of every key this backend uses."""
        return self._prefix

    @property
    def cluster(self) -> bool:
        """Whether the backend talks to a Redis Cluster (the sorted sets are then updated after
        each per-session script instead of inside it)."""
        return self._cluster

    def messages_key(self, session_key: str) -> str:
        """The Redis key of the list that holds the session's messages (checks the key)."""
        return f"{self._prefix}{{{_format.key_to_name(session_key)}}}:messages"

    def meta_key(self, session_key: str) -> str:
        """The Redis key of the hash that holds the session's metadata (checks the key)."""
        return f"{self._prefix}{{{_format.key_to_name(session_key)}}}:meta"

    def _keys_of(self, name: str) -> tuple[str, str]:
        return f"{self._prefix}{{{name}}}:messages", f"{self._prefix}{{{name}}}:meta"

    def _script_keys(self, name: str) -> tuple[str, ...]:
        tag = f"{self._prefix}{{{name}}}"
        keys = (*self._keys_of(name), f"{tag}:ops", f"{tag}:op-order")
        return keys if self._cluster else (*keys, self._index, self._running)

    def _now(self) -> str:
        """``now`` for a script: the injected clock's time, or '' for the server's clock."""
        return "" if self._clock is None else str(_us(self._clock()))

    def _write(
        self, script: str, name: str, args: Sequence[bytes | str | int], *, idempotent: bool = True
    ) -> _Eval:
        op = os.urandom(12).hex() if idempotent else ""
        return _Eval(
            _SCRIPTS[script],
            self._script_keys(name),
            (op, self._now(), name, self._ttl, *args),
        )

    # --- keeping the sorted sets in step on a Cluster -------------------------------------------

    def _follow(self, name: str, result: Sequence[Any]) -> _Op[None]:
        """On a Cluster, apply a script's result to the sorted sets (a standalone server's
        script already did)."""
        if not self._cluster:
            return
        activity, run = _str(result[1]) or "", _str(result[2]) or ""
        if activity:
            yield _Call("zadd", (self._index, {name: int(activity)}), {"gt": True})
        if run == "-":
            yield _Call("zrem", (self._running, name))
            yield from self._settle(name)
        elif run:
            yield _Call("zadd", (self._running, {name: int(run)}))

    def _unindex(self, name: str) -> _Op[None]:
        """On a Cluster, drop a deleted session from the sorted sets."""
        if not self._cluster:
            return
        yield _Call("zrem", (self._index, name))
        yield _Call("zrem", (self._running, name))
        yield from self._settle(name)

    def _settle(self, name: str) -> _Op[None]:
        """After removing ``name`` from a sorted set (or moving its score back), put it back if
        its metadata (read after that) says it belongs there: a client that changes the metadata
        later also updates the set later, so whichever order the two clients' commands ran in,
        the set is right."""
        raw = yield _Call(
            "hmget", (self._keys_of(name)[1], "last_activity", "state", "turn_started_at")
        )
        last, state, started = (_str(value) for value in raw)
        if last is not None and last.isdigit():
            yield _Call("zadd", (self._index, {name: int(last)}), {"gt": True})
        if state == "running" and started is not None and started.isdigit():
            yield _Call("zadd", (self._running, {name: int(started)}))

    # --- messages -------------------------------------------------------------------------------

    def _op_load(self, session_key: str, limit: int | None) -> _Op[list[ChatMessage]]:
        name = _format.key_to_name(session_key)
        limit = check_limit(limit)
        messages = self._keys_of(name)[0]
        if limit is None:
            return _messages((yield _Call("lrange", (messages, 0, -1))))
        if limit == 0:
            return []
        window = limit
        while True:
            # One LRANGE is one consistent snapshot; a tail holding invalid elements is read
            # again, further back, until it holds `limit` valid messages or is the whole list.
            elements = yield _Call("lrange", (messages, -window, -1))
            found = _messages(elements)
            if len(found) >= limit or len(elements) < window:
                return found[len(found) - min(limit, len(found)) :]
            # LRANGE takes int64 indexes.
            window = min(window * 4 + _TAIL, MAX_LIMIT)

    def _op_append(self, session_key: str, lines: list[bytes]) -> _Op[None]:
        name = _format.key_to_name(session_key)
        if not lines:
            return
        result = yield self._write("append", name, lines)
        yield from self._follow(name, result)

    def _op_edit_last(self, session_key: str, line: bytes | None) -> _Op[bool]:
        """Remove (``line`` is ``None``) or replace the newest valid message."""
        name = _format.key_to_name(session_key)
        messages = self._keys_of(name)[0]
        # One op id for every attempt: once an attempt was applied, any later one (or redis-py's
        # resend of it) gets that attempt's recorded result, so no second message is edited.
        write = self._write("edit_last", name, ())
        for _ in range(_ATTEMPTS):
            tail = [_bytes(element) for element in (yield _Call("lrange", (messages, -_TAIL, -1)))]
            position = _newest_valid(tail)
            if position is None and len(tail) == _TAIL:
                tail = [_bytes(element) for element in (yield _Call("lrange", (messages, 0, -1)))]
                position = _newest_valid(tail)
            if position is None:
                return False
            mode = ("pop", b"") if line is None else ("set", line)
            attempt = _Eval(write.script, write.keys, (*write.args, *mode, *tail[position:]))
            result = yield attempt
            if _str(result[0]) != "retry":
                yield from self._follow(name, result)
                return True
        raise RuntimeError(
            f"turnlog: gave up changing the last message of {session_key!r} after {_ATTEMPTS} "
            "attempts: other clients kept changing it"
        )

    def _op_clear(self, session_key: str) -> _Op[int]:
        name = _format.key_to_name(session_key)
        result = yield self._write("clear", name, ())
        yield from self._follow(name, result)
        return int(_str(result[0]) or 0)

    def _op_compact(self, session_key: str) -> _Op[None]:
        name = _format.key_to_name(session_key)
        messages = self._keys_of(name)[0]
        write = self._write("compact", name, ())  # one op id for every attempt, as above
        for _ in range(_ATTEMPTS):
            elements = [_bytes(e) for e in (yield _Call("lrange", (messages, 0, -1)))]
            pairs: list[bytes | str | int] = []
            parsed = _format.parse_lines(elements)
            for position, (element, message) in enumerate(zip(elements, parsed, strict=True)):
                if message is None:
                    pairs += [position, element]
            if not pairs:
                return
            # \xff never occurs in UTF-8, so no message (valid or not UTF-8 at all but with
            # this random tail) is the tombstone.
            tombstone = b"\xff turnlog tombstone " + os.urandom(16).hex().encode()
            result = yield _Eval(write.script, write.keys, (*write.args, tombstone, *pairs))
            if _str(result[0]) != "retry":
                yield from self._follow(name, result)
                return
        raise RuntimeError(f"turnlog: gave up compacting {session_key!r}: it kept changing")

    def _op_delete(self, session_key: str) -> _Op[bool]:
        name = _format.key_to_name(session_key)
        result = yield self._write("delete", name, ())
        yield from self._unindex(name)
        return int(_str(result[0]) or 0) > 0

    # --- sessions -------------------------------------------------------------------------------

    def _members(self, index: str) -> _Op[list[str]]:
        raw = yield _Call("zrange", (index, 0, -1))
        return [name for name in (_str(member) for member in raw) if name is not None]

    def _op_list(self) -> _Op[list[str]]:
        names = yield from self._members(self._index)
        exists = yield _Batch(tuple(_Call("exists", (self._keys_of(n)[1],)) for n in names))
        keys = []
        for name, found in zip(names, exists, strict=True):
            key = _format.name_to_key(name)
            if found and key is not None:
                keys.append(key)
        return sorted(keys)

    def _op_exists(self, session_key: str) -> _Op[bool]:
        meta = self.meta_key(session_key)
        return bool((yield _Call("exists", (meta,))))

    def _op_metadata_of(self, names: Sequence[str]) -> _Op[list[tuple[SessionMetadata, Any]]]:
        """``(metadata, meta hash)`` of each of ``names`` that exists, most recently active
        first."""
        calls: list[_Call] = []
        for name in names:
            messages, meta = self._keys_of(name)
            calls += [_Call("hgetall", (meta,)), _Call("llen", (messages,))]
        replies = yield _Batch(tuple(calls))
        found = []
        for position, name in enumerate(names):
            fields = _hash(replies[2 * position])
            key = _format.name_to_key(name)
            if fields and key is not None:
                found.append((_metadata(key, fields, replies[2 * position + 1]), fields))
        order = {m.key: i for i, m in enumerate(_by_activity([m for m, _ in found]))}
        return sorted(found, key=lambda pair: order[pair[0].key])

    def _op_metadata(self, session_key: str) -> _Op[SessionMetadata | None]:
        found = yield from self._op_metadata_of([_format.key_to_name(session_key)])
        return found[0][0] if found else None

    def _op_all_metadata(self) -> _Op[list[SessionMetadata]]:
        names = yield from self._members(self._index)
        found = yield from self._op_metadata_of(names)
        return [metadata for metadata, _ in found]

    def _op_cutoff(self, age_us: int) -> _Op[int]:
        now = _us(self._clock()) if self._clock else _server_time((yield _Call("time")))
        return max(now - age_us, -(2**62))

    def _op_cleanup(self, ttl_hours: float) -> _Op[int]:
        hours = check_amount(ttl_hours, "ttl_hours")
        cutoff = yield from self._op_cutoff(round(hours * 3_600_000_000))
        raw = yield _Call("zrangebyscore", (self._index, "-inf", f"({cutoff}"))
        removed = 0
        for name in (_str(member) for member in raw):
            if name is None:
                continue
            result = yield self._write("cleanup", name, (cutoff,), idempotent=False)
            if _str(result[2]) == "-":
                yield from self._unindex(name)
            removed += int(_str(result[0]) or 0)
        return removed

    def _op_repair(self) -> _Op[int]:
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._prefix) + "{*}:meta"
        metas = [_str(key) or "" for key in (yield _Scan(pattern))]
        start, end = len(self._prefix) + 1, -len("}:meta")
        names = [key[start:end] for key in metas if _format.name_to_key(key[start:end])]
        replies = yield _Batch(
            tuple(
                _Call("hmget", (self._keys_of(n)[1], "last_activity", "state", "turn_started_at"))
                for n in names
            )
        )
        indexed = dict((yield _Call("zrange", (self._index, 0, -1), {"withscores": True})))
        running = dict((yield _Call("zrange", (self._running, 0, -1), {"withscores": True})))
        indexed = {_str(k): v for k, v in indexed.items()}
        running = {_str(k): v for k, v in running.items()}
        fixes: list[_Call] = []
        for name, (last, state, started) in zip(names, replies, strict=True):
            last, state, started = _str(last), _str(state), _str(started)
            if last is not None and last.isdigit() and indexed.get(name) != float(last):
                fixes.append(_Call("zadd", (self._index, {name: int(last)})))
            is_running = state == "running" and started is not None and started.isdigit()
            if is_running and name not in running:
                fixes.append(_Call("zadd", (self._running, {name: int(cast(str, started))})))
            if not is_running and name in running:
                fixes.append(_Call("zrem", (self._running, name)))
        yield _Batch(tuple(fixes))
        gone = (set(indexed) | set(running)) - set(names)
        for name in sorted(n for n in gone if n is not None):
            if self._cluster:
                yield from self._unindex(name)
            else:
                yield self._write("cleanup", name, (-(2**62),), idempotent=False)
        # Sessions in the sorted sets whose metadata changed meanwhile put themselves back.
        for name in {n for n in running if n is not None} - gone:
            yield from self._settle(name)
        return len(fixes) + len(gone)

    # --- names, alias, context, state -----------------------------------------------------------

    def _op_set_meta(
        self,
        session_key: str,
        values: dict[str, str | None],
        *,
        stamp: str = "",
        running: str = "",
        delete: Sequence[str] = (),
    ) -> _Op[None]:
        name = _format.key_to_name(session_key)
        pairs: list[bytes | str | int] = []
        for field_name, value in values.items():
            if value is not None:
                pairs += [field_name, value]
        args: list[bytes | str | int] = [stamp, running, len(delete), *delete, *pairs]
        result = yield self._write("set_meta", name, args)
        yield from self._follow(name, result)

    def _op_state_change(self, session_key: str, state: str, turn_id: str | None) -> _Op[None]:
        _format.key_to_name(session_key)
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
        check_text(turn_id, "turn_id", optional=True)
        if state == "running":
            delete = () if turn_id is not None else ("turn_id",)
            yield from self._op_set_meta(
                session_key,
                {"state": "running", "turn_id": turn_id},
                stamp="turn_started_at",
                running="+",
                delete=delete,
            )
        elif state == "idle":
            yield from self._op_set_meta(
                session_key,
                {"state": "idle"},
                running="-",
                delete=("turn_id", "turn_started_at"),
            )
        else:
            yield from self._op_set_meta(
                session_key, {"state": "error", "turn_id": turn_id}, running="-"
            )

    def _op_set_times(
        self,
        session_key: str,
        created_at: datetime | None,
        last_activity: datetime | None,
        turn_started_at: datetime | None,
    ) -> _Op[bool]:
        name = _format.key_to_name(session_key)
        # Checked before the first yield: bad input raises before anything is sent.
        args: list[bytes | str | int] = [
            "" if when is None else _us(when)
            for when in _meta.checked_times(created_at, last_activity, turn_started_at)
        ]
        result = yield self._write("set_times", name, args)
        if _str(result[0]) != "1":
            return False
        if self._cluster:
            activity = _str(result[1]) or ""
            if activity:
                # Exact, not `_follow`'s ZADD GT: an importer's time is usually older than the
                # score, which GT would keep.
                yield _Call("zadd", (self._index, {name: int(activity)}))
            # Re-read the hash: a client whose write ran after the script (and whose own ZADD
            # may have come before ours) gets its newer activity back; the running set gets
            # the turn start the hash now holds.
            yield from self._settle(name)
        return True

    def _op_get_field(self, session_key: str, field_name: str) -> _Op[str | None]:
        meta = self.meta_key(session_key)
        return _str((yield _Call("hget", (meta, field_name))))

    def _op_get_state(self, session_key: str) -> _Op[SessionState | None]:
        meta = self.meta_key(session_key)
        raw = yield _Call("hgetall", (meta,))
        fields = _hash(raw)
        return _state(fields) if fields else None

    def _op_running(self, cutoff_age_us: int | None) -> _Op[list[SessionMetadata]]:
        if cutoff_age_us is None:
            names = yield from self._members(self._running)
            cutoff = None
        else:
            cutoff = yield from self._op_cutoff(cutoff_age_us)
            raw = yield _Call("zrangebyscore", (self._running, "-inf", cutoff))
            names = [name for name in (_str(member) for member in raw) if name is not None]
        found = yield from self._op_metadata_of(names)
        result = []
        for metadata, meta in found:
            state = _state(meta)
            if state.state != "running":
                continue  # a lagging entry: the metadata is the truth
            if cutoff is not None and (
                state.turn_started_at is None or _us(state.turn_started_at) > cutoff
            ):
                continue
            result.append(metadata)
        return result

    # --- search ---------------------------------------------------------------------------------

    def _op_search(self, query: SessionQuery, match: str) -> _Op[list[SessionMetadata]]:
        if not isinstance(query, SessionQuery):
            raise TypeError(f"query must be a SessionQuery, not {type(query).__name__}")
        if match not in ("all", "any"):
            raise ValueError(f"match must be 'all' or 'any', not {match!r}")
        keyword = check_text(query.keyword, "query.keyword", optional=True) or ""
        limit = check_limit(query.limit)
        sessions = yield from self._op_all_metadata()
        words = search_words(keyword)
        if not words:
            return sessions if limit is None else sessions[:limit]
        match_all = match == "all"
        found: list[SessionMetadata] = []
        for start in range(0, len(sessions), _SEARCH_BATCH):
            if limit is not None and len(found) >= limit:
                break
            batch = sessions[start : start + _SEARCH_BATCH]
            replies = yield _Batch(
                tuple(_Call("lrange", (self.messages_key(m.key), 0, -1)) for m in batch)
            )
            for metadata, elements in zip(batch, replies, strict=True):
                for message in _messages(elements):
                    content = message.content.lower()
                    hits = (word in content for word in words)
                    if all(hits) if match_all else any(hits):
                        found.append(metadata)
                        break
        return found if limit is None else found[:limit]


def _lines(messages: Iterable[MessageLike]) -> list[bytes]:
    return [_encode(message) for message in messages]


# --- the synchronous backend --------------------------------------------------------------------


class RedisSessionBackend(_RedisCore, SessionBackend):
    """Chat sessions in Redis: a list of JSON lines, a metadata hash and two sorted sets.

    Every ``SessionBackend`` method is implemented and answers as the JSONL and SQLite stores do
    (same key checks, same exceptions for bad input, same message bytes, same search rule).
    Each per-session change is one Lua script, atomic on the server; see the module docs and
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
        if cluster is not None and not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool or None, not {type(cluster).__name__}")
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self._where = url_or_client
            self._configure(prefix, bool(cluster), clock, expire_after)
            try:
                if cluster:
                    self._client = redis.cluster.RedisCluster.from_url(
                        url_or_client, **client_options
                    )
                else:
                    self._client = redis.Redis.from_url(url_or_client, **client_options)
            except redis.exceptions.RedisClusterException as error:
                # What RedisCluster raises when no startup node answers.
                raise _wrap(error, self._where) from error
            except Exception as error:
                if _is_unavailable(error):
                    raise _wrap(error, self._where) from error
                raise
        elif isinstance(url_or_client, (redis.Redis, redis.cluster.RedisCluster)):
            is_cluster = isinstance(url_or_client, redis.cluster.RedisCluster)
            if cluster is not None and cluster != is_cluster:
                raise ValueError(
                    f"cluster={cluster} but the client is a {type(url_or_client).__name__}"
                )
            if client_options:
                raise TypeError("client options are for a URL; configure the given client")
            self._configure(prefix, is_cluster, clock, expire_after)
            self._where = repr(url_or_client)
            self._client = url_or_client
        else:
            raise TypeError(
                "url_or_client must be a URL or a redis.Redis / redis.cluster.RedisCluster, not "
                f"{type(url_or_client).__name__}"
            )
        try:
            _check_client(self._client)
        except BaseException:
            self.close()
            raise

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, prefix={self._prefix!r})"

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
        try:
            if isinstance(effect, _Call):
                return getattr(client, effect.method)(*effect.args, **effect.kwargs)
            if isinstance(effect, _Eval):
                args = (len(effect.keys), *effect.keys, *effect.args)
                try:
                    return client.evalsha(effect.script.sha, *args)
                except redis.exceptions.NoScriptError:
                    return client.eval(effect.script.text, *args)
            if isinstance(effect, _Batch):
                results: list[Any] = []
                for start in range(0, len(effect.calls), _BATCH):
                    pipe = client.pipeline(transaction=False)
                    for call in effect.calls[start : start + _BATCH]:
                        getattr(pipe, call.method)(*call.args, **call.kwargs)
                    results += pipe.execute()
                return results
            return list(client.scan_iter(match=effect.pattern, count=1000))
        except Exception as error:
            if _is_unavailable(error):
                raise _wrap(error, self._where) from error
            raise

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
        _format.key_to_name(session_key)
        self._run(self._op_append(session_key, [_encode(message)]))

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add ``messages`` in order, atomically: all of them or none. An empty sequence does
        nothing (it does not create the session)."""
        _format.key_to_name(session_key)
        self._run(self._op_append(session_key, _lines(messages)))

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest valid message (invalid elements after it stay). ``True`` if there
        was one. Concurrent calls from any clients each remove a different message."""
        return self._run(self._op_edit_last(session_key, None))

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message in place. ``False`` (nothing written) if none.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
        """
        _format.key_to_name(session_key)
        return self._run(self._op_edit_last(session_key, _encode(message)))

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
        _format.key_to_name(session_key)
        self._run(self._op_set_meta(session_key, {"name": check_text(name, "name")}))

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name; ``None`` if unset or no such session."""
        return self._run(self._op_get_field(session_key, "name"))

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias, creating the session if needed."""
        _format.key_to_name(session_key)
        self._run(self._op_set_meta(session_key, {"agent_alias": check_text(alias, "alias")}))

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias; ``None`` if unset or no such session."""
        return self._run(self._op_get_field(session_key, "agent_alias"))

    def set_session_context(
        self,
        session_key: str,
        *,
        channel_id: str | None = None,
        room_id: str | None = None,
        sender_id: str | None = None,
    ) -> None:
        """Record the routing context, creating the session if needed; a field given as
        ``None`` keeps its value."""
        _format.key_to_name(session_key)
        values = {
            "channel_id": check_text(channel_id, "channel_id", optional=True),
            "room_id": check_text(room_id, "room_id", optional=True),
            "sender_id": check_text(sender_id, "sender_id", optional=True),
        }
        self._run(self._op_set_meta(session_key, values))

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

    def set_session_times(
        self,
        session_key: str,
        *,
        created_at: datetime | None = None,
        last_activity: datetime | None = None,
        turn_started_at: datetime | None = None,
    ) -> bool:
        """Set an existing session's times (for importers: ``turnlog.migrate`` keeps the
        source's), as ``SqliteSessionBackend.set_session_times`` does.

        One script sets them in the metadata hash and the sorted sets together (on a Cluster
        the sorted sets right after it, as for every write): the index's score is the given last
        activity, even an older one, and a running session's ``running`` score the given turn
        start, so ``cleanup_stale`` and ``list_stuck_sessions`` judge it by the given times.
        ``None`` leaves a time unchanged; ``turn_started_at`` is set only on a session that is
        running or in error (an idle one has no turn). Like every write it renews the
        ``expire_after`` TTL.

        Returns:
            ``False`` (and nothing changed) if the session does not exist.

        Raises:
            TypeError, ValueError: a bad key, or a time that is not a timezone-aware datetime
                (nothing is sent).
            RedisUnavailableError: not acknowledged (see the exception).
        """
        return self._run(
            self._op_set_times(session_key, created_at, last_activity, turn_started_at)
        )

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        return self._run(self._op_running(None))

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running since ``threshold_secs`` or longer, the most recently active
        first."""
        seconds = check_amount(threshold_secs, "threshold_secs")
        return self._run(self._op_running(round(seconds * 1_000_000)))

    def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message whose content holds the keyword, the most recently active
        first, at most ``query.limit``: the JSONL stores' rule (case-insensitive, words split on
        white space, ``match="all"`` needs every word in one message, ``"any"`` one of them).

        Reads the transcripts (``LRANGE``, 32 sessions per round trip) in activity order and
        stops once ``limit`` sessions matched: it costs a transfer of every transcript it looks
        at. See ``docs/REDIS.md``.
        """
        return self._run(self._op_search(query, match))


# --- the asyncio backend ------------------------------------------------------------------------


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
        if cluster is not None and not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool or None, not {type(cluster).__name__}")
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self._where = url_or_client
            self._configure(prefix, bool(cluster), clock, expire_after)
            # Neither constructor connects: the first call does.
            if cluster:
                self._client = redis.asyncio.cluster.RedisCluster.from_url(
                    url_or_client, **client_options
                )
            else:
                self._client = redis.asyncio.Redis.from_url(url_or_client, **client_options)
        elif isinstance(url_or_client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
            is_cluster = isinstance(url_or_client, redis.asyncio.cluster.RedisCluster)
            if cluster is not None and cluster != is_cluster:
                raise ValueError(
                    f"cluster={cluster} but the client is a {type(url_or_client).__name__}"
                )
            if client_options:
                raise TypeError("client options are for a URL; configure the given client")
            self._configure(prefix, is_cluster, clock, expire_after)
            self._where = repr(url_or_client)
            self._client = url_or_client
        else:
            raise TypeError(
                "url_or_client must be a URL or a redis.asyncio.Redis / "
                f"redis.asyncio.cluster.RedisCluster, not {type(url_or_client).__name__}"
            )
        _check_client(self._client)

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, prefix={self._prefix!r})"

    async def _run(self, op: _Op[T]) -> T:
        try:
            effect = next(op)
            while True:
                effect = op.send(await self._do(effect))
        except StopIteration as stop:
            return cast(T, stop.value)

    async def _do(self, effect: _Effect) -> Any:
        client = self._client
        try:
            if isinstance(effect, _Call):
                return await getattr(client, effect.method)(*effect.args, **effect.kwargs)
            if isinstance(effect, _Eval):
                args = (len(effect.keys), *effect.keys, *effect.args)
                try:
                    return await client.evalsha(effect.script.sha, *args)
                except redis.exceptions.NoScriptError:
                    return await client.eval(effect.script.text, *args)
            if isinstance(effect, _Batch):
                results: list[Any] = []
                for start in range(0, len(effect.calls), _BATCH):
                    pipe = client.pipeline(transaction=False)
                    for call in effect.calls[start : start + _BATCH]:
                        getattr(pipe, call.method)(*call.args, **call.kwargs)
                    results += await pipe.execute()
                return results
            return [key async for key in client.scan_iter(match=effect.pattern, count=1000)]
        except Exception as error:
            if _is_unavailable(error):
                raise _wrap(error, self._where) from error
            raise

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
        _format.key_to_name(session_key)
        await self._run(self._op_append(session_key, [_encode(message)]))

    async def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """See ``RedisSessionBackend.append_many``."""
        _format.key_to_name(session_key)
        await self._run(self._op_append(session_key, _lines(messages)))

    async def remove_last(self, session_key: str) -> bool:
        """See ``RedisSessionBackend.remove_last``."""
        return await self._run(self._op_edit_last(session_key, None))

    async def update_last(self, session_key: str, message: MessageLike) -> bool:
        """See ``RedisSessionBackend.update_last``."""
        _format.key_to_name(session_key)
        return await self._run(self._op_edit_last(session_key, _encode(message)))

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
        _format.key_to_name(session_key)
        await self._run(self._op_set_meta(session_key, {"name": check_text(name, "name")}))

    async def get_session_name(self, session_key: str) -> str | None:
        """See ``RedisSessionBackend.get_session_name``."""
        return await self._run(self._op_get_field(session_key, "name"))

    async def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """See ``RedisSessionBackend.set_session_agent_alias``."""
        _format.key_to_name(session_key)
        values = {"agent_alias": check_text(alias, "alias")}
        await self._run(self._op_set_meta(session_key, values))

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
        _format.key_to_name(session_key)
        values = {
            "channel_id": check_text(channel_id, "channel_id", optional=True),
            "room_id": check_text(room_id, "room_id", optional=True),
            "sender_id": check_text(sender_id, "sender_id", optional=True),
        }
        await self._run(self._op_set_meta(session_key, values))

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
        seconds = check_amount(threshold_secs, "threshold_secs")
        return await self._run(self._op_running(round(seconds * 1_000_000)))

    async def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """See ``RedisSessionBackend.search``."""
        return await self._run(self._op_search(query, match))
