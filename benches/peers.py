"""What turnlog is compared with: two plain Python stores and two I/O floors.

Both stores use turnlog's layout (``<workspace>/sessions/<key>.jsonl``, keys used as file names
as they are) and the ``load``/``append``/``remove_last``/``compact`` calls of ``SessionStore``,
but take no locks and return dicts.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

import orjson

__all__ = ["JsonStore", "OrjsonStore", "copy_file", "split_decode"]

PathLike = Union[str, "os.PathLike[str]"]


def _is_message(obj: object) -> bool:
    """turnlog's validity rule, short of its duplicate-key, surrogate and depth checks."""
    return (
        isinstance(obj, dict) and type(obj.get("role")) is str and type(obj.get("content")) is str
    )


class _PlainStore:
    """A store that reads and rewrites whole files, parsing each line with ``_parse``."""

    _parse: Callable[[bytes], Any]

    def __init__(self, workspace: PathLike) -> None:
        self._dir = Path(workspace) / "sessions"
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._dir / f"{key}.jsonl"

    def _message(self, line: bytes) -> dict[str, Any] | None:
        try:
            obj = self._parse(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
            return None
        return obj if _is_message(obj) else None

    def load(self, key: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The valid messages, oldest first; the newest ``limit`` of them when given."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return []
        messages = [m for m in map(self._message, data.split(b"\n")) if m is not None]
        return messages if limit is None else messages[-limit:] if limit else []

    def remove_last(self, key: str) -> bool:
        """Drop the newest valid line, rewriting the file in place."""
        path = self._path(key)
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return False
        for i in range(len(lines) - 1, -1, -1):
            if self._message(lines[i]) is not None:
                del lines[i]
                path.write_bytes(b"\n".join(lines))
                return True
        return False

    def compact(self, key: str) -> None:
        """Rewrite the file with only its valid lines."""
        path = self._path(key)
        lines = path.read_bytes().split(b"\n")
        kept = [line.strip() + b"\n" for line in lines if self._message(line) is not None]
        path.write_bytes(b"".join(kept))


class JsonStore(_PlainStore):
    """The naive store many bots use today: ``json.loads`` on every line of the whole file.

    It accepts what the standard library accepts: ``NaN``, duplicate keys and lone surrogates.
    """

    _parse = staticmethod(json.loads)

    def append(self, key: str, message: dict[str, Any]) -> None:
        """Append one line; a torn last line is not checked for, as in most such stores."""
        with open(self._path(key), "a", encoding="utf-8") as f:
            f.write(json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n")


class OrjsonStore(_PlainStore):
    """The fastest store plain Python gets to: ``orjson.loads`` on every line.

    orjson already refuses ``NaN``, invalid UTF-8 and lone surrogates; it keeps the last of
    duplicate keys where turnlog drops the line.
    """

    _parse = staticmethod(orjson.loads)

    def append(self, key: str, message: dict[str, Any]) -> None:
        """Append one line with ``O_APPEND``, starting a new line after a torn one."""
        line = orjson.dumps(message) + b"\n"
        fd = os.open(self._path(key), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
        finally:
            os.close(fd)


def split_decode(path: PathLike) -> list[str]:
    """The floor of a full load: read the bytes, split the lines, decode each to ``str``."""
    with open(path, "rb") as f:
        data = f.read()
    return [line.decode("utf-8", "replace") for line in data.split(b"\n")]


def copy_file(path: PathLike, target: PathLike) -> None:
    """The floor of ``compact``: copy the file as it is."""
    shutil.copyfile(path, target)
