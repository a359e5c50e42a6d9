"""What only ``SqliteSessionBackend`` has: its file, schema, WAL, transactions across processes,
reads that touch only what they need, controllable time, and both search paths."""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue
import random
import sqlite3
import stat
import threading
from datetime import datetime, timedelta, timezone

import pytest

import _sqlite_workers
import turnlog.backends.sqlite.schema
import turnlog.backends.sqlite.search
from turnlog import ChatMessage, SessionQuery, SessionState
from turnlog.backends.format import encode_message
from turnlog.backends.sqlite import SqliteSessionBackend
from turnlog.pure import SessionStore as PureStore

U = ChatMessage.user
A = ChatMessage.assistant
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def db(tmp_path, clock):
    backend = SqliteSessionBackend(tmp_path / "ws", clock=clock)
    yield backend
    backend.close()


_RAW: list[sqlite3.Connection] = []


@pytest.fixture(autouse=True)
def _close_raw_connections():
    yield
    while _RAW:
        _RAW.pop().close()


def raw(backend):
    """A plain connection to the backend's database, as another tool would open it (closed
    after the test)."""
    connection = sqlite3.connect(backend.path)
    _RAW.append(connection)
    return connection


def statements(backend, call):
    """The SQL statements ``call`` runs on this thread's connection."""
    seen: list[str] = []
    connection = backend._conn()
    connection.set_trace_callback(seen.append)
    try:
        call()
    finally:
        connection.set_trace_callback(None)
    return seen


# --- the file -----------------------------------------------------------------------------------


def test_file_location_and_modes(tmp_path):
    with SqliteSessionBackend(tmp_path / "ws") as backend:
        backend.append("k", U("x"))
        sessions = tmp_path / "ws" / "sessions"
        assert backend.path == str(sessions / "sessions.db")
        assert stat.S_IMODE(sessions.stat().st_mode) == 0o700
        for name in os.listdir(sessions):  # the database and its -wal and -shm files
            assert name.startswith("sessions.db")
            assert stat.S_IMODE((sessions / name).stat().st_mode) == 0o600, name


def test_wal_mode_and_synchronous(tmp_path):
    with SqliteSessionBackend(tmp_path / "a") as process:
        assert raw(process).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert process._conn().execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert process.durability == "process"
    with SqliteSessionBackend(tmp_path / "b", durability="power") as power:
        assert power._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert power.durability == "power"
        assert int(power._conn().execute("PRAGMA busy_timeout").fetchone()[0]) == 30_000


@pytest.mark.parametrize(
    ("options", "exception"),
    [
        ({"durability": "disk"}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "5"}, TypeError),
        ({"fts": "yes"}, TypeError),
        ({"clock": 5}, TypeError),
    ],
)
def test_bad_options(tmp_path, options, exception):
    with pytest.raises(exception):
        SqliteSessionBackend(tmp_path / "ws", **options)
    assert not (tmp_path / "ws").exists()


def test_workspace_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        SqliteSessionBackend(tmp_path / "file")


def test_schema(db):
    connection = raw(db)
    columns = {
        table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        for table in ("sessions", "messages")
    }
    assert columns["sessions"] == [
        "key",
        "name",
        "agent_alias",
        "channel_id",
        "room_id",
        "sender_id",
        "state",
        "turn_id",
        "turn_started_at",
        "created_at",
        "last_activity",
        "message_count",
    ]
    assert columns["messages"] == ["id", "session_key", "line", "created_at"]
    index = connection.execute("PRAGMA index_info(messages_by_session)").fetchall()
    assert [row[2] for row in index] == ["session_key", "id"]
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
    sql = connection.execute("SELECT sql FROM sqlite_master WHERE name = 'message_fts'").fetchone()
    assert "fts5" in sql[0]
    assert (
        "AUTOINCREMENT"
        in connection.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()[0]
    )


def test_newer_schema_is_refused(tmp_path):
    SqliteSessionBackend(tmp_path / "ws").close()
    connection = sqlite3.connect(tmp_path / "ws" / "sessions" / "sessions.db")
    connection.execute("PRAGMA user_version = 2")
    connection.close()
    with pytest.raises(RuntimeError, match="schema version 2"):
        SqliteSessionBackend(tmp_path / "ws")


def test_not_a_database(tmp_path):
    sessions = tmp_path / "ws" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "sessions.db").write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        SqliteSessionBackend(tmp_path / "ws")


