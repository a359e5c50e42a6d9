"""A pytest plugin that runs a framework's own tests with turnlog's adapter in place of the
framework's reference class (``pytest -p peers_plugin --turnlog-suite NAME --turnlog-backend B``;
``run.py`` does all of it: see there).

For each test, an autouse fixture puts the suite's stand-ins (``peers_standins.stand_in``) in
the test module's namespace and in the framework packages listed by the suite, under the
reference classes' names, over fresh turnlog stores of the chosen backend in the test's own
folder. Nothing else in the framework or its tests changes.

At collection, tests of those files that never build the reference class are deselected (they
do not involve turnlog), and those listed in ``not_applicable.NOT_APPLICABLE`` are skipped with
their reason, prefixed ``not applicable to turnlog:``. Every result goes into a JSON report
(``--turnlog-report``) for ``run.py`` to count.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import not_applicable
import peers_standins
from peers_suites import SUITES_BY_NAME, Suite

NA_PREFIX = "not applicable to turnlog: "
_STATE = pytest.StashKey["_State"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("turnlog-peers", "turnlog: the frameworks' own tests on its adapters")
    group.addoption("--turnlog-suite", help="the suite (peers_suites.SUITES)")
    group.addoption(
        "--turnlog-backend",
        default=os.environ.get("TURNLOG_PEERS_BACKEND", "rust"),
        choices=peers_standins.BACKENDS,
        help="the turnlog store behind the adapter (default: $TURNLOG_PEERS_BACKEND or rust)",
    )
    group.addoption("--turnlog-report", help="write the results to this JSON file")
    group.addoption(
        "--turnlog-run-na",
        action="store_true",
        help="diagnostic only: run the not-applicable tests too (to review the table)",
    )
    group.addoption(
        "--turnlog-shim",
        action="append",
        default=[],
        choices=["close", "eq"],
        help=(
            "diagnostic only: close = a close() that works plain and awaited, eq = value "
            "equality for histories (each hides a finding)"
        ),
    )


class _State:
    def __init__(self, config: pytest.Config, suite: Suite, backend: str) -> None:
        self.config = config
        self.suite = suite
        self.backend = backend
        self.redis: Any = None
        self.redis_folder: str | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self.deselected: list[str] = []
        self.stale: list[str] = []
        self.collected: set[str] = set()

    @property
    def redis_url(self) -> str | None:
        return None if self.redis is None else self.redis.url


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # The tests must run against the installed framework: import it before the sdist's conftests
    # load, as their import puts the sdist's root, which holds a copy of the package (langchain's
    # sdists), first on sys.path.
    name = getattr(early_config.known_args_namespace, "turnlog_suite", None)
    if name in SUITES_BY_NAME:
        for module in SUITES_BY_NAME[name].sdist.modules:
            importlib.import_module(module)


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--turnlog-suite")
    if not name:
        raise pytest.UsageError("peers_plugin needs --turnlog-suite")
    if name not in SUITES_BY_NAME:
        raise pytest.UsageError(f"unknown suite {name!r}; one of {', '.join(SUITES_BY_NAME)}")
    suite = SUITES_BY_NAME[name]
    installed = importlib.metadata.version(suite.sdist.name)
    if installed != suite.sdist.version:
        raise pytest.UsageError(
            f"{suite.sdist.name} {installed} is installed, but the tests are those of "
            f"{suite.sdist.version}"
        )
    for name in suite.sdist.modules:
        module = importlib.import_module(name)  # imported already: see below
        where = Path(str(getattr(module, "__file__", "") or "")).resolve()
        if where.is_relative_to(config.rootpath.resolve()):
            raise pytest.UsageError(
                f"{name} was imported from the sdist ({where}), not from the installed package: "
                "run pytest without the sdist's root on sys.path (as run.py does)"
            )
    state = _State(config, suite, config.getoption("--turnlog-backend"))
    peers_standins.SHIMS.clear()
    peers_standins.SHIMS.update(config.getoption("--turnlog-shim"))
    if state.backend == "redis":
        _start_redis(state)
    config.stash[_STATE] = state


def _start_redis(state: _State) -> None:
    path = Path(__file__).resolve().parent.parent / "redis_server.py"
    spec = importlib.util.spec_from_file_location("turnlog_tests_redis_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.server_binary() is None:
        raise pytest.UsageError("backend redis: redis-server is not installed")
    state.redis_folder = tempfile.mkdtemp(prefix="turnlog-peers-redis-")
    try:
        state.redis = module.RedisServer(Path(state.redis_folder)).start()
    except (OSError, RuntimeError) as error:
        raise pytest.UsageError(f"backend redis: cannot start redis-server: {error}") from error


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    if state.redis is not None:
        state.redis.kill()
    if state.redis_folder is not None:
        shutil.rmtree(state.redis_folder, ignore_errors=True)


# --- collection: deselect what never builds the reference class, mark what is not applicable ---


class _Reach:
    """Whether a test reaches something: in its own code, in the code of the fixtures it uses, or
    in the code of the helpers (functions, classes) of the suite's tests that those refer to (a
    test file's helpers, ``tests/utils``, ...), followed to any depth. Code outside the tests (the
    framework, pytest) is not followed. What counts: a global or attribute name in ``names``, or a
    class of the tests for which ``class_hit`` is true."""

    def __init__(
        self,
        tests_root: Path,
        names: frozenset[str] = frozenset(),
        class_hit: Callable[[type], bool] | None = None,
    ) -> None:
        self.names = names
        self.class_hit = class_hit
        self.tests_root = str(tests_root) + os.sep
        self.memo: dict[int, bool] = {}

    def item(self, item: pytest.Item) -> bool:
        function = getattr(item, "obj", None)
        if function is not None and self.obj(function):
            return True
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            return False
        return any(
            self.obj(definition.func)
            for definitions in info.name2fixturedefs.values()
            for definition in definitions
        )

    def obj(self, obj: Any) -> bool:
        if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
            obj = obj.__func__
        if isinstance(obj, property):
            obj = obj.fget
        if callable(obj) and not isinstance(obj, type):
            try:
                obj = inspect.unwrap(obj)
            except ValueError:
                return False
        key = id(obj)
        if key not in self.memo:
            self.memo[key] = False  # a cycle counts as "no" until proven otherwise
            self.memo[key] = self._obj(obj)
        return self.memo[key]

    def _obj(self, obj: Any) -> bool:
        if isinstance(obj, types.FunctionType):
            if not obj.__code__.co_filename.startswith(self.tests_root):
                return False
            return self._code(obj.__code__, obj.__globals__)
        if isinstance(obj, type):
            module = sys.modules.get(obj.__module__)
            if not str(getattr(module, "__file__", "") or "").startswith(self.tests_root):
                return False
            if self.class_hit is not None and self.class_hit(obj):
                return True
            return any(self.obj(member) for member in vars(obj).values())
        return False

    def _code(self, code: types.CodeType, scope: dict[str, Any]) -> bool:
        for name in code.co_names:
            if name in self.names:
                return True
            if name in scope and self.obj(scope[name]):
                return True
        return any(
            isinstance(const, types.CodeType) and self._code(const, scope)
            for const in code.co_consts
        )


SUBCLASS_AT_IMPORT = (
    "uses a subclass of the reference class that its test module defines at import time, before "
    "the harness can put turnlog's adapter in its place: it would test the reference class"
)


def _na_reason(item: pytest.Item, backend: str) -> str | None:
    base = item.nodeid.split("[", 1)[0]
    for key in (item.nodeid, base):
        reason = not_applicable.NOT_APPLICABLE.get(key)
        if isinstance(reason, dict):
            reason = reason.get(backend)
        if reason:
            return str(reason)
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    # Every test collected, before -k/-m select some: what the table's entries are checked against.
    state: _State = item.config.stash[_STATE]
    state.collected.update({item.nodeid, item.nodeid.split("[", 1)[0]})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state: _State = config.stash[_STATE]
    names = frozenset(state.suite.swaps)
    uses = _Reach(config.rootpath / "tests", names=names)
    subclasses = _Reach(
        config.rootpath / "tests",
        class_hit=lambda cls: any(base.__name__ in names for base in cls.__mro__[1:]),
    )
    kept: list[pytest.Item] = []
    deselected: list[pytest.Item] = []
    for item in items:
        if not uses.item(item):
            deselected.append(item)
            continue
        kept.append(item)
        reason = _na_reason(item, state.backend)
        if reason is None and subclasses.item(item):
            reason = SUBCLASS_AT_IMPORT
        if reason is not None and not config.getoption("--turnlog-run-na"):
            item.add_marker(pytest.mark.skip(reason=NA_PREFIX + reason))
        known = not_applicable.KNOWN_DIFFERENCES.get(item.nodeid.split("[", 1)[0])
        if known is not None:  # runs, and must fail: a pass shows the difference is gone
            item.add_marker(pytest.mark.xfail(reason=known, strict=True))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    state.deselected = [item.nodeid for item in deselected]
    # Entries of the table for these files that match no test: left over from an older release
    # of the framework (or a typo). run.py shows them.
    files = {nodeid.split("::", 1)[0] for nodeid in state.collected}
    state.stale = sorted(
        key
        for key in not_applicable.NOT_APPLICABLE
        if key.split("::", 1)[0] in files and key not in state.collected
    )


# --- the swap ------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _turnlog_stand_ins(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    state: _State = request.config.stash[_STATE]
    stores = peers_standins.Stores(
        state.backend, tmp_path_factory.mktemp("turnlog-stores"), state.redis_url
    )
    peers_standins._current = stores
    for scope in state.suite.eager_scopes:
        stores.store(scope)
    module = getattr(request.node, "module", None)
    for name in state.suite.swaps:
        stand_in = peers_standins.stand_in(name)
        if module is not None and name in vars(module):
            monkeypatch.setattr(module, name, stand_in)
        for package in state.suite.packages:
            target = importlib.import_module(package)
            if hasattr(target, name):
                monkeypatch.setattr(target, name, stand_in)
    try:
        yield stores
    finally:
        peers_standins._current = None
        stores.close()


# --- results -------------------------------------------------------------------------------------


def _failure(report: pytest.TestReport) -> tuple[str, str]:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        message = crash.message
        where = f"{crash.path}:{crash.lineno}"
    else:
        message = report.longreprtext.strip().splitlines()[-1:] or ["?"]
        message = message[0]
        where = report.location[0]
    if report.when != "call":
        message = f"(in {report.when}) {message}"
    lines = message.splitlines()
    if len(lines) > 25:
        lines = [*lines[:25], f"... ({len(lines) - 25} more lines)"]
    return "\n".join(lines), where


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG
    if config is None:
        return
    state: _State = config.stash[_STATE]
    record = state.results.setdefault(
        report.nodeid, {"id": report.nodeid, "outcome": None, "message": "", "where": ""}
    )
    if report.failed:
        if record["outcome"] != "failed":
            record["outcome"] = "failed"
            record["message"], record["where"] = _failure(report)
    elif report.skipped and record["outcome"] is None:
        if hasattr(report, "wasxfail"):
            record["outcome"] = "xfailed"
            record["message"] = str(report.wasxfail)
        else:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            reason = str(reason).removeprefix("Skipped: ")
            if reason.startswith(NA_PREFIX):
                record["outcome"] = "na"
                record["message"] = reason[len(NA_PREFIX) :]
            else:
                record["outcome"] = "skipped"
                record["message"] = reason
    elif report.passed and report.when == "call" and record["outcome"] is None:
        record["outcome"] = "xpassed" if hasattr(report, "wasxfail") else "passed"


_CONFIG: pytest.Config | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _CONFIG
    _CONFIG = session.config


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state: _State = session.config.stash[_STATE]
    path = session.config.getoption("--turnlog-report")
    if not path:
        return
    report = {
        "suite": state.suite.name,
        "backend": state.backend,
        "exitstatus": int(exitstatus),
        "deselected": len(state.deselected),
        "stale_not_applicable": state.stale,
        "shims": sorted(peers_standins.SHIMS),
        "tests": list(state.results.values()),
    }
    Path(path).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
