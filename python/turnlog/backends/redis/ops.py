"""``_RedisCore``: the keys, checks and operations both Redis backends share, free of I/O.

An operation (``_op_*``) is a generator: it checks its arguments before its first ``yield`` (bad
input raises before anything is sent), yields the effects it needs from the server
(``effects.py``) and gets their answers back; ``RedisSessionBackend`` runs it with a redis-py
client, ``AsyncRedisSessionBackend`` with an asyncio one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar, cast

from ..._impl import ChatMessage
from ..._rules import (
    MAX_LIMIT,
    by_activity,
    check_amount,
    check_limit,
    check_query,
    check_state,
    check_text,
    checked_times,
    lower,
    search_words,
)
from ..._types import SessionMetadata, SessionQuery, SessionState
from ...backend import MessageLike
from .. import format as _format
from .effects import (
    Clock,
    _Batch,
    _bytes,
    _Call,
    _encode,
    _Eval,
    _hash,
    _lines,
    _messages,
    _metadata,
    _newest_valid,
    _Op,
    _Scan,
    _server_time,
    _state,
    _str,
    _us,
)
from .scripts import _SCRIPTS

#: The prefix of every key the backend writes, unless another is given.
DEFAULT_PREFIX = "turnlog:"

#: Elements read from the end by ``remove_last``/``update_last`` before falling back to a full
#: read (only a list ending in foreign, invalid elements needs more).
_TAIL = 8
#: Optimistic attempts of a compare-and-set edit before giving up (each failed attempt means
#: another client changed the session's tail in between, so some client made progress).
_ATTEMPTS = 1000
#: Sessions per search batch.
_SEARCH_BATCH = 32
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class _RedisCore:
    """Keys, checks and operations (as effect generators) of both Redis backends."""

    #: The client classes a backend takes (plain, Cluster), and how its error messages name them.
    _CLIENT_TYPES: ClassVar[tuple[type[Any], type[Any]]]
    _CLIENT_NAMES: ClassVar[str]
    _client: Any

    def _open(
        self,
        url_or_client: object,
        prefix: str,
        cluster: bool | None,
        clock: Clock | None,
        expire_after: float | None,
        client_options: dict[str, Any],
    ) -> None:
        """The constructor's work: check the arguments, configure, and take the given client
        or open one from the URL (``_from_url``)."""
        if cluster is not None and not isinstance(cluster, bool):
            raise TypeError(f"cluster must be a bool or None, not {type(cluster).__name__}")
        self._owned = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self._where = url_or_client
            self._configure(prefix, bool(cluster), clock, expire_after)
            self._client = self._from_url(url_or_client, bool(cluster), client_options)
        elif isinstance(url_or_client, self._CLIENT_TYPES):
            is_cluster = isinstance(url_or_client, self._CLIENT_TYPES[1])
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
                f"url_or_client must be a URL or a {self._CLIENT_NAMES}, not "
                f"{type(url_or_client).__name__}"
            )

    def _from_url(self, url: str, cluster: bool, options: dict[str, Any]) -> Any:
        """A new client of ``url`` (a Cluster client if ``cluster``), of the backend's kind."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r}, prefix={self._prefix!r})"

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

    def _op_append_messages(self, session_key: str, messages: Iterable[MessageLike]) -> _Op[None]:
        """``_op_append`` of the lines of ``messages`` (the key is checked first)."""
        _format.key_to_name(session_key)
        yield from self._op_append(session_key, _lines(messages))

    def _op_update_last(self, session_key: str, message: MessageLike) -> _Op[bool]:
        """``_op_edit_last`` with the line of ``message`` (the key is checked first)."""
        _format.key_to_name(session_key)
        return (yield from self._op_edit_last(session_key, _encode(message))) is not None

    def _op_remove_last(self, session_key: str) -> _Op[bool]:
        return (yield from self._op_edit_last(session_key, None)) is not None

    def _op_pop_last(self, session_key: str) -> _Op[ChatMessage | None]:
        removed = yield from self._op_edit_last(session_key, None)
        return None if removed is None else _format.parse_line(removed)

    def _op_edit_last(self, session_key: str, line: bytes | None) -> _Op[bytes | None]:
        """Remove (``line`` is ``None``) or replace the newest valid message, atomically (the
        script applies the edit only if the tail is still what was read); the element removed
        or replaced, ``None`` when there was no valid message."""
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
                return None
            mode = ("pop", b"") if line is None else ("set", line)
            attempt = _Eval(write.script, write.keys, (*write.args, *mode, *tail[position:]))
            result = yield attempt
            if _str(result[0]) != "retry":
                yield from self._follow(name, result)
                return tail[position]
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
        order = {m.key: i for i, m in enumerate(by_activity([m for m, _ in found]))}
        return sorted(found, key=lambda pair: order[pair[0].key])

    def _op_metadata(self, session_key: str) -> _Op[SessionMetadata | None]:
        found = yield from self._op_metadata_of([_format.key_to_name(session_key)])
        return found[0][0] if found else None

    def _op_all_metadata(self) -> _Op[list[SessionMetadata]]:
        names = yield from self._members(self._index)
        found = yield from self._op_metadata_of(names)
        return [metadata for metadata, _ in found]

    def _op_cutoff(self, age_seconds: float) -> _Op[int]:
        """Now less ``age_seconds``, in microseconds (an age beyond any time: the oldest)."""
        now = _us(self._clock()) if self._clock else _server_time((yield _Call("time")))
        return max(now - round(min(age_seconds * 1_000_000, 2.0**62)), -(2**62))

    def _op_cleanup(self, ttl_hours: float) -> _Op[int]:
        hours = check_amount(ttl_hours, "ttl_hours")
        cutoff = yield from self._op_cutoff(hours * 3600)
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

    def _op_set_field(
        self, session_key: str, field_name: str, value: object, what: str
    ) -> _Op[None]:
        """Set a text field of the metadata (``what`` names ``value`` in errors)."""
        _format.key_to_name(session_key)
        yield from self._op_set_meta(session_key, {field_name: check_text(value, what)})

    def _op_set_context(self, session_key: str, fields: dict[str, str]) -> _Op[None]:
        _format.key_to_name(session_key)
        yield from self._op_set_meta(session_key, dict(fields))

    def _op_state_change(self, session_key: str, state: str, turn_id: str | None) -> _Op[None]:
        _format.key_to_name(session_key)
        check_state(state)
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
            for when in checked_times(created_at, last_activity, turn_started_at)
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

    def _op_running(self, threshold_secs: float | None) -> _Op[list[SessionMetadata]]:
        """Running sessions; only those running for ``threshold_secs`` or longer if given."""
        if threshold_secs is None:
            names = yield from self._members(self._running)
            cutoff = None
        else:
            seconds = check_amount(threshold_secs, "threshold_secs")
            cutoff = yield from self._op_cutoff(seconds)
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
        keyword, limit = check_query(query, match)
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
                    content = lower(message.content)
                    hits = (word in content for word in words)
                    if all(hits) if match_all else any(hits):
                        found.append(metadata)
                        break
        return found if limit is None else found[:limit]
