"""``RedisSessionBackend`` and its asyncio twin against real Redis servers (never a mock): a
standalone ``redis-server`` and a 3-master Redis Cluster, both started by the fixtures on loopback
ports (``redis_server.py``). Without ``redis-server`` the tests skip, unless ``CI`` is set: then
they fail.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import random
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from redis_server import (
    RedisCluster,
    RedisServer,
    free_port,
    in_ci,
    message_text,
    remove_worker,
    restart_writer,
    server_binary,
    unavailable,
)

try:
    import redis
except ImportError:  # pragma: no cover - the dev requirements install it
    if in_ci():
        raise
    pytest.skip("redis-py is not installed (pip install 'turnlog[redis]')", allow_module_level=True)

import redis.asyncio.retry
import redis.cluster
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

import turnlog
from turnlog import ChatMessage, SessionQuery
from turnlog.backends import format as _format
from turnlog.backends.redis import (
    AsyncRedisSessionBackend,
    RedisSessionBackend,
    RedisUnavailableError,
)
from turnlog.backends.redis.effects import _Eval
from turnlog.backends.redis.scripts import _OP_CAP, _OP_KEEP_MS
from turnlog.pure import SessionStore as PureStore

U = ChatMessage.user
A = ChatMessage.assistant
KINDS = ("standalone", "cluster")

# Messages whose encoding exercises every rule of the format.
TRICKY = [
    U("hello"),
    ChatMessage("assistant", 'héllo\n"q" \\ 😀 \x00 \x1f \u2028', name="bot"),
    ChatMessage("tool", "", tool_calls=[{"id": "c1", "args": {"z": 1, "a": [True, None]}}]),
    {"role": "user", "content": "x", "big": 2**100, "huge": -(10**4299), "tiny": 5e-324},
    {"role": "user", "content": "x", "negzero": -0.0, "": "empty key", "tuple": (1, "two")},
    {"content": "order", "role": "user", "z": 1, "a": 2},
]

# Elements another program might push: valid or not exactly as the JSONL store reads the line.
FOREIGN = [
    b"not json",
    b"\xff\xfe",
    b"",
    b'{"role":"user"}',
    b'{"role":"a","role":"b","content":"dup"}',
    b'{"role":"user","content":"x","v":NaN}',
    b'{"role":"user","content":"\\ud800"}',
    b'\xef\xbb\xbf{"role":"user","content":"bom"}',
    b'  {"role":"user","content":"padded"}\t',
    b'{"role":"user","content":"ok","n":1e400}',
    b"[1,2]",
]


# --- servers ------------------------------------------------------------------------------------


def _start(make):
    if server_binary() is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    try:
        return make()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        unavailable(f"cannot start redis-server: {error}")


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    started = _start(lambda: RedisServer(tmp_path_factory.mktemp("redis")).start())
    yield started
    started.kill()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    started = _start(lambda: RedisCluster(tmp_path_factory.mktemp("cluster")).start())
    yield started
    started.stop()


@pytest.fixture
def open_backend(request):
    """``open_backend(kind, **options)``: a backend with a prefix of its own, closed after."""
    opened = []

    def make(kind="standalone", **options):
        place = request.getfixturevalue("server" if kind == "standalone" else "cluster")
        options.setdefault("prefix", f"t{uuid.uuid4().hex[:12]}:")
        backend = RedisSessionBackend(place.url, cluster=kind == "cluster", **options)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def backend(open_backend, kind):
    return open_backend(kind)


class Clock:
    """An injectable clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def raw_keys(backend):
    return sorted(backend.client.keys(backend.prefix + "*"))


def _line(message):
    """The element turnlog stores for ``message``: its JSONL line without the newline."""
    return _format.encode_message(message)[:-1]


# --- packaging ----------------------------------------------------------------------------------


def test_import_turnlog_does_not_import_redis():
    code = "import sys, turnlog; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- every method -------------------------------------------------------------------------------


