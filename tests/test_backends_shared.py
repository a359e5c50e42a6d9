"""One behaviour, every backend: the same calls answer the same way on the Rust JSONL store, the
pure JSONL store, ``SqliteSessionBackend`` and ``RedisSessionBackend``.

Tests of metadata the JSONL stores do not keep yet (names, alias, context, state, search, stale
cleanup) run on every backend that implements the method itself and skip on one that still has
the ``SessionBackend`` default.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import pytest

import turnlog
from _backends import BACKENDS, add_damaged, close, dump, make_backend, require
from turnlog import ChatMessage, SessionQuery, SessionState

U = ChatMessage.user
A = ChatMessage.assistant

WEIRD_KEYS = [
    "plain",
    "a/b",
    "a:b",
    "a_b",
    "a%2Fb",
    "../x",
    ".",
    ".hidden",
    "ключ",
    "with space",
    "x.jsonl",
    "a\x00b",
    "line\nbreak",
    "😀",
    "-",
    "A",
    "a",
    "a" * 249,
]

EXTRAS = {
    "role": "assistant",
    "content": 'héllo\n"q" \\ 😀 \x00',
    "name": "bot",
    "tool_calls": [{"id": "c1", "args": {"z": 1, "a": [True, False, None]}}],
    "score": 1.5,
    "big": 2**100,
    "huge": -(10**4299),
    "tiny": 5e-324,
    "negzero": -0.0,
    "": "empty key",
    "tuple": (1, "two"),
}


@pytest.fixture(params=BACKENDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def backend(kind, tmp_path):
    opened = make_backend(kind, tmp_path / "ws")
    yield opened
    close(opened)


# --- the four core methods ----------------------------------------------------------------------


def test_is_a_session_backend(backend):
    assert isinstance(backend, turnlog.SessionBackend)


def test_empty(backend):
    assert backend.list_sessions() == []
    assert backend.load("k") == []
    assert backend.load("k", limit=3) == []
    assert backend.load_with_timestamps("k") == []
    assert not backend.session_exists("k")
    assert backend.get_session_metadata("k") is None
    assert backend.list_sessions_with_metadata() == []
    assert backend.remove_last("k") is False
    assert backend.update_last("k", U("x")) is False
    assert backend.clear_messages("k") == 0
    assert backend.delete_session("k") is False
    backend.append_many("k", [])
    backend.compact("k")
    # None of those created the session.
    assert backend.list_sessions() == []
    assert not backend.session_exists("k")


def test_append_and_load_in_order(backend):
    backend.append("s", U("hello"))
    backend.append("s", A("hi there"))
    backend.append("s", ChatMessage("tool", "42", name="calc"))
    loaded = backend.load("s")
    assert loaded == [U("hello"), A("hi there"), ChatMessage("tool", "42", name="calc")]
    assert all(type(m) is turnlog.ChatMessage for m in loaded)
    assert backend.list_sessions() == ["s"]
    assert backend.session_exists("s")


@pytest.mark.parametrize("limit", [0, 1, 2, 5, 6, 1000, 2**63, 2**64])
def test_limit(backend, kind, limit):
    """A limit past any session's length (SQLite's and Redis's int64 included) means every
    message."""
    messages = [U(f"m{i}") for i in range(5)]
    for message in messages:
        backend.append("s", message)
    expected = messages[len(messages) - min(limit, len(messages)) :] if limit else []
    assert backend.load("s", limit=limit) == expected
    assert [m for m, _ in backend.load_with_timestamps("s", limit=limit)] == expected


@pytest.mark.parametrize(
    ("limit", "exception"),
    [(-1, ValueError), (True, TypeError), ("1", TypeError), (2.0, TypeError)],
)
def test_bad_limit(backend, limit, exception):
    backend.append("s", U("x"))
    with pytest.raises(exception):
        backend.load("s", limit=limit)
    assert backend.load("s") == [U("x")]


def test_mappings_accepted(backend):
    backend.append("s", {"role": "user", "content": "a"})
    backend.append("s", OrderedDict([("content", "b"), ("role", "assistant"), ("n", 1)]))
    backend.append("s", MappingProxyType({"role": "tool", "content": "c"}))
    assert backend.load("s") == [U("a"), ChatMessage("assistant", "b", n=1), ChatMessage.tool("c")]


def test_extras_round_trip_in_order(backend):
    backend.append("s", EXTRAS)
    [loaded] = backend.load("s")
    expected = {**EXTRAS, "tuple": [1, "two"]}
    assert list(loaded.to_dict().items()) == list(expected.items())
    assert math.copysign(1, loaded.extra["negzero"]) == -1
    [(again, _)] = backend.load_with_timestamps("s")
    assert again == loaded


def test_extras_survive_update_and_remove(backend):
    backend.append("s", ChatMessage("user", "one", meta={"k": [1, 2]}))
    backend.append("s", A("two"))
    assert backend.update_last("s", ChatMessage("assistant", "TWO", tokens=7))
    assert backend.load("s") == [
        ChatMessage("user", "one", meta={"k": [1, 2]}),
        ChatMessage("assistant", "TWO", tokens=7),
    ]
    assert backend.remove_last("s")
    assert backend.load("s") == [ChatMessage("user", "one", meta={"k": [1, 2]})]


def test_remove_last_until_empty(backend):
    for i in range(3):
        backend.append("s", U(str(i)))
    assert backend.remove_last("s")
    assert backend.load("s") == [U("0"), U("1")]
    assert backend.remove_last("s")
    assert backend.remove_last("s")
    assert backend.remove_last("s") is False
    assert backend.load("s") == []
    assert backend.session_exists("s")  # emptied, still listed
    assert backend.list_sessions() == ["s"]


def test_pop_last_returns_what_it_removes(backend):
    assert backend.pop_last("s") is None
    assert not backend.session_exists("s")  # a pop creates nothing
    backend.append_many("s", [U("0"), EXTRAS, A("2")])
    assert backend.pop_last("s") == A("2")
    popped = backend.pop_last("s")
    assert popped.to_dict() == {k: (list(v) if k == "tuple" else v) for k, v in EXTRAS.items()}
    assert backend.load("s") == [U("0")]
    assert backend.pop_last("s") == U("0")
    assert backend.pop_last("s") is None
    assert backend.session_exists("s")  # emptied, still listed


@pytest.mark.parametrize("damaged", [b"not json", b'{"role":"user"}', b"\xff\xfe"])
def test_damaged_records_never_count_nor_get_removed(backend, damaged):
    """A record another program damaged is skipped by every backend alike: never counted toward
    ``limit``, never returned, never removed by ``remove_last``/``pop_last``."""
    backend.append_many("s", [U("a"), U("b")])
    add_damaged(backend, "s", damaged)
    backend.append("s", U("c"))
    add_damaged(backend, "s", damaged)
    assert backend.load("s", limit=2) == [U("b"), U("c")]
    assert backend.load("s", limit=1) == [U("c")]
    assert backend.pop_last("s") == U("c")
    assert backend.load("s", limit=2) == [U("a"), U("b")]
    assert backend.remove_last("s") is True
    assert backend.update_last("s", U("A")) is True
    assert backend.load("s") == [U("A")]
    assert backend.pop_last("s") == U("A")
    assert backend.pop_last("s") is None and backend.remove_last("s") is False
    assert backend.load("s", limit=5) == []


def test_concurrent_pops_return_each_message_once(kind, tmp_path):
    """Threads, each with its own backend object on one session, pop until it is empty: every
    message comes back exactly once (a read-then-remove pop duplicates one and loses another)."""
    import threading

    first = make_backend(kind, tmp_path / "ws")
    total = 200
    first.append_many("s", [U(str(i)) for i in range(total)])
    prefix = getattr(first, "prefix", None)
    options = {} if prefix is None else {"prefix": prefix}
    backends = [first] + [make_backend(kind, tmp_path / "ws", **options) for _ in range(3)]
    popped: list[list[str]] = [[] for _ in backends]
    start = threading.Barrier(len(backends))

    def pop_all(index: int) -> None:
        start.wait()
        while (message := backends[index].pop_last("s")) is not None:
            popped[index].append(message.content)

    threads = [threading.Thread(target=pop_all, args=(i,)) for i in range(len(backends))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [content for contents in popped for content in contents]
    assert sorted(everything, key=int) == [str(i) for i in range(total)]
    for contents in popped:  # each saw the newest first
        assert contents == sorted(contents, key=int, reverse=True)
    for opened in backends:
        close(opened)


def test_update_last(backend):
    backend.append("s", U("q"))
    backend.append("s", A("draft"))
    assert backend.update_last("s", {"role": "assistant", "content": "final"})
    assert backend.load("s") == [U("q"), A("final")]
    assert backend.get_session_metadata("s").message_count == 2


def test_clear_keeps_the_session(backend):
    backend.append_many("s", [U("a"), A("b"), U("c")])
    assert backend.clear_messages("s") == 3
    assert backend.load("s") == []
    assert backend.list_sessions() == ["s"]
    assert backend.session_exists("s")
    assert backend.get_session_metadata("s").message_count == 0
    assert backend.clear_messages("s") == 0
    backend.append("s", U("again"))
    assert backend.load("s") == [U("again")]


def test_delete(backend):
    backend.append("s", U("a"))
    backend.append("t", U("b"))
    assert backend.delete_session("s") is True
    assert backend.delete_session("s") is False
    assert backend.list_sessions() == ["t"]
    assert not backend.session_exists("s")
    assert backend.load("s") == []
    assert backend.get_session_metadata("s") is None
    backend.append("s", U("new"))
    assert backend.load("s") == [U("new")]


def test_keys_are_kept_exactly_and_never_collide(backend):
    for index, key in enumerate(WEIRD_KEYS):
        backend.append(key, U(str(index)))
    assert backend.list_sessions() == sorted(WEIRD_KEYS)
    for index, key in enumerate(WEIRD_KEYS):
        assert backend.load(key) == [U(str(index))], key
        assert backend.session_exists(key)
    assert {m.key for m in backend.list_sessions_with_metadata()} == set(WEIRD_KEYS)


def test_append_many(backend):
    backend.append("s", U("first"))
    backend.append_many("s", (m for m in [A("a"), {"role": "user", "content": "b", "x": 1}]))
    assert backend.load("s") == [U("first"), A("a"), ChatMessage("user", "b", x=1)]


@pytest.mark.parametrize(
    ("bad", "exception"),
    [
        ({"role": "user"}, ValueError),
        ({"role": "user", "content": "x", "v": math.nan}, ValueError),
        ({"role": "user", "content": "x", "v": object()}, TypeError),
        ({"role": "user", "content": "\ud800"}, ValueError),
        (42, TypeError),
    ],
)
def test_append_many_is_all_or_nothing(backend, bad, exception):
    backend.append("s", U("kept"))
    before = dump(backend)
    with pytest.raises(exception):
        backend.append_many("s", [U("a"), bad, U("b")])
    with pytest.raises(exception):
        backend.append_many("new", [U("a"), bad])
    assert dump(backend) == before
    assert not backend.session_exists("new")


def test_metadata_counts(backend):
    backend.append_many("a", [U("1"), A("2"), U("3")])
    backend.append("b", U("1"))
    backend.append("c", U("x"))
    backend.clear_messages("c")
    assert backend.remove_last("a")
    counts = {m.key: m.message_count for m in backend.list_sessions_with_metadata()}
    assert counts == {"a": 2, "b": 1, "c": 0}
    metadata = backend.get_session_metadata("a")
    assert metadata.key == "a"
    assert metadata.message_count == 2
    for when in (metadata.created_at, metadata.last_activity):
        assert when is not None
        assert when.utcoffset() is not None
        assert when.tzinfo.utcoffset(when) == timezone.utc.utcoffset(when)
    assert metadata.created_at <= metadata.last_activity


def test_timestamps_are_utc_or_none(backend):
    backend.append_many("s", [U("a"), A("b")])
    pairs = backend.load_with_timestamps("s")
    assert [m for m, _ in pairs] == [U("a"), A("b")]
    for _, when in pairs:
        assert when is None or when.utcoffset() == timezone.utc.utcoffset(when)


# --- bad input: same exception, nothing changed -------------------------------------------------

BAD_KEYS = [
    (None, TypeError),
    (1, TypeError),
    (b"s", TypeError),
    ("", ValueError),
    ("\ud800", ValueError),
    ("a" * 250, ValueError),
    ("é" * 42, ValueError),
]

KEY_CALLS = {
    "load": lambda b, k: b.load(k),
    "load_limit": lambda b, k: b.load(k, limit=1),
    "load_with_timestamps": lambda b, k: b.load_with_timestamps(k),
    "append": lambda b, k: b.append(k, U("x")),
    "append_many": lambda b, k: b.append_many(k, [U("x")]),
    "append_many_empty": lambda b, k: b.append_many(k, []),
    "remove_last": lambda b, k: b.remove_last(k),
    "update_last": lambda b, k: b.update_last(k, U("x")),
    "compact": lambda b, k: b.compact(k),
    "clear_messages": lambda b, k: b.clear_messages(k),
    "delete_session": lambda b, k: b.delete_session(k),
    "session_exists": lambda b, k: b.session_exists(k),
    "get_session_metadata": lambda b, k: b.get_session_metadata(k),
}


@pytest.fixture
def populated(backend):
    backend.append("s", U("one"))
    backend.append("s", ChatMessage("assistant", "two", name="bot"))
    backend.append("a/b", U("other"))
    backend.append("empty", U("x"))
    backend.clear_messages("empty")
    return backend


@pytest.mark.parametrize(("key", "exception"), BAD_KEYS)
@pytest.mark.parametrize("method", sorted(KEY_CALLS))
def test_bad_key(populated, method, key, exception):
    before = dump(populated)
    with pytest.raises(exception) as info:
        KEY_CALLS[method](populated, key)
    assert str(info.value)
    assert dump(populated) == before


BAD_MESSAGES = [
    pytest.param(None, TypeError, id="None"),
    pytest.param("user: hi", TypeError, id="str"),
    pytest.param(b'{"role":"user","content":"x"}', TypeError, id="bytes"),
    pytest.param({"role": "user"}, ValueError, id="no-content"),
    pytest.param({"content": "x"}, ValueError, id="no-role"),
    pytest.param({"role": 1, "content": "x"}, TypeError, id="role-int"),
    pytest.param({"role": "user", "content": ["x"]}, TypeError, id="content-list"),
    pytest.param({"role": "user", "content": "x", "v": math.inf}, ValueError, id="inf"),
    pytest.param({"role": "user", "content": "x", "v": {1, 2}}, TypeError, id="set"),
    pytest.param({"role": "user", "content": "x", "v": {1: "a"}}, TypeError, id="int-key"),
    pytest.param({"role": "user", "content": "a\udc00"}, ValueError, id="surrogate"),
    pytest.param({"role": "user", "content": "x", "v": 10**4300}, ValueError, id="long-int"),
]


@pytest.mark.parametrize(("message", "exception"), BAD_MESSAGES)
@pytest.mark.parametrize("call", ["append", "update_last", "append_many"])
def test_bad_message(populated, call, message, exception):
    before = dump(populated)
    with pytest.raises(exception):
        if call == "append_many":
            populated.append_many("s", [U("fine"), message])
        else:
            getattr(populated, call)("s", message)
    with pytest.raises(exception):
        if call == "append_many":
            populated.append_many("new", [message])
        else:
            getattr(populated, call)("new", message)
    assert dump(populated) == before


def test_too_deep_message(backend):
    deep: object = 0
    for _ in range(128):
        deep = [deep]
    with pytest.raises(ValueError):
        backend.append("s", {"role": "user", "content": "x", "v": deep})
    assert backend.list_sessions() == []


# --- the same random history on every backend ---------------------------------------------------


def test_same_answers_on_every_backend(tmp_path):
    """A seeded random sequence of calls gives the same result on all three backends."""
    backends = [make_backend(kind, tmp_path / kind) for kind in BACKENDS]
    rng = random.Random(20240601)
    keys = ["a", "b/c", "ключ"]
    try:
        for step in range(400):
            key = rng.choice(keys)
            op = rng.choice(
                ["append", "append", "append_many", "remove", "update", "load", "clear", "delete"]
            )
            message = ChatMessage(rng.choice(["user", "assistant"]), f"m{step}", step=step)
            limit = rng.choice([None, 0, 1, 3])
            results = []
            for backend in backends:
                if op == "append":
                    result: object = backend.append(key, message)
                elif op == "append_many":
                    result = backend.append_many(key, [message, U(f"n{step}")])
                elif op == "remove":
                    result = backend.remove_last(key)
                elif op == "update":
                    result = backend.update_last(key, message)
                elif op == "load":
                    result = backend.load(key, limit=limit)
                elif op == "clear":
                    result = backend.clear_messages(key)
                else:
                    result = backend.delete_session(key)
                results.append((result, backend.list_sessions(), backend.load(key)))
            assert all(r == results[0] for r in results), (step, op, key)
        dumps = [dump(backend) for backend in backends]
        assert all(d == dumps[0] for d in dumps)
    finally:
        for backend in backends:
            close(backend)


# --- metadata, where the backend keeps it --------------------------------------------------------


def test_names_and_aliases(backend):
    require(backend, "set_session_name", "set_session_agent_alias")
    backend.append("s", U("x"))
    assert backend.get_session_name("s") is None
    backend.set_session_name("s", "Support chat")
    backend.set_session_agent_alias("s", "helper")
    assert backend.get_session_name("s") == "Support chat"
    assert backend.get_session_agent_alias("s") == "helper"
    backend.set_session_name("s", "Renamed")
    metadata = backend.get_session_metadata("s")
    assert (metadata.name, metadata.agent_alias, metadata.message_count) == ("Renamed", "helper", 1)
    assert backend.load("s") == [U("x")]


def test_context_none_leaves_a_field(backend):
    require(backend, "set_session_context")
    backend.append("s", U("x"))
    backend.set_session_context("s", channel_id="c1", room_id="r1", sender_id="u1")
    backend.set_session_context("s", room_id="r2")
    metadata = backend.get_session_metadata("s")
    assert (metadata.channel_id, metadata.room_id, metadata.sender_id) == ("c1", "r2", "u1")


def test_state_cycle(backend):
    require(backend, "set_session_state", "get_session_state", "list_running_sessions")
    backend.append("s", U("x"))
    backend.set_session_state("s", "running", "turn-1")
    state = backend.get_session_state("s")
    assert (state.state, state.turn_id) == ("running", "turn-1")
    assert state.turn_started_at is not None
    assert [m.key for m in backend.list_running_sessions()] == ["s"]
    backend.set_session_state("s", "idle")
    state = backend.get_session_state("s")
    assert (state.state, state.turn_id, state.turn_started_at) == ("idle", None, None)
    assert backend.list_running_sessions() == []
    with pytest.raises(ValueError):
        backend.set_session_state("s", "paused")
    assert backend.get_session_state("s").state == "idle"


def test_set_session_times(backend):
    """What an importer sets (``turnlog.migrate`` moves a session's times with it): the getters,
    stuck turns and stale cleanup then all go by the times given."""
    old = datetime(2020, 5, 1, 8, 30, 0, 123456, tzinfo=timezone.utc)
    backend.append("s", U("x"))
    backend.set_session_state("s", "running", "t")
    backend.append("idle", U("y"))
    assert backend.set_session_times(
        "s",
        created_at=old,
        last_activity=old + timedelta(hours=2),
        turn_started_at=old + timedelta(hours=1),
    )
    metadata = backend.get_session_metadata("s")
    assert (metadata.created_at, metadata.last_activity) == (old, old + timedelta(hours=2))
    assert metadata.message_count == 1
    assert backend.get_session_state("s") == SessionState("running", "t", old + timedelta(hours=1))
    assert [m.key for m in backend.list_stuck_sessions(3600)] == ["s"]
    assert backend.load("s") == [U("x")]
    # None leaves a time as it is; an idle session has no turn to date.
    tokyo = timezone(timedelta(hours=9))
    assert backend.set_session_times("s", last_activity=datetime(2021, 1, 1, 9, tzinfo=tokyo))
    metadata = backend.get_session_metadata("s")
    assert metadata.created_at == old
    assert metadata.last_activity == datetime(2021, 1, 1, tzinfo=timezone.utc)
    assert backend.set_session_times("idle", turn_started_at=old)
    assert backend.get_session_state("idle") == SessionState("idle")
    assert backend.set_session_times("missing", created_at=old) is False
    assert not backend.session_exists("missing")
    before = dump(backend), backend.get_session_metadata("s")
    with pytest.raises(ValueError, match="timezone-aware"):
        backend.set_session_times("s", created_at=old, last_activity=datetime(2020, 1, 1))
    with pytest.raises(TypeError):
        backend.set_session_times("s", turn_started_at="2020-01-01T00:00:00+00:00")
    assert (dump(backend), backend.get_session_metadata("s")) == before
    assert backend.cleanup_stale(24) == 1
    assert backend.list_sessions() == ["idle"]


def test_delete_removes_metadata(backend):
    require(backend, "set_session_name")
    backend.append("s", U("x"))
    backend.set_session_name("s", "n")
    assert backend.delete_session("s")
    assert backend.get_session_name("s") is None
    backend.append("s", U("y"))
    assert backend.get_session_name("s") is None


def test_search_finds_sessions(backend):
    require(backend, "search")
    backend.append("a", U("The deployment FAILED again"))
    backend.append("b", U("all good"))
    found = backend.search(SessionQuery(keyword="failed"))
    assert [m.key for m in found] == ["a"]
    assert backend.search(SessionQuery(keyword="nothing-like-this")) == []
    assert backend.search(SessionQuery(keyword="failed", limit=2**64)) == found
    assert len(backend.search(SessionQuery(limit=2**64))) == 2


SEARCH_CONTENTS = {
    "deploy": ["The Deployment FAILED again", "ok"],
    "split": ["deployment is fine", "nothing failed here? no"],
    "cyrillic": ["ПРИВЕТ, Мир", "ещё раз"],
    "greek": ["ΟΔΟΣ ΣΟΦΙΑΣ"],
    "symbols": ['say "hi" AND bye (NEAR) 50% off_peak \\ done', "tab\there"],
    "odd": ["300 \u212aELVIN \u0130stanbul", "😀 emoji 👩‍💻 ZWJ"],
    "extra": [ChatMessage("user", "plain", note="deployment failed")],
    "nul": ["before\x00after the NUL", "x\x00"],
}
SEARCH_KEYWORDS = [
    "deployment failed",
    "PLOY",
    "ailed",
    "ment fail",
    "failed?",
    "привет",
    "мир привет",
    "т,",
    "οδος",
    "σοφιας",
    "σοφιασ",
    '"hi"',
    "AND",
    "(near)",
    "50%",
    "off_peak",
    "\\",
    "hi",
    "%",
    "_",
    "a",
    "kelvin",
    "i\u0307stanbul",
    "istanbul",
    "😀",
    "👩‍💻",
    "tab\there",
    "note",
    "after",
    "before nul",
    "e\x00a",
    "user",
    "zzz",
    "no such words",
    "",
    "   ",
]


def test_search_answers_alike(tmp_path):
    """Every backend, and the SQLite index and scan alike, find the same sessions."""
    from turnlog.backends.sqlite import SqliteSessionBackend

    backends = [make_backend(kind, tmp_path / kind) for kind in BACKENDS]
    backends.append(SqliteSessionBackend(tmp_path / "sqlite", fts=False))
    try:
        for backend in backends:
            for key, contents in SEARCH_CONTENTS.items():
                backend.append_many(
                    key, [c if isinstance(c, ChatMessage) else U(c) for c in contents]
                )
        for keyword in SEARCH_KEYWORDS:
            for match in ("all", "any"):
                answers = [
                    sorted(m.key for m in b.search(SessionQuery(keyword=keyword), match=match))
                    for b in backends
                ]
                assert all(answer == answers[0] for answer in answers), (keyword, match, answers)
        assert backends[BACKENDS.index("sqlite")].fts_enabled and not backends[-1].fts_enabled
    finally:
        for backend in backends:
            close(backend)


METADATA_CALLS = {
    "name": lambda b, text: b.set_session_name("new", text),
    "alias": lambda b, text: b.set_session_agent_alias("new", text),
    "context": lambda b, text: b.set_session_context("new", room_id=text),
    "turn_id": lambda b, text: b.set_session_state("new", "running", text),
}


@pytest.mark.parametrize("call", sorted(METADATA_CALLS))
def test_refused_metadata_creates_no_session(backend, call):
    """A lone surrogate cannot be stored: the setter raises ValueError and, like any refused
    call, changes nothing (here: does not create the session it would have created)."""
    backend.append("s", U("x"))
    before = dump(backend)
    with pytest.raises(ValueError):
        METADATA_CALLS[call](backend, "bad \ud800")
    assert dump(backend) == before


def test_absurd_amounts_and_times_are_answers_or_clear_errors(backend):
    """No OverflowError: an age older than year 1 is a cutoff nothing is older than, and a time
    no UTC datetime can hold is a ValueError that changes nothing."""
    backend.append("s", U("x"))
    backend.set_session_state("s", "running", "t")
    assert backend.cleanup_stale(1e300) == 0
    assert backend.list_stuck_sessions(1e300) == []
    assert backend.load("s") == [U("x")]
    before = backend.get_session_metadata("s")
    too_early = datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(ValueError, match="out of range"):
        backend.set_session_times("s", created_at=too_early)
    assert backend.get_session_metadata("s") == before


def test_created_at_is_never_after_last_activity(backend):
    for i in range(20):
        backend.append(f"s{i}", U("x"))
        metadata = backend.get_session_metadata(f"s{i}")
        assert metadata.created_at <= metadata.last_activity, metadata