def test_rows_hold_the_jsonl_line_byte_for_byte(db, tmp_path):
    """The exact line the JSONL store writes, so extra fields survive as they were."""
    messages = [
        {"role": "assistant", "content": 'é "q" \\ \n 😀', "b": [1, 2.5, None], "a": {"z": 1}},
        ChatMessage("tool", "42", name="calc", big=2**80, neg=-0.0),
    ]
    jsonl = PureStore(tmp_path / "jsonl")
    for message in messages:
        db.append("k", message)
        jsonl.append("k", message)
    lines = [row[0] for row in raw(db).execute("SELECT line FROM messages ORDER BY id")]
    expected = [encode_message(m)[:-1].decode() for m in messages]
    assert lines == expected
    file_bytes = (tmp_path / "jsonl" / "sessions" / "k.jsonl").read_bytes()
    assert "".join(line + "\n" for line in lines).encode() == file_bytes
    assert db.load("k") == jsonl.load("k")


def test_bad_input_runs_no_sql(db):
    """Refused before any statement, so nothing can change."""
    db.append("s", U("x"))
    bad = [U("ok"), {"role": "user", "content": "x", "v": float("nan")}]
    calls = [
        (TypeError, lambda: db.append(5, U("x"))),
        (ValueError, lambda: db.append("s", {"role": "u"})),
        (ValueError, lambda: db.append_many("s", bad)),
        (ValueError, lambda: db.update_last("s", {})),
        (ValueError, lambda: db.set_session_state("s", "x")),
        (TypeError, lambda: db.set_session_name("s", b"n")),
    ]
    for exception, call in calls:

        def refused(exception=exception, call=call):
            with pytest.raises(exception):
                call()

        assert statements(db, refused) == []
    assert db.load("s") == [U("x")]


def test_writes_use_begin_immediate(db):
    db.append("s", U("x"))
    calls = {
        "append": lambda: db.append("s", U("y")),
        "append_many": lambda: db.append_many("s", [U("z")]),
        "remove_last": lambda: db.remove_last("s"),
        "update_last": lambda: db.update_last("s", U("w")),
        "clear_messages": lambda: db.clear_messages("s"),
        "set_session_name": lambda: db.set_session_name("s", "n"),
        "set_session_state": lambda: db.set_session_state("s", "running"),
        "cleanup_stale": lambda: db.cleanup_stale(1),
        "delete_session": lambda: db.delete_session("s"),
    }
    for name, call in calls.items():
        # FTS5's own statements show as "-- ..." lines; the backend's are the others.
        seen = [sql for sql in statements(db, call) if not sql.startswith("--")]
        assert seen[0] == "BEGIN IMMEDIATE", name
        assert seen[-1] == "COMMIT", name
        assert seen.count("BEGIN IMMEDIATE") == 1, name


def test_failed_write_rolls_back(db, monkeypatch):
    db.append("s", U("kept"))

    def broken_insert(self, connection, session_key, rows):
        connection.execute(
            "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
            (session_key, '{"role":"user","content":"half"}', "x"),
        )
        raise OSError("disk full")

    monkeypatch.setattr(SqliteSessionBackend, "_insert", broken_insert)
    with pytest.raises(OSError):
        db.append_many("s", [U("a"), U("b")])
    with pytest.raises(OSError):
        db.append("new", U("a"))
    monkeypatch.undo()
    assert db.load("s") == [U("kept")]
    assert db.list_sessions() == ["s"]
    assert db.get_session_metadata("s").message_count == 1
    assert not db._conn().in_transaction


# --- reads that read only what they need --------------------------------------------------------


def test_load_limit_uses_the_index_backwards(db):
    db.append("s", U("x"))
    plan = db._conn().execute(
        "EXPLAIN QUERY PLAN SELECT line, NULL FROM messages WHERE session_key = ? "
        "ORDER BY id DESC LIMIT ?",
        ("s", 5),
    )
    details = " ".join(row[-1] for row in plan)
    assert "USING COVERING INDEX messages_by_session" in details or (
        "USING INDEX messages_by_session" in details
    )
    assert "TEMP B-TREE" not in details  # no sort: rows come newest first from the index
    seen = statements(db, lambda: db.load("s", limit=5))
    assert seen == [
        "SELECT line, NULL FROM messages WHERE session_key = 's' ORDER BY id DESC LIMIT 5"
    ]


def vm_steps(backend, call):
    """How many SQLite virtual machine instructions ``call`` runs."""
    steps = 0

    def count():
        nonlocal steps
        steps += 1
        return 0

    connection = backend._conn()
    connection.set_progress_handler(count, 1)
    try:
        call()
    finally:
        connection.set_progress_handler(None, 1)
    return steps


def test_load_limit_reads_only_n_rows(db):
    """Work for load(limit=5) does not grow with the session: 10 messages or 5,000."""
    db.append_many("small", [U(f"m{i}") for i in range(10)])
    db.append_many("big", [U(f"m{i}") for i in range(5000)])
    db.append_many("after", [U("later")])  # rows of another session after "big"'s
    small = vm_steps(db, lambda: db.load("small", limit=5))
    big = vm_steps(db, lambda: db.load("big", limit=5))
    assert db.load("big", limit=5) == [U(f"m{i}") for i in range(4995, 5000)]
    assert big <= small * 1.5 + 10
    full = vm_steps(db, lambda: db.load("big"))
    assert full > 50 * big  # the counter does see a full read


