"""File primitives of the JSONL stores in Python: the shared lock protocol, whole reads and
writes, and atomic replacement. The Rust core has the same in ``rust/store.rs``."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator

try:
    import fcntl
except ImportError:  # no flock here (Windows): `import turnlog` works, the JSONL stores refuse
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "is_not_a_session",
    "locked",
    "make_dirs",
    "not_a_session_file",
    "open_regular",
    "read_all",
    "replace",
    "require_flock",
    "sync_data",
    "sync_dir",
    "unlock_and_close",
    "wait_flock",
    "write_all",
]

_READ_CHUNK = 1 << 20


#: What opening a path that holds no session file gives: a symlink (``ELOOP`` under
#: ``O_NOFOLLOW``), a FIFO, socket, device or folder (``EINVAL`` from ``not_a_session_file``,
#: ``EISDIR``), a file where a folder on the way should be (``ENOTDIR``).
#: Such a path reads as no session; any other error (``EMFILE``, ``EIO``, ``EACCES``)
#: is raised, so that history is never silently read as empty.
NOT_A_SESSION = frozenset({errno.ELOOP, errno.EINVAL, errno.EISDIR, errno.ENOTDIR})


def is_not_a_session(error: OSError) -> bool:
    """Whether ``error`` says the path holds no session file (rather than that reading failed)."""
    return isinstance(error, FileNotFoundError) or error.errno in NOT_A_SESSION


#: Never through a symlink, and never waiting: opening a FIFO would block until a writer came.
NO_FOLLOW_NO_WAIT = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def not_a_session_file(path: str) -> OSError:
    """What a FIFO, socket or device where a session file should be gives: like a symlink, it
    is not a session; reads find nothing (with a warning) and writes fail."""
    return OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)


def is_regular(path: str) -> bool:
    """Whether ``path`` is a regular file (not following a symlink)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def open_regular(path: str) -> int:
    """Open the regular file ``path`` for reading (never a symlink, FIFO or device)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | NO_FOLLOW_NO_WAIT)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_a_session_file(path)
    return fd


def read_all(fd: int) -> bytes:
    """Everything in the file ``fd``, read with ``pread`` (the file position is not used)."""
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, _READ_CHUNK, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``, going on after short writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync_data(fd: int) -> None:
    """Flush the file's data and size to disk (``fdatasync``; ``fsync`` where it is missing)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def sync_dir(path: str) -> None:
    """fsync the folder ``path``, so a created, renamed or removed entry survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str, *, durable: bool) -> None:
    """Create ``path`` and any missing parents, each owner-only (0700) whatever the umask (a
    umask only takes bits away, and ``os.makedirs`` gives parents the default 0777); with
    ``durable``, every folder it creates is fsynced into its parent, so that a new workspace
    survives power loss with its files."""
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head) and os.path.dirname(head) != head:
        missing.append(head)
        head = os.path.dirname(head)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(folder, 0o700)
    if durable:
        for created in missing:
            sync_dir(os.path.dirname(created))


#: Why the JSONL stores cannot run where ``fcntl`` is missing.
NO_FLOCK = (
    f"turnlog's JSONL session store is not supported on this platform ({sys.platform}): it "
    "locks session files with flock (Python's fcntl module), which this platform lacks, and "
    "without that lock concurrent writers would lose messages"
)


def require_flock() -> None:
    """Raise ``NotImplementedError`` (saying what is not supported) where there is no flock."""
    if fcntl is None:
        raise NotImplementedError(NO_FLOCK)


#: What ``locked`` gives: a context manager of ``(fd, created)``, or ``None``.
Locked = contextlib.AbstractContextManager[tuple[int, bool] | None]


@contextlib.contextmanager
def locked(
    path: str, *, create: bool, timeout: float | None = None
) -> Iterator[tuple[int, bool] | None]:
    """Hold ``flock(LOCK_EX)`` on the session file ``path``: yields ``(fd, created)``, or
    ``None`` if the file does not exist and ``create`` is false.

    The lock is on the transcript itself, as the Rust store takes it, so both exclude each
    other. A writer that opened the file before a rewrite renamed a new one over it (or before
    it was deleted) notices, once it has the lock, that the path names another inode, and opens
    the path again: otherwise its write would land in a file nobody reads any more.

    A file this creates is locked before it appears at ``path`` (made under a temp name, locked,
    then linked into place), so no other process can lock the new session before its creator:
    what the creator writes first (its sidecar) is never written over a setter's.

    Never call a native store operation on the same session while holding this: its lock is
    on another open file description and would wait for this one forever.
    """
    require_flock()
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | NO_FOLLOW_NO_WAIT
    while True:
        created = False
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if not create:
                yield None
                return
            new = _create_locked(path, flags)
            if new is None:
                continue  # another process created it first: lock that one
            fd, created = new, True
        try:
            wait_flock(fd, fcntl.LOCK_EX, timeout, path)
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode):
                raise not_a_session_file(path)
            try:
                current: os.stat_result | None = os.lstat(path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            break
        os.close(fd)
    try:
        yield fd, created
    except OSError as error:
        if error.filename is None:  # a failed write or truncation: say which file, as Rust does
            error.filename = path
        raise
    finally:
        unlock_and_close(fd)


def wait_flock(fd: int, operation: int, timeout: float | None, path: str) -> None:
    """``flock(fd, operation)``, waiting at most ``timeout`` seconds (``None``: as long as it
    takes), then ``TimeoutError``: a stopped writer cannot freeze its session's readers."""
    if timeout is None:
        fcntl.flock(fd, operation)
        return
    deadline = time.monotonic() + timeout
    pause = 0.0002
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    errno.ETIMEDOUT, "timed out waiting for the session's lock", path
                ) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)


