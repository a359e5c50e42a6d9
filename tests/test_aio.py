"""``turnlog.aio``: async twins of every backend method, run off the event loop.

pytest-asyncio is not a dependency: each test drives its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import os
import shutil
import statistics
import threading
import time
from datetime import datetime, timezone
from functools import partial
from typing import Any

import pytest

import turnlog
from conftest import require_native, store_class
from turnlog import ChatMessage, SessionBackend, SessionMetadata, SessionQuery, SessionState
from turnlog.aio import BULK_MESSAGES, AsyncBackend, AsyncSessionStore

U = ChatMessage.user
A = ChatMessage.assistant


class MemoryBackend(SessionBackend):
    """The README's four-method backend; records which thread ran each call."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[ChatMessage]] = {}
        self.threads: list[str] = []

    def load(self, session_key, limit=None):
        self.threads.append(threading.current_thread().name)
        messages = self.sessions.get(session_key, [])
        return messages[max(len(messages) - limit, 0) :] if limit is not None else list(messages)

    def append(self, session_key, message):
        self.threads.append(threading.current_thread().name)
        if not isinstance(message, ChatMessage):
            message = ChatMessage.from_dict(message)
        self.sessions.setdefault(session_key, []).append(message)

    def remove_last(self, session_key):
        if not self.sessions.get(session_key):
            return False
        self.sessions[session_key].pop()
        return True

    def list_sessions(self):
        return sorted(self.sessions)


def public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


# --- the surface --------------------------------------------------------------------------------


def test_every_backend_method_has_an_async_twin_with_the_same_parameters():
    # The JSONL store's signatures are the reference: they are SessionBackend's plus match=.
    reference = public_methods(turnlog.SessionStore)
    backend_methods = public_methods(SessionBackend)
    assert set(backend_methods) <= set(reference)
    for name in backend_methods:
        twin = getattr(AsyncBackend, name, None)
        assert twin is not None, f"AsyncBackend has no {name}"
        assert inspect.iscoroutinefunction(twin), f"AsyncBackend.{name} is not async"
        want = [
            (p.name, p.kind, p.default)
            for p in inspect.signature(reference[name]).parameters.values()
        ]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(twin).parameters.values()]
        assert got == want, name
        assert twin.__doc__, f"AsyncBackend.{name} has no docstring"


def test_async_session_store_wraps_the_default_store(tmp_path):
    store = AsyncSessionStore(tmp_path / "ws", durability="power")
    try:
        assert type(store.backend) is turnlog.SessionStore
        assert store.durability == "power"
        assert os.path.samefile(store.sessions_dir, tmp_path / "ws" / "sessions")
        assert store.sessions_dir == store.backend.sessions_dir
        assert "SessionStore" in repr(store)
    finally:
        store.close()


def test_constructor_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="SessionBackend"):
        AsyncBackend(object())  # type: ignore[type-var]
    with pytest.raises(ValueError, match="bulk_workers"):
        AsyncBackend(MemoryBackend(), bulk_workers=0)
    with pytest.raises(TypeError, match="max_workers"):
        AsyncBackend(MemoryBackend(), max_workers="4")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bulk_workers"):
        AsyncBackend(MemoryBackend(), bulk_workers=True)
    with pytest.raises(ValueError, match="durability"):
        AsyncSessionStore(tmp_path / "ws", durability="disk")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        AsyncSessionStore(tmp_path / "file")


# --- same results as the sync store -------------------------------------------------------------


def generated():
    yield U("from a generator")
    yield {"role": "assistant", "content": "second", "meta": {"n": [1, 2.5, None]}}


