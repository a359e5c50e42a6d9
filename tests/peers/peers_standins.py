"""The stand-ins that take the place of the frameworks' reference classes in their own tests.

A stand-in is a subclass of turnlog's adapter (``TurnlogSession`` or
``TurnlogChatMessageHistory``) whose only change is its constructor: it takes the reference
class's arguments (``SQLiteSession(session_id, db_path)``, ``SQLAlchemySession.from_url(session_id,
url=...)``, ``FileChatMessageHistory(file_path)``, ...) and calls the adapter's with a turnlog store
of the backend under test (``rust``, ``pure``, ``sqlite`` or ``redis``). Every other method is the
adapter's own. Being a class, it also serves where the tests use the reference class as one:
``isinstance``, ``patch.object(SQLiteSession, "add_items", ...)``, a subclass a test defines to
pause or fail a call.

What the reference class keeps apart stays apart: each database file, database URL, engine,
Redis client + key prefix or chat-history file (a *scope*) gets its own turnlog store, made in the
test's own folder (or under its own Redis prefix), and every ``:memory:`` session gets a fresh one,
as an in-memory SQLite database is private to its connection. Two reference objects on the same
scope share a store, so a test that reopens a file or a database sees what it wrote.

Constructor arguments that only choose where the reference class keeps its data (table names,
engine arguments, ``create_tables``) are accepted and only shape the scope. Arguments that change
what the reference class does and that the adapter has no equivalent for (``ttl``,
``ensure_ascii``, a custom message converter, ...) raise ``TypeError``: a test that needs one is
listed as not applicable in ``peers_suites.NOT_APPLICABLE``, with the reason.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

BACKENDS = ("rust", "pure", "sqlite", "redis")

#: Set by the plugin for each test: the ``Stores`` that stand-ins build on.
_current: Stores | None = None


class Stores:
    """The turnlog stores of one test, one per scope, of one backend, made on first use."""

    def __init__(self, backend: str, folder: Path, redis_url: str | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.folder = Path(folder)
        self.redis_url = redis_url
        self._stores: dict[Hashable, Any] = {}
        self._opened: list[Any] = []
        self._numbers = itertools.count()

    def store(self, scope: Hashable | None) -> Any:
        """The store of ``scope``; a new one for every call with ``None``."""
        if scope is not None and scope in self._stores:
            return self._stores[scope]
        store = self._open(next(self._numbers))
        if scope is not None:
            self._stores[scope] = store
        return store

    def _open(self, number: int) -> Any:
        workspace = self.folder / f"store{number}"
        if self.backend == "rust":
            import turnlog

            if turnlog.IMPLEMENTATION != "rust":
                raise RuntimeError(
                    "backend 'rust' asked for, but turnlog runs its pure-Python fallback "
                    "(no native module, or TURNLOG_PURE is set)"
                )
            store: Any = turnlog.SessionStore(workspace)
        elif self.backend == "pure":
            from turnlog.pure import SessionStore

            store = SessionStore(workspace)
        elif self.backend == "sqlite":
            import turnlog

            store = turnlog.SqliteSessionBackend(workspace)
        else:
            from turnlog.backends.redis import RedisSessionBackend

            if self.redis_url is None:
                raise RuntimeError("backend 'redis' needs a Redis server (none was started)")
            prefix = f"peers-{uuid.uuid4().hex[:12]}:"
            store = RedisSessionBackend(self.redis_url, prefix=prefix)
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            close = getattr(store, "close", None)
            if close is not None:
                close()
        self._opened.clear()
        self._stores.clear()


def current() -> Stores:
    if _current is None:
        raise RuntimeError("a reference class was built outside a test (no turnlog stores set up)")
    return _current


def _reference_only(reference: str, **arguments: Any) -> None:
    """Refuse an argument that changes what the reference class does (no adapter equivalent)."""
    for name, (value, default) in arguments.items():
        if value != default:
            raise TypeError(
                f"{reference}({name}={value!r}): an argument only the reference class has; "
                "turnlog's adapter has no equivalent (harness stand-in)"
            )


def _file_scope(kind: str, path: str | os.PathLike[str], *rest: Any) -> Hashable | None:
    text = os.fspath(path)
    if text == ":memory:" or text == "":
        return None
    return (kind, os.path.abspath(text), *rest)


def _url_scope(kind: str, url: str, *rest: Any) -> Hashable | None:
    # Every engine on an in-memory SQLite URL has its own database.
    if ":memory:" in url or url.rstrip("/").endswith("sqlite:") or url.endswith(":///"):
        return None
    return (kind, url, *rest)


# --- OpenAI Agents SDK ---------------------------------------------------------------------------


def _agents_classes() -> dict[str, type]:
    from turnlog.integrations.openai_agents import TurnlogSession, message_to_item

    class _StandInSession(TurnlogSession):
        def _open(self, session_id: str, scope: Hashable | None, session_settings: Any) -> None:
            TurnlogSession.__init__(
                self, session_id, current().store(scope), session_settings=session_settings
            )
            _apply_shims(self)

    class TurnlogAsSQLiteSession(_StandInSession):
        """``SQLiteSession(...)``: one store per database file and tables; a fresh one for
        ``:memory:``."""

        def __init__(
            self,
            session_id: str,
            db_path: str | os.PathLike[str] = ":memory:",
            sessions_table: str = "agent_sessions",
            messages_table: str = "agent_messages",
            session_settings: Any = None,
        ) -> None:
            scope = _file_scope("sqlite", db_path, sessions_table, messages_table)
            self._open(session_id, scope, session_settings)

    class TurnlogAsAsyncSQLiteSession(TurnlogAsSQLiteSession):
        """``AsyncSQLiteSession(...)``: as ``SQLiteSession``."""

    class TurnlogAsSQLAlchemySession(_StandInSession):
        """``SQLAlchemySession(...)``: one store per engine (and tables); ``from_url``: one per URL
        (and tables), a fresh one for an in-memory SQLite URL (each ``from_url`` makes its own
        engine, so its own database)."""

        def __init__(
            self,
            session_id: str,
            *,
            engine: Any,
            create_tables: bool = False,
            sessions_table: str = "agent_sessions",
            messages_table: str = "agent_messages",
            session_settings: Any = None,
            ensure_ascii: bool = True,
        ) -> None:
            _reference_only("SQLAlchemySession", ensure_ascii=(ensure_ascii, True))
            url = str(getattr(engine, "url", ""))
            scope: Hashable | None = (
                "sqlalchemy-engine",
                id(engine),
                sessions_table,
                messages_table,
            )
            if isinstance(engine, _UnusedEngine):
                scope = engine.scope
            elif url and _url_scope("sqlalchemy", url) is not None:
                scope = ("sqlalchemy", url, sessions_table, messages_table)
            self._open(session_id, scope, session_settings)
            # The reference class keeps its engine; tests dispose of it through the session.
            self.engine = engine

        @classmethod
        def from_url(
            cls,
            session_id: str,
            *,
            url: str,
            engine_kwargs: dict[str, Any] | None = None,
            session_settings: Any = None,
            **kwargs: Any,
        ) -> Any:
            tables = (
                kwargs.get("sessions_table", "agent_sessions"),
                kwargs.get("messages_table", "agent_messages"),
            )
            engine = _UnusedEngine(_url_scope("sqlalchemy", url, *tables))
            return cls(session_id, engine=engine, session_settings=session_settings, **kwargs)

    class TurnlogAsRedisSession(_StandInSession):
        """``RedisSession(...)``: one store per client and key prefix (the client itself is not
        used: the store is turnlog's backend under test); ``from_url``: one per URL and prefix."""

        def __init__(
            self,
            session_id: str,
            *,
            redis_client: Any,
            key_prefix: str = "agents:session",
            ttl: int | None = None,
            session_settings: Any = None,
        ) -> None:
            _reference_only("RedisSession", ttl=(ttl, None))
            scope = ("redis-client", id(redis_client), key_prefix)
            if isinstance(redis_client, _UnusedClient):
                scope = ("redis-url", redis_client.url, key_prefix)
            self._open(session_id, scope, session_settings)

        @classmethod
        def from_url(
            cls,
            session_id: str,
            *,
            url: str,
            redis_kwargs: dict[str, Any] | None = None,
            session_settings: Any = None,
            **kwargs: Any,
        ) -> Any:
            return cls(
                session_id,
                redis_client=_UnusedClient(url),
                session_settings=session_settings,
                **kwargs,
            )

    class TurnlogAsSimpleListSession(_StandInSession):
        """The SDK tests' own in-memory ``SimpleListSession(session_id, history)``: a fresh store,
        holding ``history`` first (added with the adapter's ``add_items``). ``saved_items``, the
        list the tests read (what the session holds), is read from the store."""

        def __init__(self, session_id: str = "test", history: list[Any] | None = None) -> None:
            self._open(session_id, None, None)
            if history:
                _run_in_a_thread(self.add_items(list(history)))

        @property
        def saved_items(self) -> list[Any]:
            decoded = (message_to_item(m) for m in self.store.load(self.session_id))
            return [item for item in decoded if item is not None]

    return {
        "SQLiteSession": TurnlogAsSQLiteSession,
        "AsyncSQLiteSession": TurnlogAsAsyncSQLiteSession,
        "SQLAlchemySession": TurnlogAsSQLAlchemySession,
        "RedisSession": TurnlogAsRedisSession,
        "SimpleListSession": TurnlogAsSimpleListSession,
    }


class _UnusedEngine:
    """The engine a ``SQLAlchemySession.from_url`` stand-in holds as ``session.engine``: the
    reference class makes one there, which tests dispose of in their cleanup (``await
    session.engine.dispose()``). The adapter has none: disposing of this one does nothing.
    Anything else raises, so a test that uses the engine for more than its cleanup fails (and
    is listed as not applicable)."""

    def __init__(self, scope: Hashable | None) -> None:
        self.scope = scope

    async def dispose(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"the harness's stand-in engine has only dispose(), not {name!r} (turnlog's adapter "
            "has no SQLAlchemy engine)"
        )


class _UnusedClient:
    """What a ``RedisSession.from_url`` stand-in is built on: its URL only."""

    def __init__(self, url: str) -> None:
        self.url = url


def _run_in_a_thread(coroutine: Any) -> Any:
    """Run ``coroutine`` to its end from synchronous code that may itself run inside an event
    loop: in a thread of its own, with its own loop."""
    import asyncio
    import threading

    outcome: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(coroutine))
        except BaseException as error:  # re-raised in the caller
            failure.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0]