def test_messages(backend):
    assert backend.load("s") == [] and backend.list_sessions() == []
    assert backend.remove_last("s") is False and backend.update_last("s", U("x")) is False
    assert backend.clear_messages("s") == 0 and backend.delete_session("s") is False
    backend.append_many("s", [])
    backend.compact("s")
    # None of those created a session. clear_messages and delete_session recorded their answers
    # (resent after another client's write, they must not clear or delete it); those expire.
    ops = [f"{backend.prefix}{{s}}:{name}".encode() for name in ("op-order", "ops")]
    assert raw_keys(backend) == ops
    assert 0 < backend.client.pttl(ops[0]) <= _OP_KEEP_MS and not backend.session_exists("s")

    backend.append("s", U("one"))
    backend.append_many("s", (m for m in [A("two"), {"role": "user", "content": "three", "x": 1}]))
    three = ChatMessage("user", "three", x=1)
    assert backend.load("s") == [U("one"), A("two"), three]
    assert backend.load("s", limit=2) == [A("two"), three]
    assert backend.load("s", limit=0) == []
    assert backend.load("s", limit=9) == [U("one"), A("two"), three]
    assert backend.load_with_timestamps("s") == [(U("one"), None), (A("two"), None), (three, None)]
    assert backend.update_last("s", A("THREE"))
    assert backend.load("s") == [U("one"), A("two"), A("THREE")]
    assert backend.remove_last("s")
    assert backend.load("s") == [U("one"), A("two")]
    assert backend.session_exists("s") and backend.list_sessions() == ["s"]
    assert backend.clear_messages("s") == 2
    assert backend.load("s") == [] and backend.list_sessions() == ["s"]
    assert backend.get_session_metadata("s").message_count == 0
    backend.append("t", U("x"))
    assert backend.delete_session("s") is True
    assert backend.list_sessions() == ["t"] and not backend.session_exists("s")
    assert backend.get_session_metadata("s") is None


def test_metadata_and_state(open_backend, kind):
    clock = Clock()
    backend = open_backend(kind, clock=clock)
    backend.append("a", U("1"))
    created = clock.now
    clock.advance(seconds=5)
    backend.append_many("b", [U("1"), A("2")])
    backend.set_session_name("a", "Support")
    backend.set_session_agent_alias("a", "helper")
    backend.set_session_context("a", channel_id="c1", room_id="r1", sender_id="u1")
    backend.set_session_context("a", room_id="r2")
    assert backend.get_session_name("a") == "Support"
    assert backend.get_session_agent_alias("a") == "helper"
    assert backend.get_session_name("nobody") is None
    meta = backend.get_session_metadata("a")
    assert (meta.name, meta.agent_alias, meta.channel_id, meta.room_id, meta.sender_id) == (
        "Support",
        "helper",
        "c1",
        "r2",
        "u1",
    )
    assert meta.created_at == meta.last_activity == created  # setters are not activity
    assert [m.key for m in backend.list_sessions_with_metadata()] == ["b", "a"]
    assert backend.get_session_metadata("b").message_count == 2

    # A setter on a missing session creates it (as the JSONL and SQLite stores do).
    backend.set_session_name("new", "fresh")
    assert backend.session_exists("new") and backend.load("new") == []

    assert backend.get_session_state("a").state == "idle"
    assert backend.get_session_state("missing") is None
    backend.set_session_state("a", "running", "turn-1")
    state = backend.get_session_state("a")
    assert (state.state, state.turn_id, state.turn_started_at) == ("running", "turn-1", clock.now)
    assert [m.key for m in backend.list_running_sessions()] == ["a"]
    assert backend.list_stuck_sessions(60) == []
    clock.advance(seconds=61)
    assert [m.key for m in backend.list_stuck_sessions(60)] == ["a"]
    backend.set_session_state("a", "error")
    state = backend.get_session_state("a")
    assert (state.state, state.turn_id) == ("error", "turn-1")
    assert backend.list_running_sessions() == [] and backend.list_stuck_sessions(0) == []
    backend.set_session_state("a", "running")
    assert backend.get_session_state("a").turn_id is None
    backend.set_session_state("a", "idle")
    assert backend.get_session_state("a") == turnlog.SessionState("idle", None, None)
    with pytest.raises(ValueError):
        backend.set_session_state("a", "paused")
    with pytest.raises(TypeError):
        backend.set_session_state("a", "running", 7)
    assert backend.list_running_sessions() == []

    # Stale cleanup, by last activity (the index's score, checked again by the script).
    clock.advance(hours=2)
    backend.append("fresh", U("x"))
    assert backend.cleanup_stale(1) == 3  # a, b, new
    assert backend.list_sessions() == ["fresh"]
    assert backend.get_session_name("a") is None
    with pytest.raises(ValueError):
        backend.cleanup_stale(-1)
    assert backend.cleanup_stale(0) == 0  # same instant: not older than now


def test_search(open_backend, kind, tmp_path):
    backend = open_backend(kind)
    reference = PureStore(tmp_path / "ws")
    contents = {
        "deploy": ["The Deployment FAILED again", "ok"],
        "split": ["deployment is fine", "nothing failed here"],
        "cyrillic": ["ПРИВЕТ, Мир"],
        "extra": [ChatMessage("user", "plain", note="deployment failed")],
    }
    for store in (backend, reference):
        for key, texts in contents.items():
            store.append_many(key, [t if isinstance(t, ChatMessage) else U(t) for t in texts])
    for keyword in ["deployment failed", "PLOY", "привет мир", "note", "zzz", "", "  ", "ok"]:
        for match in ("all", "any"):
            query = SessionQuery(keyword=keyword)
            got = sorted(m.key for m in backend.search(query, match=match))
            assert got == sorted(m.key for m in reference.search(query, match=match)), keyword
    assert len(backend.search(SessionQuery(keyword="deployment", limit=1), match="any")) == 1
    with pytest.raises(ValueError):
        backend.search(SessionQuery(keyword="x"), match="some")
    with pytest.raises(TypeError):
        backend.search("x")


