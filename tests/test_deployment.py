"""Where real deployments live: permissive umasks, workspaces other users can write, running out
of file descriptors, metadata that cannot be written, a full disk. Process-wide settings (umask,
descriptor limits, privileges) are changed in child processes only."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import in_ci, store_class
from turnlog import ChatMessage

U = ChatMessage.user
TESTS = Path(__file__).resolve().parent


def run_child(impl: str, code: str, *args: str, prefix: tuple[str, ...] = ()) -> str:
    """Run ``code`` in a fresh Python with ``Store`` the ``impl`` store; its stdout."""
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import store_class\n"
        f"Store = store_class({impl!r})\n" + textwrap.dedent(code)
    )
    done = subprocess.run(
        [*prefix, sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def needs_root() -> None:
    if os.geteuid() == 0:
        return
    if in_ci():
        pytest.fail("CI runs as root: this test changes owners and mounts", pytrace=False)
    pytest.skip("needs root (changes owners, mounts a tmpfs)")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- umask and who may write the workspace -------------------------------------------------------


def test_folders_are_owner_only_whatever_the_umask(impl, tmp_path):
    run_child(
        impl,
        """
        import os
        os.umask(0)
        store = Store(sys.argv[1])
        store.append("s", {"role": "user", "content": "hi"})
        store.set_session_name("s", "n")
        """,
        str(tmp_path / "a" / "ws"),
    )
    ws = tmp_path / "a" / "ws"
    for folder in (tmp_path / "a", ws, ws / "sessions", ws / ".turnlog", ws / ".turnlog" / "meta"):
        assert mode(folder) == 0o700, folder
    assert mode(ws / "sessions" / "s.jsonl") == 0o600
    assert mode(ws / ".turnlog" / "meta" / "s.json") == 0o600


@pytest.mark.parametrize("folder", ["ws", "ws/sessions"])
def test_a_workspace_other_users_can_write_is_refused(store_cls, tmp_path, folder):
    store_cls(tmp_path / "ws").append("s", U("mine"))
    os.chmod(tmp_path / folder, 0o777)
    with pytest.raises(PermissionError, match=r"writable by other users.*chmod go-w"):
        store_cls(tmp_path / "ws")
    os.chmod(tmp_path / folder, 0o755)  # readable by others is fine
    assert store_cls(tmp_path / "ws").load("s") == [U("mine")]


def test_a_swapped_sessions_folder_is_refused(store_cls, tmp_path):
    """Another user's folder put in place of ``sessions`` (a symlink): the bot would read the
    forged history and write its users' messages there."""
    store_cls(tmp_path / "ws").append("s", U("mine"))
    forged = tmp_path / "forged"
    forged.mkdir(mode=0o700)
    (forged / "s.jsonl").write_bytes(b'{"role":"user","content":"forged"}\n')
    os.rename(tmp_path / "ws" / "sessions", tmp_path / "real")
    os.symlink(forged, tmp_path / "ws" / "sessions")
    with pytest.raises(PermissionError, match="symlink"):
        store_cls(tmp_path / "ws")


def test_a_workspace_owned_by_another_user_is_refused(store_cls, tmp_path):
    needs_root()
    store_cls(tmp_path / "ws").append("s", U("mine"))
    os.chown(tmp_path / "ws", 65534, 65534)
    with pytest.raises(PermissionError, match="belongs to uid 65534"):
        store_cls(tmp_path / "ws")
    os.chown(tmp_path / "ws", 0, 0)  # root's is trusted, as ssh trusts it
    assert store_cls(tmp_path / "ws").load("s") == [U("mine")]


# --- an acknowledged write means stored, a failed one nothing stored ---------------------------


