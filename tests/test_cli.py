"""The ``turnlog`` command (``turnlog.cli.main``), run in-process and as ``python -m turnlog``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import turnlog
from redis_server import free_port, in_ci, shared_server
from turnlog import ChatMessage
from turnlog.backends import format as _format
from turnlog.cli import inspect as cli_inspect
from turnlog.cli import main
from turnlog.cli.table import Progress, human_size, printable, render_table

U = ChatMessage.user
A = ChatMessage.assistant


class TTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def store(ws: Path):
    return turnlog.SessionStore(ws)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit status, stdout, stderr."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def in_ws(ws: Path, *argv: str) -> list[str]:
    return ["--workspace", str(ws), *argv]


def assert_one_error_line(err: str, *fragments: str) -> None:
    assert err.startswith("turnlog: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def transcript(ws: Path, key: str) -> Path:
    return ws / "sessions" / (_format.key_to_name(key) + ".jsonl")


# --- ls -----------------------------------------------------------------------------------------


def test_ls_table_and_json(capsys, ws, store):
    store.append_many("small", [U("hi")])
    store.append_many("big", [U(f"message {i}") for i in range(30)])
    with open(transcript(ws, "big"), "ab") as file:
        file.write(b"garbage\n\n{torn")
    store.set_session_name("small", "Support")

    status, out, err = run(capsys, *in_ws(ws, "ls"))
    assert status == 0 and err == ""
    header, rule, *rows, summary = out.splitlines()
    assert header.split() == [
        "KEY",
        "MESSAGES",
        "SIZE",
        "LAST",
        "ACTIVITY",
        "(UTC)",
        "CORRUPT",
        "LINES",
    ]
    assert set(rule) <= {"-", " "}
    assert [row.split()[0] for row in rows] == ["big", "small"]
    assert rows[0].split()[1] == "30" and rows[0].split()[-1] == "3"
    assert summary.startswith("2 sessions, ") and "3 corrupt lines" in summary

    status, out, _ = run(capsys, *in_ws(ws, "ls", "--json"))
    assert status == 0
    listed = {entry["key"]: entry for entry in json.loads(out)}
    assert listed["big"]["messages"] == 30
    assert listed["big"]["corrupt_lines"] == 3
    assert listed["big"]["lines"] == 33
    assert listed["big"]["size"] == transcript(ws, "big").stat().st_size
    assert listed["small"]["name"] == "Support"
    assert listed["small"]["corrupt_lines"] == 0
    metadata = store.get_session_metadata("small")
    assert listed["small"]["last_activity"] == metadata.last_activity.isoformat()


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("key", ["a", "b", "c"]),
        ("messages", ["b", "c", "a"]),
        ("size", ["c", "b", "a"]),
        ("activity", ["c", "a", "b"]),
        ("corrupt", ["a", "c", "b"]),
    ],
)
def test_ls_sort(capsys, ws, store, sort, order):
    store.append_many("a", [U("x")])
    store.append_many("b", [U("x")] * 5)
    store.append_many("c", [U("x" * 500)] * 3)
    for key, garbage in (("a", b"x\ny\n"), ("c", b"z\n")):  # corrupt lines: a 2, c 1, b 0
        with open(transcript(ws, key), "ab") as file:
            file.write(garbage)
    for key, when in (("a", 2_000_000_000), ("b", 1_000_000_000), ("c", 3_000_000_000)):
        os.utime(transcript(ws, key), (when, when))
    status, out, _ = run(capsys, *in_ws(ws, "ls", "--json", "--sort", sort))
    assert status == 0
    assert [entry["key"] for entry in json.loads(out)] == order
    status, out, _ = run(capsys, *in_ws(ws, "ls", "--sort", sort, "--reverse"))
    assert [row.split()[0] for row in out.splitlines()[2:-1]] == order[::-1]


def test_ls_escapes_keys_that_would_break_the_table(capsys, ws, store):
    store.append("line\nbreak\x1b[2J", U("x"))
    status, out, _ = run(capsys, *in_ws(ws, "ls"))
    assert status == 0
    assert "line\\nbreak\\e[2J" in out
    assert "\x1b" not in out


def test_workspace_from_environment_then_current_folder(capsys, ws, store, monkeypatch, tmp_path):
    store.append("k", U("x"))
    monkeypatch.setenv("TURNLOG_WORKSPACE", str(ws))
    status, out, _ = run(capsys, "ls", "--json")
    assert status == 0 and [e["key"] for e in json.loads(out)] == ["k"]
    monkeypatch.delenv("TURNLOG_WORKSPACE")
    monkeypatch.chdir(ws)
    status, out, _ = run(capsys, "ls", "--json")
    assert status == 0 and [e["key"] for e in json.loads(out)] == ["k"]
    # Options work after the command too, and win over the environment.
    monkeypatch.setenv("TURNLOG_WORKSPACE", str(tmp_path / "elsewhere"))
    status, out, _ = run(capsys, "ls", "--json", "-w", str(ws))
    assert status == 0 and [e["key"] for e in json.loads(out)] == ["k"]


READS = (["ls"], ["show", "k"], ["doctor"], ["export", "k"], ["compact", "--all"], ["rm", "k"])


@pytest.mark.parametrize("backend", ["jsonl", "sqlite"])
def test_a_missing_workspace_is_an_error(capsys, tmp_path, backend):
    missing = tmp_path / "nothing-here"
    for argv in READS:
        if backend == "sqlite" and argv == ["doctor"]:
            continue  # a usage error there: doctor reads JSONL files only
        status, out, err = run(capsys, "--backend", backend, *in_ws(missing, *argv))
        assert status == 1 and out == ""
        assert_one_error_line(err, f"no workspace at {missing}: no such folder")
    assert not missing.exists()
    (tmp_path / "file").write_text("")
    status, out, err = run(capsys, *in_ws(tmp_path / "file", "ls"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "not a folder")


@pytest.mark.parametrize("backend", ["jsonl", "sqlite"])
def test_a_folder_without_sessions_is_an_empty_workspace(capsys, tmp_path, backend):
    if backend == "sqlite":
        pytest.importorskip("turnlog.backends.sqlite")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    within = ["--backend", backend, *in_ws(fresh)]
    status, out, err = run(capsys, *within, "ls")
    assert status == 0 and err == ""
    header, rule, summary = out.splitlines()
    assert header.startswith("KEY") and set(rule) <= {"-", " "}
    assert summary.startswith("0 sessions") and summary.endswith(f"({fresh} has no sessions yet)")
    for argv in (["ls", "--json"], ["--json", "ls"], ["compact", "--all", "--json"]):
        assert run(capsys, *within, *argv) == (0, "[]\n", "")
    assert run(capsys, *within, "compact", "--all") == (
        0,
        f"nothing to compact: no sessions in {fresh}\n",
        "",
    )
    if backend == "jsonl":  # doctor reads JSONL files only
        status, out, err = run(capsys, *within, "doctor")
        assert (status, out, err) == (0, f"nothing to check: no sessions in {fresh}\n", "")
        status, out, _ = run(capsys, *within, "doctor", "--json")
        assert status == 0
        assert json.loads(out) == {
            "sessions": [],
            "corrupt_lines": 0,
            "damaged_sessions": 0,
            "zeroclaw_files_not_adopted": [],
        }
    for argv in (["show", "k"], ["export", "k"], ["rm", "k"], ["compact", "k"]):
        status, out, err = run(capsys, *within, *argv)
        assert status == 1 and out == ""
        assert_one_error_line(err, f"no session 'k' in {fresh}")
    assert list(fresh.iterdir()) == []  # nothing was created


# --- show ---------------------------------------------------------------------------------------


def test_show_text_and_json(capsys, ws, store):
    store.append_many(
        "k",
        [U("hello"), {"role": "assistant", "content": "two\nlines", "name": "bot"}, U("bye")],
    )
    status, out, err = run(capsys, *in_ws(ws, "show", "k"))
    assert status == 0 and err == ""
    assert out == ('[1] user: hello\n[2] assistant {"name":"bot"}: two\n    lines\n[3] user: bye\n')
    status, out, _ = run(capsys, *in_ws(ws, "show", "k", "--tail", "2"))
    assert out.startswith('[2] assistant {"name":"bot"}: two') and "[3] user: bye" in out
    assert "[1]" not in out
    status, out, _ = run(capsys, *in_ws(ws, "show", "k", "--json"))
    assert json.loads(out) == [m.to_dict() for m in store.load("k")]
    status, out, _ = run(capsys, *in_ws(ws, "show", "k", "--json", "--tail", "1"))
    assert json.loads(out) == [{"role": "user", "content": "bye"}]


def test_show_escapes_terminal_control_sequences(capsys, ws, store):
    store.append("k", U("red \x1b[31mtext\x07 and a\ttab"))
    status, out, _ = run(capsys, *in_ws(ws, "show", "k"))
    assert status == 0
    assert out == "[1] user: red \\e[31mtext\\x07 and a\ttab\n"


def test_show_missing_session(capsys, ws, store):
    store.append("k", U("x"))
    status, out, err = run(capsys, *in_ws(ws, "show", "nope"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "no session 'nope'")


@pytest.mark.parametrize("backend", ["jsonl", "sqlite"])
def test_show_tail_zero_and_huge(capsys, ws, backend):
    if backend == "sqlite":
        pytest.importorskip("turnlog.backends.sqlite")
    within = ["--backend", backend, *in_ws(ws)]
    for content in ("one", "two"):
        assert run(capsys, *within, "append", "k", "--role", "user", "--content", content)[0] == 0
    assert run(capsys, *within, "show", "k", "--tail", "0") == (0, "", "")
    assert run(capsys, *within, "show", "k", "--tail", "0", "--json") == (0, "[]\n", "")
    everything = "[1] user: one\n[2] user: two\n"
    # Past a 64-bit integer (where SQLite overflowed): every message.
    for huge in ("99999999999999999999999", str(sys.maxsize + 1), "1" + "0" * 400):
        assert run(capsys, *within, "show", "k", "--tail", huge) == (0, everything, "")
    assert run(capsys, *within, "show", "k", "--tail", str(sys.maxsize)) == (0, everything, "")
    status, out, _ = run(
        capsys, *within, "show", "k", "--tail", "99999999999999999999999", "--json"
    )
    assert status == 0 and len(json.loads(out)) == 2
    status, out, err = run(capsys, *within, "show", "k", "--tail", "-1")
    assert status == 2 and out == ""
    assert_one_error_line(err, "show: argument --tail: must not be negative, got -1")


# --- unreadable session files -------------------------------------------------------------------


def as_an_ordinary_user() -> list[str]:
    """A command prefix under which a ``chmod 000`` file cannot be read, as for any user but
    root. The tests run as root, which reads it anyway through CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH: setpriv runs the command without them."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        reason = "setpriv (util-linux) is needed to drop root's right to read any file"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.fixture
