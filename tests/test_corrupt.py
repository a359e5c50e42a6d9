"""Damaged files: both stores must read and rewrite them as the pure reference and the independent
spec model in ``_spec`` do, byte for byte."""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _spec
from _spec import canon_messages, decode_line
from conftest import require_native
from turnlog import ChatMessage
from turnlog.backends import format as fmt


def rec(role="user", content="c", **extra) -> bytes:
    record = {"role": role, "content": content, **extra}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def deep(levels: int) -> bytes:
    """A message line nested ``levels`` deep in all (the object itself is level 1)."""
    inner = levels - 1
    return b'{"role":"u","content":"c","d":' + b"[" * inner + b"]" * inner + b"}"


def deep_dict(levels: int) -> bytes:
    inner = levels - 1
    return (
        b'{"role":"u","content":"c","d":'
        + b'{"k":' * (inner - 1)
        + b"{}"
        + b"}" * (inner - 1)
        + b"}"
    )


V = True  # valid
C = False  # corrupt

# (name, line without newline, valid?). The labels are the contract; both the spec model and the
# reference parser are checked against them.
LINE_KINDS: list[tuple[str, bytes, bool]] = [
    # valid
    ("plain", rec(), V),
    ("assistant", rec("assistant", "Hello there"), V),
    ("unicode", rec("user", "héllo ключ 😀 中文"), V),
    ("escapes", rec("user", 'a"b\\c\n\t\x00\x1f/'), V),
    ("extras", rec(name="bot", n=[1, 2.5, None, True, {"x": "y"}]), V),
    ("empty-strings", rec("", ""), V),
    ("other-order", b'{"content":"c","x":1,"role":"user"}', V),
    ("json-whitespace", b'{ "role" : "user" ,\t"content" : "c" , "x" : [ 1 , 2 ] }', V),
    ("crlf", rec() + b"\r", V),
    ("lead-space", b"   " + rec(), V),
    ("tabs", b"\t" + rec() + b"\t\t", V),
    ("nbsp", "\u00a0".encode() + rec() + "\u00a0".encode(), V),
    ("ideographic-space", "\u3000".encode() + rec() + "\u3000\u3000".encode(), V),
    (
        "unicode-spaces",
        "\u2028\u1680\u205f\x85\x0b\x0c".encode() + rec() + "\u2000\u200a\u202f\u2029".encode(),
        V,
    ),
    ("surrogate-pair", b'{"role":"user","content":"\\ud83d\\ude00"}', V),
    ("surrogate-pair-upper", b'{"role":"user","content":"x\\uD83D\\uDE00y"}', V),
    ("pair-in-extra-key", b'{"role":"user","content":"c","\\ud83d\\ude00":1}', V),
    ("escaped-backslash-u", b'{"role":"user","content":"\\\\ud800"}', V),
    ("unicode-escapes", b'{"role":"\\u0075ser","content":"\\u00e9\\/\\b\\f"}', V),
    ("depth-128", deep(128), V),
    ("depth-128-dict", deep_dict(128), V),
    ("brackets-in-string", b'{"role":"u","content":"' + b"[{" * 300 + b'"}', V),
    ("int-4300", b'{"role":"u","content":"c","n":' + b"7" * 4300 + b"}", V),
    ("neg-int-4300", b'{"role":"u","content":"c","n":-' + b"9" * 4300 + b"}", V),
    ("float-overflow", b'{"role":"u","content":"c","f":1e400}', V),
    ("neg-float-overflow", b'{"role":"u","content":"c","f":-1E+400}', V),
    ("float-long", b'{"role":"u","content":"c","f":0.' + b"3" * 5000 + b"}", V),
    ("numbers", b'{"role":"u","content":"c","a":-0,"b":-0.0,"c":1e-7,"d":12E3,"e":0.5e-2}', V),
    ("big-int", b'{"role":"u","content":"c","n":123456789012345678901234567890}', V),
    ("null-true-false", b'{"role":"u","content":"c","a":null,"b":true,"c":false}', V),
    ("noncharacter", rec("user", "\ufffe\uffff"), V),
    ("del-char", rec("user", "\x7f"), V),
    # corrupt
    ("empty", b"", C),
    ("spaces", b"   \t ", C),
    ("cr", b"\r", C),
    ("unicode-blank", "\u3000\u00a0".encode(), C),
    ("garbage", b"this is not json", C),
    ("open-brace", b"{", C),
    ("close-open", b"}{", C),
    ("truncated", rec()[:-5], C),
    ("truncated-escape", b'{"role":"user","content":"ab\\', C),
    ("invalid-utf8", b"\xff\xfe\xfd", C),
    ("invalid-utf8-in-string", b'{"role":"user","content":"a\xffb"}', C),
    ("overlong-utf8", b'{"role":"user","content":"\xc0\xaf"}', C),
    ("encoded-surrogate", b'{"role":"user","content":"\xed\xa0\x80"}', C),
    ("truncated-utf8", b'{"role":"user","content":"\xe4\xb8"}', C),
    ("array", b'[{"role":"user","content":"c"}]', C),
    ("string", b'"role"', C),
    ("number", b"42", C),
    ("null", b"null", C),
    ("true", b"true", C),
    ("empty-object", b"{}", C),
    ("role-int", b'{"role":1,"content":"c"}', C),
    ("role-null", b'{"role":null,"content":"c"}', C),
    ("role-list", b'{"role":["user"],"content":"c"}', C),
    ("content-object", b'{"role":"user","content":{"text":"c"}}', C),
    ("content-number", b'{"role":"user","content":3}', C),
    ("content-bool", b'{"role":"user","content":true}', C),
    ("no-role", b'{"content":"c"}', C),
    ("no-content", b'{"role":"user"}', C),
    ("lone-high", b'{"role":"user","content":"\\ud800"}', C),
    ("lone-low", b'{"role":"user","content":"a\\udc00"}', C),
    ("lone-in-role", b'{"role":"\\ud83d","content":"c"}', C),
    ("reversed-pair", b'{"role":"user","content":"\\ude00\\ud83d"}', C),
    ("high-then-letter", b'{"role":"user","content":"\\ud83d\\u0041"}', C),
    ("high-then-char", b'{"role":"user","content":"\\ud83dx"}', C),
    ("lone-in-extra", b'{"role":"user","content":"c","x":["\\udfff"]}', C),
    ("lone-in-extra-key", b'{"role":"user","content":"c","\\ud800":1}', C),
    ("lone-nested-key", b'{"role":"user","content":"c","x":{"a\\udbff":1}}', C),
    ("trailing-junk", rec() + b"x", C),
    ("two-objects", rec() + rec(), C),
    ("trailing-comma-after", rec() + b",", C),
    ("trailing-comma-inside", b'{"role":"user","content":"c",}', C),
    ("nan", b'{"role":"u","content":"c","x":NaN}', C),
    ("infinity", b'{"role":"u","content":"c","x":Infinity}', C),
    ("neg-infinity", b'{"role":"u","content":"c","x":-Infinity}', C),
    ("dup-role", b'{"role":"user","content":"c","role":"assistant"}', C),
    ("dup-content", b'{"role":"user","content":"c","content":"d"}', C),
    ("dup-extra", b'{"role":"user","content":"c","x":1,"x":1}', C),
    ("dup-nested", b'{"role":"user","content":"c","x":{"a":1,"a":2}}', C),
    ("bom-start", "\ufeff".encode() + rec(), C),
    ("bom-end", rec() + "\ufeff".encode(), C),
    ("nul-outside", rec() + b"\x00", C),
    ("nul-before", b"\x00" + rec(), C),
    ("nul-in-string", b'{"role":"user","content":"a\x00b"}', C),
    ("raw-tab-in-string", b'{"role":"user","content":"a\tb"}', C),
    ("raw-cr-in-string", b'{"role":"user","content":"a\rb"}', C),
    ("depth-129", deep(129), C),
    ("depth-129-dict", deep_dict(129), C),
    ("depth-5000", deep(5000), C),
    ("int-4301", b'{"role":"u","content":"c","n":' + b"7" * 4301 + b"}", C),
    ("neg-int-4301", b'{"role":"u","content":"c","n":-' + b"9" * 4301 + b"}", C),
    ("fs-before", b"\x1c" + rec(), C),
    ("us-after", rec() + b"\x1f", C),
    ("zero-width-space", "\u200b".encode() + rec(), C),
    ("single-quotes", b"{'role':'user','content':'c'}", C),
    ("unquoted-keys", b'{role:"user",content:"c"}', C),
    ("leading-zero", b'{"role":"u","content":"c","n":01}', C),
    ("plus-number", b'{"role":"u","content":"c","n":+1}', C),
    ("dot-number", b'{"role":"u","content":"c","n":1.}', C),
    ("hex-number", b'{"role":"u","content":"c","n":0x10}', C),
    ("arabic-digit", '{"role":"u","content":"c","n":1\u0662}'.encode(), C),
    ("bad-escape", b'{"role":"user","content":"\\x41"}', C),
    ("short-unicode-escape", b'{"role":"user","content":"\\u12"}', C),
    ("unicode-escape-sign", b'{"role":"user","content":"\\u+123"}', C),
    ("True-literal", b'{"role":"u","content":"c","x":True}', C),
    ("comment", rec() + b" // note", C),
    ("inner-nbsp", '{"role":"user",\u00a0"content":"c"}'.encode(), C),
]

