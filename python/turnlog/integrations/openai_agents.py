"""An OpenAI Agents SDK ``Session`` kept in a turnlog store.

>>> from agents import Agent, Runner
>>> from turnlog.integrations.openai_agents import TurnlogSession
>>> session = TurnlogSession("telegram_user123", workspace="./workspace")
>>> result = await Runner.run(Agent(name="bot"), "hello", session=session)

Every item the SDK stores becomes one line of the session's transcript, in order:

- an item with a string ``role`` and a string ``content`` (``{"role": "user", "content": "hi"}``,
  what the SDK makes of a string input) is stored as that very message: its other keys become
  the message's extra fields, so the line is an ordinary turnlog message that any turnlog
  reader (or ZeroClaw) sees as it is;
- any other item (an assistant output message, whose ``content`` is a list of parts; a function
  call and its output; a reasoning item; ...) is stored as
  ``{"role": "agents_item", "content": "<the item as compact JSON>", "turnlog_item": 1}``:
  still a valid turnlog line, which plain chat readers can recognise by its role and skip.

``get_items()`` gives back exactly what ``add_items()`` got (equal dicts, in order). The only
changes are JSON's: a tuple comes back as a list. An item that is not JSON (NaN, a non-``str``
key, an object) is refused with ``TypeError``/``ValueError`` and nothing of that call is written.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

try:
    from agents.memory import SessionSettings
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "turnlog.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'turnlog[openai-agents]'"
    ) from error

from .. import ChatMessage, SessionBackend
from ._store import resolve_store

if TYPE_CHECKING:
    import os

    from agents.items import TResponseInputItem
    from agents.memory import Session

__all__ = ["ITEM_MARKER", "ITEM_ROLE", "TurnlogSession", "item_to_message", "message_to_item"]

#: The role of a line that holds an SDK item as JSON in its ``content``.
ITEM_ROLE = "agents_item"
#: The extra field that marks such a line (its value is the encoding's version, ``1``).
ITEM_MARKER = "turnlog_item"

_T = TypeVar("_T")


def item_to_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """The turnlog message (a dict) that stores one SDK item.

    An item with a ``str`` role and ``str`` content is its own message; any other item (and an
    item that would read back as an encoded one: role ``agents_item`` or a ``turnlog_item`` key)
    is encoded as ``{"role": "agents_item", "content": <compact JSON>, "turnlog_item": 1}``.

    Raises:
        TypeError: ``item`` is not a mapping, or holds a value JSON cannot represent.
        ValueError: ``item`` holds NaN or an infinity.
    """
    if not isinstance(item, Mapping):
        raise TypeError(f"a session item must be a mapping, not {type(item).__name__}")
    role = item.get("role")
    if (
        isinstance(role, str)
        and role != ITEM_ROLE
        and isinstance(item.get("content"), str)
        and ITEM_MARKER not in item
    ):
        return dict(item)
    text = json.dumps(item, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return {"role": ITEM_ROLE, "content": text, ITEM_MARKER: 1}


def message_to_item(message: ChatMessage) -> dict[str, Any] | None:
    """The SDK item a turnlog message stores (see ``item_to_message``).

    An ordinary message (one written by any turnlog user) is the item ``message.to_dict()``.
    Returns ``None`` for an ``agents_item`` line whose content is not a JSON object (a line
    edited by hand): the session skips it, as the SDK's ``SQLiteSession`` skips a row that is
    not JSON.
    """
    if message.role == ITEM_ROLE and ITEM_MARKER in message.extra:
        try:
            item = json.loads(message.content)
        except ValueError:
            return None
        return item if isinstance(item, dict) else None
    return message.to_dict()


class TurnlogSession:
    """A session of the OpenAI Agents SDK (the ``agents.memory.Session`` protocol) whose items
    are the messages of one turnlog session.

    Blocking store calls run in a worker thread (``asyncio.to_thread``), so the event loop is
    never held up by disk I/O. Calls on one ``TurnlogSession`` are serialised by a lock; other
    processes may write the same session, as turnlog's appends are atomic (``pop_item`` reads
    then removes the newest line, so two processes popping the same session at once could both
    return the same item).

    Args:
        session_id: The turnlog session key (any non-empty ``str``; the file name is derived
            reversibly, see ``docs/FORMAT.md``).
        store: Any turnlog ``SessionBackend``. Default: ``turnlog.SessionStore(workspace)``.
        workspace: The workspace folder of the default store (give it or ``store``, not both).
        session_settings: The SDK's ``SessionSettings`` (or a dict of them); its ``limit`` is
            the default of ``get_items``. Default: ``SessionSettings()``, no limit.

    Raises:
        TypeError: ``session_id`` is not a ``str``, or ``store`` not a ``SessionBackend``.
        ValueError: ``session_id`` is empty, or neither or both of ``store`` and ``workspace``
            are given.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        store: SessionBackend | None = None,
        *,
        workspace: str | os.PathLike[str] | None = None,
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(session_id, str):
            raise TypeError(f"session_id must be a str, not {type(session_id).__name__}")
        if not session_id:
            raise ValueError("session_id must not be empty")
        self.session_id = session_id
        self.store = resolve_store(store, workspace)
        if session_settings is None:
            self.session_settings = SessionSettings()
        elif isinstance(session_settings, Mapping):
            self.session_settings = SessionSettings(**session_settings)
        else:
            self.session_settings = session_settings
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, {self.store!r})"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first.

        Args:
            limit: Only the newest ``limit`` items (still oldest first). ``None``: the limit of
                ``session_settings`` (all items when that is ``None`` too). ``0`` gives ``[]``;
                a negative limit gives every item, as the SDK's ``SQLiteSession`` does.
        """
        settings: Any = self.session_settings
        if limit is None and settings is not None:
            # The SDK lets callers assign a plain dict of settings too.
            limit = settings.get("limit") if isinstance(settings, Mapping) else settings.limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
        wanted = None if limit is None or limit < 0 else limit
        return await asyncio.to_thread(self._locked, self._get_items, wanted)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` at the end of the session, in order, with one write (all or none).

        Raises:
            TypeError, ValueError: an item cannot be stored (see ``item_to_message``); nothing
                is written.
        """
        messages = [item_to_message(cast("Mapping[str, Any]", item)) for item in items]
        if messages:
            await _finish(asyncio.to_thread(self._locked, self._add, messages))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it; ``None`` when the session is empty."""
        return await _finish(asyncio.to_thread(self._locked, self._pop_item))

    async def clear_session(self) -> None:
        """Remove every item (the session stays, empty, with its metadata)."""
        await _finish(asyncio.to_thread(self._locked, self.store.clear_messages, self.session_id))

    # --- in the worker thread -------------------------------------------------------------------

    def _locked(self, function: Callable[..., _T], *args: Any) -> _T:
        with self._lock:
            return function(*args)

    def _get_items(self, limit: int | None) -> list[TResponseInputItem]:
        if limit is None:
            return _items(self.store.load(self.session_id))
        if limit == 0:
            return []
        # Undecodable lines are skipped, so read further back until ``limit`` items are found.
        window = limit
        while True:
            messages = self.store.load(self.session_id, limit=window)
            items = _items(messages)
            if len(items) >= limit or len(messages) < window:
                return items[-limit:]
            window *= 2

    def _add(self, messages: list[dict[str, Any]]) -> None:
        self.store.append_many(self.session_id, messages)

    def _pop_item(self) -> TResponseInputItem | None:
        while True:
            newest = self.store.load(self.session_id, limit=1)
            if not newest or not self.store.remove_last(self.session_id):
                return None
            item = message_to_item(newest[0])
            if item is not None:
                return cast("TResponseInputItem", item)
            # An undecodable line is dropped and the next one popped, as SQLiteSession does.


def _items(messages: list[ChatMessage]) -> list[TResponseInputItem]:
    decoded = (message_to_item(message) for message in messages)
    return [cast("TResponseInputItem", item) for item in decoded if item is not None]


async def _finish(write: Awaitable[_T]) -> _T:
    """Await a write to the end even if the caller is cancelled meanwhile, then re-raise the
    cancellation: the thread cannot be stopped, so the caller learns what it did (as the SDK's
    own sessions do)."""
    task = asyncio.ensure_future(write)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            cancelled = cancelled or error
    result = task.result()
    if cancelled is not None:
        raise cancelled
    return result


if TYPE_CHECKING:

    def _is_a_session(session: TurnlogSession) -> Session:
        """mypy checks here that ``TurnlogSession`` satisfies the SDK's ``Session`` protocol."""
        return session
