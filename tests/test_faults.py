"""Fault injection: every write, fsync, rename and ftruncate a store operation makes on the
sessions folder is made to fail (EIO, ENOSPC), to be short, or to start a full or dead disk, one
call index at a time, until the operation succeeds.

Each (store, durability, scenario, fault) runs in a subprocess with ``tests/faults/faultshim.so``
preloaded (``_fault_driver.py``, a fresh workspace and store per call index). For every index:

- the store never reports success unless the file holds exactly what the operation should
  leave; a short write is finished, not reported;
- a failure is a clear ``OSError`` with the injected errno (not a crash, not a panic, not a
  swallowed error), and the file holds exactly its old bytes, or the new ones when only the
  folder's fsync after a rename/creation failed (or a dead disk made undoing impossible);
- no ``.turnlog-*.tmp`` is left, nothing else appears, both stores load the file, and the next
  append (by either store) lands intact after every earlier message.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import _fault_driver as fd
import _spec
from _faultshim import faultshim, run_driver  # noqa: F401  (faultshim is a fixture)
from conftest import store_class
from turnlog.backends.format import key_to_name

pytestmark = pytest.mark.timeout(300)

# name: (shim mode, errno)
FAULTS = {
    "eio": (fd.FAIL, errno.EIO),
    "enospc": (fd.FAIL, errno.ENOSPC),
    "short": (fd.SHORT, 0),
    "disk_full": (fd.SHORT_THEN, errno.ENOSPC),
    "dead_disk": (fd.STICKY, errno.EIO),
}
STRERROR = {errno.EIO: "Input/output error", errno.ENOSPC: "No space left on device"}
NAME = key_to_name(fd.KEY) + ".jsonl"
RECOVERY = {"role": "user", "content": "after the fault ✓"}

#: Runs (one per scenario, fault and call index) checked, and how many were disturbed.
FIGURES = {"runs": 0, "disturbed": 0}


@pytest.fixture(scope="module", autouse=True)
def report_figures():
    yield
    if FIGURES["runs"]:
        # Shown with `pytest -s`: the figures of docs/RELIABILITY.md.
        print(f"\nfault injection: {FIGURES['runs']} runs, {FIGURES['disturbed']} with a fault")


def shim_log(outcome) -> list[tuple[str, str, int]]:
    """``(call, path, result)`` of each call the shim counted, in order."""
    calls = []
    for line in outcome["log"].splitlines():
        _, call, rest = line.split(" ", 2)
        path, result = rest.rsplit(" ", 1)
        # ftruncate64 is ftruncate; fdatasync is a sync as fsync is (both are used).
        call = {"ftruncate64": "ftruncate", "fdatasync": "fsync"}.get(call, call)
        calls.append((call, path, int(result)))
    return calls


def failed_call(outcome) -> tuple[int, str, str] | None:
    """``(index, call, path)`` of the first call the shim made fail (negative result)."""
    for index, (call, path, result) in enumerate(shim_log(outcome)):
        if result < 0:
            return index, call, path
    return None


def expected(scenario: str) -> tuple[bytes | None, object, bytes | None]:
    """The session's bytes before the operation, what it returns and its bytes after."""
    return (fd.state_before(scenario), *fd.expected_after(scenario))