VALID_KINDS = [kind for kind in LINE_KINDS if kind[2]]
CORRUPT_KINDS = [kind for kind in LINE_KINDS if not kind[2]]


def make_corpus() -> list[tuple[str, bytes]]:
    """Damaged files: every line kind alone (with and without newline), then random mixtures."""
    corpus: list[tuple[str, bytes]] = [("empty-file", b""), ("only-newline", b"\n")]
    for name, line, _ in LINE_KINDS:
        corpus.append((f"{name}", line + b"\n"))
        corpus.append((f"{name}-torn", line))
        corpus.append(
            (f"{name}-between", rec(content="a") + b"\n" + line + b"\n" + rec(content="b"))
        )
    rng = random.Random(20240613)
    for index in range(150):
        lines = []
        for _ in range(rng.randint(0, 10)):
            name, line, _ = rng.choice(VALID_KINDS if rng.random() < 0.4 else CORRUPT_KINDS)
            if name == "plain":
                line = rec(rng.choice(["user", "assistant"]), f"m{index}-{len(lines)}")
            ending = b"\r\n" if rng.random() < 0.2 else b"\n"
            lines.append(line + ending)
        data = b"".join(lines)
        if lines and rng.random() < 0.35:  # a torn last line
            cut = rng.randint(0, len(lines[-1]) - 1)
            data = data[: len(data) - len(lines[-1]) + cut]
        corpus.append((f"mix-{index}", data))
    return corpus


