"""What both adapters need: the store an adapter works on."""

from __future__ import annotations

import os

from ..backend import SessionBackend


def resolve_store(
    store: SessionBackend | None, workspace: str | os.PathLike[str] | None
) -> SessionBackend:
    """``store``, or a ``turnlog.SessionStore`` of ``workspace`` (exactly one must be given)."""
    if store is not None and workspace is not None:
        raise ValueError("give store or workspace, not both")
    if store is None:
        if workspace is None:
            raise ValueError("give a store or a workspace")
        from .. import SessionStore

        return SessionStore(workspace)
    if not isinstance(store, SessionBackend):
        raise TypeError(f"store must be a turnlog SessionBackend, not {type(store).__name__}")
    return store