def unreadable(ws, store) -> Path:
    """Sessions a, b (unreadable: mode 000) and c; b's path."""
    for key in ("a", "b", "c"):
        store.append_many(key, [U("hello"), A("hi")])
    with open(transcript(ws, "c"), "ab") as file:
        file.write(b"garbage\n")
    path = transcript(ws, "b")
    path.chmod(0)
    return path


def test_show_and_export_refuse_an_unreadable_session(ws, unreadable):
    for argv in (
        ["show", "b"],
        ["show", "b", "--json"],
        ["--json", "show", "b", "--tail", "1"],
        ["export", "b"],
        ["export", "b", "--format", "markdown"],
    ):
        done = turnlog_process("-w", str(ws), *argv, prefix=as_an_ordinary_user())
        assert done.returncode == 1 and done.stdout == "", argv
        assert_one_error_line(
            done.stderr, f"cannot read session 'b': Permission denied: {unreadable}"
        )


def test_ls_shows_an_unreadable_session_and_fails(ws, unreadable):
    done = turnlog_process("-w", str(ws), "ls", prefix=as_an_ordinary_user())
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "session 'b': cannot read: Permission denied")
    _, _, *rows, summary = done.stdout.splitlines()
    assert [row.split()[0] for row in rows] == ["a", "b", "c"]
    b_row = rows[1].split()
    assert b_row[1] == "?" and b_row[-1] == "?"
    assert b_row[2:4] == human_size(unreadable.stat().st_size).split()
    assert rows[2].split()[-1] == "1"
    assert summary.startswith("3 sessions, ") and "1 corrupt line, 1 unreadable" in summary

    done = turnlog_process(
        "-w", str(ws), "ls", "--json", "--sort", "corrupt", prefix=as_an_ordinary_user()
    )
    assert done.returncode == 1
    assert_one_error_line(done.stderr, "session 'b'")
    listed = json.loads(done.stdout)
    assert [entry["key"] for entry in listed] == ["b", "c", "a"]  # the most damaged first
    b, c, _ = listed
    assert b["error"] == "cannot read: Permission denied" and c["error"] is None
    assert b["messages"] is b["lines"] is b["corrupt_lines"] is None
    assert b["size"] == unreadable.stat().st_size
    assert b["last_activity"] is not None  # the file's mtime, as for any session