CORPUS = make_corpus()


@pytest.mark.parametrize(("name", "line", "valid"), LINE_KINDS, ids=[k[0] for k in LINE_KINDS])
def test_line_kind_labels(name, line, valid):
    assert (decode_line(line) is not None) == valid, "spec model"
    assert (fmt.valid_text(line) is not None) == valid, "reference parser"
    assert (fmt.parse_line(line) is not None) == valid
    if valid:
        assert fmt.valid_text(line) == decode_line(line)[0]
        assert canon_messages([fmt.parse_line(line)]) == canon_messages([decode_line(line)[1]])


def test_special_values_load():
    inf = fmt.parse_line(b'{"role":"u","content":"c","f":1e400,"g":-1e400}')
    assert inf.extra == {"f": float("inf"), "g": float("-inf")}
    pair = fmt.parse_line(b'{"role":"u","content":"\\ud83d\\ude00"}')
    assert pair.content == "😀"
    big = fmt.parse_line(b'{"role":"u","content":"c","n":' + b"7" * 4300 + b"}")
    assert big.extra["n"] == int("7" * 4300)


@pytest.fixture
def workspace(tmp_path):
    """A factory of fresh workspaces, each with one session ``s`` holding given bytes."""
    counter = iter(range(10**9))

    def make(cls, data: bytes):
        root = tmp_path / f"w{next(counter)}"
        store = cls(root)
        path = os.path.join(store.sessions_dir, "s.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        return store, path

    return make


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def describe(name, data):
    return f"file {name!r}: {data[:300]!r}"


def test_load(store_cls, pure_cls, workspace):
    for name, data in CORPUS:
        expected = _spec.messages(data)
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            assert canon_messages(store.load("s")) == canon_messages(expected), describe(name, data)
            for limit in (0, 1, 2, 5):
                got = store.load("s", limit=limit)
                assert canon_messages(got) == canon_messages(_spec.messages(data, limit)), (
                    f"limit={limit} " + describe(name, data)
                )
            assert store.get_session_metadata("s").message_count == len(expected)
            assert read_file(path) == data


def test_compact(store_cls, pure_cls, workspace):
    for name, data in CORPUS:
        expected = _spec.compact(data)
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            store.compact("s")
            assert read_file(path) == expected, describe(name, data)
            assert canon_messages(store.load("s")) == canon_messages(_spec.messages(data))


def test_remove_last(store_cls, pure_cls, workspace):
    for name, data in CORPUS:
        removed, expected = _spec.remove_last(data)
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            assert store.remove_last("s") is removed, describe(name, data)
            assert read_file(path) == expected, describe(name, data)
            if removed:
                assert canon_messages(store.load("s")) == canon_messages(_spec.messages(data)[:-1])


NEW = ChatMessage("assistant", "new ✓", v=[1.5, None])


def test_update_last(store_cls, pure_cls, workspace):
    record = _spec.encode(NEW.to_dict())
    assert record == b'{"role":"assistant","content":"new \xe2\x9c\x93","v":[1.5,null]}\n'
    for name, data in CORPUS:
        updated, expected = _spec.update_last(data, record)
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            assert store.update_last("s", NEW) is updated, describe(name, data)
            assert read_file(path) == expected, describe(name, data)


def test_append(store_cls, pure_cls, workspace):
    record = _spec.encode(NEW.to_dict())
    for name, data in CORPUS:
        expected = _spec.append(data, record)
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            store.append("s", NEW)
            assert read_file(path) == expected, describe(name, data)
            assert store.load("s", limit=1) == [NEW], describe(name, data)
            assert canon_messages(store.load("s")) == canon_messages(_spec.messages(expected))


def test_clear_messages(store_cls, pure_cls, workspace):
    for name, data in CORPUS:
        for cls in (store_cls, pure_cls):
            store, path = workspace(cls, data)
            assert store.clear_messages("s") == _spec.count(data), describe(name, data)
            assert read_file(path) == b""


def test_operation_sequence(store_cls, pure_cls, tmp_path):
    """A chain of operations on each mixed file: every store's bytes equal the model's."""
    rng = random.Random(7)
    for name, data in CORPUS:
        if not name.startswith("mix-"):
            continue
        stores = [
            cls(tmp_path / name / label) for label, cls in (("a", store_cls), ("b", pure_cls))
        ]
        model = data
        for store in stores:
            with open(os.path.join(store.sessions_dir, "s.jsonl"), "wb") as f:
                f.write(data)
        for step in range(6):
            op = rng.choice(["remove", "update", "append", "compact", "junk"])
            message = ChatMessage("user", f"{name}/{step}")
            record = _spec.encode(message.to_dict())
            if op == "remove":
                result, model = _spec.remove_last(model)
                assert [s.remove_last("s") for s in stores] == [result, result]
            elif op == "update":
                result, model = _spec.update_last(model, record)
                assert [s.update_last("s", message) for s in stores] == [result, result]
            elif op == "append":
                model = _spec.append(model, record)
                for store in stores:
                    store.append("s", message)
            elif op == "compact":
                model = _spec.compact(model)
                for store in stores:
                    store.compact("s")
            else:
                junk = rng.choice(CORRUPT_KINDS)[1] + rng.choice([b"\n", b""])
                model += junk
                for store in stores:
                    with open(os.path.join(store.sessions_dir, "s.jsonl"), "ab") as f:
                        f.write(junk)
            for store in stores:
                path = os.path.join(store.sessions_dir, "s.jsonl")
                assert read_file(path) == model, f"after {op}: " + describe(name, data)
                loaded = canon_messages(store.load("s"))
                assert loaded == canon_messages(_spec.messages(model))
        shutil.rmtree(tmp_path / name)


# --- random lines -------------------------------------------------------------------------------

FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"role"',
    b'"content"',
    b'"user"',
    b'"x"',
    b"1",
    b"-0.5e3",
    b"1e400",
    b"null",
    b"true",
    b" ",
    b"\t",
    b"\r",
    b"\\",
    b'"',
    b"\\u",
    b"d83d",
    b"\\ud800",
    b"\\ude00",
    b"\xc2\xa0",
    b"\xe3\x80\x80",
    b"\xff",
    b"\x00",
    b"\x1c",
    "é".encode(),
    "\ufeff".encode(),
]


