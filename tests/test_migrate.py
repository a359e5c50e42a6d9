"""``turnlog.migrate``: every session, every message once, metadata and times, resumable."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

import _sqlite_workers
from _backends import BACKENDS, close, dump, make_backend
from turnlog import (
    ChatMessage,
    MigrationConflictError,
    MigrationReport,
    SessionBackend,
    SessionState,
    SessionStore,
    migrate,
)
from turnlog.backends.sqlite import SqliteSessionBackend

U = ChatMessage.user
A = ChatMessage.assistant
OLD = datetime(2025, 3, 1, 8, 30, tzinfo=timezone.utc)


class MemoryBackend(SessionBackend):
    """The README's four-method backend: everything else is the ``SessionBackend`` default."""

    def __init__(self):
        self.sessions = {}

    def load(self, key, limit=None):
        messages = self.sessions.get(key, [])
        return messages[max(len(messages) - limit, 0) :] if limit is not None else list(messages)

    def append(self, key, message):
        if not isinstance(message, ChatMessage):
            message = ChatMessage.from_dict(message)
        self.sessions.setdefault(key, []).append(message)

    def remove_last(self, key):
        if not self.sessions.get(key):
            return False
        self.sessions[key].pop()
        return True

    def list_sessions(self):
        return sorted(self.sessions)


SESSIONS = {
    "telegram_user1": [U("hello"), A("hi!"), ChatMessage("tool", "42", name="calc", n=[1, 2.5])],
    "a/b": [U("slash")],
    "ключ": [U("привет"), A("мир")],
    "big": [U(f"m{i}") for i in range(120)],
}


@pytest.fixture
def opened():
    backends = []

    def open_backend(kind, workspace, **options):
        backend = make_backend(kind, workspace, **options)
        backends.append(backend)
        return backend

    yield open_backend
    for backend in backends:
        close(backend)


def fill(backend, sessions=SESSIONS):
    for key, messages in sessions.items():
        backend.append_many(key, messages)


def contents(backend):
    return {key: backend.load(key) for key in backend.list_sessions()}


def times(backend):
    """``{key: (created_at, last_activity)}`` of every session."""
    return {m.key: (m.created_at, m.last_activity) for m in backend.list_sessions_with_metadata()}


