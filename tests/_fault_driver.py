"""Store operations under an injected fault: run by ``test_faults`` and ``test_locks`` with
``tests/faults/faultshim.so`` preloaded (``LD_PRELOAD``).

    python _fault_driver.py '<json>'

With ``{"impl", "durability", "scenario", "workspace", "mode", "errno", "target"}`` the driver
writes the scenario's file (no fault armed), arms the shim on the sessions folder so that the
``target``-th write/fsync/rename/ftruncate there fails (or is short, or blocks), runs the
scenario's one operation, and prints one JSON line: what the operation returned or raised, how
many calls the shim counted and disturbed, and its log. With ``"base"`` instead of
``"workspace"`` and ``"target"`` it does that for every call index, each in a fresh workspace
``<base>/<index>``, until the operation succeeds unfaulted, and prints the list. The test then
reads the files itself.

Scenarios are in ``SCENARIOS``: the session's bytes before, the operation, and the bytes the
operation leaves when it succeeds (from ``_spec``, the independent model of the format).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _spec

# Modes of faultshim_arm (see faultshim.c).
FAIL, SHORT, SHORT_THEN, STICKY, BLOCK = range(5)
ALL_KINDS = 1 | 2 | 4 | 8
KEY = "s/1"

M1 = {"role": "user", "content": 'héllo "quoted"\n\ttab \\ back', "name": "bot"}
M2 = {"role": "assistant", "content": "ключ 😀 日本", "meta": {"tokens": [3, 4.5], "ok": True}}
# Bigger than the Rust rewrite's copy buffer (2 MiB) and BufWriter (1 MiB): several writes.
BIG = {"role": "tool", "content": "é" * 600_000 + "x" * 1_500_000}
NEW = {"role": "user", "content": "new ✓", "n": 7}
BATCH = [NEW, {"role": "assistant", "content": "two"}, {"role": "user", "content": "3", "x": [1]}]


def enc(message) -> bytes:
    return _spec.encode(message)


# name: (bytes before or None, operation, its argument); "prime" is an append that follows
# an append of M2 by the same store, unarmed.
SCENARIOS = {
    "append": (enc(M1) + enc(M2), "append", NEW),
    "append_new": (None, "append", NEW),
    # The Rust store keeps the file open after this append: the failing one uses that descriptor.
    "append_cached": (enc(M1), "prime", NEW),
    "append_torn": (enc(M1) + enc(M2) + enc(M1)[:12], "append", NEW),
    "append_big": (enc(M1), "append", BIG),
    "append_many": (enc(M1) + enc(M2), "append_many", BATCH),
    "update_last": (enc(M1) + enc(BIG) + enc(M2) + b"junk\n", "update_last", NEW),
    "compact": (enc(M1) + b"junk\n" + enc(BIG) + b"  " + enc(M2) + b"{tor", "compact", None),
    "remove_last_rewrite": (enc(M1) + enc(BIG) + enc(M2) + b"junk\n", "remove_last", None),
    "remove_last_truncate": (enc(M1) + enc(M2), "remove_last", None),
    "clear_messages": (enc(M1) + enc(M2), "clear_messages", None),
    "delete_session": (enc(M1) + enc(M2), "delete_session", None),
}


@functools.cache
def state_before(scenario: str) -> bytes | None:
    """The session's bytes when the armed operation starts."""
    before, operation, _ = SCENARIOS[scenario]
    return before + enc(M2) if operation == "prime" else before


@functools.cache
def expected_after(scenario: str) -> tuple[object, bytes | None]:
    """What the scenario's operation returns and leaves when it succeeds."""
    before, operation, argument = SCENARIOS[scenario]
    if operation == "prime":
        before, operation = before + enc(M2), "append"
    if operation == "append":
        return None, _spec.append(before, enc(argument))
    if operation == "append_many":
        return None, _spec.append(before, b"".join(map(enc, argument)))
    if operation == "update_last":
        return _spec.update_last(before, enc(argument))
    if operation == "remove_last":
        return _spec.remove_last(before)
    if operation == "compact":
        return None, _spec.compact(before)
    if operation == "clear_messages":
        return _spec.count(before), (b"" if before is not None else None)
    if operation == "delete_session":
        return before is not None, None
    raise AssertionError(scenario)


@functools.lru_cache(maxsize=64)
def spec_messages(data: bytes | None, limit: int | None = None) -> list:
    """``canon_messages(_spec.messages(data, limit))``: the independent parser is slow on the
    2 MB message, so once per distinct content."""
    return _spec.canon_messages(_spec.messages(data, limit))


def open_store(impl: str, workspace: str, durability: str):
    if impl == "rust":
        from turnlog.backends.jsonl.rust import SessionStore
    else:
        from turnlog.pure import SessionStore
    return SessionStore(workspace, durability=durability)


def shim():
    lib = ctypes.CDLL(None)  # the preloaded shim's symbols are in the global scope
    lib.faultshim_arm.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_long] + [ctypes.c_int] * 4
    lib.faultshim_arm.restype = None
    lib.faultshim_calls.restype = ctypes.c_long
    lib.faultshim_injected.restype = ctypes.c_long
    lib.faultshim_log.restype = ctypes.c_char_p
    return lib


def run(config: dict) -> dict:
    """Set up ``config["workspace"]``, arm the shim and run the scenario's operation once."""
    lib = shim()
    before, operation, argument = SCENARIOS[config["scenario"]]
    store = open_store(config["impl"], config["workspace"], config["durability"])
    path = _spec.session_path(store, KEY)
    if before is not None:
        path.write_bytes(before)
    if operation == "prime":
        store.append(KEY, M2)
        operation = "append"
    call = getattr(store, operation)
    args = (KEY,) if argument is None else (KEY, argument)
    lib.faultshim_arm(
        os.path.realpath(store.sessions_dir).encode(),
        config.get("kinds", ALL_KINDS),
        config["target"],
        config["mode"],
        config.get("errno", 0),
        config.get("ready_fd", -1),
        config.get("go_fd", -1),
    )
    outcome: dict = {"workspace": config["workspace"], "target": config["target"]}
    try:
        outcome["returned"] = call(*args)
        outcome["ok"] = True
    except BaseException as error:  # a panic is a BaseException: report it, do not die
        outcome["ok"] = False
        outcome["type"] = type(error).__name__
        outcome["is_oserror"] = isinstance(error, OSError)
        outcome["errno"] = getattr(error, "errno", None)
        outcome["message"] = str(error)
        outcome["traceback"] = traceback.format_exc()
    finally:
        lib.faultshim_disarm()
    outcome["calls"] = lib.faultshim_calls()
    outcome["injected"] = lib.faultshim_injected()
    outcome["log"] = lib.faultshim_log().decode("utf-8", "replace")
    return outcome


def run_every_index(config: dict) -> list[dict]:
    """``run`` with the fault on call 1, 2, ... (a fresh workspace ``<base>/<n>`` and store each
    time) until the operation makes fewer calls than the index: that last run is unfaulted."""
    outcomes = []
    for target in range(1, config.get("max_target", 200) + 1):
        workspace = os.path.join(config["base"], str(target))
        outcome = run({**config, "target": target, "workspace": workspace})
        outcomes.append(outcome)
        if outcome["calls"] < target:
            return outcomes
    raise AssertionError(f"the operation still made {outcome['calls']} calls at index {target}")


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    result = run_every_index(config) if "base" in config else run(config)
    sys.stdout.write(json.dumps(result) + "\n")
