"""Real Redis servers for the tests: a standalone ``redis-server`` and a 3-master Cluster, each on
free loopback ports in a temporary folder, started and stopped by the test run itself.

``RedisServer(folder).start()`` runs ``redis-server`` on 127.0.0.1 with ``--save ""
--appendonly yes --appendfsync always`` (every acknowledged write is in the AOF on disk before the
reply), so ``stop()`` then ``start()`` again on the same folder is a restart that must lose
nothing acknowledged. ``RedisCluster(folder).start()`` runs three ``--cluster-enabled yes`` servers
and joins them with ``redis-cli --cluster create ... --cluster-replicas 0``.

``unavailable(reason)`` skips a test when no server can be started, unless ``CI`` is set: then it
fails, so CI never skips the Redis tests silently. ``shared_server()`` is one standalone server
per test process (stopped at exit), for the shared backend tests.

Also the process bodies of the concurrent ``remove_last`` test and of the restart test
(importable in "spawn" children).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 15.0


def in_ci() -> bool:
    return bool(os.environ.get("CI", "").strip())


def unavailable(reason: str) -> None:
    """Skip (outside CI) or fail (under CI) a test that needs a Redis server it cannot have."""
    if in_ci():
        pytest.fail(f"{reason}; CI is set, so the Redis tests must run", pytrace=False)
    pytest.skip(f"{reason} (and CI is unset, so the Redis tests are skipped)")


def server_binary() -> str | None:
    return shutil.which("redis-server")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port nobody listens on (and, ``with_bus``, port + 10000 too: a Cluster node's
    bus port)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if not with_bus:
            return port
        if port + 10000 <= 65535 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair found")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a loopback port, its data in ``folder``."""

    def __init__(self, folder: Path, port: int | None = None, *extra: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server")
        return [
            binary,
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--logfile",
            str(self.folder / "redis.log"),
            *self.extra,
        ]

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.folder / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.02)
        return self

    def shutdown(self) -> None:
        """``SHUTDOWN`` (the server flushes its AOF and exits), and wait for the process."""
        if self.process is None:
            return
        with (
            contextlib.suppress(OSError),
            socket.create_connection((HOST, self.port), timeout=2) as connection,
        ):
            connection.sendall(b"SHUTDOWN\r\n")
            connection.recv(64)
        self._wait()

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything not already on disk."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self._wait()

    def _wait(self) -> None:
        assert self.process is not None
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    stop = shutdown


class RedisCluster:
    """Three ``--cluster-enabled`` masters on loopback ports, joined by ``redis-cli``."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.folder = Path(folder)
        self.nodes: list[RedisServer] = []
        for index in range(size):
            port = free_port(with_bus=True)
            self.nodes.append(
                RedisServer(
                    self.folder / f"node{index}",
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--appendfsync",
                    "everysec",
                )
            )

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli")
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"{HOST}:{node.port}" for node in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while not all(self._ok(cli, node.port) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _ok(cli: str, port: int) -> bool:
        info = subprocess.run(
            [cli, "-h", HOST, "-p", str(port), "cluster", "info"],
            capture_output=True,
            timeout=10,
        )
        return b"cluster_state:ok" in info.stdout

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


# --- one server per test process, for the shared backend tests ----------------------------------

_shared: RedisServer | None = None
_shared_error: str | None = None


def shared_server() -> RedisServer:
    """A standalone server for this test process, started on first use and stopped at exit;
    skips (fails under CI) when none can be started."""
    global _shared, _shared_error
    if _shared is None and _shared_error is None:
        if server_binary() is None:
            _shared_error = "redis-server is not installed (apt-get install redis-server)"
        else:
            folder = tempfile.mkdtemp(prefix="turnlog-redis-")
            try:
                _shared = RedisServer(Path(folder)).start()
            except (OSError, RuntimeError) as error:
                _shared_error = f"cannot start redis-server: {error}"
            else:
                atexit.register(_stop_shared, folder)
    if _shared is None:
        unavailable(_shared_error or "no Redis server")
    assert _shared is not None
    return _shared


def _stop_shared(folder: str) -> None:
    if _shared is not None:
        _shared.kill()
    shutil.rmtree(folder, ignore_errors=True)


# --- process bodies -----------------------------------------------------------------------------


def remove_worker(
    url: str, cluster: bool, prefix: str, key: str, calls: int, start: Any, results: Any
) -> None:
    """Call ``remove_last`` ``calls`` times once ``start`` is set; report the answers."""
    answers: list[bool] = []
    try:
        from turnlog.backends.redis import RedisSessionBackend

        with RedisSessionBackend(url, prefix=prefix, cluster=cluster) as backend:
            start.wait(30)
            for _ in range(calls):
                answers.append(backend.remove_last(key))
        results.put((os.getpid(), answers, None))
    except BaseException:
        results.put((os.getpid(), answers, traceback.format_exc()))


def message_text(writer: int, turn: int, kind: str) -> str:
    """The content of writer ``writer``'s message of ``turn``: ``kind`` ``m`` (kept) or ``r``
    (rolled back)."""
    return f"w{writer} {turn:06d} {kind}"


def restart_writer(url: str, prefix: str, me: int, writers: int, stop: Any, log: Any) -> None:
    """One chat worker of the restart test, until ``stop`` is set.

    Each turn it appends a message ``m`` to its own session ``w<me>``; every other turn it then
    appends a message ``r`` and rolls it back with ``remove_last``. Between turns it sets the
    turn state of its neighbour's session, so other clients write to every session between a
    write and redis-py's resend of it. redis-py retries on connection errors (the server is
    killed and restarted meanwhile); a call that still fails is not acknowledged, and the worker
    goes on with new messages (it never sends one again). Each acknowledged operation is reported
    on ``log`` as soon as it returns: ``("m" | "rolled", me, turn)``; then ``("done", me,
    retried connection errors)``, or ``("error", me, traceback)``.
    """
    try:
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        from turnlog import ChatMessage
        from turnlog.backends.redis import RedisSessionBackend, RedisUnavailableError

        retried = 0

        class CountingRetry(Retry):
            """Retry, counting the connection errors after which redis-py retried (its copies
            in every connection count here too)."""

            def call_with_retry(
                self, do: Any, fail: Any, is_retryable: Any = None, with_failure_count: bool = False
            ) -> Any:
                def failed(error: Exception, *count: int) -> Any:
                    nonlocal retried
                    retried += 1
                    return fail(error, *count)

                return super().call_with_retry(do, failed, is_retryable, with_failure_count)

        retry = CountingRetry(ExponentialBackoff(cap=0.05, base=0.005), 200)
        session, neighbour = f"w{me}", f"w{(me + 1) % writers}"
        with RedisSessionBackend(url, prefix=prefix, retry=retry, socket_timeout=10) as backend:
            turn = 0
            while not stop.is_set():
                turn += 1
                try:
                    backend.append(session, ChatMessage.user(message_text(me, turn, "m")))
                    log.put(("m", me, turn))
                    if turn % 2 == 0:
                        text = message_text(me, turn, "r")
                        backend.append(session, ChatMessage.assistant(text))
                        # The session's newest message is that r: only this worker appends here.
                        if backend.remove_last(session):
                            log.put(("rolled", me, turn))
                    backend.set_session_state(neighbour, "running" if turn % 2 else "idle")
                except RedisUnavailableError:
                    time.sleep(0.01)  # not acknowledged: the next turn sends new messages
        log.put(("done", me, retried))
    except BaseException:
        log.put(("error", me, traceback.format_exc()))
