"""``turnlog bench``: a quick Rust-vs-pure benchmark on a generated, damaged session.

The corpus generator is a small cousin of ``benches/corpus.py`` (which is not installed): chat
messages in several scripts and sizes, 5% corrupt lines of the usual kinds, and a torn last line,
as a crashed writer leaves it.
"""

# Non-Latin chat text is the point of the corpus, so confusable letters are expected.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import IMPLEMENTATION, pure
from .._impl import native
from ..backends.jsonl.base import JsonlStoreBase
from .output import OK, write, write_json
from .table import Progress, human_size, render_table

__all__ = ["Corpus", "Timing", "cmd_bench", "run_bench", "write_corpus"]

KEY = "bench_session"
SEED = 20240601
CORRUPT_SHARE = 0.05

_TEXTS = (
    "Could you summarise the meeting notes from Tuesday?",
    "Sure, here is a short summary of the key decisions.",
    "The deployment failed because the migration timed out.",
    "Remind me tomorrow at 9am to call the dentist.",
    "Привет! Как дела с отчётом за прошлый квартал?",
    "Встреча перенесена на четверг, в 15:00 по Москве.",
    "今日はいい天気ですね。午後から会議があります。",
    "请帮我把这段话翻译成英文，谢谢。",
    "👍 🎉 👩‍💻 🇺🇦",
    'He said "ship it" and left.',
    "line one\nline two\r\nline three",
    '```python\ndef greet(name: str) -> str:\n    return f"Hello, {name}!"\n```',
)
_ROLES = ("user", "assistant", "system", "tool")
_CORRUPT = (
    b"",
    b"ERROR 2024-03-02T10:11:12Z connection reset by peer",
    b'{"role":"user","content":"cut sh',
    b'{"role":"user","content":"caf\xe9"}',
    b'["user","hello"]',
    b'{"role":1,"content":"hi"}',
    b'{"role":"user"}',
    b'{"role":"user","content":"abc\\ud800def"}',
    b'{"role":"user","content":"x"} junk',
    b'{"role":"tool","content":"y","value":NaN}',
    b'{"role":"user","content":"a","content":"b"}',
    b"\x00\x00\x00\x00",
)


@dataclass
class Corpus:
    """The generated session file."""

    path: str
    messages: int
    lines: int
    corrupt_lines: int
    size: int


