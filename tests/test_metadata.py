"""Session metadata of the JSONL stores: sidecars outside sessions/, state, search, TTL."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import store_class
from turnlog import ChatMessage, SessionQuery, SessionState


def U(text):
    return ChatMessage.user(text)


def transcript(store, key):
    from turnlog._format import key_to_name

    return os.path.join(store.sessions_dir, key_to_name(key) + ".jsonl")


def age(store, key, seconds):
    """Make the session's transcript look last written ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(transcript(store, key), (when, when))


def test_sessions_folder_keeps_only_transcripts(store):
    store.append("s", U("a"))
    store.set_session_name("s", "Support chat")
    store.set_session_state("s", "running", turn_id="t1")
    assert sorted(os.listdir(store.sessions_dir)) == ["s.jsonl"]
    meta = os.path.join(os.path.dirname(store.sessions_dir), ".turnlog", "meta", "s.json")
    assert os.path.isfile(meta)
    assert oct(os.stat(meta).st_mode & 0o777) == oct(0o600)


def test_names_alias_and_context(store):
    store.append("s", U("a"))
    assert store.get_session_name("s") is None
    store.set_session_name("s", "Support chat")
    store.set_session_agent_alias("s", "helper")
    store.set_session_context("s", channel_id="c1", room_id="r1")
    store.set_session_context("s", sender_id="u9")  # None leaves the others as they are
    assert store.get_session_name("s") == "Support chat"
    assert store.get_session_agent_alias("s") == "helper"
    meta = store.get_session_metadata("s")
    assert (meta.name, meta.agent_alias, meta.channel_id, meta.room_id, meta.sender_id) == (
        "Support chat",
        "helper",
        "c1",
        "r1",
        "u9",
    )
    assert meta.message_count == 1
    assert store.load("s") == [U("a")]


def test_setting_metadata_creates_the_session(store):
    store.set_session_name("new", "Fresh")
    assert store.session_exists("new")
    assert store.list_sessions() == ["new"]
    assert store.load("new") == []
    assert store.get_session_metadata("new").message_count == 0


def test_created_at_is_kept_while_last_activity_follows_the_transcript(store):
    before = datetime.now(timezone.utc)
    store.append("s", U("a"))
    first = store.get_session_metadata("s")
    assert first.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= first.created_at <= datetime.now(timezone.utc)
    age(store, "s", 3600)
    later = store.get_session_metadata("s")
    assert later.created_at == first.created_at
    assert later.last_activity < first.created_at


def test_zeroclaw_session_without_sidecar(store):
    with open(transcript(store, "zc"), "wb") as f:
        f.write(b'{"role":"user","content":"hi"}\n')
    meta = store.get_session_metadata("zc")
    assert meta.message_count == 1
    assert meta.created_at == meta.last_activity
    assert store.get_session_state("zc") == SessionState("idle")
    store.set_session_name("zc", "Imported")
    assert store.get_session_metadata("zc").name == "Imported"


def test_state_running_idle_error(store):
    store.append("s", U("a"))
    assert store.get_session_state("s") == SessionState("idle")
    assert store.get_session_state("missing") is None
    store.set_session_state("s", "running", turn_id="t1")
    state = store.get_session_state("s")
    assert (state.state, state.turn_id) == ("running", "t1")
    assert state.turn_started_at is not None and state.turn_started_at.tzinfo is not None
    assert [m.key for m in store.list_running_sessions()] == ["s"]
    store.set_session_state("s", "error")
    state = store.get_session_state("s")
    assert (state.state, state.turn_id) == ("error", "t1")
    store.set_session_state("s", "idle")
    assert store.get_session_state("s") == SessionState("idle")
    assert store.list_running_sessions() == []
    with pytest.raises(ValueError):
        store.set_session_state("s", "sleeping")
    with pytest.raises(TypeError):
        store.set_session_state("s", "running", turn_id=5)


def test_stuck_sessions(store):
    store.set_session_state("slow", "running", turn_id="t")
    store.set_session_state("fast", "idle")
    assert store.list_stuck_sessions(3600) == []
    time.sleep(0.02)
    assert [m.key for m in store.list_stuck_sessions(0.01)] == ["slow"]
    with pytest.raises(ValueError):
        store.list_stuck_sessions(-1)


def test_cleanup_stale_removes_transcript_and_metadata(store):
    for key in ("old", "older", "fresh"):
        store.append(key, U(key))
        store.set_session_name(key, key.upper())
    age(store, "old", 3 * 3600)
    age(store, "older", 30 * 3600)
    assert store.cleanup_stale(24) == 1
    assert store.list_sessions() == ["fresh", "old"]
    assert store.cleanup_stale(2) == 1
    assert store.list_sessions() == ["fresh"]
    store.append("older", U("again"))  # a new session of a removed key starts clean
    assert store.get_session_name("older") is None
    assert store.get_session_name("fresh") == "FRESH"


def test_delete_session_removes_metadata(store):
    store.append("s", U("a"))
    store.set_session_name("s", "Name")
    assert store.delete_session("s")
    assert store.get_session_name("s") is None
    assert not store.delete_session("s")


def test_search_all_and_any_words(store):
    store.append("a", U("The Rust parser is FAST"))
    store.append("b", U("rust"))
    store.append("b", U("parser"))
    store.append("c", U("Поиск по-русски"))
    store.append("d", {"role": "user", "content": "no match", "name": "rust"})
    age(store, "a", 100)
    assert [m.key for m in store.search(SessionQuery(keyword="rust PARSER"))] == ["a"]
    found = store.search(SessionQuery(keyword="rust parser"), match="any")
    assert [m.key for m in found] == ["b", "a"]  # most recently active first
    assert [m.key for m in store.search(SessionQuery(keyword="ПОИСК"))] == ["c"]
    assert len(store.search(SessionQuery(keyword="rust"), match="any")) == 2
    assert [m.key for m in store.search(SessionQuery(keyword="rust", limit=1))] == ["b"]
    assert len(store.search(SessionQuery())) == 4
    with pytest.raises(ValueError):
        store.search(SessionQuery(keyword="x"), match="some")
    with pytest.raises(TypeError):
        store.search("rust")


def test_search_skips_corrupt_lines(store):
    with open(transcript(store, "s"), "wb") as f:
        f.write(b'{"role":"user","content":"needle"\n{"role":"user","content":"hay"}\n')
    assert store.search(SessionQuery(keyword="needle")) == []
    assert [m.key for m in store.search(SessionQuery(keyword="hay"))] == ["s"]


def test_both_stores_share_metadata(tmp_path):
    rust = store_class("rust")(tmp_path / "ws")  # skips (or fails under CI) without it
    pure = store_class("pure")(tmp_path / "ws")
    rust.append("s", U("a"))
    pure.set_session_name("s", "Shared")
    rust.set_session_state("s", "running", turn_id="t")
    assert rust.get_session_metadata("s") == pure.get_session_metadata("s")
    assert rust.get_session_state("s") == pure.get_session_state("s")
    assert rust.search(SessionQuery(keyword="A")) == pure.search(SessionQuery(keyword="a"))
