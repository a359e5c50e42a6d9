"""turnlog: a fast, crash-safe JSONL session store for chat bots, with a Rust core.

>>> from turnlog import ChatMessage, SessionStore
>>> store = SessionStore("./workspace")
>>> store.append("telegram_user123", ChatMessage.user("hello"))
>>> store.load("telegram_user123", limit=50)

``turnlog.IMPLEMENTATION`` says which core is in use: ``"rust"``, or ``"python"`` when the native
module is missing or ``TURNLOG_PURE=1`` is set. ``turnlog.pure.SessionStore`` is always the
pure-Python store; both read and write the same files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._impl import IMPLEMENTATION, ChatMessage, native
from ._types import SessionMetadata, SessionQuery, SessionState
from .backend import MessageLike, SessionBackend

if TYPE_CHECKING:
    from .backends.sqlite import SqliteSessionBackend
    from .migration import MigrationConflictError, MigrationReport, migrate

if native is not None:
    from .backends.jsonl.rust import SessionStore

    __version__: str = native.__version__
else:
    from importlib.metadata import PackageNotFoundError, version

    from .backends.jsonl.pure import SessionStore  # type: ignore[assignment]

    try:
        __version__ = version("turnlog")
    except PackageNotFoundError:  # running from a source tree
        __version__ = "0+unknown"

__all__ = [
    "IMPLEMENTATION",
    "ChatMessage",
    "MessageLike",
    "MigrationConflictError",
    "MigrationReport",
    "SessionBackend",
    "SessionMetadata",
    "SessionQuery",
    "SessionState",
    "SessionStore",
    "SqliteSessionBackend",
    "__version__",
    "migrate",
]


def __getattr__(name: str) -> object:
    # The SQLite backend and the migration code load on first use: a Python built without
    # sqlite3 still imports turnlog, and `import turnlog` stays fast. The migration module is
    # not named `migrate`: importing a submodule sets the package attribute of its name, which
    # would then be the module instead of the function.
    if name == "SqliteSessionBackend":
        from .backends.sqlite import SqliteSessionBackend

        return SqliteSessionBackend
    if name in ("migrate", "MigrationReport", "MigrationConflictError"):
        from . import migration

        return getattr(migration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
