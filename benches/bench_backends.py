"""The JSONL store (Rust core) against ``SqliteSessionBackend``, on the operations that differ.

Measures ``append``, ``load(limit=50)``, ``list_sessions_with_metadata`` over many sessions,
``search`` over a corpus of transcripts (the Rust and the pure JSONL store, SQLite with FTS5 and
without; figures per GB of transcripts) and ``migrate`` of many sessions, then prints a table.
Scratch workspaces go to ``bench-data/`` (or ``$TURNLOG_BENCH_DIR``) and are removed afterwards.

    PYTHONPATH=python .venv/bin/python benches/bench_backends.py            # about 3 minutes
    PYTHONPATH=python .venv/bin/python benches/bench_backends.py --quick    # about 20 seconds
    # search over 1 GB of transcripts, alone (builds the corpus and its SQLite copy first):
    PYTHONPATH=python .venv/bin/python benches/bench_backends.py --only search --corpus-mb 1000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from corpus import _message, bench_dir
from turnlog import ChatMessage, SessionBackend, SessionQuery, migrate
from turnlog._impl import native
from turnlog.backends.sqlite import SqliteSessionBackend
from turnlog.pure import SessionStore as PureStore

T = TypeVar("T")
TAIL = 50
#: What ``--only`` picks from, in the order they run.
BENCHMARKS = ("append", "tail", "many", "search")
#: A word planted in a few messages of the search corpus, so a rare word has known matches.
RARE = "zebracorn"

if native is not None:
    from turnlog.backends.jsonl.rust import SessionStore as JsonlStore
else:  # the figures are then the pure store's, and labelled so
    JsonlStore = PureStore  # type: ignore[assignment,misc]
JSONL = "jsonl-rust" if native is not None else "jsonl-pure"


@dataclass
class Row:
    op: str
    backend: str
    seconds: float
    per: str = ""  # what one measured call does, for the "each" column
    count: int = 1  # how many of ``per`` the seconds cover
    note: str = ""


def timed(fn: Callable[[], T], rounds: int = 3) -> tuple[float, T]:
    """Median wall time of ``fn`` over ``rounds`` runs, and its last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def show(row: Row) -> Row:
    print(f"  {row.op:<44} {row.backend:<18} {fmt(row.seconds / row.count):>10} {row.note}")
    return row


def fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def messages(rng: random.Random, count: int) -> list[ChatMessage]:
    return [ChatMessage.from_dict(_message(rng)) for _ in range(count)]


def backends(root: Path) -> dict[str, SessionBackend]:
    return {JSONL: JsonlStore(root / "jsonl"), "sqlite": SqliteSessionBackend(root / "sqlite")}


# --- the benchmarks -----------------------------------------------------------------------------


