"""Kill torture: writer processes (Rust and pure stores) append to shared sessions while others
roll back and compact, and a supervisor SIGKILLs a random one every few milliseconds and starts
it again. At the end every acknowledged message must be in its session exactly once, in its
writer's order, and every line must be one whole record or a torn fragment of an append that was
in flight.

    python tests/_torture.py --kills 2000 [--seed N] [--workspace DIR] [--json FILE]

prints the figures and exits non-zero when the check finds a problem. ``test_torture`` runs a
short version; ``make torture`` a long one (``TURNLOG_TORTURE_KILLS``).

Acknowledgements
----------------
Each worker keeps a log (``logs/<worker>.log``), one ``os.write`` per line, opened ``O_APPEND``:
an *intent* line before each store call and an *ack* line after it returns. A SIGKILL can land
anywhere, so the last intent of a life may have no ack: that operation was *in flight* and may
or may not have happened; everything acknowledged has happened. (A torn log line is skipped:
the next life starts with a newline.)

- Writers ``w0..``: ``I <session> <seq> <n>`` then ``A <seq>`` for an append (n = 1) or an
  ``append_many`` of seqs ``seq..seq+n-1``, to a random shared session. A life's seqs start at
  ``life * 10**6``, so each writer's seqs only grow. The message is a pure function of
  ``(writer, seq)``: the check rebuilds its exact line.
- Rollbackers ``r0..`` own one session each (other processes only add corrupt junk to it and
  compact it, so every valid line there is theirs and ``remove_last``/``update_last`` act on
  their own newest message): ``L <life>``, then ``S <seqs>`` (the session as loaded at start),
  then ``I A <seq>``/``A <seq>``, ``I R``/``R <removed>``, ``I U <seq>``/``U <seq> <updated>``.
  Replaying the log gives the exact list of messages, or two candidates when the last operation
  of a life was in flight; the next life's ``S`` (checked to be one of them) settles it.
- Compactors ``c0..``: append a line of junk under the lock protocol (so rewrites have something
  to drop and ``remove_last`` must rewrite), then ``compact``; ``C`` per acknowledged compaction.

The check
---------
For each shared session, every line (the file split at newlines) is either exactly the encoding
of a message ``(writer, seq)`` attempted in that session, or a proper prefix of the encoding of
an append that was in flight (a torn fragment), or (a prefix of) a junk line. So no line holds
two records. Then: acknowledged messages missing = lost (must be 0), lines of the same message =
duplicates (must be 0), each writer's seqs strictly increase, and of an in-flight
``append_many`` only a prefix of its batch may be present. Rollback sessions must hold one of
their candidate lists. At most the last line may be unterminated (a torn tail); one more append
to each session (by each store in turn) must land intact right after it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

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

_POOL = ["a", "b", "z", " ", "é", "ß", "ключ", "日本", "😀", '"', "\\", "\n", "\t", "\u2028"]
_POOL += ["\x01", "{", "}", "x" * 8]


# --- messages -----------------------------------------------------------------------------------


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


# --- workers ------------------------------------------------------------------------------------


def open_store(impl: str, workspace: str):
    if impl == "rust":
        from turnlog._rust import SessionStore
    else:
        from turnlog.pure import SessionStore
    return SessionStore(workspace)


class Log:
    """A worker's acknowledgement log: one ``write`` per line, ``O_APPEND``."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = os.fstat(self.fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self.fd, b"\n")  # the last life was killed mid-line

    def __call__(self, *fields) -> None:
        os.write(self.fd, (" ".join(map(str, fields)) + "\n").encode())


def writer(index: int, life: int, workspace: str, log: Log, rng: random.Random) -> None:
    store = open_store("rust" if index % 2 == 0 else "pure", workspace)
    seq = life * LIFE_SEQS
    while True:
        session = rng.randrange(len(SHARED))
        count = 1 if rng.random() < 0.85 else rng.randint(2, 4)
        log("I", session, seq, count)
        if count == 1:
            store.append(SHARED[session], message(index, seq))
        else:
            batch = [message(index, seq + i) for i in range(count)]
            store.append_many(SHARED[session], batch)
        log("A", seq)
        seq += count
        time.sleep(rng.random() * WRITER_PAUSE)


def rollback_key(index: int) -> str:
    return f"rollback-{index}"


def rollbacker(index: int, life: int, workspace: str, log: Log, rng: random.Random) -> None:
    stores = [open_store("rust", workspace), open_store("pure", workspace)]
    key, me = rollback_key(index), ROLLBACK_BASE + index
    log("L", life)
    seen = [m.extra["seq"] for m in rng.choice(stores).load(key)]
    log("S", json.dumps(seen, separators=(",", ":")))
    size = len(seen)
    seq = life * LIFE_SEQS
    while True:
        store = rng.choice(stores)
        roll = rng.random()
        if roll < (0.5 if size < 30 else 0.3):
            log("I", "A", seq)
            store.append(key, message(me, seq))
            log("A", seq)
            seq, size = seq + 1, size + 1
        elif roll < 0.75:
            log("I", "R")
            removed = store.remove_last(key)
            log("R", int(removed))
            size -= removed
        else:
            log("I", "U", seq)
            updated = store.update_last(key, message(me, seq))
            log("U", seq, int(updated))
            seq += 1
        time.sleep(rng.random() * 0.003)


