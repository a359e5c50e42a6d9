"""An independent, spec-level model of the turnlog file format, and test helpers.

Nothing here uses ``turnlog.backends.format``: the line validator is a small hand-written JSON
parser that follows the contract (UTF-8, Unicode White_Space trimmed, one JSON object per line with
string ``role`` and ``content``, no duplicate keys, no lone surrogates, nesting at most 128, integer
literals of at most 4300 digits, no NaN/Infinity), and the file operations are written on lists of
lines. The tests compare both stores against it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

#: Unicode White_Space (PropList.txt), what Rust's ``str::trim`` removes.
WHITESPACE = "".join(
    map(
        chr,
        [
            *range(0x09, 0x0E),
            0x20,
            0x85,
            0xA0,
            0x1680,
            *range(0x2000, 0x200B),
            0x2028,
            0x2029,
            0x202F,
            0x205F,
            0x3000,
        ],
    )
)
MAX_DEPTH = 128
MAX_INT_DIGITS = 4300
MAX_NAME_BYTES = 249

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_SIMPLE_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


class Corrupt(Exception):
    """The line is not a valid message."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        if self.pos >= len(self.text):
            raise Corrupt("unexpected end")
        return self.text[self.pos]

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
            self.pos += 1

    def value(self, depth: int) -> Any:
        self.skip_ws()
        char = self._peek()
        if char == "{":
            return self.obj(depth + 1)
        if char == "[":
            return self.array(depth + 1)
        if char == '"':
            return self.string()
        for literal, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, self.pos):
                self.pos += len(literal)
                return result
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise Corrupt(f"unexpected {char!r}")
        self.pos = match.end()
        literal = match.group(0)
        if match.group(1) is None and match.group(2) is None:
            if len(literal.lstrip("-")) > MAX_INT_DIGITS:
                raise Corrupt("integer literal too long")
            return int(literal)
        return float(literal)  # may overflow to +-inf: that is allowed

    def obj(self, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise Corrupt("too deep")
        self.pos += 1
        result: dict[str, Any] = {}
        self.skip_ws()
        if self._peek() == "}":
            self.pos += 1
            return result
        while True:
            self.skip_ws()
            if self._peek() != '"':
                raise Corrupt("object key must be a string")
            key = self.string()
            if key in result:
                raise Corrupt("duplicate key")
            self.skip_ws()
            if self._peek() != ":":
                raise Corrupt("':' expected")
            self.pos += 1
            result[key] = self.value(depth)
            self.skip_ws()
            char = self._peek()
            self.pos += 1
            if char == "}":
                return result
            if char != ",":
                raise Corrupt("',' or '}' expected")

    def array(self, depth: int) -> list[Any]:
        if depth > MAX_DEPTH:
            raise Corrupt("too deep")
        self.pos += 1
        result: list[Any] = []
        self.skip_ws()
        if self._peek() == "]":
            self.pos += 1
            return result
        while True:
            result.append(self.value(depth))
            self.skip_ws()
            char = self._peek()
            self.pos += 1
            if char == "]":
                return result
            if char != ",":
                raise Corrupt("',' or ']' expected")

    def _hex4(self) -> int:
        match = _HEX4.match(self.text, self.pos)
        if match is None:
            raise Corrupt("bad \\u escape")
        self.pos = match.end()
        return int(match.group(0), 16)

    def string(self) -> str:
        self.pos += 1
        out = []
        while True:
            char = self._peek()
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                self.pos += 1
                escape = self._peek()
                self.pos += 1
                if escape in _SIMPLE_ESCAPES:
                    out.append(_SIMPLE_ESCAPES[escape])
                    continue
                if escape != "u":
                    raise Corrupt("bad escape")
                code = self._hex4()
                if 0xDC00 <= code <= 0xDFFF:
                    raise Corrupt("lone low surrogate")
                if 0xD800 <= code <= 0xDBFF:
                    if not self.text.startswith("\\u", self.pos):
                        raise Corrupt("lone high surrogate")
                    self.pos += 2
                    low = self._hex4()
                    if not 0xDC00 <= low <= 0xDFFF:
                        raise Corrupt("high surrogate without low")
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                out.append(chr(code))
            elif ord(char) < 0x20:
                raise Corrupt("control character in string")
            else:
                out.append(char)
                self.pos += 1


def decode_line(raw: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """``(stripped line, object)`` when line ``raw`` (no newline) is a valid message, else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip(WHITESPACE)
    parser = _Parser(text)
    try:
        if not text.startswith("{"):
            raise Corrupt("not an object")
        obj = parser.value(0)
        parser.skip_ws()
        if parser.pos != len(text):
            raise Corrupt("trailing characters")
    except Corrupt:
        return None
    if not isinstance(obj.get("role"), str) or not isinstance(obj.get("content"), str):
        return None
    return text.encode("utf-8"), obj


def is_valid(raw: bytes) -> bool:
    return decode_line(raw) is not None


def record_dict(obj: dict[str, Any]) -> dict[str, Any]:
    """The message dict in ``to_dict`` order: role, content, then the rest in file order."""
    result = {"role": obj["role"], "content": obj["content"]}
    result.update((k, v) for k, v in obj.items() if k not in ("role", "content"))
    return result


# --- file operations on bytes ------------------------------------------------------------------


def messages(data: bytes | None, limit: int | None = None) -> list[dict[str, Any]]:
    """The messages (as dicts) that ``load`` returns for a file holding ``data``."""
    if data is None or limit == 0:
        return []
    found = []
    for line in data.split(b"\n"):
        decoded = decode_line(line)
        if decoded is not None:
            found.append(record_dict(decoded[1]))
    return found if limit is None else found[-limit:]


def count(data: bytes | None) -> int:
    return len(messages(data))


def encode(message: dict[str, Any]) -> bytes:
    """The line that stores ``message`` (a dict with role and content first)."""
    text = json.dumps(record_dict(message), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def append(data: bytes | None, record: bytes) -> bytes:
    """The file after appending ``record`` (whole lines) to a file holding ``data``."""
    if not data:
        return record
    if not data.endswith(b"\n"):
        return data + b"\n" + record  # never glue onto a torn line
    return data + record


def _last_valid_index(lines: list[bytes]) -> int | None:
    for index in range(len(lines) - 1, -1, -1):
        if is_valid(lines[index]):
            return index
    return None


def remove_last(data: bytes | None) -> tuple[bool, bytes | None]:
    """``(removed?, new data)``: the newest valid line goes, with its own newline."""
    if data is None:
        return False, None
    lines = data.split(b"\n")
    index = _last_valid_index(lines)
    if index is None:
        return False, data
    if index == len(lines) - 1:  # no newline after it
        lines[index] = b""
    else:
        del lines[index]
    return True, b"\n".join(lines)


def update_last(data: bytes | None, record: bytes) -> tuple[bool, bytes | None]:
    """``(updated?, new data)``: the newest valid line is replaced by ``record``."""
    if data is None:
        return False, None
    lines = data.split(b"\n")
    index = _last_valid_index(lines)
    if index is None:
        return False, data
    assert record.endswith(b"\n") and record.count(b"\n") == 1
    if index == len(lines) - 1:
        lines[index : index + 1] = [record[:-1], b""]
    else:
        lines[index] = record[:-1]
    return True, b"\n".join(lines)


def compact(data: bytes | None) -> bytes | None:
    """Only the valid lines, stripped, each with a newline."""
    if data is None:
        return None
    kept = [decode_line(line) for line in data.split(b"\n")]
    return b"".join(k[0] + b"\n" for k in kept if k is not None)


# --- comparing values --------------------------------------------------------------------------


def canon(value: Any) -> Any:
    """A type-tagged form of a JSON value, so that ``1``, ``1.0``, ``True`` and ``-0.0`` differ
    and dict order counts."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", tuple(canon(item) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((key, canon(item)) for key, item in value.items()))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canon_messages(items) -> list[Any]:
    """``canon`` of each message (a ChatMessage or a dict), as ``to_dict`` orders it."""
    result = []
    for item in items:
        as_dict = item if isinstance(item, dict) else item.to_dict()
        result.append(canon(record_dict(as_dict)))
    return result


# --- the workspace -----------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: its type, mode, and bytes (files) or target (links)."""
    result: dict[str, Any] = {}
    if not os.path.lexists(root):
        return result
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(info.st_mode):
                result[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                result[rel] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                result[rel] = (
                    "file",
                    stat.S_IMODE(info.st_mode),
                    info.st_ino,
                    Path(path).read_bytes(),
                )
    return result


def session_path(store, key: str) -> Path:
    """Where ``store`` keeps session ``key`` (the format's documented file name)."""
    from turnlog.backends.format import key_to_name

    return Path(store.sessions_dir) / (key_to_name(key) + ".jsonl")


def read(store, key: str) -> bytes | None:
    path = session_path(store, key)
    return path.read_bytes() if path.exists() else None
