"""The file format, in pure Python: session-key encoding, line validation, message encoding.

This module is the reference for the format that ``docs/FORMAT.md`` describes. The Rust core
implements the same rules (``rust/keys.rs``, ``rust/record.rs``, ``rust/py/encode.rs``); the test
suite checks that both agree byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ._impl import ChatMessage

__all__ = [
    "MAX_DEPTH",
    "encode_message",
    "key_to_name",
    "name_to_key",
    "parse_line",
    "valid_text",
]

SUFFIX = ".jsonl"
#: Longest file name most filesystems take (ext4, xfs, btrfs, APFS), suffix included.
MAX_NAME_BYTES = 255 - len(SUFFIX)
#: Deepest nesting of objects and arrays in a line, the message object itself counting as 1.
MAX_DEPTH = 128
#: What ``str.strip`` removes around a line: Unicode White_Space, as Rust's ``str::trim`` (and so
#: ZeroClaw) does. Python's own ``str.strip()`` also strips U+001C..U+001F, which Rust keeps.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED_NAME = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")
# A \u escape of a UTF-16 surrogate; a match only means "look closer" (it may be a pair).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


# --- session keys -------------------------------------------------------------------------------


def key_to_name(key: object) -> str:
    """The file name (without ``.jsonl``) that holds session ``key``.

    Keys of ASCII letters, digits, ``_`` and ``-`` are their own name (ZeroClaw's files keep their
    names); in any other key each UTF-8 byte outside that set becomes ``%XX`` (upper-case hex), so
    the mapping is reversible, no two keys share a file, and no name starts with a dot.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is empty, holds a lone surrogate, or its name is too long.
    """
    if not isinstance(key, str):
        raise TypeError(f"session key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("session key must not be empty")
    if _PLAIN_KEY.fullmatch(key):
        name = key
    else:
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("session key must not contain lone surrogates") from None
        name = "".join(chr(b) if b in _PLAIN_BYTES else f"%{b:02X}" for b in raw)
    if len(name) > MAX_NAME_BYTES:
        raise ValueError(
            f"session key is too long: its file name needs {len(name)} bytes, "
            f"at most {MAX_NAME_BYTES} fit"
        )
    return name


def name_to_key(name: str) -> str | None:
    """The key whose file name (without suffix) is ``name``; ``None`` if no key maps to it."""
    if _PLAIN_KEY.fullmatch(name):
        return name if len(name) <= MAX_NAME_BYTES else None
    if not _ESCAPED_NAME.fullmatch(name) or len(name) > MAX_NAME_BYTES:
        return None
    raw = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "%":
            byte = int(name[i + 1 : i + 3], 16)
            if byte in _PLAIN_BYTES:
                return None  # not how key_to_name writes it: another key's name can't be this
            raw.append(byte)
            i += 3
        else:
            raw.append(ord(name[i]))
            i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- reading lines ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text``, skipping string contents."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def _decode(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """``(stripped line, object)`` if ``raw`` (a line, no newline) is a valid message."""
    try:
        text = raw.decode("utf-8").strip(WHITESPACE)
    except UnicodeDecodeError:
        return None
    if not text.startswith("{"):
        return None
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        return None
    try:
        obj = json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if type(obj.get("role")) is not str or type(obj.get("content")) is not str:
        return None
    if _SURROGATE_ESCAPE.search(text) is not None and _has_surrogate(obj):
        return None
    return text, obj


def parse_line(raw: bytes) -> ChatMessage | None:
    """The message on line ``raw`` (bytes without the newline), or ``None`` if it is corrupt."""
    decoded = _decode(raw)
    if decoded is None:
        return None
    obj = decoded[1]
    role = obj.pop("role")
    content = obj.pop("content")
    return ChatMessage(role, content, **obj)


def valid_text(raw: bytes) -> bytes | None:
    """Line ``raw`` stripped of surrounding white space if it is a valid message, else ``None``."""
    decoded = _decode(raw)
    return None if decoded is None else decoded[0].encode("utf-8")


# --- writing messages ---------------------------------------------------------------------------


def _check_value(value: Any, depth: int) -> None:
    """Refuse what would not read back as the same JSON: ``depth`` counts enclosing containers."""
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"message fields must be finite numbers, not {value!r}")
        return
    if isinstance(value, (list, tuple, dict)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"message is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(name, str):
                    raise TypeError(f"JSON object keys must be str, not {type(name).__name__}")
                _check_value(item, depth + 1)
        else:
            for item in value:
                _check_value(item, depth + 1)
        return
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def message_fields(message: object) -> tuple[str, str, dict[str, Any]]:
    """``(role, content, extra)`` of a ``ChatMessage`` or mapping, checked for writing."""
    if not isinstance(message, ChatMessage):
        if not isinstance(message, Mapping):
            raise TypeError(
                f"a message must be a ChatMessage or a mapping, not {type(message).__name__}"
            )
        message = ChatMessage.from_dict(message)
    role, content, extra = message.role, message.content, message.extra
    if not isinstance(role, str):
        raise TypeError(f"message role must be str, not {type(role).__name__}")
    if not isinstance(content, str):
        raise TypeError(f"message content must be str, not {type(content).__name__}")
    for name, value in extra.items():
        if not isinstance(name, str):
            raise TypeError(f"message field names must be str, not {type(name).__name__}")
        if name == "role" or name == "content":
            raise ValueError(f"message extra fields must not hold {name!r}")
        _check_value(value, 1)
    return role, content, extra


def encode_message(message: object) -> bytes:
    """The line (newline included) that stores ``message``: compact JSON, role and content first.

    Raises:
        TypeError: not a message, or a field that JSON cannot hold.
        ValueError: a missing role/content, a non-finite number, a lone surrogate, too deep nesting.
    """
    role, content, extra = message_fields(message)
    record: dict[str, Any] = {"role": role, "content": content}
    record.update(extra)
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("message must not contain lone surrogates") from None
