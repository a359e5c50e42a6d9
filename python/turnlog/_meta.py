"""Session metadata of the JSONL store: one small JSON sidecar per session.

``<workspace>/.turnlog/meta/<name>.json`` (the transcript's file name with ``.json``) holds what
the transcript cannot: ``created_at``, the name, agent alias, routing context and turn state.
It lives outside ``sessions/`` so that folder keeps only transcripts, as ZeroClaw's does.
Messages live only in the transcript, so a crash between the two writes can lose no message. A
session without a sidecar (a ZeroClaw workspace) still works: its metadata is derived from the
transcript file.

A sidecar is written whole, to a temp file renamed over it, under the transcript's lock.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

from . import _files

__all__ = [
    "STATES",
    "checked_utc",
    "from_text",
    "meta_dir",
    "meta_path",
    "now",
    "read_meta",
    "to_text",
    "write_meta",
]

#: The turn states a session can be in.
STATES = ("idle", "running", "error")


def now() -> datetime:
    return datetime.now(timezone.utc)


def checked_utc(when: object, what: str) -> datetime:
    """``when`` in UTC, if it is a timezone-aware ``datetime`` (every backend's rule for the
    times a caller passes in).

    Raises:
        TypeError: ``when`` is not a ``datetime``.
        ValueError: ``when`` is naive: which zone it means would be a guess.
    """
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(when).__name__}")
    if when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {when!r}")
    return when.astimezone(timezone.utc)


def checked_times(
    created_at: object, last_activity: object, turn_started_at: object
) -> tuple[datetime | None, datetime | None, datetime | None]:
    """The three times of ``set_session_times`` (every backend's), each through
    ``checked_utc`` under its own name; ``None`` stays ``None`` (leave it unchanged)."""
    created, active, started = (
        None if when is None else checked_utc(when, what)
        for when, what in (
            (created_at, "created_at"),
            (last_activity, "last_activity"),
            (turn_started_at, "turn_started_at"),
        )
    )
    return created, active, started


def to_text(when: datetime) -> str:
    return checked_utc(when, "a time").isoformat()


def from_text(text: object) -> datetime | None:
    """The UTC datetime stored as ``text``; ``None`` for anything else (a damaged sidecar)."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    # A hand-edited sidecar may hold another offset (or none): the API speaks UTC only.
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def meta_dir(sessions_dir: str) -> str:
    """The folder of the sidecars of the workspace whose transcripts are in ``sessions_dir``."""
    return os.path.join(os.path.dirname(sessions_dir), ".turnlog", "meta")


def meta_path(sessions_dir: str, name: str) -> str:
    """The sidecar of the session whose transcript is ``<name>.jsonl``."""
    return os.path.join(meta_dir(sessions_dir), name + ".json")


def read_meta(path: str) -> dict[str, Any]:
    """The sidecar's fields; ``{}`` when it is missing or damaged (metadata is then derived)."""
    try:
        fd = _files.open_regular(path)
    except OSError:
        return {}
    try:
        data = json.loads(_files.read_all(fd))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else {}


def write_meta(path: str, meta: dict[str, Any], *, durable: bool) -> None:
    """Write the sidecar atomically (the caller holds the transcript's lock)."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        _files.make_dirs(folder, 0o700, durable=durable)
    data = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    _files.replace(path, data, durable=durable)
