"""Argument checks shared by every backend, so each refuses bad input alike."""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "MAX_LIMIT",
    "Durability",
    "check_amount",
    "check_durability",
    "check_limit",
    "check_text",
]

#: The largest limit passed on to a backend: no session holds more messages, so a larger one
#: means all of them, and every backend's integers (the Rust store's, SQLite's, Redis's) take it.
MAX_LIMIT = 2**63 - 1

#: ``"process"``: a write survives the writer's crash (the kernel has it). ``"power"``: it also
#: survives power loss (file and directory are fsynced before the call returns).
Durability = Literal["process", "power"]


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


def check_amount(value: object, what: str) -> float:
    """``value`` as a float, if it is a finite number >= 0 (seconds, hours)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)
