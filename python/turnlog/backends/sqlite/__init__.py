"""``SqliteSessionBackend``: every session in ``<workspace>/sessions/sessions.db`` (SQLite, WAL).

>>> from turnlog.backends.sqlite import SqliteSessionBackend

Also ``turnlog.SqliteSessionBackend``. See ``docs/SQLITE.md``. The modules: ``backend`` (the
class), ``schema`` (tables, rows, times), ``connection`` (a connection per thread, transactions)
and ``search`` (the FTS5 index and the search queries).
"""

from .backend import SqliteSessionBackend
from .schema import DB_NAME, SCHEMA_VERSION, fts5_available

__all__ = ["DB_NAME", "SCHEMA_VERSION", "SqliteSessionBackend", "fts5_available"]