def test_metadata_reads_no_messages(db, clock):
    """Counts come from the sessions row (kept by triggers), not a count of the messages."""
    for i in range(20):
        db.append_many(f"s{i}", [U("x")] * (i + 1))
        clock.advance(seconds=1)
    seen = statements(db, db.list_sessions_with_metadata)
    assert len(seen) == 1
    assert "messages" not in seen[0]
    assert [m.message_count for m in db.list_sessions_with_metadata()] == list(range(20, 0, -1))


def test_counts_stay_true_when_other_tools_write(db):
    db.append_many("s", [U("a"), U("b")])
    connection = raw(db)
    with connection:
        connection.execute(
            "INSERT INTO messages (session_key, line, created_at) VALUES (?, ?, ?)",
            ("s", '{"role":"user","content":"c"}', T0.isoformat()),
        )
        connection.execute("DELETE FROM messages WHERE id = 1")
    assert db.get_session_metadata("s").message_count == 2
    assert db.load("s") == [U("b"), U("c")]


# --- time ---------------------------------------------------------------------------------------


def test_times_follow_the_clock(db, clock):
    db.append("s", U("one"))
    clock.advance(minutes=5)
    db.append_many("s", [U("two"), U("three")])
    clock.advance(minutes=5)
    db.set_session_name("s", "labels are not activity")
    metadata = db.get_session_metadata("s")
    assert metadata.created_at == T0
    assert metadata.last_activity == T0 + timedelta(minutes=5)
    assert db.load_with_timestamps("s") == [
        (U("one"), T0),
        (U("two"), T0 + timedelta(minutes=5)),
        (U("three"), T0 + timedelta(minutes=5)),
    ]
    assert db.load_with_timestamps("s", limit=1) == [(U("three"), T0 + timedelta(minutes=5))]
    clock.advance(minutes=5)
    assert db.update_last("s", U("THREE"))
    assert db.load_with_timestamps("s", limit=1) == [(U("THREE"), T0 + timedelta(minutes=15))]
    clock.advance(minutes=5)
    assert db.remove_last("s")
    assert db.get_session_metadata("s").last_activity == T0 + timedelta(minutes=20)
    assert db.get_session_metadata("s").created_at == T0


def test_clock_in_another_zone_is_stored_as_utc(tmp_path):
    tokyo = timezone(timedelta(hours=9))
    with SqliteSessionBackend(
        tmp_path / "ws", clock=lambda: datetime(2026, 1, 2, 9, tzinfo=tokyo)
    ) as b:
        b.append("s", U("x"))
        [(_, when)] = b.load_with_timestamps("s")
        assert when == datetime(2026, 1, 2, 0, tzinfo=timezone.utc)
        assert when.tzinfo == timezone.utc
        stored = raw(b).execute("SELECT created_at FROM messages").fetchone()[0]
        assert stored == "2026-01-02T00:00:00.000000+00:00"


def test_naive_clock_is_refused(tmp_path):
    with SqliteSessionBackend(tmp_path / "ws", clock=lambda: datetime(2026, 1, 1)) as backend:
        with pytest.raises(ValueError, match="timezone-aware"):
            backend.append("s", U("x"))
        assert backend.list_sessions() == []


def test_list_most_recent_first(db, clock):
    for key in ["b", "a", "c"]:
        db.append(key, U("x"))
        clock.advance(seconds=1)
    db.append("a", U("again"))
    assert [m.key for m in db.list_sessions_with_metadata()] == ["a", "c", "b"]


def test_state_and_stuck_sessions(db, clock):
    db.append("s", U("x"))
    assert db.get_session_state("s") == SessionState("idle")
    assert db.get_session_state("missing") is None
    db.set_session_state("s", "running", "t1")
    assert db.get_session_state("s") == SessionState("running", "t1", T0)
    assert [m.key for m in db.list_running_sessions()] == ["s"]
    clock.advance(seconds=59)
    assert db.list_stuck_sessions(60) == []
    clock.advance(seconds=1)
    assert [m.key for m in db.list_stuck_sessions(60)] == ["s"]
    db.set_session_state("s", "running", "t2")  # a new turn starts now
    assert db.get_session_state("s") == SessionState("running", "t2", T0 + timedelta(minutes=1))
    assert db.list_stuck_sessions(60) == []
    clock.advance(seconds=30)
    db.set_session_state("s", "error")
    assert db.get_session_state("s") == SessionState("error", "t2", T0 + timedelta(minutes=1))
    assert db.list_running_sessions() == []
    db.set_session_state("s", "error", "t3")
    assert db.get_session_state("s").turn_id == "t3"
    db.set_session_state("s", "idle")
    assert db.get_session_state("s") == SessionState("idle")
    # State is not message activity.
    assert db.get_session_metadata("s").last_activity == T0


