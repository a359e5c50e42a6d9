"""Behaviour of SessionStore, run against the Rust and the pure store."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import stat
import weakref
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest

import turnlog
from _spec import read, session_path, snapshot
from turnlog import ChatMessage, SessionMetadata

U = ChatMessage.user
A = ChatMessage.assistant

WEIRD_KEYS = [
    "plain",
    "a/b",
    "a:b",
    "a_b",
    "a%2Fb",
    "../x",
    "..",
    ".",
    ".hidden",
    "ключ",
    "with space",
    "x.jsonl",
    "a\x00b",
    "line\nbreak",
    "😀",
    "-",
    "CON",
]


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


# --- construction -------------------------------------------------------------------------------


def test_creates_sessions_folder_owner_only(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    sessions = tmp_path / "ws" / "sessions"
    assert sessions.is_dir()
    assert os.path.samefile(store.sessions_dir, sessions)
    assert os.path.isabs(store.sessions_dir)
    assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
    assert list(sessions.iterdir()) == []


def test_accepts_str_and_pathlike(store_cls, tmp_path):
    first = store_cls(str(tmp_path / "ws"))
    first.append("k", U("x"))
    second = store_cls(tmp_path / "ws")
    assert second.load("k") == [U("x")]


def test_existing_workspace_is_kept(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    store.append("k", U("x"))
    again = store_cls(tmp_path / "ws")
    assert again.load("k") == [U("x")]
    assert again.list_sessions() == ["k"]


def test_durability(store_cls, tmp_path):
    assert store_cls(tmp_path / "a").durability == "process"
    power = store_cls(tmp_path / "b", durability="power")
    assert power.durability == "power"
    power.append("k", U("one"))
    power.append_many("k", [U("two"), A("three")])
    assert power.update_last("k", A("THREE"))
    assert power.remove_last("k")
    power.compact("k")
    assert power.load("k") == [U("one"), U("two")]
    assert read(power, "k") == (
        b'{"role":"user","content":"one"}\n{"role":"user","content":"two"}\n'
    )
    assert power.clear_messages("k") == 2
    assert power.delete_session("k")
    assert power.list_sessions() == []


@pytest.mark.parametrize("durability", ["disk", "", None, True, "POWER"])
def test_bad_durability(store_cls, tmp_path, durability):
    with pytest.raises(ValueError):
        store_cls(tmp_path / "ws", durability=durability)
    assert not (tmp_path / "ws").exists()


def test_repr(store_cls, tmp_path):
    text = repr(store_cls(tmp_path / "ws"))
    assert "SessionStore" in text
    assert "durability='process'" in text


def test_is_a_session_backend(store):
    assert isinstance(store, turnlog.SessionBackend)


def test_public_store_is_the_one_in_use():
    import turnlog.backends.jsonl.rust
    import turnlog.pure

    if turnlog._impl.native is not None:
        assert turnlog.IMPLEMENTATION == "rust"
        assert turnlog.SessionStore is turnlog.backends.jsonl.rust.SessionStore
    else:
        assert turnlog.IMPLEMENTATION == "python"
        assert turnlog.SessionStore is turnlog.pure.SessionStore


# --- append and load ----------------------------------------------------------------------------


def test_transcript_path(store, tmp_path):
    sessions = (tmp_path / "ws" / "sessions").resolve()
    path = store.transcript_path("telegram_user123")
    assert path == str(sessions / "telegram_user123.jsonl")
    assert not os.path.exists(path)  # a path, not a session: nothing is created
    store.append("chat/ключ", ChatMessage.user("hi"))
    escaped = store.transcript_path("chat/ключ")
    assert escaped == str(sessions / "chat%2F%D0%BA%D0%BB%D1%8E%D1%87.jsonl")
    with open(escaped, "rb") as file:
        assert file.read() == b'{"role":"user","content":"hi"}\n'
    with pytest.raises(ValueError):
        store.transcript_path("")
    with pytest.raises(TypeError):
        store.transcript_path(b"k")


def test_append_and_load(store):
    assert store.load("s") == []
    store.append("s", U("hello"))
    store.append("s", A("hi there"))
    store.append("s", ChatMessage("tool", "42", name="calc"))
    loaded = store.load("s")
    assert loaded == [U("hello"), A("hi there"), ChatMessage("tool", "42", name="calc")]
    assert all(type(m) is turnlog.ChatMessage for m in loaded)


def test_append_dict_and_mappings(store):
    store.append("s", {"role": "user", "content": "a"})
    store.append("s", OrderedDict([("content", "b"), ("role", "assistant"), ("n", 1)]))
    store.append("s", MappingProxyType({"role": "tool", "content": "c"}))
    assert store.load("s") == [U("a"), ChatMessage("assistant", "b", n=1), ChatMessage.tool("c")]
    assert read(store, "s") == (
        b'{"role":"user","content":"a"}\n'
        b'{"role":"assistant","content":"b","n":1}\n'
        b'{"role":"tool","content":"c"}\n'
    )


def test_exact_file_bytes(store):
    store.append("s", U("hello"))
    assert read(store, "s") == b'{"role":"user","content":"hello"}\n'
    assert session_path(store, "s").name == "s.jsonl"


@pytest.mark.parametrize(
    ("content", "encoded"),
    [
        ("héllo ключ 😀 中文", "héllo ключ 😀 中文".encode()),
        ("two\nlines", b"two\\nlines"),
        ('q"uote\\back/slash', b'q\\"uote\\\\back/slash'),
        ("\t\r\x08\x0c", b"\\t\\r\\b\\f"),
        ("\x00\x01\x1f\x7f", b"\\u0000\\u0001\\u001f\x7f"),
        ("\u2028\u2029\ufeff", "\u2028\u2029\ufeff".encode()),
        ("", b""),
    ],
)
def test_content_encoding(store, content, encoded):
    store.append("s", U(content))
    assert read(store, "s") == b'{"role":"user","content":"' + encoded + b'"}\n'
    assert store.load("s") == [U(content)]


def test_extras_round_trip_in_order(store):
    message = {
        "name": "bot",
        "role": "assistant",
        "tool_calls": [{"id": "c1", "args": {"z": 1, "a": [True, False, None]}}],
        "content": "x",
        "score": 1.5,
        "big": 2**100,
        "neg": -7,
        "tiny": 5e-324,
        "exp": 1e16,
        "negzero": -0.0,
        "": "empty key",
    }
    store.append("s", message)
    assert read(store, "s") == (
        b'{"role":"assistant","content":"x","name":"bot",'
        b'"tool_calls":[{"id":"c1","args":{"z":1,"a":[true,false,null]}}],'
        b'"score":1.5,"big":1267650600228229401496703205376,"neg":-7,"tiny":5e-324,'
        b'"exp":1e+16,"negzero":-0.0,"":"empty key"}\n'
    )
    [loaded] = store.load("s")
    assert list(loaded.to_dict().items()) == [
        ("role", "assistant"),
        ("content", "x"),
        ("name", "bot"),
        ("tool_calls", [{"id": "c1", "args": {"z": 1, "a": [True, False, None]}}]),
        ("score", 1.5),
        ("big", 2**100),
        ("neg", -7),
        ("tiny", 5e-324),
        ("exp", 1e16),
        ("negzero", -0.0),
        ("", "empty key"),
    ]
    assert type(loaded.extra["big"]) is int
    assert type(loaded.extra["exp"]) is float
    assert str(loaded.extra["negzero"]) == "-0.0"
    assert list(loaded.extra["tool_calls"][0]["args"]) == ["z", "a"]


def test_chatmessage_extra_round_trip(store):
    message = U("hi")
    message.extra["meta"] = {"b": 2, "a": 1}
    store.append("s", message)
    assert store.load("s") == [ChatMessage("user", "hi", meta={"b": 2, "a": 1})]
    assert read(store, "s") == b'{"role":"user","content":"hi","meta":{"b":2,"a":1}}\n'


def test_missing_session_loads_empty(store):
    assert store.load("nobody") == []
    assert store.load("nobody", limit=3) == []
    assert store.list_sessions() == []
    assert not session_path(store, "nobody").exists()


def test_limit(store):
    for i in range(5):
        store.append("s", U(str(i)))
    assert store.load("s", limit=2) == [U("3"), U("4")]
    assert store.load("s", 1) == [U("4")]
    assert store.load("s", limit=5) == [U(str(i)) for i in range(5)]
    assert store.load("s", limit=50) == [U(str(i)) for i in range(5)]
    assert store.load("s", limit=0) == []
    assert store.load("s", limit=None) == [U(str(i)) for i in range(5)]


def test_limit_counts_valid_messages_only(store):
    store.append("s", U("0"))
    path = session_path(store, "s")
    with open(path, "ab") as f:
        f.write(b"junk\n\n[1]\n")
    store.append("s", U("1"))
    with open(path, "ab") as f:
        f.write(b"{broken\n")
    assert store.load("s", limit=2) == [U("0"), U("1")]
    assert store.load("s", limit=1) == [U("1")]


@pytest.mark.parametrize("limit", [-1, -100])
def test_negative_limit(store, limit):
    store.append("s", U("x"))
    with pytest.raises(ValueError):
        store.load("s", limit=limit)
    with pytest.raises(ValueError):
        store.load("missing", limit=limit)


@pytest.mark.parametrize("limit", [True, False, "3", 1.0, [1]])
def test_limit_type(store, limit):
    store.append("s", U("x"))
    with pytest.raises(TypeError):
        store.load("s", limit=limit)


def test_torn_tail_is_not_glued(store):
    store.append("s", U("first"))
    path = session_path(store, "s")
    with open(path, "ab") as f:
        f.write(b'{"role":"user","con')
    before = path.read_bytes()
    store.append("s", A("second"))
    data = path.read_bytes()
    assert data == before + b'\n{"role":"assistant","content":"second"}\n'
    assert store.load("s") == [U("first"), A("second")]
    assert lines(data)[1] == b'{"role":"user","con'


def test_torn_tail_valid_record_without_newline(store):
    path = session_path(store, "s")
    path.write_bytes(b'{"role":"user","content":"no newline"}')
    store.append("s", A("next"))
    assert path.read_bytes() == (
        b'{"role":"user","content":"no newline"}\n{"role":"assistant","content":"next"}\n'
    )
    assert store.load("s") == [U("no newline"), A("next")]


def test_append_many_torn_tail(store):
    path = session_path(store, "s")
    path.write_bytes(b"torn")
    store.append_many("s", [U("a"), U("b")])
    assert path.read_bytes() == (
        b'torn\n{"role":"user","content":"a"}\n{"role":"user","content":"b"}\n'
    )


def test_append_many(store):
    store.append("s", U("0"))
    store.append_many("s", [U("1"), {"role": "assistant", "content": "2", "x": [1]}, A("3")])
    assert store.load("s") == [U("0"), U("1"), ChatMessage("assistant", "2", x=[1]), A("3")]
    assert read(store, "s") == (
        b'{"role":"user","content":"0"}\n{"role":"user","content":"1"}\n'
        b'{"role":"assistant","content":"2","x":[1]}\n{"role":"assistant","content":"3"}\n'
    )


def test_append_many_accepts_iterables(store):
    store.append_many("s", (U(str(i)) for i in range(3)))
    store.append_many("s", (A("t"),))
    assert store.load("s") == [U("0"), U("1"), U("2"), A("t")]


def test_append_many_empty(store):
    store.append_many("s", [])
    assert store.list_sessions() == []
    assert not session_path(store, "s").exists()
    store.append("s", U("x"))
    before = read(store, "s")
    store.append_many("s", [])
    assert read(store, "s") == before


@pytest.mark.parametrize(
    "bad",
    [
        {"role": "user"},
        {"role": 1, "content": "x"},
        {"role": "user", "content": "x", "v": float("nan")},
        {"role": "user", "content": "x", "v": object()},
        {"role": "user", "content": "\ud800"},
        42,
    ],
)
@pytest.mark.parametrize("position", [0, 1, 2])
def test_append_many_all_or_nothing(store, bad, position):
    store.append("s", U("before"))
    before = snapshot(session_path(store, "s").parent)
    batch = [U("a"), A("b")]
    batch.insert(position, bad)
    with pytest.raises((TypeError, ValueError)):
        store.append_many("s", batch)
    assert snapshot(session_path(store, "s").parent) == before
    with pytest.raises((TypeError, ValueError)):
        store.append_many("fresh", batch)
    assert not session_path(store, "fresh").exists()
    assert store.list_sessions() == ["s"]


# --- remove_last --------------------------------------------------------------------------------


def test_remove_last(store):
    assert store.remove_last("s") is False
    assert not session_path(store, "s").exists()
    store.append("s", U("a"))
    store.append("s", A("b"))
    assert store.remove_last("s") is True
    assert store.load("s") == [U("a")]
    assert read(store, "s") == b'{"role":"user","content":"a"}\n'
    assert store.remove_last("s") is True
    assert store.load("s") == []
    assert read(store, "s") == b""
    assert store.remove_last("s") is False
    assert store.session_exists("s")


def test_remove_last_keeps_corrupt_lines(store):
    path = session_path(store, "s")
    path.write_bytes(
        b"garbage before\n"
        b'{"role":"user","content":"keep"}\n'
        b"\xff\xfe bad utf8\n"
        b'  {"role":"user","content":"drop"}  \r\n'
        b"trailing junk\n"
        b"\n"
        b'{"role":"user","con'
    )
    assert store.remove_last("s") is True
    assert path.read_bytes() == (
        b"garbage before\n"
        b'{"role":"user","content":"keep"}\n'
        b"\xff\xfe bad utf8\n"
        b"trailing junk\n"
        b"\n"
        b'{"role":"user","con'
    )
    assert store.remove_last("s") is True
    assert path.read_bytes() == (
        b'garbage before\n\xff\xfe bad utf8\ntrailing junk\n\n{"role":"user","con'
    )
    assert store.remove_last("s") is False
    assert path.read_bytes() == (
        b'garbage before\n\xff\xfe bad utf8\ntrailing junk\n\n{"role":"user","con'
    )


def test_remove_last_of_only_corrupt_lines(store):
    path = session_path(store, "s")
    path.write_bytes(b"junk\n[]\n")
    assert store.remove_last("s") is False
    assert path.read_bytes() == b"junk\n[]\n"


def test_remove_last_truncates_in_place(store):
    store.append_many("s", [U("a"), U("b")])
    path = session_path(store, "s")
    inode = path.stat().st_ino
    assert store.remove_last("s")
    assert path.stat().st_ino == inode
    assert path.read_bytes() == b'{"role":"user","content":"a"}\n'


def test_rewrites_are_atomic_renames(store):
    path = session_path(store, "s")
    path.write_bytes(b'{"role":"user","content":"a"}\n{"role":"user","content":"b"}\njunk\n')
    inode = path.stat().st_ino
    assert store.remove_last("s")  # a corrupt line follows: rewrite
    assert path.read_bytes() == b'{"role":"user","content":"a"}\njunk\n'
    assert path.stat().st_ino != inode
    inode = path.stat().st_ino
    assert store.update_last("s", A("z"))
    assert path.read_bytes() == b'{"role":"assistant","content":"z"}\njunk\n'
    assert path.stat().st_ino != inode
    inode = path.stat().st_ino
    store.compact("s")
    assert path.read_bytes() == b'{"role":"assistant","content":"z"}\n'
    assert path.stat().st_ino != inode
    assert sorted(os.listdir(path.parent)) == ["s.jsonl"]  # no temp file left


# --- update_last --------------------------------------------------------------------------------


def test_update_last(store):
    store.append_many("s", [U("q"), A("draft")])
    assert store.update_last("s", A("final")) is True
    assert store.load("s") == [U("q"), A("final")]
    assert store.update_last("s", {"role": "assistant", "content": "v2", "n": 2}) is True
    assert read(store, "s") == (
        b'{"role":"user","content":"q"}\n{"role":"assistant","content":"v2","n":2}\n'
    )


def test_update_last_missing_or_empty(store):
    assert store.update_last("s", U("x")) is False
    assert not session_path(store, "s").exists()
    assert store.list_sessions() == []
    path = session_path(store, "s")
    path.write_bytes(b"junk\n\n")
    assert store.update_last("s", U("x")) is False
    assert path.read_bytes() == b"junk\n\n"
    store.clear_messages("s")
    assert store.update_last("s", U("x")) is False
    assert path.read_bytes() == b""


def test_update_last_keeps_other_lines(store):
    path = session_path(store, "s")
    path.write_bytes(b'one\n {"role":"user","content":"a"} \ntwo\r\n{"role":"user","content"')
    assert store.update_last("s", A("b")) is True
    assert path.read_bytes() == (
        b'one\n{"role":"assistant","content":"b"}\ntwo\r\n{"role":"user","content"'
    )


def test_update_last_of_unterminated_line(store):
    path = session_path(store, "s")
    path.write_bytes(b'x\n{"role":"user","content":"a"}')
    assert store.update_last("s", A("b")) is True
    assert path.read_bytes() == b'x\n{"role":"assistant","content":"b"}\n'


# --- clear, delete, compact ---------------------------------------------------------------------


def test_clear_messages(store):
    assert store.clear_messages("s") == 0
    assert not session_path(store, "s").exists()
    path = session_path(store, "s")
    path.write_bytes(b'junk\n{"role":"user","content":"a"}\n[]\n{"role":"user","content":"b"}\n')
    assert store.clear_messages("s") == 2
    assert path.read_bytes() == b""
    assert store.list_sessions() == ["s"]
    assert store.session_exists("s")
    assert store.load("s") == []
    assert store.get_session_metadata("s").message_count == 0
    assert store.clear_messages("s") == 0
    store.append("s", U("again"))
    assert store.load("s") == [U("again")]


def test_delete_session(store):
    assert store.delete_session("s") is False
    store.append("s", U("a"))
    store.append("t", U("b"))
    assert store.delete_session("s") is True
    assert not session_path(store, "s").exists()
    assert store.list_sessions() == ["t"]
    assert store.session_exists("s") is False
    assert store.load("s") == []
    assert store.delete_session("s") is False
    assert store.load("t") == [U("b")]


def test_compact(store):
    path = session_path(store, "s")
    path.write_bytes(
        b"\n"
        b'  {"role":"user","content":"a"}\t\r\n'
        b"garbage\n"
        b'\xc2\xa0{"role":"user", "content":"b", "x": 1}\xe3\x80\x80\n'
        b"\xff\n"
        b'{"role":"user","content":"c"}'
    )
    store.compact("s")
    assert path.read_bytes() == (
        b'{"role":"user","content":"a"}\n'
        b'{"role":"user", "content":"b", "x": 1}\n'
        b'{"role":"user","content":"c"}\n'
    )
    assert store.load("s") == [U("a"), ChatMessage("user", "b", x=1), U("c")]
    inode = path.stat().st_ino
    store.compact("s")  # already compact: nothing to rewrite
    assert path.stat().st_ino == inode
    assert path.read_bytes() == (
        b'{"role":"user","content":"a"}\n'
        b'{"role":"user", "content":"b", "x": 1}\n'
        b'{"role":"user","content":"c"}\n'
    )


def test_compact_all_corrupt(store):
    path = session_path(store, "s")
    path.write_bytes(b"junk\n\n")
    store.compact("s")
    assert path.read_bytes() == b""
    assert store.list_sessions() == ["s"]


def test_compact_missing(store):
    store.compact("s")
    assert not session_path(store, "s").exists()
    assert store.list_sessions() == []


def test_rewrites_keep_owner_only_mode(store):
    path = session_path(store, "s")
    path.write_bytes(b'junk\n{"role":"user","content":"a"}\njunk\n')
    os.chmod(path, 0o600)
    store.compact("s")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store.append("s", U("b"))
    assert store.update_last("s", U("c"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- keys and listing ---------------------------------------------------------------------------


def test_list_sessions_weird_keys(store):
    for index, key in enumerate(WEIRD_KEYS):
        store.append(key, U(f"message {index}"))
    assert store.list_sessions() == sorted(WEIRD_KEYS)
    sessions = session_path(store, "plain").parent
    names = os.listdir(sessions)
    assert len(names) == len(WEIRD_KEYS)
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_%-]+\.jsonl", name), name
    for index, key in enumerate(WEIRD_KEYS):
        assert store.session_exists(key)
        assert store.load(key) == [U(f"message {index}")]
    assert not (session_path(store, "plain").parent.parent / "x.jsonl").exists()
    assert not os.path.exists(os.path.join(store.sessions_dir, "..", "x.jsonl"))


def test_plain_keys_keep_their_name(store):
    for key in ["telegram_user123", "A-Z_09", "x"]:
        store.append(key, U("m"))
    assert sorted(os.listdir(store.sessions_dir)) == [
        "A-Z_09.jsonl",
        "telegram_user123.jsonl",
        "x.jsonl",
    ]


def test_encoded_names(store):
    store.append("a/b", U("m"))
    store.append("ключ", U("m"))
    store.append(".x", U("m"))
    assert sorted(os.listdir(store.sessions_dir)) == sorted(
        ["a%2Fb.jsonl", "%D0%BA%D0%BB%D1%8E%D1%87.jsonl", "%2Ex.jsonl"]
    )


def test_list_sessions_ignores_other_files(store):
    store.append("k", U("m"))
    sessions = session_path(store, "k").parent
    (sessions / "notes.txt").write_bytes(b"x")
    (sessions / ".turnlog-0011223344556677.tmp").write_bytes(b"x")
    (sessions / ".hidden.jsonl").write_bytes(b"x")
    (sessions / "a%2fb.jsonl").write_bytes(b"x")  # lower-case hex: no key maps to it
    (sessions / "%41.jsonl").write_bytes(b"x")  # 'A' is never escaped
    (sessions / "%FF.jsonl").write_bytes(b"x")  # not UTF-8
    (sessions / "dir.jsonl").mkdir()
    assert store.list_sessions() == ["k"]


def test_session_exists(store):
    assert store.session_exists("a/b") is False
    store.append("a/b", U("x"))
    assert store.session_exists("a/b") is True
    assert store.session_exists("a:b") is False
    assert store.session_exists("a_b") is False


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_missing(store):
    assert store.get_session_metadata("nope") is None
    assert store.list_sessions_with_metadata() == []


def test_metadata(store):
    path = session_path(store, "a/b")
    path.write_bytes(b'{"role":"user","content":"1"}\njunk\n{"role":"user","content":"2"}\n\n')
    when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    os.utime(path, ns=(int(when.timestamp()) * 10**9,) * 2)
    metadata = store.get_session_metadata("a/b")
    assert isinstance(metadata, SessionMetadata)
    assert metadata.key == "a/b"
    assert metadata.message_count == 2
    assert metadata.last_activity == when
    assert metadata.created_at == when
    for value in (metadata.last_activity, metadata.created_at):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert metadata.name is None
    assert metadata.agent_alias is None


def test_metadata_is_current(store):
    store.append("s", U("a"))
    before = datetime.now(timezone.utc)
    metadata = store.get_session_metadata("s")
    assert abs(metadata.last_activity - before) < timedelta(seconds=30)
    assert metadata.message_count == 1


def test_list_sessions_with_metadata(store):
    stamps = {
        "old": 1_000_000_000,
        "new": 1_600_000_000,
        "mid": 1_300_000_000,
        "tie": 1_300_000_000,
    }
    for key, seconds in stamps.items():
        store.append_many(key, [U("x")] * len(key))
        os.utime(session_path(store, key), ns=(seconds * 10**9,) * 2)
    found = store.list_sessions_with_metadata()
    assert [m.key for m in found] == ["new", "mid", "tie", "old"]
    assert [m.message_count for m in found] == [3, 3, 3, 3]
    assert found[0].last_activity == datetime.fromtimestamp(1_600_000_000, timezone.utc)
    assert found == [store.get_session_metadata(m.key) for m in found]


def test_load_with_timestamps(store):
    assert store.load_with_timestamps("s") == []
    store.append_many("s", [U("a"), A("b"), U("c")])
    assert store.load_with_timestamps("s") == [(U("a"), None), (A("b"), None), (U("c"), None)]
    assert store.load_with_timestamps("s", limit=1) == [(U("c"), None)]


# --- the file system ----------------------------------------------------------------------------


def test_files_are_owner_only(store):
    store.append("s", U("a"))
    store.append_many("t", [U("a")])
    for key in ["s", "t"]:
        assert stat.S_IMODE(session_path(store, key).stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.sessions_dir).st_mode) == 0o700


def test_symlink_is_not_followed(store, tmp_path, caplog):
    outside = tmp_path / "outside.jsonl"
    original = b'{"role":"user","content":"secret"}\n'
    outside.write_bytes(original)
    link = session_path(store, "s")
    link.symlink_to(outside)
    with pytest.raises(OSError):
        store.append("s", U("x"))
    with pytest.raises(OSError):
        store.append_many("s", [U("x"), U("y")])
    for call in (
        lambda: store.update_last("s", U("x")),
        lambda: store.remove_last("s"),
        lambda: store.compact("s"),
        lambda: store.clear_messages("s"),
    ):
        with contextlib.suppress(OSError):
            call()
        assert outside.read_bytes() == original
    assert outside.read_bytes() == original
    assert os.readlink(link) == str(outside)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="turnlog"):
        assert store.load("s") == []
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["turnlog"]
    assert store.list_sessions() == []


def test_unreadable_file_loads_empty_with_warning(store, caplog):
    path = session_path(store, "s")
    path.mkdir()  # a directory where the file should be: reading it fails with an OSError
    with caplog.at_level(logging.WARNING, logger="turnlog"):
        assert store.load("s") == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "turnlog"


class _Sentinel:
    pass


def test_loaded_messages_stay_collectable(store):
    """Messages whose fields can hold no reference cycle (strings, and extras of scalars only)
    may be hidden from the cycle collector, as CPython hides such dicts; reaching the extras
    (the only way to put a container in) must track the message again, so a cycle through it is
    collected. Extras holding a container stay tracked."""
    store.append("k", {"role": "user", "content": "plain"})
    store.append("k", {"role": "user", "content": "scalars", "n": 1, "name": "bot"})
    store.append("k", {"role": "user", "content": "nested", "meta": {"tags": ["a"]}})
    plain, scalars, nested = store.load("k")
    assert gc.is_tracked(nested) and gc.is_tracked(nested.extra["meta"])
    others = store.load("k")
    sentinels = []
    for message, attach in (
        (plain, "get"),
        (scalars, "get"),
        (others[0], "set"),
        (others[1], "set"),
    ):
        sentinel = _Sentinel()
        sentinels.append(weakref.ref(sentinel))
        if attach == "get":
            message.extra["cycle"] = [message, sentinel]
        else:
            message.extra = {"cycle": [message, sentinel]}
        assert gc.is_tracked(message)
        del sentinel
    del plain, scalars, others, message
    gc.collect()
    assert [ref() for ref in sentinels] == [None] * 4


def test_scalar_extras_reach_a_cycle_only_through_the_message(store):
    """A cycle made inside an untracked extras dict (a container put in re-tracks the dict)."""
    store.append("k", {"role": "user", "content": "scalars", "n": 1})
    (message,) = store.load("k")
    extra = message.extra
    sentinel = _Sentinel()
    ref = weakref.ref(sentinel)
    extra["self"] = extra
    extra["sentinel"] = sentinel
    assert gc.is_tracked(extra)
    del message, extra, sentinel
    gc.collect()
    assert ref() is None


def test_rearranged_ordered_dicts_keep_their_order(store):
    """Extra fields go out in the order ``to_dict()`` and ``json.dumps`` see them, also for an
    ``OrderedDict`` rearranged after it was filled (its storage order is not its order)."""
    fields = OrderedDict(a=1, b=2)
    fields.move_to_end("a")
    message = ChatMessage("user", "c")
    message.extra = fields
    store.append("k", message)
    store.append("k", {"role": "user", "content": "c", "meta": fields})
    assert read(store, "k") == (
        b'{"role":"user","content":"c","b":2,"a":1}\n'
        b'{"role":"user","content":"c","meta":{"b":2,"a":1}}\n'
    )


def test_a_limit_beyond_any_file_means_all(store):
    store.append_many("k", [U("a"), A("b")])
    assert store.load("k", limit=2**64) == [U("a"), A("b")]
    assert store.load("k", limit=10**100)[-1] == A("b")


def test_append_after_a_torn_tail_warns(store, caplog):
    path = session_path(store, "k")
    store.append("k", U("a"))
    with open(path, "ab") as f:
        f.write(b'{"role":"user","con')
    with caplog.at_level(logging.WARNING, logger="turnlog"):
        store.append("k", A("b"))
        store.append("k", A("c"))  # the file ends in a newline now: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "turnlog"]
    assert len(warnings) == 1 and "torn line" in warnings[0] and "'k'" in warnings[0]
    assert store.load("k") == [U("a"), A("b"), A("c")]


def test_loads_wait_for_a_writer_that_cuts_the_file(store):
    """A full load (and a tail load) takes a shared lock: while a writer holds the session's
    lock (as remove_last does when it cuts the file in place) the load waits, and then sees
    the file as the writer left it, never a mix of before and after."""
    import threading

    from turnlog.backends import files as _files

    store.append_many("k", [U("x" * 100), A("y" * 100)])
    path = session_path(store, "k")
    results: dict[str, list[ChatMessage]] = {}
    with _files.locked(path, create=False) as held:
        assert held is not None
        fd, _ = held
        readers = [
            threading.Thread(target=lambda: results.__setitem__("all", store.load("k"))),
            threading.Thread(target=lambda: results.__setitem__("tail", store.load("k", 1))),
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(0.3)
            assert reader.is_alive(), "a load read the file while a writer held its lock"
        os.ftruncate(fd, 0)
        os.write(fd, b'{"role":"user","content":"after"}\n')
    for reader in readers:
        reader.join(10)
    assert results == {"all": [U("after")], "tail": [U("after")]}


def test_power_durability_syncs_the_folders_it_creates(store_cls, tmp_path, monkeypatch):
    from turnlog.backends import files as _files

    synced: list[str] = []
    real = _files.sync_dir
    monkeypatch.setattr(_files, "sync_dir", lambda path: (synced.append(path), real(path))[1])
    store = store_cls(tmp_path / "a" / "ws", durability="power")
    # Each new folder is fsynced into its parent: tmp/a, tmp/a/ws, tmp/a/ws/sessions, and
    # tmp/a/ws/.turnlog; and the record of ZeroClaw's files: its temp folder (the markers in it),
    # then .turnlog again (the record renamed into place).
    meta = tmp_path / "a" / "ws" / ".turnlog"
    temps = [p for p in synced if os.path.basename(p).startswith(".turnlog-")]
    assert len(temps) == 1 and os.path.dirname(temps[0]) == str(meta)
    assert set(synced) - set(temps) == {
        str(tmp_path),
        str(tmp_path / "a"),
        str(tmp_path / "a" / "ws"),
        str(meta),
    }
    synced.clear()
    store.set_session_name("k", "first")  # creates the session and the sidecar folder
    assert str(meta) in synced and str(tmp_path / "a" / "ws" / "sessions") in synced
    synced.clear()
    assert store.delete_session("k")
    assert str(meta / "meta") in synced
