"""Switching from ZeroClaw: its file names, adopting its files, ``names="zeroclaw"``.

A ZeroClaw workspace names a session's file by replacing every character that is not
alphanumeric (Unicode-aware), ``_`` or ``-`` with ``_`` (``../shared/reference/README.md``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import require_native, store_class
from turnlog import ChatMessage, SessionQuery, SessionStore, migrate
from turnlog.backends import format as _format
from turnlog.backends.jsonl.legacy import RECORD
from turnlog.cli import main

TESTS = Path(__file__).resolve().parent
UTC = timezone.utc

#: ZeroClaw's file of each key, as its description says it names them.
SWITCHING = {
    "agent:main:telegram:dm:user123": "agent_main_telegram_dm_user123",
    "telegram_ключ": "telegram_ключ",
    "discord/guild 42": "discord_guild_42",
    "slack:東京:チーム": "slack_東京_チーム",
    "emoji🙂chat": "emoji_chat",
    "tab\there": "tab_here",
}


def U(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def write_zeroclaw(ws: Path, files: dict[str, list[str]]) -> None:
    """A workspace as ZeroClaw leaves it: ``sessions/<name>.jsonl``, one message a line."""
    (ws / "sessions").mkdir(parents=True, exist_ok=True, mode=0o700)
    ws.chmod(0o700)
    for name, texts in files.items():
        lines = "".join(
            json.dumps({"role": "user", "content": text}, ensure_ascii=False) + "\n"
            for text in texts
        )
        (ws / "sessions" / f"{name}.jsonl").write_text(lines, encoding="utf-8")


def listing(ws: Path) -> set[str]:
    return set(os.listdir(ws / "sessions"))


# --- the name ZeroClaw gives a key ---------------------------------------------------------------


def _description(char: str) -> bool | None:
    """Whether ZeroClaw keeps ``char``, from its description (Unicode letters and numbers,
    ``_``, ``-``); ``None`` for the categories where Unicode's Alphabetic property adds
    characters by list (marks, symbols such as Ⓐ), which Python's ``unicodedata`` lacks."""
    category = unicodedata.category(char)
    if char in "_-" or category[0] in "LN":
        return True
    if category[0] in "PZC" or category in ("Sm", "Sc", "Sk"):
        return False
    return None


def test_the_name_of_every_character_follows_the_description():
    decided = 0
    for point in range(0x110000):
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        if unicodedata.category(char) == "Cn":
            continue  # unassigned in this Python's Unicode: Rust's tables may be newer
        expected = _description(char)
        if expected is None:
            continue
        decided += 1
        assert (_format.zeroclaw_name(char) == char) is expected, hex(point)
    assert decided > 250_000


def test_the_pure_name_is_the_rust_name_for_every_character():
    native = require_native()
    points = [p for p in range(1, 0x110000) if not 0xD800 <= p <= 0xDFFF]
    for start in range(0, len(points), 60):
        key = "".join(map(chr, points[start : start + 60]))
        assert _format.zeroclaw_name(key) == native.zeroclaw_name(key), hex(points[start])


@given(
    st.text(
        st.sampled_from("aZ09_-:/ .\t@#ключ東京🙂\u0301\u093e\u24b6\u2160\u00b2"),
        min_size=1,
        max_size=40,
    )
)
def test_names_agree_on_keys_like_a_bots(key):
    native = require_native()
    assert _format.zeroclaw_name(key) == native.zeroclaw_name(key)


def test_names_of_known_keys():
    for key, name in SWITCHING.items():
        assert _format.zeroclaw_name(key) == name
    with pytest.raises(ValueError, match="empty"):
        _format.zeroclaw_name("")
    with pytest.raises(ValueError, match="surrogate"):
        _format.zeroclaw_name("a\ud800")
    with pytest.raises(ValueError, match="too long"):
        _format.zeroclaw_name("ю" * 125)
    assert _format.zeroclaw_name("ю" * 124) == "ю" * 124


# --- adoption ------------------------------------------------------------------------------------


