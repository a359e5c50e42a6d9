"""The backends: every ``SessionBackend`` turnlog ships, and what they share.

- ``jsonl``: one append-only ``.jsonl`` transcript per session (the Rust store and its pure
  twin) with sidecar metadata.
- ``sqlite``: every session in one SQLite file.
- ``redis``: sessions in Redis (standalone or Cluster), sync and asyncio.

Shared by them: ``format`` (session keys and message lines, identical in every backend),
``files`` (the POSIX file primitives) and ``workspace`` (the ``sessions`` folder). Nothing here
imports a backend: ``import turnlog.backends`` loads neither sqlite3 nor redis-py.
"""
