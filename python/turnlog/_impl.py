"""Picks the implementation once, at import: the native module, or pure Python.

``TURNLOG_PURE=1`` in the environment forces pure Python even when the native module is built.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import TYPE_CHECKING, Literal

__all__ = ["IMPLEMENTATION", "ChatMessage", "native"]


def _load_native() -> ModuleType | None:
    if os.environ.get("TURNLOG_PURE", "").strip().lower() not in ("", "0", "false", "no"):
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


native: ModuleType | None = _load_native()
IMPLEMENTATION: Literal["rust", "python"] = "rust" if native is not None else "python"

if TYPE_CHECKING:
    from ._message import ChatMessage
elif native is not None:
    ChatMessage = native.ChatMessage
else:
    from ._message import ChatMessage