def test_state_creates_the_session(db, clock):
    db.set_session_state("new", "running", "t")
    assert db.list_sessions() == ["new"]
    assert db.load("new") == []
    assert db.get_session_metadata("new").created_at == T0


@pytest.mark.parametrize(
    ("call", "exception"),
    [
        (lambda b: b.set_session_state("s", "paused"), ValueError),
        (lambda b: b.set_session_state("s", "RUNNING"), ValueError),
        (lambda b: b.set_session_state("s", None), ValueError),
        (lambda b: b.set_session_state("s", "running", 5), TypeError),
        (lambda b: b.list_stuck_sessions(-1), ValueError),
        (lambda b: b.list_stuck_sessions("60"), TypeError),
        (lambda b: b.list_stuck_sessions(True), TypeError),
        (lambda b: b.cleanup_stale(float("nan")), ValueError),
        (lambda b: b.cleanup_stale(None), TypeError),
        (lambda b: b.set_session_name("s", None), TypeError),
        (lambda b: b.set_session_name("s", "\ud800"), ValueError),
        (lambda b: b.set_session_agent_alias("s", 1), TypeError),
        (lambda b: b.set_session_context("s", channel_id=1), TypeError),
        (lambda b: b.set_session_name(1, "n"), TypeError),
        (lambda b: b.get_session_name(""), ValueError),
        (lambda b: b.set_session_times("s", created_at=datetime(2026, 1, 1)), ValueError),
        (lambda b: b.append_many("s", [U("x")], timestamps=[]), ValueError),
        (lambda b: b.search("hello"), TypeError),
        (lambda b: b.search(SessionQuery(keyword=5)), TypeError),
        (lambda b: b.search(SessionQuery(limit=-1)), ValueError),
        (lambda b: b.search(SessionQuery("x"), match="some"), ValueError),
    ],
)
def test_bad_metadata_input_changes_nothing(db, call, exception):
    db.append("s", U("x"))
    db.set_session_name("s", "n")
    before = (db.get_session_metadata("s"), db.get_session_state("s"), db.load("s"))
    with pytest.raises(exception):
        call(db)
    assert (db.get_session_metadata("s"), db.get_session_state("s"), db.load("s")) == before
    assert db.list_sessions() == ["s"]


def test_names_alias_context_create_and_keep(db, clock):
    db.set_session_name("n", "Name")
    db.set_session_agent_alias("a", "helper")
    db.set_session_context("c", room_id="r")
    assert db.list_sessions() == ["a", "c", "n"]
    db.set_session_context("c", channel_id="ch", sender_id="u")
    db.set_session_context("c")  # nothing given: nothing changes
    metadata = db.get_session_metadata("c")
    assert (metadata.channel_id, metadata.room_id, metadata.sender_id) == ("ch", "r", "u")
    assert db.get_session_name("n") == "Name"
    assert db.get_session_agent_alias("a") == "helper"
    assert db.get_session_name("missing") is None
    assert db.get_session_agent_alias("missing") is None
    db.append("n", U("x"))
    assert db.clear_messages("n") == 1
    assert db.get_session_name("n") == "Name"  # clearing keeps metadata


def test_cleanup_stale(db, clock):
    db.append_many("old", [U("a"), U("b")])
    db.set_session_name("old", "gone soon")
    db.set_session_state("old", "running", "t")
    clock.advance(hours=2)
    db.append("fresh", U("c"))
    clock.advance(hours=23)
    assert db.cleanup_stale(24) == 1
    assert db.list_sessions() == ["fresh"]
    assert db.load("old") == []
    assert db.get_session_name("old") is None
    assert raw(db).execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert db.search(SessionQuery("a")) == []
    assert db.cleanup_stale(24) == 0
    clock.advance(hours=2)
    assert db.cleanup_stale(24) == 1
    assert db.list_sessions() == []


def test_set_session_times(db):
    db.append("s", U("x"))
    db.set_session_state("s", "running", "t")
    when = datetime(2020, 5, 1, tzinfo=timezone.utc)
    assert db.set_session_times("s", created_at=when, last_activity=when, turn_started_at=when)
    metadata = db.get_session_metadata("s")
    assert (metadata.created_at, metadata.last_activity) == (when, when)
    assert db.get_session_state("s").turn_started_at == when
    assert db.set_session_times("missing", created_at=when) is False
    assert db.list_sessions() == ["s"]


