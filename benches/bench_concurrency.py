"""turnlog where bots run: asyncio, thread pools and non-ASCII chats (the table of issue 13).

Five settings, measured side by side in one run with the build in use, medians of ``--rounds``:

1. 100 asyncio chats x 30 turns (``load(limit=50)`` + 2 appends) through
   ``turnlog.aio.AsyncSessionStore``, vs the same turns calling ``turnlog.SessionStore`` inline
   on the loop; and the loop's worst stall while 8 big loads run through ``AsyncSessionStore``.
2. The same chats through ``TurnlogSession`` vs the OpenAI Agents SDK's ``SQLiteSession``.
3. ``pop_item`` on a 2,000-item session, ``TurnlogSession`` vs ``SQLiteSession``.
4. 1, 2, 4 and 8 threads each loading its own big session, vs one thread loading them in turn.
5. A full load of a mostly non-ASCII session (``corpus.py --text nonascii``) vs an orjson store
   and vs reading the file's bytes; the default corpus alongside.

Prints a Markdown table and writes it to ``benches/results-concurrency.md``.

    python benches/bench_concurrency.py            # 200,000-message sessions, ~2 min on 2 cores
    python benches/bench_concurrency.py --quick    # 20,000-message sessions, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench_peers import REPLY, USER, AgentsSQLite
from compare import fmt
from corpus import Corpus, bench_dir, ensure_corpus
from machine import cpu_seconds, machine, others_share
from peers import OrjsonStore, split_decode
from turnlog import SessionStore
from turnlog.aio import AsyncSessionStore

T = TypeVar("T")
R = TypeVar("R")
Msg = dict[str, Any]

TAIL = 50
#: Messages each chat holds before its turns, so every tail read is a full ``TAIL``.
HISTORY = 100
BIG_LOADS = 8
THREADS = (1, 2, 4, 8)
#: The ticker's sleep: how finely the loop's stalls are seen.
TICK = 0.001
RESULTS = Path(__file__).resolve().parent / "results-concurrency.md"
SCRATCH = "scratch-concurrency"


@dataclass
class Row:
    """One line of the table: turnlog's figure, the baseline's, and what the issue targets."""

    setting: str
    turnlog: str
    baseline: str
    ratio: str
    target: str
    note: str = ""


def report(*fields: str) -> Row:
    """A row of the table, shown as it comes in (the full table comes at the end)."""
    row = Row(*fields)
    print(f"  {row.setting[:60]:<60} {row.turnlog:>16} {row.baseline:>16} {row.ratio:>8}")
    return row


def interleaved(
    fns: dict[str, Callable[[], T]], rounds: int, digest: Callable[[T], R]
) -> dict[str, tuple[float, R]]:
    """Median wall time of each of ``fns``, and ``digest`` of its last result. The functions take
    turns round by round, so a noisy spell on a shared machine hits all of them alike; each
    result is freed after its clock stops (freeing 200,000 messages is not loading them)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    digests: dict[str, R] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            times[name].append(time.perf_counter() - start)
            digests[name] = digest(result)
            del result
    return {name: (statistics.median(times[name]), digests[name]) for name in fns}


def times_text(ratio: float) -> str:
    return f"{ratio:.2f}x"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f} turns/s"


def workspace(name: str) -> Path:
    """A fresh, empty workspace under the bench dir (owner-only, as turnlog requires)."""
    path = bench_dir() / SCRATCH / name
    shutil.rmtree(path, ignore_errors=True)
    (path / "sessions").mkdir(parents=True, mode=0o700)
    path.chmod(0o700)
    return path


def place(source: Path, root: Path, key: str) -> Path:
    """``source`` copied in as session ``key``, and on disk before any clock starts: a copy's
    dirty pages written back meanwhile would take a core from what is measured (there are 2)."""
    target = root / "sessions" / f"{key}.jsonl"
    shutil.copyfile(source, target)
    with open(target, "rb") as f:
        os.fsync(f.fileno())
    return target


# --- 1. asyncio chats and the loop's stalls ----------------------------------------------------