#: (method, args, kwargs): every SessionBackend method, with the JSONL extras and bad input.
SCRIPT: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("list_sessions", (), {}),
    ("append", ("a", U("hello world")), {}),
    ("append", ("a", {"role": "assistant", "content": "hi!", "name": "bot"}), {}),
    ("append", ("ключ/1", U("привет")), {}),
    ("append_many", ("b", [U("one"), A("two"), U("three")]), {}),
    ("append_many", ("b", generated()), {}),
    ("append_many", ("b", []), {}),
    ("load", ("a",), {}),
    ("load", ("a",), {"limit": 1}),
    ("load", ("a", 0), {}),
    ("load", ("b",), {"limit": BULK_MESSAGES + 1}),
    ("load", ("missing",), {}),
    ("load_with_timestamps", ("b",), {}),
    ("load_with_timestamps", ("b",), {"limit": 2}),
    ("remove_last", ("b",), {}),
    ("remove_last", ("missing",), {}),
    ("update_last", ("a", A("hi there")), {}),
    ("update_last", ("missing", A("x")), {}),
    ("compact", ("c",), {}),
    ("load", ("c",), {}),
    ("clear_messages", ("c",), {}),
    ("clear_messages", ("missing",), {}),
    ("session_exists", ("c",), {}),
    ("session_exists", ("zz",), {}),
    ("list_sessions", (), {}),
    ("set_session_name", ("a", "Support chat"), {}),
    ("get_session_name", ("a",), {}),
    ("get_session_name", ("b",), {}),
    ("set_session_agent_alias", ("a", "helper"), {}),
    ("get_session_agent_alias", ("a",), {}),
    ("set_session_context", ("a",), {"channel_id": "c1", "room_id": "r1", "sender_id": "u9"}),
    ("set_session_context", ("a",), {"room_id": "r2"}),
    ("get_session_metadata", ("a",), {}),
    ("get_session_metadata", ("missing",), {}),
    ("list_sessions_with_metadata", (), {}),
    ("set_session_state", ("a", "running", "t1"), {}),
    ("set_session_state", ("b", "error"), {}),
    ("get_session_state", ("a",), {}),
    ("get_session_state", ("b",), {}),
    ("get_session_state", ("missing",), {}),
    ("list_running_sessions", (), {}),
    ("list_stuck_sessions", (0,), {}),
    ("list_stuck_sessions", (3600,), {}),
    ("search", (SessionQuery("hello"),), {}),
    ("search", (SessionQuery("HELLO there"),), {"match": "any"}),
    ("search", (SessionQuery("hello there"),), {"match": "all"}),
    ("search", (SessionQuery(None, limit=2),), {}),
    ("cleanup_stale", (1000,), {}),
    ("delete_session", ("b",), {}),
    ("delete_session", ("b",), {}),
    # Bad input raises the same exception, with the same message.
    ("load", ("",), {}),
    ("load", ("a",), {"limit": -1}),
    ("append", ("a", {"role": "user"}), {}),
    ("append", (7, U("x")), {}),
    ("append_many", ("a", [U("ok"), {"role": "user", "content": float("nan")}]), {}),
    ("set_session_state", ("a", "sleeping"), {}),
    ("search", (SessionQuery("x"),), {"match": "some"}),
    ("list_sessions", (), {}),
    ("load", ("a",), {}),
    ("cleanup_stale", (0,), {}),
    ("list_sessions", (), {}),
]


def without_times(value: Any) -> Any:
    """``value`` with the datetimes that depend on when a call ran set to ``None``."""
    if isinstance(value, SessionMetadata):
        return dataclasses.replace(value, created_at=None, last_activity=None)
    if isinstance(value, SessionState):
        return dataclasses.replace(value, turn_started_at=None)
    if isinstance(value, list):
        items = [without_times(item) for item in value]
        # Activity order among sessions changed within one clock tick depends on timing.
        if items and all(isinstance(item, SessionMetadata) for item in items):
            items.sort(key=lambda m: m.key)
        return items
    if isinstance(value, tuple):
        return tuple(without_times(item) for item in value)
    return value


def outcome_of(call) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as error:
        return type(error).__name__, str(error)


async def async_outcome_of(call) -> tuple[str, Any]:
    try:
        return "ok", await call()
    except Exception as error:
        return type(error).__name__, str(error)


def fresh_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # A generator is consumed by the first run; give each run its own.
    return tuple(generated() if inspect.isgenerator(arg) else arg for arg in args)


