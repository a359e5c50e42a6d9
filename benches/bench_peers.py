"""turnlog vs the session stores of popular frameworks, on the same messages.

Compares turnlog's Rust and pure stores with LangChain's ``FileChatMessageHistory`` and
``SQLChatMessageHistory`` (SQLite through SQLAlchemy) and the OpenAI Agents SDK's
``SQLiteSession``, each used as its documentation shows. A framework that is not installed shows
as "not installed"; ``pip install -r benches/requirements-peers.txt`` brings them all. Prints a
Markdown table of medians and writes it to ``benches/results-peers.md``.

    python benches/bench_peers.py               # about 2 minutes on 2 cores
    python benches/bench_peers.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from corpus import bench_dir, ensure_corpus
from turnlog import pure
from turnlog._impl import native

Msg = dict[str, Any]
T = TypeVar("T")

KEY = "bench"
TAIL = 50
APPENDS = 1_000
TURN_HISTORY = 1_000
TURNS = 50
LOAD_HISTORY = 10_000
#: A tail load is repeated within a round until the round takes about this long.
LOAD_ROUND = 0.05
RESULTS = Path(__file__).resolve().parent / "results-peers.md"
SCRATCH = bench_dir() / "scratch-peers"
INSTALL = "pip install -r benches/requirements-peers.txt"
USER: Msg = {"role": "user", "content": "What's the weather in Kyiv today? Коротко, please 🌤"}
REPLY: Msg = {"role": "assistant", "content": "Sunny, 24 °C, light wind from the west.\n- dry"}
#: LangChain's message classes by turnlog role, and back by ``BaseMessage.type``.
LC_CLASSES = {"user": "HumanMessage", "assistant": "AIMessage", "system": "SystemMessage"}
LC_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


@dataclass
class Row:
    """One measured (or unavailable) figure of the table."""

    op: str
    impl: str
    value: float | None  # None: the implementation is not available
    unit: str  # "s": lower is better; "/s": higher is better
    correct: str
    note: str = ""
    missing: str = ""  # what the median column says when value is None


# --- the implementations ------------------------------------------------------------------------


class Impl:
    """One session store, driven the way its documentation shows.

    ``open`` makes a session already holding ``history`` (not timed); the timed methods return
    the seconds they took, measured around the calls a bot would make and nothing else.
    """

    name = ""
    note = ""  # shown on its rows
    missing = ""  # why it cannot run ("" when it can)
    writes_only = False  # only in the write benchmarks (append, bot turn)
    sliced = False  # has no limit: reads everything, then slices the newest TAIL

    def native(self, message: Msg) -> Any:
        """``message`` as this store takes it (converted before the clock starts)."""
        return message

    def to_dict(self, message: Any) -> Msg:
        """A message read back, as a turnlog-style dict, to check it."""
        return dict(message)

    def open(self, workspace: Path, history: Sequence[Any]) -> Any:
        raise NotImplementedError

    def close(self, handle: Any) -> None:
        """Release files and connections."""

    def read_all(self, handle: Any) -> list[Msg]:
        raise NotImplementedError

    def append_each(self, handle: Any, messages: Sequence[Any]) -> float:
        raise NotImplementedError

    def turns(self, handle: Any, user: Any, reply: Any, turns: int) -> tuple[float, list[Any]]:
        """``turns`` bot turns; returns the time and what each turn read."""
        raise NotImplementedError

    def tail(self, handle: Any, repeat: int) -> tuple[float, list[Any]]:
        """The newest ``TAIL`` messages, read ``repeat`` times; the time of all, the last read."""
        raise NotImplementedError


class SyncImpl(Impl):
    """A store with a blocking API: ``_append`` one message, ``_tail`` the newest ``TAIL``."""

    def _append(self, handle: Any, message: Any) -> None:
        raise NotImplementedError

    def _tail(self, handle: Any) -> list[Any]:
        raise NotImplementedError

    def append_each(self, handle: Any, messages: Sequence[Any]) -> float:
        append = self._append
        start = time.perf_counter()
        for message in messages:
            append(handle, message)
        return time.perf_counter() - start

    def turns(self, handle: Any, user: Any, reply: Any, turns: int) -> tuple[float, list[Any]]:
        append, tail = self._append, self._tail
        reads = []
        start = time.perf_counter()
        for _ in range(turns):
            reads.append(tail(handle))
            append(handle, user)
            append(handle, reply)
        return time.perf_counter() - start, reads

    def tail(self, handle: Any, repeat: int) -> tuple[float, list[Any]]:
        tail = self._tail
        read: list[Any] = []
        start = time.perf_counter()
        for _ in range(repeat):
            read = tail(handle)
        return time.perf_counter() - start, read


class Turnlog(SyncImpl):
    """``turnlog.SessionStore`` (Rust) or ``turnlog.pure.SessionStore``."""

    def __init__(self, name: str, factory: Callable[..., Any] | None, **options: Any) -> None:
        self.name = name
        self.factory = factory
        self.options = options
        if factory is None:
            self.missing = "n/a"
            self.note = "turnlog._native not built"
        if options.get("durability") == "power":
            self.writes_only = True
            self.note = "fsync on every append, as SQLite commits by default"

    def to_dict(self, message: Any) -> Msg:
        return message.to_dict()  # type: ignore[no-any-return]

    def open(self, workspace: Path, history: Sequence[Any]) -> Any:
        assert self.factory is not None
        store = self.factory(workspace, **self.options)
        if history:
            store.append_many(KEY, history)
        return store

    def read_all(self, handle: Any) -> list[Msg]:
        return [m.to_dict() for m in handle.load(KEY)]

    def _append(self, handle: Any, message: Any) -> None:
        handle.append(KEY, message)

    def _tail(self, handle: Any) -> list[Any]:
        return handle.load(KEY, limit=TAIL)  # type: ignore[no-any-return]


def _quiet_import(name: str) -> Any:
    """Import ``name`` without its deprecation notices (langchain-community warns on import)."""
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(name)


class LangChain(SyncImpl):
    """Shared by LangChain's histories: ``BaseMessage`` objects in and out, no limit on reads."""

    sliced = True

    def __init__(self) -> None:
        try:
            self.lc = _quiet_import("langchain_core.messages")
            self.history = _quiet_import("langchain_community.chat_message_histories")
            self._load_class()
        except ImportError as error:
            self.missing = "not installed"
            self.note = f"{type(error).__name__}: {error}"[:80]

    def _load_class(self) -> None:
        raise NotImplementedError

    def native(self, message: Msg) -> Any:
        extra = {"name": message["name"]} if "name" in message else {}
        if message["role"] == "tool":
            # ToolMessage needs a tool_call_id; the corpus's tool messages do not all have one.
            call = message.get("tool_call_id", "")
            return self.lc.ToolMessage(message["content"], tool_call_id=call, **extra)
        return getattr(self.lc, LC_CLASSES[message["role"]])(message["content"], **extra)

    def to_dict(self, message: Any) -> Msg:
        out: Msg = {"role": LC_ROLES[message.type], "content": message.content}
        if message.name is not None:
            out["name"] = message.name
        if message.type == "tool" and message.tool_call_id:
            out["tool_call_id"] = message.tool_call_id
        return out

    def read_all(self, handle: Any) -> list[Msg]:
        return [self.to_dict(m) for m in handle.messages]

    def _append(self, handle: Any, message: Any) -> None:
        handle.add_message(message)

    def _tail(self, handle: Any) -> list[Any]:
        return handle.messages[-TAIL:]  # type: ignore[no-any-return]