def test_compact_all_goes_on_past_an_unreadable_session(ws, unreadable):
    data = unreadable.read_bytes()
    done = turnlog_process("-w", str(ws), "compact", "--all", prefix=as_an_ordinary_user())
    assert done.returncode == 1
    assert_one_error_line(
        done.stderr, f"cannot compact session 'b': Permission denied: {unreadable}"
    )
    assert [row.split()[0] for row in done.stdout.splitlines()[2:-1]] == ["a", "c"]
    assert done.stdout.splitlines()[-1] == "compacted 2 sessions: removed 1 line; 1 failed"
    assert b"garbage" not in transcript(ws, "c").read_bytes()  # compacted after b failed
    assert unreadable.read_bytes() == data

    done = turnlog_process(
        "-w", str(ws), "--json", "compact", "--all", prefix=as_an_ordinary_user()
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    results = {result["key"]: result for result in json.loads(done.stdout)}
    assert results["a"]["error"] is None and results["c"]["lines_removed"] == 0
    assert results["b"]["error"] == f"Permission denied: {unreadable}"
    assert results["b"]["lines_removed"] is None


def test_compact_reports_every_failure(capsys, ws, store, monkeypatch):
    for key in ("a", "b", "c", "d"):
        store.append(key, U("x"))
    real = turnlog.SessionStore.compact

    def compact(self, key):
        if key in ("b", "d"):
            raise OSError(28, "No space left on device")
        return real(self, key)

    monkeypatch.setattr(turnlog.SessionStore, "compact", compact)
    status, out, err = run(capsys, *in_ws(ws, "compact", "a", "b", "c", "d"))
    assert status == 1
    assert err.splitlines() == [
        "turnlog: error: cannot compact session 'b': [Errno 28] No space left on device",
        "turnlog: error: cannot compact session 'd': [Errno 28] No space left on device",
    ]
    assert out.splitlines()[-1] == "compacted 2 sessions: removed 0 lines; 2 failed"


# --- append -------------------------------------------------------------------------------------


def test_append_with_role_and_content(capsys, ws):
    status, out, err = run(capsys, *in_ws(ws, "append", "k", "--role", "user", "--content", "hi"))
    assert status == 0 and err == ""
    assert out == "appended 1 message to 'k'\n"
    assert turnlog.SessionStore(ws).load("k") == [U("hi")]


@pytest.mark.parametrize(
    ("stdin", "dash"),
    [
        ('{"role":"assistant","content":"one","name":"bot"}', True),
        ('{"role":"assistant","content":"one","name":"bot"}', False),
        (
            '[{"role":"assistant","content":"one","name":"bot"}, {"role":"user","content":"two"}]',
            True,
        ),
        (
            '{"role":"assistant","content":"one","name":"bot"}\n\n{"role":"user","content":"two"}\n',
            True,
        ),
    ],
)
def test_append_json_from_stdin(capsys, ws, monkeypatch, stdin, dash):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status, out, err = run(capsys, *in_ws(ws, "append", "k", *(["-"] if dash else [])))
    assert status == 0, err
    loaded = turnlog.SessionStore(ws).load("k")
    assert loaded[0] == ChatMessage("assistant", "one", name="bot")
    assert loaded[1:] == ([U("two")] if "two" in stdin else [])
    assert out == f"appended {len(loaded)} message{'s' if len(loaded) > 1 else ''} to 'k'\n"


@pytest.mark.parametrize(
    ("stdin", "fragment"),
    [
        ("", "no message on stdin"),
        ("{not json", "stdin is not JSON"),
        ('{"role":"user","content":"a"}\nnope\n', "stdin line 2 is not JSON"),
        ('"text"', "must hold a JSON object"),
        ("[]", "must hold a JSON object"),
        ('{"role":"user"}', "invalid message, nothing appended: message has no 'content' field"),
        ('{"role":"user","content":"x","v":NaN}', "invalid message"),
        ('[{"role":"user","content":"ok"},{"role":"user","content":5}]', "invalid message"),
    ],
)
def test_append_refuses_bad_stdin_and_writes_nothing(
    capsys, ws, store, monkeypatch, stdin, fragment
):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status, out, err = run(capsys, *in_ws(ws, "append", "k", "-"))
    assert status == 1 and out == ""
    assert_one_error_line(err, fragment)
    assert store.load("k") == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--content", "x"], "--content needs --role"),
        (["--role", "user"], "--role needs --content"),
        (["-", "--role", "user", "--content", "x"], "not both"),
        (["--role"], "expected one argument"),
    ],
)
def test_append_usage_errors(capsys, ws, argv, fragment):
    status, out, err = run(capsys, *in_ws(ws, "append", "k", *argv))
    assert status == 2 and out == ""
    assert_one_error_line(err, "append: ", fragment)