def seed_corrupt(workspace) -> None:
    sessions = workspace / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / "c.jsonl").write_bytes(b'{"role":"user","content":"keep"}\nnot json\n{"torn":')


@pytest.mark.parametrize(
    ("impl", "wrap"),
    [("rust", "AsyncBackend"), ("pure", "AsyncBackend"), ("default", "AsyncSessionStore")],
)
def test_every_method_gives_what_the_sync_store_gives(tmp_path, impl, wrap):
    # AsyncSessionStore wraps turnlog.SessionStore: Rust, or pure with TURNLOG_PURE=1.
    store_cls = turnlog.SessionStore if impl == "default" else store_class(impl)
    sync_ws, async_ws = tmp_path / "sync", tmp_path / "async"
    seed_corrupt(sync_ws)
    seed_corrupt(async_ws)
    sync = store_cls(sync_ws)
    if wrap == "AsyncSessionStore":
        wrapped: AsyncBackend[Any] = AsyncSessionStore(async_ws)
    else:
        wrapped = AsyncBackend(store_cls(async_ws))

    async def run() -> list[tuple[str, tuple[str, Any], tuple[str, Any]]]:
        seen = []
        async with wrapped:
            for name, args, kwargs in SCRIPT:
                want = outcome_of(partial(getattr(sync, name), *fresh_args(args), **kwargs))
                got = await async_outcome_of(
                    partial(getattr(wrapped, name), *fresh_args(args), **kwargs)
                )
                seen.append((name, want, got))
        return seen

    results = asyncio.run(run())
    for name, want, got in results:
        assert without_times(got) == without_times(want), name
    kinds = {want[0] for _, want, _ in results}
    assert {"ok", "ValueError", "TypeError"} <= kinds  # the script did reach the error cases
    # And the two workspaces hold the same transcripts, byte for byte.
    listing = sorted(p.name for p in (sync_ws / "sessions").iterdir())
    assert listing == sorted(p.name for p in (async_ws / "sessions").iterdir())


def test_reads_equal_the_sync_store_on_one_workspace(store_cls, tmp_path):
    # Same files, so even the times and the activity order must be identical.
    sync = store_cls(tmp_path / "ws")
    sync.append_many("a", [U("hello world"), A("hi")])
    sync.append("b", U("bonjour le monde"))
    sync.set_session_name("a", "Support")
    sync.set_session_state("b", "running", "t9")
    wrapped = AsyncBackend(store_cls(tmp_path / "ws"))
    reads: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("load", ("a",), {}),
        ("load", ("a",), {"limit": 1}),
        ("load_with_timestamps", ("a",), {}),
        ("list_sessions", (), {}),
        ("session_exists", ("b",), {}),
        ("list_sessions_with_metadata", (), {}),
        ("get_session_metadata", ("a",), {}),
        ("get_session_name", ("a",), {}),
        ("get_session_agent_alias", ("a",), {}),
        ("get_session_state", ("b",), {}),
        ("list_running_sessions", (), {}),
        ("list_stuck_sessions", (0,), {}),
        ("search", (SessionQuery("world monde"),), {"match": "any"}),
    ]

    async def run() -> list[Any]:
        async with wrapped:
            return [await getattr(wrapped, name)(*args, **kw) for name, args, kw in reads]

    got = asyncio.run(run())
    want = [getattr(sync, name)(*args, **kw) for name, args, kw in reads]
    assert got == want
    assert len(got[-1]) == 2


# --- how calls run ------------------------------------------------------------------------------


def test_calls_run_in_worker_threads_and_big_loads_in_the_bulk_pool():
    backend = MemoryBackend()
    wrapped = AsyncBackend(backend, max_workers=2)

    async def run() -> None:
        async with wrapped:
            await wrapped.append("k", U("x"))
            await wrapped.load("k", limit=BULK_MESSAGES)
            await wrapped.load("k")
            await wrapped.load("k", limit=BULK_MESSAGES + 1)
            await wrapped.append_many("k", [U("y")] * (BULK_MESSAGES + 1))

    asyncio.run(run())
    loop_thread = threading.current_thread().name
    assert loop_thread not in backend.threads
    general, small_load, full_load, big_load = backend.threads[:4]
    assert general.startswith("turnlog-aio_")
    assert small_load.startswith("turnlog-aio_")
    assert full_load.startswith("turnlog-aio-bulk_")
    assert big_load.startswith("turnlog-aio-bulk_")
    # The default append_many appends one by one: all of them in the bulk pool.
    assert {name.split("_")[0] for name in backend.threads[4:]} == {"turnlog-aio-bulk"}
    assert len(backend.threads) == 4 + BULK_MESSAGES + 1


