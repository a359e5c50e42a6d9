"""SessionBackend: a subclass with only the four abstract methods gets every other method."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from turnlog import ChatMessage, SessionBackend, SessionMetadata, SessionQuery, SessionState

U = ChatMessage.user
A = ChatMessage.assistant


class MemoryBackend(SessionBackend):
    def __init__(self):
        self.sessions: dict[str, list[ChatMessage]] = {}
        self.calls: list[str] = []

    def load(self, session_key, limit=None):
        self.calls.append("load")
        messages = list(self.sessions.get(session_key, []))
        if limit is not None:
            messages = messages[-limit:] if limit else []
        return messages

    def append(self, session_key, message):
        self.calls.append("append")
        if not isinstance(message, ChatMessage):
            message = ChatMessage.from_dict(message)
        self.sessions.setdefault(session_key, []).append(message)

    def remove_last(self, session_key):
        self.calls.append("remove_last")
        messages = self.sessions.get(session_key)
        if not messages:
            return False
        messages.pop()
        return True

    def list_sessions(self):
        self.calls.append("list_sessions")
        return sorted(self.sessions)


@pytest.fixture
def backend():
    return MemoryBackend()


def test_cannot_instantiate_abc():
    with pytest.raises(TypeError):
        SessionBackend()


@pytest.mark.parametrize("missing", ["load", "append", "remove_last", "list_sessions"])
def test_every_abstract_method_is_required(missing):
    namespace = {
        name: getattr(MemoryBackend, name)
        for name in ["load", "append", "remove_last", "list_sessions"]
        if name != missing
    }
    partial = type("Partial", (SessionBackend,), namespace)
    with pytest.raises(TypeError):
        partial()
    assert SessionBackend.__abstractmethods__ == frozenset(
        ["load", "append", "remove_last", "list_sessions"]
    )


def test_append_many(backend):
    backend.append_many("s", [U("a"), {"role": "assistant", "content": "b"}])
    backend.append_many("s", (m for m in [U("c")]))
    backend.append_many("s", [])
    assert backend.load("s") == [U("a"), A("b"), U("c")]
    assert backend.calls.count("append") == 3


def test_update_last(backend):
    assert backend.update_last("s", U("x")) is False
    assert backend.sessions == {}
    backend.append("s", U("a"))
    backend.append("s", A("draft"))
    assert backend.update_last("s", A("final")) is True
    assert backend.load("s") == [U("a"), A("final")]


def test_clear_messages(backend):
    assert backend.clear_messages("s") == 0
    backend.append_many("s", [U("a"), U("b"), U("c")])
    assert backend.clear_messages("s") == 3
    assert backend.load("s") == []
    assert backend.list_sessions() == ["s"]


def test_session_exists(backend):
    assert backend.session_exists("s") is False
    backend.append("s", U("a"))
    assert backend.session_exists("s") is True
    assert backend.session_exists("t") is False


def test_load_with_timestamps(backend):
    backend.append_many("s", [U("a"), A("b")])
    assert backend.load_with_timestamps("s") == [(U("a"), None), (A("b"), None)]
    assert backend.load_with_timestamps("s", limit=1) == [(A("b"), None)]
    assert backend.load_with_timestamps("none") == []


def test_metadata(backend):
    assert backend.list_sessions_with_metadata() == []
    assert backend.get_session_metadata("s") is None
    backend.append_many("s", [U("a"), A("b")])
    backend.append("t", U("c"))
    assert backend.list_sessions_with_metadata() == [
        SessionMetadata(key="s", message_count=2),
        SessionMetadata(key="t", message_count=1),
    ]
    assert backend.get_session_metadata("t") == SessionMetadata(key="t", message_count=1)
    assert backend.get_session_metadata("u") is None


def test_no_op_defaults(backend):
    backend.append("s", U("a"))
    assert backend.compact("s") is None
    assert backend.delete_session("s") is False
    assert backend.cleanup_stale(0) == 0
    assert backend.search(SessionQuery(keyword="a")) == []
    assert backend.set_session_name("s", "n") is None
    assert backend.get_session_name("s") is None
    assert backend.set_session_agent_alias("s", "agent") is None
    assert backend.get_session_agent_alias("s") is None
    assert backend.set_session_context("s", channel_id="c", room_id="r", sender_id="u") is None
    assert backend.set_session_state("s", "running", "turn-1") is None
    assert backend.get_session_state("s") is None
    assert backend.list_running_sessions() == []
    assert backend.list_stuck_sessions(1) == []
    assert backend.load("s") == [U("a")]
    assert backend.list_sessions() == ["s"]


@pytest.mark.parametrize(
    ("cls", "instance", "field"),
    [
        (SessionMetadata, SessionMetadata(key="k"), "key"),
        (SessionQuery, SessionQuery(keyword="x", limit=3), "limit"),
        (SessionState, SessionState(state="idle"), "state"),
    ],
)
def test_frozen_dataclasses(cls, instance, field):
    assert dataclasses.is_dataclass(cls)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, field, "changed")
    assert instance == dataclasses.replace(instance)
    assert hash(instance) == hash(dataclasses.replace(instance))


def test_dataclass_fields():
    metadata = SessionMetadata(key="k")
    assert dataclasses.astuple(metadata) == ("k", None, None, None, 0, None, None, None, None)
    assert [f.name for f in dataclasses.fields(SessionMetadata)] == [
        "key",
        "name",
        "created_at",
        "last_activity",
        "message_count",
        "agent_alias",
        "channel_id",
        "room_id",
        "sender_id",
    ]
    assert SessionQuery() == SessionQuery(keyword=None, limit=None)
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    state = SessionState("running", turn_id="t", turn_started_at=when)
    assert (state.state, state.turn_id, state.turn_started_at) == ("running", "t", when)
    assert SessionState("idle") == SessionState(state="idle", turn_id=None, turn_started_at=None)
