"""The Lua scripts of the Redis backends: every per-session change is one of them, atomic on the
server (see ``docs/REDIS.md``), and the bounds of the write results they remember.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

#: How many write results each session remembers (the oldest are forgotten first), so that
#: redis-py resending a script whose reply was lost to a broken connection gets that result
#: instead of running it again; and after how long without writes a session forgets them all
#: (ms). A resend comes within redis-py's retry budget (seconds): a chat session sees far fewer
#: than _OP_CAP writes in that time.
_OP_CAP = 1000
_OP_KEEP_MS = 600_000

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