# --- LangChain -----------------------------------------------------------------------------------

_history_numbers = itertools.count()


def _langchain_classes() -> dict[str, type]:
    from turnlog.integrations.langchain import TurnlogChatMessageHistory

    class _StandInHistory(TurnlogChatMessageHistory):
        def _open(self, key: str, scope: Hashable | None) -> None:
            TurnlogChatMessageHistory.__init__(self, key, current().store(scope))

        if "eq" in SHIMS:

            def __eq__(self, other: object) -> bool:
                if not isinstance(other, TurnlogChatMessageHistory):
                    return NotImplemented
                return bool(self.messages == other.messages)

            __hash__ = None  # type: ignore[assignment]

    class TurnlogAsInMemoryChatMessageHistory(_StandInHistory):
        """``InMemoryChatMessageHistory(messages=...)``: a new session of the test's store,
        holding ``messages`` first (added with the adapter's ``add_messages``)."""

        def __init__(self, messages: list[Any] | None = None) -> None:
            self._open(f"history-{next(_history_numbers)}", "in-memory")
            if messages:
                self.add_messages(list(messages))

    class TurnlogAsFileChatMessageHistory(_StandInHistory):
        """``FileChatMessageHistory(file_path)``: the session named after the file, in the store
        of its folder. ``file_path`` is kept as the attribute of that name, as the reference class
        does (tests reopen the history by it)."""

        def __init__(
            self,
            file_path: str | os.PathLike[str],
            *,
            encoding: str | None = None,
            ensure_ascii: bool = True,
        ) -> None:
            _reference_only("FileChatMessageHistory", ensure_ascii=(ensure_ascii, True))
            path = Path(file_path)
            self._open(path.name, _file_scope("file", path.parent))
            self.file_path = path

    class TurnlogAsSQLChatMessageHistory(_StandInHistory):
        """``SQLChatMessageHistory(session_id, connection=...)``: one store per connection and
        table."""

        def __init__(
            self,
            session_id: str,
            table_name: str = "message_store",
            session_id_field_name: str = "session_id",
            custom_message_converter: Any = None,
            connection: Any = None,
            engine_args: dict[str, Any] | None = None,
            async_mode: bool | None = None,
        ) -> None:
            _reference_only(
                "SQLChatMessageHistory",
                session_id_field_name=(session_id_field_name, "session_id"),
                custom_message_converter=(custom_message_converter, None),
            )
            if connection is None:
                # What the reference class raises without a connection.
                raise ValueError(
                    "connection should be a connection string or an instance of "
                    "sqlalchemy.engine.Engine or sqlalchemy.ext.asyncio.engine.AsyncEngine"
                )
            if isinstance(connection, str):
                scope = _url_scope("sql", connection, table_name)
            else:
                scope = ("sql-engine", id(connection), table_name)
            self._open(session_id, scope)

    return {
        "InMemoryChatMessageHistory": TurnlogAsInMemoryChatMessageHistory,
        "FileChatMessageHistory": TurnlogAsFileChatMessageHistory,
        "SQLChatMessageHistory": TurnlogAsSQLChatMessageHistory,
    }


