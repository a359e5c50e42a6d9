"""``turnlog.integrations.langchain.TurnlogChatMessageHistory`` against the real langchain-core.

The tests that need ``langchain_core`` skip when it is not installed, unless the environment
variable ``CI`` is set: then they fail, so CI never skips them silently.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest

from _thread_backend import ThreadRecordingBackend
from turnlog import ChatMessage

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        message_to_dict,
    )
    from langchain_core.messages import ChatMessage as LCChatMessage
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables import RunnableLambda
    from langchain_core.runnables.history import RunnableWithMessageHistory

    from turnlog.integrations.langchain import (
        CONTENT_FIELD,
        TYPE_FIELD,
        TurnlogChatMessageHistory,
        message_from_turnlog,
        message_to_turnlog,
    )
except ImportError as error:  # checked by the ``langchain`` fixture
    MISSING: str | None = f"langchain-core is not installed ({error})"
else:
    MISSING = None


@pytest.fixture
def langchain() -> None:
    """Skip (fail under CI) when langchain-core is missing."""
    if MISSING is None:
        return
    if os.environ.get("CI", "").strip():
        pytest.fail(f"{MISSING}, and CI is set: the integration must be tested", pytrace=False)
    pytest.skip(MISSING)


needs_langchain = pytest.mark.usefixtures("langchain")


def sample_messages() -> list[Any]:
    """One message of every kind, with every field set somewhere."""
    return [
        SystemMessage("You are terse."),
        HumanMessage("What is the weather in Oslo?"),
        HumanMessage("named", name="bob", id="h-1", additional_kwargs={"lang": "en"}),
        HumanMessage(
            content=[
                {"type": "text", "text": "and this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                "a plain part",
            ]
        ),
        AIMessage(
            "",
            id="run-1",
            tool_calls=[{"name": "weather", "args": {"city": "Oslo"}, "id": "call_1"}],
            invalid_tool_calls=[
                {"name": "bad", "args": "{oops", "id": "call_2", "error": "not JSON"}
            ],
            usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
            response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
        ),
        ToolMessage("sunny, 21.5 °C", tool_call_id="call_1", name="weather"),
        ToolMessage("failed", tool_call_id="call_2", status="error", artifact={"raw": [1, 2]}),
        AIMessage(
            content=[{"type": "text", "text": 'Il fait beau 😀\n"chaud"', "annotations": []}],
            additional_kwargs={"refusal": None},
        ),
        FunctionMessage("42", name="answer"),
        LCChatMessage(role="critic", content="be nicer"),
        LCChatMessage(role="user", content="a chat message with a mapped role"),
        LCChatMessage(role="assistant", content="another", id="c-1"),
        AIMessageChunk(content="partial", id="chunk-1"),
        HumanMessage("with a field of its own", custom_field={"a": [1, None, True]}),
        AIMessage("plain answer"),
    ]


def assert_same(got: list[Any], expected: list[Any]) -> None:
    assert [type(message) for message in got] == [type(message) for message in expected]
    assert [message_to_dict(m) for m in got] == [message_to_dict(m) for m in expected]
    assert got == expected


def lines(store: Any, key: str) -> list[str]:
    with open(os.path.join(store.sessions_dir, key + ".jsonl"), encoding="utf-8") as file:
        return file.read().splitlines()


@needs_langchain
class TestConversion:
    def test_plain_messages_are_plain_turnlog_messages(self):
        assert message_to_turnlog(HumanMessage("hi")) == ChatMessage("user", "hi")
        assert message_to_turnlog(AIMessage("hello")) == ChatMessage("assistant", "hello")
        assert message_to_turnlog(SystemMessage("s")) == ChatMessage("system", "s")
        assert message_from_turnlog(ChatMessage("user", "hi")) == HumanMessage("hi")
        assert message_from_turnlog(ChatMessage("assistant", "hello")) == AIMessage("hello")

    @pytest.mark.parametrize("index", range(len(sample_messages()) if MISSING is None else 1))
    def test_every_message_round_trips(self, index):
        message = sample_messages()[index]
        stored = ChatMessage.from_dict(message_to_turnlog(message).to_dict())
        assert_same([message_from_turnlog(stored)], [message])

    def test_fields_become_extras_and_roles_follow_the_type(self):
        assert message_to_turnlog(
            ToolMessage("r", tool_call_id="c1", status="error")
        ) == ChatMessage("tool", "r", tool_call_id="c1", status="error")
        assert message_to_turnlog(FunctionMessage("o", name="f")) == ChatMessage(
            "function", "o", name="f"
        )
        assert message_to_turnlog(LCChatMessage(role="critic", content="x")) == ChatMessage(
            "critic", "x"
        )
        assert message_to_turnlog(LCChatMessage(role="user", content="x")) == ChatMessage(
            "user", "x", **{TYPE_FIELD: "chat"}
        )
        assert message_to_turnlog(AIMessageChunk(content="x")) == ChatMessage(
            "assistant", "x", **{TYPE_FIELD: "AIMessageChunk"}
        )

    def test_list_content_is_compact_json_with_a_marker(self):
        message = HumanMessage(content=[{"type": "text", "text": "é"}, "x"])
        assert message_to_turnlog(message) == ChatMessage(
            "user", '[{"type":"text","text":"é"},"x"]', **{CONTENT_FIELD: "json"}
        )

    def test_other_programs_lines_are_read_by_role(self):
        assert message_from_turnlog(ChatMessage("user", "hi", name="bob")) == HumanMessage(
            "hi", name="bob"
        )
        assert message_from_turnlog(ChatMessage("developer", "d")) == LCChatMessage(
            role="developer", content="d"
        )
        # A tool line without tool_call_id (turnlog's ChatMessage.tool) is kept as a chat message.
        assert message_from_turnlog(ChatMessage.tool("result")) == LCChatMessage(
            role="tool", content="result"
        )
        # Fields the message class refuses end up in additional_kwargs.
        odd = message_from_turnlog(ChatMessage("assistant", "x", tool_calls="oops", type=3))
        assert odd == LCChatMessage(
            role="assistant", content="x", additional_kwargs={"tool_calls": "oops", "type": 3}
        )
        # A JSON marker on a content that is not JSON keeps the text.
        broken = ChatMessage("user", "[not json", **{CONTENT_FIELD: "json"})
        assert message_from_turnlog(broken) == HumanMessage("[not json")

    def test_what_cannot_be_stored_is_refused(self):
        with pytest.raises(TypeError):
            message_to_turnlog({"role": "user", "content": "hi"})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="langchain_type"):
            message_to_turnlog(HumanMessage("x", langchain_type="mine"))
        with pytest.raises(ValueError):
            message_to_turnlog(HumanMessage(content=[{"x": float("nan")}]))

        class CustomMessage(HumanMessage):
            type: str = "custom"  # type: ignore[assignment]

        with pytest.raises(TypeError, match="custom"):
            message_to_turnlog(CustomMessage("x"))


@needs_langchain
class TestHistory:
    def test_it_is_a_langchain_history(self, tmp_path):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no deprecation warning for a subclass
            history = TurnlogChatMessageHistory("s", workspace=tmp_path)
        assert isinstance(history, BaseChatMessageHistory)
        assert history.messages == []

    def test_messages_round_trip_in_order(self, store):
        history = TurnlogChatMessageHistory("chat/42", store)
        expected = sample_messages()
        history.add_messages(expected[:4])
        history.add_message(expected[4])
        history.add_messages(expected[5:])
        assert_same(history.messages, expected)
        again = type(store)(os.path.dirname(store.sessions_dir))
        assert_same(TurnlogChatMessageHistory("chat/42", again).messages, expected)

    def test_lone_surrogates_round_trip_as_in_a_json_history(self, store):
        """Text decoded with ``surrogateescape`` (a tool's raw bytes) is kept, as LangChain's
        JSON-backed histories keep it; the line stays valid and keeps its role."""
        import json

        expected = [
            HumanMessage("bad byte \udcff here"),
            AIMessage("ok", additional_kwargs={"raw": "\udcfe"}),
            ToolMessage("out \udcff", tool_call_id="c1"),
            HumanMessage(content=[{"type": "text", "text": "\udcff"}]),
        ]
        history = TurnlogChatMessageHistory("s", store)
        history.add_messages(expected)
        assert_same(history.messages, expected)
        via_json = [json.loads(json.dumps(message_to_dict(m))) for m in expected]
        assert [message_to_dict(m) for m in history.messages] == via_json
        assert [m.role for m in store.load("s")] == ["user", "assistant", "tool", "user"]

    def test_equal_to_any_history_with_the_same_messages(self, store):
        """As LangChain's histories compare (RunnableWithMessageHistory's own tests rely on it)."""
        from langchain_core.chat_history import InMemoryChatMessageHistory

        history = TurnlogChatMessageHistory("s", store)
        history.add_messages([HumanMessage("hi"), AIMessage("hello")])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in langchain-core 1.6
            same = InMemoryChatMessageHistory(messages=[HumanMessage("hi"), AIMessage("hello")])
            other = InMemoryChatMessageHistory(messages=[HumanMessage("hi")])
        assert history == same and same == history
        assert history == TurnlogChatMessageHistory("s", store)
        assert history != other
        assert history != "not a history"
        with pytest.raises(TypeError):
            hash(history)

    def test_plain_messages_are_plain_lines(self, store):
        history = TurnlogChatMessageHistory("s", store)
        history.add_user_message("hi")
        history.add_ai_message("hello!")
        history.add_messages([ToolMessage("r", tool_call_id="c1")])
        assert lines(store, "s") == [
            '{"role":"user","content":"hi"}',
            '{"role":"assistant","content":"hello!"}',
            '{"role":"tool","content":"r","tool_call_id":"c1"}',
        ]

    def test_turnlog_history_reads_as_langchain_messages(self, store):
        store.append("s", ChatMessage.system("be brief"))
        store.append("s", ChatMessage.user("hello"))
        store.append("s", {"role": "assistant", "content": "hi!", "name": "bot"})
        assert TurnlogChatMessageHistory("s", store).messages == [
            SystemMessage("be brief"),
            HumanMessage("hello"),
            AIMessage("hi!", name="bot"),
        ]

    def test_clear(self, store):
        history = TurnlogChatMessageHistory("s", store)
        history.add_messages(sample_messages())
        history.clear()
        assert history.messages == []
        assert store.load("s") == []
        history.add_user_message("again")
        assert history.messages == [HumanMessage("again")]

    def test_limit_gives_the_newest(self, store):
        TurnlogChatMessageHistory("s", store).add_messages(sample_messages())
        assert_same(TurnlogChatMessageHistory("s", store, limit=3).messages, sample_messages()[-3:])
        assert TurnlogChatMessageHistory("s", store, limit=0).messages == []

    def test_a_bad_message_writes_nothing(self, store):
        history = TurnlogChatMessageHistory("s", store)
        with pytest.raises(TypeError):
            history.add_messages(
                [HumanMessage("ok"), ToolMessage("r", tool_call_id="c", artifact={1, 2})]
            )
        assert store.load("s") == []
        history.add_messages([])
        assert store.list_sessions() == []

    def test_async_methods(self, store):
        history = TurnlogChatMessageHistory("s", store)

        async def scenario() -> tuple[list[Any], list[Any]]:
            await history.aadd_messages(sample_messages())
            got = await history.aget_messages()
            await history.aclear()
            return got, await history.aget_messages()

        got, after = asyncio.run(scenario())
        assert_same(got, sample_messages())
        assert after == []

    def test_async_methods_run_off_the_event_loop(self):
        backend = ThreadRecordingBackend()
        history = TurnlogChatMessageHistory("s", backend)

        async def scenario() -> None:
            await history.aadd_messages([HumanMessage("hi")])
            await history.aget_messages()
            await history.aclear()

        asyncio.run(scenario())
        assert backend.threads
        assert threading.get_ident() not in backend.threads

    def test_any_session_backend_works(self):
        history = TurnlogChatMessageHistory("s", ThreadRecordingBackend())
        history.add_messages(sample_messages())
        assert_same(history.messages, sample_messages())

    def test_arguments_are_checked(self, tmp_path, store):
        with pytest.raises(ValueError, match="not both"):
            TurnlogChatMessageHistory("s", store, workspace=tmp_path)
        with pytest.raises(ValueError, match="store or a workspace"):
            TurnlogChatMessageHistory("s")
        with pytest.raises(TypeError):
            TurnlogChatMessageHistory(1, store)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            TurnlogChatMessageHistory("", store)
        with pytest.raises(TypeError):
            TurnlogChatMessageHistory("s", [])  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            TurnlogChatMessageHistory("s", store, limit=-1)
        with pytest.raises(TypeError):
            TurnlogChatMessageHistory("s", store, limit=True)

    def test_the_default_store_is_a_session_store_of_the_workspace(self, tmp_path):
        TurnlogChatMessageHistory("s", workspace=tmp_path / "ws").add_user_message("hi")
        with open(tmp_path / "ws" / "sessions" / "s.jsonl", encoding="utf-8") as file:
            assert file.read() == '{"role":"user","content":"hi"}\n'


def chain_with_history(store: Any, seen: list[list[Any]]) -> Any:
    """A prompt and a fake chat model wrapped in ``RunnableWithMessageHistory``, recording the
    messages each model call gets in ``seen``."""
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def record(value: Any) -> Any:
        seen.append(value.to_messages())
        return value

    model = FakeListChatModel(responses=["Sunny in Oslo.", "You're welcome."])
    chain = prompt | RunnableLambda(record) | model
    with warnings.catch_warnings():
        # Deprecated in langchain-core 1.x in favour of LangGraph, and still widely used.
        warnings.simplefilter("ignore", DeprecationWarning)
        return RunnableWithMessageHistory(
            chain,
            lambda session_id: TurnlogChatMessageHistory(session_id, store),
            input_messages_key="question",
            history_messages_key="history",
        )


@needs_langchain
class TestRunnableWithMessageHistory:
    def check(self, store: Any, seen: list[list[Any]], answers: list[Any]) -> None:
        assert [answer.content for answer in answers] == ["Sunny in Oslo.", "You're welcome."]
        # The history, read back from the turnlog store.
        history = TurnlogChatMessageHistory("u1", store).messages
        assert [type(m) for m in history] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
        assert [m.content for m in history] == [
            "Weather in Oslo?",
            "Sunny in Oslo.",
            "Thanks!",
            "You're welcome.",
        ]
        assert history[1] == answers[0]
        assert history[3] == answers[1]
        # The second model call saw the first turn, read from turnlog.
        assert seen[1] == [SystemMessage("You are terse."), *history[:2], HumanMessage("Thanks!")]
        # Human turns are plain turnlog lines; the answers keep their ids.
        messages = store.load("u1")
        assert messages[0] == ChatMessage.user("Weather in Oslo?")
        assert messages[2] == ChatMessage.user("Thanks!")
        assert messages[1].role == "assistant"
        assert messages[1].content == "Sunny in Oslo."
        assert messages[1].extra == {"id": answers[0].id}

    def test_two_invocations(self, store):
        seen: list[list[Any]] = []
        chain = chain_with_history(store, seen)
        config = {"configurable": {"session_id": "u1"}}
        answers = [
            chain.invoke({"question": "Weather in Oslo?"}, config=config),
            chain.invoke({"question": "Thanks!"}, config=config),
        ]
        self.check(store, seen, answers)

    def test_two_async_invocations(self, store):
        seen: list[list[Any]] = []
        chain = chain_with_history(store, seen)
        config = {"configurable": {"session_id": "u1"}}

        async def scenario() -> list[Any]:
            return [
                await chain.ainvoke({"question": "Weather in Oslo?"}, config=config),
                await chain.ainvoke({"question": "Thanks!"}, config=config),
            ]

        self.check(store, seen, asyncio.run(scenario()))


def test_imports_are_separate():
    code = (
        "import sys, turnlog, turnlog.integrations\n"
        "assert 'langchain_core' not in sys.modules\n"
        "try:\n"
        "    import turnlog.integrations.langchain\n"
        "except ImportError:\n"
        "    pass\n"
        "assert 'agents' not in sys.modules, 'the langchain adapter imported the agents SDK'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