async def _chats(turn: Callable[[str], Awaitable[None]], keys: Sequence[str], turns: int) -> float:
    """``turns`` turns of every chat in ``keys``, the chats concurrent; the wall time."""

    async def chat(key: str) -> None:
        for _ in range(turns):
            await turn(key)
            await asyncio.sleep(0)  # where a bot awaits its model: other chats run meanwhile

    start = time.perf_counter()
    await asyncio.gather(*(chat(key) for key in keys))
    return time.perf_counter() - start


async def worst_stall(work: Awaitable[T]) -> tuple[float, T]:
    """The longest the loop was late to wake a ticker sleeping ``TICK``, while ``work`` ran."""
    worst = 0.0
    done = False

    async def ticker() -> None:
        nonlocal worst
        while not done:
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            worst = max(worst, time.perf_counter() - start - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(TICK)  # the ticker is running before the work starts
    try:
        result = await work
    finally:
        done = True
        await task
    return worst, result


def big_sessions(corpus: Corpus) -> tuple[Path, list[str]]:
    """A workspace of ``max(THREADS)`` sessions, each a copy of ``corpus`` (files of their own,
    as separate chats are: no shared inode, lock or descriptor), and their keys."""
    root = workspace("big")
    keys = [f"big-{i}" for i in range(max(THREADS))]
    for key in keys:
        place(corpus.path, root, key)
    return root, keys


def bench_asyncio(
    loop: asyncio.AbstractEventLoop, big: tuple[Path, list[str]], options: argparse.Namespace
) -> list[Row]:
    chats, turns, rounds = options.chats, options.turns, options.rounds
    root = workspace("asyncio")
    sync = SessionStore(root)
    aio = AsyncSessionStore(root)
    history = [USER, REPLY] * (HISTORY // 2)
    counter = iter(range(1 << 30))

    def fresh_keys() -> list[str]:
        """New chats for each round, so every round starts from ``HISTORY`` messages."""
        keys = [f"chat-{next(counter)}" for _ in range(chats)]
        for key in keys:
            sync.append_many(key, history)
        return keys

    async def async_turn(key: str) -> None:
        await aio.load(key, limit=TAIL)
        await aio.append(key, USER)
        await aio.append(key, REPLY)

    async def inline_turn(key: str) -> None:
        sync.load(key, limit=TAIL)
        sync.append(key, USER)
        sync.append(key, REPLY)

    variants = {"aio": async_turn, "inline": inline_turn}
    times: dict[str, list[float]] = {name: [] for name in variants}
    ok = True
    loop.run_until_complete(_chats(async_turn, fresh_keys()[:2], 2))  # the pools' threads up
    for _ in range(rounds):
        for name, turn in variants.items():
            keys = fresh_keys()
            times[name].append(loop.run_until_complete(_chats(turn, keys, turns)))
            ok &= all(len(sync.load(key)) == HISTORY + 2 * turns for key in keys)
    aio_rate = chats * turns / statistics.median(times["aio"])
    inline_rate = chats * turns / statistics.median(times["inline"])
    setting = (
        f"1. {chats} asyncio chats x {turns} turns (`load(limit={TAIL})` + 2 appends): "
        "`AsyncSessionStore` vs the sync store inline on the loop"
    )
    rows = [
        report(
            setting,
            rate_text(aio_rate),
            rate_text(inline_rate),
            times_text(aio_rate / inline_rate),
            ">= 0.8x",
            "" if ok else "WRONG: a chat lost or gained messages",
        )
    ]

    loop.run_until_complete(aio.aclose())
    # Several big sessions, one per load, as a bot's backlog of long chats would be.
    big_root, keys = big[0], big[1][:BIG_LOADS]
    loader, big_aio = SessionStore(big_root), AsyncSessionStore(big_root)

    # The results live until the ticker has stopped: freeing them on the loop is not the store's
    # doing (and takes tens of milliseconds at this size).
    async def big_loads() -> list[list[Any]]:
        return await asyncio.gather(*(big_aio.load(key) for key in keys))

    async def one_inline() -> list[Any]:
        await asyncio.sleep(0)
        return loader.load(keys[0])

    stalls: dict[str, list[float]] = {"aio": [], "inline": []}
    ok = True
    messages = len(loader.load(keys[0]))
    for _ in range(rounds):
        stall, loaded = loop.run_until_complete(worst_stall(big_loads()))
        stalls["aio"].append(stall)
        ok &= list(map(len, loaded)) == [messages] * BIG_LOADS
        del loaded
        stall, _ = loop.run_until_complete(worst_stall(one_inline()))
        stalls["inline"].append(stall)
    loop.run_until_complete(big_aio.aclose())
    aio_stall = statistics.median(stalls["aio"])
    rows.append(
        report(
            f"1b. the loop's worst stall while {BIG_LOADS} loads of {messages:,} messages run "
            "through `AsyncSessionStore` (vs one such load run inline)",
            f"{aio_stall * 1e3:.1f} ms",
            f"{statistics.median(stalls['inline']) * 1e3:.0f} ms",
            "",
            "no worse than 9-12 ms",
            f"worst of {rounds} rounds: {max(stalls['aio']) * 1e3:.1f} ms"
            + ("" if ok else "; WRONG: the loads disagree"),
        )
    )
    return rows


# --- 2, 3. the OpenAI Agents SDK sessions ------------------------------------------------------


def _sessions(peer: AgentsSQLite) -> dict[str, Callable[[Path, str], Any]]:
    """Session factories by name: ``factory(workspace, key)``. turnlog's sessions share one store
    and the SDK's one database file, as one bot process's chats would."""
    from turnlog.integrations.openai_agents import TurnlogSession

    stores: dict[Path, SessionStore] = {}

    def turnlog_session(root: Path, key: str) -> Any:
        store = stores.get(root) or stores.setdefault(root, SessionStore(root))
        return TurnlogSession(key, store)

    def sqlite_session(root: Path, key: str) -> Any:
        return peer.cls(key, root / "agents.db")  # the SDK's defaults but for the file

    return {"TurnlogSession": turnlog_session, "SQLiteSession": sqlite_session}


def bench_agents(loop: asyncio.AbstractEventLoop, options: argparse.Namespace) -> list[Row]:
    chats, turns, rounds = options.chats, options.turns, options.rounds
    turn_setting = (
        f"2. {chats} chats x {turns} turns (`get_items(limit={TAIL})` + `add_items` of 2): "
        "`TurnlogSession` vs the SDK's `SQLiteSession` (a file database)"
    )
    pop_setting = (
        f"3. `pop_item` on a {options.pop_items:,}-item session: "
        "`TurnlogSession` vs `SQLiteSession`"
    )
    peer = AgentsSQLite()
    if peer.missing:
        missing = ((turn_setting, ">= 10x"), (pop_setting, ">= 5x"))
        return [
            report(row, "n/a", "peer not installed", "", aim, peer.note) for row, aim in missing
        ]
    factories = _sessions(peer)
    history = [USER, REPLY] * (HISTORY // 2)

    async def open_chats(make: Callable[[Path, str], Any], root: Path) -> list[Any]:
        sessions = [make(root, f"chat-{i}") for i in range(chats)]
        for session in sessions:
            await session.add_items(history)
        return sessions

    async def turn(session: Any) -> None:
        await session.get_items(limit=TAIL)
        await session.add_items([USER, REPLY])

    async def check(sessions: list[Any]) -> bool:
        want = history + [USER, REPLY] * turns
        return all([await session.get_items() == want for session in sessions])

    async def close(sessions: list[Any]) -> None:
        for session in sessions:
            await _maybe_await(session.close())

    times: dict[str, list[float]] = {name: [] for name in factories}
    ok = True
    for round_ in range(rounds):
        for name, make in factories.items():
            sessions = loop.run_until_complete(open_chats(make, workspace(f"{name}-{round_}")))
            by_key = {session.session_id: session for session in sessions}

            async def by_session(key: str, by_key: dict[str, Any] = by_key) -> None:
                await turn(by_key[key])

            times[name].append(loop.run_until_complete(_chats(by_session, list(by_key), turns)))
            ok &= loop.run_until_complete(check(sessions))
            loop.run_until_complete(close(sessions))
    ours, theirs = (chats * turns / statistics.median(times[name]) for name in factories)
    rows = [
        report(
            turn_setting,
            rate_text(ours),
            rate_text(theirs),
            times_text(ours / theirs),
            ">= 10x",
            peer.note + ("" if ok else "; WRONG: a session's items differ"),
        )
    ]

    items = [
        {"role": "user", "content": f"message {i}: Привет 👋"} for i in range(options.pop_items)
    ]
    pops = 40 * rounds  # microsecond calls: one scheduler hiccup would move a median of 5

    async def pop_times(session: Any) -> tuple[float, bool]:
        await session.add_items(items)
        spent, right = [], True
        for _ in range(pops):
            start = time.perf_counter()
            item = await session.pop_item()
            spent.append(time.perf_counter() - start)
            right &= item == items[-1]
            await session.add_items([item])  # untimed: the session keeps its size
        await _maybe_await(session.close())
        return statistics.median(spent), right

    medians = {}
    for name, make in factories.items():
        medians[name], right = loop.run_until_complete(
            pop_times(make(workspace(f"pop-{name}"), "pop"))
        )
        ok &= right
    ours, theirs = medians["TurnlogSession"], medians["SQLiteSession"]
    rows.append(
        report(
            pop_setting,
            fmt(ours, "s"),
            fmt(theirs, "s"),
            times_text(theirs / ours),
            ">= 5x",
            f"median of {pops} pops, each item added back untimed"
            + ("" if ok else "; WRONG: a pop returned another item"),
        )
    )
    return rows


async def _maybe_await(value: object) -> None:
    """``close()`` is a coroutine on some sessions and a plain call on others."""
    if isinstance(value, Awaitable):
        await value


# --- 4. threads --------------------------------------------------------------------------------


def bench_threads(big: tuple[Path, list[str]], options: argparse.Namespace) -> list[Row]:
    """N threads of a pool that lives across rounds (as a threaded bot's workers do), each
    loading its own session, vs one thread loading the same sessions one after the other."""
    store = SessionStore(big[0])
    keys = big[1]

    def in_turn(keys: list[str]) -> list[list[Any]]:
        return [store.load(key) for key in keys]

    def at_once(pool: ThreadPoolExecutor, keys: list[str]) -> list[list[Any]]:
        return list(pool.map(store.load, keys))

    def counts(loaded: list[list[Any]]) -> list[int]:
        return list(map(len, loaded))

    rows = []
    expected = len(store.load(keys[0]))
    for threads in THREADS:
        mine = keys[:threads]
        with ThreadPoolExecutor(threads) as pool:
            counts(at_once(pool, mine))  # the pool's threads started and warm
            found = interleaved(
                {"serial": partial(in_turn, mine), "parallel": partial(at_once, pool, mine)},
                options.rounds,
                counts,
            )
        (serial, serial_counts), (parallel, parallel_counts) = found["serial"], found["parallel"]
        ok = serial_counts == parallel_counts == [expected] * threads
        rows.append(
            report(
                f"4. {threads} thread{'s' * (threads > 1)} each loading its own "
                f"{expected:,}-message session vs 1 thread loading them in turn",
                fmt(parallel, "s"),
                fmt(serial, "s"),
                times_text(serial / parallel),
                ">= 1.0x" if threads > 1 else "(control: a pool of 1)",
                "" if ok else "WRONG: a load returned another count",
            )
        )
    return rows


# --- 5. non-ASCII text ---------------------------------------------------------------------------


def fresh_read(path: Path, rounds: int = 3) -> float:
    """``read_bytes`` timed in a new interpreter, where every page of the buffer is faulted in
    anew: the floor of a load in a bot's process. A process that has loaded before reads 4-6x
    faster into memory its heap already has, a floor no load of new objects gets near."""
    code = (
        "import pathlib, sys, time; t = time.perf_counter(); "
        "pathlib.Path(sys.argv[1]).read_bytes(); print(time.perf_counter() - t)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(rounds)
    ]
    return statistics.median(times)


def bench_text(corpora: Sequence[Corpus], options: argparse.Namespace) -> list[Row]:
    rows = []
    for corpus in corpora:
        root = workspace(f"text-{corpus.text}")
        path = place(corpus.path, root, "chat")
        store, orjson_store = SessionStore(root), OrjsonStore(root)
        found = interleaved(
            {
                "turnlog": partial(store.load, "chat"),
                "orjson": partial(orjson_store.load, "chat"),
                "bytes": path.read_bytes,
                "split_decode": partial(split_decode, path),
            },
            options.rounds,
            len,
        )
        ours, count = found["turnlog"]
        orjson, orjson_count = found["orjson"]
        read, _ = found["bytes"]
        what = (
            "mostly non-ASCII (Cyrillic, CJK, emoji)"
            if corpus.text == "nonascii"
            else "the default corpus (mostly English), for comparison"
        )
        size = f"{corpus.messages:,} messages, {corpus.size / 1e6:,.0f} MB"
        correct = "" if count == corpus.messages else f"WRONG: {count:,} messages; "
        accepted = f"the orjson store accepts {orjson_count - corpus.messages:,} bad lines"
        floor = found["split_decode"][0]
        fresh = fresh_read(path)
        first, second = ("5", "5b") if corpus.text == "nonascii" else ("5c", "5d")
        rows.append(
            report(
                f"{first}. full load, {what}, {size}: turnlog vs an orjson-per-line store",
                fmt(ours, "s"),
                fmt(orjson, "s"),
                times_text(orjson / ours),
                ">= 3x" if corpus.text == "nonascii" else "",
                correct + accepted,
            )
        )
        rows.append(
            report(
                f"{second}. the same load vs merely reading the file's bytes (`read_bytes` in a "
                "fresh process; ratio: turnlog's time over the read's)",
                fmt(ours, "s"),
                fmt(fresh, "s"),
                times_text(ours / fresh),
                "<= 2.5x" if corpus.text == "nonascii" else "",
                f"the read in this process, whose heap has the pages already: {fmt(read, 's')} "
                f"(turnlog {ours / read:.1f}x); split+decode of each line (plain Python): "
                f"{fmt(floor, 's')} (turnlog {ours / floor:.2f}x)",
            )
        )
    return rows


# --- the table ---------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| setting | turnlog | baseline | ratio | target (issue 13) | note |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r.setting} | {r.turnlog} | {r.baseline} | {r.ratio} | {r.target} | {r.note} |"
        for r in rows
    ]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per median")
    parser.add_argument(
        "--messages", type=int, default=200_000, help="messages of each big session (rows 1b, 4, 5)"
    )
    parser.add_argument("--quick", action="store_true", help="20,000-message sessions, 3 rounds")
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--pop-items", type=int, default=2_000)
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the table goes")
    options = parser.parse_args(argv)
    if options.quick:
        options.messages, options.rounds = 20_000, 3
    return options


def main(argv: Sequence[str] | None = None) -> str:
    arguments = sys.argv[1:] if argv is None else list(argv)
    options = parse(arguments)
    started, cpu_at_start = time.perf_counter(), cpu_seconds()
    print(f"corpora: {options.messages:,} messages, default and non-ASCII ...", flush=True)
    corpora = [ensure_corpus(n=options.messages, text=text) for text in ("nonascii", "mixed")]
    big = big_sessions(corpora[1])
    print(machine(), flush=True)
    loop = asyncio.new_event_loop()
    try:
        rows = bench_asyncio(loop, big, options)
        rows += bench_agents(loop, options)
    finally:
        loop.close()
    rows += bench_threads(big, options)
    rows += bench_text(corpora, options)
    shutil.rmtree(bench_dir() / SCRATCH, ignore_errors=True)

    header = (
        f"Medians of {options.rounds} round{'s' * (options.rounds != 1)} (the variants of a "
        "row take turns round by round). "
        f"Big sessions: the `corpus.py` corpus of {options.messages:,} messages "
        f"({corpora[1].size / 1e6:,.0f} MB; non-ASCII: {corpora[0].size / 1e6:,.0f} MB). "
        f"{machine()}. {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"{others_share(cpu_at_start, time.perf_counter() - started)}."
    )
    text = f"{header}\n\n{table(rows)}\n"
    print("\n" + text)
    options.output.write_text(
        "# turnlog under concurrency and on non-ASCII text\n\n"
        f"`{' '.join(['python benches/bench_concurrency.py', *arguments])}`: {text}"
    )
    print(f"written to {options.output} in {time.perf_counter() - started:.0f} s")
    return text


if __name__ == "__main__":
    main()
