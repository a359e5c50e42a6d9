"""Kill torture: writer processes (Rust and pure stores) append to shared sessions while others
roll back and compact, and a supervisor SIGKILLs a random one every few milliseconds and starts
it again. At the end every acknowledged message must be in its session exactly once, in its
writer's order, unless a rollback removed it while it was the newest, and every line must be one
whole record or a torn fragment of an append that was in flight.

    python tests/_torture.py --kills 2000 [--seed N] [--workspace DIR] [--json FILE]

prints the figures and exits non-zero when the check finds a problem. ``test_torture`` runs a
short version; ``make torture`` a long one (``TURNLOG_TORTURE_KILLS``).

Acknowledgements
----------------
Each worker keeps a log (``logs/<worker>.log``), one ``os.write`` per line, opened ``O_APPEND``.
A line is ``<kind> <time> <fields>`` and ends in a tab: the time is ``CLOCK_MONOTONIC``, one clock
for every process, and the tab tells a whole line from one a kill cut short (the next life ends
that one with a newline; it is skipped). A life starts with ``L <time> <life>``; then the worker
logs an *intent* before each store call and an *ack* after it returns. A SIGKILL can land
anywhere, so the last intent of a life may have no ack: that operation was *in flight*: it may
or may not have happened, and if it did, it was over before the next life's first line. An
acknowledged operation happened, at a moment between its intent and its ack.

- Writers ``w0..``: ``I <session> <seq> <n>`` then ``A <seq>`` for an append (n = 1) or an
  ``append_many`` of seqs ``seq..seq+n-1``, to a random session: a shared one, or (a share
  ``ROLLBACK_SHARE`` of the calls) a rollback session. A life's seqs start at ``life * 10**6``,
  so each writer's seqs only grow. The message is a pure function of ``(writer, seq)``: the
  check rebuilds its exact line.
- Rollbackers ``r0..``: ``r<j>`` is the one process calling ``remove_last``/``update_last`` on
  session ``rollback-<j>``, which the writers append to as well: the rewrites and truncations race
  with other processes' appends, and act on whichever message is newest at the time, often
  another writer's. ``I S``/``S <[[writer, seq], ...]>`` (a full load, now and then),
  ``I A <seq>``/``A <seq>``, ``I R``/``R <removed>``, ``I U <seq>``/``U <seq> <updated>``.
- Compactors ``c0..``: append a line of junk under the lock protocol (so rewrites have something
  to drop and ``remove_last`` must rewrite), then ``compact``; ``C`` per acknowledged compaction.

The check
---------
Every line of a session (the file split at newlines) is either exactly the encoding of a message
attempted in that session, or a proper prefix of the encoding of an append that was in flight (a
torn fragment), or (a prefix of) a junk line; never blank (an append after a torn tail writes
``"\\n" + record`` in one write, and a file ending in a newline gets no other). So no line holds
two records. At most the last line may be unterminated (a torn tail); one more append to each
session (by each store in turn) must land intact right after it.

Shared sessions have no rollbacks: every acknowledged message must be present (lost = 0), once
(duplicates = 0), each writer's seqs strictly increasing, and of an in-flight ``append_many``
only a prefix of its batch.

Rollback sessions: a message may be missing because a rollback removed it, so the check decides
whether the file is an outcome the logs allow (``linearize``). The stores serialise every
operation on a session with its lock, so the session went through some total order of the
logged operations, each at a moment within its own interval. The check searches for an order
that keeps each worker's order and real time (an operation acknowledged before another's intent
comes first), in which every ``remove_last``/``update_last`` returns what it returned, every load
sees what it saw, an in-flight operation happens or not (of a batch, any prefix), and which ends
with exactly the file's messages, in order. The file passes iff one exists: an acknowledged
message may be missing only if some rollback can have removed it while it was the newest, and a
message swallowed by a rewrite, brought back, moved or duplicated leaves no such order.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import fcntl
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _spec  # noqa: E402
from _mp_workers import locked_raw_append  # noqa: E402

SHARED = ["shared-0", "shared/1", "ключ 2"]  # plain and escaped file names
LIFE_SEQS = 10**6
ROLLBACK_BASE = 100  # rollbacker r<j> signs its messages as writer 100 + j
FINAL_WRITER = 999
WRITER_PAUSE = 0.001  # seconds, at most, between a writer's appends
ROLLBACK_SHARE = 0.2  # of the writers' calls go to a rollback session
ROLLBACK_BYTES = 256 << 10  # a rollback session larger than this gets fewer appends from r<j>

Message = tuple[int, int]  # (writer, seq)

_POOL = ["a", "b", "z", " ", "é", "ß", "ключ", "日本", "😀", '"', "\\", "\n", "\t", "\u2028"]
_POOL += ["\x01", "{", "}", "x" * 8]


# --- messages -------------------------------------------------------------------------------------


def payload_size(rng: random.Random) -> int:
    """10 bytes to 256 KiB: mostly short, some long, a few at the top of the range."""
    r = rng.random()
    if r < 0.75:
        return rng.randint(10, 200)
    if r < 0.96:
        return rng.randint(200, 16 << 10)
    if r < 0.98:
        return 256 << 10
    return int((16 << 10) * 16 ** rng.random())


def message(writer: int, seq: int) -> dict:
    """The message ``(writer, seq)``: a pure function of both, so the check can rebuild it."""
    rng = random.Random(writer * 1_000_003 + seq)
    size = payload_size(rng)
    chunk = "".join(rng.choice(_POOL) for _ in range(24))
    text = (chunk * (size // len(chunk.encode()) + 1)).encode()[:size].decode("utf-8", "ignore")
    record = {"role": "user", "content": f"w{writer}-{seq} {text}", "w": writer, "seq": seq}
    if seq % 5 == 0:
        record["meta"] = {"n": seq, "tags": ["é", None, 1.5]}
    return record


def line_of(writer: int, seq: int) -> bytes:
    """The exact line (newline included) a store writes for message ``(writer, seq)``."""
    return _spec.encode(message(writer, seq))


_HEAD = re.compile(rb'^\{"role":"user","content":"w(\d+)-(\d+) ')
_JUNK = re.compile(rb"junk c\d+ \d+ \d+")
_JUNK_TORN = re.compile(rb"junk c\d+( \d*( \d*)?)?")  # a junk line cut short
JUNK_PREFIX = b"junk c"


# --- workers --------------------------------------------------------------------------------------


def open_store(impl: str, workspace: str):
    if impl == "rust":
        from turnlog.backends.jsonl.rust import SessionStore
    else:
        from turnlog.pure import SessionStore
    return SessionStore(workspace)


class Log:
    """A worker's acknowledgement log: one ``write`` per line, ``O_APPEND``, each line stamped
    with the monotonic clock when it is logged and ended with a tab."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")  # the last life was killed mid-line

    def __call__(self, kind: str, *fields: object) -> None:
        line = " ".join([kind, str(time.monotonic_ns()), *map(str, fields)])
        os.write(self.fd, (line + "\t\n").encode())