def test_append_creates_the_workspace(capsys, tmp_path):
    fresh = tmp_path / "new"
    status, _, _ = run(capsys, *in_ws(fresh, "append", "k", "--role", "user", "--content", "x"))
    assert status == 0
    assert transcript(fresh, "k").read_bytes() == b'{"role":"user","content":"x"}\n'


# --- doctor -------------------------------------------------------------------------------------

#: (line, what doctor says about it, or None for a valid message); the last one has no newline.
DAMAGE: list[tuple[bytes, str | None]] = [
    (b'{"role":"user","content":"ok"}', None),
    (b"not json", "not JSON"),
    (b'{"role":"user","content":"caf\xe9"}', "invalid UTF-8 (byte 30)"),
    (b"[1,2]", "not an object (an array)"),
    (b'"just a string"', "not an object (a string)"),
    (b'{"role":1,"content":"x"}', "role is not a string (a number)"),
    (b'{"role":"user","content":null}', "content is not a string (null)"),
    (b'{"role":"user","content":["a"]}', "content is not a string (an array)"),
    (b'{"content":"x"}', "missing role"),
    (b'{"role":"user"}', "missing content"),
    (b'{"role":"a","role":"b","content":"x"}', 'duplicate key "role"'),
    (b'{"role":"user","content":"x","m":{"k":1,"k":2}}', 'duplicate key "k"'),
    (b'{"role":"user","content":"x"} junk', "text after the object (column 31)"),
    (b'{"role":"user","content":"x","v":NaN}', "NaN is not JSON"),
    (b'{"role":"user","content":"x","v":-Infinity}', "-Infinity is not JSON"),
    (b"\x00\x00\x00", "NUL byte (column 1)"),
    (b'{"role":"user","content":"a\x00b"}', "NUL byte (column 28)"),
    (b'{"role":"user","content":"\\ud800"}', "lone surrogate"),
    (b'{"role":"user","content":"\\ud83d\\ude00"}', None),  # a valid pair
    (b"   \t", "blank line"),
    (b"", "blank line"),
    (b'\xef\xbb\xbf{"role":"user","content":"bom"}', "byte order mark (BOM)"),
    (b'{"role":"user","content":"x","d":' + b"[" * 130 + b"]" * 130 + b"}", "nested deeper"),
    (b'{"role":"user","content":"x","n":' + b"7" * 4301 + b"}", "more than 4300 digits"),
    (b'{"role":"user","content":"x","n":' + b"7" * 4300 + b"}", None),
    (b'{"role":"user","content":"tab\tinside"}', "raw control character in a string"),
    (b'{"role":"user","content":"x"', "truncated JSON"),
    (b'{"role":"user" "content":"x"}', "not JSON: expecting ',' delimiter (column 16)"),
    (b'  {"role":"user","content":"padded"}\r', None),  # white space and CRLF are fine
    # Two writers that ignore the lock, each writing a record and its newline apart:
    (b'{"role":"user","content":"a"}{"role":"user","content":"b"}', "two records glued"),
    (b'{"role":"user","con{"role":"user","content":"b"}', "two records glued"),
    (b'{"role":"user","content":"cut sh', "torn last line (no newline): truncated JSON"),
]


def write_damaged(ws: Path, key: str = "hurt") -> list[tuple[int, str]]:
    """Write DAMAGE as session ``key``; returns the expected ``(line, problem)`` findings."""
    turnlog.SessionStore(ws)
    data = b"\n".join(line for line, _ in DAMAGE)  # no newline after the last line: torn
    transcript(ws, key).write_bytes(data)
    return [(n, why) for n, (_, why) in enumerate(DAMAGE, start=1) if why is not None]


def test_damage_table_agrees_with_the_stores_validator():
    for line, why in DAMAGE:
        assert (_format.valid_text(line) is None) == (why is not None), line[:60]


def test_doctor_names_every_kind_of_damage_with_its_line(capsys, ws, store):
    expected = write_damaged(ws)
    store.append("clean", U("fine"))
    status, out, err = run(capsys, *in_ws(ws, "doctor", "--json"))
    assert status == 1 and err == ""
    report = json.loads(out)
    sessions = {entry["key"]: entry for entry in report["sessions"]}
    assert sessions["clean"]["corrupt"] == [] and sessions["clean"]["messages"] == 1
    hurt = sessions["hurt"]
    found = [(finding["line"], finding["problem"]) for finding in hurt["corrupt"]]
    assert [line for line, _ in found] == [line for line, _ in expected]
    for (line, problem), (_, fragment) in zip(found, expected, strict=True):
        assert fragment in problem, (line, problem, fragment)
    assert hurt["lines"] == len(DAMAGE)
    assert hurt["messages"] == len(store.load("hurt"))  # the Rust count agrees
    assert report["corrupt_lines"] == len(expected) and report["damaged_sessions"] == 1

    status, out, _ = run(capsys, *in_ws(ws, "doctor"))
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == "hurt:2: not JSON  | not json"
    assert "hurt:3: invalid UTF-8 (byte 30)  | " in lines[1]
    assert sum(line.startswith("hurt:") for line in lines) == len(expected)
    assert "hurt:20: blank line  |    \\t" in lines
    assert "hurt:21: blank line" in lines  # nothing to quote
    assert lines[-1].startswith(f"checked 2 sessions ({len(DAMAGE) + 1} lines): {len(expected)} ")
    assert "\x00" not in out and "\x1b" not in out


