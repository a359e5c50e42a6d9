"""What both adapters need to keep framework data a turnlog line cannot hold as it is."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "is_line_safe"]


def is_line_safe(value: Any) -> bool:
    """Whether ``value`` is stored by a turnlog line exactly as it is: every key a ``str``
    (JSON would make others strings) and no lone surrogate in any string (UTF-8 cannot hold
    one). Other values are for the encoder to accept or refuse."""
    if isinstance(value, str):
        return not _has_surrogate(value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and not _has_surrogate(key) and is_line_safe(item)
            for key, item in value.items()
        )
    if isinstance(value, (list, tuple)):
        return all(is_line_safe(item) for item in value)
    return True


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def dumps(value: Any) -> str:
    """``value`` as compact JSON text a turnlog line can hold: non-ASCII as it is, unless the
    value holds a lone surrogate, which is then kept as a ``\\uXXXX`` escape (and comes back
    from ``json.loads``), as the frameworks' own JSON stores keep it.

    Raises:
        TypeError: a value JSON cannot represent. ValueError: NaN or an infinity.
    """
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if _has_surrogate(text):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text
