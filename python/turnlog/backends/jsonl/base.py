"""What the Rust-backed and the pure JSONL stores share: workspace set-up, argument checks,
how a failed read is reported, and the session metadata, which ``Sidecars`` keeps."""

from __future__ import annotations

import abc
import contextlib
import functools
import logging
import os
from collections.abc import Iterable
from typing import Any, Literal

from ..._impl import ChatMessage
from ..._rules import (
    Durability,
    Match,
    SessionTimes,
    by_activity,
    check_amount,
    check_durability,
    check_limit,
    check_query,
    check_state,
    check_text,
    earlier,
)
from ..._types import SessionMetadata, SessionQuery, SessionState
from ...backend import MessageLike, SessionBackend
from .. import files
from .. import format as _format
from ..workspace import PathLike, sessions_dir
from . import sidecar
from .legacy import LegacyFiles
from .sidecar import Sidecars

__all__ = ["Appended", "JsonlStoreBase", "Names"]

log = logging.getLogger("turnlog")

#: Seconds after which ``cleanup_stale`` removes a rewrite's leftover temp file.
TEMP_FILE_AGE = 3600.0

#: What an append did besides writing: ``(created the file, repaired a torn last line)``.
Appended = tuple[bool, bool]

#: How a store names session files: ``"escaped"`` (turnlog's, reversible) or ``"zeroclaw"``.
Names = Literal["escaped", "zeroclaw"]