def _us(when):
    """``when`` as the microseconds since the epoch the hash and the sorted sets hold."""
    return (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def test_set_session_times_moves_the_sorted_sets(open_backend, kind):
    """The given times go to the hash and to the sorted sets' scores together, back in time too
    (on a Cluster the follow-up ZADD is exact, not GT as after an append)."""
    backend = open_backend(kind)
    client, prefix = backend.client, backend.prefix
    backend.append("s", U("x"))
    backend.set_session_state("s", "running", "t")
    old = datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=timezone.utc)
    assert backend.set_session_times(
        "s",
        created_at=old,
        last_activity=old + timedelta(hours=1),
        turn_started_at=old + timedelta(minutes=30),
    )
    meta = client.hgetall(backend.meta_key("s"))
    assert [int(meta[f]) for f in (b"created_at", b"last_activity", b"turn_started_at")] == [
        _us(old),
        _us(old + timedelta(hours=1)),
        _us(old + timedelta(minutes=30)),
    ]
    assert client.zscore(prefix + "sessions", "s") == _us(old + timedelta(hours=1))
    assert client.zscore(prefix + "running", "s") == _us(old + timedelta(minutes=30))
    # A turn in error is dated, but is not in the running set; before the epoch is a time too.
    backend.set_session_state("s", "error")
    before_epoch = datetime(1969, 7, 20, 20, 17, tzinfo=timezone.utc)
    assert backend.set_session_times("s", last_activity=before_epoch, turn_started_at=old)
    assert backend.get_session_state("s") == turnlog.SessionState("error", "t", old)
    assert client.zscore(prefix + "running", "s") is None
    assert backend.get_session_metadata("s").last_activity == before_epoch
    assert client.zscore(prefix + "sessions", "s") == _us(before_epoch)
    assert backend.repair_index() == 0
    assert backend.cleanup_stale(1) == 1 and backend.list_sessions() == []


def test_expire_after(open_backend):
    backend = open_backend(expire_after=30)
    backend.append("s", U("x"))
    for key in (backend.messages_key("s"), backend.meta_key("s")):
        assert 0 < backend.client.pttl(key) <= 30_000
    short = open_backend(expire_after=0.05)
    short.append("gone", U("x"))
    short.set_session_state("gone", "running", "t")
    time.sleep(0.2)
    assert short.list_sessions() == [] and short.list_running_sessions() == []
    assert short.load("gone") == []
    assert short.client.zcard(short.prefix + "sessions") == 1  # a dangling entry, filtered out
    assert short.cleanup_stale(0) == 0  # Redis deleted it: cleanup only drops the entries
    assert short.client.exists(short.prefix + "sessions", short.prefix + "running") == 0


# --- the format ---------------------------------------------------------------------------------


def test_elements_are_the_jsonl_lines(open_backend, kind, tmp_path):
    backend = open_backend(kind)
    store = turnlog.SessionStore(tmp_path / "ws")
    for message in TRICKY:
        backend.append("k/ключ", message)
        store.append("k/ключ", message)
    backend.append_many("k/ключ", TRICKY)
    store.append_many("k/ключ", TRICKY)
    elements = backend.client.lrange(backend.messages_key("k/ключ"), 0, -1)
    path = tmp_path / "ws" / "sessions" / (_format.key_to_name("k/ключ") + ".jsonl")
    assert b"".join(element + b"\n" for element in elements) == path.read_bytes()
    assert elements[0] == b'{"role":"user","content":"hello"}'
    assert backend.load("k/ключ") == store.load("k/ключ")


def test_key_layout(open_backend, kind):
    backend = open_backend(kind)
    backend.append("a/b", U("x"))
    prefix = backend.prefix
    assert backend.messages_key("a/b") == f"{prefix}{{a%2Fb}}:messages"
    assert backend.meta_key("a/b") == f"{prefix}{{a%2Fb}}:meta"
    client = backend.client
    assert client.type(backend.messages_key("a/b")) == b"list"
    assert client.type(backend.meta_key("a/b")) == b"hash"
    meta = client.hgetall(backend.meta_key("a/b"))
    # The index is updated with the messages: same activity, to the microsecond.
    assert client.zscore(prefix + "sessions", "a%2Fb") == float(meta[b"last_activity"])
    assert redis.cluster.key_slot(backend.messages_key("a/b").encode()) == redis.cluster.key_slot(
        backend.meta_key("a/b").encode()
    )


