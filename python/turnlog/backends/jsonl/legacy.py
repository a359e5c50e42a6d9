"""Taking over the files of a workspace ZeroClaw wrote.

ZeroClaw names a session's file by replacing every character that is not alphanumeric, ``_`` or
``-`` with ``_`` (``agent:main:telegram:dm:user123`` → ``agent_main_telegram_dm_user123.jsonl``),
turnlog by escaping (``agent%3Amain%3A...``). So that a bot switching stores keeps every history,
a key whose own file does not exist takes over ("adopts") the file ZeroClaw would have used for
it: renamed to the key's own name, under that file's lock.

Only files that were in ``sessions/`` before turnlog first opened the workspace are ever adopted:
in a turnlog workspace ``user_1`` and ``user:1`` are two users and stay two. Those files are
recorded then, as one empty marker file per name in ``<workspace>/.turnlog/zeroclaw-legacy/``,
made whole in a temp folder and renamed into place, so concurrent first openings agree on one
record. A name's marker goes when a key adopts its file, when the key that is its own name
(``user_1`` for ``user_1.jsonl``) touches it first (ZeroClaw's merged keys ``a:b``, ``a/b`` and
``a_b`` shared that history; the first of them to come keeps it), and when turnlog creates a
file of that name: a file turnlog made is never adopted. Every change to one name happens under
its file's lock, so adopting one file waits for nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable

from .. import files
from .. import format as _format

__all__ = ["RECORD", "LegacyFiles"]

log = logging.getLogger("turnlog")

#: The record's folder, in ``<workspace>/.turnlog/``.
RECORD = "zeroclaw-legacy"
#: A file in every complete record: the folder is never empty, so a rename cannot replace it.
_COMPLETE = ".complete"


def _zeroclaw_files(sessions_dir: str, *, non_ascii_only: bool) -> set[str]:
    """The names (without suffix) of the files in ``sessions_dir`` that ZeroClaw could have
    written and some turnlog key can adopt (its own name fits in a file name)."""
    found = set()
    with os.scandir(sessions_dir) as entries:
        for entry in entries:
            stem = entry.name[: -len(_format.SUFFIX)]
            if (
                entry.name.endswith(_format.SUFFIX)
                and _format.is_zeroclaw_name(stem)
                and not (non_ascii_only and stem.isascii())
                and entry.is_file(follow_symlinks=False)
                and _fits(stem)
            ):
                found.add(stem)
    return found


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except FileNotFoundError:
        return False


def _fits(name: str) -> bool:
    """Whether the key ``name`` has a turnlog file name (not too long once escaped)."""
    try:
        _format.key_to_name(name)
    except ValueError:
        return False
    return True


class LegacyFiles:
    """The legacy ZeroClaw files of one workspace that no key has taken yet.

    Opening it the first time records them. ``bool(legacy)`` is false when there is nothing to
    adopt, so the stores skip every check then.

    Args:
        sessions_dir: The workspace's ``sessions`` folder.
        metadata_dir: The workspace's ``.turnlog`` folder.
        timeout: Seconds to wait for a file's lock (the store's ``lock_timeout``).
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
        #: Names with a marker, as far as this object knows (a superset of the record's: markers
        #: only go after the first opening).
        self._pending = self._open()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def present(self) -> dict[str, str]:
        """``{name: path}`` of the pending names whose files are there."""
        found = {}
        for name in sorted(self._pending):
            path = self.path(name)
            if os.path.lexists(self._marker(name)) and files.is_regular(path):
                found[name] = path
        return found

    def path(self, name: str) -> str:
        return os.path.join(self._sessions_dir, name + _format.SUFFIX)

    def _in_sessions(self, file_name: str) -> str:
        return os.path.join(self._sessions_dir, os.path.basename(file_name))

    def _marker(self, name: str) -> str:
        return os.path.join(self.record, name)

    def _open(self) -> set[str]:
        """The recorded names whose files are there, recording them on the first opening."""
        try:
            return self._read()
        except FileNotFoundError:
            pass
        except OSError as error:
            return self._unusable(error)
        try:
            self._create()
            return self._read()
        except OSError as error:
            return self._unusable(error)

    def _unusable(self, error: OSError) -> set[str]:
        # A workspace this user may only read (a read-only mount, an inspection), or a record
        # that is not one: nothing is adopted (a guess could hand one user's history to
        # another), and nothing else changes.
        log.warning("turnlog: ZeroClaw's files will not be adopted: %s", error)
        return set()

    def _read(self) -> set[str]:
        markers = set(os.listdir(self.record))
        if _COMPLETE not in markers:
            raise OSError(errno.EINVAL, "not a complete record of ZeroClaw's files", self.record)
        markers.discard(_COMPLETE)
        # One lstat per marker (none at all once every file is taken), not a listing of sessions/.
        return {name for name in markers if os.path.lexists(self.path(name))}

    def _create(self) -> None:
        """Record the ZeroClaw files there now: before any store that names files turnlog's
        way writes here (each reads the record first, and waits for it to exist)."""
        files.make_dirs(self._metadata_dir, durable=self._durable)
        # A turnlog from before 0.2 left sidecars; its ASCII names ZeroClaw could have written
        # too, so only the non-ASCII ones, which it never wrote, are surely ZeroClaw's.
        earlier_turnlog = os.path.isdir(os.path.join(self._metadata_dir, "meta"))
        names = _zeroclaw_files(self._sessions_dir, non_ascii_only=earlier_turnlog)
        temp = os.path.join(self._metadata_dir, f".turnlog-{os.urandom(8).hex()}.tmp")
        os.mkdir(temp, 0o700)
        try:
            for name in (*names, _COMPLETE):
                os.close(os.open(os.path.join(temp, name), os.O_CREAT | os.O_WRONLY, 0o600))
            if self._durable:
                files.sync_dir(temp)
            try:
                os.rename(temp, self.record)
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # Another process recorded first: its record is the one (ours is the same).
                return
            if self._durable:
                files.sync_dir(self._metadata_dir)
        finally:
            with contextlib.suppress(OSError):
                for name in os.listdir(temp):
                    os.unlink(os.path.join(temp, name))
                os.rmdir(temp)

    def created(self, name: str, *, zeroclaw_names: bool) -> None:
        """turnlog just made the file ``name`` (and holds its lock): no legacy file, unless a
        store using ZeroClaw's names made it (as ZeroClaw would have): then one to adopt."""
        if zeroclaw_names:
            if os.path.isdir(self.record):
                os.close(os.open(self._marker(name), os.O_CREAT | os.O_WRONLY, 0o600))
                self._pending.add(name)
        else:
            # Another process (a store with ZeroClaw's names) may have marked it since this
            # object read the record: whatever this object knows, the marker goes.
            self._drop(name)

    def take(self, session_key: str, own_name: str, on_adopt: Callable[[str], None]) -> bool:
        """Before a call on ``session_key``: if the file ZeroClaw would have used for it is a
        legacy one that no key has taken, make it the key's: renamed to ``own_name``, then
        ``on_adopt(legacy_name)`` while still holding its lock; or claimed, when it already has
        the key's name. ``True`` if the key took it."""
        name = _format.zeroclaw_name(session_key)
        if name not in self._pending:
            return False
        try:
            with files.locked(self.path(name), create=False, timeout=self._timeout) as held:
                if held is not None:
                    return self._take_locked(session_key, name, self.path(own_name), on_adopt)
        except OSError as error:
            if not files.is_not_a_session(error):
                raise
            log.warning("turnlog: %s cannot be adopted: %s", self.path(name), error)
        self._drop(name)  # deleted meanwhile, adopted by another key, or no file to adopt
        return False

    def _drop(self, name: str) -> None:
        self._pending.discard(name)
        # No marker, or no record at all (its folder gone, or a file now): nothing to adopt.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self._marker(name))

    def _take_locked(
        self, session_key: str, name: str, own_path: str, on_adopt: Callable[[str], None]
    ) -> bool:
        """``take``, holding the legacy file's lock."""
        legacy = self.path(name)
        try:
            with open(self._marker(name), "rb") as marker:
                # The file name (turnlog's names are ASCII) the file is being given, relative
                # to sessions/, so that a workspace moved since still finds it.
                adopting = marker.read().decode("ascii", "replace")
        except FileNotFoundError:
            self._pending.discard(name)  # another process took it
            return False
        own_file = os.path.basename(own_path)
        if adopting and adopting != own_file and _same_file(legacy, self._in_sessions(adopting)):
            # An adoption by another key was cut between its link and its unlink: finish it.
            # The file is that key's already, under its own name; this key starts afresh.
            os.unlink(legacy)
            self._drop(name)
            return False
        if legacy == own_path:
            self._drop(name)
            return True
        # The marker names the file's next name before it has two: a crash in between is
        # finished by the next call on the file, whichever key makes it (above).
        files.replace(self._marker(name), own_file.encode("ascii"), durable=self._durable)
        try:
            os.link(legacy, own_path)
        except FileExistsError:
            if not _same_file(legacy, own_path):
                # The key has a file of its own (a store that does not adopt made it): this
                # process leaves the legacy file alone; another key may still take it.
                self._pending.discard(name)
                return False
            # else this key's own adoption was cut between this link and the unlink below.
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links on this filesystem: a rename (which replaces what it finds, so only
            # if nothing is there).
            if os.path.lexists(own_path):
                self._pending.discard(name)
                return False
            os.rename(legacy, own_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(legacy)
        self._drop(name)
        if self._durable:
            files.sync_dir(self._sessions_dir)
        try:
            on_adopt(name)
        except OSError as error:  # the file is the key's now: its metadata is derived instead
            log.warning("turnlog: the metadata of %s did not follow it: %s", legacy, error)
        log.info(
            "turnlog: session %r adopted ZeroClaw's file %s (now %s)",
            session_key,
            os.path.basename(legacy),
            os.path.basename(own_path),
        )
        return True
