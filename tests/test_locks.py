"""Locking across the two stores and across processes, checked by order of events, not time.

A store operation is held inside its locked section by the fault shim (``FS_BLOCK``: the
driver process stops at its first write, rename or ftruncate on the sessions folder until the
test lets it go). Meanwhile the other store's call must be *waiting for the lock*, which the
kernel shows in ``/proc/locks``, and must not have touched the file; once released, its effect
comes after the holder's. With the holder SIGKILLed instead, the waiter goes on at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import threading
import time
from pathlib import Path

import pytest

import _fault_driver as fd
import _lock_workers
import _spec
from _faultshim import driver, faultshim  # noqa: F401  (faultshim is a fixture)
from conftest import require_native, store_class

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

COMPACTIONS = int(os.environ.get("TURNLOG_LOCK_COMPACTIONS", "2000"))
WRITE, RENAME, FTRUNCATE = 1, 4, 8
# scenario of _fault_driver: the call it is held at
HOLDERS = {
    "append": WRITE,
    "append_many": WRITE,
    "compact": RENAME,
    "update_last": RENAME,
    "remove_last_rewrite": RENAME,
    "remove_last_truncate": FTRUNCATE,
    "clear_messages": FTRUNCATE,
}
LATE = {"role": "user", "content": "waited for the lock", "late": True}


def waiters_on(path: Path) -> int:
    """How many flock requests on ``path``'s file are blocked now (``->`` in /proc/locks)."""
    inode = os.stat(path).st_ino
    count = 0
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            blocked = "->" in fields and fields[fields.index("->") + 1] == "FLOCK"
            if blocked and int(fields[-3].rsplit(":", 1)[1]) == inode:
                count += 1
    return count


def wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


class Holder:
    """A driver process inside ``scenario``'s locked section, stopped at its first ``kind``
    call on the sessions folder."""

    def __init__(self, shim, impl, scenario, workspace):
        self.ready_r, ready_w = os.pipe()
        go_r, self.go_w = os.pipe()
        config = {
            "impl": impl,
            "durability": "process",
            "scenario": scenario,
            "workspace": str(workspace),
            "mode": fd.BLOCK,
            "kinds": HOLDERS[scenario],
            "target": 1,
            "ready_fd": ready_w,
            "go_fd": go_r,
        }
        self.process = driver(shim, config, pass_fds=(ready_w, go_r))
        os.close(ready_w)
        os.close(go_r)
        assert os.read(self.ready_r, 1) == b"R", self.process.communicate()  # it is held now

    def release(self) -> dict:
        os.write(self.go_w, b"G")
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err.decode()[-2000:]
        return json.loads(out.decode().splitlines()[-1])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=60)
        assert self.process.returncode == -signal.SIGKILL

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        for fd_ in (self.ready_r, self.go_w):
            os.close(fd_)


