"""fork() from a threaded parent: a thread of the parent is inside a locked write when the main
thread forks (``multiprocessing``'s default start method on Linux up to Python 3.13, gunicorn,
celery). The child inherits the locked descriptor; neither it nor the parent may hang."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from conftest import store_class
from turnlog import ChatMessage

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

U = ChatMessage.user
FORKS = 20
#: How long one append may take before the test calls it a hang (a normal one takes under 1 ms;
#: a loaded CI machine gets a wide margin).
DEADLINE = 5.0


def busy_rewriter(store, key: str, stop: threading.Event) -> threading.Thread:
    """A thread that keeps taking the session's lock: rollbacks, edits and compactions."""

    def run() -> None:
        while not stop.is_set():
            store.append(key, U("draft"))
            store.update_last(key, U("edited"))
            store.compact(key)
            store.remove_last(key)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def append_within(store, key: str, seconds: float) -> bool:
    done = threading.Event()

    def run() -> None:
        store.append(key, U("parent"))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def fork_while_held(lock, in_child) -> int | None:
    """Fork while another thread holds ``lock``: the child's exit status (0 when ``in_child()``
    was true; ``None`` when it hung)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait()

    threading.Thread(target=hold, daemon=True).start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            ok = in_child()
        finally:
            os._exit(0 if ok else 1)  # never back into the parent's pytest
    try:
        return wait_child(pid, DEADLINE)
    finally:
        release.set()


def wait_child(pid: int, seconds: float) -> int | None:
    """The child's exit status, or ``None`` (and the child killed) if it is still running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_an_idle_child_never_blocks_the_parent(impl, tmp_path):
    """Children forked while a parent thread holds the session's lock, which then sleep without
    touching turnlog: the parent's next append must not wait for them to exit."""
    store = store_class(impl)(tmp_path / "ws")
    stop = threading.Event()
    thread = busy_rewriter(store, "s", stop)
    children = []
    try:
        for _ in range(FORKS):
            time.sleep(0.002)
            pid = os.fork()
            if pid == 0:  # the child: idle, as a worker that never uses turnlog
                time.sleep(30)
                os._exit(0)
            children.append(pid)
            assert append_within(store, "s", DEADLINE), "the parent's append hung"
    finally:
        stop.set()
        thread.join(10)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert store.load("s", limit=1)  # the session still reads


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_appends_to_the_session_the_parent_was_rewriting(impl, tmp_path):
    """Each child, forked while a parent thread works on the session, appends to it with the
    store it inherited, and exits: it must not hang on what it inherited."""
    store = store_class(impl)(tmp_path / "ws")
    stop = threading.Event()
    thread = busy_rewriter(store, "s", stop)
    try:
        for child in range(FORKS):
            time.sleep(0.002)
            pid = os.fork()
            if pid == 0:
                try:
                    store.append("s", U(f"child {child}"))
                    store.load("s", limit=3)
                finally:
                    os._exit(0)
            assert wait_child(pid, DEADLINE) == 0, f"child {child} hung"
    finally:
        stop.set()
        thread.join(10)
    # The rewriter takes away the newest message, a child's too: the point is that none hung.
    assert store.load("s", limit=1)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_loads_a_big_session_while_a_parent_thread_was_loading_one(tmp_path):
    """Big loads of the Rust store take turns on a process-wide lock: a child forked while a
    parent thread held it gets a lock of its own."""
    from turnlog.backends.jsonl import rust

    store = store_class("rust")(tmp_path / "ws")
    many = rust.BIG_LOAD + 100
    store.append_many("big", [U("x" * 100)] * many)
    status = fork_while_held(rust._big_loads, lambda: len(store.load("big")) == many)
    assert status == 0, "the child's load hung on the lock its parent's thread held"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("where", ["main thread", "pool thread"])
def test_an_async_store_works_in_a_child_forked_after_its_pools_ran(impl, tmp_path, where):
    """A forked child has none of its parent's threads: an ``AsyncSessionStore`` it inherited
    (its pools full of threads that do not exist there) must not queue its calls forever."""
    import asyncio

    from turnlog.aio import AsyncBackend

    store = AsyncBackend(store_class(impl)(tmp_path / "ws"), max_workers=2)

    async def busy() -> None:
        # Every pool thread started: full loads and metadata go to the pools in any store.
        await asyncio.gather(*(store.list_sessions_with_metadata() for _ in range(8)))
        await store.append("s", U("parent"))

    asyncio.run(busy())

    def child() -> None:
        async def use() -> int:
            await store.append("s", U("child"))
            return len(await store.load("s")) + len(await store.list_sessions_with_metadata())

        status = 1
        try:
            status = 0 if asyncio.run(use()) == 3 else 1
        finally:
            os._exit(status)  # never back into the parent's pytest

    if where == "main thread":
        pid = os.fork()
        if pid == 0:
            child()
    else:  # a call the pool runs forks (a backend that shells out, a library that daemonises)

        def fork_here() -> int:
            pid = os.fork()
            if pid == 0:
                child()
            return pid

        pid = store._pool.submit(fork_here).result()
    status = wait_child(pid, DEADLINE)
    asyncio.run(store.aclose())
    assert status == 0, "the child's call waited for a thread that does not exist there"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_an_sdk_session_works_in_a_child_forked_while_a_thread_held_its_lock(tmp_path):
    import asyncio

    if not os.environ.get("CI", "").strip():
        pytest.importorskip("agents")
    from turnlog.integrations.openai_agents import TurnlogSession

    session = TurnlogSession("chat", store_class("pure")(tmp_path / "ws"))

    def in_child() -> bool:
        asyncio.run(session.add_items([{"role": "user", "content": "child"}]))
        return asyncio.run(session.get_items()) == [{"role": "user", "content": "child"}]

    status = fork_while_held(session._lock, in_child)  # as a worker thread mid-call holds it
    assert status == 0, "the child waited for a lock a thread of its parent held"