def test_append_many_with_timestamps(db, clock):
    when = datetime(2020, 1, 1, tzinfo=timezone.utc)
    db.append_many("s", [U("a"), U("b")], timestamps=[when, None])
    assert db.load_with_timestamps("s") == [(U("a"), when), (U("b"), T0)]


# --- search -------------------------------------------------------------------------------------

SEARCH_MODES = ["fts", "like", "no-fts5"]


@pytest.fixture(params=SEARCH_MODES)
def searchable(request, tmp_path, clock, monkeypatch):
    """A backend searching with the FTS5 index, with the scan (``fts=False``), or on a SQLite
    without FTS5 (``fts5_available`` patched)."""
    options = {}
    if request.param == "like":
        options["fts"] = False
    elif request.param == "no-fts5":
        monkeypatch.setattr(turnlog.backends.sqlite.schema, "_fts5", False)
    backend = SqliteSessionBackend(tmp_path / "ws", clock=clock, **options)
    assert backend.fts_enabled is (request.param == "fts")
    has_table = (
        raw(backend).execute("SELECT 1 FROM sqlite_master WHERE name = 'message_fts'").fetchone()
    )
    assert (has_table is not None) is (request.param == "fts")
    yield backend
    backend.close()


def keys(found):
    return [m.key for m in found]


def test_search_rules(searchable, clock):
    db = searchable
    db.append("deploy", U("The Deployment FAILED again"))
    clock.advance(seconds=1)
    db.append("split", U("deployment is fine"))
    db.append("split", A("nothing failed here? no"))
    clock.advance(seconds=1)
    db.append("cyrillic", U("ПРИВЕТ, Мир"))
    clock.advance(seconds=1)
    db.append("extra", ChatMessage("user", "plain", note="deployment failed"))
    clock.advance(seconds=1)
    db.set_session_name("empty", "deployment failed")

    def search(keyword, **options):
        return keys(db.search(SessionQuery(keyword=keyword), **options))

    assert search("deployment failed") == ["deploy"]  # both words in one message
    assert search("deployment failed", match="any") == ["split", "deploy"]  # newest first
    assert search("PLOY") == ["split", "deploy"]  # substring, any case
    assert search("привет") == ["cyrillic"]
    assert search("мир привет") == ["cyrillic"]
    assert search("ир,") == []  # "мир" has no comma after it... but "ПРИВЕТ," has
    assert search("т,") == ["cyrillic"]
    assert search("ment fail") == ["deploy"]  # two words, each anywhere in one message
    assert search("ment_fail") == []
    assert search("deployment-failed") == []
    assert search("failed?") == []
    assert search("failed?", match="any") == []
    assert search("ailed") == ["split", "deploy"]
    assert search("note") == []  # extra fields are not searched
    assert search("user") == []  # nor the role
    assert search("zzz") == []
    assert search(None) == ["empty", "extra", "cyrillic", "split", "deploy"]
    assert search(" \t\u3000") == search(None)
    assert keys(db.search(SessionQuery(keyword="deployment", limit=1))) == ["split"]
    assert keys(db.search(SessionQuery(keyword=None, limit=0))) == []


def test_search_short_words_and_syntax(searchable):
    db = searchable
    db.append("a", U('say "hi" AND bye (NEAR) 50% off_peak \\ done'))
    db.append("b", U("zzz"))

    def search(keyword, **options):
        return keys(db.search(SessionQuery(keyword=keyword), **options))

    for keyword in ['"hi"', "AND", "(NEAR)", "50%", "off_peak", "\\", "hi", "%", "_", '"']:
        assert search(keyword) == ["a"], keyword
    assert sorted(search("hi zzz", match="any")) == ["a", "b"]
    assert sorted(search("hi zz", match="any")) == ["a", "b"]
    assert search("hi zzz") == []
    assert search("z zz") == ["b"]
    assert sorted(search("o z", match="any")) == ["a", "b"]
    assert search("x%") == []
    assert search("ff_p") == ["a"]
    assert search("of_") == []
    assert search("off-peak") == []


def test_search_unicode_lowercasing(searchable):
    """Python's lower-casing, as the JSONL stores use: final sigma, Kelvin sign, dotted I."""
    db = searchable
    db.append("greek", U("ΟΔΟΣ"))
    db.append("kelvin", U("300 \u212aELVIN"))
    db.append("dotted", U("\u0130"))
    db.append("eszett", U("STRASSE"))

    def search(keyword):
        return sorted(keys(db.search(SessionQuery(keyword=keyword))))

    assert search("οδος") == ["greek"]  # "ΟΔΟΣ".lower() ends in a final sigma
    assert search("οδοσ") == []
    assert search("kelvin") == ["kelvin"]
    assert search("300 k") == ["kelvin"]
    assert search("i\u0307") == ["dotted"]  # "İ".lower() is "i" and a combining dot
    assert search("i") == ["dotted", "kelvin"]
    assert search("straße") == []