class LangChainFile(LangChain):
    """``FileChatMessageHistory``: one JSON array, read and rewritten whole on every add."""

    name = "LangChain FileChatMessageHistory"

    def _load_class(self) -> None:
        self.cls = self.history.FileChatMessageHistory
        self.note = "rewrites the whole JSON file on every add"

    def open(self, workspace: Path, history: Sequence[Any]) -> Any:
        path = workspace / "history.json"
        if history:  # what add_message would leave, without its quadratic cost
            path.write_text(json.dumps(self.lc.messages_to_dict(list(history))))
        return self.cls(str(path))


class LangChainSQL(LangChain):
    """``SQLChatMessageHistory`` on a SQLite file, through SQLAlchemy's ORM."""

    name = "LangChain SQLChatMessageHistory"

    def _load_class(self) -> None:
        self.cls = self.history.SQLChatMessageHistory
        self.note = "SQLite file via SQLAlchemy ORM, fsync per commit"

    def open(self, workspace: Path, history: Sequence[Any]) -> Any:
        handle = self.cls(session_id=KEY, connection=f"sqlite:///{workspace / 'history.db'}")
        if history:
            handle.add_messages(list(history))  # one transaction
        return handle

    def close(self, handle: Any) -> None:
        handle.session_maker.remove()
        handle.engine.dispose()


