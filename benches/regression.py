"""A quick check for regressions between two builds: the hot calls of a bot, medians, one JSON
line per run. Run it with each build's Python, alternating, from outside the source tree:

    for i in 1 2 3; do /tmp/venv-old/bin/python benches/regression.py; \
                       /tmp/venv-new/bin/python benches/regression.py; done
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import turnlog
from turnlog import SessionStore


def median_time(call: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


ws = tempfile.mkdtemp()
store = SessionStore(ws)
msg = {"role": "user", "content": "How long does an append take? " * 3}
# corpus: 200k messages
path = os.path.join(ws, "sessions", "big.jsonl")
line = (
    json.dumps({"role": "assistant", "content": "x" * 200, "name": "bot"}, separators=(",", ":"))
    + "\n"
)
with open(path, "w") as f:
    f.write(line * 200_000)
res = {}
res["append_us"] = median_time(lambda: store.append("hot", msg), 5000) * 1e6
res["tail50_us"] = median_time(lambda: store.load("big", limit=50), 2000) * 1e6
res["full_load_ms"] = median_time(lambda: store.load("big"), 7) * 1e3
store.append_many("rm", [msg] * 3000)
res["remove_last_us"] = median_time(lambda: store.remove_last("rm"), 2000) * 1e6
res["first_append_us"] = (
    median_time(lambda: store.append(f"new{time.perf_counter_ns()}", msg), 500) * 1e6
)
print(json.dumps({"version": turnlog.__version__, **{k: round(v, 2) for k, v in res.items()}}))