def test_foreign_elements_are_skipped_like_corrupt_lines(backend, tmp_path):
    """The same raw lines in a JSONL file and a Redis list load the same, and the edits act on
    the same message."""
    rng = random.Random(7)
    valid = [_format.encode_message(U(f"m{i}"))[:-1] for i in range(12)]
    elements = valid + FOREIGN * 2
    rng.shuffle(elements)
    elements += FOREIGN[:4]  # the tail is invalid: edits must reach back past it
    reference = PureStore(tmp_path / "ws")
    path = tmp_path / "ws" / "sessions" / "s.jsonl"
    path.write_bytes(b"".join(e + b"\n" for e in elements))
    backend.client.rpush(backend.messages_key("s"), *elements)
    for limit in [None, 0, 1, 2, 3, 5, 8, 12, 13, 40]:
        assert backend.load("s", limit=limit) == reference.load("s", limit=limit), limit
    assert any(m.content == "padded" for m in backend.load("s"))
    for step in range(14):
        if step % 3 == 0:
            answers = (
                backend.update_last("s", A(f"u{step}")),
                reference.update_last("s", A(f"u{step}")),
            )
        else:
            answers = (backend.remove_last("s"), reference.remove_last("s"))
        assert answers[0] == answers[1], step
        assert backend.load("s") == reference.load("s"), step
    # The invalid elements are all still there, in place; compact removes them.
    left = backend.client.lrange(backend.messages_key("s"), 0, -1)
    assert [e for e in left if _format.parse_line(e) is None] == [
        e for e in elements if _format.parse_line(e) is None
    ]
    backend.compact("s")
    reference.compact("s")
    left = backend.client.lrange(backend.messages_key("s"), 0, -1)
    assert all(_format.parse_line(e) is not None for e in left)
    assert backend.load("s") == reference.load("s")


def test_elements_are_checked_by_the_jsonl_validator_in_batches(backend, monkeypatch):
    """Each list of elements read is checked by one ``_format.parse_lines`` call: the Rust
    parser of the JSONL store when the native module is in use (never the Python one then)."""
    elements = [_line(U(f"m{i}")) for i in range(10)] + FOREIGN[:8]  # those 8 are all invalid
    backend.client.rpush(backend.messages_key("s"), *elements)
    batches = []
    parse_lines = _format.parse_lines

    def counted(lines):
        batches.append(len(lines))
        return parse_lines(lines)

    monkeypatch.setattr(_format, "parse_lines", counted)
    if _format.native is not None:
        monkeypatch.setattr(_format, "parse_line", None)  # calling it fails the test
    assert len(backend.load("s")) == 10
    assert backend.load("s", limit=2) == [U("m8"), U("m9")]  # 2 elements, then 16
    assert backend.remove_last("s")  # the last 8 are all invalid: then the whole list
    backend.compact("s")
    assert batches == [18, 2, 16, 8, 18, 17]
    assert backend.load("s") == [U(f"m{i}") for i in range(9)]


# --- cluster ------------------------------------------------------------------------------------


def test_cluster_spreads_sessions_over_nodes(open_backend, cluster):
    backend = open_backend("cluster")
    keys = [f"user{i}" for i in range(48)]
    for key in keys:
        backend.append(key, U(key))
        backend.set_session_name(key, key.upper())
    slots = {redis.cluster.key_slot(backend.messages_key(k).encode()) for k in keys}
    assert len(slots) > 40
    for node in cluster.nodes:
        with redis.Redis(host="127.0.0.1", port=node.port) as direct:
            owned = [k for k in direct.scan_iter(match=backend.prefix + "{*}:messages")]
            assert len(owned) >= 5, node.port  # every master holds a share
    assert backend.list_sessions() == sorted(keys)
    assert [m.key for m in backend.search(SessionQuery("user47"))] == ["user47"]
    assert backend.get_session_name("user3") == "USER3"
    assert backend.cleanup_stale(1) == 0


def test_cluster_index_lag_is_repaired(open_backend):
    """A client that dies between the per-session script and the index update leaves the index
    behind; listings filter what is gone, and repair_index() catches up."""
    backend = open_backend("cluster")
    backend.append("kept", U("x"))
    name = "crashed"
    backend._run(_only_script(backend, "append", name, [b'{"role":"user","content":"x"}']))
    backend._run(
        _only_script(backend, "set_meta", name, ["turn_started_at", "+", 0, "state", "running"])
    )
    assert backend.list_sessions() == ["kept"]  # not indexed yet
    assert backend.load(name) == [U("x")]  # but its messages are there
    assert backend.list_running_sessions() == []
    backend.client.delete(*[backend.messages_key("kept"), backend.meta_key("kept")])
    assert backend.list_sessions() == []  # a dangling index entry is filtered out
    assert backend.repair_index() == 3  # indexed "crashed" twice, dropped "kept"
    assert backend.list_sessions() == [name]
    assert [m.key for m in backend.list_running_sessions()] == [name]
    assert backend.client.zrange(backend.prefix + "sessions", 0, -1) == [name.encode()]
    assert backend.repair_index() == 0


