"""Model-based test: two Rust stores and a pure store on the same workspace, driven by
Hypothesis, against a model that is only a list of messages per session (plus whether the file
ends in a torn tail), with a "crash" rule that leaves a writer's half-written record behind.

The two Rust stores have separate caches of open files, so one store's rewrite (rename) must be
noticed by the other's next append.

Every example runs at least ``MIN_STEPS`` steps. Hypothesis' own state-machine runner draws
whether to stop before each step (``stateful_step_count`` is only a maximum, and runs from its
mutations can end after a few steps), so ``@given`` draws the number of steps first, then each
step's rule (among those whose precondition holds) and arguments; the test records the steps
each example ran and asserts the minimum. ``HYPOTHESIS_PROFILE=ci``: 500 examples of 50 to 60
steps; the dev profile 60.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _spec
from _spec import canon_messages
from conftest import store_class

pytestmark = pytest.mark.timeout(600)

CI = os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"
RUNS = 500 if CI else 60
MIN_STEPS, MAX_STEPS = 50, 60

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


class SharedFiles:
    """The stores on one workspace and the model: a method per rule (``RULES``), and the checks
    ``step`` runs after each."""

    def __init__(self, base: str, data: st.DataObject) -> None:
        self.data = data  # the example's draws: the rules' arguments, and a crash's cut
        self.root = tempfile.mkdtemp(dir=base)
        workspace = os.path.join(self.root, "ws")
        rust, pure = store_class("rust"), store_class("pure")
        self.stores = [rust(workspace), rust(workspace), pure(workspace)]
        self.model: dict[str, list] = {}  # key -> canon messages; a key is here iff its file is
        self.torn: dict[str, str | None] = {}  # None, "fragment" or "message" (no final newline)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, key):
        return _spec.session_path(self.stores[0], key)

    # --- rules -----------------------------------------------------------------------------------

    def append(self, key, message, who):
        self.stores[who].append(key, message)
        self.model.setdefault(key, []).append(_spec.canon(message))
        self.torn[key] = None

    def append_many(self, key, batch, who):
        self.stores[who].append_many(key, batch)
        if batch:
            self.model.setdefault(key, []).extend(canon_messages(batch))
            self.torn[key] = None

    def remove_last(self, key, who):
        held = self.model.get(key, [])
        assert self.stores[who].remove_last(key) is bool(held)
        if held:
            held.pop()
            if self.torn[key] == "message":
                self.torn[key] = None  # the unterminated message itself went (ftruncate)

    def update_last(self, key, message, who):
        held = self.model.get(key, [])
        assert self.stores[who].update_last(key, message) is bool(held)
        if held:
            held[-1] = _spec.canon(message)
            if self.torn[key] == "message":
                self.torn[key] = None  # its replacement is written with a newline

    def compact(self, key, who):
        self.stores[who].compact(key)
        if key in self.model:
            self.torn[key] = None  # a fragment is dropped, a message gets its newline

    def clear_messages(self, key, who):
        assert self.stores[who].clear_messages(key) == len(self.model.get(key, []))
        if key in self.model:
            self.model[key] = []
            self.torn[key] = None

    def delete_session(self, key, who):
        assert self.stores[who].delete_session(key) is (key in self.model)
        self.model.pop(key, None)
        self.torn.pop(key, None)

    def crash(self, key, message):
        """A writer dies mid-append: a prefix of what it writes (a newline first if the file has
        a torn tail, then its record) is in the file, never all of it."""
        path = self.path(key)
        before = path.read_bytes() if path.exists() else b""
        blob = (b"\n" if before and not before.endswith(b"\n") else b"") + _spec.encode(message)
        cut = self.data.draw(st.integers(1, len(blob) - 1), label="cut")
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

    def tail_read(self, key, limit, who):
        held = self.model.get(key, [])
        expected = held[-limit:] if limit else []
        assert canon_messages(self.stores[who].load(key, limit=limit)) == expected

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

    def step(self, number: int) -> None:
        """Draw a rule whose precondition holds and its arguments, run it, check."""
        names = [name for name in RULES if name not in PRECONDITIONS or PRECONDITIONS[name](self)]
        name = self.data.draw(st.sampled_from(names), label=f"step {number}")
        getattr(self, name)(**self.data.draw(st.fixed_dictionaries(RULES[name]), label=name))
        self.stores_show_the_model()
        self.at_most_a_torn_tail()

    def stores_show_the_model(self):
        for store in self.stores:
            assert store.list_sessions() == sorted(self.model)
            for key in KEYS:
                assert canon_messages(store.load(key)) == self.model.get(key, [])
                assert store.session_exists(key) is (key in self.model)

    def at_most_a_torn_tail(self):
        for key, held in self.model.items():
            data = self.path(key).read_bytes()
            # A file ends in a newline unless its last line is the one torn tail.
            assert (bool(data) and not data.endswith(b"\n")) is bool(self.torn[key]), key
            assert _spec.count(data) == len(held)
        names = sorted(os.listdir(os.path.dirname(self.path(KEYS[0]))))
        assert names == sorted(self.path(key).name for key in self.model)  # no temp files


RULES: dict[str, dict[str, st.SearchStrategy]] = {
    "append": {"key": keys, "message": messages, "who": who},
    "append_many": {"key": keys, "batch": st.lists(messages, max_size=3), "who": who},
    "remove_last": {"key": keys, "who": who},
    "update_last": {"key": keys, "message": messages, "who": who},
    "compact": {"key": keys, "who": who},
    "clear_messages": {"key": keys, "who": who},
    "delete_session": {"key": keys, "who": who},
    "crash": {"key": keys, "message": messages},
    "tail_read": {"key": keys, "limit": st.integers(0, 4), "who": who},
    "append_after_crash": {"who": who},
}
PRECONDITIONS: dict[str, Callable[[SharedFiles], bool]] = {
    "append_after_crash": lambda machine: any(machine.torn.values()),
}


def test_rust_and_pure_on_shared_files_match_the_model(tmp_path):
    store_class("rust")  # skips (fails under CI) without the native module
    steps_run: list[int] = []

    @settings(max_examples=RUNS, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def run(data: st.DataObject) -> None:
        machine = SharedFiles(str(tmp_path), data)
        try:
            steps = data.draw(st.integers(MIN_STEPS, MAX_STEPS), label="steps")
            for number in range(steps):
                machine.step(number)
        finally:
            machine.close()
        steps_run.append(steps)

    run()
    print(f"\n{len(steps_run)} examples, {sum(steps_run)} steps ({min(steps_run)} at least)")
    assert len(steps_run) >= RUNS
    assert min(steps_run) >= MIN_STEPS