def test_turnlog_migrate_is_the_function():
    """``turnlog.migrate(source, target)``, as the issue spells it: loaded on first use, so
    ``import turnlog`` loads neither sqlite3 nor the migration code; the module is
    ``turnlog.migration``, whose import leaves the attribute the function."""
    code = (
        "import sys, turnlog\n"
        "assert 'sqlite3' not in sys.modules, 'sqlite3'\n"
        "assert 'turnlog.migration' not in sys.modules, 'turnlog.migration'\n"
        "from turnlog import MigrationConflictError, MigrationReport, migrate\n"
        "import turnlog.migration\n"
        "assert callable(turnlog.migrate) and turnlog.migrate is migrate\n"
        "assert migrate is turnlog.migration.migrate\n"
        "assert turnlog.MigrationReport is MigrationReport\n"
        "assert issubclass(MigrationConflictError, ValueError)\n"
        "assert 'sqlite3' not in sys.modules, 'sqlite3 after migrate'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- between the backends -----------------------------------------------------------------------


@pytest.mark.parametrize("target_kind", BACKENDS)
@pytest.mark.parametrize("source_kind", BACKENDS)
def test_every_pair(opened, tmp_path, source_kind, target_kind):
    source = opened(source_kind, tmp_path / "source")
    target = opened(target_kind, tmp_path / "target")
    fill(source)
    source.set_session_name("a/b", "Slash chat")
    source.set_session_agent_alias("a/b", "helper")
    source.set_session_context("ключ", channel_id="c1", sender_id="u1")
    source.set_session_state("big", "running", "turn-7")
    source.set_session_name("only-metadata", "no messages yet")
    source.append("emptied", U("x"))
    source.clear_messages("emptied")

    report = migrate(source, target)
    total = sum(map(len, SESSIONS.values()))
    assert report == MigrationReport(sessions=6, messages=total)
    # Messages, counts, names, alias, context, state and the times: every target takes them.
    assert dump(target) == dump(source)
    assert times(target) == times(source)
    assert target.list_sessions() == sorted([*SESSIONS, "only-metadata", "emptied"])
    state = target.get_session_state("big")
    assert (state.state, state.turn_id) == ("running", "turn-7")

    again = migrate(source, target)
    assert again == MigrationReport(skipped_sessions=6)
    assert dump(target) == dump(source)


def test_into_sqlite_keeps_times(opened, tmp_path):
    clock_now = [OLD]
    source = SqliteSessionBackend(tmp_path / "source", clock=lambda: clock_now[0])
    target = opened("sqlite", tmp_path / "target")
    source.append("s", U("one"))
    clock_now[0] = OLD + timedelta(hours=1)
    source.append("s", U("two"))
    source.set_session_state("s", "running", "t")
    source.append("t", U("other"))
    report = migrate(source, target)
    assert report.sessions == 2
    for key in ("s", "t"):
        assert target.load_with_timestamps(key) == source.load_with_timestamps(key)
        assert target.get_session_metadata(key) == source.get_session_metadata(key)
        assert target.get_session_state(key) == source.get_session_state(key)
    assert target.get_session_state("s") == SessionState("running", "t", OLD + timedelta(hours=1))
    assert migrate(source, target) == MigrationReport(skipped_sessions=2)
    source.close()


@pytest.mark.parametrize("target_kind", ["jsonl-rust", "jsonl-pure", "redis"])
@pytest.mark.parametrize("source_kind", ["sqlite", "jsonl-pure", "redis"])
def test_into_jsonl_and_redis_keeps_times(opened, tmp_path, source_kind, target_kind):
    """SQLite, JSONL or Redis to JSONL or Redis: created, last-activity and turn-start times
    move with the session (older than the target's now: Redis's index goes back too), so stale
    and stuck sessions are the same ones after the move."""
    source = opened(source_kind, tmp_path / "source")
    target = opened(target_kind, tmp_path / "target")
    source.append_many("old", [U("a"), U("b")])
    source.set_session_state("old", "running", "t")
    source.set_session_name("old", "Old chat")
    source.append("new", U("c"))
    source.set_session_state("new", "running", "t2")
    assert source.set_session_times(
        "old",
        created_at=OLD,
        last_activity=OLD + timedelta(hours=2),
        turn_started_at=OLD + timedelta(hours=1),
    )
    report = migrate(source, target)
    assert (report.sessions, report.messages) == (2, 3)
    assert dump(target) == dump(source)
    for key in ("old", "new"):
        assert target.get_session_metadata(key) == source.get_session_metadata(key)
        assert target.get_session_state(key) == source.get_session_state(key)
    assert target.get_session_state("old").turn_started_at == OLD + timedelta(hours=1)
    for backend in (source, target):
        assert [m.key for m in backend.list_stuck_sessions(3600)] == ["old"]
    assert migrate(source, target) == MigrationReport(skipped_sessions=2)
    for backend in (source, target):
        assert backend.cleanup_stale(24) == 1
        assert backend.list_sessions() == ["new"]


def test_jsonl_times_become_the_sessions_times(opened, tmp_path):
    """A JSONL session's messages have no times: they get the transcript's, so stale sessions
    stay stale after the move."""
    source = opened("jsonl-pure", tmp_path / "source")
    source.append_many("old", [U("a"), U("b")])
    source.append("new", U("c"))
    path = os.path.join(source.sessions_dir, "old.jsonl")
    os.utime(path, (OLD.timestamp(), OLD.timestamp()))
    target = opened("sqlite", tmp_path / "target")
    migrate(source, target)
    assert [when for _, when in target.load_with_timestamps("old")] == [OLD, OLD]
    assert target.get_session_metadata("old").last_activity == OLD
    assert target.cleanup_stale(24) == 1
    assert target.list_sessions() == ["new"]


def test_into_a_plain_backend(opened, tmp_path):
    """A backend with the SessionBackend defaults takes the messages; lost metadata is
    reported, and empty sessions it cannot create are skipped."""
    source = opened("sqlite", tmp_path / "source")
    fill(source)
    source.set_session_name("a/b", "kept nowhere")
    source.set_session_state("big", "error", "t1")
    source.append("emptied", U("x"))
    source.clear_messages("emptied")
    memory = MemoryBackend()
    report = migrate(source, memory)
    assert report.messages == sum(map(len, SESSIONS.values()))
    assert report.metadata_not_kept == 2
    assert report.skipped_sessions == 1  # "emptied": nothing to hold it
    assert contents(memory) == {k: v for k, v in contents(source).items() if k != "emptied"}
    again = migrate(source, memory)
    assert (again.messages, again.sessions, again.metadata_not_kept) == (0, 0, 2)


def test_from_a_plain_backend(opened, tmp_path):
    memory = MemoryBackend()
    fill(memory)
    target = opened("sqlite", tmp_path / "target")
    assert migrate(memory, target) == MigrationReport(
        sessions=len(SESSIONS), messages=sum(map(len, SESSIONS.values()))
    )
    assert contents(target) == contents(memory)


# --- a ZeroClaw workspace -----------------------------------------------------------------------

ZEROCLAW_FILES = {
    "telegram_user1.jsonl": (
        b'{"role":"user","content":"hi"}\n'
        b'{"content":"fields in another order","role":"assistant"}\n'
        b'{"role":"user","content":"crlf"}\r\n'
        b"\n"  # blank: corrupt (1)
        b"ERROR connection reset\n"  # (2)
        b'{"role":"user","content":"trunc\n'  # (3)
        b'{"role":"user","content":"extra","lang":"en","meta":{"x":[1,2]}}\n'
        b'["user","array"]\n'  # (4)
        b'{"role":"user","content":"torn'  # (5), no newline
    ),
    "discord_42.jsonl": (
        b'{"role":"system","content":"You are helpful."}\n'
        b'  {"role":"user","content":"padded"}  \n'
        b'{"role":"user","content":NaN}\n'  # (6)
    ),
    "telegram_ключ.jsonl": '{"role":"user","content":"привет"}\n'.encode(),  # ZeroClaw's name
    "empty.jsonl": b"",
    "notes.txt": b"not a session\n",
}
ZEROCLAW_CORRUPT = 6


@pytest.fixture
def zeroclaw(tmp_path):
    sessions = tmp_path / "zeroclaw" / "sessions"
    sessions.mkdir(parents=True)
    for name, data in ZEROCLAW_FILES.items():
        (sessions / name).write_bytes(data)
    return tmp_path / "zeroclaw"


@pytest.mark.parametrize("target_kind", BACKENDS)
def test_import_zeroclaw_workspace(opened, tmp_path, zeroclaw, target_kind):
    before = {p.name: p.read_bytes() for p in (zeroclaw / "sessions").iterdir()}
    source = SessionStore(zeroclaw)
    target = opened(target_kind, tmp_path / "target")
    report = migrate(source, target)
    assert report == MigrationReport(
        sessions=4, messages=7, corrupt_lines_left_behind=ZEROCLAW_CORRUPT
    )
    assert target.list_sessions() == ["discord_42", "empty", "telegram_user1", "telegram_ключ"]
    assert target.load("telegram_user1") == [
        U("hi"),
        A("fields in another order"),
        U("crlf"),
        ChatMessage("user", "extra", lang="en", meta={"x": [1, 2]}),
    ]
    assert target.load("discord_42") == [ChatMessage.system("You are helpful."), U("padded")]
    assert target.load("telegram_ключ") == [U("привет")]  # a name no turnlog key maps to
    assert target.load("empty") == []
    again = migrate(source, target)
    assert again == MigrationReport(skipped_sessions=4, corrupt_lines_left_behind=6)
    after = {p.name: p.read_bytes() for p in (zeroclaw / "sessions").iterdir()}
    assert after == before  # the source is only read


def test_import_only_some_keys(opened, tmp_path, zeroclaw):
    target = opened("sqlite", tmp_path / "target")
    report = migrate(SessionStore(zeroclaw), target, keys=["discord_42", "telegram_ключ"])
    assert report == MigrationReport(sessions=2, messages=3, corrupt_lines_left_behind=1)
    assert target.list_sessions() == ["discord_42", "telegram_ключ"]
    with pytest.raises(KeyError, match="nope"):
        migrate(SessionStore(zeroclaw), target, keys=["telegram_user1", "nope"])
    assert target.list_sessions() == ["discord_42", "telegram_ключ"]  # checked before writing


# --- resuming and conflicts ---------------------------------------------------------------------


@pytest.mark.parametrize("target_kind", BACKENDS)
def test_resume_after_a_partial_run(opened, tmp_path, target_kind):
    source = opened("jsonl-rust" if target_kind == "sqlite" else "sqlite", tmp_path / "source")
    fill(source)
    target = opened(target_kind, tmp_path / "target")
    # What a crash can leave: one session complete, one with a prefix, the rest not started.
    target.append_many("telegram_user1", SESSIONS["telegram_user1"])
    target.append_many("big", SESSIONS["big"][:77])
    report = migrate(source, target)
    assert report.messages == 1 + 2 + (120 - 77)
    # The complete session still gets the source's times.
    assert (report.sessions, report.skipped_sessions) == (4, 0)
    assert target.get_session_metadata("telegram_user1").last_activity == (
        source.get_session_metadata("telegram_user1").last_activity
    )
    assert contents(target) == contents(source)
    assert migrate(source, target) == MigrationReport(skipped_sessions=4)


def test_resume_after_a_killed_process(tmp_path):
    """SIGKILL a migration part way, run it again: every message once, none lost."""
    source = SessionStore(tmp_path / "source")
    for index in range(1500):
        source.append_many(f"s{index:04d}", [U(f"{index}-{n}") for n in range(3)])
    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_sqlite_workers.migrate_forever,
        args=(str(tmp_path / "source"), str(tmp_path / "target")),
    )
    process.start()
    database = tmp_path / "target" / "sessions" / "sessions.db"
    copied = 0
    deadline = time.monotonic() + 60
    while copied < 100 and process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
        if database.exists():
            try:
                reader = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
                copied = reader.execute("SELECT count(*) FROM sessions").fetchone()[0]
                reader.close()
            except sqlite3.OperationalError:
                pass  # schema not there yet
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)
    assert process.exitcode == -signal.SIGKILL, "the migration finished before it was killed"
    with SqliteSessionBackend(tmp_path / "target") as target:
        report = migrate(source, target)
        assert report.skipped_sessions >= 99
        assert report.sessions + report.skipped_sessions == 1500
        assert contents(target) == contents(source)
        assert migrate(source, target) == MigrationReport(skipped_sessions=1500)


