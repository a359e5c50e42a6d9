"""Keyword search lower-cases as Rust does in every store, whatever the running Python's
Unicode version: the pure store and the Rust store match the same messages."""

from __future__ import annotations

import unicodedata

from conftest import require_native
from turnlog import ChatMessage, SessionQuery
from turnlog._rules import _rust_cases, lower


def newer_than_python() -> dict[int, str]:
    """Rust's lower-case pairs that this Python's tables lack."""
    table, _ = _rust_cases()
    return {point: low for point, low in table.items() if chr(point).lower() != low}


def test_lower_is_rusts_lower():
    table, _ = _rust_cases()
    assert len(table) > 1400
    for point, low in table.items():
        assert lower(chr(point)) == low, hex(point)
    assert lower("ÀÉÎ ПРИВЕТ ΣΟΦΊΑ ǅ") == "àéî привет σοφία ǆ"  # final sigma, titlecase
    assert lower("plain ascii") == "plain ascii"


def test_the_tables_differ_where_unicode_grew():
    # Documents why the table exists: the build's Rust knows letters this Python does not.
    missing = newer_than_python()
    if unicodedata.unidata_version < "16.0.0":
        assert missing, "Rust's Unicode is newer than this Python's: some pairs must differ"


def test_both_stores_find_the_newer_letters(tmp_path):
    require_native()
    from turnlog.backends.jsonl.rust import SessionStore as RustStore
    from turnlog.pure import SessionStore as PureStore

    rust, pure = RustStore(tmp_path / "ws"), PureStore(tmp_path / "ws")
    letters = newer_than_python() or {ord("Ä"): "ä"}
    for point in letters:
        rust.append(f"s{point:X}", ChatMessage("user", f"x{chr(point)}y"))
    for point, low in letters.items():
        query = SessionQuery(keyword=f"x{low}y")
        found = [[m.key for m in store.search(query)] for store in (rust, pure)]
        assert found == [[f"s{point:X}"]] * 2, hex(point)
