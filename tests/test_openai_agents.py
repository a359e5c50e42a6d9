"""``turnlog.integrations.openai_agents.TurnlogSession`` against the real OpenAI Agents SDK.

The tests that need the SDK (``agents``) skip when it is not installed, unless the environment
variable ``CI`` is set: then they fail, so CI never skips them silently.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from _thread_backend import ThreadRecordingBackend
from turnlog import ChatMessage

try:
    from agents import Agent, ModelResponse, RunConfig, Runner, Usage, function_tool
    from agents.memory import Session, SessionSettings
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    from turnlog.integrations.openai_agents import (
        ITEM_MARKER,
        ITEM_ROLE,
        KEY_ORDER,
        TurnlogSession,
        item_to_message,
        message_to_item,
    )
except ImportError as error:  # checked by the ``sdk`` fixture
    MISSING: str | None = f"the OpenAI Agents SDK is not installed ({error})"
else:
    MISSING = None


@pytest.fixture
def sdk() -> None:
    """Skip (fail under CI) when the SDK is missing."""
    if MISSING is None:
        return
    if os.environ.get("CI", "").strip():
        pytest.fail(f"{MISSING}, and CI is set: the integration must be tested", pytrace=False)
    pytest.skip(MISSING)


needs_sdk = pytest.mark.usefixtures("sdk")


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def _await(awaitable: Any) -> Any:
    return await awaitable


#: One of every kind of item the SDK stores, in the shapes it stores them.
ITEMS: list[dict[str, Any]] = [
    {"role": "system", "content": "be brief"},
    {"content": "What is the weather in Oslo?", "role": "user"},
    {"role": "developer", "content": "answer in French", "type": "message"},
    {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "and this?"},
            {
                "type": "input_image",
                "image_url": "data:image/png;base64,iVBORw0K",
                "detail": "auto",
            },
        ],
    },
    {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "the user wants weather"}],
        "encrypted_content": None,
    },
    {
        "arguments": '{"city":"Oslo"}',
        "call_id": "call_1",
        "name": "weather",
        "type": "function_call",
        "id": "fc_1",
        "status": "completed",
    },
    {"call_id": "call_1", "output": 'sunny, 21.5 °C\n"warm"', "type": "function_call_output"},
    {
        "id": "msg_1",
        "content": [
            {"annotations": [], "text": "Il fait beau. 😀", "type": "output_text", "logprobs": []}
        ],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    },
    {"role": "assistant", "content": "", "id": "msg_2", "usage": {"tokens": 12, "cost": 0.25}},
    # Items that look like the encoding's own lines are encoded, so they read back as they were.
    {"role": "agents_item", "content": "not an encoded item"},
    {"role": "user", "content": "hi", "turnlog_item": 1},
    {"type": "item_reference", "id": "msg_0"},
    {"role": "user", "content": None},
    {"big": 10**40, "neg": -1, "flag": True, "nested": [[{"a": [None, 1.5e300]}]]},
]


@needs_sdk
class TestEncoding:
    def test_a_plain_message_is_its_own_line(self):
        assert item_to_message({"role": "user", "content": "hi"}) == {
            "role": "user",
            "content": "hi",
        }
        assert item_to_message({"role": "user", "content": "hi", "type": "message"}) == {
            "role": "user",
            "content": "hi",
            "type": "message",
        }

    @pytest.mark.parametrize("item", ITEMS, ids=range(len(ITEMS)))
    def test_every_item_round_trips(self, item):
        message = ChatMessage.from_dict(item_to_message(item))
        assert message_to_item(message) == item
        assert list(message_to_item(message)) == list(item)  # keys in the order given

    def test_a_plain_message_in_another_key_order_stays_plain(self):
        item = {"content": "hi", "type": "message", "role": "user"}
        assert item_to_message(item) == {
            "role": "user",
            "content": "hi",
            "type": "message",
            KEY_ORDER: ["content", "type", "role"],
        }
        # A turnlog_keys that does not name the message's keys is left out, not trusted.
        message = ChatMessage("user", "hi", turnlog_keys=["role"])
        assert message_to_item(message) == {"role": "user", "content": "hi"}

    @pytest.mark.parametrize(
        "item",
        [
            {"role": "user", "content": [{"type": "input_text", "text": "x"}]},
            {"type": "function_call_output", "call_id": "c", "output": "x"},
            {"role": "agents_item", "content": "x"},
            {"role": "user", "content": "x", "turnlog_item": 1},
        ],
    )
    def test_other_items_are_encoded_as_compact_json(self, item):
        line = item_to_message(item)
        assert line == {
            "role": ITEM_ROLE,
            "content": json.dumps(item, ensure_ascii=False, separators=(",", ":")),
            ITEM_MARKER: 1,
        }

    def test_an_undecodable_encoded_line_is_none(self):
        assert message_to_item(ChatMessage(ITEM_ROLE, "{not json", turnlog_item=1)) is None
        assert message_to_item(ChatMessage(ITEM_ROLE, "[1, 2]", turnlog_item=1)) is None

    def test_a_line_with_the_role_but_no_marker_is_a_plain_message(self):
        message = ChatMessage(ITEM_ROLE, '{"a": 1}')
        assert message_to_item(message) == {"role": ITEM_ROLE, "content": '{"a": 1}'}

    def test_what_json_cannot_hold_is_refused(self):
        with pytest.raises(ValueError):
            item_to_message({"type": "x", "value": float("nan")})
        with pytest.raises(TypeError):
            item_to_message({"type": "x", "value": object()})
        with pytest.raises(TypeError):
            item_to_message(["role", "user"])  # type: ignore[arg-type]


@needs_sdk
class TestProtocol:
    def test_it_is_an_sdk_session(self, tmp_path):
        session = TurnlogSession("s", workspace=tmp_path)
        assert isinstance(session, Session)
        assert session.session_id == "s"
        assert session.session_settings == SessionSettings()

    def test_items_round_trip_exactly_in_order(self, store):
        session = TurnlogSession("chat/42", store)
        run(session.add_items(copy.deepcopy(ITEMS[:5])))
        run(session.add_items(copy.deepcopy(ITEMS[5:])))
        assert run(session.get_items()) == ITEMS
        # A new session object over the same files reads the same.
        again = TurnlogSession("chat/42", type(store)(os.path.dirname(store.sessions_dir)))
        assert run(again.get_items()) == ITEMS

    def test_plain_messages_are_plain_turnlog_lines(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items([{"role": "user", "content": "hi"}, ITEMS[7], ITEMS[2]]))
        path = os.path.join(store.sessions_dir, "s.jsonl")
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
        assert lines[0] == '{"role":"user","content":"hi"}'
        assert json.loads(lines[1])["role"] == ITEM_ROLE
        assert lines[2] == '{"role":"developer","content":"answer in French","type":"message"}'
        loaded = store.load("s")
        assert loaded[0] == ChatMessage("user", "hi")
        assert loaded[2] == ChatMessage("developer", "answer in French", type="message")

    def test_plain_turnlog_history_reads_as_items(self, store):
        store.append("s", ChatMessage.user("hello"))
        store.append("s", {"role": "assistant", "content": "hi!", "name": "bot"})
        session = TurnlogSession("s", store)
        assert run(session.get_items()) == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi!", "name": "bot"},
        ]

    def test_limit_gives_the_newest_oldest_first(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items(copy.deepcopy(ITEMS)))
        assert run(session.get_items(limit=3)) == ITEMS[-3:]
        assert run(session.get_items(limit=1)) == ITEMS[-1:]
        assert run(session.get_items(limit=len(ITEMS) + 5)) == ITEMS
        assert run(session.get_items(limit=0)) == []
        assert run(session.get_items(limit=-1)) == ITEMS  # as SQLiteSession
        with pytest.raises(TypeError):
            run(session.get_items(limit="3"))  # type: ignore[arg-type]

    def test_session_settings_limit_is_the_default(self, store):
        session = TurnlogSession("s", store, session_settings=SessionSettings(limit=2))
        run(session.add_items(copy.deepcopy(ITEMS)))
        assert run(session.get_items()) == ITEMS[-2:]
        assert run(session.get_items(limit=4)) == ITEMS[-4:]
        from_dict = TurnlogSession("s", store, session_settings={"limit": 1})
        assert from_dict.session_settings == SessionSettings(limit=1)
        assert run(from_dict.get_items()) == ITEMS[-1:]
        # The SDK also lets a plain dict be assigned later.
        from_dict.session_settings = {"limit": 3}  # type: ignore[assignment]
        assert run(from_dict.get_items()) == ITEMS[-3:]

    def test_pop_item_returns_the_newest_or_none(self, store):
        session = TurnlogSession("s", store)
        assert run(session.pop_item()) is None
        run(session.add_items(copy.deepcopy(ITEMS[5:8])))
        assert run(session.pop_item()) == ITEMS[7]
        assert run(session.pop_item()) == ITEMS[6]
        assert run(session.get_items()) == ITEMS[5:6]
        assert run(session.pop_item()) == ITEMS[5]
        assert run(session.pop_item()) is None
        assert store.load("s") == []

    def test_clear_session(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items(copy.deepcopy(ITEMS)))
        run(session.clear_session())
        assert run(session.get_items()) == []
        assert store.load("s") == []
        run(session.add_items([{"role": "user", "content": "again"}]))
        assert run(session.get_items()) == [{"role": "user", "content": "again"}]

    def test_sessions_are_separate(self, store):
        one, two = TurnlogSession("one", store), TurnlogSession("two", store)
        run(one.add_items([{"role": "user", "content": "1"}]))
        run(two.add_items([{"role": "user", "content": "2"}]))
        run(one.clear_session())
        assert run(two.get_items()) == [{"role": "user", "content": "2"}]

    def test_adding_nothing_creates_nothing(self, store):
        run(TurnlogSession("s", store).add_items([]))
        assert store.list_sessions() == []

    def test_a_bad_item_writes_nothing(self, store):
        session = TurnlogSession("s", store)
        with pytest.raises(ValueError):
            run(session.add_items([{"role": "user", "content": "ok"}, {"x": float("inf")}]))
        with pytest.raises(TypeError):
            run(session.add_items([{"role": "user", "content": "ok", "x": {1, 2}}]))
        assert store.load("s") == []

    def test_undecodable_lines_are_skipped(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items([{"role": "user", "content": "a"}]))
        store.append("s", ChatMessage(ITEM_ROLE, "{broken", turnlog_item=1))
        run(session.add_items([{"role": "user", "content": "b"}]))
        for _ in range(3):
            store.append("s", ChatMessage(ITEM_ROLE, "{broken", turnlog_item=1))
        expected = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        assert run(session.get_items()) == expected
        assert run(session.get_items(limit=2)) == expected  # reads back past the broken lines
        assert run(session.pop_item()) == expected[1]  # dropping the broken lines above it
        assert len(store.load("s")) == 2

    def test_a_wider_read_still_gives_the_newest(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items([{"role": "user", "content": c} for c in "abc"]))
        store.append("s", ChatMessage(ITEM_ROLE, "{broken", turnlog_item=1))
        # Two lines hold one item; four hold three, of which the newest two are wanted.
        assert run(session.get_items(limit=2)) == [
            {"role": "user", "content": "b"},
            {"role": "user", "content": "c"},
        ]

    def test_store_calls_run_off_the_event_loop(self):
        backend = ThreadRecordingBackend()
        session = TurnlogSession("s", backend)

        async def scenario() -> None:
            await session.add_items([{"role": "user", "content": "hi"}])
            await session.get_items()
            await session.get_items(limit=1)
            await session.pop_item()
            await session.clear_session()

        run(scenario())
        assert backend.threads  # every call was recorded ...
        assert threading.get_ident() not in backend.threads  # ... and none on the loop thread

    @pytest.mark.parametrize("write_fails", [False, True])
    def test_a_cancelled_write_is_finished_before_the_cancellation_is_raised(self, write_fails):
        """The write runs to its end, then the caller gets CancelledError: also when the write
        then failed (as the SDK's own sessions; asyncio.timeout and task groups rely on it)."""
        backend = ThreadRecordingBackend()
        entered, release = threading.Event(), threading.Event()

        def slow_append_many(session_key, messages):
            entered.set()
            release.wait(10)
            if write_fails:
                raise OSError("disk full")
            ThreadRecordingBackend.append_many(backend, session_key, messages)

        backend.append_many = slow_append_many  # type: ignore[method-assign]
        session = TurnlogSession("s", backend)

        async def scenario() -> list[ChatMessage]:
            task = asyncio.ensure_future(session.add_items([{"role": "user", "content": "hi"}]))
            await asyncio.to_thread(entered.wait, 10)
            task.cancel()
            await asyncio.sleep(0.05)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            return list(backend.sessions.get("s", []))

        assert run(scenario()) == ([] if write_fails else [ChatMessage.user("hi")])

    def test_close(self, store):
        session = TurnlogSession("s", store)
        run(session.add_items([{"role": "user", "content": "hi"}]))
        session.close()  # as SQLiteSession.close(), a plain call ...
        assert run(_await(session.close())) is None  # ... or awaited, as the asyncio sessions'
        session.close()  # twice is fine
        for call in (
            session.get_items(),
            session.add_items([{"role": "user", "content": "x"}]),
            session.pop_item(),
            session.clear_session(),
        ):
            with pytest.raises(RuntimeError, match="closed"):
                run(call)
        assert store.load("s") == [ChatMessage.user("hi")]  # the store stays open
        assert TurnlogSession("s", store).session_id == "s"

    def test_unknown_settings_are_refused_as_the_sdk_refuses_them(self, store):
        from agents import SQLiteSession

        with pytest.raises(TypeError) as sdk:
            SQLiteSession("s", session_settings={"limitt": 1})
        with pytest.raises(TypeError) as ours:
            TurnlogSession("s", store, session_settings={"limitt": 1})
        assert str(ours.value) == str(sdk.value)
        session = TurnlogSession("s", store, session_settings={"limit": 1})
        assert session.session_settings == SessionSettings(limit=1)

    def test_what_a_line_cannot_hold_comes_back_as_from_sqlite_session(self, store):
        """Lone surrogates (``surrogateescape`` output of a tool) and non-``str`` keys: stored
        and returned exactly as the SDK's own SQLiteSession returns them."""
        from agents import SQLiteSession

        items: list[Any] = [
            {"role": "user", "content": "bad byte \udcff here"},
            {"type": "function_call_output", "call_id": "c", "output": "\udcfe\udcff"},
            {"role": "user", "content": "keys", 1: "one", None: "none", 2.5: True},
            {"role": "tool", "content": "x", "meta": {"\udcff": [1, {3: "three"}]}},
        ]
        reference = SQLiteSession("s")
        run(reference.add_items(copy.deepcopy(items)))
        expected = run(reference.get_items())
        reference.close()
        session = TurnlogSession("s", store)
        run(session.add_items(copy.deepcopy(items)))
        got = run(session.get_items())
        assert got == expected
        assert [list(item) for item in got] == [list(item) for item in expected]
        assert run(session.pop_item()) == expected[-1]

    def test_concurrent_pops_from_two_sessions_return_each_item_once(self, store):
        items = [{"role": "user", "content": str(i)} for i in range(60)]
        run(TurnlogSession("s", store).add_items(items))
        first, second = TurnlogSession("s", store), TurnlogSession("s", store)

        async def scenario() -> list[Any]:
            pops = [session.pop_item() for _ in range(35) for session in (first, second)]
            return await asyncio.gather(*pops)

        popped = [item["content"] for item in run(scenario()) if item is not None]
        assert sorted(popped, key=int) == [str(i) for i in range(60)]
        assert run(first.pop_item()) is None

    def test_any_session_backend_works(self):
        backend = ThreadRecordingBackend()
        session = TurnlogSession("s", backend)
        run(session.add_items(copy.deepcopy(ITEMS)))
        assert run(session.get_items()) == ITEMS
        assert run(session.pop_item()) == ITEMS[-1]

    def test_arguments_are_checked(self, tmp_path, store):
        with pytest.raises(ValueError, match="not both"):
            TurnlogSession("s", store, workspace=tmp_path)
        with pytest.raises(ValueError, match="store or a workspace"):
            TurnlogSession("s")
        with pytest.raises(TypeError):
            TurnlogSession(42, store)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            TurnlogSession("", store)
        with pytest.raises(TypeError):
            TurnlogSession("s", {})  # type: ignore[arg-type]

    def test_the_default_store_is_a_session_store_of_the_workspace(self, tmp_path):
        session = TurnlogSession("s", workspace=tmp_path / "ws")
        run(session.add_items([{"role": "user", "content": "hi"}]))
        with open(tmp_path / "ws" / "sessions" / "s.jsonl", encoding="utf-8") as file:
            assert file.read() == '{"role":"user","content":"hi"}\n'


if MISSING is None:

    class StubModel(Model):
        """A model that answers with the given outputs, one per call, and records its input."""

        def __init__(self, outputs: list[list[Any]]) -> None:
            self.outputs = list(outputs)
            self.inputs: list[Any] = []

        async def get_response(self, system_instructions, input, *args, **kwargs):
            self.inputs.append(copy.deepcopy(input))
            return ModelResponse(output=self.outputs.pop(0), usage=Usage(), response_id=None)

        def stream_response(self, *args, **kwargs):  # pragma: no cover - not streamed here
            raise NotImplementedError

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"


def reply(text: str, item_id: str) -> Any:
    return ResponseOutputMessage(
        id=item_id,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(text=text, type="output_text", annotations=[])],
    )


