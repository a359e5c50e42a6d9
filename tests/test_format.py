"""Session keys to file names, and reading files that ZeroClaw wrote."""

from __future__ import annotations

import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _spec import MAX_NAME_BYTES
from turnlog import ChatMessage
from turnlog.backends.format import key_to_name, name_to_key

PLAIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def spec_name(key: str) -> str:
    """The name the contract gives ``key``: plain keys as they are, else %XX per byte."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    return "".join(chr(b) if chr(b) in PLAIN else f"%{b:02X}" for b in key.encode("utf-8"))


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("telegram_user123", "telegram_user123"),
        ("A-Z_a-z_0-9", "A-Z_a-z_0-9"),
        ("-", "-"),
        ("_", "_"),
        ("a/b", "a%2Fb"),
        ("a:b", "a%3Ab"),
        ("a%2Fb", "a%252Fb"),
        ("../x", "%2E%2E%2Fx"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        (".hidden", "%2Ehidden"),
        ("x.jsonl", "x%2Ejsonl"),
        ("with space", "with%20space"),
        ("é", "%C3%A9"),
        ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
        ("😀", "%F0%9F%98%80"),
        ("a\x00b", "a%00b"),
        ("\n", "%0A"),
        ("~", "%7E"),
        ("a\\b", "a%5Cb"),
    ],
)
def test_key_to_name(key, name):
    assert key_to_name(key) == name
    assert spec_name(key) == name
    assert name_to_key(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a%2fb",  # lower-case hex is not how keys are written
        "%41",  # 'A' is never escaped
        "%5f",
        "%5F",  # '_' is never escaped
        "%2D",  # '-' neither
        "%30",  # digits neither
        "%",
        "a%",
        "a%2",
        "%G0",
        "%FF",  # not UTF-8
        "%C0%AF",  # overlong UTF-8
        "%ED%A0%80",  # an encoded surrogate
        "%C3",  # truncated UTF-8
        ".hidden",
        "a.b",
        "a b",
        "é",
        "a/b",
        "a" * (MAX_NAME_BYTES + 1),
        "%2F" * 84,
    ],
)
def test_name_without_key(name):
    assert name_to_key(name) is None


def test_longest_names():
    assert name_to_key("a" * MAX_NAME_BYTES) == "a" * MAX_NAME_BYTES
    assert key_to_name("a" * MAX_NAME_BYTES) == "a" * MAX_NAME_BYTES
    assert key_to_name("/" * 83) == "%2F" * 83
    assert name_to_key("%2F" * 83) == "/" * 83
    with pytest.raises(ValueError):
        key_to_name("a" * (MAX_NAME_BYTES + 1))
    with pytest.raises(ValueError):
        key_to_name("/" * 84)


@pytest.mark.parametrize(
    ("key", "exception"),
    [("", ValueError), ("\ud800", ValueError), (1, TypeError), (None, TypeError)],
)
def test_bad_keys(key, exception):
    with pytest.raises(exception):
        key_to_name(key)


keys = st.text(min_size=1, max_size=40).filter(lambda k: len(spec_name(k)) <= MAX_NAME_BYTES)


@given(keys)
def test_key_round_trip(key):
    name = key_to_name(key)
    assert name == spec_name(key)
    assert re.fullmatch(r"[A-Za-z0-9_%-]+", name)
    assert not name.startswith(".")
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert name_to_key(name) == key


@given(st.lists(keys, min_size=2, max_size=5, unique=True))
def test_different_keys_different_names(key_list):
    names = [key_to_name(k) for k in key_list]
    assert len(set(names)) == len(names)


@given(st.text(alphabet=PLAIN + "%.aF0", max_size=12))
def test_names_round_trip_or_none(name):
    key = name_to_key(name)
    if key is not None:
        assert key_to_name(key) == name


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(keys, min_size=1, max_size=6, unique=True))
def test_store_lists_keys_as_given(store_cls, tmp_path, key_list):
    with tempfile.TemporaryDirectory(dir=tmp_path) as workspace:
        store = store_cls(workspace)
        for index, key in enumerate(key_list):
            store.append(key, ChatMessage.user(str(index)))
        assert store.list_sessions() == sorted(key_list)
        assert sorted(os.listdir(store.sessions_dir)) == sorted(
            spec_name(k) + ".jsonl" for k in key_list
        )
        for index, key in enumerate(key_list):
            assert store.load(key) == [ChatMessage.user(str(index))]


# --- ZeroClaw compatibility ---------------------------------------------------------------------

# What ZeroClaw's SessionStore writes (serde_json compact, `role` then `content`), and what a crash,
# a hand edit or a foreign tool can leave in such a file.
ZEROCLAW_FILE = (
    b'{"role":"system","content":"You are a helpful bot."}\n'
    b'{"role":"user","content":"hello \xf0\x9f\x91\x8b, \\"quoted\\" \\\\ \\n\\t\\u0001"}\n'
    b"\n"
    b"   \n"
    b"this is not json\n"
    b'{"role":"assistant","content":"Hi! How can I help?"}\r\n'
    b'{"role":"user"}\n'
    b'{"content":"no role"}\n'
    b'{"role":42,"content":"number role"}\n'
    b'{"role":"user","content":null}\n'
    b'{"role":"user","content":"bad utf8 \xff\xfe"}\n'
    b'["role","content"]\n'
    b'"a string"\n'
    b'  \t{"role":"user","content":"padded"}  \t \n'
    b'\xc2\xa0{"role":"user","content":"nbsp"}\xe3\x80\x80\n'
    b'{"role":"user","content":"unknown fields kept","ts":1700000000}\n'
    b'{"role":"user","content":"truncated'
)

ZEROCLAW_MESSAGES = [
    ChatMessage("system", "You are a helpful bot."),
    ChatMessage("user", 'hello 👋, "quoted" \\ \n\t\x01'),
    ChatMessage("assistant", "Hi! How can I help?"),
    ChatMessage("user", "padded"),
    ChatMessage("user", "nbsp"),
    ChatMessage("user", "unknown fields kept", ts=1700000000),
]


def test_zeroclaw_file_loads(store_cls, tmp_path):
    sessions = tmp_path / "ws" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "telegram_user123.jsonl").write_bytes(ZEROCLAW_FILE)
    store = store_cls(tmp_path / "ws")
    assert store.list_sessions() == ["telegram_user123"]
    assert store.load("telegram_user123") == ZEROCLAW_MESSAGES
    assert store.load("telegram_user123", limit=2) == ZEROCLAW_MESSAGES[-2:]
    assert store.get_session_metadata("telegram_user123").message_count == len(ZEROCLAW_MESSAGES)
    assert (sessions / "telegram_user123.jsonl").read_bytes() == ZEROCLAW_FILE


def test_zeroclaw_file_compacts(store_cls, tmp_path):
    sessions = tmp_path / "ws" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "chat.jsonl").write_bytes(ZEROCLAW_FILE)
    store = store_cls(tmp_path / "ws")
    store.compact("chat")
    assert (sessions / "chat.jsonl").read_bytes() == (
        b'{"role":"system","content":"You are a helpful bot."}\n'
        b'{"role":"user","content":"hello \xf0\x9f\x91\x8b, \\"quoted\\" \\\\ \\n\\t\\u0001"}\n'
        b'{"role":"assistant","content":"Hi! How can I help?"}\n'
        b'{"role":"user","content":"padded"}\n'
        b'{"role":"user","content":"nbsp"}\n'
        b'{"role":"user","content":"unknown fields kept","ts":1700000000}\n'
    )
    assert store.load("chat") == ZEROCLAW_MESSAGES


def test_turnlog_writes_what_zeroclaw_writes(store):
    # serde_json::to_string of ZeroClaw's ChatMessage { role, content }.
    store.append("k", ChatMessage.user('hello 👋, "quoted" \\ \n\t\x01\x7f/'))
    store.append("k", ChatMessage.assistant("ok"))
    path = os.path.join(store.sessions_dir, "k.jsonl")
    with open(path, "rb") as f:
        assert f.read() == (
            b'{"role":"user","content":"hello \xf0\x9f\x91\x8b, '
            b'\\"quoted\\" \\\\ \\n\\t\\u0001\x7f/"}\n'
            b'{"role":"assistant","content":"ok"}\n'
        )
