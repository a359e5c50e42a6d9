"""``RedisSessionBackend`` next to the JSONL store and ``SqliteSessionBackend``: ``append`` and
``load(limit=50)`` throughput from 1 and from 8 client processes, printed as a table.

Each client process works on a session of its own (the usual shape: one chat per worker at a
time). The Redis server is started by the benchmark on a free loopback port (AOF on,
``--appendfsync everysec`` by default: what the JSONL store's default ``durability="process"``
roughly compares with; ``--fsync always`` for per-write fsync), unless ``--url`` names one.

    PYTHONPATH=python .venv/bin/python benches/bench_redis.py            # about 30 seconds
    PYTHONPATH=python .venv/bin/python benches/bench_redis.py --quick    # a few seconds
    PYTHONPATH=python .venv/bin/python benches/bench_redis.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # redis_server.py: the tests' server helper

import turnlog  # noqa: E402
from corpus import _message  # noqa: E402
from redis_server import RedisServer, server_binary  # noqa: E402
from turnlog import ChatMessage, SessionBackend  # noqa: E402

TAIL = 50
#: Messages in each session before the load(limit=50) runs.
PREFILL = 1000


def open_backend(kind: str, where: str, prefix: str) -> SessionBackend:
    if kind == "jsonl":
        return turnlog.SessionStore(where)
    if kind == "sqlite":
        from turnlog.backends.sqlite import SqliteSessionBackend

        return SqliteSessionBackend(where)
    from turnlog.backends.redis import RedisSessionBackend

    return RedisSessionBackend(where, prefix=prefix)


def close(backend: SessionBackend) -> None:
    closer = getattr(backend, "close", None)
    if closer is not None:
        closer()


def worker(
    kind: str, where: str, prefix: str, op: str, key: str, count: int, barrier: Any, out: Any
) -> None:
    """Run ``count`` calls of ``op`` on ``key`` once every worker is ready; report the span."""
    rng = random.Random(key)
    backend = open_backend(kind, where, prefix)
    try:
        batch = [ChatMessage.from_dict(_message(rng)) for _ in range(count)]
        barrier.wait(60)
        start = time.monotonic()
        if op == "append":
            for message in batch:
                backend.append(key, message)
        else:
            for _ in range(count):
                assert len(backend.load(key, limit=TAIL)) == TAIL
        out.put((start, time.monotonic()))
    finally:
        close(backend)


def run(kind: str, where: str, op: str, clients: int, total: int) -> float:
    """Calls per second of ``op`` by ``clients`` processes making ``total`` calls in all."""
    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    keys = [f"client{i}" for i in range(clients)]
    if op == "load":
        backend = open_backend(kind, where, prefix)
        rng = random.Random(1)
        try:
            for key in keys:
                backend.append_many(
                    key, [ChatMessage.from_dict(_message(rng)) for _ in range(PREFILL)]
                )
        finally:
            close(backend)
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(clients), context.Queue()
    each = total // clients
    processes = [
        context.Process(
            target=worker, args=(kind, where, prefix, op, key, each, barrier, out), daemon=True
        )
        for key in keys
    ]
    for process in processes:
        process.start()
    spans = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(60)
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    if kind == "redis":  # leave a server given by --url as it was
        import redis

        with redis.Redis.from_url(where) as client:
            # Every key of the run: the sessions, and the records of their writes' results
            # (which delete_session keeps, to recognise resends).
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
    return each * clients / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--url", help="use this Redis server instead of starting one")
    parser.add_argument("--fsync", choices=["everysec", "always"], default="everysec")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    total = 800 if args.quick else 4000

    scratch = Path(tempfile.mkdtemp(prefix="turnlog-bench-redis-"))
    server = None
    try:
        if args.url:
            url = args.url
        else:
            if server_binary() is None:
                sys.exit(
                    "redis-server is not installed (apt-get install redis-server) and no --url"
                )
            server = RedisServer(scratch / "redis", None, "--appendfsync", args.fsync).start()
            url = server.url
        kinds = [("jsonl", f"JSONL ({turnlog.IMPLEMENTATION})"), ("redis", "Redis")]
        if importlib.util.find_spec("turnlog.backends.sqlite") is not None:
            kinds.insert(1, ("sqlite", "SQLite"))
        fsync = "" if args.url else f" (AOF, appendfsync {args.fsync})"
        print(f"{total} calls per row; Redis at {url}{fsync}; one session per client\n")
        print(f"{'operation':<18} {'clients':>7}  {'backend':<14} {'calls/s':>10} {'us/call':>9}")
        for op in ("append", "load"):
            label = "append" if op == "append" else f"load(limit={TAIL})"
            for clients in args.clients:
                for kind, name in kinds:
                    where = url if kind == "redis" else str(scratch / f"{kind}-{op}-{clients}")
                    rate = run(kind, where, op, clients, total)
                    print(
                        f"{label:<18} {clients:>7}  {name:<14} {rate:>10,.0f} {1e6 / rate:>9.1f}",
                        flush=True,
                    )
    finally:
        if server is not None:
            server.kill()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