def rollback_key(index: int) -> str:
    return f"rollback-{index}"


def writer(
    index: int, life: int, workspace: str, log: Log, rng: random.Random, keys: list[str]
) -> None:
    store = open_store("rust" if index % 2 == 0 else "pure", workspace)
    seq = life * LIFE_SEQS
    while True:
        if len(keys) > len(SHARED) and rng.random() < ROLLBACK_SHARE:
            session = rng.randrange(len(SHARED), len(keys))
        else:
            session = rng.randrange(len(SHARED))
        count = 1 if rng.random() < 0.85 else rng.randint(2, 4)
        log("I", session, seq, count)
        if count == 1:
            store.append(keys[session], message(index, seq))
        else:
            batch = [message(index, seq + i) for i in range(count)]
            store.append_many(keys[session], batch)
        log("A", seq)
        seq += count
        time.sleep(rng.random() * WRITER_PAUSE)


def rollbacker(
    index: int, life: int, workspace: str, log: Log, rng: random.Random, keys: list[str]
) -> None:
    stores = [open_store("rust", workspace), open_store("pure", workspace)]
    key, me = rollback_key(index), ROLLBACK_BASE + index
    path = str(_spec.session_path(stores[0], key))
    seq = life * LIFE_SEQS
    while True:
        store = rng.choice(stores)
        try:
            big = os.stat(path).st_size > ROLLBACK_BYTES
        except FileNotFoundError:
            big = False
        roll = rng.random()
        if roll < 0.03:
            # The stores load under the shared lock: the session as it was at one moment, which
            # the order the check finds must agree with.
            log("I", "S")
            seen = [[m.extra["w"], m.extra["seq"]] for m in store.load(key)]
            log("S", json.dumps(seen, separators=(",", ":")))
        elif roll < (0.15 if big else 0.5):
            log("I", "A", seq)
            store.append(key, message(me, seq))
            log("A", seq)
            seq += 1
        elif roll < 0.8:
            log("I", "R")
            log("R", int(store.remove_last(key)))
        else:
            log("I", "U", seq)
            updated = store.update_last(key, message(me, seq))
            log("U", seq, int(updated))
            seq += 1
        time.sleep(rng.random() * 0.003)


