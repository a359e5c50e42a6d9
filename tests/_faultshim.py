"""Building ``tests/faults/faultshim.c`` (an ``LD_PRELOAD`` fault injector) for a test session,
and running ``_fault_driver.py`` under it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import in_ci

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "faults", "faultshim.c")
DRIVER = os.path.join(HERE, "_fault_driver.py")


def build(out_dir) -> str:
    """Compile the shim into ``out_dir``; skip when there is no C compiler (fail under CI)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        if in_ci():
            pytest.fail("no C compiler, and CI is set: the fault shim must be built", pytrace=False)
        pytest.skip("no C compiler (gcc) to build the fault shim")
    out = os.path.join(str(out_dir), "faultshim.so")
    command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run([*command, "-o", out, SOURCE, "-ldl"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def faultshim(tmp_path_factory) -> str:
    return build(tmp_path_factory.mktemp("faultshim"))


def driver(shim: str, config: dict, *, pass_fds=()):
    """Start ``_fault_driver.py`` with ``config`` under the shim; returns the ``Popen``."""
    env = dict(os.environ, LD_PRELOAD=shim)
    return subprocess.Popen(
        [sys.executable, DRIVER, json.dumps(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=pass_fds,
    )


def run_driver(shim: str, config: dict, *, timeout: float = 120):
    """Run the driver to the end and return what it printed (parsed)."""
    process = driver(shim, config)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"driver died ({process.returncode}): {err.decode()[-3000:]}"
    return json.loads(out.decode().splitlines()[-1])
