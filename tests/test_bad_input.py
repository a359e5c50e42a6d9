"""Every wrong call gets a clear exception and leaves every byte of the workspace as it was."""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import resource
import signal
import warnings
from decimal import Decimal

import pytest

from _spec import read, snapshot
from turnlog import ChatMessage

U = ChatMessage.user

GOOD = {"role": "user", "content": "fine"}


def nested_list(depth, leaf=0):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_dict(depth):
    value = {}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


@pytest.fixture
def populated(store, tmp_path):
    """A store whose workspace holds some sessions, corrupt lines and a torn tail included."""
    store.append("s", U("one"))
    store.append("s", ChatMessage("assistant", "two", name="bot"))
    with open(os.path.join(store.sessions_dir, "s.jsonl"), "ab") as f:
        f.write(b'junk\n{"role":"user","content":"three"}\n{"role":"us')
    store.append("a/b", U("other"))
    store.clear_messages("empty")
    store.append("empty", U("x"))
    store.clear_messages("empty")
    return store


def check_unchanged(tmp_path, exception, call):
    before = snapshot(tmp_path)
    with pytest.raises(exception) as info:
        call()
    assert snapshot(tmp_path) == before
    assert str(info.value)  # a message, not a bare exception
    return info.value


# --- session keys --------------------------------------------------------------------------------

BAD_KEYS = [
    (None, TypeError),
    (1, TypeError),
    (b"s", TypeError),
    (["s"], TypeError),
    ("", ValueError),
    ("\ud800", ValueError),
    ("a\udfffb", ValueError),
    ("a" * 250, ValueError),
    ("é" * 42, ValueError),  # 42 * 6 = 252 bytes of %XX
    ("/" * 84, ValueError),
    ("x" * 240 + "/" * 4, ValueError),  # 240 + 12 = 252
]

KEY_CALLS = {
    "load": lambda s, k: s.load(k),
    "load_limit": lambda s, k: s.load(k, limit=1),
    "append": lambda s, k: s.append(k, U("x")),
    "append_many": lambda s, k: s.append_many(k, [U("x")]),
    "append_many_empty": lambda s, k: s.append_many(k, []),
    "remove_last": lambda s, k: s.remove_last(k),
    "update_last": lambda s, k: s.update_last(k, U("x")),
    "compact": lambda s, k: s.compact(k),
    "clear_messages": lambda s, k: s.clear_messages(k),
    "delete_session": lambda s, k: s.delete_session(k),
    "session_exists": lambda s, k: s.session_exists(k),
    "get_session_metadata": lambda s, k: s.get_session_metadata(k),
    "load_with_timestamps": lambda s, k: s.load_with_timestamps(k),
}


@pytest.mark.parametrize(("key", "exception"), BAD_KEYS)
@pytest.mark.parametrize("method", sorted(KEY_CALLS))
def test_bad_key(populated, tmp_path, method, key, exception):
    check_unchanged(tmp_path, exception, lambda: KEY_CALLS[method](populated, key))


@pytest.mark.parametrize("key", ["a" * 249, "é" * 41, "/" * 83, "x" * 237 + "/" * 4])
def test_longest_keys_fit(store, key):
    store.append(key, U("x"))
    assert store.load(key) == [U("x")]
    assert store.list_sessions() == [key]


# --- messages ------------------------------------------------------------------------------------


def with_extra(**extra):
    return {"role": "user", "content": "x", **extra}


def message_with_extra(name, value):
    message = U("x")
    message.extra[name] = value
    return message


