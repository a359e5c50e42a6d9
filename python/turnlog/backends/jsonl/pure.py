"""The pure-Python JSONL store: the reference for the Rust store and the fallback without it.

``from turnlog.pure import SessionStore`` always gives this class, whatever ``turnlog.SessionStore``
is. It reads and writes the same files, byte for byte, and takes the same locks (``flock`` on the
transcript itself), so both stores can work on one workspace at once.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator

try:
    import fcntl
except ImportError:  # no flock here (Windows): SessionStore() raises files.NO_FLOCK
    fcntl = None  # type: ignore[assignment]

from ..._impl import ChatMessage
from ..._rules import lower, search_words
from ...backend import MessageLike
from .. import files
from .. import format as _format
from .base import Appended, JsonlStoreBase

__all__ = ["SessionStore"]


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


def _read(path: str, timeout: float | None) -> bytes:
    """The whole file at ``path`` (never through a symlink), read under a shared lock as the
    Rust store reads: no writer cuts the file in place meanwhile, so no line read is the head
    of one line and the tail of a later one."""
    fd = files.open_regular(path)
    try:
        files.wait_flock(fd, fcntl.LOCK_SH, timeout, path)
        return files.read_all(fd)
    finally:
        files.unlock_and_close(fd)


class SessionStore(JsonlStoreBase):
    """Append-only JSONL session store, in pure Python: ``SessionStore(workspace, *,
    durability="process")``, as ``JsonlStoreBase`` describes.

    Raises:
        NotImplementedError: the platform has no ``fcntl.flock`` (Windows), which the store's
            locking needs.
    """

    @property
    def _durable(self) -> bool:
        return self._durability == "power"

    def _replace(self, fd: int, path: str, data: bytes) -> None:
        """Atomically replace the locked file ``fd`` at ``path`` with ``data``."""
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        files.replace(path, data, mode=mode, durable=self._durable)

    # --- what JsonlStoreBase needs --------------------------------------------------------------

    def _load(self, session_key: str, limit: int | None) -> list[ChatMessage]:
        path = self.transcript_path(session_key)
        if limit == 0:
            return []
        data = _read(path, self._lock_timeout)
        messages = [m for m in map(_format.parse_line, data.split(b"\n")) if m is not None]
        return messages if limit is None else messages[-limit:]

    def _stat(self, session_key: str) -> tuple[int, int] | None:
        path = self.transcript_path(session_key)
        try:
            fd = files.open_regular(path)
        except FileNotFoundError:
            return None
        try:
            files.wait_flock(fd, fcntl.LOCK_SH, self._lock_timeout, path)  # as _read takes it
            return _count_valid(files.read_all(fd)), os.fstat(fd).st_mtime_ns
        finally:
            files.unlock_and_close(fd)

    def _append(self, session_key: str, message: MessageLike) -> Appended:
        return self._write_locked(session_key, _format.encode_message(message))

    def _append_many(self, session_key: str, messages: Iterable[MessageLike]) -> Appended:
        self._name_of(session_key)  # a bad key is refused even with nothing to write
        data = b"".join([_format.encode_message(m) for m in messages])
        return self._write_locked(session_key, data) if data else (False, False)

    def _delete(self, session_key: str) -> bool:
        path = self.transcript_path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                return False
            os.unlink(path)
        if self._durable:
            files.sync_dir(self._sessions_dir)
        return True

    def _search(self, keys: list[str], keyword: str, match_all: bool) -> list[str]:
        words = search_words(keyword)
        if not words:
            return [key for key in keys if self._exists(key)]
        found = []
        for key in keys:
            try:
                data = _read(self.transcript_path(key), self._lock_timeout)
            except OSError as error:
                if files.is_not_a_session(error):
                    continue
                raise
            for line in data.split(b"\n"):
                message = _format.parse_line(line)
                if message is None:
                    continue
                content = lower(message.content)
                hits = (word in content for word in words)
                if all(hits) if match_all else any(hits):
                    found.append(key)
                    break
        return found

    # --- SessionBackend -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _newest(self, session_key: str) -> Iterator[tuple[int, str, bytes, int, int] | None]:
        """Hold the session's lock with its newest valid message in view: ``(fd, path, data,
        start, end)`` (``data[start:end]`` is the line, its newline included), or ``None``
        when there is no file or no valid message. The Rust store's ``lock_newest``."""
        path = self.transcript_path(session_key)
        with self._locked(path, create=False) as held:
            if held is None:
                yield None
                return
            data = files.read_all(held[0])
            span = _last_valid(data)
            yield None if span is None else (held[0], path, data, *span)

    def remove_last(self, session_key: str) -> bool:
        """Remove the newest valid message; corrupt lines around it stay. ``True`` if one was."""
        with self._newest(self._own(session_key)) as newest:
            if newest is None:
                return False
            self._cut(*newest)
            return True

    def _cut(self, fd: int, path: str, data: bytes, start: int, end: int) -> None:
        """Remove ``data[start:end]`` from the locked file: one ``ftruncate`` when it ends the
        file, an atomic rewrite otherwise (the Rust store's ``cut``)."""
        if end == len(data):
            os.ftruncate(fd, start)
            if self._durable:
                files.sync_data(fd)
        else:
            self._replace(fd, path, data[:start] + data[end:])

    def pop_last(self, session_key: str) -> ChatMessage | None:
        """Remove the newest valid message and return it, under the session's lock; ``None``
        when there is none. Corrupt lines around it stay."""
        with self._newest(self._own(session_key)) as newest:
            if newest is None:
                return None
            fd, path, data, start, end = newest
            message = _format.parse_line(data[start:end])
            self._cut(fd, path, data, start, end)
            return message

    def update_last(self, session_key: str, message: MessageLike) -> bool:
        """Replace the newest valid message, atomically. ``False`` (nothing written) if none."""
        line = _format.encode_message(message)
        with self._newest(self._own(session_key)) as newest:
            if newest is None:
                return False
            fd, path, data, start, end = newest
            self._replace(fd, path, data[:start] + line + data[end:])
            return True

    def compact(self, session_key: str) -> None:
        """Rewrite the session with only its valid lines, stripped, atomically."""
        path = self.transcript_path(self._own(session_key))
        with self._locked(path, create=False) as held:
            if held is None:
                return
            fd = held[0]
            data = files.read_all(fd)
            kept = [_format.valid_text(line) for line in data.split(b"\n")]
            compacted = b"".join(line + b"\n" for line in kept if line is not None)
            if compacted != data:
                self._replace(fd, path, compacted)

    def clear_messages(self, session_key: str) -> int:
        """Empty the session (its file stays, so it stays listed). Returns the messages removed."""
        path = self.transcript_path(self._own(session_key))
        with self._locked(path, create=False) as held:
            if held is None:
                return 0
            fd = held[0]
            data = files.read_all(fd)
            if data:
                os.ftruncate(fd, 0)
                if self._durable:
                    files.sync_data(fd)
            return _count_valid(data)

    def _list(self) -> list[str]:
        keys = []
        with os.scandir(self._sessions_dir) as entries:
            for entry in entries:
                name = entry.name
                if name.endswith(_format.SUFFIX) and entry.is_file(follow_symlinks=False):
                    key = self._sidecars.key_of(name[: -len(_format.SUFFIX)])
                    if key is not None:
                        keys.append(key)
        keys.sort()
        return keys

    def _exists(self, session_key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.transcript_path(session_key)).st_mode)
        except FileNotFoundError:
            return False
