"""Run the frameworks' own test suites against turnlog's adapters, and count the results.

    .venv/bin/python tests/peers/run.py                       # every suite, every backend
    .venv/bin/python tests/peers/run.py --suite agents-session --backend sqlite
    .venv/bin/python tests/peers/run.py --suite langchain-core -- -k history   # args for pytest
    .venv/bin/python tests/peers/run.py --list                # the suites and backends

What it does, each step only when not done already (all in the cache folder: ``--cache``, else
``$TURNLOG_PEERS_CACHE``, else ``$XDG_CACHE_HOME/turnlog-peers``, else
``~/.cache/turnlog-peers``; nothing is written into the repository):

1. downloads the pinned sdists of openai-agents, langchain-core and langchain-community (they ship
   their tests), checks their SHA-256, and unpacks them;
2. makes an overlay venv whose interpreter sees every package of the venv running this script
   (turnlog, the frameworks) plus the frameworks' test dependencies (``requirements.txt``), pinned
   so that no package of the base venv changes version; the base venv itself is never touched;
3. runs, for each suite and backend, pytest on the suite's test files from the sdist, with the
   sdist's own pytest settings and the plugin ``peers_plugin``, which puts turnlog's adapter where
   the tests build the reference class (``SQLiteSession``, ``InMemoryChatMessageHistory``, ...);
4. prints, per suite and backend, how many tests ran, passed, failed and were not applicable, then
   every failure (test id, assertion, the backends it failed on). Exit status 1 if any failed.

Backends: ``rust`` (``turnlog.SessionStore``, the native JSONL store), ``pure``
(``turnlog.pure.SessionStore``), ``sqlite`` (``turnlog.SqliteSessionBackend``) and ``redis``
(``turnlog.backends.redis.RedisSessionBackend`` on a ``redis-server`` this run starts; left out
when ``redis-server`` is not installed). A single pytest run can also be made by hand: the
command is in the log of each run (``<cache>/results/<suite>-<backend>.log``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import textwrap
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers_standins import BACKENDS  # noqa: E402
from peers_suites import SDISTS, SUITES, SUITES_BY_NAME, Sdist, Suite  # noqa: E402

REQUIREMENTS = HERE / "requirements.txt"
TIMEOUT = 120  # seconds per test (pytest-timeout)


def cache_folder(given: str | None) -> Path:
    if given:
        return Path(given).expanduser().resolve()
    if os.environ.get("TURNLOG_PEERS_CACHE"):
        return Path(os.environ["TURNLOG_PEERS_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).resolve() / "turnlog-peers"


def say(text: str) -> None:
    print(text, flush=True)


# --- 1. the sdists -------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_sdist(sdist: Sdist, cache: Path) -> Path:
    """The unpacked sdist's root folder (downloaded and unpacked on first use)."""
    root = cache / "src" / sdist.folder
    if (root / "tests").is_dir():
        return root
    archive = cache / "sdists" / f"{sdist.folder}.tar.gz"
    if not archive.exists():
        say(f"downloading {sdist.requirement} (sdist)")
        archive.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(archive.parent),
                sdist.requirement,
            ],
            check=True,
        )
    if sha256(archive) != sdist.sha256:
        raise SystemExit(
            f"{archive}: SHA-256 {sha256(archive)}, expected {sdist.sha256} (delete it to retry)"
        )
    say(f"unpacking {archive.name}")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as scratch, tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(scratch, filter="data")
        else:  # Python < 3.10.12 / 3.11.4: no extraction filters; refuse odd members ourselves
            for member in tar.getmembers():
                if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                    raise SystemExit(f"{archive}: unsafe member {member.name!r}")
                if not (member.isfile() or member.isdir()):
                    raise SystemExit(f"{archive}: unexpected member {member.name!r}")
            tar.extractall(scratch)
        os.replace(Path(scratch) / sdist.folder, root)
    return root


# --- 2. the overlay venv -------------------------------------------------------------------------


def base_site_packages() -> Path:
    return Path(sysconfig.get_path("purelib"))


def overlay_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names() -> list[str]:
    names = []
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if match:
            names.append(match.group(1))
    return names


def ensure_overlay(cache: Path) -> Path:
    """A venv that sees this interpreter's packages and adds the test dependencies; its python."""
    venv = cache / "venv"
    base = base_site_packages()
    stamp_text = "\n".join(
        [REQUIREMENTS.read_text(encoding="utf-8"), str(base), sys.version, sys.executable]
    )
    stamp = hashlib.sha256(stamp_text.encode()).hexdigest()
    stamp_file = venv / ".turnlog-peers-stamp"
    python = overlay_python(venv)
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python
    say(f"setting up the overlay venv {venv} (over {base})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir, not a bare path line: the base's own .pth files (turnlog's editable install)
    # must be processed too. The overlay's own site-packages stays first on sys.path.
    Path(purelib, "_turnlog_peers_base.pth").write_text(
        f"import site; site.addsitedir({str(base)!r})\n", encoding="utf-8"
    )
    # Pin every package of the base venv to its version, so the test dependencies are added
    # around them, not instead of them; except those requirements.txt names itself (a version
    # the frameworks' tests need goes into the overlay, in front of the base's, which stays).
    named = {canonical(name) for name in requirement_names()} | {"turnlog"}
    pins = sorted(
        {
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in metadata.distributions(path=[str(base)])
            if dist.metadata["Name"] and canonical(dist.metadata["Name"]) not in named
        }
    )
    constraints = venv / "base-constraints.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            str(REQUIREMENTS),
            "-c",
            str(constraints),
        ],
        check=True,
    )
    stamp_file.write_text(stamp)
    return python


