"""What the Rust-backed and the pure JSONL stores share: workspace set-up, argument checks,
how a failed read is reported, and metadata derived from the transcript file."""

from __future__ import annotations

import abc
import errno
import logging
import os
from datetime import datetime, timezone
from typing import Literal, Union

from ._impl import ChatMessage
from ._types import SessionMetadata
from .backend import SessionBackend

__all__ = ["Durability", "JsonlStoreBase", "check_limit", "sessions_dir"]

log = logging.getLogger("turnlog")

#: ``"process"``: a write survives the writer's crash (the kernel has it). ``"power"``: it also
#: survives power loss (file and directory are fsynced before the call returns).
Durability = Literal["process", "power"]
PathLike = Union[str, "os.PathLike[str]"]


def sessions_dir(workspace: PathLike) -> str:
    """Create ``<workspace>/sessions/`` (owner-only) if needed and return its absolute path."""
    path = os.fspath(workspace)
    if not isinstance(path, str):
        raise TypeError(
            f"workspace must be a str or os.PathLike[str], not {type(workspace).__name__}"
        )
    if not path:
        raise ValueError("workspace must not be empty")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "workspace is not a directory", path)
    os.makedirs(path, exist_ok=True)
    sessions = os.path.join(os.path.abspath(path), "sessions")
    try:
        os.mkdir(sessions, 0o700)
    except FileExistsError:
        if not os.path.isdir(sessions):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", sessions) from None
    return sessions


def check_limit(limit: int | None) -> None:
    """Refuse a ``limit`` that is not ``None`` or a non-negative int."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


def check_durability(durability: object) -> Durability:
    if durability == "process" or durability == "power":
        return durability
    raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")


def _utc(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)


class JsonlStoreBase(SessionBackend):
    """A JSONL workspace: one ``<workspace>/sessions/<name>.jsonl`` file per session."""

    def __init__(self, workspace: PathLike, *, durability: Durability = "process") -> None:
        self._durability = check_durability(durability)
        self._sessions_dir = sessions_dir(workspace)

    @property
    def sessions_dir(self) -> str:
        """The absolute path of the folder that holds the ``.jsonl`` files."""
        return self._sessions_dir

    @property
    def durability(self) -> Durability:
        """``"process"`` or ``"power"``: what an acknowledged write survives."""
        return self._durability

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({os.path.dirname(self._sessions_dir)!r}, "
            f"durability={self._durability!r})"
        )

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's valid messages, oldest first; the newest ``limit`` of them when given.

        Corrupt lines are skipped. A missing session loads as ``[]``; so does an unreadable file,
        with a warning on the ``turnlog`` logger.

        Raises:
            TypeError, ValueError: a bad key or limit.
        """
        check_limit(limit)
        try:
            return self._load(session_key, limit)
        except FileNotFoundError:
            return []
        except OSError as error:
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return []

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Key, message count and modification time; ``None`` if the session does not exist.

        An unreadable file counts as no session, with a warning (as ``load`` returns ``[]``).
        """
        try:
            stat = self._stat(session_key)
        except OSError as error:
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return None
        if stat is None:
            return None
        count, mtime_ns = stat
        when = _utc(mtime_ns)
        return SessionMetadata(
            key=session_key, created_at=when, last_activity=when, message_count=count
        )

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first."""
        found = [self.get_session_metadata(key) for key in self.list_sessions()]
        sessions = [metadata for metadata in found if metadata is not None]
        sessions.sort(key=lambda m: (-(m.last_activity or _utc(0)).timestamp(), m.key))
        return sessions

    @abc.abstractmethod
    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        """Read the session; raises ``OSError`` when the file cannot be read."""

    @abc.abstractmethod
    def _stat(self, session_key: str) -> tuple[int, int] | None:
        """``(valid message count, mtime in ns)`` of the session file, ``None`` if there is none."""