def _message(rng: random.Random) -> bytes:
    length = rng.randint(20, 300) if rng.random() < 0.98 else rng.randint(1_000, 4_000)
    parts: list[str] = []
    while sum(map(len, parts)) < length:
        parts.append(rng.choice(_TEXTS))
    record = {"role": rng.choice(_ROLES), "content": " ".join(parts)[:length]}
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def write_corpus(path: str, messages: int, *, seed: int = SEED) -> Corpus:
    """Write ``messages`` valid messages, 5% corrupt lines and a torn tail to ``path``."""
    rng = random.Random(seed)
    pool = [_message(rng) for _ in range(min(messages, 2048) or 1)]
    corrupt = [line + b"\n" for line in _CORRUPT]
    bad = round(messages * CORRUPT_SHARE / (1 - CORRUPT_SHARE))
    lines = rng.choices(pool, k=messages) + rng.choices(corrupt, k=bad)
    rng.shuffle(lines)  # spread the damage through the file
    torn = rng.choice(pool)
    with open(path, "wb") as out:
        out.write(b"".join(lines))
        out.write(torn[: len(torn) // 2])  # a writer that died mid-line
    return Corpus(path, messages, len(lines) + 1, bad + 1, os.path.getsize(path))


@dataclass
class Timing:
    """One operation, timed on each store (seconds per call, median; ``None``: not run)."""

    operation: str
    rust: float | None
    pure: float | None

    @property
    def speedup(self) -> float | None:
        """How many times faster the Rust store is."""
        if self.rust is None or self.pure is None or self.rust <= 0:
            return None
        return self.pure / self.rust


def _median_time(call: Callable[[], Any], *, budget: float, most: int) -> float:
    """Median seconds per ``call()``: at least once, and until ``budget`` seconds or ``most``
    calls, so a quick operation is timed over many calls and a slow one is not run for long."""
    times: list[float] = []
    spent = 0.0
    while not times or (spent < budget and len(times) < most):
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return statistics.median(times)


def stores(workspace: str) -> dict[str, JsonlStoreBase]:
    """The stores to compare: Rust (when the native module is in use) and pure Python."""
    found: dict[str, JsonlStoreBase] = {}
    if native is not None:
        from ..backends.jsonl.rust import SessionStore

        found["rust"] = SessionStore(workspace)
    found["pure"] = pure.SessionStore(workspace)
    return found


OPERATIONS = ("full load", "load(limit=50)", "append")


def run_bench(
    workspace: str, messages: int, starting: Callable[[str], None]
) -> tuple[Corpus, list[Timing]]:
    """Generate the corpus in ``workspace`` and time each operation on each store.

    ``starting(label)`` is called as each step begins (for a progress bar): ``1 + 3 * stores``
    steps.
    """
    compared = stores(workspace)
    starting("generating a session")
    corpus = write_corpus(compared["pure"].transcript_path(KEY), messages)
    results: dict[str, dict[str, float]] = {name: {} for name in compared}
    for name, store in compared.items():
        starting(f"{name}: full load")
        full = functools.partial(store.load, KEY)
        results[name]["full load"] = _median_time(full, budget=1.0, most=5)
        starting(f"{name}: load(limit=50)")
        tail = functools.partial(store.load, KEY, limit=50)
        results[name]["load(limit=50)"] = _median_time(tail, budget=0.3, most=2000)
        starting(f"{name}: append")
        # Appends go to a copy, so the loads above and the other store see the same file. The
        # copy's torn last line is closed first: the first append would repair it (and log a
        # warning), which is not what a bot's appends do.
        target = f"{KEY}_{name}_append"
        copy = compared["pure"].transcript_path(target)
        shutil.copyfile(corpus.path, copy)
        with open(copy, "ab") as file:
            file.write(b"\n")
        message = {"role": "user", "content": "How long does an append take?"}
        append = functools.partial(store.append, target, message)
        results[name]["append"] = _median_time(append, budget=0.3, most=2000)
    timings = [
        Timing(op, results.get("rust", {}).get(op), results["pure"].get(op)) for op in OPERATIONS
    ]
    return corpus, timings


# --- the command --------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _speedup(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def cmd_bench(args: argparse.Namespace) -> int:
    steps = 1 + 3 * (2 if native is not None else 1)
    with (
        tempfile.TemporaryDirectory(prefix="turnlog-bench-") as workspace,
        Progress("bench", steps) as progress,
    ):
        began = 0

        def starting(label: str) -> None:
            # A step starting means the one before it is done.
            nonlocal began
            progress.advance(1 if began else 0, label=label)
            began += 1

        corpus, timings = run_bench(workspace, args.messages, starting)
        progress.advance(label="done")
    if args.json:
        write_json(
            {
                "implementation": IMPLEMENTATION,
                "messages": corpus.messages,
                "lines": corpus.lines,
                "corrupt_lines": corpus.corrupt_lines,
                "size": corpus.size,
                "results": [
                    {
                        "operation": t.operation,
                        "rust_seconds": t.rust,
                        "pure_seconds": t.pure,
                        "speedup": t.speedup,
                    }
                    for t in timings
                ],
            }
        )
        return OK
    head = (
        f"one session: {corpus.messages:,} messages, {corpus.lines:,} lines "
        f"({corpus.corrupt_lines:,} corrupt, torn last line), {human_size(corpus.size)}\n"
    )
    if native is None:
        head += "the Rust core is not in use (not built, or TURNLOG_PURE=1): pure Python only\n"
    rows = [
        [t.operation, _duration(t.rust), _duration(t.pure), _speedup(t.speedup)] for t in timings
    ]
    table = render_table(["OPERATION", "RUST", "PURE PYTHON", "SPEEDUP"], rows, right=(1, 2, 3))
    write(head + "\n" + table + "(median time per call)\n")
    return OK