def check_outcome(outcome, scenario, fault, durability, store_classes):
    mode, code = FAULTS[fault]
    where = f"{scenario}/{fault}/{durability} at call {outcome['target']}: {outcome}"
    before, returned, after = expected(scenario)
    sessions = Path(outcome["workspace"]) / "sessions"
    path = sessions / NAME
    data = path.read_bytes() if path.exists() else None

    # Nothing but the session file: no temp file left, nothing visible as another session.
    assert sorted(os.listdir(sessions)) == ([NAME] if data is not None else []), where

    if not outcome["ok"]:
        assert outcome["injected"] > 0, where  # no failure without a fault
        assert outcome["is_oserror"], where  # an OSError, never a panic or another exception
        assert outcome["errno"] == code, where
        assert STRERROR[code] in outcome["message"], where
        failed = failed_call(outcome)
        assert failed is not None, where
        index, call, failed_path = failed
        done = [name for name, _, _ in shim_log(outcome)[:index]]
        if (call, failed_path) == ("fsync", str(sessions.resolve())):
            # The rename or creation is done; only making it durable failed: reported.
            assert data == after, where
        elif call == "fsync" and "ftruncate" in done:
            # A truncation in place (clear, remove_last of the last line) cannot be undone
            # once done; only making it durable failed: reported.
            assert data == after, where
        elif mode == fd.STICKY:
            # A dead disk may also refuse the undo (ftruncate): old bytes or new, nothing else.
            assert data in (before, after), where
        else:
            assert data == before, where
    else:
        # Success is only reported with everything written; a fault that was not a short
        # write must never be swallowed.
        assert outcome["returned"] == returned, where
        assert data == after, where
        assert outcome["injected"] == 0 or mode == fd.SHORT, where

    # Both stores read what is there; the next append lands intact after every message.
    present = fd.spec_messages(data)
    stores = [cls(outcome["workspace"]) for cls in store_classes]
    for store in stores:
        assert _spec.canon_messages(store.load(fd.KEY)) == present, where
        assert store.list_sessions() == ([fd.KEY] if data is not None else []), where
    writer = stores[outcome["target"] % len(stores)]
    writer.append(fd.KEY, RECOVERY)
    assert path.read_bytes() == _spec.append(data, _spec.encode(RECOVERY)), where
    for store in stores:
        got = _spec.canon_messages(store.load(fd.KEY))
        assert got == [*present, *_spec.canon_messages([RECOVERY])], where


@pytest.mark.parametrize("durability", ["process", "power"])
@pytest.mark.parametrize("scenario", sorted(fd.SCENARIOS))
def test_every_call_fails_cleanly(faultshim, impl, scenario, durability, tmp_path):  # noqa: F811
    store_classes = [store_class(impl), store_class("pure")]
    faults = list(FAULTS)
    if durability == "power":
        faults.remove("enospc")  # the same code paths as EIO; power adds only fsyncs

    def run(fault):
        mode, code = FAULTS[fault]
        config = {
            "impl": impl,
            "durability": durability,
            "scenario": scenario,
            "base": str(tmp_path / fault),
            "mode": mode,
            "errno": code,
        }
        return fault, run_driver(faultshim, config)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, faults))
    disturbed = 0
    for fault, outcomes in results:
        # The last run made fewer calls than its index: the unfaulted operation.
        assert outcomes[-1]["ok"] and outcomes[-1]["injected"] == 0, outcomes[-1]
        assert len(outcomes) == outcomes[-1]["calls"] + 1
        for outcome in outcomes:
            check_outcome(outcome, scenario, fault, durability, store_classes)
            disturbed += outcome["injected"] > 0
            FIGURES["runs"] += 1
            FIGURES["disturbed"] += outcome["injected"] > 0
    counted = results[0][1][-1]["calls"]
    if scenario != "delete_session" or durability == "power":
        assert counted > 0  # the shim saw the operation's calls
        assert disturbed > 0


def test_shim_counts_only_the_sessions_folder(faultshim, tmp_path):  # noqa: F811
    """The shim disturbs calls on the sessions folder only: the interpreter's own writes (its
    JSON output) pass, and a fault aimed past the last call changes nothing."""
    config = {
        "impl": "pure",
        "durability": "power",
        "scenario": "append",
        "workspace": str(tmp_path / "ws"),
        "mode": fd.FAIL,
        "errno": errno.EIO,
        "target": 1,
    }
    outcome = run_driver(faultshim, config)
    assert outcome["ok"] is False and outcome["errno"] == errno.EIO
    path = str((tmp_path / "ws/sessions" / NAME).resolve())
    # The failed write, then the cut back to the old length; no fsync of a failed write.
    assert shim_log(outcome) == [("write", path, -errno.EIO), ("ftruncate", path, 0)]
    outcome = run_driver(faultshim, {**config, "workspace": str(tmp_path / "ws2"), "target": 3})
    assert outcome["ok"] is True and outcome["injected"] == 0
    assert [call for call, _, _ in shim_log(outcome)] == ["write", "fsync"]
