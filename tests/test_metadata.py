"""Session metadata of the JSONL stores: sidecars outside sessions/, state, search, TTL."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import store_class
from turnlog import ChatMessage, SessionQuery, SessionState


def U(text):
    return ChatMessage.user(text)


def transcript(store, key):
    from turnlog.backends.format import key_to_name

    return os.path.join(store.sessions_dir, key_to_name(key) + ".jsonl")


def sidecar_path(store, key):
    from turnlog.backends.format import key_to_name

    return store._sidecars.path(key_to_name(key))


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


def test_hand_edited_sidecar_times_come_back_in_utc(store):
    store.append("s", U("a"))
    path = sidecar_path(store, "s")
    with open(path, "w") as f:
        f.write(
            '{"created_at":"2026-11-25T18:00:00+02:00","state":"running",'
            '"turn_started_at":"2026-11-25T16:00:00"}'
        )
    created = store.get_session_metadata("s").created_at
    assert created == datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)
    assert created.utcoffset() == timedelta(0) and created.tzinfo is timezone.utc
    started = store.get_session_state("s").turn_started_at
    assert started == datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)


def test_set_session_times_writes_sidecar_and_mtime(store):
    """created_at and turn_started_at live in the sidecar; last activity is the transcript's
    mtime, so the times set are what any other reader of the files sees too."""
    store.append("s", U("a"))
    store.set_session_state("s", "running", turn_id="t")
    when = datetime(2020, 5, 1, 8, 30, 0, 654321, tzinfo=timezone.utc)
    assert store.set_session_times(
        "s", created_at=when, last_activity=when, turn_started_at=when + timedelta(seconds=1)
    )
    assert os.stat(transcript(store, "s")).st_mtime_ns == int(when.timestamp()) * 10**9 + 654321000
    with open(sidecar_path(store, "s")) as f:
        meta = json.load(f)
    assert meta["created_at"] == "2020-05-01T08:30:00.654321+00:00"
    assert meta["turn_started_at"] == "2020-05-01T08:30:01.654321+00:00"
    assert (meta["state"], meta["turn_id"]) == ("running", "t")
    assert store.load("s") == [U("a")]


def test_set_session_times_without_a_sidecar(store):
    """A ZeroClaw transcript gets a sidecar whose created_at is the given time."""
    with open(transcript(store, "zc"), "wb") as f:
        f.write(b'{"role":"user","content":"hi"}\n')
    when = datetime(2020, 5, 1, tzinfo=timezone.utc)
    assert store.set_session_times("zc", last_activity=when)
    assert not os.path.exists(sidecar_path(store, "zc"))  # nothing for the sidecar: none written
    assert store.get_session_metadata("zc").created_at == when  # derived from the mtime
    assert store.set_session_times("zc", created_at=when - timedelta(days=1))
    meta = store.get_session_metadata("zc")
    assert (meta.created_at, meta.last_activity) == (when - timedelta(days=1), when)


def test_set_session_times_with_power_durability(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws", durability="power")
    store.append("s", U("a"))
    when = datetime(2020, 5, 1, tzinfo=timezone.utc)
    assert store.set_session_times("s", created_at=when, last_activity=when)
    meta = store.get_session_metadata("s")
    assert (meta.created_at, meta.last_activity) == (when, when)


def test_cleanup_stale_spares_a_session_appended_after_it_looked(store_cls, tmp_path, monkeypatch):
    """The race: cleanup sees a stale session, another writer appends to it (acknowledged),
    then cleanup deletes. The check under the transcript's lock sees the append and keeps it."""
    from turnlog.backends import files as _files

    store = store_cls(tmp_path / "ws")
    other = store_cls(tmp_path / "ws")  # another writer (in another process, in real life)
    for key in ("old", "older"):
        store.append(key, U(key))
        store.set_session_name(key, key.upper())
        age(store, key, 48 * 3600)
    real_locked = _files.locked
    raced = []

    def locked_after_an_append(path, *, create, timeout=None):
        # Runs once cleanup has listed the sessions and is about to lock one of them.
        if path == transcript(store, "old") and not raced:
            raced.append(path)
            other.append("old", U("just acknowledged"))
        return real_locked(path, create=create, timeout=timeout)

    monkeypatch.setattr(_files, "locked", locked_after_an_append)
    assert store.cleanup_stale(24) == 1
    assert raced
    assert store.list_sessions() == ["old"]
    assert store.load("old") == [U("old"), U("just acknowledged")]
    assert store.get_session_name("old") == "OLD"  # its metadata stays with it
    assert not os.path.exists(sidecar_path(store, "older"))


def test_cleanup_stale_races_a_real_appender(store_cls, tmp_path):
    """A writer appends one message to each stale session while cleanup runs: every session
    ends with it, either kept (the append came first) or started anew by it (cleanup first)."""
    store = store_cls(tmp_path / "ws")
    other = store_cls(tmp_path / "ws")
    keys = [f"s{index:03d}" for index in range(300)]
    for key in keys:
        store.append(key, U("old"))
        age(store, key, 48 * 3600)
    started = threading.Event()

    def append_to_each() -> None:
        started.set()
        for key in reversed(keys):  # against cleanup's order, to meet it half way
            other.append(key, U("new"))

    writer = threading.Thread(target=append_to_each)
    writer.start()
    started.wait()
    removed = store.cleanup_stale(24)
    writer.join()
    loaded = {key: store.load(key) for key in keys}
    lost = [key for key, messages in loaded.items() if messages[-1:] != [U("new")]]
    assert lost == []
    assert removed == sum(messages == [U("new")] for messages in loaded.values())


def test_cleanup_stale_with_power_durability(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws", durability="power")
    store.append("old", U("a"))
    store.set_session_name("old", "Old")
    store.append("new", U("b"))
    age(store, "old", 48 * 3600)
    assert store.cleanup_stale(24) == 1
    assert store.list_sessions() == ["new"]
    assert not os.path.exists(sidecar_path(store, "old"))


@pytest.mark.parametrize("how", ["append", "append_many"])
def test_sidecar_of_a_transcript_deleted_outside_turnlog(store, how):
    """A transcript removed by hand leaves its sidecar behind: the append that creates the
    session again replaces it, so the new session does not inherit the old name or a turn
    that looks stuck at once."""
    store.append("s", U("a"))
    store.set_session_name("s", "Old chat")
    store.set_session_state("s", "running", turn_id="t1")
    # Written well before the transcript comes back, whatever the file system's time grain.
    written = time.time() - 3600
    os.utime(sidecar_path(store, "s"), (written, written))
    os.unlink(transcript(store, "s"))
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    getattr(store, how)("s", U("new") if how == "append" else [U("new")])
    assert store.get_session_name("s") is None
    assert store.get_session_state("s") == SessionState("idle")
    assert store.list_running_sessions() == []
    assert store.list_stuck_sessions(0) == []
    assert store.get_session_metadata("s").created_at >= before


def test_metadata_set_right_after_the_creating_append_is_kept(store):
    """Another writer may set metadata between the append that created a session and the
    sidecar that append then starts: that sidecar is newer than the transcript, and stays."""
    appended = store._append("s", U("a"))
    assert appended == (True, False)
    store.set_session_name("s", "Named meanwhile")
    store._appended("s", appended)
    assert store.get_session_name("s") == "Named meanwhile"


def test_session_deleted_right_after_the_creating_append_stays_deleted(store):
    appended = store._append("s", U("a"))
    store.delete_session("s")
    store._appended("s", appended)
    assert not store.session_exists("s")
    assert not os.path.exists(sidecar_path(store, "s"))