def test_doctor_on_chosen_sessions_and_after_compact(capsys, ws, store):
    write_damaged(ws)
    store.append("clean", U("fine"))
    status, out, _ = run(capsys, *in_ws(ws, "doctor", "clean"))
    assert status == 0
    assert out == "checked 1 session (1 line): no damage\n"
    status, _, err = run(capsys, *in_ws(ws, "doctor", "clean", "ghost"))
    assert status == 1
    assert_one_error_line(err, "no session 'ghost'")
    assert run(capsys, *in_ws(ws, "compact", "hurt"))[0] == 0
    status, out, _ = run(capsys, *in_ws(ws, "doctor"))
    assert status == 0 and out.endswith("no damage\n")


def test_doctor_a_valid_last_line_without_newline_is_not_damage(capsys, ws, store):
    store.append("k", U("x"))
    transcript(ws, "k").write_bytes(b'{"role":"user","content":"x"}\n{"role":"user","content":"y"}')
    status, out, _ = run(capsys, *in_ws(ws, "doctor"))
    assert status == 0, out


def test_doctor_reports_an_unreadable_session(capsys, ws, store, monkeypatch):
    store.append("bad", U("x"))
    store.append("good", U("x"))
    real = cli_inspect.check_file

    def check_file(path):
        if path.endswith("bad.jsonl"):  # tests run as root: chmod cannot make a file unreadable
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(cli_inspect, "check_file", check_file)  # where doctor calls it
    status, out, err = run(capsys, *in_ws(ws, "doctor"))
    assert status == 1 and err == ""
    assert out.splitlines() == [
        "bad: cannot read: Permission denied",
        "checked 2 sessions (1 line): 1 unreadable",
    ]
    status, out, _ = run(capsys, *in_ws(ws, "doctor", "--json"))
    report = json.loads(out)
    assert [s["error"] for s in report["sessions"]] == ["cannot read: Permission denied", None]
    assert report["damaged_sessions"] == 1


def test_doctor_does_not_follow_symlinks(capsys, ws, store):
    store.append("k", U("x"))
    path = transcript(ws, "k")
    path.unlink()
    os.symlink("/etc/hostname", path)  # the stores neither list nor follow one
    status, out, err = run(capsys, *in_ws(ws, "doctor", "--json"))
    assert status == 0 and err == ""
    assert json.loads(out)["sessions"] == []


def test_doctor_is_for_jsonl_only(capsys, ws, store):
    pytest.importorskip("turnlog.backends.sqlite")
    status, _, err = run(capsys, *in_ws(ws, "--backend", "sqlite", "doctor"))
    assert status == 2
    assert_one_error_line(err, "doctor")


# --- compact ------------------------------------------------------------------------------------


def test_compact_chosen_and_all(capsys, ws, store):
    write_damaged(ws, "hurt")
    write_damaged(ws, "hurt2")
    store.append("clean", U("fine"))
    before = store.load("hurt")
    status, out, err = run(capsys, *in_ws(ws, "compact", "hurt", "--json"))
    assert status == 0 and err == ""
    (result,) = json.loads(out)
    assert result["key"] == "hurt"
    assert result["lines_removed"] == len(DAMAGE) - len(before)
    assert result["size_after"] == transcript(ws, "hurt").stat().st_size < result["size_before"]
    assert store.load("hurt") == before
    status, out, _ = run(capsys, *in_ws(ws, "compact", "--all"))
    assert status == 0
    assert [row.split()[0] for row in out.splitlines()[2:-1]] == ["clean", "hurt", "hurt2"]
    assert (
        out.splitlines()[-1] == f"compacted 3 sessions: removed {len(DAMAGE) - len(before)} lines"
    )


@pytest.mark.parametrize(
    ("argv", "status", "fragment"),
    [
        ([], 2, "name the sessions to compact, or pass --all"),
        (["--all", "hurt"], 2, "not both"),
        (["hurt", "ghost"], 1, "no session 'ghost'"),
    ],
)
def test_compact_errors_change_nothing(capsys, ws, argv, status, fragment):
    write_damaged(ws)
    data = transcript(ws, "hurt").read_bytes()
    got, out, err = run(capsys, *in_ws(ws, "compact", *argv))
    assert got == status and out == ""
    assert_one_error_line(err, fragment)
    assert transcript(ws, "hurt").read_bytes() == data


def test_progress_bar_only_on_a_terminal(capsys, ws, store, monkeypatch):
    for i in range(3):
        store.append(f"k{i}", U("x"))
    status, _, err = run(capsys, *in_ws(ws, "compact", "--all"))
    assert status == 0 and err == ""  # piped: quiet
    terminal = TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, out, _ = run(capsys, *in_ws(ws, "compact", "--all"))
    assert status == 0
    drawn = terminal.getvalue()
    assert "compacting [" in drawn and "3/3" in drawn and drawn.startswith("\r\x1b[K")
    assert drawn.endswith("\r\x1b[K")  # erased when done
    assert "\r" not in out  # never on stdout


# --- rm -----------------------------------------------------------------------------------------