def test_a_first_append_whose_metadata_cannot_be_written_is_still_acknowledged(
    store_cls, tmp_path, caplog
):
    store = store_cls(tmp_path / "ws")
    shutil.rmtree(tmp_path / "ws" / ".turnlog")
    (tmp_path / "ws" / ".turnlog").write_bytes(b"")  # a file where the metadata folder goes
    with caplog.at_level(logging.WARNING, logger="turnlog"):
        store.append("s", U("hello"))  # no error: the message is stored, a retry would dup it
    assert store.load("s") == [U("hello")]
    assert any("metadata could not be written" in r.getMessage() for r in caplog.records)
    metadata = store.get_session_metadata("s")
    assert metadata.message_count == 1 and metadata.created_at is not None


def test_a_setter_that_cannot_write_metadata_leaves_no_session(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    shutil.rmtree(tmp_path / "ws" / ".turnlog")
    (tmp_path / "ws" / ".turnlog").write_bytes(b"")
    with pytest.raises(OSError):
        store.set_session_name("new", "a name")
    assert not store.session_exists("new")
    assert store.list_sessions() == []


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted (owner-only) at the new folder ``where`` (needs root)."""
    needs_root()
    where.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", where], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=True)


def test_a_full_disk_fails_the_write_and_stores_nothing(impl, tmp_path):
    with tmpfs(tmp_path / "small", "16k") as mount:
        out = run_child(
            impl,
            """
            store = Store(sys.argv[1])
            store.append("s", {"role": "user", "content": "first"})
            big = {"role": "user", "content": "x" * 64_000}
            for call in (lambda: store.append("s", big), lambda: store.append_many("s", [big])):
                try:
                    call()
                except OSError as error:
                    print("refused", error.errno)
            try:
                store.append("t", big)
            except OSError as error:
                print("refused new", error.errno)
            print([m.content for m in store.load("s")], store.session_exists("t"))
            """,
            str(mount / "ws"),
        )
    lines = out.splitlines()
    assert lines[:3] == ["refused 28", "refused 28", "refused new 28"]  # ENOSPC
    assert lines[3] == "['first'] False"


# --- out of file descriptors: an error, never an empty history -----------------------------------


def test_running_out_of_descriptors_raises_instead_of_reading_empty(impl, tmp_path):
    out = run_child(
        impl,
        """
        import errno, os, resource
        store = Store(sys.argv[1])
        store.append("s", {"role": "user", "content": "hi"})
        store.set_session_state("s", "running", "turn-1")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        hog = []
        try:
            while True:
                hog.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for name, call in (
            ("load", lambda: store.load("s")),
            ("tail", lambda: store.load("s", limit=1)),
            ("state", lambda: store.get_session_state("s")),
            ("metadata", lambda: store.get_session_metadata("s")),
        ):
            try:
                print(name, "returned", call())
            except OSError as error:
                print(name, "raised", errno.errorcode[error.errno])
        for fd in hog:
            os.close(fd)
        print("after", [m.content for m in store.load("s")], store.get_session_state("s").state)
        """,
        str(tmp_path / "ws"),
    )
    assert out.splitlines() == [
        "load raised EMFILE",
        "tail raised EMFILE",
        "state raised EMFILE",
        "metadata raised EMFILE",
        "after ['hi'] running",
    ]


def test_adapters_on_one_workspace_share_one_store(tmp_path):
    from turnlog.integrations._store import resolve_store

    first = resolve_store(None, tmp_path / "ws")
    assert resolve_store(None, str(tmp_path / "ws")) is first
    assert resolve_store(None, tmp_path / "ws" / ".." / "ws") is first
    assert resolve_store(None, tmp_path / "other") is not first


# --- one file this user cannot read ------------------------------------------------------------


def test_one_unreadable_transcript_does_not_break_search_or_listings(impl, tmp_path):
    from turnlog import SessionQuery

    store = store_class(impl)(tmp_path / "ws")
    for key in ("a", "b", "c"):
        store.append(key, U(f"hello from {key}"))
    os.chmod(store.transcript_path("b"), 0)
    os.chmod(tmp_path, 0o755)  # the ordinary user must reach the workspace
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("setpriv is needed to drop root's right to read any file")
    prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search") if setpriv else ()
    out = run_child(
        impl,
        """
        from turnlog import SessionQuery
        store = Store(sys.argv[1])
        print(sorted(m.key for m in store.search(SessionQuery("hello"))))
        print(sorted(m.key for m in store.search(SessionQuery(""))))
        print(sorted(m.key for m in store.list_sessions_with_metadata()))
        try:
            store.load("b")
        except PermissionError:
            print("load b raised PermissionError")
        """,
        str(tmp_path / "ws"),
        prefix=prefix,
    )
    assert out.splitlines() == [
        "['a', 'c']",
        "['a', 'c']",
        "['a', 'c']",
        "load b raised PermissionError",
    ]
    assert SessionQuery("hello").keyword == "hello"


def test_cleanup_stale_removes_temp_files_killed_rewrites_left(store_cls, tmp_path):
    store = store_cls(tmp_path / "ws")
    store.append("s", U("kept"))
    store.set_session_name("s", "n")
    sessions, meta = tmp_path / "ws" / "sessions", tmp_path / "ws" / ".turnlog" / "meta"
    old = [sessions / ".turnlog-00000000deadbeef.tmp", meta / ".turnlog-0badc0de.tmp"]
    fresh = sessions / ".turnlog-0000000000c0ffee.tmp"  # a rewrite in progress
    for path in [*old, fresh]:
        path.write_bytes(b"partial")
    for path in old:
        os.utime(path, (1, 1))
    assert store.cleanup_stale(24) == 0
    assert [path.exists() for path in old] == [False, False]
    assert fresh.exists()
    assert store.load("s") == [U("kept")] and store.get_session_name("s") == "n"


def test_a_failed_delete_changes_nothing(impl, tmp_path):
    """The transcript cannot be removed (its folder is read-only for this user): the error is
    raised and the session keeps its metadata (the sidecar used to go first)."""
    store = store_class(impl)(tmp_path / "ws")
    store.append("s", U("kept"))
    store.set_session_name("s", "still named")
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / "ws" / "sessions", 0o500)
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("setpriv is needed to drop root's right to write any folder")
    prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search") if setpriv else ()
    try:
        out = run_child(
            impl,
            """
            store = Store(sys.argv[1])
            try:
                store.delete_session("s")
            except PermissionError:
                print("refused")
            print(store.get_session_name("s"), [m.content for m in store.load("s")])
            """,
            str(tmp_path / "ws"),
            prefix=prefix,
        )
    finally:
        os.chmod(tmp_path / "ws" / "sessions", 0o700)
    assert out.splitlines() == ["refused", "still named ['kept']"]


def test_a_setter_racing_the_first_append_keeps_its_metadata(impl, tmp_path):
    """One process makes fresh sessions with their first append; as soon as each transcript
    appears, a second process names the session and starts its turn and a third appends to it.
    Every name and running state is kept: the creating append used to start the sidecar after
    its write, under a second lock, and wrote over the setter's when the third had written
    since."""
    keys = [f"chat{i}" for i in range(100)]
    store_class(impl)(tmp_path / "ws")  # the workspace, before the three race
    code = """
        import os, sys, time
        store = Store(sys.argv[1])
        keys = [f"chat{i}" for i in range(100)]

        def appeared(key):
            deadline = time.monotonic() + 60
            while not os.path.exists(store.transcript_path(key)):
                if time.monotonic() > deadline:
                    raise TimeoutError(key)

        if sys.argv[2] == "create":
            # The creator is slow right after its append's write (a busy machine deschedules it
            # there): whatever it still does for the session comes after the others' calls.
            finish = type(store)._appended

            def slowly(self, key, appended):
                time.sleep(0.02)
                finish(self, key, appended)

            type(store)._appended = slowly

        for key in keys:
            if sys.argv[2] == "create":
                store.append(key, {"role": "user", "content": "first"})
            elif sys.argv[2] == "set":
                appeared(key)
                store.set_session_name(key, "named " + key)
                store.set_session_state(key, "running", "turn-" + key)
            else:
                appeared(key)
                store.append(key, {"role": "user", "content": "second"})
        """
    script = (
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom conftest import store_class\n"
        f"Store = store_class({impl!r})\n" + textwrap.dedent(code)
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "ws"), role])
        for role in ("set", "append", "create")
    ]
    assert [racer.wait(120) for racer in racers] == [0, 0, 0]
    store = store_class(impl)(tmp_path / "ws")
    lost = [
        key
        for key in keys
        if store.get_session_name(key) != "named " + key
        or store.get_session_state(key).state != "running"
    ]
    assert lost == []
    assert all(U("first") in store.load(key) for key in keys)


def test_descriptors_are_bounded_per_process_not_per_store(impl, tmp_path):
    """A bot that builds one store per chat: a thousand stores, each appending to its chat,
    under a 256-descriptor limit. The Rust store's open-file cache is one per process (it was 16
    files per store, and a thousand stores ran out of descriptors)."""
    out = run_child(
        impl,
        """
        import os, resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        before = len(os.listdir("/proc/self/fd"))
        stores = []
        for chat in range(1000):
            store = Store(sys.argv[1])
            store.append(f"chat{chat}", {"role": "user", "content": "hi"})
            stores.append(store)
        print(len(os.listdir("/proc/self/fd")) - before <= 70, len(stores[0].list_sessions()))
        """,
        str(tmp_path / "ws"),
    )
    assert out.split() == ["True", "1000"]


def test_a_transcript_made_read_only_refuses_appends_in_both_stores(impl, tmp_path):
    """``chmod 0444`` on a transcript: the next append is refused by the Rust store as by the
    pure one (the Rust store used to go on through the descriptor it had kept open)."""
    os.chmod(tmp_path, 0o755)
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv is None:
        pytest.skip("setpriv is needed to drop root's right to write any file")
    prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search") if setpriv else ()
    out = run_child(
        impl,
        """
        import os
        store = Store(sys.argv[1])
        store.append("s", {"role": "user", "content": "a"})
        store.append("s", {"role": "user", "content": "b"})
        os.chmod(store.transcript_path("s"), 0o444)
        try:
            store.append("s", {"role": "user", "content": "c"})
        except PermissionError as error:
            print("refused", error.filename == store.transcript_path("s"))
        print([m.content for m in store.load("s")])
        """,
        str(tmp_path / "ws"),
        prefix=prefix,
    )
    assert out.splitlines() == ["refused True", "['a', 'b']"]


def test_a_bounded_lock_wait_raises_timeout_error_and_changes_nothing(store_cls, tmp_path):
    """A writer stopped while holding a session's lock (SIGSTOP, a debugger): with
    ``lock_timeout`` every call on that session gives up with ``TimeoutError``."""
    from turnlog.backends import files

    store = store_cls(tmp_path / "ws", lock_timeout=0.2)
    assert store.lock_timeout == 0.2
    store.append("s", U("a"))
    store.append("other", U("free"))
    calls = {
        "load": lambda: store.load("s"),
        "tail": lambda: store.load("s", limit=1),
        "append": lambda: store.append("s", U("b")),
        "remove_last": lambda: store.remove_last("s"),
        "pop_last": lambda: store.pop_last("s"),
        "compact": lambda: store.compact("s"),
        "set_session_name": lambda: store.set_session_name("s", "n"),
    }
    with files.locked(store.transcript_path("s"), create=False):  # the stopped writer
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                call()
            assert 0.15 <= time.monotonic() - started < 5, name
        assert store.load("other") == [U("free")]  # other sessions are not held up
    assert store.load("s") == [U("a")]  # nothing changed
    assert store.pop_last("s") == U("a")
    with pytest.raises(ValueError):
        store_cls(tmp_path / "ws", lock_timeout=-1)


def test_a_deeply_nested_message_is_valid_from_any_caller_stack_depth(store_cls, tmp_path):
    """A message nested 101 levels is valid (the limit is 128). Called from deep in a caller's
    stack, the pure store read it as corrupt (its recursive JSON parser hit the recursion limit),
    so ``compact`` deleted it and ``append`` raised ``RecursionError``."""
    import sys

    store = store_cls(tmp_path / "ws")
    nested: object = "bottom"
    for _ in range(100):
        nested = [nested]
    deep = {"role": "tool", "content": "deep", "tree": nested}

    def at_depth(frames: int, call):
        return call() if frames == 0 else at_depth(frames - 1, call)

    frames = sys.getrecursionlimit() - 80  # just enough room for the store's own calls
    at_depth(frames, lambda: store.append("s", deep))
    store.append("s", U("after"))
    assert [m.content for m in at_depth(frames, lambda: store.load("s"))] == ["deep", "after"]
    at_depth(frames, lambda: store.compact("s"))
    loaded = store.load("s")
    assert [m.content for m in loaded] == ["deep", "after"]
    assert loaded[0].extra["tree"] == nested


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_store_handed_to_spawn_and_forkserver_children_works_there(impl, tmp_path, method):
    """multiprocessing's other start methods pickle what a child gets: a store travels as what
    it was made with, and the child opens the workspace anew."""
    import multiprocessing
    import pickle

    from _spawn_worker import append_from_child

    store = store_class(impl)(tmp_path / "ws", lock_timeout=30.0)
    store.append("s", U("parent"))
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is type(store) and copy.lock_timeout == 30.0 and copy.names == "escaped"
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        counts = pool.starmap(append_from_child, [(store, "s", 25), (store, "s", 25)])
    assert max(counts) == 51
    assert store.load("s")[0] == U("parent") and len(store.load("s")) == 51


def test_a_clock_set_back_since_the_session_began(store_cls, tmp_path):
    """The session began while the clock was an hour ahead (then NTP stepped it back): it keeps
    the creation time it recorded (``created_at`` is kept, whatever the transcript's time does),
    and is neither stale nor stuck before its time, and its messages are all there."""
    import json
    from datetime import datetime, timedelta, timezone

    store = store_cls(tmp_path / "ws")
    store.set_session_state("s", "running", "t1")
    ahead = datetime.now(timezone.utc) + timedelta(hours=1)
    sidecar = tmp_path / "ws" / ".turnlog" / "meta" / "s.json"
    meta = json.loads(sidecar.read_text())
    meta.update(created_at=ahead.isoformat(), turn_started_at=ahead.isoformat())
    sidecar.write_text(json.dumps(meta))
    store.append("s", U("after the clock went back"))
    metadata = store.get_session_metadata("s")
    assert metadata.created_at == ahead and metadata.last_activity < ahead
    assert store.cleanup_stale(0.5) == 0 and store.list_stuck_sessions(60) == []
    assert store.load("s") == [U("after the clock went back")]


def test_a_workspace_on_another_filesystem(impl, tmp_path):
    """The workspace on a filesystem of its own (a tmpfs mount, as a container's volume is):
    rewrites, creation by link and the adoption of a ZeroClaw file stay within it."""
    with tmpfs(tmp_path / "volume", "4m") as mount:
        (mount / "ws" / "sessions").mkdir(parents=True, mode=0o700)
        (mount / "ws").chmod(0o700)
        (mount / "ws" / "sessions" / "a_b.jsonl").write_text('{"role":"user","content":"zc"}\n')
        out = run_child(
            impl,
            """
            store = Store(sys.argv[1])
            store.append("a:b", {"role": "user", "content": "new"})
            store.update_last("a:b", {"role": "user", "content": "edited"})
            store.compact("a:b")
            store.set_session_name("a:b", "named")
            print([m.content for m in store.load("a:b")], store.get_session_name("a:b"))
            """,
            str(mount / "ws"),
        )
        assert out.strip() == "['zc', 'edited'] named"
        assert os.listdir(mount / "ws" / "sessions") == ["a%3Ab.jsonl"]