@pytest.mark.parametrize("filler", [0, 1000])
def test_search_sees_content_after_a_nul(searchable, filler):
    """SQLite's JSON functions end a string at an escaped NUL; the check reads past it, on
    every path (with filler, the index finds few candidates and each is checked)."""
    db = searchable
    db.append_many("filler", [U(f"filler {index}") for index in range(filler)])
    db.append("nul", U("before\x00after the NUL"))
    db.append("escaped", U("a backslash-u: \\u0000 after"))

    def search(keyword, **options):
        return sorted(keys(db.search(SessionQuery(keyword=keyword), **options)))

    assert search("after the") == ["nul"]
    assert search("before nul") == ["nul"]
    assert search("e\x00a") == ["nul"]
    assert search("after") == ["escaped", "nul"]
    assert search("\\u0000") == ["escaped"]
    assert search("zzz after", match="any") == ["escaped", "nul"]


def test_huge_limits_mean_all(db):
    """Past SQLite's int64, as every backend answers (the shared tests check 2**64 too)."""
    db.append_many("s", [U("a"), U("b")])
    for limit in (2**63 - 1, 2**63, 2**64, 10**100):
        assert db.load("s", limit=limit) == [U("a"), U("b")]
        assert [m for m, _ in db.load_with_timestamps("s", limit=limit)] == [U("a"), U("b")]
        assert keys(db.search(SessionQuery(keyword="a", limit=limit))) == ["s"]
        assert keys(db.search(SessionQuery(limit=limit))) == ["s"]


def test_search_follows_every_change(searchable, clock):
    db = searchable
    db.append("s", U("alpha"))
    db.append("s", U("bravo"))

    def found(keyword):
        return keys(db.search(SessionQuery(keyword=keyword)))

    assert found("bravo") == ["s"]
    db.remove_last("s")
    assert found("bravo") == []
    db.update_last("s", U("charlie"))
    assert found("alpha") == []
    assert found("charlie") == ["s"]
    db.append_many("t", [U("delta"), U("charlie")])
    assert sorted(found("charlie")) == ["s", "t"]
    db.clear_messages("t")
    assert found("delta") == []
    db.delete_session("s")
    assert found("charlie") == []
    db.append("s", U("echo"))
    assert found("echo") == ["s"]


def test_index_is_built_for_an_older_database(tmp_path, clock):
    with SqliteSessionBackend(tmp_path / "ws", fts=False, clock=clock) as scan:
        scan.append("s", U("written before the index"))
        assert scan.fts_enabled is False
        with SqliteSessionBackend(tmp_path / "ws", clock=clock) as indexed:
            assert indexed.fts_enabled
            assert keys(indexed.search(SessionQuery("before"))) == ["s"]
            # The fts=False object now keeps the index another object created up to date.
            scan.append("t", U("written after the index"))
            scan.remove_last("s")
            assert keys(indexed.search(SessionQuery("written"))) == ["t"]
            assert index_is_consistent(indexed)


def test_fts_required_but_missing(tmp_path, monkeypatch):
    SqliteSessionBackend(tmp_path / "ws").close()  # has the index
    monkeypatch.setattr(turnlog.backends.sqlite.schema, "_fts5", False)
    with pytest.raises(RuntimeError, match="fts=True"):
        SqliteSessionBackend(tmp_path / "other", fts=True)
    with pytest.raises(RuntimeError, match="no FTS5"):
        SqliteSessionBackend(tmp_path / "ws")


def index_is_consistent(backend):
    """The index holds one entry per message up to its watermark, and none of deleted ones."""
    connection = raw(backend)
    (indexed_to,) = connection.execute("SELECT indexed_to FROM search_index").fetchone()
    entries = connection.execute("SELECT count(*) FROM message_fts").fetchone()[0]
    held = connection.execute(
        "SELECT count(*) FROM messages WHERE id <= ?", (indexed_to,)
    ).fetchone()[0]
    return entries == held


