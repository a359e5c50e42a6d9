"""The wheel, installed into a fresh venv, works from outside the source tree.

Slow (a release build, 1-2 minutes, and a venv), so it runs only with ``TURNLOG_WHEEL_TEST=1``:

    TURNLOG_WHEEL_TEST=1 .venv/bin/python -m pytest tests/test_wheel.py -p no:cacheprovider

It builds with ``maturin build --release`` (the ``maturin`` next to this Python; or takes the
wheel named by ``TURNLOG_WHEEL``, as ``make wheel`` does), installs the wheel with
``pip --no-index`` (turnlog has no dependencies, so no network is needed), and runs a
smoke test with ``python -I`` from a temporary folder, so nothing of the source tree can be
imported by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("TURNLOG_WHEEL_TEST", "").strip() != "1",
        reason="builds a release wheel and a venv (minutes): set TURNLOG_WHEEL_TEST=1 to run",
    ),
    pytest.mark.timeout(1800),
]

#: Runs inside the fresh venv; prints one JSON object for the test to check.
SMOKE = r"""
import json, sys, tempfile

before = set(sys.modules)
import turnlog
imported = set(sys.modules) - before
# turnlog.aio and turnlog.cli are opt-in, but must be standard-library only as well.
import turnlog.aio, turnlog.cli
imported_all = set(sys.modules) - before


def third_party(names):
    tops = {name.partition(".")[0] for name in names}
    return sorted(t for t in tops if t != "turnlog" and t not in sys.stdlib_module_names)


from turnlog import ChatMessage, SessionStore

with tempfile.TemporaryDirectory() as workspace:
    store = SessionStore(workspace)
    store.append("telegram_user123", ChatMessage.user("hello"))
    store.append("telegram_user123", {"role": "assistant", "content": "hi!", "name": "bot"})
    loaded = [m.to_dict() for m in store.load("telegram_user123", limit=50)]
    store.update_last("telegram_user123", ChatMessage.assistant("hi there!"))
    after_update = [m.content for m in store.load("telegram_user123")]
    count = store.get_session_metadata("telegram_user123").message_count

print(json.dumps({
    "implementation": turnlog.IMPLEMENTATION,
    "version": turnlog.__version__,
    "file": turnlog.__file__,
    "store": type(store).__module__,
    "third_party": third_party(imported),
    "third_party_with_aio_cli": third_party(imported_all),
    "loaded": loaded,
    "after_update": after_update,
    "count": count,
}))
"""


def clean_env() -> dict[str, str]:
    """The environment without what could point Python at the source tree or force pure mode."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "TURNLOG_PURE", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("TURNLOG_WHEEL", "").strip()
    if given:  # `make wheel` has just built it: test that one
        path = Path(given).resolve()
        assert path.is_file() and path.suffix == ".whl", f"TURNLOG_WHEEL={given} is not a wheel"
        return path
    out = tmp_path_factory.mktemp("wheelhouse")
    maturin = Path(sys.executable).parent / "maturin"
    assert maturin.exists(), f"maturin is not installed next to {sys.executable}"
    command = [str(maturin), "build", "--release", "-o", str(out), "-i", sys.executable]
    run(command, cwd=ROOT, timeout=1500)
    (built,) = out.glob("turnlog-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(home)], cwd=home)
    python = home / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", "--no-index", str(wheel)], cwd=home)
    return home


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "-abi3-" in wheel.name  # one wheel for every CPython 3.10+
    needed_files = (
        "__init__.py",
        "py.typed",
        "aio.py",
        "cli/__init__.py",
        "__main__.py",
        "pure.py",
        "backends/jsonl/rust.py",
        "backends/jsonl/pure.py",
        "backends/sqlite/__init__.py",
        "backends/redis/__init__.py",
    )
    for needed in needed_files:
        assert f"turnlog/{needed}" in names, needed
    assert any(name.startswith("turnlog/_native") and name.endswith(".so") for name in names)
    assert not [name for name in names if name.startswith(("tests/", "benches/", "rust/"))]


def test_import_and_round_trip_from_outside_the_source_tree(venv, tmp_path):
    done = run([str(venv / "bin" / "python"), "-I", "-c", SMOKE], cwd=tmp_path)
    report = json.loads(done.stdout)
    assert report["implementation"] == "rust"
    assert report["store"] == "turnlog.backends.jsonl.rust"
    assert Path(report["file"]).resolve().is_relative_to(venv.resolve()), report["file"]
    assert report["third_party"] == [], "import turnlog pulled in non-stdlib modules"
    assert report["third_party_with_aio_cli"] == []
    assert report["loaded"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi!", "name": "bot"},
    ]
    assert report["after_update"] == ["hello", "hi there!"]
    assert report["count"] == 2
    assert report["version"] not in ("", "0+unknown")


def test_console_script(venv, tmp_path):
    script = venv / "bin" / "turnlog"
    assert script.exists(), (
        "no turnlog console script: pyproject.toml needs "
        '[project.scripts] turnlog = "turnlog.cli:main"'
    )
    done = run([str(script), "--help"], cwd=tmp_path)
    assert done.stdout.startswith("usage: turnlog")
    workspace = str(tmp_path / "ws")
    append = ["append", "k", "--role", "user", "--content", "hi"]
    run([str(script), "-w", workspace, *append], cwd=tmp_path)
    done = run([str(script), "-w", workspace, "ls", "--json"], cwd=tmp_path)
    assert [entry["key"] for entry in json.loads(done.stdout)] == ["k"]
    done = run([str(venv / "bin" / "python"), "-m", "turnlog", "--version"], cwd=tmp_path)
    assert done.stdout.strip().endswith("(rust)")