def test_rm(capsys, ws, store):
    store.append("a", U("x"))
    store.append("b", U("x"))
    store.set_session_name("b", "named")
    status, out, err = run(capsys, *in_ws(ws, "rm", "a", "ghost"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "no session 'ghost'")
    assert store.list_sessions() == ["a", "b"]  # nothing removed
    status, out, _ = run(capsys, *in_ws(ws, "rm", "a", "b"))
    assert status == 0
    assert out == "removed 'a'\nremoved 'b'\n"
    assert store.list_sessions() == []
    assert store.get_session_name("b") is None


# --- export -------------------------------------------------------------------------------------


def test_export_formats(capsys, ws, store, tmp_path):
    write_damaged(ws)
    store.append("hurt", {"role": "assistant", "content": "**bold**\n", "name": "bot"})
    messages = store.load("hurt")

    status, out, _ = run(capsys, *in_ws(ws, "export", "hurt"))
    assert status == 0
    kept = [_format.valid_text(line) for line in transcript(ws, "hurt").read_bytes().split(b"\n")]
    assert out.encode() == b"".join(line + b"\n" for line in kept if line is not None)
    assert [ChatMessage.from_dict(json.loads(line)) for line in out.splitlines()] == messages

    status, out, _ = run(capsys, *in_ws(ws, "export", "hurt", "--format", "json"))
    assert [ChatMessage.from_dict(item) for item in json.loads(out)] == messages

    status, out, _ = run(capsys, *in_ws(ws, "export", "hurt", "--format", "markdown"))
    assert out.startswith("# Session hurt\n\n")
    assert f"{len(messages)} messages" in out
    assert f"## {len(messages)}. assistant\n\n" in out
    assert '`{"name":"bot"}`\n\n**bold**\n' in out
    assert out.count("\n## ") == len(messages)

    target = tmp_path / "out.json"
    status, out, _ = run(
        capsys, *in_ws(ws, "export", "hurt", "--format", "json", "-o", str(target))
    )
    assert status == 0 and out == ""
    assert len(json.loads(target.read_text(encoding="utf-8"))) == len(messages)


def test_export_empty_session(capsys, ws, store):
    store.append("k", U("x"))
    store.clear_messages("k")
    assert run(capsys, *in_ws(ws, "export", "k", "--format", "json"))[1] == "[]\n"
    assert run(capsys, *in_ws(ws, "export", "k"))[1] == ""


# --- bench --------------------------------------------------------------------------------------


def test_bench(capsys):
    status, out, err = run(capsys, "bench", "--messages", "400", "--json")
    assert status == 0 and err == ""
    report = json.loads(out)
    assert report["messages"] == 400
    assert report["corrupt_lines"] == report["lines"] - 400 > 1  # corrupt lines and a torn tail
    assert [r["operation"] for r in report["results"]] == ["full load", "load(limit=50)", "append"]
    for result in report["results"]:
        assert result["pure_seconds"] > 0
        if turnlog.IMPLEMENTATION == "rust":
            assert result["rust_seconds"] > 0
            assert result["speedup"] == pytest.approx(
                result["pure_seconds"] / result["rust_seconds"]
            )
        else:
            assert result["rust_seconds"] is None


def test_bench_corpus_is_what_it_says(tmp_path):
    from turnlog.cli.bench import write_corpus

    corpus = write_corpus(str(tmp_path / "c.jsonl"), 1000)
    data = (tmp_path / "c.jsonl").read_bytes()
    lines = data.split(b"\n")
    assert not data.endswith(b"\n") and len(lines) == corpus.lines
    valid = sum(_format.valid_text(line) is not None for line in lines)
    assert valid == corpus.messages == 1000
    assert corpus.corrupt_lines == corpus.lines - 1000


def test_bench_table(capsys, monkeypatch):
    terminal = TTY()
    monkeypatch.setattr(sys, "stderr", terminal)
    status, out, _ = run(capsys, "bench", "--messages", "200")
    assert status == 0
    assert "OPERATION" in out and "full load" in out and "append" in out
    assert "200 messages" in out
    steps = 7 if turnlog.IMPLEMENTATION == "rust" else 4
    drawn = terminal.getvalue()
    assert drawn.startswith(f"\r\x1b[Kbench [{'-' * Progress.BAR}] 0/{steps}")
    assert f"] {steps}/{steps}" in drawn and drawn.endswith("\r\x1b[K")


# --- --json on every command --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["show", "k"],
        ["doctor"],
        ["compact", "k"],
        ["compact", "--all"],
        ["append", "new", "--role", "user", "--content", "x"],
        ["rm", "k"],
        ["export", "k"],
    ],
)
def test_json_is_accepted_by_every_command_before_or_after_it(capsys, ws, store, argv, where):
    store.append_many("k", [U("hello"), A("hi")])
    full = ["--json", *argv] if where == "before" else [*argv, "--json"]
    status, out, err = run(capsys, *in_ws(ws, *full))
    assert status == 0 and err == ""
    json.loads(out)


def test_append_and_rm_print_a_json_result(capsys, ws, store, monkeypatch):
    argv = ["--json", "append", "k", "--role", "user", "--content", "x"]
    status, out, _ = run(capsys, *in_ws(ws, *argv))
    assert status == 0 and json.loads(out) == {"key": "k", "appended": 1}
    monkeypatch.setattr(
        sys, "stdin", io.StringIO('[{"role":"user","content":"a"}, {"role":"user","content":"b"}]')
    )
    status, out, _ = run(capsys, *in_ws(ws, "append", "j", "-", "--json"))
    assert status == 0 and json.loads(out) == {"key": "j", "appended": 2}
    status, out, _ = run(capsys, *in_ws(ws, "rm", "k", "j", "--json"))
    assert status == 0 and json.loads(out) == {"removed": ["k", "j"]}
    assert store.list_sessions() == []


def test_export_json_is_the_json_format(capsys, ws, store):
    store.append_many("k", [U("hello"), A("hi")])
    as_format = run(capsys, *in_ws(ws, "export", "k", "--format", "json"))
    assert run(capsys, *in_ws(ws, "export", "k", "--json")) == as_format
    assert run(capsys, *in_ws(ws, "--json", "export", "k", "--format", "json")) == as_format
    status, out, err = run(capsys, *in_ws(ws, "export", "k", "--json", "--format", "markdown"))
    assert status == 2 and out == ""
    assert_one_error_line(err, "export: --json writes JSON; it cannot go with --format markdown")


