"""The pure-Python JSONL store, whatever ``turnlog.SessionStore`` is.

``from turnlog.pure import SessionStore`` always gives the pure-Python store: the reference for
the Rust store and the fallback without it. It reads and writes the same files, byte for byte,
and takes the same locks. It lives in ``turnlog.backends.jsonl.pure``; this short path is kept
because it is the one to name in code that wants pure Python on purpose.
"""

from __future__ import annotations

from .backends.jsonl.pure import SessionStore

__all__ = ["SessionStore"]
