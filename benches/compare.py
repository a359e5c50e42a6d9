"""Rust vs pure turnlog vs plain-Python stores, side by side, on one realistic corpus.

Prints a Markdown table of medians and ratios and writes it to ``benches/results.md``. Rust rows
show "n/a" until ``turnlog._native`` is built (``make build-release``).

    python benches/compare.py --quick          # 100,000 messages
    python benches/compare.py --messages 1000000 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from corpus import Corpus, bench_dir, ensure_corpus
from peers import JsonStore, OrjsonStore, copy_file, split_decode
from turnlog import pure
from turnlog._impl import native

T = TypeVar("T")
KEY = "bench"
TAIL = 50
APPENDS = 1_000
TURNS = 100
RESULTS = Path(__file__).resolve().parent / "results.md"

RustStore: Callable[[Path], Any] | None = None
if native is not None:
    from turnlog.backends.jsonl.rust import SessionStore as RustStore

STORES: dict[str, Callable[[Path], Any] | None] = {
    "rust": RustStore,
    "pure": pure.SessionStore,
    "orjson-store": OrjsonStore,
    "json-store": JsonStore,
}


@dataclass
class Row:
    """One measured (or unavailable) figure of the table."""

    op: str
    impl: str
    value: float | None  # None: the implementation is not available
    unit: str  # "s" and "MB": lower is better; "/s": higher is better
    correct: str
    note: str = ""


# --- helpers ------------------------------------------------------------------------------------


def scratch(name: str, source: Path | None = None) -> Path:
    """A fresh workspace ``name``; ``source`` is copied in as session ``KEY``."""
    workspace = bench_dir() / "scratch" / name
    shutil.rmtree(workspace, ignore_errors=True)
    (workspace / "sessions").mkdir(parents=True)
    if source is not None:
        shutil.copyfile(source, session_file(workspace))
    return workspace


def session_file(workspace: Path) -> Path:
    return workspace / "sessions" / f"{KEY}.jsonl"


def timed(fn: Callable[[], T], rounds: int) -> tuple[float, T]:
    """Median wall time of ``fn`` over ``rounds`` runs, and its last result."""
    times = []
    result: Any = None
    for _ in range(rounds):
        result = None  # so two results are never alive at once
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def micro_rounds(impl: str, rounds: int) -> int:
    """Rounds for an operation of microseconds: a median of 5 such is at the mercy of one
    scheduler hiccup, so the Rust store's get 40 times as many (the pure store's take long
    enough for ``rounds``)."""
    return rounds if impl == "pure" else 40 * rounds


def verdict(ok: bool, why: str = "") -> str:
    return "yes" if ok else f"no: {why}" if why else "no"


def report(row: Row) -> Row:
    """Show progress as figures come in (the full table comes at the end)."""
    print(f"  {row.op:<34} {row.impl:<13} {fmt(row.value, row.unit):>12}  {row.correct}")
    return row


def missing(op: str, impl: str, unit: str) -> Row:
    return report(Row(op, impl, None, unit, "n/a", "turnlog._native not in use"))


# --- the benchmarks -----------------------------------------------------------------------------


def bench_load(corpus: Corpus, rounds: int) -> tuple[list[Row], list[Any]]:
    """Full load of every valid message; returns the rows and pure's last ``TAIL`` messages."""
    op = f"full load ({corpus.messages:,} msgs)"
    workspace = scratch("load", corpus.path)
    seconds, messages = timed(lambda: pure.SessionStore(workspace).load(KEY), rounds)
    count, tail = len(messages), messages[-TAIL:]
    del messages
    ok = verdict(count == corpus.messages, f"{count:,}")
    rows = {"pure": report(Row(op, "pure", seconds, "s", ok))}
    for impl in ("rust", "orjson-store", "json-store"):
        factory = STORES[impl]
        if factory is None:
            rows[impl] = missing(op, impl, "s")
            continue
        store = factory(workspace)
        seconds, messages = timed(lambda store=store: store.load(KEY), rounds)
        extra = len(messages) - count
        ok = extra == 0 and (impl != "rust" or messages[-TAIL:] == tail)
        why = f"{extra:+,} lines accepted" if extra else "tail differs"
        rows[impl] = report(Row(op, impl, seconds, "s", verdict(ok, why)))
        del messages
    seconds, lines = timed(lambda: split_decode(session_file(workspace)), rounds)
    floor = Row(op, "split_decode", seconds, "s", "-", f"I/O floor ({len(lines):,} lines)")
    order = ("rust", "pure", "orjson-store", "json-store")
    return [rows[impl] for impl in order] + [report(floor)], tail