def _only_script(backend, script, name, args):
    """Run a write script without the index update that follows it on a Cluster."""
    result = yield backend._write(script, name, args)
    return result


# --- concurrency, idempotence, durability -------------------------------------------------------


def test_concurrent_remove_last_from_processes(open_backend, kind, request):
    backend = open_backend(kind)
    place = request.getfixturevalue("server" if kind == "standalone" else "cluster")
    backend.append_many("s", [U(f"m{i}") for i in range(60)])
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(
            target=remove_worker,
            args=(place.url, kind == "cluster", backend.prefix, "s", 10, start, results),
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    start.set()
    reports = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [error for _, _, error in reports if error] == []
    assert [answer for _, answers, _ in reports for answer in answers] == [True] * 40
    assert backend.load("s") == [U(f"m{i}") for i in range(20)]
    assert backend.get_session_metadata("s").message_count == 20


def test_async_concurrent_remove_last(server):
    async def main():
        async with AsyncRedisSessionBackend(server.url, prefix=f"a{uuid.uuid4().hex}:") as b:
            await b.append_many("s", [U(str(i)) for i in range(30)])
            answers = await asyncio.gather(*(b.remove_last("s") for _ in range(25)))
            return answers, await b.load("s")

    answers, left = asyncio.run(main())
    assert answers == [True] * 25
    assert left == [U(str(i)) for i in range(5)]


def test_a_resent_write_is_applied_once(backend):
    """redis-py resends a command whose reply was lost; the op id makes the resend a no-op."""
    name = "s"
    backend.append_many(name, [U("a"), U("b")])
    append = backend._write("append", name, [_format.encode_message(U("c"))[:-1]])
    assert backend._do(append) == backend._do(append)
    assert backend.load(name) == [U("a"), U("b"), U("c")]
    tail = b'{"role":"user","content":"c"}'
    pop = backend._write("edit_last", name, ["pop", b"", tail])
    first = backend._do(pop)
    assert first[0] == b"1" and backend._do(pop) == first
    assert backend.load(name) == [U("a"), U("b")]
    clear = backend._write("clear", name, [])
    assert backend._do(clear)[0] == b"2" and backend._do(clear)[0] == b"2"


def _run_losing_a_reply(backend, op, meanwhile):
    """Run operation ``op`` as ``backend._run`` does, except that the reply to its first write
    script is lost: the script runs on the server, ``meanwhile()`` (another client's
    acknowledged write) runs, and then the very same command is sent again, as redis-py resends
    it after a broken connection. Returns the operation's result."""
    lost = False
    try:
        effect = next(op)
        while True:
            answer = backend._do(effect)
            if isinstance(effect, _Eval) and not lost:
                lost = True
                meanwhile()
                answer = backend._do(effect)
            effect = op.send(answer)
    except StopIteration as stop:
        return stop.value


RESENDS = {
    # name: (messages before, the call's operation, its answer, messages after)
    "append": ([U("a")], lambda b: b._op_append("s", [_line(U("new"))]), None, ["a", "new", "o"]),
    "remove_last": ([U("a"), U("b")], lambda b: b._op_remove_last("s"), True, ["a", "o"]),
    "pop_last": ([U("a"), U("b")], lambda b: b._op_pop_last("s"), U("b"), ["a", "o"]),
    "update_last": (
        [U("a"), U("b")],
        lambda b: b._op_update_last("s", U("B")),
        True,
        ["a", "B", "o"],
    ),
    "clear_messages": ([U("a"), U("b")], lambda b: b._op_clear("s"), 2, ["o"]),
    "clear_messages of nothing": ([], lambda b: b._op_clear("s"), 0, ["o"]),
    "delete_session": ([U("a")], lambda b: b._op_delete("s"), True, ["o"]),
}


@pytest.mark.parametrize("call", RESENDS)
def test_a_write_resent_after_another_clients_write_is_applied_once(open_backend, kind, call):
    """The reply to a write is lost, another client writes to the same session, then redis-py
    resends the write: it must not run again (no second message, no second message removed or
    overwritten, no acknowledged message of the other client cleared or deleted), and the call
    answers what the first run did."""
    before, operation, answer, after = RESENDS[call]
    backend = open_backend(kind)
    other = open_backend(kind, prefix=backend.prefix)
    backend.append_many("s", before)
    got = _run_losing_a_reply(backend, operation(backend), lambda: other.append("s", U("o")))
    assert got == answer
    assert [m.content for m in backend.load("s")] == after


def test_a_resent_set_session_times_is_applied_once(open_backend, kind):
    """Resent after another client appended, setting the times must not move that append's
    activity back (in the hash or the index), nor date a session created since a first run
    that found none."""
    backend = open_backend(kind)
    other = open_backend(kind, prefix=backend.prefix)
    backend.append("s", U("a"))
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    setting = backend._op_set_times("s", None, old, None)
    assert _run_losing_a_reply(backend, setting, lambda: other.append("s", U("o"))) is True
    last = backend.get_session_metadata("s").last_activity
    assert last > old
    assert backend.client.zscore(backend.prefix + "sessions", "s") == _us(last)
    dating = backend._op_set_times("new", old, old, None)
    assert _run_losing_a_reply(backend, dating, lambda: other.append("new", U("o"))) is False
    created = backend.get_session_metadata("new")
    assert created.created_at > old and created.last_activity > old


def test_a_resent_state_change_does_not_undo_a_later_one(open_backend, kind):
    backend = open_backend(kind)
    other = open_backend(kind, prefix=backend.prefix)
    running = backend._op_state_change("s", "running", "t1")
    _run_losing_a_reply(backend, running, lambda: other.set_session_state("s", "idle"))
    assert backend.get_session_state("s").state == "idle"
    assert backend.list_running_sessions() == []


def test_recorded_results_are_bounded(open_backend, kind):
    """A session remembers its writes' results for resends, within bounds: the last _OP_CAP
    (the oldest are forgotten first), in keys that expire _OP_KEEP_MS after its last write."""
    backend = open_backend(kind)
    client = backend.client
    ops, order = (f"{backend.prefix}{{s}}:{name}" for name in ("ops", "op-order"))
    backend.append("s", U("first"))
    [first] = client.lrange(order, 0, -1)
    assert client.hkeys(ops) == [first]
    for turn in range(_OP_CAP):
        backend.set_session_name("s", f"n{turn}")
    ids = client.lrange(order, 0, -1)
    assert len(ids) == _OP_CAP and first not in ids
    assert sorted(client.hkeys(ops)) == sorted(ids)
    for key in (ops, order):
        assert _OP_KEEP_MS - 60_000 < client.pttl(key) <= _OP_KEEP_MS


def test_an_edit_based_on_a_stale_read_is_refused(backend):
    """remove_last/update_last read the tail, then change it only if it is still what they read
    (another client may have changed it in between): a stale expectation changes nothing."""
    backend.append_many("s", [U("a"), U("b")])
    stale = _format.encode_message(U("gone"))[:-1]
    for args in (["pop", b"", stale], ["set", b'{"role":"user","content":"x"}', stale]):
        assert backend._do(backend._write("edit_last", "s", args))[0] == b"retry"
    current = _format.encode_message(U("b"))[:-1]
    two = [_format.encode_message(U("a"))[:-1], current]  # longer than what is there now...
    assert backend._do(backend._write("edit_last", "s", ["pop", b"", b"x", *two]))[0] == b"retry"
    assert backend.load("s") == [U("a"), U("b")]
    assert backend._do(backend._write("edit_last", "s", ["pop", b"", current]))[0] == b"1"
    assert backend.load("s") == [U("a")]


def test_a_write_while_the_server_is_down_is_refused_and_absent(tmp_path):
    own = _start(lambda: RedisServer(tmp_path / "redis").start())
    try:
        # One retry: the first command after a restart finds its pooled connection dead.
        with RedisSessionBackend(own.url, retry=Retry(NoBackoff(), 1)) as backend:
            backend.append_many("s", [U("a"), U("b")])
            backend.set_session_name("s", "named")
            assert backend.update_last("s", A("B"))
            own.shutdown()
            with pytest.raises(RedisUnavailableError):
                backend.append("s", U("while down"))
            own.start()
            assert backend.load("s") == [U("a"), A("B")]
            assert backend.get_session_name("s") == "named"
            assert backend.list_sessions() == ["s"]
    finally:
        own.kill()


WRITERS = 4
KILLS = 6


def test_restart_loses_nothing_acknowledged(tmp_path):
    """SIGKILL and restart the server (AOF, appendfsync always) again and again while writer
    processes append and roll back (remove_last), with redis-py retrying on connection errors:
    each call in flight at a kill either failed (not acknowledged) or was resent, possibly after
    it had run and after other clients wrote to its session. Every acknowledged message must be
    there exactly once and in order, and no acknowledged rollback may have removed more."""
    own = _start(lambda: RedisServer(tmp_path / "redis").start())
    prefix = f"r{uuid.uuid4().hex[:12]}:"
    context = multiprocessing.get_context("spawn")
    stop, log = context.Event(), context.Queue()
    workers = [
        context.Process(target=restart_writer, args=(own.url, prefix, w, WRITERS, stop, log))
        for w in range(WRITERS)
    ]
    # What the writers report as acknowledged: writer -> kind -> turns.
    acked = {w: {"m": [], "rolled": []} for w in range(WRITERS)}
    retried = 0
    try:
        for worker in workers:
            worker.start()
        rng = random.Random(11)
        deadline = time.monotonic() + 60
        # Let every writer get going before the first kill.
        while min(len(a["m"]) for a in acked.values()) < 20:
            assert time.monotonic() < deadline, "the writers made no progress"
            kind, writer, value = log.get(timeout=60)
            assert kind != "error", value
            acked[writer][kind].append(value)
        for _ in range(KILLS):
            own.kill()
            own.start()
            time.sleep(rng.uniform(0.2, 0.4))
        stop.set()
        done = 0
        while done < WRITERS:
            kind, writer, value = log.get(timeout=60)
            assert kind != "error", value
            if kind == "done":
                done += 1
                retried += value
            else:
                acked[writer][kind].append(value)
        for worker in workers:
            worker.join(30)
        with RedisSessionBackend(own.url, prefix=prefix) as backend:
            for w in range(WRITERS):
                texts = [m.content for m in backend.load(f"w{w}")]
                twice = sorted({t for t in texts if texts.count(t) > 1})
                assert twice == [], f"w{w}: stored twice (a resent append ran again): {twice}"
                assert texts == sorted(texts), f"w{w}: out of order"
                present = set(texts)
                kept = [message_text(w, turn, "m") for turn in acked[w]["m"]]
                # A rollback applied twice removes the acknowledged m just before its r.
                lost = [t for t in kept if t not in present]
                assert lost == [], f"w{w}: acknowledged, then lost: {lost}"
                rolled = [message_text(w, turn, "r") for turn in acked[w]["rolled"]]
                assert [t for t in rolled if t in present] == [], f"w{w}: a rollback undone"
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
        own.kill()
    # The kills broke connections of calls in flight, which redis-py sent again; every writer got
    # rollbacks acknowledged.
    assert retried > 0
    assert all(a["rolled"] for a in acked.values())


def test_connection_refused_is_a_clear_error():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisSessionBackend(url, retry=Retry(NoBackoff(), 0)) as backend:
        for call in (
            lambda: backend.append("s", U("x")),
            lambda: backend.load("s"),
            lambda: backend.remove_last("s"),
            backend.list_sessions,
        ):
            with pytest.raises(RedisUnavailableError) as info:
                call()
            assert isinstance(info.value, ConnectionError)  # the built-in one
            assert isinstance(info.value, redis.exceptions.ConnectionError)
            assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
            assert url in str(info.value)
        with pytest.raises(ValueError):  # bad input is refused before any connection
            backend.append("", U("x"))
    with pytest.raises(RedisUnavailableError):
        RedisSessionBackend(url, cluster=True)

    async def refused():
        no_retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
        async with AsyncRedisSessionBackend(url, retry=no_retry) as backend:
            await backend.append("s", U("x"))

    with pytest.raises(RedisUnavailableError):
        asyncio.run(refused())


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "exception"),
    [(None, TypeError), (b"s", TypeError), ("", ValueError), ("\ud800", ValueError)],
)
def test_bad_keys_change_nothing(open_backend, key, exception):
    backend = open_backend()
    backend.append("s", U("x"))
    before = raw_keys(backend)
    for call in (
        lambda: backend.load(key),
        lambda: backend.append(key, U("x")),
        lambda: backend.append_many(key, []),
        lambda: backend.remove_last(key),
        lambda: backend.update_last(key, U("x")),
        lambda: backend.set_session_name(key, "n"),
        lambda: backend.set_session_state(key, "running"),
        lambda: backend.set_session_times(key, created_at=datetime.now(timezone.utc)),
        lambda: backend.delete_session(key),
        lambda: backend.get_session_state(key),
    ):
        with pytest.raises(exception):
            call()
    assert raw_keys(backend) == before
    assert backend.load("s") == [U("x")]


