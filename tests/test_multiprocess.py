"""Real processes appending to and rewriting one session at once, with both stores."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import time
from pathlib import Path

import pytest

import _mp_workers
from _spec import decode_line, encode, record_dict
from conftest import store_class
from turnlog import ChatMessage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

WRITERS = 4
PER_WRITER = 200


def native_available():
    from turnlog._impl import native

    return native is not None


def collect(results, count, timeout):
    found = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(found)} of {count} processes reported: {found}"
        found.append(results.get(timeout=remaining))
    return found


def stop_all(processes):
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def test_concurrent_appends_and_compaction(impl, tmp_path):
    # "rust": appenders and the compactor alternate between the Rust and the pure store.
    store_cls = store_class(impl)
    impls = ["rust", "pure"] if impl == "rust" else ["pure"]
    workspace = str(tmp_path / "ws")
    store = store_cls(workspace)
    key = "shared/session"
    store.append(key, {"role": "system", "content": "start"})
    path = os.path.join(store.sessions_dir, "shared%2Fsession.jsonl")
    assert os.path.exists(path)

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start = context.Event()
    stop = context.Event()
    appenders = [
        context.Process(
            target=_mp_workers.appender,
            args=(impls[w % len(impls)], workspace, key, w, PER_WRITER, start, results),
        )
        for w in range(WRITERS)
    ]
    compactor = context.Process(
        target=_mp_workers.compactor, args=(impls, workspace, path, key, start, stop, results)
    )
    processes = [*appenders, compactor]
    try:
        for process in processes:
            process.start()
        start.set()
        reports = collect(results, WRITERS, timeout=60)
        stop.set()
        reports += collect(results, 1, timeout=30)
    finally:
        stop.set()
        stop_all(processes)
    assert all(p.exitcode == 0 for p in processes)

    acked = {}
    for kind, who, payload, error in reports:
        assert error is None, error
        if kind == "appender":
            acked[who] = payload
        else:
            rounds, problems = who, payload
    assert problems == []
    assert rounds >= 3  # the rewrites really ran while the appends did
    assert acked == {w: list(range(PER_WRITER)) for w in range(WRITERS)}

    store.compact(key)  # drop the compactor's last junk line, if any
    data = Path(path).read_bytes()
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    seen = {w: [] for w in range(WRITERS)}
    for line in lines:
        decoded = decode_line(line)
        assert decoded is not None, line
        obj = record_dict(decoded[1])
        assert encode(obj) == line + b"\n"  # one whole record per line, nothing glued
        if obj["role"] == "user":
            seen[obj["writer"]].append(obj["seq"])
        else:
            assert obj in (
                {"role": "system", "content": "start"},
                {"role": "filler", "content": "pad"},
            )
    assert seen == acked  # every acknowledged append, exactly once, each writer in order
    assert lines[0] == b'{"role":"system","content":"start"}'
    loaded = store.load(key)
    assert len(loaded) == len(lines)
    assert sum(m.role == "user" for m in loaded) == WRITERS * PER_WRITER


def test_lock_of_killed_process_is_released(impl, tmp_path):
    store_cls = store_class(impl)
    workspace = str(tmp_path / "ws")
    store = store_cls(workspace)
    store.append("k", ChatMessage.user("first"))
    path = os.path.join(store.sessions_dir, "k.jsonl")

    context = multiprocessing.get_context("spawn")
    ready, started = context.Event(), context.Event()
    results = context.Queue()
    holder = context.Process(target=_mp_workers.hold_lock, args=(path, ready))
    second = ChatMessage.assistant("second")
    appender = context.Process(
        target=_mp_workers.append_one, args=(impl, workspace, "k", second, started, results)
    )
    try:
        holder.start()
        assert ready.wait(30), "the lock holder did not start"
        appender.start()
        assert started.wait(30), "the appender did not start"
        # The lock is the transcript's flock: the append waits while it is held...
        with pytest.raises(queue.Empty):
            results.get(timeout=0.5)
        assert Path(path).read_bytes() == b'{"role":"user","content":"first"}\n'
        # ...and goes through promptly once the holder is SIGKILLed.
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.join(10)
        status, payload = results.get(timeout=10)
        assert status == "ok", payload
        assert time.monotonic() - killed_at < 5
        appender.join(10)
    finally:
        stop_all([holder, appender])
    assert holder.exitcode == -signal.SIGKILL
    assert appender.exitcode == 0
    assert store.load("k") == [ChatMessage.user("first"), second]
    assert Path(path).read_bytes() == (
        b'{"role":"user","content":"first"}\n{"role":"assistant","content":"second"}\n'
    )


def test_lock_is_the_transcript_flock(impl, tmp_path):
    """Within one process too: a rewrite waits for a flock taken on the file (no other lock)."""
    import fcntl
    import threading

    store = store_class(impl)(tmp_path / "ws")
    store.append("k", ChatMessage.user("a"))
    path = os.path.join(store.sessions_dir, "k.jsonl")
    fd = os.open(path, os.O_RDWR)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (store.append("k", ChatMessage.user("b")), done.set()))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread.start()
        assert not done.wait(0.5)
        assert Path(path).read_bytes() == b'{"role":"user","content":"a"}\n'
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert done.wait(10)
    thread.join(10)
    assert store.load("k") == [ChatMessage.user("a"), ChatMessage.user("b")]


def _forked_appender(store, key, writer, count, results):
    for seq in range(count):
        store.append(key, {"role": "user", "content": f"{writer}:{seq}"})
    results.put(writer)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_append_while_the_parent_compacts(impl, tmp_path):
    """A store keeps session files open between appends and forked children inherit the
    store with them: the parent's compactions and appends and the children's appends, all at
    once, lose nothing and keep each child's order."""
    store = store_class(impl)(tmp_path / "ws")
    key = "forked"
    store.append(key, {"role": "system", "content": "start"})  # now cached in the parent
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [
        context.Process(target=_forked_appender, args=(store, key, w, 150, results))
        for w in range(2)
    ]
    for child in children:
        child.start()
    try:
        deadline = time.monotonic() + 60
        while any(child.is_alive() for child in children) and time.monotonic() < deadline:
            store.compact(key)
            store.append(key, {"role": "user", "content": "parent"})
        assert sorted(collect(results, 2, 60)) == [0, 1]
    finally:
        stop_all(children)
    contents = [m.content for m in store.load(key)]
    for writer in range(2):
        mine = [c for c in contents if c.startswith(f"{writer}:")]
        assert mine == [f"{writer}:{seq}" for seq in range(150)]