def bench_tail(corpus: Corpus, rounds: int, tail: list[Any] | None = None) -> list[Row]:
    """``load(limit=50)``: what a bot reads before each reply."""
    op = f"load(limit={TAIL}) at {corpus.messages:,} msgs"
    workspace = scratch("tail", corpus.path)
    if tail is None:
        tail = pure.SessionStore(workspace).load(KEY)[-TAIL:]
    rows = []
    for impl in ("rust", "pure"):
        factory = STORES[impl]
        if factory is None:
            rows.append(missing(op, impl, "s"))
            continue
        store = factory(workspace)
        runs = micro_rounds(impl, rounds)
        seconds, messages = timed(lambda store=store: store.load(KEY, limit=TAIL), runs)
        rows.append(report(Row(op, impl, seconds, "s", verdict(messages == tail, "tail differs"))))
    return rows


def bench_remove_last(corpus: Corpus, rounds: int) -> list[Row]:
    """``remove_last`` of the newest message, re-appended after each round (not timed)."""
    op = f"remove_last at {corpus.messages:,} msgs"
    rows = []
    for impl in ("rust", "pure"):
        factory = STORES[impl]
        if factory is None:
            rows.append(missing(op, impl, "s"))
            continue
        store = factory(scratch(f"remove-{impl}", corpus.path))
        tail = store.load(KEY, limit=TAIL)
        # The first removal rewrites the file, the torn tail coming after the message; the rounds
        # then measure the common case, the newest message being the last line.
        ok = store.remove_last(KEY)
        store.append(KEY, tail[-1])
        times = []
        for _ in range(micro_rounds(impl, rounds)):
            start = time.perf_counter()
            ok &= store.remove_last(KEY)
            times.append(time.perf_counter() - start)
            store.append(KEY, tail[-1])
        ok &= store.load(KEY, limit=TAIL) == tail
        rows.append(report(Row(op, impl, statistics.median(times), "s", verdict(ok))))
    return rows


def bench_threads(corpus: Corpus, rounds: int) -> list[Row]:
    """Two sessions loaded one after the other by one thread, then at once by two threads.

    The two threads are a pool that lives across rounds, as a threaded bot's workers do (fresh
    threads each round would add glibc's per-thread arenas handing memory back to the kernel and
    faulting it in again, a cost of thread churn, not of loading). The same is measured for
    ``split_decode`` as a control: plain Python, whose work all holds the GIL.
    """
    op = f"load 2 sessions of {corpus.messages:,} msgs"
    workspace = scratch("threads", corpus.path)
    other = workspace / "sessions" / "other.jsonl"
    shutil.copyfile(session_file(workspace), other)
    rows = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        loaders: list[tuple[str, Callable[[str], int], int]] = [
            (
                "split_decode",
                lambda key: len(split_decode(workspace / "sessions" / f"{key}.jsonl")),
                corpus.lines,
            ),
        ]
        if RustStore is None:
            rows += [missing(op, "rust, 1 thread", "s"), missing(op, "rust, 2 threads", "s")]
        else:
            store = RustStore(workspace)
            loaders.insert(0, ("rust", lambda key: len(store.load(key)), corpus.messages))
        keys = (KEY, "other")
        for name, load, expected in loaders:

            def one_thread(load: Callable[[str], int] = load) -> list[int]:
                return [load(key) for key in keys]

            def two_threads(load: Callable[[str], int] = load) -> list[int]:
                return list(pool.map(load, keys))

            two_threads()  # the pool's threads started and warm
            for impl, fn in (
                (f"{name}, 1 thread", one_thread),
                (f"{name}, 2 threads", two_threads),
            ):
                seconds, counts = timed(fn, rounds)
                ok = verdict(counts == [expected] * 2, f"{counts}")
                rows.append(report(Row(op, impl, seconds, "s", ok)))
    return rows