def compactor(
    index: int, life: int, workspace: str, log: Log, rng: random.Random, keys: list[str]
) -> None:
    stores = [open_store("rust", workspace), open_store("pure", workspace)]
    # Each compactor prefers one store (c0 Rust, c1 pure, ...) and now and then uses the other.
    sessions = stores[0].sessions_dir
    count = 0
    while True:
        store = stores[index % 2] if rng.random() < 0.8 else stores[1 - index % 2]
        key = rng.choice(SHARED if rng.random() < 0.5 else keys[len(SHARED) :] or SHARED)
        path = str(_spec.session_path(store, key))
        if not os.path.exists(path):
            time.sleep(0.002)
            continue
        locked_raw_append(path, b"junk c%d %d %d\n" % (index, life, count))
        count += 1
        store.compact(key)
        log("C")
        if rng.random() < 0.1:
            store.load(key, limit=rng.randint(1, 5))  # a tail read under the shared lock
        assert os.path.dirname(path) == sessions
        time.sleep(rng.random() * 0.1)


WORKERS = {"w": writer, "r": rollbacker, "c": compactor}


def run_worker(name: str, life: int, workspace: str, logs: str, seed: int, keys: list[str]):
    """The body of a forked worker: never returns (``os._exit``)."""
    code = 1
    log = None
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log = Log(os.path.join(logs, name + ".log"))
        log("L", life)
        rng = random.Random(f"{seed}:{name}:{life}")
        WORKERS[name[0]](int(name[1:]), life, workspace, log, rng, keys)
    except BaseException:
        if log is not None:
            log("E", json.dumps(traceback.format_exc()))
    finally:
        os._exit(code)


# --- supervisor -----------------------------------------------------------------------------------