class AgentsSQLite(Impl):
    """OpenAI Agents SDK ``SQLiteSession``: async, each call run in a worker thread."""

    name = "Agents SDK SQLiteSession"

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        try:
            self.cls = _quiet_import("agents").SQLiteSession
            self.note = "SQLite file (WAL), fsync per commit; asyncio"
        except ImportError as error:
            self.missing = "not installed"
            self.note = f"{type(error).__name__}: {error}"[:80]

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on this store's event loop (one loop for the whole benchmark)."""
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(coroutine)

    def open(self, workspace: Path, history: Sequence[Any]) -> Any:
        session = self.cls(KEY, workspace / "agents.db")
        if history:
            self.run(session.add_items(list(history)))  # one transaction
        return session

    def close(self, handle: Any) -> None:
        handle.close()

    def read_all(self, handle: Any) -> list[Msg]:
        return self.run(handle.get_items())  # type: ignore[no-any-return]

    def append_each(self, handle: Any, messages: Sequence[Any]) -> float:
        async def appends() -> float:
            start = time.perf_counter()
            for message in messages:
                await handle.add_items([message])
            return time.perf_counter() - start

        return self.run(appends())

    def turns(self, handle: Any, user: Any, reply: Any, turns: int) -> tuple[float, list[Any]]:
        async def bot() -> tuple[float, list[Any]]:
            reads = []
            start = time.perf_counter()
            for _ in range(turns):
                reads.append(await handle.get_items(limit=TAIL))
                await handle.add_items([user])
                await handle.add_items([reply])
            return time.perf_counter() - start, reads

        return self.run(bot())

    def tail(self, handle: Any, repeat: int) -> tuple[float, list[Any]]:
        async def loads() -> tuple[float, list[Any]]:
            read: list[Any] = []
            start = time.perf_counter()
            for _ in range(repeat):
                read = await handle.get_items(limit=TAIL)
            return time.perf_counter() - start, read

        return self.run(loads())


def implementations() -> list[Impl]:
    rust: Callable[..., Any] | None = None
    if native is not None:
        from turnlog.backends.jsonl.rust import SessionStore as rust
    return [
        Turnlog("turnlog rust", rust),
        Turnlog("turnlog pure", pure.SessionStore),
        Turnlog("turnlog rust, durability=power", rust, durability="power"),
        LangChainFile(),
        LangChainSQL(),
        AgentsSQLite(),
    ]


# --- the benchmarks -----------------------------------------------------------------------------


def scratch(name: str) -> Path:
    """A fresh, empty workspace."""
    workspace = SCRATCH / name.replace(" ", "-").replace(",", "").replace("=", "-")
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    return workspace


def verdict(ok: bool, why: str) -> str:
    return "yes" if ok else f"no: {why}"


def report(row: Row) -> Row:
    """Show progress as figures come in (the full table comes at the end)."""
    value = row.missing if row.value is None else fmt(row.value, row.unit)
    print(f"  {row.op:<32} {row.impl:<33} {value:>14}  {row.correct}", flush=True)
    return row


def unavailable(op: str, impl: Impl, unit: str) -> Row:
    return report(Row(op, impl.name, None, unit, "n/a", impl.note, impl.missing))


