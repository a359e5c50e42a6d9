"""``RedisSessionBackend`` and ``AsyncRedisSessionBackend``: chat sessions in Redis (standalone
or Cluster).

>>> from turnlog.backends.redis import RedisSessionBackend
>>> store = RedisSessionBackend("redis://127.0.0.1:6379/0")
>>> store.append("telegram_user123", {"role": "user", "content": "hello"})
>>> store.load("telegram_user123", limit=50)

Needs ``pip install 'turnlog[redis]'`` (redis-py 5 or newer) and Redis 6.2 or newer. ``import
turnlog`` never imports redis-py; importing this package does. (``turnlog.redis_backend``, the
old path, still works for this release, with a ``DeprecationWarning``.)

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

The modules: ``scripts`` (the Lua scripts), ``effects`` (what an operation asks of the server,
``RedisUnavailableError``, reply helpers), ``ops`` (``_RedisCore``: keys, checks and the
I/O-free operations both clients run), ``sync`` (``RedisSessionBackend``) and ``aio``
(``AsyncRedisSessionBackend``).
"""

from .aio import AsyncRedisSessionBackend
from .effects import RedisUnavailableError
from .ops import DEFAULT_PREFIX
from .sync import RedisSessionBackend

__all__ = [
    "DEFAULT_PREFIX",
    "AsyncRedisSessionBackend",
    "RedisSessionBackend",
    "RedisUnavailableError",
]
