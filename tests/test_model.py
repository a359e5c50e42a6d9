"""Model-based test: two Rust stores and a pure store on the same workspace, driven by
Hypothesis, against a model that is only a list of messages per session (plus whether the file
ends in a torn tail), with a "crash" rule that leaves a writer's half-written record behind.

The two Rust stores have separate caches of open files, so one store's rewrite (rename) must be
noticed by the other's next append. ``HYPOTHESIS_PROFILE=ci``: 500 runs of up to 60 steps
(about 55 on average, some 28,000 steps); the dev profile 60 runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import _spec
from _spec import canon_messages
from conftest import store_class

pytestmark = pytest.mark.timeout(600)

CI = os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"
RUNS = 500 if CI else 60
STEPS = 60  # at most: Hypothesis ends some runs early

KEYS = ["m", "x/ключ"]
texts = st.text(
    alphabet=st.sampled_from(list('ab \n\t"\\é日😀\u2028\x01{}')), min_size=0, max_size=12
)
extras = st.dictionaries(
    st.sampled_from(["name", "n", "meta"]),
    st.one_of(st.none(), st.integers(-(2**70), 2**70), texts, st.lists(st.booleans(), max_size=2)),
    max_size=2,
)
messages = st.builds(
    lambda role, content, extra: {"role": role, "content": content, **extra},
    st.sampled_from(["user", "assistant", "system"]),
    texts,
    extras,
)
who = st.integers(0, 2)
keys = st.sampled_from(KEYS)


class SharedFiles(RuleBasedStateMachine):
    base = ""

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(dir=self.base)
        workspace = os.path.join(self.root, "ws")
        rust, pure = store_class("rust"), store_class("pure")
        self.stores = [rust(workspace), rust(workspace), pure(workspace)]
        self.model: dict[str, list] = {}  # key -> canon messages; a key is here iff its file is
        self.torn: dict[str, str | None] = {}  # None, "fragment" or "message" (no final newline)

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, key):
        return _spec.session_path(self.stores[0], key)

    # --- rules -----------------------------------------------------------------------------------

    @rule(key=keys, message=messages, who=who)
    def append(self, key, message, who):
        self.stores[who].append(key, message)
        self.model.setdefault(key, []).append(_spec.canon(message))
        self.torn[key] = None

    @rule(key=keys, batch=st.lists(messages, max_size=3), who=who)
    def append_many(self, key, batch, who):
        self.stores[who].append_many(key, batch)
        if batch:
            self.model.setdefault(key, []).extend(canon_messages(batch))
            self.torn[key] = None

    @rule(key=keys, who=who)
    def remove_last(self, key, who):
        held = self.model.get(key, [])
        assert self.stores[who].remove_last(key) is bool(held)
        if held:
            held.pop()
            if self.torn[key] == "message":
                self.torn[key] = None  # the unterminated message itself went (ftruncate)

    @rule(key=keys, message=messages, who=who)
    def update_last(self, key, message, who):
        held = self.model.get(key, [])
        assert self.stores[who].update_last(key, message) is bool(held)
        if held:
            held[-1] = _spec.canon(message)
            if self.torn[key] == "message":
                self.torn[key] = None  # its replacement is written with a newline

    @rule(key=keys, who=who)
    def compact(self, key, who):
        self.stores[who].compact(key)
        if key in self.model:
            self.torn[key] = None  # a fragment is dropped, a message gets its newline

    @rule(key=keys, who=who)
    def clear_messages(self, key, who):
        assert self.stores[who].clear_messages(key) == len(self.model.get(key, []))
        if key in self.model:
            self.model[key] = []
            self.torn[key] = None

    @rule(key=keys, who=who)
    def delete_session(self, key, who):
        assert self.stores[who].delete_session(key) is (key in self.model)
        self.model.pop(key, None)
        self.torn.pop(key, None)

    @rule(key=keys, message=messages, data=st.data())
    def crash(self, key, message, data):
        """A writer dies mid-append: a prefix of what it writes (a newline first if the file has
        a torn tail, then its record) is in the file, never all of it."""
        path = self.path(key)
        before = path.read_bytes() if path.exists() else b""
        blob = (b"\n" if before and not before.endswith(b"\n") else b"") + _spec.encode(message)
        cut = data.draw(st.integers(1, len(blob) - 1), label="cut")
        with open(path, "ab") as f:
            f.write(blob[:cut])
        held = self.model.setdefault(key, [])
        if cut == len(blob) - 1:  # all but the newline: a whole object, so a message
            held.append(_spec.canon(message))
            self.torn[key] = "message"
        elif blob[:cut] == b"\n":  # only the newline that ends the old torn tail
            self.torn[key] = None
        else:
            self.torn[key] = "fragment"

    @rule(key=keys, limit=st.integers(0, 4), who=who)
    def tail_read(self, key, limit, who):
        held = self.model.get(key, [])
        expected = held[-limit:] if limit else []
        assert canon_messages(self.stores[who].load(key, limit=limit)) == expected

    @precondition(lambda self: any(self.torn.values()))
    @rule(who=who)
    def append_after_crash(self, who):
        """The next append after a crash lands whole, on a line of its own."""
        key = next(k for k, torn in self.torn.items() if torn)
        before = self.path(key).read_bytes()
        message = {"role": "user", "content": "after the crash"}
        self.stores[who].append(key, message)
        assert self.path(key).read_bytes() == before + b"\n" + _spec.encode(message)
        self.model[key].append(_spec.canon(message))
        self.torn[key] = None

    # --- after every step ------------------------------------------------------------------------

    @invariant()
    def stores_show_the_model(self):
        for store in self.stores:
            assert store.list_sessions() == sorted(self.model)
            for key in KEYS:
                assert canon_messages(store.load(key)) == self.model.get(key, [])
                assert store.session_exists(key) is (key in self.model)

    @invariant()
    def at_most_a_torn_tail(self):
        for key, held in self.model.items():
            data = self.path(key).read_bytes()
            # A file ends in a newline unless its last line is the one torn tail.
            assert (bool(data) and not data.endswith(b"\n")) is bool(self.torn[key]), key
            assert _spec.count(data) == len(held)
        names = sorted(os.listdir(os.path.dirname(self.path(KEYS[0]))))
        assert names == sorted(self.path(key).name for key in self.model)  # no temp files


def test_rust_and_pure_on_shared_files_match_the_model(tmp_path):
    store_class("rust")  # skips (fails under CI) without the native module
    machine = type("Machine", (SharedFiles,), {"base": str(tmp_path)})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=RUNS,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