def reply_item(text: str, item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "content": [{"annotations": [], "text": text, "type": "output_text"}],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    }


@needs_sdk
class TestRunner:
    def test_two_turns_with_a_tool_call_read_history_through_the_session(self, store, monkeypatch):
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
        call = ResponseFunctionToolCall(
            id="fc_1",
            call_id="call_1",
            type="function_call",
            name="weather",
            arguments='{"city":"Oslo"}',
        )
        model = StubModel(
            [[call], [reply("It is sunny.", "msg_1")], [reply("You're welcome.", "msg_2")]]
        )
        agent = Agent(name="bot", instructions="be brief", model=model, tools=[weather])
        config = RunConfig(tracing_disabled=True)

        first = run(
            Runner.run(
                agent, "Weather in Oslo?", session=TurnlogSession("u1", store), run_config=config
            )
        )
        assert first.final_output == "It is sunny."
        # The second turn runs on a new session object: the history comes from the files.
        session = TurnlogSession("u1", type(store)(os.path.dirname(store.sessions_dir)))
        second = run(Runner.run(agent, "Thanks!", session=session, run_config=config))
        assert second.final_output == "You're welcome."

        turn_one = [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "arguments": '{"city":"Oslo"}',
                "call_id": "call_1",
                "name": "weather",
                "type": "function_call",
                "id": "fc_1",
            },
            {"call_id": "call_1", "output": "sunny in Oslo", "type": "function_call_output"},
            reply_item("It is sunny.", "msg_1"),
        ]
        history = run(session.get_items())
        assert history == [
            *turn_one,
            {"role": "user", "content": "Thanks!"},
            reply_item("You're welcome.", "msg_2"),
        ]
        # The model saw the whole first turn, read back from turnlog, before the new input.
        assert [dict(item) for item in model.inputs[-1]] == [
            *turn_one,
            {"role": "user", "content": "Thanks!"},
        ]
        # The user turns are plain turnlog messages; the SDK writes their content first, which
        # turnlog_keys records, so the next turn serialises the same prefix.
        users = [m for m in store.load("u1") if m.role == "user"]
        order = {"turnlog_keys": ["content", "role"]}
        assert users == [
            ChatMessage("user", "Weather in Oslo?", **order),
            ChatMessage("user", "Thanks!", **order),
        ]
        assert [list(item) for item in history if item.get("role") == "user"] == [
            ["content", "role"],
            ["content", "role"],
        ]
        assert [m.role for m in store.load("u1")].count(ITEM_ROLE) == 4


def test_import_turnlog_imports_no_framework():
    code = (
        "import sys, turnlog, turnlog.integrations\n"
        "loaded = [m for m in ('agents', 'langchain_core', 'openai',\n"
        "          'turnlog.integrations.openai_agents', 'turnlog.integrations.langchain')\n"
        "          if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