def test_a_switching_bot_finds_every_history(store_cls, tmp_path, caplog):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {name: [f"hello {name}", "more"] for name in SWITCHING.values()})
    store = store_cls(ws)
    with caplog.at_level(logging.INFO, logger="turnlog"):
        for key, name in SWITCHING.items():
            assert store.load(key) == [U(f"hello {name}"), U("more")], key
            assert store.load(key, limit=1) == [U("more")]
            store.append(key, U("after the switch"))
            assert store.load(key)[-1] == U("after the switch")
    adopted = [r for r in caplog.records if "adopted ZeroClaw's file" in r.getMessage()]
    assert len(adopted) == len(SWITCHING)  # once each, on the first call
    assert {r.args[0] for r in adopted} == set(SWITCHING)
    assert listing(ws) == {_format.key_to_name(key) + ".jsonl" for key in SWITCHING}
    assert store.zeroclaw_files() == {}
    assert store.list_sessions() == sorted(SWITCHING)


CALLS = {
    "load": lambda s, k: s.load(k),
    "load_limit": lambda s, k: s.load(k, limit=1),
    "load_with_timestamps": lambda s, k: [m for m, _ in s.load_with_timestamps(k)],
    "append": lambda s, k: s.append(k, U("new")),
    "append_many": lambda s, k: s.append_many(k, [U("new")]),
    "remove_last": lambda s, k: s.remove_last(k),
    "pop_last": lambda s, k: s.pop_last(k),
    "update_last": lambda s, k: s.update_last(k, U("changed")),
    "compact": lambda s, k: s.compact(k),
    "clear_messages": lambda s, k: s.clear_messages(k),
    "session_exists": lambda s, k: s.session_exists(k),
    "get_session_metadata": lambda s, k: s.get_session_metadata(k).message_count,
    "set_session_name": lambda s, k: s.set_session_name(k, "name"),
    "get_session_name": lambda s, k: s.get_session_name(k),
    "set_session_state": lambda s, k: s.set_session_state(k, "running", "t1"),
    "get_session_state": lambda s, k: s.get_session_state(k).state,
    "delete_session": lambda s, k: s.delete_session(k),
    "set_session_agent_alias": lambda s, k: s.set_session_agent_alias(k, "bot"),
    "get_session_agent_alias": lambda s, k: s.get_session_agent_alias(k),
    "set_session_context": lambda s, k: s.set_session_context(k, channel_id="c"),
    "set_session_times": lambda s, k: s.set_session_times(k, last_activity=datetime.now(UTC)),
    "adopt_zeroclaw_file": lambda s, k: s.adopt_zeroclaw_file(k),
}
RESULTS = {
    "load": [U("one"), U("two")],
    "load_limit": [U("two")],
    "load_with_timestamps": [U("one"), U("two")],
    "remove_last": True,
    "pop_last": U("two"),
    "update_last": True,
    "clear_messages": 2,
    "session_exists": True,
    "get_session_metadata": 2,
    "get_session_state": "idle",
    "delete_session": True,
    "set_session_times": True,
    "adopt_zeroclaw_file": True,
}
AFTER = {
    "append": [U("one"), U("two"), U("new")],
    "append_many": [U("one"), U("two"), U("new")],
    "remove_last": [U("one")],
    "pop_last": [U("one")],
    "update_last": [U("one"), U("changed")],
    "clear_messages": [],
    "delete_session": [],
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_call_adopts(store_cls, tmp_path, call):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"telegram_ключ": ["one", "two"], "x_y": ["other"]})
    store = store_cls(ws)
    result = CALLS[call](store, "telegram:ключ")
    if call in RESULTS:
        assert result == RESULTS[call]
    own = _format.key_to_name("telegram:ключ") + ".jsonl"
    expected = {"x_y.jsonl"} if call == "delete_session" else {own, "x_y.jsonl"}
    assert listing(ws) == expected
    assert store.load("telegram:ключ") == AFTER.get(call, [U("one"), U("two")])
    assert store.load("x:y") == [U("other")]  # untouched until its own key comes


def test_a_turnlog_workspace_never_adopts(store_cls, tmp_path):
    ws = tmp_path / "ws"
    store = store_cls(ws)
    store.append("user_1", U("first user"))
    store.append("telegram_ключ", U("a key with Cyrillic"))  # written escaped
    later = store_cls(ws)
    for each in (store, later):
        assert each.load("user:1") == []
        assert each.load("user/1") == []
        assert each.zeroclaw_files() == {}
    assert store.load("user_1") == [U("first user")]
    assert listing(ws) == {"user_1.jsonl", _format.key_to_name("telegram_ключ") + ".jsonl"}


