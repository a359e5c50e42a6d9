"""``turnlog.aio`` runs cheap calls of the Rust store on the event loop when the lock is free,
and in the pool otherwise, with the same results and errors either way."""

from __future__ import annotations

import asyncio
import fcntl
import os

import pytest

from conftest import in_ci, require_native
from turnlog import ChatMessage
from turnlog.aio import INLINE_MESSAGES, AsyncBackend, AsyncSessionStore


def U(text: str) -> ChatMessage:
    return ChatMessage("user", text)


@pytest.fixture
def rust_store_cls():
    require_native()
    from turnlog.backends.jsonl.rust import SessionStore

    return SessionStore


def count_pool_calls(store: AsyncSessionStore) -> list[int]:
    """A counter (``[n]``) of the calls ``store`` hands to its thread pools from now on."""
    count = [0]
    for pool in (store._pool, store._bulk):
        submit = pool.submit

        def counted(*args, _submit=submit, **kwargs):
            count[0] += 1
            return _submit(*args, **kwargs)

        pool.submit = counted  # type: ignore[method-assign]
    return count


def test_cheap_calls_run_on_the_loop(rust_store_cls, tmp_path):
    async def main() -> list[object]:
        store = AsyncSessionStore(tmp_path / "ws")
        assert isinstance(store.backend, rust_store_cls)
        pool_calls = count_pool_calls(store)
        await store.append("s", U("zero"))  # creates the session, on the loop as well
        await store.append("s", U("one"))
        await store.append_many("s", [U("two"), U("three")])
        loaded = await store.load("s", limit=2)
        popped = await store.pop_last("s")
        removed = await store.remove_last("s")
        assert pool_calls == [0]
        done = [loaded, popped, removed, await store.load("s")]
        assert pool_calls == [1]  # a load of everything is no cheap call
        await store.aclose()
        return done

    loaded, popped, removed, left = asyncio.run(main())
    assert loaded == [U("two"), U("three")]
    assert popped == U("three")
    assert removed is True
    assert left == [U("zero"), U("one")]


def test_a_locked_session_goes_to_the_pool_and_nothing_is_written_twice(rust_store_cls, tmp_path):
    ws = tmp_path / "ws"
    rust_store_cls(ws).append("s", U("first"))
    path = rust_store_cls(ws).transcript_path("s")

    async def main() -> list[ChatMessage]:
        store = AsyncSessionStore(ws)
        pool_calls = count_pool_calls(store)
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the session
        calls = [
            asyncio.ensure_future(store.append("s", U("second"))),
            asyncio.ensure_future(store.append_many("s", [U("third")])),
        ]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in calls)  # waiting in the pool, not failed
        assert pool_calls == [2]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        await asyncio.gather(*calls)
        loaded = await store.load("s")
        await store.aclose()
        return loaded

    loaded = asyncio.run(main())
    assert loaded[0] == U("first")
    assert sorted(m.content for m in loaded[1:]) == ["second", "third"]


def test_a_locked_session_is_read_in_the_pool(rust_store_cls, tmp_path):
    ws = tmp_path / "ws"
    rust_store_cls(ws).append_many("s", [U("a"), U("b")])
    path = rust_store_cls(ws).transcript_path("s")

    async def main() -> list[ChatMessage]:
        store = AsyncSessionStore(ws)
        pool_calls = count_pool_calls(store)
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        call = asyncio.ensure_future(store.load("s", limit=1))
        await asyncio.sleep(0.1)
        assert not call.done() and pool_calls == [1]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        loaded = await call
        await store.aclose()
        return loaded

    assert asyncio.run(main()) == [U("b")]


def test_errors_are_the_same_on_the_loop(rust_store_cls, tmp_path):
    async def main() -> None:
        store = AsyncSessionStore(tmp_path / "ws")
        with pytest.raises(ValueError, match="empty"):
            await store.load("", limit=5)
        with pytest.raises(ValueError):
            await store.load("s", limit=-1)
        with pytest.raises(TypeError):
            await store.append("s", {"role": "user", "content": 5})
        with pytest.raises(ValueError):
            await store.append_many("s", [U("fine"), {"role": "user"}])
        assert await store.load("s") == []  # nothing of a refused batch was written
        store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.load("s", limit=1)
        with pytest.raises(RuntimeError, match="closed"):
            await store.append("s", U("late"))

    asyncio.run(main())