def fragments_line():
    return st.lists(st.sampled_from(FRAGMENTS), max_size=16).map(b"".join)


def near_valid_line():
    """Valid records, then damaged by a few byte edits."""
    record = st.builds(
        lambda r, c: rec(r, c),
        st.text(max_size=5),
        st.text(max_size=10),
    )
    edit = st.tuples(st.integers(0, 200), st.sampled_from([*FRAGMENTS, b""]), st.integers(0, 3))

    def apply(base, edits):
        data = bytearray(base)
        for position, insert, remove in edits:
            position %= len(data) + 1
            data[position : position + remove] = insert
        return bytes(data)

    return st.builds(apply, record, st.lists(edit, max_size=3))


@given(st.one_of(fragments_line(), near_valid_line(), st.binary(max_size=40)))
def test_random_lines_agree(line):
    line = line.replace(b"\n", b"")
    model = decode_line(line)
    assert (fmt.valid_text(line) is not None) == (model is not None)
    if model is not None:
        assert fmt.valid_text(line) == model[0]
        assert canon_messages([fmt.parse_line(line)]) == canon_messages([model[1]])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(fragments_line(), near_valid_line()), max_size=6), st.booleans())
def test_random_files_agree(store_cls, pure_cls, tmp_path, lines, torn):
    data = b"\n".join(line.replace(b"\n", b"") for line in lines)
    if lines and not torn:
        data += b"\n"
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        results = []
        for label, cls in (("a", store_cls), ("b", pure_cls)):
            store = cls(os.path.join(root, label))
            path = os.path.join(store.sessions_dir, "s.jsonl")
            with open(path, "wb") as f:
                f.write(data)
            loaded = canon_messages(store.load("s"))
            assert loaded == canon_messages(_spec.messages(data))
            removed = store.remove_last("s")
            after_remove = read_file(path)
            assert (removed, after_remove) == _spec.remove_last(data)
            store.compact("s")
            results.append((loaded, removed, after_remove, read_file(path)))
        assert results[0] == results[1]
        assert results[0][3] == _spec.compact(_spec.remove_last(data)[1])