@pytest.mark.parametrize(
    ("message", "exception"),
    [
        ({"role": "user"}, ValueError),
        ({"role": "user", "content": "x", "v": float("nan")}, ValueError),
        ({"role": "user", "content": "x", "v": object()}, TypeError),
        ({"role": "user", "content": "\ud800"}, ValueError),
        ("user: hi", TypeError),
    ],
)
def test_bad_messages_change_nothing(open_backend, message, exception):
    backend = open_backend()
    backend.append("s", U("kept"))
    before = raw_keys(backend)
    for call in (
        lambda: backend.append("s", message),
        lambda: backend.append_many("s", [U("fine"), message]),
        lambda: backend.update_last("s", message),
        lambda: backend.append("new", message),
    ):
        with pytest.raises(exception):
            call()
    assert raw_keys(backend) == before and backend.load("s") == [U("kept")]
    with pytest.raises(ValueError):
        backend.set_session_name("s", "bad \ud800")
    assert backend.get_session_name("s") is None


def test_bad_arguments(server):
    decoding = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisSessionBackend(decoding)
    finally:
        decoding.close()
    with pytest.raises(ValueError):
        RedisSessionBackend(server.url, prefix="a{b}:")
    with pytest.raises(TypeError):
        RedisSessionBackend(42)
    plain = redis.Redis.from_url(server.url)
    try:
        with pytest.raises(ValueError):
            RedisSessionBackend(plain, cluster=True)
        shared = RedisSessionBackend(plain, prefix=f"p{uuid.uuid4().hex}:")
        shared.append("s", U("x"))
        shared.close()  # a client given to the backend stays open
        assert plain.ping()
    finally:
        plain.close()