BAD_MESSAGES = [
    pytest.param(None, TypeError, id="None"),
    pytest.param(42, TypeError, id="int"),
    pytest.param("user: hi", TypeError, id="str"),
    pytest.param(["user", "hi"], TypeError, id="list"),
    pytest.param([("role", "user"), ("content", "hi")], TypeError, id="pairs"),
    pytest.param(b'{"role":"user","content":"x"}', TypeError, id="bytes"),
    pytest.param({"role": "user"}, ValueError, id="no-content"),
    pytest.param({"content": "x"}, ValueError, id="no-role"),
    pytest.param({}, ValueError, id="empty-dict"),
    pytest.param({"role": 1, "content": "x"}, TypeError, id="role-int"),
    pytest.param({"role": None, "content": "x"}, TypeError, id="role-None"),
    pytest.param({"role": "user", "content": b"x"}, TypeError, id="content-bytes"),
    pytest.param({"role": "user", "content": ["x"]}, TypeError, id="content-list"),
    pytest.param(with_extra(v=math.nan), ValueError, id="nan"),
    pytest.param(with_extra(v=math.inf), ValueError, id="inf"),
    pytest.param(with_extra(v=-math.inf), ValueError, id="-inf"),
    pytest.param(with_extra(v=[1, {"w": math.nan}]), ValueError, id="nested-nan"),
    pytest.param(with_extra(v=object()), TypeError, id="object"),
    pytest.param(with_extra(v={1, 2}), TypeError, id="set"),
    pytest.param(with_extra(v=b"bytes"), TypeError, id="bytes-value"),
    pytest.param(with_extra(v=1j), TypeError, id="complex"),
    pytest.param(with_extra(v=Decimal("1.5")), TypeError, id="decimal"),
    pytest.param(with_extra(v=[1, [object()]]), TypeError, id="nested-object"),
    pytest.param({"role": "user", "content": "x", 1: "y"}, TypeError, id="int-key"),
    pytest.param(with_extra(v={1: "y"}), TypeError, id="nested-int-key"),
    pytest.param(with_extra(v={None: "y"}), TypeError, id="nested-None-key"),
    pytest.param(message_with_extra("v", {(1, 2): "y"}), TypeError, id="msg-tuple-key"),
    pytest.param({"role": "user", "content": "a\ud800b"}, ValueError, id="surrogate-content"),
    pytest.param({"role": "\udc00", "content": "x"}, ValueError, id="surrogate-role"),
    pytest.param(with_extra(v="\ud83d"), ValueError, id="surrogate-extra"),
    pytest.param(with_extra(v=["ok", {"w": "\udfff"}]), ValueError, id="surrogate-nested"),
    pytest.param(with_extra(**{"k\ud800": 1}), ValueError, id="surrogate-extra-name"),
    pytest.param(with_extra(v={"\ud800": 1}), ValueError, id="surrogate-nested-key"),
    pytest.param(U("\ud800"), ValueError, id="surrogate-ChatMessage"),
    pytest.param(with_extra(v=nested_list(128)), ValueError, id="depth-129-list"),
    pytest.param(with_extra(v=nested_dict(128)), ValueError, id="depth-129-dict"),
    pytest.param(with_extra(v=nested_list(5000)), ValueError, id="depth-5001"),
    pytest.param(message_with_extra("role", "x"), ValueError, id="extra-role"),
    pytest.param(message_with_extra("content", "x"), ValueError, id="extra-content"),
    pytest.param(message_with_extra("v", math.nan), ValueError, id="msg-nan"),
    pytest.param(message_with_extra("v", object()), TypeError, id="msg-object"),
    pytest.param(message_with_extra(7, "x"), TypeError, id="msg-int-name"),
]


@pytest.mark.parametrize(("message", "exception"), BAD_MESSAGES)
def test_bad_message_append(populated, tmp_path, message, exception):
    check_unchanged(tmp_path, exception, lambda: populated.append("s", message))
    check_unchanged(tmp_path, exception, lambda: populated.append("new", message))
    assert not populated.session_exists("new")


@pytest.mark.parametrize(("message", "exception"), BAD_MESSAGES)
def test_bad_message_update_last(populated, tmp_path, message, exception):
    check_unchanged(tmp_path, exception, lambda: populated.update_last("s", message))


