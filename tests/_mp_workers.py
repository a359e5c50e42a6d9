"""Process bodies for ``test_multiprocess`` (importable by name in "spawn" children)."""

from __future__ import annotations

import fcntl
import os
import random
import time
import traceback

from turnlog.backends import files as _files


def open_store(impl, workspace):
    if impl == "rust":
        from turnlog.backends.jsonl.rust import SessionStore
    else:
        from turnlog.pure import SessionStore
    return SessionStore(workspace)


def record(writer, seq):
    return {"role": "user", "content": f"w{writer}-{seq}", "writer": writer, "seq": seq}


def locked_raw_append(path, data):
    """Append raw bytes under the stores' lock protocol (``turnlog.backends.files.locked``: flock on
    the
    transcript, opened again if a rewrite renamed a new file over it), mending a torn tail."""
    with _files.locked(path, create=True) as held:
        fd = held[0]
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)


def appender(impl, workspace, key, writer, count, start, results):
    """Append ``count`` numbered messages; report the acknowledged sequence numbers."""
    acked = []
    try:
        store = open_store(impl, workspace)
        pause = random.Random(writer)
        start.wait(30)
        for seq in range(count):
            store.append(key, record(writer, seq))
            acked.append(seq)
            time.sleep(pause.random() * 0.004)  # let the compactor interleave
        results.put(("appender", writer, acked, None))
    except BaseException:
        results.put(("appender", writer, acked, traceback.format_exc()))


def compactor(impls, workspace, path, key, start, stop, results):
    """Until ``stop``: add junk and non-compact lines, compact, and check every load shows each
    writer's messages as a gap-free prefix in order (nothing acknowledged may vanish)."""
    rounds = 0
    problems = []
    try:
        stores = [open_store(impl, workspace) for impl in impls]
        start.wait(30)
        while not stop.is_set() and len(problems) < 5:
            store = stores[rounds % len(stores)]
            if rounds % 3 == 0:
                locked_raw_append(path, b"junk line\n")
            elif rounds % 3 == 1:
                locked_raw_append(path, b'  {"role":"filler","content":"pad"}  \n')
            store.compact(key)
            seen: dict[int, list[int]] = {}
            for message in store.load(key):
                if message.role == "user":
                    seen.setdefault(message.extra["writer"], []).append(message.extra["seq"])
            for writer, seqs in seen.items():
                if seqs != list(range(len(seqs))):
                    problems.append(f"writer {writer}: {seqs[:10]}... ({len(seqs)} seen)")
            rounds += 1
        results.put(("compactor", rounds, problems, None))
    except BaseException:
        results.put(("compactor", rounds, problems, traceback.format_exc()))


def hold_lock(path, ready):
    """Take the transcript's lock and keep it until killed."""
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    while True:
        time.sleep(60)


def append_one(impl, workspace, key, message, started, results):
    try:
        store = open_store(impl, workspace)
        started.set()
        begin = time.monotonic()
        store.append(key, message)
        results.put(("ok", time.monotonic() - begin))
    except BaseException:
        results.put(("error", traceback.format_exc()))