def rounds_note(impl: Impl, done: int, rounds: int, extra: str = "") -> str:
    parts = [impl.note, extra] + ([f"{done} of {rounds} rounds (time budget)"] * (done < rounds))
    return "; ".join(part for part in parts if part)


def first_difference(got: Sequence[Msg], want: Sequence[Msg]) -> str:
    if len(got) != len(want):
        return f"{len(got):,} messages, not {len(want):,}"
    index = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    return f"message {index} differs"


def bench_append(impls: list[Impl], messages: list[Msg], rounds: int, budget: float) -> list[Row]:
    """``APPENDS`` appends one by one to a new session, in appends/s."""
    op = f"append one by one ({len(messages):,})"
    rows = []
    for impl in impls:
        if impl.missing:
            rows.append(unavailable(op, impl, "/s"))
            continue
        natives = [impl.native(m) for m in messages]
        times: list[float] = []
        why = ""
        began = time.perf_counter()
        while len(times) < rounds and (len(times) < 2 or time.perf_counter() - began < budget):
            handle = impl.open(scratch(f"append {impl.name}"), [])
            try:
                times.append(impl.append_each(handle, natives))
                got = impl.read_all(handle)
            finally:
                impl.close(handle)
            if got != messages:
                why = why or first_difference(got, messages)
        rate = len(messages) / statistics.median(times)
        note = rounds_note(impl, len(times), rounds)
        rows.append(report(Row(op, impl.name, rate, "/s", verdict(not why, why), note)))
    return rows


def bench_turn(impls: list[Impl], history: list[Msg], rounds: int, budget: float) -> list[Row]:
    """Bot turns on a ``TURN_HISTORY``-message session: read the newest ``TAIL``, append the
    user's message and the reply; time per turn."""
    op = f"bot turn at {len(history):,} msgs"
    expected = history + [USER, REPLY] * TURNS
    rows = []
    for impl in impls:
        if impl.missing:
            rows.append(unavailable(op, impl, "s"))
            continue
        natives = [impl.native(m) for m in history]
        user, reply = impl.native(USER), impl.native(REPLY)
        times: list[float] = []
        why = ""
        began = time.perf_counter()
        while len(times) < rounds and (len(times) < 2 or time.perf_counter() - began < budget):
            handle = impl.open(scratch(f"turn {impl.name}"), natives)
            try:
                seconds, reads = impl.turns(handle, user, reply, TURNS)
                times.append(seconds / TURNS)
                got = impl.read_all(handle)
            finally:
                impl.close(handle)
            for turn, read in enumerate(reads):
                want = expected[: len(history) + 2 * turn][-TAIL:]
                if [impl.to_dict(m) for m in read] != want:
                    why = why or f"turn {turn} read the wrong tail"
            if got != expected:
                why = why or first_difference(got, expected)
        note = rounds_note(impl, len(times), rounds, "reads all, slices" * impl.sliced)
        ok = verdict(not why, why)
        rows.append(report(Row(op, impl.name, statistics.median(times), "s", ok, note)))
    return rows


def bench_tail(impls: list[Impl], history: list[Msg], rounds: int, budget: float) -> list[Row]:
    """The newest ``TAIL`` messages of a ``LOAD_HISTORY``-message session."""
    op = f"load newest {TAIL} at {len(history):,} msgs"
    want = history[-TAIL:]
    rows = []
    for impl in impls:
        if impl.writes_only:
            continue
        if impl.missing:
            rows.append(unavailable(op, impl, "s"))
            continue
        handle = impl.open(scratch(f"tail {impl.name}"), [impl.native(m) for m in history])
        try:
            first, read = impl.tail(handle, 1)  # warms up, and sets the calls per round
            repeat = max(1, min(1_000, round(LOAD_ROUND / max(first, 1e-7))))
            ok = [impl.to_dict(m) for m in read] == want
            times: list[float] = []
            began = time.perf_counter()
            while len(times) < rounds and (len(times) < 2 or time.perf_counter() - began < budget):
                seconds, read = impl.tail(handle, repeat)
                times.append(seconds / repeat)
                ok &= [impl.to_dict(m) for m in read] == want
        finally:
            impl.close(handle)
        note = rounds_note(impl, len(times), rounds, "reads all, slices" * impl.sliced)
        ok_text = verdict(ok, "wrong tail")
        rows.append(report(Row(op, impl.name, statistics.median(times), "s", ok_text, note)))
    return rows