@pytest.mark.parametrize(("message", "exception"), BAD_MESSAGES)
def test_bad_message_append_many(populated, tmp_path, message, exception):
    batch = [U("a"), message, U("b")]
    check_unchanged(tmp_path, exception, lambda: populated.append_many("s", batch))
    check_unchanged(tmp_path, exception, lambda: populated.append_many("new", [message]))


@pytest.mark.parametrize("messages", [None, 42, U("x")])
def test_append_many_not_iterable(populated, tmp_path, messages):
    check_unchanged(tmp_path, TypeError, lambda: populated.append_many("s", messages))


def test_deepest_allowed_nesting(store):
    list_message = with_extra(v=nested_list(127))
    dict_message = with_extra(v=nested_dict(127))
    store.append("s", list_message)
    store.append("s", dict_message)
    assert store.load("s") == [
        ChatMessage.from_dict(list_message),
        ChatMessage.from_dict(dict_message),
    ]
    first_line = read(store, "s").split(b"\n")[0]
    assert (
        first_line == b'{"role":"user","content":"x","v":' + b"[" * 127 + b"0" + b"]" * 127 + b"}"
    )


@pytest.mark.parametrize("limit", [-1, True, "1", 2.0])
def test_bad_limit_changes_nothing(populated, tmp_path, limit):
    exception = ValueError if limit == -1 and type(limit) is int else TypeError
    check_unchanged(tmp_path, exception, lambda: populated.load("s", limit=limit))


# --- the workspace -------------------------------------------------------------------------------


def test_workspace_is_a_file(store_cls, tmp_path):
    path = tmp_path / "ws"
    path.write_bytes(b"not a folder")
    check_unchanged(tmp_path, NotADirectoryError, lambda: store_cls(path))
    check_unchanged(tmp_path, NotADirectoryError, lambda: store_cls(str(path)))


def test_sessions_is_a_file(store_cls, tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "sessions").write_bytes(b"x")
    check_unchanged(tmp_path, NotADirectoryError, lambda: store_cls(tmp_path / "ws"))


@pytest.mark.parametrize(("workspace", "exception"), [("", ValueError), (42, TypeError)])
def test_bad_workspace(store_cls, tmp_path, workspace, exception):
    check_unchanged(tmp_path, exception, lambda: store_cls(workspace))


def test_bytes_workspace(store_cls, tmp_path):
    check_unchanged(tmp_path, TypeError, lambda: store_cls(os.fsencode(tmp_path / "ws")))


# --- permissions ---------------------------------------------------------------------------------

