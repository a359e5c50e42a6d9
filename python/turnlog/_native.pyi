"""Type stubs of the native module ``turnlog._native`` (built from ``rust/py/``)."""

from collections.abc import Iterable
from typing import Any, final

from typing_extensions import disjoint_base

__all__ = [
    "ChatMessage",
    "JsonlStore",
    "__version__",
    "_parse_block",
    "parse_lines",
    "zeroclaw_name",
]

__version__: str

@disjoint_base
class ChatMessage:
    """One chat message: a ``role``, a ``content`` string, and any extra top-level fields."""

    role: str
    content: str
    __hash__: None  # type: ignore[assignment]

    def __new__(cls, role: str, content: str, **extra: Any) -> ChatMessage: ...
    @property
    def extra(self) -> dict[str, Any]: ...
    @extra.setter
    def extra(self, value: dict[str, Any]) -> None: ...
    @classmethod
    def from_dict(cls, data: Any) -> ChatMessage: ...
    @classmethod
    def system(cls, content: str) -> ChatMessage: ...
    @classmethod
    def user(cls, content: str) -> ChatMessage: ...
    @classmethod
    def assistant(cls, content: str) -> ChatMessage: ...
    @classmethod
    def tool(cls, content: str) -> ChatMessage: ...
    def to_dict(self) -> dict[str, Any]: ...
    def __eq__(self, value: object, /) -> Any: ...
    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]: ...

@final
class JsonlStore:
    """The Rust JSONL store over one sessions folder; see ``turnlog.SessionStore``."""

    def __new__(
        cls,
        sessions_dir: str,
        durable: bool,
        lock_timeout: float | None = None,
        zeroclaw_names: bool = False,
    ) -> JsonlStore: ...
    def load(
        self,
        key: str,
        limit: int | None = None,
        max_bytes: int | None = None,
        turns: Any = None,
    ) -> list[ChatMessage]: ...
    def append(
        self, key: str, message: ChatMessage | dict[str, Any], create: bool = True
    ) -> tuple[bool, bool] | None: ...
    def append_many(
        self, key: str, messages: list[ChatMessage | dict[str, Any]], create: bool = True
    ) -> tuple[bool, bool] | None: ...
    def remove_last(self, key: str) -> bool: ...
    def pop_last(self, key: str) -> ChatMessage | None: ...
    def update_last(self, key: str, message: ChatMessage | dict[str, Any]) -> bool: ...
    def compact(self, key: str) -> None: ...
    def clear_messages(self, key: str) -> int: ...
    def delete_session(self, key: str) -> bool: ...
    def list_sessions(self) -> list[str]: ...
    def session_exists(self, key: str) -> bool: ...
    def search(self, keys: list[str], text: str, all: bool) -> list[str]: ...
    def stat(self, key: str) -> tuple[int, int] | None: ...

def parse_lines(lines: Iterable[bytes]) -> list[ChatMessage | None]:
    """Each line as one record: its message, or ``None`` when it is not a valid message."""

def _parse_block(block: bytes, wide_eighths: int) -> list[ChatMessage]:
    """The messages of ``block`` as a big load builds them, the contents of ``wide_eighths`` of
    every eight decoded to code points first where they are mostly not ASCII. For tests."""

def zeroclaw_name(key: str) -> str:
    """The file name (without ``.jsonl``) ZeroClaw gives session ``key``."""
