"""Session metadata of the JSONL stores: one small JSON sidecar per session.

``<workspace>/.turnlog/meta/<name>.json`` (the transcript's file name with ``.json``) holds what
the transcript cannot: ``created_at``, the name, agent alias, routing context and turn state.
It lives outside ``sessions/`` so that folder keeps only transcripts, as ZeroClaw's does.
Messages live only in the transcript, so a crash between the two writes can lose no message. A
session without a sidecar (a ZeroClaw workspace) still works: its metadata is derived from the
transcript file.

A sidecar is written whole, to a temp file renamed over it, under the transcript's lock: the
store takes that lock and calls ``Sidecars`` with the transcript's descriptor.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ..._rules import STATES, checked_utc
from ..._types import SessionMetadata, SessionState
from .. import files
from .. import format as _format

__all__ = [
    "Sidecars",
    "from_text",
    "metadata",
    "now",
    "state_of",
    "text_field",
    "to_ns",
    "to_text",
    "utc",
]

_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def utc(mtime_ns: int) -> datetime:
    """A file time (nanoseconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)


def _written(fd: int) -> datetime:
    """When the file ``fd`` was last written: a new session's creation time, never later than
    its last activity (the same clock: the file's)."""
    return utc(os.fstat(fd).st_mtime_ns)


def to_ns(when: datetime) -> int:
    """``when`` (aware) in nanoseconds since the epoch, exactly: ``utc`` gives ``when`` back."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


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


def text_field(meta: dict[str, Any], field: str) -> str | None:
    value = meta.get(field)
    return value if isinstance(value, str) else None


def state_of(meta: dict[str, Any]) -> SessionState:
    """The turn state a sidecar records (``"idle"`` when it records none, or a damaged one)."""
    state = meta.get("state")
    return SessionState(
        state=state if state in STATES else "idle",
        turn_id=text_field(meta, "turn_id"),
        turn_started_at=from_text(meta.get("turn_started_at")),
    )


def stuck_since(limit: datetime) -> Callable[[SessionState], bool]:
    """Whether a session in ``state`` runs a turn started at ``limit`` or before."""

    def stuck(state: SessionState) -> bool:
        started = state.turn_started_at
        return state.state == "running" and started is not None and started <= limit

    return stuck


def metadata(key: str, meta: dict[str, Any], count: int, mtime_ns: int) -> SessionMetadata:
    """What the sidecar ``meta`` and the transcript (``count`` valid messages, last written at
    ``mtime_ns``) say about session ``key``."""
    written = utc(mtime_ns)
    return SessionMetadata(
        key=key,
        name=text_field(meta, "name"),
        created_at=from_text(meta.get("created_at")) or written,
        last_activity=written,
        message_count=count,
        agent_alias=text_field(meta, "agent_alias"),
        channel_id=text_field(meta, "channel_id"),
        room_id=text_field(meta, "room_id"),
        sender_id=text_field(meta, "sender_id"),
    )


class Sidecars:
    """The sidecars of one workspace, in ``<workspace>/.turnlog/meta/``.

    Every write here is made while the caller holds the transcript's lock (``files.locked``)
    and passes its descriptor: the sidecar and the transcript change together or not at all.

    Args:
        sessions_dir: The workspace's ``sessions`` folder (the sidecars sit beside it).
        durable: fsync each sidecar and its folder (``durability="power"``).
        key_of: The key of a session file's name, ``None`` if none (the store's naming).
    """

    def __init__(
        self,
        sessions_dir: str,
        *,
        durable: bool,
        key_of: Callable[[str], str | None] = _format.name_to_key,
    ) -> None:
        self.folder = os.path.join(os.path.dirname(sessions_dir), ".turnlog", "meta")
        self._durable = durable
        #: The key of a file name (the store's way of naming files), ``None`` if none.
        self.key_of = key_of

    def path(self, name: str) -> str:
        """The sidecar of the session whose transcript is ``<name>.jsonl``."""
        return os.path.join(self.folder, name + ".json")

    def read(self, name: str) -> dict[str, Any]:
        """The sidecar's fields; ``{}`` when it is missing or damaged (metadata is then
        derived).

        Raises:
            OSError: it could not be read (out of file descriptors, an I/O error, no permission):
                a running turn must not read as idle.
        """
        try:
            fd = files.open_regular(self.path(name))
        except OSError as error:
            if files.is_not_a_session(error):
                return {}
            raise
        try:
            data = json.loads(files.read_all(fd))
        except ValueError:
            return {}
        finally:
            os.close(fd)
        return data if isinstance(data, dict) else {}

    def _write(self, name: str, meta: dict[str, Any]) -> None:
        if not os.path.isdir(self.folder):
            files.make_dirs(self.folder, durable=self._durable)
        data = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        files.replace(self.path(name), data, durable=self._durable)

    def unlink(self, name: str) -> None:
        """Remove the session's sidecar, if any."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))
            if self._durable:
                files.sync_dir(self.folder)

    def move(self, old_name: str, name: str) -> None:
        """The transcript ``<old_name>.jsonl`` was renamed ``<name>.jsonl``: its sidecar follows
        (replacing one a deleted session of that name left); without one, that leftover goes."""
        try:
            os.replace(self.path(old_name), self.path(name))
        except FileNotFoundError:
            self.unlink(name)
        else:
            if self._durable:
                files.sync_dir(self.folder)

    def start(self, name: str, transcript_fd: int) -> None:
        """Record when the session whose transcript the caller just created began (it holds
        the new transcript locked since before the file appeared, so no setter wrote for it
        yet). A sidecar already there outlived an earlier transcript of the key that was
        deleted outside turnlog: its name, state and turn are that session's, so it is replaced
        (as ``update`` replaces it when a setter creates the transcript itself)."""
        self._write(name, {"created_at": to_text(_written(transcript_fd))})

    def update(
        self,
        name: str,
        transcript_fd: int,
        changes: dict[str, Any],
        *,
        meta: dict[str, Any] | None = None,
        created: bool = False,
    ) -> None:
        """Write the sidecar with ``changes`` applied to ``meta`` (read now when not given; a
        transcript the caller just ``created`` starts from nothing)."""
        if meta is None:
            meta = {} if created else self.read(name)
        if "created_at" not in meta:
            # A new transcript's time is when it was made; for a session from before turnlog
            # kept metadata it is the best guess.
            meta["created_at"] = to_text(_written(transcript_fd))
        meta.update(changes)
        self._write(name, meta)

    def states(self) -> list[tuple[str, SessionState]]:
        """``(key, state)`` of every sidecar whose name a key maps to (the caller checks that
        the session still exists)."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        found = []
        for entry in names:
            key = self.key_of(entry[: -len(".json")]) if entry.endswith(".json") else None
            if key is not None:
                found.append((key, state_of(self.read(entry[: -len(".json")]))))
        return found