def test_files_that_appear_after_the_first_opening_are_not_adopted(store_cls, tmp_path):
    ws = tmp_path / "ws"
    store_cls(ws)
    write_zeroclaw(ws, {"a_b": ["written by ZeroClaw later"]})
    store = store_cls(ws)
    assert store.load("a:b") == []
    assert store.load("a_b") == [U("written by ZeroClaw later")]


@pytest.mark.parametrize("first", ["a:b", "a/b", "a_b"])
def test_merged_keys_the_first_to_come_keeps_the_history(store_cls, tmp_path, first):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["shared"]})
    store = store_cls(ws)
    assert store.load(first) == [U("shared")]
    for other in {"a:b", "a/b", "a_b"} - {first}:
        assert store_cls(ws).load(other) == [], other  # a fresh store reads the record
        assert store.load(other) == [], other
    assert store.load(first) == [U("shared")]


def test_listing_shows_legacy_files_once_and_adopts_nothing(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"telegram_ключ": ["привет мир"], "plain_one": ["hi"], "东京": ["x"]})
    before = {name: (ws / "sessions" / name).read_bytes() for name in listing(ws)}
    store = store_cls(ws)
    assert store.list_sessions() == ["plain_one", "telegram_ключ", "东京"]
    described = {m.key: m.message_count for m in store.list_sessions_with_metadata()}
    assert described == {"plain_one": 1, "telegram_ключ": 1, "东京": 1}
    assert [m.key for m in store.search(SessionQuery(keyword="МИР"))] == ["telegram_ключ"]
    assert {name: (ws / "sessions" / name).read_bytes() for name in listing(ws)} == before
    assert set(store.zeroclaw_files()) == {"plain_one", "telegram_ключ", "东京"}
    store.append("telegram:ключ", U("ещё"))
    assert store.list_sessions() == ["plain_one", "telegram:ключ", "东京"]


def test_adoption_can_be_turned_off(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"telegram_ключ": ["one"], "a_b": ["two"]})
    store = store_cls(ws, adopt_zeroclaw_names=False)
    assert store.load("telegram:ключ") == []
    assert store.load("a:b") == []
    assert store.list_sessions() == ["a_b"]  # as before 0.2: no key names telegram_ключ.jsonl
    assert set(store.zeroclaw_files()) == {"telegram_ключ", "a_b"}  # still there to adopt
    assert listing(ws) == {"telegram_ключ.jsonl", "a_b.jsonl"}
    assert store_cls(ws).load("telegram:ключ") == [U("one")]


def test_a_workspace_of_an_earlier_turnlog_adopts_only_non_ascii_names(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"user_1": ["turnlog 0.1 wrote this for user_1"], "ключ_1": ["zc"]})
    (ws / ".turnlog" / "meta").mkdir(parents=True)  # what turnlog 0.1 leaves
    store = store_cls(ws)
    assert store.load("user:1") == []
    assert store.load("ключ:1") == [U("zc")]


def test_a_damaged_record_adopts_nothing(store_cls, tmp_path, caplog):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["one"]})
    store_cls(ws)
    (ws / ".turnlog" / RECORD / ".complete").unlink()  # a record cut short, or emptied by hand
    with caplog.at_level(logging.WARNING, logger="turnlog"):
        store = store_cls(ws)
    assert any("will not be adopted" in r.getMessage() for r in caplog.records)
    assert store.load("a:b") == []
    assert listing(ws) == {"a_b.jsonl"}


def test_migrate_takes_the_adopted_history(store_cls, tmp_path):
    from turnlog.backends.sqlite import SqliteSessionBackend

    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"agent_main_telegram_dm_user123": ["one", "two"]})
    target = SqliteSessionBackend(tmp_path / "target")
    report = migrate(store_cls(ws), target, keys=["agent:main:telegram:dm:user123"])
    assert report.messages == 2
    assert target.load("agent:main:telegram:dm:user123") == [U("one"), U("two")]


# --- ZeroClaw's names ----------------------------------------------------------------------------


