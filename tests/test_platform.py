"""Platforms without ``fcntl`` (Windows): ``import turnlog`` works, the JSONL store says clearly
that it is not supported there.

Each case runs in a fresh interpreter where ``fcntl`` cannot be imported
(``sys.modules["fcntl"] = None`` makes ``import fcntl`` raise ``ImportError``, as on Windows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: Runs with fcntl missing; prints one JSON object for the test to check.
NO_FCNTL = textwrap.dedent(
    r"""
    import json, os, sys, tempfile
    sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows

    import turnlog
    import turnlog.aio, turnlog.cli, turnlog.pure  # the optional layers import too
    from turnlog.backends import files

    report = {"implementation": turnlog.IMPLEMENTATION, "fcntl": files.fcntl is not None}
    with tempfile.TemporaryDirectory() as workspace:
        try:
            turnlog.pure.SessionStore(workspace)
        except NotImplementedError as error:
            report["pure_store"] = str(error)
        else:
            report["pure_store"] = None
        try:
            with files.locked(workspace + "/s.jsonl", create=True):
                pass
        except NotImplementedError as error:
            report["locked"] = str(error)
        else:
            report["locked"] = None
        report["left"] = os.listdir(workspace)
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("pure", ["1", "0"])
def test_import_without_fcntl_and_a_clear_error_from_the_jsonl_store(pure, tmp_path):
    env = {**os.environ, "TURNLOG_PURE": pure}
    done = subprocess.run(
        [sys.executable, "-c", NO_FCNTL],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["fcntl"] is False
    if pure == "1":
        assert report["implementation"] == "python"
    for error in (report["pure_store"], report["locked"]):
        assert error is not None, "the JSONL store ran without flock"
        assert "not supported on this platform" in error
        assert f"({sys.platform})" in error
        assert "flock" in error and "fcntl" in error
    assert report["left"] == [], "the refused store created files"


def test_pure_store_works_where_fcntl_exists(tmp_path):
    """The guard changes nothing where flock exists (every POSIX platform)."""
    from turnlog.backends import files
    from turnlog.pure import SessionStore

    assert files.fcntl is not None
    files.require_flock()
    store = SessionStore(tmp_path)
    store.append("k", {"role": "user", "content": "hi"})
    assert [m.content for m in store.load("k")] == ["hi"]