@pytest.mark.parametrize("strategy", ["check candidates", "walk sessions"])
def test_index_follows_a_random_history(tmp_path, clock, monkeypatch, strategy):
    """With index batches of 5, a random history keeps the index exact: FTS5 search answers
    as the scan does on the same database, for every keyword, at every step (with either way
    of using the candidates)."""
    monkeypatch.setattr(turnlog.backends.sqlite.search, "_INDEX_BATCH", 5)
    monkeypatch.setattr(
        turnlog.backends.sqlite.search,
        "_CHECK_COST",
        1 if strategy == "check candidates" else 10**9,
    )
    rng = random.Random(7)
    words = ["alpha", "Bravo", "charlie", "DELTA", "эхо", "fox", "golf"]
    indexed = SqliteSessionBackend(tmp_path / "ws", clock=clock)
    scan = SqliteSessionBackend(tmp_path / "ws", fts=False, clock=clock)
    try:
        for step in range(300):
            key = rng.choice(["a", "b", "c", "d"])
            text = " ".join(rng.choices(words, k=rng.randint(1, 3)))
            op = rng.random()
            if op < 0.5:
                indexed.append(key, U(text))
            elif op < 0.65:
                indexed.append_many(key, [U(text), A(text.upper())])
            elif op < 0.8:
                indexed.update_last(key, A(text))
            elif op < 0.93:
                indexed.remove_last(key)
            elif op < 0.97:
                indexed.clear_messages(key)
            else:
                indexed.delete_session(key)
            clock.advance(seconds=1)
            if step % 10 == 0:
                assert index_is_consistent(indexed), step
                for keyword in ["alpha", "ravo char", "delta", "эх", "эхо fox", "olf", "lpha x"]:
                    for match in ("all", "any"):
                        query = SessionQuery(keyword=keyword)
                        expected = keys(scan.search(query, match=match))
                        assert keys(indexed.search(query, match=match)) == expected, (step, keyword)
        (indexed_to,) = raw(indexed).execute("SELECT indexed_to FROM search_index").fetchone()
        assert indexed_to > 0  # batches were indexed...
        last = raw(indexed).execute("SELECT max(id) FROM messages").fetchone()[0]
        assert last - indexed_to < 5  # ...and the tail is less than one
    finally:
        indexed.close()
        scan.close()


def test_appends_are_indexed_in_batches(db, monkeypatch):
    monkeypatch.setattr(turnlog.backends.sqlite.search, "_INDEX_BATCH", 4)
    for i in range(3):
        db.append("s", U(f"word{i}"))
    connection = raw(db)
    assert connection.execute("SELECT indexed_to FROM search_index").fetchone()[0] == 0
    assert keys(db.search(SessionQuery("word2"))) == ["s"]  # found in the tail
    db.append("s", U("word3"))
    assert connection.execute("SELECT indexed_to FROM search_index").fetchone()[0] == 4
    assert connection.execute("SELECT count(*) FROM message_fts").fetchone()[0] == 4
    assert keys(db.search(SessionQuery("word3"))) == ["s"]


def test_rebuild_search_index(db, monkeypatch):
    monkeypatch.setattr(turnlog.backends.sqlite.search, "_INDEX_BATCH", 1)
    db.append("s", U("kept"))
    db.append("s", U("original words"))
    connection = raw(db)
    with connection:  # another tool edits an indexed message behind turnlog's back
        connection.execute(
            "UPDATE messages SET line = ? WHERE id = 2", ('{"role":"user","content":"Sneaked"}',)
        )
    assert db.search(SessionQuery("sneaked")) == []  # the index still has the old words
    db.rebuild_search_index()
    assert keys(db.search(SessionQuery("sneaked"))) == ["s"]
    assert keys(db.search(SessionQuery("kept"))) == ["s"]
    assert db.search(SessionQuery("original")) == []
    assert index_is_consistent(db)


def test_search_uses_the_index(db):
    db.append("s", U("needle in a haystack"))
    seen = statements(db, lambda: db.search(SessionQuery("needle")))
    assert any("message_fts MATCH" in sql for sql in seen)
    assert keys(db.search(SessionQuery("needle"))) == ["s"]


# --- damaged rows -------------------------------------------------------------------------------


def test_damaged_rows_are_skipped_and_compacted(db):
    db.append_many("s", [U("a"), U("b")])
    connection = raw(db)
    with connection:
        connection.execute("UPDATE messages SET line = 'not json' WHERE id = 1")
    assert db.load("s") == [U("b")]
    db.compact("s")
    assert raw(db).execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    assert db.get_session_metadata("s").message_count == 1
    assert db.load("s") == [U("b")]


# --- threads, processes, fork -------------------------------------------------------------------


def test_threads_share_one_backend(db):
    errors: list[BaseException] = []

    def worker(writer):
        try:
            for seq in range(40):
                db.append("s", {"role": "user", "content": f"{writer}-{seq}"})
                db.load("s", limit=3)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    contents = [m.content for m in db.load("s")]
    assert sorted(contents) == sorted(f"{w}-{s}" for w in range(6) for s in range(40))
    for writer in range(6):  # each writer's messages in its order
        mine = [c for c in contents if c.startswith(f"{writer}-")]
        assert mine == [f"{writer}-{s}" for s in range(40)]
    assert db.get_session_metadata("s").message_count == 240


def test_a_thread_connection_closes_with_its_thread(db):
    db.load("s")
    thread = threading.Thread(target=db.load, args=("s",))
    thread.start()
    thread.join()
    del thread
    gc.collect()
    assert len(db._connections) == 1  # the main thread's only