def test_zeroclaw_names_share_a_workspace_with_zeroclaw(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"agent_main_telegram_dm_user123": ["from ZeroClaw"]})
    store = store_cls(ws, names="zeroclaw")
    assert store.names == "zeroclaw"
    key = "agent:main:telegram:dm:user123"
    assert store.load(key) == [U("from ZeroClaw")]
    store.append(key, U("from turnlog"))
    store.append("telegram:ключ", U("new"))
    assert listing(ws) == {"agent_main_telegram_dm_user123.jsonl", "telegram_ключ.jsonl"}
    assert store.list_sessions() == ["agent_main_telegram_dm_user123", "telegram_ключ"]
    assert store.load("agent/main/telegram/dm/user123") == store.load(key)  # lossy, as ZeroClaw
    assert store.load("telegram_ключ") == [U("new")]
    line = (ws / "sessions" / "telegram_ключ.jsonl").read_text(encoding="utf-8")
    assert json.loads(line) == {"role": "user", "content": "new"}
    store.set_session_name(key, "named")
    assert store.get_session_name("agent_main_telegram_dm_user123") == "named"
    with pytest.raises(ValueError, match="names must be"):
        store_cls(ws, names="lossy")


def test_leaving_zeroclaw_names_adopts_what_they_wrote(store_cls, tmp_path):
    ws = tmp_path / "ws"
    side_by_side = store_cls(ws, names="zeroclaw")
    side_by_side.append("agent:main:x", U("written with ZeroClaw's names"))
    store = store_cls(ws)
    assert store.load("agent:main:x") == [U("written with ZeroClaw's names")]


# --- two processes at once ---------------------------------------------------------------------

CHILD = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
ws, start, who = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    pass
store = Store(ws)
for i in range(20):
    store.append("telegram:ключ", {"role": "user", "content": f"{who} {i}"})
