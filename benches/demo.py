"""``make demo``: a busy, damaged chat session, read and repaired by turnlog (Rust vs pure Python).

Builds ``demo-workspace/`` afresh with one 200,000-message session full of corrupt lines and a
torn last line, then walks through load, tail read, append, remove_last and compact.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import turnlog
from corpus import ensure_corpus
from turnlog import ChatMessage, pure
from turnlog._impl import native

T = TypeVar("T")
MESSAGES = 200_000
KEY = "telegram_user123"
WORKSPACE = Path(__file__).resolve().parent.parent / "demo-workspace"


def timed(fn: Callable[[], T], rounds: int = 3) -> tuple[float, T]:
    """Median wall time of ``fn`` over ``rounds`` runs, and its result."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def short(message: Any) -> str:
    text = message.content.replace("\n", " ")
    return f"{message.role}: {text[:60]!r}{'...' if len(text) > 60 else ''}"


def lines_in(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (not data.endswith(b"\n"))


def heading(text: str) -> None:
    print(f"\n{text}\n{'-' * len(text)}")


def main() -> None:
    print("turnlog demo: one busy chat session with the damage real files collect")
    print("=" * 72)
    shutil.rmtree(WORKSPACE, ignore_errors=True)
    stores: dict[str, Any] = {}
    if native is not None:
        from turnlog.backends.jsonl.rust import SessionStore as RustStore

        stores["rust"] = RustStore(WORKSPACE)
        print(f"Rust core: turnlog._native {turnlog.__version__}, compared with pure Python.")
    else:
        print("Rust core NOT IN USE (turnlog._native is not built, or TURNLOG_PURE=1): showing")
        print("the pure-Python store only. `make demo` builds the Rust core first.")
    stores["pure"] = pure.SessionStore(WORKSPACE)
    main_store = stores.get("rust", stores["pure"])  # the one that writes in steps 4 to 6
    timings: dict[str, dict[str, float]] = {name: {} for name in ("rust", "pure")}

    # 1. The file.
    corpus = ensure_corpus(n=MESSAGES)
    path = WORKSPACE / "sessions" / f"{KEY}.jsonl"
    shutil.copyfile(corpus.path, path)
    heading("1. The session file")
    print(f"{path.relative_to(WORKSPACE.parent)}")
    print(f"{corpus.size / 1e6:,.1f} MB, {lines_in(path):,} lines: {MESSAGES:,} valid messages")
    print(f"and {corpus.corrupt_lines:,} corrupt lines, of every kind a real file collects:")
    for kind, count in sorted(corpus.corrupt.items(), key=lambda item: -item[1]):
        print(f"  {count:>6,}  {kind}")
    print("The last line is torn: a crash cut it short, with no newline.")

    # 2. Full load.
    heading("2. Full load: every valid message, corrupt lines skipped")
    counts = {}
    for name, store in stores.items():
        seconds, messages = timed(lambda store=store: store.load(KEY))
        timings[name]["full load"] = seconds
        counts[name] = len(messages)
        print(f"  {name:<5} {ms(seconds):>10}   {len(messages):,} messages")
        del messages
    assert len(set(counts.values())) == 1 and counts["pure"] == MESSAGES, counts
    if len(stores) > 1:
        print(f"Both stores find the same {MESSAGES:,} messages.")

    # 3. Tail read.
    heading("3. Tail read: load(limit=50), what a bot reads before each reply")
    tails = {}
    for name, store in stores.items():
        seconds, tails[name] = timed(lambda store=store: store.load(KEY, limit=50))
        timings[name]["load(limit=50)"] = seconds
        print(f"  {name:<5} {ms(seconds):>10}   {len(tails[name])} messages")
    assert all(tail == tails["pure"] for tail in tails.values())
    both = "Same 50 messages from both" if len(stores) > 1 else "50 messages"
    print(f"{both}; the newest is {short(tails['pure'][-1])}")

    # 4. Append after the torn tail.
    heading("4. Append after the torn last line")
    end = path.read_bytes()[-50:].decode("utf-8", "replace")
    print(f"The file ends with the torn line, no newline after it:\n  ...{end!r}")
    question = ChatMessage.user("Are you still there? Ты тут? 🤖")
    main_store.append(KEY, question)
    tail = path.read_bytes()[-90:].decode("utf-8", "replace")
    print(f"append(user message); the file now ends with:\n  ...{tail!r}")
    print("A newline closed the torn line first, so the new message did not glue onto it.")
    newest = main_store.load(KEY, limit=1)
    assert newest == [question], newest
    count = len(main_store.load(KEY))
    assert count == MESSAGES + 1, count
    print(f"Messages: {MESSAGES:,} -> {count:,}; the newest is {short(newest[0])}")

    # 5. remove_last + append: regenerate the bot's reply.
    heading("5. remove_last + append: replace the newest message")
    removed = main_store.remove_last(KEY)
    after_remove = len(main_store.load(KEY))
    print(f"remove_last() -> {removed}; messages: {count:,} -> {after_remove:,}")
    reply = ChatMessage.assistant("Yes! Да, я здесь. Here's the fix:\n```python\nprint('ok')\n```")
    main_store.append(KEY, reply)
    count = len(main_store.load(KEY))
    assert removed and after_remove == MESSAGES and count == MESSAGES + 1
    print(f"append(assistant reply); messages: {count:,}; newest: {short(reply)}")

    # 6. Compact, with each store on its own copy of the same file.
    heading("6. compact: rewrite the file with only its valid lines")
    size, lines = path.stat().st_size, lines_in(path)
    copy_key = f"{KEY}_pure_copy"
    copy = path.with_name(f"{copy_key}.jsonl")
    shutil.copyfile(path, copy)
    for name, store in stores.items():
        key = KEY if store is main_store else copy_key
        seconds, _ = timed(lambda store=store, key=key: store.compact(key), rounds=1)
        timings[name]["compact"] = seconds
        print(f"  {name:<5} {ms(seconds):>10}")
    if len(stores) > 1:
        assert copy.read_bytes() == path.read_bytes(), "rust and pure compacted differently"
        print("Both stores wrote byte-identical files.")
    stores["pure"].delete_session(copy_key)
    compacted = stores["pure"].load(KEY)
    assert len(compacted) == count and lines_in(path) == count
    print(f"Size: {size / 1e6:,.1f} MB -> {path.stat().st_size / 1e6:,.1f} MB.")
    print(f"Lines: {lines:,} -> {lines_in(path):,}: every corrupt line is gone,")
    print(f"all {count:,} messages are kept (as the pure store confirms).")

    # The ratio table.
    heading("Summary: median times (rust vs pure: how many times faster)")
    print(f"| {'operation':<16} | {'rust':>10} | {'pure':>10} | rust vs pure |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 12}|{'-' * 14}|")
    for op in ("full load", "load(limit=50)", "compact"):
        rust, slow = timings["rust"].get(op), timings["pure"][op]
        ratio = "n/a" if not rust else f"{slow / rust:,.{0 if slow > 100 * rust else 1}f}x"
        print(f"| {op:<16} | {ms(rust):>10} | {ms(slow):>10} | {ratio:>12} |")
    print(f"\nThe workspace is left in {WORKSPACE} to look at.")


if __name__ == "__main__":
    main()
