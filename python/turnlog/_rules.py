"""The rules every backend shares, so each refuses bad input alike and answers alike: argument
checks (limits, durability, text, amounts, times), the turn states, how a search keyword splits
into words, and the order sessions are listed in.

This module sits on the bottom floor with the ``SessionBackend`` ABC and the data classes: it
imports nothing else of turnlog but those data classes.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Literal, NamedTuple

from ._types import SessionMetadata, SessionQuery

__all__ = [
    "MAX_LIMIT",
    "STATES",
    "WHITESPACE",
    "Durability",
    "Match",
    "SessionTimes",
    "by_activity",
    "check_amount",
    "check_context",
    "check_durability",
    "check_limit",
    "check_match",
    "check_query",
    "check_state",
    "check_text",
    "checked_times",
    "checked_utc",
    "earlier",
    "search_words",
]

#: The largest limit passed on to a backend: no session holds more messages, so a larger one
#: means all of them, and every backend's integers (the Rust store's, SQLite's, Redis's) take it.
MAX_LIMIT = 2**63 - 1

#: ``"process"``: a write survives the writer's crash (the kernel has it). ``"power"``: it also
#: survives power loss (file and directory are fsynced before the call returns).
Durability = Literal["process", "power"]

#: How ``search`` combines the words of a keyword: every word in one message, or any of them.
Match = Literal["all", "any"]

#: The turn states a session can be in.
STATES = ("idle", "running", "error")

#: Unicode White_Space, as Rust's ``str::trim`` and ``split_whitespace`` (and so ZeroClaw) see it:
#: what is stripped around a stored line, and what separates the words of a search keyword.
#: Python's own ``str.strip()`` also strips U+001C..U+001F, which Rust keeps.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WORDS = re.compile(f"[{re.escape(WHITESPACE)}]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def check_limit(limit: int | None) -> int | None:
    """``limit``, at most ``MAX_LIMIT``, if it is ``None`` or a non-negative int."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    return min(limit, MAX_LIMIT)


def check_durability(durability: object) -> Durability:
    if durability == "process" or durability == "power":
        return durability
    raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")


def check_text(value: object, what: str, *, optional: bool = False) -> str | None:
    """``value`` if it is a str (or ``None`` when ``optional``) that UTF-8 can hold."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        kind = "a str or None" if optional else "a str"
        raise TypeError(f"{what} must be {kind}, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must not contain lone surrogates") from None
    return value


def check_context(channel_id: object, room_id: object, sender_id: object) -> dict[str, str]:
    """The routing context fields that are given (not ``None``), each a str UTF-8 can hold."""
    given = {"channel_id": channel_id, "room_id": room_id, "sender_id": sender_id}
    return {
        name: checked
        for name, value in given.items()
        if (checked := check_text(value, name, optional=True)) is not None
    }


def check_amount(value: object, what: str) -> float:
    """``value`` as a float, if it is a finite number >= 0 (seconds, hours)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_state(state: object) -> str:
    """``state`` if it is one of ``STATES``."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    return state


def check_match(match: object) -> Match:
    """``match`` if it is ``"all"`` or ``"any"``."""
    if match == "all" or match == "any":
        return match
    raise ValueError(f"match must be 'all' or 'any', not {match!r}")


def check_query(query: object, match: object) -> tuple[str, int | None]:
    """The keyword (``""`` for none) and the checked limit of a ``search``.

    Raises:
        TypeError: ``query`` is not a ``SessionQuery``, or its keyword is not a str or None.
        ValueError: a negative limit, a keyword with lone surrogates, or ``match`` is not
            ``"all"`` or ``"any"``.
    """
    if not isinstance(query, SessionQuery):
        raise TypeError(f"query must be a SessionQuery, not {type(query).__name__}")
    check_match(match)
    keyword = check_text(query.keyword, "query.keyword", optional=True) or ""
    return keyword, check_limit(query.limit)


def checked_utc(when: object, what: str) -> datetime:
    """``when`` in UTC, if it is a timezone-aware ``datetime`` (the rule for every time a
    caller passes in).

    Raises:
        TypeError: ``when`` is not a ``datetime``.
        ValueError: ``when`` is naive: which zone it means would be a guess.
    """
    if not isinstance(when, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(when).__name__}")
    if when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {when!r}")
    try:
        return when.astimezone(timezone.utc)
    except OverflowError:  # datetime.min with a positive offset, say: before year 1 in UTC
        raise ValueError(f"{what} is out of range in UTC, got {when!r}") from None


_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


def earlier(when: datetime, seconds: float) -> datetime:
    """``when`` less ``seconds`` (a checked amount), or the oldest time there is when that would
    be before year 1: a cutoff nothing is older than, never an ``OverflowError``."""
    try:
        return when - timedelta(seconds=seconds)
    except OverflowError:
        return _OLDEST


class SessionTimes(NamedTuple):
    """The times ``set_session_times`` sets, checked and in UTC; ``None`` leaves one unchanged."""

    created_at: datetime | None
    last_activity: datetime | None
    turn_started_at: datetime | None


def checked_times(
    created_at: object, last_activity: object, turn_started_at: object
) -> SessionTimes:
    """The three times of ``set_session_times``, each through ``checked_utc`` under its own
    name; ``None`` stays ``None`` (leave it unchanged)."""
    given = {
        "created_at": created_at,
        "last_activity": last_activity,
        "turn_started_at": turn_started_at,
    }
    return SessionTimes(
        **{what: None if when is None else checked_utc(when, what) for what, when in given.items()}
    )


@functools.cache
def _rust_cases() -> tuple[dict[int, str], re.Pattern[str]]:
    """Rust's lower-case mapping (``_lower.PAIRS``), and a pattern that finds its characters."""
    from . import _lower

    table = {}
    for pair in _lower.PAIRS.split():
        point, lowered = pair.split(":")
        table[int(point, 16)] = "".join(chr(int(part, 16)) for part in lowered.split(","))
    return table, re.compile("[" + "".join(map(re.escape, map(chr, table))) + "]")


def lower(text: str) -> str:
    """``text`` lower-cased as the Rust store's search does (Rust's Unicode tables): Python's
    ``str.lower``, then Rust's mapping for what this Python's (older) tables leave upper-case,
    so every store matches the same messages."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    table, upper = _rust_cases()
    return lowered.translate(table) if upper.search(lowered) else lowered


def search_words(keyword: str) -> list[str]:
    """The lower-cased words of a search keyword, split on Unicode white space (as the Rust
    search splits it), without repeats."""
    return list(dict.fromkeys(lower(word) for word in _WORDS.split(keyword) if word))


def by_activity(sessions: list[SessionMetadata]) -> list[SessionMetadata]:
    """``sessions`` the most recently active first; ties by key."""
    return sorted(sessions, key=lambda m: (_EPOCH - (m.last_activity or _EPOCH), m.key))