def start(name: str, life: int, workspace: str, logs: str, seed: int, keys: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        run_worker(name, life, workspace, logs, seed, keys)
    return pid


def torn_tails_now(paths: list[str], seen: set) -> None:
    """Add to ``seen`` each session file that does not end in a newline right now (a writer was
    killed mid-write), as ``(path, inode, size)``. Takes the shared lock without waiting, so a
    file a writer is busy with (or being compacted) is skipped this time."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            info = os.fstat(fd)
            if info.st_size and os.pread(fd, 1, info.st_size - 1) != b"\n":
                seen.add((path, info.st_ino, info.st_size))
        except BlockingIOError:
            pass
        finally:
            os.close(fd)


def session_keys(rollbackers: int) -> list[str]:
    """Every session of a run: the shared ones, then the rollback ones (a writer's log names a
    session by its index here)."""
    return SHARED + [rollback_key(j) for j in range(rollbackers)]


def torture(
    workspace: str,
    kills: int,
    seed: int,
    writers: int,
    rollbackers: int,
    compactors: int,
    max_seconds: float,
    interval_ms: tuple[float, float],
) -> dict:
    """Run the workers, kill ``kills`` of them at random, stop them all; returns the run's
    figures (without the check)."""
    import turnlog.backends.jsonl.rust
    import turnlog.pure  # noqa: F401

    logs = os.path.join(workspace, "logs")
    os.makedirs(logs, exist_ok=True)
    keys = session_keys(rollbackers)
    names = [f"w{i}" for i in range(writers)]
    names += [f"r{j}" for j in range(rollbackers)]
    names += [f"c{k}" for k in range(compactors)]
    rng = random.Random(seed)
    lives = dict.fromkeys(names, 0)
    pids = {name: start(name, 0, workspace, logs, seed, keys) for name in names}
    problems: list[str] = []
    done = 0
    from turnlog.pure import SessionStore

    paths = [str(_spec.session_path(SessionStore(workspace), key)) for key in keys]
    torn: set = set()
    began = time.monotonic()
    try:
        while done < kills and time.monotonic() - began < max_seconds:
            time.sleep(rng.uniform(*interval_ms) / 1000)
            for name, pid in list(pids.items()):  # a worker that died by itself is a problem
                finished, status = os.waitpid(pid, os.WNOHANG)
                if finished:
                    problems.append(f"{name} exited by itself (status {status})")
                    lives[name] += 1
                    pids[name] = start(name, lives[name], workspace, logs, seed, keys)
            victim = rng.choice(names)
            os.kill(pids[victim], signal.SIGKILL)
            _, status = os.waitpid(pids[victim], 0)
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                problems.append(f"{victim} exited by itself (status {status})")
            done += 1
            torn_tails_now(paths, torn)
            lives[victim] += 1
            pids[victim] = start(victim, lives[victim], workspace, logs, seed, keys)
    finally:
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return {
        "kills": done,
        "seconds": round(time.monotonic() - began, 1),
        "lives": sum(lives.values()) + len(names),
        "torn_tails_seen": len(torn),
        "supervisor_problems": problems,
    }


# --- the check: reading the logs ------------------------------------------------------------------


def read_log(path: str) -> list[list[str]]:
    """The log's whole lines, split into fields (kind, time, ...); a line a kill cut short (it
    does not end in a tab) is skipped."""
    with open(path, "rb") as f:
        data = f.read()
    return [
        raw[:-1].decode().split(" ", 2 if raw.startswith(b"E ") else -1)
        for raw in data.split(b"\n")
        if raw.endswith(b"\t")
    ]


class Op(NamedTuple):
    """One logged store call on a session, as the order search (``linearize``) sees it."""

    kind: str  # "P" append (or append_many), "R" remove_last, "U" update_last, "S" load
    t0: int  # its intent was logged (it had not begun)
    t1: float  # its ack was logged, or (in flight) the worker's next life began: it was over
    items: tuple  # P: the messages, U: (the new message,), S: the messages loaded
    acked: bool
    result: bool = False  # what R or U returned (acknowledged only)


class Writers:
    """What the writers' logs say: every attempted ``(writer, seq)``, where, whether
    acknowledged, and each writer's calls per session."""

    def __init__(self) -> None:
        self.session: dict[Message, int] = {}  # -> index in session_keys()
        self.batch: dict[Message, tuple[int, int]] = {}  # -> (first seq, count)
        self.acked: set[Message] = set()
        self.ops: dict[tuple[int, int], list[Op]] = {}  # (writer, session) -> its calls in order
        self.errors: list[str] = []

    def read(self, writer: int, entries: list[list[str]]) -> None:
        pending: list[str] | None = None
        for entry in entries:
            kind, stamp = entry[0], int(entry[1])
            if kind == "A":
                assert pending is not None and entry[2] == pending[3], entry
                self._call(writer, pending, stamp, acked=True)
                pending = None
                continue
            if pending is not None:  # its life ended with it in flight, before this line
                self._call(writer, pending, stamp, acked=False)
                pending = None
            if kind == "I":
                session, first, count = map(int, entry[2:])
                for seq in range(first, first + count):
                    self.session[(writer, seq)] = session
                    self.batch[(writer, seq)] = (first, count)
                pending = entry
            elif kind == "E":
                self.errors.append(f"w{writer}: {json.loads(entry[2])}")
        if pending is not None:
            self._call(writer, pending, math.inf, acked=False)

    def _call(self, writer: int, intent: list[str], t1: float, acked: bool) -> None:
        t0, session, first, count = map(int, intent[1:])
        items = tuple((writer, seq) for seq in range(first, first + count))
        if acked:
            self.acked.update(items)
        self.ops.setdefault((writer, session), []).append(Op("P", t0, t1, items, acked))

    def in_flight(self, session: int) -> list[Message]:
        return [m for m, s in self.session.items() if s == session and m not in self.acked]


class Rollbacks(NamedTuple):
    """What a rollbacker's log says about its session."""

    ops: list[Op]
    sent: set[int]  # the seqs of its messages (appended or written by update_last)
    torn: set[int]  # the seqs of its appends in flight (their torn fragments may remain)
    acked: int  # acknowledged remove_last/update_last calls
    errors: list[str]