print(len(store.load("telegram:ключ")))
"""


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_first_touch_at_once(impl, tmp_path, round_):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"telegram_ключ": ["old 1", "old 2"]})
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import store_class\n"
        f"Store = store_class({impl!r})\n" + textwrap.dedent(CHILD)
    )
    start = str(time.time() + 1.0)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ws), start, who],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    logs = "".join(err for _, err in outputs)
    assert logs.count("adopted ZeroClaw's file") == 1, logs
    store = store_class(impl)(ws)
    messages = store.load("telegram:ключ")
    assert messages[:2] == [U("old 1"), U("old 2")]
    assert sorted(m.content for m in messages[2:]) == sorted(
        f"{who} {i}" for who in "ab" for i in range(20)
    )
    assert listing(ws) == {_format.key_to_name("telegram:ключ") + ".jsonl"}


# --- the command line ----------------------------------------------------------------------------


def test_cli_adopt_dry_run_then_apply(tmp_path, capsys):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"agent_main_telegram_dm_user123": ["a"], "telegram_ключ": ["b"]})
    write_zeroclaw(ws, {"a_b": ["c"], "unknown_file": ["d"]})
    keys = tmp_path / "keys.txt"
    keys.write_text("agent:main:telegram:dm:user123\ntelegram:ключ\na:b\na/b\nnobody\n\n")
    before = {name: (ws / "sessions" / name).read_bytes() for name in listing(ws)}

    assert main(["-w", str(ws), "doctor"]) == 0
    out = capsys.readouterr().out
    assert "4 ZeroClaw files not adopted yet" in out and "telegram_ключ.jsonl" in out

    assert main(["-w", str(ws), "adopt", "--keys", str(keys)]) == 0
    out = capsys.readouterr().out
    assert "would adopt 3 files for 5 keys" in out and "taken by an earlier key" in out
    assert {name: (ws / "sessions" / name).read_bytes() for name in listing(ws)} == before

    assert main(["-w", str(ws), "--json", "adopt", "--keys", str(keys), "--apply"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert [step["action"] for step in done["keys"]] == ["adopt", "adopt", "adopt", "taken", "none"]
    assert done["not_adopted"] == ["unknown_file"]
    assert listing(ws) == {
        _format.key_to_name(key) + ".jsonl"
        for key in ("agent:main:telegram:dm:user123", "telegram:ключ", "a:b")
    } | {"unknown_file.jsonl"}

    assert main(["-w", str(ws), "show", "telegram:ключ"]) == 0
    assert "b" in capsys.readouterr().out


def test_cli_reads_never_adopt(tmp_path, capsys):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"user_1": ["zc"]})
    assert main(["-w", str(ws), "show", "user_1"]) == 0
    assert main(["-w", str(ws), "compact", "--all"]) == 0
    capsys.readouterr()
    assert SessionStore(ws).load("user:1") == [U("zc")]  # still the bot's to adopt


def test_cli_adopt_refuses_a_bad_key_file(tmp_path, capsys):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["x"]})
    keys = tmp_path / "keys.txt"
    keys.write_text("good\n" + "x" * 300 + "\n")
    assert main(["-w", str(ws), "adopt", "--keys", str(keys), "--apply"]) == 2
    assert "keys.txt:2: invalid session key" in capsys.readouterr().err
    assert listing(ws) == {"a_b.jsonl"}


def test_cleanup_stale_judges_legacy_files_like_sessions(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"telegram_ключ": ["old"], "plain_old": ["old"], "fresh_one": ["new"]})
    for name in ("telegram_ключ", "plain_old"):
        os.utime(ws / "sessions" / f"{name}.jsonl", (1_000_000_000, 1_000_000_000))
    store = store_cls(ws)
    assert store.cleanup_stale(24) == 2
    assert listing(ws) == {"fresh_one.jsonl"}
    assert store.load("telegram:ключ") == []
    assert store.list_sessions() == ["fresh_one"]


# --- what the record guards against (found in review) --------------------------------------------


def test_a_file_turnlog_makes_under_a_legacy_name_is_never_adopted(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"u_1": ["ZeroClaw's"]})
    plain = store_cls(ws, adopt_zeroclaw_names=False)
    assert plain.delete_session("u_1")
    plain.append("u_1", U("turnlog's, for the key u_1"))
    assert store_cls(ws).load("u:1") == []
    assert store_cls(ws).load("u_1") == [U("turnlog's, for the key u_1")]


def test_a_legacy_file_deleted_and_made_again_by_turnlog_is_not_adopted(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"u_1": ["old"]})
    os.utime(ws / "sessions" / "u_1.jsonl", (1_000_000_000, 1_000_000_000))
    store = store_cls(ws, adopt_zeroclaw_names=False)
    assert store.cleanup_stale(1) == 1
    store.set_session_name("u_1", "a new user")
    assert store_cls(ws).load("u:1") == []
    assert store_cls(ws).get_session_name("u_1") == "a new user"


@pytest.mark.parametrize("next_key", ["a:b", "a_b", "a/b"])
def test_an_adoption_cut_between_link_and_unlink_gives_no_shared_file(
    store_cls, tmp_path, next_key
):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["shared"]})
    store = store_cls(ws)
    sessions = ws / "sessions"
    # What a crash of "a:b"'s adoption leaves: the marker naming a%3Ab, both names on one file.
    (ws / ".turnlog" / RECORD / "a_b").write_text("a%3Ab.jsonl")
    os.link(sessions / "a_b.jsonl", sessions / "a%3Ab.jsonl")
    if next_key == "a/b":  # and the workspace moved meanwhile (a restore, another mount)
        ws = ws.rename(tmp_path / "moved")
        sessions = ws / "sessions"
        store = store_cls(ws)
    store.append(next_key, U(f"{next_key} comes next"))
    for key in {"a:b", "a_b", "a/b"} - {next_key}:
        store.append(key, U(key))
    assert store.load("a:b")[0] == U("shared")  # the history stays with the key that took it
    for key in ("a_b", "a/b"):
        assert U("shared") not in store.load(key)
    assert all(os.stat(path).st_nlink == 1 for path in sessions.iterdir())
    assert len({os.stat(path).st_ino for path in sessions.iterdir()}) == 3


def test_a_backup_hard_link_of_a_legacy_file_is_no_crashed_adoption(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"user_1": ["mine"]})
    (tmp_path / "backup").mkdir()
    os.link(ws / "sessions" / "user_1.jsonl", tmp_path / "backup" / "user_1.jsonl")  # cp -al
    store = store_cls(ws)
    assert store.load("user_1") == [U("mine")]
    assert store.load("user:1") == []


def test_a_file_made_with_zeroclaw_names_and_remade_natively_is_not_adopted(store_cls, tmp_path):
    ws = tmp_path / "ws"
    native = store_cls(ws)  # opened first: knows of no legacy file
    side_by_side = store_cls(ws, names="zeroclaw")
    side_by_side.append("user_1", U("zeroclaw-named"))
    side_by_side.delete_session("user_1")
    native.append("user_1", U("secret of user_1"))
    assert store_cls(ws).load("user:1") == []
    assert store_cls(ws).load("user_1") == [U("secret of user_1")]


def test_a_stopped_holder_of_a_legacy_file_times_the_call_out_and_splits_nothing(
    store_cls, tmp_path
):
    import fcntl

    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["history"]})
    fd = os.open(ws / "sessions" / "a_b.jsonl", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        store = store_cls(ws, lock_timeout=0.2)  # opening waits for no lock
        with pytest.raises(TimeoutError):
            store.append("a:b", U("new"))
    finally:
        os.close(fd)
    assert store.load("a:b") == [U("history")]
    store.append("a:b", U("new"))
    assert store_cls(ws).load("a:b") == [U("history"), U("new")]


def test_a_legacy_name_too_long_for_a_key_is_left_alone(store_cls, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"ключ" * 20: ["long"], "x_y": ["short"]})
    store = store_cls(ws)
    assert store.list_sessions() == ["x_y"]
    assert [m.key for m in store.list_sessions_with_metadata()] == ["x_y"]
    assert store.search(SessionQuery(keyword="long")) == []
    assert store.cleanup_stale(1) == 0


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_a_legacy_name_that_holds_no_file_does_not_break_the_key(store_cls, tmp_path, kind):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["x"], "elsewhere": ["y"]})
    store = store_cls(ws)
    legacy = ws / "sessions" / "a_b.jsonl"
    legacy.unlink()
    if kind == "fifo":
        os.mkfifo(legacy)
    elif kind == "folder":
        legacy.mkdir()
    else:
        legacy.symlink_to(ws / "sessions" / "elsewhere.jsonl")
    assert store.load("a:b") == []
    store.append("a:b", U("works"))
    assert store.load("a:b") == [U("works")]


def test_migrate_without_keys_leaves_the_source_as_it_was(store_cls, tmp_path):
    from turnlog.backends.sqlite import SqliteSessionBackend

    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"agent_main_x": ["one"], "telegram_ключ": ["two"]})
    report = migrate(store_cls(ws), SqliteSessionBackend(tmp_path / "target"))
    assert report.messages == 2
    store = store_cls(ws)
    assert store.load("agent:main:x") == [U("one")]  # still the bot's key to adopt
    assert store.load("telegram:ключ") == [U("two")]


def test_adoption_keeps_metadata_written_with_zeroclaw_names(store_cls, tmp_path):
    ws = tmp_path / "ws"
    side_by_side = store_cls(ws, names="zeroclaw")
    side_by_side.append("a:b", U("hi"))
    side_by_side.set_session_name("a:b", "Alice")
    side_by_side.set_session_state("a:b", "running", "turn-1")
    store = store_cls(ws)
    assert store.get_session_name("a:b") == "Alice"
    state = store.get_session_state("a:b")
    assert (state.state, state.turn_id) == ("running", "turn-1")
    assert not (ws / ".turnlog" / "meta" / "a_b.json").exists()


def test_merged_keys_from_two_processes_one_takes_the_file(impl, tmp_path):
    ws = tmp_path / "ws"
    write_zeroclaw(ws, {"a_b": ["shared"]})
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from conftest import store_class\n"
        f"Store = store_class({impl!r})\n"
        "import time\n"
        "start = float(sys.argv[3])\n"
        "while time.time() < start: pass\n"
        "print(len(Store(sys.argv[1]).load(sys.argv[2])))\n"
    )
    start = str(time.time() + 1.0)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(ws), key, start], stdout=subprocess.PIPE, text=True
        )
        for key in ("a:b", "a/b")
    ]
    counts = sorted(int(child.communicate(timeout=120)[0]) for child in children)
    assert counts == [0, 1]  # one adopted the history, the other started afresh
    assert len(listing(ws)) == 1 and "a_b.jsonl" not in listing(ws)


def test_cli_adopt_reads_keys_as_the_bot_wrote_them(tmp_path, capsys):
    from turnlog.cli.adopt import read_keys

    keys = tmp_path / "keys.txt"
    keys.write_bytes("\ufeffa:b\r\nline\u2028break\nsame\n\n  \nsame\nlast".encode())
    assert read_keys(str(keys)) == ["a:b", "line\u2028break", "same", "last"]


def test_adoption_in_a_workspace_whose_path_is_not_utf8(store_cls, tmp_path):
    ws = Path(os.fsdecode(bytes(tmp_path) + b"/w\xffs"))
    write_zeroclaw(ws, {"a_b": ["history"]})
    store = store_cls(ws)
    assert store.load("a:b") == [U("history")]
    store.append("a:b", U("more"))
    assert store_cls(ws).load("a:b") == [U("history"), U("more")]