def test_errors_stay_on_stderr_with_json(capsys, ws, store):
    store.append("k", U("x"))
    status, out, err = run(capsys, *in_ws(ws, "--json", "show", "nope"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "no session 'nope'")


# --- the Redis backend --------------------------------------------------------------------------


def need_redis_py() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        if in_ci():
            raise
        pytest.skip("redis-py is not installed (pip install 'turnlog[redis]')")


@pytest.fixture
def on_redis() -> list[str]:
    """The options for a real Redis server, under a prefix of this test's own."""
    need_redis_py()
    server = shared_server()
    prefix = f"turnlog-cli-{uuid.uuid4().hex}:"
    return ["--backend", "redis", "--redis-url", server.url, "--redis-prefix", prefix]


def test_redis_backend(capsys, on_redis):
    argv = on_redis
    assert run(capsys, *argv, "ls", "--json") == (0, "[]\n", "")
    status, out, _ = run(capsys, *argv, "append", "k", "--role", "user", "--content", "hello")
    assert (status, out) == (0, "appended 1 message to 'k'\n")
    status, out, _ = run(
        capsys, *argv, "--json", "append", "k", "--role", "assistant", "--content", "hi"
    )
    assert status == 0 and json.loads(out) == {"key": "k", "appended": 1}
    status, out, _ = run(capsys, *argv, "ls", "--json")
    (entry,) = json.loads(out)
    assert entry["key"] == "k" and entry["messages"] == 2 and entry["error"] is None
    assert entry["size"] is entry["corrupt_lines"] is None
    status, out, _ = run(capsys, *argv, "ls")
    assert status == 0 and out.splitlines()[-1] == "1 session"
    assert run(capsys, *argv, "show", "k") == (0, "[1] user: hello\n[2] assistant: hi\n", "")
    assert run(capsys, *argv, "show", "k", "--tail", "1") == (0, "[2] assistant: hi\n", "")
    assert run(capsys, *argv, "show", "k", "--tail", "0") == (0, "", "")
    huge = run(capsys, *argv, "show", "k", "--tail", "99999999999999999999999")
    assert huge == (0, "[1] user: hello\n[2] assistant: hi\n", "")
    assert json.loads(run(capsys, *argv, "export", "k", "--json")[1]) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
    ]
    status, out, _ = run(capsys, *argv, "compact", "--all", "--json")
    assert status == 0 and [result["key"] for result in json.loads(out)] == ["k"]
    status, _, err = run(capsys, *argv, "doctor")
    assert status == 2
    assert_one_error_line(err, "--backend redis has none")
    assert json.loads(run(capsys, *argv, "rm", "k", "--json")[1]) == {"removed": ["k"]}
    status, out, err = run(capsys, *argv, "show", "k")
    assert status == 1
    assert_one_error_line(err, "no session 'k' in redis://")


def test_redis_url_from_the_environment(capsys, on_redis, monkeypatch):
    url = on_redis[on_redis.index("--redis-url") + 1]
    prefix = on_redis[-2:]
    monkeypatch.setenv("TURNLOG_REDIS_URL", url)
    assert (
        run(capsys, "--backend", "redis", *prefix, "append", "k", "--role", "u", "--content", "x")[
            0
        ]
        == 0
    )
    assert run(capsys, "--backend", "redis", *prefix, "show", "k") == (0, "[1] u: x\n", "")


def test_unreachable_redis_is_one_error_line(capsys):
    need_redis_py()
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"  # nobody listens there
    status, out, err = run(capsys, "--backend", "redis", "--redis-url", url, "ls")
    assert status == 1 and out == ""
    assert_one_error_line(err, "cannot reach Redis at redis://user:***@127.0.0.1:", "refused")
    assert "secret" not in err


def test_bad_redis_url_is_one_error_line(capsys):
    need_redis_py()
    status, out, err = run(capsys, "--backend", "redis", "--redis-url", "http://x", "ls")
    assert status == 1 and out == ""
    assert_one_error_line(err, "invalid Redis URL or prefix (http://x)")


def test_redis_backend_without_redis_py(capsys, monkeypatch):
    # As if never imported: the package and its modules (a loaded one would not import redis).
    package = "turnlog.backends.redis"
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis fails
    status, out, err = run(capsys, "--backend", "redis", "ls")
    assert status == 1 and out == ""
    assert_one_error_line(err, "the Redis backend is not available", "pip install 'turnlog[redis]'")


def test_redis_options_need_the_redis_backend(capsys, ws, store):
    for option in ("--redis-url", "--redis-prefix"):
        status, out, err = run(capsys, *in_ws(ws, option, "x", "ls"))
        assert status == 2 and out == ""
        assert_one_error_line(err, "--redis-url and --redis-prefix need --backend redis")


