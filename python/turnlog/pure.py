"""The pure-Python JSONL store: the reference for the Rust store and the fallback without it.

``from turnlog.pure import SessionStore`` always gives this class, whatever ``turnlog.SessionStore``
is. It reads and writes the same files, byte for byte, and takes the same locks (``flock`` on the
transcript itself), so both stores can work on one workspace at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterable, Iterator

from . import _format
from ._impl import ChatMessage
from ._jsonl import Durability, JsonlStoreBase, PathLike
from .backend import MessageLike

__all__ = ["SessionStore"]

_READ_CHUNK = 1 << 20


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, _READ_CHUNK, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lines_backwards(data: bytes) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each line of ``data``, newest first; the line is ``data[start:stop]``
    and its newline, if any, is at ``stop``."""
    stop = len(data)
    while True:
        newline = data.rfind(b"\n", 0, stop)
        yield newline + 1, stop
        if newline < 0:
            return
        stop = newline


def _last_valid(data: bytes) -> tuple[int, int] | None:
    """``(start, end)`` of the newest valid line, its newline included in ``end``."""
    for start, stop in _lines_backwards(data):
        if _format.valid_text(data[start:stop]) is not None:
            return start, (stop + 1 if stop < len(data) else stop)
    return None


def _count_valid(data: bytes) -> int:
    return sum(_format.valid_text(line) is not None for line in data.split(b"\n"))