def test_power_durability_writes_in_the_pool(rust_store_cls, tmp_path):
    async def main() -> None:
        store = AsyncSessionStore(tmp_path / "ws", durability="power")
        pool_calls = count_pool_calls(store)
        await store.append("s", U("one"))
        await store.append_many("s", [U("two")])
        await store.pop_last("s")
        assert pool_calls == [3]  # an fsync takes milliseconds: never on the loop
        assert await store.load("s", limit=INLINE_MESSAGES) == [U("one")]
        assert pool_calls == [3]  # a read syncs nothing
        await store.aclose()

    asyncio.run(main())


# --- the OpenAI Agents SDK session ---------------------------------------------------------------


def turnlog_session_class():
    if not in_ci():
        pytest.importorskip("agents")
    from turnlog.integrations.openai_agents import TurnlogSession

    return TurnlogSession


def count_threads(monkeypatch) -> list[int]:
    """A counter of the calls the adapter hands to ``asyncio.to_thread`` from now on."""
    from turnlog.integrations import openai_agents

    count = [0]
    real = asyncio.to_thread

    async def counted(*args, **kwargs):
        count[0] += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(openai_agents.asyncio, "to_thread", counted)
    return count


def test_a_turn_of_the_sdk_session_runs_on_the_loop(rust_store_cls, tmp_path, monkeypatch):
    session_class = turnlog_session_class()
    session = session_class("chat", rust_store_cls(tmp_path / "ws"))
    hops = count_threads(monkeypatch)

    async def turn() -> list[object]:
        await session.add_items([{"role": "user", "content": "hi"}])
        await session.add_items([{"role": "assistant", "content": "hello"}])
        items = await session.get_items(limit=50)
        popped = await session.pop_item()
        return [items, popped, await session.get_items()]

    items, popped, everything = asyncio.run(turn())
    assert items == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert popped == {"role": "assistant", "content": "hello"}
    assert everything == [{"role": "user", "content": "hi"}]
    assert hops == [1]  # only the unlimited get_items went to a thread


def test_the_sdk_session_waits_in_a_thread_for_a_locked_session(
    rust_store_cls, tmp_path, monkeypatch
):
    session_class = turnlog_session_class()
    store = rust_store_cls(tmp_path / "ws")
    store.append("chat", {"role": "user", "content": "first"})
    session = session_class("chat", store)
    hops = count_threads(monkeypatch)

    async def main() -> object:
        fd = os.open(store.transcript_path("chat"), os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        add = asyncio.ensure_future(session.add_items([{"role": "user", "content": "second"}]))
        await asyncio.sleep(0.1)
        assert not add.done() and hops == [1]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        await add
        return await session.get_items(limit=5)

    assert asyncio.run(main()) == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]
    assert hops == [1]


def test_a_big_tail_is_read_in_the_pool(rust_store_cls, tmp_path):
    store_sync = rust_store_cls(tmp_path / "ws")
    store_sync.append_many("pictures", [U("b" * 20_000)] * 40)  # 800 KB in the last 40

    async def main() -> None:
        store = AsyncSessionStore(tmp_path / "ws")
        pool_calls = count_pool_calls(store)
        assert len(await store.load("pictures", limit=40)) == 40
        assert pool_calls == [1]  # over INLINE_BYTES: not on the loop
        assert len(await store.load("pictures", limit=2)) == 2
        assert pool_calls == [1]
        await store.aclose()

    asyncio.run(main())


def test_a_subclass_keeps_its_overrides(rust_store_cls, tmp_path):
    class Redacting(rust_store_cls):  # type: ignore[misc, valid-type]
        def append(self, session_key, message):
            super().append(session_key, {"role": message["role"], "content": "[redacted]"})

    async def main() -> list[ChatMessage]:
        store = AsyncBackend(Redacting(tmp_path / "ws"))
        await store.append("s", {"role": "user", "content": "4111 1111 1111 1111"})
        loaded = await store.load("s", limit=5)
        await store.aclose()
        return loaded

    assert asyncio.run(main()) == [U("[redacted]")]


def test_big_loads_take_turns_without_waiting_behind_a_locked_session(rust_store_cls, tmp_path):
    import threading

    store = rust_store_cls(tmp_path / "ws")
    for key in ("a", "b"):
        store.append_many(key, [U("m")] * 1500)  # more than BIG_LOAD: they take turns
    fd = os.open(store.transcript_path("a"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer holds "a"
    try:
        waiting = threading.Thread(target=store.load, args=("a",), daemon=True)
        waiting.start()
        done = threading.Event()
        threading.Thread(target=lambda: (store.load("b"), done.set()), daemon=True).start()
        assert done.wait(10), "a load of another session queued behind the locked one"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    waiting.join(10)
