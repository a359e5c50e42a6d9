"""Time-boxed differential fuzzing of ``load`` (Rust vs pure vs ``tests/_spec.py``): runs the
property of ``tests/test_fuzz_load.py`` on fresh Hypothesis examples until the time is up.

    .venv/bin/python fuzz/fuzz_load.py --seconds 600

Prints the number of examples checked; exits non-zero (with the failing, shrunk input) on the
first difference or crash.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
sys.path.insert(0, TESTS)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import test_fuzz_load  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", 600)))
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="turnlog-fuzz-load-")
    count = 0
    strategy = st.one_of(test_fuzz_load.file_bytes(), st.binary(max_size=2000))

    @settings(
        max_examples=200,  # a batch; batches run until the time is up
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=strategy)
    def batch(data):
        nonlocal count
        count += 1
        test_fuzz_load.check_file(data, root)

    began = time.monotonic()
    try:
        while time.monotonic() - began < args.seconds:
            batch()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"fuzz_load: {count} examples in {time.monotonic() - began:.0f} s, no difference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
