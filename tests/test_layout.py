"""The package's floors run one way (docs/ARCHITECTURE.md), modules stay small, and the import
paths this release moved still work, with a DeprecationWarning."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "turnlog"
RUST = ROOT / "rust"

#: The bottom floor: the ABC, the data classes, the shared rules. They import nothing else of
#: turnlog at run time.
BOTTOM = {
    "turnlog._impl",
    "turnlog._message",
    "turnlog._native",
    "turnlog._lower",
    "turnlog._rules",
    "turnlog._types",
    "turnlog.backend",
}
#: What every backend may use besides the bottom floor.
BACKENDS_SHARED = {
    "turnlog.backends",
    "turnlog.backends._alnum",
    "turnlog.backends.files",
    "turnlog.backends.format",
    "turnlog.backends.workspace",
}
BACKENDS = ("jsonl", "sqlite", "redis")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path, name: str | None = None) -> set[str]:
    """The turnlog modules ``path`` (module ``name``) imports when it runs: not those in ``if
    TYPE_CHECKING:`` blocks; those inside functions count (a lazy import is still one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    known = set(_modules()) | {"turnlog._native"}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import files` imports the submodule turnlog.backends.files; a name that
            # is no submodule is taken from the package itself.
            names = {f"{module}.{alias.name}" for alias in node.names}
            found.update(names)
            if node.module or not names <= known:
                found.add(module)
    return found & known


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _floor(module: str) -> str:
    if module in BOTTOM:
        return "bottom"
    if module in BACKENDS_SHARED:
        return "backends"
    for backend in BACKENDS:
        if module == f"turnlog.backends.{backend}" or module.startswith(
            f"turnlog.backends.{backend}."
        ):
            return backend
    return "top"


ALLOWED = {
    "bottom": {"bottom"},
    "backends": {"bottom", "backends"},
    **{backend: {"bottom", "backends", backend} for backend in BACKENDS},
    "top": {"bottom", "backends", *BACKENDS, "top"},
}


def test_every_module_is_placed():
    modules = _modules()
    assert "turnlog.backends.jsonl.base" in modules
    assert {_floor(name) for name in modules} == {"bottom", "backends", "top", *BACKENDS}


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_run_down_the_floors(module):
    floor = _floor(module)
    wrong = {
        imported: _floor(imported)
        for imported in _runtime_imports(_modules()[module])
        if _floor(imported) not in ALLOWED[floor]
    }
    assert not wrong, f"{module} ({floor} floor) imports from a floor above or beside it: {wrong}"


def test_the_floor_check_sees_a_wrong_import(tmp_path):
    """The check above can fail: a bottom module that imports a backend is caught."""
    fake = PACKAGE / "_rules.py"
    text = fake.read_text(encoding="utf-8") + "\nfrom .backends import format\n"
    copy = tmp_path / "_rules.py"
    copy.write_text(text, encoding="utf-8")
    assert "turnlog.backends.format" in _runtime_imports(copy, "turnlog._rules")
    assert _floor("turnlog.backends.format") not in ALLOWED["bottom"]


@pytest.mark.parametrize("module", sorted(_modules()))
def test_python_modules_stay_under_600_lines(module):
    lines = _modules()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= 600, f"{module} has {lines} lines"


@pytest.mark.parametrize("path", sorted(RUST.rglob("*.rs")), ids=lambda p: str(p.relative_to(RUST)))
def test_rust_files_stay_under_600_lines(path):
    """Inline tests count too: a module's big test suite goes to ``<module>_tests.rs``."""
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 600, f"{path.relative_to(RUST)}: {lines} lines"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("turnlog.sqlite", "turnlog.backends.sqlite"),
        ("turnlog.redis_backend", "turnlog.backends.redis"),
    ],
)
def test_moved_paths_still_work_with_a_deprecation_warning(monkeypatch, old, new):
    pytest.importorskip("redis" if "redis" in new else "sqlite3")
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"import from {new.replace('.', '[.]')}"):
        shim = importlib.import_module(old)
    current = importlib.import_module(new)
    assert shim.__all__ == current.__all__
    for name in current.__all__:
        assert getattr(shim, name) is getattr(current, name), name


def test_new_paths_do_not_warn():
    import turnlog
    import turnlog.backends.sqlite
    import turnlog.pure

    # filterwarnings = error: a warning above would have failed the imports.
    assert turnlog.SqliteSessionBackend is turnlog.backends.sqlite.SqliteSessionBackend
    assert turnlog.pure.SessionStore.__module__ == "turnlog.backends.jsonl.pure"