def compactor(index: int, life: int, workspace: str, log: Log, rng: random.Random) -> None:
    stores = [open_store("rust", workspace), open_store("pure", workspace)]
    # Each compactor prefers one store (c0 Rust, c1 pure, ...) and now and then uses the other.
    keys = SHARED + [rollback_key(j) for j in range(8)]
    sessions = stores[0].sessions_dir
    count = 0
    while True:
        store = stores[index % 2] if rng.random() < 0.8 else stores[1 - index % 2]
        key = rng.choice(SHARED if rng.random() < 0.5 else keys[len(SHARED) :])
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


def run_worker(name: str, life: int, workspace: str, logs: str, seed: int) -> None:
    """The body of a forked worker: never returns (``os._exit``)."""
    code = 1
    log = None
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log = Log(os.path.join(logs, name + ".log"))
        rng = random.Random(f"{seed}:{name}:{life}")
        WORKERS[name[0]](int(name[1:]), life, workspace, log, rng)
    except BaseException:
        if log is not None:
            log("E", json.dumps(traceback.format_exc()))
    finally:
        os._exit(code)


# --- supervisor ---------------------------------------------------------------------------------


def start(name: str, life: int, workspace: str, logs: str, seed: int) -> int:
    pid = os.fork()
    if pid == 0:
        run_worker(name, life, workspace, logs, seed)
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
    import turnlog._rust
    import turnlog.pure  # noqa: F401

    logs = os.path.join(workspace, "logs")
    os.makedirs(logs, exist_ok=True)
    names = [f"w{i}" for i in range(writers)]
    names += [f"r{j}" for j in range(rollbackers)]
    names += [f"c{k}" for k in range(compactors)]
    rng = random.Random(seed)
    lives = dict.fromkeys(names, 0)
    pids = {name: start(name, 0, workspace, logs, seed) for name in names}
    problems: list[str] = []
    done = 0
    from turnlog.pure import SessionStore

    keys = SHARED + [rollback_key(j) for j in range(rollbackers)]
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
                    pids[name] = start(name, lives[name], workspace, logs, seed)
            victim = rng.choice(names)
            os.kill(pids[victim], signal.SIGKILL)
            _, status = os.waitpid(pids[victim], 0)
            if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
                problems.append(f"{victim} exited by itself (status {status})")
            done += 1
            torn_tails_now(paths, torn)
            lives[victim] += 1
            pids[victim] = start(victim, lives[victim], workspace, logs, seed)
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


# --- the check ----------------------------------------------------------------------------------


def read_log(path: str) -> list[list[str]]:
    """The log's whole lines, split into fields; a torn line (killed mid-write) is skipped."""
    with open(path, "rb") as f:
        data = f.read()
    entries = []
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is torn or empty
        if raw:
            entries.append(raw.decode().split(" ", 2 if raw.startswith(b"E ") else -1))
    return entries


class Writers:
    """What the writers' logs say: every attempted ``(writer, seq)``, where, and whether
    acknowledged."""

    def __init__(self) -> None:
        self.session: dict[tuple[int, int], int] = {}  # (writer, seq) -> shared session index
        self.batch: dict[tuple[int, int], tuple[int, int]] = {}  # -> (first seq, count)
        self.acked: set[tuple[int, int]] = set()
        self.errors: list[str] = []

    def read(self, writer: int, entries: list[list[str]]) -> None:
        pending: tuple[int, int, int] | None = None
        for entry in entries:
            if entry[0] == "I":
                session, first, count = map(int, entry[1:])
                for seq in range(first, first + count):
                    self.session[(writer, seq)] = session
                    self.batch[(writer, seq)] = (first, count)
                pending = (session, first, count)
            elif entry[0] == "A":
                assert pending is not None and int(entry[1]) == pending[1], entry
                for seq in range(pending[1], pending[1] + pending[2]):
                    self.acked.add((writer, seq))
                pending = None
            elif entry[0] == "E":
                self.errors.append(f"w{writer}: {json.loads(entry[1])}")

    def in_flight(self, session: int) -> list[tuple[int, int]]:
        return [m for m, s in self.session.items() if s == session and m not in self.acked]