# --- 3. the runs ---------------------------------------------------------------------------------


def pytest_command(
    python: Path, suite: Suite, root: Path, backend: str, report: Path, args: argparse.Namespace
) -> list[str]:
    command = [
        str(python),
        "-c",
        # pytest, without the working directory (the sdist's root) first on sys.path: the tests
        # must import the installed framework, not the copy of its package in the sdist. (As
        # ``python -P -m pytest``, which needs Python 3.11.)
        "import sys; del sys.path[0]; import pytest; sys.exit(pytest.main())",
        "-c",
        str(root / "pyproject.toml"),
        "--rootdir",
        str(root),
        "-o",
        "addopts=",
        "-p",
        "peers_plugin",
        "-p",
        "no:cacheprovider",
        "--turnlog-suite",
        suite.name,
        "--turnlog-backend",
        backend,
        "--turnlog-report",
        str(report),
        "--timeout",
        str(TIMEOUT),
        "-q",
        "-rfE",
    ]
    for shim in args.shim or ():
        command += ["--turnlog-shim", shim]
    if args.run_na:
        command.append("--turnlog-run-na")
    return [*command, *suite.extra_args, *suite.paths, *args.pytest_args]


def run_one(
    python: Path, suite: Suite, root: Path, backend: str, results: Path, args: argparse.Namespace
) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    report = results / f"{suite.name}-{backend}.json"
    log = results / f"{suite.name}-{backend}.log"
    report.unlink(missing_ok=True)
    command = pytest_command(python, suite, root, backend, report, args)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env.pop("TURNLOG_PEERS_BACKEND", None)
    started = time.monotonic()
    say(f"== {suite.name} on {backend}: {len(suite.paths)} file(s) from {root.name}")
    with log.open("w", encoding="utf-8") as output:
        output.write(f"cd {shlex.quote(str(root))} && ")
        output.write(f"PYTHONPATH={shlex.quote(env['PYTHONPATH'])} {shlex.join(command)}\n\n")
        output.flush()
        if args.verbose:
            process = subprocess.Popen(
                command,
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                output.write(line)
            status = process.wait()
        else:
            status = subprocess.run(
                command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT
            ).returncode
    elapsed = time.monotonic() - started
    if not report.exists():
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        say(f"   pytest exited with {status} and wrote no report; the end of {log}:")
        say(textwrap.indent("\n".join(tail), "   | "))
        return {"suite": suite.name, "backend": backend, "error": status, "tests": [], "log": log}
    data = json.loads(report.read_text(encoding="utf-8"))
    data["log"] = str(log)
    data["elapsed"] = elapsed
    counts = count(data)
    say(
        f"   {counts['run']} run, {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['na']} not applicable ({elapsed:.0f} s; log: {log})"
    )
    return data


# --- 4. the counts -------------------------------------------------------------------------------

OUTCOMES = ("passed", "failed", "na", "skipped", "xfailed", "xpassed")


def count(data: dict) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for test in data["tests"]:
        outcome = test["outcome"] or "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
    counts["run"] = counts["passed"] + counts["failed"] + counts["xfailed"] + counts["xpassed"]
    counts["deselected"] = int(data.get("deselected", 0))
    return counts


def summary(runs: list[dict], show_na: bool) -> bool:
    """Print the tables; whether everything passed."""
    say("")
    say("=" * 100)
    header = (
        f"{'suite':<22}{'backend':<9}{'run':>6}{'passed':>8}{'failed':>8}{'n/a':>6}"
        f"{'skipped':>9}{'xfail':>7}   (deselected: never build the reference class)"
    )
    say(header)
    say("-" * len(header))
    ok = True
    for data in runs:
        if "error" in data:
            say(
                f"{data['suite']:<22}{data['backend']:<9}  pytest failed to run (see {data['log']})"
            )
            ok = False
            continue
        c = count(data)
        ok = ok and c["failed"] == 0 and c["xpassed"] == 0
        say(
            f"{data['suite']:<22}{data['backend']:<9}{c['run']:>6}{c['passed']:>8}{c['failed']:>8}"
            f"{c['na']:>6}{c['skipped']:>9}{c['xfailed']:>7}   ({c['deselected']})"
        )
    say("")
    # Failures: one entry per test and message, with the backends it failed on.
    failures: dict[tuple[str, str], dict[tuple[str, str], list[str]]] = defaultdict(
        lambda: defaultdict(list)
    )
    skipped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    not_applicable: dict[tuple[str, str], str] = {}
    stale: set[tuple[str, str]] = set()
    for data in runs:
        for test in data["tests"]:
            key = (data["suite"], test["id"])
            if test["outcome"] in ("failed", "xpassed", None):
                failures[key][(test["message"], test["where"])].append(data["backend"])
            elif test["outcome"] == "skipped":
                skipped[(data["suite"], test["id"], test["message"])].append(data["backend"])
            elif test["outcome"] == "na":
                not_applicable[key] = test["message"]
        stale.update((data["suite"], entry) for entry in data.get("stale_not_applicable", ()))
    if failures:
        say(f"FAILURES ({len(failures)} tests)")
        for (suite, test_id), messages in sorted(failures.items()):
            for (message, where), backends in messages.items():
                say(f"- [{suite}] {test_id}   on: {', '.join(backends)}")
                say(f"    at {where}")
                say(textwrap.indent(message, "    | "))
        say("")
    if failures:
        causes: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for key, messages in failures.items():
            for message, _where in messages:
                causes[(message.splitlines() or ["?"])[0][:160]].add(key)
        say("FAILURES BY FIRST LINE OF THE ERROR (tests)")
        for cause, keys in sorted(causes.items(), key=lambda entry: -len(entry[1])):
            say(f"{len(keys):>5}  {cause}")
        say("")
    if skipped:
        say("SKIPPED by the tests themselves (not by the harness)")
        for (suite, test_id, message), backends in sorted(skipped.items()):
            say(f"- [{suite}] {test_id}   on: {', '.join(backends)}: {message}")
        say("")
    if show_na and not_applicable:
        say("NOT APPLICABLE (tests/peers/not_applicable.py)")
        for (suite, test_id), reason in sorted(not_applicable.items()):
            say(f"- [{suite}] {test_id}: {reason}")
        say("")
    if stale:
        say("Entries of not_applicable.py that match no test (remove or fix them):")
        for suite, entry in sorted(stale):
            say(f"- [{suite}] {entry}")
        say("")
    return ok


# --- the command ---------------------------------------------------------------------------------


def default_backends() -> list[str]:
    backends = ["rust", "pure", "sqlite"]
    if shutil.which("redis-server"):
        backends.append("redis")
    else:
        say("redis-server is not installed: the redis backend is left out")
    return backends


def names(values: list[str] | None, known: list[str], what: str) -> list[str] | None:
    if not values:
        return None
    chosen = [name for value in values for name in value.split(",") if name]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the frameworks' own tests against turnlog's adapters.",
        epilog="Arguments after -- go to every pytest run (e.g. -- -k pop_item -x).",
    )
    parser.add_argument("--suite", action="append", help="a suite (repeat, or a,b); default: all")
    parser.add_argument(
        "--backend", action="append", help=f"one of {', '.join(BACKENDS)} (repeat); default: all"
    )
    parser.add_argument("--cache", help="the cache folder (sdists, overlay venv, logs)")
    parser.add_argument(
        "--results", help="where the logs and reports go (default: <cache>/results)"
    )
    parser.add_argument(
        "--shim",
        action="append",
        choices=["close", "eq"],
        help=(
            "diagnostic only: close = a close() that works plain and awaited; eq = value "
            "equality for the histories; to see what else a test checks"
        ),
    )
    parser.add_argument(
        "--run-na",
        action="store_true",
        help="diagnostic only: run the not-applicable tests too (to review the table)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show pytest's output")
    parser.add_argument("--show-na", action="store_true", help="list the not-applicable tests")
    parser.add_argument("--setup-only", action="store_true", help="download and install, no run")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.list:
        for suite in SUITES:
            say(f"{suite.name:<22}{suite.description}")
            for path in suite.paths:
                say(f"{'':<24}{suite.sdist.folder}/{path}")
        say(f"backends: {', '.join(BACKENDS)}")
        return 0
    suites = [
        SUITES_BY_NAME[name] for name in names(args.suite, list(SUITES_BY_NAME), "suite") or []
    ] or list(SUITES)
    backends = names(args.backend, list(BACKENDS), "backend") or default_backends()
    cache = cache_folder(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    say(f"cache: {cache}")
    roots = {
        sdist.name: ensure_sdist(sdist, cache)
        for sdist in SDISTS
        if any(s.sdist is sdist for s in suites)
    }
    python = ensure_overlay(cache)
    if args.setup_only:
        return 0
    results = Path(args.results).resolve() if args.results else cache / "results"
    runs = [
        run_one(python, suite, roots[suite.sdist.name], backend, results, args)
        for suite in suites
        for backend in backends
    ]
    if args.shim or args.run_na:
        say("NOTE: --shim/--run-na on: diagnostic counts, not the ones to report")
    return 0 if summary(runs, args.show_na) else 1


if __name__ == "__main__":
    sys.exit(main())