def test_close(tmp_path):
    backend = SqliteSessionBackend(tmp_path / "ws")
    backend.append("s", U("x"))
    connection = backend._conn()
    backend.close()
    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")
    with pytest.raises(ValueError, match="closed"):
        backend.load("s")
    with SqliteSessionBackend(tmp_path / "ws") as again:
        assert again.load("s") == [U("x")]


def collect(results, count, timeout=60):
    reports = []
    for _ in range(count):
        try:
            status, value = results.get(timeout=timeout)
        except queue.Empty:  # pragma: no cover - a hung worker
            pytest.fail("a worker process did not report")
        assert status == "ok", value
        reports.append(value)
    return reports


def test_concurrent_remove_last_across_processes(db):
    """40 remove_last calls from 4 processes at once remove 40 different messages."""
    db.append_many("s", [U(f"m{i}") for i in range(100)])
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    barrier = context.Barrier(4)
    workspace = os.path.dirname(os.path.dirname(db.path))
    processes = [
        context.Process(
            target=_sqlite_workers.remove_last_many,
            args=(workspace, "s", 10, barrier, results),
        )
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    try:
        reports = collect(results, 4)
    finally:
        for process in processes:
            process.join(timeout=30)
    assert [all(report) and len(report) for report in reports] == [10] * 4
    assert db.load("s") == [U(f"m{i}") for i in range(60)]
    assert db.get_session_metadata("s").message_count == 60
    assert db.remove_last("s")


def test_concurrent_appends_across_processes(db):
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    barrier = context.Barrier(3)
    workspace = os.path.dirname(os.path.dirname(db.path))
    processes = [
        context.Process(
            target=_sqlite_workers.append_many_numbered,
            args=(workspace, "s", writer, 60, barrier, results),
        )
        for writer in range(3)
    ]
    for process in processes:
        process.start()
    try:
        collect(results, 3)
    finally:
        for process in processes:
            process.join(timeout=30)
    contents = [m.content for m in db.load("s")]
    assert len(contents) == 180
    for writer in range(3):
        assert [c for c in contents if c.startswith(f"w{writer}-")] == [
            f"w{writer}-{seq}" for seq in range(60)
        ]
    assert db.get_session_metadata("s").message_count == 180
    assert keys(db.search(SessionQuery("w2-59"))) == ["s"]


def _forked_append(backend, results):
    try:
        backend.append("s", U("from the child"))
        results.put(("ok", backend.load("s")))
    except BaseException as error:  # pragma: no cover - reported to the parent
        results.put(("error", repr(error)))


def test_fork_opens_a_fresh_connection(db):
    db.append("s", U("from the parent"))
    parent_connection = db._conn()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_forked_append, args=(db, results))
    child.start()
    [loaded] = collect(results, 1)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert loaded == [U("from the parent"), U("from the child")]
    assert db._conn() is parent_connection
    db.append("s", U("parent again"))
    assert db.load("s", limit=1) == [U("parent again")]


def test_index_ignores_the_int_digits_limit(db, monkeypatch):
    """A process with a low sys.set_int_max_str_digits indexes (and unindexes) a message with
    a long integer as any other process does."""
    import sys

    monkeypatch.setattr(turnlog.backends.sqlite.search, "_INDEX_BATCH", 1)
    db.append("s", {"role": "user", "content": "huge number inside", "n": 10**1000})
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        db.append("s", U("second"))
        assert keys(db.search(SessionQuery("huge"))) == ["s"]
        assert db.load("s")[0].extra["n"] == 10**1000
        db.remove_last("s")
        db.remove_last("s")
        assert index_is_consistent(db)
        assert db.search(SessionQuery("huge")) == []
        # The entry itself is gone (a wrong 'delete' would leave its trigrams behind).
        query = "SELECT rowid FROM message_fts WHERE message_fts MATCH '\"hug\"'"
        assert raw(db).execute(query).fetchall() == []
    finally:
        sys.set_int_max_str_digits(previous)


def test_index_built_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(turnlog.backends.sqlite.search, "_INDEX_CHUNK", 7)
    with SqliteSessionBackend(tmp_path / "ws", fts=False) as scan:
        scan.append_many("s", [U(f"message {i}") for i in range(50)])
        scan.append("t", U("the last one"))
    with SqliteSessionBackend(tmp_path / "ws") as indexed:
        assert index_is_consistent(indexed)
        (indexed_to,) = raw(indexed).execute("SELECT indexed_to FROM search_index").fetchone()
        assert indexed_to == 51
        assert raw(indexed).execute("SELECT count(*) FROM message_fts").fetchone()[0] == 51
        assert keys(indexed.search(SessionQuery("message 3"))) == ["s"]
        assert keys(indexed.search(SessionQuery("last"))) == ["t"]