@pytest.fixture(params=[0, 640])
def interpreter_digit_limit(request):
    """Run with another ``sys.set_int_max_str_digits`` (as PYTHONINTMAXSTRDIGITS would set)."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(request.param)
    yield request.param
    sys.set_int_max_str_digits(previous)


def test_digit_limit_is_fixed_when_reading(store, interpreter_digit_limit):
    """The 4300-digit rule is part of the format: it must not move with the interpreter's
    setting, or processes would disagree on which lines are corrupt (and which line
    ``remove_last`` removes); and a corrupt line is never fatal."""
    path = os.path.join(store.sessions_dir, "s.jsonl")
    with open(path, "wb") as f:
        for digits in (1000, 4300, 4301, 5000):
            f.write(b'{"role":"u","content":"%d","n":' % digits + b"7" * digits + b"}\n")
    loaded = store.load("s")
    sys.set_int_max_str_digits(0)  # to compare the values
    assert [m.content for m in loaded] == ["1000", "4300"]
    assert [m.extra["n"] for m in loaded] == [int("7" * 1000), int("7" * 4300)]


def test_digit_limit_is_fixed_when_writing(store):
    """With no interpreter limit (PYTHONINTMAXSTRDIGITS=0) a message whose line would read back
    as corrupt (an integer of more than 4300 digits) must still be refused, not written."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(ValueError):
            store.append("t", {"role": "u", "content": "c", "n": int("7" * 4301)})
        assert not os.path.exists(os.path.join(store.sessions_dir, "t.jsonl"))
        store.append("t", {"role": "u", "content": "c", "n": int("7" * 4300)})
        with open(os.path.join(store.sessions_dir, "t.jsonl"), "rb") as f:
            assert f.read() == b'{"role":"u","content":"c","n":' + b"7" * 4300 + b"}\n"
    finally:
        sys.set_int_max_str_digits(previous)


def _native_parse_lines():
    return require_native().parse_lines


def test_native_parse_lines_agrees_on_every_line_kind():
    """``parse_lines`` (records kept apart, as Redis list elements) is the Rust parser: one
    result per line, the same message the pure reference reads, ``None`` for a corrupt one."""
    lines = [line for _, line, _ in LINE_KINDS]
    native = _native_parse_lines()(lines)
    assert len(native) == len(lines)
    assert [m is not None for m in native] == [valid for _, _, valid in LINE_KINDS]
    expected = [fmt.parse_line(line) for line in lines]
    assert canon_messages([m for m in native if m]) == canon_messages([m for m in expected if m])


@given(st.one_of(fragments_line(), near_valid_line(), st.binary(max_size=40)))
def test_native_parse_lines_agrees_on_random_records(line):
    # A newline inside a record is JSON white space there, not a line break.
    (native,) = _native_parse_lines()([line])
    reference = fmt.parse_line(line)
    assert (native is None) == (reference is None)
    if native is not None:
        assert canon_messages([native]) == canon_messages([reference])