def test_any_backend_works_and_keeps_its_defaults():
    backend = MemoryBackend()
    wrapped = AsyncBackend(backend)

    async def run() -> None:
        await wrapped.append_many("k", [U("a"), A("b")])
        assert await wrapped.load("k") == [U("a"), A("b")]
        assert await wrapped.update_last("k", A("c")) is True
        assert await wrapped.load_with_timestamps("k") == [(U("a"), None), (A("c"), None)]
        metadata = await wrapped.get_session_metadata("k")
        assert metadata == SessionMetadata(key="k", message_count=2)
        assert await wrapped.search(SessionQuery("a")) == []
        assert await wrapped.get_session_state("k") is None
        assert await wrapped.delete_session("k") is False
        assert await wrapped.clear_messages("k") == 2
        # The ABC declares match= and set_session_times with their defaults: no probing.
        assert await wrapped.search(SessionQuery("a"), match="any") == []
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        assert await wrapped.set_session_times("k", created_at=when) is False
        await wrapped.aclose()

    asyncio.run(run())
    with pytest.raises(AttributeError, match="sessions_dir"):
        _ = wrapped.sessions_dir
    assert wrapped.backend is backend


def test_sqlite_backend_through_async_backend(tmp_path):
    sqlite = pytest.importorskip("turnlog.backends.sqlite")
    backend = sqlite.SqliteSessionBackend(tmp_path / "ws")
    wrapped = AsyncBackend(backend)

    async def run() -> None:
        async with wrapped:
            await wrapped.append_many("k", [U("hello world"), A("bonjour")])
            await wrapped.set_session_name("k", "n")
            assert await wrapped.load("k") == backend.load("k")
            assert await wrapped.get_session_name("k") == "n"
            found = await wrapped.search(SessionQuery("bonjour nothing"), match="any")
            assert [m.key for m in found] == ["k"]
            # Methods beyond SessionBackend become coroutines too, run off the loop.
            assert await wrapped.create_session("new") is True
            assert backend.session_exists("new")
            await wrapped.rebuild_search_index()
            with pytest.raises(AttributeError):
                wrapped.no_such_method  # noqa: B018
            with pytest.raises(AttributeError):
                wrapped._connection  # noqa: B018

    try:
        asyncio.run(run())
    finally:
        backend.close()


def test_context_variables_reach_the_worker_thread():
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    seen: list[str] = []

    class Recording(MemoryBackend):
        def load(self, session_key, limit=None):
            seen.append(request_id.get("unset"))
            return super().load(session_key, limit)

    wrapped = AsyncBackend(Recording())

    async def run() -> None:
        request_id.set("r-42")
        await wrapped.load("k", limit=1)
        await wrapped.load("k")
        await wrapped.aclose()

    asyncio.run(run())
    assert seen == ["r-42", "r-42"]


def test_closed_store_refuses_calls_and_aclose_waits_for_calls_in_progress(tmp_path):
    started = threading.Event()
    finished: list[bool] = []

    class Slow(MemoryBackend):
        def append(self, session_key, message):
            started.set()
            time.sleep(0.2)
            super().append(session_key, message)
            finished.append(True)

    wrapped = AsyncBackend(Slow())

    async def run() -> None:
        task = asyncio.create_task(wrapped.append("k", U("x")))
        await asyncio.sleep(0)
        while not started.is_set():
            await asyncio.sleep(0.005)
        await wrapped.aclose()
        assert finished == [True]  # aclose waited for the call in its thread
        await task
        with pytest.raises(RuntimeError, match="AsyncBackend is closed"):
            await wrapped.load("k")

    asyncio.run(run())


