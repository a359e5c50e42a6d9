"""Process bodies for ``test_sqlite`` and ``test_migrate`` (importable in "spawn" children)."""

from __future__ import annotations

import traceback


def remove_last_many(workspace, key, count, barrier, results):
    """Call ``remove_last`` ``count`` times once every process is ready; report the results."""
    try:
        from turnlog.backends.sqlite import SqliteSessionBackend

        backend = SqliteSessionBackend(workspace)
        backend.load(key, limit=1)  # connect before the start line
        barrier.wait()
        results.put(("ok", [backend.remove_last(key) for _ in range(count)]))
        backend.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))


def append_many_numbered(workspace, key, writer, count, barrier, results):
    """Append ``count`` numbered messages, mixing ``append`` and ``append_many``."""
    try:
        from turnlog.backends.sqlite import SqliteSessionBackend

        backend = SqliteSessionBackend(workspace)
        barrier.wait()
        for seq in range(0, count, 2):
            backend.append(key, {"role": "user", "content": f"w{writer}-{seq}"})
            backend.append_many(key, [{"role": "user", "content": f"w{writer}-{seq + 1}"}])
        results.put(("ok", writer))
        backend.close()
    except BaseException:
        results.put(("error", traceback.format_exc()))


def migrate_forever(source_workspace, target_workspace):
    """Migrate a JSONL workspace into SQLite (the test kills this process part way)."""
    from turnlog import SessionStore, migrate
    from turnlog.backends.sqlite import SqliteSessionBackend

    migrate(SessionStore(source_workspace), SqliteSessionBackend(target_workspace))