def bench_append(messages: Sequence[dict[str, Any]], rounds: int) -> list[Row]:
    """``APPENDS`` appends one by one to a new session, default durability."""
    op = f"append one by one ({len(messages):,})"
    rows: dict[str, Row] = {}
    reference = b""
    for impl in ("pure", "rust", "json-store"):
        factory = STORES[impl]
        if factory is None:
            rows[impl] = missing(op, impl, "/s")
            continue
        times = []
        for _ in range(rounds):
            workspace = scratch(f"append-{impl}")
            store = factory(workspace)
            start = time.perf_counter()
            for message in messages:
                store.append(KEY, message)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        written = session_file(workspace).read_bytes()
        reference = reference or written
        ok = written == reference and written.count(b"\n") == len(messages)
        rate = len(messages) / seconds
        rows[impl] = report(Row(op, impl, rate, "/s", verdict(ok, "bytes differ from pure")))
    return [rows[impl] for impl in ("rust", "pure", "json-store")]


def bench_turn(corpus: Corpus, rounds: int) -> list[Row]:
    """A bot turn: ``load(limit=50)``, append the user's message, append the reply."""
    op = f"bot turn at {corpus.messages:,} msgs"
    user = {"role": "user", "content": "What's the weather in Kyiv today? Коротко, please 🌤"}
    reply = {"role": "assistant", "content": "Sunny, 24 °C, light wind from the west.\n- dry"}
    rows = []
    for impl in ("rust", "pure", "json-store"):
        factory = STORES[impl]
        if factory is None:
            rows.append(missing(op, impl, "s"))
            continue
        times = []
        for _ in range(rounds):
            store = factory(scratch(f"turn-{impl}", corpus.path))
            start = time.perf_counter()
            for _ in range(TURNS):
                store.load(KEY, limit=TAIL)
                store.append(KEY, user)
                store.append(KEY, reply)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        before = len(factory(scratch("turn-check", corpus.path)).load(KEY))
        kept = len(store.load(KEY)) - before
        ok = kept == 2 * TURNS
        why = f"{kept} of {2 * TURNS} appends load back"
        rows.append(report(Row(op, impl, seconds / TURNS, "s", verdict(ok, why), "per turn")))
    return rows


def bench_compact(corpus: Corpus, rounds: int) -> list[Row]:
    """``compact`` (drop corrupt lines) on a fresh copy each round, vs copying the file."""
    op = f"compact ({corpus.messages:,} msgs)"
    rows: dict[str, Row] = {}
    reference = ""
    for impl in ("pure", "rust"):
        factory = STORES[impl]
        if factory is None:
            rows[impl] = missing(op, impl, "s")
            continue
        workspace = scratch(f"compact-{impl}")
        store = factory(workspace)
        times = []
        for _ in range(rounds):
            shutil.copyfile(corpus.path, session_file(workspace))
            start = time.perf_counter()
            store.compact(KEY)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        data = session_file(workspace).read_bytes()
        reference = reference or hashlib.sha256(data).hexdigest()  # pure's, the first
        ok = data.count(b"\n") == corpus.messages and data.endswith(b"\n")
        ok &= hashlib.sha256(data).hexdigest() == reference
        rows[impl] = report(Row(op, impl, seconds, "s", verdict(ok, "output differs")))
    target = scratch("copy") / "copy.jsonl"
    seconds, _ = timed(lambda: copy_file(corpus.path, target), rounds)
    floor = report(Row(op, "copy_file", seconds, "s", "-", "floor: shutil.copyfile"))
    return [rows["rust"], rows["pure"], floor]


def _vm_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def memory_probe(impl: str, workspace: str) -> None:
    """In a fresh process: peak RSS growth of a full load, the RSS growth once it returned (the
    messages alive), and the returned objects' size as ``tracemalloc`` counts it."""
    factory = STORES[impl]
    assert factory is not None
    store = factory(Path(workspace))
    # A one-line session warms up imports and first-call set-up; loading the corpus itself would
    # leave freed memory in the process that the measured load then reuses unseen.
    store.load("warm")
    gc.collect()
    # Resets VmHWM to the current RSS; without it VmHWM starts from the (small) import peak.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    before = _vm_bytes("VmRSS")
    messages = store.load(KEY)
    peak = _vm_bytes("VmHWM") - before
    held = _vm_bytes("VmRSS") - before
    count = len(messages)
    del messages
    gc.collect()
    # Traced separately: tracemalloc slows the load and adds its own memory.
    tracemalloc.start()
    messages = store.load(KEY)  # kept alive: they are what is traced
    objects = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(messages) == count
    print(json.dumps({"peak": peak, "held": held, "objects": objects, "count": count}))