@pytest.mark.parametrize("target_kind", BACKENDS)
def test_conflict(opened, tmp_path, target_kind):
    source = opened("sqlite", tmp_path / "source")
    source.append_many("a", [U("1")])
    source.append_many("b", [U("1"), U("2"), U("3")])
    source.append_many("c", [U("x")])
    target = opened(target_kind, tmp_path / "target")
    target.append_many("b", [U("1"), U("two")])
    with pytest.raises(MigrationConflictError) as info:
        migrate(source, target)
    assert (info.value.key, info.value.index) == ("b", 1)
    assert "overwrite=True" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert target.load("a") == [U("1")]  # sessions before it are done
    assert target.load("b") == [U("1"), U("two")]  # nothing of this one was written
    assert target.list_sessions() == ["a", "b"]
    report = migrate(source, target, overwrite=True)
    assert (report.sessions, report.messages, report.skipped_sessions) == (2, 4, 1)
    assert contents(target) == contents(source)


def test_target_longer_than_source_conflicts(opened, tmp_path):
    source = opened("jsonl-pure", tmp_path / "source")
    source.append_many("s", [U("1")])
    target = opened("sqlite", tmp_path / "target")
    target.append_many("s", [U("1"), U("2")])
    with pytest.raises(MigrationConflictError) as info:
        migrate(source, target)
    assert info.value.index == 1
    migrate(source, target, overwrite=True)
    assert target.load("s") == [U("1")]


def test_bad_keys(opened, tmp_path):
    source = opened("sqlite", tmp_path / "source")
    target = opened("sqlite", tmp_path / "target")
    with pytest.raises(TypeError):
        migrate(source, target, keys=[5])
    with pytest.raises(ValueError):
        migrate(source, target, keys=[""])


def test_jsonl_to_jsonl_needs_no_sqlite(opened, tmp_path, monkeypatch):
    """Migrating between JSONL stores works on a Python without sqlite3."""
    # import turnlog.backends.sqlite fails
    monkeypatch.setitem(sys.modules, "turnlog.backends.sqlite", None)
    monkeypatch.setitem(sys.modules, "sqlite3", None)
    source = opened("jsonl-pure", tmp_path / "source")
    fill(source)
    target = opened("jsonl-pure", tmp_path / "target")
    assert migrate(source, target).messages == sum(map(len, SESSIONS.values()))
    assert contents(target) == contents(source)
