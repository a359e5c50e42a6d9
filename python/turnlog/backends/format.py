"""The file format, in pure Python: session-key encoding, line validation, message encoding.

This module is the reference for the format that ``docs/FORMAT.md`` describes. The Rust core
implements the same rules (``rust/keys.rs``, ``rust/record.rs``, ``rust/py/encode.rs``); the test
suite checks that both agree byte for byte.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .._impl import ChatMessage, native
from .._rules import WHITESPACE

__all__ = [
    "MAX_DEPTH",
    "encode_message",
    "key_to_name",
    "name_to_key",
    "parse_line",
    "valid_text",
    "zeroclaw_key",
    "zeroclaw_name",
]

SUFFIX = ".jsonl"
#: Longest file name most filesystems take (ext4, xfs, btrfs, APFS), suffix included.
MAX_NAME_BYTES = 255 - len(SUFFIX)
#: Deepest nesting of objects and arrays in a line, the message object itself counting as 1.
MAX_DEPTH = 128
#: Longest integer literal, in digits: CPython's default conversion limit, fixed here.
MAX_INT_DIGITS = 4300

# CPython's int(str) and str(int) obey sys.set_int_max_str_digits, a process-wide setting (640
# digits at the least); pieces of this many digits convert under any setting, so the format's
# own limit holds in every process.
_INT_PIECE = 600
_INT_PIECE_SCALE = 10**_INT_PIECE
_INT_TOO_BIG = 10**MAX_INT_DIGITS

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED_NAME = re.compile(r"(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+")
# A \u escape of a UTF-16 surrogate; a match only means "look closer" (it may be a pair).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_T = TypeVar("_T")


# --- session keys -------------------------------------------------------------------------------


def _checked_key(key: object) -> str:
    """``key``, if it is a non-empty str (``TypeError``, ``ValueError`` otherwise)."""
    if not isinstance(key, str):
        raise TypeError(f"session key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("session key must not be empty")
    return key


def _fitting(name: str, size: int) -> str:
    """``name`` (``size`` bytes), if it fits in a file name."""
    if size > MAX_NAME_BYTES:
        raise ValueError(
            f"session key is too long: its file name needs {size} bytes, "
            f"at most {MAX_NAME_BYTES} fit"
        )
    return name


def key_to_name(key: object) -> str:
    """The file name (without ``.jsonl``) that holds session ``key``.

    Keys of ASCII letters, digits, ``_`` and ``-`` are their own name (ZeroClaw's files keep their
    names); in any other key each UTF-8 byte outside that set becomes ``%XX`` (upper-case hex), so
    the mapping is reversible, no two keys share a file, and no name starts with a dot.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is empty, holds a lone surrogate, or its name is too long.
    """
    key = _checked_key(key)
    if _PLAIN_KEY.fullmatch(key):
        name = key
    else:
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("session key must not contain lone surrogates") from None
        name = "".join(chr(b) if b in _PLAIN_BYTES else f"%{b:02X}" for b in raw)
    return _fitting(name, len(name))


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


@functools.cache
def _alnum_ranges() -> tuple[list[int], list[int]]:
    """Starts and ends of the non-ASCII ranges ZeroClaw keeps (``_alnum.RANGES``), for bisect."""
    from . import _alnum

    pairs = [part.split("-") for part in _alnum.RANGES.split()]
    return [int(start, 16) for start, _ in pairs], [int(end, 16) for _, end in pairs]


def _zeroclaw_keeps(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in "_-"
    starts, ends = _alnum_ranges()
    at = bisect.bisect_right(starts, ord(char)) - 1
    return at >= 0 and ord(char) <= ends[at]


_ZEROCLAW_ASCII_OTHER = re.compile(r"[^A-Za-z0-9_-]")


def zeroclaw_name(key: object) -> str:
    """The file name (without ``.jsonl``) ZeroClaw gives session ``key``: every character that
    is not alphanumeric (Rust's Unicode-aware ``char::is_alphanumeric``), ``_`` or ``-`` becomes
    ``_``. Lossy: ``a:b``, ``a/b`` and ``a_b`` share a name. ``rust/keys.rs`` does the same.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is empty, holds a lone surrogate, or its name is too long.
    """
    key = _checked_key(key)
    if key.isascii():
        name = _ZEROCLAW_ASCII_OTHER.sub("_", key)
    else:
        if has_surrogate(key):
            raise ValueError("session key must not contain lone surrogates")
        name = "".join(char if _zeroclaw_keeps(char) else "_" for char in key)
    return _fitting(name, len(name.encode("utf-8")))


def is_zeroclaw_name(name: str) -> bool:
    """Whether ``name`` (a file name without suffix) is one ZeroClaw writes: a key that
    ``zeroclaw_name`` leaves as it is."""
    try:
        return zeroclaw_name(name) == name
    except ValueError:
        return False


def zeroclaw_key(name: str) -> str | None:
    """The key a store with ZeroClaw's names lists for the file ``name`` (without suffix): the
    name itself, as ZeroClaw lists it; ``None`` for a name ZeroClaw never writes."""
    return name if is_zeroclaw_name(name) else None


# --- reading lines ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_int(literal: str) -> int:
    digits = literal.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise ValueError(f"integer literal of more than {MAX_INT_DIGITS} digits")
    if len(digits) <= _INT_PIECE:
        return int(literal)
    value = 0
    for start in range(0, len(digits), _INT_PIECE):
        piece = digits[start : start + _INT_PIECE]
        value = value * 10 ** len(piece) + int(piece)
    return -value if literal.startswith("-") else value


def _int_text(value: int) -> str:
    if -_INT_PIECE_SCALE < value < _INT_PIECE_SCALE:
        return int.__repr__(value)
    magnitude, pieces = abs(int(value)), []
    while magnitude:
        magnitude, piece = divmod(magnitude, _INT_PIECE_SCALE)
        pieces.append(piece)
    head, *rest = reversed(pieces)
    text = int.__repr__(head) + "".join(f"{piece:0{_INT_PIECE}d}" for piece in rest)
    return "-" + text if value < 0 else text


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def nesting_depth(text: str) -> int:
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


def has_surrogate(value: Any) -> bool:
    """Whether ``value`` (a str, or lists and dicts of them) holds a lone surrogate."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(has_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def _on_a_fresh_stack(call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)`` in a new thread, where Python's recursion depth starts from nothing.

    Decoding and checking are recursive, one level per nesting level of the message (at most
    ``MAX_DEPTH``): called from deep in a caller's stack they could hit the recursion limit, and
    a valid message would read as corrupt (and ``compact`` delete it). They are retried here,
    so the answer never depends on the caller's stack depth.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as error:  # handed to the caller's thread
            outcome.append((False, error))

    thread = threading.Thread(target=run, name="turnlog-deep-message")
    thread.start()
    thread.join()
    done, value = outcome[0]
    if not done:
        raise value
    return value  # type: ignore[no-any-return]


def _decode(raw: bytes, fresh_stack: bool = False) -> tuple[str, dict[str, Any]] | None:
    """``(stripped line, object)`` if ``raw`` (a line, no newline) is a valid message."""
    try:
        return _decode_line(raw)
    except RecursionError:
        # Nested at most MAX_DEPTH levels (deeper is refused before): the caller's stack was
        # deep. On a fresh stack it cannot happen again; if it does, the line is refused.
        return None if fresh_stack else _on_a_fresh_stack(_decode, raw, True)


def _decode_line(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    try:
        text = raw.decode("utf-8").strip(WHITESPACE)
    except UnicodeDecodeError:
        return None
    if not text.startswith("{"):
        return None
    if text.count("{") + text.count("[") > MAX_DEPTH and nesting_depth(text) > MAX_DEPTH:
        return None
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if type(obj.get("role")) is not str or type(obj.get("content")) is not str:
        return None
    if _SURROGATE_ESCAPE.search(text) is not None and has_surrogate(obj):
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


def parse_lines(lines: Iterable[bytes]) -> list[ChatMessage | None]:
    """Each of ``lines`` as one record (a newline inside one is white space): its message, or
    ``None`` if it is corrupt. The Rust parser does it when the native module is in use."""
    if native is not None:
        return native.parse_lines(lines)  # type: ignore[no-any-return]
    return [parse_line(line) for line in lines]


def valid_text(raw: bytes) -> bytes | None:
    """Line ``raw`` stripped of surrounding white space if it is a valid message, else ``None``."""
    decoded = _decode(raw)
    return None if decoded is None else decoded[0].encode("utf-8")


# --- writing messages ---------------------------------------------------------------------------


def _check_value(value: Any, depth: int) -> bool:
    """Refuse what would not read back as the same JSON: ``depth`` counts enclosing containers.

    Returns whether ``value`` holds an int too long for ``json.dumps`` under every setting.
    """
    if value is None or isinstance(value, (str, bool)):
        return False
    if isinstance(value, int):
        if not -_INT_TOO_BIG < value < _INT_TOO_BIG:
            raise ValueError(
                f"message fields must not hold integers of more than {MAX_INT_DIGITS} digits"
            )
        return not -_INT_PIECE_SCALE < value < _INT_PIECE_SCALE
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"message fields must be finite numbers, not {value!r}")
        return False
    if isinstance(value, (list, tuple, dict)):
        if depth >= MAX_DEPTH:
            raise ValueError(f"message is nested deeper than {MAX_DEPTH} levels")
        long_int = False
        if isinstance(value, dict):
            for name, item in value.items():
                if not isinstance(name, str):
                    raise TypeError(f"JSON object keys must be str, not {type(name).__name__}")
                long_int = _check_value(item, depth + 1) or long_int
        else:
            for item in value:
                long_int = _check_value(item, depth + 1) or long_int
        return long_int
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` for checked values,
    writing long ints itself; used only for messages that hold one."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, dict):
        fields = (json.dumps(k, ensure_ascii=False) + ":" + _dumps(v) for k, v in value.items())
        return "{" + ",".join(fields) + "}"
    return "[" + ",".join(_dumps(item) for item in value) + "]"


def message_fields(message: object) -> tuple[str, str, dict[str, Any], bool]:
    """``(role, content, extra, holds_long_int)`` of a ``ChatMessage`` or mapping, checked for
    writing."""
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
    long_int = False
    for name, value in extra.items():
        if not isinstance(name, str):
            raise TypeError(f"message field names must be str, not {type(name).__name__}")
        if name == "role" or name == "content":
            raise ValueError(f"message extra fields must not hold {name!r}")
        long_int = _check_value(value, 1) or long_int
    return role, content, extra, long_int


def encode_message(message: object, fresh_stack: bool = False) -> bytes:
    """The line (newline included) that stores ``message``: compact JSON, role and content first.

    Raises:
        TypeError: not a message, or a field that JSON cannot hold.
        ValueError: a missing role/content, a non-finite number, a lone surrogate, too deep nesting.
    """
    try:
        return _encode(message)
    except RecursionError:  # the caller's stack was deep: see _on_a_fresh_stack
        if fresh_stack:
            raise ValueError(f"message is nested deeper than {MAX_DEPTH} levels") from None
        return _on_a_fresh_stack(encode_message, message, True)


def _encode(message: object) -> bytes:
    role, content, extra, long_int = message_fields(message)
    record: dict[str, Any] = {"role": role, "content": content}
    record.update(extra)
    if long_int:
        text = _dumps(record)
    else:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("message must not contain lone surrogates") from None