def read_rollbacks(me: int, entries: list[list[str]]) -> Rollbacks:
    """The calls of rollbacker ``me`` (its writer number) on its session, in order."""
    ops: list[Op] = []
    sent: set[int] = set()
    torn: set[int] = set()
    errors: list[str] = []

    def close(intent: list[str], t1: float, ack: list[str] | None) -> None:
        kind, t0 = intent[2], int(intent[1])
        if kind == "S":
            if ack is not None:  # a load in flight changed nothing
                ops.append(Op("S", t0, t1, tuple(map(tuple, json.loads(ack[2]))), True))
            return
        if kind in ("A", "U"):
            assert ack is None or ack[2] == intent[3], (intent, ack)
            items: tuple = ((me, int(intent[3])),)
        else:
            items = ()
        if kind == "A":
            ops.append(Op("P", t0, t1, items, ack is not None))
            if ack is None:
                torn.add(int(intent[3]))
        else:
            ops.append(Op(kind, t0, t1, items, ack is not None, ack is not None and ack[-1] == "1"))

    pending: list[str] | None = None
    for entry in entries:
        kind, stamp = entry[0], int(entry[1])
        if pending is not None and kind == pending[2]:
            close(pending, stamp, entry)
            pending = None
            continue
        if pending is not None:  # its life ended with it in flight, before this line
            close(pending, stamp, None)
            pending = None
        if kind == "I":
            pending = entry
            if entry[2] in ("A", "U"):
                sent.add(int(entry[3]))
        elif kind == "E":
            errors.append(f"worker error: {json.loads(entry[2])}")
    if pending is not None:
        close(pending, math.inf, None)
    acked = sum(op.acked for op in ops if op.kind in ("R", "U"))
    return Rollbacks(ops, sent, torn, acked, errors)


# --- the check: the order search ------------------------------------------------------------------


class Search(NamedTuple):
    found: bool  # some order of the calls gives the file
    states: int  # states visited
    done: int  # calls placed by the attempt that got furthest
    reached: int  # messages of the file that attempt had placed


