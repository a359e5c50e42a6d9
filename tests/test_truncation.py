"""A session file cut at every byte offset, as a crash or a full disk can leave it.

For each cut, both stores load exactly the messages complete before the cut (a last line cut
just before its newline, or in the white space after its object, is complete), the tail reads
(``limit``) and the count agree, and one more append, by either store, lands intact after them.
"""

from __future__ import annotations

import pytest

import _spec
from _spec import canon_messages
from conftest import store_class

pytestmark = pytest.mark.timeout(300)

KEY = "cut/ключ"

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "héllo wörld — ключ 日本語 😀", "name": "ann"},
    {
        "role": "assistant",
        "content": 'quote " backslash \\ newline \n tab \t nul-ish \u0001 sep \u2028 end',
        "meta": {"tokens": [3, 4.5, -1e-05], "ok": True, "none": None, "é": "ü"},
    },
    {"role": "tool", "content": "", "n": 12345678901234567890123},
    {"role": "user", "content": "😀" * 5 + "last"},
]


def clean_file() -> tuple[bytes, list[tuple[int, dict]]]:
    """What the stores write: ``(bytes, [(offset just past each object, message)])``."""
    data, ends = b"", []
    for message in MESSAGES:
        line = _spec.encode(message)
        data += line
        ends.append((len(data) - 1, message))
    return data, ends


def messy_file() -> tuple[bytes, list[tuple[int, dict]]]:
    """Lines another writer may leave: padding, CRLF, junk, an empty line, leading U+3000."""
    parts: list[tuple[bytes, dict | None]] = [
        (b"  " + _spec.encode(MESSAGES[0])[:-1] + b" \t\r\n", MESSAGES[0]),
        (b"junk {not json}\n", None),
        ("\u3000".encode() + _spec.encode(MESSAGES[1]), MESSAGES[1]),
        (b"\n", None),
        (_spec.encode(MESSAGES[2])[:-1] + b"\r\n", MESSAGES[2]),
        (b'{"role":"user","content":"\\ud800"}\n', None),  # lone surrogate: corrupt
        (_spec.encode(MESSAGES[4]), MESSAGES[4]),
    ]
    data, ends = b"", []
    for raw, message in parts:
        if message is not None:
            ends.append((len(data) + raw.rindex(b"}") + 1, message))
        data += raw
    return data, ends


FILES = {"clean": clean_file, "messy": messy_file}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_cut_loads_the_complete_messages(impl, pure_cls, tmp_path, name):
    data, ends = FILES[name]()
    stores = [store_class(impl)(tmp_path / "ws"), pure_cls(tmp_path / "ws")]
    path = _spec.session_path(stores[0], KEY)
    new = {"role": "user", "content": "after the cut ✓", "cut": True}
    checked = 0
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        expected = canon_messages([m for end, m in ends if end <= cut])
        # The independent model of the format agrees on what is complete.
        assert canon_messages(_spec.messages(prefix)) == expected, cut
        path.write_bytes(prefix)
        for store in stores:
            assert canon_messages(store.load(KEY)) == expected, (cut, store)
            for limit in (1, 2):
                got = canon_messages(store.load(KEY, limit=limit))
                assert got == expected[-limit:], (cut, limit, store)
            assert store.get_session_metadata(KEY).message_count == len(expected)
        writer = stores[cut % 2]
        writer.append(KEY, new)
        after = path.read_bytes()
        glue = b"\n" if prefix and not prefix.endswith(b"\n") else b""
        assert after == prefix + glue + _spec.encode(new), cut
        for store in stores:
            assert canon_messages(store.load(KEY)) == [*expected, *canon_messages([new])], cut
            assert canon_messages(store.load(KEY, limit=1)) == canon_messages([new]), cut
        checked += 1
    assert checked == len(data) + 1 > 400


def test_a_cut_just_before_the_newline_is_a_message(impl, tmp_path):
    data, _ = clean_file()
    store = store_class(impl)(tmp_path / "ws")
    path = _spec.session_path(store, KEY)
    path.write_bytes(data[:-1])  # the last line lost only its newline
    assert canon_messages(store.load(KEY)) == canon_messages(MESSAGES)
    path.write_bytes(data[:-2])  # ...and its closing brace: corrupt
    assert canon_messages(store.load(KEY)) == canon_messages(MESSAGES[:-1])
    # remove_last on a torn tail removes the last whole message and keeps the fragment.
    assert store.remove_last(KEY) is True
    lines = data[:-2].split(b"\n")
    assert path.read_bytes() == b"\n".join([*lines[:-2], lines[-1]])
    assert canon_messages(store.load(KEY)) == canon_messages(MESSAGES[:-2])