def in_thread(call):
    """Run ``call()`` in a thread; returns ``(thread, outcome)`` with outcome filled in."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = call()
        except BaseException as error:  # reported by the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("scenario", sorted(HOLDERS))
@pytest.mark.parametrize("waiter", ["rust", "pure"])
@pytest.mark.parametrize("holder", ["rust", "pure"])
def test_the_stores_exclude_each_other(faultshim, holder, waiter, scenario, tmp_path):  # noqa: F811
    require_native()
    workspace = tmp_path / "ws"
    store = store_class(waiter)(workspace)
    path = _spec.session_path(store, fd.KEY)
    held = Holder(faultshim, holder, scenario, workspace)
    try:
        before = fd.state_before(scenario)
        assert path.read_bytes() == before  # held before it changed anything
        thread, outcome = in_thread(lambda: store.append(fd.KEY, LATE))
        wait_for(lambda: waiters_on(path) == 1, "the append waits for the lock")
        assert path.read_bytes() == before and not outcome  # it waits, untouched
        reader, read = in_thread(lambda: store.load(fd.KEY, limit=1))  # a shared lock waits too
        wait_for(lambda: waiters_on(path) == 2, "the tail read waits for the lock")
        full_reader, full = in_thread(lambda: store.load(fd.KEY))  # so does a full load
        wait_for(lambda: waiters_on(path) == 3, "the full load waits for the lock")
        assert not read and not full
        result = held.release()
    finally:
        held.close()
    thread.join(30)
    reader.join(30)
    full_reader.join(30)
    assert result["ok"], result
    assert outcome == {"result": None}
    returned, after = fd.expected_after(scenario)
    assert result["returned"] == returned
    # The waiting append came after the holder's operation, in the file it left.
    assert path.read_bytes() == _spec.append(after, _spec.encode(LATE))
    # The tail read waited for the holder too, and then read the file it had opened: changed
    # in place (write, ftruncate), it shows the change (and perhaps the append, also locked);
    # replaced by a rename, it is the old file, whole: a snapshot from before the rewrite.
    last = _spec.canon_messages(read["result"])
    allowed = [fd.spec_messages(after, 1), _spec.canon_messages([LATE])]
    if HOLDERS[scenario] == RENAME:
        allowed.append(fd.spec_messages(before, 1))
    assert last in allowed
    # The full load alike, whole: never a mix of the file before and after the change.
    everything = _spec.canon_messages(full["result"])
    if HOLDERS[scenario] == RENAME:
        assert everything == fd.spec_messages(before)
    else:
        after_messages = fd.spec_messages(after)
        assert everything in (after_messages, after_messages + _spec.canon_messages([LATE]))


@pytest.mark.parametrize("scenario", ["append", "compact", "remove_last_truncate"])
@pytest.mark.parametrize("holder", ["rust", "pure"])
def test_a_killed_holder_blocks_nobody(faultshim, holder, scenario, tmp_path):  # noqa: F811
    require_native()
    workspace = tmp_path / "ws"
    waiter = "pure" if holder == "rust" else "rust"
    store = store_class(waiter)(workspace)
    path = _spec.session_path(store, fd.KEY)
    held = Holder(faultshim, holder, scenario, workspace)
    try:
        thread, outcome = in_thread(lambda: store.append(fd.KEY, LATE))
        wait_for(lambda: waiters_on(path) == 1, "the append waits for the lock")
        assert not outcome
        held.kill()  # dies holding the lock, mid-operation
    finally:
        held.close()
    thread.join(30)
    assert outcome == {"result": None}
    # The holder was stopped before changing the file: the append lands after the old bytes.
    assert path.read_bytes() == _spec.append(fd.state_before(scenario), _spec.encode(LATE))
    for cls in (store_class("rust"), store_class("pure")):
        assert cls(workspace).list_sessions() == [fd.KEY]  # a stray temp file is not a session


def test_many_compactions_under_concurrent_appends(tmp_path):
    """``COMPACTIONS`` rewrites (Rust and pure in turn, each with junk to drop) while a Rust and
    a pure writer append: every acknowledged message is there once, in order."""
    require_native()
    workspace = str(tmp_path / "ws")
    store = store_class("rust")(workspace)
    key = "compact/me"
    store.append(key, {"role": "system", "content": "start"})
    path = str(_spec.session_path(store, key))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start, stop = context.Event(), context.Event()
    processes = [
        context.Process(
            target=_lock_workers.appender,
            args=(impl, workspace, key, w, start, stop, results),
        )
        for w, impl in enumerate(["rust", "pure"])
    ]
    processes.append(
        context.Process(
            target=_lock_workers.compactor,
            args=(workspace, path, key, COMPACTIONS, start, stop, results),
        )
    )
    try:
        for process in processes:
            process.start()
        start.set()
        reports = [results.get(timeout=280) for _ in processes]
    except queue.Empty:  # pragma: no cover - reported below
        reports = []
    finally:
        stop.set()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    assert len(reports) == 3, "a worker did not report"
    acked = {}
    for kind, who, count, error in reports:
        assert error is None, error
        if kind == "appender":
            acked[who] = count
        else:
            assert who == COMPACTIONS
    store.compact(key)
    lines = Path(path).read_bytes().split(b"\n")
    assert lines.pop() == b""
    assert lines[0] == b'{"role":"system","content":"start"}'
    seen: dict[int, list[str]] = {0: [], 1: []}
    for line in lines[1:]:
        decoded = _spec.decode_line(line)
        assert decoded is not None and _spec.encode(decoded[1]) == line + b"\n", line
        seen[decoded[1]["w"]].append(decoded[1]["content"])
    assert seen == {w: [f"w{w}-{i}" for i in range(acked[w])] for w in (0, 1)}
    assert min(acked.values()) > 100  # the appends really ran alongside
    print(f"\n{COMPACTIONS} compactions, {sum(acked.values())} appends, nothing lost")