def linearize(workers: list[list[Op]], final: list[Message]) -> Search:
    """Search for an order of the workers' calls on one session that leaves exactly ``final``.

    The calls of each worker stay in its order; a call may come before another worker's only if
    that one's ack was not logged before its intent; an append puts its messages last, a
    ``remove_last`` takes the last one away and an ``update_last`` replaces it (each returning
    whether there was one, as logged); a call in flight may not happen at all (of a batch, any
    prefix may land).

    A message of ``final`` is never removed and only the last message can be, so at every
    moment the session is ``final[:k]`` followed by ``above`` messages that are all removed
    later: a state is (calls done per worker, k, above). Which messages those are does not
    change what can follow, so they are not followed: that keeps the states few. A load must
    have seen ``final[:k]``, then ``above`` messages not in ``final`` that calls already placed
    wrote. Depth first, the earliest intent first, each state once, so a damaged file is
    refused after at most all states. A state is dropped at once when the call that must put
    ``final[k]`` in place is behind it, or when fewer calls are left that can take a message
    away than there are above ``final[:k]``.
    """
    target = tuple(final)
    places = {item: n for n, item in enumerate(target)}
    ends = tuple(map(len, workers))
    writes: dict[Message, tuple[int, int]] = {}  # the call writing each message
    for w, ops in enumerate(workers):
        for i, op in enumerate(ops):
            writes.update(dict.fromkeys(op.items if op.kind in ("P", "U") else (), (w, i)))
    owner = [writes.get(item) for item in target]  # the call putting each in place
    broken = [n for n, item in enumerate(target) if owner[n] is None or places[item] != n]
    if broken:  # a message no call wrote, or one that is there twice
        return Search(False, 0, 0, broken[0])
    # cuts[w][i]: calls of worker w from its i-th on that can take away a message above final[:k]
    cuts = [
        list(
            itertools.accumulate(
                [op.kind == "R" or (op.kind == "U" and op.items[0] in places) for op in ops][::-1],
                initial=0,
            )
        )[::-1]
        for ops in workers
    ]

    def alive(done: tuple, k: int, above: int) -> bool:
        if k < len(target):
            w, i = owner[k]
            if done[w] > i:
                return False
        return above <= sum(cut[i] for cut, i in zip(cuts, done, strict=True))

    def push(item: Message, k: int, above: int) -> tuple[int, int] | None:
        if not above and k < len(target) and target[k] == item:
            return k + 1, 0
        if item in places:  # a message of the file, but not the next one: out of its place
            return None
        return k, above + 1

    def outcomes(op: Op, done: tuple, k: int, above: int) -> Iterator[tuple[int, int]]:
        if op.kind == "S":
            seen = op.items
            if len(seen) == k + above and seen[:k] == target[:k]:
                placed = (writes.get(item, (0, math.inf)) for item in seen[k:])
                if all(item not in places for item in seen[k:]) and all(
                    i < done[w] for w, i in placed
                ):
                    yield k, above
            return
        if not op.acked:
            yield k, above  # it never happened
        if op.kind == "P":
            for item in op.items:
                after = push(item, k, above)
                if after is None:
                    return
                k, above = after
                if not op.acked:
                    yield after  # this prefix of the batch landed
            if op.acked:
                yield k, above
        elif not (k or above):
            if op.acked and not op.result:
                yield k, above  # an empty session: nothing to remove or replace
        elif above and (op.result or not op.acked):  # never a message of the file
            if op.kind == "R":
                yield k, above - 1
            else:
                after = push(op.items[0], k, above - 1)
                if after is not None:
                    yield after

    def successors(state: tuple) -> Iterator[tuple]:
        done, k, above = state
        heads = [(workers[w][i], w) for w, i in enumerate(done) if i < ends[w]]
        for op, w in sorted(heads, key=lambda head: head[0].t0):
            if any(other.t1 < op.t0 for other, v in heads if v != w):
                continue  # another worker's call was over before this one began
            moved = (*done[:w], done[w] + 1, *done[w + 1 :])
            for after in outcomes(op, done, k, above):
                if alive(moved, *after):
                    yield (moved, *after)

    start = ((0,) * len(workers), 0, 0)
    seen = {start}
    best = (0, 0)
    path = [successors(start)]
    while path:
        state = next(path[-1], None)
        if state is None:
            path.pop()
            continue
        if state in seen:
            continue
        seen.add(state)
        if state == (ends, len(target), 0):
            return Search(True, len(seen), sum(ends), len(target))
        best = max(best, (sum(state[0]), state[1]))
        path.append(successors(state))
    return Search(False, len(seen), *best)


# --- the check: the files -------------------------------------------------------------------------


def classify(line: bytes, in_flight: dict[Message, bytes]) -> tuple | None:
    """``("msg", writer, seq)`` for an exact message line, ``("torn", writer, seq)`` for a
    proper prefix of an in-flight message's line, ``("junk",)`` for (a prefix of) a junk line,
    ``None`` for anything else (a blank, glued, damaged or unknown line)."""
    if not line:
        return None  # no write leaves one (see the module's doc)
    head = _HEAD.match(line)
    if head is not None:
        writer, seq = int(head.group(1)), int(head.group(2))
        full = line_of(writer, seq)
        if line + b"\n" == full:
            return ("msg", writer, seq)
        if (writer, seq) in in_flight and full.startswith(line):
            return ("torn", writer, seq)
        return None
    if _JUNK.fullmatch(line) or _JUNK_TORN.fullmatch(line) or JUNK_PREFIX.startswith(line):
        return ("junk",)
    for (writer, seq), full in in_flight.items():  # a fragment too short to name its message
        if full.startswith(line) and len(line) < len(full) - 1:
            return ("torn", writer, seq)
    return None


def split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """The file's lines, and whether the last one is unterminated (a torn tail)."""
    lines = data.split(b"\n")
    torn = lines[-1] != b""
    return (lines if torn else lines[:-1]), torn


def scan(
    key: str, data: bytes, in_flight: dict[Message, bytes], problems: list[str]
) -> tuple[list[Message], int]:
    """The messages of a session file in order, and its number of torn fragments; a line that
    is neither, nor junk, is a problem."""
    found: list[Message] = []
    fragments = 0
    for position, line in enumerate(split_lines(data)[0]):
        kind = classify(line, in_flight)
        if kind is None:
            problems.append(
                f"{key}: line {position} is blank"
                if not line
                else f"{key}: line {position} is neither a message nor a torn "
                f"fragment: {line[:120]!r}... ({len(line)} bytes)"
            )
        elif kind[0] == "msg":
            found.append(kind[1:])
        elif kind[0] == "torn":
            fragments += 1
    return found, fragments