def test_the_cli_imports_no_third_party_module(ws, store):
    store.append("k", U("x"))
    probe = (
        "import sys; from turnlog.cli import main; "
        f"status = main(['-w', {str(ws)!r}, 'ls', '--json']); "
        "modules = ('redis', 'turnlog.backends.redis', 'turnlog.backends.sqlite'); "
        "print(status, sorted(m for m in modules if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["ls", "--colour"], "unrecognized arguments: --colour"),
        (["ls", "--sort", "size", "--sort", "weight"], "ls: argument --sort: invalid choice"),
        (["show", "k", "--tail", "many"], "not a whole number"),
        (["show", ""], "invalid session key '': session key must not be empty"),
        (["show", "x" * 300], "session key is too long"),
        (["export", "k", "--format", "pdf"], "invalid choice: 'pdf'"),
        (["--backend", "mongo", "ls"], "invalid choice: 'mongo'"),
        (["bench", "--messages", "-5"], "must be at least 1"),
        (["rm"], "required: KEY"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(capsys, ws, store, argv, fragment):
    status, out, err = run(capsys, *in_ws(ws, *argv))
    assert status == 2 and out == ""
    assert_one_error_line(err, fragment)


def test_help_and_version(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0 and out.startswith("usage: turnlog")
    for command in ("ls", "show", "append", "doctor", "compact", "rm", "export", "bench"):
        assert f"    {command} " in out
    status, out, _ = run(capsys, "--version")
    assert status == 0 and out == f"turnlog {turnlog.__version__} ({turnlog.IMPLEMENTATION})\n"


def test_filesystem_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    status, _, err = run(
        capsys, *in_ws(tmp_path / "file", "append", "k", "--role", "u", "--content", "x")
    )
    assert status == 1
    assert_one_error_line(err, "workspace is not a directory", str(tmp_path / "file"))


def test_unexpected_errors_are_one_line_unless_debugging(capsys, ws, store, monkeypatch):
    store.append("k", U("x"))

    def broken(self, key, limit=None):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(turnlog.SessionStore, "load", broken)
    status, out, err = run(capsys, *in_ws(ws, "show", "k"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "RuntimeError: boom second line")
    monkeypatch.setenv("TURNLOG_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(in_ws(ws, "show", "k"))


def test_keyboard_interrupt(capsys, ws, store, monkeypatch):
    store.append("k", U("x"))

    def interrupted(self, key, limit=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(turnlog.SessionStore, "load", interrupted)
    status, _, err = run(capsys, *in_ws(ws, "show", "k"))
    assert status == 130
    assert_one_error_line(err, "interrupted")


def test_missing_sqlite_backend_is_a_clear_error(capsys, ws, monkeypatch):
    # import turnlog.backends.sqlite fails
    monkeypatch.setitem(sys.modules, "turnlog.backends.sqlite", None)
    status, out, err = run(capsys, *in_ws(ws, "--backend", "sqlite", "ls"))
    assert status == 1 and out == ""
    assert_one_error_line(err, "the SQLite backend is not available")


def test_sqlite_backend(capsys, ws):
    pytest.importorskip("turnlog.backends.sqlite")
    argv = ["--workspace", str(ws), "--backend", "sqlite"]
    status, _, _ = run(capsys, *argv, "append", "k", "--role", "user", "--content", "hello")
    assert status == 0
    assert not transcript(ws, "k").exists()  # went to the database
    status, out, _ = run(capsys, *argv, "ls", "--json")
    (entry,) = json.loads(out)
    assert entry["key"] == "k" and entry["messages"] == 1 and entry["corrupt_lines"] is None
    assert run(capsys, *argv, "show", "k")[1] == "[1] user: hello\n"
    assert json.loads(run(capsys, *argv, "export", "k", "--format", "json")[1]) == [
        {"role": "user", "content": "hello"}
    ]
    assert run(capsys, *argv, "compact", "k")[0] == 0
    assert run(capsys, *argv, "rm", "k")[0] == 0
    assert json.loads(run(capsys, *argv, "ls", "--json")[1]) == []


# --- as a program -------------------------------------------------------------------------------


def turnlog_process(
    *argv: str, prefix: list[str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    """``python -m turnlog ARGV`` in a child process (run under the command ``prefix``)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("TURNLOG_DEBUG", None)
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "turnlog", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        **kwargs,
    )


def test_python_m_turnlog(ws, store):
    store.append_many("k", [U("привет"), A("hi")])
    done = turnlog_process("-w", str(ws), "show", "k", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"role": "user", "content": "привет"},
        {"role": "assistant", "content": "hi"},
    ]
    assert done.stderr == ""
    done = turnlog_process("-w", str(ws), "show", "nope")
    assert done.returncode == 1 and done.stdout == ""
    assert_one_error_line(done.stderr, "no session 'nope'")
    done = turnlog_process("-w", str(ws), "ls", "--sort")
    assert done.returncode == 2
    assert_one_error_line(done.stderr, "expected one argument")
    done = turnlog_process("-w", str(ws), "doctor")
    assert done.returncode == 0 and done.stdout.endswith("no damage\n")


@pytest.mark.parametrize(
    ("case", "status", "fragment"),
    [
        ("missing workspace", 1, "no workspace at"),
        ("workspace is a file", 1, "not a folder"),
        ("append to a workspace that is a file", 1, "workspace is not a directory"),
        ("bad key", 2, "invalid session key"),
        ("invalid JSON on stdin", 1, "stdin is not JSON"),
        ("unreachable Redis", 1, "cannot reach Redis at"),
    ],
)
def test_error_paths_are_one_line_as_a_program(tmp_path, ws, store, case, status, fragment):
    store.append("k", U("x"))
    (tmp_path / "file").write_text("")
    stdin = None
    argv = {
        "missing workspace": ["-w", str(tmp_path / "missing"), "ls"],
        "workspace is a file": ["-w", str(tmp_path / "file"), "show", "k"],
        "append to a workspace that is a file": [
            *("-w", str(tmp_path / "file"), "append", "k", "--role", "u", "--content", "x")
        ],
        "bad key": ["-w", str(ws), "show", "a/../b" * 100],
        "invalid JSON on stdin": ["-w", str(ws), "append", "k", "-"],
        "unreachable Redis": [
            *("--backend", "redis", "--redis-url", f"redis://127.0.0.1:{free_port()}/0", "ls")
        ],
    }[case]
    if case == "invalid JSON on stdin":
        stdin = '{"role": "user", "content": '
    if case == "unreachable Redis":
        need_redis_py()
    done = turnlog_process(*argv, input=stdin)
    assert done.returncode == status and done.stdout == ""
    assert_one_error_line(done.stderr, fragment)


def test_closed_pipe_is_quiet(ws, store):
    store.append_many("k", [U(f"message {i} " + "x" * 100) for i in range(5000)])
    command = f"{sys.executable} -m turnlog -w {ws} show k | head -n 1"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("[1] user: message 0 ")
    assert done.stderr == ""


# --- the table helpers --------------------------------------------------------------------------


def test_table_helpers():
    assert human_size(0) == "0 B" and human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB" and human_size(5 * 1024**3) == "5.0 GiB"
    assert printable("a\nb\x00\u200b") == "a\\nb\\x00\\u200b"
    assert printable("a\nb\tc", keep_newlines=True) == "a\nb\tc"
    table = render_table(["K", "N"], [["今日", "1"], ["ab", "100"]], right=(1,))
    assert table.splitlines() == ["K       N", "----  ---", "今日    1", "ab    100"]
    quiet = io.StringIO()
    with Progress("x", 2, quiet) as progress:
        progress.advance(2)
    assert quiet.getvalue() == ""