# --- the same answers as the JSONL store --------------------------------------------------------


def test_same_answers_as_jsonl(backend, tmp_path):
    reference = PureStore(tmp_path / "ws")
    rng = random.Random(20240601)
    keys = ["a", "b/c", "ключ"]
    for step in range(250):
        key = rng.choice(keys)
        op = rng.choice(["append", "append", "many", "remove", "update", "load", "clear", "delete"])
        message = ChatMessage(rng.choice(["user", "assistant"]), f"m{step}", step=step)
        limit = rng.choice([None, 0, 1, 3])
        answers = []
        for store in (backend, reference):
            if op == "append":
                answer = store.append(key, message)
            elif op == "many":
                answer = store.append_many(key, [message, U(f"n{step}")])
            elif op == "remove":
                answer = store.remove_last(key)
            elif op == "update":
                answer = store.update_last(key, message)
            elif op == "load":
                answer = store.load(key, limit=limit)
            elif op == "clear":
                answer = store.clear_messages(key)
            else:
                answer = store.delete_session(key)
            answers.append((answer, store.list_sessions(), store.load(key)))
        assert answers[0] == answers[1], (step, op, key)
    for key in keys:
        mine, theirs = backend.get_session_metadata(key), reference.get_session_metadata(key)
        assert (mine and mine.message_count) == (theirs and theirs.message_count)


