"""pytest-benchmark benchmarks of each store: ``pytest benches --benchmark-only``.

They run on a 100,000-message corpus by default (``TURNLOG_BENCH_MESSAGES`` sets another size;
``make bench`` uses 1,000,000). Each records ``extra_info["correct"]``: whether the result
matches what the pure store gives.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import bench_concurrency
from corpus import Corpus, encode, ensure_corpus
from peers import OrjsonStore
from turnlog import pure
from turnlog._impl import native

MESSAGES = int(os.environ.get("TURNLOG_BENCH_MESSAGES", "100000"))
KEY = "bench"
TAIL = 50
MESSAGE = {"role": "assistant", "content": 'Готово! Here is the summary 📋:\n- item "one"\n'}

RustStore: Callable[[Path], Any] | None = None
if native is not None:
    from turnlog.backends.jsonl.rust import SessionStore as RustStore

LIBRARIES: dict[str, Callable[[Path], Any] | None] = {
    "rust": RustStore,
    "pure": pure.SessionStore,
    "orjson-store": OrjsonStore,
}


def pairs(messages: list[Any]) -> list[tuple[str, str]]:
    """``(role, content)`` of ``ChatMessage`` objects and dicts alike."""
    return [
        (m["role"], m["content"]) if isinstance(m, dict) else (m.role, m.content) for m in messages
    ]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return ensure_corpus(n=MESSAGES)


@pytest.fixture(scope="session")
def reference_tail(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The newest ``TAIL`` messages as the pure store reads them."""
    workspace = tmp_path_factory.mktemp("reference")
    (workspace / "sessions").mkdir()
    shutil.copyfile(corpus.path, workspace / "sessions" / f"{KEY}.jsonl")
    tail = pure.SessionStore(workspace).load(KEY)[-TAIL:]
    shutil.rmtree(workspace)
    return tail


@pytest.fixture(params=list(LIBRARIES))
def make_store(request: pytest.FixtureRequest) -> Callable[[Path], Any]:
    factory = LIBRARIES[request.param]
    if factory is None:
        pytest.skip("turnlog._native is not built")
    return factory


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """An empty workspace, removed afterwards (copies of the corpus are large)."""
    (tmp_path / "sessions").mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path)


def session_file(workspace: Path) -> Path:
    return workspace / "sessions" / f"{KEY}.jsonl"


@pytest.fixture
def loaded(workspace: Path, corpus: Corpus) -> Path:
    """A workspace holding a copy of the corpus as session ``KEY``."""
    shutil.copyfile(corpus.path, session_file(workspace))
    return workspace


def test_full_load(benchmark: Any, make_store: Any, loaded: Path, corpus: Corpus) -> None:
    benchmark.group = f"full load ({corpus.messages:,} messages)"
    store = make_store(loaded)
    messages = benchmark(store.load, KEY)
    benchmark.extra_info["correct"] = len(messages) == corpus.messages


def test_load_tail(
    benchmark: Any, make_store: Any, loaded: Path, corpus: Corpus, reference_tail: list[Any]
) -> None:
    benchmark.group = f"load(limit={TAIL}) ({corpus.messages:,} messages)"
    store = make_store(loaded)
    messages = benchmark(store.load, KEY, limit=TAIL)
    benchmark.extra_info["correct"] = pairs(messages) == pairs(reference_tail)


def test_append(benchmark: Any, make_store: Any, workspace: Path) -> None:
    benchmark.group = "append (one message, new session)"
    store = make_store(workspace)
    benchmark(store.append, KEY, MESSAGE)
    lines = session_file(workspace).read_bytes().split(b"\n")
    # Every line written must be exactly turnlog's encoding of the message.
    benchmark.extra_info["correct"] = set(lines) == {encode(MESSAGE)[:-1], b""}


def test_remove_last(
    benchmark: Any, make_store: Any, loaded: Path, reference_tail: list[Any]
) -> None:
    benchmark.group = "remove_last (newest message is the last line)"
    store = make_store(loaded)
    tail = store.load(KEY, limit=TAIL)
    # Each round's setup puts the newest message back as the last line, after the torn one.
    store.remove_last(KEY)
    removed = benchmark.pedantic(
        store.remove_last, args=(KEY,), setup=lambda: store.append(KEY, tail[-1]), rounds=50
    )
    store.append(KEY, tail[-1])
    ok = removed and pairs(store.load(KEY, limit=TAIL)) == pairs(reference_tail)
    benchmark.extra_info["correct"] = ok


def test_compact(benchmark: Any, make_store: Any, workspace: Path, corpus: Corpus) -> None:
    benchmark.group = f"compact ({corpus.messages:,} messages)"
    store = make_store(workspace)
    target = session_file(workspace)

    def fresh_copy() -> None:  # pedantic would take a returned value for the arguments
        shutil.copyfile(corpus.path, target)

    benchmark.pedantic(store.compact, args=(KEY,), setup=fresh_copy, rounds=5)
    data = target.read_bytes()
    benchmark.extra_info["correct"] = data.count(b"\n") == corpus.messages and data.endswith(b"\n")


def test_bench_concurrency_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench_concurrency.py`` end to end at toy sizes (seconds): every row, every check passed.

    Not a benchmark, so ``--benchmark-only`` (``make bench``) skips it; ``pytest benches`` runs it.
    """
    monkeypatch.setenv("TURNLOG_BENCH_DIR", str(tmp_path))
    output = tmp_path / "results.md"
    toy = ["--messages", "2000", "--rounds", "1", "--chats", "4", "--turns", "2"]
    text = bench_concurrency.main([*toy, "--pop-items", "20", "--output", str(output)])
    assert output.read_text().endswith(text)
    for row in ("1", "1b", "2", "3", "4", "5", "5b", "5c", "5d"):
        assert f"| {row}. " in text
    assert text.count("| 4. ") == len(bench_concurrency.THREADS)
    assert "WRONG" not in text
