"""Loads big enough to read ahead (4 MiB and more): the Rust store reads and parses them on a second
thread, which also decodes a share of the mostly non-ASCII contents to code points for CPython to
copy (``rust/batch.rs``), as long as it is ahead. Whatever path a message takes, it must come out
as the pure store reads it."""

from __future__ import annotations

import random

import pytest

from conftest import require_native, store_class
from turnlog import ChatMessage

#: Alphabets of every width a ``str`` can have, and the characters JSON escapes or that sit at
#: the edges of a width: NUL, a newline, quotes, U+2028, the BOM, the last code point.
ALPHABETS = [
    "abcdefghij klmnop",
    "éüÿñçàß",
    "привет мир съешь же ещё",
    "你好世界日本語한국어",
    "🙂🚀👍🏽🇺🇦",
    '\x00\n\t"\\\u2028\ufeff\U0010ffff\x7f\x80',
]


def _content(rng: random.Random) -> str:
    """A content of 0-2,000 characters mixing a few alphabets, mostly non-ASCII."""
    letters = "".join(rng.sample(ALPHABETS, rng.randint(1, 3)))
    return "".join(rng.choices(letters, k=rng.choice([0, 1, 40, 800, 2000])))


def _messages(count: int) -> list[ChatMessage]:
    rng = random.Random(13)
    made = []
    for index in range(count):
        extra = {"name": "бот"} if index % 7 == 0 else {}
        made.append(ChatMessage(rng.choice(["user", "assistant"]), _content(rng), **extra))
    return made


@pytest.fixture(scope="module")
def big_session(tmp_path_factory):
    """A session of mostly non-ASCII messages over 8 read-ahead blocks (the share decoded to code
    points grows block by block), written by the pure store, and the messages it holds."""
    require_native()
    workspace = tmp_path_factory.mktemp("big") / "ws"
    written = _messages(16_000)
    pure = store_class("pure")(workspace)
    for start in range(0, len(written), 1000):
        pure.append_many("chat", written[start : start + 1000])
    size = (workspace / "sessions" / "chat.jsonl").stat().st_size
    assert size > 8 * (2 << 20)
    return workspace, written


def test_every_content_comes_out_as_written(big_session):
    workspace, written = big_session
    loaded = store_class("rust")(workspace).load("chat")
    assert [m.content for m in loaded] == [m.content for m in written]
    assert all(type(m.content) is str for m in loaded)
    assert loaded == written


def test_rust_and_pure_load_the_same(big_session):
    workspace, _ = big_session
    rust = store_class("rust")(workspace)
    pure = store_class("pure")(workspace)
    assert rust.load("chat") == pure.load("chat")
    assert rust.load("chat", limit=5000) == pure.load("chat", limit=5000)


@pytest.mark.parametrize("wide_eighths", [8, 3, 0])
def test_contents_decoded_to_code_points_come_out_as_written(tmp_path, wide_eighths):
    """A load decodes contents to code points only while its reading thread is ahead, which a
    test cannot arrange; ``_parse_block`` builds a block's messages the same way at a share
    given."""
    native = require_native()
    written = _messages(400)
    pure = store_class("pure")(tmp_path / "ws")
    pure.append_many("chat", written)
    block = (tmp_path / "ws" / "sessions" / "chat.jsonl").read_bytes()
    built = native._parse_block(block, wide_eighths)
    assert [m.content for m in built] == [m.content for m in written]
    assert built == written == pure.load("chat")
    assert {m.content for m in built} == {m.content for m in written}  # hashes alike too