def test_cancelled_caller_does_not_cut_a_started_write():
    started, release = threading.Event(), threading.Event()

    class Gated(MemoryBackend):
        def append_many(self, session_key, messages):
            started.set()
            release.wait(5)
            super().append_many(session_key, messages)

    backend = Gated()
    wrapped = AsyncBackend(backend)

    async def run() -> None:
        task = asyncio.create_task(wrapped.append_many("k", [U("a"), U("b")]))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await wrapped.aclose()

    asyncio.run(run())
    # The caller gave up, but the write it started ran to its end (as a sync call would).
    assert backend.sessions["k"] == [U("a"), U("b")]


# --- the event loop stays responsive ------------------------------------------------------------

SESSIONS = 8
# Long enough that one load blocks a loop several times CPython's 5 ms switch interval, the
# least a thread waiting for the GIL may wait even in plain Python code.
MESSAGES = 40_000


@dataclasses.dataclass
class Watch:
    """What a task sleeping 1 ms at a time saw of the event loop while some work ran."""

    worst: float = 0.0  # the most it woke up late, in seconds
    ticks: int = 0  # how many times it woke up


async def watch_loop_while(work) -> tuple[Watch, Any]:
    watch = Watch()
    done = False

    async def monitor() -> None:
        while not done:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            watch.worst = max(watch.worst, time.perf_counter() - start - 0.001)
            watch.ticks += 1

    watcher = asyncio.create_task(monitor())
    await asyncio.sleep(0.01)  # the monitor is running before the work starts
    watch.worst, watch.ticks = 0.0, 0
    result = await work()
    done = True
    await watcher
    return watch, result


def fill(workspace, keys: list[str], messages: int) -> None:
    """Sessions of ``messages`` messages of about 2 KB (Latin, Cyrillic, CJK): 80 MB for 40,000,
    so one load takes long enough to tell a blocked loop from a free one. Written by the default
    store (the Rust one when built: seconds faster than pure Python, and the files are the same).
    """
    words = ["the", "deployment", "failed", "because", "the", "migration", "timed", "out"]
    words += ["привет", "отчёт", "今日は", "会議"]
    pool = [" ".join(words[(i + j) % len(words)] for j in range(200 + i % 60)) for i in range(97)]
    batch = [
        {"role": "user" if i % 2 else "assistant", "content": f"{i}: {pool[i % len(pool)]}"}
        for i in range(messages)
    ]
    store = turnlog.SessionStore(workspace)
    for key in keys:
        store.append_many(key, batch)