# --- asyncio ------------------------------------------------------------------------------------


def test_async_twin_has_every_method():
    public = {
        name
        for name, member in inspect.getmembers(RedisSessionBackend)
        if not name.startswith("_") and inspect.isfunction(member)
    } - {"close", "messages_key", "meta_key"}  # key names need no server
    assert {"load", "append", "search", "repair_index", "load_with_timestamps"} <= public
    for name in public:
        assert inspect.iscoroutinefunction(getattr(AsyncRedisSessionBackend, name)), name
    assert inspect.iscoroutinefunction(AsyncRedisSessionBackend.aclose)


def test_async_twin(open_backend, kind, request):
    place = request.getfixturevalue("server" if kind == "standalone" else "cluster")
    sync = open_backend(kind)
    clock = Clock()

    async def main():
        async with AsyncRedisSessionBackend(
            place.url, prefix=sync.prefix, cluster=kind == "cluster", clock=clock
        ) as b:
            await b.append("s", U("one"))
            await b.append_many("s", [A("two"), U("three")])
            assert await b.load("s", limit=2) == [A("two"), U("three")]
            assert await b.load_with_timestamps("s", limit=1) == [(U("three"), None)]
            assert await b.update_last("s", A("3"))
            assert await b.remove_last("s")
            await b.set_session_name("s", "name")
            await b.set_session_agent_alias("s", "alias")
            await b.set_session_context("s", sender_id="u")
            await b.set_session_state("s", "running", "t1")
            assert (await b.get_session_state("s")).turn_id == "t1"
            assert [m.key for m in await b.list_running_sessions()] == ["s"]
            clock.advance(minutes=5)
            assert [m.key for m in await b.list_stuck_sessions(60)] == ["s"]
            assert await b.get_session_name("s") == "name"
            assert await b.get_session_agent_alias("s") == "alias"
            meta = await b.get_session_metadata("s")
            assert (meta.message_count, meta.sender_id) == (2, "u")
            assert [m.key for m in await b.list_sessions_with_metadata()] == ["s"]
            assert [m.key for m in await b.search(SessionQuery("TWO"))] == ["s"]
            created = datetime(2020, 1, 1, tzinfo=timezone.utc)
            assert await b.set_session_times("s", created_at=created)
            assert not await b.set_session_times("nobody", created_at=created)
            assert (await b.get_session_metadata("s")).created_at == created
            assert await b.list_sessions() == ["s"] and await b.session_exists("s")
            await b.compact("s")
            assert await b.repair_index() == 0
            await b.append("gone", U("x"))
            assert await b.delete_session("gone")
            await b.append("old", U("x"))
            clock.advance(hours=3)
            await b.append("s", U("later"))
            assert await b.cleanup_stale(1) == 1
            return await b.clear_messages("s")

    assert asyncio.run(main()) == 3
    # The sync backend sees what the async one wrote: same keys, same encoding.
    assert sync.list_sessions() == ["s"]
    assert sync.get_session_name("s") == "name" and sync.load("s") == []
