"""The pure-Python ``ChatMessage``: used when the native module is absent or ``TURNLOG_PURE=1``.

The native module defines a class with the same behaviour (``turnlog._native.ChatMessage``), built
in Rust so that loading a million messages does not pay for a Python ``__init__`` per message.
``turnlog.ChatMessage`` is whichever of the two is in use, so every store returns the same class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ChatMessage"]


def _checked(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"ChatMessage {what} must be str, not {type(value).__name__}")
    return value


class ChatMessage:
    """One chat message: a ``role``, a ``content`` string, and any extra top-level fields.

    Args:
        role: Who spoke, e.g. ``"user"``, ``"assistant"``, ``"system"`` or ``"tool"``.
        content: The text of the message.
        **extra: Every other top-level field, kept in order (e.g. ``name="bot"``).

    Messages compare equal when role, content and extra fields are equal. They are mutable and
    therefore unhashable, like a non-frozen dataclass.
    """

    __slots__ = ("_content", "_extra", "_role")
    __hash__ = None  # type: ignore[assignment]

    _role: str
    _content: str
    _extra: dict[str, Any] | None

    def __init__(self, role: str, content: str, **extra: Any) -> None:
        self._role = _checked(role, "role")
        self._content = _checked(content, "content")
        self._extra = extra or None

    @property
    def role(self) -> str:
        """Who spoke, e.g. ``"user"``, ``"assistant"``, ``"system"`` or ``"tool"``."""
        return self._role

    @role.setter
    def role(self, value: str) -> None:
        self._role = _checked(value, "role")

    @property
    def content(self) -> str:
        """The text of the message."""
        return self._content

    @content.setter
    def content(self, value: str) -> None:
        self._content = _checked(value, "content")

    @property
    def extra(self) -> dict[str, Any]:
        """Every top-level field other than ``role`` and ``content`` (``{}`` when none)."""
        if self._extra is None:
            self._extra = {}
        return self._extra

    @extra.setter
    def extra(self, value: dict[str, Any]) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"ChatMessage extra must be a dict, not {type(value).__name__}")
        self._extra = value

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatMessage:
        """Build a message from a mapping with ``role`` and ``content`` and any other fields.

        Raises:
            TypeError: ``data`` is not a mapping, a key is not a str, or role/content is not a str.
            ValueError: ``role`` or ``content`` is missing.
        """
        if not isinstance(data, Mapping):
            raise TypeError(
                f"a message must be a ChatMessage or a mapping, not {type(data).__name__}"
            )
        extra: dict[str, Any] = {}
        for name, value in data.items():
            if not isinstance(name, str):
                raise TypeError(f"message field names must be str, not {type(name).__name__}")
            if name != "role" and name != "content":
                extra[name] = value
        for required in ("role", "content"):
            if required not in data:
                raise ValueError(f"message has no {required!r} field")
        return cls(data["role"], data["content"], **extra)

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        """A ``system`` message."""
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        """A ``user`` message."""
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> ChatMessage:
        """An ``assistant`` message."""
        return cls("assistant", content)

    @classmethod
    def tool(cls, content: str) -> ChatMessage:
        """A ``tool`` message."""
        return cls("tool", content)

    def to_dict(self) -> dict[str, Any]:
        """A new dict ``{"role": ..., "content": ..., **extra}``."""
        result: dict[str, Any] = {"role": self.role, "content": self.content}
        if self._extra:
            result.update(self._extra)
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatMessage):
            return NotImplemented
        return (
            self.role == other.role
            and self.content == other.content
            and (self._extra or {}) == (other._extra or {})
        )

    def __repr__(self) -> str:
        if self._extra:
            return (
                f"ChatMessage(role={self.role!r}, content={self.content!r}, extra={self._extra!r})"
            )
        return f"ChatMessage(role={self.role!r}, content={self.content!r})"

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return (type(self).from_dict, (self.to_dict(),))