def bench_memory(corpus: Corpus) -> list[Row]:
    """Memory a full load needs beyond the messages it returns, measured in a subprocess.

    The figure is the peak RSS growth minus the growth that remains while the returned messages
    are alive: the working memory of the load itself. The note adds the stricter reading, peak
    minus what ``tracemalloc`` counts for the objects; that one also holds CPython's own
    allocator slack in the objects (rounding, partly used pools), which grows with the message
    count whoever builds the strings.
    """
    op = f"full load memory ({corpus.messages:,} msgs)"
    workspace = scratch("load", corpus.path)
    (workspace / "sessions" / "warm.jsonl").write_text('{"role":"user","content":"hi"}\n')
    rows = []
    for impl in ("rust", "pure"):
        if STORES[impl] is None:
            rows.append(missing(op, impl, "MB"))
            continue
        script = str(Path(__file__).resolve())
        command = [sys.executable, script, "--memory-probe", impl, str(workspace)]
        out = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
        transient = max(out["peak"] - out["held"], 0)
        strict = max(out["peak"] - out["objects"], 0) / 1e6
        peak, objects = out["peak"] / 1e6, out["objects"] / 1e6
        note = (
            f"peak beyond the RSS the result holds; peak +{peak:,.0f} MB, objects "
            f"{objects:,.0f} MB traced ({strict:,.0f} MB beyond them)"
        )
        ok = verdict(out["count"] == corpus.messages, f"{out['count']:,}")
        rows.append(report(Row(op, impl, transient, "MB", ok, note)))
    return rows


def bench_import() -> list[Row]:
    """``import turnlog`` in a fresh interpreter, median of 5."""
    op = "import turnlog"
    code = "import time; t = time.perf_counter(); import turnlog; print(time.perf_counter() - t)"
    rows = []
    for impl, pure_flag in (("rust", "0"), ("pure", "1")):
        if STORES[impl] is None:
            rows.append(missing(op, impl, "s"))
            continue
        env = {**os.environ, "TURNLOG_PURE": pure_flag}
        times = []
        which = ""
        for _ in range(5):
            check = code + "; print(turnlog.IMPLEMENTATION)"
            out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True)
            seconds, which = out.stdout.decode().split()
            times.append(float(seconds))
        ok = verdict(which == ("rust" if impl == "rust" else "python"), which)
        rows.append(report(Row(op, impl, statistics.median(times), "s", ok, "fresh process")))
    return rows


# --- the table ----------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value / 1e6:,.1f} MB"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} us"


def times_text(times: float) -> str:
    return f"{times:,.0f}x" if times >= 100 else f"{times:.1f}x"


def ratio(row: Row, pure_row: Row | None) -> float | None:
    """How many times better than pure (faster, more per second, or less memory)."""
    if row.value is None or pure_row is None or pure_row.value is None or not row.value:
        return None
    return row.value / pure_row.value if row.unit == "/s" else pure_row.value / row.value


FLOORS = ("split_decode", "copy_file")