def overlapping(calls: list[Op], others: list[Op]) -> int:
    """How many of ``calls`` ran while one of ``others`` was running."""
    spans = sorted((op.t0, op.t1) for op in others)
    starts = [t0 for t0, _ in spans]
    reach = list(itertools.accumulate((t1 for _, t1 in spans), max, initial=-math.inf))
    return sum(reach[bisect.bisect_left(starts, op.t1)] > op.t0 for op in calls)


def check(workspace: str, writers: int, rollbackers: int, compactors: int) -> dict:
    """Check the workspace after the run (and make the final appends); returns the figures,
    with ``problems``: the empty list when all is well."""
    from turnlog.backends.jsonl.rust import SessionStore as RustStore
    from turnlog.pure import SessionStore as PureStore

    logs = os.path.join(workspace, "logs")
    problems: list[str] = []
    figures: dict = {}
    stores = [RustStore(workspace), PureStore(workspace)]
    sessions_dir = stores[0].sessions_dir

    book = Writers()
    for index in range(writers):
        book.read(index, read_log(os.path.join(logs, f"w{index}.log")))
    problems += book.errors
    compactions = 0
    for index in range(compactors):
        entries = read_log(os.path.join(logs, f"c{index}.log"))
        compactions += sum(entry[0] == "C" for entry in entries)
        problems += [f"c{index}: {json.loads(e[2])}" for e in entries if e[0] == "E"]

    # The torn tails left by the kills, then one more append per session: it must land intact.
    keys = session_keys(rollbackers)
    torn_tails = 0
    contents = {}
    for number, key in enumerate(keys):
        path = _spec.session_path(stores[0], key)
        before = path.read_bytes() if path.exists() else b""
        torn_tails += bool(before) and not before.endswith(b"\n")
        final = message(FINAL_WRITER, number)
        stores[number % 2].append(key, final)
        after = path.read_bytes()
        if after != _spec.append(before, _spec.encode(final)):
            problems.append(f"{key}: the final append did not land intact after the torn tail")
        contents[key] = before  # checked below; the final line is checked here
        for store in stores:
            last = store.load(key, limit=1)
            if [m.to_dict() for m in last] != [final]:
                problems.append(f"{key}: load(limit=1) after the final append gave {last!r:.200}")

    # Shared sessions: every acknowledged message once, in its writer's order.
    present: dict[Message, int] = {}
    fragments = 0
    for number, key in enumerate(SHARED):
        in_flight = {m: line_of(*m) for m in book.in_flight(number)}
        found, torn = scan(key, contents[key], in_flight, problems)
        fragments += torn
        last_seq: dict[int, int] = {}
        for writer_id, seq in found:
            if book.session.get((writer_id, seq)) != number:
                problems.append(f"{key}: message w{writer_id}-{seq} was never sent here")
                continue
            present[(writer_id, seq)] = present.get((writer_id, seq), 0) + 1
            if seq <= last_seq.get(writer_id, -1):
                problems.append(
                    f"{key}: w{writer_id}-{seq} after w{writer_id}-"
                    f"{last_seq[writer_id]}: out of order"
                )
            last_seq[writer_id] = seq
    shared_acked = {m for m in book.acked if book.session[m] < len(SHARED)}
    lost = sorted(m for m in shared_acked if m not in present)
    duplicates = sorted(m for m, n in present.items() if n > 1)
    problems += [f"lost: acknowledged w{w}-{s} is missing" for w, s in lost[:20]]
    problems += [
        f"duplicate: w{w}-{s} is there {present[(w, s)]} times" for w, s in duplicates[:20]
    ]
    # Of an append_many in flight, only a prefix of the batch may have landed.
    batches: dict[Message, list[int]] = {}
    for (writer_id, seq), (first, count) in book.batch.items():
        shared = book.session[(writer_id, seq)] < len(SHARED)
        if count > 1 and shared and (writer_id, seq) not in book.acked:
            batches.setdefault((writer_id, first), []).append(int((writer_id, seq) in present))
    for (writer_id, first), flags in batches.items():
        if flags != sorted(flags, reverse=True):
            problems.append(f"w{writer_id}: in-flight batch {first} landed as {flags}")

    # Rollback sessions: some order of the logged calls leaves exactly the file's messages.
    rollback_ops = contended = removed = racing = states = 0
    for index in range(rollbackers):
        number, key, me = len(SHARED) + index, rollback_key(index), ROLLBACK_BASE + index
        mine = read_rollbacks(me, read_log(os.path.join(logs, f"r{index}.log")))
        rollback_ops += mine.acked
        problems += [f"{key}: {error}" for error in mine.errors]
        in_flight = {m: line_of(*m) for m in book.in_flight(number)}
        in_flight.update({(me, seq): line_of(me, seq) for seq in mine.torn})
        found, torn = scan(key, contents[key], in_flight, problems)
        fragments += torn
        for writer_id, seq in found:
            sent = (
                seq in mine.sent
                if writer_id == me
                else book.session.get((writer_id, seq)) == number
            )
            if not sent:
                problems.append(f"{key}: message w{writer_id}-{seq} was never sent here")
        problems += [
            f"{key}: duplicate: w{w}-{s} is there {n} times"
            for (w, s), n in collections.Counter(found).items()
            if n > 1
        ]
        appends = [ops for (_, session), ops in sorted(book.ops.items()) if session == number]
        search = linearize([mine.ops, *appends], found)
        states += search.states
        if not search.found:
            calls = sum(map(len, [mine.ops, *appends]))
            problems.append(
                f"{key}: no order of the logged calls leaves the file's {len(found)} messages: "
                f"the best places {search.done} of {calls} calls and {search.reached} messages"
            )
        theirs = {m for ops in appends for op in ops if op.acked for m in op.items}
        contended += len(theirs)
        removed += len(theirs - set(found))
        rollbacks = [op for op in mine.ops if op.acked and op.kind in ("R", "U")]
        racing += overlapping(rollbacks, [op for ops in appends for op in ops if op.acked])

    # Stray temp files of killed rewrites are hidden: never listed, never a session.
    strays = [n for n in os.listdir(sessions_dir) if n.startswith(".turnlog-")]
    for store in stores:
        if store.list_sessions() != sorted(keys):
            problems.append(f"list_sessions() gave {store.list_sessions()}")
    figures.update(
        messages_acked=len(book.acked),
        messages_attempted=len(book.session),
        messages_present=len(present),
        in_flight_landed=len(present) - len(book.acked & present.keys()),
        lost=len(lost),
        duplicates=len(duplicates),
        torn_tails=torn_tails,
        torn_fragments=fragments,
        rollback_ops_acked=rollback_ops,
        contended_appends_acked=contended,
        removed_by_other_rollbacks=removed,
        rollbacks_racing_appends=racing,
        order_search_states=states,
        compactions_acked=compactions,
        stray_temp_files=len(strays),
        problems=problems,
    )
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kills", type=int, default=int(os.environ.get("TURNLOG_TORTURE_KILLS", "2000"))
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rollbackers", type=int, default=2)
    parser.add_argument("--compactors", type=int, default=2)
    parser.add_argument("--interval-ms", type=float, nargs=2, default=(2.0, 12.0))
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--workspace", help="kept afterwards (default: a temp folder, removed)")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--no-check", action="store_true", help="only run (keep --workspace)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    workspace = args.workspace or tempfile.mkdtemp(prefix="turnlog-torture-")
    try:
        figures = {"seed": seed}
        figures.update(
            torture(
                workspace,
                args.kills,
                seed,
                args.writers,
                args.rollbackers,
                args.compactors,
                args.max_seconds,
                tuple(args.interval_ms),
            )
        )
        if args.no_check:
            print(json.dumps(figures))
            return 0
        began = time.monotonic()
        checked = check(workspace, args.writers, args.rollbackers, args.compactors)
        figures["check_seconds"] = round(time.monotonic() - began, 1)
        checked["problems"] = figures.pop("supervisor_problems") + checked["problems"]
        figures.update(checked)
    finally:
        if not args.workspace:
            shutil.rmtree(workspace, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    for name, value in figures.items():
        if name != "problems":
            print(f"{name:>20}: {value}")
    print(f"{'problems':>20}: {len(figures['problems'])}")
    for problem in figures["problems"][:50]:
        print("  -", problem)
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