def replay_rollbacker(
    entries: list[list[str]],
) -> tuple[list[tuple[int, ...]], set[int], int, list[str]]:
    """The candidate message lists of a rollback session after its log, the seqs of appends in
    flight when a life ended (their torn fragments may remain), the number of acknowledged
    operations, and any disagreement between the log and the results."""
    problems: list[str] = []
    torn: set[int] = set()
    state: tuple[int, ...] = ()
    pending: tuple | None = None
    acked = 0

    def applied(state, op):
        if op[0] == "A":
            return (*state, op[1])
        if not state:
            return state
        return state[:-1] if op[0] == "R" else (*state[:-1], op[1])

    candidates = [state]
    for entry in entries:
        kind = entry[0]
        if kind == "L":
            if pending is not None:
                candidates = [state, applied(state, pending)]
                torn.update([pending[1]] if pending[0] == "A" else [])
                pending = None
        elif kind == "S":
            seen = tuple(json.loads(entry[1]))
            if seen not in candidates:
                problems.append(
                    f"loaded {seen[-5:]} (len {len(seen)}), expected one of "
                    f"{[c[-5:] for c in candidates]}"
                )
            state, candidates = seen, [seen]
        elif kind == "I":
            pending = (
                ("A", int(entry[2]))
                if entry[1] == "A"
                else (("R",) if entry[1] == "R" else ("U", int(entry[2])))
            )
        elif kind == "E":
            problems.append(f"worker error: {json.loads(entry[1])}")
        else:
            assert pending is not None and pending[0] == kind, (entry, pending)
            if kind in ("R", "U") and bool(int(entry[-1])) != bool(state):
                problems.append(f"{kind} returned {entry[-1]} on {len(state)} messages")
            state = applied(state, pending)
            candidates = [state]
            pending = None
            acked += 1
    if pending is not None:
        candidates = [state, applied(state, pending)]
        torn.update([pending[1]] if pending[0] == "A" else [])
    return candidates, torn, acked, problems


def classify(line: bytes, in_flight: dict[tuple[int, int], bytes]) -> tuple | None:
    """``("msg", writer, seq)`` for an exact message line, ``("torn", writer, seq)`` for a
    proper prefix of an in-flight message's line, ``("junk",)`` for (a prefix of) a junk line,
    ``None`` for anything else (a glued, damaged or unknown line)."""
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


def check(workspace: str, writers: int, rollbackers: int, compactors: int) -> dict:
    """Check the workspace after the run (and make the final appends); returns the figures,
    with ``problems``: the empty list when all is well."""
    from turnlog._rust import SessionStore as RustStore
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
        problems += [f"c{index}: {json.loads(e[1])}" for e in entries if e[0] == "E"]

    # The torn tails left by the kills, then one more append per session: it must land intact.
    keys = SHARED + [rollback_key(j) for j in range(rollbackers)]
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

    # Shared sessions: every line a whole message or a fragment of one in flight.
    present: dict[tuple[int, int], int] = {}
    fragments = 0
    for number, key in enumerate(SHARED):
        in_flight = {m: line_of(*m) for m in book.in_flight(number)}
        lines, _ = split_lines(contents[key])
        last_seq: dict[int, int] = {}
        for position, line in enumerate(lines):
            kind = classify(line, in_flight)
            if kind is None:
                problems.append(
                    f"{key}: line {position} is neither a message nor a torn "
                    f"fragment: {line[:120]!r}... ({len(line)} bytes)"
                )
                continue
            if kind[0] == "torn":
                fragments += 1
                continue
            if kind[0] == "junk":
                continue
            _, writer_id, seq = kind
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
    lost = sorted(m for m in book.acked if m not in present)
    duplicates = sorted(m for m, n in present.items() if n > 1)
    problems += [f"lost: acknowledged w{w}-{s} is missing" for w, s in lost[:20]]
    problems += [
        f"duplicate: w{w}-{s} is there {present[(w, s)]} times" for w, s in duplicates[:20]
    ]
    # Of an append_many in flight, only a prefix of the batch may have landed.
    batches: dict[tuple[int, int], list[int]] = {}
    for (writer_id, seq), (first, count) in book.batch.items():
        if count > 1 and (writer_id, seq) not in book.acked:
            batches.setdefault((writer_id, first), []).append(int((writer_id, seq) in present))
    for (writer_id, first), flags in batches.items():
        if flags != sorted(flags, reverse=True):
            problems.append(f"w{writer_id}: in-flight batch {first} landed as {flags}")

    # Rollback sessions: exactly one of the candidate lists the log allows.
    rollback_ops = 0
    for index in range(rollbackers):
        key = rollback_key(index)
        candidates, torn, acked, replay_problems = replay_rollbacker(
            read_log(os.path.join(logs, f"r{index}.log"))
        )
        rollback_ops += acked
        problems += [f"{key}: {p}" for p in replay_problems]
        me = ROLLBACK_BASE + index
        in_flight = {(me, seq): line_of(me, seq) for seq in torn}
        seqs = []
        for position, line in enumerate(split_lines(contents[key])[0]):
            kind = classify(line, in_flight)
            if kind is None or (kind[0] != "junk" and kind[1] != me):
                problems.append(f"{key}: line {position} is unexpected: {line[:120]!r}")
            elif kind[0] == "msg":
                seqs.append(kind[2])
            elif kind[0] == "torn":
                fragments += 1
        if tuple(seqs) not in candidates:
            problems.append(
                f"{key}: holds {seqs[-5:]} (len {len(seqs)}), expected one of "
                f"{[c[-5:] for c in candidates]}"
            )

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
