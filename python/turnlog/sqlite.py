"""Deprecated: ``turnlog.sqlite`` is now ``turnlog.backends.sqlite``.

This path keeps working for this release, with a ``DeprecationWarning``. Import
``SqliteSessionBackend`` from ``turnlog`` or ``turnlog.backends.sqlite`` instead.
"""

import warnings

from .backends.sqlite import DB_NAME, SCHEMA_VERSION, SqliteSessionBackend, fts5_available

__all__ = ["DB_NAME", "SCHEMA_VERSION", "SqliteSessionBackend", "fts5_available"]

warnings.warn(
    "turnlog.sqlite is deprecated: import from turnlog.backends.sqlite (or turnlog) instead",
    DeprecationWarning,
    stacklevel=2,
)
