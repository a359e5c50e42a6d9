"""The workspace folder every file-based backend lives in: ``<workspace>/sessions/``."""

from __future__ import annotations

import errno
import os
from typing import Union

from . import files

__all__ = ["PathLike", "sessions_dir"]

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
    files.make_dirs(path, durable=durable)
    files.make_dirs(sessions, 0o700, durable=durable)
    return sessions