# --- the table ----------------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} us"


def versus(row: Row, rust: Row | None) -> str:
    """How ``row`` compares with turnlog's Rust store: "12x slower", "1.3x faster"."""
    if row.value is None or rust is None or rust.value is None or not row.value:
        return "n/a"
    if row is rust:
        return "1.0x"
    slower = rust.value / row.value if row.unit == "/s" else row.value / rust.value
    times, word = (slower, "slower") if slower >= 1 else (1 / slower, "faster")
    return f"{times:,.0f}x {word}" if times >= 100 else f"{times:.1f}x {word}"


def table(rows: list[Row]) -> str:
    rust = {row.op: row for row in rows if row.impl == "turnlog rust"}
    lines = [
        "| operation | implementation | median | vs turnlog rust | correct | note |",
        "|---|---|---:|---:|---|---|",
    ]
    previous = ""
    for row in rows:
        value = row.missing if row.value is None else fmt(row.value, row.unit)
        op = row.op if row.op != previous else ""
        lines.append(
            f"| {op} | {row.impl} | {value} | {versus(row, rust.get(row.op))} | {row.correct} "
            f"| {row.note} |"
        )
        previous = row.op
    return "\n".join(lines)


def versions() -> str:
    names = ("langchain-core", "langchain-community", "SQLAlchemy", "openai-agents")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def corpus_messages(n: int) -> list[Msg]:
    """The valid messages of the ``n``-message corpus (see ``corpus.py``), as dicts."""
    corpus = ensure_corpus(n=n)
    workspace = scratch("corpus")
    (workspace / "sessions").mkdir()
    shutil.copyfile(corpus.path, workspace / "sessions" / f"{KEY}.jsonl")
    return [m.to_dict() for m in pure.SessionStore(workspace).load(KEY)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per median")
    parser.add_argument(
        "--budget", type=float, default=12.0, help="seconds per figure after which rounds stop"
    )
    args = parser.parse_args()
    started = time.perf_counter()

    messages = corpus_messages(LOAD_HISTORY)
    impls = implementations()
    for impl in impls:
        state = impl.missing or "ok"
        print(f"{impl.name}: {state}" + (f" ({impl.note})" if impl.missing else ""))

    try:
        rows = bench_append(impls, messages[:APPENDS], args.rounds, args.budget)
        rows += bench_turn(impls, messages[:TURN_HISTORY], args.rounds, args.budget)
        rows += bench_tail(impls, messages, args.rounds, args.budget)
    finally:
        for impl in impls:
            if isinstance(impl, AgentsSQLite) and impl.loop is not None:
                impl.loop.close()
        shutil.rmtree(SCRATCH, ignore_errors=True)

    header = (
        f"The same messages from the benchmark corpus (`corpus.py`: 20 B-30 KB, English, "
        f"Cyrillic, CJK, emoji) in every store. Medians of up to {args.rounds} rounds. "
        f"{versions()}. Python {platform.python_version()}, {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    legend = (
        f"A bot turn reads the newest {TAIL} messages, then appends the user's message and the "
        f"reply ({TURNS} turns a round, from {TURN_HISTORY:,} messages). turnlog's default "
        "durability survives a crash of the process; the SQLite stores fsync every commit "
        '(their default), as turnlog does with `durability="power"`. "not installed": '
        f"`{INSTALL}`."
    )
    text = f"{header}\n\n{table(rows)}\n\n{legend}\n"
    print("\n" + text)
    RESULTS.write_text(f"# turnlog vs framework session stores\n\n{text}")
    print(f"written to {RESULTS} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