def cpu_share(seconds: float = 0.1) -> float:
    """The share of a CPU this thread gets while it spins: about 1 on a calm machine, 0.5 or less
    while other processes keep every core busy."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < seconds:
        pass
    return (time.thread_time() - cpu) / (time.perf_counter() - wall)


#: A round ran on a calm machine when this thread got this share of a CPU just before it.
CALM = 0.85


@dataclasses.dataclass
class Round:
    share: float  # cpu_share() just before the round
    stall: float  # max loop stall while SESSIONS loads ran through the AsyncSessionStore
    ticks: int  # loop wake-ups meanwhile
    blocked: float  # max loop stall while one load ran on the loop


def test_event_loop_stays_responsive_while_big_sessions_load(tmp_path, capsys):
    require_native()  # the claim is about the Rust store, which holds the GIL only in bursts
    workspace = tmp_path / "ws"
    keys = [f"big{i}" for i in range(SESSIONS)]
    fill(workspace, keys, MESSAGES)
    sync = turnlog.SessionStore(workspace)
    expected_tail = sync.load(keys[0], limit=3)

    def passes(rounds: list[Round]) -> bool:
        # Relative to the stall of a load run on the loop, measured in the same round, so a
        # busy machine slows both sides alike (absolute timings belong to the benchmarks).
        blocked = statistics.median(r.blocked for r in rounds)
        return min(r.stall for r in rounds) < blocked / 2

    async def measure(most: int = 5) -> list[Round]:
        rounds: list[Round] = []
        async with AsyncSessionStore(workspace) as store:
            # The loads' results stay alive until the watch is over: freeing 40,000 messages
            # takes the loop itself about 20 ms, a cost of the caller's, not of the load.
            async def load_all() -> list[list[ChatMessage]]:
                async def one(key: str) -> list[ChatMessage]:
                    messages = await store.load(key)
                    assert messages[-3:] == expected_tail
                    return messages

                return list(await asyncio.gather(*(one(key) for key in keys)))

            async def load_one_on_the_loop() -> list[list[ChatMessage]]:
                return [sync.load(keys[0])]  # blocks the loop: the baseline

            # The best of up to `most` rounds, stopping once one passes. The maximum over
            # hundreds of wake-ups catches every hiccup of a shared machine: other processes
            # only ever add stall (the loop thread, or the loader holding the GIL, waiting for a
            # CPU), never take it away.
            for _ in range(most):
                share = cpu_share()
                watch, loaded = await watch_loop_while(load_all)
                assert [len(messages) for messages in loaded] == [MESSAGES] * SESSIONS
                del loaded
                baseline, loaded = await watch_loop_while(load_one_on_the_loop)
                assert [len(messages) for messages in loaded] == [MESSAGES]
                del loaded
                rounds.append(Round(share, watch.worst, watch.ticks, baseline.worst))
                if passes(rounds):
                    break
        return rounds

    try:
        rounds = asyncio.run(measure())
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    with capsys.disabled():
        print(f"\n[rust] {SESSIONS} concurrent loads of {MESSAGES} messages (80 MB each):")
        for r in rounds:
            print(
                f"  cpu share {r.share:.2f}: max loop stall {r.stall * 1000:.1f} ms "
                f"({r.ticks} wake-ups); one load on the loop {r.blocked * 1000:.1f} ms"
            )
    # Always: the loop kept running through the loads. Run on the loop, the loads would let it
    # wake up only between them, about SESSIONS times.
    assert all(r.ticks > 5 * SESSIONS for r in rounds)
    if passes(rounds):
        return
    # Excused only when every round ran on a saturated machine: a loader preempted while it
    # holds the GIL stalls the loop for 100-250 ms then, and the figures measure the neighbours.
    assert not any(r.share >= CALM for r in rounds), "the loop stalled too long (figures above)"
    with capsys.disabled():
        print("  (no round on a calm machine: the stall figures were not checked)")


def test_pure_store_loads_leave_the_loop_running(tmp_path, capsys):
    # The pure store holds the GIL in Python code, which the interpreter switches away from
    # every few milliseconds, so the loop keeps running. Its worst stall is not small, though:
    # its messages are tracked by the cycle collector, and a full collection (in whichever thread
    # allocates) holds the GIL for 50-150 ms here. So this checks that the loop kept ticking.
    from turnlog.pure import SessionStore as PureStore

    workspace = tmp_path / "ws"
    keys = [f"big{i}" for i in range(SESSIONS)]
    fill(workspace, keys, 4_000)

    async def measure() -> tuple[Watch, float]:
        async with AsyncBackend(PureStore(workspace)) as store:

            async def load_all() -> list[int]:
                return [len(m) for m in await asyncio.gather(*(store.load(k) for k in keys))]

            start = time.perf_counter()
            watch, counts = await watch_loop_while(load_all)
            elapsed = time.perf_counter() - start
        assert counts == [4_000] * SESSIONS
        return watch, elapsed

    watch, elapsed = asyncio.run(measure())
    with capsys.disabled():
        print(
            f"\n[pure] {SESSIONS} concurrent loads of 4000 messages: {elapsed * 1000:.0f} ms, "
            f"max loop stall {watch.worst * 1000:.1f} ms, {watch.ticks} ticks"
        )
    # On the loop, the loads would leave a tick or two between loads: about SESSIONS in all.
    assert watch.ticks > 4 * SESSIONS
    assert watch.worst < elapsed / 3
