"""An OpenAI Agents SDK ``Session`` kept in a turnlog store.

>>> from agents import Agent, Runner
>>> from turnlog.integrations.openai_agents import TurnlogSession
>>> session = TurnlogSession("telegram_user123", workspace="./workspace")
>>> result = await Runner.run(Agent(name="bot"), "hello", session=session)

Every item the SDK stores becomes one line of the session's transcript, in order:

- an item with a string ``role`` and a string ``content`` (``{"role": "user", "content": "hi"}``,
  what the SDK makes of a string input) is stored as that very message: its other keys become
  the message's extra fields, so the line is an ordinary turnlog message that any turnlog
  reader (or ZeroClaw) sees as it is. When its keys come in another order than ``role``,
  ``content``, the rest (the SDK writes ``{"content": ..., "role": "user"}``), the extra field
  ``"turnlog_keys"`` lists them in their order, so the item comes back key for key as given;
- any other item (an assistant output message, whose ``content`` is a list of parts; a function
  call and its output; a reasoning item; ...), and a message holding what a turnlog line cannot
  (lone surrogates, non-``str`` keys), is stored as
  ``{"role": "agents_item", "content": "<the item as compact JSON>", "turnlog_item": 1}``:
  still a valid turnlog line, which plain chat readers can recognise by its role and skip.

``get_items()`` gives back exactly what ``add_items()`` got (equal dicts with their keys in the
same order). The only changes are JSON's, as with the SDK's own ``SQLiteSession``: a tuple comes
back as a list, a non-``str`` key as a string (``1`` as ``"1"``). Lone surrogates (text decoded
with ``surrogateescape``) are kept. An item JSON cannot hold (NaN, an object) is refused with
``TypeError``/``ValueError`` and nothing of that call is written.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

try:
    from agents.memory import SessionSettings
    from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "turnlog.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'turnlog[openai-agents]'"
    ) from error

from .. import ChatMessage, SessionBackend
from ..aio import INLINE_MESSAGES
from ..backends.jsonl.rust import is_plain as is_plain_rust_store
from ._json import dumps, is_line_safe
from ._store import resolve_store

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory import Session

__all__ = [
    "ITEM_MARKER",
    "ITEM_ROLE",
    "KEY_ORDER",
    "TurnlogSession",
    "item_to_message",
    "message_to_item",
]

#: The role of a line that holds an SDK item as JSON in its ``content``.
ITEM_ROLE = "agents_item"
#: The extra field that marks such a line (its value is the encoding's version, ``1``).
ITEM_MARKER = "turnlog_item"
#: The extra field of a plain message whose item had its keys in another order: those keys.
KEY_ORDER = "turnlog_keys"
_CANONICAL = ["role", "content"]

_T = TypeVar("_T")


def item_to_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """The turnlog message (a dict) that stores one SDK item.

    An item with a ``str`` role and ``str`` content is its own message (with ``turnlog_keys``
    when its keys are not in the order role, content, the rest); any other item (and one that a
    line cannot hold as it is, or that would read back as an encoded one: role ``agents_item``,
    a ``turnlog_item`` or ``turnlog_keys`` key) is encoded as ``{"role": "agents_item",
    "content": <compact JSON>, "turnlog_item": 1}``.

    Raises:
        TypeError: ``item`` is not a mapping, or holds a value JSON cannot represent.
        ValueError: ``item`` holds NaN or an infinity.
    """
    if not isinstance(item, Mapping):
        raise TypeError(f"a session item must be a mapping, not {type(item).__name__}")
    role = item.get("role")
    content = item.get("content")
    if (
        isinstance(role, str)
        and role != ITEM_ROLE
        and isinstance(content, str)
        and ITEM_MARKER not in item
        and KEY_ORDER not in item
        and is_line_safe(item)
    ):
        keys = list(item)
        if keys[:2] == _CANONICAL:
            return dict(item)
        rest = {key: value for key, value in item.items() if key not in _CANONICAL}
        return {"role": role, "content": content, **rest, KEY_ORDER: keys}
    return {"role": ITEM_ROLE, "content": dumps(item), ITEM_MARKER: 1}


def message_to_item(message: ChatMessage) -> dict[str, Any] | None:
    """The SDK item a turnlog message stores (see ``item_to_message``).

    An ordinary message (one written by any turnlog user) is the item ``message.to_dict()``,
    its keys in the order ``turnlog_keys`` gives when it has one. Returns ``None`` for an
    ``agents_item`` line whose content is not a JSON object (a line edited by hand): the session
    skips it, as the SDK's ``SQLiteSession`` skips a row that is not JSON.
    """
    if message.role == ITEM_ROLE and ITEM_MARKER in message.extra:
        try:
            item = json.loads(message.content)
        except ValueError:
            return None
        return item if isinstance(item, dict) else None
    item = message.to_dict()
    order = item.pop(KEY_ORDER, None)
    if isinstance(order, list) and sorted(order, key=str) == sorted(item):
        return {key: item[key] for key in order}
    return item


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: a session lock that a worker thread held
    at the fork would stay taken there for good. Fresh locks."""
    for session in list(_LIVE):
        session._lock = threading.Lock()


