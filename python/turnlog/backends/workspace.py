"""The workspace folder every file-based backend lives in: ``<workspace>/sessions/``."""

from __future__ import annotations

import errno
import os
import stat
from typing import Union

from . import files

__all__ = ["PathLike", "check_private", "sessions_dir"]

PathLike = Union[str, "os.PathLike[str]"]


def sessions_dir(workspace: PathLike, *, durable: bool = False) -> str:
    """Create ``<workspace>/sessions/`` (owner-only) if needed and return its absolute path;
    with ``durable``, folders it creates are fsynced into their parents.

    Raises:
        TypeError: ``workspace`` is not a str or ``os.PathLike[str]``.
        ValueError: ``workspace`` is empty.
        NotADirectoryError: ``workspace`` (or its ``sessions``) exists and is not a folder.
    """
    path = os.fspath(workspace)
    if not isinstance(path, str):
        raise TypeError(
            f"workspace must be a str or os.PathLike[str], not {type(workspace).__name__}"
        )
    if not path:
        raise ValueError("workspace must not be empty")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "workspace is not a directory", path)
    sessions = os.path.join(os.path.abspath(path), "sessions")
    if os.path.lexists(sessions) and not os.path.isdir(sessions):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", sessions)
    files.make_dirs(sessions, durable=durable)
    check_private(os.path.abspath(path))
    check_private(sessions)
    return sessions


def check_private(folder: str) -> None:
    """Refuse a folder that another local user could write to, or swap for one of their own
    (as ssh refuses a group-writable ``~/.ssh``): it must be a real folder (not a symlink, for
    the folders turnlog names inside the workspace), owned by this process's user or root, and
    writable by nobody else.

    Raises:
        PermissionError: the folder is unsafe; the message says how to fix it.
    """
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        # The workspace itself may be a link the user made; a folder inside it may not.
        if os.path.basename(folder) in ("sessions", ".turnlog", "meta"):
            raise PermissionError(
                errno.EPERM, f"turnlog: {folder} is a symlink: replace it with a folder", folder
            )
        info = os.stat(folder)
    user = os.geteuid()
    if info.st_uid not in (user, 0):
        raise PermissionError(
            errno.EPERM,
            f"turnlog: {folder} belongs to uid {info.st_uid}, not to this user (uid {user}) "
            "or root: that user could swap the conversations; chown it or use another workspace",
            folder,
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            errno.EPERM,
            f"turnlog: {folder} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):04o}), who could swap the conversations: "
            f"run chmod go-w {folder!r}",
            folder,
        )