_GROUPS: dict[str, Callable[[], dict[str, type]]] = {
    "SQLiteSession": _agents_classes,
    "AsyncSQLiteSession": _agents_classes,
    "SQLAlchemySession": _agents_classes,
    "RedisSession": _agents_classes,
    "SimpleListSession": _agents_classes,
    "InMemoryChatMessageHistory": _langchain_classes,
    "FileChatMessageHistory": _langchain_classes,
    "SQLChatMessageHistory": _langchain_classes,
}
#: The reference class names a stand-in exists for.
NAMES = frozenset(_GROUPS)
_built: dict[str, type] = {}


def stand_in(name: str) -> type:
    """The stand-in class for the reference class ``name`` (built on first use: it imports the
    adapter, and so the framework)."""
    if name not in _built:
        _built.update(_GROUPS[name]())
    return _built[name]


# --- diagnostic shims (off by default: they hide findings) ----------------------------------------

#: Names of the shims on (``run.py --shim close``/``--shim eq``): only to see what else a test
#: checks once the ``close`` mismatch (or the histories' lack of value equality) no longer stops
#: it. Counts to report are those of a run without shims.
SHIMS: set[str] = set()


class _Closed:
    """What the ``close`` shim returns: nothing to do when awaited (the SDK's async sessions have
    ``async def close()``, ``SQLiteSession`` a plain one)."""

    def __await__(self) -> Any:
        return iter(())


def _apply_shims(session: Any) -> None:
    if "close" in SHIMS:
        original = getattr(session, "close", None)

        def close() -> _Closed:
            if original is not None:
                original()
            return _Closed()

        session.close = close