#: Every ``TurnlogSession`` of the process, to renew their locks in a forked child.
_LIVE: weakref.WeakSet[TurnlogSession] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork_in_child)


class TurnlogSession:
    """A session of the OpenAI Agents SDK (the ``agents.memory.Session`` protocol) whose items
    are the messages of one turnlog session.

    Blocking store calls run in a worker thread (``asyncio.to_thread``), so the event loop is
    never held up by disk I/O; with the Rust store, calls that are cheap and find the session's
    lock free (``get_items`` of at most ``turnlog.aio.INLINE_MESSAGES`` items, ``add_items`` of as
    many, ``pop_item``) run on the loop instead, which costs less than the thread hop, as
    ``turnlog.aio`` does. Calls on one ``TurnlogSession`` are serialised by a lock; other
    sessions, threads and processes may work on the same turnlog session at once: appends are
    atomic, and ``pop_item`` is the store's atomic ``pop_last`` (two callers popping at once get
    two different items). A write whose caller is cancelled runs to its end in its thread, and
    the caller gets ``CancelledError``, whatever the write did (as with the SDK's sessions).

    Args:
        session_id: The turnlog session key (any non-empty ``str``; the file name is derived
            reversibly, see ``docs/FORMAT.md``).
        store: Any turnlog ``SessionBackend``. Default: ``turnlog.SessionStore(workspace)``.
        workspace: The workspace folder of the default store (give it or ``store``, not both).
        session_settings: The SDK's ``SessionSettings`` (or a dict of them, checked as the SDK
            checks it); its ``limit`` is the default of ``get_items``. Default:
            ``SessionSettings()``, no limit.

    Raises:
        TypeError: ``session_id`` is not a ``str``, ``store`` not a ``SessionBackend``, or a
            setting is unknown.
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
        else:
            settings = (
                dict(session_settings)
                if isinstance(session_settings, Mapping)
                else session_settings
            )
            self.session_settings = coerce_session_settings(settings)
        self._lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)
        # The Rust store's twin that never waits for a lock: cheap calls run through it inline.
        # Not for a subclass: its overrides must run, and the twin is a plain store.
        now = self.store.without_waiting() if is_plain_rust_store(self.store) else None
        self._now_reader = now
        self._now_writer = now if now is not None and now.durability == "process" else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, {self.store!r})"

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items, oldest first.

        Args:
            limit: Only the newest ``limit`` items (still oldest first). ``None``: the limit of
                ``session_settings`` (all items when that is ``None`` too). ``0`` gives ``[]``;
                a negative limit gives every item, as the SDK's ``SQLiteSession`` does.
        """
        self._check_open()
        # The SDK lets callers assign a plain dict of settings too; it resolves either.
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
        wanted = None if limit is None or limit < 0 else limit
        if wanted is not None and wanted <= INLINE_MESSAGES:
            found = self._inline(self._now_reader, _get_items, wanted, INLINE_MESSAGES)
            if found is not _BUSY:
                return cast("list[TResponseInputItem]", found)
        return await asyncio.to_thread(self._locked, _get_items, wanted)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items`` at the end of the session, in order, with one write (all or none).

        Raises:
            TypeError, ValueError: an item cannot be stored (see ``item_to_message``); nothing
                is written.
        """
        self._check_open()
        messages = [item_to_message(cast("Mapping[str, Any]", item)) for item in items]
        if not messages:
            return
        inline = len(messages) <= INLINE_MESSAGES
        if inline and self._inline(self._now_writer, _add, messages) is not _BUSY:
            return
        await _finish(asyncio.to_thread(self._locked, _add, messages))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove the newest item and return it; ``None`` when the session is empty."""
        self._check_open()
        popped = self._inline(self._now_writer, _pop_item)
        if popped is not _BUSY:
            return cast("TResponseInputItem | None", popped)
        return await _finish(asyncio.to_thread(self._locked, _pop_item))

    async def clear_session(self) -> None:
        """Remove every item (the session stays, empty, with its metadata)."""
        self._check_open()
        await _finish(asyncio.to_thread(self._locked, _clear))

    def close(self) -> Awaitable[None]:
        """Close the session: later calls raise ``RuntimeError``, as the SDK's sessions do. The
        store stays open (other sessions may share it); closing twice is fine.

        Closed on return. The SDK's ``SQLiteSession.close()`` is a plain call, while its
        asyncio sessions' is a coroutine: the result here may be awaited or ignored, so code
        written for either works."""
        self._closed = True
        return _DONE

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    # --- running calls ---------------------------------------------------------------------------

    def _locked(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(store, key, *args)`` under this session's lock, in a worker thread."""
        with self._lock:
            return function(self.store, self.session_id, *args)

    def _inline(self, store: SessionBackend | None, function: Callable[..., _T], *args: Any) -> Any:
        """``function(store, key, *args)`` on the caller's thread, if ``store`` (the twin that
        never waits) is given and neither this session's lock nor the transcript's is taken;
        else ``_BUSY``, having changed nothing."""
        if store is None or not self._lock.acquire(blocking=False):
            return _BUSY
        try:
            return function(store, self.session_id, *args)
        except TimeoutError:
            return _BUSY
        finally:
            self._lock.release()


# --- in a worker thread, or inline --------------------------------------------------------------

_BUSY = object()


def _get_items(
    store: SessionBackend, key: str, limit: int | None, most: int | None = None
) -> list[TResponseInputItem]:
    """The newest ``limit`` items, reading at most ``most`` messages (else ``TimeoutError``,
    having changed nothing: the call is then made again in a thread)."""
    if limit is None:
        return _items(store.load(key))
    if limit == 0:
        return []
    # Undecodable lines are skipped, so read further back until ``limit`` items are found.
    window = limit
    while True:
        messages = store.load(key, limit=window)
        items = _items(messages)
        if len(items) >= limit or len(messages) < window:
            return items[-limit:]
        window *= 2
        if most is not None and window > most:
            raise TimeoutError("more messages to read than an inline call reads")


def _add(store: SessionBackend, key: str, messages: list[dict[str, Any]]) -> None:
    store.append_many(key, messages)


def _clear(store: SessionBackend, key: str) -> int:
    return store.clear_messages(key)


def _pop_item(store: SessionBackend, key: str) -> TResponseInputItem | None:
    while (newest := store.pop_last(key)) is not None:
        item = message_to_item(newest)
        if item is not None:
            return cast("TResponseInputItem", item)
        # An undecodable item is dropped and the next one popped, as SQLiteSession does.
    return None


class _Done:
    """An awaitable that is already done (``await`` gives ``None`` at once), and that, unlike a
    coroutine, nothing warns about when it is never awaited."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # a generator that yields nothing


_DONE = _Done()


def _items(messages: list[ChatMessage]) -> list[TResponseInputItem]:
    decoded = (message_to_item(message) for message in messages)
    return [cast("TResponseInputItem", item) for item in decoded if item is not None]


async def _finish(write: Awaitable[_T]) -> _T:
    """Await a write to its end even if the caller is cancelled meanwhile (the thread cannot be
    stopped), then raise the cancellation, whether the write succeeded or failed: a cancelled
    caller gets ``CancelledError``, as from the SDK's own sessions, which ``asyncio.timeout``
    and task groups rely on."""
    task = asyncio.ensure_future(write)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as error:
            cancelled = cancelled or error
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the loop does not log it as never retrieved
        raise cancelled from None
    return task.result()


if TYPE_CHECKING:

    def _is_a_session(session: TurnlogSession) -> Session:
        """mypy checks here that ``TurnlogSession`` satisfies the SDK's ``Session`` protocol."""
        return session
