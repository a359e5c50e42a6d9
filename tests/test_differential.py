"""Stateful differential test: the Rust and pure stores, driven with the same operations, must
return the same results and leave the same bytes as a model of the file (``_spec``).

Two set-ups: each store on its own workspace, and both stores on one shared workspace, taking
turns. Under ``impl="pure"`` the second store is another pure store.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import _spec
from _spec import canon, canon_messages
from turnlog import ChatMessage
from turnlog.backends.format import key_to_name

KEYS = ["s", "a/b", "ключ", "x.jsonl"]

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
    ),
    max_leaves=8,
)
extra_names = st.text(max_size=6).filter(lambda name: name not in ("role", "content"))


def _build(role, content, extra, as_dict):
    if as_dict:
        return {"role": role, "content": content, **extra}
    return ChatMessage(role, content, **extra)


messages = st.builds(
    _build,
    role=st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), st.text(max_size=6)),
    content=st.text(max_size=30),
    extra=st.one_of(st.just({}), st.dictionaries(extra_names, json_values, max_size=3)),
    as_dict=st.booleans(),
)

RECORD = b'{"role":"user","content":"raw"}'
junk = st.one_of(
    st.sampled_from(
        [
            b"garbage\n",
            b"\n",
            b"\r\n",
            b"\xff\xfe\n",
            b'{"role":"user","con',  # a torn tail
            b'{"role":"user","content":"\\ud800"}\n',
            b'{"role":"user","content":1}\n',
            b"  " + RECORD + b" \r\n",  # valid, not compact
            "\u3000".encode() + RECORD + b"\n",
            RECORD,  # valid, no newline
            RECORD + RECORD + b"\n",
            b"[]\n",
        ]
    ),
    st.binary(max_size=12),
)
limits = st.one_of(st.none(), st.integers(min_value=0, max_value=12))


def as_dict(message):
    return message if isinstance(message, dict) else message.to_dict()


class StoreMachine(RuleBasedStateMachine):
    """Configured by ``configure`` before each run."""

    base: str = ""
    classes: tuple = ()
    shared: bool = False

    def __init__(self):
        super().__init__()
        self.root = tempfile.mkdtemp(dir=self.base)
        if self.shared:
            workspace = os.path.join(self.root, "ws")
            self.stores = [cls(workspace) for cls in self.classes]
            self.workspaces = [self.stores[0].sessions_dir]
        else:
            self.stores = [
                cls(os.path.join(self.root, f"ws{i}")) for i, cls in enumerate(self.classes)
            ]
            self.workspaces = [store.sessions_dir for store in self.stores]
        self.model: dict[str, bytes] = {}

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------------------------

    def actors(self, who):
        """The stores that perform an operation: all of them, or one in turn when shared."""
        if self.shared:
            return [self.stores[who % len(self.stores)]]
        return self.stores

    def each(self, who, call):
        return [call(store) for store in self.actors(who)]

    def set_model(self, key, data):
        if data is None:
            self.model.pop(key, None)
        else:
            self.model[key] = data

    # --- rules -----------------------------------------------------------------------------------

    @initialize(key=st.sampled_from(KEYS), message=messages)
    def start(self, key, message):
        self.append(key, message, 0)

    @rule(key=st.sampled_from(KEYS), message=messages, who=st.integers(0, 1))
    def append(self, key, message, who):
        assert self.each(who, lambda s: s.append(key, message)) == [None] * len(self.actors(who))
        record = _spec.encode(as_dict(message))
        self.set_model(key, _spec.append(self.model.get(key), record))
        for store in self.stores:
            assert canon_messages(store.load(key, limit=1)) == canon_messages([message])

    @rule(key=st.sampled_from(KEYS), batch=st.lists(messages, max_size=4), who=st.integers(0, 1))
    def append_many(self, key, batch, who):
        self.each(who, lambda s: s.append_many(key, batch))
        if batch:
            records = b"".join(_spec.encode(as_dict(m)) for m in batch)
            self.set_model(key, _spec.append(self.model.get(key), records))
            for store in self.stores:
                got = store.load(key, limit=len(batch))
                assert canon_messages(got) == canon_messages(batch)

    @rule(key=st.sampled_from(KEYS), who=st.integers(0, 1))
    def remove_last(self, key, who):
        removed, data = _spec.remove_last(self.model.get(key))
        assert self.each(who, lambda s: s.remove_last(key)) == [removed] * len(self.actors(who))
        self.set_model(key, data)

    @rule(key=st.sampled_from(KEYS), message=messages, who=st.integers(0, 1))
    def update_last(self, key, message, who):
        record = _spec.encode(as_dict(message))
        updated, data = _spec.update_last(self.model.get(key), record)
        results = self.each(who, lambda s: s.update_last(key, message))
        assert results == [updated] * len(results)
        self.set_model(key, data)

    @rule(key=st.sampled_from(KEYS), who=st.integers(0, 1))
    def compact(self, key, who):
        self.each(who, lambda s: s.compact(key))
        self.set_model(key, _spec.compact(self.model.get(key)))

    @rule(key=st.sampled_from(KEYS), who=st.integers(0, 1))
    def clear_messages(self, key, who):
        data = self.model.get(key)
        results = self.each(who, lambda s: s.clear_messages(key))
        assert results == [_spec.count(data)] * len(results)
        if data is not None:
            self.model[key] = b""

    @rule(key=st.sampled_from(KEYS), who=st.integers(0, 1))
    def delete_session(self, key, who):
        existed = key in self.model
        assert self.each(who, lambda s: s.delete_session(key)) == [existed] * len(self.actors(who))
        self.model.pop(key, None)

    @rule(key=st.sampled_from(KEYS), limit=limits)
    def load(self, key, limit):
        expected = canon_messages(_spec.messages(self.model.get(key), limit))
        for store in self.stores:
            assert canon_messages(store.load(key, limit=limit)) == expected
            pairs = store.load_with_timestamps(key, limit=limit)
            assert [canon(m.to_dict()) for m, _ in pairs] == expected
            assert all(when is None for _, when in pairs)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), chunk=junk)
    def write_raw(self, data, chunk):
        key = data.draw(st.sampled_from(sorted(self.model)))
        for sessions in self.workspaces:
            with open(os.path.join(sessions, key_to_name(key) + ".jsonl"), "ab") as f:
                f.write(chunk)
        self.model[key] += chunk

    # --- after every step ------------------------------------------------------------------------

    @invariant()
    def files_match_model(self):
        expected_files = sorted(key_to_name(key) + ".jsonl" for key in self.model)
        for sessions in self.workspaces:
            assert sorted(os.listdir(sessions)) == expected_files
            for key, data in self.model.items():
                with open(os.path.join(sessions, key_to_name(key) + ".jsonl"), "rb") as f:
                    assert f.read() == data, key

    @invariant()
    def stores_agree(self):
        for store in self.stores:
            assert store.list_sessions() == sorted(self.model)
            for key in KEYS:
                assert store.session_exists(key) == (key in self.model)
                assert canon_messages(store.load(key)) == canon_messages(
                    _spec.messages(self.model.get(key))
                )
                metadata = store.get_session_metadata(key)
                if key in self.model:
                    assert metadata.message_count == _spec.count(self.model[key])
                else:
                    assert metadata is None


def _run(tmp_path, classes, shared):
    machine = type(
        "Machine",
        (StoreMachine,),
        {"base": str(tmp_path), "classes": tuple(classes), "shared": shared},
    )
    run_state_machine_as_test(machine)


def test_separate_workspaces(store_cls, pure_cls, impl, tmp_path):
    _run(tmp_path, [store_cls, pure_cls], shared=False)


def test_shared_workspace(store_cls, pure_cls, tmp_path):
    _run(tmp_path, [store_cls, pure_cls], shared=True)


@pytest.mark.parametrize(
    "message", [ChatMessage("u", "c", x=1e22), {"role": "u", "content": "c", "x": 1e-5}]
)
def test_float_formatting_matches(store_cls, pure_cls, tmp_path, message):
    # Python's repr() of floats is the format (1e+22, 1e-05): both stores write it.
    written = []
    for label, cls in (("a", store_cls), ("b", pure_cls)):
        store = cls(tmp_path / label)
        store.append("k", message)
        with open(os.path.join(store.sessions_dir, "k.jsonl"), "rb") as f:
            written.append(f.read())
    assert written[0] == written[1] == _spec.encode(as_dict(message))
    assert b"1e+22" in written[0] or b"1e-05" in written[0]