class JsonlStoreBase(SessionBackend):
    """A JSONL workspace: one ``<workspace>/sessions/<name>.jsonl`` file per session, and a
    metadata sidecar per session in ``<workspace>/.turnlog/meta/``.

    Subclasses provide the transcript operations (``_load``, ``_stat``, ``_append``,
    ``_append_many``, ``_delete``, ``_search`` and the rest of the ``SessionBackend`` methods);
    this class adds everything metadata, identically for both.

    Args:
        workspace: The workspace folder; sessions live in ``<workspace>/sessions/``, which is
            created (owner-only) if needed.
        durability: ``"process"`` (default): an acknowledged write survives a crash of the
            process. ``"power"``: it also survives power loss (fsync of file and folder).
        lock_timeout: Seconds a call waits for a session's lock (another process holds it)
            before it raises ``TimeoutError`` and changes nothing; ``None`` (default): no limit.
            A writer that was stopped (SIGSTOP, a debugger) holding a lock then cannot freeze
            the session's readers and writers.
        names: ``"escaped"`` (default): turnlog's file names, one file per key (``a:b`` is
            ``a%3Ab.jsonl``). ``"zeroclaw"``: ZeroClaw's names, lossy as ZeroClaw's are
            (``a:b``, ``a/b`` and ``a_b`` share ``a_b.jsonl``), to share a workspace with a
            ZeroClaw process; ``list_sessions`` then returns file names, as ZeroClaw does.
        adopt_zeroclaw_names: With ``names="escaped"``, a key whose own file does not exist
            takes over ("adopts") the file ZeroClaw would have used for it, if that file was in
            the workspace before turnlog first opened it (``docs/ZEROCLAW.md``). ``False``:
            never.

    Raises:
        NotADirectoryError: ``workspace`` (or its ``sessions``) exists and is not a folder.
        PermissionError: the folder cannot be created.
        ValueError: ``names`` is neither ``"escaped"`` nor ``"zeroclaw"``.
    """

    def __init__(
        self,
        workspace: PathLike,
        *,
        durability: Durability = "process",
        lock_timeout: float | None = None,
        names: Names = "escaped",
        adopt_zeroclaw_names: bool = True,
    ) -> None:
        if names not in ("escaped", "zeroclaw"):
            raise ValueError(f"names must be 'escaped' or 'zeroclaw', not {names!r}")
        # Both stores lock with flock from Python too (sidecars, a session's creation): say now,
        # not at the first write, where the platform has none.
        files.require_flock()
        self._durability = check_durability(durability)
        self._lock_timeout = (
            None if lock_timeout is None else check_amount(lock_timeout, "lock_timeout")
        )
        durable = durability == "power"
        self._sessions_dir = sessions_dir(workspace, durable=durable)
        self._names: Names = names
        if names == "escaped":
            self._name_of, key_of = _format.key_to_name, _format.name_to_key
        else:
            self._name_of, key_of = _format.zeroclaw_name, _format.zeroclaw_key
        self._sidecars = Sidecars(self._sessions_dir, durable=durable, key_of=key_of)
        metadata_dir = os.path.dirname(self._sidecars.folder)
        self._adopts = adopt_zeroclaw_names and names == "escaped"
        # Opened by every store, adopting or not: the record must list only the files that were
        # there before any turnlog store wrote here.
        self._legacy = LegacyFiles(
            self._sessions_dir, metadata_dir, timeout=self._lock_timeout, durable=durable
        )
        self._zeroclaw_view: JsonlStoreBase | None = None
        self._open()

    def _open(self) -> None:
        """What a store adds to this one's opening (the Rust store: its native half)."""

    @property
    def sessions_dir(self) -> str:
        """The absolute path of the folder that holds the ``.jsonl`` files."""
        return self._sessions_dir

    @property
    def names(self) -> Names:
        """How this store names session files: ``"escaped"`` or ``"zeroclaw"``."""
        return self._names

    @property
    def lock_timeout(self) -> float | None:
        """Seconds a call waits for a session's lock before ``TimeoutError``; ``None``: no limit."""
        return self._lock_timeout

    def _locked(self, path: str, *, create: bool) -> files.Locked:
        """``files.locked`` with this store's lock timeout."""
        return files.locked(path, create=create, timeout=self._lock_timeout)

    @property
    def durability(self) -> Durability:
        """``"process"`` or ``"power"``: what an acknowledged write survives."""
        return self._durability

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({os.path.dirname(self._sessions_dir)!r}, "
            f"durability={self._durability!r}, names={self._names!r})"
        )

    def _like_this(self, **changes: Any) -> Any:
        """A new store of this class over this workspace, with these settings but ``changes``."""
        settings = {"durability": self._durability, "names": self._names, **changes}
        settings.setdefault("lock_timeout", self._lock_timeout)
        settings.setdefault("adopt_zeroclaw_names", self._adopts)
        return functools.partial(type(self), os.path.dirname(self._sessions_dir), **settings)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # Pickled as what it was made with: the process that unpickles it (multiprocessing's
        # spawn and forkserver children) opens the workspace anew, with its own files and locks.
        return self._like_this(), ()

    def transcript_path(self, session_key: str) -> str:
        """The absolute path of the session's ``.jsonl`` transcript (which need not exist).

        Raises:
            TypeError, ValueError: a bad key.
        """
        return os.path.join(self._sessions_dir, self._name_of(session_key) + _format.SUFFIX)

    # --- ZeroClaw's files -----------------------------------------------------------------------

    def _own(self, session_key: str) -> str:
        """``session_key``, once its legacy ZeroClaw file (if any, and no other key took it)
        became its own. Every call on a session comes here first: free with no legacy file left."""
        if self._adopts and self._legacy:
            self.adopt_zeroclaw_file(session_key)
        return session_key

    def adopt_zeroclaw_file(self, session_key: str) -> bool:
        """Make the legacy ZeroClaw file of ``session_key`` its own now (with any store: what
        every call does first when ``adopt_zeroclaw_names`` is on). ``True`` if the key took
        one: renamed to the key's own name, or kept, when that name is already the file's
        (``user_1.jsonl`` for ``user_1``), from then on no other key's.

        Raises:
            TypeError, ValueError: a bad key.
            TimeoutError: a lock was not had within ``lock_timeout``.
            OSError: the file could not be renamed; it stays a legacy file.
        """
        name = self._name_of(session_key)
        if self._names != "escaped" or not self._legacy:
            return False
        move = lambda old: self._sidecars.move(old, name)  # noqa: E731
        return self._legacy.take(session_key, name, move)

    def zeroclaw_files(self) -> dict[str, str]:
        """The legacy ZeroClaw files no key has adopted yet, ``{name: path}`` (``name``: the file
        name without ``.jsonl``); always empty with ``names="zeroclaw"``."""
        return self._legacy.present() if self._names == "escaped" else {}

    def _unadopted(self, keys: Iterable[str]) -> dict[str, str]:
        """``{key: path}`` of the listed ``keys`` that are only a legacy file's name."""
        legacy = self.zeroclaw_files() if self._adopts else {}
        return {key: legacy[key] for key in keys if key in legacy and not self._exists(key)}

    def _view(self) -> JsonlStoreBase:
        """This workspace with ZeroClaw's names: listings read legacy files through it."""
        if self._zeroclaw_view is None:
            self._zeroclaw_view = self._like_this(names="zeroclaw")()
        return self._zeroclaw_view

    def list_sessions(self) -> list[str]:
        """Every session key, sorted; files whose names no key maps to are not listed. Legacy
        ZeroClaw files not adopted yet are listed by their file name (a call with it adopts it)."""
        keys = self._list()
        return sorted({*keys, *self.zeroclaw_files()}) if self._adopts and self._legacy else keys

    # --- messages -------------------------------------------------------------------------------

    def load(self, session_key: str, limit: int | None = None) -> list[ChatMessage]:
        """The session's valid messages, oldest first; the newest ``limit`` of them when given.

        Corrupt lines are skipped. A missing session loads as ``[]``; so does a path that holds
        no session file (a symlink, a FIFO, a folder), with a warning on the ``turnlog`` logger.

        Raises:
            TypeError, ValueError: a bad key or limit.
            OSError: the file could not be read (``PermissionError``; out of file descriptors or
                memory; an I/O error): never read as an empty history.
        """
        limit = check_limit(limit)
        try:
            return self._load(self._own(session_key), limit)
        except FileNotFoundError:
            return []
        except OSError as error:
            if not files.is_not_a_session(error):
                raise
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return []

    def append(self, session_key: str, message: MessageLike) -> None:
        """Add ``message`` (a ``ChatMessage`` or a mapping) as one line at the end of the session.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
            OSError: the write failed; the file is left as it was.
        """
        self._appended(session_key, self._append(self._own(session_key), message))

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add ``messages`` in order with one locked write: all of them, or none on error."""
        self._appended(session_key, self._append_many(self._own(session_key), messages))

    def _appended(self, session_key: str, appended: Appended) -> None:
        if appended[1]:
            log.warning(
                "turnlog: session %r ended in a torn line (a writer died mid-write); "
                "the append started a new line after it, which loads skip as corrupt",
                session_key,
            )

    def _write_locked(self, session_key: str, data: bytes) -> Appended:
        """Append ``data`` (encoded lines) under the session's lock, creating the session if
        needed: the pure store's every append, and the Rust store's first one (which also starts
        the sidecar, under the same lock, before any setter can write one)."""
        path = self.transcript_path(session_key)
        with self._locked(path, create=True) as held:
            assert held is not None
            fd, created = held
            size = os.fstat(fd).st_size
            torn = bool(size) and os.pread(fd, 1, size - 1) != b"\n"
            if torn:
                data = b"\n" + data  # never glue a record onto a torn last line
            try:
                if created:  # before the first line: a file turnlog made is never adopted
                    self._legacy.created(
                        self._name_of(session_key), zeroclaw_names=self._names == "zeroclaw"
                    )
                files.write_all(fd, data)
                if self._durability == "power":
                    files.sync_data(fd)
            except BaseException:
                # Leave no trace: a new session disappears again, an old one gets its length back.
                with contextlib.suppress(OSError):
                    if created:
                        os.unlink(path)
                    else:
                        os.ftruncate(fd, size)
                raise
            if created:  # still under the lock: no setter has written for the new session
                self._start_sidecar(session_key, fd)
        if created and self._durability == "power":
            files.sync_dir(self._sessions_dir)
        return created, torn

    def _start_sidecar(self, session_key: str, transcript_fd: int) -> None:
        """Record when the session the caller just created (and holds locked) began. A sidecar
        that cannot be written (a full disk, a metadata folder another user owns) must not fail
        the append, whose message is about to be stored: metadata is then derived from the
        transcript."""
        try:
            self._sidecars.start(self._name_of(session_key), transcript_fd)
        except OSError as error:
            log.warning(
                "turnlog: session %r was created, but its metadata could not be written "
                "(%s): its creation time is taken from the transcript",
                session_key,
                error,
            )

    def delete_session(self, session_key: str) -> bool:
        """Delete the session's transcript and metadata. ``True`` if it existed.

        Raises:
            OSError: the transcript could not be deleted; the session is as it was.
        """
        # The transcript goes first, so a failed delete changes nothing. Its sidecar goes next,
        # if no new session of the key began meanwhile; one left behind (a crash in between, a
        # metadata folder that refuses) belongs to no transcript, and the next session of the
        # key replaces it rather than inherit it (Sidecars.start).
        deleted = self._delete(self._own(session_key))
        name = self._name_of(session_key)
        if not os.path.lexists(self.transcript_path(session_key)):
            try:
                self._sidecars.unlink(name)
            except OSError as error:
                log.warning(
                    "turnlog: the metadata of deleted session %r stays: %s", session_key, error
                )
        return deleted

    # --- metadata -------------------------------------------------------------------------------

    def _update_meta(self, session_key: str, changes: dict[str, Any]) -> None:
        """Apply ``changes`` to the session's sidecar, creating the session if needed."""
        for value in changes.values():
            if isinstance(value, str) and _format.has_surrogate(value):
                raise ValueError("session metadata must not contain lone surrogates")
        path = self.transcript_path(self._own(session_key))
        with self._locked(path, create=True) as held:
            assert held is not None
            fd, created = held
            name = self._name_of(session_key)
            try:
                if created:
                    self._legacy.created(name, zeroclaw_names=self._names == "zeroclaw")
                self._sidecars.update(name, fd, changes, created=created)
            except BaseException:
                if created:  # a failed setter leaves no session behind
                    os.unlink(path)
                raise
        if created and self._durability == "power":
            files.sync_dir(self._sessions_dir)  # the new transcript's name, as appends sync it

    def _set_times(self, session_key: str, times: SessionTimes) -> bool:
        """``created_at`` and ``turn_started_at`` go to the sidecar; ``last_activity`` becomes the
        transcript's modification time (which is what last activity is here), so
        ``cleanup_stale`` and ``list_stuck_sessions`` judge the session by the given times."""
        name = self._name_of(self._own(session_key))
        active = times.last_activity
        if active is not None and not -(2**63) <= sidecar.to_ns(active) < 2**63:
            raise ValueError(f"last_activity is out of the range a file time holds: {active!r}")
        with self._locked(self.transcript_path(session_key), create=False) as held:
            if held is None:
                return False
            fd = held[0]
            meta = self._sidecars.read(name)
            changes = {}
            if times.created_at is not None:
                changes["created_at"] = sidecar.to_text(times.created_at)
            if times.turn_started_at is not None and sidecar.state_of(meta).state != "idle":
                changes["turn_started_at"] = sidecar.to_text(times.turn_started_at)
            if changes:
                self._sidecars.update(name, fd, changes, meta=meta)
            if times.last_activity is not None:
                # Through the locked descriptor, which is the session's transcript.
                os.utime(fd, ns=(os.fstat(fd).st_atime_ns, sidecar.to_ns(times.last_activity)))
                if self._durability == "power":
                    os.fsync(fd)  # a time is inode metadata, which fdatasync may leave behind
        return True

    def get_session_metadata(self, session_key: str) -> SessionMetadata | None:
        """Message count, times, name, alias and context of the session; ``None`` if it does
        not exist (or its path holds no session file: a warning then).

        Raises:
            OSError: the transcript or its sidecar could not be read (as for ``load``).
        """
        return self._metadata(self._own(session_key))

    def _metadata(self, session_key: str) -> SessionMetadata | None:
        try:
            stat = self._stat(session_key)
        except OSError as error:
            if not files.is_not_a_session(error):
                raise
            log.warning("turnlog: cannot read session %r: %s", session_key, error)
            return None
        if stat is None:
            return None
        count, mtime_ns = stat
        meta = self._sidecars.read(self._name_of(session_key))
        return sidecar.metadata(session_key, meta, count, mtime_ns)

    def list_sessions_with_metadata(self) -> list[SessionMetadata]:
        """Metadata of every session, the most recently active first."""
        return self._metadata_of(self.list_sessions())

    def set_session_name(self, session_key: str, name: str) -> None:
        """Set the session's human-readable name (creating the session if needed)."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._update_meta(session_key, {"name": name})

    def get_session_name(self, session_key: str) -> str | None:
        """The session's name, or ``None``."""
        return sidecar.text_field(self._meta(session_key), "name")

    def set_session_agent_alias(self, session_key: str, alias: str) -> None:
        """Bind the session to an agent alias (creating the session if needed)."""
        if not isinstance(alias, str):
            raise TypeError(f"alias must be a str, not {type(alias).__name__}")
        self._update_meta(session_key, {"agent_alias": alias})

    def get_session_agent_alias(self, session_key: str) -> str | None:
        """The session's agent alias, or ``None``."""
        return sidecar.text_field(self._meta(session_key), "agent_alias")

    def _meta(self, session_key: str) -> dict[str, Any]:
        return self._sidecars.read(self._name_of(self._own(session_key)))

    def _set_context(self, session_key: str, fields: dict[str, str]) -> None:
        self._update_meta(session_key, dict(fields))

    def set_session_state(self, session_key: str, state: str, turn_id: str | None = None) -> None:
        """Set the turn state: ``"running"`` (starts a turn, ``turn_id`` identifies it),
        ``"idle"`` (clears the turn) or ``"error"`` (keeps the turn for inspection)."""
        check_state(state)
        check_text(turn_id, "turn_id", optional=True)
        changes: dict[str, Any] = {"state": state}
        if state == "running":
            changes.update(turn_id=turn_id, turn_started_at=sidecar.to_text(sidecar.now()))
        elif state == "idle":
            changes.update(turn_id=None, turn_started_at=None)
        elif turn_id is not None:
            changes["turn_id"] = turn_id
        self._update_meta(session_key, changes)

    def get_session_state(self, session_key: str) -> SessionState | None:
        """The turn state (``"idle"`` until one is set); ``None`` if the session does not exist."""
        exists = self.session_exists(session_key)  # (adopting a legacy file of the key)
        return sidecar.state_of(self._sidecars.read(self._name_of(session_key))) if exists else None

    def list_running_sessions(self) -> list[SessionMetadata]:
        """Sessions in the ``"running"`` state, the most recently active first."""
        return self._metadata_of(key for key, state in self._states() if state.state == "running")

    def _states(self) -> list[tuple[str, SessionState]]:
        """``(key, state)`` of every session that has a sidecar."""
        return [(key, state) for key, state in self._sidecars.states() if self._exists(key)]

    def list_stuck_sessions(self, threshold_secs: float) -> list[SessionMetadata]:
        """Sessions running for longer than ``threshold_secs`` (by ``turn_started_at``)."""
        limit = earlier(sidecar.now(), check_amount(threshold_secs, "threshold_secs"))
        stuck = sidecar.stuck_since(limit)
        return self._metadata_of(key for key, state in self._states() if stuck(state))

    def cleanup_stale(self, ttl_hours: float) -> int:
        """Delete sessions (transcript and metadata) idle for longer than ``ttl_hours``, by last
        activity (the transcript's last change). Returns how many were deleted.

        A session that looks stale is judged again under its transcript's lock, and removed
        (sidecar, then transcript) before the lock is let go: a message acknowledged after the
        first look keeps its session; appenders waiting for the lock start a new one. Temp files
        of killed rewrites (``.turnlog-*.tmp``, an hour old) are removed too.
        """
        limit = sidecar.to_ns(earlier(sidecar.now(), check_amount(ttl_hours, "ttl_hours") * 3600))
        removed = 0
        keys = self.list_sessions()
        unadopted = self._unadopted(keys)  # stale like any session, and not adopted for it
        for key in keys:
            path = unadopted.get(key) or self.transcript_path(key)
            try:
                if os.lstat(path).st_mtime_ns >= limit:
                    continue
            except FileNotFoundError:
                continue
            with contextlib.ExitStack() as stack:
                try:
                    held = stack.enter_context(self._locked(path, create=False))
                except OSError as error:  # as a listing skips a transcript it cannot read
                    log.warning("turnlog: cannot read session %r: %s", key, error)
                    continue
                if held is None or os.fstat(held[0]).st_mtime_ns >= limit:
                    continue
                self._sidecars.unlink(self._name_of(key))
                os.unlink(path)
            if self._durability == "power":
                files.sync_dir(self._sessions_dir)
            removed += 1
        # Temp files of rewrites killed before their rename: an hour old, no rewrite in
        # progress takes that long.
        cutoff = sidecar.to_ns(earlier(sidecar.now(), TEMP_FILE_AGE))
        meta = self._sidecars.folder
        files.remove_temp_files((self._sessions_dir, meta, os.path.dirname(meta)), cutoff)
        return removed

    def search(self, query: SessionQuery, *, match: Match = "all") -> list[SessionMetadata]:
        """Sessions with a message whose content holds the keyword, the most recently active
        first, at most ``query.limit``.

        Case-insensitive. With ``match="all"`` (default) every word of the keyword must occur
        in one message; with ``match="any"``, one of them. No keyword matches every session.
        The search scans the transcripts (no index to keep in sync).
        """
        keyword, limit = check_query(query, match)
        every = self.list_sessions()
        unadopted = self._unadopted(every)
        if unadopted:  # read through ZeroClaw's names, without adopting
            every = [key for key in every if key not in unadopted]
            view = self._view()
            view_keys = view._search(sorted(unadopted), keyword, match == "all")
        else:
            view_keys = []
        try:
            keys = self._search(every, keyword, match == "all")
        except OSError:
            # A transcript that cannot be read (this user may not; a symlink, a FIFO): search the
            # others one by one without it, as listings leave it out. Other errors still raise.
            keys = []
            for key in every:
                try:
                    keys += self._search([key], keyword, match == "all")
                except OSError as error:
                    if not (isinstance(error, PermissionError) or files.is_not_a_session(error)):
                        raise
                    log.warning("turnlog: cannot read session %r: %s", key, error)
        found = self._metadata_of([*keys, *view_keys])
        return found if limit is None else found[:limit]

    def _metadata_of(self, keys: Iterable[str]) -> list[SessionMetadata]:
        """The metadata of ``keys``, the most recently active first. A session this user may not
        read is left out of the listing, with a warning: one such file must not make listing
        and search fail for the whole workspace. Other read errors raise."""
        keys = list(keys)
        unadopted = self._unadopted(keys)
        found = []
        for key in keys:
            # A legacy file is described, not adopted, by a listing.
            store = self._view() if key in unadopted else self
            try:
                metadata = store._metadata(key)
            except PermissionError as error:
                log.warning("turnlog: cannot read session %r: %s", key, error)
                continue
            if metadata is not None:
                found.append(metadata)
        return by_activity(found)

    # --- what each store provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        """Read the session; raises ``OSError`` when the file cannot be read."""

    @abc.abstractmethod
    def _stat(self, session_key: str) -> tuple[int, int] | None:
        """``(valid message count, mtime in ns)`` of the session file, ``None`` if there is none."""

    @abc.abstractmethod
    def _append(self, session_key: str, message: MessageLike) -> Appended:
        """Append one message; whether that created the file and repaired a torn last line."""

    @abc.abstractmethod
    def _append_many(self, session_key: str, messages: Iterable[MessageLike]) -> Appended:
        """Append messages in one write; as :meth:`_append`; nothing at all for none."""

    def session_exists(self, session_key: str) -> bool:
        """Whether the session has a file (an emptied session still exists)."""
        return self._exists(self._own(session_key))

    @abc.abstractmethod
    def _exists(self, session_key: str) -> bool:
        """Whether the key's own file exists (a legacy file is not adopted here)."""

    @abc.abstractmethod
    def _list(self) -> list[str]:
        """The keys of the files in ``sessions/`` that a key of this store's names maps to."""

    @abc.abstractmethod
    def _delete(self, session_key: str) -> bool:
        """Delete the transcript; ``True`` if it existed."""

    @abc.abstractmethod
    def _search(self, keys: list[str], keyword: str, match_all: bool) -> list[str]:
        """The keys (of ``keys``) with a valid message matching ``keyword``."""
