"""Deprecated: ``turnlog.redis_backend`` is now ``turnlog.backends.redis``.

This path keeps working for this release, with a ``DeprecationWarning``.
"""

import warnings

from .backends.redis import (
    DEFAULT_PREFIX,
    AsyncRedisSessionBackend,
    RedisSessionBackend,
    RedisUnavailableError,
)

__all__ = [
    "DEFAULT_PREFIX",
    "AsyncRedisSessionBackend",
    "RedisSessionBackend",
    "RedisUnavailableError",
]

warnings.warn(
    "turnlog.redis_backend is deprecated: import from turnlog.backends.redis instead",
    DeprecationWarning,
    stacklevel=2,
)