def bench_append(root: Path, count: int) -> list[Row]:
    rng = random.Random(1)
    batch = messages(rng, count)
    rows = []
    for name, backend in backends(root / "append").items():
        start = time.perf_counter()
        for message in batch:
            backend.append("chat", message)
        elapsed = time.perf_counter() - start
        assert len(backend.load("chat")) == count
        rows.append(show(Row("append (one message)", name, elapsed, count=count)))
        start = time.perf_counter()
        for index in range(0, count, 10):
            backend.append_many("batched", batch[index : index + 10])
        elapsed = time.perf_counter() - start
        rows.append(show(Row("append_many (10 messages)", name, elapsed, count=count // 10)))
    return rows


def bench_tail(root: Path, size: int, calls: int) -> list[Row]:
    rng = random.Random(2)
    history = messages(rng, size)
    rows = []
    for name, backend in backends(root / "tail").items():
        for start in range(0, size, 5_000):
            backend.append_many("long", history[start : start + 5_000])
        expected = history[-TAIL:]
        assert backend.load("long", limit=TAIL) == expected

        def tail(backend: SessionBackend = backend) -> None:
            for _ in range(calls):
                backend.load("long", limit=TAIL)

        seconds, _ = timed(tail)
        note = f"session of {size:,} messages"
        rows.append(show(Row(f"load(limit={TAIL})", name, seconds, count=calls, note=note)))
    return rows


def build_sessions(root: Path, sessions: int, per_session: int) -> JsonlStore:
    """A JSONL workspace of ``sessions`` sessions of ``per_session`` messages each."""
    rng = random.Random(3)
    pool = messages(rng, 2_000)
    source = JsonlStore(root / "many-jsonl")
    for index in range(sessions):
        start = rng.randrange(len(pool) - per_session)
        source.append_many(f"telegram_{index:06d}", pool[start : start + per_session])
    return source


def bench_many(root: Path, sessions: int, per_session: int) -> list[Row]:
    """list_sessions_with_metadata over many sessions, and migrating them JSONL -> SQLite."""
    source = build_sessions(root, sessions, per_session)
    target = SqliteSessionBackend(root / "many-sqlite")
    start = time.perf_counter()
    report = migrate(source, target)
    migrated = time.perf_counter() - start
    assert report.sessions == sessions, report
    note = f"{sessions:,} sessions x {per_session} messages"
    rows = [show(Row("migrate JSONL -> SQLite", "migrate", migrated, note=note))]
    start = time.perf_counter()
    again = migrate(source, target)
    rows.append(
        show(
            Row(
                "migrate again (nothing to copy)", "migrate", time.perf_counter() - start, note=note
            )
        )
    )
    assert again.skipped_sessions == sessions, again
    back = JsonlStore(root / "back-jsonl")
    start = time.perf_counter()
    migrate(target, back)
    rows.append(
        show(Row("migrate SQLite -> JSONL", "migrate", time.perf_counter() - start, note=note))
    )
    for name, backend in ((JSONL, source), ("sqlite", target)):
        seconds, listed = timed(backend.list_sessions_with_metadata)
        assert len(listed) == sessions
        assert sum(m.message_count for m in listed) == sessions * per_session
        rows.append(show(Row("list_sessions_with_metadata", name, seconds, note=note)))
        seconds, _ = timed(backend.list_sessions)
        rows.append(show(Row("list_sessions", name, seconds, note=note)))
    target.close()
    return rows


def build_corpus(root: Path, megabytes: int) -> tuple[JsonlStore, SqliteSessionBackend, int, Row]:
    """At least ``megabytes`` MB of transcripts in 1,000 sessions, in both backends; also
    returns their size in bytes."""
    rng = random.Random(4)
    source = JsonlStore(root / "corpus-jsonl")
    sizes: dict[str, int] = {}  # the size of each transcript, as the files say
    content = index = 0
    while sum(sizes.values()) < megabytes * 1_000_000:
        batch = messages(rng, 200)
        if index % 50 == 0:  # the rare word, in one message of every 50th batch
            batch[0] = ChatMessage(batch[0].role, f"{batch[0].content} {RARE.upper()}!")
        key = f"session_{index % 1000:04d}"
        source.append_many(key, batch)
        sizes[key] = os.path.getsize(Path(source.sessions_dir) / f"{key}.jsonl")
        content += sum(len(m.content.encode()) for m in batch)
        index += 1
    total = sum(sizes.values())
    target = SqliteSessionBackend(root / "corpus-sqlite")
    start = time.perf_counter()
    migrate(source, target)
    seconds = time.perf_counter() - start
    note = f"{total / 1e6:,.0f} MB of transcripts ({content / 1e6:,.0f} MB content), with index"
    return (
        source,
        target,
        total,
        show(Row("build: migrate corpus -> SQLite", "sqlite", seconds, note=note)),
    )


def index_size(backend: SqliteSessionBackend) -> str:
    connection = backend._conn()
    try:
        size = connection.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'message_fts%'"
        ).fetchone()[0]
    except Exception:  # dbstat is an optional SQLite feature
        return "index size n/a"
    total = os.path.getsize(backend.path)
    return f"index {size / 1e6:,.0f} MB of a {total / 1e6:,.0f} MB file"


def bench_search(root: Path, megabytes: int) -> list[Row]:
    source, indexed, total, built = build_corpus(root, megabytes)
    scan = SqliteSessionBackend(root / "corpus-sqlite", fts=False)
    scale = 1e9 / total
    # (name, backend, rounds): the pure store reads the Rust store's files; it is slow enough
    # that one round of it is a stable figure, and three would dominate a 1 GB run.
    searchers: list[tuple[str, SessionBackend, int]] = [(JSONL, source, 3)]
    if JSONL != "jsonl-pure":
        searchers.append(("jsonl-pure", PureStore(root / "corpus-jsonl"), 1))
    searchers += [("sqlite FTS5", indexed, 3), ("sqlite scan", scan, 3)]
    rows = [built]
    print(f"  ({index_size(indexed)})")
    queries = [
        (f"rare word ({RARE})", RARE, "all"),
        ("common word (deployment)", "deployment", "all"),
        ("two words, one message (invoice dentist)", "invoice dentist", "all"),
        ("two words, any (привет 天気)", "привет 天気", "any"),
        ("short word, any (ok)", "ok", "any"),
    ]
    for label, keyword, match in queries:
        answers = []
        query = SessionQuery(keyword=keyword)
        for name, backend, rounds in searchers:
            seconds, found = timed(
                lambda b=backend, q=query, m=match: b.search(q, match=m), rounds=rounds
            )
            answers.append(sorted(m.key for m in found))
            note = f"{seconds * 1e3:,.0f} ms on {total / 1e6:,.0f} MB, {len(found)} sessions"
            rows.append(show(Row(f"search per GB: {label}", name, seconds * scale, note=note)))
        assert all(answer == answers[0] for answer in answers), label
    scan.close()
    indexed.close()
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| operation | backend | each | note |", "|---|---|---:|---|"]
    previous = ""
    for row in rows:
        op = row.op if row.op != previous else ""
        lines.append(f"| {op} | {row.backend} | {fmt(row.seconds / row.count)} | {row.note} |")
        previous = row.op
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only", choices=BENCHMARKS, action="append", help="run only these (repeatable)"
    )
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument(
        "--corpus-mb",
        type=int,
        default=100,
        help="MB (10**6 bytes) of transcripts to search; 1000 for the 1 GB run",
    )
    parser.add_argument("--appends", type=int, default=2_000)
    parser.add_argument("--tail-session", type=int, default=100_000)
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.corpus_mb, args.appends, args.tail_session = 1_000, 10, 500, 10_000
    print(f"turnlog JSONL store: {JSONL}; SQLite {SqliteSessionBackend.__module__}")
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-backends-", dir=bench_dir()))
    runs: dict[str, Callable[[], list[Row]]] = {
        "append": lambda: bench_append(root, args.appends),
        "tail": lambda: bench_tail(root, args.tail_session, 1_000),
        "many": lambda: bench_many(root, args.sessions, 5),
        "search": lambda: bench_search(root, args.corpus_mb),
    }
    rows = []
    try:
        for name in BENCHMARKS:
            if args.only is None or name in args.only:
                rows += runs[name]()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows))
    print(f"\n({time.perf_counter() - started:,.0f} s)")


if __name__ == "__main__":
    main()
