"""Process bodies for ``test_locks`` (importable by name in "spawn" children)."""

from __future__ import annotations

import time
import traceback

from _torture import locked_raw_append, open_store


def appender(impl, workspace, key, writer, start, stop, results):
    """Append numbered messages until ``stop``; report how many were acknowledged."""
    acked = 0
    try:
        store = open_store(impl, workspace)
        start.wait(30)
        while not stop.is_set():
            store.append(key, {"role": "user", "content": f"w{writer}-{acked}", "w": writer})
            acked += 1
            time.sleep(0.001)
        results.put(("appender", writer, acked, None))
    except BaseException:
        results.put(("appender", writer, acked, traceback.format_exc()))


def compactor(workspace, path, key, rounds, start, stop, results):
    """``rounds`` times: add a junk line (so the compaction must rewrite), then compact, with
    the Rust and the pure store in turn. Sets ``stop`` when done."""
    done = 0
    try:
        stores = [open_store("rust", workspace), open_store("pure", workspace)]
        start.wait(30)
        for done in range(1, rounds + 1):
            locked_raw_append(path, b"junk %d\n" % done)
            stores[done % 2].compact(key)
        results.put(("compactor", done, None, None))
    except BaseException:
        results.put(("compactor", done, None, traceback.format_exc()))
    finally:
        stop.set()