def overview(rows: list[Row], corpus: Corpus) -> str:
    """The one-row-per-operation table: Rust, pure, the orjson store, the floor, the ratios."""
    ops: dict[str, dict[str, Row]] = {}
    for row in rows:
        ops.setdefault(row.op, {})[row.impl] = row
    lines = [
        f"| operation ({corpus.messages:,} messages, {corpus.size / 1e6:,.0f} MB, "
        f"{corpus.corrupt_lines:,} corrupt lines) | turnlog Rust | turnlog pure | orjson store "
        "| floor | Rust vs pure | Rust vs orjson | Rust vs floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(row: Row | None) -> str:
        return "" if row is None else fmt(row.value, row.unit)

    def times(better: Row | None, base: Row | None) -> str:
        found = None if better is None else ratio(better, base)
        return "" if found is None else times_text(found)

    for op, by_impl in ops.items():
        rust, pure_row = by_impl.get("rust"), by_impl.get("pure")
        orjson = by_impl.get("orjson-store")
        floor = next((by_impl[name] for name in FLOORS if name in by_impl), None)
        if "rust, 1 thread" in by_impl:  # one thread vs two: the floor is split_decode's pair
            one, two = by_impl["rust, 1 thread"], by_impl.get("rust, 2 threads")
            base_one, base_two = (
                by_impl.get("split_decode, 1 thread"),
                by_impl.get("split_decode, 2 threads"),
            )
            speedup = times(two, one)
            control = times(base_two, base_one)
            lines.append(
                f"| {op}: 1 thread / 2 threads | {cell(one)} / {cell(two)} | | "
                f"| split_decode {cell(base_one)} / {cell(base_two)} | | "
                f"| 2 threads vs 1: Rust {speedup}, split_decode {control} |"
            )
            continue
        floor_text = "" if floor is None else f"{floor.impl} {cell(floor)}"
        vs_floor = ""
        if floor is not None and rust is not None and rust.value and floor.value:
            vs_floor = f"{rust.value / floor.value:.2f}x the time"
        lines.append(
            f"| {op} | {cell(rust)} | {cell(pure_row)} | {cell(orjson)} | {floor_text} "
            f"| {times(rust, pure_row)} | {times(rust, orjson)} | {vs_floor} |"
        )
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    pure_rows = {row.op: row for row in rows if row.impl == "pure"}
    lines = [
        "| operation | implementation | median | vs pure | correct | note |",
        "|---|---|---:|---:|---|---|",
    ]
    previous = ""
    for row in rows:
        times = ratio(row, pure_rows.get(row.op))
        shown = "n/a" if times is None else times_text(times)
        op = row.op if row.op != previous else ""
        lines.append(
            f"| {op} | {row.impl} | {fmt(row.value, row.unit)} | {shown} | {row.correct} "
            f"| {row.note} |"
        )
        previous = row.op
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    """One line per comparison: rust vs pure, and rust vs the floors."""
    by = {(row.op, row.impl): row for row in rows}
    lines = []
    for row in rows:
        if row.impl != "rust":
            continue
        times = ratio(row, by.get((row.op, "pure")))
        if times is not None:
            lines.append(f"- {row.op}: rust vs pure: {times_text(times)}")
        for floor in ("split_decode", "copy_file"):
            base = by.get((row.op, floor))
            if base is not None and base.value and row.value is not None:
                lines.append(f"- {row.op}: rust takes {row.value / base.value:.1f}x {floor}")
    for name in ("rust", "split_decode"):
        threads = [row for row in rows if row.impl.startswith(f"{name}, ")]
        if len(threads) == 2 and threads[0].value and threads[1].value:
            speedup = threads[0].value / threads[1].value
            lines.append(f"- {threads[0].op}: {name}, two threads vs one: {speedup:.2f}x")
    if not lines:
        return "rust vs pure: n/a (turnlog._native not built, or TURNLOG_PURE=1: pure store only)"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="corpus size")
    parser.add_argument("--quick", action="store_true", help="100,000 messages")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per median")
    parser.add_argument("--memory-probe", nargs=2, metavar=("IMPL", "WORKSPACE"), help="internal")
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return
    n = 100_000 if args.quick else args.messages
    rounds = args.rounds
    started = time.perf_counter()

    print(f"corpus: {n:,} messages ...")
    corpus = ensure_corpus(n=n)
    small = ensure_corpus(n=10_000)
    turn = ensure_corpus(n=1_000)
    print(f"  {corpus.path} ({corpus.size / 1e6:,.1f} MB, {corpus.corrupt_lines:,} corrupt lines)")
    print(f"implementations: rust {'built' if RustStore else 'NOT BUILT (n/a)'}, pure, peers")

    rows, tail = bench_load(corpus, rounds)
    rows += bench_tail(small, rounds)
    rows += bench_tail(corpus, rounds, tail)
    rows += bench_remove_last(small, rounds)
    rows += bench_remove_last(corpus, rounds)
    messages = [m.to_dict() for m in pure.SessionStore(scratch("tail", small.path)).load(KEY)]
    rows += bench_append(messages[:APPENDS], rounds)
    rows += bench_turn(turn, rounds)
    rows += bench_compact(corpus, rounds)
    rows += bench_threads(corpus, rounds)
    rows += bench_memory(corpus)
    rows += bench_import()
    shutil.rmtree(bench_dir() / "scratch", ignore_errors=True)

    header = (
        f"{corpus.messages:,} messages, {corpus.lines:,} lines ({corpus.corrupt_lines:,} corrupt, "
        f"torn last line), file size {corpus.size / 1e6:,.1f} MB. "
        f"Medians of {rounds} round{'s' * (rounds != 1)}. "
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    )
    text = f"{header}\n\n{overview(rows, corpus)}\n\n{table(rows)}\n\n{summary(rows)}\n"
    print("\n" + text)
    RESULTS.write_text(f"# turnlog benchmark results\n\n`{' '.join(sys.argv[1:])}`: {text}")
    print(f"written to {RESULTS} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