class SessionStore(JsonlStoreBase):
    """Append-only JSONL session store, in pure Python.

    Args:
        workspace: The workspace folder; sessions live in ``<workspace>/sessions/``, which is
            created (owner-only) if needed.
        durability: ``"process"`` (default): an acknowledged write survives a crash of the
            process. ``"power"``: it also survives power loss (fsync of file and folder).

    Raises:
        NotADirectoryError: ``workspace`` (or its ``sessions``) exists and is not a folder.
        PermissionError: the folder cannot be created.
    """

    def __init__(self, workspace: PathLike, *, durability: Durability = "process") -> None:
        super().__init__(workspace, durability=durability)

    # --- paths and locks ------------------------------------------------------------------------

    def _path(self, session_key: str) -> str:
        return os.path.join(self._sessions_dir, _format.key_to_name(session_key) + _format.SUFFIX)

    @contextlib.contextmanager
    def _locked(self, path: str, *, create: bool) -> Iterator[tuple[int, bool] | None]:
        """Hold ``flock`` on the file at ``path``: yields ``(fd, created)``, or ``None`` if the
        file does not exist (and ``create`` is false).

        The lock is on the transcript itself, so a writer that opened the file before a rewrite
        renamed a new one over it must notice it holds the old inode and open the path again.
        """
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        while True:
            created = False
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                try:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                created = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                locked = os.fstat(fd)
                try:
                    current: os.stat_result | None = os.lstat(path)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (current.st_dev, current.st_ino) == (
                locked.st_dev,
                locked.st_ino,
            ):
                break
            os.close(fd)
        try:
            yield fd, created
        finally:
            os.close(fd)  # also releases the lock

    def _sync_dir(self) -> None:
        fd = os.open(self._sessions_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _replace(self, fd: int, path: str, data: bytes) -> None:
        """Atomically replace the locked file ``fd`` at ``path`` with ``data`` (temp + rename)."""
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        temp = os.path.join(self._sessions_dir, f".turnlog-{secrets.token_hex(8)}.tmp")
        temp_fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            try:
                os.fchmod(temp_fd, mode)
                _write_all(temp_fd, data)
                if self._durability == "power":
                    os.fsync(temp_fd)
            finally:
                os.close(temp_fd)
            os.rename(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if self._durability == "power":
            self._sync_dir()

    def _append_bytes(self, path: str, data: bytes) -> None:
        with self._locked(path, create=True) as held:
            assert held is not None
            fd, created = held
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # never glue a record onto a torn last line
            try:
                _write_all(fd, data)
                if self._durability == "power":
                    os.fsync(fd)
            except BaseException:
                # Leave no trace: a new session disappears again, an old one gets its length back.
                with contextlib.suppress(OSError):
                    if created:
                        os.unlink(path)
                    else:
                        os.ftruncate(fd, size)
                raise
        if created and self._durability == "power":
            self._sync_dir()

    # --- SessionBackend ---------------------------------------------------------------------------

    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        path = self._path(session_key)
        if limit == 0:
            return []
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            if limit is not None:
                # As the Rust store's tail read: no writer truncates the file meanwhile.
                fcntl.flock(fd, fcntl.LOCK_SH)
            data = _read_all(fd)
        finally:
            os.close(fd)
        messages = [m for m in map(_format.parse_line, data.split(b"\n")) if m is not None]
        return messages if limit is None else messages[-limit:]

    def _stat(self, session_key: str) -> tuple[int, int] | None:
        path = self._path(session_key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            return _count_valid(_read_all(fd)), os.fstat(fd).st_mtime_ns
        finally:
            os.close(fd)

    def append(self, session_key: str, message: MessageLike) -> None:
        """Add ``message`` (a ``ChatMessage`` or a mapping) as one line at the end of the session.

        Raises:
            TypeError, ValueError: a bad key or message; nothing is written.
            OSError: the write failed; the file is left as it was.
        """
        line = _format.encode_message(message)
        self._append_bytes(self._path(session_key), line)

    def append_many(self, session_key: str, messages: Iterable[MessageLike]) -> None:
        """Add ``messages`` in order with one locked write: all of them, or none on error."""
        data = b"".join([_format.encode_message(m) for m in messages])
        path = self._path(session_key)
        if data:
            self._append_bytes(path, data)

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest valid message; corrupt lines around it stay. ``True`` if one was."""
        path = self._path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return False
            fd = held[0]
            data = _read_all(fd)
            span = _last_valid(data)
            if span is None:
                return False
            start, end = span
            if end == len(data):
                os.ftruncate(fd, start)
                if self._durability == "power":
                    os.fsync(fd)
            else:
                self._replace(fd, path, data[:start] + data[end:])
            return True

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message, atomically. ``False`` (nothing written) if none."""
        line = _format.encode_message(message)
        path = self._path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return False
            fd = held[0]
            data = _read_all(fd)
            span = _last_valid(data)
            if span is None:
                return False
            start, end = span
            self._replace(fd, path, data[:start] + line + data[end:])
            return True

    def compact(self, session_key: str) -> None:
        """Rewrite the session with only its valid lines, stripped, atomically."""
        path = self._path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return
            fd = held[0]
            data = _read_all(fd)
            kept = [_format.valid_text(line) for line in data.split(b"\n")]
            compacted = b"".join(line + b"\n" for line in kept if line is not None)
            if compacted != data:
                self._replace(fd, path, compacted)

    def clear_messages(self, session_key: str) -> int:
        """Empty the session (its file stays, so it stays listed). Returns the messages removed."""
        path = self._path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return 0
            fd = held[0]
            data = _read_all(fd)
            if data:
                os.ftruncate(fd, 0)
                if self._durability == "power":
                    os.fsync(fd)
            return _count_valid(data)

    def delete_session(self, session_key: str) -> bool:
        """Delete the session's file. ``True`` if it existed."""
        path = self._path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return False
            os.unlink(path)
        if self._durability == "power":
            self._sync_dir()
        return True

    def list_sessions(self) -> list[str]:
        """Every session key, sorted. Files whose names no key maps to are not listed."""
        keys = []
        with os.scandir(self._sessions_dir) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(_format.SUFFIX) and entry.is_file(follow_symlinks=False):
                    key = _format.name_to_key(name[: -len(_format.SUFFIX)])
                    if key is not None:
                        keys.append(key)
        keys.sort()
        return keys

    def session_exists(self, session_key: str) -> bool:
        """Whether the session has a file (an emptied session still exists)."""
        try:
            return stat.S_ISREG(os.lstat(self._path(session_key)).st_mode)
        except FileNotFoundError:
            return False
