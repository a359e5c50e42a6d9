"""Differential fuzzing of ``load``: arbitrary bytes in a session file (random bytes, and lines
built from records, their cuts, white space, junk and the format's edge cases), read by the Rust
and the pure store. No crash, and the same answer from both and from ``_spec`` (the independent
model): full loads, tail loads, counts, and what ``compact`` leaves.

The normal suite runs a few hundred examples (``HYPOTHESIS_PROFILE=ci``: 1,000); ``make fuzz``
runs ``check_file`` for ``FUZZ_SECONDS`` through ``fuzz/fuzz_load.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _spec
from _spec import canon_messages
from conftest import store_class

CI = os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"
KEY = "fuzz"
WHITESPACE = [" ", "\t", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u2000", "\u2028", "\u3000"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
records = st.builds(
    lambda role, content, extra: _spec.encode({"role": role, "content": content, **extra}),
    st.text(max_size=5),
    st.text(max_size=20),
    st.dictionaries(
        st.text(max_size=4).filter(lambda k: k not in ("role", "content")), values, max_size=3
    ),
)


@st.composite
def cut_records(draw):
    """A record cut short, or with a byte changed: what a torn or damaged write leaves."""
    record = draw(records)
    if draw(st.booleans()):
        return record[: draw(st.integers(0, len(record)))]
    at = draw(st.integers(0, len(record) - 1))
    return record[:at] + bytes([draw(st.integers(0, 255))]) + record[at + 1 :]


EDGE_CASES = [
    b'{"role":"a","content":"b","x":NaN}',
    b'{"role":"a","content":"b","x":-Infinity}',
    b'{"role":"a","content":"b","x":1e400}',
    b'{"role":"a","content":"b","x":-0.0,"y":-0,"z":1E+2}',
    b'{"role":"a","content":"\\ud800"}',
    b'{"role":"a","content":"\\udc00\\ud800"}',
    b'{"role":"a","content":"\\ud83d\\ude00"}',
    b'{"role":"a","role":"b","content":"c"}',
    b'{"role":"a","content":"b","o":{"k":1,"k":2}}',
    b'\xef\xbb\xbf{"role":"a","content":"b"}',
    b'{"role":"a","content":"b\x00"}',
    b'{"role":"a","content":"b\x1f"}',
    b'{"role":"a","content":"b"}{"role":"a","content":"b"}',
    b'{"role":"a","content":"b"},',
    b'{"role":"a","content":"\\x"}',
    b'{"role":"a","content":"\xc0\xaf"}',  # overlong
    b'{"role":"a","content":"\xed\xa0\x80"}',  # an encoded surrogate
    b'{"role":null,"content":"b"}',
    b'{"content":"b"}',
    b"[]",
    b'"role"',
    b'{"role":"a","content":"b","n":' + b"9" * 4300 + b"}",
    b'{"role":"a","content":"b","n":-' + b"9" * 4301 + b"}",
    b'{"role":"a","content":"b","d":' + b"[" * 127 + b"]" * 127 + b"}",
    b'{"role":"a","content":"b","d":' + b"[" * 128 + b"]" * 128 + b"}",
    b'{"role":"a","content":"b","d":' + b"{" * 40 + b"}" * 40 + b"}",
]

pieces = st.one_of(
    records,
    cut_records(),
    st.sampled_from(EDGE_CASES),
    st.sampled_from(WHITESPACE).map(str.encode),
    st.sampled_from([b"\n", b"\r\n", b"\n\n", b"junk", b"{", b"}", b'"', b"\\", b"\xff"]),
    st.binary(max_size=8),
)


@st.composite
def file_bytes(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    parts = draw(st.lists(pieces, max_size=12))
    # Most pieces end a line; some run into the next one.
    return b"".join(p + (b"\n" if draw(st.integers(0, 3)) else b"") for p in parts)


def check_file(data: bytes, root: str) -> None:
    """Both stores read ``data`` as ``_spec`` does, and compact it to the same bytes."""
    rust_cls, pure_cls = store_class("rust"), store_class("pure")
    stores = [rust_cls(os.path.join(root, "rust")), pure_cls(os.path.join(root, "pure"))]
    for store in stores:
        _spec.session_path(store, KEY).write_bytes(data)
    expected = canon_messages(_spec.messages(data))
    for store in stores:
        assert canon_messages(store.load(KEY)) == expected, store
        for limit in (1, 2, 5):
            assert canon_messages(store.load(KEY, limit=limit)) == expected[-limit:], store
        assert store.get_session_metadata(KEY).message_count == len(expected)
        store.compact(KEY)
    compacted = [_spec.session_path(store, KEY).read_bytes() for store in stores]
    assert compacted[0] == compacted[1] == _spec.compact(data)


@pytest.fixture(scope="module")
def fuzz_root():
    store_class("rust")  # skip (fail under CI) without the native module
    root = tempfile.mkdtemp(prefix="turnlog-fuzz-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@settings(
    max_examples=1000 if CI else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=file_bytes())
def test_rust_and_pure_load_the_same(fuzz_root, data):
    check_file(data, fuzz_root)


@settings(max_examples=300 if CI else 100, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes(fuzz_root, data):
    check_file(data, fuzz_root)


def test_check_file_catches_a_difference(fuzz_root, monkeypatch):
    """The property is not vacuous: a model that drops the last message makes it fail."""
    data = _spec.encode({"role": "a", "content": "b"}) * 2
    check_file(data, fuzz_root)
    real = _spec.messages
    monkeypatch.setattr(_spec, "messages", lambda d, limit=None: real(d, limit)[:-1])
    with pytest.raises(AssertionError):
        check_file(data, fuzz_root)