_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_dac_capabilities():
    """Drop root's power to ignore file permissions (this process only)."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    mask = ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)) & 0xFFFFFFFF
    data[0].effective &= mask
    data[0].permitted &= mask
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def run_in_child(function, prepare):
    """``("ok", result)`` or ``("error", exception)`` of ``function()``, run in a forked child
    after ``prepare()`` (which may raise OSError: then the test is skipped)."""
    if not hasattr(os, "fork"):
        pytest.skip("needs fork()")
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                prepare()
            except OSError as error:
                result = ("cannot-prepare", repr(error))
            else:
                try:
                    result = ("ok", function())
                except Exception as error:
                    result = ("error", error)
            try:
                payload = pickle.dumps(result)
            except Exception as error:
                payload = pickle.dumps(("error", RuntimeError(repr(error))))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    result = pickle.loads(payload)
    if result[0] == "cannot-prepare":
        pytest.skip(f"cannot set up the child process: {result[1]}")
    return result


def run_without_permission_override(function):
    """``function()``'s result or exception, run where file permissions apply.

    As an ordinary user that is this process. Root ignores permissions, so then ``function`` runs
    in a forked child that first drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
    """
    if os.geteuid() != 0:
        try:
            return ("ok", function())
        except Exception as error:
            return ("error", error)
    return run_in_child(function, _drop_dac_capabilities)


def test_permission_control_case(store_cls, tmp_path):
    # The same set-up without the read-only bit succeeds: the failures below are permissions.
    (tmp_path / "rw").mkdir()
    result = run_without_permission_override(
        lambda: store_cls(tmp_path / "rw" / "ws").list_sessions()
    )
    assert result == ("ok", [])


def test_workspace_in_read_only_folder(store_cls, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    os.chmod(parent, 0o500)
    try:
        before = snapshot(tmp_path)
        kind, value = run_without_permission_override(lambda: store_cls(parent / "ws"))
        assert kind == "error"
        assert isinstance(value, PermissionError)
        assert snapshot(tmp_path) == before
    finally:
        os.chmod(parent, 0o700)


def test_read_only_sessions_folder(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    store.append("s", U("a"))
    path = os.path.join(store.sessions_dir, "s.jsonl")
    with open(path, "ab") as f:
        f.write(b"junk\n")
    os.chmod(store.sessions_dir, 0o500)
    try:
        before = snapshot(tmp_path)
        for call in (
            lambda: store_cls(tmp_path / "ws").compact("s"),
            lambda: store_cls(tmp_path / "ws").append("new", U("b")),
            lambda: store_cls(tmp_path / "ws").update_last("s", U("b")),
        ):
            kind, value = run_without_permission_override(call)
            assert kind == "error"
            assert isinstance(value, PermissionError), value
            assert snapshot(tmp_path) == before
        kind, value = run_without_permission_override(lambda: store_cls(tmp_path / "ws").load("s"))
        assert (kind, value) == ("ok", [U("a")])
    finally:
        os.chmod(store.sessions_dir, 0o700)


def test_read_only_transcript(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    store.append("s", U("a"))
    path = os.path.join(store.sessions_dir, "s.jsonl")
    os.chmod(path, 0o400)
    before = snapshot(tmp_path)
    kind, value = run_without_permission_override(
        lambda: store_cls(tmp_path / "ws").append("s", U("b"))
    )
    assert kind == "error"
    assert isinstance(value, PermissionError), value
    assert snapshot(tmp_path) == before


# --- a write that fails half-way -----------------------------------------------------------------


def _file_size_limit(limit):
    def prepare():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return prepare


BIG = U("x" * 300)

FAILING_WRITES = {
    # name: (call, file size limit relative to the current size or absolute)
    "append": (lambda s: s.append("s", BIG), "grow"),
    "append_many": (lambda s: s.append_many("s", [U("small"), BIG, BIG]), "grow"),
    "append_new_session": (lambda s: s.append("new", BIG), "grow"),
    "update_last": (lambda s: s.update_last("s", BIG), "small"),
    "compact": (lambda s: s.compact("s"), "small"),
    "remove_last_rewrite": (lambda s: s.remove_last("s"), "small"),
}


@pytest.mark.parametrize("operation", sorted(FAILING_WRITES))
def test_failed_write_changes_nothing(store_cls, tmp_path, operation):
    """A write cut short (here by RLIMIT_FSIZE: EFBIG) raises OSError and leaves no trace: the
    file is cut back to its old length, a rewrite's temp file is removed."""
    store = store_cls(tmp_path / "ws")
    store.append_many("s", [U("first message, long enough"), U("second message")])
    with open(os.path.join(store.sessions_dir, "s.jsonl"), "ab") as f:
        f.write(b"  junk after the last message\n")
    size = os.path.getsize(os.path.join(store.sessions_dir, "s.jsonl"))
    call, kind = FAILING_WRITES[operation]
    limit = size + 40 if kind == "grow" else 20
    before = snapshot(tmp_path)
    result = run_in_child(lambda: call(store_cls(tmp_path / "ws")), _file_size_limit(limit))
    assert result[0] == "error", result
    assert isinstance(result[1], OSError), result[1]
    after = snapshot(tmp_path)
    # A failed first append may leave the new session's file behind, but only empty.
    new_file = after.pop(os.path.join("ws", "sessions", "new.jsonl"), None)
    assert new_file is None or (new_file[0], new_file[-1]) == ("file", b"")
    assert after == before
    # and without the limit the same call succeeds
    assert call(store_cls(tmp_path / "ws")) in (None, True)
