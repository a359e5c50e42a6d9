"""The wheel and the sdist, each installed into a fresh venv, work from outside the source tree.

Slow (release builds, 1-3 minutes each, and venvs), so it runs only with ``TURNLOG_WHEEL_TEST=1``:

    TURNLOG_WHEEL_TEST=1 .venv/bin/python -m pytest tests/test_wheel.py -p no:cacheprovider

The wheel: built with ``maturin build --release`` (the ``maturin`` next to this Python), or the
one named by ``TURNLOG_WHEEL``, as ``make wheel`` does (a manylinux2014 wheel linked by zig;
``TURNLOG_WHEEL_PLATFORM`` names the platform tag it must carry, which ``auditwheel show`` must
confirm when auditwheel is next to this Python). It is installed with ``pip --no-index``
(turnlog has no dependencies, so no network is needed).

The sdist (what a user without a wheel for their platform gets): built with ``maturin sdist``,
or the one named by ``TURNLOG_SDIST``. It is installed as pip installs it there, compiled from
source with the local Rust toolchain (into a fresh cargo target folder): ``pip --no-index
--no-build-isolation``, with the same maturin version as the one next to this Python installed
into the venv first (from PyPI, or pip's cache).

Each venv then runs the same smoke test with ``python -I`` from a temporary folder, so nothing of
the source tree can be imported by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where a venv keeps its programs, and their suffix (Windows: Scripts\python.exe).
BIN, EXE = ("Scripts", ".exe") if os.name == "nt" else ("bin", "")

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


def run(
    command: list[str], cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**clean_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


def next_to_python(tool: str) -> Path:
    """The console script ``tool`` installed next to this Python (in the dev venv)."""
    return Path(sys.executable).parent / f"{tool}{EXE}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("TURNLOG_WHEEL", "").strip()
    if given:  # `make wheel` has just built it: test that one
        path = Path(given).resolve()
        assert path.is_file() and path.suffix == ".whl", f"TURNLOG_WHEEL={given} is not a wheel"
        return path
    out = tmp_path_factory.mktemp("wheelhouse")
    maturin = next_to_python("maturin")
    assert maturin.exists(), f"maturin is not installed next to {sys.executable}"
    command = [str(maturin), "build", "--release", "-o", str(out), "-i", sys.executable]
    run(command, cwd=ROOT, timeout=1500)
    (built,) = out.glob("turnlog-*.whl")
    return built


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    given = os.environ.get("TURNLOG_SDIST", "").strip()
    if given:  # `make wheel` has just built it: test that one
        path = Path(given).resolve()
        assert path.is_file() and path.name.endswith(".tar.gz"), f"TURNLOG_SDIST={given}"
        return path
    out = tmp_path_factory.mktemp("sdist")
    maturin = next_to_python("maturin")
    assert maturin.exists(), f"maturin is not installed next to {sys.executable}"
    run([str(maturin), "sdist", "-o", str(out)], cwd=ROOT)
    (built,) = out.glob("turnlog-*.tar.gz")
    return built


def maturin_version() -> str:
    """The version of the maturin next to this Python (``maturin 1.16.0`` -> ``1.16.0``)."""
    done = run([str(next_to_python("maturin")), "--version"], cwd=ROOT)
    return done.stdout.split()[-1]


def new_venv(home: Path) -> Path:
    """A fresh venv in ``home``; returns its Python."""
    run([sys.executable, "-m", "venv", str(home)], cwd=home)
    return home / BIN / f"python{EXE}"


@pytest.fixture(scope="module", params=["wheel", "sdist"])
def venv(request, tmp_path_factory) -> Path:
    """A fresh venv with turnlog installed from the wheel, or built from the sdist by pip."""
    home = tmp_path_factory.mktemp(f"venv-{request.param}")
    python = new_venv(home)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if request.param == "wheel":
        run([*pip, "--no-index", str(request.getfixturevalue("wheel"))], cwd=home)
        return home
    sdist = request.getfixturevalue("sdist")
    # The build backend, as a user's pip would fetch it; then no index at all for turnlog.
    run([*pip, f"maturin=={maturin_version()}"], cwd=home)
    # A cargo target folder of its own: the build starts from nothing, as on a user's machine.
    target = tmp_path_factory.mktemp("sdist-target")
    build = [*pip, "--no-index", "--no-build-isolation", str(sdist)]
    run(build, cwd=home, timeout=1500, env={"CARGO_TARGET_DIR": str(target)})
    return home


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "-abi3-" in wheel.name  # one wheel for every CPython 3.10+
    platform = os.environ.get("TURNLOG_WHEEL_PLATFORM", "").strip()
    if platform:  # e.g. manylinux_2_17_x86_64: installs on glibc 2.17 and newer
        assert platform in wheel.name.removesuffix(".whl").split("-")[-1].split("."), wheel.name
        auditwheel = next_to_python("auditwheel")
        if auditwheel.exists():
            shown = run([str(auditwheel), "show", str(wheel)], cwd=wheel.parent).stdout
            assert f'"{platform}"' in shown, shown
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
    native = [name for name in names if name.startswith("turnlog/_native")]
    assert [name for name in native if name.endswith((".so", ".pyd"))], names
    assert not [name for name in names if name.startswith(("tests/", "benches/", "rust/"))]


def test_sdist_contents(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    needed_files = (
        "pyproject.toml",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "rust/lib.rs",
        "rust/store.rs",
        "rust/py/mod.rs",
        "python/turnlog/__init__.py",
        "python/turnlog/py.typed",
        "python/turnlog/_native.pyi",
        "python/turnlog/backends/jsonl/pure.py",
    )
    for needed in needed_files:
        assert needed in names, needed
    built = [name for name in names if name.endswith((".so", ".pyd"))]
    assert not built, f"a built module in the sdist: {built}"
    assert not [name for name in names if name.startswith(("target/", "dist/", ".venv/"))]


def test_import_and_round_trip_from_outside_the_source_tree(venv, tmp_path):
    done = run([str(venv / BIN / f"python{EXE}"), "-I", "-c", SMOKE], cwd=tmp_path)
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
    script = venv / BIN / f"turnlog{EXE}"
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
    done = run([str(venv / BIN / f"python{EXE}"), "-m", "turnlog", "--version"], cwd=tmp_path)
    assert done.stdout.strip().endswith("(rust)")
