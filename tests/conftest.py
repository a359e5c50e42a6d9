"""Fixtures shared by the whole suite.

``impl`` runs a test against the Rust store (``turnlog.backends.jsonl.rust.SessionStore``) and the
pure one (``turnlog.pure.SessionStore``). Without the native module the Rust runs are skipped,
unless the environment variable ``CI`` is set: then they fail, so CI never skips them silently. With
``TURNLOG_PURE=1`` (the fallback, as a machine without the native module runs it) they skip.

Hypothesis profiles: ``HYPOTHESIS_PROFILE=ci`` runs more examples; ``dev`` (default) fewer.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=50, stateful_step_count=50)
settings.register_profile("ci", deadline=None, max_examples=150, stateful_step_count=80)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

#: tests/peers holds the harness that runs the frameworks' own suites (make test-peers), not tests
#: of this project; its modules must not shadow this conftest.
collect_ignore = ["peers"]

IMPLS = ("rust", "pure")


def in_ci() -> bool:
    return bool(os.environ.get("CI", "").strip())


def require_native():
    """The native module, or skip (fail under CI) when it is not available."""
    from turnlog._impl import native

    if native is not None:
        return native
    if os.environ.get("TURNLOG_PURE", "").strip():
        pytest.skip("TURNLOG_PURE is set: this run tests the pure-Python fallback alone")
    reason = "turnlog._native is not built"
    if in_ci():
        pytest.fail(f"{reason}, and CI is set: the Rust store must be tested", pytrace=False)
    pytest.skip(reason)


def store_class(impl: str):
    """The ``SessionStore`` class of ``impl`` (``"rust"`` or ``"pure"``)."""
    if impl == "rust":
        require_native()
        from turnlog.backends.jsonl.rust import SessionStore
    elif impl == "pure":
        from turnlog.pure import SessionStore
    else:  # pragma: no cover - a typo in a test
        raise AssertionError(f"unknown implementation {impl!r}")
    return SessionStore


@pytest.fixture(params=IMPLS)
def impl(request) -> str:
    if request.param == "rust":
        require_native()
    return request.param


@pytest.fixture
def store_cls(impl):
    return store_class(impl)


@pytest.fixture
def store(store_cls, tmp_path):
    return store_cls(tmp_path / "ws")


@pytest.fixture
def pure_cls():
    from turnlog.pure import SessionStore

    return SessionStore
