"""What both adapters need: the store an adapter works on."""

from __future__ import annotations

import os
import threading

from ..backend import SessionBackend

_shared: dict[str, SessionBackend] = {}
_shared_lock = threading.Lock()


def resolve_store(
    store: SessionBackend | None, workspace: str | os.PathLike[str] | None
) -> SessionBackend:
    """``store``, or the ``turnlog.SessionStore`` of ``workspace`` (exactly one must be given).

    Every adapter given the same workspace shares one store: a bot with thousands of chats
    builds one adapter per chat, and a store per chat would hold open files per chat.
    """
    if store is not None and workspace is not None:
        raise ValueError("give store or workspace, not both")
    if store is None:
        if workspace is None:
            raise ValueError("give a store or a workspace")
        from .. import SessionStore

        where = os.path.realpath(os.fspath(workspace))
        with _shared_lock:
            shared = _shared.get(where)
            if shared is None:
                shared = _shared[where] = SessionStore(workspace)
        return shared
    if not isinstance(store, SessionBackend):
        raise TypeError(f"store must be a turnlog SessionBackend, not {type(store).__name__}")
    return store