def _create_locked(path: str, flags: int) -> int | None:
    """A new, empty, locked file at ``path``; ``None`` if one appeared there meanwhile."""
    temp = os.path.join(os.path.dirname(path), f".turnlog-{os.urandom(8).hex()}.tmp")
    fd = os.open(temp, flags | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.link(temp, path)
    except FileExistsError:
        unlock_and_close(fd)
        return None
    except OSError as error:
        unlock_and_close(fd)
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # A filesystem without hard links: create in place (a setter that locks the new file
        # between its creation and the creator's lock is then written over, as before 0.2).
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return None
    except BaseException:
        unlock_and_close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return fd


def unlock_and_close(fd: int) -> None:
    """Let go of the ``flock`` on ``fd`` explicitly, then close it. A process forked while the
    lock was held has a copy of ``fd`` (the same open file description, which the lock belongs
    to): a close alone would leave the session locked for as long as that child lives."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_temp_files(folders: Iterable[str], cutoff_ns: int) -> None:
    """Remove the temp files ``replace`` and ``locked`` make (``.turnlog-*.tmp``) last changed
    before ``cutoff_ns``, in ``folders``: what writers killed before their rename left."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not (entry.name.startswith(".turnlog-") and entry.name.endswith(".tmp")):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime_ns < cutoff_ns:
                    os.unlink(entry.path)


def replace(path: str, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Atomically replace ``path`` with ``data``: a hidden temp file in the same folder,
    renamed over it. Readers see the old file or the new one, never a mix."""
    folder = os.path.dirname(path)
    # os.urandom, not secrets: the same bytes without importing secrets (and hashlib) at startup.
    temp = os.path.join(folder, f".turnlog-{os.urandom(8).hex()}.tmp")
    temp_fd = os.open(
        temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        try:
            os.fchmod(temp_fd, mode)
            write_all(temp_fd, data)
            if durable:
                sync_data(temp_fd)
        finally:
            os.close(temp_fd)
        os.rename(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if durable:
        sync_dir(folder)
