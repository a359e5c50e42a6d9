"""Taking over the files of a workspace ZeroClaw wrote.

ZeroClaw names a session's file by replacing every character that is not alphanumeric, ``_`` or
``-`` with ``_`` (``agent:main:telegram:dm:user123`` → ``agent_main_telegram_dm_user123.jsonl``),
turnlog by escaping (``agent%3Amain%3A...``). So that a bot switching stores keeps every history,
a key whose own file does not exist takes over ("adopts") the file ZeroClaw would have used for
it: renamed to the key's own name, under that file's lock.

Only files that were in ``sessions/`` before turnlog first opened the workspace are ever adopted:
in a turnlog workspace ``user_1`` and ``user:1`` are two users and stay two. Those files are
recorded then, in ``<workspace>/.turnlog/zeroclaw-legacy.json``; a name leaves the record when a
key adopts its file, or when the key that is its own name (``user_1`` for ``user_1.jsonl``)
touches it first: ZeroClaw's merged keys (``a:b``, ``a/b``, ``a_b``) shared that history, and the
first of them to come keeps it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Callable
from typing import Any

from .. import files
from .. import format as _format

__all__ = ["RECORD", "ZEROCLAW_MARKER", "LegacyFiles", "mark_zeroclaw_names"]

log = logging.getLogger("turnlog")

#: The record's file name, in ``<workspace>/.turnlog/``.
RECORD = "zeroclaw-legacy.json"
#: A file in ``<workspace>/.turnlog/`` saying a store has used ZeroClaw's names here
#: (``names="zeroclaw"``): the files it made are ZeroClaw's, to adopt like the others.
ZEROCLAW_MARKER = "zeroclaw-names"


def mark_zeroclaw_names(metadata_dir: str, *, durable: bool) -> None:
    """Leave ``ZEROCLAW_MARKER`` in a workspace that has no record yet."""
    if os.path.exists(os.path.join(metadata_dir, RECORD)):
        return
    try:
        files.make_dirs(metadata_dir, durable=durable)
        files.replace(os.path.join(metadata_dir, ZEROCLAW_MARKER), b"", durable=durable)
    except OSError as error:
        log.warning("turnlog: cannot mark %s as using ZeroClaw's names: %s", metadata_dir, error)


def _zeroclaw_files(sessions_dir: str, *, non_ascii_only: bool) -> list[str]:
    """The names (without suffix) of the files in ``sessions_dir`` that ZeroClaw could have
    written."""
    found = []
    with os.scandir(sessions_dir) as entries:
        for entry in entries:
            stem = entry.name[: -len(_format.SUFFIX)]
            if (
                entry.name.endswith(_format.SUFFIX)
                and _format.is_zeroclaw_name(stem)
                and not (non_ascii_only and stem.isascii())
                and entry.is_file(follow_symlinks=False)
            ):
                found.append(stem)
    return sorted(found)


class LegacyFiles:
    """The legacy ZeroClaw files of one workspace that no key has taken yet.

    Opening it the first time records them. ``bool(legacy)`` is false when there is nothing to
    adopt, so the stores skip every check then.

    Args:
        sessions_dir: The workspace's ``sessions`` folder.
        metadata_dir: The workspace's ``.turnlog`` folder.
        timeout: Seconds to wait for a lock (the store's ``lock_timeout``).
        durable: fsync what changes (``durability="power"``).
    """

    def __init__(
        self, sessions_dir: str, metadata_dir: str, *, timeout: float | None, durable: bool
    ) -> None:
        self._sessions_dir = sessions_dir
        self._metadata_dir = metadata_dir
        self.record = os.path.join(metadata_dir, RECORD)
        self._timeout = timeout
        self._durable = durable
        self._pending = self._open()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def present(self) -> dict[str, str]:
        """``{name: path}`` of the pending names whose files are there."""
        found = {}
        for name in sorted(self._pending):
            path = self.path(name)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    found[name] = path
        return found

    def path(self, name: str) -> str:
        return os.path.join(self._sessions_dir, name + _format.SUFFIX)

    def _open(self) -> set[str]:
        """Read the record, creating it on the workspace's first opening."""
        try:
            files.make_dirs(self._metadata_dir, durable=self._durable)
            with files.locked(self.record, create=True, timeout=self._timeout) as held:
                assert held is not None
                data = files.read_all(held[0])
                if data:
                    return self._parse(data)
                # No store that names files turnlog's way has opened the workspace yet (each
                # waits here for the record), so sessions/ holds no file of theirs, unless a
                # turnlog from before 0.2 wrote some: its sidecars then exist. Those ASCII names
                # ZeroClaw could have written too; only non-ASCII ones are surely ZeroClaw's.
                earlier_turnlog = os.path.isdir(
                    os.path.join(self._metadata_dir, "meta")
                ) and not os.path.exists(os.path.join(self._metadata_dir, ZEROCLAW_MARKER))
                names = _zeroclaw_files(self._sessions_dir, non_ascii_only=earlier_turnlog)
                self._write(names)
                return set(names)
        except OSError as error:
            # A workspace this user may only read (a read-only mount, an inspection): nothing
            # is adopted, and nothing else changes.
            log.warning("turnlog: ZeroClaw's files will not be adopted: %s", error)
            return set()

    def _parse(self, data: bytes) -> set[str]:
        try:
            names = json.loads(data)["names"]
        except (ValueError, KeyError, TypeError):
            names = None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            # Adopting from a record that cannot be trusted could hand one user's history to
            # another: adopt nothing.
            log.warning("turnlog: %s is damaged: ZeroClaw's files will not be adopted", self.record)
            return set()
        return {name for name in names if _format.is_zeroclaw_name(name)}

    def _write(self, names: list[str] | set[str]) -> None:
        data: dict[str, Any] = {"names": sorted(names)}
        text = json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8")
        files.replace(self.record, text, durable=self._durable)

    def take(self, session_key: str, own_path: str, on_adopt: Callable[[], None]) -> bool:
        """Before a call on ``session_key``: if the file ZeroClaw would have used for it is a
        legacy one that no key has taken, make it the key's (rename it to ``own_path``, then
        ``on_adopt()`` while still holding its lock), or claim it for the key whose own
        file it is. Other keys leave it alone from then on. ``True`` if the key took it."""
        name = _format.zeroclaw_name(session_key)
        if name not in self._pending:
            return False
        with files.locked(self.record, create=False, timeout=self._timeout) as held:
            pending = set() if held is None else self._parse(files.read_all(held[0]))
            if name not in pending:
                self._pending.discard(name)  # taken by another process meanwhile
                return False
            legacy = self.path(name)
            took = legacy == own_path or self._rename(session_key, legacy, own_path, on_adopt)
            if took is False:
                # The key has a file of its own (a store that does not adopt made it): this
                # process leaves the legacy file alone; another key may still take it.
                self._pending.discard(name)
                return False
            pending.discard(name)  # adopted, claimed, or deleted meanwhile (took is None)
            self._write(pending)
            self._pending.discard(name)
            return bool(took)

    def _rename(
        self, session_key: str, legacy: str, own_path: str, on_adopt: Callable[[], None]
    ) -> bool | None:
        """Move ``legacy`` to ``own_path`` under the legacy file's lock: ``True``; ``False`` when
        ``own_path`` holds another file; ``None`` when ``legacy`` is gone."""
        with files.locked(legacy, create=False, timeout=self._timeout) as held:
            if held is None:
                return None
            try:
                os.link(legacy, own_path)
            except FileExistsError:
                # A crash between this link and the unlink below left both names: finish.
                if not os.path.samefile(legacy, own_path):
                    return False
            except OSError as error:
                if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                # No hard links here: rename, which never leaves two names, if nothing's there.
                if os.path.lexists(own_path):
                    return False
                os.rename(legacy, own_path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(legacy)
            if self._durable:
                files.sync_dir(self._sessions_dir)
            on_adopt()
        log.info(
            "turnlog: session %r adopted ZeroClaw's file %s (now %s)",
            session_key,
            os.path.basename(legacy),
            os.path.basename(own_path),
        )
        return True
