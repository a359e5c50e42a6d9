"""A LangChain chat message history kept in a turnlog store.

>>> from turnlog.integrations.langchain import TurnlogChatMessageHistory
>>> history = TurnlogChatMessageHistory("telegram_user123", workspace="./workspace")
>>> history.add_messages([HumanMessage("hi"), AIMessage("hello!")])
>>> history.messages
[HumanMessage(content='hi', ...), AIMessage(content='hello!', ...)]

Each LangChain message is one turnlog message (one line), converted losslessly:

- ``role`` from the message type: ``human`` → ``user``, ``ai`` → ``assistant``, ``system`` →
  ``system``, ``tool`` → ``tool``, ``function`` → ``function``, ``chat`` → its own ``role``;
- ``content``: a string content as it is; a list content (content blocks) as its compact JSON,
  marked by the extra field ``"langchain_content": "json"``;
- every other field of the message (``additional_kwargs``, ``response_metadata``, ``name``,
  ``id``, ``tool_calls``, ``invalid_tool_calls``, ``usage_metadata``, ``tool_call_id``,
  ``artifact``, ``status``, ...) as an extra field of the same name, *unless it has its default
  value* (so ``HumanMessage("hi")`` is the plain line ``{"role":"user","content":"hi"}``);
- ``"langchain_type": "<type>"`` only when the role does not tell the type (a ``chat`` message
  whose role is ``user``, ``assistant``, ``system``, ``tool`` or ``function``; a chunk type such
  as ``AIMessageChunk``);
- a message holding what a turnlog line cannot (a lone surrogate, from text decoded with
  ``surrogateescape``; a non-``str`` key) is stored whole: its role, and as content LangChain's
  own dict of it as JSON (the surrogates as ``\\uXXXX`` escapes), marked by
  ``"langchain_message": "json"``; it reads back equal, as from LangChain's JSON histories.

Reading uses LangChain's own ``messages_from_dict``, so ``messages`` gives back messages equal
to those added. A line written by another program is read by its role (``user`` → human, ...,
any other role → a ``ChatMessage`` of that role), its extra fields becoming the message's
fields; one that the message class refuses (a ``tool`` line without ``tool_call_id``) is read
as a ``ChatMessage`` instead. Field values must be JSON (as for every JSON-backed history):
anything else is refused with ``TypeError`` when added, and nothing of that call is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
    from langchain_core.messages import ChatMessage as LangChainChatMessage
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "turnlog.integrations.langchain needs langchain-core: pip install 'turnlog[langchain]'"
    ) from error

from .. import ChatMessage, SessionBackend
from ._json import dumps, is_line_safe
from ._store import resolve_store

if TYPE_CHECKING:
    import os

__all__ = [
    "CONTENT_FIELD",
    "MESSAGE_FIELD",
    "TYPE_FIELD",
    "TurnlogChatMessageHistory",
    "message_from_turnlog",
    "message_to_turnlog",
]

#: The extra field that marks a content stored as JSON (its value is ``"json"``).
CONTENT_FIELD = "langchain_content"
#: The extra field that holds the message type when the role does not tell it.
TYPE_FIELD = "langchain_type"
#: The extra field that marks a message stored whole, as LangChain's JSON (value ``"json"``).
MESSAGE_FIELD = "langchain_message"

_TYPE_TO_ROLE = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "remove": "remove",
    "HumanMessageChunk": "user",
    "AIMessageChunk": "assistant",
    "SystemMessageChunk": "system",
    "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "function",
}
#: The types whose role is a field of the message.
_CHAT_TYPES = frozenset({"chat", "ChatMessageChunk"})
#: Every type ``messages_from_dict`` reads.
_TYPES = frozenset(_TYPE_TO_ROLE) | _CHAT_TYPES
#: The type a role means when no ``langchain_type`` says otherwise (any other role: ``chat``).
_ROLE_TO_TYPE = {
    "user": "human",
    "assistant": "ai",
    "system": "system",
    "tool": "tool",
    "function": "function",
}
_RESERVED = frozenset({"role", "content", CONTENT_FIELD, TYPE_FIELD, MESSAGE_FIELD})


def message_to_turnlog(message: BaseMessage) -> ChatMessage:
    """The turnlog message that stores a LangChain message (see the module's docstring).

    Raises:
        TypeError: ``message`` is not a ``BaseMessage``, is of a type LangChain's
            ``messages_from_dict`` cannot read back, or its content is not JSON.
        ValueError: the message has an extra field named like one of turnlog's (``role``,
            ``content``, ``langchain_type``, ``langchain_content``), or its content holds NaN.
    """
    if not isinstance(message, BaseMessage):
        raise TypeError(f"a message must be a langchain BaseMessage, not {type(message).__name__}")
    dumped = message_to_dict(message)
    kind = dumped["type"]
    if kind not in _TYPES:
        raise TypeError(
            f"cannot store a message of type {kind!r}: langchain's messages_from_dict would "
            "not read it back"
        )
    data: dict[str, Any] = dict(dumped["data"])
    data.pop("type", None)
    content = data.pop("content")
    role = data.pop("role") if kind in _CHAT_TYPES else _TYPE_TO_ROLE[kind]
    fields = _without_defaults(type(message), data)
    clashing = sorted(_RESERVED.intersection(fields))
    if clashing:
        raise ValueError(f"cannot store a message with a field named {clashing[0]!r}")
    if isinstance(content, str):
        text = content
    else:
        text = dumps(content)
        fields[CONTENT_FIELD] = "json"
    if _ROLE_TO_TYPE.get(role, "chat") != kind:
        fields[TYPE_FIELD] = kind
    if not is_line_safe([role, text, fields]):
        return ChatMessage(
            role if is_line_safe(role) else "chat", dumps(dumped), **{MESSAGE_FIELD: "json"}
        )
    return ChatMessage(role, text, **fields)


def message_from_turnlog(message: ChatMessage) -> BaseMessage:
    """The LangChain message a turnlog message stores (see the module's docstring)."""
    fields = dict(message.extra)
    if fields.get(MESSAGE_FIELD) == "json":
        try:
            return messages_from_dict([json.loads(message.content)])[0]
        except Exception:  # a line edited by hand: read as the plain message it now is
            fields.pop(MESSAGE_FIELD)
    kind = fields.pop(TYPE_FIELD, None)
    content: str | list[Any] = message.content
    if fields.pop(CONTENT_FIELD, None) == "json":
        try:
            decoded = json.loads(message.content)
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            content = decoded
    if kind not in _TYPES:
        kind = _ROLE_TO_TYPE.get(message.role, "chat")
    data: dict[str, Any] = {"content": content, **fields}
    if kind in _CHAT_TYPES:
        data["role"] = message.role
    # A line the message class refuses (another program's ``tool`` line without a
    # ``tool_call_id``, a field of the wrong type) is kept as a ``ChatMessage`` of its role, with
    # its fields, or, if even that refuses them, with its fields in ``additional_kwargs``. The
    # classes' validators raise more than pydantic's ``ValidationError`` (``KeyError``, ...), and
    # one odd line must not make the whole history unreadable.
    try:
        return messages_from_dict([{"type": kind, "data": data}])[0]
    except Exception:
        pass
    try:
        return LangChainChatMessage(role=message.role, content=content, **fields)
    except Exception:
        return LangChainChatMessage(role=message.role, content=content, additional_kwargs=fields)


class TurnlogChatMessageHistory(BaseChatMessageHistory):
    """A LangChain ``BaseChatMessageHistory`` whose messages are one turnlog session's.

    Works wherever LangChain takes a chat history, e.g. as what the ``get_session_history``
    factory of ``RunnableWithMessageHistory`` returns. The async methods run the store's
    blocking calls in a worker thread (``asyncio.to_thread``).

    Args:
        session_id: The turnlog session key (any non-empty ``str``).
        store: Any turnlog ``SessionBackend``. Default: ``turnlog.SessionStore(workspace)``.
        workspace: The workspace folder of the default store (give it or ``store``, not both).
        limit: When given, ``messages`` holds only the newest ``limit`` messages (turnlog reads
            just the end of the file); ``None`` (default): all of them.

    Raises:
        TypeError: ``session_id`` is not a ``str``, ``store`` not a ``SessionBackend``, or
            ``limit`` not an ``int``.
        ValueError: ``session_id`` is empty, ``limit`` negative, or neither or both of ``store``
            and ``workspace`` are given.
    """

    def __init__(
        self,
        session_id: str,
        store: SessionBackend | None = None,
        *,
        workspace: str | os.PathLike[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, not {type(session_id).__name__}")
        if not session_id:
            raise ValueError("session_id must not be empty")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"limit must not be negative, got {limit}")
        self.session_id = session_id
        self.store = resolve_store(store, workspace)
        self.limit = limit

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, {self.store!r})"

    def __eq__(self, other: object) -> bool:
        """Equal to any chat history holding the same messages, as LangChain's own histories
        (pydantic models) compare; so, like them, a history is not hashable."""
        if not isinstance(other, BaseChatMessageHistory):
            return NotImplemented
        return self.messages == other.messages

    __hash__ = None  # type: ignore[assignment]

    # ``BaseChatMessageHistory`` declares ``messages`` as an attribute; here it is read-only
    # (a read of the store each time), and writes go through ``add_messages``.
    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages, oldest first (the newest ``limit`` when it is set)."""
        return [message_from_turnlog(m) for m in self.store.load(self.session_id, self.limit)]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` in order, with one write (all of them or, on error, none)."""
        converted = [message_to_turnlog(message) for message in messages]
        if converted:
            self.store.append_many(self.session_id, converted)

    def clear(self) -> None:
        """Remove every message (the session stays, empty, with its metadata)."""
        self.store.clear_messages(self.session_id)

    async def aget_messages(self) -> list[BaseMessage]:
        """``messages``, read in a worker thread."""
        return await asyncio.to_thread(lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """``add_messages`` in a worker thread."""
        await asyncio.to_thread(self.add_messages, list(messages))

    async def aclear(self) -> None:
        """``clear`` in a worker thread."""
        await asyncio.to_thread(self.clear)


def _without_defaults(cls: type[BaseMessage], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the fields that hold their class's default (they read back as it)."""
    fields = cls.model_fields
    kept: dict[str, Any] = {}
    for name, value in data.items():
        field = fields.get(name)
        if (
            field is not None
            and not field.is_required()
            and value == field.get_default(call_default_factory=True)
        ):
            continue
        kept[name] = value
    return kept
